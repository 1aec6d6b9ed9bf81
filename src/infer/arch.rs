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
    /// Every block's feed-forward is a mixture of experts (see `infer::moe`).
    #[serde(default)]
    pub moe: Option<MoeSpec>,
}

/// How the router's logits become expert weights (llama.cpp's
/// `llama_expert_gating_func_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Gating {
    /// Softmax over all experts, then top-k.
    Softmax,
}

/// The `infer.moe` section: what llama.cpp's graph for the architecture
/// hard-codes in its `build_moe_ffn` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoeSpec {
    pub gating: Gating,
    /// The top-k weights are divided by their sum (`norm_w`).
    pub norm_weights: bool,
}

/// Mixture-of-experts hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Experts {
    /// `expert_count`: experts per block.
    pub n_expert: usize,
    /// `expert_used_count`: experts each token is routed to.
    pub n_used: usize,
    /// `expert_feed_forward_length` (default `feed_forward_length / n_used`).
    pub n_ff: usize,
    pub gating: Gating,
    pub norm_weights: bool,
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
    /// Every block's feed-forward is a mixture of experts.
    pub experts: Option<Experts>,
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
        let experts = match spec.moe {
            None => None,
            Some(m) => {
                let n_expert = need_u(md, &format!("{arch}.expert_count"))?;
                let n_used = need_u(md, &format!("{arch}.expert_used_count"))?;
                if n_used > n_expert {
                    return Err(Error::Other(format!(
                        "{arch}.expert_used_count ({n_used}) exceeds {arch}.expert_count ({n_expert})"
                    )));
                }
                let n_ff = match key_u(md, &format!("{arch}.expert_feed_forward_length"))? {
                    Some(n) => n,
                    None => need_u(md, &format!("{arch}.feed_forward_length"))? / n_used,
                };
                if n_ff == 0 {
                    return Err(Error::Other(format!("metadata key '{arch}.expert_feed_forward_length' is missing")));
                }
                Some(Experts { n_expert, n_used, n_ff, gating: m.gating, norm_weights: m.norm_weights })
            }
        };
        // A mixture of experts has no dense feed-forward: its length is not needed.
        let n_ff = if experts.is_some() {
            key_u(md, &format!("{arch}.feed_forward_length"))?.unwrap_or(0)
        } else {
            need_u(md, &format!("{arch}.feed_forward_length"))?
        };
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
            experts,
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
            ] {
                expect.push((format!("blk.{b}.{n}"), d, req));
            }
            let ffn = match &self.experts {
                None => {
                    let f = self.n_ff as u64;
                    vec![
                        ("ffn_gate.weight", vec![e, f]),
                        ("ffn_up.weight", vec![e, f]),
                        ("ffn_down.weight", vec![f, e]),
                    ]
                }
                Some(x) => {
                    let (f, ne) = (x.n_ff as u64, x.n_expert as u64);
                    vec![
                        ("ffn_gate_inp.weight", vec![e, ne]),
                        ("ffn_gate_exps.weight", vec![e, f, ne]),
                        ("ffn_up_exps.weight", vec![e, f, ne]),
                        ("ffn_down_exps.weight", vec![f, e, ne]),
                    ]
                }
            };
            for (n, d) in ffn {
                expect.push((format!("blk.{b}.{n}"), d, true));
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
        if self.experts.is_none() && tensors.iter().any(|t| t.name.contains("_exps.")) {
            return Err(Error::Unsupported(format!(
                "mixture-of-experts tensors in a '{}' model (its table has no infer.moe section)",
                self.arch
            )));
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

    fn tiny_moe() -> (Metadata, Vec<SourceTensor>) {
        let (mut md, mut ts) = tiny("qwen3moe");
        md.push("qwen3moe.expert_count", Value::U32(4));
        md.push("qwen3moe.expert_used_count", Value::U32(2));
        md.push("qwen3moe.expert_feed_forward_length", Value::U32(6));
        ts.retain(|t| !t.name.starts_with("blk.0.ffn_") || t.name == "blk.0.ffn_norm.weight");
        ts.push(t("blk.0.ffn_gate_inp.weight", &[8, 4]));
        ts.push(t("blk.0.ffn_gate_exps.weight", &[8, 6, 4]));
        ts.push(t("blk.0.ffn_up_exps.weight", &[8, 6, 4]));
        ts.push(t("blk.0.ffn_down_exps.weight", &[6, 8, 4]));
        (md, ts)
    }

    #[test]
    fn reads_experts_for_a_mixture_of_experts() {
        let (md, ts) = tiny_moe();
        let c = Config::from_metadata(&md, &ts).unwrap();
        let x = c.experts.unwrap();
        assert_eq!((x.n_expert, x.n_used, x.n_ff, x.gating, x.norm_weights), (4, 2, 6, Gating::Softmax, true));
        assert_eq!(c.rope.kind, RopeKind::Neox);
        // The expert width defaults to feed_forward_length / expert_used_count.
        let (mut md, mut ts) = tiny_moe();
        md.remove("qwen3moe.expert_feed_forward_length");
        for t in ts.iter_mut().filter(|t| t.name.contains("_exps")) {
            for d in t.dims.iter_mut().take(2) {
                if *d == 6 {
                    *d = 8;
                }
            }
        }
        assert_eq!(Config::from_metadata(&md, &ts).unwrap().experts.unwrap().n_ff, 8);
    }

    #[test]
    fn rejects_bad_experts() {
        let (mut md, ts) = tiny_moe();
        md.remove("qwen3moe.expert_used_count");
        let e = Config::from_metadata(&md, &ts).unwrap_err().to_string();
        assert!(e.contains("qwen3moe.expert_used_count"), "{e}");
        let (md, mut ts) = tiny_moe();
        ts.retain(|t| t.name != "blk.0.ffn_up_exps.weight");
        let e = Config::from_metadata(&md, &ts).unwrap_err().to_string();
        assert!(e.contains("blk.0.ffn_up_exps.weight"), "{e}");
        let (md, mut ts) = tiny_moe();
        ts.last_mut().unwrap().dims = vec![6, 8, 3];
        let e = Config::from_metadata(&md, &ts).unwrap_err().to_string();
        assert!(e.contains("ffn_down_exps"), "{e}");
        // Experts in a dense architecture are refused, not ignored.
        let (md, mut ts) = tiny("qwen3");
        ts.push(t("blk.0.ffn_up_exps.weight", &[8, 6, 4]));
        assert!(matches!(Config::from_metadata(&md, &ts), Err(Error::Unsupported(_))));
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
