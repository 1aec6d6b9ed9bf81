//! fp32 ↔ fp16 / bf16 conversions with ggml's exact semantics, and the
//! F32 / F16 / BF16 row kernels.
//!
//! ggml (built without F16C, as the golden x86-64 reference is) converts in
//! software (`ggml_compute_fp32_to_fp16` in `ggml-impl.h`, after Maratyszcza's
//! FP16 library): round to nearest even, subnormals kept, overflow to ±inf and
//! every NaN to `sign | 0x7E00` (the payload is dropped, unlike the `half`
//! crate). bf16 rounds to nearest even and quiets NaNs by setting bit 6.

use bytemuck::{Pod, Zeroable};

/// An IEEE binary16 value as stored in a block: two little-endian bytes,
/// alignment 1 so that block structs can be cast from any byte buffer.
#[derive(Clone, Copy, Default, PartialEq, Eq, Pod, Zeroable)]
#[repr(transparent)]
pub struct Half(pub [u8; 2]);

impl Half {
    pub const ZERO: Half = Half([0, 0]);

    /// The fp16 nearest to `x` (ggml's `GGML_FP32_TO_FP16`).
    #[inline]
    pub fn from_f32(x: f32) -> Half {
        Half(f32_to_f16(x).to_le_bytes())
    }
    #[inline]
    pub fn to_f32(self) -> f32 {
        f16_to_f32(self.bits())
    }
    #[inline]
    pub fn bits(self) -> u16 {
        u16::from_le_bytes(self.0)
    }
}

impl std::fmt::Debug for Half {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (0x{:04x})", self.to_f32(), self.bits())
    }
}

/// fp32 → fp16 bits exactly as ggml's `ggml_compute_fp32_to_fp16`.
///
/// The magnitude is rounded by the FPU: it is scaled so that adding a power
/// of two whose ulp equals the fp16 ulp of the result rounds it to nearest
/// even (this also produces fp16 subnormals and overflow to infinity).
#[inline]
pub fn f32_to_f16(x: f32) -> u16 {
    let scale_to_inf = f32::from_bits(0x7780_0000); // 2^112
    let scale_to_zero = f32::from_bits(0x0880_0000); // 2^-110
    let mut base = (x.abs() * scale_to_inf) * scale_to_zero;

    let w = x.to_bits();
    let shl1_w = w.wrapping_add(w);
    let sign = w & 0x8000_0000;
    let bias = (shl1_w & 0xFF00_0000).max(0x7100_0000);

    #[allow(clippy::assign_op_pattern)] // the C operand order, kept literally
    {
        base = f32::from_bits((bias >> 1) + 0x0780_0000) + base;
    }
    let bits = base.to_bits();
    let exp_bits = (bits >> 13) & 0x0000_7C00;
    let mantissa_bits = bits & 0x0000_0FFF;
    let nonsign = exp_bits + mantissa_bits;
    let magnitude = if shl1_w > 0xFF00_0000 { 0x7E00 } else { nonsign };
    ((sign >> 16) | magnitude) as u16
}

/// fp16 bits → fp32 exactly as ggml's `ggml_compute_fp16_to_fp32`.
///
/// Exact for every finite value; a NaN keeps its payload and comes back
/// quiet, which is what the x86 multiply in ggml's version does to it.
#[inline]
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h as u32) & 0x8000) << 16;
    let exp = (h >> 10) & 0x1F;
    let mant = (h & 0x03FF) as u32;
    if exp == 0x1F {
        // inf, or NaN (quieted: ggml multiplies it by 2^-112, which sets the quiet bit)
        let nan_quiet = if mant != 0 { 0x0040_0000 } else { 0 };
        return f32::from_bits(sign | 0x7F80_0000 | nan_quiet | (mant << 13));
    }
    let two_w = (h as u32) << 17; // the sign bit shifts out
    let bits = if two_w < (1 << 27) {
        // Subnormal (or zero): build 0.5 + m·2^-24 and subtract 0.5 (exact).
        let denorm = f32::from_bits((two_w >> 17) | (126 << 23)) - 0.5;
        denorm.to_bits()
    } else {
        // Normal: rebias the exponent (exact power-of-two scaling).
        let exp_scale = f32::from_bits(0x0780_0000); // 2^-112
        (f32::from_bits((two_w >> 4) + (0xE0 << 23)) * exp_scale).to_bits()
    };
    f32::from_bits(sign | bits)
}

/// fp32 → bf16 bits as ggml's `ggml_compute_fp32_to_bf16`: round to nearest
/// even; NaNs keep their upper payload bits and are made quiet.
#[inline]
pub fn f32_to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    if (u & 0x7FFF_FFFF) > 0x7F80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    (u.wrapping_add(0x7FFF + ((u >> 16) & 1)) >> 16) as u16
}

/// bf16 bits → fp32 (exact).
#[inline]
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// F32 "quantization": the little-endian bytes of `src`.
pub fn f32_row_to_bytes(src: &[f32], dst: &mut [u8]) {
    for (x, out) in src.iter().zip(dst.chunks_exact_mut(4)) {
        out.copy_from_slice(&x.to_le_bytes());
    }
}

pub fn bytes_to_f32_row(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(4).zip(dst.iter_mut()) {
        *y = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

pub fn f32_row_to_f16(src: &[f32], dst: &mut [u8]) {
    for (x, out) in src.iter().zip(dst.chunks_exact_mut(2)) {
        out.copy_from_slice(&f32_to_f16(*x).to_le_bytes());
    }
}

pub fn f16_row_to_f32(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(2).zip(dst.iter_mut()) {
        *y = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
    }
}

pub fn f32_row_to_bf16(src: &[f32], dst: &mut [u8]) {
    for (x, out) in src.iter().zip(dst.chunks_exact_mut(2)) {
        out.copy_from_slice(&f32_to_bf16(*x).to_le_bytes());
    }
}

pub fn bf16_row_to_f32(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(2).zip(dst.iter_mut()) {
        *y = bf16_to_f32(u16::from_le_bytes([b[0], b[1]]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Round-to-nearest-even fp32 → fp16 written from the IEEE definition, to
    /// cross-check ggml's float-trick version on non-NaN inputs.
    fn f16_reference(x: f32) -> u16 {
        if x.is_nan() {
            return (((x.to_bits() >> 16) & 0x8000) | 0x7E00) as u16;
        }
        half::f16::from_f32(x).to_bits()
    }

    fn lcg(state: &mut u64) -> u32 {
        *state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (*state >> 32) as u32
    }

    #[test]
    fn f16_round_trips_every_value() {
        for h in 0..=u16::MAX {
            let f = f16_to_f32(h);
            let is_nan = (h & 0x7C00) == 0x7C00 && (h & 0x3FF) != 0;
            if is_nan {
                assert!(f.is_nan());
                // payload kept, quiet bit set
                assert_eq!(f.to_bits() & 0x7FFF_FFFF, 0x7FC0_0000 | (((h & 0x3FF) as u32) << 13), "{h:04x}");
                assert_eq!(f32_to_f16(f), (h & 0x8000) | 0x7E00);
            } else {
                assert_eq!(f.to_bits(), half::f16::from_bits(h).to_f32().to_bits(), "{h:04x}");
                assert_eq!(f32_to_f16(f), h, "{h:04x}");
            }
        }
    }

    #[test]
    fn f16_corner_cases() {
        assert_eq!(f32_to_f16(0.0), 0x0000);
        assert_eq!(f32_to_f16(-0.0), 0x8000);
        assert_eq!(f32_to_f16(65504.0), 0x7BFF);
        assert_eq!(f32_to_f16(65519.99), 0x7BFF); // below the halfway point to 65536
        assert_eq!(f32_to_f16(65520.0), 0x7C00); // tie rounds to even = overflow
        assert_eq!(f32_to_f16(1e10), 0x7C00);
        assert_eq!(f32_to_f16(-1e10), 0xFC00);
        assert_eq!(f32_to_f16(f32::INFINITY), 0x7C00);
        assert_eq!(f32_to_f16(f32::NEG_INFINITY), 0xFC00);
        assert_eq!(f32_to_f16(f32::from_bits(0x7F80_0001)), 0x7E00); // signalling NaN
        assert_eq!(f32_to_f16(f32::from_bits(0xFFC1_2345)), 0xFE00); // negative NaN with payload
        assert_eq!(f32_to_f16(f32::from_bits(0x7FFF_FFFF)), 0x7E00);
        // smallest subnormal 2^-24, and ties around it
        assert_eq!(f32_to_f16(2f32.powi(-24)), 0x0001);
        assert_eq!(f32_to_f16(2f32.powi(-25)), 0x0000); // tie to even (0)
        assert_eq!(f32_to_f16(1.5 * 2f32.powi(-24)), 0x0002); // tie to even (2)
        assert_eq!(f32_to_f16(2f32.powi(-25) * 1.0001), 0x0001);
        assert_eq!(f32_to_f16(-2f32.powi(-26)), 0x8000);
        assert_eq!(f32_to_f16(f32::from_bits(1)), 0x0000); // fp32 subnormal
                                                           // ties between normals: 1 + 2^-11 is halfway between 1 and 1 + 2^-10
        assert_eq!(f32_to_f16(1.0 + 2f32.powi(-11)), 0x3C00);
        assert_eq!(f32_to_f16(1.0 + 3.0 * 2f32.powi(-11)), 0x3C02);
        // largest subnormal → smallest normal carry
        assert_eq!(f32_to_f16(2f32.powi(-14) - 2f32.powi(-25)), 0x0400);
    }

    #[test]
    fn f16_matches_ieee_rounding_on_random_bits() {
        let mut s = 0x1234_5678u64;
        for _ in 0..2_000_000 {
            let bits = lcg(&mut s);
            let x = f32::from_bits(bits);
            assert_eq!(f32_to_f16(x), f16_reference(x), "{bits:08x}");
        }
        // dense sweep of the fp16 range (every fp32 bit pattern with a step)
        let mut bits = 0x3000_0000u32;
        while bits < 0x4800_0000 {
            let x = f32::from_bits(bits);
            assert_eq!(f32_to_f16(x), f16_reference(x), "{bits:08x}");
            assert_eq!(f32_to_f16(-x), f16_reference(-x), "-{bits:08x}");
            bits += 0x1FF;
        }
    }

    #[test]
    fn bf16_corner_cases() {
        assert_eq!(f32_to_bf16(1.0), 0x3F80);
        assert_eq!(f32_to_bf16(-0.0), 0x8000);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3F80_8000)), 0x3F80); // tie, even stays
        assert_eq!(f32_to_bf16(f32::from_bits(0x3F81_8000)), 0x3F82); // tie, odd rounds up
        assert_eq!(f32_to_bf16(f32::from_bits(0x3F80_8001)), 0x3F81);
        assert_eq!(f32_to_bf16(f32::MAX), 0x7F80); // overflow to inf
        assert_eq!(f32_to_bf16(f32::INFINITY), 0x7F80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x7F80_0001)), 0x7FC0); // sNaN quieted, payload high bits
        assert_eq!(f32_to_bf16(f32::from_bits(0xFF81_0000)), 0xFFC1);
        assert_eq!(f32_to_bf16(f32::from_bits(0x0000_8000)), 0x0000); // subnormal tie to even
        assert_eq!(f32_to_bf16(f32::from_bits(0x0001_8000)), 0x0002);
        for h in 0..=u16::MAX {
            let f = bf16_to_f32(h);
            if !f.is_nan() {
                assert_eq!(f32_to_bf16(f), h);
            }
        }
        let mut s = 99u64;
        for _ in 0..1_000_000 {
            let x = f32::from_bits(lcg(&mut s));
            assert_eq!(f32_to_bf16(x), half::bf16::from_f32(x).to_bits(), "{:08x}", x.to_bits());
        }
    }

    #[test]
    fn rows() {
        let x = [1.0f32, -2.5, 65504.0, f32::NAN];
        let mut b = [0u8; 8];
        f32_row_to_f16(&x, &mut b);
        let mut y = [0f32; 4];
        f16_row_to_f32(&b, &mut y);
        assert_eq!(&y[..3], &x[..3]);
        assert!(y[3].is_nan());
        f32_row_to_bf16(&x, &mut b);
        bf16_row_to_f32(&b, &mut y);
        assert_eq!(&y[..3], &[1.0, -2.5, 65536.0]);
        let mut b4 = [0u8; 16];
        f32_row_to_bytes(&x, &mut b4);
        bytes_to_f32_row(&b4, &mut y);
        assert_eq!(y[1], -2.5);
    }
}
