//! IQ4_NL and IQ4_XS: 4-bit indices into a fixed non-linear table
//! (`kvalues_iq4nl`), with one fp16 scale per 32 values (IQ4_NL) or one fp16
//! super-block scale and 6-bit sub-block scales (IQ4_XS).
//!
//! ggml always quantizes these with `quantize_row_iq4_nl_impl(..., ntry = 7)`:
//! weights x² without an importance matrix, `imatrix · sqrt(σ² + x²)` with
//! one (σ² = 2·Σx²/n over the super-block).

use bytemuck::{Pod, Zeroable};

use super::float::Half;
use super::search::{best_index_int8, first_abs_max, nearest_int, GROUP_MAX_EPS};
use super::simd::{Kernels, Scalar};
use super::{Block, Quantize, QK_K};
use crate::gguf::GgmlType;

/// ggml's `kvalues_iq4nl`.
pub const KVALUES_IQ4NL: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/// Scale trials either side of the initial guess (ggml's `ntry`).
const NTRY: i32 = 7;

/// σ² of the weights: `Σx² · (2/n)` over the super-block.
#[inline(always)]
fn sigma2<const N: usize>(x: &[f32; N]) -> f32 {
    let mut s = 0.0f32;
    for &v in x {
        s += v * v;
    }
    s * (2.0 / N as f32)
}

#[inline(always)]
pub(crate) fn weights32(x: &[f32; 32], qw: Option<&[f32; 32]>, sigma2: f32) -> [f32; 32] {
    let mut w = [0f32; 32];
    match qw {
        Some(qw) => {
            for j in 0..32 {
                w[j] = qw[j] * (sigma2 + x[j] * x[j]).sqrt();
            }
        }
        None => {
            for j in 0..32 {
                w[j] = x[j] * x[j];
            }
        }
    }
    w
}

/// Σw·q·x and Σw·q² of the table values nearest to `id · x`.
#[inline(always)]
fn fit(x: &[f32; 32], w: &[f32; 32], id: f32) -> (f32, f32) {
    let mut sumqx = 0.0f32;
    let mut sumq2 = 0.0f32;
    for j in 0..32 {
        let q = KVALUES_IQ4NL[best_index_int8(&KVALUES_IQ4NL, id * x[j])] as f32;
        sumqx += w[j] * q * x[j];
        sumq2 += w[j] * q * q;
    }
    (sumqx, sumq2)
}

/// The scale of one group of 32 (0 for an all-zero group): the least-squares
/// scale for the initial guess `max / -127`, then for `2·NTRY + 1` more
/// inverse scales, keeping the best.
pub(crate) fn search_scale(x: &[f32; 32], w: &[f32; 32]) -> f32 {
    let (amax, max) = first_abs_max(x);
    if amax < GROUP_MAX_EPS {
        return 0.0;
    }
    let v0 = KVALUES_IQ4NL[0] as i32;
    let d = -max / v0 as f32;
    let (sumqx, sumq2) = fit(x, w, 1.0 / d);
    let mut d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
    let mut best = d * sumqx;
    for itry in -NTRY..=NTRY {
        let id = (itry + v0) as f32 / max;
        let (sumqx, sumq2) = fit(x, w, id);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    d
}

/// Table indices of `x · id` for a group of 32, packed two per byte (value j
/// with value j + 16).
#[inline(always)]
pub(crate) fn pack_indices(x: &[f32; 32], id: f32, qs: &mut [u8; 16]) {
    for j in 0..16 {
        let lo = best_index_int8(&KVALUES_IQ4NL, id * x[j]) as u8;
        let hi = best_index_int8(&KVALUES_IQ4NL, id * x[j + 16]) as u8;
        qs[j] = lo | (hi << 4);
    }
}

#[inline(always)]
fn unpack(qs: &[u8; 16], d: f32, y: &mut [f32; 32]) {
    for j in 0..16 {
        y[j] = d * KVALUES_IQ4NL[(qs[j] & 0xF) as usize] as f32;
        y[j + 16] = d * KVALUES_IQ4NL[(qs[j] >> 4) as usize] as f32;
    }
}

// ---------------------------------------------------------------- IQ4_NL

/// `block_iq4_nl`: x = d · kvalues\[q\].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIQ4NL {
    pub d: Half,
    pub qs: [u8; 16],
}

impl BlockIQ4NL {
    /// `quantize_row_iq4_nl_impl(32, 32, ..., ntry = 7)`: the indices are
    /// chosen against the unrounded scale.
    fn quantize_with(x: &[f32; 32], qw: Option<&[f32; 32]>) -> Self {
        let w = weights32(x, qw, sigma2(x));
        let d = search_scale(x, &w);
        Self::from_scale(x, d, Scalar)
    }

    fn from_scale<K: Kernels>(x: &[f32; 32], d: f32, k: K) -> Self {
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0u8; 16];
        k.iq4_indices(x, id, &mut qs);
        BlockIQ4NL { d: Half::from_f32(d), qs }
    }

    /// Blocks 8 at a time, the 8 scale searches by `k` (the blocks are
    /// independent); a shorter tail block by block.
    fn quantize_blocks_imatrix<K: Kernels>(x: &[[f32; 32]], qw: Option<&[[f32; 32]]>, y: &mut [Self], k: K) {
        let mut i = 0;
        while i + 8 <= x.len().min(y.len()) {
            let xs: &[[f32; 32]; 8] = x[i..i + 8].try_into().expect("8 blocks");
            let mut w = [[0f32; 32]; 8];
            for j in 0..8 {
                w[j] = weights32(&xs[j], qw.map(|q| &q[i + j]), sigma2(&xs[j]));
            }
            let mut d = [0f32; 8];
            k.iq4_scales(xs, &w, &mut d);
            for j in 0..8 {
                y[i + j] = Self::from_scale(&xs[j], d[j], k);
            }
            i += 8;
        }
        for j in i..x.len().min(y.len()) {
            y[j] = Self::quantize_with(&x[j], qw.map(|q| &q[j]));
        }
    }
}

impl Block<32> for BlockIQ4NL {
    const TYPE: GgmlType = GgmlType::IQ4_NL;
    fn dequantize(&self, y: &mut [f32; 32]) {
        unpack(&self.qs, self.d.to_f32(), y);
    }
}

impl Quantize<32> for BlockIQ4NL {
    fn quantize(x: &[f32; 32]) -> Self {
        Self::quantize_with(x, None)
    }
    fn quantize_row_imatrix(x: &[[f32; 32]], imatrix: &[[f32; 32]], y: &mut [Self]) {
        for ((xb, qw), yb) in x.iter().zip(imatrix).zip(y) {
            *yb = Self::quantize_with(xb, Some(qw));
        }
    }
    fn quantize_blocks_with<K: Kernels>(x: &[[f32; 32]], y: &mut [Self], k: K) {
        Self::quantize_blocks_imatrix(x, None, y, k)
    }
    fn quantize_row_imatrix_with<K: Kernels>(x: &[[f32; 32]], imatrix: &[[f32; 32]], y: &mut [Self], k: K) {
        Self::quantize_blocks_imatrix(x, Some(imatrix), y, k)
    }
}

// ---------------------------------------------------------------- IQ4_XS

/// `block_iq4_xs`: x = d · (ls − 32) · kvalues\[q\] with a 6-bit `ls` per 32
/// values (low nibbles in `scales_l`, high 2 bits in the u16 `scales_h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIQ4XS {
    pub d: Half,
    pub scales_h: [u8; 2],
    pub scales_l: [u8; 4],
    pub qs: [u8; 128],
}

impl BlockIQ4XS {
    /// `quantize_row_iq4_nl_impl(256, 32, ..., ntry = 7)`: the sub-block
    /// scales are quantized against the unrounded super-block scale.
    fn quantize_with<K: Kernels>(x: &[f32; QK_K], qw: Option<&[f32; QK_K]>, k: K) -> Self {
        let s2 = sigma2(x);
        let xs: &[[f32; 32]; 8] = bytemuck::cast_ref(x);
        let qws: Option<&[[f32; 32]; 8]> = qw.map(bytemuck::cast_ref);
        let mut scales = [0f32; 8];
        let mut max_scale = 0.0f32;
        let mut amax_scale = 0.0f32;
        let mut w = [[0f32; 32]; 8];
        for ib in 0..8 {
            w[ib] = weights32(&xs[ib], qws.map(|q| &q[ib]), s2);
        }
        // search_scale per group of 32
        k.iq4_scales(xs, &w, &mut scales);
        for ib in 0..8 {
            if scales[ib].abs() > amax_scale {
                amax_scale = scales[ib].abs();
                max_scale = scales[ib];
            }
        }
        let d = -max_scale / 32.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut out = BlockIQ4XS { d: Half::from_f32(d), scales_h: [0; 2], scales_l: [0; 4], qs: [0; 128] };
        let mut scales_h = 0u16;
        let qs: &mut [[u8; 16]; 8] = bytemuck::cast_mut(&mut out.qs);
        for ib in 0..8 {
            let l = nearest_int(id * scales[ib]).clamp(-32, 31);
            let dl = d * l as f32;
            let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
            k.iq4_indices(&xs[ib], idl, &mut qs[ib]);
            let l = (l + 32) as u8;
            if ib % 2 == 0 {
                out.scales_l[ib / 2] = l & 0xF;
            } else {
                out.scales_l[ib / 2] |= (l & 0xF) << 4;
            }
            scales_h |= ((l >> 4) as u16) << (2 * ib);
        }
        out.scales_h = scales_h.to_le_bytes();
        out
    }
}

impl Block<QK_K> for BlockIQ4XS {
    const TYPE: GgmlType = GgmlType::IQ4_XS;
    fn dequantize(&self, y: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        let scales_h = u16::from_le_bytes(self.scales_h);
        let qs: &[[u8; 16]; 8] = bytemuck::cast_ref(&self.qs);
        let ys: &mut [[f32; 32]; 8] = bytemuck::cast_mut(y);
        for ib in 0..8 {
            let ls =
                ((self.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF) as i32 | ((((scales_h >> (2 * ib)) & 3) as i32) << 4);
            unpack(&qs[ib], d * (ls - 32) as f32, &mut ys[ib]);
        }
    }
}

impl Quantize<QK_K> for BlockIQ4XS {
    fn quantize(x: &[f32; QK_K]) -> Self {
        Self::quantize_with(x, None, Scalar)
    }
    fn quantize_row_imatrix(x: &[[f32; QK_K]], imatrix: &[[f32; QK_K]], y: &mut [Self]) {
        Self::quantize_row_imatrix_with(x, imatrix, y, Scalar)
    }
    fn quantize_blocks_with<K: Kernels>(x: &[[f32; QK_K]], y: &mut [Self], k: K) {
        for (xb, yb) in x.iter().zip(y) {
            *yb = Self::quantize_with(xb, None, k);
        }
    }
    fn quantize_row_imatrix_with<K: Kernels>(x: &[[f32; QK_K]], imatrix: &[[f32; QK_K]], y: &mut [Self], k: K) {
        for ((xb, qw), yb) in x.iter().zip(imatrix).zip(y) {
            *yb = Self::quantize_with(xb, Some(qw), k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::testutil::*;

    fn check<B: Quantize<N>, const N: usize>(rel: f32) {
        for (name, x) in adversarial_blocks::<N>(0x194 + B::TYPE as u64) {
            let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
            if amax > 65504.0 * 127.0 / 2.0 {
                continue;
            }
            let mut y = [0f32; N];
            B::quantize(&x).dequantize(&mut y);
            let bound = rel * amax + 8.0 * amax * 2f32.powi(-11) + 127.0 * 32.0 * 2f32.powi(-24);
            for j in 0..N {
                assert!((y[j] - x[j]).abs() <= bound, "{:?} {name}[{j}]: {} vs {}", B::TYPE, y[j], x[j]);
            }
        }
    }

    #[test]
    fn round_trip_bounds() {
        // widest table gap is 24/127 of the group's scale (89 → 113); the x²
        // weighted fit may stretch the scale, so allow a bit more than half of it
        check::<BlockIQ4NL, 32>(0.13);
        // plus 6-bit sub-block scales relative to the largest
        check::<BlockIQ4XS, QK_K>(0.2);
    }

    #[test]
    fn all_zero_xs_block_has_negative_zero_scale() {
        // d = -max_scale/32 with max_scale = 0 is -0.0, stored as 0x8000 like ggml
        let b = BlockIQ4XS::quantize(&[0f32; QK_K]);
        assert_eq!(b.d.bits(), 0x8000);
        let n = BlockIQ4NL::quantize(&[0f32; 32]);
        assert_eq!(n.d.bits(), 0);
        // index of 0.0 is the table's 1 (nearest to 0)
        assert_eq!(n.qs, [0x88; 16]);
    }

    #[test]
    fn table_values_are_reproduced() {
        let mut x = [0f32; 32];
        for j in 0..32 {
            x[j] = KVALUES_IQ4NL[j % 16] as f32 * 0.01;
        }
        let mut y = [0f32; 32];
        BlockIQ4NL::quantize(&x).dequantize(&mut y);
        for j in 0..32 {
            assert!((y[j] - x[j]).abs() <= 0.01 * 127.0 * 2f32.powi(-10), "{j}: {} {}", y[j], x[j]);
        }
    }
}
