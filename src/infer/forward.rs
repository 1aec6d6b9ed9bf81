//! The forward pass of a dense decoder-only transformer (llama, mistral,
//! qwen2, qwen3, gemma2, gemma3, phi3) over one chunk of prompt tokens: no
//! sampling, no cache between chunks, causal attention within the chunk.
//!
//! A block is `x += Wo·attn(rope(Wq·n), rope(Wk·n), Wv·n)` with
//! `n = rmsnorm(x)`, then `x += Wdown·(silu(Wgate·n) ⊙ Wup·n)` with
//! `n = rmsnorm(x)`; biases and per-head q/k norms when the model has them.
//! The architecture's table adds: scaled embeddings, GELU instead of SiLU,
//! post-norms of each branch, fused QKV / gate-up weights, Q scaled before the
//! scores, attention and final logit soft-capping, sliding-window layers with
//! their own rope, and Phi-3's long/short rope factors.
//! The weights of a block are built from the source when it runs and dropped
//! after; activations are `O(tokens × width)`; the logits of the requested
//! positions only are computed.

use rayon::prelude::*;

use super::arch::{Config, FfnKind};
use super::ops::{self, RopeCache};
use super::weights::{gemm_f32, Linear, Precision, Weights};
use crate::error::{Error, Result};
use crate::gguf::Metadata;
use crate::pipeline::TensorSource;

/// Sees the input of every matrix product (for the importance matrix).
pub trait MatmulHook {
    /// Whether `observe` wants the input of this weight.
    fn wants(&self, weight: &str) -> bool;
    /// `x` holds `rows` rows of the weight's input width, in token order.
    fn observe(&mut self, weight: &str, x: &[f32], rows: usize);
    /// The input of expert `expert` (of `n_expert`) of a stacked expert
    /// weight (`ffn_*_exps`, llama.cpp's `mul_mat_id`): the `rows` rows routed
    /// to it, slot by slot and token by token within a slot. Called for every
    /// expert of every such product, with 0 rows for an expert no token chose.
    fn observe_expert(&mut self, _weight: &str, _expert: usize, _n_expert: usize, _x: &[f32], _rows: usize) {}
}

/// Options of the forward pass.
#[derive(Debug, Clone, Copy)]
pub struct ForwardOptions {
    /// Round K and V to f16 as llama.cpp's default KV cache stores them.
    pub kv_f16: bool,
}

impl Default for ForwardOptions {
    fn default() -> Self {
        ForwardOptions { kv_f16: true }
    }
}

/// A model ready to evaluate: its architecture and its weights' source.
pub struct Model<'a> {
    pub config: Config,
    pub weights: Weights<'a>,
    pub options: ForwardOptions,
    freq_factors: Option<Vec<f32>>,
    /// `rope_factors_long` and `rope_factors_short` (Phi-3 longrope).
    long_short: Option<(Vec<f32>, Vec<f32>)>,
}

impl<'a> Model<'a> {
    pub fn new(
        md: &Metadata,
        source: &'a dyn TensorSource,
        precision: Precision,
        options: ForwardOptions,
    ) -> Result<Self> {
        let config = Config::from_metadata(md, source.tensors()).map_err(|e| match e {
            Error::Unsupported(m) => Error::Unsupported(format!("{}: {m}", source.describe())),
            Error::Other(m) => Error::Other(format!("{}: {m}", source.describe())),
            e => e,
        })?;
        let weights = Weights::new(source, precision);
        let freq_factors = if config.rope.freq_factors { Some(weights.vector("rope_freqs.weight")?) } else { None };
        let long_short = match config.rope_long_short {
            Some(_) => {
                Some((weights.vector("rope_factors_long.weight")?, weights.vector("rope_factors_short.weight")?))
            }
            None => None,
        };
        Ok(Model { config, weights, options, freq_factors, long_short })
    }

    pub fn describe(&self) -> String {
        self.weights.source.describe()
    }

    pub(super) fn matmul(
        &self,
        w: &Linear,
        x: &[f32],
        rows: usize,
        hook: &mut Option<&mut dyn MatmulHook>,
    ) -> Result<Vec<f32>> {
        if let Some(h) = hook.as_deref_mut() {
            if h.wants(&w.name) {
                h.observe(&w.name, x, rows);
            }
        }
        w.forward(x, rows)
    }

    /// Evaluates `tokens` (positions 0..n) and returns the logits of
    /// positions `out_from..n`, `n_vocab` per position.
    pub fn forward(&self, tokens: &[u32], out_from: usize, mut hook: Option<&mut dyn MatmulHook>) -> Result<Vec<f32>> {
        let c = &self.config;
        let n = tokens.len();
        if n == 0 || out_from > n {
            return Err(Error::Other(format!("forward pass: {n} tokens, outputs from {out_from}")));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= c.n_vocab) {
            return Err(Error::Other(format!(
                "token id {bad} is outside the vocabulary of {} ({})",
                self.describe(),
                c.n_vocab
            )));
        }
        let e = c.n_embd;
        let mut x = vec![0f32; n * e];
        for (row, &t) in x.chunks_mut(e).zip(tokens) {
            row.copy_from_slice(&self.weights.rows("token_embd.weight", t as u64, 1)?);
        }
        if let Some(s) = c.embd_scale {
            ops::scale(&mut x, s);
        }
        let factors = self.rope_factors(n);
        let rope = RopeCache::new(&c.rope, n, factors);
        let rope_swa = c.swa.as_ref().map(|s| RopeCache::new(&s.rope, n, factors));
        for b in 0..c.n_layer {
            let r = match (&rope_swa, c.is_swa(b)) {
                (Some(r), true) => r,
                _ => &rope,
            };
            self.block(b, &mut x, n, r, &mut hook)?;
        }
        let norm = self.weights.vector("output_norm.weight")?;
        ops::rms_norm(&mut x, e, c.eps, &norm);
        let out_name = if c.tied_output { "token_embd.weight" } else { "output.weight" };
        let out = self.weights.linear(out_name)?;
        if let Some(h) = hook {
            // A tied output keeps the embedding's name, as in llama.cpp.
            if h.wants(out_name) {
                h.observe(out_name, &x, n);
            }
        }
        let mut logits = out.forward(&x[out_from * e..], n - out_from)?;
        if let Some(cap) = c.final_softcap {
            ops::softcap(&mut logits, cap);
        }
        Ok(logits)
    }

    /// The frequency factors of the rope: `rope_freqs`, or Phi-3's long ones
    /// when llama.cpp's context for `n` tokens (padded to 256, as
    /// `llama_context` pads `n_ctx`) exceeds the original context, else the short ones.
    fn rope_factors(&self, n: usize) -> Option<&[f32]> {
        if let Some(f) = &self.freq_factors {
            return Some(f);
        }
        let (long, short) = self.long_short.as_ref()?;
        let orig = self.config.rope_long_short?;
        Some(if n.next_multiple_of(256) > orig { long } else { short })
    }

    fn block(
        &self,
        b: usize,
        x: &mut [f32],
        n: usize,
        rope: &RopeCache,
        hook: &mut Option<&mut dyn MatmulHook>,
    ) -> Result<()> {
        let c = &self.config;
        let w = &self.weights;
        let e = c.n_embd;
        let name = |s: &str| format!("blk.{b}.{s}");

        // Attention.
        let mut h = x.to_vec();
        ops::rms_norm(&mut h, e, c.eps, &w.vector(&name("attn_norm.weight"))?);
        let (mut q, mut k, mut v) = if c.fused_qkv {
            let mut qkv = self.matmul(&w.linear(&name("attn_qkv.weight"))?, &h, n, hook)?;
            if let Some(bias) = w.vector_opt(&name("attn_qkv.bias"))? {
                ops::add_bias(&mut qkv, &bias);
            }
            let dq = c.n_head * c.head_dim;
            let dk = c.n_head_kv * c.head_dim;
            let mut parts = split_columns(&qkv, n, &[dq, dk, c.n_head_kv * c.head_dim_v]).into_iter();
            let (q, k, v) = (parts.next(), parts.next(), parts.next());
            (q.unwrap_or_default(), k.unwrap_or_default(), v.unwrap_or_default())
        } else {
            (
                self.matmul(&w.linear(&name("attn_q.weight"))?, &h, n, hook)?,
                self.matmul(&w.linear(&name("attn_k.weight"))?, &h, n, hook)?,
                self.matmul(&w.linear(&name("attn_v.weight"))?, &h, n, hook)?,
            )
        };
        drop(h);
        for (t, s) in [(&mut q, "attn_q.bias"), (&mut k, "attn_k.bias"), (&mut v, "attn_v.bias")] {
            if let Some(bias) = w.vector_opt(&name(s))? {
                ops::add_bias(t, &bias);
            }
        }
        if let Some(g) = w.vector_opt(&name("attn_q_norm.weight"))? {
            ops::rms_norm(&mut q, c.head_dim, c.eps, &g);
        }
        if let Some(g) = w.vector_opt(&name("attn_k_norm.weight"))? {
            ops::rms_norm(&mut k, c.head_dim, c.eps, &g);
        }
        rope.apply(c.rope.kind, &mut q, c.n_head, c.head_dim);
        rope.apply(c.rope.kind, &mut k, c.n_head_kv, c.head_dim);
        if c.scale_q {
            ops::scale(&mut q, c.attn_scale);
        }
        if self.options.kv_f16 {
            for t in [&mut k, &mut v] {
                for a in t.iter_mut() {
                    *a = half::f16::from_f32(*a).to_f32();
                }
            }
        }
        let window = if c.is_swa(b) { c.swa.as_ref().map(|s| s.window) } else { None };
        let attn = self.attention(&q, &k, &v, n, window)?;
        drop((q, k, v));
        let mut o = self.matmul(&w.linear(&name("attn_output.weight"))?, &attn, n, hook)?;
        drop(attn);
        if let Some(bias) = w.vector_opt(&name("attn_output.bias"))? {
            ops::add_bias(&mut o, &bias);
        }
        if c.post_norms {
            ops::rms_norm(&mut o, e, c.eps, &w.vector(&name("post_attention_norm.weight"))?);
        }
        ops::add_assign(x, &o);
        drop(o);

        // Feed-forward.
        let mut h = x.to_vec();
        ops::rms_norm(&mut h, e, c.eps, &w.vector(&name("ffn_norm.weight"))?);
        let mut down = match &c.experts {
            Some(experts) => super::moe::ffn(self, experts, b, &h, n, hook)?,
            None => self.dense_ffn(b, &h, n, hook)?,
        };
        drop(h);
        if c.post_norms {
            ops::rms_norm(&mut down, e, c.eps, &w.vector(&name("post_ffw_norm.weight"))?);
        }
        ops::add_assign(x, &down);
        Ok(())
    }

    /// The dense feed-forward block of block `b` on its normalized input `h`:
    /// `Wdown·(act(Wgate·h) ⊙ Wup·h)`, the gate and up halves of one fused
    /// `ffn_up` when the architecture fuses them.
    fn dense_ffn(&self, b: usize, h: &[f32], n: usize, hook: &mut Option<&mut dyn MatmulHook>) -> Result<Vec<f32>> {
        let c = &self.config;
        let w = &self.weights;
        let name = |s: &str| format!("blk.{b}.{s}");
        let (mut gate, up) = if c.fused_gate_up {
            let gu = self.matmul(&w.linear(&name("ffn_up.weight"))?, h, n, hook)?;
            let mut parts = split_columns(&gu, n, &[c.n_ff, c.n_ff]).into_iter();
            (parts.next().unwrap_or_default(), parts.next().unwrap_or_default())
        } else {
            (
                self.matmul(&w.linear(&name("ffn_gate.weight"))?, h, n, hook)?,
                self.matmul(&w.linear(&name("ffn_up.weight"))?, h, n, hook)?,
            )
        };
        match c.ffn {
            FfnKind::Swiglu => ops::swiglu(&mut gate, &up),
            FfnKind::Geglu => ops::geglu(&mut gate, &up),
        }
        drop(up);
        self.matmul(&w.linear(&name("ffn_down.weight"))?, &gate, n, hook)
    }

    /// Causal multi-head attention with grouped K/V heads: per query head
    /// (in parallel), scores `Q_h·K_kvᵀ` and `P·V_kv` as two GEMMs that read
    /// Q, K and V in place through their strides (no copies), causal softmax
    /// between them. Scores are soft-capped when the architecture says so;
    /// `window` limits how far back a query sees (sliding-window layers).
    fn attention(&self, q: &[f32], k: &[f32], v: &[f32], n: usize, window: Option<usize>) -> Result<Vec<f32>> {
        let c = &self.config;
        let (d, dv, nh, nkv) = (c.head_dim, c.head_dim_v, c.n_head, c.n_head_kv);
        let g = nh / nkv;
        let scale = if c.scale_q { 1.0 } else { c.attn_scale };
        if q.len() != n * nh * d || k.len() != n * nkv * d || v.len() != n * nkv * dv {
            return Err(Error::Other(format!(
                "attention: q/k/v sizes {}/{}/{} for {n} tokens",
                q.len(),
                k.len(),
                v.len()
            )));
        }
        let heads: Vec<Vec<f32>> = (0..nh)
            .into_par_iter()
            .map(|head| {
                let kvh = head / g;
                let mut scores = vec![0f32; n * n];
                gemm_f32(n, n, d, &q[head * d..], nh * d, &k[kvh * d..], (1, nkv * d), &mut scores, n, false);
                if let Some(cap) = c.attn_softcap {
                    ops::softcap(&mut scores, cap);
                }
                ops::causal_softmax(&mut scores, n, scale, window);
                let mut o = vec![0f32; n * dv];
                gemm_f32(n, dv, n, &scores, n, &v[kvh * dv..], (nkv * dv, 1), &mut o, dv, false);
                o
            })
            .collect();
        let mut out = vec![0f32; n * nh * dv];
        for (head, o) in heads.iter().enumerate() {
            for (t, row) in o.chunks(dv).enumerate() {
                out[t * nh * dv + head * dv..][..dv].copy_from_slice(row);
            }
        }
        Ok(out)
    }
}

/// Splits `rows` rows of concatenated column blocks of the given widths
/// (a fused projection's output) into one row-major matrix per block.
fn split_columns(x: &[f32], rows: usize, widths: &[usize]) -> Vec<Vec<f32>> {
    let total: usize = widths.iter().sum();
    debug_assert_eq!(x.len(), rows * total);
    let mut out: Vec<Vec<f32>> = widths.iter().map(|&w| Vec::with_capacity(rows * w)).collect();
    for row in x.chunks_exact(total) {
        let mut at = 0;
        for (o, &w) in out.iter_mut().zip(widths) {
            o.extend_from_slice(&row[at..at + w]);
            at += w;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{GgmlType, Value};
    use crate::pipeline::SourceTensor;

    /// F32 tensors in memory: value `i` of tensor `t` is `0.5 + 0.1 * ((3t + i) % 7)`.
    struct Mem(Vec<SourceTensor>);

    impl TensorSource for Mem {
        fn describe(&self) -> String {
            "memory".into()
        }
        fn tensors(&self) -> &[SourceTensor] {
            &self.0
        }
        fn read_rows(&self, index: usize, row0: u64, out: &mut [f32]) -> Result<()> {
            let row = self.0[index].row_len() as usize;
            for (i, v) in out.iter_mut().enumerate() {
                *v = 0.5 + 0.1 * ((3 * index + row0 as usize * row + i) % 7) as f32;
            }
            Ok(())
        }
        fn raw(&self, _: usize) -> Option<&[u8]> {
            None
        }
    }

    fn phi3() -> (Metadata, Mem) {
        let mut md = Metadata::new();
        md.push("general.architecture", Value::string("phi3"));
        for (k, v) in [
            ("embedding_length", 8),
            ("block_count", 1),
            ("attention.head_count", 2),
            ("feed_forward_length", 16),
            ("rope.scaling.original_context_length", 300),
        ] {
            md.push(format!("phi3.{k}"), Value::U32(v));
        }
        md.push("phi3.attention.layer_norm_rms_epsilon", Value::F32(1e-5));
        let t = |name: &str, dims: &[u64]| SourceTensor { name: name.into(), dims: dims.to_vec(), ty: GgmlType::F32 };
        let ts = vec![
            t("rope_factors_long.weight", &[2]),
            t("rope_factors_short.weight", &[2]),
            t("token_embd.weight", &[8, 10]),
            t("output_norm.weight", &[8]),
            t("blk.0.attn_norm.weight", &[8]),
            t("blk.0.attn_qkv.weight", &[8, 24]),
            t("blk.0.attn_output.weight", &[8, 8]),
            t("blk.0.ffn_norm.weight", &[8]),
            t("blk.0.ffn_up.weight", &[8, 32]),
            t("blk.0.ffn_down.weight", &[16, 8]),
        ];
        (md, Mem(ts))
    }

    #[test]
    fn phi3_uses_long_factors_past_the_original_context_padded_to_256() {
        let (md, src) = phi3();
        let m = Model::new(&md, &src, Precision::F32, ForwardOptions::default()).unwrap();
        let (long, short) = m.long_short.clone().unwrap();
        assert_ne!(long, short);
        // llama.cpp pads n_ctx to 256: 300 tokens → 512 > 300 → long; 200 → 256 → short.
        assert_eq!(m.rope_factors(300), Some(&long[..]));
        assert_eq!(m.rope_factors(200), Some(&short[..]));
        // The fused model runs and gives finite logits.
        let logits = m.forward(&[1, 2, 3], 0, None).unwrap();
        assert_eq!(logits.len(), 30);
        assert!(logits.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn split_columns_takes_each_block_of_every_row() {
        let x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(split_columns(&x, 2, &[1, 2]), vec![vec![1.0, 4.0], vec![2.0, 3.0, 5.0, 6.0]]);
    }
}
