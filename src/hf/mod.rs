//! Hugging Face model directories: `config.json`, the safetensors weights
//! (one `model.safetensors` or shards named by `model.safetensors.index.json`)
//! and the small JSON side files (tokenizer config, generation config).
//!
//! This is the reading side shared by `convert` and the LoRA merge:
//!
//! ```no_run
//! # fn main() -> ggufkit::Result<()> {
//! let model = ggufkit::hf::HfModelDir::open("Qwen2.5-Coder-7B-Instruct")?;
//! let arch = model.architecture();
//! for t in model.weights.tensors() {
//!     println!("{} {} {:?}", t.name, t.dtype, t.shape);
//! }
//! let embd = model.weights.tensor("model.embed_tokens.weight").unwrap();
//! let mut rows = vec![0f32; 4 * embd.row_len() as usize];
//! model.weights.read_rows_f32(embd, 0, &mut rows)?; // first 4 rows as f32
//! # let _ = arch; Ok(()) }
//! ```
//!
//! Format notes as implemented: `formats/safetensors.md`.

pub mod safetensors;
pub mod source;
pub mod tensors;
pub mod writer;

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Error, IoContext, Result};

pub use self::safetensors::{DType, SafetensorsModel, TensorEntry};
pub use self::tensors::{HfTensor, HfTensors};

/// Largest JSON side file read (config, tokenizer_config, index...). The
/// biggest real ones are `tokenizer.json` files of ~30 MB.
pub const MAX_JSON_BYTES: u64 = 512 << 20;

/// An opened Hugging Face model directory. `W` is what its tensors are read
/// through: the safetensors files themselves, or a view over them such as a
/// LoRA merge (see [`HfModelDir::map_weights`]).
pub struct HfModelDir<W = SafetensorsModel> {
    dir: PathBuf,
    /// `config.json`, as written (no defaults filled in).
    pub config: Map<String, Value>,
    /// The weights, all shards opened and validated.
    pub weights: W,
}

impl HfModelDir {
    /// Opens a directory: reads `config.json` and opens and cross-checks the
    /// safetensors files. Tensor data is only mapped, not read.
    pub fn open(dir: impl AsRef<Path>) -> Result<HfModelDir> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            return Err(Error::input(&dir, "not a directory (expected a Hugging Face model directory)"));
        }
        let config = read_config(&dir)?;
        let weights = SafetensorsModel::open_dir(&dir)?;
        Ok(HfModelDir { dir, config, weights })
    }
}

impl<W> HfModelDir<W> {
    /// The same directory with its weights replaced by `f(weights)` (config
    /// and side files are still read from the directory).
    pub fn map_weights<V>(self, f: impl FnOnce(W) -> Result<V>) -> Result<HfModelDir<V>> {
        Ok(HfModelDir { dir: self.dir, config: self.config, weights: f(self.weights)? })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// A file in the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The first entry of `architectures` in `config.json`.
    pub fn architecture(&self) -> Option<&str> {
        self.config.get("architectures")?.as_array()?.first()?.as_str()
    }

    /// Reads a JSON file of the directory if it exists (`Ok(None)` when it does not).
    pub fn read_json(&self, name: &str) -> Result<Option<Value>> {
        read_json_opt(&self.dir.join(name))
    }

    /// Reads a text file of the directory if it exists.
    pub fn read_text(&self, name: &str) -> Result<Option<String>> {
        let path = self.dir.join(name);
        if !path.is_file() {
            return Ok(None);
        }
        read_text(&path).map(Some)
    }
}

/// Reads and parses `config.json` of a model directory; it must be a JSON object.
pub fn read_config(dir: &Path) -> Result<Map<String, Value>> {
    let path = dir.join("config.json");
    if !path.is_file() {
        return Err(Error::input(&path, "missing config.json (is this a Hugging Face model directory?)"));
    }
    match read_json(&path)? {
        Value::Object(m) => Ok(m),
        _ => Err(Error::input(&path, "config.json is not a JSON object")),
    }
}

/// Reads a UTF-8 text file with the size cap of [`MAX_JSON_BYTES`].
pub fn read_text(path: &Path) -> Result<String> {
    let len = fs::metadata(path).at(path, "stat")?.len();
    if len > MAX_JSON_BYTES {
        return Err(Error::input(path, format!("file of {len} bytes is larger than the {MAX_JSON_BYTES} byte limit")));
    }
    let bytes = fs::read(path).at(path, "read")?;
    String::from_utf8(bytes).map_err(|e| Error::input(path, format!("not valid UTF-8: {e}")))
}

/// Reads and parses a JSON file.
pub fn read_json(path: &Path) -> Result<Value> {
    let text = read_text(path)?;
    serde_json::from_str(&text).map_err(|e| Error::input(path, format!("invalid JSON: {e}")))
}

/// Reads and parses a JSON file if it exists.
pub fn read_json_opt(path: &Path) -> Result<Option<Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    read_json(path).map(Some)
}
