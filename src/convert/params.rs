//! The architecture-specific `<arch>.*` keys of a model class's
//! `set_gguf_parameters`, as listed in `formats/arch/*.json` (`params.keys`):
//! each key names its config source(s), type, default and when it is left out.

use std::path::Path;

use serde_json::{Map, Value};

use super::arch::{ParamKey, ParamType};
use crate::error::{Error, Result};
use crate::gguf::{Metadata, Value as GValue};

/// What a key's `from` can refer to besides config keys.
pub struct Context<'a> {
    pub config: &'a Map<String, Value>,
    pub path: &'a Path,
    pub block_count: u64,
    pub file_type: u32,
    /// TextModel's `rope_parameters` of full attention.
    pub rope: Map<String, Value>,
    /// The rotary dimensions: `int(partial_rotary_factor * hidden_size) // n_head`.
    pub rope_dims: u64,
}

/// Writes `keys` in order (a key already present is replaced in place).
pub fn write_keys(md: &mut Metadata, arch: &str, keys: &[ParamKey], cx: &Context) -> Result<()> {
    for k in keys {
        if let Some((ck, cv)) = &k.unless {
            if cx.config.get(ck) == Some(cv) {
                continue;
            }
        }
        let found: Option<(String, Value)> = match k.from.first().map(String::as_str) {
            Some("=block_count") => Some(("num_hidden_layers".into(), Value::from(cx.block_count))),
            Some("=file_type") => {
                md.set("general.file_type", GValue::U32(cx.file_type));
                continue;
            }
            Some("=rope_dims") => Some(("partial_rotary_factor".into(), Value::from(cx.rope_dims))),
            Some(r) if r.starts_with("=rope.") => {
                let key = &r["=rope.".len()..];
                cx.rope.get(key).filter(|v| !v.is_null()).map(|v| (format!("rope_scaling.{key}"), v.clone()))
            }
            _ => k.from.iter().find_map(|f| cx.config.get(f).filter(|v| !v.is_null()).map(|v| (f.clone(), v.clone()))),
        };
        let (name, v) = match (found, &k.default) {
            (Some(x), _) => x,
            (None, Some(d)) => (k.from[0].clone(), d.clone()),
            (None, None) if k.optional || k.skip_zero => continue,
            (None, None) => {
                return Err(Error::input(
                    cx.path,
                    format!("missing \"{}\" (needed for {arch}.{})", k.from.join("\" or \""), k.key),
                ))
            }
        };
        if k.skip_zero && v.as_f64() == Some(0.0) {
            continue;
        }
        let value = match k.ty {
            ParamType::U32 => GValue::U32(v.as_u64().and_then(|x| u32::try_from(x).ok()).ok_or_else(|| {
                Error::input(cx.path, format!("\"{name}\" must be a 32-bit unsigned integer, not {v}"))
            })?),
            ParamType::F32 => GValue::F32(
                v.as_f64()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| Error::input(cx.path, format!("\"{name}\" must be a finite number, not {v}")))?
                    as f32,
            ),
        };
        md.set(format!("{arch}.{}", k.key), value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_in_order_with_defaults_and_conditions() {
        let keys: Vec<ParamKey> = serde_json::from_str(
            r#"[
            {"key": "context_length", "from": ["max_position_embeddings"], "type": "u32", "default": 131072},
            {"key": "block_count", "from": ["=block_count"], "type": "u32"},
            {"key": "x", "from": ["=file_type"], "type": "u32"},
            {"key": "final_logit_softcapping", "from": ["final_logit_softcapping"], "type": "f32", "skip_zero": true},
            {"key": "attention.sliding_window", "from": ["sliding_window"], "type": "u32", "unless": ["sliding_window_pattern", 1]},
            {"key": "rope.freq_base", "from": ["=rope.rope_theta"], "type": "f32", "default": 1000000.0}
        ]"#,
        )
        .unwrap();
        let config: Map<String, Value> =
            serde_json::from_str(r#"{"sliding_window": 512, "final_logit_softcapping": null}"#).unwrap();
        let cx = Context {
            config: &config,
            path: Path::new("config.json"),
            block_count: 3,
            file_type: 1,
            rope: Map::new(),
            rope_dims: 16,
        };
        let mut md = Metadata::new();
        md.set("g.block_count", GValue::U32(9));
        write_keys(&mut md, "g", &keys, &cx).unwrap();
        let names: Vec<&str> = md.keys().collect();
        assert_eq!(
            names,
            [
                "g.block_count",
                "g.context_length",
                "general.file_type",
                "g.attention.sliding_window",
                "g.rope.freq_base"
            ]
        );
        assert_eq!(md.get("g.block_count"), Some(&GValue::U32(3)));
        assert_eq!(md.get("g.context_length"), Some(&GValue::U32(131072)));

        let config: Map<String, Value> = serde_json::from_str(r#"{"sliding_window_pattern": 1}"#).unwrap();
        let cx = Context { config: &config, ..cx };
        let mut md = Metadata::new();
        write_keys(&mut md, "g", &keys, &cx).unwrap();
        assert!(md.get("g.attention.sliding_window").is_none());

        let strict: Vec<ParamKey> =
            serde_json::from_str(r#"[{"key": "sliding_window", "from": ["sliding_window"], "type": "u32"}]"#).unwrap();
        let e = write_keys(&mut md, "g", &strict, &cx).unwrap_err().to_string();
        assert!(e.contains("config.json") && e.contains("sliding_window"), "{e}");
    }
}
