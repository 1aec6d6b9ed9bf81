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
//!
//! Modules: `arch` (the architecture tables of `formats/arch/`), `params`
//! (table-driven `<arch>.*` keys) and `text_params` (TextModel's own keys),
//! `rope`/`rope_factors` (RoPE settings and generated tensors), `tensors`
//! (the output tensor list and where each one's data comes from), `naming`,
//! `experts`, `norms`, `outtype`, `vocab`/`spm` (the tokenizer), `modelcard`
//! (`general.*` naming metadata).

pub mod arch;
pub mod experts;
pub mod modelcard;
pub mod naming;
pub mod norms;
pub mod params;
pub mod rope_factors;
pub mod spm;
pub mod vocab;

mod outtype;
mod rope;
mod tensors;
mod text_params;
mod tokenizer_json;

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use self::arch::{ArchSpec, Hparams, Transform, VocabKind};
use self::outtype::tensor_type;
pub use self::outtype::OutType;
pub(crate) use self::rope::{full_attention_rope, rope_parameters};
pub(crate) use self::tensors::PlannedHf;
use self::tensors::{gemma3_vocab_rows, plan_tensors, stored_type};
pub use self::tensors::{permuted_source_row, Origin, OutTensor};
use self::text_params::{write_arch_params, Cfg};
use self::vocab::Vocab;
use crate::error::{Error, Result};
use crate::gguf::{Metadata, TensorSpec, Value as GValue};
use crate::hf::{HfModelDir, HfTensors, SafetensorsModel};
use crate::pipeline::{Planned, SourceTensor, TensorSource, WriteOptions};
use crate::progress::Progress;
use crate::shape::Shape;

/// `general.quantization_version` written by gguf-py.
pub const QUANTIZATION_VERSION: u32 = 2;

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
        Self::from_model_with_vocab(model, identity, opts, None, progress)
    }

    /// [`from_model`](Self::from_model) with the vocabulary already read from
    /// the same directory with the same `vocab_pre` (it does not depend on the
    /// output type): `pack` opens one directory once per output type, and
    /// reading a 150k-token tokenizer is most of an open.
    pub fn from_model_with_vocab(
        model: HfModelDir<W>,
        identity: &ModelIdentity,
        opts: &ConvertOptions,
        known_vocab: Option<&Vocab>,
        progress: &dyn Progress,
    ) -> Result<HfToGguf<W>> {
        let ArchInfo { hf_architecture: hf_arch, spec, config, config_path, hparams } =
            ArchInfo::from_config(&model.config, &model.file("config.json"))?;

        let mut warnings = Vec::new();
        // Vocabulary (first: Gemma 3 trims its embedding to it).
        let vocab = match known_vocab {
            Some(v) => v.clone(),
            None => load_vocab(&model, &spec, &config, opts, progress)?,
        };
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
        let file_type = outtype.file_type();
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
        if row == 0 || !out.len().is_multiple_of(row) {
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
                for (x, local, take, at) in stacked_runs(*rows_each, first_row, (out.len() / row) as u64) {
                    let name =
                        names.get(x).ok_or_else(|| Error::Other(format!("tensor '{}': rows out of range", t.name)))?;
                    let index = w.index_of(name).ok_or_else(|| Error::Other(format!("tensor '{name}' vanished")))?;
                    let dst = &mut out[(at as usize) * row..((at + take) as usize) * row];
                    w.read_rows_f32(index, local, dst)?;
                }
                Ok(())
            }
            Origin::Hf { name, permute, add_one } => {
                let w = &self.model.weights;
                let (index, e) = w.get(name).ok_or_else(|| Error::Other(format!("tensor '{name}' vanished")))?;
                match permute {
                    None => {
                        w.read_rows_f32(index, first_row, out)?;
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
    fn rows_done(&self, index: usize, row0: u64, n: u64) {
        let Some(t) = self.tensors.get(index) else { return };
        let w = &self.model.weights;
        match &t.origin {
            // Permuted rows come from all over the tensor: released when it is done.
            Origin::Hf { name, permute: None, .. } => {
                if let Some(i) = w.index_of(name) {
                    w.release_rows(i, row0, n);
                }
            }
            Origin::Stacked { names, rows_each } => {
                for (x, local, take, _) in stacked_runs(*rows_each, row0, n) {
                    if let Some(i) = names.get(x).and_then(|name| w.index_of(name)) {
                        w.release_rows(i, local, take);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Rows `[first, first + n)` of a tensor stacked from pieces of `rows_each`
/// rows, as runs within one piece: (piece, its first row, rows, position of
/// the run in the range).
fn stacked_runs(rows_each: u64, first: u64, n: u64) -> impl Iterator<Item = (usize, u64, u64, u64)> {
    let mut done = 0u64;
    std::iter::from_fn(move || {
        if done >= n || rows_each == 0 {
            return None;
        }
        let r = first + done;
        let (piece, local) = ((r / rows_each) as usize, r % rows_each);
        let take = (rows_each - local).min(n - done);
        let at = done;
        done += take;
        Some((piece, local, take, at))
    })
}

/// Drops `value` on a thread of its own: a vocabulary or tokenizer is a few
/// hundred thousand allocations, tens of milliseconds of `free` nobody needs
/// to wait for.
pub(crate) fn drop_later<T: Send + 'static>(value: T) {
    // When the thread cannot start, the closure, and `value` in it, is dropped by `spawn`.
    let _ = std::thread::Builder::new().spawn(move || drop(value));
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
            outtype: self.outtype.name().unwrap_or("F16").into(),
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
