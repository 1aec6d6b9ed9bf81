//! Summaries of what was written, and the two ways of calling the engine
//! for GGUF outputs: one file ([`write_gguf`]) or several from one pass
//! ([`write_gguf_multi`]).

use std::path::Path;

use serde_json::json;

use super::engine::{self, Job};
use super::plan::{specs, Planned};
use super::sink::GgufSink;
use super::source::{SourceTensor, TensorSource};
use crate::error::Result;
use crate::gguf::{GgmlType, Metadata, WriterOptions};
use crate::progress::Progress;

/// Options of [`write_gguf`].
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// Worker threads (0: all cores).
    pub threads: usize,
    /// Target size of one chunk of f32 input rows.
    pub chunk_bytes: usize,
    /// At most this many encoded bytes (all outputs together) per chunk, so
    /// that a chunk's buffers are still in cache when the writer copies them
    /// into the output files (a chunk is at least one row).
    pub chunk_out_bytes: usize,
    pub container: WriterOptions,
    /// Decode what was encoded and compare it with the source's f32 rows
    /// ([`WriteSummary::errors`]); costs a decode of every output.
    pub measure_error: bool,
    /// Copy stored bytes as they are, without the validation llama-quantize
    /// applies to copied tensors (`edit`).
    pub verbatim: bool,
    /// Compute each output's SHA-256 as it is written ([`WriteSummary::sha256`]).
    pub hash: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            threads: 0,
            chunk_bytes: 32 << 20,
            chunk_out_bytes: 2 << 20,
            container: WriterOptions::default(),
            measure_error: false,
            verbatim: false,
            hash: false,
        }
    }
}

/// What was written, per tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorReport {
    pub name: String,
    pub dims: Vec<u64>,
    pub source_type: GgmlType,
    pub ty: GgmlType,
    pub source_bytes: u64,
    pub bytes: u64,
    /// Copied as stored (no decode/encode).
    pub copied: bool,
}

impl TensorReport {
    pub(crate) fn new(t: &SourceTensor, p: &Planned, copied: bool) -> TensorReport {
        TensorReport {
            name: t.name.clone(),
            dims: p.dims.clone().unwrap_or_else(|| t.dims.clone()),
            source_type: t.ty,
            ty: p.ty,
            source_bytes: t.ty.tensor_size(&t.dims).unwrap_or(0),
            bytes: p.ty.tensor_size(&t.dims).unwrap_or(0),
            copied,
        }
    }
}

/// Summary of a written file.
#[derive(Debug, Clone)]
pub struct WriteSummary {
    pub path: std::path::PathBuf,
    pub file_size: u64,
    pub tensors: Vec<TensorReport>,
    /// Per tensor, the error against the source's f32 rows (empty unless
    /// [`WriteOptions::measure_error`]).
    pub errors: Vec<ErrorStats>,
    pub seconds: f64,
    /// SHA-256 of the output (hex), when the sink computed it as it wrote.
    pub sha256: Option<String>,
}

impl WriteSummary {
    pub fn to_json(&self) -> serde_json::Value {
        let n_params: u64 = self.tensors.iter().map(|t| t.dims.iter().product::<u64>()).sum();
        let bytes: u64 = self.tensors.iter().map(|t| t.bytes).sum();
        let mut counts: Vec<(GgmlType, usize)> = Vec::new();
        for t in &self.tensors {
            match counts.iter_mut().find(|c| c.0 == t.ty) {
                Some(c) => c.1 += 1,
                None => counts.push((t.ty, 1)),
            }
        }
        counts.sort_by_key(|c| c.0.id());
        json!({
            "output": self.path.display().to_string(),
            "file_size": self.file_size,
            "tensor_count": self.tensors.len(),
            "parameter_count": n_params,
            "tensor_bytes": bytes,
            "bits_per_weight": if n_params > 0 { bytes as f64 * 8.0 / n_params as f64 } else { 0.0 },
            "tensor_types": counts.iter().map(|(t, n)| json!({"type": t.name(), "count": n})).collect::<Vec<_>>(),
            "seconds": (self.seconds * 1000.0).round() / 1000.0,
            "tensors": self.tensors.iter().enumerate().map(|(i, t)| {
                let mut j = json!({
                    "name": t.name,
                    "shape": t.dims,
                    "source_type": t.source_type.name(),
                    "type": t.ty.name(),
                    "source_bytes": t.source_bytes,
                    "bytes": t.bytes,
                });
                if let Some(e) = self.errors.get(i) {
                    j["error"] = e.to_json();
                }
                j
            }).collect::<Vec<_>>(),
        })
    }
}

/// How far written values are from the source's f32 rows: squared-error and
/// squared-value sums (f64) and the largest absolute error. Sums are taken row
/// by row and added in row order, so the figures depend neither on the thread
/// count nor on the chunk size.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ErrorStats {
    /// Values compared.
    pub n: u64,
    pub sum_sq_err: f64,
    pub sum_sq_ref: f64,
    pub max_abs_err: f64,
}

impl ErrorStats {
    /// Adds another set of values.
    pub fn add(&mut self, o: &ErrorStats) {
        self.n += o.n;
        self.sum_sq_err += o.sum_sq_err;
        self.sum_sq_ref += o.sum_sq_ref;
        self.max_abs_err = self.max_abs_err.max(o.max_abs_err);
    }
    /// Root-mean-square error.
    pub fn rms(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            (self.sum_sq_err / self.n as f64).sqrt()
        }
    }
    /// `{"rms", "relative_rms", "max"}`, as the reports show it.
    pub fn to_json(&self) -> serde_json::Value {
        json!({"rms": self.rms(), "relative_rms": self.relative_rms(), "max": self.max_abs_err})
    }
    /// RMS error relative to the RMS of the reference values (0 when those are all zero).
    pub fn relative_rms(&self) -> f64 {
        if self.sum_sq_ref > 0.0 {
            (self.sum_sq_err / self.sum_sq_ref).sqrt()
        } else {
            0.0
        }
    }
}

/// One output of [`write_gguf_multi`]: a plan over the shared source, the
/// metadata to write and the destination file.
#[derive(Debug, Clone, Copy)]
pub struct MultiOutput<'a> {
    pub plan: &'a [Planned],
    pub metadata: &'a Metadata,
    pub dest: &'a Path,
}

/// Writes the planned tensors of `src` with `metadata` to `dest` (atomically).
/// `inputs` are the files read, which `dest` may not be.
pub fn write_gguf(
    src: &dyn TensorSource,
    plan: &[Planned],
    metadata: &Metadata,
    dest: &Path,
    inputs: &[&Path],
    opts: &WriteOptions,
    progress: &dyn Progress,
) -> Result<WriteSummary> {
    let out = write_gguf_multi(src, &[MultiOutput { plan, metadata, dest }], inputs, opts, progress)?;
    Ok(out.into_iter().next().expect("one output"))
}

/// Writes several GGUF files from one source in one pass over its tensors:
/// each tensor's rows are read (decoded to f32) once and encoded for every
/// output that contains it. Outputs may order their tensors differently (a
/// conversion keeps the source order, a quantization has llama-quantize's
/// order): the layouts are known up front, so each chunk goes straight to its
/// place in its file. Every file is byte-identical to what [`write_gguf`]
/// writes for the same plan and metadata, and memory stays bounded by a few
/// chunks per output.
///
/// All files are written atomically and committed one after the other once
/// every one is complete; an error while writing leaves none of them.
pub fn write_gguf_multi(
    src: &dyn TensorSource,
    outputs: &[MultiOutput<'_>],
    inputs: &[&Path],
    opts: &WriteOptions,
    progress: &dyn Progress,
) -> Result<Vec<WriteSummary>> {
    let mut jobs = Vec::with_capacity(outputs.len());
    for (i, o) in outputs.iter().enumerate() {
        super::plan::check_plan(src, o.plan)?;
        if outputs[..i].iter().any(|p| p.dest == o.dest) {
            return Err(crate::Error::usage(format!("output {} is named twice", o.dest.display())));
        }
        let sink = GgufSink::create(o.dest, o.metadata, &specs(src, o.plan), opts.container, inputs, opts.hash)?;
        jobs.push(Job { plan: o.plan, sink: Box::new(sink) });
    }
    engine::run(src, jobs, opts, progress)
}
