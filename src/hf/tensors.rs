//! Hugging Face-named tensors, whatever holds them.
//!
//! [`HfTensors`] is what the HF → GGUF conversion ([`crate::convert::HfToGguf`])
//! and the safetensors writer ([`super::writer`]) read: a list of tensors with
//! their checkpoint names, dtypes and shapes, whose rows can be read as f32
//! (and whose stored bytes can be borrowed when they are unchanged).
//! [`super::SafetensorsModel`] implements it over the memory-mapped files; a
//! LoRA merge ([`crate::lora::LoraMerged`]) implements it over a base model,
//! computing merged rows on the fly. Renaming, the Q/K permutation, metadata
//! and the tokenizer therefore stay in one place whichever the weights are.

use std::path::Path;

use super::DType;
use crate::error::Result;

/// Name, element type and shape of one tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfTensor {
    pub name: String,
    pub dtype: DType,
    /// Shape as in safetensors (row-major, the last dimension varies fastest).
    pub shape: Vec<u64>,
}

crate::shape::shape_accessors!(HfTensor, RowMajor, shape);

/// An ordered collection of Hugging Face-named tensors.
pub trait HfTensors: Sync {
    /// The tensors, in the order convert_hf_to_gguf.py would visit them.
    fn tensors(&self) -> &[HfTensor];

    /// The position of a tensor in [`HfTensors::tensors`].
    fn index_of(&self, name: &str) -> Option<usize>;

    /// A tensor by name.
    fn get(&self, name: &str) -> Option<(usize, &HfTensor)> {
        let i = self.index_of(name)?;
        self.tensors().get(i).map(|t| (i, t))
    }

    /// Reads whole rows of tensor `index` starting at `first_row` as f32;
    /// `out.len()` must be a whole number of rows. A 1-D tensor is one row.
    fn read_rows_f32(&self, index: usize, first_row: u64, out: &mut [f32]) -> Result<()>;

    /// The stored bytes (little-endian, of the tensor's dtype) when they are
    /// exactly the tensor's values, so a writer may copy them unchanged.
    fn raw(&self, _index: usize) -> Option<&[u8]> {
        None
    }

    /// Rows `first_row..first_row + n_rows` will not be read again soon.
    fn release_rows(&self, _index: usize, _first_row: u64, _n_rows: u64) {}

    /// The tensor will not be read again soon.
    fn release(&self, _index: usize) {}

    /// The file to name in messages about a tensor.
    fn file_of(&self, index: usize) -> &Path;

    /// Every file read (an output must not overwrite any of them).
    fn inputs(&self) -> Vec<&Path>;
}
