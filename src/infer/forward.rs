//! The forward pass of a dense decoder-only transformer (llama, mistral,
//! qwen2, qwen3) over one chunk of prompt tokens: no sampling, no cache
//! between chunks, causal attention within the chunk.
//!
//! A block is `x += Wo·attn(rope(Wq·n), rope(Wk·n), Wv·n)` with
//! `n = rmsnorm(x)`, then `x += Wdown·(silu(Wgate·n) ⊙ Wup·n)` with
//! `n = rmsnorm(x)`; biases and per-head q/k norms when the model has them.
//! The weights of a block are built from the source when it runs and dropped
//! after; activations are `O(tokens × width)`; the logits of the requested
//! positions only are computed.

use rayon::prelude::*;

use super::arch::Config;
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
        Ok(Model { config, weights, options, freq_factors })
    }

    pub fn describe(&self) -> String {
        self.weights.source.describe()
    }

    fn matmul(&self, w: &Linear, x: &[f32], rows: usize, hook: &mut Option<&mut dyn MatmulHook>) -> Result<Vec<f32>> {
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
        let rope = RopeCache::new(&c.rope, n, self.freq_factors.as_deref());
        for b in 0..c.n_layer {
            self.block(b, &mut x, n, &rope, &mut hook)?;
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
        out.forward(&x[out_from * e..], n - out_from)
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
        let mut q = self.matmul(&w.linear(&name("attn_q.weight"))?, &h, n, hook)?;
        let mut k = self.matmul(&w.linear(&name("attn_k.weight"))?, &h, n, hook)?;
        let mut v = self.matmul(&w.linear(&name("attn_v.weight"))?, &h, n, hook)?;
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
        if self.options.kv_f16 {
            for t in [&mut k, &mut v] {
                for a in t.iter_mut() {
                    *a = half::f16::from_f32(*a).to_f32();
                }
            }
        }
        let attn = self.attention(&q, &k, &v, n)?;
        drop((q, k, v));
        let mut o = self.matmul(&w.linear(&name("attn_output.weight"))?, &attn, n, hook)?;
        drop(attn);
        if let Some(bias) = w.vector_opt(&name("attn_output.bias"))? {
            ops::add_bias(&mut o, &bias);
        }
        ops::add_assign(x, &o);
        drop(o);

        // Feed-forward.
        let mut h = x.to_vec();
        ops::rms_norm(&mut h, e, c.eps, &w.vector(&name("ffn_norm.weight"))?);
        let mut gate = self.matmul(&w.linear(&name("ffn_gate.weight"))?, &h, n, hook)?;
        let up = self.matmul(&w.linear(&name("ffn_up.weight"))?, &h, n, hook)?;
        drop(h);
        ops::swiglu(&mut gate, &up);
        drop(up);
        let down = self.matmul(&w.linear(&name("ffn_down.weight"))?, &gate, n, hook)?;
        ops::add_assign(x, &down);
        Ok(())
    }

    /// Causal multi-head attention with grouped K/V heads: per query head
    /// (in parallel), scores `Q_h·K_kvᵀ` and `P·V_kv` as two GEMMs that read
    /// Q, K and V in place through their strides (no copies), causal softmax
    /// between them.
    fn attention(&self, q: &[f32], k: &[f32], v: &[f32], n: usize) -> Result<Vec<f32>> {
        let c = &self.config;
        let (d, dv, nh, nkv) = (c.head_dim, c.head_dim_v, c.n_head, c.n_head_kv);
        let g = nh / nkv;
        let scale = 1.0f32 / (d as f32).sqrt();
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
                ops::causal_softmax(&mut scores, n, scale);
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
