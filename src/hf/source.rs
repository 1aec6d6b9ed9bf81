//! A Hugging Face model's tensors ([`HfTensors`]) as a pipeline
//! [`TensorSource`], under their checkpoint names and shapes: what
//! [`super::writer::write_weights`] feeds the one write engine.

use super::tensors::{HfTensor, HfTensors};
use super::DType;
use crate::error::{Error, Result};
use crate::gguf::GgmlType;
use crate::pipeline::{SourceTensor, TensorSource};

/// The ggml type that stores a float dtype's values bit for bit.
pub fn ggml_type(d: DType) -> Result<GgmlType> {
    Ok(match d {
        DType::F32 => GgmlType::F32,
        DType::F16 => GgmlType::F16,
        DType::BF16 => GgmlType::BF16,
        other => return Err(Error::Unsupported(format!("cannot write {other} tensors"))),
    })
}

/// [`HfTensors`] as a [`TensorSource`]: dims row length first, the stored
/// dtype as its ggml type.
pub struct HfSource<'a> {
    src: &'a dyn HfTensors,
    tensors: Vec<SourceTensor>,
}

impl<'a> HfSource<'a> {
    pub fn new(src: &'a dyn HfTensors) -> Result<HfSource<'a>> {
        let tensors = src
            .tensors()
            .iter()
            .enumerate()
            .map(|(i, t): (usize, &HfTensor)| {
                let ty = ggml_type(t.dtype).map_err(|_| {
                    Error::input(
                        src.file_of(i),
                        format!("tensor '{}' has dtype {}; only F32, F16 and BF16 can be written", t.name, t.dtype),
                    )
                })?;
                let dims: Vec<u64> = t.shape.iter().rev().copied().collect();
                Ok(SourceTensor { name: t.name.clone(), dims: if dims.is_empty() { vec![1] } else { dims }, ty })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(HfSource { src, tensors })
    }
}

impl TensorSource for HfSource<'_> {
    fn describe(&self) -> String {
        self.src.inputs().first().map(|p| p.display().to_string()).unwrap_or_default()
    }
    fn tensors(&self) -> &[SourceTensor] {
        &self.tensors
    }
    fn read_rows(&self, index: usize, row0: u64, out: &mut [f32]) -> Result<()> {
        self.src.read_rows_f32(index, row0, out)
    }
    fn raw(&self, index: usize) -> Option<&[u8]> {
        self.src.raw(index)
    }
    fn rows_done(&self, index: usize, row0: u64, n: u64) {
        self.src.release_rows(index, row0, n);
    }
    fn done(&self, index: usize) {
        self.src.release(index);
    }
}
