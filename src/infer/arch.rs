//! The architecture of a model as the forward pass needs it: hyperparameters
//! from the GGUF metadata (`<arch>.*` keys) and per-architecture facts (rope
//! layout, activation, embedding scale, post-norms, fused tensors, softcaps,
//! sliding-window layers) from the `infer` section of `formats/arch/*.json`.

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

/// The gated activation of the feed-forward block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FfnKind {
    /// `silu(gate) * up` (llama.cpp `LLM_FFN_SILU`, `LLM_FFN_PAR`).
    #[default]
    Swiglu,
    /// `gelu_tanh(gate) * up` with ggml's f16 GELU table (`LLM_FFN_GELU`, `LLM_FFN_PAR`).
    Geglu,
}

/// When the logits are soft-capped (`cap * tanh(logits / cap)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalSoftcap {
    /// Never.
    #[default]
    None,
    /// Always, with `<arch>.final_logit_softcapping` (default 30, llama.cpp's hparams default).
    Always,
    /// Only when `<arch>.final_logit_softcapping` is present and not 0.
    IfSet,
}

/// The rope of sliding-window layers when `<arch>.rope.freq_base_swa` is absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SwaRopeDefault {
    /// The global layers' base and scale (gemma2).
    Global,
    /// Base 10000, no scaling: llama.cpp's `rope_freq_{base,scale}_train_swa` defaults (gemma3).
    Unscaled,
}

/// Sliding-window attention as llama.cpp's `load_swa_pattern` sets it up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwaSpec {
    /// Every `pattern`-th layer (the last of each group) is global, the others
    /// slide, unless `<arch>.attention.sliding_window_pattern` says otherwise.
    pub pattern: usize,
    /// Window when `<arch>.attention.sliding_window` is absent; without one,
    /// a missing (or 0) window means no sliding window at all.
    #[serde(default)]
    pub default_window: Option<usize>,
    pub rope_default: SwaRopeDefault,
}

/// The `infer` section of an architecture table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferSpec {
    pub rope: RopeKind,
    #[serde(default)]
    pub ffn: FfnKind,
    /// Token embeddings multiplied by `sqrt(n_embd)` (Gemma).
    #[serde(default)]
    pub embd_scale_sqrt: bool,
    /// `post_attention_norm` / `post_ffw_norm` RMS-normalize each branch's output
    /// before it is added to the residual stream (Gemma 2/3).
    #[serde(default)]
    pub post_norms: bool,
    /// `ffn_up` holds the gate (first half) and up (second half) projections (Phi-3).
    #[serde(default)]
    pub fused_gate_up: bool,
    /// Q is multiplied by the attention scale after rope (`ggml_scale`) and the
    /// softmax is unscaled, instead of the softmax scaling the scores.
    #[serde(default)]
    pub scale_q: bool,
    /// Block counts at which llama.cpp scales attention by `1/sqrt(n_embd / n_head)`
    /// instead of `1/sqrt(head_dim)` (Gemma's 27B models).
    #[serde(default)]
    pub attn_scale_embd_per_head_at: Vec<usize>,
    /// Attention scores soft-capped with `<arch>.attn_logit_softcapping` (default 50).
    #[serde(default)]
    pub attn_softcap: bool,
    #[serde(default)]
    pub final_softcap: FinalSoftcap,
    #[serde(default)]
    pub swa: Option<SwaSpec>,
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
    /// Multiplies cos and sin (`rope.scaling.attn_factor`, ggml's `mscale`; 1 without).
    pub attn_factor: f32,
    /// YaRN (`rope.scaling.type = yarn`): how interpolation and extrapolation mix per pair.
    pub yarn: Option<Yarn>,
}

/// YaRN's per-pair mix of interpolated (`freq_scale · θ`) and extrapolated (`θ`)
/// angles, as ggml's `rope_yarn` computes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Yarn {
    /// llama.cpp's `yarn_ext_factor` (1 for YaRN models).
    pub ext_factor: f32,
    /// The pairs below `corr_dims[0]` extrapolate, those above `corr_dims[1]`
    /// interpolate (`ggml_rope_yarn_corr_dims`).
    pub corr_dims: [f32; 2],
}

impl Yarn {
    /// llama.cpp's defaults: `yarn_ext_factor` 1, `beta_fast` 32, `beta_slow` 1 (the
    /// `rope.scaling.yarn_*` keys are written by the converter but not read by the
    /// pinned llama.cpp, so they are not read here either).
    pub fn new(n_rot: usize, n_ctx_orig: usize, freq_base: f32) -> Yarn {
        // ggml_rope_yarn_corr_dim: the pair whose wavelength fits n_rot times in the context.
        let dim = |beta: f32| {
            n_rot as f32 * (n_ctx_orig as f32 / (beta * 2.0 * std::f32::consts::PI)).ln() / (2.0 * freq_base.ln())
        };
        let start = dim(32.0).floor();
        let end = dim(1.0).ceil();
        Yarn { ext_factor: 1.0, corr_dims: [start.max(0.0), end.min(n_rot as f32 - 1.0)] }
    }

    /// The mscale llama.cpp passes to ggml for YaRN (`yarn_attn_factor` after
    /// llama_context's cancellation of ggml's own `1 + 0.1 ln(factor)`), times
    /// `rope.scaling.attn_factor`.
    pub fn attn_factor(factor: f32, rope_attn_factor: f32) -> f32 {
        let mscale = if factor <= 1.0 { 1.0 } else { 0.1f32 * 1.0 * factor.ln() + 1.0 };
        mscale * (1.0f32 / (1.0f32 + 0.1f32 * factor.ln())) * rope_attn_factor
    }
}

/// The sliding-window layers.
#[derive(Debug, Clone, PartialEq)]
pub struct Swa {
    /// A query at position `p` sees keys at `p - window < pos <= p`.
    pub window: usize,
    /// Which blocks slide.
    pub layers: Vec<bool>,
    /// The rope of the sliding layers.
    pub rope: Rope,
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
    pub ffn: FfnKind,
    /// Multiplies the token embeddings (Gemma: `sqrtf(n_embd)`).
    pub embd_scale: Option<f32>,
    pub post_norms: bool,
    pub fused_gate_up: bool,
    /// Fused `attn_qkv` (detected from block 0's tensors, as llama.cpp's `create_tensor_qkv`).
    pub fused_qkv: bool,
    /// The attention scale, and whether it multiplies Q (else the softmax scales the scores).
    pub attn_scale: f32,
    pub scale_q: bool,
    pub attn_softcap: Option<f32>,
    pub final_softcap: Option<f32>,
    pub swa: Option<Swa>,
    /// `rope_factors_long/short.weight` exist: llama.cpp uses the long ones when its
    /// context (padded to 256) exceeds this original context length.
    pub rope_long_short: Option<usize>,
    /// Every block's feed-forward is a mixture of experts.
    pub experts: Option<Experts>,
}

impl Config {
    /// Whether block `b` uses sliding-window attention.
    pub fn is_swa(&self, b: usize) -> bool {
        self.swa.as_ref().is_some_and(|s| s.layers.get(b).copied().unwrap_or(false))
    }
}

fn key_u(md: &Metadata, key: &str) -> Result<Option<usize>> {
    match md.get(key) {
        None => Ok(None),
        Some(v) => v.as_u64().filter(|&n| n > 0 && n < (1 << 31)).map(|n| Some(n as usize)).ok_or_else(|| {
            Error::Other(format!("metadata key '{key}': expected a positive integer, found {}", v.summary(4)))
        }),
    }
}

/// Like [`key_u`] but 0 is allowed (Phi-4 writes `sliding_window = 0` for "none").
fn key_u_or_zero(md: &Metadata, key: &str) -> Result<Option<usize>> {
    match md.get(key) {
        Some(v) if v.as_u64() == Some(0) => Ok(Some(0)),
        _ => key_u(md, key),
    }
}

/// llama.cpp's `set_swa_pattern(n, dense_first = false)`: within each group of
/// `n` layers the last is global; `n = 0` makes every layer slide.
pub fn swa_pattern(n: usize, n_layer: usize) -> Vec<bool> {
    (0..n_layer).map(|il| n == 0 || il % n < n - 1).collect()
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
            "linear" | "yarn" if factor > 0.0 => 1.0 / factor,
            "linear" | "yarn" => 1.0,
            other => {
                return Err(Error::Unsupported(format!(
                    "{arch}.rope.scaling.type = '{other}' is not supported by the forward pass yet (none, linear, yarn, rope_freqs)"
                )))
            }
        };
        let attn_factor = md.get_f64(&format!("{arch}.rope.scaling.attn_factor")).unwrap_or(1.0) as f32;
        if !(attn_factor.is_finite() && attn_factor > 0.0) {
            return Err(Error::Other(format!(
                "metadata key '{arch}.rope.scaling.attn_factor' = {attn_factor}: expected a positive number"
            )));
        }
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
        let yarn = if scaling == "yarn" {
            let n_ctx_orig = key_u(md, &format!("{arch}.rope.scaling.original_context_length"))?
                .or(key_u(md, &format!("{arch}.context_length"))?)
                .ok_or_else(|| {
                    Error::Other(format!(
                        "metadata key '{arch}.rope.scaling.original_context_length' (or '{arch}.context_length') is missing"
                    ))
                })?;
            Some(Yarn::new(n_rot, n_ctx_orig, freq_base))
        } else {
            None
        };
        let attn_factor = match yarn {
            Some(_) => Yarn::attn_factor(1.0 / freq_scale, attn_factor),
            None => attn_factor,
        };
        let rope = Rope { kind: spec.rope, n_rot, freq_base, freq_scale, freq_factors, attn_factor, yarn };
        let f32_key = |k: &str, default: f32| md.get_f64(&format!("{arch}.{k}")).map_or(default, |v| v as f32);
        let attn_scale = if spec.attn_scale_embd_per_head_at.contains(&n_layer) {
            1.0f32 / ((n_embd / n_head) as f32).sqrt()
        } else {
            1.0f32 / (head_dim as f32).sqrt()
        };
        let final_softcap = match spec.final_softcap {
            FinalSoftcap::None => None,
            FinalSoftcap::Always => Some(f32_key("final_logit_softcapping", 30.0)),
            FinalSoftcap::IfSet => Some(f32_key("final_logit_softcapping", 0.0)).filter(|&c| c != 0.0),
        };
        let swa = match &spec.swa {
            None => None,
            Some(s) => Self::read_swa(md, arch, s, n_layer, &rope)?,
        };
        let rope_long_short = if find("rope_factors_long.weight").is_some()
            || find("rope_factors_short.weight").is_some()
        {
            let orig = key_u(md, &format!("{arch}.rope.scaling.original_context_length"))?
                .or(key_u(md, &format!("{arch}.context_length"))?)
                .ok_or_else(|| {
                    Error::Other(format!(
                        "metadata key '{arch}.rope.scaling.original_context_length' (or '{arch}.context_length') is missing"
                    ))
                })?;
            Some(orig)
        } else {
            None
        };
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
            rope,
            n_vocab,
            tied_output: find("output.weight").is_none(),
            experts,
            ffn: spec.ffn,
            embd_scale: spec.embd_scale_sqrt.then(|| (n_embd as f32).sqrt()),
            post_norms: spec.post_norms,
            fused_gate_up: spec.fused_gate_up,
            fused_qkv: find("blk.0.attn_qkv.weight").is_some(),
            attn_scale,
            scale_q: spec.scale_q,
            attn_softcap: spec.attn_softcap.then(|| f32_key("attn_logit_softcapping", 50.0)),
            final_softcap,
            swa,
            rope_long_short,
        };
        for (what, v) in [("attn_logit_softcapping", cfg.attn_softcap), ("final_logit_softcapping", cfg.final_softcap)]
        {
            if v.is_some_and(|c| !(c.is_finite() && c > 0.0)) {
                return Err(Error::Other(format!("metadata key '{arch}.{what}' = {v:?}: expected a positive number")));
            }
        }
        cfg.check_tensors(tensors)?;
        Ok(cfg)
    }

    /// The sliding window and its layers, as llama.cpp's `load_swa_pattern`.
    fn read_swa(md: &Metadata, arch: &str, s: &SwaSpec, n_layer: usize, rope: &Rope) -> Result<Option<Swa>> {
        let window = match key_u_or_zero(md, &format!("{arch}.attention.sliding_window"))? {
            Some(w) if w > 0 => w,
            Some(_) => return Ok(None),
            None => match s.default_window {
                Some(w) => w,
                None => return Ok(None),
            },
        };
        let pkey = format!("{arch}.attention.sliding_window_pattern");
        let layers = match md.get(&pkey) {
            Some(v) => match (v.as_u64(), v.as_array()) {
                (Some(p), _) => swa_pattern(p as usize, n_layer),
                (None, Some(a)) if a.values.len() >= n_layer && a.values.iter().all(|x| x.as_bool().is_some()) => {
                    a.values.iter().take(n_layer).map(|x| x.as_bool().unwrap_or(false)).collect()
                }
                _ => {
                    return Err(Error::Other(format!(
                        "metadata key '{pkey}': expected a layer period or {n_layer} booleans, found {}",
                        v.summary(4)
                    )))
                }
            },
            None => swa_pattern(s.pattern, n_layer),
        };
        let mut swa_rope = match s.rope_default {
            SwaRopeDefault::Global => *rope,
            SwaRopeDefault::Unscaled => Rope { freq_base: 10000.0, freq_scale: 1.0, ..*rope },
        };
        if let Some(b) = md.get_f64(&format!("{arch}.rope.freq_base_swa")) {
            swa_rope.freq_base = b as f32;
        }
        Ok(Some(Swa { window, layers, rope: swa_rope }))
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
        if self.rope_long_short.is_some() {
            for n in ["rope_factors_long.weight", "rope_factors_short.weight"] {
                expect.push((n.into(), vec![self.rope.n_rot as u64 / 2], true));
            }
        }
        let (sep, fused) = (!self.fused_qkv, self.fused_qkv);
        let ff = self.n_ff as u64;
        for b in 0..self.n_layer {
            let e = self.n_embd as u64;
            for (n, d, req) in [
                ("attn_norm.weight", vec![e], true),
                ("attn_qkv.weight", vec![e, (q + k + v) as u64], fused),
                ("attn_qkv.bias", vec![(q + k + v) as u64], false),
                ("attn_q.weight", vec![e, q as u64], sep),
                ("attn_k.weight", vec![e, k as u64], sep),
                ("attn_v.weight", vec![e, v as u64], sep),
                ("attn_output.weight", vec![o as u64, e], true),
                ("attn_q.bias", vec![q as u64], false),
                ("attn_k.bias", vec![k as u64], false),
                ("attn_v.bias", vec![v as u64], false),
                ("attn_output.bias", vec![e], false),
                ("attn_q_norm.weight", vec![self.head_dim as u64], false),
                ("attn_k_norm.weight", vec![self.head_dim as u64], false),
                ("ffn_norm.weight", vec![e], true),
                ("post_attention_norm.weight", vec![e], self.post_norms),
                ("post_ffw_norm.weight", vec![e], self.post_norms),
            ] {
                expect.push((format!("blk.{b}.{n}"), d, req));
            }
            let ffn = match &self.experts {
                None => vec![
                    ("ffn_gate.weight", vec![e, ff], !self.fused_gate_up),
                    ("ffn_up.weight", vec![e, if self.fused_gate_up { 2 * ff } else { ff }], true),
                    ("ffn_down.weight", vec![ff, e], true),
                ],
                Some(x) => {
                    let (f, ne) = (x.n_ff as u64, x.n_expert as u64);
                    vec![
                        ("ffn_gate_inp.weight", vec![e, ne], true),
                        ("ffn_gate_exps.weight", vec![e, f, ne], true),
                        ("ffn_up_exps.weight", vec![e, f, ne], true),
                        ("ffn_down_exps.weight", vec![f, e, ne], true),
                    ]
                }
            };
            for (n, d, req) in ffn {
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
    use crate::gguf::{GgmlType, Value, ValueType};

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

    /// A gemma-style model: post-norms, q/k norms (gemma3), 3 blocks.
    fn gemma(arch: &str) -> (Metadata, Vec<SourceTensor>) {
        let (mut md, mut ts) = tiny(arch);
        md.set(format!("{arch}.block_count"), Value::U32(3));
        ts.retain(|t| !t.name.starts_with("blk."));
        for b in 0..3 {
            for (n, d) in [
                ("attn_norm.weight", vec![8]),
                ("attn_q.weight", vec![8, 8]),
                ("attn_k.weight", vec![8, 4]),
                ("attn_v.weight", vec![8, 4]),
                ("attn_output.weight", vec![8, 8]),
                ("post_attention_norm.weight", vec![8]),
                ("ffn_norm.weight", vec![8]),
                ("ffn_gate.weight", vec![8, 16]),
                ("ffn_up.weight", vec![8, 16]),
                ("ffn_down.weight", vec![16, 8]),
                ("post_ffw_norm.weight", vec![8]),
            ] {
                ts.push(t(&format!("blk.{b}.{n}"), &d));
            }
        }
        (md, ts)
    }

    #[test]
    fn gemma2_defaults_follow_llama_cpp() {
        let (md, ts) = gemma("gemma2");
        let c = Config::from_metadata(&md, &ts).unwrap();
        assert_eq!(
            (c.ffn, c.post_norms, c.scale_q, c.fused_qkv, c.fused_gate_up),
            (FfnKind::Geglu, true, true, false, false)
        );
        assert_eq!(c.embd_scale, Some(8f32.sqrt()));
        assert_eq!((c.attn_softcap, c.final_softcap), (Some(50.0), Some(30.0)));
        assert_eq!(c.attn_scale, 1.0 / 4f32.sqrt());
        let swa = c.swa.as_ref().unwrap();
        // No window key: Gemma 2's 4096; pattern 2: even layers slide; rope as the global layers'.
        assert_eq!((swa.window, swa.layers.clone()), (4096, vec![true, false, true]));
        assert_eq!(swa.rope, c.rope);
        assert!(c.is_swa(0) && !c.is_swa(1));
        let (mut md, ts) = gemma("gemma2");
        md.push("gemma2.attention.sliding_window", Value::U32(8));
        md.push("gemma2.attn_logit_softcapping", Value::F32(20.0));
        md.push("gemma2.final_logit_softcapping", Value::F32(0.0));
        let e = Config::from_metadata(&md, &ts).unwrap_err().to_string();
        assert!(e.contains("gemma2.final_logit_softcapping"), "{e}");
        md.set("gemma2.final_logit_softcapping", Value::F32(15.0));
        let c = Config::from_metadata(&md, &ts).unwrap();
        assert_eq!((c.attn_softcap, c.final_softcap, c.swa.unwrap().window), (Some(20.0), Some(15.0), 8));
        // A missing post-norm is named.
        let (md, mut ts) = gemma("gemma2");
        ts.retain(|t| t.name != "blk.1.post_ffw_norm.weight");
        let e = Config::from_metadata(&md, &ts).unwrap_err().to_string();
        assert!(e.contains("blk.1.post_ffw_norm.weight"), "{e}");
    }

    #[test]
    fn gemma3_sliding_window_only_with_the_key_and_its_own_rope() {
        let (mut md, mut ts) = gemma("gemma3");
        for b in 0..3 {
            ts.push(t(&format!("blk.{b}.attn_q_norm.weight"), &[4]));
            ts.push(t(&format!("blk.{b}.attn_k_norm.weight"), &[4]));
        }
        let c = Config::from_metadata(&md, &ts).unwrap();
        assert_eq!((c.swa.is_none(), c.attn_softcap, c.final_softcap), (true, None, None));
        md.push("gemma3.attention.sliding_window", Value::U32(8));
        md.push("gemma3.rope.freq_base", Value::F32(1e6));
        md.push("gemma3.rope.scaling.type", Value::string("linear"));
        md.push("gemma3.rope.scaling.factor", Value::F32(8.0));
        md.push("gemma3.attention.sliding_window_pattern", Value::U32(2));
        let c = Config::from_metadata(&md, &ts).unwrap();
        let swa = c.swa.as_ref().unwrap();
        assert_eq!(swa.layers, vec![true, false, true]);
        assert_eq!((c.rope.freq_base, c.rope.freq_scale), (1e6, 0.125));
        // Sliding layers: llama.cpp's defaults (base 10000, unscaled) unless rope.freq_base_swa says.
        assert_eq!((swa.rope.freq_base, swa.rope.freq_scale), (10000.0, 1.0));
        md.push("gemma3.rope.freq_base_swa", Value::F32(5000.0));
        md.remove("gemma3.attention.sliding_window_pattern");
        let c = Config::from_metadata(&md, &ts).unwrap();
        let swa = c.swa.as_ref().unwrap();
        assert_eq!((swa.rope.freq_base, swa.layers.clone()), (5000.0, vec![true, true, true]));
        assert_eq!(swa_pattern(6, 7), vec![true, true, true, true, true, false, true]);
        let mut bad = md.clone();
        bad.push("gemma3.attention.sliding_window_pattern", Value::string("six"));
        let e = Config::from_metadata(&bad, &ts).unwrap_err().to_string();
        assert!(e.contains("gemma3.attention.sliding_window_pattern"), "{e}");
        bad.set(
            "gemma3.attention.sliding_window_pattern",
            Value::array(ValueType::Bool, vec![Value::Bool(false), Value::Bool(true), Value::Bool(false)]),
        );
        assert_eq!(Config::from_metadata(&bad, &ts).unwrap().swa.unwrap().layers, vec![false, true, false]);
        md.push("gemma3.final_logit_softcapping", Value::F32(30.0));
        assert_eq!(Config::from_metadata(&md, &ts).unwrap().final_softcap, Some(30.0));
    }

    #[test]
    fn phi3_fused_tensors_and_long_short_factors() {
        let (mut md, mut ts) = tiny("phi3");
        md.push("phi3.attention.sliding_window", Value::U32(262144));
        md.push("phi3.rope.scaling.attn_factor", Value::F32(1.25));
        ts.retain(|t| !t.name.starts_with("blk.0.attn_") || t.name.ends_with("norm.weight"));
        ts.retain(|t| t.name != "blk.0.ffn_gate.weight" && t.name != "blk.0.ffn_up.weight");
        ts.push(t("blk.0.attn_qkv.weight", &[8, 16]));
        ts.push(t("blk.0.attn_output.weight", &[8, 8]));
        ts.push(t("blk.0.ffn_up.weight", &[8, 32]));
        ts.push(t("rope_factors_long.weight", &[2]));
        ts.push(t("rope_factors_short.weight", &[2]));
        let e = Config::from_metadata(&md, &ts).unwrap_err().to_string();
        assert!(e.contains("original_context_length"), "{e}");
        let mut bad = md.clone();
        bad.set("phi3.rope.scaling.attn_factor", Value::F32(f32::NAN));
        bad.push("phi3.context_length", Value::U32(4096));
        let e = Config::from_metadata(&bad, &ts).unwrap_err().to_string();
        assert!(e.contains("phi3.rope.scaling.attn_factor"), "{e}");
        md.push("phi3.context_length", Value::U32(4096));
        let c = Config::from_metadata(&md, &ts).unwrap();
        assert_eq!((c.fused_qkv, c.fused_gate_up, c.rope_long_short), (true, true, Some(4096)));
        assert_eq!((c.rope.kind, c.rope.attn_factor, c.swa.is_none()), (RopeKind::Neox, 1.25, true));
        let ts2: Vec<_> = ts
            .iter()
            .cloned()
            .map(|mut x| {
                if x.name == "blk.0.ffn_up.weight" {
                    x.dims = vec![8, 16];
                }
                x
            })
            .collect();
        let e = Config::from_metadata(&md, &ts2).unwrap_err().to_string();
        assert!(e.contains("blk.0.ffn_up.weight") && e.contains("[8, 32]"), "{e}");
    }
}
