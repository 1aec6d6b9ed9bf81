//! The FP4 types: MXFP4 (OCP microscaling: 32 E2M1 values with a shared
//! E8M0 exponent) and NVFP4 (64 values in groups of 16, each with an unsigned
//! E4M3 scale). ggml stores the E2M1 values doubled (`kvalues_mxfp4`) and
//! halves the scales. Both are quantized by their `_ref` kernels only.

use bytemuck::{Pod, Zeroable};

use super::search::{first_abs_max, trunc_i32};
use super::{Block, Quantize};
use crate::gguf::GgmlType;

/// ggml's `kvalues_mxfp4`: E2M1 values times two.
pub const KVALUES_MXFP4: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// `block_mxfp4`: x = kvalues\[q\] · 2^(e − 128).
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

/// `best_index_mxfp4` (shared with NVFP4): the first index with the smallest
/// |kvalues[i]·d − x|.
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
        let (amax, _) = first_abs_max(x);
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

// ---------------------------------------------------------------- NVFP4

/// Values per NVFP4 scale group.
const NVFP4_SUB: usize = 16;

/// `block_nvfp4`: x = kvalues\[q\] · ue4m3(d\[g\]) / 2 for the group g of 16.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockNVFP4 {
    pub d: [u8; 4],
    pub qs: [u8; 32],
}

/// ggml's `ggml_ue4m3_to_fp32`: an unsigned E4M3 value (bias 7, subnormals,
/// 0x7F read as 0), halved to match the doubled `kvalues`.
#[inline(always)]
pub fn ue4m3_to_f32(x: u8) -> f32 {
    if x == 0 || x == 0x7F {
        return 0.0;
    }
    let exp = ((x >> 3) & 0xF) as i32;
    let man = (x & 0x7) as i32;
    // ldexpf of these small values is exact: scale by an exact power of two
    let raw = if exp == 0 { man as f32 * 2f32.powi(-9) } else { (1.0 + man as f32 / 8.0) * 2f32.powi(exp - 7) };
    raw * 0.5
}

/// ggml's `ggml_fp32_to_ue4m3`: round half up on the mantissa, saturating at
/// 448 (0x7E); subnormals rounded by `(int)(x·512 + 0.5)`.
#[inline(always)]
pub fn f32_to_ue4m3(x: f32) -> u8 {
    if x.is_nan() || x <= 0.0 {
        return 0; // `!(x > 0.0f)`
    }
    let x = if x > 448.0 { 448.0 } else { x };
    let bits = x.to_bits();
    let fp32_exp = ((bits >> 23) & 0xFF) as i32 - 127;
    let fp32_man = ((bits >> 20) & 0x7) as i32;
    let mut exp = fp32_exp + 7;
    if exp <= 0 {
        let man = trunc_i32(x * 512.0 + 0.5).min(7);
        return if man < 1 { 0 } else { man as u8 };
    }
    if exp >= 15 {
        return 0x7E;
    }
    let mut man = fp32_man + ((bits >> 19) & 1) as i32;
    if man > 7 {
        man = 0;
        exp += 1;
        if exp >= 15 {
            return 0x7E;
        }
    }
    ((exp << 3) | man) as u8
}

impl Block<64> for BlockNVFP4 {
    const TYPE: GgmlType = GgmlType::NVFP4;
    fn dequantize(&self, y: &mut [f32; 64]) {
        let ys: &mut [[f32; NVFP4_SUB]; 4] = bytemuck::cast_mut(y);
        for (s, yb) in ys.iter_mut().enumerate() {
            let d = ue4m3_to_f32(self.d[s]);
            for j in 0..NVFP4_SUB / 2 {
                let q = self.qs[s * (NVFP4_SUB / 2) + j];
                yb[j] = KVALUES_MXFP4[(q & 0xF) as usize] as f32 * d;
                yb[j + NVFP4_SUB / 2] = KVALUES_MXFP4[(q >> 4) as usize] as f32 * d;
            }
        }
    }
}

impl Quantize<64> for BlockNVFP4 {
    /// `quantize_row_nvfp4_ref` (ggml ignores an imatrix for NVFP4).
    fn quantize(x: &[f32; 64]) -> Self {
        let xs: &[[f32; NVFP4_SUB]; 4] = bytemuck::cast_ref(x);
        let mut out = BlockNVFP4 { d: [0; 4], qs: [0; 32] };
        for (s, xb) in xs.iter().enumerate() {
            let (amax, _) = first_abs_max(xb);
            let ue = f32_to_ue4m3(amax / 6.0);
            out.d[s] = ue;
            let d = ue4m3_to_f32(ue);
            for j in 0..NVFP4_SUB / 2 {
                out.qs[s * (NVFP4_SUB / 2) + j] = best_index(xb[j], d) | (best_index(xb[j + NVFP4_SUB / 2], d) << 4);
            }
        }
        out
    }

    fn quantize_row_imatrix(x: &[[f32; 64]], _imatrix: &[[f32; 64]], y: &mut [Self]) {
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
    fn ue4m3_round_trips() {
        for x in 0..0x78u8 {
            let f = ue4m3_to_f32(x) * 2.0;
            assert_eq!(f32_to_ue4m3(f), x, "{x:02x} {f}");
        }
        // ggml's encoder saturates every value with exponent 15 (≥ 256) to 0x7E
        for x in 0x78..=0x7Eu8 {
            assert_eq!(f32_to_ue4m3(ue4m3_to_f32(x) * 2.0), 0x7E);
        }
        assert_eq!(f32_to_ue4m3(1e9), 0x7E);
        assert_eq!(f32_to_ue4m3(-1.0), 0);
        assert_eq!(f32_to_ue4m3(f32::NAN), 0);
        assert_eq!(ue4m3_to_f32(0x7F), 0.0);
        assert_eq!(ue4m3_to_f32(0x38), 0.5); // 1.0 halved
    }

    #[test]
    fn nvfp4_round_trip_bound() {
        for (name, x) in crate::quant::testutil::adversarial_blocks::<64>(6) {
            let mut y = [0f32; 64];
            BlockNVFP4::quantize(&x).dequantize(&mut y);
            for g in 0..4 {
                let amax = x[16 * g..16 * g + 16].iter().fold(0f32, |a, v| a.max(v.abs()));
                if !(0.1..=2000.0).contains(&amax) {
                    continue; // scales saturate at 448 and lose precision below 2^-6
                }
                for j in 16 * g..16 * g + 16 {
                    // the 3-bit scale mantissa rounds by up to 1/16; grid steps ≤ amax/3
                    assert!((y[j] - x[j]).abs() <= amax * 0.3, "{name}[{j}] {} {}", y[j], x[j]);
                }
            }
        }
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
