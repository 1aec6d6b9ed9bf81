//! PEFT LoRA adapters: merged into their base model (written as a Hugging
//! Face directory, or converted straight to GGUF in one pass), or converted
//! to a GGUF LoRA adapter that llama.cpp (`--lora`) and Ollama (`ADAPTER`)
//! apply at load time.
//!
//! * [`config`]: `adapter_config.json` (LoraConfig, module selectors).
//! * [`adapter`]: reading an adapter directory, classifying its keys into
//!   modules and validating them.
//! * [`merge`]: the merged view of a base ([`LoraMerged`], an
//!   [`crate::hf::HfTensors`]), computed row chunk by row chunk.
//! * [`to_gguf`]: the GGUF LoRA adapter, as llama.cpp's
//!   `convert_lora_to_gguf.py` writes it.
//!
//! The merged view sits *under* the HF → GGUF conversion: `merge -o x.gguf`
//! is [`crate::convert::HfToGguf`] reading through [`LoraMerged`], so naming,
//! the Q/K permutation, metadata and the tokenizer come from the same code as
//! `convert`. Format notes: `formats/peft-adapter.md`.

pub mod adapter;
pub mod config;
pub mod merge;
pub mod to_gguf;

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

pub use self::adapter::Adapter;
pub use self::config::LoraConfig;
pub use self::merge::{LoraMerged, MergeReport, WeightedAdapter};
use crate::convert::{ConvertOptions, HfToGguf, ModelIdentity, OutType};
use crate::error::{Error, IoContext, Result};
use crate::fileio::{same_file, AtomicDir};
use crate::hf::writer::{self, WeightsOptions};
use crate::hf::{DType, HfModelDir, HfTensors};
use crate::pipeline::WriteOptions;
use crate::progress::Progress;
use crate::target::Target;

/// An adapter directory and its weight, as given on the command line (`DIR[=W]`).
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterSpec {
    pub dir: PathBuf,
    pub weight: f64,
}

impl std::str::FromStr for AdapterSpec {
    type Err = String;
    /// `DIR` or `DIR=WEIGHT` (the last `=` separates the weight).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if let Some((dir, w)) = s.rsplit_once('=') {
            if let Ok(weight) = w.trim().parse::<f64>() {
                if !weight.is_finite() {
                    return Err(format!("adapter weight '{w}' is not a finite number"));
                }
                return Ok(AdapterSpec { dir: PathBuf::from(dir), weight });
            }
            if !Path::new(s).exists() {
                return Err(format!("'{w}' is not a number (expected ADAPTER_DIR or ADAPTER_DIR=WEIGHT)"));
            }
        }
        Ok(AdapterSpec { dir: PathBuf::from(s), weight: 1.0 })
    }
}

/// Side files copied from the base into a merged directory.
pub const SIDE_FILES: &[&str] = &[
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
];

/// Opens a base model directory with the adapters merged on top (all
/// validation happens here; nothing is written).
pub fn open_merged(
    base_dir: &Path,
    adapters: &[AdapterSpec],
    progress: &dyn Progress,
) -> Result<HfModelDir<LoraMerged>> {
    if adapters.is_empty() {
        return Err(Error::usage("give at least one adapter (--lora DIR[=WEIGHT])"));
    }
    let model = HfModelDir::open(base_dir)?;
    let mut opened = Vec::with_capacity(adapters.len());
    for a in adapters {
        opened.push(WeightedAdapter { adapter: Adapter::open(&a.dir, progress)?, weight: a.weight });
    }
    let config = model.config.clone();
    model.map_weights(|w| LoraMerged::new(w, base_dir, &config, opened, progress))
}

/// The dtype of a model's weights: that of its first tensor with two or more
/// dimensions (the heuristic convert_hf_to_gguf.py uses).
pub fn weights_dtype(w: &dyn HfTensors) -> DType {
    w.tensors().iter().find(|t| t.shape.len() >= 2 && t.dtype.is_readable_float()).map_or(DType::F32, |t| t.dtype)
}

/// config.json of the merged model: `torch_dtype` (or `dtype`, as newer
/// transformers name it) set to the output dtype, `tie_word_embeddings`
/// false when the merge untied lm_head.
pub fn merged_config(config: &Map<String, Value>, dtype: DType, untied: bool) -> Map<String, Value> {
    let mut c = config.clone();
    let name = Value::String(dtype.torch_name().unwrap_or("float32").to_string());
    let mut set = false;
    for key in ["torch_dtype", "dtype"] {
        if c.contains_key(key) {
            c.insert(key.to_string(), name.clone());
            set = true;
        }
    }
    if !set {
        c.insert("torch_dtype".into(), name);
    }
    if untied {
        c.insert("tie_word_embeddings".into(), Value::Bool(false));
        if let Some(Value::Object(t)) = c.get_mut("text_config") {
            if t.contains_key("tie_word_embeddings") {
                t.insert("tie_word_embeddings".into(), Value::Bool(false));
            }
        }
    }
    c
}

/// Options of [`merge_to_dir`] / [`merge_to_gguf`].
#[derive(Debug, Clone)]
pub struct MergeOptions {
    /// Worker threads (None: all cores).
    pub threads: Option<usize>,
    /// Safetensors output dtype (None: the base's).
    pub dtype: Option<DType>,
    pub max_shard_size: u64,
    /// Replace an existing output directory.
    pub force: bool,
    /// GGUF output: measure each tensor's error against the merged F32 rows
    /// ([`MergeSummary::tensors`]).
    pub measure_error: bool,
}

impl Default for MergeOptions {
    fn default() -> Self {
        MergeOptions {
            threads: None,
            dtype: None,
            max_shard_size: writer::DEFAULT_MAX_SHARD_SIZE,
            force: false,
            measure_error: false,
        }
    }
}

/// What a merge did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MergeSummary {
    pub output: PathBuf,
    /// "safetensors" or "gguf".
    pub format: String,
    /// Output dtype (safetensors) or GGUF file type name.
    pub dtype: String,
    pub files: Vec<String>,
    pub n_tensors: usize,
    pub output_bytes: u64,
    #[serde(flatten)]
    pub report: MergeReport,
    /// GGUF output: each tensor's type (and error, when measured), as
    /// `quantize --json` lists them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tensors: Option<Value>,
}

/// Refuses an output directory that is, or contains, an input.
fn check_output_dir(out: &Path, inputs: &[&Path]) -> Result<()> {
    let out_c = out.canonicalize().ok();
    for i in inputs {
        let dir = i.parent().unwrap_or(i);
        if same_file(out, dir) || same_file(out, i) {
            return Err(Error::usage(format!(
                "refusing to write the output into an input directory ({})",
                dir.display()
            )));
        }
        if let (Some(o), Ok(ic)) = (&out_c, i.canonicalize()) {
            if ic.starts_with(o) {
                return Err(Error::usage(format!(
                    "refusing to replace {}: it contains an input ({})",
                    out.display(),
                    i.display()
                )));
            }
        }
    }
    Ok(())
}

/// Merges adapters into a base model and writes a Hugging Face directory
/// (safetensors sharded like transformers, config and tokenizer files).
pub fn merge_to_dir(
    base_dir: &Path,
    adapters: &[AdapterSpec],
    out_dir: &Path,
    opts: &MergeOptions,
    progress: &dyn Progress,
) -> Result<MergeSummary> {
    let model = open_merged(base_dir, adapters, progress)?;
    let dtype = opts.dtype.unwrap_or_else(|| weights_dtype(model.weights.base()));
    let inputs = model.weights.inputs();
    check_output_dir(out_dir, &inputs)?;
    let out = AtomicDir::create(out_dir, opts.force)?;
    let wopts = WeightsOptions {
        dtype,
        max_shard_size: opts.max_shard_size,
        threads: opts.threads.unwrap_or(0),
        chunk_bytes: WriteOptions::default().chunk_bytes,
    };
    let written = writer::write_weights(&model.weights, out.path(), &wopts, progress)?;
    let config = merged_config(&model.config, dtype, model.weights.report.untied);
    let cfg_path = out.path().join("config.json");
    std::fs::write(&cfg_path, writer::to_json_pretty_sorted(&Value::Object(config))).at(&cfg_path, "write")?;
    let mut files = written.files.clone();
    files.push("config.json".into());
    if written.files.len() > 1 {
        files.push(crate::hf::safetensors::INDEX_FILE.into());
    }
    let mut warnings = model.weights.report.warnings.clone();
    for name in SIDE_FILES {
        let src = base_dir.join(name);
        if src.is_file() {
            let dst = out.path().join(name);
            std::fs::copy(&src, &dst).at(&dst, "copy")?;
            files.push(name.to_string());
        }
        for a in adapters {
            let theirs = a.dir.join(name);
            let tokenizer_file = name.starts_with("tokenizer") || name.starts_with("chat_template");
            if tokenizer_file && theirs.is_file() {
                let differs = std::fs::read(&theirs).ok() != std::fs::read(&src).ok();
                if differs {
                    let w = format!(
                        "{} differs from the base's {name}; the merged model uses the base's (copy it over if the \
                         fine-tune changed the tokenizer or chat template)",
                        theirs.display()
                    );
                    progress.warn(&w);
                    warnings.push(w);
                }
            }
        }
    }
    out.commit()?;
    let output_bytes = files.iter().filter_map(|f| std::fs::metadata(out_dir.join(f)).ok()).map(|m| m.len()).sum();
    let mut report = model.weights.report.clone();
    report.warnings = warnings;
    Ok(MergeSummary {
        output: out_dir.to_path_buf(),
        format: "safetensors".into(),
        dtype: dtype.name().into(),
        files,
        n_tensors: written.n_tensors,
        output_bytes,
        report,
        tensors: None,
    })
}

/// The merged model opened as a conversion source for `outtype`: exactly
/// what converting the merged directory (written in the dtype that
/// conversion implies, named `stem`, without a model card) would read. For a
/// quantized output use `OutType::F32`, the conversion the quantization
/// starts from. Nothing is written.
pub fn open_merged_conversion(
    base_dir: &Path,
    adapters: &[AdapterSpec],
    outtype: OutType,
    stem: &str,
    threads: Option<usize>,
    known_vocab: Option<&crate::convert::vocab::Vocab>,
    progress: &dyn Progress,
) -> Result<(HfToGguf<LoraMerged>, MergeReport)> {
    let mut model = open_merged(base_dir, adapters, progress)?;
    let dtype = match outtype {
        OutType::F32 => DType::F32,
        _ => weights_dtype(model.weights.base()),
    };
    model.config = merged_config(&model.config, dtype, model.weights.report.untied);
    model.weights.order_as_written(dtype, writer::DEFAULT_MAX_SHARD_SIZE)?;
    let report = model.weights.report.clone();
    let identity = ModelIdentity { dir_name: stem.to_string(), model_card: false };
    let copts = ConvertOptions { outtype, threads, vocab_pre: None };
    let conv = HfToGguf::from_model_with_vocab(model, &identity, &copts, known_vocab, progress)?;
    if report.untied && !conv.tensors.iter().any(|t| t.name == "output.weight") {
        // Gemma 2: convert_hf_to_gguf.py drops lm_head.weight and llama.cpp
        // always uses the token embeddings as the output layer.
        return Err(Error::Unsupported(format!(
            "the merge gives the output layer its own values (the adapter replaces one side of the tied \
             embeddings), but llama.cpp's {} has no separate output layer: the GGUF would silently use the \
             embeddings; merge to a directory instead",
            conv.spec.gguf_arch
        )));
    }
    Ok((conv, report))
}

/// Merges adapters into a base model and converts the result to GGUF in one
/// pass: the same file as writing the merged directory (named like the
/// output file, without a model card) and converting it — for a quantized
/// type, as converting it to F32 and quantizing that.
pub fn merge_to_gguf(
    base_dir: &Path,
    adapters: &[AdapterSpec],
    out: &Path,
    target: Target,
    imatrix: Option<&crate::imatrix::Imatrix>,
    opts: &MergeOptions,
    progress: &dyn Progress,
) -> Result<MergeSummary> {
    let stem = out.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let (src, report) =
        open_merged_conversion(base_dir, adapters, target.conversion(), &stem, opts.threads, None, progress)?;
    let resolved = target.resolve(&src, imatrix)?;
    for w in &resolved.warnings {
        progress.warn(w);
    }
    let wopts =
        WriteOptions { threads: opts.threads.unwrap_or(0), measure_error: opts.measure_error, ..Default::default() };
    let inputs = src.inputs();
    let written =
        crate::pipeline::write_gguf(&src, &resolved.plan, &resolved.metadata, out, &inputs, &wopts, progress)?;
    let mut report = report;
    report.warnings.extend(src.warnings.iter().cloned());
    Ok(MergeSummary {
        output: out.to_path_buf(),
        format: "gguf".into(),
        dtype: resolved.name,
        files: vec![out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()],
        n_tensors: written.tensors.len(),
        output_bytes: written.file_size,
        report,
        tensors: Some(written.to_json()["tensors"].take()),
    })
}
