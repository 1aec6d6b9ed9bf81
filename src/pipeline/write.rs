//! The writers: one output in output order, or several outputs in one pass.

use std::path::Path;
use std::sync::mpsc::{channel, sync_channel};
use std::time::Instant;

use rayon::prelude::*;
use serde_json::json;

use super::plan::{check_plan, specs, Planned};
use super::source::{SourceTensor, TensorSource};
use crate::error::{Error, Result};
use crate::fileio::AtomicFile;
use crate::gguf::{GgmlType, GgufWriter, Layout, Metadata, WriterOptions};
use crate::progress::Progress;
use crate::quant;

/// Options of [`write_gguf`].
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// Worker threads (0: all cores).
    pub threads: usize,
    /// Target size of one chunk of f32 input rows.
    pub chunk_bytes: usize,
    pub container: WriterOptions,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions { threads: 0, chunk_bytes: 32 << 20, container: WriterOptions::default() }
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
    fn new(t: &SourceTensor, p: &Planned, copied: bool) -> TensorReport {
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
    pub seconds: f64,
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
            "tensors": self.tensors.iter().map(|t| json!({
                "name": t.name,
                "shape": t.dims,
                "source_type": t.source_type.name(),
                "type": t.ty.name(),
                "source_bytes": t.source_bytes,
                "bytes": t.bytes,
            })).collect::<Vec<_>>(),
        })
    }
}

fn thread_pool(threads: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("ggufkit-worker-{i}"))
        .build()
        .map_err(|e| Error::Other(format!("cannot start worker threads: {e}")))
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
    let start = Instant::now();
    check_plan(src, plan)?;
    let specs = specs(src, plan);
    let out = AtomicFile::create(dest, inputs)?;
    let writer = GgufWriter::with_options(out, dest, metadata, specs, opts.container)?;
    let total = writer.layout().total_size;
    let pool = thread_pool(opts.threads)?;
    let tensors = src.tensors();
    progress.begin("writing", writer.layout().sizes.iter().sum());

    // The writer thread takes filled buffers in order and hands them back for reuse.
    let (full_tx, full_rx) = sync_channel::<Vec<u8>>(2);
    let (empty_tx, empty_rx) = channel::<Vec<u8>>();
    let mut reports = Vec::with_capacity(plan.len());
    let (produced, written) = std::thread::scope(|scope| {
        let handle = scope.spawn(move || -> Result<AtomicFile> {
            let mut writer = writer;
            for buf in full_rx {
                writer.write_data(&buf)?;
                progress.advance(buf.len() as u64);
                let _ = empty_tx.send(buf);
            }
            writer.finish()
        });
        let take_buffer = |len: usize| -> Vec<u8> {
            let mut b = empty_rx.try_recv().unwrap_or_default();
            b.clear();
            b.resize(len, 0);
            b
        };
        let mut scratch: Vec<f32> = Vec::new();
        let produced = (|| -> Result<()> {
            for p in plan {
                let t = &tensors[p.source];
                progress.item(&t.name);
                let out_row = p.ty.row_size(t.row_len()).unwrap_or(0) as usize;
                let rows = t.n_rows() as usize;
                let copied = p.ty == t.ty && p.imatrix.is_none() && src.raw(p.source).is_some();
                if copied {
                    let raw = src.raw(p.source).unwrap_or_default();
                    check_stored(src, t, raw)?;
                    for (k, piece) in raw.chunks(opts.chunk_bytes.max(1)).enumerate() {
                        let mut b = take_buffer(piece.len());
                        b.copy_from_slice(piece);
                        src.raw_consumed(p.source, (k * opts.chunk_bytes.max(1)) as u64, piece.len() as u64);
                        if full_tx.send(b).is_err() {
                            return Ok(()); // the writer failed; its error is reported below
                        }
                    }
                } else {
                    let row_len = t.row_len() as usize;
                    let rows_per_chunk = (opts.chunk_bytes / (row_len * 4).max(1)).clamp(1, rows.max(1));
                    // Give each worker task a few rows, so small rows still parallelize well.
                    let rows_per_task = task_rows(rows_per_chunk, row_len, pool.current_num_threads());
                    let mut r0 = 0;
                    while r0 < rows {
                        let n = rows_per_chunk.min(rows - r0);
                        scratch.resize(n * row_len, 0.0);
                        let mut b = take_buffer(n * out_row);
                        pool.install(|| {
                            scratch
                                .par_chunks_mut(rows_per_task * row_len)
                                .zip(b.par_chunks_mut(rows_per_task * out_row))
                                .enumerate()
                                .try_for_each(|(i, (f, o))| {
                                    let first = (r0 + i * rows_per_task) as u64;
                                    src.read_rows(p.source, first, f)?;
                                    check_finite(src, t, first, row_len, f)?;
                                    encode(t, p, first, row_len, f, o)
                                })
                        })?;
                        if full_tx.send(b).is_err() {
                            return Ok(());
                        }
                        r0 += n;
                    }
                }
                src.done(p.source);
                reports.push(TensorReport::new(t, p, copied));
            }
            Ok(())
        })();
        drop(full_tx);
        let written = handle.join().unwrap_or_else(|_| Err(Error::Other("writer thread panicked".into())));
        (produced, written)
    });
    progress.finish();
    // The producer stops quietly when the writer fails (disk full, ...), and
    // the writer reports an incomplete file when the producer fails: each
    // side's own error is the one that explains the stop.
    produced?;
    let file = written?;
    file.commit()?;
    Ok(WriteSummary {
        path: dest.to_path_buf(),
        file_size: total,
        tensors: reports,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Rows per rayon task: a quarter of a thread's share of the chunk, at most
/// 64 Ki values (256 KiB of f32), so that what a task decodes is still in L2
/// when it encodes it.
fn task_rows(rows_per_chunk: usize, row_len: usize, threads: usize) -> usize {
    (rows_per_chunk / (threads * 4)).min((1 << 16) / row_len.max(1)).max(1)
}

fn check_finite(src: &dyn TensorSource, t: &SourceTensor, first_row: u64, row_len: usize, rows: &[f32]) -> Result<()> {
    if let Some(pos) = crate::quant::first_non_finite(rows) {
        return Err(Error::NonFinite {
            source_name: src.describe(),
            tensor: t.name.clone(),
            row: first_row + (pos / row_len) as u64,
            value: rows[pos],
        });
    }
    Ok(())
}

/// Stored data copied as it is gets the same validation llama-quantize applies
/// to copied tensors (no NaN/Inf values, no non-finite block scales).
fn check_stored(src: &dyn TensorSource, t: &SourceTensor, raw: &[u8]) -> Result<()> {
    match check_encoded(t, t.ty, 0, raw) {
        Err(_) if t.ty.is_float() => {
            // Report a non-finite input value like converted inputs do.
            let row_bytes = t.ty.row_size(t.row_len()).unwrap_or(1).max(1) as usize;
            let bad = crate::quant::validate::validate_rows(t.ty, raw).map_or(0, |b| b.block);
            let elem = t.ty.type_size() as usize;
            let mut v = [0f32];
            let at = bad * elem;
            let _ = quant::dequantize_rows(t.ty, &raw[at..at + elem], &mut v);
            Err(Error::NonFinite {
                source_name: src.describe(),
                tensor: t.name.clone(),
                row: (at / row_bytes) as u64,
                value: v[0],
            })
        }
        r => r,
    }
}

/// Validates encoded rows (ggml's `ggml_validate_row_data` rules).
fn check_encoded(t: &SourceTensor, ty: GgmlType, first_row: u64, data: &[u8]) -> Result<()> {
    match crate::quant::validate::validate_rows(ty, data) {
        None => Ok(()),
        Some(bad) => {
            let per_row = (t.row_len() / ty.block_size()).max(1) as usize;
            Err(Error::Other(format!(
                "tensor '{}' row {}: {} in the {ty} data (llama.cpp refuses such data too)",
                t.name,
                first_row + (bad.block / per_row) as u64,
                bad.what
            )))
        }
    }
}

fn encode(t: &SourceTensor, p: &Planned, first_row: u64, row_len: usize, f: &[f32], out: &mut [u8]) -> Result<()> {
    let out_row = p.ty.row_size(row_len as u64).unwrap_or(0) as usize;
    let n_rows = f.len() / row_len.max(1);
    // With an importance matrix there is one slice of row_len weights per
    // expert (the last dimension of a 3-D tensor): encode expert by expert.
    let (experts, rows_per_expert) = match &p.imatrix {
        Some(im) => {
            let experts = (im.len() / row_len.max(1)).max(1);
            (experts, (t.n_rows() / experts as u64).max(1))
        }
        None => (1, u64::MAX),
    };
    let mut r = 0usize;
    while r < n_rows {
        let row = first_row + r as u64;
        let expert = (row / rows_per_expert) as usize;
        let run = (((expert as u64 + 1).saturating_mul(rows_per_expert) - row) as usize).min(n_rows - r);
        let imatrix = p.imatrix.as_deref().map(|im| {
            let e = expert.min(experts - 1);
            &im[e * row_len..(e + 1) * row_len]
        });
        let (fs, os) = (&f[r * row_len..(r + run) * row_len], &mut out[r * out_row..(r + run) * out_row]);
        quant::quantize_rows(p.ty, fs, row_len, imatrix, os).map_err(|e| match e {
            Error::Other(m) => Error::Other(format!("tensor '{}' rows from {row}: {m}", t.name)),
            e => e,
        })?;
        check_encoded(t, p.ty, row, os)?;
        r += run;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// One source, several outputs.

/// One output of [`write_gguf_multi`]: a plan over the shared source, the
/// metadata to write and the destination file.
#[derive(Debug, Clone, Copy)]
pub struct MultiOutput<'a> {
    pub plan: &'a [Planned],
    pub metadata: &'a Metadata,
    pub dest: &'a Path,
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
    /// RMS error relative to the RMS of the reference values (0 when those are all zero).
    pub fn relative_rms(&self) -> f64 {
        if self.sum_sq_ref > 0.0 {
            (self.sum_sq_err / self.sum_sq_ref).sqrt()
        } else {
            0.0
        }
    }
}

/// What [`write_gguf_multi`] wrote for one output.
#[derive(Debug, Clone)]
pub struct MultiSummary {
    pub summary: WriteSummary,
    /// Per tensor in output order, the error against the source's f32 rows
    /// (empty unless measured).
    pub errors: Vec<ErrorStats>,
}

/// An output file being filled out of order.
struct MultiFile {
    file: AtomicFile,
    layout: Layout,
}

/// Writes several GGUF files from one source in one pass over its tensors:
/// each tensor's rows are read (decoded to f32) once, in source order, and
/// encoded for every output that contains it. Outputs may order their
/// tensors differently (a conversion keeps the source order, a quantization
/// has llama-quantize's order): the layouts are known up front, so each chunk
/// goes straight to its place in its file. Every file is byte-identical to
/// what [`write_gguf`] writes for the same plan and metadata, and memory
/// stays bounded by a few chunks per output.
///
/// All files are written atomically and committed one after the other once
/// every one is complete; an error while writing leaves none of them. With `measure_error`, the encoded rows are
/// decoded again and compared with the source rows ([`ErrorStats`] per tensor).
pub fn write_gguf_multi(
    src: &dyn TensorSource,
    outputs: &[MultiOutput<'_>],
    inputs: &[&Path],
    opts: &WriteOptions,
    measure_error: bool,
    progress: &dyn Progress,
) -> Result<Vec<MultiSummary>> {
    let start = Instant::now();
    let tensors = src.tensors();
    for (i, o) in outputs.iter().enumerate() {
        check_plan(src, o.plan)?;
        if outputs[..i].iter().any(|p| p.dest == o.dest) {
            return Err(Error::usage(format!("output {} is named twice", o.dest.display())));
        }
    }
    // Which outputs use each source tensor, at which position of their plan.
    let mut users: Vec<Vec<(usize, usize)>> = vec![Vec::new(); tensors.len()];
    for (u, o) in outputs.iter().enumerate() {
        for (k, p) in o.plan.iter().enumerate() {
            users[p.source].push((u, k));
        }
    }
    let mut files = Vec::with_capacity(outputs.len());
    for o in outputs {
        let specs = specs(src, o.plan);
        let layout = Layout::new(opts.container, o.metadata, &specs)?;
        let header = crate::gguf::writer::encode_header(&layout, o.metadata, &specs);
        let mut file = AtomicFile::create(o.dest, inputs)?;
        file.write_all_at(&header, 0)?;
        files.push(MultiFile { file, layout });
    }
    let layouts: Vec<Layout> = files.iter().map(|f| f.layout.clone()).collect();
    let pool = thread_pool(opts.threads)?;
    let total: u64 =
        tensors.iter().zip(&users).filter(|(_, u)| !u.is_empty()).map(|(t, _)| t.n_elements().saturating_mul(4)).sum();
    progress.begin("writing", total);

    let mut reports: Vec<Vec<Option<TensorReport>>> = outputs.iter().map(|o| vec![None; o.plan.len()]).collect();
    let mut errors: Vec<Vec<ErrorStats>> = outputs
        .iter()
        .map(|o| if measure_error { vec![ErrorStats::default(); o.plan.len()] } else { vec![] })
        .collect();

    // The writer thread puts each filled buffer at its offset and hands it back for reuse.
    let (full_tx, full_rx) = sync_channel::<(usize, u64, Vec<u8>)>(outputs.len().max(1));
    let (empty_tx, empty_rx) = channel::<Vec<u8>>();
    let (produced, written) = std::thread::scope(|scope| {
        let handle = scope.spawn(move || -> Result<Vec<MultiFile>> {
            let mut files = files;
            for (u, offset, buf) in full_rx {
                files[u].file.write_all_at(&buf, offset)?;
                let _ = empty_tx.send(buf);
            }
            Ok(files)
        });
        let take_buffer = |len: usize| -> Vec<u8> {
            let mut b = empty_rx.try_recv().unwrap_or_default();
            b.clear();
            b.resize(len, 0);
            b
        };
        let mut scratch: Vec<f32> = Vec::new();
        let mut row_errs: Vec<ErrorStats> = Vec::new();
        let produced = (|| -> Result<()> {
            for (si, t) in tensors.iter().enumerate() {
                let used = &users[si];
                if used.is_empty() {
                    continue;
                }
                progress.item(&t.name);
                let row_len = t.row_len() as usize;
                let rows = t.n_rows() as usize;
                let raw = src.raw(si);
                let copies: Vec<bool> = used
                    .iter()
                    .map(|&(u, k)| {
                        let p = &outputs[u].plan[k];
                        p.ty == t.ty && p.imatrix.is_none() && raw.is_some()
                    })
                    .collect();
                if let Some(raw) = raw.filter(|_| copies.iter().any(|&c| c)) {
                    check_stored(src, t, raw)?;
                }
                let need_rows = measure_error || copies.iter().any(|&c| !c);
                let rows_per_chunk = (opts.chunk_bytes / (row_len * 4).max(1)).clamp(1, rows.max(1));
                let rows_per_task = task_rows(rows_per_chunk, row_len, pool.current_num_threads());
                let mut r0 = 0;
                while r0 < rows {
                    let n = rows_per_chunk.min(rows - r0);
                    let last = r0 + n == rows;
                    if need_rows {
                        scratch.resize(n * row_len, 0.0);
                        pool.install(|| {
                            scratch.par_chunks_mut(rows_per_task * row_len).enumerate().try_for_each(|(i, f)| {
                                let first = (r0 + i * rows_per_task) as u64;
                                src.read_rows(si, first, f)?;
                                check_finite(src, t, first, row_len, f)
                            })
                        })?;
                    }
                    for (&(u, k), &copied) in used.iter().zip(&copies) {
                        let p = &outputs[u].plan[k];
                        let out_row = p.ty.row_size(t.row_len()).unwrap_or(0) as usize;
                        let layout = &layouts[u];
                        let size = layout.sizes[k];
                        let padding =
                            if last { (size.div_ceil(layout.alignment) * layout.alignment - size) as usize } else { 0 };
                        let mut b = take_buffer(n * out_row + padding);
                        let data = &mut b[..n * out_row];
                        if copied {
                            let raw = raw.unwrap_or_default();
                            data.copy_from_slice(&raw[r0 * out_row..(r0 + n) * out_row]);
                        } else {
                            let scratch = &scratch;
                            pool.install(|| {
                                scratch
                                    .par_chunks(rows_per_task * row_len)
                                    .zip(data.par_chunks_mut(rows_per_task * out_row))
                                    .enumerate()
                                    .try_for_each(|(i, (f, o))| {
                                        encode(t, p, (r0 + i * rows_per_task) as u64, row_len, f, o)
                                    })
                            })?;
                        }
                        if measure_error {
                            row_errs.clear();
                            row_errs.resize(n, ErrorStats::default());
                            let data = &b[..n * out_row];
                            pool.install(|| {
                                scratch
                                    .par_chunks(rows_per_task * row_len)
                                    .zip(data.par_chunks(rows_per_task * out_row))
                                    .zip(row_errs.par_chunks_mut(rows_per_task))
                                    .try_for_each(|((f, o), e)| row_errors(p.ty, row_len, f, o, e))
                            })?;
                            let acc = &mut errors[u][k];
                            for e in &row_errs {
                                acc.add(e);
                            }
                        }
                        let offset = layout.data_offset + layout.offsets[k] + (r0 * out_row) as u64;
                        if full_tx.send((u, offset, b)).is_err() {
                            return Ok(()); // the writer failed; its error is reported below
                        }
                    }
                    progress.advance((n * row_len * 4) as u64);
                    r0 += n;
                }
                src.done(si);
                for (&(u, k), &copied) in used.iter().zip(&copies) {
                    let p = &outputs[u].plan[k];
                    reports[u][k] = Some(TensorReport::new(t, p, copied));
                }
            }
            Ok(())
        })();
        drop(full_tx);
        let written = handle.join().unwrap_or_else(|_| Err(Error::Other("writer thread panicked".into())));
        (produced, written)
    });
    progress.finish();
    produced?;
    let files = written?;
    let seconds = start.elapsed().as_secs_f64();
    let mut out = Vec::with_capacity(files.len());
    for (((f, o), reports), errors) in files.into_iter().zip(outputs).zip(reports).zip(errors) {
        f.file.commit()?;
        let tensors = reports
            .into_iter()
            .map(|r| r.ok_or_else(|| Error::Other("tensor not written".into())))
            .collect::<Result<Vec<_>>>()?;
        out.push(MultiSummary {
            summary: WriteSummary { path: o.dest.to_path_buf(), file_size: f.layout.total_size, tensors, seconds },
            errors,
        });
    }
    Ok(out)
}

/// Per row: the error of encoded rows against their f32 source.
fn row_errors(ty: GgmlType, row_len: usize, reference: &[f32], encoded: &[u8], out: &mut [ErrorStats]) -> Result<()> {
    let out_row = ty.row_size(row_len as u64).unwrap_or(0) as usize;
    let mut back = vec![0f32; row_len];
    for (r, e) in out.iter_mut().enumerate() {
        let x = reference.get(r * row_len..(r + 1) * row_len).unwrap_or_default();
        let enc = encoded.get(r * out_row..(r + 1) * out_row).unwrap_or_default();
        quant::dequantize_rows(ty, enc, &mut back)?;
        let mut s = ErrorStats { n: row_len as u64, ..Default::default() };
        for (&a, &b) in x.iter().zip(&back) {
            let d = (a as f64) - (b as f64);
            s.sum_sq_err += d * d;
            s.sum_sq_ref += (a as f64) * (a as f64);
            s.max_abs_err = s.max_abs_err.max(d.abs());
        }
        *e = s;
    }
    Ok(())
}
