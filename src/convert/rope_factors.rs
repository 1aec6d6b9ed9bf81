//! Phi-3's long-context rope scaling ("longrope", formerly "su"): the
//! config's `rope_scaling.long_factor` / `short_factor` lists become the
//! `rope_factors_long` / `rope_factors_short` tensors (F32, one value per
//! rotary dimension pair), and `rope.scaling.attn_factor` the attention
//! magnitude correction, as convert_hf_to_gguf.py's Phi3MiniModel computes
//! them.

use std::path::Path;

use serde_json::{Map, Value};

use super::arch::Hparams;
use crate::error::{Error, Result};

/// The rotary dimensions: `int(partial_rotary_factor * hidden_size) // n_head`.
pub fn rope_dims(config: &Map<String, Value>, hp: &Hparams) -> u64 {
    let rp = super::rope_parameters(config);
    let pct = rp.get("partial_rotary_factor").and_then(Value::as_f64).unwrap_or(1.0);
    ((pct * hp.hidden_size as f64) as u64) / hp.n_head.max(1)
}

/// The factor tensors and the attention factor.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeFactors {
    pub long: Vec<f32>,
    pub short: Vec<f32>,
    pub attn_factor: f64,
}

impl RopeFactors {
    /// Reads them from the full-attention rope parameters `rp`; `None` when
    /// the config has no (non-empty) `long_factor`.
    pub fn from_config(
        rp: &Map<String, Value>,
        config: &Map<String, Value>,
        hp: &Hparams,
        path: &Path,
    ) -> Result<Option<RopeFactors>> {
        let long = match rp.get("long_factor") {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Array(a)) if a.is_empty() => return Ok(None),
            Some(v) => v,
        };
        let max_pos = ["n_positions", "max_position_embeddings"]
            .iter()
            .find_map(|k| config.get(*k).and_then(Value::as_f64))
            .ok_or_else(|| Error::input(path, "missing \"max_position_embeddings\" (needed for the rope factors)"))?;
        let orig = rp
            .get("original_max_position_embeddings")
            .and_then(Value::as_f64)
            .filter(|x| *x > 0.0)
            .ok_or_else(|| Error::input(path, "missing a positive \"original_max_position_embeddings\""))?;
        let scale = max_pos / orig;
        let ty = rp.get("rope_type").and_then(Value::as_str).unwrap_or_default().to_ascii_lowercase();
        let attn_factor = match ty.as_str() {
            "" => return Err(Error::input(path, "rope_scaling has long_factor but no \"type\" / \"rope_type\"")),
            "su" | "longrope" if scale > 1.0 => (1.0 + scale.ln() / orig.ln()).sqrt(),
            "yarn" if scale > 1.0 => 0.1 * scale.ln() + 1.0,
            "su" | "longrope" | "yarn" => 1.0,
            t => {
                return Err(Error::input(path, format!("rope_scaling type \"{t}\" is not supported with long_factor")))
            }
        };
        let list = |key: &str, v: Option<&Value>| -> Result<Vec<f32>> {
            let a = v
                .and_then(Value::as_array)
                .ok_or_else(|| Error::input(path, format!("\"rope_scaling.{key}\" must be a list of numbers")))?;
            a.iter()
                .map(|x| {
                    x.as_f64().filter(|f| f.is_finite()).map(|f| f as f32).ok_or_else(|| {
                        Error::input(path, format!("\"rope_scaling.{key}\" holds {x}, not a finite number"))
                    })
                })
                .collect()
        };
        let long = list("long_factor", Some(long))?;
        let short = list("short_factor", rp.get("short_factor"))?;
        let dims = rope_dims(config, hp);
        if long.len() != short.len() || (long.len() as u64) * 2 != dims {
            return Err(Error::input(
                path,
                format!(
                    "\"rope_scaling.long_factor\" has {} values and \"short_factor\" {}; both must have {} (rotary dimensions / 2)",
                    long.len(),
                    short.len(),
                    dims as f64 / 2.0
                ),
            ));
        }
        Ok(Some(RopeFactors { long, short, attn_factor }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phi35_longrope() {
        let config: Map<String, Value> = serde_json::from_str(
            r#"{"hidden_size": 64, "num_attention_heads": 4, "max_position_embeddings": 131072,
                "original_max_position_embeddings": 4096,
                "rope_scaling": {"type": "longrope", "long_factor": [1,2,3,4,5,6,7,8], "short_factor": [1,1,1,1,1,1,1,1.5]}}"#,
        )
        .unwrap();
        let hp = Hparams {
            block_count: 1,
            hidden_size: 64,
            intermediate_size: 8,
            vocab_size: 8,
            n_head: 4,
            n_head_kv: 4,
            head_dim_cfg: None,
            head_dim: 16,
            extra: Default::default(),
        };
        let rp = super::super::full_attention_rope(&config);
        let f = RopeFactors::from_config(&rp, &config, &hp, Path::new("config.json")).unwrap().unwrap();
        assert_eq!(f.long.len(), 8);
        assert_eq!(f.short[7], 1.5);
        let expect = (1.0 + (32f64).ln() / (4096f64).ln()).sqrt();
        assert_eq!(f.attn_factor, expect);
        let mut bad = config.clone();
        bad["rope_scaling"]["short_factor"] = serde_json::json!([1, 2]);
        let rp = super::super::full_attention_rope(&bad);
        let e = RopeFactors::from_config(&rp, &bad, &hp, Path::new("config.json")).unwrap_err().to_string();
        assert!(e.contains("short_factor") && e.contains("config.json"), "{e}");
    }
}
