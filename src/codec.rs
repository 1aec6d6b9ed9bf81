//! Conversion of tensor rows between stored types and f32: the one place the
//! pipeline, `diff` and the sources go through.

use crate::error::{Error, Result};
use crate::gguf::GgmlType;

/// True when rows of `ty` can be decoded to f32.
pub fn can_decode(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
}

/// True when f32 rows can be encoded as `ty`.
pub fn can_encode(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
}

/// Decodes whole rows of `ty` in `src` into `dst` (`dst.len()` elements).
pub fn decode_rows(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<()> {
    let need = ty.row_size(dst.len() as u64);
    if need != Some(src.len() as u64) {
        return Err(Error::Other(format!("decode {ty}: {} bytes do not hold {} values", src.len(), dst.len())));
    }
    match ty {
        GgmlType::F32 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
            }
        }
        GgmlType::F16 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = half::f16::from_bits(u16::from_le_bytes([s[0], s[1]])).to_f32();
            }
        }
        GgmlType::BF16 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = f32::from_bits((u16::from_le_bytes([s[0], s[1]]) as u32) << 16);
            }
        }
        t => return Err(Error::Unsupported(format!("decoding {t} tensors is not supported"))),
    }
    Ok(())
}

/// Encodes f32 rows of length `n_per_row` as `ty` into `dst`; returns bytes written.
pub fn encode_rows(
    ty: GgmlType,
    src: &[f32],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
    dst: &mut [u8],
) -> Result<usize> {
    let _ = imatrix;
    let need = ty.row_size(n_per_row as u64).map(|r| r as usize * (src.len() / n_per_row.max(1)));
    if need != Some(dst.len()) || n_per_row == 0 || src.len() % n_per_row != 0 {
        return Err(Error::Other(format!("encode {ty}: bad buffer sizes")));
    }
    match ty {
        GgmlType::F32 => {
            for (d, s) in dst.chunks_exact_mut(4).zip(src) {
                d.copy_from_slice(&s.to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for (d, s) in dst.chunks_exact_mut(2).zip(src) {
                let h = if s.is_nan() {
                    0x7e00 | ((s.to_bits() >> 16) as u16 & 0x8000)
                } else {
                    half::f16::from_f32(*s).to_bits()
                };
                d.copy_from_slice(&h.to_le_bytes());
            }
        }
        GgmlType::BF16 => {
            for (d, s) in dst.chunks_exact_mut(2).zip(src) {
                d.copy_from_slice(&half::bf16::from_f32(*s).to_bits().to_le_bytes());
            }
        }
        t => return Err(Error::Unsupported(format!("encoding {t} tensors is not supported"))),
    }
    Ok(dst.len())
}
