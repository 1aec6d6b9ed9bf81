//! MXFP4 (OCP microscaling FP4): 32 E2M1 values with a shared E8M0 exponent.
//! ggml stores the E2M1 values doubled (`kvalues_mxfp4`) and halves the scale.

use bytemuck::{Pod, Zeroable};

use super::search::trunc_i32;
use super::{Block, Quantize};
use crate::gguf::GgmlType;

/// ggml's `kvalues_mxfp4`: E2M1 values times two.
pub const KVALUES_MXFP4: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// `block_mxfp4`: x = kvalues[q] · 2^(e − 128).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockMXFP4 {
    pub e: u8,
    pub qs: [u8; 16],
}

/// ggml's `ggml_e8m0_to_fp32_half`: 2^(e − 128) (subnormal for e < 2).
#[inline(always)]
pub fn e8m0_to_f32_half(e: u8) -> f32 {
    let bits = if e < 2 { 0x0020_0000u32 << e } else { ((e as u32) - 1) << 23 };
    f32::from_bits(bits)
}

/// `best_index_mxfp4`: the first index with the smallest |kvalues[i]·d − x|.
#[inline(always)]
fn best_index(x: f32, d: f32) -> u8 {
    let mut best = 0u8;
    let mut best_err = (KVALUES_MXFP4[0] as f32 * d - x).abs();
    for i in 1..16 {
        let err = (KVALUES_MXFP4[i] as f32 * d - x).abs();
        if err < best_err {
            best = i as u8;
            best_err = err;
        }
    }
    best
}

impl Block<32> for BlockMXFP4 {
    const TYPE: GgmlType = GgmlType::MXFP4;
    fn dequantize(&self, y: &mut [f32; 32]) {
        let d = e8m0_to_f32_half(self.e);
        for j in 0..16 {
            y[j] = KVALUES_MXFP4[(self.qs[j] & 0xF) as usize] as f32 * d;
            y[j + 16] = KVALUES_MXFP4[(self.qs[j] >> 4) as usize] as f32 * d;
        }
    }
}

impl Quantize<32> for BlockMXFP4 {
    /// `quantize_row_mxfp4_ref` (ggml ignores an imatrix for MXFP4).
    fn quantize(x: &[f32; 32]) -> Self {
        let mut amax = 0.0f32;
        for &v in x {
            if amax < v.abs() {
                amax = v.abs();
            }
        }
        // `(uint8_t)(floorf(log2f(amax)) - 2 + 127)`, libm's log2f as in C
        let e = if amax > 0.0 { trunc_i32(amax.log2().floor() - 2.0 + 127.0) as u8 } else { 0 };
        let d = e8m0_to_f32_half(e);
        let mut qs = [0u8; 16];
        for j in 0..16 {
            qs[j] = best_index(x[j], d) | (best_index(x[j + 16], d) << 4);
        }
        BlockMXFP4 { e, qs }
    }

    fn quantize_row_imatrix(x: &[[f32; 32]], _imatrix: &[[f32; 32]], y: &mut [Self]) {
        for (xb, yb) in x.iter().zip(y) {
            *yb = Self::quantize(xb);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_and_values() {
        assert_eq!(e8m0_to_f32_half(128), 1.0);
        assert_eq!(e8m0_to_f32_half(0), 2f32.powi(-128));
        assert_eq!(e8m0_to_f32_half(1), 2f32.powi(-127));
        assert_eq!(e8m0_to_f32_half(254), 2f32.powi(126));
        let mut x = [0f32; 32];
        for j in 0..32 {
            x[j] = KVALUES_MXFP4[j % 16] as f32 * 0.5; // exact E2M1 values, max 6 → e = 2 - 2 + 127 + ...
        }
        let b = BlockMXFP4::quantize(&x);
        let mut y = [0f32; 32];
        b.dequantize(&mut y);
        assert_eq!(y, x);
        assert_eq!(BlockMXFP4::quantize(&[0f32; 32]), BlockMXFP4 { e: 0, qs: [0; 16] });
    }

    #[test]
    fn round_trip_bound() {
        for (name, x) in crate::quant::testutil::adversarial_blocks::<32>(5) {
            let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
            if amax < 1e-30 {
                continue;
            }
            let mut y = [0f32; 32];
            BlockMXFP4::quantize(&x).dequantize(&mut y);
            // e = floor(log2 amax) - 2 puts amax in [4d, 8d) of the doubled grid, step ≤ 4d ≤ amax/2
            for j in 0..32 {
                assert!((y[j] - x[j]).abs() <= amax * 0.26 + 1.2e-38, "{name}[{j}] {} {}", y[j], x[j]);
            }
        }
    }
}
