//! The architecture of a model as the forward pass needs it: hyperparameters
//! from the GGUF metadata (`<arch>.*` keys) and per-architecture facts (rope
//! layout) from the `infer` section of `formats/arch/*.json`.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::convert::arch::all_specs;
use crate::error::{Error, Result};
use crate::gguf::Metadata;
use crate::pipeline::SourceTensor;

/// How RoPE pairs the dimensions of a head (llama.cpp's `llama_rope_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RopeKind {
    /// Adjacent pairs `(x[2i], x[2i+1])` (llama, mistral).
    Norm,
    /// Halves `(x[i], x[i + n_rot/2])` (GPT-NeoX style: qwen2, qwen3).
    Neox,
}

/// The `infer` section of an architecture table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferSpec {
    pub rope: RopeKind,
}

/// Per-architecture inference facts, by GGUF architecture name.
pub fn infer_specs() -> Result<BTreeMap<String, InferSpec>> {
    let mut out = BTreeMap::new();
    for spec in all_specs()? {
        if let Some(v) = &spec.infer {
            let s: InferSpec = serde_json::from_value(v.clone())
                .map_err(|e| Error::Other(format!("formats/arch/{}.json: infer: {e}", spec.gguf_arch)))?;
            out.insert(spec.gguf_arch.clone(), s);
        }
    }
    Ok(out)
}

/// RoPE frequency scaling as the metadata states it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rope {
    pub kind: RopeKind,
    /// Rotated dimensions per head (`rope.dimension_count`, default head_dim).
    pub n_rot: usize,
    pub freq_base: f32,
    /// 1 / linear scaling factor (1 without scaling).
    pub freq_scale: f32,
    /// Whether a `rope_freqs.weight` tensor divides the frequencies (Llama 3 scaling).
    pub freq_factors: bool,
}

/// Hyperparameters of a dense decoder-only transformer.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub arch: String,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    /// Per-head width of Q and K (`attention.key_length`, default n_embd / n_head).
    pub head_dim: usize,
    /// Per-head width of V (`attention.value_length`, default head_dim).
    pub head_dim_v: usize,
    pub n_ff: usize,
    pub eps: f32,
    pub rope: Rope,
    pub n_vocab: usize,
    /// No `output.weight`: the logits use `token_embd.weight`.
    pub tied_output: bool,
}

fn key_u(md: &Metadata, key: &str) -> Result<Option<usize>> {
    match md.get(key) {
        None => Ok(None),
        Some(v) => v.as_u64().filter(|&n| n > 0 && n < (1 << 31)).map(|n| Some(n as usize)).ok_or_else(|| {
            Error::Other(format!("metadata key '{key}': expected a positive integer, found {}", v.summary(4)))
        }),
    }
}

fn need_u(md: &Metadata, key: &str) -> Result<usize> {
    key_u(md, key)?.ok_or_else(|| Error::Other(format!("metadata key '{key}' is missing")))
}

impl Config {
    /// Reads the hyperparameters from a GGUF's metadata and checks them
    /// against the tensors' shapes.
    pub fn from_metadata(md: &Metadata, tensors: &[SourceTensor]) -> Result<Config> {
        let arch =
            md.architecture().ok_or_else(|| Error::Other("metadata key 'general.architecture' is missing".into()))?;
        let specs = infer_specs()?;
        let Some(spec) = specs.get(arch) else {
            return Err(Error::Unsupported(format!(
                "architecture '{arch}' is not supported by the forward pass (supported: {})",
                specs.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        };
        let n_embd = need_u(md, &format!("{arch}.embedding_length"))?;
        let n_layer = need_u(md, &format!("{arch}.block_count"))?;
        let n_head = need_u(md, &format!("{arch}.attention.head_count"))?;
        let n_head_kv = key_u(md, &format!("{arch}.attention.head_count_kv"))?.unwrap_or(n_head);
        if n_head % n_head_kv != 0 {
            return Err(Error::Other(format!(
                "{arch}.attention.head_count ({n_head}) is not a multiple of head_count_kv ({n_head_kv})"
            )));
        }
        let head_dim = key_u(md, &format!("{arch}.attention.key_length"))?.unwrap_or(n_embd / n_head);
        let head_dim_v = key_u(md, &format!("{arch}.attention.value_length"))?.unwrap_or(head_dim);
        let n_ff = need_u(md, &format!("{arch}.feed_forward_length"))?;
        let eps = md
            .get_f64(&format!("{arch}.attention.layer_norm_rms_epsilon"))
            .ok_or_else(|| Error::Other(format!("metadata key '{arch}.attention.layer_norm_rms_epsilon' is missing")))?
            as f32;
        let n_rot = key_u(md, &format!("{arch}.rope.dimension_count"))?.unwrap_or(head_dim);
        if n_rot > head_dim || n_rot % 2 != 0 {
            return Err(Error::Other(format!(
                "{arch}.rope.dimension_count = {n_rot} does not fit head width {head_dim}"
            )));
        }
        let freq_base = md.get_f64(&format!("{arch}.rope.freq_base")).unwrap_or(10000.0) as f32;
        let scaling = md.get_str(&format!("{arch}.rope.scaling.type")).unwrap_or("none");
        let factor = md.get_f64(&format!("{arch}.rope.scaling.factor")).unwrap_or(0.0) as f32;
        let freq_scale = match scaling {
            "none" => 1.0,
            "linear" if factor > 0.0 => 1.0 / factor,
            "linear" => 1.0,
            other => {
                return Err(Error::Unsupported(format!(
                    "{arch}.rope.scaling.type = '{other}' is not supported by the forward pass yet (none, linear, rope_freqs)"
                )))
            }
        };
        let find = |name: &str| tensors.iter().find(|t| t.name == name);
        let embd =
            find("token_embd.weight").ok_or_else(|| Error::Other("tensor 'token_embd.weight' is missing".into()))?;
        if embd.dims.len() != 2 || embd.dims[0] as usize != n_embd {
            return Err(Error::Other(format!(
                "tensor 'token_embd.weight' has dims {:?}, expected [{n_embd}, n_vocab]",
                embd.dims
            )));
        }
        let n_vocab = embd.dims[1] as usize;
        let freq_factors = find("rope_freqs.weight").is_some();
        let cfg = Config {
            arch: arch.to_string(),
            n_embd,
            n_layer,
            n_head,
            n_head_kv,
            head_dim,
            head_dim_v,
            n_ff,
            eps,
            rope: Rope { kind: spec.rope, n_rot, freq_base, freq_scale, freq_factors },
            n_vocab,
            tied_output: find("output.weight").is_none(),
        };
        cfg.check_tensors(tensors)?;
        Ok(cfg)
    }

    /// Every tensor a block needs is present with the expected shape.
    fn check_tensors(&self, tensors: &[SourceTensor]) -> Result<()> {
        let dims_of = |name: &str| tensors.iter().find(|t| t.name == name).map(|t| t.dims.clone());
        let q = self.n_head * self.head_dim;
        let k = self.n_head_kv * self.head_dim;
        let v = self.n_head_kv * self.head_dim_v;
        let o = self.n_head * self.head_dim_v;
        let mut expect: Vec<(String, Vec<u64>, bool)> =
            vec![("output_norm.weight".into(), vec![self.n_embd as u64], true)];
        if !self.tied_output {
            expect.push(("output.weight".into(), vec![self.n_embd as u64, self.n_vocab as u64], true));
        }
        if self.rope.freq_factors {
            expect.push(("rope_freqs.weight".into(), vec![self.rope.n_rot as u64 / 2], true));
        }
        for b in 0..self.n_layer {
            let e = self.n_embd as u64;
            for (n, d, req) in [
                ("attn_norm.weight", vec![e], true),
                ("attn_q.weight", vec![e, q as u64], true),
                ("attn_k.weight", vec![e, k as u64], true),
                ("attn_v.weight", vec![e, v as u64], true),
                ("attn_output.weight", vec![o as u64, e], true),
                ("attn_q.bias", vec![q as u64], false),
                ("attn_k.bias", vec![k as u64], false),
                ("attn_v.bias", vec![v as u64], false),
                ("attn_output.bias", vec![e], false),
                ("attn_q_norm.weight", vec![self.head_dim as u64], false),
                ("attn_k_norm.weight", vec![self.head_dim as u64], false),
                ("ffn_norm.weight", vec![e], true),
                ("ffn_gate.weight", vec![e, self.n_ff as u64], true),
                ("ffn_up.weight", vec![e, self.n_ff as u64], true),
                ("ffn_down.weight", vec![self.n_ff as u64, e], true),
            ] {
                expect.push((format!("blk.{b}.{n}"), d, req));
            }
        }
        for (name, dims, required) in expect {
            match dims_of(&name) {
                None if required => return Err(Error::Other(format!("tensor '{name}' is missing"))),
                None => {}
                Some(mut got) => {
                    while got.len() > dims.len() && got.last() == Some(&1) {
                        got.pop();
                    }
                    if got != dims {
                        return Err(Error::Other(format!("tensor '{name}' has dims {got:?}, expected {dims:?}")));
                    }
                }
            }
        }
        if tensors.iter().any(|t| t.name.contains("_exps.")) {
            return Err(Error::Unsupported(
                "mixture-of-experts tensors are not supported by the forward pass yet".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{GgmlType, Value};

    fn t(name: &str, dims: &[u64]) -> SourceTensor {
        SourceTensor { name: name.into(), dims: dims.to_vec(), ty: GgmlType::F32 }
    }

    fn tiny(arch: &str) -> (Metadata, Vec<SourceTensor>) {
        let mut md = Metadata::new();
        md.push("general.architecture", Value::string(arch));
        md.push(format!("{arch}.embedding_length"), Value::U32(8));
        md.push(format!("{arch}.block_count"), Value::U32(1));
        md.push(format!("{arch}.attention.head_count"), Value::U32(2));
        md.push(format!("{arch}.attention.head_count_kv"), Value::U32(1));
        md.push(format!("{arch}.feed_forward_length"), Value::U32(16));
        md.push(format!("{arch}.attention.layer_norm_rms_epsilon"), Value::F32(1e-6));
        let ts = vec![
            t("token_embd.weight", &[8, 10]),
            t("output_norm.weight", &[8]),
            t("blk.0.attn_norm.weight", &[8]),
            t("blk.0.attn_q.weight", &[8, 8]),
            t("blk.0.attn_k.weight", &[8, 4]),
            t("blk.0.attn_v.weight", &[8, 4]),
            t("blk.0.attn_output.weight", &[8, 8]),
            t("blk.0.ffn_norm.weight", &[8]),
            t("blk.0.ffn_gate.weight", &[8, 16]),
            t("blk.0.ffn_up.weight", &[8, 16]),
            t("blk.0.ffn_down.weight", &[16, 8]),
        ];
        (md, ts)
    }

    #[test]
    fn reads_hyperparameters_and_rope_kind_from_the_tables() {
        let (md, ts) = tiny("qwen2");
        let c = Config::from_metadata(&md, &ts).unwrap();
        assert_eq!((c.n_embd, c.n_head, c.n_head_kv, c.head_dim, c.n_vocab), (8, 2, 1, 4, 10));
        assert_eq!(c.rope.kind, RopeKind::Neox);
        assert!(c.tied_output);
        let (md, ts) = tiny("llama");
        assert_eq!(Config::from_metadata(&md, &ts).unwrap().rope.kind, RopeKind::Norm);
    }

    #[test]
    fn names_an_unsupported_architecture() {
        let (md, ts) = tiny("mamba");
        let e = Config::from_metadata(&md, &ts).unwrap_err().to_string();
        assert!(e.contains("'mamba'") && e.contains("llama"), "{e}");
    }

    #[test]
    fn rejects_a_wrong_shape() {
        let (md, mut ts) = tiny("llama");
        ts[4].dims = vec![8, 8];
        let e = Config::from_metadata(&md, &ts).unwrap_err().to_string();
        assert!(e.contains("blk.0.attn_k.weight"), "{e}");
    }
}
