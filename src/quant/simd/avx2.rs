//! AVX2 + F16C kernels (x86-64), bit-identical to the scalar oracle.
//!
//! Only `avx2` and `f16c` are enabled: never `fma`, so no multiply-add can be
//! fused. Every `unsafe fn` here is `#[target_feature(enable = "avx2,f16c")]`
//! and is only reached through an [`Avx2`] value, which exists only once the
//! CPU was seen to have both features.
//!
//! Lane layout of the searches: [`lanes`] transposes 8 groups of `N` values
//! so that vector `i` holds value `i` of each group; every per-group scalar
//! statement of the oracle becomes one vector statement over the 8 groups,
//! with data-dependent branches turned into masks (`blendv`).

use std::arch::x86_64::*;

use super::{Kernels, Scalar};
use crate::quant::float::Half;
use crate::quant::legacy::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0};
use crate::quant::search::{QkxSearch, GROUP_MAX_EPS};
use crate::quant::{Block, Quantize};

/// Proof that the CPU has AVX2 and F16C: the AVX2 kernels, whose k-quant
/// searches run on 16 lanes (`simd::avx512`) when the CPU also has AVX-512.
#[derive(Clone, Copy, Debug)]
pub struct Avx2 {
    /// The CPU has AVX-512 F/VL/BW/DQ and its searches are wanted.
    avx512: bool,
}

impl Avx2 {
    /// `Some` when the CPU supports AVX2 and F16C; the AVX-512 searches are
    /// used where the CPU has them, unless `GGUFKIT_NO_AVX512` is set to
    /// anything but empty or `0` (read once per process).
    pub fn new() -> Option<Self> {
        static WIDE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let wide = *WIDE.get_or_init(|| {
            let off = std::env::var("GGUFKIT_NO_AVX512").is_ok_and(|v| !v.is_empty() && v != "0");
            !off && super::avx512::detected()
        });
        Self::avx2_only().map(|_| Avx2 { avx512: wide })
    }

    /// The AVX2 kernels alone, even on a CPU with AVX-512 (for tests and benchmarks).
    pub fn avx2_only() -> Option<Self> {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("f16c") {
            Some(Avx2 { avx512: false })
        } else {
            None
        }
    }

    /// Whether the searches run on AVX-512.
    pub fn uses_avx512(self) -> bool {
        self.avx512
    }
}

// ------------------------------------------------------------------ helpers

/// ggml's `nearest_int` on 8 lanes: the bits of `x + 1.5·2²³`, masked and
/// rebased, exactly as the scalar version.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn nearest_int(x: __m256) -> __m256i {
    let v = _mm256_castps_si256(_mm256_add_ps(x, _mm256_set1_ps(12582912.0)));
    _mm256_sub_epi32(_mm256_and_si256(v, _mm256_set1_epi32(0x007F_FFFF)), _mm256_set1_epi32(0x0040_0000))
}

/// `v.clamp(lo, hi)` on i32 lanes (lo ≤ hi).
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn clamp(v: __m256i, lo: __m256i, hi: __m256i) -> __m256i {
    _mm256_max_epi32(lo, _mm256_min_epi32(v, hi))
}

#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn abs(v: __m256) -> __m256 {
    _mm256_andnot_ps(_mm256_set1_ps(-0.0), v)
}

#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn gt(a: __m256, b: __m256) -> __m256 {
    _mm256_cmp_ps::<_CMP_GT_OQ>(a, b)
}

#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn lt(a: __m256, b: __m256) -> __m256 {
    _mm256_cmp_ps::<_CMP_LT_OQ>(a, b)
}

/// In-place transpose of an 8×8 matrix of f32 held in 8 rows.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn transpose8(r: &mut [__m256; 8]) {
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    r[0] = _mm256_permute2f128_ps::<0x20>(s0, s4);
    r[1] = _mm256_permute2f128_ps::<0x20>(s1, s5);
    r[2] = _mm256_permute2f128_ps::<0x20>(s2, s6);
    r[3] = _mm256_permute2f128_ps::<0x20>(s3, s7);
    r[4] = _mm256_permute2f128_ps::<0x31>(s0, s4);
    r[5] = _mm256_permute2f128_ps::<0x31>(s1, s5);
    r[6] = _mm256_permute2f128_ps::<0x31>(s2, s6);
    r[7] = _mm256_permute2f128_ps::<0x31>(s3, s7);
}

/// Groups `g0 .. g0 + 8` of `x` in lanes: vector `i` holds value `i` of each.
/// Requires `N % 8 == 0` and `g0 + 8 <= M`.
#[inline]
#[target_feature(enable = "avx2,f16c")]
pub(super) unsafe fn lanes<const N: usize, const M: usize>(x: &[[f32; N]; M], g0: usize) -> [__m256; N] {
    let mut out = [_mm256_setzero_ps(); N];
    for c in 0..N / 8 {
        let mut r = [_mm256_setzero_ps(); 8];
        for (j, rj) in r.iter_mut().enumerate() {
            let g = &x[g0 + j][8 * c..8 * c + 8];
            *rj = _mm256_loadu_ps(g.as_ptr());
        }
        transpose8(&mut r);
        out[8 * c..8 * c + 8].copy_from_slice(&r);
    }
    out
}

/// The inverse of [`lanes`] for levels: lane `j` of `l[i]` (0..=255) goes to `out[g0 + j][i]`.
#[inline]
#[target_feature(enable = "avx2,f16c")]
pub(super) unsafe fn store_levels<const N: usize, const M: usize>(l: &[__m256i; N], out: &mut [[u8; N]; M], g0: usize) {
    for c in 0..N / 8 {
        let mut r = [_mm256_setzero_ps(); 8];
        for k in 0..8 {
            r[k] = _mm256_castsi256_ps(l[8 * c + k]);
        }
        transpose8(&mut r);
        // r[j] = values 8c..8c+8 of group j, as i32 lanes
        for j in (0..8).step_by(2) {
            let b = pack_bytes16(_mm256_castps_si256(r[j]), _mm256_castps_si256(r[j + 1]));
            let mut tmp = [0u8; 16];
            _mm_storeu_si128(tmp.as_mut_ptr() as *mut __m128i, b);
            out[g0 + j][8 * c..8 * c + 8].copy_from_slice(&tmp[..8]);
            out[g0 + j + 1][8 * c..8 * c + 8].copy_from_slice(&tmp[8..]);
        }
    }
}

/// The low bytes of 16 i32 lanes (`a` then `b`), as `as u8` truncates.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn pack_bytes16(a: __m256i, b: __m256i) -> __m128i {
    let m = _mm256_set1_epi32(0xFF);
    let w = _mm256_packus_epi32(_mm256_and_si256(a, m), _mm256_and_si256(b, m));
    let y = _mm256_packus_epi16(w, w);
    let y = _mm256_permutevar8x32_epi32(y, _mm256_setr_epi32(0, 4, 1, 5, 0, 0, 0, 0));
    _mm256_castsi256_si128(y)
}

/// The oracle's `first_abs_max` per lane: `if |x| > amax { amax = |x|; max = x }`.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn first_abs_max<const N: usize>(x: &[__m256; N]) -> (__m256, __m256) {
    let mut amax = _mm256_setzero_ps();
    let mut max = _mm256_setzero_ps();
    for &v in x {
        let ax = abs(v);
        let m = gt(ax, amax);
        amax = _mm256_blendv_ps(amax, ax, m);
        max = _mm256_blendv_ps(max, v, m);
    }
    (amax, max)
}

// ------------------------------------------------------------------ searches

/// `make_qkx2_quants` (`v3`: `make_qkx3_quants`) on 8 groups in lanes.
/// Returns the levels (i32 lanes), the scales and `-min`.
#[target_feature(enable = "avx2,f16c")]
unsafe fn qkx8<const N: usize>(
    p: &QkxSearch,
    v3: bool,
    x: &[__m256; N],
    w: &[__m256; N],
) -> ([__m256i; N], __m256, __m256) {
    let zero = _mm256_setzero_ps();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = w[0];
    let mut sum_x = _mm256_mul_ps(sum_w, x[0]);
    for i in 1..N {
        // minps(a, b) = a < b ? a : b: exactly `if x < min { min = x }`
        min = _mm256_min_ps(x[i], min);
        max = _mm256_max_ps(x[i], max);
        sum_w = _mm256_add_ps(sum_w, w[i]);
        sum_x = _mm256_add_ps(sum_x, _mm256_mul_ps(w[i], x[i]));
    }
    // if min > 0 { min = 0 }
    min = _mm256_min_ps(zero, min);
    let degenerate = if v3 { _mm256_cmp_ps::<_CMP_LE_OQ>(max, min) } else { _mm256_cmp_ps::<_CMP_EQ_OQ>(max, min) };

    let lo = _mm256_setzero_si256();
    let hi = _mm256_set1_epi32(p.nmax);
    let err = |d: __m256| if p.use_mad { abs(d) } else { _mm256_mul_ps(d, d) };

    let iscale0 = _mm256_div_ps(_mm256_set1_ps(p.nmax as f32), _mm256_sub_ps(max, min));
    let mut scale = _mm256_div_ps(_mm256_set1_ps(1.0), iscale0);
    let mut best_error = zero;
    for i in 0..N {
        let l = clamp(nearest_int(_mm256_mul_ps(iscale0, _mm256_sub_ps(x[i], min))), lo, hi);
        let lf = _mm256_cvtepi32_ps(l);
        let diff = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(scale, lf), min), x[i]);
        best_error = _mm256_add_ps(best_error, _mm256_mul_ps(w[i], err(diff)));
    }
    // The levels are not kept per step: the winning step's (iscale, min) is,
    // and the levels are recomputed from it at the end (the same operations).
    let mut best_iscale = iscale0;
    let mut best_lmin = min;
    let mut cur_min = min;
    if p.nstep >= 1 {
        let mut lf = [zero; N];
        for is in 0..=p.nstep {
            let num = p.rmin + p.rdelta * is as f32 + p.nmax as f32;
            let iscale = _mm256_div_ps(_mm256_set1_ps(num), _mm256_sub_ps(max, cur_min));
            let mut sum_l = zero;
            let mut sum_l2 = zero;
            let mut sum_xl = zero;
            for i in 0..N {
                let l = clamp(nearest_int(_mm256_mul_ps(iscale, _mm256_sub_ps(x[i], cur_min))), lo, hi);
                let f = _mm256_cvtepi32_ps(l);
                lf[i] = f;
                let wl = _mm256_mul_ps(w[i], f);
                sum_l = _mm256_add_ps(sum_l, wl);
                sum_l2 = _mm256_add_ps(sum_l2, _mm256_mul_ps(wl, f));
                sum_xl = _mm256_add_ps(sum_xl, _mm256_mul_ps(wl, x[i]));
            }
            let d = _mm256_sub_ps(_mm256_mul_ps(sum_w, sum_l2), _mm256_mul_ps(sum_l, sum_l));
            let dpos = gt(d, zero);
            if _mm256_movemask_ps(dpos) == 0 {
                continue;
            }
            let mut this_scale =
                _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sum_w, sum_xl), _mm256_mul_ps(sum_x, sum_l)), d);
            let mut this_min =
                _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sum_l2, sum_x), _mm256_mul_ps(sum_l, sum_xl)), d);
            let mpos = gt(this_min, zero);
            this_min = _mm256_blendv_ps(this_min, zero, mpos);
            this_scale = _mm256_blendv_ps(this_scale, _mm256_div_ps(sum_xl, sum_l2), mpos);
            let mut cur_error = zero;
            for i in 0..N {
                let diff = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(this_scale, lf[i]), this_min), x[i]);
                cur_error = _mm256_add_ps(cur_error, _mm256_mul_ps(w[i], err(diff)));
            }
            let upd = _mm256_and_ps(dpos, lt(cur_error, best_error));
            best_error = _mm256_blendv_ps(best_error, cur_error, upd);
            scale = _mm256_blendv_ps(scale, this_scale, upd);
            best_iscale = _mm256_blendv_ps(best_iscale, iscale, upd);
            best_lmin = _mm256_blendv_ps(best_lmin, cur_min, upd);
            cur_min = _mm256_blendv_ps(cur_min, this_min, upd);
        }
    }
    let degen_i = _mm256_castps_si256(degenerate);
    let mut l = [_mm256_setzero_si256(); N];
    for i in 0..N {
        let li = clamp(nearest_int(_mm256_mul_ps(best_iscale, _mm256_sub_ps(x[i], best_lmin))), lo, hi);
        l[i] = _mm256_andnot_si256(degen_i, li);
    }
    let scale = _mm256_blendv_ps(scale, zero, degenerate);
    let the_min = _mm256_blendv_ps(cur_min, min, degenerate);
    (l, scale, _mm256_xor_ps(the_min, _mm256_set1_ps(-0.0)))
}

/// Σ(w·x)·l and Σ(w·l)·l of `l = clamp(nearest_int(iscale·x), lo, hi)`.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn qx_sums<const N: usize>(
    iscale: __m256,
    x: &[__m256; N],
    w: &[__m256; N],
    wx: &[__m256; N],
    lo: __m256i,
    hi: __m256i,
) -> (__m256, __m256) {
    let mut sumlx = _mm256_setzero_ps();
    let mut suml2 = _mm256_setzero_ps();
    for i in 0..N {
        let lf = _mm256_cvtepi32_ps(clamp(nearest_int(_mm256_mul_ps(iscale, x[i])), lo, hi));
        sumlx = _mm256_add_ps(sumlx, _mm256_mul_ps(wx[i], lf));
        suml2 = _mm256_add_ps(suml2, _mm256_mul_ps(_mm256_mul_ps(w[i], lf), lf));
    }
    (sumlx, suml2)
}

/// `make_qx_quants(N, nmax, x, L, 1, w)` on 8 groups in lanes: levels `L` and scales.
#[target_feature(enable = "avx2,f16c")]
unsafe fn qx8<const N: usize>(nmax: i32, x: &[__m256; N], w: &[__m256; N]) -> ([__m256i; N], __m256) {
    let zero = _mm256_setzero_ps();
    let (amax, max) = first_abs_max(x);
    let tiny = lt(amax, _mm256_set1_ps(GROUP_MAX_EPS));
    let lo = _mm256_set1_epi32(-nmax);
    let hi = _mm256_set1_epi32(nmax - 1);
    let nmax_f = nmax as f32;
    let mut wx = [zero; N];
    for i in 0..N {
        wx[i] = _mm256_mul_ps(w[i], x[i]);
    }
    let iscale0 = _mm256_div_ps(_mm256_set1_ps(-nmax_f), max);
    let (sumlx, suml2) = qx_sums(iscale0, x, w, &wx, lo, hi);
    // if suml2 != 0 { sumlx / suml2 } else { 0 } (`!=` is true for NaN)
    let nz = _mm256_cmp_ps::<_CMP_NEQ_UQ>(suml2, zero);
    let mut scale = _mm256_blendv_ps(zero, _mm256_div_ps(sumlx, suml2), nz);
    let mut best = _mm256_mul_ps(scale, sumlx);
    let mut best_iscale = iscale0;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        let iscale = _mm256_div_ps(_mm256_set1_ps(-(nmax_f + 0.1f32 * is as f32)), max);
        let (sumlx, suml2) = qx_sums(iscale, x, w, &wx, lo, hi);
        let better = _mm256_and_ps(gt(suml2, zero), gt(_mm256_mul_ps(sumlx, sumlx), _mm256_mul_ps(best, suml2)));
        if _mm256_movemask_ps(better) == 0 {
            continue;
        }
        let s = _mm256_div_ps(sumlx, suml2);
        scale = _mm256_blendv_ps(scale, s, better);
        best = _mm256_blendv_ps(best, _mm256_mul_ps(s, sumlx), better);
        best_iscale = _mm256_blendv_ps(best_iscale, iscale, better);
    }
    let tiny_i = _mm256_castps_si256(tiny);
    let off = _mm256_set1_epi32(nmax);
    let mut l = [_mm256_setzero_si256(); N];
    for i in 0..N {
        let li = clamp(nearest_int(_mm256_mul_ps(best_iscale, x[i])), lo, hi);
        l[i] = _mm256_andnot_si256(tiny_i, _mm256_add_epi32(li, off));
    }
    (l, _mm256_blendv_ps(scale, zero, tiny))
}

/// `make_q3_quants(N, nmax, x, L, do_rmse = true)` on 8 groups in lanes.
#[target_feature(enable = "avx2,f16c")]
unsafe fn q3_8<const N: usize>(nmax: i32, x: &[__m256; N]) -> ([__m256i; N], __m256) {
    let zero = _mm256_setzero_ps();
    let (amax, max) = first_abs_max(x);
    let tiny = lt(amax, _mm256_set1_ps(GROUP_MAX_EPS));
    let lo = _mm256_set1_epi32(-nmax);
    let hi = _mm256_set1_epi32(nmax - 1);
    let iscale = _mm256_div_ps(_mm256_set1_ps(-(nmax as f32)), max);
    let mut w = [zero; N];
    let mut wx = [zero; N];
    let mut l = [_mm256_setzero_si256(); N];
    let mut sumlx = zero;
    let mut suml2 = zero;
    for i in 0..N {
        w[i] = _mm256_mul_ps(x[i], x[i]);
        wx[i] = _mm256_mul_ps(w[i], x[i]);
        l[i] = clamp(nearest_int(_mm256_mul_ps(iscale, x[i])), lo, hi);
        let lf = _mm256_cvtepi32_ps(l[i]);
        sumlx = _mm256_add_ps(sumlx, _mm256_mul_ps(wx[i], lf));
        suml2 = _mm256_add_ps(suml2, _mm256_mul_ps(_mm256_mul_ps(w[i], lf), lf));
    }
    // each group stops after the first pass that changes nothing
    let mut active = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_TRUE_UQ>(zero, zero));
    for _ in 0..5 {
        let mut n_changed = _mm256_setzero_si256();
        for i in 0..N {
            let li = _mm256_cvtepi32_ps(l[i]);
            let slx = _mm256_sub_ps(sumlx, _mm256_mul_ps(wx[i], li));
            let m1 = _mm256_and_si256(active, _mm256_castps_si256(gt(slx, zero)));
            if _mm256_testz_si256(m1, m1) != 0 {
                continue;
            }
            let sl2 = _mm256_sub_ps(suml2, _mm256_mul_ps(_mm256_mul_ps(w[i], li), li));
            let new_l = clamp(nearest_int(_mm256_div_ps(_mm256_mul_ps(x[i], sl2), slx)), lo, hi);
            let m2 = _mm256_andnot_si256(_mm256_cmpeq_epi32(new_l, l[i]), m1);
            let nl = _mm256_cvtepi32_ps(new_l);
            let slx2 = _mm256_add_ps(slx, _mm256_mul_ps(wx[i], nl));
            let sl22 = _mm256_add_ps(sl2, _mm256_mul_ps(_mm256_mul_ps(w[i], nl), nl));
            let better = _mm256_and_ps(
                gt(sl22, zero),
                gt(_mm256_mul_ps(_mm256_mul_ps(slx2, slx2), suml2), _mm256_mul_ps(_mm256_mul_ps(sumlx, sumlx), sl22)),
            );
            let m3 = _mm256_and_si256(m2, _mm256_castps_si256(better));
            let m3f = _mm256_castsi256_ps(m3);
            l[i] = _mm256_blendv_epi8(l[i], new_l, m3);
            sumlx = _mm256_blendv_ps(sumlx, slx2, m3f);
            suml2 = _mm256_blendv_ps(suml2, sl22, m3f);
            n_changed = _mm256_sub_epi32(n_changed, m3);
        }
        let changed = _mm256_xor_si256(_mm256_cmpeq_epi32(n_changed, _mm256_setzero_si256()), _mm256_set1_epi32(-1));
        active = _mm256_and_si256(active, changed);
        if _mm256_testz_si256(active, active) != 0 {
            break;
        }
    }
    let tiny_i = _mm256_castps_si256(tiny);
    let off = _mm256_set1_epi32(nmax);
    for li in l.iter_mut() {
        *li = _mm256_andnot_si256(tiny_i, _mm256_add_epi32(*li, off));
    }
    let scale = _mm256_blendv_ps(zero, _mm256_div_ps(sumlx, suml2), gt(suml2, zero));
    (l, _mm256_blendv_ps(scale, zero, tiny))
}

// ------------------------------------------------------------------ IQ4

/// `kvalues_iq4nl` as f32, in two halves for `permutevar8x32`.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn iq4_tables() -> (__m256, __m256) {
    let v = crate::quant::iq4::KVALUES_IQ4NL.map(|k| k as f32);
    (_mm256_loadu_ps(v[..8].as_ptr()), _mm256_loadu_ps(v[8..].as_ptr()))
}

/// `best_index_int8(kvalues_iq4nl, y)` on 8 lanes, and the table value there.
///
/// The oracle's bisection ends on the first table value above `y`; that is
/// the number of table values ≤ `y` (`y` strictly inside the table), then the
/// nearer of the two neighbours with the same float comparison. `y ≤ v[0]`
/// gives 0; `y ≥ v[15]` and NaN give 15, as the bisection does.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn iq4_nearest(y: __m256, tlo: __m256, thi: __m256) -> (__m256i, __m256) {
    let kv = crate::quant::iq4::KVALUES_IQ4NL;
    let mut mu = _mm256_set1_epi32(1);
    for &k in &kv[1..15] {
        let le = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(_mm256_set1_ps(k as f32), y));
        mu = _mm256_sub_epi32(mu, le);
    }
    let gather = |i: __m256i| {
        let hi_half = _mm256_castsi256_ps(_mm256_cmpgt_epi32(i, _mm256_set1_epi32(7)));
        _mm256_blendv_ps(_mm256_permutevar8x32_ps(tlo, i), _mm256_permutevar8x32_ps(thi, i), hi_half)
    };
    let below = _mm256_sub_epi32(mu, _mm256_set1_epi32(1));
    let (vlo, vhi) = (gather(below), gather(mu));
    let take_lo = lt(_mm256_sub_ps(y, vlo), _mm256_sub_ps(vhi, y));
    let mut idx = _mm256_blendv_epi8(mu, below, _mm256_castps_si256(take_lo));
    let mut val = _mm256_blendv_ps(vhi, vlo, take_lo);
    let (v0, v15) = (_mm256_set1_ps(kv[0] as f32), _mm256_set1_ps(kv[15] as f32));
    let top = _mm256_or_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(y, v15), _mm256_cmp_ps::<_CMP_UNORD_Q>(y, y));
    idx = _mm256_blendv_epi8(idx, _mm256_set1_epi32(15), _mm256_castps_si256(top));
    val = _mm256_blendv_ps(val, v15, top);
    let bottom = _mm256_cmp_ps::<_CMP_LE_OQ>(y, v0);
    idx = _mm256_blendv_epi8(idx, _mm256_setzero_si256(), _mm256_castps_si256(bottom));
    val = _mm256_blendv_ps(val, v0, bottom);
    (idx, val)
}

/// IQ4's `fit`: Σ(w·q)·x and Σ(w·q)·q of the table values nearest to `id·x`.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn iq4_fit(x: &[__m256; 32], w: &[__m256; 32], id: __m256, tlo: __m256, thi: __m256) -> (__m256, __m256) {
    let mut sumqx = _mm256_setzero_ps();
    let mut sumq2 = _mm256_setzero_ps();
    for j in 0..32 {
        let (_, q) = iq4_nearest(_mm256_mul_ps(id, x[j]), tlo, thi);
        let wq = _mm256_mul_ps(w[j], q);
        sumqx = _mm256_add_ps(sumqx, _mm256_mul_ps(wq, x[j]));
        sumq2 = _mm256_add_ps(sumq2, _mm256_mul_ps(wq, q));
    }
    (sumqx, sumq2)
}

/// IQ4's `search_scale` on 8 groups of 32 in lanes.
#[target_feature(enable = "avx2,f16c")]
unsafe fn iq4_search8(x: &[__m256; 32], w: &[__m256; 32]) -> __m256 {
    let zero = _mm256_setzero_ps();
    let (tlo, thi) = iq4_tables();
    let (amax, max) = first_abs_max(x);
    let tiny = lt(amax, _mm256_set1_ps(GROUP_MAX_EPS));
    let v0 = crate::quant::iq4::KVALUES_IQ4NL[0] as i32;
    // d = -max / v0; first fit at 1/d
    let d0 = _mm256_div_ps(_mm256_xor_ps(max, _mm256_set1_ps(-0.0)), _mm256_set1_ps(v0 as f32));
    let (sumqx, sumq2) = iq4_fit(x, w, _mm256_div_ps(_mm256_set1_ps(1.0), d0), tlo, thi);
    let mut d = _mm256_blendv_ps(zero, _mm256_div_ps(sumqx, sumq2), gt(sumq2, zero));
    let mut best = _mm256_mul_ps(d, sumqx);
    for itry in -7..=7 {
        let id = _mm256_div_ps(_mm256_set1_ps((itry + v0) as f32), max);
        let (sumqx, sumq2) = iq4_fit(x, w, id, tlo, thi);
        let better = _mm256_and_ps(gt(sumq2, zero), gt(_mm256_mul_ps(sumqx, sumqx), _mm256_mul_ps(best, sumq2)));
        let dn = _mm256_div_ps(sumqx, sumq2);
        d = _mm256_blendv_ps(d, dn, better);
        best = _mm256_blendv_ps(best, _mm256_mul_ps(dn, sumqx), better);
    }
    _mm256_blendv_ps(d, zero, tiny)
}

#[target_feature(enable = "avx2,f16c")]
unsafe fn iq4_indices(x: &[f32; 32], id: f32, qs: &mut [u8; 16]) {
    let (tlo, thi) = iq4_tables();
    let idv = _mm256_set1_ps(id);
    let v = load4(x);
    let q = v.map(|vi| iq4_nearest(_mm256_mul_ps(idv, vi), tlo, thi).0);
    *qs = pack_nibbles(q);
}

// ------------------------------------------------------------------ row kernels

/// `roundf` (half away from zero) on 8 lanes: truncate, then step away from
/// zero when the (exact) remainder is at least one half. NaN and ±inf stay.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn round_away(r: __m256) -> __m256 {
    let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(r);
    let frac = _mm256_sub_ps(r, t);
    let one = _mm256_or_ps(_mm256_set1_ps(1.0), _mm256_and_ps(r, _mm256_set1_ps(-0.0)));
    let step = _mm256_and_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(abs(frac), _mm256_set1_ps(0.5)), one);
    _mm256_add_ps(t, step)
}

/// `(int8_t)f` widened back (cvttps2dq, then the low byte sign-extended).
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn trunc_i8(f: __m256) -> __m256i {
    _mm256_srai_epi32::<24>(_mm256_slli_epi32::<24>(_mm256_cvttps_epi32(f)))
}

#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn load4(x: &[f32; 32]) -> [__m256; 4] {
    let p = x.as_ptr();
    [_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)), _mm256_loadu_ps(p.add(16)), _mm256_loadu_ps(p.add(24))]
}

/// Bit `i` set where lane `i` of `m` (4 vectors, 32 lanes) is set.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn mask32(m: [__m256; 4]) -> u32 {
    (_mm256_movemask_ps(m[0]) as u32)
        | (_mm256_movemask_ps(m[1]) as u32) << 8
        | (_mm256_movemask_ps(m[2]) as u32) << 16
        | (_mm256_movemask_ps(m[3]) as u32) << 24
}

#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn hmax(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_max_ss(m, _mm_shuffle_ps::<1>(m, m));
    _mm_cvtss_f32(m)
}

#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn hmin(v: __m256) -> f32 {
    let m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let m = _mm_min_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_min_ss(m, _mm_shuffle_ps::<1>(m, m));
    _mm_cvtss_f32(m)
}

/// The oracle's `(amax, max)` of a legacy block (`if amax < |v| { amax = |v|; max = v }`
/// from 0): NaNs never win, and among equal magnitudes the first one does.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn block_first_abs_max(x: &[f32; 32], v: &[__m256; 4]) -> f32 {
    // maxps(a, b) returns b when a is NaN: NaNs are skipped
    let mut acc = _mm256_setzero_ps();
    for &vi in v {
        acc = _mm256_max_ps(abs(vi), acc);
    }
    let amax = hmax(acc);
    if amax > 0.0 {
        let a = _mm256_set1_ps(amax);
        let eq = v.map(|vi| _mm256_cmp_ps::<_CMP_EQ_OQ>(abs(vi), a));
        x[mask32(eq).trailing_zeros() as usize & 31]
    } else {
        0.0
    }
}

/// The oracle's `(min, max)` of a Q4_1/Q5_1 block (from ±f32::MAX with `<`
/// and `>`): NaNs are skipped; a zero extreme takes the sign of the first zero.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn block_min_max(x: &[f32; 32], v: &[__m256; 4]) -> (f32, f32) {
    let mut mn = _mm256_set1_ps(f32::MAX);
    let mut mx = _mm256_set1_ps(-f32::MAX);
    for &vi in v {
        mn = _mm256_min_ps(vi, mn);
        mx = _mm256_max_ps(vi, mx);
    }
    let (mut min, mut max) = (hmin(mn), hmax(mx));
    if min == 0.0 || max == 0.0 {
        let z = v.map(|vi| _mm256_cmp_ps::<_CMP_EQ_OQ>(vi, _mm256_setzero_ps()));
        let first_zero = x[mask32(z).trailing_zeros() as usize & 31];
        if min == 0.0 {
            min = first_zero;
        }
        if max == 0.0 {
            max = first_zero;
        }
    }
    (min, max)
}

/// Lane `b` = the maximum of the 8 lanes of `v[b]` (exact in any order: no lane may be NaN).
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn hmax8(v: &[__m256; 8]) -> __m256 {
    let pair = |a: __m256, b: __m256| _mm256_max_ps(_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
    let (x0, x1, x2, x3) = (pair(v[0], v[1]), pair(v[2], v[3]), pair(v[4], v[5]), pair(v[6], v[7]));
    let quad = |a: __m256, b: __m256| {
        _mm256_max_ps(_mm256_shuffle_ps::<0b01_00_01_00>(a, b), _mm256_shuffle_ps::<0b11_10_11_10>(a, b))
    };
    let (y0, y1) = (quad(x0, x1), quad(x2, x3));
    _mm256_max_ps(_mm256_permute2f128_ps::<0x20>(y0, y1), _mm256_permute2f128_ps::<0x31>(y0, y1))
}

/// Lane `b` = the minimum of the 8 lanes of `v[b]` (no lane may be NaN).
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn hmin8(v: &[__m256; 8]) -> __m256 {
    let neg = _mm256_set1_ps(-0.0);
    // min(x) = -max(-x), exact
    let m = hmax8(&v.map(|vi| _mm256_xor_ps(vi, neg)));
    _mm256_xor_ps(m, neg)
}

/// `d` on 8 lanes and `id = d != 0 ? 1/d : 0`, `d` as fp16 (F16C rounds to nearest even like
/// ggml's software conversion; `d` is never NaN here).
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn scales8(d: __m256) -> (__m256, [Half; 8]) {
    let nz = _mm256_cmp_ps::<_CMP_NEQ_UQ>(d, _mm256_setzero_ps());
    let id = _mm256_and_ps(_mm256_div_ps(_mm256_set1_ps(1.0), d), nz);
    let mut h = [Half::ZERO; 8];
    _mm_storeu_si128(h.as_mut_ptr() as *mut __m128i, _mm256_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT }>(d));
    (id, h)
}

/// Lane `b` of `v` on all 8 lanes.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn lane(v: __m256, b: usize) -> __m256 {
    _mm256_permutevar8x32_ps(v, _mm256_set1_epi32(b as i32))
}

/// True when a lane of the 8 blocks is NaN (the oracle lets a NaN win or lose a running max by
/// position: such groups go block by block).
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn any_nan8(x: &[[f32; 32]; 8]) -> bool {
    let mut m = _mm256_setzero_ps();
    for xb in x {
        for v in load4(xb) {
            m = _mm256_or_ps(m, _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
        }
    }
    _mm256_movemask_ps(m) != 0
}

/// Q8_0 of one block, vectorized along the block (any input).
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn q8_0_block(xb: &[f32; 32], yb: &mut BlockQ8_0) {
    let v = load4(xb);
    // the oracle's running max lets a NaN win or lose by position: leave it that case
    if mask32(v.map(|vi| _mm256_cmp_ps::<_CMP_UNORD_Q>(vi, vi))) != 0 {
        *yb = BlockQ8_0::quantize(xb);
        return;
    }
    let amax = hmax(_mm256_max_ps(_mm256_max_ps(abs(v[0]), abs(v[1])), _mm256_max_ps(abs(v[2]), abs(v[3]))));
    let d = amax / 127.0;
    let id = _mm256_set1_ps(if d != 0.0 { 1.0 / d } else { 0.0 });
    q8_0_levels(&v, id, yb);
    yb.d = Half::from_f32(d);
}

/// `roundf(x·id)` of one block into its `qs`.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn q8_0_levels(v: &[__m256; 4], id: __m256, yb: &mut BlockQ8_0) {
    let q = v.map(|vi| _mm256_cvttps_epi32(round_away(_mm256_mul_ps(vi, id))));
    let qs = yb.qs.as_mut_ptr() as *mut __m128i;
    _mm_storeu_si128(qs, pack_bytes16(q[0], q[1]));
    _mm_storeu_si128(qs.add(1), pack_bytes16(q[2], q[3]));
}

/// Q8_0 of 8 blocks without NaN, vectorized across the blocks: the 8 maxima
/// (exact in any order), the 8 scales with one division, the levels
/// elementwise.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn q8_0_x8(x: &[[f32; 32]; 8], y: &mut [BlockQ8_0; 8]) {
    let am: [__m256; 8] = std::array::from_fn(|b| {
        let v = load4(&x[b]);
        _mm256_max_ps(_mm256_max_ps(abs(v[0]), abs(v[1])), _mm256_max_ps(abs(v[2]), abs(v[3])))
    });
    let d = _mm256_div_ps(hmax8(&am), _mm256_set1_ps(127.0));
    let (id, h) = scales8(d);
    for b in 0..8 {
        q8_0_levels(&load4(&x[b]), lane(id, b), &mut y[b]);
        y[b].d = h[b];
    }
}

#[target_feature(enable = "avx2,f16c")]
unsafe fn q8_0_blocks(x: &[[f32; 32]], y: &mut [BlockQ8_0]) {
    let x = &x[..x.len().min(y.len())];
    let n8 = x.len() / 8 * 8;
    let (xg, xt) = x.split_at(n8);
    for (xs, ys) in xg.chunks_exact(8).zip(y.chunks_exact_mut(8)) {
        let xs: &[[f32; 32]; 8] = xs.try_into().unwrap();
        let ys: &mut [BlockQ8_0; 8] = ys.try_into().unwrap();
        if any_nan8(xs) {
            for (xb, yb) in xs.iter().zip(ys.iter_mut()) {
                q8_0_block(xb, yb);
            }
        } else {
            q8_0_x8(xs, ys);
        }
    }
    for (xb, yb) in xt.iter().zip(y[n8..].iter_mut()) {
        q8_0_block(xb, yb);
    }
}

/// Two nibbles per byte: `lo[j] | hi[j] << 4` over i32 lanes (value j with j + 16), as the oracle
/// ORs the low bytes of possibly negative ints.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn pack_nibbles(q: [__m256i; 4]) -> [u8; 16] {
    let b0 = _mm256_or_si256(q[0], _mm256_slli_epi32::<4>(q[2]));
    let b1 = _mm256_or_si256(q[1], _mm256_slli_epi32::<4>(q[3]));
    let mut out = [0u8; 16];
    _mm_storeu_si128(out.as_mut_ptr() as *mut __m128i, pack_bytes16(b0, b1));
    out
}

/// The Q5 layout: low nibbles as [`pack_nibbles`] of `l & 0xF`, fifth bits in `qh`.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn pack5(l: [__m256i; 4]) -> ([u8; 16], [u8; 4]) {
    let f = _mm256_set1_epi32(0xF);
    let qs = pack_nibbles(l.map(|li| _mm256_and_si256(li, f)));
    let bit4 = l.map(|li| _mm256_castsi256_ps(_mm256_slli_epi32::<27>(li)));
    (qs, mask32(bit4).to_le_bytes())
}

/// Q4_0's levels of one block: `min(15, (int8_t)(x·id + 8.5))`, two per byte.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn q4_0_levels(v: &[__m256; 4], id: __m256) -> [u8; 16] {
    let (c, top) = (_mm256_set1_ps(8.5), _mm256_set1_epi32(15));
    pack_nibbles(v.map(|vi| _mm256_min_epi32(trunc_i8(_mm256_add_ps(_mm256_mul_ps(vi, id), c)), top)))
}

/// Q4_0 of one block, vectorized along the block (any input).
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn q4_0_block(xb: &[f32; 32]) -> BlockQ4_0 {
    let v = load4(xb);
    let max = block_first_abs_max(xb, &v);
    let d = max / -8.0;
    let id = _mm256_set1_ps(if d != 0.0 { 1.0 / d } else { 0.0 });
    BlockQ4_0 { d: Half::from_f32(d), qs: q4_0_levels(&v, id) }
}

/// Q4_0 of 8 blocks without NaN, vectorized across the blocks. The oracle's
/// signed maximum (the first value of the largest magnitude, `+0` for a zero
/// block) is `+amax` when only the block maximum reaches it, `-amax` when
/// only the minimum does; when both do, the first one wins, found in the
/// block.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn q4_0_x8(x: &[[f32; 32]; 8], y: &mut [BlockQ4_0; 8]) {
    let mut am = [_mm256_setzero_ps(); 8];
    let mut mx = [_mm256_setzero_ps(); 8];
    let mut mn = [_mm256_setzero_ps(); 8];
    for b in 0..8 {
        let v = load4(&x[b]);
        am[b] = _mm256_max_ps(_mm256_max_ps(abs(v[0]), abs(v[1])), _mm256_max_ps(abs(v[2]), abs(v[3])));
        mx[b] = _mm256_max_ps(_mm256_max_ps(v[0], v[1]), _mm256_max_ps(v[2], v[3]));
        mn[b] = _mm256_min_ps(_mm256_min_ps(v[0], v[1]), _mm256_min_ps(v[2], v[3]));
    }
    let neg = _mm256_set1_ps(-0.0);
    let (amax, mx, mn) = (hmax8(&am), hmax8(&mx), hmin8(&mn));
    let pos = _mm256_cmp_ps::<_CMP_EQ_OQ>(mx, amax);
    let negs = _mm256_cmp_ps::<_CMP_EQ_OQ>(_mm256_xor_ps(mn, neg), amax);
    let zero = _mm256_cmp_ps::<_CMP_EQ_OQ>(amax, _mm256_setzero_ps());
    // +amax, or -amax where only the minimum reaches it; +0 for a zero block
    let mut max = _mm256_blendv_ps(amax, _mm256_xor_ps(amax, neg), _mm256_andnot_ps(pos, negs));
    max = _mm256_andnot_ps(zero, max);
    let both = _mm256_movemask_ps(_mm256_andnot_ps(zero, _mm256_and_ps(pos, negs)));
    if both != 0 {
        let mut m = [0f32; 8];
        _mm256_storeu_ps(m.as_mut_ptr(), max);
        for (b, mb) in m.iter_mut().enumerate() {
            if both & (1 << b) != 0 {
                *mb = block_first_abs_max(&x[b], &load4(&x[b]));
            }
        }
        max = _mm256_loadu_ps(m.as_ptr());
    }
    let d = _mm256_div_ps(max, _mm256_set1_ps(-8.0));
    let (id, h) = scales8(d);
    for b in 0..8 {
        y[b] = BlockQ4_0 { d: h[b], qs: q4_0_levels(&load4(&x[b]), lane(id, b)) };
    }
}

#[target_feature(enable = "avx2,f16c")]
unsafe fn q4_0_blocks(x: &[[f32; 32]], y: &mut [BlockQ4_0]) {
    let x = &x[..x.len().min(y.len())];
    let n8 = x.len() / 8 * 8;
    let (xg, xt) = x.split_at(n8);
    for (xs, ys) in xg.chunks_exact(8).zip(y.chunks_exact_mut(8)) {
        let xs: &[[f32; 32]; 8] = xs.try_into().unwrap();
        let ys: &mut [BlockQ4_0; 8] = ys.try_into().unwrap();
        if any_nan8(xs) {
            for (xb, yb) in xs.iter().zip(ys.iter_mut()) {
                *yb = q4_0_block(xb);
            }
        } else {
            q4_0_x8(xs, ys);
        }
    }
    for (xb, yb) in xt.iter().zip(y[n8..].iter_mut()) {
        *yb = q4_0_block(xb);
    }
}

#[target_feature(enable = "avx2,f16c")]
unsafe fn q5_0_blocks(x: &[[f32; 32]], y: &mut [BlockQ5_0]) {
    for (xb, yb) in x.iter().zip(y.iter_mut()) {
        let v = load4(xb);
        let max = block_first_abs_max(xb, &v);
        let d = max / -16.0;
        let id = _mm256_set1_ps(if d != 0.0 { 1.0 / d } else { 0.0 });
        let (c, top, byte) = (_mm256_set1_ps(16.5), _mm256_set1_epi32(31), _mm256_set1_epi32(0xFF));
        let l = v
            .map(|vi| _mm256_and_si256(_mm256_min_epi32(trunc_i8(_mm256_add_ps(_mm256_mul_ps(vi, id), c)), top), byte));
        let (qs, qh) = pack5(l);
        *yb = BlockQ5_0 { d: Half::from_f32(d), qh, qs };
    }
}

#[target_feature(enable = "avx2,f16c")]
unsafe fn q4_1_blocks(x: &[[f32; 32]], y: &mut [BlockQ4_1]) {
    for (xb, yb) in x.iter().zip(y.iter_mut()) {
        let v = load4(xb);
        let (min, max) = block_min_max(xb, &v);
        let d = (max - min) / 15.0;
        let id = _mm256_set1_ps(if d != 0.0 { 1.0 / d } else { 0.0 });
        let (mn, c, top) = (_mm256_set1_ps(min), _mm256_set1_ps(0.5), _mm256_set1_epi32(15));
        let q = v.map(|vi| _mm256_min_epi32(trunc_i8(_mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(vi, mn), id), c)), top));
        *yb = BlockQ4_1 { d: Half::from_f32(d), m: Half::from_f32(min), qs: pack_nibbles(q) };
    }
}

#[target_feature(enable = "avx2,f16c")]
unsafe fn q5_1_blocks(x: &[[f32; 32]], y: &mut [BlockQ5_1]) {
    for (xb, yb) in x.iter().zip(y.iter_mut()) {
        let v = load4(xb);
        let (min, max) = block_min_max(xb, &v);
        let d = (max - min) / 31.0;
        let id = _mm256_set1_ps(if d != 0.0 { 1.0 / d } else { 0.0 });
        let (mn, c, byte) = (_mm256_set1_ps(min), _mm256_set1_ps(0.5), _mm256_set1_epi32(0xFF));
        // (uint8_t)(x + 0.5f): the low byte of the truncated int, no clamp
        let l = v.map(|vi| {
            _mm256_and_si256(_mm256_cvttps_epi32(_mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(vi, mn), id), c)), byte)
        });
        let (qs, qh) = pack5(l);
        *yb = BlockQ5_1 { d: Half::from_f32(d), m: Half::from_f32(min), qh, qs };
    }
}

#[target_feature(enable = "avx2,f16c")]
unsafe fn requantize<const N: usize>(x: &[f32; N], add: f32, d: f32, lo: i32, hi: i32, off: i32, l: &mut [u8; N]) {
    let (a, dv) = (_mm256_set1_ps(add), _mm256_set1_ps(d));
    let (lo, hi, off) = (_mm256_set1_epi32(lo), _mm256_set1_epi32(hi), _mm256_set1_epi32(off));
    for c in 0..N / 16 {
        let p = x[16 * c..16 * c + 16].as_ptr();
        let q = |v: __m256| _mm256_add_epi32(clamp(nearest_int(_mm256_div_ps(_mm256_add_ps(v, a), dv)), lo, hi), off);
        let b = pack_bytes16(q(_mm256_loadu_ps(p)), q(_mm256_loadu_ps(p.add(8))));
        let dst = &mut l[16 * c..16 * c + 16];
        _mm_storeu_si128(dst.as_mut_ptr() as *mut __m128i, b);
    }
}

// ------------------------------------------------------------------ fp16 / bf16

#[target_feature(enable = "avx2,f16c")]
unsafe fn f32_to_f16_row(src: &[f32], dst: &mut [u8]) {
    let n = src.len().min(dst.len() / 2);
    let body = n - n % 8;
    let (sign, qnan) = (_mm_set1_epi16(0x8000u16 as i16), _mm_set1_epi16(0x7E00));
    for i in (0..body).step_by(8) {
        let v = _mm256_loadu_ps(src[i..i + 8].as_ptr());
        // F16C rounds to nearest even like ggml; only NaNs differ (ggml drops the payload)
        let h = _mm256_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT }>(v);
        let nan = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
        let nan16 = _mm_packs_epi32(_mm256_castsi256_si128(nan), _mm256_extracti128_si256::<1>(nan));
        let fixed = _mm_or_si128(_mm_and_si128(h, sign), qnan);
        let h = _mm_blendv_epi8(h, fixed, nan16);
        _mm_storeu_si128(dst[2 * i..2 * i + 16].as_mut_ptr() as *mut __m128i, h);
    }
    Scalar.f32_to_f16_row(&src[body..n], &mut dst[2 * body..2 * n]);
}

#[target_feature(enable = "avx2,f16c")]
unsafe fn f16_to_f32_row(src: &[u8], dst: &mut [f32]) {
    let n = dst.len().min(src.len() / 2);
    let body = n - n % 8;
    for i in (0..body).step_by(8) {
        let h = _mm_loadu_si128(src[2 * i..2 * i + 16].as_ptr() as *const __m128i);
        _mm256_storeu_ps(dst[i..i + 8].as_mut_ptr(), _mm256_cvtph_ps(h));
    }
    Scalar.f16_to_f32_row(&src[2 * body..2 * n], &mut dst[body..n]);
}

#[target_feature(enable = "avx2,f16c")]
unsafe fn f32_to_bf16_row(src: &[f32], dst: &mut [u8]) {
    let n = src.len().min(dst.len() / 2);
    let body = n - n % 16;
    let conv = |v: __m256| {
        let u = _mm256_castps_si256(v);
        let mag = _mm256_and_si256(u, _mm256_set1_epi32(0x7FFF_FFFF));
        let nan = _mm256_cmpgt_epi32(mag, _mm256_set1_epi32(0x7F80_0000));
        let hi = _mm256_srli_epi32::<16>(u);
        let bias = _mm256_add_epi32(_mm256_set1_epi32(0x7FFF), _mm256_and_si256(hi, _mm256_set1_epi32(1)));
        let rounded = _mm256_srli_epi32::<16>(_mm256_add_epi32(u, bias));
        _mm256_blendv_epi8(rounded, _mm256_or_si256(hi, _mm256_set1_epi32(64)), nan)
    };
    for i in (0..body).step_by(16) {
        let p = src[i..i + 16].as_ptr();
        let a = conv(_mm256_loadu_ps(p));
        let b = conv(_mm256_loadu_ps(p.add(8)));
        // values ≤ 0xFFFF: packus does not saturate; fix the lane interleave
        let packed = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi32(a, b));
        _mm256_storeu_si256(dst[2 * i..2 * i + 32].as_mut_ptr() as *mut __m256i, packed);
    }
    Scalar.f32_to_bf16_row(&src[body..n], &mut dst[2 * body..2 * n]);
}

#[target_feature(enable = "avx2,f16c")]
unsafe fn bf16_to_f32_row(src: &[u8], dst: &mut [f32]) {
    let n = dst.len().min(src.len() / 2);
    let body = n - n % 8;
    for i in (0..body).step_by(8) {
        let h = _mm_loadu_si128(src[2 * i..2 * i + 16].as_ptr() as *const __m128i);
        let v = _mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h));
        _mm256_storeu_ps(dst[i..i + 8].as_mut_ptr(), _mm256_castsi256_ps(v));
    }
    Scalar.bf16_to_f32_row(&src[2 * body..2 * n], &mut dst[body..n]);
}

/// Decodes up to 8 blocks of stored F16 / BF16 values into `buf`; `false` when
/// one is NaN or infinite (all exponent bits set).
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn decode_half_blocks(src: &[u8], bf16: bool, buf: &mut [[f32; 32]; 8], n: usize) -> bool {
    let exp = _mm_set1_epi16(if bf16 { 0x7F80 } else { 0x7C00 });
    let mut bad = _mm_setzero_si128();
    for (b, xb) in buf.iter_mut().enumerate().take(n) {
        for k in 0..4 {
            let at = 64 * b + 16 * k;
            let h = _mm_loadu_si128(src[at..at + 16].as_ptr() as *const __m128i);
            bad = _mm_or_si128(bad, _mm_cmpeq_epi16(_mm_and_si128(h, exp), exp));
            let v = if bf16 {
                _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
            } else {
                _mm256_cvtph_ps(h)
            };
            _mm256_storeu_ps(xb[8 * k..8 * k + 8].as_mut_ptr(), v);
        }
    }
    _mm_testz_si128(bad, bad) != 0
}

/// Q8_0 / Q4_0 of stored F16 / BF16 values: decode and check 8 blocks, then
/// the across-block kernel (no NaN can be there), the tail block by block.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn from_half_x8<B>(
    src: &[u8],
    bf16: bool,
    y: &mut [B],
    x8: unsafe fn(&[[f32; 32]; 8], &mut [B; 8]),
    tail: unsafe fn(&[[f32; 32]], &mut [B]),
) -> bool {
    let mut buf = [[0f32; 32]; 8];
    for (s, yb) in src.chunks(512).zip(y.chunks_mut(8)) {
        let n = yb.len().min(s.len() / 64);
        if !decode_half_blocks(s, bf16, &mut buf, n) {
            return false;
        }
        match <&mut [B; 8]>::try_from(&mut *yb) {
            Ok(y8) => x8(&buf, y8),
            Err(_) => tail(&buf[..n], &mut yb[..n]),
        }
    }
    true
}

/// BF16 → F16 in one pass (F16C rounds to nearest even like ggml, NaN aside:
/// `false` as soon as a value is NaN or infinite, the rest of `dst` unspecified).
#[target_feature(enable = "avx2,f16c")]
unsafe fn bf16_to_f16_row(src: &[u8], dst: &mut [u8]) -> bool {
    let n = src.len().min(dst.len()) / 2;
    let body = n - n % 64;
    let exp = _mm_set1_epi16(0x7F80);
    for i in (0..body).step_by(64) {
        let mut bad = _mm_setzero_si128();
        for k in 0..8 {
            let at = 2 * (i + 8 * k);
            let h = _mm_loadu_si128(src[at..at + 16].as_ptr() as *const __m128i);
            bad = _mm_or_si128(bad, _mm_cmpeq_epi16(_mm_and_si128(h, exp), exp));
            let v = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)));
            let f = _mm256_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT }>(v);
            _mm_storeu_si128(dst[at..at + 16].as_mut_ptr() as *mut __m128i, f);
        }
        if _mm_testz_si128(bad, bad) == 0 {
            return false;
        }
    }
    Scalar.bf16_to_f16_row(&src[2 * body..2 * n], &mut dst[2 * body..2 * n])
}

#[target_feature(enable = "avx2,f16c")]
unsafe fn first_non_finite(x: &[f32]) -> Option<usize> {
    let exp = _mm256_set1_epi32(0x7F80_0000);
    let body = x.len() - x.len() % 32;
    for i in (0..body).step_by(32) {
        let p = x[i..i + 32].as_ptr();
        let mut any = _mm256_setzero_si256();
        for k in 0..4 {
            let v = _mm256_and_si256(_mm256_loadu_si256(p.add(8 * k) as *const __m256i), exp);
            any = _mm256_or_si256(any, _mm256_cmpeq_epi32(v, exp));
        }
        if _mm256_testz_si256(any, any) == 0 {
            return Scalar.first_non_finite(&x[i..i + 32]).map(|j| i + j);
        }
    }
    Scalar.first_non_finite(&x[body..]).map(|j| body + j)
}

/// The blocks' scalar loops, compiled with AVX2 (same arithmetic, no FMA).
#[target_feature(enable = "avx2,f16c")]
unsafe fn dequantize<B: Block<QK>, const QK: usize>(x: &[B], y: &mut [[f32; QK]]) {
    for (xb, yb) in x.iter().zip(y) {
        xb.dequantize(yb);
    }
}

/// [`super::error_sums`] on AVX2: lanes 0–3 and 4–7 are two vectors of f64,
/// with the same operations per lane in the same order (no FMA), the tail and
/// the combination done by the scalar code.
#[target_feature(enable = "avx2,f16c")]
unsafe fn error_sums(reference: &[f32], decoded: &[f32]) -> [f64; 3] {
    let n = reference.len().min(decoded.len());
    let body = n - n % 8;
    let abs_mask = _mm256_castsi256_pd(_mm256_set1_epi64x(i64::MAX));
    let (mut err_lo, mut err_hi) = (_mm256_setzero_pd(), _mm256_setzero_pd());
    let (mut ref_lo, mut ref_hi) = (_mm256_setzero_pd(), _mm256_setzero_pd());
    let (mut max_lo, mut max_hi) = (_mm256_setzero_pd(), _mm256_setzero_pd());
    for i in (0..body).step_by(8) {
        let x = _mm256_loadu_ps(reference[i..i + 8].as_ptr());
        let y = _mm256_loadu_ps(decoded[i..i + 8].as_ptr());
        let (a_lo, a_hi) = (_mm256_cvtps_pd(_mm256_castps256_ps128(x)), _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)));
        let (b_lo, b_hi) = (_mm256_cvtps_pd(_mm256_castps256_ps128(y)), _mm256_cvtps_pd(_mm256_extractf128_ps(y, 1)));
        let (d_lo, d_hi) = (_mm256_sub_pd(a_lo, b_lo), _mm256_sub_pd(a_hi, b_hi));
        err_lo = _mm256_add_pd(err_lo, _mm256_mul_pd(d_lo, d_lo));
        err_hi = _mm256_add_pd(err_hi, _mm256_mul_pd(d_hi, d_hi));
        ref_lo = _mm256_add_pd(ref_lo, _mm256_mul_pd(a_lo, a_lo));
        ref_hi = _mm256_add_pd(ref_hi, _mm256_mul_pd(a_hi, a_hi));
        // max_pd(x, m) is `x > m ? x : m`, the scalar code's select.
        max_lo = _mm256_max_pd(_mm256_and_pd(d_lo, abs_mask), max_lo);
        max_hi = _mm256_max_pd(_mm256_and_pd(d_hi, abs_mask), max_hi);
    }
    let lanes = |lo: __m256d, hi: __m256d| {
        let mut v = [0f64; 8];
        _mm256_storeu_pd(v[..4].as_mut_ptr(), lo);
        _mm256_storeu_pd(v[4..].as_mut_ptr(), hi);
        v
    };
    super::error_sums_from(
        lanes(err_lo, err_hi),
        lanes(ref_lo, ref_hi),
        lanes(max_lo, max_hi),
        &reference[body..n],
        &decoded[body..n],
    )
}

// ------------------------------------------------------------------ Kernels

// SAFETY (every method): an `Avx2` value exists only when `Avx2::new` saw
// AVX2 and F16C on this CPU, which is all the called functions require; the
// slices they read and write are bounds-checked (the vector loads and stores
// go through sub-slices of the exact length).
impl Kernels for Avx2 {
    fn qkx<const N: usize, const M: usize>(
        self,
        p: &QkxSearch,
        v3: bool,
        x: &[[f32; N]; M],
        w: &[[f32; N]; M],
        l: &mut [[u8; N]; M],
        scales: &mut [f32; M],
        mins: &mut [f32; M],
    ) {
        if !N.is_multiple_of(8) || !M.is_multiple_of(8) {
            return Scalar.qkx(p, v3, x, w, l, scales, mins);
        }
        let mut g = 0;
        while g < M {
            // 32 or 16 groups on AVX-512 unless a value is not finite
            // SAFETY: `avx512` is only set on a CPU with AVX-512; `g + 16·B <= M`.
            if self.avx512 && g + 32 <= M && unsafe { super::avx512::qkx::<N, M, 2>(p, v3, x, w, l, scales, mins, g) } {
                g += 32;
                continue;
            }
            if self.avx512 && g + 16 <= M && unsafe { super::avx512::qkx::<N, M, 1>(p, v3, x, w, l, scales, mins, g) } {
                g += 16;
                continue;
            }
            // SAFETY: see the impl comment.
            unsafe {
                let (xl, wl) = (lanes(x, g), lanes(w, g));
                let (lv, s, m) = qkx8(p, v3, &xl, &wl);
                store_levels(&lv, l, g);
                _mm256_storeu_ps(scales[g..g + 8].as_mut_ptr(), s);
                _mm256_storeu_ps(mins[g..g + 8].as_mut_ptr(), m);
            }
            g += 8;
        }
    }

    fn qx<const N: usize, const M: usize>(
        self,
        nmax: i32,
        x: &[[f32; N]; M],
        w: &[[f32; N]; M],
        l: &mut [[u8; N]; M],
        scales: &mut [f32; M],
    ) {
        if !N.is_multiple_of(8) || !M.is_multiple_of(8) {
            return Scalar.qx(nmax, x, w, l, scales);
        }
        let mut g = 0;
        while g < M {
            // SAFETY: as in `qkx`.
            if self.avx512 && g + 16 <= M && unsafe { super::avx512::qx(nmax, x, w, l, scales, g) } {
                g += 16;
                continue;
            }
            // SAFETY: see the impl comment.
            unsafe {
                let (xl, wl) = (lanes(x, g), lanes(w, g));
                let (lv, s) = qx8(nmax, &xl, &wl);
                store_levels(&lv, l, g);
                _mm256_storeu_ps(scales[g..g + 8].as_mut_ptr(), s);
            }
            g += 8;
        }
    }

    fn q3<const N: usize, const M: usize>(
        self,
        nmax: i32,
        x: &[[f32; N]; M],
        l: &mut [[u8; N]; M],
        scales: &mut [f32; M],
    ) {
        if !N.is_multiple_of(8) || !M.is_multiple_of(8) {
            return Scalar.q3(nmax, x, l, scales);
        }
        for g in (0..M).step_by(8) {
            // SAFETY: see the impl comment.
            unsafe {
                let xl = lanes(x, g);
                let (lv, s) = q3_8(nmax, &xl);
                store_levels(&lv, l, g);
                _mm256_storeu_ps(scales[g..g + 8].as_mut_ptr(), s);
            }
        }
    }

    fn requantize<const N: usize>(self, x: &[f32; N], add: f32, d: f32, lo: i32, hi: i32, off: i32, l: &mut [u8; N]) {
        if !N.is_multiple_of(16) {
            return Scalar.requantize(x, add, d, lo, hi, off, l);
        }
        // SAFETY: see the impl comment.
        unsafe { requantize(x, add, d, lo, hi, off, l) }
    }

    fn iq4_scales<const M: usize>(self, x: &[[f32; 32]; M], w: &[[f32; 32]; M], scales: &mut [f32; M]) {
        if !M.is_multiple_of(8) {
            return Scalar.iq4_scales(x, w, scales);
        }
        for g in (0..M).step_by(8) {
            // SAFETY: see the impl comment.
            unsafe {
                let d = iq4_search8(&lanes(x, g), &lanes(w, g));
                _mm256_storeu_ps(scales[g..g + 8].as_mut_ptr(), d);
            }
        }
    }

    fn iq4_indices(self, x: &[f32; 32], id: f32, qs: &mut [u8; 16]) {
        // SAFETY: see the impl comment.
        unsafe { iq4_indices(x, id, qs) }
    }

    fn f32_to_f16_row(self, src: &[f32], dst: &mut [u8]) {
        // SAFETY: see the impl comment.
        unsafe { f32_to_f16_row(src, dst) }
    }
    fn f32_to_bf16_row(self, src: &[f32], dst: &mut [u8]) {
        // SAFETY: see the impl comment.
        unsafe { f32_to_bf16_row(src, dst) }
    }
    fn f16_to_f32_row(self, src: &[u8], dst: &mut [f32]) {
        // SAFETY: see the impl comment.
        unsafe { f16_to_f32_row(src, dst) }
    }
    fn bf16_to_f32_row(self, src: &[u8], dst: &mut [f32]) {
        // SAFETY: see the impl comment.
        unsafe { bf16_to_f32_row(src, dst) }
    }
    fn q8_0_from_half(self, src: &[u8], bf16: bool, y: &mut [BlockQ8_0]) -> bool {
        // SAFETY: see the impl comment.
        unsafe { from_half_x8(src, bf16, y, q8_0_x8, q8_0_blocks) }
    }
    fn q4_0_from_half(self, src: &[u8], bf16: bool, y: &mut [BlockQ4_0]) -> bool {
        // SAFETY: see the impl comment.
        unsafe { from_half_x8(src, bf16, y, q4_0_x8, q4_0_blocks) }
    }
    fn bf16_to_f16_row(self, src: &[u8], dst: &mut [u8]) -> bool {
        // SAFETY: see the impl comment.
        unsafe { bf16_to_f16_row(src, dst) }
    }
    fn first_non_finite(self, x: &[f32]) -> Option<usize> {
        // SAFETY: see the impl comment.
        unsafe { first_non_finite(x) }
    }
    fn dequantize<B: Block<QK>, const QK: usize>(self, x: &[B], y: &mut [[f32; QK]]) {
        // SAFETY: see the impl comment.
        unsafe { dequantize(x, y) }
    }
    fn error_sums(self, reference: &[f32], decoded: &[f32]) -> [f64; 3] {
        // SAFETY: see the impl comment.
        unsafe { error_sums(reference, decoded) }
    }
    fn q8_0_blocks(self, x: &[[f32; 32]], y: &mut [BlockQ8_0]) {
        // SAFETY: see the impl comment.
        unsafe { q8_0_blocks(x, y) }
    }
    fn q4_0_blocks(self, x: &[[f32; 32]], y: &mut [BlockQ4_0]) {
        // SAFETY: see the impl comment.
        unsafe { q4_0_blocks(x, y) }
    }
    fn q4_1_blocks(self, x: &[[f32; 32]], y: &mut [BlockQ4_1]) {
        // SAFETY: see the impl comment.
        unsafe { q4_1_blocks(x, y) }
    }
    fn q5_0_blocks(self, x: &[[f32; 32]], y: &mut [BlockQ5_0]) {
        // SAFETY: see the impl comment.
        unsafe { q5_0_blocks(x, y) }
    }
    fn q5_1_blocks(self, x: &[[f32; 32]], y: &mut [BlockQ5_1]) {
        // SAFETY: see the impl comment.
        unsafe { q5_1_blocks(x, y) }
    }
}
