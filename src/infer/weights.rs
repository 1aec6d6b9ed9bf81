//! Weights for the forward pass, read from any [`TensorSource`].
//!
//! Matrix products run on candle-core's CPU backend, the tensor library of
//! this field for pure-Rust inference: f32 GEMM through the `gemm` crate, and
//! ggml block types (Q4_0 … Q8_0, Q2_K … Q6_K) through candle's
//! `QuantizedType::matmul_t`, which quantizes the activations to the type's
//! `vec_dot_type` (Q8_0 / Q8_K) and takes block dot products as llama.cpp's
//! CPU backend does. Types candle lacks (IQ4_NL, IQ4_XS, …) are decoded with
//! ggufkit's own dequantizer and multiplied in f32. F16 and BF16 weights are
//! multiplied in f32 with the activations first rounded to F16 / BF16, which
//! is what llama.cpp computes (their `vec_dot_type` is the weight's type).
//!
//! A layer's weights are built from the source when the layer runs and
//! dropped after it: memory holds one layer, whatever the model size.

use std::borrow::Cow;
use std::collections::HashMap;

use candle_core::quantized::{GgmlDType, QuantizedType};
use candle_core::{Device, Tensor};

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

pub(crate) fn candle_err(what: &str, e: candle_core::Error) -> Error {
    Error::Other(format!("{what}: {e}"))
}

/// How the activations are rounded before an f32 product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ActRound {
    None,
    F16,
    BF16,
}

enum Kind {
    /// ggml blocks, multiplied by candle's quantized kernels.
    Blocks(Box<dyn QuantizedType>),
    /// f32 weights `[n_out, n_in]`.
    Dense(Tensor, ActRound),
}

/// A weight matrix `y = x · Wᵀ` with `n_in` inputs and `n_out` outputs.
pub struct Linear {
    pub name: String,
    pub n_in: usize,
    pub n_out: usize,
    kind: Kind,
}

fn candle_type(ty: GgmlType) -> Option<GgmlDType> {
    Some(match ty {
        GgmlType::Q4_0 => GgmlDType::Q4_0,
        GgmlType::Q4_1 => GgmlDType::Q4_1,
        GgmlType::Q5_0 => GgmlDType::Q5_0,
        GgmlType::Q5_1 => GgmlDType::Q5_1,
        GgmlType::Q8_0 => GgmlDType::Q8_0,
        GgmlType::Q2_K => GgmlDType::Q2K,
        GgmlType::Q3_K => GgmlDType::Q3K,
        GgmlType::Q4_K => GgmlDType::Q4K,
        GgmlType::Q5_K => GgmlDType::Q5K,
        GgmlType::Q6_K => GgmlDType::Q6K,
        _ => return None,
    })
}

fn round_f16(x: &mut [f32]) {
    for v in x {
        *v = half::f16::from_f32(*v).to_f32();
    }
}

fn round_bf16(x: &mut [f32]) {
    for v in x {
        *v = half::bf16::from_f32(*v).to_f32();
    }
}

impl Linear {
    /// `x` holds `m` rows of `n_in`; returns `m` rows of `n_out`.
    pub fn forward(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        debug_assert_eq!(x.len(), m * self.n_in);
        let what = || format!("matmul with '{}'", self.name);
        match &self.kind {
            Kind::Blocks(q) => {
                let mut out = vec![0f32; m * self.n_out];
                // Rows of x in parallel; candle splits the columns of each row again.
                let rows_per_task = m.div_ceil(rayon::current_num_threads().max(1)).max(1);
                use rayon::prelude::*;
                x.par_chunks(rows_per_task * self.n_in)
                    .zip(out.par_chunks_mut(rows_per_task * self.n_out))
                    .try_for_each(|(xs, ys)| {
                        let mm = xs.len() / self.n_in;
                        q.matmul_t((mm, self.n_in, self.n_out), xs, ys).map_err(|e| candle_err(&what(), e))
                    })?;
                Ok(out)
            }
            Kind::Dense(w, round) => {
                let mut xr = x.to_vec();
                match round {
                    ActRound::None => {}
                    ActRound::F16 => round_f16(&mut xr),
                    ActRound::BF16 => round_bf16(&mut xr),
                }
                let xt = Tensor::from_vec(xr, (m, self.n_in), &Device::Cpu).map_err(|e| candle_err(&what(), e))?;
                let y = xt
                    .matmul(&w.t().map_err(|e| candle_err(&what(), e))?)
                    .and_then(|y| y.flatten_all())
                    .and_then(|y| y.to_vec1::<f32>())
                    .map_err(|e| candle_err(&what(), e))?;
                Ok(y)
            }
        }
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
    pub fn expert_linear(&self, name: &str, expert: usize) -> Result<Linear> {
        let i = self.find(name)?;
        let t = &self.source.tensors()[i];
        let (n_in, n_out, n_expert) = match t.dims[..] {
            [a, b, c] => (a as usize, b as usize, c as usize),
            _ => return Err(Error::Other(format!("tensor '{name}': dims {:?}, expected 3 (experts)", t.dims))),
        };
        if expert >= n_expert {
            return Err(Error::Other(format!("tensor '{name}' has {n_expert} experts, not {}", expert + 1)));
        }
        let lname = format!("{name}[{expert}]");
        if self.precision == Precision::AsStored {
            if let (Some(ct), Some(raw)) = (candle_type(t.ty), self.source.raw(i)) {
                let row = t.ty.row_size(n_in as u64).unwrap_or(0) as usize;
                let per = row * n_out;
                if raw.len() != per * n_expert {
                    return Err(Error::Other(format!(
                        "tensor '{name}': {} bytes, expected {}",
                        raw.len(),
                        per * n_expert
                    )));
                }
                let bytes = &raw[expert * per..(expert + 1) * per];
                // candle reinterprets the bytes as blocks: copy them to aligned words.
                let mut words = vec![0u64; per.div_ceil(8)];
                let aligned = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..per];
                aligned.copy_from_slice(bytes);
                let q = ct.from_data(Cow::Borrowed(&*aligned));
                return Ok(Linear { name: lname, n_in, n_out, kind: Kind::Blocks(q) });
            }
        }
        let round = match (self.precision, t.ty) {
            (Precision::F32, _) | (_, GgmlType::F32) => ActRound::None,
            (_, GgmlType::F16) => ActRound::F16,
            (_, GgmlType::BF16) => ActRound::BF16,
            _ => ActRound::None,
        };
        let mut w = vec![0f32; n_in * n_out];
        self.source.read_rows(i, (expert * n_out) as u64, &mut w)?;
        let w = Tensor::from_vec(w, (n_out, n_in), &Device::Cpu)
            .map_err(|e| candle_err(&format!("{}: tensor '{name}'", self.source.describe()), e))?;
        Ok(Linear { name: lname, n_in, n_out, kind: Kind::Dense(w, round) })
    }

    /// A 2-D weight as a [`Linear`].
    pub fn linear(&self, name: &str) -> Result<Linear> {
        let i = self.find(name)?;
        let t = &self.source.tensors()[i];
        let (n_in, n_out) = (t.row_len() as usize, t.n_rows() as usize);
        let what = |e| candle_err(&format!("{}: tensor '{name}'", self.source.describe()), e);
        if self.precision == Precision::AsStored {
            if let (Some(ct), Some(raw)) = (candle_type(t.ty), self.source.raw(i)) {
                let expect = t.ty.row_size(n_in as u64).unwrap_or(0) as usize * n_out;
                if raw.len() != expect {
                    return Err(Error::Other(format!("tensor '{name}': {} bytes, expected {expect}", raw.len())));
                }
                // candle reinterprets the bytes as blocks (and copies them): they must
                // be aligned for the block type. GGUF data is; copy otherwise.
                let q = if raw.as_ptr() as usize % 8 == 0 {
                    ct.from_data(Cow::Borrowed(raw))
                } else {
                    let mut words = vec![0u64; raw.len().div_ceil(8)];
                    let bytes = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..raw.len()];
                    bytes.copy_from_slice(raw);
                    ct.from_data(Cow::Borrowed(&*bytes))
                };
                return Ok(Linear { name: name.into(), n_in, n_out, kind: Kind::Blocks(q) });
            }
        }
        let round = match (self.precision, t.ty) {
            (Precision::F32, _) | (_, GgmlType::F32) => ActRound::None,
            (_, GgmlType::F16) => ActRound::F16,
            (_, GgmlType::BF16) => ActRound::BF16,
            // Other types: llama.cpp would quantize the activations to Q8; f32 here.
            _ => ActRound::None,
        };
        let mut w = vec![0f32; n_in * n_out];
        self.source.read_rows(i, 0, &mut w)?;
        let w = Tensor::from_vec(w, (n_out, n_in), &Device::Cpu).map_err(what)?;
        Ok(Linear { name: name.into(), n_in, n_out, kind: Kind::Dense(w, round) })
    }
}
