//! The scale searches shared by the k-quants, the imatrix paths of the legacy
//! types and IQ4 (`make_qx_quants`, `make_q3_quants`, `make_qkx2_quants`,
//! `make_qkx3_quants`, `make_qp_quants`, `best_index_int8` in ggml-quants.c),
//! plus the two integer conversions whose exact behaviour decides bits.
//!
//! Every float expression keeps the C code's evaluation order and types
//! (`w*x*l` is `(w*x)*l`, ints are converted to f32 where C converts them) and
//! never fuses a multiply and an add; ties and "first maximum" rules are the
//! C code's. The sub-block length is a const generic so loops run over fixed
//! arrays without bounds checks.

/// ggml's `GROUP_MAX_EPS`: groups whose largest magnitude is below this are all zero.
pub const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `nearest_int`: round half to even through the 1.5·2^23 trick.
///
/// For |x| ≤ 4194303 this is `x.round_ties_even() as i32`; outside that range
/// (which ggml only asserts against in debug builds) it returns the same
/// wrapped value the release build computes, so even degenerate inputs give
/// ggml's bytes.
#[inline(always)]
pub fn nearest_int(x: f32) -> i32 {
    let v = x + 12582912.0;
    (v.to_bits() as i32 & 0x007F_FFFF) - 0x0040_0000
}

/// A C float → int conversion as the x86-64 build executes it (`cvttss2si`):
/// truncation toward zero, and `i32::MIN` for NaN and out-of-range values
/// (where Rust's `as` would saturate). Narrowing C casts such as `(int8_t)f`
/// then keep the low bits: `trunc_i32(f) as i8`.
#[inline(always)]
pub fn trunc_i32(x: f32) -> i32 {
    if (-2147483648.0..2147483648.0).contains(&x) {
        x as i32
    } else {
        i32::MIN
    }
}

/// The largest |x| as C's `MAX(amax, fabsf(v))` computes it from 0
/// (NaN-propagating, unlike [`first_abs_max`]).
#[inline(always)]
pub fn amax_macro(x: &[f32]) -> f32 {
    let mut amax = 0.0f32;
    for &v in x {
        let a = v.abs();
        amax = if amax > a { amax } else { a };
    }
    amax
}

/// The value of the first element with the largest magnitude, and that
/// magnitude (`if (ax > amax) { amax = ax; max = x[i]; }` from 0).
#[inline(always)]
pub fn first_abs_max(x: &[f32]) -> (f32, f32) {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    (amax, max)
}

/// `make_qx_quants(N, nmax, x, L, rmse_type = 1, weights)`: symmetric quants
/// `L - nmax` in `[-nmax, nmax-1]` with the least-squares scale, trying 18
/// perturbed inverse scales. Returns the scale; `l_out` gets `L` in `[0, 2·nmax)`.
///
/// Without an importance matrix ggml passes `weights = NULL` and uses x², which
/// callers pass here as an array (the same f32 values).
pub fn make_qx_quants<const N: usize>(nmax: i32, x: &[f32; N], weights: &[f32; N], l_out: &mut [u8; N]) -> f32 {
    let (amax, max) = first_abs_max(x);
    if amax < GROUP_MAX_EPS {
        *l_out = [0; N];
        return 0.0;
    }
    let nmax_f = nmax as f32;
    let mut iscale = -nmax_f / max;
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for i in 0..N {
        let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        l_out[i] = (l + nmax) as u8;
        let w = weights[i];
        let lf = l as f32;
        sumlx += w * x[i] * lf;
        suml2 += w * lf * lf;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax_f + 0.1f32 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for i in 0..N {
            let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
            let w = weights[i];
            let lf = l as f32;
            sumlx += w * x[i] * lf;
            suml2 += w * lf * lf;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for i in 0..N {
                let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
                l_out[i] = (l + nmax) as u8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// `make_q3_quants(N, nmax, x, L, do_rmse = true)`: symmetric quants refined
/// one element at a time (up to 5 passes) with weights x². Returns the scale;
/// `l_out` gets `l + nmax` in `[0, 2·nmax)`.
pub fn make_q3_quants<const N: usize>(nmax: i32, x: &[f32; N], l_out: &mut [u8; N]) -> f32 {
    let (amax, max) = first_abs_max(x);
    if amax < GROUP_MAX_EPS {
        *l_out = [0; N];
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let mut l_cur = [0i32; N];
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for i in 0..N {
        let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        l_cur[i] = l;
        let w = x[i] * x[i];
        let lf = l as f32;
        sumlx += w * x[i] * lf;
        suml2 += w * lf * lf;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for i in 0..N {
            let w = x[i] * x[i];
            let li = l_cur[i] as f32;
            let mut slx = sumlx - w * x[i] * li;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * li * li;
                let new_l = nearest_int(x[i] * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != l_cur[i] {
                    let nl = new_l as f32;
                    slx += w * x[i] * nl;
                    sl2 += w * nl * nl;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l_cur[i] = new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    for i in 0..N {
        l_out[i] = (l_cur[i] + nmax) as u8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// Parameters of the asymmetric (scale + min) grid search.
#[derive(Clone, Copy, Debug)]
pub struct QkxSearch {
    pub nmax: i32,
    pub rmin: f32,
    pub rdelta: f32,
    pub nstep: i32,
    /// Minimise Σw·|err| instead of Σw·err².
    pub use_mad: bool,
}

/// Error of one candidate (`Σ w·|s·L + m − x|` or `Σ w·(s·L + m − x)²`).
#[inline(always)]
fn qkx_error<const N: usize>(scale: f32, min: f32, l: &[u8; N], x: &[f32; N], weights: &[f32; N], mad: bool) -> f32 {
    let mut err = 0.0f32;
    for i in 0..N {
        let diff = scale * l[i] as f32 + min - x[i];
        let diff = if mad { diff.abs() } else { diff * diff };
        err += weights[i] * diff;
    }
    err
}

/// One step of the grid: quantize with `iscale` into `laux` and solve the
/// weighted least-squares scale and min. `None` when the system is singular.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn qkx_fit<const N: usize>(
    p: &QkxSearch,
    iscale: f32,
    min: f32,
    x: &[f32; N],
    weights: &[f32; N],
    sum_w: f32,
    sum_x: f32,
    laux: &mut [u8; N],
) -> Option<(f32, f32)> {
    let mut sum_l = 0.0f32;
    let mut sum_l2 = 0.0f32;
    let mut sum_xl = 0.0f32;
    for i in 0..N {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, p.nmax);
        laux[i] = l as u8;
        let w = weights[i];
        let lf = l as f32;
        sum_l += w * lf;
        sum_l2 += w * lf * lf;
        sum_xl += w * lf * x[i];
    }
    let d = sum_w * sum_l2 - sum_l * sum_l;
    if d > 0.0 {
        let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
        let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
        if this_min > 0.0 {
            this_min = 0.0;
            this_scale = sum_xl / sum_l2;
        }
        Some((this_scale, this_min))
    } else {
        None
    }
}

/// The common start of make_qkx2/3_quants: min (capped at 0), max, Σw and
/// Σw·x, accumulated in the reference's order.
#[inline(always)]
fn weighted_range<const N: usize>(x: &[f32; N], weights: &[f32; N]) -> (f32, f32, f32, f32) {
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..N {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    (min, max, sum_w, sum_x)
}

/// `make_qkx2_quants`: asymmetric quants `L` in `[0, nmax]` with `x ≈ scale·L − the_min`.
/// Returns `(scale, the_min)`.
pub fn make_qkx2_quants<const N: usize>(
    p: &QkxSearch,
    x: &[f32; N],
    weights: &[f32; N],
    l_out: &mut [u8; N],
    laux: &mut [u8; N],
) -> (f32, f32) {
    let (min, max, sum_w, sum_x) = weighted_range(x, weights);
    if max == min {
        *l_out = [0; N];
        return (0.0, -min);
    }
    qkx_refine(p, x, weights, l_out, laux, min, max, sum_w, sum_x)
}

/// `make_qkx3_quants` with explicit weights: like [`make_qkx2_quants`] but
/// degenerate when `max <= min`.
pub fn make_qkx3_quants<const N: usize>(
    p: &QkxSearch,
    x: &[f32; N],
    weights: &[f32; N],
    l_out: &mut [u8; N],
    laux: &mut [u8; N],
) -> (f32, f32) {
    let (min, max, sum_w, sum_x) = weighted_range(x, weights);
    if max <= min {
        *l_out = [0; N];
        return (0.0, -min);
    }
    qkx_refine(p, x, weights, l_out, laux, min, max, sum_w, sum_x)
}

/// The part of make_qkx2/3_quants after the range is known: the initial
/// quantization, then `nstep + 1` grid points keeping the lowest error.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn qkx_refine<const N: usize>(
    p: &QkxSearch,
    x: &[f32; N],
    weights: &[f32; N],
    l_out: &mut [u8; N],
    laux: &mut [u8; N],
    mut min: f32,
    max: f32,
    sum_w: f32,
    sum_x: f32,
) -> (f32, f32) {
    let iscale = p.nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    for i in 0..N {
        l_out[i] = nearest_int(iscale * (x[i] - min)).clamp(0, p.nmax) as u8;
    }
    let mut best_error = qkx_error(scale, min, l_out, x, weights, p.use_mad);
    if p.nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=p.nstep {
        let iscale = (p.rmin + p.rdelta * is as f32 + p.nmax as f32) / (max - min);
        if let Some((this_scale, this_min)) = qkx_fit(p, iscale, min, x, weights, sum_w, sum_x, laux) {
            let cur_error = qkx_error(this_scale, this_min, laux, x, weights, p.use_mad);
            if cur_error < best_error {
                *l_out = *laux;
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// `make_qp_quants`: quantize non-negative values (sub-block scales or mins)
/// to `[0, nmax]` with weights, a 9-point scale search and up to 5 refinement
/// passes. Returns the scale; `l_out` gets the quants.
pub fn make_qp_quants<const N: usize>(nmax: i32, x: &[f32; N], l_out: &mut [u8; N], quant_weights: &[f32; N]) -> f32 {
    let mut max = 0.0f32;
    for &v in x {
        max = if max > v { max } else { v };
    }
    if max < GROUP_MAX_EPS {
        *l_out = [0; N];
        return 0.0;
    }
    let nmax_f = nmax as f32;
    let mut iscale = nmax_f / max;
    for i in 0..N {
        l_out[i] = nearest_int(iscale * x[i]) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0.0f32;
    for i in 0..N {
        let diff = x[i] - scale * l_out[i] as f32;
        let w = quant_weights[i];
        best_mse += w * diff * diff;
    }
    for is in -4..=4 {
        if is == 0 {
            continue;
        }
        let iscale_is = (0.1f32 * is as f32 + nmax_f) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0.0f32;
        for i in 0..N {
            let l = nearest_int(iscale_is * x[i]).min(nmax);
            let diff = x[i] - scale_is * l as f32;
            let w = quant_weights[i];
            mse += w * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for i in 0..N {
        let l = nearest_int(iscale * x[i]).min(nmax);
        l_out[i] = l as u8;
        let w = quant_weights[i];
        let lf = l as f32;
        sumlx += w * x[i] * lf;
        suml2 += w * lf * lf;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for i in 0..N {
            let w = quant_weights[i];
            let li = l_out[i] as f32;
            let mut slx = sumlx - w * x[i] * li;
            let mut sl2 = suml2 - w * li * li;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(x[i] * sl2 / slx).min(nmax);
                if new_l != l_out[i] as i32 {
                    let nl = new_l as f32;
                    slx += w * x[i] * nl;
                    sl2 += w * nl * nl;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l_out[i] = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// `best_index_int8`: the index of the table value nearest to `x` (a sorted
/// table; on an exact midpoint the upper one), by bisection as ggml does it.
#[inline(always)]
pub fn best_index_int8(values: &[i8; 16], x: f32) -> usize {
    if x <= values[0] as f32 {
        return 0;
    }
    if x >= values[15] as f32 {
        return 15;
    }
    let mut ml = 0usize;
    let mut mu = 15usize;
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < values[mav] as f32 {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - (values[mu - 1] as f32) < (values[mu] as f32) - x {
        mu - 1
    } else {
        mu
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_is_ties_to_even_in_range() {
        for (x, want) in [(0.5f32, 0), (1.5, 2), (2.5, 2), (-0.5, 0), (-1.5, -2), (-2.5, -2), (3.4999, 3), (-7.6, -8)] {
            assert_eq!(nearest_int(x), want, "{x}");
        }
        let mut x = -4194303.0f32;
        while x <= 4194303.0 {
            assert_eq!(nearest_int(x), x.round_ties_even() as i32, "{x}");
            x += 0.37 + x.abs() * 1e-3;
        }
        // out of range: the same wrap-around as the C trick, never a panic
        let _ = nearest_int(f32::NAN);
        let _ = nearest_int(f32::INFINITY);
        let _ = nearest_int(-1e30);
        assert_eq!(nearest_int(4194304.0), -4194304);
    }

    #[test]
    fn trunc_is_cvttss2si() {
        assert_eq!(trunc_i32(8.99), 8);
        assert_eq!(trunc_i32(-0.99), 0);
        assert_eq!(trunc_i32(-1.5), -1);
        assert_eq!(trunc_i32(f32::NAN), i32::MIN);
        assert_eq!(trunc_i32(f32::INFINITY), i32::MIN);
        assert_eq!(trunc_i32(3e9), i32::MIN);
        assert_eq!(trunc_i32(-2147483648.0), i32::MIN);
        assert_eq!(trunc_i32(2147483520.0), 2147483520);
        assert_eq!(trunc_i32(200.7) as i8, -56);
    }

    #[test]
    fn best_index_picks_nearest() {
        let v: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];
        for xi in -1500..1500 {
            let x = xi as f32 * 0.1;
            let got = best_index_int8(&v, x);
            let best = (0..16)
                .min_by(|&a, &b| (v[a] as f32 - x).abs().partial_cmp(&(v[b] as f32 - x).abs()).unwrap())
                .unwrap();
            assert_eq!((v[got] as f32 - x).abs(), (v[best] as f32 - x).abs(), "{x}");
        }
        assert_eq!(best_index_int8(&v, -4.5), 8); // exact midpoint of -10 and 1: upper
        assert_eq!(best_index_int8(&v, f32::NAN), 15);
    }

    #[test]
    fn searches_handle_degenerate_groups() {
        let x = [0.0f32; 16];
        let w = [1.0f32; 16];
        let mut l = [9u8; 16];
        let mut aux = [0u8; 16];
        assert_eq!(make_qx_quants(32, &x, &w, &mut l), 0.0);
        assert_eq!(l, [0; 16]);
        assert_eq!(make_q3_quants(4, &x, &mut l), 0.0);
        let p = QkxSearch { nmax: 3, rmin: -0.5, rdelta: 0.1, nstep: 15, use_mad: true };
        assert_eq!(make_qkx2_quants(&p, &x, &w, &mut l, &mut aux), (0.0, -0.0));
        let c = [2.0f32; 16];
        // constant positive: min clamps to 0, so a proper scale exists
        let (s, m) = make_qkx2_quants(&p, &c, &w, &mut l, &mut aux);
        assert!(s > 0.0 && m == 0.0, "{s} {m}");
        assert_eq!(make_qp_quants(15, &x, &mut l, &w), 0.0);
    }

    #[test]
    fn qx_quants_reconstruct_a_grid_exactly() {
        // values on an exact grid come back with their integer levels
        let mut x = [0f32; 16];
        for (i, v) in x.iter_mut().enumerate() {
            *v = (i as f32 - 8.0) * 0.25;
        }
        let w = x.map(|v| v * v);
        let mut l = [0u8; 16];
        let d = make_qx_quants(8, &x, &w, &mut l);
        for i in 0..16 {
            assert_eq!((l[i] as f32 - 8.0) * d, x[i]);
        }
    }
}
