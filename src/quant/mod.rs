//! Quantization kernels, bit-identical to llama.cpp's `ggml-quants.c`.
//!
//! Every supported type has a plain scalar implementation that reproduces
//! ggml's reference build (x86-64, no FMA contraction) byte for byte: the
//! same float operations in the same order, ties-to-even `nearest_int`, the
//! truncating float → int conversions of the legacy types, first-maximum tie
//! breaks, fp16 rounding of the scales (k-quants requantize with the rounded
//! scale) and ggml's fp16 NaN handling. These scalar kernels are the oracle
//! that faster variants are tested against.
//!
//! Layout: [`float`] (F32/F16/BF16 and the fp16/bf16 conversions),
//! [`legacy`] (Q4_0 … Q8_1), [`kquants`] (Q2_K … Q8_K), [`iq4`] (IQ4_NL,
//! IQ4_XS), [`fp4`] (MXFP4, NVFP4), [`lowbit`] (Q1_0, Q2_0, TQ1_0, TQ2_0)
//! and [`search`] (the shared scale searches).
//!
//! Entry points are [`quantize_rows`] and [`dequantize_rows`], pure functions
//! over slices: callers parallelise by splitting rows (each row is
//! independent, so the output does not depend on how the work is split).

// The kernels index fixed-size arrays in the C code's loop order: it keeps
// the evaluation order evident and the bounds checks compile away.
#![allow(clippy::needless_range_loop)]

use bytemuck::Pod;

use crate::error::{Error, Result};
use crate::gguf::GgmlType;

pub mod float;
pub mod fp4;
pub mod iq4;
pub mod kquants;
pub mod legacy;
pub mod lowbit;
pub mod search;
pub mod simd;
pub mod validate;

#[cfg(test)]
pub(crate) mod testutil;

pub use float::{bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16, Half};
pub use simd::{Backend, Kernels, Scalar};

/// Values per k-quant super-block.
pub const QK_K: usize = 256;

/// A ggml block type: `QK` values stored in one `#[repr(C)]` struct of bytes
/// (alignment 1, so a slice of blocks can be viewed in any byte buffer).
pub trait Block<const QK: usize>: Pod {
    const TYPE: GgmlType;
    /// ggml's `dequantize_row_*` for one block.
    fn dequantize(&self, y: &mut [f32; QK]);
}

/// A block type ggml can quantize to, with both of `ggml_quantize_chunk`'s paths.
pub trait Quantize<const QK: usize>: Block<QK> {
    /// The path taken without an importance matrix (`quantize_row_*_ref`,
    /// or for IQ4 the search weighted by x²).
    fn quantize(x: &[f32; QK]) -> Self;

    /// The path taken with an importance matrix, for one row (`x`, `imatrix`
    /// and `y` all cover the same row). Some types use statistics of the
    /// whole row, hence row granularity.
    fn quantize_row_imatrix(x: &[[f32; QK]], imatrix: &[[f32; QK]], y: &mut [Self]);

    /// [`Quantize::quantize`] over consecutive blocks with the hot loops done
    /// by `k` (the same bytes whatever `k` is; only the speed differs).
    fn quantize_blocks_with<K: Kernels>(x: &[[f32; QK]], y: &mut [Self], k: K) {
        let _ = k;
        for (xb, yb) in x.iter().zip(y.iter_mut()) {
            *yb = Self::quantize(xb);
        }
    }

    /// [`Quantize::quantize_row_imatrix`] with the hot loops done by `k`.
    fn quantize_row_imatrix_with<K: Kernels>(x: &[[f32; QK]], imatrix: &[[f32; QK]], y: &mut [Self], k: K) {
        let _ = k;
        Self::quantize_row_imatrix(x, imatrix, y)
    }
}

/// Types [`quantize_rows`] can produce (every type ggml quantizes without
/// lookup grids; the IQ1/IQ2/IQ3 types are not supported).
pub const QUANTIZABLE: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
    GgmlType::MXFP4,
    GgmlType::NVFP4,
    GgmlType::Q1_0,
    GgmlType::Q2_0,
    GgmlType::TQ1_0,
    GgmlType::TQ2_0,
];

/// Types [`quantize_rows`] can produce.
pub fn can_quantize(ty: GgmlType) -> bool {
    QUANTIZABLE.contains(&ty)
}

/// Types [`dequantize_rows`] can read.
pub fn can_dequantize(ty: GgmlType) -> bool {
    use GgmlType::*;
    can_quantize(ty) || matches!(ty, Q8_1 | Q8_K)
}

/// As `ggml_quantize_requires_imatrix`: types that cannot be made without one.
pub fn requires_imatrix(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(ty, IQ2_XXS | IQ2_XS | IQ1_S)
}

fn len_error(msg: String) -> Error {
    Error::Other(format!("quantization: {msg}"))
}

/// Quantizes `src.len() / n_per_row` rows into `dst` like
/// `ggml_quantize_chunk(ty, src, dst, 0, nrows, n_per_row, imatrix)`,
/// choosing the reference or the importance-weighted path exactly as ggml
/// does. `imatrix`, if given, has one weight per column (`n_per_row`).
/// Returns the number of bytes written (`nrows · row_size`); `dst` may be longer.
///
/// Uses the fastest kernels the CPU supports ([`simd::active`]); the bytes do
/// not depend on which.
pub fn quantize_rows(
    ty: GgmlType,
    src: &[f32],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
    dst: &mut [u8],
) -> Result<usize> {
    quantize_rows_with(simd::active(), ty, src, n_per_row, imatrix, dst)
}

/// [`quantize_rows`] with an explicit backend (for tests and benchmarks); a
/// backend the CPU lacks falls back to the scalar kernels.
pub fn quantize_rows_with(
    backend: Backend,
    ty: GgmlType,
    src: &[f32],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
    dst: &mut [u8],
) -> Result<usize> {
    if !can_quantize(ty) {
        return Err(Error::Unsupported(format!("quantizing to {ty} is not supported")));
    }
    let block = ty.block_size() as usize;
    if n_per_row == 0 || !n_per_row.is_multiple_of(block) {
        return Err(len_error(format!(
            "row length {n_per_row} is not a positive multiple of {ty}'s block size {block}"
        )));
    }
    if !src.len().is_multiple_of(n_per_row) {
        return Err(len_error(format!("{} values are not a whole number of rows of {n_per_row}", src.len())));
    }
    if let Some(qw) = imatrix {
        if qw.len() != n_per_row {
            return Err(len_error(format!("imatrix has {} values for rows of {n_per_row}", qw.len())));
        }
    }
    let nrows = src.len() / n_per_row;
    let size = ty
        .row_size(n_per_row as u64)
        .and_then(|r| r.checked_mul(nrows as u64))
        .and_then(|s| usize::try_from(s).ok())
        .ok_or_else(|| len_error(format!("{nrows} rows of {n_per_row} {ty} values overflow")))?;
    if dst.len() < size {
        return Err(len_error(format!("output buffer of {} bytes is smaller than {size}", dst.len())));
    }
    let dst = &mut dst[..size];
    #[cfg(target_arch = "x86_64")]
    if backend == Backend::Avx2 {
        if let Some(k) = simd::Avx2::new() {
            quantize_validated(ty, src, n_per_row, imatrix, dst, k)?;
            return Ok(size);
        }
    }
    let _ = backend;
    quantize_validated(ty, src, n_per_row, imatrix, dst, Scalar)?;
    Ok(size)
}

/// The type dispatch of [`quantize_rows_with`] once lengths are checked.
fn quantize_validated<K: Kernels>(
    ty: GgmlType,
    src: &[f32],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
    dst: &mut [u8],
    k: K,
) -> Result<()> {
    use GgmlType::*;
    match ty {
        F32 => float::f32_row_to_bytes(src, dst),
        F16 => k.f32_to_f16_row(src, dst),
        BF16 => k.f32_to_bf16_row(src, dst),
        Q4_0 => quantize_blocks::<legacy::BlockQ4_0, 32, K>(src, n_per_row, imatrix, dst, k)?,
        Q4_1 => quantize_blocks::<legacy::BlockQ4_1, 32, K>(src, n_per_row, imatrix, dst, k)?,
        Q5_0 => quantize_blocks::<legacy::BlockQ5_0, 32, K>(src, n_per_row, imatrix, dst, k)?,
        Q5_1 => quantize_blocks::<legacy::BlockQ5_1, 32, K>(src, n_per_row, imatrix, dst, k)?,
        Q8_0 => quantize_blocks::<legacy::BlockQ8_0, 32, K>(src, n_per_row, imatrix, dst, k)?,
        Q2_K => quantize_blocks::<kquants::BlockQ2K, QK_K, K>(src, n_per_row, imatrix, dst, k)?,
        Q3_K => quantize_blocks::<kquants::BlockQ3K, QK_K, K>(src, n_per_row, imatrix, dst, k)?,
        Q4_K => quantize_blocks::<kquants::BlockQ4K, QK_K, K>(src, n_per_row, imatrix, dst, k)?,
        Q5_K => quantize_blocks::<kquants::BlockQ5K, QK_K, K>(src, n_per_row, imatrix, dst, k)?,
        Q6_K => quantize_blocks::<kquants::BlockQ6K, QK_K, K>(src, n_per_row, imatrix, dst, k)?,
        IQ4_NL => quantize_blocks::<iq4::BlockIQ4NL, 32, K>(src, n_per_row, imatrix, dst, k)?,
        IQ4_XS => quantize_blocks::<iq4::BlockIQ4XS, QK_K, K>(src, n_per_row, imatrix, dst, k)?,
        MXFP4 => quantize_blocks::<fp4::BlockMXFP4, 32, K>(src, n_per_row, imatrix, dst, k)?,
        NVFP4 => quantize_blocks::<fp4::BlockNVFP4, 64, K>(src, n_per_row, imatrix, dst, k)?,
        Q1_0 => quantize_blocks::<lowbit::BlockQ1_0, 128, K>(src, n_per_row, imatrix, dst, k)?,
        Q2_0 => quantize_blocks::<lowbit::BlockQ2_0, 64, K>(src, n_per_row, imatrix, dst, k)?,
        TQ1_0 => quantize_blocks::<lowbit::BlockTQ1_0, QK_K, K>(src, n_per_row, imatrix, dst, k)?,
        TQ2_0 => quantize_blocks::<lowbit::BlockTQ2_0, QK_K, K>(src, n_per_row, imatrix, dst, k)?,
        _ => return Err(Error::Unsupported(format!("quantizing to {ty} is not supported"))),
    }
    Ok(())
}

/// The index of the first NaN or infinity in `x` (vectorized where the CPU allows).
pub fn first_non_finite(x: &[f32]) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    if simd::active() == Backend::Avx2 {
        if let Some(k) = simd::Avx2::new() {
            return k.first_non_finite(x);
        }
    }
    Scalar.first_non_finite(x)
}

/// Dequantizes whole blocks of `ty` from `src` into `dst` (ggml's `to_float`).
/// `dst.len()` must be exactly the number of values `src` holds.
pub fn dequantize_rows(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<()> {
    dequantize_rows_with(simd::active(), ty, src, dst)
}

/// [`dequantize_rows`] with an explicit backend (for tests and benchmarks).
pub fn dequantize_rows_with(backend: Backend, ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<()> {
    if !can_dequantize(ty) {
        return Err(Error::Unsupported(format!("dequantizing {ty} is not supported")));
    }
    let (block, type_size) = (ty.block_size() as usize, ty.type_size() as usize);
    if !src.len().is_multiple_of(type_size)
        || !dst.len().is_multiple_of(block)
        || src.len() / type_size != dst.len() / block
    {
        return Err(len_error(format!(
            "{} bytes of {ty} do not hold exactly {} values (block {block} values in {type_size} bytes)",
            src.len(),
            dst.len()
        )));
    }
    use GgmlType::*;
    match ty {
        F32 => float::bytes_to_f32_row(src, dst),
        F16 | BF16 => {
            #[cfg(target_arch = "x86_64")]
            if backend == Backend::Avx2 {
                if let Some(k) = simd::Avx2::new() {
                    if ty == F16 {
                        k.f16_to_f32_row(src, dst);
                    } else {
                        k.bf16_to_f32_row(src, dst);
                    }
                    return Ok(());
                }
            }
            if ty == F16 {
                Scalar.f16_to_f32_row(src, dst);
            } else {
                Scalar.bf16_to_f32_row(src, dst);
            }
        }
        Q4_0 => dequantize_blocks::<legacy::BlockQ4_0, 32>(backend, src, dst)?,
        Q4_1 => dequantize_blocks::<legacy::BlockQ4_1, 32>(backend, src, dst)?,
        Q5_0 => dequantize_blocks::<legacy::BlockQ5_0, 32>(backend, src, dst)?,
        Q5_1 => dequantize_blocks::<legacy::BlockQ5_1, 32>(backend, src, dst)?,
        Q8_0 => dequantize_blocks::<legacy::BlockQ8_0, 32>(backend, src, dst)?,
        Q8_1 => dequantize_blocks::<legacy::BlockQ8_1, 32>(backend, src, dst)?,
        Q2_K => dequantize_blocks::<kquants::BlockQ2K, QK_K>(backend, src, dst)?,
        Q3_K => dequantize_blocks::<kquants::BlockQ3K, QK_K>(backend, src, dst)?,
        Q4_K => dequantize_blocks::<kquants::BlockQ4K, QK_K>(backend, src, dst)?,
        Q5_K => dequantize_blocks::<kquants::BlockQ5K, QK_K>(backend, src, dst)?,
        Q6_K => dequantize_blocks::<kquants::BlockQ6K, QK_K>(backend, src, dst)?,
        Q8_K => dequantize_blocks::<kquants::BlockQ8K, QK_K>(backend, src, dst)?,
        IQ4_NL => dequantize_blocks::<iq4::BlockIQ4NL, 32>(backend, src, dst)?,
        IQ4_XS => dequantize_blocks::<iq4::BlockIQ4XS, QK_K>(backend, src, dst)?,
        MXFP4 => dequantize_blocks::<fp4::BlockMXFP4, 32>(backend, src, dst)?,
        NVFP4 => dequantize_blocks::<fp4::BlockNVFP4, 64>(backend, src, dst)?,
        Q1_0 => dequantize_blocks::<lowbit::BlockQ1_0, 128>(backend, src, dst)?,
        Q2_0 => dequantize_blocks::<lowbit::BlockQ2_0, 64>(backend, src, dst)?,
        TQ1_0 => dequantize_blocks::<lowbit::BlockTQ1_0, QK_K>(backend, src, dst)?,
        TQ2_0 => dequantize_blocks::<lowbit::BlockTQ2_0, QK_K>(backend, src, dst)?,
        _ => return Err(Error::Unsupported(format!("dequantizing {ty} is not supported"))),
    }
    Ok(())
}

fn cast_error(e: bytemuck::PodCastError) -> Error {
    len_error(format!("block view: {e:?}"))
}

/// Quantizes validated rows of a block type (lengths checked by the caller).
fn quantize_blocks<B: Quantize<QK>, const QK: usize, K: Kernels>(
    src: &[f32],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
    dst: &mut [u8],
    k: K,
) -> Result<()> {
    let x: &[[f32; QK]] = bytemuck::try_cast_slice(src).map_err(cast_error)?;
    let y: &mut [B] = bytemuck::try_cast_slice_mut(dst).map_err(cast_error)?;
    match imatrix {
        None => B::quantize_blocks_with(x, y, k),
        Some(qw) => {
            let qw: &[[f32; QK]] = bytemuck::try_cast_slice(qw).map_err(cast_error)?;
            let blocks_per_row = n_per_row / QK;
            for (xr, yr) in x.chunks_exact(blocks_per_row).zip(y.chunks_exact_mut(blocks_per_row)) {
                B::quantize_row_imatrix_with(xr, qw, yr, k);
            }
        }
    }
    Ok(())
}

fn dequantize_blocks<B: Block<QK>, const QK: usize>(backend: Backend, src: &[u8], dst: &mut [f32]) -> Result<()> {
    let x: &[B] = bytemuck::try_cast_slice(src).map_err(cast_error)?;
    let y: &mut [[f32; QK]] = bytemuck::try_cast_slice_mut(dst).map_err(cast_error)?;
    #[cfg(target_arch = "x86_64")]
    if backend == Backend::Avx2 {
        if let Some(k) = simd::Avx2::new() {
            k.dequantize(x, y);
            return Ok(());
        }
    }
    let _ = backend;
    Scalar.dequantize(x, y);
    Ok(())
}

/// The sums behind error statistics of `decoded` against `reference`
/// ([`simd::error_sums`]: squared differences, squared references, largest
/// absolute difference), on the active backend; the same figures on every one.
pub fn error_sums(reference: &[f32], decoded: &[f32]) -> [f64; 3] {
    #[cfg(target_arch = "x86_64")]
    if simd::active() == Backend::Avx2 {
        if let Some(k) = simd::Avx2::new() {
            return k.error_sums(reference, decoded);
        }
    }
    Scalar.error_sums(reference, decoded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::types::ALL_TYPES;

    #[test]
    fn capabilities() {
        assert!(requires_imatrix(GgmlType::IQ2_XXS) && !requires_imatrix(GgmlType::Q2_K));
        for t in ALL_TYPES {
            if can_quantize(t.ty) {
                assert!(can_dequantize(t.ty));
                assert!(!requires_imatrix(t.ty));
            }
        }
        assert!(!can_quantize(GgmlType::Q8_K) && can_dequantize(GgmlType::Q8_K));
    }

    #[test]
    fn every_supported_type_round_trips_through_the_api() {
        let n = 512;
        let src: Vec<f32> = (0..2 * n).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.01).collect();
        let imatrix: Vec<f32> = (0..n).map(|i| 1.0 + (i % 7) as f32).collect();
        for t in ALL_TYPES {
            if !can_quantize(t.ty) {
                continue;
            }
            let size = t.ty.row_size(n as u64).unwrap() as usize * 2;
            let mut q = vec![0xAAu8; size + 5];
            for im in [None, Some(&imatrix[..])] {
                assert_eq!(quantize_rows(t.ty, &src, n, im, &mut q).unwrap(), size, "{}", t.name);
                assert_eq!(&q[size..], &[0xAA; 5]);
                let mut back = vec![0f32; 2 * n];
                dequantize_rows(t.ty, &q[..size], &mut back).unwrap();
                let err = src.iter().zip(&back).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                // |x| ≤ 0.5: the 1–2 bit types may be off by half their step (d/2 = 0.25)
                let low_bit = matches!(t.ty, GgmlType::Q1_0 | GgmlType::Q2_0 | GgmlType::TQ1_0 | GgmlType::TQ2_0);
                let bound = if low_bit { 0.3 } else { 0.2 };
                assert!(err <= bound, "{}: max error {err}", t.name);
            }
        }
    }

    #[test]
    fn rows_split_across_threads_give_the_same_bytes() {
        use rayon::prelude::*;
        let n = 512;
        let rows = 12;
        let src: Vec<f32> = (0..rows * n).map(|i| ((i * 7919 % 1009) as f32 - 504.0) * 0.003).collect();
        let imatrix: Vec<f32> = (0..n).map(|i| 0.5 + (i % 3) as f32).collect();
        for ty in [GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::IQ4_XS] {
            for im in [None, Some(&imatrix[..])] {
                let row_size = ty.row_size(n as u64).unwrap() as usize;
                let mut whole = vec![0u8; rows * row_size];
                quantize_rows(ty, &src, n, im, &mut whole).unwrap();
                let mut split = vec![0u8; rows * row_size];
                split.par_chunks_mut(row_size).zip(src.par_chunks(n)).for_each(|(dst, row)| {
                    quantize_rows(ty, row, n, im, dst).unwrap();
                });
                assert_eq!(whole, split, "{ty}");
            }
        }
    }

    #[test]
    fn bad_lengths_are_errors() {
        let src = vec![0f32; 64];
        let mut dst = vec![0u8; 1000];
        assert!(quantize_rows(GgmlType::Q4_0, &src, 48, None, &mut dst).is_err()); // not a block multiple
        assert!(quantize_rows(GgmlType::Q4_0, &src, 0, None, &mut dst).is_err());
        assert!(quantize_rows(GgmlType::Q4_0, &src[..40], 32, None, &mut dst).is_err()); // partial row
        assert!(quantize_rows(GgmlType::Q4_K, &src, 64, None, &mut dst).is_err());
        assert!(quantize_rows(GgmlType::Q4_0, &src, 32, Some(&[1.0; 31]), &mut dst).is_err());
        assert!(quantize_rows(GgmlType::Q4_0, &src, 32, None, &mut dst[..35]).is_err());
        assert!(quantize_rows(GgmlType::IQ2_XXS, &src, 64, None, &mut dst).is_err());
        assert!(quantize_rows(GgmlType::Q8_K, &src, 256, None, &mut dst).is_err());
        assert_eq!(quantize_rows(GgmlType::Q4_0, &[], 32, None, &mut dst).unwrap(), 0);
        let mut out = vec![0f32; 64];
        assert!(dequantize_rows(GgmlType::Q4_0, &dst[..35], &mut out).is_err());
        assert!(dequantize_rows(GgmlType::Q4_0, &dst[..36], &mut out[..63]).is_err());
        assert!(dequantize_rows(GgmlType::Q4_0, &dst[..36], &mut out).is_ok());
        assert!(dequantize_rows(GgmlType::IQ2_XXS, &dst[..66], &mut out).is_err());
        assert!(dequantize_rows(GgmlType::F16, &dst[..127], &mut out).is_err());
    }

    #[test]
    fn random_bytes_dequantize_without_panic() {
        let mut s = 1u64;
        let bytes: Vec<u8> = (0..292 * 36)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                (s >> 56) as u8
            })
            .collect();
        for t in ALL_TYPES {
            if !can_dequantize(t.ty) {
                continue;
            }
            let nb = bytes.len() / t.type_size as usize;
            let mut out = vec![0f32; nb * t.block_size as usize];
            dequantize_rows(t.ty, &bytes[..nb * t.type_size as usize], &mut out).unwrap();
        }
    }
}
