//! Checks of encoded rows for non-finite values, with the rules of ggml's
//! `ggml_validate_row_data`, which llama-quantize applies to every tensor it
//! writes (quantized or copied): float types may hold no NaN or infinity, and
//! block types no non-finite fp16 scale (`d`, and `m`/`dmin` where the block
//! has one), no E8M0 exponent 0xFF.

use crate::gguf::GgmlType;

/// Where a row's data first fails validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalid {
    /// Index of the offending block (element for float types).
    pub block: usize,
    /// What is wrong, e.g. "NaN", "infinite fp16 scale".
    pub what: &'static str,
}

fn fp16_bad(b: &[u8], at: usize) -> bool {
    let h = u16::from_le_bytes([b[at], b[at + 1]]);
    h & 0x7c00 == 0x7c00
}

/// Byte offsets of the fp16 scales inside one block, per type.
fn fp16_fields(ty: GgmlType) -> Option<&'static [usize]> {
    use GgmlType::*;
    Some(match ty {
        Q1_0 | Q2_0 | Q4_0 | Q5_0 | Q8_0 | IQ4_NL | IQ4_XS | IQ2_XXS | IQ2_XS | IQ2_S | IQ3_XXS | IQ3_S | IQ1_S => &[0],
        Q4_1 | Q5_1 | Q4_K | Q5_K => &[0, 2],
        Q2_K => &[80, 82],
        Q3_K => &[108],
        Q6_K => &[208],
        TQ1_0 => &[52],
        TQ2_0 => &[64],
        _ => return None,
    })
}

/// True when some little-endian u16 of `data` has all the bits of `exp` set
/// (a NaN or infinity of F16 (`0x7c00`) or BF16 (`0x7f80`)).
fn any_exponent_all_ones_u16(data: &[u8], exp: u16) -> bool {
    data.chunks(1024)
        .any(|c| c.chunks_exact(2).fold(false, |acc, b| acc | (u16::from_le_bytes([b[0], b[1]]) & exp == exp)))
}

/// The same for little-endian u32 (F32: `0x7f80_0000`).
fn any_exponent_all_ones_u32(data: &[u8], exp: u32) -> bool {
    data.chunks(2048).any(|c| {
        c.chunks_exact(4).fold(false, |acc, b| acc | (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & exp == exp))
    })
}

/// Validates `data`, whole blocks of `ty`. `None` when valid.
pub fn validate_rows(ty: GgmlType, data: &[u8]) -> Option<Invalid> {
    use GgmlType::*;
    let size = ty.type_size() as usize;
    let bad = |block, what| Some(Invalid { block, what });
    // Fast path for the float types: a branch-free scan (vectorized by the
    // compiler) for any all-ones exponent; the exact search only on a hit.
    let clean = match ty {
        F32 => !any_exponent_all_ones_u32(data, 0x7f80_0000),
        F16 => !any_exponent_all_ones_u16(data, 0x7c00),
        BF16 => !any_exponent_all_ones_u16(data, 0x7f80),
        _ => false,
    };
    if clean {
        return None;
    }
    match ty {
        F32 => data.chunks_exact(4).enumerate().find_map(|(i, b)| {
            let v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            if v.is_nan() {
                bad(i, "NaN")
            } else if v.is_infinite() {
                bad(i, "infinity")
            } else {
                None
            }
        }),
        F64 => data.chunks_exact(8).enumerate().find_map(|(i, b)| {
            let v = f64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
            (!v.is_finite()).then_some(Invalid { block: i, what: "non-finite value" })
        }),
        F16 => data.chunks_exact(2).enumerate().find_map(|(i, b)| {
            let h = u16::from_le_bytes([b[0], b[1]]) & 0x7fff;
            if h > 0x7c00 {
                bad(i, "NaN")
            } else if h == 0x7c00 {
                bad(i, "infinity (value too large for F16)")
            } else {
                None
            }
        }),
        BF16 => data.chunks_exact(2).enumerate().find_map(|(i, b)| {
            let h = u16::from_le_bytes([b[0], b[1]]) & 0x7fff;
            if h > 0x7f80 {
                bad(i, "NaN")
            } else if h == 0x7f80 {
                bad(i, "infinity")
            } else {
                None
            }
        }),
        Q8_K => data.chunks_exact(size).enumerate().find_map(|(i, b)| {
            (!f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite())
                .then_some(Invalid { block: i, what: "non-finite scale" })
        }),
        MXFP4 => data.chunks_exact(size).position(|b| b[0] == 0xff).and_then(|i| bad(i, "invalid E8M0 exponent 0xFF")),
        IQ1_M => data.chunks_exact(size).enumerate().find_map(|(i, b)| {
            // The fp16 scale is spread over the top nibbles of the four u16 scale words.
            let s = &b[QK_K_DIV8 + QK_K_DIV16..];
            let w = |k: usize| u16::from_le_bytes([s[2 * k], s[2 * k + 1]]);
            let scale = (w(0) >> 12) | ((w(1) >> 8) & 0x00f0) | ((w(2) >> 4) & 0x0f00) | (w(3) & 0xf000);
            (scale & 0x7c00 == 0x7c00).then_some(Invalid { block: i, what: "non-finite fp16 scale" })
        }),
        t => {
            let fields = fp16_fields(t)?;
            data.chunks_exact(size)
                .position(|b| fields.iter().any(|&at| fp16_bad(b, at)))
                .and_then(|i| bad(i, "non-finite fp16 scale (values too large for this type)"))
        }
    }
}

const QK_K_DIV8: usize = 256 / 8;
const QK_K_DIV16: usize = 256 / 16;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::quantize_rows;

    #[test]
    fn finite_rows_validate_and_overflows_do_not() {
        let x: Vec<f32> = (0..256).map(|i| (i as f32 - 128.0) * 0.01).collect();
        for &ty in crate::quant::QUANTIZABLE {
            let mut out = vec![0u8; ty.row_size(256).unwrap() as usize];
            quantize_rows(ty, &x, 256, None, &mut out).unwrap();
            assert_eq!(validate_rows(ty, &out), None, "{ty}");
        }
        // 1e9 overflows fp16: as F16 values and as the types' fp16 scales.
        let big = vec![1e9f32; 256];
        for ty in [GgmlType::F16, GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q2_K, GgmlType::Q3_K] {
            let mut out = vec![0u8; ty.row_size(256).unwrap() as usize];
            quantize_rows(ty, &big, 256, None, &mut out).unwrap();
            assert_eq!(validate_rows(ty, &out).map(|v| v.block), Some(0), "{ty}");
        }
        assert!(validate_rows(GgmlType::F32, &f32::NAN.to_le_bytes()).is_some());
        assert!(validate_rows(GgmlType::BF16, &0x7f80u16.to_le_bytes()).is_some());
    }
}
