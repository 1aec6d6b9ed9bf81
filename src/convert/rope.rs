//! RoPE settings as convert_hf_to_gguf.py's TextModel reads them from the config, and Llama 3's
//! generated `rope_freqs`.

use std::path::Path;

use serde_json::{Map, Value};

use super::arch::Hparams;
use super::text_params::find;
use crate::error::{Error, Result};

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
pub(super) fn llama3_rope_freqs(config: &Map<String, Value>, hp: &Hparams, path: &Path) -> Result<Option<Vec<f32>>> {
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
