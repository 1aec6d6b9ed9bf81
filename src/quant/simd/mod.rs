//! Faster versions of the hot quantization loops, bit-identical to the scalar
//! kernels (the oracle) in the sibling modules.
//!
//! The kernels that have faster versions are reached through the [`Kernels`]
//! trait: [`Scalar`] is the plain path (its methods *are* the scalar
//! oracle), [`Avx2`] (x86-64 with AVX2 + F16C, detected at run time)
//! overrides them. The generic block code in `kquants.rs` and `legacy.rs` is
//! written once against the trait, so the scalar path and the SIMD path share
//! everything except the loops that were vectorized.
//!
//! How the SIMD versions stay bit-identical:
//! - float reductions are never reordered: the searches (`make_qkx2_quants`,
//!   `make_qx_quants`, `make_q3_quants`) run 8 *independent* groups (the
//!   sub-blocks of a super-block) in the 8 lanes of a `__m256`, each lane
//!   doing exactly the scalar sequence of operations for its group;
//! - elementwise work (requantization, the legacy types' `x·id + 8.5`) may be
//!   vectorized along a block because no value depends on another;
//! - data-dependent branches become lane masks and blends, loops that stop
//!   early per group keep an "active" mask;
//! - no FMA (the `fma` target feature is never enabled, and Rust does not
//!   contract `a*b + c`), IEEE division and square root (correctly rounded,
//!   like the scalar ones), and C's `cvttss2si` semantics (`i32::MIN` for NaN
//!   and out-of-range values) via `cvttps2dq`, which has exactly those;
//! - order-dependent reductions whose result is not order-independent
//!   (a max over values that may hold NaN, the sign of a zero minimum) are
//!   resolved the way the scalar loop resolves them, or fall back to the
//!   scalar kernel for that block.
//!
//! Set `GGUFKIT_SCALAR=1` in the environment to force the scalar path (read
//! once per process); [`active`] reports which path is in use. On CPUs with
//! AVX-512 the AVX2 backend runs the k-quant searches on 16 lanes
//! (`avx512.rs`, same bytes); `GGUFKIT_NO_AVX512=1` keeps them on AVX2.

use std::sync::OnceLock;

use super::float;
use super::iq4;
use super::legacy::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0};
use super::search::{make_q3_quants, make_qkx2_quants, make_qkx3_quants, make_qx_quants, QkxSearch};
use super::{Block, Quantize};
use crate::gguf::GgmlType;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
pub use avx2::Avx2;

#[cfg(test)]
mod tests;

/// Which implementation of the hot loops a call uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The plain scalar kernels (the oracle).
    Scalar,
    /// AVX2 + F16C kernels (x86-64).
    Avx2,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Scalar => "scalar",
            Backend::Avx2 => "avx2",
        }
    }
}

/// The best backend this CPU supports.
pub fn detected() -> Backend {
    #[cfg(target_arch = "x86_64")]
    if Avx2::new().is_some() {
        return Backend::Avx2;
    }
    Backend::Scalar
}

/// The backend chosen for a value of `GGUFKIT_SCALAR`: scalar when it is set
/// to anything but empty or `0`, otherwise the detected one.
pub fn backend_for_env(value: Option<&str>, detected: Backend) -> Backend {
    match value {
        Some(v) if !v.is_empty() && v != "0" => Backend::Scalar,
        _ => detected,
    }
}

/// The backend [`super::quantize_rows`] and [`super::dequantize_rows`] use:
/// the detected one unless `GGUFKIT_SCALAR=1` (read once, at the first call).
pub fn active() -> Backend {
    static ACTIVE: OnceLock<Backend> = OnceLock::new();
    *ACTIVE.get_or_init(|| backend_for_env(std::env::var("GGUFKIT_SCALAR").ok().as_deref(), detected()))
}

/// The loops that have SIMD versions. Every method's default is the scalar
/// oracle; an implementation must return exactly the same values for every
/// input (NaN and infinities included).
///
/// The searches work on `M` independent groups of `N` values (the sub-blocks
/// of one super-block): group `j` is `x[j]` with weights `w[j]`, its levels go
/// to `l[j]` and its results to `scales[j]` (and `mins[j]`).
pub trait Kernels: Copy + Send + Sync {
    /// `make_qkx2_quants` (or `make_qkx3_quants` when `v3`) on each group:
    /// `scales[j]`, `mins[j]` are its returned `(scale, -min)`.
    #[allow(clippy::too_many_arguments)]
    fn qkx<const N: usize, const M: usize>(
        self,
        p: &QkxSearch,
        v3: bool,
        x: &[[f32; N]; M],
        w: &[[f32; N]; M],
        l: &mut [[u8; N]; M],
        scales: &mut [f32; M],
        mins: &mut [f32; M],
    ) {
        let mut laux = [0u8; N];
        for j in 0..M {
            (scales[j], mins[j]) = if v3 {
                make_qkx3_quants(p, &x[j], &w[j], &mut l[j], &mut laux)
            } else {
                make_qkx2_quants(p, &x[j], &w[j], &mut l[j], &mut laux)
            };
        }
    }

    /// `make_qx_quants(N, nmax, x, L, rmse_type = 1, w)` on each group.
    fn qx<const N: usize, const M: usize>(
        self,
        nmax: i32,
        x: &[[f32; N]; M],
        w: &[[f32; N]; M],
        l: &mut [[u8; N]; M],
        scales: &mut [f32; M],
    ) {
        for j in 0..M {
            scales[j] = make_qx_quants(nmax, &x[j], &w[j], &mut l[j]);
        }
    }

    /// `make_q3_quants(N, nmax, x, L, do_rmse = true)` on each group.
    fn q3<const N: usize, const M: usize>(
        self,
        nmax: i32,
        x: &[[f32; N]; M],
        l: &mut [[u8; N]; M],
        scales: &mut [f32; M],
    ) {
        for j in 0..M {
            scales[j] = make_q3_quants(nmax, &x[j], &mut l[j]);
        }
    }

    /// `l = clamp(nearest_int((x + add) / d), lo, hi) + off` elementwise (the
    /// k-quants' requantization against the stored scales).
    #[allow(clippy::too_many_arguments)]
    fn requantize<const N: usize>(self, x: &[f32; N], add: f32, d: f32, lo: i32, hi: i32, off: i32, l: &mut [u8; N]) {
        for i in 0..N {
            l[i] = (super::search::nearest_int((x[i] + add) / d).clamp(lo, hi) + off) as u8;
        }
    }

    /// IQ4's scale search (`quantize_row_iq4_nl_impl`'s loop over `ntry`) on each group of 32.
    fn iq4_scales<const M: usize>(self, x: &[[f32; 32]; M], w: &[[f32; 32]; M], scales: &mut [f32; M]) {
        for j in 0..M {
            scales[j] = iq4::search_scale(&x[j], &w[j]);
        }
    }

    /// IQ4's table indices of `id · x`, two per byte.
    fn iq4_indices(self, x: &[f32; 32], id: f32, qs: &mut [u8; 16]) {
        iq4::pack_indices(x, id, qs)
    }

    fn f32_to_f16_row(self, src: &[f32], dst: &mut [u8]) {
        float::f32_row_to_f16(src, dst)
    }
    fn f32_to_bf16_row(self, src: &[f32], dst: &mut [u8]) {
        float::f32_row_to_bf16(src, dst)
    }
    fn f16_to_f32_row(self, src: &[u8], dst: &mut [f32]) {
        float::f16_row_to_f32(src, dst)
    }
    fn bf16_to_f32_row(self, src: &[u8], dst: &mut [f32]) {
        float::bf16_row_to_f32(src, dst)
    }

    /// The index of the first NaN or infinity in `x`.
    fn first_non_finite(self, x: &[f32]) -> Option<usize> {
        x.iter().position(|v| !v.is_finite())
    }

    /// ggml's `to_float` of whole blocks: the blocks' own loops, compiled for
    /// this backend's instruction set (the arithmetic is the same).
    fn dequantize<B: Block<QK>, const QK: usize>(self, x: &[B], y: &mut [[f32; QK]]) {
        for (xb, yb) in x.iter().zip(y) {
            xb.dequantize(yb);
        }
    }

    /// [`error_sums`] compiled for this backend's instruction set.
    fn error_sums(self, reference: &[f32], decoded: &[f32]) -> [f64; 3] {
        error_sums(reference, decoded)
    }

    fn q8_0_blocks(self, x: &[[f32; 32]], y: &mut [BlockQ8_0]) {
        for (xb, yb) in x.iter().zip(y) {
            *yb = BlockQ8_0::quantize(xb);
        }
    }
    fn q4_0_blocks(self, x: &[[f32; 32]], y: &mut [BlockQ4_0]) {
        for (xb, yb) in x.iter().zip(y) {
            *yb = BlockQ4_0::quantize(xb);
        }
    }
    /// Q8_0 of stored F16 (`bf16` false) or BF16 values, decoded a few
    /// blocks at a time into a buffer that stays in L1 (no f32 rows in
    /// memory). `false` when a value is NaN or infinite: `y` is then
    /// unspecified and the caller reports the value from the f32 path.
    fn q8_0_from_half(self, src: &[u8], bf16: bool, y: &mut [BlockQ8_0]) -> bool {
        from_half(self, src, bf16, y, |x, y| self.q8_0_blocks(x, y))
    }
    /// Q4_0 of stored F16 or BF16 values, as [`Kernels::q8_0_from_half`].
    fn q4_0_from_half(self, src: &[u8], bf16: bool, y: &mut [BlockQ4_0]) -> bool {
        from_half(self, src, bf16, y, |x, y| self.q4_0_blocks(x, y))
    }
    /// F16 of stored BF16 values (`convert --outtype f16` of a BF16 model),
    /// as [`Kernels::q8_0_from_half`]: `false` when a value is not finite.
    fn bf16_to_f16_row(self, src: &[u8], dst: &mut [u8]) -> bool {
        let mut buf = [0f32; FUSED_VALUES];
        for (s, d) in src.chunks(2 * FUSED_VALUES).zip(dst.chunks_mut(2 * FUSED_VALUES)) {
            let f = &mut buf[..s.len() / 2];
            self.bf16_to_f32_row(s, f);
            if self.first_non_finite(f).is_some() {
                return false;
            }
            self.f32_to_f16_row(f, d);
        }
        true
    }
    fn q4_1_blocks(self, x: &[[f32; 32]], y: &mut [BlockQ4_1]) {
        for (xb, yb) in x.iter().zip(y) {
            *yb = BlockQ4_1::quantize(xb);
        }
    }
    fn q5_0_blocks(self, x: &[[f32; 32]], y: &mut [BlockQ5_0]) {
        for (xb, yb) in x.iter().zip(y) {
            *yb = BlockQ5_0::quantize(xb);
        }
    }
    fn q5_1_blocks(self, x: &[[f32; 32]], y: &mut [BlockQ5_1]) {
        for (xb, yb) in x.iter().zip(y) {
            *yb = BlockQ5_1::quantize(xb);
        }
    }
}

/// Values decoded at a time by the fused half → quantized kernels: 8 blocks
/// of 32 (1 KiB of f32, in L1), the group the block kernels vectorize across.
const FUSED_VALUES: usize = 256;

/// The fused kernels' loop: decode a group of blocks, check it is finite, encode it.
fn from_half<K: Kernels, B>(
    k: K,
    src: &[u8],
    bf16: bool,
    y: &mut [B],
    encode: impl Fn(&[[f32; 32]], &mut [B]),
) -> bool {
    const BLOCKS: usize = FUSED_VALUES / 32;
    let mut buf = [[0f32; 32]; BLOCKS];
    for (s, yb) in src.chunks(2 * FUSED_VALUES).zip(y.chunks_mut(BLOCKS)) {
        let n = yb.len().min(s.len() / 64);
        let f = buf[..n].as_flattened_mut();
        if bf16 {
            k.bf16_to_f32_row(s, f);
        } else {
            k.f16_to_f32_row(s, f);
        }
        if k.first_non_finite(f).is_some() {
            return false;
        }
        encode(&buf[..n], &mut yb[..n]);
    }
    true
}

/// Whether [`encode_stored_half`] encodes `src_ty` values as `ty`.
pub fn fuses(src_ty: GgmlType, ty: GgmlType) -> bool {
    matches!(
        (src_ty, ty),
        (GgmlType::F16 | GgmlType::BF16, GgmlType::Q8_0 | GgmlType::Q4_0) | (GgmlType::BF16, GgmlType::F16)
    )
}

/// Encodes stored F16 / BF16 values (`src_ty`, little-endian bytes) as `ty`
/// without f32 rows in memory, for the types where that is the same as
/// decoding to f32 and quantizing without an importance matrix: Q8_0 and
/// Q4_0 from F16 or BF16, F16 from BF16. `None`: not such a pair (or the
/// lengths do not fit it); `Some(false)`: a value is NaN or infinite (`dst`
/// is unspecified: decode to f32 to report it); `Some(true)`: `dst` holds
/// exactly what [`super::quantize_rows`] of the decoded values would.
pub fn encode_stored_half(
    backend: Backend,
    src_ty: GgmlType,
    src: &[u8],
    ty: GgmlType,
    dst: &mut [u8],
) -> Option<bool> {
    #[cfg(target_arch = "x86_64")]
    if backend == Backend::Avx2 {
        if let Some(k) = Avx2::new() {
            return encode_half_with(k, src_ty, src, ty, dst);
        }
    }
    let _ = backend;
    encode_half_with(Scalar, src_ty, src, ty, dst)
}

fn encode_half_with<K: Kernels>(k: K, src_ty: GgmlType, src: &[u8], ty: GgmlType, dst: &mut [u8]) -> Option<bool> {
    let bf16 = match src_ty {
        GgmlType::BF16 => true,
        GgmlType::F16 => false,
        _ => return None,
    };
    let n = src.len() / 2;
    if !src.len().is_multiple_of(2) {
        return None;
    }
    match ty {
        GgmlType::F16 if bf16 && dst.len() == src.len() => Some(k.bf16_to_f16_row(src, dst)),
        GgmlType::Q8_0 if n.is_multiple_of(32) && dst.len() == n / 32 * std::mem::size_of::<BlockQ8_0>() => {
            Some(k.q8_0_from_half(src, bf16, bytemuck::cast_slice_mut(dst)))
        }
        GgmlType::Q4_0 if n.is_multiple_of(32) && dst.len() == n / 32 * std::mem::size_of::<BlockQ4_0>() => {
            Some(k.q4_0_from_half(src, bf16, bytemuck::cast_slice_mut(dst)))
        }
        _ => None,
    }
}

/// The scalar kernels: every [`Kernels`] method as written in the oracle.
#[derive(Clone, Copy, Debug, Default)]
pub struct Scalar;

impl Kernels for Scalar {}

/// The sums behind error statistics of `decoded` against `reference`: the sum
/// of squared differences, the sum of squared reference values (both in f64)
/// and the largest absolute difference. Element `i` goes to lane `i % 8`; the
/// eight lanes are combined in one fixed pairwise order, so every backend (and
/// every CPU) gives the same figures.
pub fn error_sums(reference: &[f32], decoded: &[f32]) -> [f64; 3] {
    let mut xs = reference.chunks_exact(8);
    let mut ys = decoded.chunks_exact(8);
    let (mut err, mut refs, mut max) = ([0f64; 8], [0f64; 8], [0f64; 8]);
    for (xa, ya) in (&mut xs).zip(&mut ys) {
        for k in 0..8 {
            error_lane(xa[k], ya[k], &mut err[k], &mut refs[k], &mut max[k]);
        }
    }
    error_sums_from(err, refs, max, xs.remainder(), ys.remainder())
}

/// One element of [`error_sums`] added to its lane.
#[inline(always)]
fn error_lane(a: f32, b: f32, err: &mut f64, refs: &mut f64, max: &mut f64) {
    let (a, b) = (a as f64, b as f64);
    let d = a - b;
    *err += d * d;
    *refs += a * a;
    let ad = d.abs();
    *max = if ad > *max { ad } else { *max };
}

/// The end of [`error_sums`]: the tail (fewer than 8 elements, element `k`
/// to lane `k`) added to the lanes, then the lanes combined.
fn error_sums_from(
    mut err: [f64; 8],
    mut refs: [f64; 8],
    mut max: [f64; 8],
    tail_ref: &[f32],
    tail_dec: &[f32],
) -> [f64; 3] {
    for (k, (&a, &b)) in tail_ref.iter().zip(tail_dec).enumerate() {
        error_lane(a, b, &mut err[k], &mut refs[k], &mut max[k]);
    }
    let sum = |v: [f64; 8]| ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
    let m = |a: f64, b: f64| if b > a { b } else { a };
    [sum(err), sum(refs), m(m(m(max[0], max[1]), m(max[2], max[3])), m(m(max[4], max[5]), m(max[6], max[7])))]
}
