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

use std::path::Path;
use std::sync::mpsc::{channel, sync_channel};
use std::time::Instant;

use rayon::prelude::*;
use serde_json::json;

use crate::codec;
use crate::error::{Error, Result};
use crate::fileio::AtomicFile;
use crate::gguf::{GgmlType, GgufFile, GgufWriter, Layout, Metadata, TensorSpec, WriterOptions};
use crate::progress::Progress;

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

impl SourceTensor {
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }
    pub fn n_rows(&self) -> u64 {
        self.dims.iter().skip(1).product()
    }
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

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
    /// The writer has copied `len` bytes of [`TensorSource::raw`] from `start`
    /// (sources may release that memory).
    fn raw_consumed(&self, _index: usize, _start: u64, _len: u64) {}
    /// The writer is done with tensor `index` (sources may release memory).
    fn done(&self, _index: usize) {}
}

/// One output tensor: which source tensor, and as what type.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub source: usize,
    pub ty: GgmlType,
    /// Importance weights for the quantizer (row length × number of experts), if any.
    pub imatrix: Option<Vec<f32>>,
    /// Dimensions to write instead of the source's (same row length and
    /// element count; e.g. trailing 1s dropped, as llama-quantize writes them).
    pub dims: Option<Vec<u64>>,
}

impl Planned {
    pub fn new(source: usize, ty: GgmlType) -> Self {
        Planned { source, ty, imatrix: None, dims: None }
    }
}

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

/// The output tensor specs of a plan.
pub fn specs(src: &dyn TensorSource, plan: &[Planned]) -> Vec<TensorSpec> {
    let tensors = src.tensors();
    plan.iter()
        .map(|p| {
            let t = &tensors[p.source];
            TensorSpec::new(t.name.clone(), p.dims.clone().unwrap_or_else(|| t.dims.clone()), p.ty)
        })
        .collect()
}

/// Checks a plan against its source: indices in range, each source tensor used
/// at most once, row lengths compatible with the output types, and the codec
/// able to produce each conversion.
pub fn check_plan(src: &dyn TensorSource, plan: &[Planned]) -> Result<()> {
    let tensors = src.tensors();
    let mut used = vec![false; tensors.len()];
    for p in plan {
        let t = tensors.get(p.source).ok_or_else(|| Error::Other(format!("plan names source tensor {}", p.source)))?;
        if std::mem::replace(&mut used[p.source], true) {
            return Err(Error::Other(format!("tensor '{}' planned twice", t.name)));
        }
        if let Some(d) = &p.dims {
            if d.first() != t.dims.first() || d.iter().product::<u64>() != t.n_elements() {
                return Err(Error::Other(format!("tensor '{}': dimensions {d:?} do not fit {:?}", t.name, t.dims)));
            }
        }
        if t.row_len() % p.ty.block_size() != 0 {
            return Err(Error::Other(format!(
                "tensor '{}': row length {} is not a multiple of the {} block size {}",
                t.name,
                t.row_len(),
                p.ty,
                p.ty.block_size()
            )));
        }
        let copy = p.ty == t.ty;
        if !copy && (!codec::can_decode(t.ty) || !codec::can_encode(p.ty)) {
            return Err(Error::Unsupported(format!("tensor '{}': cannot convert {} to {}", t.name, t.ty, p.ty)));
        }
        if let Some(im) = &p.imatrix {
            if im.is_empty() || im.len() as u64 % t.row_len() != 0 {
                return Err(Error::Other(format!(
                    "tensor '{}': importance matrix of {} values does not fit rows of {}",
                    t.name,
                    im.len(),
                    t.row_len()
                )));
            }
        }
    }
    Ok(())
}

/// The layout a plan produces (for `--dry-run` sizes).
pub fn layout(src: &dyn TensorSource, plan: &[Planned], metadata: &Metadata, opts: &WriteOptions) -> Result<Layout> {
    check_plan(src, plan)?;
    Layout::new(opts.container, metadata, &specs(src, plan))
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
                    let rows_per_task = (rows_per_chunk / (pool.current_num_threads() * 4)).max(1);
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
                reports.push(TensorReport {
                    name: t.name.clone(),
                    dims: p.dims.clone().unwrap_or_else(|| t.dims.clone()),
                    source_type: t.ty,
                    ty: p.ty,
                    source_bytes: t.ty.tensor_size(&t.dims).unwrap_or(0),
                    bytes: p.ty.tensor_size(&t.dims).unwrap_or(0),
                    copied,
                });
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

fn check_finite(src: &dyn TensorSource, t: &SourceTensor, first_row: u64, row_len: usize, rows: &[f32]) -> Result<()> {
    if let Some(pos) = rows.iter().position(|v| !v.is_finite()) {
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
            let _ = codec::decode_rows(t.ty, &raw[at..at + elem], &mut v);
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
        codec::encode_rows(p.ty, fs, row_len, imatrix, os).map_err(|e| match e {
            Error::Other(m) => Error::Other(format!("tensor '{}' rows from {row}: {m}", t.name)),
            e => e,
        })?;
        check_encoded(t, p.ty, row, os)?;
        r += run;
    }
    Ok(())
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
        codec::decode_rows(info.ty, bytes, out)?;
        // Each row is read once: its pages can go (memory stays bounded by the chunk size).
        self.file.release_range(info, row0 * row_bytes, n * row_bytes);
        Ok(())
    }
    fn raw_consumed(&self, index: usize, start: u64, len: u64) {
        self.file.release_range(&self.file.header.tensors[index], start, len);
    }
    fn raw(&self, index: usize) -> Option<&[u8]> {
        Some(self.file.data(&self.file.header.tensors[index]))
    }
    fn done(&self, index: usize) {
        self.file.release(&self.file.header.tensors[index]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::Value;
    use crate::progress::NoProgress;

    /// F32 tensors held in memory.
    struct MemSource {
        tensors: Vec<SourceTensor>,
        data: Vec<Vec<f32>>,
        raw: Vec<Vec<u8>>,
    }

    impl MemSource {
        fn new(items: Vec<(&str, Vec<u64>, Vec<f32>)>) -> Self {
            let mut s = MemSource { tensors: vec![], data: vec![], raw: vec![] };
            for (name, dims, values) in items {
                s.tensors.push(SourceTensor { name: name.into(), dims, ty: GgmlType::F32 });
                s.raw.push(values.iter().flat_map(|v| v.to_le_bytes()).collect());
                s.data.push(values);
            }
            s
        }
    }

    impl TensorSource for MemSource {
        fn describe(&self) -> String {
            "memory".into()
        }
        fn tensors(&self) -> &[SourceTensor] {
            &self.tensors
        }
        fn read_rows(&self, index: usize, row0: u64, out: &mut [f32]) -> Result<()> {
            let row = self.tensors[index].row_len() as usize;
            let start = row0 as usize * row;
            out.copy_from_slice(&self.data[index][start..start + out.len()]);
            Ok(())
        }
        fn raw(&self, index: usize) -> Option<&[u8]> {
            Some(&self.raw[index])
        }
    }

    fn metadata() -> Metadata {
        let mut md = Metadata::new();
        md.push("general.architecture", Value::string("test"));
        md
    }

    #[test]
    fn writes_converted_and_copied_tensors_in_plan_order() {
        let a: Vec<f32> = (0..64 * 37).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let b: Vec<f32> = (0..10).map(|i| i as f32).collect();
        let src = MemSource::new(vec![("a", vec![64, 37], a.clone()), ("b", vec![10], b.clone())]);
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.gguf");
        let plan = vec![Planned::new(1, GgmlType::F32), Planned::new(0, GgmlType::F16)];
        // Tiny chunks: many chunks and tasks per tensor.
        let opts = WriteOptions { threads: 3, chunk_bytes: 64 * 4 * 5, ..Default::default() };
        let summary = write_gguf(&src, &plan, &metadata(), &dest, &[], &opts, &NoProgress).unwrap();
        assert_eq!(summary.tensors.len(), 2);
        assert!(summary.tensors[0].copied);
        let f = GgufFile::open(&dest).unwrap();
        assert_eq!(f.header.tensors[0].name, "b");
        assert_eq!(f.header.tensors[1].ty, GgmlType::F16);
        let mut got = vec![0f32; a.len()];
        codec::decode_rows(GgmlType::F16, f.data(&f.header.tensors[1]), &mut got).unwrap();
        for (x, y) in a.iter().zip(&got) {
            assert_eq!(half::f16::from_f32(*x).to_f32(), *y);
        }
        assert_eq!(f.bytes().len() as u64, summary.file_size);
    }

    #[test]
    fn non_finite_input_is_an_error_and_leaves_no_file() {
        let mut a = vec![1.0f32; 32 * 4];
        a[32 * 2 + 5] = f32::NAN;
        let src = MemSource::new(vec![("w", vec![32, 4], a)]);
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.gguf");
        let e = write_gguf(
            &src,
            &[Planned::new(0, GgmlType::F16)],
            &metadata(),
            &dest,
            &[],
            &Default::default(),
            &NoProgress,
        )
        .unwrap_err();
        assert!(matches!(e, Error::NonFinite { row: 2, .. }), "{e}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // Copied as stored: also checked.
        let e = write_gguf(
            &src,
            &[Planned::new(0, GgmlType::F32)],
            &metadata(),
            &dest,
            &[],
            &Default::default(),
            &NoProgress,
        )
        .unwrap_err();
        assert!(matches!(e, Error::NonFinite { row: 2, .. }), "{e}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn bad_plans_are_refused() {
        let src = MemSource::new(vec![("w", vec![33, 2], vec![0.0; 66])]);
        assert!(check_plan(&src, &[Planned::new(0, GgmlType::Q8_0)]).is_err());
        assert!(check_plan(&src, &[Planned::new(1, GgmlType::F32)]).is_err());
        assert!(check_plan(&src, &[Planned::new(0, GgmlType::F32), Planned::new(0, GgmlType::F16)]).is_err());
    }
}
