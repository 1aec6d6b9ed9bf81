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
    /// position and is multiplied by `base^(-2/n_rot)` pair after pair; cos and
    /// sin are multiplied by `attn_factor` (ggml's `mscale`).
    ///
    /// With YaRN, pair `i` takes `θ·s·(1 − r) + θ·r` where `r` ramps from 1
    /// (below `corr_dims[0]`: extrapolate) to 0 (above `corr_dims[1]`:
    /// interpolate), and the magnitude gets `1 + 0.1 ln(1/s)` more.
    pub fn new(rope: &Rope, n_pos: usize, freq_factors: Option<&[f32]>) -> RopeCache {
        let n_pairs = rope.n_rot / 2;
        let theta_scale = rope.freq_base.powf(-2.0f32 / rope.n_rot as f32);
        let s = rope.freq_scale;
        let mscale = match rope.yarn {
            Some(y) if y.ext_factor != 0.0 => rope.attn_factor * (1.0f32 + 0.1f32 * (1.0f32 / s).ln()),
            _ => rope.attn_factor,
        };
        let mut table = Vec::with_capacity(n_pos * n_pairs);
        for p in 0..n_pos {
            let mut theta = p as f32;
            for i in 0..n_pairs {
                let ff = freq_factors.map_or(1.0, |f| f[i]);
                let extrap = theta / ff;
                let interp = s * extrap;
                let t = match rope.yarn {
                    Some(y) if y.ext_factor != 0.0 => {
                        let [low, high] = y.corr_dims;
                        let ramp = (i as f32 - low) / (high - low).max(0.001);
                        let mix = (1.0 - ramp.clamp(0.0, 1.0)) * y.ext_factor;
                        interp * (1.0 - mix) + extrap * mix
                    }
                    _ => interp,
                };
                table.push((t.cos() * mscale, t.sin() * mscale));
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

/// `x *= s` (ggml_scale).
pub fn scale(x: &mut [f32], s: f32) {
    x.par_iter_mut().for_each(|v| *v *= s);
}

/// Soft-capping `cap * tanh(x / cap)` as llama.cpp builds it: ggml_scale by
/// `1/cap` (a multiplication by the f32 reciprocal), ggml_tanh (tanhf), ggml_scale by `cap`.
pub fn softcap(x: &mut [f32], cap: f32) {
    let inv = 1.0f32 / cap;
    x.par_iter_mut().for_each(|v| *v = (*v * inv).tanh() * cap);
}

/// GELU with the tanh approximation in f32, as ggml's `ggml_gelu_f32` compiles
/// in llama.cpp's CPU backend on x86-64 (built for the native CPU, FMA): GCC
/// contracts `1 + a·x·x` into one fused multiply-add. With it the f16 table
/// equals libggml-cpu's in all 65536 entries (tests/arch_forward.rs); without
/// it, one entry (x = −1.999) differs.
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6; // sqrt(2/pi) rounded to f32
    const COEF_A: f32 = 0.044715;
    0.5f32 * x * (1.0f32 + (SQRT_2_OVER_PI * x * (COEF_A * x).mul_add(x, 1.0f32)).tanh())
}

/// ggml's `ggml_table_gelu_f16`: GELU of every f16 value, rounded to f16 (kept as f32).
pub fn gelu_table() -> &'static [f32] {
    static TABLE: std::sync::OnceLock<Vec<f32>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX).map(|b| half::f16::from_f32(gelu_tanh(half::f16::from_bits(b).to_f32())).to_f32()).collect()
    })
}

/// GELU as ggml's CPU backend computes it for f32 (GGML_GELU_FP16): 0 at or
/// below -10, identity at or above 10, else the f16 table at `f16(x)`.
pub fn gelu_ggml(x: f32, table: &[f32]) -> f32 {
    if x <= -10.0 {
        0.0
    } else if x >= 10.0 {
        x
    } else {
        table[half::f16::from_f32(x).to_bits() as usize]
    }
}

/// GEGLU: `gate = gelu(gate) * up` (ggml_geglu_split, ggml_vec_geglu_f32).
pub fn geglu(gate: &mut [f32], up: &[f32]) {
    let table = gelu_table();
    gate.par_iter_mut().zip(up.par_iter()).for_each(|(g, &u)| {
        *g = if *g <= -10.0 { 0.0 } else { gelu_ggml(*g, table) * u };
    });
}

/// Causal softmax of score rows: row `r` belongs to query position `r % n_pos`
/// and sees keys `0..=pos`, or with a sliding `window` only the keys `q` with
/// `pos - q < window` (llama.cpp's `is_masked_swa`, LLAMA_SWA_TYPE_STANDARD).
/// Scores are scaled by `scale` first (ggml_soft_max_ext).
pub fn causal_softmax(scores: &mut [f32], n_pos: usize, scale: f32, window: Option<usize>) {
    scores.par_chunks_mut(n_pos).enumerate().for_each(|(r, row)| {
        let pos = r % n_pos;
        let first = window.map_or(0, |w| (pos + 1).saturating_sub(w));
        let (before, rest) = row.split_at_mut(first);
        let (live, after) = rest.split_at_mut(pos + 1 - first);
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
        before.fill(0.0);
        after.fill(0.0);
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
        let rope = Rope {
            kind: RopeKind::Neox,
            n_rot: 4,
            freq_base: 10000.0,
            freq_scale: 1.0,
            freq_factors: false,
            attn_factor: 1.0,
            yarn: None,
        };
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
        causal_softmax(&mut s, 2, 1.0, None);
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

    #[test]
    fn softcap_bounds_and_keeps_small_values() {
        let mut x = vec![0.0f32, 1.0, 1000.0, -1000.0];
        softcap(&mut x, 30.0);
        assert_eq!(x[0], 0.0);
        assert!((x[1] - 30.0 * (1.0f32 / 30.0).tanh()).abs() < 1e-7 && (x[1] - 1.0).abs() < 1e-3);
        assert_eq!((x[2], x[3]), (30.0, -30.0));
    }

    #[test]
    fn gelu_follows_the_f16_table_and_the_cutoffs() {
        assert_eq!(0.797_884_6_f32, (2.0f64 / std::f64::consts::PI).sqrt() as f32);
        let t = gelu_table();
        // gelu(1) = 0.8412 (tanh approximation), rounded to f16.
        assert!((gelu_ggml(1.0, t) - 0.841_2).abs() < 1e-3);
        assert_eq!(gelu_ggml(1.0, t), half::f16::from_f32(gelu_tanh(1.0)).to_f32());
        // The input is rounded to f16 first: 1 + 1e-4 looks up gelu(1).
        assert_eq!(gelu_ggml(1.0001, t), gelu_ggml(1.0, t));
        assert_eq!((gelu_ggml(-10.0, t), gelu_ggml(12.5, t)), (0.0, 12.5));
        assert!(gelu_ggml(-3.0, t) < 0.0 && gelu_ggml(-3.0, t) > -0.01);
        let mut g = vec![1.0f32, -20.0, 11.0];
        geglu(&mut g, &[2.0, 5.0, 3.0]);
        assert_eq!(g, vec![2.0 * gelu_ggml(1.0, t), 0.0, 33.0]);
    }

    #[test]
    fn sliding_window_masks_old_keys() {
        // 4 positions, window 2: position 3 sees keys 2 and 3 only.
        let mut s = vec![0.0f32; 16];
        causal_softmax(&mut s, 4, 1.0, Some(2));
        assert_eq!(&s[..4], &[1.0, 0.0, 0.0, 0.0]);
        assert_eq!(&s[4..8], &[0.5, 0.5, 0.0, 0.0]);
        assert_eq!(&s[12..], &[0.0, 0.0, 0.5, 0.5]);
        // A window as long as the chunk: as none.
        let mut a = vec![1.0f32, 5.0, 2.0, 2.0];
        let mut b = a.clone();
        causal_softmax(&mut a, 2, 0.5, None);
        causal_softmax(&mut b, 2, 0.5, Some(2));
        assert_eq!(a, b);
    }

    #[test]
    fn yarn_extrapolates_fast_pairs_and_interpolates_slow_ones() {
        use crate::infer::arch::Yarn;
        let yarn = Yarn { ext_factor: 1.0, corr_dims: [2.0, 5.0] };
        let rope = Rope {
            kind: RopeKind::Neox,
            n_rot: 16,
            freq_base: 10000.0,
            freq_scale: 0.25,
            freq_factors: false,
            attn_factor: 1.0,
            yarn: Some(yarn),
        };
        let cache = RopeCache::new(&rope, 8, None);
        let mscale = 1.0f32 + 0.1 * 4.0f32.ln();
        let theta_scale = 10000f32.powf(-2.0 / 16.0);
        let p = 7usize;
        let mut theta = p as f32;
        for i in 0..8 {
            let (c, s) = cache.table[p * 8 + i];
            let want = match i {
                0..=2 => theta,        // ramp 1: extrapolated
                5..=7 => 0.25 * theta, // ramp 0: interpolated
                _ => {
                    let mix = 1.0 - (i as f32 - 2.0) / 3.0;
                    0.25 * theta * (1.0 - mix) + theta * mix
                }
            };
            assert_eq!((c, s), (want.cos() * mscale, want.sin() * mscale), "pair {i}");
            theta *= theta_scale;
        }
        // Qwen2.5's YaRN (factor 4 over 32768 positions, base 1e6, 128-wide heads).
        let y = Yarn::new(128, 32768, 1e6);
        assert_eq!(y.corr_dims, [23.0, 40.0]);
        assert!((Yarn::attn_factor(4.0, 1.0) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn rope_attn_factor_scales_cos_and_sin() {
        let rope = Rope {
            kind: RopeKind::Neox,
            n_rot: 4,
            freq_base: 10000.0,
            freq_scale: 1.0,
            freq_factors: false,
            attn_factor: 2.0,
            yarn: None,
        };
        let cache = RopeCache::new(&rope, 1, None);
        let mut x = vec![1.0f32, 2.0, 3.0, 4.0];
        cache.apply(RopeKind::Neox, &mut x, 1, 4);
        assert_eq!(x, vec![2.0, 4.0, 6.0, 8.0]);
    }
}
