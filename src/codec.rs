//! Conversion of tensor rows between stored types and f32: the one place the
//! pipeline, `diff` and the sources go through. The kernels are in
//! [`crate::quant`]; this module is the narrow interface to them.

use crate::error::Result;
use crate::gguf::GgmlType;
use crate::quant;

/// True when rows of `ty` can be decoded to f32.
pub fn can_decode(ty: GgmlType) -> bool {
    quant::can_dequantize(ty)
}

/// True when f32 rows can be encoded as `ty`.
pub fn can_encode(ty: GgmlType) -> bool {
    quant::can_quantize(ty)
}

/// Decodes whole rows of `ty` in `src` into `dst` (`dst.len()` elements).
pub fn decode_rows(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<()> {
    quant::dequantize_rows(ty, src, dst)
}

/// Encodes f32 rows of length `n_per_row` as `ty` into `dst` exactly as
/// llama.cpp's `ggml_quantize_chunk` does (with the importance weights when
/// given); returns the bytes written.
pub fn encode_rows(
    ty: GgmlType,
    src: &[f32],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
    dst: &mut [u8],
) -> Result<usize> {
    quant::quantize_rows(ty, src, n_per_row, imatrix, dst)
}
