//! The element-wise and per-row operations of a transformer block, computed
//! as llama.cpp's CPU backend computes them (sums of squares and softmax
//! denominators in f64, RoPE angles by repeated multiplication in f32). The
//! matrix products are not here: they go through `gemm` (see `weights`).

use rayon::prelude::*;

use super::arch::{Rope, RopeKind};

/// Rounds half to even for `|x| < 2^22` (quantized activations, log-prob codes) as ggml's
/// `nearest_int` does: adding 1.5·2^23 leaves no fraction bits. Inlined
/// arithmetic; `round_ties_even` is a libm call on baseline x86-64 (no
/// SSE4.1), which measured 8 % of a Q4_K_M evaluation in
/// the activations' Q8_K rounding.
#[inline(always)]
pub fn round_half_even(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (x + MAGIC) - MAGIC
}

/// RMSNorm of each row of `x` (length `n`), times `w` (ggml_rms_norm then ggml_mul).
pub fn rms_norm(x: &mut [f32], n: usize, eps: f32, w: &[f32]) {
    x.par_chunks_mut(n).for_each(|row| {
        let sum: f64 = row.iter().map(|&v| (v * v) as f64).sum();
        let mean = (sum / n as f64) as f32;
        let scale = 1.0f32 / (mean + eps).sqrt();
        for (v, &g) in row.iter_mut().zip(w.iter().cycle()) {
            *v = (*v * scale) * g;
        }
    });
}

/// Adds `b` to every row of `x`.
pub fn add_bias(x: &mut [f32], b: &[f32]) {
    x.par_chunks_mut(b.len()).for_each(|row| {
        for (v, &c) in row.iter_mut().zip(b) {
            *v += c;
        }
    });
}

/// `x += y`.
pub fn add_assign(x: &mut [f32], y: &[f32]) {
    x.par_iter_mut().zip(y.par_iter()).for_each(|(a, &b)| *a += b);
}

/// SwiGLU: `gate = silu(gate) * up`.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    gate.par_iter_mut().zip(up.par_iter()).for_each(|(g, &u)| {
        let s = *g / (1.0f32 + (-*g).exp());
        *g = s * u;
    });
}

/// cos/sin of every position and rotated pair: `[pos][pair] = (cos, sin)`.
pub struct RopeCache {
    n_pairs: usize,
    table: Vec<(f32, f32)>,
}

impl RopeCache {
    /// As ggml's `ggml_rope_cache_init` without YaRN: theta starts at the
    /// position and is multiplied by `base^(-2/n_rot)` pair after pair.
    pub fn new(rope: &Rope, n_pos: usize, freq_factors: Option<&[f32]>) -> RopeCache {
        let n_pairs = rope.n_rot / 2;
        let theta_scale = rope.freq_base.powf(-2.0f32 / rope.n_rot as f32);
        let mut table = Vec::with_capacity(n_pos * n_pairs);
        for p in 0..n_pos {
            let mut theta = p as f32;
            for i in 0..n_pairs {
                let ff = freq_factors.map_or(1.0, |f| f[i]);
                let t = rope.freq_scale * (theta / ff);
                table.push((t.cos(), t.sin()));
                theta *= theta_scale;
            }
        }
        RopeCache { n_pairs, table }
    }

    /// Rotates the first `n_rot` dimensions of every head of every row
    /// (`x` = rows of `n_head * head_dim`, row `t` at position `t`).
    pub fn apply(&self, kind: RopeKind, x: &mut [f32], n_head: usize, head_dim: usize) {
        let n = self.n_pairs;
        x.par_chunks_mut(n_head * head_dim).enumerate().for_each(|(pos, row)| {
            let cs = &self.table[pos * n..(pos + 1) * n];
            for head in row.chunks_mut(head_dim) {
                for (i, &(c, s)) in cs.iter().enumerate() {
                    let (a, b) = match kind {
                        RopeKind::Norm => (2 * i, 2 * i + 1),
                        RopeKind::Neox => (i, i + n),
                    };
                    let (x0, x1) = (head[a], head[b]);
                    head[a] = x0 * c - x1 * s;
                    head[b] = x0 * s + x1 * c;
                }
            }
        });
    }
}

/// Causal softmax of score rows: row `r` belongs to query position `r % n_pos`
/// and sees keys `0..=pos`. Scores are scaled by `scale` first (ggml_soft_max_ext).
pub fn causal_softmax(scores: &mut [f32], n_pos: usize, scale: f32) {
    scores.par_chunks_mut(n_pos).enumerate().for_each(|(r, row)| {
        let pos = r % n_pos;
        let (live, masked) = row.split_at_mut(pos + 1);
        let mut max = f32::NEG_INFINITY;
        for v in live.iter_mut() {
            *v *= scale;
            max = max.max(*v);
        }
        let mut sum = 0f64;
        for v in live.iter_mut() {
            *v = (*v - max).exp();
            sum += *v as f64;
        }
        let inv = (1.0 / sum) as f32;
        for v in live.iter_mut() {
            *v *= inv;
        }
        masked.fill(0.0);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_rounding_is_half_to_even() {
        for x in [-127.0f32, -2.5, -1.5, -0.5, -0.49, 0.0, 0.5, 1.5, 2.5, 2.51, 126.5, 127.0] {
            assert_eq!(round_half_even(x), x.round_ties_even(), "{x}");
        }
    }

    #[test]
    fn rms_norm_gives_unit_rms() {
        let mut x = vec![3.0f32, 4.0, 0.0, 0.0];
        rms_norm(&mut x, 4, 0.0, &[1.0, 1.0, 1.0, 2.0]);
        let rms = (x.iter().map(|v| v * v).sum::<f32>() / 4.0).sqrt();
        assert!((rms - 1.0).abs() < 1e-6, "{x:?}");
        assert!((x[0] - 1.2).abs() < 1e-6);
    }

    #[test]
    fn rope_rotates_pairs_by_position_times_frequency() {
        let rope = Rope { kind: RopeKind::Neox, n_rot: 4, freq_base: 10000.0, freq_scale: 1.0, freq_factors: false };
        let cache = RopeCache::new(&rope, 3, None);
        // position 0: identity
        let mut x = vec![1.0f32, 2.0, 3.0, 4.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0];
        cache.apply(RopeKind::Neox, &mut x, 1, 4);
        assert_eq!(&x[..4], &[1.0, 2.0, 3.0, 4.0]);
        // position 1, pair 0 (dims 0 and 2): angle 1 rad
        assert!((x[4] - 1f32.cos()).abs() < 1e-6 && (x[6] - 1f32.sin()).abs() < 1e-6);
        // norm layout: pair 0 is dims 0 and 1, position 2: angle 2 rad
        let mut y = vec![0.0f32; 8].into_iter().chain([1.0, 0.0, 0.0, 0.0]).collect::<Vec<_>>();
        cache.apply(RopeKind::Norm, &mut y, 1, 4);
        assert!((y[8] - 2f32.cos()).abs() < 1e-6 && (y[9] - 2f32.sin()).abs() < 1e-6);
        // second pair: frequency base^(-2/4) = 0.01
        let mut z = vec![0.0f32; 8].into_iter().chain([0.0, 0.0, 1.0, 0.0]).collect::<Vec<_>>();
        cache.apply(RopeKind::Norm, &mut z, 1, 4);
        assert!((z[10] - 0.02f32.cos()).abs() < 1e-6 && (z[11] - 0.02f32.sin()).abs() < 1e-6);
    }

    #[test]
    fn causal_softmax_masks_the_future() {
        let mut s = vec![1.0f32, 5.0, 2.0, 2.0];
        causal_softmax(&mut s, 2, 1.0);
        assert_eq!(&s[..2], &[1.0, 0.0]);
        assert!((s[2] - 0.5).abs() < 1e-7 && (s[3] - 0.5).abs() < 1e-7);
    }

    #[test]
    fn swiglu_is_silu_times_up() {
        let mut g = vec![0.0f32, 1.0];
        swiglu(&mut g, &[3.0, 2.0]);
        assert_eq!(g[0], 0.0);
        assert!((g[1] - 2.0 / (1.0 + (-1f32).exp())).abs() < 1e-7);
    }
}
