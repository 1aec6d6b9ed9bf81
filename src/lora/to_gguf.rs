//! A PEFT LoRA adapter as a GGUF LoRA adapter, the file llama.cpp's
//! `convert_lora_to_gguf.py` writes and llama.cpp (`--lora`,
//! `llama_adapter_lora_init`) and Ollama (`ADAPTER`) load:
//!
//! * metadata: `general.architecture`, `general.type` = `adapter`,
//!   `adapter.type` = `lora`, the `general.*` naming keys gguf-py derives
//!   from the adapter directory (its name, README.md model card),
//!   `adapter.lora.alpha` (f32), `general.quantization_version`; no
//!   `general.file_type`, no hyperparameters, no vocabulary.
//! * tensors, per adapted module in the order of the adapter file's keys:
//!   `<gguf name>.lora_a` with ggml dims [in, r] (A as stored) and
//!   `<gguf name>.lora_b` with dims [r, out] (B as stored, its rows in
//!   llama.cpp's Q/K permutation for llama). For the token embeddings
//!   `token_embd.weight.lora_a` is Aᵀ (dims [r, vocab]) and `lora_b` is B
//!   (dims [r, hidden]), which is what `llm_build_inp_embd` expects.
//! * types: `--outtype` f32 (the script's default), f16, bf16, q8_0 (rows
//!   not a multiple of 32 fall back to F16) or auto (BF16 for bf16 adapters,
//!   else F16).
//!
//! llama.cpp scales every pair by alpha / rank with one file-wide alpha and
//! rank = ne[0] of `lora_b` (alpha 0: scale 1). Where PEFT's scaling differs
//! (rsLoRA: alpha / √r; `alpha_pattern`; `rank_pattern` with a pattern
//! alpha), `lora_b` is multiplied by PEFT's scaling / llama.cpp's scaling so
//! the applied ΔW is PEFT's; the script ignores these settings.
//!
//! Refused, because llama.cpp's adapter format cannot express them: DoRA,
//! `lora_bias`, full tensors (`modules_to_save`, trained biases, changed
//! embedding copies), and an lm_head adapter on a base with tied embeddings
//! (its GGUF has no `output.weight` for llama.cpp to adapt). `merge` handles
//! all of these.

use std::path::{Path, PathBuf};

use super::adapter::{Adapter, LoraModule, ModuleKind};
use crate::convert::naming::{GeneralInfo, ParamCounts};
use crate::convert::{modelcard, permuted_source_row, ArchInfo, OutType, QUANTIZATION_VERSION};
use crate::error::{Error, Result};
use crate::gguf::{GgmlType, Metadata, Value as GValue};
use crate::hf::{DType, SafetensorsModel};
use crate::pipeline::{Planned, SourceTensor, TensorSource, WriteOptions};
use crate::progress::Progress;

/// Options of [`convert_adapter`].
#[derive(Debug, Clone)]
pub struct AdapterGgufOptions {
    /// f32 (default, as the script), f16, bf16, q8_0 or auto.
    pub outtype: OutType,
    pub threads: Option<usize>,
}

impl Default for AdapterGgufOptions {
    fn default() -> Self {
        AdapterGgufOptions { outtype: OutType::F32, threads: None }
    }
}

/// What [`convert_adapter`] wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AdapterGgufSummary {
    pub output: PathBuf,
    pub gguf_architecture: String,
    pub outtype: String,
    pub lora_alpha: f32,
    pub n_modules: usize,
    pub n_tensors: usize,
    pub output_bytes: u64,
    /// Modules whose lora_b was rescaled to carry PEFT's scaling.
    pub rescaled_modules: Vec<String>,
    pub warnings: Vec<String>,
}

/// One output tensor: A or B of a module.
struct Piece {
    module: usize,
    is_b: bool,
    /// Transpose A (token embeddings).
    transpose: bool,
    /// Q/K row permutation of B over this many heads.
    permute: Option<u64>,
    /// Factor applied to B.
    factor: f32,
}

struct AdapterSource {
    adapter: Adapter,
    tensors: Vec<SourceTensor>,
    pieces: Vec<Piece>,
    describe: String,
}

fn stored_ggml(d: DType) -> GgmlType {
    match d {
        DType::F16 => GgmlType::F16,
        DType::BF16 => GgmlType::BF16,
        _ => GgmlType::F32,
    }
}

impl TensorSource for AdapterSource {
    fn describe(&self) -> String {
        self.describe.clone()
    }
    fn tensors(&self) -> &[SourceTensor] {
        &self.tensors
    }
    fn read_rows(&self, index: usize, row0: u64, out: &mut [f32]) -> Result<()> {
        let (t, p) = (&self.tensors[index], &self.pieces[index]);
        let m = &self.adapter.modules[p.module];
        let w = &self.adapter.weights;
        let row_len = t.row_len() as usize;
        let n = out.len() / row_len.max(1);
        if !p.is_b {
            let e = self.adapter.entry(&m.a)?;
            if p.transpose {
                // Row v of Aᵀ is column v of A (r, vocab).
                let r = m.rank as usize;
                let mut col = vec![0f32; n];
                for k in 0..r {
                    w.read_f32(e, k as u64 * m.a_cols + row0, &mut col)?;
                    for (i, x) in col.iter().enumerate() {
                        out[i * r + k] = *x;
                    }
                }
            } else {
                w.read_rows_f32(e, row0, out)?;
            }
            return Ok(());
        }
        let e = self.adapter.entry(&m.b)?;
        for (i, row) in out.chunks_exact_mut(row_len).enumerate() {
            let src = match p.permute {
                Some(heads) => permuted_source_row(row0 + i as u64, m.b_rows, heads),
                None => row0 + i as u64,
            };
            w.read_rows_f32(e, src, row)?;
            if p.factor != 1.0 {
                for x in row.iter_mut() {
                    *x *= p.factor;
                }
            }
        }
        Ok(())
    }
}

/// Converts a PEFT adapter directory to a GGUF LoRA adapter for the base
/// model in `base_dir` (its config.json decides the architecture and tensor
/// names; its weights, when present, confirm the shapes and whether the
/// embeddings are tied).
pub fn convert_adapter(
    adapter_dir: &Path,
    base_dir: &Path,
    out: &Path,
    opts: &AdapterGgufOptions,
    progress: &dyn Progress,
) -> Result<AdapterGgufSummary> {
    let adapter = Adapter::open(adapter_dir, progress)?;
    let cfg = adapter.config.clone();
    let file = adapter.file();
    let cfg_file = adapter_dir.join(super::config::CONFIG_FILE);
    if !base_dir.is_dir() {
        return Err(Error::input(base_dir, "not a directory (expected the base model's Hugging Face directory)"));
    }
    let base_config = crate::hf::read_config(base_dir)?;
    let arch = ArchInfo::from_config(&base_config, &base_dir.join("config.json"))?;
    let base_weights = if has_safetensors(base_dir) { Some(SafetensorsModel::open_dir(base_dir)?) } else { None };
    let mut warnings = Vec::new();

    let merge_hint = |what: String| {
        Error::input(
            &file,
            format!(
                "{what}, which a GGUF LoRA adapter cannot represent (llama.cpp only adds scale·B·A); merge it into \
                 the base instead: ggufkit merge {} --lora {} -o model.gguf",
                base_dir.display(),
                adapter_dir.display()
            ),
        )
    };
    if cfg.use_dora {
        return Err(merge_hint("the adapter is a DoRA adapter (use_dora = true)".into()));
    }
    if let Some(m) = adapter.modules.iter().find(|m| m.bias.is_some()) {
        return Err(merge_hint(format!("module '{}' has a LoRA bias (lora_bias = true)", m.path)));
    }
    for f in &adapter.full {
        let unchanged = match (&base_weights, f.base_layer) {
            (Some(b), true) => match b.tensor(&f.target).or_else(|| {
                // The saved lm_head of a tied base is the embeddings.
                (f.target == "lm_head.weight").then(|| b.tensor("model.embed_tokens.weight")).flatten()
            }) {
                Some(t) => {
                    let e = adapter.entry(&f.key)?;
                    e.dtype == t.dtype && e.shape == t.shape && adapter.weights.raw(e) == b.raw(t)
                }
                None => false,
            },
            (None, true) => {
                warnings.push(format!(
                    "'{}' not compared with the base (no base weights); skipped as the script does",
                    f.key
                ));
                true
            }
            _ => false,
        };
        if !unchanged {
            return Err(merge_hint(format!(
                "'{}' is a full tensor (modules_to_save, a trained bias or changed embeddings)",
                f.key
            )));
        }
    }
    if cfg.fan_in_fan_out {
        warnings.push(format!(
            "{}: fan_in_fan_out = true is ignored for nn.Linear layers, as PEFT does",
            cfg_file.display()
        ));
    }
    let tied = match &base_weights {
        Some(b) => b.tensor("lm_head.weight").is_none(),
        None => base_config.get("tie_word_embeddings").and_then(|v| v.as_bool()).unwrap_or(false),
    };

    let alpha = cfg.lora_alpha as f32;
    let mut tensors = Vec::new();
    let mut pieces = Vec::new();
    let mut rescaled = Vec::new();
    let mut total_params: i64 = 0;
    for (mi, m) in adapter.modules.iter().enumerate() {
        let hf_name = format!("{}.weight", m.path);
        if m.path == "lm_head" && tied {
            return Err(merge_hint(
                "the adapter changes lm_head but the base has tied embeddings (its GGUF has no output.weight for \
                 llama.cpp to adapt)"
                    .into(),
            ));
        }
        let (gguf, permute) = arch.gguf_name(&hf_name).ok_or_else(|| {
            Error::input(
                &file,
                format!("module '{}' has no GGUF tensor for architecture {}", m.path, arch.spec.gguf_arch),
            )
        })?;
        check_shape(&arch, base_weights.as_ref(), &hf_name, m, &file)?;
        if cfg.targets(&m.path, m.kind == ModuleKind::Linear, m.path == "lm_head")? == Some(false) {
            return Err(Error::input(
                &file,
                format!(
                    "module '{}' has LoRA tensors but target_modules in {} does not select it",
                    m.path,
                    cfg_file.display()
                ),
            ));
        }
        // llama.cpp's scale for this pair, and the factor that makes it PEFT's.
        let llama_scale = if alpha != 0.0 { f64::from(alpha) / m.rank as f64 } else { 1.0 };
        let factor = m.scaling / llama_scale;
        let factor32 = factor as f32;
        if factor != 1.0 {
            rescaled.push(m.path.clone());
        }
        let a_entry = adapter.entry(&m.a)?;
        let b_entry = adapter.entry(&m.b)?;
        let embed = m.kind == ModuleKind::Embedding;
        let r = m.rank;
        let a_dims = if embed { vec![r, m.a_cols] } else { vec![m.a_cols, r] };
        let b_dims = vec![r, m.b_rows];
        tensors.push(SourceTensor { name: format!("{gguf}.lora_a"), dims: a_dims, ty: stored_ggml(a_entry.dtype) });
        pieces.push(Piece { module: mi, is_b: false, transpose: embed, permute: None, factor: 1.0 });
        tensors.push(SourceTensor { name: format!("{gguf}.lora_b"), dims: b_dims, ty: stored_ggml(b_entry.dtype) });
        pieces.push(Piece { module: mi, is_b: true, transpose: false, permute, factor: factor32 });
        // gguf-py's parameter count: lora_b's shape with A's last numpy dimension.
        let a_last = if embed { r } else { m.a_cols };
        total_params += (m.b_rows * a_last) as i64;
    }
    // target_modules must agree with the tensors (modules from the base weights when present).
    if let Some(b) = &base_weights {
        let lora_paths: std::collections::HashSet<&str> = adapter.modules.iter().map(|m| m.path.as_str()).collect();
        for t in b.tensors() {
            let Some(path) = t.name.strip_suffix(".weight") else { continue };
            if t.shape.len() != 2 {
                continue;
            }
            let is_linear = !path.ends_with("embed_tokens");
            if cfg.targets(path, is_linear, path == "lm_head")? == Some(true) && !lora_paths.contains(path) {
                return Err(Error::input(
                    &file,
                    format!(
                        "missing LoRA tensors for module '{path}' (target_modules in {} selects it)",
                        cfg_file.display()
                    ),
                ));
            }
        }
    }

    if !rescaled.is_empty() {
        warnings.push(format!(
            "{} module(s) use a scaling other than lora_alpha / r (rsLoRA or alpha/rank patterns); their lora_b \
             carries the difference",
            rescaled.len()
        ));
    }

    // Output types.
    let first_dtype = adapter.modules.first().and_then(|m| adapter.entry(&m.a).ok()).map(|e| e.dtype);
    let outtype = match opts.outtype {
        OutType::Auto => match first_dtype {
            Some(DType::BF16) => OutType::BF16,
            _ => OutType::F16,
        },
        t => t,
    };
    let mut plan = Vec::with_capacity(tensors.len());
    for (i, t) in tensors.iter().enumerate() {
        let ty = match outtype {
            OutType::F32 => GgmlType::F32,
            OutType::F16 | OutType::Auto => GgmlType::F16,
            OutType::BF16 => GgmlType::BF16,
            OutType::Q8_0 if t.row_len() % 32 == 0 => GgmlType::Q8_0,
            OutType::Q8_0 => {
                warnings.push(format!(
                    "{}: row length {} is not a multiple of 32, falling back to F16",
                    t.name,
                    t.row_len()
                ));
                GgmlType::F16
            }
        };
        plan.push(Planned::new(i, ty));
    }

    // Metadata, in the script's order.
    let mut md = Metadata::new();
    md.set("general.architecture", GValue::string(arch.spec.gguf_arch.clone()));
    md.set("general.type", GValue::string("adapter"));
    md.set("adapter.type", GValue::string("lora"));
    let dir_name = adapter_dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let read_json = |name: &str| crate::hf::read_json_opt(&adapter_dir.join(name)).ok().flatten();
    let hf_params = read_json("config.json").and_then(|v| v.as_object().cloned()).unwrap_or_default();
    let gen_config = read_json("generation_config.json");
    let card = match crate::hf::read_text(&adapter_dir.join("README.md")) {
        Ok(text) => match modelcard::parse_model_card(&text) {
            Ok(c) => c,
            Err(e) => {
                warnings.push(format!("README.md: cannot read the model card front matter ({e}); ignored"));
                None
            }
        },
        Err(_) => None,
    };
    let info = GeneralInfo::derive(
        &dir_name,
        &hf_params,
        gen_config.as_ref(),
        card.as_ref(),
        ParamCounts::dense(-total_params),
    );
    warnings.extend(info.warnings.iter().cloned());
    info.write_metadata(&mut md);
    md.set("adapter.lora.alpha", GValue::F32(alpha));
    md.set("general.quantization_version", GValue::U32(QUANTIZATION_VERSION));

    for w in &warnings {
        progress.warn(w);
    }
    let n_modules = adapter.modules.len();
    let src = AdapterSource { adapter, tensors, pieces, describe: adapter_dir.display().to_string() };
    let mut inputs: Vec<&Path> = src.adapter.weights.files();
    inputs.push(cfg_file.as_path());
    let wopts = WriteOptions { threads: opts.threads.unwrap_or(0), ..Default::default() };
    let written = crate::pipeline::write_gguf(&src, &plan, &md, out, &inputs, &wopts, progress)?;
    Ok(AdapterGgufSummary {
        output: out.to_path_buf(),
        gguf_architecture: arch.spec.gguf_arch.clone(),
        outtype: match outtype {
            OutType::F32 => "F32",
            OutType::F16 | OutType::Auto => "F16",
            OutType::BF16 => "BF16",
            OutType::Q8_0 => "Q8_0",
        }
        .into(),
        lora_alpha: alpha,
        n_modules,
        n_tensors: src.tensors.len(),
        output_bytes: written.file_size,
        rescaled_modules: rescaled,
        warnings,
    })
}

fn has_safetensors(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|rd| {
        rd.flatten().any(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with("model") && n.ends_with(".safetensors")
        })
    })
}

/// The module's A/B shapes against the base tensor (the base weights when
/// present, else the shape the config implies).
fn check_shape(
    arch: &ArchInfo,
    base: Option<&SafetensorsModel>,
    hf_name: &str,
    m: &LoraModule,
    file: &Path,
) -> Result<()> {
    let expect = match m.kind {
        ModuleKind::Linear => vec![m.b_rows, m.a_cols],
        ModuleKind::Embedding => vec![m.a_cols, m.b_rows],
    };
    let actual: Option<Vec<u64>> = match base {
        Some(b) => match b.tensor(hf_name) {
            Some(t) => Some(t.shape.clone()),
            // A tied lm_head is refused before; anything else is missing.
            None => {
                return Err(Error::input(
                    file,
                    format!("module '{}' of the adapter is not in the base model (no tensor '{hf_name}')", m.path),
                ))
            }
        },
        None => {
            arch.spec.match_tensor(hf_name).and_then(|mt| mt.rule.shape.iter().map(|d| arch.hparams.dim(d)).collect())
        }
    };
    if let Some(actual) = actual {
        if actual != expect {
            return Err(Error::input(
                file,
                format!(
                    "shape mismatch for module '{}': the base tensor '{hf_name}' is {actual:?} but the LoRA tensors \
                     give {expect:?} (is this the adapter's base model?)",
                    m.path
                ),
            ));
        }
    }
    Ok(())
}
