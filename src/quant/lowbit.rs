//! The 1–2 bit types: Q1_0 (signs with the mean magnitude), Q2_0 (four
//! levels −1…2 of the max magnitude) and the ternary TQ1_0 / TQ2_0 (BitNet
//! b1.58: levels −1, 0, 1 of the max magnitude). ggml quantizes all of them
//! with their `_ref` kernels only, ignoring an imatrix.

use bytemuck::{Pod, Zeroable};

use super::float::Half;
use super::search::{amax_macro, first_abs_max, trunc_i32};
use super::{Block, Quantize, QK_K};
use crate::gguf::GgmlType;

/// Types that ignore an imatrix: the row path is the block path.
macro_rules! ignore_imatrix {
    ($qk:expr) => {
        fn quantize_row_imatrix(x: &[[f32; $qk]], _imatrix: &[[f32; $qk]], y: &mut [Self]) {
            for (xb, yb) in x.iter().zip(y) {
                *yb = Self::quantize(xb);
            }
        }
    };
}

/// `(int)lroundf(f) + 1` as glibc and the x86-64 build compute it: round half
/// away from zero to a `long` (`LONG_MIN` for NaN and out-of-range values),
/// plus one, narrowed to `int`.
#[inline(always)]
fn lround_plus1(f: f32) -> i32 {
    let l = if f.is_nan() || f.abs() >= 9.223372e18 { i64::MIN } else { f.round() as i64 };
    l.wrapping_add(1) as i32
}

// ---------------------------------------------------------------- Q1_0

pub const QK1_0: usize = 128;

/// `block_q1_0`: x = ±d, d the mean |x|; bit set for x ≥ 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ1_0 {
    pub d: Half,
    pub qs: [u8; QK1_0 / 8],
}

impl Block<QK1_0> for BlockQ1_0 {
    const TYPE: GgmlType = GgmlType::Q1_0;
    fn dequantize(&self, y: &mut [f32; QK1_0]) {
        let d = self.d.to_f32();
        let neg_d = -d;
        for j in 0..QK1_0 {
            y[j] = if (self.qs[j / 8] >> (j % 8)) & 1 != 0 { d } else { neg_d };
        }
    }
}

impl Quantize<QK1_0> for BlockQ1_0 {
    /// `quantize_row_q1_0_ref`
    fn quantize(x: &[f32; QK1_0]) -> Self {
        let mut sum_abs = 0.0f32;
        for &v in x {
            sum_abs += v.abs();
        }
        let d = sum_abs / QK1_0 as f32;
        let mut qs = [0u8; QK1_0 / 8];
        for j in 0..QK1_0 {
            if x[j] >= 0.0 {
                qs[j / 8] |= 1 << (j % 8);
            }
        }
        BlockQ1_0 { d: Half::from_f32(d), qs }
    }
    ignore_imatrix!(QK1_0);
}

// ---------------------------------------------------------------- Q2_0

pub const QK2_0: usize = 64;

/// `block_q2_0`: x = (q − 1)·d with q in 0..4, d the max |x|.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ2_0 {
    pub d: Half,
    pub qs: [u8; QK2_0 / 4],
}

impl Block<QK2_0> for BlockQ2_0 {
    const TYPE: GgmlType = GgmlType::Q2_0;
    fn dequantize(&self, y: &mut [f32; QK2_0]) {
        let d = self.d.to_f32();
        for j in 0..QK2_0 {
            let q = (self.qs[j / 4] >> ((j % 4) * 2)) & 3;
            y[j] = (q as i32 - 1) as f32 * d;
        }
    }
}

impl Quantize<QK2_0> for BlockQ2_0 {
    /// `quantize_row_q2_0_ref`
    fn quantize(x: &[f32; QK2_0]) -> Self {
        let (d, _) = first_abs_max(x);
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0u8; QK2_0 / 4];
        for j in 0..QK2_0 {
            let q = trunc_i32((x[j] * id).round()).wrapping_add(1).clamp(0, 3);
            qs[j / 4] |= (q as u8) << ((j % 4) * 2);
        }
        BlockQ2_0 { d: Half::from_f32(d), qs }
    }
    ignore_imatrix!(QK2_0);
}

// ---------------------------------------------------------------- TQ1_0

/// `block_tq1_0`: ternary values packed five per byte in base 3 (`qs`, 240
/// values) and four per byte (`qh`, 16 values), scaled so a byte's trits are
/// read back by multiplying by powers of three; x = (t − 1)·d.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockTQ1_0 {
    pub qs: [u8; 48],
    pub qh: [u8; 4],
    pub d: Half,
}

/// Trits `t0 t1 …` (most significant first) as one byte, ceil(q·256/243).
#[inline(always)]
fn pack_trits(trits: impl Iterator<Item = i32>, extra_shift: bool) -> u8 {
    let mut q = 0u8;
    for t in trits {
        q = q.wrapping_mul(3).wrapping_add(t as u8);
    }
    if extra_shift {
        q = q.wrapping_mul(3);
    }
    (q as u32 * 256).div_ceil(243) as u8
}

/// Trit `n` (most significant first) of a packed byte.
#[inline(always)]
fn unpack_trit(byte: u8, n: usize) -> i32 {
    const POW3: [u8; 6] = [1, 3, 9, 27, 81, 243];
    let q = byte.wrapping_mul(POW3[n]);
    ((q as u16 * 3) >> 8) as i32
}

impl Block<QK_K> for BlockTQ1_0 {
    const TYPE: GgmlType = GgmlType::TQ1_0;
    fn dequantize(&self, y: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        let mut k = 0;
        // values 0..160: byte m of qs[0..32] holds values m + 32n
        // values 160..240: byte m of qs[32..48] holds values 160 + m + 16n
        for (start, width) in [(0usize, 32usize), (32, 16)] {
            for n in 0..5 {
                for m in 0..width {
                    y[k] = (unpack_trit(self.qs[start + m], n) - 1) as f32 * d;
                    k += 1;
                }
            }
        }
        // values 240..256: byte j of qh holds values 240 + j + 4n
        for n in 0..4 {
            for j in 0..4 {
                y[k] = (unpack_trit(self.qh[j], n) - 1) as f32 * d;
                k += 1;
            }
        }
    }
}

impl Quantize<QK_K> for BlockTQ1_0 {
    /// `quantize_row_tq1_0_ref`
    fn quantize(x: &[f32; QK_K]) -> Self {
        let d = amax_macro(x);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let trit = |v: f32| lround_plus1(v * id);
        let mut out = BlockTQ1_0 { qs: [0; 48], qh: [0; 4], d: Half::from_f32(d) };
        for m in 0..32 {
            out.qs[m] = pack_trits((0..5).map(|n| trit(x[m + 32 * n])), false);
        }
        for m in 0..16 {
            out.qs[32 + m] = pack_trits((0..5).map(|n| trit(x[160 + m + 16 * n])), false);
        }
        for j in 0..4 {
            out.qh[j] = pack_trits((0..4).map(|n| trit(x[240 + j + 4 * n])), true);
        }
        out
    }
    ignore_imatrix!(QK_K);
}

// ---------------------------------------------------------------- TQ2_0

/// `block_tq2_0`: ternary values as 2-bit fields; x = (q − 1)·d.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockTQ2_0 {
    pub qs: [u8; 64],
    pub d: Half,
}

impl Block<QK_K> for BlockTQ2_0 {
    const TYPE: GgmlType = GgmlType::TQ2_0;
    fn dequantize(&self, y: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        // value 128c + 32l + m is bits 2l of byte 32c + m
        for c in 0..2 {
            for l in 0..4 {
                for m in 0..32 {
                    let q = ((self.qs[32 * c + m] >> (2 * l)) & 3) as i32;
                    y[128 * c + 32 * l + m] = (q - 1) as f32 * d;
                }
            }
        }
    }
}

impl Quantize<QK_K> for BlockTQ2_0 {
    /// `quantize_row_tq2_0_ref`
    fn quantize(x: &[f32; QK_K]) -> Self {
        let d = amax_macro(x);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0u8; 64];
        for c in 0..2 {
            for m in 0..32 {
                let mut q = 0u8;
                for n in 0..4 {
                    let xi = lround_plus1(x[128 * c + 32 * n + m] * id);
                    q = q.wrapping_add(((xi & 3) << (2 * n)) as u8);
                }
                qs[32 * c + m] = q;
            }
        }
        BlockTQ2_0 { qs, d: Half::from_f32(d) }
    }
    ignore_imatrix!(QK_K);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::testutil::adversarial_blocks;

    fn ternary_round_trip<B: Quantize<QK_K>>() {
        for (name, x) in adversarial_blocks::<QK_K>(11 + B::TYPE as u64) {
            let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
            let mut y = [0f32; QK_K];
            B::quantize(&x).dequantize(&mut y);
            for j in 0..QK_K {
                // levels −d, 0, d with d = fp16(max|x|): error ≤ d/2 (+ fp16 rounding)
                let bound = amax * 0.5 * (1.0 + 2f32.powi(-10)) + 2f32.powi(-24);
                assert!((y[j] - x[j]).abs() <= bound, "{:?} {name}[{j}] {} {}", B::TYPE, y[j], x[j]);
            }
        }
    }

    #[test]
    fn ternary_types_round_trip() {
        ternary_round_trip::<BlockTQ1_0>();
        ternary_round_trip::<BlockTQ2_0>();
    }

    #[test]
    fn ternary_values_are_exact() {
        let mut x = [0f32; QK_K];
        for (j, v) in x.iter_mut().enumerate() {
            *v = [-1.0f32, 0.0, 1.0][(j * 7 + j / 5) % 3] * 0.5;
        }
        let mut y = [0f32; QK_K];
        BlockTQ1_0::quantize(&x).dequantize(&mut y);
        assert_eq!(y, x);
        BlockTQ2_0::quantize(&x).dequantize(&mut y);
        assert_eq!(y, x);
    }

    #[test]
    fn q1_q2_round_trip() {
        let mut x = [0f32; QK2_0];
        for (j, v) in x.iter_mut().enumerate() {
            *v = [-1.0f32, 0.0, 1.0, 2.0][j % 4] * 0.25;
        }
        let mut y = [0f32; QK2_0];
        BlockQ2_0::quantize(&x).dequantize(&mut y);
        // d = max = 0.5: levels -0.5, 0, 0.5, 1.0 ≠ the -0.25 grid; check the nearest level
        for j in 0..QK2_0 {
            assert!((y[j] - x[j]).abs() <= 0.25, "{j}");
        }
        let s: [f32; QK1_0] = std::array::from_fn(|j| if j % 3 == 0 { -2.0 } else { 1.0 });
        let mut z = [0f32; QK1_0];
        BlockQ1_0::quantize(&s).dequantize(&mut z);
        let mean = s.iter().map(|v| v.abs()).sum::<f32>() / QK1_0 as f32;
        for j in 0..QK1_0 {
            assert_eq!(z[j], mean.copysign(s[j]));
        }
        let _ = BlockQ2_0::quantize(&[f32::NAN; QK2_0]);
        let _ = BlockTQ1_0::quantize(&[f32::INFINITY; QK_K]);
        let _ = BlockTQ2_0::quantize(&[f32::NAN; QK_K]);
    }
}
