//! Weights for the forward pass, read from any [`TensorSource`], and the
//! f32 matrix products (the `gemm` crate, runtime-dispatched AVX-512 /
//! AVX2+FMA kernels, run on the current rayon pool's threads).
//!
//! Every weight type is multiplied in f32: the weight's rows are decoded
//! with ggufkit's own dequantizer, and the activations are first rounded as
//! llama.cpp's CPU backend rounds them to the weight type's `vec_dot_type`
//! (F16 / BF16 for those weights; Q8_0 or Q8_1 blocks for Q4_0 … Q8_0,
//! IQ4_NL, MXFP4; Q8_K blocks for the K-quants and IQ4_XS). A block dot
//! product of llama.cpp is `Σ d_w·q_w · d_x·q_x` over the block, which is the
//! f32 product of the two dequantized rows up to the order of the sums, so
//! the results follow llama.cpp to float rounding.
//!
//! Why not candle's quantized kernels (measured, `BENCHMARKS.md`): candle
//! vectorizes its block dot products only when the crate itself is compiled
//! with AVX target features, which a binary that runs on any x86-64 cannot
//! be, so they ran scalar (a Q4_K_M eval more than 20× slower than F16).
//! Decoding a block of weight rows and one large f32 GEMM is within 10 % of
//! the F16 path's cost.
//!
//! A weight is decoded when its product runs, a slab of rows at a time into
//! a reused per-thread buffer (at most [`SLAB_VALUES`] values), and never
//! kept: memory holds one slab, whatever the model size.

use std::cell::RefCell;
use std::collections::HashMap;

use rayon::prelude::*;

use super::ops::round_half_even;
use crate::error::{Error, Result};
use crate::gguf::GgmlType;
use crate::pipeline::TensorSource;

/// Where the weights come from: a GGUF (computed as llama.cpp computes each
/// stored type) or a Hugging Face directory converted on the fly (all f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// Follow the stored types as llama.cpp's CPU backend does.
    AsStored,
    /// Decode every weight to f32.
    F32,
}

/// How the activations are rounded before an f32 product (llama.cpp's
/// `vec_dot_type` of the weight's type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ActRound {
    None,
    F16,
    BF16,
    /// `quantize_row_q8_0` / `q8_1` (x86): 32-value blocks, `d = amax/127`
    /// stored as f16, `q = round_half_even(x · 127/amax)`.
    Q8_0,
    /// `quantize_row_q8_K`: 256-value blocks, `d = max/-127` (max the value
    /// of largest magnitude) kept in f32, `q = min(127, nearest(x · -127/max))`.
    Q8K,
}

impl ActRound {
    fn of(precision: Precision, ty: GgmlType) -> ActRound {
        use GgmlType::*;
        if precision == Precision::F32 {
            return ActRound::None;
        }
        match ty {
            F16 => ActRound::F16,
            BF16 => ActRound::BF16,
            Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q8_1 | IQ4_NL | MXFP4 | NVFP4 | Q1_0 | Q2_0 => ActRound::Q8_0,
            Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | IQ4_XS | TQ1_0 | TQ2_0 => ActRound::Q8K,
            _ => ActRound::None,
        }
    }

    /// Rounds rows of `n_in` values in place.
    fn apply(self, x: &mut [f32], n_in: usize) {
        match self {
            ActRound::None => {}
            ActRound::F16 => x.par_chunks_mut(1 << 14).for_each(|c| {
                for v in c {
                    *v = half::f16::from_f32(*v).to_f32();
                }
            }),
            ActRound::BF16 => x.par_chunks_mut(1 << 14).for_each(|c| {
                for v in c {
                    *v = half::bf16::from_f32(*v).to_f32();
                }
            }),
            ActRound::Q8_0 if n_in.is_multiple_of(32) => {
                x.par_chunks_mut(32 * 512).for_each(|c| c.chunks_mut(32).for_each(q8_0_round))
            }
            ActRound::Q8K if n_in.is_multiple_of(256) => {
                x.par_chunks_mut(256 * 64).for_each(|c| c.chunks_mut(256).for_each(q8k_round))
            }
            // Rows that are not whole blocks cannot be block-quantized (llama.cpp refuses the type).
            ActRound::Q8_0 | ActRound::Q8K => {}
        }
    }
}

/// One Q8_0 block quantized and decoded again, as llama.cpp's AVX2 `quantize_row_q8_0`.
fn q8_0_round(b: &mut [f32]) {
    let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = half::f16::from_f32(amax / 127.0).to_f32();
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    for v in b {
        *v = d * round_half_even(*v * id);
    }
}

/// One Q8_K block quantized and decoded again, as `quantize_row_q8_K_ref`.
fn q8k_round(b: &mut [f32]) {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in b.iter() {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        b.fill(0.0);
        return;
    }
    let iscale = -127.0f32 / max;
    let d = 1.0 / iscale;
    for v in b {
        *v = d * round_half_even(iscale * *v).min(127.0);
    }
}

/// Values of one decoded slab of weight rows (16 MiB of f32): large enough
/// that the GEMM runs at full speed, small enough to stay near the caches.
pub const SLAB_VALUES: usize = 1 << 22;

thread_local! {
    static SLAB: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `c[i·ldc + j] = Σ_l a[i·lda + l] · b(l, j)` for `i < m`, `j < n`, `l < k`,
/// with `b(l, j) = b[l·rs + j·cs]` (`b_t = (rs, cs)`): one f32 GEMM on the
/// current rayon pool's threads when `parallel`. Panics if a slice is too short.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_f32(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    (rs, cs): (usize, usize),
    c: &mut [f32],
    ldc: usize,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(lda >= k && ldc >= n);
    assert!(a.len() >= (m - 1) * lda + k, "gemm: lhs too short");
    assert!(k == 0 || b.len() > (k - 1) * rs + (n - 1) * cs, "gemm: rhs too short");
    assert!(c.len() >= (m - 1) * ldc + n, "gemm: dst too short");
    let threads = rayon::current_num_threads();
    let par = if parallel && threads > 1 && m * n * k >= 1 << 15 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above keep every index gemm reads or writes inside
    // the slices; `c` is borrowed mutably and does not alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            false,
            a.as_ptr(),
            1,
            lda as isize,
            b.as_ptr(),
            cs as isize,
            rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// A weight matrix `y = x · Wᵀ` with `n_in` inputs and `n_out` outputs,
/// decoded from its source when [`Linear::forward`] runs.
pub struct Linear<'a> {
    pub name: String,
    pub n_in: usize,
    pub n_out: usize,
    source: &'a dyn TensorSource,
    index: usize,
    /// First row of this matrix in the source tensor (an expert of a stacked tensor).
    row0: u64,
    round: ActRound,
}

impl Linear<'_> {
    /// `x` holds `m` rows of `n_in`; returns `m` rows of `n_out`.
    pub fn forward(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        if x.len() != m * self.n_in {
            return Err(Error::Other(format!(
                "matmul with '{}': {} inputs for {m} rows of {}",
                self.name,
                x.len(),
                self.n_in
            )));
        }
        let (k, n_out) = (self.n_in, self.n_out);
        let mut xr;
        let x = if self.round == ActRound::None {
            x
        } else {
            xr = x.to_vec();
            self.round.apply(&mut xr, k);
            &xr[..]
        };
        let mut out = vec![0f32; m * n_out];
        let slab_rows = (SLAB_VALUES / k.max(1)).clamp(1, n_out.max(1));
        // Rows decoded per task: a few tasks per thread, each at least 64 Ki values.
        let task_rows = (slab_rows / (4 * rayon::current_num_threads())).max((1 << 16) / k.max(1)).max(1);
        SLAB.with(|slab| -> Result<()> {
            // A nested product on this thread (a rayon task stolen while waiting)
            // gets a buffer of its own.
            let mut own = Vec::new();
            let mut borrowed = slab.try_borrow_mut();
            let buf = match borrowed.as_deref_mut() {
                Ok(b) => b,
                Err(_) => &mut own,
            };
            if buf.len() < slab_rows * k {
                buf.resize(slab_rows * k, 0.0);
            }
            let mut j0 = 0;
            while j0 < n_out {
                let rows = slab_rows.min(n_out - j0);
                let w = &mut buf[..rows * k];
                w.par_chunks_mut(task_rows * k).enumerate().try_for_each(|(t, part)| {
                    self.source.read_rows(self.index, self.row0 + (j0 + t * task_rows) as u64, part)
                })?;
                self.source.rows_done(self.index, self.row0 + j0 as u64, rows as u64);
                gemm_f32(m, rows, k, x, k, w, (1, k), &mut out[j0..], n_out, true);
                j0 += rows;
            }
            Ok(())
        })?;
        Ok(out)
    }
}

/// Named access to a source's tensors.
pub struct Weights<'a> {
    pub source: &'a dyn TensorSource,
    pub precision: Precision,
    index: HashMap<String, usize>,
}

impl<'a> Weights<'a> {
    pub fn new(source: &'a dyn TensorSource, precision: Precision) -> Self {
        let index = source.tensors().iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        Weights { source, precision, index }
    }

    pub fn has(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    fn find(&self, name: &str) -> Result<usize> {
        self.index
            .get(name)
            .copied()
            .ok_or_else(|| Error::Other(format!("{}: tensor '{name}' is missing", self.source.describe())))
    }

    /// Rows `[row0, row0 + n)` as f32.
    pub fn rows(&self, name: &str, row0: u64, n: usize) -> Result<Vec<f32>> {
        let i = self.find(name)?;
        let t = &self.source.tensors()[i];
        let mut out = vec![0f32; n * t.row_len() as usize];
        self.source.read_rows(i, row0, &mut out)?;
        self.source.rows_done(i, row0, n as u64);
        Ok(out)
    }

    /// A whole tensor as f32 (norm weights, biases).
    pub fn vector(&self, name: &str) -> Result<Vec<f32>> {
        let i = self.find(name)?;
        let t = &self.source.tensors()[i];
        self.rows(name, 0, t.n_rows() as usize)
    }

    pub fn vector_opt(&self, name: &str) -> Result<Option<Vec<f32>>> {
        if self.has(name) {
            self.vector(name).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Expert `expert` of a stacked 3-D weight `[n_in, n_out, n_expert]`
    /// (`ffn_*_exps`) as a [`Linear`] of `n_in` inputs and `n_out` outputs:
    /// only that expert's rows are read (or its bytes borrowed).
    pub fn expert_linear(&self, name: &str, expert: usize) -> Result<Linear<'a>> {
        let i = self.find(name)?;
        let t = &self.source.tensors()[i];
        let (_, n_out, n_expert) = match t.dims[..] {
            [a, b, c] => (a as usize, b as usize, c as usize),
            _ => return Err(Error::Other(format!("tensor '{name}': dims {:?}, expected 3 (experts)", t.dims))),
        };
        if expert >= n_expert {
            return Err(Error::Other(format!("tensor '{name}' has {n_expert} experts, not {}", expert + 1)));
        }
        self.linear_rows(i, (expert * n_out) as u64, n_out, format!("{name}[{expert}]"))
    }

    /// A 2-D weight as a [`Linear`].
    pub fn linear(&self, name: &str) -> Result<Linear<'a>> {
        let i = self.find(name)?;
        let t = &self.source.tensors()[i];
        self.linear_rows(i, 0, t.n_rows() as usize, name.to_string())
    }

    /// Rows `[row0, row0 + n_out)` of tensor `i` as a [`Linear`] named `label`
    /// (a 2-D weight, or one expert of a stacked 3-D weight).
    pub(crate) fn linear_rows(&self, i: usize, row0: u64, n_out: usize, label: String) -> Result<Linear<'a>> {
        let t = &self.source.tensors()[i];
        let n_in = t.row_len() as usize;
        if row0 + n_out as u64 > t.n_rows() {
            return Err(Error::Other(format!(
                "{}: tensor '{}' has {} rows, not {}",
                self.source.describe(),
                t.name,
                t.n_rows(),
                row0 + n_out as u64
            )));
        }
        if !crate::quant::can_dequantize(t.ty) {
            return Err(Error::Unsupported(format!(
                "{}: tensor '{}' is {}, which the forward pass cannot decode",
                self.source.describe(),
                t.name,
                t.ty
            )));
        }
        let round = ActRound::of(self.precision, t.ty);
        Ok(Linear { name: label, n_in, n_out, source: self.source, index: i, row0, round })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_matches_the_naive_product_with_transposed_rhs() {
        let (m, n, k) = (5, 7, 33);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 13) as f32 - 6.0) / 4.0).collect();
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 5 % 11) as f32 - 5.0) / 8.0).collect();
        // Output written into columns 2.. of a wider matrix.
        let ldc = n + 3;
        let mut c = vec![-1f32; m * ldc];
        gemm_f32(m, n, k, &a, k, &w, (1, k), &mut c[2..], ldc, true);
        for i in 0..m {
            for j in 0..n {
                let want: f32 = (0..k).map(|l| a[i * k + l] * w[j * k + l]).sum();
                assert!((c[i * ldc + 2 + j] - want).abs() < 1e-4, "{i} {j}");
            }
            assert_eq!(c[i * ldc], -1.0);
            assert_eq!(c[i * ldc + 1], -1.0);
        }
    }

    #[test]
    fn q8_0_rounding_keeps_the_largest_value_and_rounds_the_rest() {
        let mut b: Vec<f32> = (0..32).map(|i| i as f32 / 10.0 - 1.0).collect();
        let orig = b.clone();
        q8_0_round(&mut b);
        let d = half::f16::from_f32(2.1 / 127.0).to_f32();
        for (o, r) in orig.iter().zip(&b) {
            let q = r / d;
            assert!((q - q.round()).abs() < 1e-3, "{r} is not a multiple of d");
            assert!((o - r).abs() <= d / 2.0 + 1e-6);
        }
        let mut z = vec![0f32; 32];
        q8_0_round(&mut z);
        assert!(z.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn q8k_rounding_uses_the_signed_maximum() {
        let mut b: Vec<f32> = (0..256).map(|i| (i as f32 - 100.0) / 50.0).collect();
        let orig = b.clone();
        q8k_round(&mut b);
        // max magnitude is 3.1 (i = 255): d = -3.1/127, and it decodes to itself.
        assert!((b[255] - 3.1).abs() < 1e-5);
        let d = 3.1f32 / 127.0;
        for (o, r) in orig.iter().zip(&b) {
            assert!((o - r).abs() <= d / 2.0 + 1e-5, "{o} {r}");
        }
    }
}
