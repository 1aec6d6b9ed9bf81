//! The one scheduler every command writes through.
//!
//! A schedule is one source and N outputs, each output a plan over the
//! source (which source tensor, as what type) and a [`Sink`] (where the
//! bytes go). The scheduler visits each source tensor once, in the order of
//! the first output's plan (then any tensor only later outputs use, in source
//! order), so a single output is written front to back. Each chunk of rows is
//! read and decoded once; one rayon task per few rows decodes its rows and,
//! while they are still in cache, encodes them for every output that uses the
//! tensor (copies of stored bytes included) and hands the encoded rows (with
//! their f32 rows) to the [`Observer`]s: error figures, progress, any side
//! work a caller adds. Stored F16/BF16 rows are encoded without f32 rows in
//! memory when no observer needs them (the fused fast path). A writer thread
//! hands each encoded chunk to its sink at its place in the output (and tells
//! the observers), so reading, computing and writing overlap and memory stays
//! bounded by a few chunks whatever the model size.
//!
//! Sinks own their layout, padding, writeback and atomic commit: nothing is
//! committed unless every output is complete, and an error leaves none.

use std::sync::mpsc::{channel, sync_channel};
use std::time::Instant;

use rayon::prelude::*;

use super::observe::{EncodedRows, ErrorObserver, Observer, ProgressObserver};
use super::plan::{check_plan, Planned};
use super::sink::Sink;
use super::source::{SourceTensor, TensorSource};
use super::write::{TensorReport, WriteOptions, WriteSummary};
use crate::error::{Error, Result};
use crate::gguf::GgmlType;
use crate::progress::Progress;
use crate::quant;

/// One output of a schedule: a plan over the source and the sink it is written to.
pub struct Job<'a> {
    pub plan: &'a [Planned],
    pub sink: Box<dyn Sink + 'a>,
}

/// The worker pool of every command that computes over tensors (`threads` 0: all cores).
pub fn thread_pool(threads: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("ggufkit-worker-{i}"))
        .build()
        .map_err(|e| Error::Other(format!("cannot start worker threads: {e}")))
}

/// Rows per rayon task: a quarter of a thread's share of the chunk, at most
/// 64 Ki values (256 KiB of f32), so that what a task decodes is still in L2
/// when it encodes it.
fn task_rows(rows_per_chunk: usize, row_len: usize, threads: usize) -> usize {
    (rows_per_chunk / (threads * 4)).min((1 << 16) / row_len.max(1)).max(1)
}

/// One use of a source tensor: output `u`, position `k` in its plan.
#[derive(Clone, Copy)]
struct Use<'p> {
    u: usize,
    k: usize,
    p: &'p Planned,
    /// Stored bytes copied unchanged.
    copy: bool,
    out_row: usize,
}

/// Runs a schedule: writes every job's plan of `src` to its sink and commits
/// all sinks once every one is complete. Returns one summary per job, with
/// the error figures when [`WriteOptions::measure_error`].
pub fn run(
    src: &dyn TensorSource,
    jobs: Vec<Job<'_>>,
    opts: &WriteOptions,
    progress: &dyn Progress,
) -> Result<Vec<WriteSummary>> {
    run_observed(src, jobs, opts, progress, &[])
}

/// [`run`] with more [`Observer`]s doing side work beside the error figures
/// and the progress reports.
pub fn run_observed(
    src: &dyn TensorSource,
    jobs: Vec<Job<'_>>,
    opts: &WriteOptions,
    progress: &dyn Progress,
    extra: &[&dyn Observer],
) -> Result<Vec<WriteSummary>> {
    let start = Instant::now();
    let tensors = src.tensors();
    for (i, j) in jobs.iter().enumerate() {
        check_plan(src, j.plan)?;
        if jobs[..i].iter().any(|o| o.sink.dest() == j.sink.dest()) {
            return Err(Error::usage(format!("output {} is named twice", j.sink.dest().display())));
        }
    }
    // Which outputs use each source tensor, and the visiting order.
    let mut users: Vec<Vec<(usize, usize)>> = vec![Vec::new(); tensors.len()];
    for (u, j) in jobs.iter().enumerate() {
        for (k, p) in j.plan.iter().enumerate() {
            users[p.source].push((u, k));
        }
    }
    let mut order: Vec<usize> = jobs.first().map(|j| j.plan.iter().map(|p| p.source).collect()).unwrap_or_default();
    let mut seen = vec![false; tensors.len()];
    for &s in &order {
        seen[s] = true;
    }
    order.extend((0..tensors.len()).filter(|&s| !seen[s] && !users[s].is_empty()));

    let plans: Vec<&[Planned]> = jobs.iter().map(|j| j.plan).collect();
    let sizes: Vec<u64> = jobs.iter().map(|j| j.sink.data_size()).collect();
    let pool = thread_pool(opts.threads)?;
    progress.begin("writing", sizes.iter().sum());

    let mut reports: Vec<Vec<Option<TensorReport>>> = plans.iter().map(|p| vec![None; p.len()]).collect();
    let errors = opts.measure_error.then(|| ErrorObserver::new(&plans.iter().map(|p| p.len()).collect::<Vec<_>>()));
    let shown = ProgressObserver(progress);
    let mut observers: Vec<&dyn Observer> = vec![&shown];
    observers.extend(errors.as_ref().map(|e| e as &dyn Observer));
    observers.extend_from_slice(extra);
    let observers = &observers;
    let measure = observers.iter().any(|o| o.needs_reference());

    // The writer thread hands each filled buffer to its sink and returns it for reuse.
    // A buffer travels with the length of its contents: buffers are never
    // shrunk, so reusing one costs no zeroing.
    let (full_tx, full_rx) = sync_channel::<(usize, usize, u64, Vec<u8>, usize)>(2 * jobs.len().max(1));
    let (empty_tx, empty_rx) = channel::<Vec<u8>>();
    let mut sinks: Vec<Box<dyn Sink + '_>> = jobs.into_iter().map(|j| j.sink).collect();
    let (produced, written) = std::thread::scope(|scope| {
        let handle = scope.spawn(move || -> Result<Vec<Box<dyn Sink + '_>>> {
            for (u, k, at, buf, len) in full_rx {
                sinks[u].write(k, at, &buf[..len])?;
                for o in observers {
                    o.written(u, len as u64);
                }
                let _ = empty_tx.send(buf);
            }
            for s in sinks.iter_mut() {
                s.finish()?;
            }
            Ok(sinks)
        });
        let take_buffer = |len: usize| -> Vec<u8> {
            let mut b = empty_rx.try_recv().unwrap_or_default();
            // Every byte up to `len` is overwritten by the task that fills it.
            if b.len() < len {
                b.resize(len, 0);
            }
            b
        };
        let mut scratch: Vec<f32> = Vec::new();
        let produced = (|| -> Result<()> {
            for &si in &order {
                let t = &tensors[si];
                progress.item(&t.name);
                let raw = src.raw(si);
                let uses: Vec<Use> = users[si]
                    .iter()
                    .map(|&(u, k)| {
                        let p = &plans[u][k];
                        let copy = p.ty == t.ty && p.imatrix.is_none() && raw.is_some();
                        let out_row = p.ty.row_size(t.row_len()).unwrap_or(0) as usize;
                        Use { u, k, p, copy, out_row }
                    })
                    .collect();
                if let Some(raw) = raw.filter(|_| !opts.verbatim && uses.iter().any(|x| x.copy)) {
                    check_stored(src, t, raw)?;
                }
                let decode = measure || uses.iter().any(|x| !x.copy);
                // Stored F16 / BF16 rows encoded without f32 rows in memory (when every
                // computed output has such a kernel and no error is measured).
                let fuse = decode
                    && !measure
                    && uses.iter().all(|x| x.copy || (x.p.imatrix.is_none() && quant::simd::fuses(t.ty, x.p.ty)));
                let row_len = t.row_len() as usize;
                let rows = t.n_rows() as usize;
                let out_row: usize = uses.iter().map(|x| x.out_row).sum();
                let rows_per_chunk = (opts.chunk_bytes / (row_len * 4).max(1))
                    .min(opts.chunk_out_bytes / out_row.max(1))
                    .clamp(1, rows.max(1));
                let rows_per_task = task_rows(rows_per_chunk, row_len, pool.current_num_threads());
                let mut r0 = 0;
                while r0 < rows {
                    let n = rows_per_chunk.min(rows - r0);
                    let mut bufs: Vec<Vec<u8>> = uses.iter().map(|x| take_buffer(n * x.out_row)).collect();
                    if decode && scratch.len() < n * row_len {
                        scratch.resize(n * row_len, 0.0);
                    }
                    // One task per `rows_per_task` rows: its f32 rows, its slice of every output.
                    let n_tasks = n.div_ceil(rows_per_task);
                    let mut f_chunks =
                        scratch[..if decode { n * row_len } else { 0 }].chunks_mut(rows_per_task * row_len);
                    let mut o_chunks: Vec<_> = bufs
                        .iter_mut()
                        .zip(&uses)
                        .map(|(b, x)| b[..n * x.out_row].chunks_mut((rows_per_task * x.out_row).max(1)))
                        .collect();
                    let mut tasks = Vec::with_capacity(n_tasks);
                    for i in 0..n_tasks {
                        let f = if decode { f_chunks.next() } else { None };
                        let outs: Vec<&mut [u8]> = o_chunks.iter_mut().map(|c| c.next().unwrap_or_default()).collect();
                        tasks.push((r0 + i * rows_per_task, f, outs));
                    }
                    let uses = &uses;
                    pool.install(|| {
                        tasks.into_par_iter().try_for_each(|(first, mut f, mut outs)| -> Result<()> {
                            let m = rows_per_task.min(r0 + n - first);
                            let fused = fuse && encode_stored(src, si, t, first as u64, m as u64, uses, &mut outs)?;
                            if let Some(f) = f.as_deref_mut().filter(|_| !fused) {
                                src.read_rows(si, first as u64, f)?;
                                check_finite(src, t, first as u64, row_len, f)?;
                            }
                            for (j, x) in uses.iter().enumerate() {
                                let o = &mut *outs[j];
                                if x.copy {
                                    let raw = raw.unwrap_or_default();
                                    o.copy_from_slice(&raw[first * x.out_row..(first + m) * x.out_row]);
                                } else if fused {
                                    // encoded from the stored rows above
                                } else if let Some(f) = f.as_deref() {
                                    encode(t, x.p, first as u64, row_len, f, o)?;
                                }
                                let rows = EncodedRows {
                                    output: x.u,
                                    index: x.k,
                                    ty: x.p.ty,
                                    row_len,
                                    first_row: first as u64,
                                    reference: f.as_deref().filter(|_| !fused),
                                    encoded: o,
                                };
                                for obs in observers {
                                    obs.rows(rows)?;
                                }
                            }
                            Ok(())
                        })
                    })?;
                    for (x, b) in uses.iter().zip(bufs) {
                        if full_tx.send((x.u, x.k, (r0 * x.out_row) as u64, b, n * x.out_row)).is_err() {
                            return Ok(()); // the writer failed; its error is reported below
                        }
                    }
                    // One release per chunk, not per task (see `TensorSource::rows_done`).
                    src.rows_done(si, r0 as u64, n as u64);
                    r0 += n;
                }
                src.done(si);
                for x in &uses {
                    reports[x.u][x.k] = Some(TensorReport::new(t, x.p, x.copy));
                    for o in observers {
                        o.tensor_done(x.u, x.k);
                    }
                }
            }
            Ok(())
        })();
        drop(full_tx);
        let written = handle.join().unwrap_or_else(|_| Err(Error::Other("writer thread panicked".into())));
        (produced, written)
    });
    progress.finish();
    // The producer stops quietly when the writer fails (disk full, ...), and
    // the writer reports an incomplete output when the producer fails: each
    // side's own error is the one that explains the stop.
    produced?;
    let sinks = written?;
    let seconds = start.elapsed().as_secs_f64();
    let errors = match errors {
        Some(e) => e.into_stats(),
        None => vec![Vec::new(); sinks.len()],
    };
    let mut out = Vec::with_capacity(sinks.len());
    let mut done = Vec::with_capacity(sinks.len());
    for ((sink, reports), errors) in sinks.into_iter().zip(reports).zip(errors) {
        let tensors = reports
            .into_iter()
            .map(|r| r.ok_or_else(|| Error::Other("tensor not written".into())))
            .collect::<Result<Vec<_>>>()?;
        out.push(WriteSummary {
            path: sink.dest().to_path_buf(),
            file_size: sink.file_size(),
            tensors,
            errors,
            seconds,
            sha256: sink.sha256(),
        });
        done.push(sink);
    }
    for sink in done {
        sink.commit()?;
    }
    Ok(out)
}

/// The fused path: encodes rows `[first, first + m)` of tensor `si` from its
/// stored F16 / BF16 bytes into every computed output. `false` when the
/// source does not hold the rows as stored or a value is not finite: the
/// caller then decodes to f32 (which reports the value).
fn encode_stored(
    src: &dyn TensorSource,
    si: usize,
    t: &SourceTensor,
    first: u64,
    m: u64,
    uses: &[Use],
    outs: &mut [&mut [u8]],
) -> Result<bool> {
    let Some(bytes) = src.stored_rows(si, first, m) else { return Ok(false) };
    for (x, o) in uses.iter().zip(outs.iter_mut()) {
        if x.copy {
            continue;
        }
        if quant::simd::encode_stored_half(quant::simd::active(), t.ty, bytes, x.p.ty, o) != Some(true) {
            return Ok(false);
        }
        check_encoded(t, x.p.ty, first, o)?;
    }
    Ok(true)
}

fn check_finite(src: &dyn TensorSource, t: &SourceTensor, first_row: u64, row_len: usize, rows: &[f32]) -> Result<()> {
    if let Some(pos) = quant::first_non_finite(rows) {
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
            let bad = quant::validate::validate_rows(t.ty, raw).map_or(0, |b| b.block);
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
    match quant::validate::validate_rows(ty, data) {
        None => Ok(()),
        Some(bad) => {
            let per_row = (t.row_len() / ty.block_size()).max(1) as usize;
            Err(Error::Tensor {
                tensor: t.name.clone(),
                message: format!(
                    "row {}: {} in the {ty} data (llama.cpp refuses such data too)",
                    first_row + (bad.block / per_row) as u64,
                    bad.what
                ),
            })
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
        quant::quantize_rows(p.ty, fs, row_len, imatrix, os).map_err(|e| e.in_tensor(&t.name, Some(row)))?;
        check_encoded(t, p.ty, row, os)?;
        r += run;
    }
    Ok(())
}
