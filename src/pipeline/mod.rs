//! The streaming core every command shares:
//!
//! ```text
//! source ──▶ (transforms, themselves sources) ──▶ plan ──▶ write_gguf
//! ```
//!
//! A [`TensorSource`] yields tensors lazily: name, shape, stored type, and rows
//! decoded to f32 on demand (or its stored bytes, when they can be copied as
//! they are). A plan says, for each output tensor in output order, which
//! source tensor it comes from and what type it is written as. [`write_gguf`]
//! computes the layout up front, writes the header, then streams each tensor:
//! rows are decoded and encoded in parallel chunks (rayon) while a writer
//! thread writes the previous chunk, so reading, computing and writing overlap
//! and memory stays bounded by a few chunk buffers whatever the model size.

mod plan;
mod source;
mod write;

#[cfg(test)]
mod tests;

pub use plan::{check_plan, layout, specs, Planned};
pub use source::{GgufSource, SourceTensor, TensorSource};
pub use write::{
    write_gguf, write_gguf_multi, ErrorStats, MultiOutput, MultiSummary, TensorReport, WriteOptions, WriteSummary,
};
