//! The 32-value block types: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (quantize and
//! dequantize) and Q8_1 (dequantize), bit-identical to ggml-quants.c.
//!
//! Without an importance matrix ggml uses the `quantize_row_*_ref` kernels:
//! a scale from the block's extreme value(s), then truncating float → int
//! conversions (`(int8_t)(x*id + 8.5f)` and friends; Q8_0 uses `roundf`).
//! With one, Q4_0/Q5_0 use `make_qx_quants` and Q4_1/Q5_1 `make_qkx3_quants`
//! with weights `imatrix · sqrt(σ² + x²)`, σ² being the mean square of the
//! whole row. Q8_0 ignores the imatrix.

use bytemuck::{Pod, Zeroable};

use super::float::Half;
use super::search::{amax_macro, first_abs_max, make_qkx3_quants, make_qx_quants, trunc_i32, QkxSearch};
use super::simd::Kernels;
use super::{Block, Quantize};
use crate::gguf::GgmlType;

pub const QK: usize = 32;

/// `(int8_t)f` as compiled for x86-64, widened back to int.
#[inline(always)]
fn trunc_i8(f: f32) -> i32 {
    trunc_i32(f) as i8 as i32
}

/// Mean square of a row (`Σx² / n_per_row`, summed in order), the σ² of the
/// legacy types' imatrix weights.
fn row_sigma2(x: &[[f32; QK]]) -> f32 {
    let mut sum_x2 = 0.0f32;
    for xb in x {
        for &v in xb {
            sum_x2 += v * v;
        }
    }
    sum_x2 / (x.len() * QK) as f32
}

/// `qw[j] · sqrt(σ² + x[j]²)`
#[inline(always)]
fn imatrix_weights(x: &[f32; QK], qw: &[f32; QK], sigma2: f32) -> [f32; QK] {
    let mut w = [0.0f32; QK];
    for j in 0..QK {
        w[j] = qw[j] * (sigma2 + x[j] * x[j]).sqrt();
    }
    w
}

/// Runs `f` on the blocks of a row 8 at a time (a short last group is padded
/// with zero blocks, whose results are dropped), with the imatrix weights of
/// each block: `f(xs, ws, out)` fills `out` (one entry per real block).
#[inline(always)]
fn imatrix_groups<B>(
    x: &[[f32; QK]],
    imatrix: &[[f32; QK]],
    y: &mut [B],
    mut f: impl FnMut(&[[f32; QK]; 8], &[[f32; QK]; 8], &mut [B]),
) {
    let sigma2 = row_sigma2(x);
    let n = x.len().min(imatrix.len()).min(y.len());
    let mut i = 0;
    while i < n {
        let g = (n - i).min(8);
        let mut xs = [[0f32; QK]; 8];
        let mut ws = [[0f32; QK]; 8];
        for j in 0..g {
            xs[j] = x[i + j];
            ws[j] = imatrix_weights(&x[i + j], &imatrix[i + j], sigma2);
        }
        f(&xs, &ws, &mut y[i..i + g]);
        i += g;
    }
}

/// Packs 32 five-bit values: low nibbles in `qs` (value j with j+16), fifth bits in `qh`.
#[inline(always)]
fn pack5(l: &[u8; QK]) -> ([u8; 16], [u8; 4]) {
    let mut qs = [0u8; 16];
    let mut qh = 0u32;
    for j in 0..16 {
        let (a, b) = (l[j] as u32, l[j + 16] as u32);
        qs[j] = ((a & 0x0F) | ((b & 0x0F) << 4)) as u8;
        qh |= ((a & 0x10) >> 4) << j;
        qh |= ((b & 0x10) >> 4) << (j + 16);
    }
    (qs, qh.to_le_bytes())
}

/// Unpacks the five-bit value pair `(j, j+16)` of [`pack5`].
#[inline(always)]
fn unpack5(qs: &[u8; 16], qh: [u8; 4], j: usize) -> (i32, i32) {
    let qh = u32::from_le_bytes(qh);
    let h0 = ((qh >> j) << 4) & 0x10;
    let h1 = (qh >> (j + 12)) & 0x10;
    (((qs[j] as u32 & 0x0F) | h0) as i32, ((qs[j] as u32 >> 4) | h1) as i32)
}

#[inline(always)]
fn pack4(l: &[u8; QK]) -> [u8; 16] {
    let mut qs = [0u8; 16];
    for j in 0..16 {
        qs[j] = l[j] | (l[j + 16] << 4);
    }
    qs
}

/// The imatrix search of Q4_1 / Q5_1.
const fn qkx3_search(nmax: i32) -> QkxSearch {
    QkxSearch { nmax, rmin: -0.9, rdelta: 0.05, nstep: 36, use_mad: false }
}

// ---------------------------------------------------------------- Q4_0

/// `block_q4_0`: x = d · (q − 8).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4_0 {
    pub d: Half,
    pub qs: [u8; 16],
}

impl Block<QK> for BlockQ4_0 {
    const TYPE: GgmlType = GgmlType::Q4_0;
    #[inline]
    fn dequantize(&self, y: &mut [f32; QK]) {
        let d = self.d.to_f32();
        for j in 0..16 {
            let x0 = (self.qs[j] & 0x0F) as i32 - 8;
            let x1 = (self.qs[j] >> 4) as i32 - 8;
            y[j] = x0 as f32 * d;
            y[j + 16] = x1 as f32 * d;
        }
    }
}

impl Quantize<QK> for BlockQ4_0 {
    fn quantize_blocks_with<K: Kernels>(x: &[[f32; QK]], y: &mut [Self], k: K) {
        k.q4_0_blocks(x, y)
    }

    /// `quantize_row_q4_0_ref`
    fn quantize(x: &[f32; QK]) -> Self {
        let (_, max) = first_abs_max(x);
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0u8; 16];
        for j in 0..16 {
            let xi0 = trunc_i8(x[j] * id + 8.5).min(15);
            let xi1 = trunc_i8(x[j + 16] * id + 8.5).min(15);
            qs[j] = (xi0 as u8) | ((xi1 << 4) as u8);
        }
        BlockQ4_0 { d: Half::from_f32(d), qs }
    }

    /// `quantize_row_q4_0_impl`
    fn quantize_row_imatrix(x: &[[f32; QK]], imatrix: &[[f32; QK]], y: &mut [Self]) {
        let sigma2 = row_sigma2(x);
        for ((xb, qw), yb) in x.iter().zip(imatrix).zip(y) {
            let w = imatrix_weights(xb, qw, sigma2);
            let mut l = [0u8; QK];
            let d = make_qx_quants(8, xb, &w, &mut l);
            *yb = BlockQ4_0 { d: Half::from_f32(d), qs: pack4(&l) };
        }
    }

    fn quantize_row_imatrix_with<K: Kernels>(x: &[[f32; QK]], imatrix: &[[f32; QK]], y: &mut [Self], k: K) {
        imatrix_groups(x, imatrix, y, |xs, ws, out| {
            let (mut l, mut d) = ([[0u8; QK]; 8], [0f32; 8]);
            k.qx(8, xs, ws, &mut l, &mut d);
            for (j, yb) in out.iter_mut().enumerate() {
                *yb = BlockQ4_0 { d: Half::from_f32(d[j]), qs: pack4(&l[j]) };
            }
        });
    }
}

// ---------------------------------------------------------------- Q4_1

/// `block_q4_1`: x = d · q + m.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4_1 {
    pub d: Half,
    pub m: Half,
    pub qs: [u8; 16],
}

/// The block's minimum and maximum as `quantize_row_q4_1_ref` finds them.
#[inline(always)]
fn min_max(x: &[f32; QK]) -> (f32, f32) {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

impl Block<QK> for BlockQ4_1 {
    const TYPE: GgmlType = GgmlType::Q4_1;
    #[inline]
    fn dequantize(&self, y: &mut [f32; QK]) {
        let d = self.d.to_f32();
        let m = self.m.to_f32();
        for j in 0..16 {
            let x0 = (self.qs[j] & 0x0F) as i32;
            let x1 = (self.qs[j] >> 4) as i32;
            y[j] = x0 as f32 * d + m;
            y[j + 16] = x1 as f32 * d + m;
        }
    }
}

impl Quantize<QK> for BlockQ4_1 {
    fn quantize_blocks_with<K: Kernels>(x: &[[f32; QK]], y: &mut [Self], k: K) {
        k.q4_1_blocks(x, y)
    }

    /// `quantize_row_q4_1_ref`
    fn quantize(x: &[f32; QK]) -> Self {
        let (min, max) = min_max(x);
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0u8; 16];
        for j in 0..16 {
            let xi0 = trunc_i8((x[j] - min) * id + 0.5).min(15);
            let xi1 = trunc_i8((x[j + 16] - min) * id + 0.5).min(15);
            qs[j] = (xi0 as u8) | ((xi1 << 4) as u8);
        }
        BlockQ4_1 { d: Half::from_f32(d), m: Half::from_f32(min), qs }
    }

    /// `quantize_row_q4_1_impl`
    fn quantize_row_imatrix(x: &[[f32; QK]], imatrix: &[[f32; QK]], y: &mut [Self]) {
        let sigma2 = row_sigma2(x);
        for ((xb, qw), yb) in x.iter().zip(imatrix).zip(y) {
            let w = imatrix_weights(xb, qw, sigma2);
            let mut l = [0u8; QK];
            let mut aux = [0u8; QK];
            let (d, the_min) = make_qkx3_quants(&qkx3_search(15), xb, &w, &mut l, &mut aux);
            *yb = BlockQ4_1 { d: Half::from_f32(d), m: Half::from_f32(-the_min), qs: pack4(&l) };
        }
    }

    fn quantize_row_imatrix_with<K: Kernels>(x: &[[f32; QK]], imatrix: &[[f32; QK]], y: &mut [Self], k: K) {
        imatrix_groups(x, imatrix, y, |xs, ws, out| {
            let (mut l, mut d, mut the_min) = ([[0u8; QK]; 8], [0f32; 8], [0f32; 8]);
            k.qkx(&qkx3_search(15), true, xs, ws, &mut l, &mut d, &mut the_min);
            for (j, yb) in out.iter_mut().enumerate() {
                *yb = BlockQ4_1 { d: Half::from_f32(d[j]), m: Half::from_f32(-the_min[j]), qs: pack4(&l[j]) };
            }
        });
    }
}

// ---------------------------------------------------------------- Q5_0

/// `block_q5_0`: x = d · (q − 16), the fifth bits in `qh`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5_0 {
    pub d: Half,
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}

impl Block<QK> for BlockQ5_0 {
    const TYPE: GgmlType = GgmlType::Q5_0;
    #[inline]
    fn dequantize(&self, y: &mut [f32; QK]) {
        let d = self.d.to_f32();
        for j in 0..16 {
            let (x0, x1) = unpack5(&self.qs, self.qh, j);
            y[j] = (x0 - 16) as f32 * d;
            y[j + 16] = (x1 - 16) as f32 * d;
        }
    }
}

impl Quantize<QK> for BlockQ5_0 {
    fn quantize_blocks_with<K: Kernels>(x: &[[f32; QK]], y: &mut [Self], k: K) {
        k.q5_0_blocks(x, y)
    }

    /// `quantize_row_q5_0_ref`
    fn quantize(x: &[f32; QK]) -> Self {
        let (_, max) = first_abs_max(x);
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut l = [0u8; QK];
        for j in 0..QK {
            l[j] = trunc_i8(x[j] * id + 16.5).min(31) as u8;
        }
        let (qs, qh) = pack5(&l);
        BlockQ5_0 { d: Half::from_f32(d), qh, qs }
    }

    /// `quantize_row_q5_0_impl`
    fn quantize_row_imatrix(x: &[[f32; QK]], imatrix: &[[f32; QK]], y: &mut [Self]) {
        let sigma2 = row_sigma2(x);
        for ((xb, qw), yb) in x.iter().zip(imatrix).zip(y) {
            let w = imatrix_weights(xb, qw, sigma2);
            let mut l = [0u8; QK];
            let d = make_qx_quants(16, xb, &w, &mut l);
            let (qs, qh) = pack5(&l);
            *yb = BlockQ5_0 { d: Half::from_f32(d), qh, qs };
        }
    }

    fn quantize_row_imatrix_with<K: Kernels>(x: &[[f32; QK]], imatrix: &[[f32; QK]], y: &mut [Self], k: K) {
        imatrix_groups(x, imatrix, y, |xs, ws, out| {
            let (mut l, mut d) = ([[0u8; QK]; 8], [0f32; 8]);
            k.qx(16, xs, ws, &mut l, &mut d);
            for (j, yb) in out.iter_mut().enumerate() {
                let (qs, qh) = pack5(&l[j]);
                *yb = BlockQ5_0 { d: Half::from_f32(d[j]), qh, qs };
            }
        });
    }
}

// ---------------------------------------------------------------- Q5_1

/// `block_q5_1`: x = d · q + m, the fifth bits in `qh`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5_1 {
    pub d: Half,
    pub m: Half,
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}

impl Block<QK> for BlockQ5_1 {
    const TYPE: GgmlType = GgmlType::Q5_1;
    #[inline]
    fn dequantize(&self, y: &mut [f32; QK]) {
        let d = self.d.to_f32();
        let m = self.m.to_f32();
        for j in 0..16 {
            let (x0, x1) = unpack5(&self.qs, self.qh, j);
            y[j] = x0 as f32 * d + m;
            y[j + 16] = x1 as f32 * d + m;
        }
    }
}

impl Quantize<QK> for BlockQ5_1 {
    fn quantize_blocks_with<K: Kernels>(x: &[[f32; QK]], y: &mut [Self], k: K) {
        k.q5_1_blocks(x, y)
    }

    /// `quantize_row_q5_1_ref` (no clamp: `(uint8_t)(x + 0.5f)` keeps the low byte)
    fn quantize(x: &[f32; QK]) -> Self {
        let (min, max) = min_max(x);
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut l = [0u8; QK];
        for j in 0..QK {
            l[j] = trunc_i32((x[j] - min) * id + 0.5) as u8;
        }
        let (qs, qh) = pack5(&l);
        BlockQ5_1 { d: Half::from_f32(d), m: Half::from_f32(min), qh, qs }
    }

    /// `quantize_row_q5_1_impl`
    fn quantize_row_imatrix(x: &[[f32; QK]], imatrix: &[[f32; QK]], y: &mut [Self]) {
        let sigma2 = row_sigma2(x);
        for ((xb, qw), yb) in x.iter().zip(imatrix).zip(y) {
            let w = imatrix_weights(xb, qw, sigma2);
            let mut l = [0u8; QK];
            let mut aux = [0u8; QK];
            let (d, the_min) = make_qkx3_quants(&qkx3_search(31), xb, &w, &mut l, &mut aux);
            let (qs, qh) = pack5(&l);
            *yb = BlockQ5_1 { d: Half::from_f32(d), m: Half::from_f32(-the_min), qh, qs };
        }
    }

    fn quantize_row_imatrix_with<K: Kernels>(x: &[[f32; QK]], imatrix: &[[f32; QK]], y: &mut [Self], k: K) {
        imatrix_groups(x, imatrix, y, |xs, ws, out| {
            let (mut l, mut d, mut the_min) = ([[0u8; QK]; 8], [0f32; 8], [0f32; 8]);
            k.qkx(&qkx3_search(31), true, xs, ws, &mut l, &mut d, &mut the_min);
            for (j, yb) in out.iter_mut().enumerate() {
                let (qs, qh) = pack5(&l[j]);
                *yb = BlockQ5_1 { d: Half::from_f32(d[j]), m: Half::from_f32(-the_min[j]), qh, qs };
            }
        });
    }
}

// ---------------------------------------------------------------- Q8_0 / Q8_1

/// `block_q8_0`: x = d · q.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8_0 {
    pub d: Half,
    pub qs: [i8; QK],
}

impl Block<QK> for BlockQ8_0 {
    const TYPE: GgmlType = GgmlType::Q8_0;
    #[inline]
    fn dequantize(&self, y: &mut [f32; QK]) {
        let d = self.d.to_f32();
        for j in 0..QK {
            y[j] = self.qs[j] as f32 * d;
        }
    }
}

impl Quantize<QK> for BlockQ8_0 {
    fn quantize_blocks_with<K: Kernels>(x: &[[f32; QK]], y: &mut [Self], k: K) {
        k.q8_0_blocks(x, y)
    }

    /// `quantize_row_q8_0_ref` (the only path: ggml ignores an imatrix for Q8_0)
    fn quantize(x: &[f32; QK]) -> Self {
        let d = amax_macro(x) / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0i8; QK];
        for j in 0..QK {
            qs[j] = trunc_i32((x[j] * id).round()) as i8;
        }
        BlockQ8_0 { d: Half::from_f32(d), qs }
    }

    fn quantize_row_imatrix(x: &[[f32; QK]], _imatrix: &[[f32; QK]], y: &mut [Self]) {
        for (xb, yb) in x.iter().zip(y) {
            *yb = Self::quantize(xb);
        }
    }
}

/// `block_q8_1`: x = d · q, with `s = d · Σq` (only used by dot products).
/// ggml has no `dequantize_row_q8_1`; the values are d · q as for Q8_0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8_1 {
    pub d: Half,
    pub s: Half,
    pub qs: [i8; QK],
}

impl Block<QK> for BlockQ8_1 {
    const TYPE: GgmlType = GgmlType::Q8_1;
    #[inline]
    fn dequantize(&self, y: &mut [f32; QK]) {
        let d = self.d.to_f32();
        for j in 0..QK {
            y[j] = self.qs[j] as f32 * d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::testutil::*;

    fn round_trip<B: Quantize<QK>>(x: &[f32; QK]) -> [f32; QK] {
        let mut y = [0f32; QK];
        B::quantize(x).dequantize(&mut y);
        y
    }

    /// dequant(quant(x)) stays within `rel · max|x|` of x on every adversarial block.
    fn check_bound<B: Quantize<QK>>(rel: f32) {
        for (name, x) in adversarial_blocks::<QK>(0xB10C + B::TYPE as u64) {
            let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
            let y = round_trip::<B>(&x);
            // fp16 scales: 2^-11 relative rounding, and absolute underflow (≤ 2^-25 per level)
            let bound = rel * amax + 4.0 * amax * 2f32.powi(-11) + 128.0 * 2f32.powi(-24);
            for j in 0..QK {
                assert!(y[j].is_finite(), "{:?} {name}: non-finite output", B::TYPE);
                assert!(
                    (y[j] - x[j]).abs() <= bound,
                    "{:?} {name}[{j}]: {} vs {} (bound {bound})",
                    B::TYPE,
                    y[j],
                    x[j]
                );
            }
        }
    }

    #[test]
    fn round_trip_bounds() {
        // Half a step of the grid: Q4_0 step max/8, Q5_0 max/16, Q8_0 max/127;
        // Q4_1/Q5_1 (max-min)/15 resp. /31 ≤ 2·max/15 resp. 2·max/31. Q4_0/Q5_0
        // lose a whole step at the end opposite the extreme (level 16 clamps to 15).
        check_bound::<BlockQ4_0>(1.0 / 8.0 + 1e-6);
        check_bound::<BlockQ5_0>(1.0 / 16.0 + 1e-6);
        check_bound::<BlockQ8_0>(1.0 / 127.0 * 0.5 + 1e-6);
        check_bound::<BlockQ4_1>(2.0 / 15.0 * 0.5 + 1e-6);
        check_bound::<BlockQ5_1>(2.0 / 31.0 * 0.5 + 1e-6);
    }

    #[test]
    fn q4_0_known_block() {
        // max = -8 gives d = 1 exactly: x + 8.5 truncates, so k.5 rounds up
        let mut x = [0f32; QK];
        x[0] = -8.0;
        x[1] = 7.0;
        x[2] = 2.5;
        x[3] = -2.5;
        x[4] = 7.9;
        let b = BlockQ4_0::quantize(&x);
        assert_eq!(b.d.to_f32(), 1.0);
        assert_eq!(b.qs[0] & 0xF, 0);
        assert_eq!(b.qs[1] & 0xF, 15);
        assert_eq!(b.qs[2] & 0xF, 11); // 2.5 + 8.5 = 11
        assert_eq!(b.qs[3] & 0xF, 6); // -2.5 + 8.5 = 6
        assert_eq!(b.qs[4] & 0xF, 15); // 16.4 clamps to 15
        assert_eq!(b.qs[5], 8 | (8 << 4));
    }

    #[test]
    fn q4_0_takes_first_of_tied_extremes() {
        let mut x = [0f32; QK];
        x[3] = 4.0;
        x[7] = -4.0;
        assert_eq!(BlockQ4_0::quantize(&x).d.to_f32(), -0.5);
        x[3] = -4.0;
        x[7] = 4.0;
        assert_eq!(BlockQ4_0::quantize(&x).d.to_f32(), 0.5);
    }

    #[test]
    fn q8_0_rounds_half_away_from_zero() {
        let mut x = [0f32; QK];
        x[0] = 127.0; // d = 1
        x[1] = 2.5;
        x[2] = -2.5;
        x[3] = 0.5;
        let b = BlockQ8_0::quantize(&x);
        assert_eq!(b.d.to_f32(), 1.0);
        assert_eq!(&b.qs[..4], &[127, 3, -3, 1]);
    }

    #[test]
    fn q5_1_does_not_clamp() {
        // (uint8_t)(x + 0.5f) of 31.5 is 31; the 5-bit pack keeps the low bits
        let mut x = [0f32; QK];
        for (j, v) in x.iter_mut().enumerate() {
            *v = j as f32;
        }
        let b = BlockQ5_1::quantize(&x);
        let mut y = [0f32; QK];
        b.dequantize(&mut y);
        assert_eq!(y, x);
    }

    #[test]
    fn zero_and_subnormal_blocks_do_not_panic() {
        let z = [0f32; QK];
        // d = 0 / -8 is -0.0, stored as fp16 0x8000 as ggml does
        assert_eq!(BlockQ4_0::quantize(&z), BlockQ4_0 { d: Half([0x00, 0x80]), qs: [0x88; 16] });
        assert_eq!(BlockQ8_0::quantize(&z).qs, [0; QK]);
        // 1/d overflows to inf for a subnormal max; C's cvttss2si turns inf/NaN into 0
        let mut s = [0f32; QK];
        s[0] = f32::from_bits(3);
        s[1] = -f32::from_bits(1);
        let b = BlockQ4_0::quantize(&s);
        assert_eq!(b.d.to_f32(), 0.0);
        let _ = BlockQ4_1::quantize(&s);
        let _ = BlockQ5_0::quantize(&s);
        let _ = BlockQ5_1::quantize(&s);
        let _ = BlockQ8_0::quantize(&s);
        let mut n = [1f32; QK];
        n[5] = f32::NAN;
        n[6] = f32::INFINITY;
        let _ = BlockQ4_0::quantize(&n);
        let _ = BlockQ4_1::quantize(&n);
        let _ = BlockQ5_0::quantize(&n);
        let _ = BlockQ5_1::quantize(&n);
        let _ = BlockQ8_0::quantize(&n);
    }

    #[test]
    fn imatrix_paths_reconstruct_within_bounds() {
        for (name, x) in adversarial_blocks::<QK>(7) {
            let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
            if !(1e-30..=6e4).contains(&amax) {
                continue;
            }
            let qw = [[1.0f32; QK]];
            let xs = [x];
            let mut y = [0f32; QK];
            let mut b0 = [BlockQ4_0::zeroed()];
            BlockQ4_0::quantize_row_imatrix(&xs, &qw, &mut b0);
            b0[0].dequantize(&mut y);
            for j in 0..QK {
                // the weighted search may trade the extreme value for a better fit: 1 step + rounding
                let tol = amax * 0.2 + 16.0 * 2f32.powi(-24);
                assert!((y[j] - x[j]).abs() <= tol, "Q4_0 imatrix {name}[{j}] {} {}", y[j], x[j]);
            }
            let mut b1 = [BlockQ5_1::zeroed()];
            BlockQ5_1::quantize_row_imatrix(&xs, &qw, &mut b1);
            b1[0].dequantize(&mut y);
            for j in 0..QK {
                let tol = amax * 0.1 + 64.0 * 2f32.powi(-24);
                assert!((y[j] - x[j]).abs() <= tol, "Q5_1 imatrix {name}[{j}] {} {}", y[j], x[j]);
            }
        }
    }
}
