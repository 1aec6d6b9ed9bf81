//! AVX-512 versions of the k-quant scale searches (`make_qx_quants`,
//! `make_qkx2_quants` / `make_qkx3_quants`), bit-identical to the scalar
//! oracle; [`super::Avx2`] calls them when the CPU has AVX-512 (F, VL, BW, DQ).
//!
//! The lane layout is the AVX2 one with twice the lanes: 16 independent
//! groups (the 16 sub-blocks of a Q6_K / Q2_K super-block, or the 8 of two
//! Q4_K / Q5_K super-blocks) in the 16 lanes of a `__m512`, each lane doing
//! exactly the scalar sequence of operations for its group. FMA is never
//! enabled, so no multiply-add is fused.
//!
//! One shortcut over the AVX2 kernels: inside the trial loops a level
//! `clamp(nearest_int(y), lo, hi)` is computed in the float domain, as
//! `max(lo, min((y + 1.5·2²³) − 1.5·2²³, hi))` (two float adds instead of
//! the integer trick, its clamp and the conversion back to float). The two
//! are equal whenever `|y| ≤ 4194303`, where `nearest_int` is exact rounding;
//! beyond it `nearest_int` wraps, so every trial first bounds `|y|` over the
//! whole group from the group's extremes (`y` is monotone in `x`) and takes
//! the exact integer path when a lane could leave that range. Levels written
//! out are always computed the exact way. Blocks with a NaN or an infinity
//! go to the AVX2 kernels.

use std::arch::x86_64::*;

use super::avx2::{lanes, store_levels};
use crate::quant::search::{QkxSearch, GROUP_MAX_EPS};

/// Whether this CPU has the AVX-512 subsets these kernels use.
pub(super) fn detected() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512dq")
}

/// The largest |y| for which `nearest_int(y)` is `round_ties_even(y)`.
const EXACT_LIMIT: f32 = 4194303.0;

/// All 16 lanes.
const ALL: __mmask16 = 0xFFFF;

/// ggml's `nearest_int` on 16 lanes (the bits of `x + 1.5·2²³`, masked and rebased).
#[inline]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,f16c")]
unsafe fn nearest_int(x: __m512) -> __m512i {
    let v = _mm512_castps_si512(_mm512_add_ps(x, _mm512_set1_ps(12582912.0)));
    _mm512_sub_epi32(_mm512_and_si512(v, _mm512_set1_epi32(0x007F_FFFF)), _mm512_set1_epi32(0x0040_0000))
}

/// The level range of a search, as i32 and as f32 lanes.
#[derive(Clone, Copy)]
struct Range {
    lo: __m512i,
    hi: __m512i,
    lo_f: __m512,
    hi_f: __m512,
}

impl Range {
    #[inline]
    #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,f16c")]
    unsafe fn new(lo: i32, hi: i32) -> Range {
        Range {
            lo: _mm512_set1_epi32(lo),
            hi: _mm512_set1_epi32(hi),
            lo_f: _mm512_set1_ps(lo as f32),
            hi_f: _mm512_set1_ps(hi as f32),
        }
    }

    /// `clamp(nearest_int(y), lo, hi)` as i32 lanes, for any `y`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,f16c")]
    unsafe fn exact(self, y: __m512) -> __m512i {
        _mm512_max_epi32(self.lo, _mm512_min_epi32(nearest_int(y), self.hi))
    }

    /// The same level as f32; `FAST` computes it in the float domain, which
    /// is only the same value where `|y| ≤ EXACT_LIMIT`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,f16c")]
    unsafe fn level<const FAST: bool>(self, y: __m512) -> __m512 {
        if FAST {
            // (y + 1.5·2²³) − 1.5·2²³ rounds half to even for |y| < 2²²: two
            // adds (on either FP port; `vrndscaleps` is two uops on one)
            let magic = _mm512_set1_ps(12582912.0);
            let r = _mm512_sub_ps(_mm512_add_ps(y, magic), magic);
            _mm512_max_ps(self.lo_f, _mm512_min_ps(r, self.hi_f))
        } else {
            _mm512_cvtepi32_ps(self.exact(y))
        }
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,f16c")]
unsafe fn abs(v: __m512) -> __m512 {
    _mm512_abs_ps(v)
}

#[inline]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,f16c")]
unsafe fn gt(a: __m512, b: __m512) -> __mmask16 {
    _mm512_cmp_ps_mask::<_CMP_GT_OQ>(a, b)
}

#[inline]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,f16c")]
unsafe fn lt(a: __m512, b: __m512) -> __mmask16 {
    _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, b)
}

/// `|v| ≤ EXACT_LIMIT` per lane (false for NaN).
#[inline]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,f16c")]
unsafe fn in_exact_range(v: __m512) -> __mmask16 {
    _mm512_cmp_ps_mask::<_CMP_LE_OQ>(abs(v), _mm512_set1_ps(EXACT_LIMIT))
}

/// Groups `g0 .. g0 + 16` of `x` in lanes: vector `i` holds value `i` of each.
/// Requires `N % 8 == 0` and `g0 + 16 <= M`.
#[inline]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,f16c")]
unsafe fn lanes16<const N: usize, const M: usize>(x: &[[f32; N]; M], g0: usize) -> [__m512; N] {
    let (a, b) = (lanes(x, g0), lanes(x, g0 + 8));
    let mut out = [_mm512_setzero_ps(); N];
    for i in 0..N {
        out[i] = _mm512_insertf32x8::<1>(_mm512_castps256_ps512(a[i]), b[i]);
    }
    out
}

/// The inverse of [`lanes16`] for levels (0..=255 in i32 lanes).
#[inline]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,f16c")]
unsafe fn store_levels16<const N: usize, const M: usize>(l: &[__m512i; N], out: &mut [[u8; N]; M], g0: usize) {
    let mut lo = [_mm256_setzero_si256(); N];
    let mut hi = [_mm256_setzero_si256(); N];
    for i in 0..N {
        lo[i] = _mm512_castsi512_si256(l[i]);
        hi[i] = _mm512_extracti64x4_epi64::<1>(l[i]);
    }
    store_levels(&lo, out, g0);
    store_levels(&hi, out, g0 + 8);
}

/// Whether every value is finite (`x · 0` is NaN exactly for NaN and ±∞).
#[inline]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,f16c")]
unsafe fn all_finite<const N: usize>(x: &[__m512; N]) -> bool {
    let zero = _mm512_setzero_ps();
    let mut acc = zero;
    for &v in x {
        acc = _mm512_add_ps(acc, _mm512_mul_ps(v, zero));
    }
    _mm512_cmp_ps_mask::<_CMP_ORD_Q>(acc, acc) == ALL
}

// ------------------------------------------------------------------ make_qx_quants

/// Trials of `make_qx_quants` summed at once: their sums are independent
/// chains, interleaved so that the adds' latency overlaps (each chain still
/// adds in the oracle's order).
const QX_TRIALS: usize = 5;

/// Σ(w·x)·l and Σ(w·l)·l of `l = clamp(nearest_int(iscale·x))` for
/// [`QX_TRIALS`] inverse scales (levels in the float domain when `FAST`).
#[inline]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,f16c")]
unsafe fn qx_sums<const N: usize, const FAST: bool>(
    iscale: &[__m512; QX_TRIALS],
    x: &[__m512; N],
    w: &[__m512; N],
    wx: &[__m512; N],
    r: Range,
) -> [(__m512, __m512); QX_TRIALS] {
    let mut sumlx = [_mm512_setzero_ps(); QX_TRIALS];
    let mut suml2 = [_mm512_setzero_ps(); QX_TRIALS];
    for i in 0..N {
        for t in 0..QX_TRIALS {
            let lf = r.level::<FAST>(_mm512_mul_ps(iscale[t], x[i]));
            sumlx[t] = _mm512_add_ps(sumlx[t], _mm512_mul_ps(wx[i], lf));
            suml2[t] = _mm512_add_ps(suml2[t], _mm512_mul_ps(_mm512_mul_ps(w[i], lf), lf));
        }
    }
    std::array::from_fn(|t| (sumlx[t], suml2[t]))
}

/// `make_qx_quants(N, nmax, x, L, 1, w)` on 16 groups in lanes: levels `L` and scales.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,f16c")]
unsafe fn qx16<const N: usize>(nmax: i32, x: &[__m512; N], w: &[__m512; N]) -> ([__m512i; N], __m512) {
    let zero = _mm512_setzero_ps();
    // first_abs_max: `if |x| > amax { amax = |x|; max = x }`
    let mut amax = zero;
    let mut max = zero;
    for &v in x {
        let ax = abs(v);
        let m = gt(ax, amax);
        amax = _mm512_mask_blend_ps(m, amax, ax);
        max = _mm512_mask_blend_ps(m, max, v);
    }
    let tiny = lt(amax, _mm512_set1_ps(GROUP_MAX_EPS));
    let r = Range::new(-nmax, nmax - 1);
    let nmax_f = nmax as f32;
    let mut wx = [zero; N];
    for i in 0..N {
        wx[i] = _mm512_mul_ps(w[i], x[i]);
    }
    // The 19 trials (the first inverse scale, then is = -9..=9 without 0),
    // padded to a multiple of QX_TRIALS with a repeat of the last, whose
    // result is not used.
    const TRIALS: usize = 19;
    const PADDED: usize = TRIALS.div_ceil(QX_TRIALS) * QX_TRIALS;
    let mut iscales = [zero; PADDED];
    iscales[0] = _mm512_div_ps(_mm512_set1_ps(-nmax_f), max);
    let mut t = 1;
    for is in -9..=9 {
        if is != 0 {
            iscales[t] = _mm512_div_ps(_mm512_set1_ps(-(nmax_f + 0.1f32 * is as f32)), max);
            t += 1;
        }
    }
    for k in TRIALS..PADDED {
        iscales[k] = iscales[TRIALS - 1];
    }
    let mut sums = [(zero, zero); PADDED];
    for c in 0..PADDED / QX_TRIALS {
        let chunk: [__m512; QX_TRIALS] = std::array::from_fn(|t| iscales[c * QX_TRIALS + t]);
        // |iscale·x| ≤ |iscale·amax| for every value of a group; tiny groups
        // are zeroed at the end, whatever their levels.
        let mut in_range = ALL;
        for &is in &chunk {
            in_range &= in_exact_range(_mm512_mul_ps(is, amax)) | tiny;
        }
        let out = if in_range == ALL {
            qx_sums::<N, true>(&chunk, x, w, &wx, r)
        } else {
            qx_sums::<N, false>(&chunk, x, w, &wx, r)
        };
        sums[c * QX_TRIALS..(c + 1) * QX_TRIALS].copy_from_slice(&out);
    }
    // The oracle's decisions, trial after trial.
    let (sumlx, suml2) = sums[0];
    // if suml2 != 0 { sumlx / suml2 } else { 0 } (`!=` is true for NaN)
    let nz = _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(suml2, zero);
    let mut scale = _mm512_maskz_div_ps(nz, sumlx, suml2);
    let mut best = _mm512_mul_ps(scale, sumlx);
    let mut best_iscale = iscales[0];
    for k in 1..TRIALS {
        let (sumlx, suml2) = sums[k];
        let better = gt(suml2, zero) & gt(_mm512_mul_ps(sumlx, sumlx), _mm512_mul_ps(best, suml2));
        if better == 0 {
            continue;
        }
        let s = _mm512_div_ps(sumlx, suml2);
        scale = _mm512_mask_blend_ps(better, scale, s);
        best = _mm512_mask_blend_ps(better, best, _mm512_mul_ps(s, sumlx));
        best_iscale = _mm512_mask_blend_ps(better, best_iscale, iscales[k]);
    }
    let off = _mm512_set1_epi32(nmax);
    let mut l = [_mm512_setzero_si512(); N];
    for i in 0..N {
        let li = r.exact(_mm512_mul_ps(best_iscale, x[i]));
        l[i] = _mm512_maskz_add_epi32(!tiny, li, off);
    }
    (l, _mm512_mask_blend_ps(tiny, scale, zero))
}

// ------------------------------------------------------------------ make_qkx2/3_quants

/// One grid point's fit sums Σw·l, Σw·l², Σw·l·x (as the oracle's `qkx_fit`)
/// of `B` independent batches, interleaved; the float levels go to `lf`.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,f16c")]
unsafe fn qkx_fit<const N: usize, const B: usize, const FAST: bool>(
    iscale: &[__m512; B],
    min: &[__m512; B],
    x: &[[__m512; N]; B],
    w: &[[__m512; N]; B],
    r: Range,
    lf: &mut [[__m512; N]; B],
) -> [(__m512, __m512, __m512); B] {
    let zero = _mm512_setzero_ps();
    let (mut sum_l, mut sum_l2, mut sum_xl) = ([zero; B], [zero; B], [zero; B]);
    for i in 0..N {
        for b in 0..B {
            let f = r.level::<FAST>(_mm512_mul_ps(iscale[b], _mm512_sub_ps(x[b][i], min[b])));
            lf[b][i] = f;
            let wl = _mm512_mul_ps(w[b][i], f);
            sum_l[b] = _mm512_add_ps(sum_l[b], wl);
            sum_l2[b] = _mm512_add_ps(sum_l2[b], _mm512_mul_ps(wl, f));
            sum_xl[b] = _mm512_add_ps(sum_xl[b], _mm512_mul_ps(wl, x[b][i]));
        }
    }
    std::array::from_fn(|b| (sum_l[b], sum_l2[b], sum_xl[b]))
}

/// `Σ w·|s·l + m − x|` (`mad`) or `Σ w·(s·l + m − x)²` of `B` batches, interleaved.
#[inline]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,f16c")]
unsafe fn qkx_error<const N: usize, const B: usize>(
    scale: &[__m512; B],
    min: &[__m512; B],
    lf: &[[__m512; N]; B],
    x: &[[__m512; N]; B],
    w: &[[__m512; N]; B],
    mad: bool,
) -> [__m512; B] {
    let mut err = [_mm512_setzero_ps(); B];
    for i in 0..N {
        for b in 0..B {
            let diff = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(scale[b], lf[b][i]), min[b]), x[b][i]);
            let e = if mad { abs(diff) } else { _mm512_mul_ps(diff, diff) };
            err[b] = _mm512_add_ps(err[b], _mm512_mul_ps(w[b][i], e));
        }
    }
    err
}

/// What a search returns for 16 groups: levels (i32 lanes), scales, `-min`.
type QkxOut<const N: usize> = ([__m512i; N], __m512, __m512);

/// `make_qkx2_quants` (`v3`: `make_qkx3_quants`) on `B` batches of 16 groups
/// in lanes. The batches are independent searches whose steps run side by
/// side, so that one batch's additions fill the other's latency.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,f16c")]
unsafe fn qkx16<const N: usize, const B: usize>(
    p: &QkxSearch,
    v3: bool,
    x: &[[__m512; N]; B],
    w: &[[__m512; N]; B],
) -> [QkxOut<N>; B] {
    let zero = _mm512_setzero_ps();
    let mut min = [zero; B];
    let mut max = [zero; B];
    let mut sum_w = [zero; B];
    let mut sum_x = [zero; B];
    let mut degenerate = [0 as __mmask16; B];
    for b in 0..B {
        let (x, w) = (&x[b], &w[b]);
        let (mut mn, mut mx, mut sw) = (x[0], x[0], w[0]);
        let mut sx = _mm512_mul_ps(sw, x[0]);
        for i in 1..N {
            // vminps(a, b) = a < b ? a : b: exactly `if x < min { min = x }`
            mn = _mm512_min_ps(x[i], mn);
            mx = _mm512_max_ps(x[i], mx);
            sw = _mm512_add_ps(sw, w[i]);
            sx = _mm512_add_ps(sx, _mm512_mul_ps(w[i], x[i]));
        }
        // if min > 0 { min = 0 }
        mn = _mm512_min_ps(zero, mn);
        degenerate[b] =
            if v3 { _mm512_cmp_ps_mask::<_CMP_LE_OQ>(mx, mn) } else { _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(mx, mn) };
        (min[b], max[b], sum_w[b], sum_x[b]) = (mn, mx, sw, sx);
    }
    let r = Range::new(0, p.nmax);
    // Every x of a group lies in [min, max], so |iscale·(x − m)| is largest at
    // one of the two ends; degenerate groups are replaced at the end.
    let exact_range = |iscale: &[__m512; B], m: &[__m512; B]| {
        let mut ok = true;
        for b in 0..B {
            let lo = in_exact_range(_mm512_mul_ps(iscale[b], _mm512_sub_ps(min[b], m[b])));
            let hi = in_exact_range(_mm512_mul_ps(iscale[b], _mm512_sub_ps(max[b], m[b])));
            ok &= (lo & hi) | degenerate[b] == ALL;
        }
        ok
    };

    let mut lf = [[zero; N]; B];
    let mut iscale0 = [zero; B];
    let mut scale = [zero; B];
    for b in 0..B {
        iscale0[b] = _mm512_div_ps(_mm512_set1_ps(p.nmax as f32), _mm512_sub_ps(max[b], min[b]));
        scale[b] = _mm512_div_ps(_mm512_set1_ps(1.0), iscale0[b]);
    }
    let fast0 = exact_range(&iscale0, &min);
    for i in 0..N {
        for b in 0..B {
            let y = _mm512_mul_ps(iscale0[b], _mm512_sub_ps(x[b][i], min[b]));
            lf[b][i] = if fast0 { r.level::<true>(y) } else { r.level::<false>(y) };
        }
    }
    let mut best_error = qkx_error(&scale, &min, &lf, x, w, p.use_mad);
    // The levels are not kept per step: the winning step's (iscale, min) is,
    // and the levels are recomputed from it at the end (the same operations).
    let mut best_iscale = iscale0;
    let mut best_lmin = min;
    let mut cur_min = min;
    if p.nstep >= 1 {
        for is in 0..=p.nstep {
            let num = _mm512_set1_ps(p.rmin + p.rdelta * is as f32 + p.nmax as f32);
            let iscale: [__m512; B] = std::array::from_fn(|b| _mm512_div_ps(num, _mm512_sub_ps(max[b], cur_min[b])));
            let sums = if exact_range(&iscale, &cur_min) {
                qkx_fit::<N, B, true>(&iscale, &cur_min, x, w, r, &mut lf)
            } else {
                qkx_fit::<N, B, false>(&iscale, &cur_min, x, w, r, &mut lf)
            };
            let mut dpos = [0 as __mmask16; B];
            let mut this_scale = [zero; B];
            let mut this_min = [zero; B];
            for b in 0..B {
                let (sum_l, sum_l2, sum_xl) = sums[b];
                let d = _mm512_sub_ps(_mm512_mul_ps(sum_w[b], sum_l2), _mm512_mul_ps(sum_l, sum_l));
                dpos[b] = gt(d, zero);
                let ts =
                    _mm512_div_ps(_mm512_sub_ps(_mm512_mul_ps(sum_w[b], sum_xl), _mm512_mul_ps(sum_x[b], sum_l)), d);
                let tm = _mm512_div_ps(_mm512_sub_ps(_mm512_mul_ps(sum_l2, sum_x[b]), _mm512_mul_ps(sum_l, sum_xl)), d);
                let mpos = gt(tm, zero);
                this_min[b] = _mm512_mask_blend_ps(mpos, tm, zero);
                this_scale[b] = _mm512_mask_blend_ps(mpos, ts, _mm512_div_ps(sum_xl, sum_l2));
            }
            if dpos.iter().all(|&m| m == 0) {
                continue;
            }
            let cur_error = qkx_error(&this_scale, &this_min, &lf, x, w, p.use_mad);
            for b in 0..B {
                let upd = dpos[b] & lt(cur_error[b], best_error[b]);
                best_error[b] = _mm512_mask_blend_ps(upd, best_error[b], cur_error[b]);
                scale[b] = _mm512_mask_blend_ps(upd, scale[b], this_scale[b]);
                best_iscale[b] = _mm512_mask_blend_ps(upd, best_iscale[b], iscale[b]);
                best_lmin[b] = _mm512_mask_blend_ps(upd, best_lmin[b], cur_min[b]);
                cur_min[b] = _mm512_mask_blend_ps(upd, cur_min[b], this_min[b]);
            }
        }
    }
    std::array::from_fn(|b| {
        let mut l = [_mm512_setzero_si512(); N];
        for i in 0..N {
            let li = r.exact(_mm512_mul_ps(best_iscale[b], _mm512_sub_ps(x[b][i], best_lmin[b])));
            l[i] = _mm512_maskz_mov_epi32(!degenerate[b], li);
        }
        let scale = _mm512_mask_blend_ps(degenerate[b], scale[b], zero);
        let the_min = _mm512_mask_blend_ps(degenerate[b], cur_min[b], min[b]);
        (l, scale, _mm512_xor_ps(the_min, _mm512_set1_ps(-0.0)))
    })
}

// ------------------------------------------------------------------ entry points

/// `make_qx_quants` on groups `g .. g + 16`. `false` (nothing written) when a
/// value is not finite: the caller runs the AVX2 kernel on those groups.
///
/// # Safety
/// The CPU must have AVX-512 F/VL/BW/DQ, AVX2 and F16C ([`detected`]);
/// `N % 8 == 0` and `g + 16 <= M`.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,f16c")]
pub(super) unsafe fn qx<const N: usize, const M: usize>(
    nmax: i32,
    x: &[[f32; N]; M],
    w: &[[f32; N]; M],
    l: &mut [[u8; N]; M],
    scales: &mut [f32; M],
    g: usize,
) -> bool {
    let xl = lanes16(x, g);
    if !all_finite(&xl) {
        return false;
    }
    let (lv, s) = qx16(nmax, &xl, &lanes16(w, g));
    store_levels16(&lv, l, g);
    _mm512_storeu_ps(scales[g..g + 16].as_mut_ptr(), s);
    true
}

/// `make_qkx2_quants` / `make_qkx3_quants` on groups `g .. g + 16·B`, as
/// [`qx`] (`B` batches of 16 searched side by side).
///
/// # Safety
/// As [`qx`], with `g + 16·B <= M`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,f16c")]
pub(super) unsafe fn qkx<const N: usize, const M: usize, const B: usize>(
    p: &QkxSearch,
    v3: bool,
    x: &[[f32; N]; M],
    w: &[[f32; N]; M],
    l: &mut [[u8; N]; M],
    scales: &mut [f32; M],
    mins: &mut [f32; M],
    g: usize,
) -> bool {
    let mut xl = [[_mm512_setzero_ps(); N]; B];
    let mut wl = [[_mm512_setzero_ps(); N]; B];
    for b in 0..B {
        xl[b] = lanes16(x, g + 16 * b);
        if !all_finite(&xl[b]) {
            return false;
        }
        wl[b] = lanes16(w, g + 16 * b);
    }
    let out = qkx16(p, v3, &xl, &wl);
    for (b, (lv, s, m)) in out.iter().enumerate() {
        let gb = g + 16 * b;
        store_levels16(lv, l, gb);
        _mm512_storeu_ps(scales[gb..gb + 16].as_mut_ptr(), *s);
        _mm512_storeu_ps(mins[gb..gb + 16].as_mut_ptr(), *m);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::search::nearest_int as scalar_nearest_int;
    use crate::quant::testutil::Rng;

    /// The float-domain level equals the integer one on the whole range the
    /// searches allow it, ties included, and the range check stops exactly
    /// where `nearest_int` stops being exact rounding.
    #[test]
    fn float_levels_are_exact_where_allowed() {
        if !(detected() && is_x86_feature_detected!("avx2") && is_x86_feature_detected!("f16c")) {
            eprintln!("float_levels_are_exact_where_allowed: SKIPPED, this CPU lacks AVX-512");
            return;
        }
        let mut r = Rng::new(0xF1);
        let mut ys: Vec<f32> = vec![0.0, -0.0, 0.5, -0.5, 1.5, 2.5, -2.5, 31.5, -32.5, 63.5, EXACT_LIMIT, -EXACT_LIMIT];
        ys.extend((0..20000).map(|_| (r.uniform() - 0.5) * 100.0));
        ys.extend((0..20000).map(|_| (r.below(200) as f32 - 100.0) * 0.5));
        ys.extend((0..20000).map(|_| (r.uniform() - 0.5) * 2.0 * EXACT_LIMIT));
        ys.extend((0..2000).map(|i| EXACT_LIMIT - i as f32 * 0.25));
        while !ys.len().is_multiple_of(16) {
            ys.push(r.normal());
        }
        for (lo, hi) in [(-32, 31), (0, 15), (0, 3), (-4, 3), (0, 31), (-4194304, 4194303)] {
            for c in ys.chunks_exact(16) {
                // SAFETY: the CPU has the features (checked above).
                let (fast, exact, ok) = unsafe {
                    let rg = Range::new(lo, hi);
                    let y = _mm512_loadu_ps(c.as_ptr());
                    let mut f = [0f32; 16];
                    let mut e = [0f32; 16];
                    _mm512_storeu_ps(f.as_mut_ptr(), rg.level::<true>(y));
                    _mm512_storeu_ps(e.as_mut_ptr(), rg.level::<false>(y));
                    (f, e, in_exact_range(y))
                };
                assert_eq!(ok, ALL, "{c:?}");
                for j in 0..16 {
                    let want = scalar_nearest_int(c[j]).clamp(lo, hi) as f32;
                    assert_eq!(exact[j], want, "exact level of {} in [{lo}, {hi}]", c[j]);
                    // +0 and -0 are the same level (sums from +0 never turn -0)
                    assert_eq!(fast[j], want, "float level of {} in [{lo}, {hi}]", c[j]);
                }
            }
        }
        // just outside the range nearest_int wraps: the check must refuse it
        let beyond = [4194303.5f32, 4194304.0, -4194304.0, 1e9, f32::INFINITY, f32::NAN];
        for y in beyond {
            // SAFETY: as above.
            let ok = unsafe { in_exact_range(_mm512_set1_ps(y)) };
            assert_eq!(ok, 0, "{y} must take the exact path");
        }
        assert_ne!(scalar_nearest_int(4194303.5), 4194304, "nearest_int wraps beyond the limit");
    }
}
