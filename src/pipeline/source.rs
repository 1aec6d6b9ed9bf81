//! Sources: tensors offered lazily, rows decoded to f32 on demand.

use crate::error::{Error, Result};
use crate::gguf::{GgmlType, GgufFile};
use crate::quant;

/// A tensor as a source offers it.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceTensor {
    /// Name in the output (sources that rename, rename here).
    pub name: String,
    /// Dimensions, row length (ne0) first.
    pub dims: Vec<u64>,
    /// The type of the stored data ([`TensorSource::raw`] bytes are of this type).
    pub ty: GgmlType,
}

crate::shape::shape_accessors!(SourceTensor, Ggml, dims);

/// A lazy, ordered collection of named tensors.
pub trait TensorSource: Sync {
    /// Where the data comes from, for messages (a file or directory path).
    fn describe(&self) -> String;
    /// The tensors, in the source's order.
    fn tensors(&self) -> &[SourceTensor];
    /// Decodes rows `[row0, row0 + out.len() / row_len)` of tensor `index` into `out`.
    fn read_rows(&self, index: usize, row0: u64, out: &mut [f32]) -> Result<()>;
    /// The tensor's stored bytes, when they can be written out unchanged.
    fn raw(&self, _index: usize) -> Option<&[u8]> {
        None
    }
    /// Rows `[row0, row0 + n)` of tensor `index` as stored in the tensor's
    /// type, when the source holds them unchanged: exactly the bytes
    /// [`TensorSource::read_rows`] decodes. Kernels that encode F16 / BF16
    /// directly read them instead of f32 rows.
    fn stored_rows(&self, _index: usize, _row0: u64, _n: u64) -> Option<&[u8]> {
        None
    }
    /// The reader is done with rows `[row0, row0 + n)` of tensor `index`, however
    /// it read them ([`TensorSource::read_rows`], [`TensorSource::raw`] or
    /// [`TensorSource::stored_rows`]): the source may release their memory.
    ///
    /// Reading never releases by itself. Readers hand rows back in large
    /// ranges (the engine: once per chunk), because each release of mapped
    /// pages is a system call that interrupts every other core running this
    /// process (a TLB shootdown). Released per task, that was 4,358 calls in
    /// a 554 MB BF16 → F16 conversion, and most of the gap between
    /// `quantize` Q8_0 and the memory floor.
    fn rows_done(&self, _index: usize, _row0: u64, _n: u64) {}
    /// The reader is done with tensor `index` (sources may release memory).
    fn done(&self, _index: usize) {}
}

/// A GGUF file as a tensor source.
pub struct GgufSource<'a> {
    file: &'a GgufFile,
    tensors: Vec<SourceTensor>,
}

impl<'a> GgufSource<'a> {
    pub fn new(file: &'a GgufFile) -> Self {
        let tensors = file
            .header
            .tensors
            .iter()
            .map(|t| SourceTensor { name: t.name.clone(), dims: t.dims.clone(), ty: t.ty })
            .collect();
        GgufSource { file, tensors }
    }
}

impl TensorSource for GgufSource<'_> {
    fn describe(&self) -> String {
        self.file.path().display().to_string()
    }
    fn tensors(&self) -> &[SourceTensor] {
        &self.tensors
    }
    fn read_rows(&self, index: usize, row0: u64, out: &mut [f32]) -> Result<()> {
        let info = &self.file.header.tensors[index];
        let row_bytes = info.ty.row_size(info.row_len()).unwrap_or(0);
        let n = out.len() as u64 / info.row_len().max(1);
        if row0 + n > info.n_rows() {
            return Err(Error::Other(format!("tensor '{}': rows {row0}+{n} out of range", info.name)));
        }
        let data = self.file.data(info);
        let bytes = &data[(row0 * row_bytes) as usize..((row0 + n) * row_bytes) as usize];
        quant::dequantize_rows(info.ty, bytes, out)
    }
    fn stored_rows(&self, index: usize, row0: u64, n: u64) -> Option<&[u8]> {
        let info = &self.file.header.tensors[index];
        let row_bytes = info.ty.row_size(info.row_len())?;
        let end = row0.checked_add(n).filter(|&e| e <= info.n_rows())?;
        self.file.data(info).get((row0 * row_bytes) as usize..(end * row_bytes) as usize)
    }
    fn rows_done(&self, index: usize, row0: u64, n: u64) {
        let info = &self.file.header.tensors[index];
        let row_bytes = info.ty.row_size(info.row_len()).unwrap_or(0);
        self.file.release_range(info, row0 * row_bytes, n * row_bytes);
    }
    fn raw(&self, index: usize) -> Option<&[u8]> {
        Some(self.file.data(&self.file.header.tensors[index]))
    }
    fn done(&self, index: usize) {
        self.file.release(&self.file.header.tensors[index]);
    }
}
