//! The streaming core every command shares:
//!
//! ```text
//! source ──▶ (transforms, themselves sources) ──▶ plan ──▶ engine ──▶ sinks
//! ```
//!
//! A [`TensorSource`] yields tensors lazily: name, shape, stored type, and rows
//! decoded to f32 on demand (or its stored bytes, when they can be copied as
//! they are). A plan ([`Planned`] per output tensor, in output order) says
//! which source tensor each output tensor comes from and what type it is
//! written as. The engine ([`run`]) reads each source tensor once, decodes
//! each chunk of rows once and encodes it for every output; [`Observer`]s
//! do the side work (error figures, progress, more when asked); [`Sink`]s ([`GgufSink`], [`SafetensorsSink`]) put the bytes at their place,
//! with writeback windows and an atomic commit. [`write_gguf`] and
//! [`write_gguf_multi`] are the engine with GGUF sinks. See ARCHITECTURE.md.

mod engine;
mod observe;
mod plan;
mod sink;
mod source;
mod write;

#[cfg(test)]
mod tests;

pub use engine::{run, run_observed, thread_pool, Job};
pub use observe::{EncodedRows, ErrorObserver, Observer, ProgressObserver};
pub use plan::{check_plan, layout, specs, Planned};
pub use sink::{GgufSink, SafetensorsFile, SafetensorsSink, Sink};
pub use source::{GgufSource, SourceTensor, TensorSource};
pub use write::{write_gguf, write_gguf_multi, ErrorStats, MultiOutput, TensorReport, WriteOptions, WriteSummary};
