//! `convert`: a Hugging Face model directory to a GGUF file that llama.cpp
//! and Ollama load, written as convert_hf_to_gguf.py writes it (same keys,
//! value types, key order and tensor order where feasible).
//!
//! The work is split the way the rest of ggufkit is:
//! * [`HfToGguf`] is a *source*: the GGUF metadata, the ordered list of output
//!   tensors (name, ggml dims, the type convert_hf_to_gguf.py would choose)
//!   and a row reader producing f32 rows after renaming and the Q/K
//!   permutation. Everything is validated when it is built, before any
//!   output exists.
//!   It implements [`crate::pipeline::TensorSource`], and [`HfToGguf::plan`]
//!   is the plan convert_hf_to_gguf.py's type choice makes, so the shared
//!   planner/writer (`crate::pipeline::write_gguf`) streams it to disk — or a
//!   quantization policy can plan other types for the same source. Q8_0
//!   comes from the shared quantization kernels (`crate::quant`, ggml's
//!   `quantize_row_q8_0_ref`, which gguf-py's numpy Q8_0 also reproduces).

pub mod arch;
pub mod experts;
pub mod modelcard;
pub mod naming;
pub mod norms;
pub mod params;
pub mod rope_factors;
pub mod spm;
pub mod vocab;

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use self::arch::{ArchSpec, Hparams, Transform, VocabKind};
use self::vocab::Vocab;
use crate::error::{Error, Result};
use crate::gguf::{GgmlType, Metadata, TensorSpec, Value as GValue};
use crate::hf::{HfModelDir, HfTensors, SafetensorsModel};
use crate::pipeline::{Planned, SourceTensor, TensorSource, WriteOptions};
use crate::progress::Progress;
use crate::shape::Shape;

/// `general.quantization_version` written by gguf-py.
pub const QUANTIZATION_VERSION: u32 = 2;

/// `--outtype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutType {
    F32,
    F16,
    BF16,
    Q8_0,
    /// BF16 when the first 2-D weight is bf16, F16 otherwise.
    #[default]
    Auto,
}

impl std::str::FromStr for OutType {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "f32" => OutType::F32,
            "f16" => OutType::F16,
            "bf16" => OutType::BF16,
            "q8_0" => OutType::Q8_0,
            "auto" => OutType::Auto,
            _ => return Err(format!("unknown output type '{s}' (expected f32, f16, bf16, q8_0 or auto)")),
        })
    }
}

/// Options of [`convert_dir`].
#[derive(Debug, Clone, Default)]
pub struct ConvertOptions {
    pub outtype: OutType,
    /// Worker threads for type conversion (None: rayon's default).
    pub threads: Option<usize>,
    /// Pre-tokenizer name to use when the check-text hash is unknown (or to override it).
    pub vocab_pre: Option<String>,
}

/// What a conversion did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConvertSummary {
    pub output: PathBuf,
    pub hf_architecture: String,
    pub gguf_architecture: String,
    /// The resolved output type (`F16`, `BF16`, ...).
    pub outtype: String,
    pub file_type: u32,
    pub n_tensors: usize,
    pub n_params: u64,
    pub output_bytes: u64,
    pub tokenizer_model: String,
    pub tokenizer_pre: String,
    pub pretokenizer_hash: Option<String>,
    pub n_vocab: usize,
    pub warnings: Vec<String>,
}

/// Where an output tensor's data comes from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// A tensor of the checkpoint, with an optional row permutation
    /// (llama.cpp's Q/K reordering, over `heads` heads).
    /// `add_one`: Gemma's norm convention (stored `w + 1`, see [`Transform::AddOne`]).
    Hf { name: String, permute: Option<u64>, add_one: bool },
    /// Values computed during conversion (`rope_freqs`).
    Generated(Vec<f32>),
    /// Checkpoint tensors of `rows_each` rows each, stacked in order (the
    /// experts of a mixture-of-experts block).
    Stacked { names: Vec<String>, rows_each: u64 },
}

/// One output tensor.
#[derive(Debug, Clone)]
pub struct OutTensor {
    pub name: String,
    /// ggml dimensions, row length (ne0) first.
    pub dims: Vec<u64>,
    /// The type convert_hf_to_gguf.py gives it for the chosen output type.
    pub ty: GgmlType,
    pub origin: Origin,
}

impl OutTensor {
    pub fn shape(&self) -> Shape<'_> {
        Shape::Ggml(&self.dims)
    }
    pub fn row_len(&self) -> u64 {
        self.shape().row_len()
    }
    pub fn n_rows(&self) -> u64 {
        self.shape().n_rows()
    }
    pub fn n_elements(&self) -> u64 {
        self.shape().n_elements()
    }
}

/// A Hugging Face directory viewed as a GGUF model: metadata, ordered tensors
/// and their rows as f32. The tensors are read through `W`: the directory's
/// safetensors files, or a view over them (a LoRA merge).
pub struct HfToGguf<W: HfTensors = SafetensorsModel> {
    pub model: HfModelDir<W>,
    pub spec: ArchSpec,
    pub hf_architecture: String,
    /// config.json with the architecture's defaults filled in.
    pub config: Map<String, Value>,
    pub hparams: Hparams,
    pub metadata: Metadata,
    pub tensors: Vec<OutTensor>,
    /// The same tensors as the pipeline sees them (stored type of the source data).
    source_tensors: Vec<SourceTensor>,
    pub vocab: Vocab,
    /// `general.file_type`.
    pub file_type: u32,
    /// The resolved output type.
    pub outtype: OutType,
    pub warnings: Vec<String>,
}

fn file_type_of(t: OutType) -> u32 {
    match t {
        OutType::F32 => 0,
        OutType::F16 | OutType::Auto => 1,
        OutType::Q8_0 => 7,
        OutType::BF16 => 32,
    }
}

fn outtype_name(t: OutType) -> &'static str {
    match t {
        OutType::F32 => "F32",
        OutType::F16 | OutType::Auto => "F16",
        OutType::BF16 => "BF16",
        OutType::Q8_0 => "Q8_0",
    }
}

/// `find_hparam`: the first of `keys` present (and not null) in the config.
fn find<'a>(config: &'a Map<String, Value>, keys: &[&str]) -> Option<(&'a str, &'a Value)> {
    for k in keys {
        if let Some((key, v)) = config.get_key_value(*k) {
            return if v.is_null() { None } else { Some((key.as_str(), v)) };
        }
    }
    None
}

struct Cfg<'a> {
    config: &'a Map<String, Value>,
    path: PathBuf,
}

impl Cfg<'_> {
    fn uint(&self, keys: &[&str]) -> Result<Option<u64>> {
        match find(self.config, keys) {
            None => Ok(None),
            Some((k, v)) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| Error::input(&self.path, format!("\"{k}\" must be a non-negative integer, not {v}"))),
        }
    }
    fn u32(&self, keys: &[&str]) -> Result<Option<u32>> {
        match self.uint(keys)? {
            None => Ok(None),
            Some(v) => u32::try_from(v)
                .map(Some)
                .map_err(|_| Error::input(&self.path, format!("\"{}\" = {v} does not fit in 32 bits", keys[0]))),
        }
    }
    fn required(&self, keys: &[&str]) -> Result<u64> {
        self.uint(keys)?.ok_or_else(|| {
            Error::input(&self.path, format!("missing \"{}\" (also looked for {:?})", keys[0], &keys[1..]))
        })
    }
}

fn num_f32(path: &Path, key: &str, v: &Value) -> Result<f32> {
    v.as_f64().map(|x| x as f32).ok_or_else(|| Error::input(path, format!("\"{key}\" must be a number, not {v}")))
}

/// Where the `general.*` naming metadata comes from: gguf-py derives it from
/// the model directory's name and its model card (README.md front matter).
#[derive(Debug, Clone)]
pub struct ModelIdentity {
    /// The directory name the model id heuristics read.
    pub dir_name: String,
    /// Read README.md of the model directory as the model card.
    pub model_card: bool,
}

impl ModelIdentity {
    /// The identity of a model directory as convert_hf_to_gguf.py sees it.
    pub fn of_dir(dir: &Path) -> ModelIdentity {
        let dir_name = dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_default();
        ModelIdentity { dir_name, model_card: true }
    }
}

/// The architecture of a model directory: the table, the config with the
/// architecture's defaults filled in, and the hyperparameters.
#[derive(Debug, Clone)]
pub struct ArchInfo {
    pub hf_architecture: String,
    pub spec: ArchSpec,
    pub config: Map<String, Value>,
    pub config_path: PathBuf,
    pub hparams: Hparams,
}

impl ArchInfo {
    /// Reads the architecture and hyperparameters from `config` (the
    /// `config.json` at `config_path`).
    pub fn from_config(raw_config: &Map<String, Value>, config_path: &Path) -> Result<ArchInfo> {
        let config_path = config_path.to_path_buf();
        let hf_arch = raw_config
            .get("architectures")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .ok_or_else(|| {
                Error::input(&config_path, "no \"architectures\" entry: cannot tell the model architecture")
            })?
            .to_string();
        let spec = arch::spec_for(&hf_arch)?.ok_or_else(|| {
            Error::input(
                &config_path,
                format!(
                    "architecture {hf_arch} is not supported; supported: {}",
                    arch::supported_architectures().join(", ")
                ),
            )
        })?;
        let mut config = raw_config.clone();
        if let Some(Value::Object(text)) = config.get("text_config").cloned() {
            for (k, v) in text {
                config.insert(k, v);
            }
        }
        if let Some(entry) = spec.hf_architectures.get(&hf_arch) {
            arch::apply_defaults(&mut config, &entry.defaults);
        }
        let cfg = Cfg { config: &config, path: config_path.clone() };
        let block_count = cfg.required(&["n_layers", "num_hidden_layers", "n_layer", "num_layers"])?;
        let hidden_size = cfg.required(&["hidden_size", "n_embd", "dim"])?;
        let n_head = cfg.required(&["num_attention_heads", "n_head", "n_heads"])?;
        let n_head_kv = cfg.uint(&["num_key_value_heads", "n_kv_heads"])?.unwrap_or(n_head);
        let intermediate_size = cfg.required(&[
            "prefix_dense_intermediate_size",
            "dense_intermediate_size",
            "intermediate_size",
            "n_inner",
            "hidden_dim",
        ])?;
        let vocab_size = cfg.required(&["vocab_size"])?;
        let head_dim_cfg = cfg.uint(&["head_dim"])?;
        for (key, v) in [
            ("num_hidden_layers", block_count),
            ("hidden_size", hidden_size),
            ("num_attention_heads", n_head),
            ("num_key_value_heads", n_head_kv),
        ] {
            if v == 0 {
                return Err(Error::input(&config_path, format!("\"{key}\" must be positive, not 0")));
            }
        }
        if n_head % n_head_kv != 0 {
            return Err(Error::input(
                &config_path,
                format!("num_attention_heads {n_head} is not a multiple of num_key_value_heads {n_head_kv}"),
            ));
        }
        if head_dim_cfg.is_none() && hidden_size % n_head != 0 {
            return Err(Error::input(
                &config_path,
                format!("hidden_size {hidden_size} is not a multiple of num_attention_heads {n_head} (and no head_dim is given)"),
            ));
        }
        let head_dim = head_dim_cfg.unwrap_or(hidden_size / n_head);
        // Far above any real model, far below what could exhaust memory.
        for (key, v, max) in [
            ("num_hidden_layers", block_count, 100_000),
            ("num_attention_heads", n_head, 1 << 20),
            ("head_dim", head_dim, 1 << 20),
            ("hidden_size", hidden_size, 1 << 24),
        ] {
            if v > max {
                return Err(Error::input(&config_path, format!("implausible \"{key}\" {v} (the limit is {max})")));
            }
        }
        if head_dim == 0 {
            return Err(Error::input(&config_path, "\"head_dim\" must be positive, not 0"));
        }
        let mut extra = std::collections::BTreeMap::new();
        for key in &spec.config_dims {
            let v = cfg.required(&[key.as_str()])?;
            if v == 0 || v > 1 << 24 {
                return Err(Error::input(&config_path, format!("implausible \"{key}\" {v}")));
            }
            extra.insert(key.clone(), v);
        }
        let hparams = Hparams {
            extra,
            block_count,
            hidden_size,
            intermediate_size,
            vocab_size,
            n_head,
            n_head_kv,
            head_dim_cfg,
            head_dim,
        };
        Ok(ArchInfo { hf_architecture: hf_arch, spec, config, config_path, hparams })
    }

    /// The GGUF name of a checkpoint tensor and the number of heads of its
    /// Q/K row permutation (llama only), or `None` when the architecture has
    /// no rule for it.
    pub fn gguf_name(&self, hf_name: &str) -> Option<(String, Option<u64>)> {
        let m = self.spec.match_tensor(hf_name)?;
        let permute = match m.rule.transform {
            Some(Transform::PermuteQ) if self.spec.permute_qk => Some(self.hparams.n_head),
            Some(Transform::PermuteK) if self.spec.permute_qk => Some(self.hparams.n_head_kv),
            _ => None,
        };
        Some((m.gguf_name(), permute))
    }
}

impl HfToGguf {
    /// Opens and validates a model directory and plans the output: nothing is
    /// written, every check that can fail on bad input happens here.
    pub fn open(dir: impl AsRef<Path>, opts: &ConvertOptions, progress: &dyn Progress) -> Result<HfToGguf> {
        let dir = dir.as_ref();
        let model = HfModelDir::open(dir)?;
        HfToGguf::from_model(model, &ModelIdentity::of_dir(dir), opts, progress)
    }
}

impl<W: HfTensors> HfToGguf<W> {
    /// Plans the output for an opened model directory whose tensors are read
    /// through `W`, with the naming metadata taken from `identity`.
    pub fn from_model(
        model: HfModelDir<W>,
        identity: &ModelIdentity,
        opts: &ConvertOptions,
        progress: &dyn Progress,
    ) -> Result<HfToGguf<W>> {
        let ArchInfo { hf_architecture: hf_arch, spec, config, config_path, hparams } =
            ArchInfo::from_config(&model.config, &model.file("config.json"))?;

        let mut warnings = Vec::new();
        // Vocabulary (first: Gemma 3 trims its embedding to it).
        let vocab = load_vocab(&model, &spec, &config, opts, progress)?;
        let n_vocab_real = match spec.vocab {
            VocabKind::Gemma3 => Some(gemma3_vocab_rows(&model, &vocab)?),
            _ => None,
        };
        let tensors_plan = plan_tensors(&model, &spec, &hparams, &config, &config_path, n_vocab_real, &mut warnings)?;

        // Output type.
        let outtype = match opts.outtype {
            OutType::Auto => {
                let mut t = OutType::F16;
                for e in model.weights.tensors() {
                    if e.shape.len() < 2 {
                        continue;
                    }
                    match e.dtype {
                        crate::hf::DType::BF16 => {
                            t = OutType::BF16;
                            break;
                        }
                        crate::hf::DType::F16 => {
                            t = OutType::F16;
                            break;
                        }
                        _ => {}
                    }
                }
                t
            }
            t => t,
        };
        let mut tensors = Vec::with_capacity(tensors_plan.len());
        for (name, dims, n_dims_hf, origin) in tensors_plan {
            let ty = tensor_type(&name, n_dims_hf, Shape::Ggml(&dims).row_len(), outtype, &mut warnings);
            tensors.push(OutTensor { name, dims, ty, origin });
        }

        warnings.extend(vocab.special.warnings.iter().cloned());

        // Metadata.
        let dir_name = identity.dir_name.clone();
        // gguf-py ignores a generation_config.json it cannot read.
        let gen_config = model.read_json("generation_config.json").ok().flatten();
        let readme = if identity.model_card { model.read_text("README.md") } else { Ok(None) };
        let card = match readme {
            Ok(Some(text)) => match modelcard::parse_model_card(&text) {
                Ok(card) => card,
                Err(e) => {
                    warnings.push(format!("README.md: cannot read the model card front matter ({e}); ignored"));
                    None
                }
            },
            _ => None,
        };
        let info = naming::GeneralInfo::derive(
            &dir_name,
            &model.config,
            gen_config.as_ref(),
            card.as_ref(),
            naming::ParamCounts::of(tensors.iter().map(|t| (t.name.as_str(), t.dims.as_slice()))),
        );
        warnings.extend(info.warnings.iter().cloned());
        let file_type = file_type_of(outtype);
        let mut md = Metadata::new();
        md.set("general.architecture", GValue::string(spec.gguf_arch.clone()));
        if spec.rope_factor_tensors {
            // Written while the rope factor tensors are generated, before the other keys.
            let rp = full_attention_rope(&config);
            if let Some(f) = rope_factors::RopeFactors::from_config(&rp, &config, &hparams, &config_path)? {
                md.set(format!("{}.rope.scaling.attn_factor", spec.gguf_arch), GValue::F32(f.attn_factor as f32));
            }
        }
        md.set("general.type", GValue::string("model"));
        info.write_metadata(&mut md);
        write_arch_params(&mut md, &spec, &config, &config_path, &hparams, file_type, &mut warnings)?;
        md.set("general.quantization_version", GValue::U32(QUANTIZATION_VERSION));
        vocab.write_metadata(&mut md);

        for w in &warnings {
            progress.warn(w);
        }
        let source_tensors = tensors
            .iter()
            .map(|t| SourceTensor { name: t.name.clone(), dims: t.dims.clone(), ty: stored_type(&model.weights, t) })
            .collect();
        Ok(HfToGguf {
            model,
            spec,
            hf_architecture: hf_arch,
            config,
            hparams,
            metadata: md,
            tensors,
            source_tensors,
            vocab,
            file_type,
            outtype,
            warnings,
        })
    }

    /// The GGUF tensor specs (name, dims, type) in output order.
    pub fn specs(&self) -> Vec<TensorSpec> {
        self.tensors.iter().map(|t| TensorSpec::new(t.name.clone(), t.dims.clone(), t.ty)).collect()
    }

    /// Reads rows `first_row..first_row + out.len() / row_len` of an output
    /// tensor as f32, after permutation.
    pub fn read_tensor_rows(&self, t: &OutTensor, first_row: u64, out: &mut [f32]) -> Result<()> {
        let row = t.row_len() as usize;
        if row == 0 || out.len() % row != 0 {
            return Err(Error::Other(format!("tensor '{}': buffer is not a whole number of rows", t.name)));
        }
        match &t.origin {
            Origin::Generated(v) => {
                let start = first_row as usize * row;
                let src = v
                    .get(start..start + out.len())
                    .ok_or_else(|| Error::Other(format!("tensor '{}': rows out of range", t.name)))?;
                out.copy_from_slice(src);
                Ok(())
            }
            Origin::Stacked { names, rows_each } => {
                let w = &self.model.weights;
                let n_rows = (out.len() / row) as u64;
                let mut done = 0u64;
                while done < n_rows {
                    let r = first_row + done;
                    let (x, local) = ((r / rows_each) as usize, r % rows_each);
                    let take = (rows_each - local).min(n_rows - done);
                    let name =
                        names.get(x).ok_or_else(|| Error::Other(format!("tensor '{}': rows out of range", t.name)))?;
                    let index = w.index_of(name).ok_or_else(|| Error::Other(format!("tensor '{name}' vanished")))?;
                    let dst = &mut out[(done as usize) * row..((done + take) as usize) * row];
                    w.read_rows_f32(index, local, dst)?;
                    w.release_rows(index, local, take);
                    done += take;
                }
                Ok(())
            }
            Origin::Hf { name, permute, add_one } => {
                let w = &self.model.weights;
                let (index, e) = w.get(name).ok_or_else(|| Error::Other(format!("tensor '{name}' vanished")))?;
                match permute {
                    None => {
                        w.read_rows_f32(index, first_row, out)?;
                        w.release_rows(index, first_row, (out.len() / row) as u64);
                        if *add_one {
                            norms::add_one(out, e.dtype == crate::hf::DType::F16);
                        }
                        Ok(())
                    }
                    Some(heads) if e.shape.len() == 1 => {
                        // A permuted bias: one row, elements reordered.
                        let mut src = vec![0f32; out.len()];
                        w.read_rows_f32(index, 0, &mut src)?;
                        for (i, o) in out.iter_mut().enumerate() {
                            *o = src[permuted_source_row(i as u64, e.shape[0], *heads) as usize];
                        }
                        Ok(())
                    }
                    Some(heads) => {
                        let rows = e.shape[0];
                        for (k, chunk) in out.chunks_mut(row).enumerate() {
                            let src_row = permuted_source_row(first_row + k as u64, rows, *heads);
                            w.read_rows_f32(index, src_row, chunk)?;
                        }
                        Ok(())
                    }
                }
            }
        }
    }

    /// Tells the kernel a tensor's input pages are no longer needed.
    pub fn release(&self, t: &OutTensor) {
        let names = match &t.origin {
            Origin::Hf { name, .. } => std::slice::from_ref(name),
            Origin::Stacked { names, .. } => names.as_slice(),
            Origin::Generated(_) => &[],
        };
        for name in names {
            if let Some(i) = self.model.weights.index_of(name) {
                self.model.weights.release(i);
            }
        }
    }
}

/// The stored type of an output tensor's source data.
fn stored_type<W: HfTensors>(weights: &W, t: &OutTensor) -> GgmlType {
    let name = match &t.origin {
        Origin::Generated(_) => return GgmlType::F32,
        Origin::Hf { name, .. } => name,
        Origin::Stacked { names, .. } => match names.first() {
            Some(n) => n,
            None => return GgmlType::F32,
        },
    };
    match weights.get(name).map(|(_, e)| e.dtype) {
        Some(crate::hf::DType::F16) => GgmlType::F16,
        Some(crate::hf::DType::BF16) => GgmlType::BF16,
        _ => GgmlType::F32,
    }
}

impl<W: HfTensors> HfToGguf<W> {
    /// The plan convert_hf_to_gguf.py's type choice gives: every tensor, in
    /// order, as [`OutTensor::ty`].
    pub fn plan(&self) -> Vec<Planned> {
        self.tensors.iter().enumerate().map(|(i, t)| Planned::new(i, t.ty)).collect()
    }

    /// The files conversion reads (the output may not be one of them).
    pub fn inputs(&self) -> Vec<&Path> {
        self.model.weights.inputs()
    }
}

impl<W: HfTensors> TensorSource for HfToGguf<W> {
    fn describe(&self) -> String {
        self.model.path().display().to_string()
    }
    fn tensors(&self) -> &[SourceTensor] {
        &self.source_tensors
    }
    fn read_rows(&self, index: usize, row0: u64, out: &mut [f32]) -> Result<()> {
        let t = self.tensors.get(index).ok_or_else(|| Error::Other(format!("no tensor {index}")))?;
        self.read_tensor_rows(t, row0, out)
    }
    // No `raw()`: the stored bytes of unpermuted tensors are what GGUF wants,
    // but the pipeline's copy path keeps a whole tensor's mapped pages
    // resident until the tensor is done (311 MB for a 152k x 1024 bf16
    // embedding), while `read_rows` hands pages back chunk by chunk.
    fn done(&self, index: usize) {
        if let Some(t) = self.tensors.get(index) {
            self.release(t);
        }
    }
    // The rows of a checkpoint tensor taken as it is (no permutation, no
    // shift), as stored: the F16 / BF16 kernels encode them without f32 rows.
    // Chunk by chunk like `read_rows`, so pages go back as they are used.
    fn stored_rows(&self, index: usize, row0: u64, n: u64) -> Option<&[u8]> {
        let t = self.tensors.get(index)?;
        let Origin::Hf { name, permute: None, add_one: false } = &t.origin else { return None };
        let (i, e) = self.model.weights.get(name)?;
        let size =
            e.dtype.float_size().filter(|_| matches!(e.dtype, crate::hf::DType::F16 | crate::hf::DType::BF16))?;
        if e.row_len() != t.row_len() || e.n_rows() != t.n_rows() {
            return None;
        }
        let row_bytes = e.row_len() * size as u64;
        let end = row0.checked_add(n).filter(|&end| end <= e.n_rows())?;
        self.model.weights.raw(i)?.get((row0 * row_bytes) as usize..(end * row_bytes) as usize)
    }
    fn stored_rows_done(&self, index: usize, row0: u64, n: u64) {
        if let Some(Origin::Hf { name, .. }) = self.tensors.get(index).map(|t| &t.origin) {
            if let Some(i) = self.model.weights.index_of(name) {
                self.model.weights.release_rows(i, row0, n);
            }
        }
    }
}

/// llama.cpp's Q/K permutation: output row `r` of a `rows`-row weight with
/// `heads` heads comes from this input row. It is
/// `w.reshape(heads, 2, rows/heads/2, ...).swapaxes(1, 2)` of convert_hf_to_gguf.py:
/// within a head, the two halves of the rotary dimensions are interleaved.
pub fn permuted_source_row(r: u64, rows: u64, heads: u64) -> u64 {
    let hd = rows / heads;
    let half = hd / 2;
    let (h, rem) = (r / hd, r % hd);
    let (i, j) = (rem / 2, rem % 2);
    h * hd + j * half + i
}

/// The type convert_hf_to_gguf.py gives a tensor.
fn tensor_type(name: &str, n_dims: usize, row_len: u64, outtype: OutType, warnings: &mut Vec<String>) -> GgmlType {
    if n_dims <= 1 || name.ends_with("_norm.weight") || !name.ends_with(".weight") || always_f32(name) {
        return GgmlType::F32;
    }
    match outtype {
        OutType::F32 => GgmlType::F32,
        OutType::F16 | OutType::Auto => GgmlType::F16,
        OutType::BF16 => GgmlType::BF16,
        OutType::Q8_0 => {
            if row_len % 32 == 0 {
                GgmlType::Q8_0
            } else {
                warnings.push(format!("{name}: row length {row_len} is not a multiple of 32, falling back to F16"));
                GgmlType::F16
            }
        }
    }
}

/// Tensors convert_hf_to_gguf.py always writes as F32 (those of its list
/// that ggufkit's architectures have): the MoE routers.
fn always_f32(name: &str) -> bool {
    let kind = name.strip_prefix("blk.").and_then(|r| r.split_once('.')).map_or(name, |(_, k)| k);
    matches!(kind, "ffn_gate_inp.weight" | "ffn_gate_inp_shexp.weight")
}

pub(crate) type PlannedHf = (String, Vec<u64>, usize, Origin);

/// Maps, checks and orders the tensors.
fn plan_tensors<W: HfTensors>(
    model: &HfModelDir<W>,
    spec: &ArchSpec,
    hp: &Hparams,
    config: &Map<String, Value>,
    config_path: &Path,
    n_vocab_real: Option<u64>,
    warnings: &mut Vec<String>,
) -> Result<Vec<PlannedHf>> {
    let mut out: Vec<PlannedHf> = Vec::new();
    if spec.llama3_rope_freqs {
        if let Some(freqs) = llama3_rope_freqs(config, hp, config_path)? {
            out.push(("rope_freqs.weight".into(), vec![freqs.len() as u64], 1, Origin::Generated(freqs)));
        }
    }
    if spec.rope_factor_tensors {
        if let Some(f) = rope_factors::RopeFactors::from_config(&full_attention_rope(config), config, hp, config_path)?
        {
            let n = f.long.len() as u64;
            out.push(("rope_factors_long.weight".into(), vec![n], 1, Origin::Generated(f.long)));
            out.push(("rope_factors_short.weight".into(), vec![n], 1, Origin::Generated(f.short)));
        }
    }
    let weights = &model.weights;
    let mut seen = std::collections::HashSet::new();
    let mut stacker = match &spec.experts {
        Some(ex) => Some(experts::ExpertStacker::new(ex, config, config_path)?),
        None => None,
    };
    for (index, e) in weights.tensors().iter().enumerate() {
        if spec.skip_names.contains(&e.name) {
            continue;
        }
        let Some(name) = arch::text_model_name(&e.name) else { continue };
        if spec.skipped(&name) {
            continue;
        }
        let path = weights.file_of(index);
        if let Some(stacker) = stacker.as_mut() {
            if let Some(stacked) = stacker.offer(&name, &e.name, &e.shape, path, hp, hp.block_count)? {
                if !e.dtype.is_readable_float() {
                    return Err(Error::input(
                        path,
                        format!(
                            "tensor '{}' has dtype {}; only F32, F16 and BF16 weights are supported",
                            e.name, e.dtype
                        ),
                    ));
                }
                for t in stacked {
                    seen.insert(t.0.clone());
                    out.push(t);
                }
                continue;
            }
        }
        let m = spec.match_tensor(&name).ok_or_else(|| {
            Error::input(
                path,
                format!("cannot map tensor '{}' to a GGUF name for architecture {}", e.name, spec.gguf_arch),
            )
        })?;
        if let Some(bid) = m.bid {
            if bid >= hp.block_count {
                return Err(Error::input(
                    path,
                    format!("tensor '{}' is for block {bid}, but num_hidden_layers is {}", e.name, hp.block_count),
                ));
            }
        }
        if !e.dtype.is_readable_float() {
            return Err(Error::input(
                path,
                format!("tensor '{}' has dtype {}; only F32, F16 and BF16 weights are supported", e.name, e.dtype),
            ));
        }
        let mut expect = Vec::with_capacity(m.rule.shape.len());
        for d in &m.rule.shape {
            expect.push(hp.dim(d).ok_or_else(|| Error::Other(format!("formats/arch: unknown dimension name '{d}'")))?);
        }
        if e.shape != expect {
            return Err(Error::input(
                path,
                format!(
                    "tensor '{}' has shape {:?}, but {} implies {:?} ({})",
                    e.name,
                    e.shape,
                    config_path.display(),
                    expect,
                    m.rule.shape.join(", ")
                ),
            ));
        }
        let permute = match m.rule.transform {
            Some(t @ (Transform::PermuteQ | Transform::PermuteK)) if spec.permute_qk => {
                let heads = if t == Transform::PermuteQ { hp.n_head } else { hp.n_head_kv };
                let rows = e.shape[0];
                if rows % (heads * 2) != 0 {
                    return Err(Error::input(
                        path,
                        format!("tensor '{}': {rows} rows cannot be split into {heads} heads of pairs", e.name),
                    ));
                }
                Some(heads)
            }
            _ => None,
        };
        let add_one = m.rule.transform == Some(Transform::AddOne);
        seen.insert(m.gguf_name());
        let mut dims = e.shape().ggml_dims();
        if m.rule.transform == Some(Transform::TruncateToVocab) {
            if let (Some(n), Some(rows)) = (n_vocab_real, dims.last_mut()) {
                *rows = (*rows).min(n);
            }
        }
        let dims = if dims.is_empty() { vec![1] } else { dims };
        out.push((m.gguf_name(), dims, e.shape.len(), Origin::Hf { name: e.name.clone(), permute, add_one }));
    }

    let mut files: Vec<String> =
        (0..weights.tensors().len()).map(|i| weights.file_of(i).display().to_string()).collect();
    files.sort();
    files.dedup();
    // Required tensors.
    let mut missing = Vec::new();
    if let Some(stacker) = &stacker {
        stacker.finish(&files)?;
        for b in 0..hp.block_count {
            missing.extend(stacker.required(b).into_iter().filter(|n| !seen.contains(n)));
        }
    }
    for rule in spec.tensors.iter().filter(|r| r.required) {
        if rule.gguf.contains("{bid}") {
            for b in 0..hp.block_count {
                if !seen.contains(&rule.gguf.replace("{bid}", &b.to_string())) {
                    missing.push(rule.hf.replace("{bid}", &b.to_string()));
                }
            }
        } else if !seen.contains(&rule.gguf) {
            missing.push(rule.hf.clone());
        }
    }
    if !missing.is_empty() {
        let n = missing.len();
        missing.truncate(8);
        return Err(Error::input(
            model.path(),
            format!(
                "{n} tensor(s) required by {} are missing from {}: {}{}",
                spec.gguf_arch,
                files.join(", "),
                missing.join(", "),
                if n > missing.len() { ", ..." } else { "" }
            ),
        ));
    }
    if !seen.contains("output.weight") && config.get("tie_word_embeddings").and_then(Value::as_bool) == Some(false) {
        warnings.push(
            "config.json says tie_word_embeddings = false but there is no lm_head.weight; llama.cpp will use the token embeddings as the output layer".into(),
        );
    }
    Ok(out)
}

/// The `rope_parameters` convert_hf_to_gguf.py's TextModel derives from the config.
pub(crate) fn rope_parameters(config: &Map<String, Value>) -> Map<String, Value> {
    let mut rp = match config.get("rope_parameters").or_else(|| config.get("rope_scaling")) {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    if !rp.contains_key("full_attention") && !rp.contains_key("sliding_attention") {
        let theta = find(
            config,
            &["global_rope_theta", "rope_global_theta", "rope_theta_global", "rope_theta", "rotary_emb_base"],
        );
        if let Some(local) = find(
            config,
            &["local_rope_theta", "rope_local_theta", "rope_theta_local", "swa_rope_theta", "rope_local_base_freq"],
        ) {
            rp.insert("sliding_attention".into(), serde_json::json!({"rope_theta": local.1}));
        }
        if !rp.contains_key("rope_theta") {
            if let Some((_, v)) = theta {
                rp.insert("rope_theta".into(), v.clone());
            }
        }
        if !rp.contains_key("rope_type") {
            if let Some(t) = rp.get("type").cloned().filter(|v| !v.is_null()) {
                rp.insert("rope_type".into(), t);
            }
        }
        if !rp.contains_key("partial_rotary_factor") {
            if let Some((_, v)) = find(config, &["partial_rotary_factor", "rope_pct", "rope_percent"]) {
                rp.insert("partial_rotary_factor".into(), v.clone());
            }
        }
        if !rp.contains_key("original_max_position_embeddings") {
            if let Some((_, v)) = find(config, &["original_max_position_embeddings"]) {
                rp.insert("original_max_position_embeddings".into(), v.clone());
            }
        }
    }
    rp
}

/// TextModel's `rope_parameters` for full attention.
pub(crate) fn full_attention_rope(config: &Map<String, Value>) -> Map<String, Value> {
    let rp = rope_parameters(config);
    match rp.get("full_attention") {
        Some(Value::Object(m)) => m.clone(),
        _ => rp,
    }
}

/// Llama 3 rope scaling factors, computed in f32 like the PyTorch code of convert_hf_to_gguf.py.
fn llama3_rope_freqs(config: &Map<String, Value>, hp: &Hparams, path: &Path) -> Result<Option<Vec<f32>>> {
    let rp = rope_parameters(config);
    let rp = match rp.get("full_attention") {
        Some(Value::Object(m)) => m.clone(),
        _ => rp,
    };
    if rp.is_empty() || !rp.get("rope_type").and_then(Value::as_str).is_some_and(|t| t.eq_ignore_ascii_case("llama3")) {
        return Ok(None);
    }
    let get = |k: &str, d: f64| -> Result<f64> {
        match rp.get(k) {
            None | Some(Value::Null) => Ok(d),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite())
                .ok_or_else(|| Error::input(path, format!("\"rope_scaling.{k}\" must be a finite number, not {v}"))),
        }
    };
    let base = get("rope_theta", 10000.0)? as f32;
    let dim = hp.head_dim_cfg.unwrap_or(hp.hidden_size / hp.n_head);
    let factor = get("factor", 8.0)?;
    let low = get("low_freq_factor", 1.0)?;
    let high = get("high_freq_factor", 4.0)?;
    let old_ctx = get("original_max_position_embeddings", 8192.0)?;
    let low_wavelen = old_ctx / low;
    let high_wavelen = old_ctx / high;
    let mut out = Vec::new();
    let mut i = 0u64;
    while i < dim {
        let expo = i as f32 / dim as f32;
        let freq = 1.0f32 / base.powf(expo);
        let wavelen = (2.0 * std::f64::consts::PI) as f32 / freq;
        let v = if (wavelen as f64) < high_wavelen {
            1.0f32
        } else if (wavelen as f64) > low_wavelen {
            factor as f32
        } else {
            let smooth = (old_ctx as f32 / wavelen - low as f32) / (high - low) as f32;
            1.0f32 / ((1.0 - smooth) / factor as f32 + smooth)
        };
        out.push(v);
        i += 2;
    }
    Ok(Some(out))
}

/// The `<arch>.*` keys of TextModel.set_gguf_parameters (+ LlamaModel's extras).
fn write_arch_params(
    md: &mut Metadata,
    spec: &ArchSpec,
    config: &Map<String, Value>,
    path: &Path,
    hp: &Hparams,
    file_type: u32,
    warnings: &mut Vec<String>,
) -> Result<()> {
    if spec.params.text_model {
        write_text_model_params(md, spec, config, path, hp, file_type, warnings)?;
    }
    let ctx = params::Context {
        config,
        path,
        block_count: hp.block_count,
        file_type,
        rope: full_attention_rope(config),
        rope_dims: rope_factors::rope_dims(config, hp),
    };
    params::write_keys(md, &spec.gguf_arch, &spec.params.keys, &ctx)
}

/// TextModel.set_gguf_parameters (+ the architecture's `extra_keys`).
fn write_text_model_params(
    md: &mut Metadata,
    spec: &ArchSpec,
    config: &Map<String, Value>,
    path: &Path,
    hp: &Hparams,
    file_type: u32,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let a = spec.gguf_arch.as_str();
    let cfg = Cfg { config, path: path.to_path_buf() };
    let u32v = |v: u64, k: &str| -> Result<GValue> {
        u32::try_from(v).map(GValue::U32).map_err(|_| Error::input(path, format!("{k} = {v} does not fit in 32 bits")))
    };
    md.set(format!("{a}.block_count"), u32v(hp.block_count, "num_hidden_layers")?);
    let ctx_keys =
        ["max_position_embeddings", "n_ctx", "n_positions", "max_length", "max_sequence_length", "model_max_length"];
    if let Some(n) = cfg.u32(&ctx_keys)? {
        md.set(format!("{a}.context_length"), GValue::U32(n));
    }
    md.set(format!("{a}.embedding_length"), u32v(hp.hidden_size, "hidden_size")?);
    md.set(format!("{a}.feed_forward_length"), u32v(hp.intermediate_size, "intermediate_size")?);
    md.set(format!("{a}.attention.head_count"), u32v(hp.n_head, "num_attention_heads")?);
    if let Some(n) = cfg.u32(&["num_key_value_heads", "n_kv_heads"])? {
        md.set(format!("{a}.attention.head_count_kv"), GValue::U32(n));
    }
    if config.get("is_causal") == Some(&Value::Bool(false)) {
        md.set(format!("{a}.attention.causal"), GValue::Bool(false));
    }

    let rp_all = rope_parameters(config);
    let rp = match rp_all.get("full_attention") {
        Some(Value::Object(m)) => m.clone(),
        _ => rp_all.clone(),
    };
    if let Some(rope_type) = rp.get("rope_type").filter(|v| !v.is_null()) {
        let rope_type = rope_type.as_str().unwrap_or_default().to_string();
        let factor = rp.get("factor").filter(|v| !v.is_null());
        match (rope_type.as_str(), factor) {
            ("linear", Some(f)) => {
                md.set(format!("{a}.rope.scaling.type"), GValue::string("linear"));
                md.set(format!("{a}.rope.scaling.factor"), GValue::F32(num_f32(path, "rope_scaling.factor", f)?));
            }
            ("yarn", Some(f)) => {
                md.set(format!("{a}.rope.scaling.type"), GValue::string("yarn"));
                md.set(format!("{a}.rope.scaling.factor"), GValue::F32(num_f32(path, "rope_scaling.factor", f)?));
                let orig = rp
                    .get("original_max_position_embeddings")
                    .and_then(Value::as_u64)
                    .and_then(|v| u32::try_from(v).ok())
                    .ok_or_else(|| {
                        Error::input(path, "yarn rope scaling needs an integer original_max_position_embeddings")
                    })?;
                md.set(format!("{a}.rope.scaling.original_context_length"), GValue::U32(orig));
                let opt = |md: &mut Metadata, k: &str, v: Option<&Value>| -> Result<()> {
                    if let Some(v) = v.filter(|v| !v.is_null()) {
                        md.set(format!("{a}.rope.scaling.{k}"), GValue::F32(num_f32(path, k, v)?));
                    }
                    Ok(())
                };
                opt(md, "yarn_ext_factor", rp.get("extrapolation_factor"))?;
                opt(md, "yarn_attn_factor", rp.get("attention_factor").or_else(|| rp.get("attn_factor")))?;
                opt(md, "yarn_beta_fast", rp.get("beta_fast"))?;
                opt(md, "yarn_beta_slow", rp.get("beta_slow"))?;
            }
            ("su" | "longrope", _) => md.set(format!("{a}.rope.scaling.type"), GValue::string("longrope")),
            ("dynamic", _) => {}
            (t, _) if t.eq_ignore_ascii_case("llama3") => {
                if !spec.llama3_rope_freqs {
                    warnings.push(format!("llama3 rope scaling is not supported for {a}; ignored"));
                }
            }
            ("linear" | "yarn", None) => {}
            (t, _) => warnings.push(format!("Unknown RoPE type: {t}")),
        }
    }
    if let Some(theta) = rp.get("rope_theta").filter(|v| !v.is_null()) {
        md.set(format!("{a}.rope.freq_base"), GValue::F32(num_f32(path, "rope_theta", theta)?));
    }
    if let Some(local) = rp_all.get("sliding_attention").and_then(|s| s.get("rope_theta")).filter(|v| !v.is_null()) {
        md.set(format!("{a}.rope.freq_base_swa"), GValue::F32(num_f32(path, "local rope_theta", local)?));
    }
    if let Some((k, v)) = find(config, &["rms_norm_eps", "norm_eps"]) {
        md.set(format!("{a}.attention.layer_norm_rms_epsilon"), GValue::F32(num_f32(path, k, v)?));
    }
    if let Some((k, v)) = find(config, &["layer_norm_eps", "layer_norm_epsilon", "norm_epsilon"]) {
        md.set(format!("{a}.attention.layer_norm_epsilon"), GValue::F32(num_f32(path, k, v)?));
    }
    if let Some(n) = cfg.u32(&["num_local_experts", "num_experts", "n_routed_experts"])? {
        md.set(format!("{a}.expert_count"), GValue::U32(n));
    }
    if let Some(n) = cfg.u32(&["num_experts_per_tok", "num_experts_per_token", "top_k_experts"])? {
        md.set(format!("{a}.expert_used_count"), GValue::U32(n));
    }
    if let Some(hd) = config.get("head_dim").filter(|v| !v.is_null()) {
        let hd = hd
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| Error::input(path, "head_dim must be an integer"))?;
        md.set(format!("{a}.attention.key_length"), GValue::U32(hd));
        md.set(format!("{a}.attention.value_length"), GValue::U32(hd));
    }
    md.set("general.file_type", GValue::U32(file_type));
    for k in &spec.extra_keys {
        match k.as_str() {
            "vocab_size" => md.set(format!("{a}.vocab_size"), u32v(hp.vocab_size, "vocab_size")?),
            "rope_dimension_count" => {
                let d = hp.head_dim_cfg.unwrap_or(hp.hidden_size / hp.n_head);
                md.set(format!("{a}.rope.dimension_count"), u32v(d, "head_dim")?)
            }
            "expert_feed_forward_length" => {
                if let Some(n) = cfg.u32(&["moe_intermediate_size"])? {
                    md.set(format!("{a}.expert_feed_forward_length"), GValue::U32(n));
                }
            }
            other => return Err(Error::Other(format!("formats/arch: unknown extra key '{other}'"))),
        }
    }
    Ok(())
}

/// The number of token-embedding rows Gemma 3 keeps: the SentencePiece
/// vocabulary's size (padded to the config's vocab_size), or without
/// tokenizer.model, tokenizer.json's vocab plus its added tokens.
fn gemma3_vocab_rows<W>(model: &HfModelDir<W>, vocab: &Vocab) -> Result<u64> {
    if model.path().join("tokenizer.model").is_file() {
        return Ok(vocab.tokens.len() as u64);
    }
    let tj = model
        .read_json("tokenizer.json")?
        .ok_or_else(|| Error::input(model.file("tokenizer.json"), "missing (and there is no tokenizer.model)"))?;
    let n_vocab = tj.get("model").and_then(|m| m.get("vocab")).and_then(Value::as_object).map_or(0, Map::len);
    let n_added = tj.get("added_tokens").and_then(Value::as_array).map_or(0, Vec::len);
    Ok((n_vocab + n_added) as u64)
}

/// The vocabulary as the architecture's `set_vocab` reads it.
fn load_vocab<W>(
    model: &HfModelDir<W>,
    spec: &ArchSpec,
    config: &Map<String, Value>,
    opts: &ConvertOptions,
    progress: &dyn Progress,
) -> Result<Vocab> {
    let dir = model.path();
    let vocab_size = config.get("vocab_size").and_then(Value::as_u64);
    let mut add_space_prefix = None;
    if spec.vocab == VocabKind::Llama {
        if let Some(tc) = model.read_json("tokenizer_config.json")? {
            if let Some(b) = tc.get("add_prefix_space").and_then(Value::as_bool) {
                add_space_prefix = Some(b);
            }
        }
    }
    let spm = dir.join("tokenizer.model");
    if spec.vocab == VocabKind::Gemma && !spm.is_file() {
        return Err(Error::input(
            &spm,
            format!(
                "missing: {} needs its SentencePiece tokenizer.model (the vocabulary is read from it)",
                spec.gguf_arch
            ),
        ));
    }
    if spec.vocab == VocabKind::Phi3 {
        let gpt2 = model
            .read_json("tokenizer_config.json")?
            .is_some_and(|tc| tc.get("tokenizer_class").and_then(Value::as_str) == Some("GPT2Tokenizer"));
        if gpt2 {
            return vocab::bpe_vocab(dir, vocab_size, opts.vocab_pre.as_deref(), progress);
        }
        if !spm.is_file() {
            return Err(Error::input(
                &spm,
                "missing: Phi-3 needs its SentencePiece tokenizer.model (or tokenizer_config.json's tokenizer_class GPT2Tokenizer with tokenizer.json, as Phi-4 ships)",
            ));
        }
    }
    let mut vocab = if spec.vocab == VocabKind::Phi3 {
        vocab::spm_vocab_as(dir, vocab_size, vocab::AddedTokens::Phi3, progress)?
    } else if spec.vocab != VocabKind::Gpt2 && spm.is_file() {
        vocab::spm_vocab(dir, vocab_size, progress)?
    } else {
        vocab::bpe_vocab(dir, vocab_size, opts.vocab_pre.as_deref(), progress)?
    };
    vocab.add_space_prefix = add_space_prefix;
    if matches!(spec.vocab, VocabKind::Gemma | VocabKind::Gemma3) && spm.is_file() {
        vocab.add_space_prefix_last = Some(false);
    }
    Ok(vocab)
}

/// Converts a Hugging Face model directory into a GGUF file.
pub fn convert_dir(
    dir: impl AsRef<Path>,
    out: impl AsRef<Path>,
    opts: &ConvertOptions,
    progress: &dyn Progress,
) -> Result<ConvertSummary> {
    let src = HfToGguf::open(dir, opts, progress)?;
    let out: &Path = out.as_ref();
    let plan = src.plan();
    let wopts = WriteOptions { threads: opts.threads.unwrap_or(0), ..Default::default() };
    let inputs = src.inputs();
    let output_bytes =
        crate::pipeline::write_gguf(&src, &plan, &src.metadata, out, &inputs, &wopts, progress)?.file_size;
    Ok(src.summary(out, output_bytes))
}

impl<W: HfTensors> HfToGguf<W> {
    /// The summary of a finished conversion.
    pub fn summary(&self, out: &Path, output_bytes: u64) -> ConvertSummary {
        ConvertSummary {
            output: out.to_path_buf(),
            hf_architecture: self.hf_architecture.clone(),
            gguf_architecture: self.spec.gguf_arch.clone(),
            outtype: outtype_name(self.outtype).into(),
            file_type: self.file_type,
            n_tensors: self.tensors.len(),
            n_params: self.tensors.iter().map(OutTensor::n_elements).sum(),
            output_bytes,
            tokenizer_model: self.vocab.model.clone(),
            tokenizer_pre: self.vocab.pre.clone(),
            pretokenizer_hash: self.vocab.pre_hash.clone(),
            n_vocab: self.vocab.tokens.len(),
            warnings: self.warnings.clone(),
        }
    }
}

/// Converts a Hugging Face model directory straight into a quantized GGUF
/// (`--outtype Q4_K_M` and the other llama-quantize file types), in one pass:
/// the result is byte-identical to `convert --outtype f32` followed by
/// `quantize` of that file, and no intermediate file is written.
pub fn convert_dir_quantized(
    dir: impl AsRef<Path>,
    out: impl AsRef<Path>,
    opts: &ConvertOptions,
    quantize: &crate::policy::Options,
    imatrix: Option<&crate::imatrix::Imatrix>,
    progress: &dyn Progress,
) -> Result<(ConvertSummary, crate::policy::Plan)> {
    let f32_opts = ConvertOptions { outtype: OutType::F32, ..opts.clone() };
    let src = HfToGguf::open(dir, &f32_opts, progress)?;
    let out: &Path = out.as_ref();
    let wopts = WriteOptions { threads: opts.threads.unwrap_or(0), ..Default::default() };
    let inputs = src.inputs();
    let (plan, written) =
        crate::policy::quantize::write_source(&src, &src.metadata, &inputs, quantize, imatrix, out, &wopts, progress)?;
    let mut summary = src.summary(out, written.file_size);
    summary.file_type = plan.file_type;
    summary.outtype = crate::policy::FileType::from_id(plan.file_type).map_or("?".into(), |f| f.name().to_string());
    Ok((summary, plan))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_matches_reshape_swapaxes() {
        // rows = heads * hd; numpy: w.reshape(heads, 2, hd/2).swapaxes(1, 2).reshape(rows)
        let (heads, hd) = (2u64, 8u64);
        let rows = heads * hd;
        let mut expect = Vec::new();
        for h in 0..heads {
            for i in 0..hd / 2 {
                for j in 0..2 {
                    expect.push(h * hd + j * (hd / 2) + i);
                }
            }
        }
        let got: Vec<u64> = (0..rows).map(|r| permuted_source_row(r, rows, heads)).collect();
        assert_eq!(got, expect);
        assert_eq!(&got[..8], &[0, 4, 1, 5, 2, 6, 3, 7]);
    }

    #[test]
    fn types_follow_convert() {
        let mut w = Vec::new();
        assert_eq!(tensor_type("blk.0.attn_norm.weight", 1, 8, OutType::F16, &mut w), GgmlType::F32);
        assert_eq!(tensor_type("blk.0.attn_q.bias", 1, 8, OutType::BF16, &mut w), GgmlType::F32);
        assert_eq!(tensor_type("blk.0.attn_q_norm.weight", 1, 8, OutType::BF16, &mut w), GgmlType::F32);
        assert_eq!(tensor_type("token_embd.weight", 2, 64, OutType::Q8_0, &mut w), GgmlType::Q8_0);
        assert_eq!(tensor_type("token_embd.weight", 2, 48, OutType::Q8_0, &mut w), GgmlType::F16);
        assert_eq!(w.len(), 1);
    }
}
