//! The k-quants: super-blocks of 256 values with quantized sub-block scales
//! (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K), and Q8_K (dequantize only).
//!
//! Each type has two quantization paths, as `quantize_q*_K` chooses:
//! without an importance matrix the `quantize_row_q*_K_ref` kernel, with one
//! the `quantize_row_q*_K_impl` kernel (weights `imatrix · sqrt(σ² + x²)`
//! with σ² the super-block's mean square, or twice it; Q6_K uses the imatrix
//! directly). Both end the same way: the super-block scale(s) are stored as
//! fp16 and every value is requantized against the *rounded* scale, with a
//! division (`nearest_int((x + dm) / d)`) as in the C code.

use bytemuck::{Pod, Zeroable};

use super::float::Half;
use super::search::{first_abs_max, make_qp_quants, make_qx_quants, nearest_int, QkxSearch, GROUP_MAX_EPS};
use super::simd::{Kernels, Scalar};
use super::{Block, Quantize, QK_K};
use crate::gguf::GgmlType;

/// Views a super-block as `M` sub-blocks of `N` values (`N · M = 256`).
#[inline(always)]
fn sub_blocks<T: Pod, const N: usize, const M: usize>(x: &[T; QK_K]) -> &[[T; N]; M] {
    bytemuck::cast_ref(x)
}

#[inline(always)]
fn sub_blocks_mut<T: Pod, const N: usize, const M: usize>(x: &mut [T; QK_K]) -> &mut [[T; N]; M] {
    bytemuck::cast_mut(x)
}

/// Σx² over the super-block, in order.
#[inline(always)]
fn sum_squares(x: &[f32; QK_K]) -> f32 {
    let mut s = 0.0f32;
    for &v in x {
        s += v * v;
    }
    s
}

/// Imatrix weights `qw · sqrt(σ² + x²)` of one sub-block, and their sum.
#[inline(always)]
fn imatrix_weights<const N: usize>(x: &[f32; N], qw: &[f32; N], sigma2: f32) -> ([f32; N], f32) {
    let mut w = [0.0f32; N];
    let mut sum = 0.0f32;
    for l in 0..N {
        w[l] = qw[l] * (sigma2 + x[l] * x[l]).sqrt();
    }
    for &v in &w {
        sum += v;
    }
    (w, sum)
}

/// Runs the per-super-block imatrix kernel over a row.
#[inline(always)]
fn per_block_imatrix<B>(
    x: &[[f32; QK_K]],
    imatrix: &[[f32; QK_K]],
    y: &mut [B],
    f: impl Fn(&[f32; QK_K], &[f32; QK_K]) -> B,
) {
    for ((xb, qw), yb) in x.iter().zip(imatrix).zip(y) {
        *yb = f(xb, qw);
    }
}

/// The `Quantize` methods of a k-quant, each forwarding to the type's
/// kernel-generic functions (`quantize_ref`, `quantize_imatrix`) with the
/// scalar kernels or with the kernels given.
macro_rules! kquant_entry_points {
    () => {
        kquant_entry_points!(blocks);
        fn quantize_blocks_with<K: Kernels>(x: &[[f32; QK_K]], y: &mut [Self], k: K) {
            for (xb, yb) in x.iter().zip(y.iter_mut()) {
                *yb = Self::quantize_ref(xb, k);
            }
        }
    };
    // without `quantize_blocks_with` (the type defines its own)
    (blocks) => {
        fn quantize(x: &[f32; QK_K]) -> Self {
            Self::quantize_ref(x, Scalar)
        }
        fn quantize_row_imatrix(x: &[[f32; QK_K]], imatrix: &[[f32; QK_K]], y: &mut [Self]) {
            Self::quantize_imatrix(x, imatrix, y, Scalar)
        }
        fn quantize_row_imatrix_with<K: Kernels>(x: &[[f32; QK_K]], imatrix: &[[f32; QK_K]], y: &mut [Self], k: K) {
            Self::quantize_imatrix(x, imatrix, y, k)
        }
    };
}

/// Packs 2-bit values: byte `32·c + l` holds values `128·c + l + 32·k` at bits `2k`.
#[inline(always)]
fn pack_2bit(l: &[u8; QK_K]) -> [u8; 64] {
    let mut qs = [0u8; 64];
    for c in 0..2 {
        for i in 0..32 {
            let j = 128 * c + i;
            qs[32 * c + i] = l[j] | (l[j + 32] << 2) | (l[j + 64] << 4) | (l[j + 96] << 6);
        }
    }
    qs
}

// ---------------------------------------------------------------- Q2_K

/// `block_q2_K`: 16 sub-blocks of 16; x = d·sc·q − dmin·m with 4-bit sc and m.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ2K {
    pub scales: [u8; 16],
    pub qs: [u8; 64],
    pub d: Half,
    pub dmin: Half,
}

impl BlockQ2K {
    /// Requantizes with the stored (fp16) scales and packs. Sub-blocks whose
    /// scale is 0 keep the levels of the search.
    fn finish<K: Kernels>(x: &[f32; QK_K], l: &mut [u8; QK_K], scales: [u8; 16], d: Half, dmin: Half, k: K) -> Self {
        let (dm, mm) = (d.to_f32(), dmin.to_f32());
        let xs = sub_blocks::<f32, 16, 16>(x);
        let ls = sub_blocks_mut::<u8, 16, 16>(l);
        for j in 0..16 {
            let d = dm * (scales[j] & 0xF) as f32;
            if d == 0.0 {
                continue;
            }
            let m = mm * (scales[j] >> 4) as f32;
            // nearest_int((x + m) / d) clamped to 0..=3
            k.requantize(&xs[j], m, d, 0, 3, 0, &mut ls[j]);
        }
        BlockQ2K { scales, qs: pack_2bit(l), d, dmin }
    }
}

impl Block<QK_K> for BlockQ2K {
    const TYPE: GgmlType = GgmlType::Q2_K;
    #[inline]
    fn dequantize(&self, y: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        let min = self.dmin.to_f32();
        let ys = sub_blocks_mut::<f32, 16, 16>(y);
        // sub-block s = 8c + 2k + h holds bits 2k of bytes 32c + 16h ..
        for (s, ysub) in ys.iter_mut().enumerate() {
            let sc = self.scales[s];
            let dl = d * (sc & 0xF) as f32;
            let ml = min * (sc >> 4) as f32;
            let (c, k, h) = (s / 8, (s % 8) / 2, s % 2);
            let q = &self.qs[32 * c + 16 * h..32 * c + 16 * h + 16];
            for (l, v) in ysub.iter_mut().enumerate() {
                *v = dl * ((q[l] >> (2 * k)) & 3) as f32 - ml;
            }
        }
    }
}

impl Quantize<QK_K> for BlockQ2K {
    kquant_entry_points!();
}

impl BlockQ2K {
    /// `quantize_row_q2_K_ref`
    fn quantize_ref<K: Kernels>(x: &[f32; QK_K], k: K) -> Self {
        const SEARCH: QkxSearch = QkxSearch { nmax: 3, rmin: -0.5, rdelta: 0.1, nstep: 15, use_mad: true };
        let xs = sub_blocks::<f32, 16, 16>(x);
        let mut l = [0u8; QK_K];
        let mut scales = [0f32; 16];
        let mut mins = [0f32; 16];
        let mut max_scale = 0.0f32;
        let mut max_min = 0.0f32;
        // make_qkx2_quants(16, 3, x, w = |x|, -0.5, 0.1, 15, use_mad) per sub-block
        let w = map_values(xs, f32::abs);
        k.qkx(&SEARCH, false, xs, &w, sub_blocks_mut::<u8, 16, 16>(&mut l), &mut scales, &mut mins);
        for j in 0..16 {
            if scales[j] > max_scale {
                max_scale = scales[j];
            }
            if mins[j] > max_min {
                max_min = mins[j];
            }
        }
        let mut sc = [0u8; 16];
        let d = if max_scale > 0.0 {
            let iscale = 15.0 / max_scale;
            for j in 0..16 {
                sc[j] = nearest_int(iscale * scales[j]) as u8;
            }
            Half::from_f32(max_scale / 15.0)
        } else {
            Half::from_f32(0.0)
        };
        let dmin = if max_min > 0.0 {
            let iscale = 15.0 / max_min;
            for j in 0..16 {
                sc[j] = (sc[j] as i32 | (nearest_int(iscale * mins[j]) << 4)) as u8;
            }
            Half::from_f32(max_min / 15.0)
        } else {
            Half::from_f32(0.0)
        };
        Self::finish(x, &mut l, sc, d, dmin, k)
    }

    /// `quantize_row_q2_K_impl`
    fn quantize_imatrix<K: Kernels>(x: &[[f32; QK_K]], imatrix: &[[f32; QK_K]], y: &mut [Self], k: K) {
        const SEARCH: QkxSearch = QkxSearch { nmax: 3, rmin: -0.9, rdelta: 0.05, nstep: 36, use_mad: false };
        per_block_imatrix(x, imatrix, y, |x, qw| {
            let sigma2 = sum_squares(x) / QK_K as f32;
            let xs = sub_blocks::<f32, 16, 16>(x);
            let qws = sub_blocks::<f32, 16, 16>(qw);
            let mut l = [0u8; QK_K];
            let mut scales = [0f32; 16];
            let mut mins = [0f32; 16];
            let mut sw = [0f32; 16];
            let mut w = [[0f32; 16]; 16];
            for j in 0..16 {
                (w[j], sw[j]) = imatrix_weights(&xs[j], &qws[j], sigma2);
            }
            // make_qkx3_quants per sub-block
            k.qkx(&SEARCH, true, xs, &w, sub_blocks_mut::<u8, 16, 16>(&mut l), &mut scales, &mut mins);
            let mut lsc = [0u8; 16];
            let mut lm = [0u8; 16];
            let dm = make_qp_quants(15, &scales, &mut lsc, &sw);
            let mm = make_qp_quants(15, &mins, &mut lm, &sw);
            let mut sc = [0u8; 16];
            for j in 0..16 {
                sc[j] = lsc[j] | (lm[j] << 4);
            }
            Self::finish(x, &mut l, sc, Half::from_f32(dm), Half::from_f32(mm), k)
        });
    }
}

// ---------------------------------------------------------------- Q3_K

/// `block_q3_K`: 16 sub-blocks of 16; x = d·(sc − 32)·(q − 4) with 6-bit sc,
/// 3-bit q split into 2 low bits (`qs`) and a high bit (`hmask`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ3K {
    pub hmask: [u8; 32],
    pub qs: [u8; 64],
    pub scales: [u8; 12],
    pub d: Half,
}

/// Stores the 6-bit scale `l` of sub-block `j`: low nibbles in bytes 0..8,
/// high 2 bits in bytes 8..12.
#[inline(always)]
fn q3_pack_scale(sc: &mut [u8; 12], j: usize, l: i32) {
    if j < 8 {
        sc[j] = (l & 0xF) as u8;
    } else {
        sc[j - 8] |= ((l & 0xF) << 4) as u8;
    }
    let h = l >> 4;
    sc[j % 4 + 8] |= (h << (2 * (j / 4))) as u8;
}

/// The signed scale of sub-block `j` (stored value − 32).
#[inline(always)]
fn q3_scale(sc: &[u8; 12], j: usize) -> i32 {
    let low = if j < 8 { sc[j] & 0xF } else { sc[j - 8] >> 4 };
    let high = (sc[8 + j % 4] >> (2 * (j / 4))) & 3;
    (low | (high << 4)) as i32 - 32
}

impl BlockQ3K {
    fn finish<K: Kernels>(x: &[f32; QK_K], l: &mut [u8; QK_K], scales: [u8; 12], d: Half, k: K) -> Self {
        let dall = d.to_f32();
        {
            let xs = sub_blocks::<f32, 16, 16>(x);
            let ls = sub_blocks_mut::<u8, 16, 16>(l);
            for j in 0..16 {
                let d = dall * q3_scale(&scales, j) as f32;
                if d == 0.0 {
                    continue;
                }
                // nearest_int(x / d) clamped to -4..=3, + 4 (x + 0 / d: the same value)
                k.requantize(&xs[j], 0.0, d, -4, 3, 4, &mut ls[j]);
            }
        }
        // high bit of value j goes to bit j/32 of hmask[j % 32]
        let mut hmask = [0u8; 32];
        // (branch-free: the high bit is set in about half of the values)
        for j in 0..QK_K {
            let high = (l[j] > 3) as u8;
            hmask[j % 32] |= high << (j / 32);
            l[j] -= 4 * high;
        }
        BlockQ3K { hmask, qs: pack_2bit(l), scales, d }
    }
}

impl Block<QK_K> for BlockQ3K {
    const TYPE: GgmlType = GgmlType::Q3_K;
    #[inline]
    fn dequantize(&self, y: &mut [f32; QK_K]) {
        let d_all = self.d.to_f32();
        let ys = sub_blocks_mut::<f32, 16, 16>(y);
        for (s, ysub) in ys.iter_mut().enumerate() {
            let dl = d_all * q3_scale(&self.scales, s) as f32;
            let (c, k, h) = (s / 8, (s % 8) / 2, s % 2);
            let q = &self.qs[32 * c + 16 * h..32 * c + 16 * h + 16];
            let hm = &self.hmask[16 * h..16 * h + 16];
            let bit = 1u8 << (4 * c + k);
            for (l, v) in ysub.iter_mut().enumerate() {
                let low = ((q[l] >> (2 * k)) & 3) as i32;
                let sub = if hm[l] & bit != 0 { 0 } else { 4 };
                *v = dl * (low - sub) as f32;
            }
        }
    }
}

impl Quantize<QK_K> for BlockQ3K {
    kquant_entry_points!();
}

impl BlockQ3K {
    /// `quantize_row_q3_K_ref`
    fn quantize_ref<K: Kernels>(x: &[f32; QK_K], k: K) -> Self {
        let xs = sub_blocks::<f32, 16, 16>(x);
        let mut l = [0u8; QK_K];
        let mut scales = [0f32; 16];
        // make_q3_quants(16, 4, x, L, true) per sub-block
        k.q3(4, xs, sub_blocks_mut::<u8, 16, 16>(&mut l), &mut scales);
        let (_, max_scale) = first_abs_max(&scales);
        let mut sc = [0u8; 12];
        let d = if max_scale != 0.0 {
            let iscale = -32.0 / max_scale;
            for j in 0..16 {
                // `int8_t l = nearest_int(...)`: narrowed before the clamp
                let q = (nearest_int(iscale * scales[j]) as i8 as i32).clamp(-32, 31) + 32;
                q3_pack_scale(&mut sc, j, q);
            }
            Half::from_f32(1.0 / iscale)
        } else {
            Half::from_f32(0.0)
        };
        Self::finish(x, &mut l, sc, d, k)
    }

    /// `quantize_row_q3_K_impl`
    fn quantize_imatrix<K: Kernels>(x: &[[f32; QK_K]], imatrix: &[[f32; QK_K]], y: &mut [Self], k: K) {
        per_block_imatrix(x, imatrix, y, |x, qw| {
            let sigma2 = 2.0 * sum_squares(x) / QK_K as f32;
            let xs = sub_blocks::<f32, 16, 16>(x);
            let qws = sub_blocks::<f32, 16, 16>(qw);
            let mut l = [0u8; QK_K];
            let mut scales = [0f32; 16];
            let mut sw = [0f32; 16];
            let mut w = [[0f32; 16]; 16];
            for j in 0..16 {
                (w[j], sw[j]) = imatrix_weights(&xs[j], &qws[j], sigma2);
            }
            // make_qx_quants(16, 4, x, L, 1, w) per sub-block
            k.qx(4, xs, &w, sub_blocks_mut::<u8, 16, 16>(&mut l), &mut scales);
            let mut lsc = [0u8; 16];
            let d_block = make_qx_quants(32, &scales, &sw, &mut lsc);
            let mut sc = [0u8; 12];
            for j in 0..16 {
                q3_pack_scale(&mut sc, j, lsc[j] as i32);
            }
            Self::finish(x, &mut l, sc, Half::from_f32(d_block), k)
        });
    }
}

// ---------------------------------------------------------------- Q4_K / Q5_K shared

/// Stores 6-bit scale `ls` and min `lm` of sub-block `j` (ggml's 12-byte
/// layout read back by [`get_scale_min_k4`]).
#[inline(always)]
fn pack_scale_min_k4(sc: &mut [u8; 12], j: usize, ls: u8, lm: u8) {
    if j < 4 {
        sc[j] = ls;
        sc[j + 4] = lm;
    } else {
        sc[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
        sc[j - 4] |= (ls >> 4) << 6;
        sc[j] |= (lm >> 4) << 6;
    }
}

/// ggml's `get_scale_min_k4`.
#[inline(always)]
pub fn get_scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// Requantizes 8 sub-blocks of 32 against the stored scales (levels 0..=nmax).
#[inline(always)]
fn requantize_k4<K: Kernels>(
    x: &[f32; QK_K],
    l: &mut [u8; QK_K],
    scales: &[u8; 12],
    d: Half,
    dmin: Half,
    nmax: i32,
    k: K,
) {
    let xs = sub_blocks::<f32, 32, 8>(x);
    let ls = sub_blocks_mut::<u8, 32, 8>(l);
    for j in 0..8 {
        let (sc, m) = get_scale_min_k4(j, scales);
        let d = d.to_f32() * sc as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin.to_f32() * m as f32;
        // nearest_int((x + dm) / d) clamped to 0..=nmax
        k.requantize(&xs[j], dm, d, 0, nmax, 0, &mut ls[j]);
    }
}

/// The no-imatrix weights of Q4_K/Q5_K sub-blocks: `sqrt(Σx²/32) + |x|`.
/// (Plain loops: array `map`s of this size are not inlined.)
#[inline(always)]
fn k4_ref_weights<const M: usize>(x: &[[f32; 32]; M], w: &mut [[f32; 32]; M]) {
    for (xs, ws) in x.iter().zip(w.iter_mut()) {
        let mut sum_x2 = 0.0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (wv, &v) in ws.iter_mut().zip(xs) {
            *wv = av_x + v.abs();
        }
    }
}

/// Elementwise `f(x)` of sub-blocks, as a plain loop.
#[inline(always)]
fn map_values<const N: usize, const M: usize>(x: &[[f32; N]; M], f: impl Fn(f32) -> f32) -> [[f32; N]; M] {
    let mut out = [[0f32; N]; M];
    for (o, v) in out.as_flattened_mut().iter_mut().zip(x.as_flattened()) {
        *o = f(*v);
    }
    out
}

/// The 6-bit scales and mins of a Q4_K/Q5_K super-block relative to their
/// maxima, packed, and the two fp16 super-block scales.
#[inline(always)]
fn k4_ref_pack(scales: &[f32; 8], mins: &[f32; 8]) -> ([u8; 12], Half, Half) {
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..8 {
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut sc = [0u8; 12];
    for j in 0..8 {
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        pack_scale_min_k4(&mut sc, j, ls, lm);
    }
    (sc, Half::from_f32(max_scale / 63.0), Half::from_f32(max_min / 63.0))
}

/// The no-imatrix scale search of Q4_K/Q5_K (`quantize_row_q{4,5}_K_ref`):
/// weights per sub-block, `make_qkx2_quants(32, nmax, x, w, ...)` on each,
/// then 6-bit scales and mins relative to their maxima.
fn k4_ref_scales<K: Kernels>(x: &[f32; QK_K], l: &mut [u8; QK_K], search: &QkxSearch, k: K) -> ([u8; 12], Half, Half) {
    let xs = sub_blocks::<f32, 32, 8>(x);
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    let mut w = [[0f32; 32]; 8];
    k4_ref_weights(xs, &mut w);
    k.qkx(search, false, xs, &w, sub_blocks_mut::<u8, 32, 8>(l), &mut scales, &mut mins);
    k4_ref_pack(&scales, &mins)
}

/// Super-blocks per search call in [`k4_ref_blocks`]: their 32 sub-blocks are
/// two batches of 16 for the AVX-512 kernels, searched side by side.
const K4_BATCH: usize = 4;

/// Q4_K / Q5_K without an importance matrix over many super-blocks, a few
/// at a time so that one search call sees all their sub-blocks (the
/// sub-blocks are independent, so the bytes are those of one block at a
/// time). `finish` requantizes and packs a block.
fn k4_ref_blocks<B, K: Kernels>(
    x: &[[f32; QK_K]],
    y: &mut [B],
    search: &QkxSearch,
    k: K,
    finish: impl Fn(&[f32; QK_K], &mut [u8; QK_K], [u8; 12], Half, Half, K) -> B,
) {
    const SUBS: usize = 8 * K4_BATCH;
    let mut xp = x.chunks_exact(K4_BATCH);
    let mut yp = y.chunks_exact_mut(K4_BATCH);
    for (xn, yn) in (&mut xp).zip(&mut yp) {
        let xn: &[[f32; QK_K]; K4_BATCH] = xn.try_into().expect("chunks of K4_BATCH");
        let xs: &[[f32; 32]; SUBS] = bytemuck::cast_ref(xn);
        let mut l = [[0u8; QK_K]; K4_BATCH];
        let mut scales = [0f32; SUBS];
        let mut mins = [0f32; SUBS];
        let mut w = [[0f32; 32]; SUBS];
        k4_ref_weights(xs, &mut w);
        k.qkx(search, false, xs, &w, bytemuck::cast_mut::<_, [[u8; 32]; SUBS]>(&mut l), &mut scales, &mut mins);
        for b in 0..K4_BATCH {
            let part = |v: &[f32; SUBS]| -> [f32; 8] { std::array::from_fn(|j| v[8 * b + j]) };
            let (sc, d, dmin) = k4_ref_pack(&part(&scales), &part(&mins));
            yn[b] = finish(&xn[b], &mut l[b], sc, d, dmin, k);
        }
    }
    for (xb, yb) in xp.remainder().iter().zip(yp.into_remainder()) {
        let mut l = [0u8; QK_K];
        let (sc, d, dmin) = k4_ref_scales(xb, &mut l, search, k);
        *yb = finish(xb, &mut l, sc, d, dmin, k);
    }
}

/// The imatrix scale search of Q4_K/Q5_K (`quantize_row_q{4,5}_K_impl`).
/// Only Q5_K clamps the 6-bit levels to 63 (a no-op unless the search
/// produced a negative scale, whose level then wraps).
fn k4_imatrix_scales<K: Kernels>(
    x: &[f32; QK_K],
    qw: &[f32; QK_K],
    l: &mut [u8; QK_K],
    nmax: i32,
    clamp63: bool,
    k: K,
) -> ([u8; 12], Half, Half) {
    let search = QkxSearch { nmax, rmin: -0.9, rdelta: 0.05, nstep: 36, use_mad: false };
    let sigma2 = 2.0 * sum_squares(x) / QK_K as f32;
    let xs = sub_blocks::<f32, 32, 8>(x);
    let qws = sub_blocks::<f32, 32, 8>(qw);
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    let mut sw = [0f32; 8];
    let mut w = [[0f32; 32]; 8];
    for j in 0..8 {
        (w[j], sw[j]) = imatrix_weights(&xs[j], &qws[j], sigma2);
    }
    // make_qkx3_quants per sub-block
    k.qkx(&search, true, xs, &w, sub_blocks_mut::<u8, 32, 8>(l), &mut scales, &mut mins);
    let mut lsc = [0u8; 8];
    let mut lm = [0u8; 8];
    let d_block = make_qp_quants(63, &scales, &mut lsc, &sw);
    let m_block = make_qp_quants(63, &mins, &mut lm, &sw);
    let mut sc = [0u8; 12];
    for j in 0..8 {
        let (ls, lm) = if clamp63 { (lsc[j].min(63), lm[j].min(63)) } else { (lsc[j], lm[j]) };
        pack_scale_min_k4(&mut sc, j, ls, lm);
    }
    (sc, Half::from_f32(d_block), Half::from_f32(m_block))
}

// ---------------------------------------------------------------- Q4_K

/// `block_q4_K`: 8 sub-blocks of 32; x = d·sc·q − dmin·m with 6-bit sc, m.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4K {
    pub d: Half,
    pub dmin: Half,
    pub scales: [u8; 12],
    pub qs: [u8; 128],
}

impl BlockQ4K {
    fn finish<K: Kernels>(x: &[f32; QK_K], l: &mut [u8; QK_K], scales: [u8; 12], d: Half, dmin: Half, k: K) -> Self {
        requantize_k4(x, l, &scales, d, dmin, 15, k);
        // byte 32·c + i holds values 64·c + i (low nibble) and 64·c + 32 + i
        let mut qs = [0u8; 128];
        for c in 0..4 {
            for i in 0..32 {
                qs[32 * c + i] = l[64 * c + i] | (l[64 * c + 32 + i] << 4);
            }
        }
        BlockQ4K { d, dmin, scales, qs }
    }
}

impl Block<QK_K> for BlockQ4K {
    const TYPE: GgmlType = GgmlType::Q4_K;
    #[inline]
    fn dequantize(&self, y: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        let min = self.dmin.to_f32();
        let ys = sub_blocks_mut::<f32, 64, 4>(y);
        for (c, ychunk) in ys.iter_mut().enumerate() {
            let (sc1, m1) = get_scale_min_k4(2 * c, &self.scales);
            let (sc2, m2) = get_scale_min_k4(2 * c + 1, &self.scales);
            let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
            let q = &self.qs[32 * c..32 * c + 32];
            for l in 0..32 {
                ychunk[l] = d1 * (q[l] & 0xF) as f32 - m1;
            }
            for l in 0..32 {
                ychunk[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
            }
        }
    }
}

impl Quantize<QK_K> for BlockQ4K {
    kquant_entry_points!(blocks);
    fn quantize_blocks_with<K: Kernels>(x: &[[f32; QK_K]], y: &mut [Self], k: K) {
        k4_ref_blocks(x, y, &Self::SEARCH, k, Self::finish)
    }
}

impl BlockQ4K {
    /// The grid of `quantize_row_q4_K_ref`'s `make_qkx2_quants`.
    const SEARCH: QkxSearch = QkxSearch { nmax: 15, rmin: -1.0, rdelta: 0.1, nstep: 20, use_mad: false };

    /// `quantize_row_q4_K_ref`
    fn quantize_ref<K: Kernels>(x: &[f32; QK_K], k: K) -> Self {
        let mut l = [0u8; QK_K];
        let (sc, d, dmin) = k4_ref_scales(x, &mut l, &Self::SEARCH, k);
        Self::finish(x, &mut l, sc, d, dmin, k)
    }

    /// `quantize_row_q4_K_impl`
    fn quantize_imatrix<K: Kernels>(x: &[[f32; QK_K]], imatrix: &[[f32; QK_K]], y: &mut [Self], k: K) {
        per_block_imatrix(x, imatrix, y, |x, qw| {
            let mut l = [0u8; QK_K];
            let (sc, d, dmin) = k4_imatrix_scales(x, qw, &mut l, 15, false, k);
            Self::finish(x, &mut l, sc, d, dmin, k)
        });
    }
}

// ---------------------------------------------------------------- Q5_K

/// `block_q5_K`: as Q4_K with a fifth bit per value in `qh`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5K {
    pub d: Half,
    pub dmin: Half,
    pub scales: [u8; 12],
    pub qh: [u8; 32],
    pub qs: [u8; 128],
}

impl BlockQ5K {
    fn finish<K: Kernels>(x: &[f32; QK_K], l: &mut [u8; QK_K], scales: [u8; 12], d: Half, dmin: Half, k: K) -> Self {
        requantize_k4(x, l, &scales, d, dmin, 31, k);
        // low nibbles as Q4_K; the fifth bit of value 64·c + 32·h + i is bit 2c + h of qh[i]
        let mut qs = [0u8; 128];
        let mut qh = [0u8; 32];
        for c in 0..4 {
            for i in 0..32 {
                let (l1, l2) = (l[64 * c + i], l[64 * c + 32 + i]);
                qh[i] |= ((l1 >> 4) << (2 * c)) | ((l2 >> 4) << (2 * c + 1));
                qs[32 * c + i] = (l1 & 0xF) | ((l2 & 0xF) << 4);
            }
        }
        BlockQ5K { d, dmin, scales, qh, qs }
    }
}

impl Block<QK_K> for BlockQ5K {
    const TYPE: GgmlType = GgmlType::Q5_K;
    #[inline]
    fn dequantize(&self, y: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        let min = self.dmin.to_f32();
        let ys = sub_blocks_mut::<f32, 64, 4>(y);
        for (c, ychunk) in ys.iter_mut().enumerate() {
            let (sc1, m1) = get_scale_min_k4(2 * c, &self.scales);
            let (sc2, m2) = get_scale_min_k4(2 * c + 1, &self.scales);
            let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
            let (u1, u2) = (1u8 << (2 * c), 2u8 << (2 * c));
            let ql = &self.qs[32 * c..32 * c + 32];
            for l in 0..32 {
                let h = if self.qh[l] & u1 != 0 { 16 } else { 0 };
                ychunk[l] = d1 * ((ql[l] & 0xF) as i32 + h) as f32 - m1;
            }
            for l in 0..32 {
                let h = if self.qh[l] & u2 != 0 { 16 } else { 0 };
                ychunk[l + 32] = d2 * ((ql[l] >> 4) as i32 + h) as f32 - m2;
            }
        }
    }
}

impl Quantize<QK_K> for BlockQ5K {
    kquant_entry_points!(blocks);
    fn quantize_blocks_with<K: Kernels>(x: &[[f32; QK_K]], y: &mut [Self], k: K) {
        k4_ref_blocks(x, y, &Self::SEARCH, k, Self::finish)
    }
}

impl BlockQ5K {
    /// The grid of `quantize_row_q5_K_ref`'s `make_qkx2_quants`.
    const SEARCH: QkxSearch = QkxSearch { nmax: 31, rmin: -0.5, rdelta: 0.1, nstep: 15, use_mad: false };

    /// `quantize_row_q5_K_ref`
    fn quantize_ref<K: Kernels>(x: &[f32; QK_K], k: K) -> Self {
        let mut l = [0u8; QK_K];
        let (sc, d, dmin) = k4_ref_scales(x, &mut l, &Self::SEARCH, k);
        Self::finish(x, &mut l, sc, d, dmin, k)
    }

    /// `quantize_row_q5_K_impl`
    fn quantize_imatrix<K: Kernels>(x: &[[f32; QK_K]], imatrix: &[[f32; QK_K]], y: &mut [Self], k: K) {
        per_block_imatrix(x, imatrix, y, |x, qw| {
            let mut l = [0u8; QK_K];
            let (sc, d, dmin) = k4_imatrix_scales(x, qw, &mut l, 31, true, k);
            Self::finish(x, &mut l, sc, d, dmin, k)
        });
    }
}

// ---------------------------------------------------------------- Q6_K

/// `block_q6_K`: 16 sub-blocks of 16; x = d·sc·(q − 32) with signed 8-bit sc
/// and 6-bit q split into 4 low bits (`ql`) and 2 high bits (`qh`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ6K {
    pub ql: [u8; 128],
    pub qh: [u8; 64],
    pub scales: [i8; 16],
    pub d: Half,
}

impl BlockQ6K {
    /// From the 16 sub-block scales of the search: 8-bit scales relative to
    /// the largest, requantization, packing (`L` holds levels 0..64).
    fn finish<K: Kernels>(x: &[f32; QK_K], l: &mut [u8; QK_K], scales: &[f32; 16], k: K) -> Self {
        let mut max_scale = 0.0f32;
        let mut max_abs_scale = 0.0f32;
        for &s in scales {
            if s.abs() > max_abs_scale {
                max_abs_scale = s.abs();
                max_scale = s;
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            return BlockQ6K::zeroed();
        }
        let iscale = -128.0 / max_scale;
        let d = Half::from_f32(1.0 / iscale);
        let mut sc = [0i8; 16];
        for ib in 0..16 {
            sc[ib] = nearest_int(iscale * scales[ib]).min(127) as i8;
        }
        {
            let xs = sub_blocks::<f32, 16, 16>(x);
            let ls = sub_blocks_mut::<u8, 16, 16>(l);
            for j in 0..16 {
                let d = d.to_f32() * sc[j] as f32;
                if d == 0.0 {
                    continue;
                }
                // nearest_int(x / d) clamped to -32..=31, + 32 (x + 0 / d: the same value)
                k.requantize(&xs[j], 0.0, d, -32, 31, 32, &mut ls[j]);
            }
        }
        let mut ql = [0u8; 128];
        let mut qh = [0u8; 64];
        for c in 0..2 {
            for i in 0..32 {
                let j = 128 * c + i;
                let (q1, q2, q3, q4) = (l[j], l[j + 32], l[j + 64], l[j + 96]);
                ql[64 * c + i] = (q1 & 0xF) | ((q3 & 0xF) << 4);
                ql[64 * c + i + 32] = (q2 & 0xF) | ((q4 & 0xF) << 4);
                qh[32 * c + i] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
            }
        }
        BlockQ6K { ql, qh, scales: sc, d }
    }
}

impl Block<QK_K> for BlockQ6K {
    const TYPE: GgmlType = GgmlType::Q6_K;
    #[inline]
    fn dequantize(&self, y: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        for c in 0..2 {
            let ql = &self.ql[64 * c..64 * c + 64];
            let qh = &self.qh[32 * c..32 * c + 32];
            let sc = &self.scales[8 * c..8 * c + 8];
            let yc = &mut y[128 * c..128 * c + 128];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                yc[l] = d * sc[is] as f32 * q1 as f32;
                yc[l + 32] = d * sc[is + 2] as f32 * q2 as f32;
                yc[l + 64] = d * sc[is + 4] as f32 * q3 as f32;
                yc[l + 96] = d * sc[is + 6] as f32 * q4 as f32;
            }
        }
    }
}

impl Quantize<QK_K> for BlockQ6K {
    kquant_entry_points!();
}

impl BlockQ6K {
    /// `quantize_row_q6_K_ref`: `make_qx_quants(16, 32, rmse_type = 1)` with weights x².
    fn quantize_ref<K: Kernels>(x: &[f32; QK_K], k: K) -> Self {
        let xs = sub_blocks::<f32, 16, 16>(x);
        let mut l = [0u8; QK_K];
        let mut scales = [0f32; 16];
        let w = map_values(xs, |v| v * v);
        k.qx(32, xs, &w, sub_blocks_mut::<u8, 16, 16>(&mut l), &mut scales);
        Self::finish(x, &mut l, &scales, k)
    }

    /// `quantize_row_q6_K_impl`: the same search weighted by the imatrix itself.
    fn quantize_imatrix<K: Kernels>(x: &[[f32; QK_K]], imatrix: &[[f32; QK_K]], y: &mut [Self], k: K) {
        per_block_imatrix(x, imatrix, y, |x, qw| {
            let xs = sub_blocks::<f32, 16, 16>(x);
            let qws = sub_blocks::<f32, 16, 16>(qw);
            let mut l = [0u8; QK_K];
            let mut scales = [0f32; 16];
            k.qx(32, xs, qws, sub_blocks_mut::<u8, 16, 16>(&mut l), &mut scales);
            Self::finish(x, &mut l, &scales, k)
        });
    }
}

// ---------------------------------------------------------------- Q8_K

/// `block_q8_K` (intermediate type of the dot products): f32 scale, 256
/// signed 8-bit quants, and the sums of each group of 16.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8K {
    pub d: [u8; 4],
    pub qs: [i8; QK_K],
    pub bsums: [u8; 32],
}

impl Block<QK_K> for BlockQ8K {
    const TYPE: GgmlType = GgmlType::Q8_K;
    #[inline]
    fn dequantize(&self, y: &mut [f32; QK_K]) {
        let d = f32::from_le_bytes(self.d);
        for j in 0..QK_K {
            y[j] = d * self.qs[j] as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::testutil::*;

    /// Checks the round trip of both paths within `rel · max|x|` (ref) and
    /// `rel_imatrix · max|x|` (imatrix), returning the worst relative errors.
    /// `levels` is the largest |scale level · quant level|: the fp16
    /// super-block scale is only absolutely accurate (2^-25) once it underflows
    /// into fp16 subnormals, and that error is multiplied by `levels`.
    fn check<B: Quantize<QK_K>>(rel: f32, rel_imatrix: f32, levels: f32) -> (f32, f32) {
        let mut worst = [0f32; 2];
        let blocks = adversarial_blocks::<QK_K>(0x4B + B::TYPE as u64);
        for (name, x) in &blocks {
            let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
            for with_imatrix in [false, true] {
                let b = if with_imatrix {
                    let mut out = [B::zeroed()];
                    let qw: Vec<f32> = (0..QK_K).map(|i| 0.5 + (i % 5) as f32).collect();
                    let qw: &[[f32; QK_K]] = bytemuck::cast_slice(&qw);
                    B::quantize_row_imatrix(std::slice::from_ref(x), qw, &mut out);
                    out[0]
                } else {
                    B::quantize(x)
                };
                let mut y = [0f32; QK_K];
                b.dequantize(&mut y);
                // fp16 scales: 2^-11 relative, and underflow below ~2^-24·levels absolute
                let rel = if with_imatrix { rel_imatrix } else { rel };
                let bound = rel * amax + 8.0 * amax * 2f32.powi(-11) + levels * 2f32.powi(-24);
                for j in 0..QK_K {
                    let e = (y[j] - x[j]).abs();
                    if amax > 0.0 && e > levels * 2f32.powi(-24) {
                        let w = &mut worst[with_imatrix as usize];
                        *w = w.max(e / amax);
                    }
                    assert!(
                        e <= bound,
                        "{:?} {name} imatrix={with_imatrix} [{j}]: {} vs {} (bound {bound})",
                        B::TYPE,
                        y[j],
                        x[j]
                    );
                }
            }
        }
        (worst[0], worst[1])
    }

    #[test]
    fn round_trip_bounds() {
        // Error relative to the super-block's max |x|. The coarse types lose
        // whole sub-blocks of small values next to large ones (their scale
        // quantizes to 0 or 1), so bounds are per-type, not per-value.
        for (name, w) in [
            ("Q2_K", check::<BlockQ2K>(0.45, 0.65, 60.0)),
            ("Q3_K", check::<BlockQ3K>(0.32, 0.42, 128.0)),
            ("Q4_K", check::<BlockQ4K>(0.1, 0.19, 1008.0)),
            ("Q5_K", check::<BlockQ5K>(0.07, 0.08, 2016.0)),
            ("Q6_K", check::<BlockQ6K>(0.022, 0.045, 4096.0)),
        ] {
            eprintln!("{name}: worst relative error {:.4} (ref), {:.4} (imatrix)", w.0, w.1);
        }
    }

    #[test]
    fn scale_packing_round_trips() {
        for j in 0..8 {
            for (ls, lm) in [(0u8, 63u8), (63, 0), (17, 42), (63, 63)] {
                let mut sc = [0u8; 12];
                // earlier sub-blocks are stored first, as in the kernels
                for k in 0..8 {
                    let (a, b) = if k == j { (ls, lm) } else { (k as u8 * 7, 63 - k as u8 * 5) };
                    pack_scale_min_k4(&mut sc, k, a, b);
                }
                assert_eq!(get_scale_min_k4(j, &sc), (ls, lm));
            }
        }
        let mut sc = [0u8; 12];
        for j in 0..16 {
            q3_pack_scale(&mut sc, j, (j as i32 * 13 + 5) % 64);
        }
        for j in 0..16 {
            assert_eq!(q3_scale(&sc, j), (j as i32 * 13 + 5) % 64 - 32);
        }
    }

    #[test]
    fn zero_block_is_all_zero_scales() {
        let z = [0f32; QK_K];
        assert_eq!(BlockQ6K::quantize(&z), BlockQ6K::zeroed());
        let b = BlockQ4K::quantize(&z);
        assert_eq!((b.d, b.dmin), (Half::ZERO, Half::ZERO));
        let b = BlockQ2K::quantize(&z);
        assert_eq!((b.d, b.dmin, b.qs), (Half::ZERO, Half::ZERO, [0; 64]));
        let b = BlockQ3K::quantize(&z);
        assert_eq!(b.d, Half::ZERO);
    }

    #[test]
    fn non_finite_inputs_do_not_panic() {
        let mut x = [0.5f32; QK_K];
        x[3] = f32::NAN;
        x[100] = f32::INFINITY;
        x[200] = -f32::INFINITY;
        let qw = [[1.0f32; QK_K]];
        let xs = [x];
        macro_rules! run {
            ($($t:ty),*) => {$(
                let _ = <$t>::quantize(&x);
                let mut o = [<$t>::zeroed()];
                <$t>::quantize_row_imatrix(&xs, &qw, &mut o);
                let mut y = [0f32; QK_K];
                o[0].dequantize(&mut y);
            )*};
        }
        run!(BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K);
        let big = [1e30f32; QK_K];
        let _ = BlockQ3K::quantize(&big);
        let _ = BlockQ6K::quantize(&big);
    }

    #[test]
    fn q8k_dequantizes_with_f32_scale() {
        let mut b = BlockQ8K::zeroed();
        b.d = 0.25f32.to_le_bytes();
        b.qs[0] = -128;
        b.qs[255] = 127;
        let mut y = [0f32; QK_K];
        b.dequantize(&mut y);
        assert_eq!((y[0], y[1], y[255]), (-32.0, 0.0, 31.75));
    }
}
