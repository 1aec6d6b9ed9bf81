//! The `<arch>.*` hyperparameter keys of TextModel.set_gguf_parameters, read from config.json.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::arch::{ArchSpec, Hparams};
use super::rope::{full_attention_rope, rope_parameters};
use super::{params, rope_factors};
use crate::error::{Error, Result};
use crate::gguf::{Metadata, Value as GValue};

/// `find_hparam`: the first of `keys` present (and not null) in the config.
pub(super) fn find<'a>(config: &'a Map<String, Value>, keys: &[&str]) -> Option<(&'a str, &'a Value)> {
    for k in keys {
        if let Some((key, v)) = config.get_key_value(*k) {
            return if v.is_null() { None } else { Some((key.as_str(), v)) };
        }
    }
    None
}

pub(super) struct Cfg<'a> {
    pub(super) config: &'a Map<String, Value>,
    pub(super) path: PathBuf,
}

impl Cfg<'_> {
    pub(super) fn uint(&self, keys: &[&str]) -> Result<Option<u64>> {
        match find(self.config, keys) {
            None => Ok(None),
            Some((k, v)) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| Error::input(&self.path, format!("\"{k}\" must be a non-negative integer, not {v}"))),
        }
    }
    pub(super) fn u32(&self, keys: &[&str]) -> Result<Option<u32>> {
        match self.uint(keys)? {
            None => Ok(None),
            Some(v) => u32::try_from(v)
                .map(Some)
                .map_err(|_| Error::input(&self.path, format!("\"{}\" = {v} does not fit in 32 bits", keys[0]))),
        }
    }
    pub(super) fn required(&self, keys: &[&str]) -> Result<u64> {
        self.uint(keys)?.ok_or_else(|| {
            Error::input(&self.path, format!("missing \"{}\" (also looked for {:?})", keys[0], &keys[1..]))
        })
    }
}

pub(super) fn num_f32(path: &Path, key: &str, v: &Value) -> Result<f32> {
    v.as_f64().map(|x| x as f32).ok_or_else(|| Error::input(path, format!("\"{key}\" must be a number, not {v}")))
}

/// The `<arch>.*` keys of TextModel.set_gguf_parameters (+ LlamaModel's extras).
pub(super) fn write_arch_params(
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
pub(super) fn write_text_model_params(
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
