//! Sinks: where the scheduler's encoded bytes go.
//!
//! A sink knows its layout before any data arrives (so a tensor's chunk goes
//! straight to its place, whatever order the scheduler visits tensors in),
//! writes its own headers and padding, hands its output to the kernel's
//! writeback as it grows ([`AtomicFile`]'s windows), and commits atomically:
//! until [`Sink::commit`] nothing is visible at the destination, and a sink
//! dropped uncommitted leaves nothing behind.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fileio::AtomicFile;
use crate::gguf::{Layout, Metadata, TensorSpec, WriterOptions};
use crate::hf::DType;

/// An output the scheduler writes to.
pub trait Sink: Send {
    /// The destination, for messages and summaries.
    fn dest(&self) -> &Path;
    /// Bytes of tensor data (what progress counts).
    fn data_size(&self) -> u64;
    /// The size of the whole output.
    fn file_size(&self) -> u64;
    /// Writes `bytes` at byte `at` of output tensor `k`'s data.
    fn write(&mut self, k: usize, at: u64, bytes: &[u8]) -> Result<()>;
    /// Every tensor has been written: complete the output (trailing padding,
    /// index files), and check that nothing is missing.
    fn finish(&mut self) -> Result<()>;
    /// Makes the finished output visible at its destination.
    fn commit(self: Box<Self>) -> Result<()>;
}

/// A GGUF file: header written first, tensor data at the offsets of its
/// [`Layout`], zero padding between tensors and at the end.
pub struct GgufSink {
    file: AtomicFile,
    layout: Layout,
    dest: PathBuf,
    /// Tensor bytes written so far (checked against the layout at the end).
    written: u64,
}

impl GgufSink {
    /// Creates the (temporary) file for `dest` and writes its header.
    /// `inputs` are the files the run reads, which `dest` may not be.
    pub fn create(
        dest: &Path,
        metadata: &Metadata,
        specs: &[TensorSpec],
        container: WriterOptions,
        inputs: &[&Path],
    ) -> Result<GgufSink> {
        let layout = Layout::new(container, metadata, specs)?;
        let header = crate::gguf::writer::encode_header(&layout, metadata, specs);
        let mut file = AtomicFile::create(dest, inputs)?;
        file.write_all_at(&header, 0)?;
        Ok(GgufSink { file, layout, dest: dest.to_path_buf(), written: 0 })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }
}

impl Sink for GgufSink {
    fn dest(&self) -> &Path {
        &self.dest
    }
    fn data_size(&self) -> u64 {
        self.layout.sizes.iter().sum()
    }
    fn file_size(&self) -> u64 {
        self.layout.total_size
    }
    fn write(&mut self, k: usize, at: u64, bytes: &[u8]) -> Result<()> {
        let size = *self.layout.sizes.get(k).ok_or_else(|| Error::Other(format!("no output tensor {k}")))?;
        if at + bytes.len() as u64 > size {
            return Err(Error::Other(format!("{}: write past the end of tensor {k}", self.dest.display())));
        }
        self.file.write_all_at(bytes, self.layout.data_offset + self.layout.offsets[k] + at)?;
        self.written += bytes.len() as u64;
        Ok(())
    }
    fn finish(&mut self) -> Result<()> {
        if self.written != self.data_size() {
            return Err(Error::Other(format!(
                "{}: incomplete output ({} of {} tensor bytes written)",
                self.dest.display(),
                self.written,
                self.data_size()
            )));
        }
        // Padding between tensors is never written (a region never written
        // reads as zeros); the file still has to reach its full size.
        let end = match self.layout.offsets.last().zip(self.layout.sizes.last()) {
            Some((o, s)) => self.layout.data_offset + o + s,
            None => self.layout.total_size.min(self.layout.data_offset),
        };
        if end < self.layout.total_size {
            self.file.write_all_at(&vec![0u8; (self.layout.total_size - end) as usize], end)?;
        }
        Ok(())
    }
    fn commit(self: Box<Self>) -> Result<()> {
        self.file.commit()
    }
}

/// One file of a [`SafetensorsSink`]: its name in the directory and its
/// tensors in data order (name, dtype, shape, bytes).
pub struct SafetensorsFile {
    pub name: String,
    pub tensors: Vec<(String, DType, Vec<u64>, u64)>,
}

/// A set of safetensors files (the shards of a Hugging Face directory): each
/// file's header written first, then its tensors' data back to back in the
/// order given. Output tensor k is the k-th tensor counting through the files
/// in order. Each file is an [`AtomicFile`] (writeback windows, renamed into
/// place on commit).
pub struct SafetensorsSink {
    dest: PathBuf,
    files: Vec<AtomicFile>,
    /// Per output tensor: (file, absolute offset of its data, size).
    places: Vec<(usize, u64, u64)>,
    data_size: u64,
    file_size: u64,
    written: u64,
}

impl SafetensorsSink {
    /// Creates the (temporary) files in directory `dir` and writes their
    /// headers. `inputs` are the files the run reads.
    pub fn create(dir: &Path, files: &[SafetensorsFile], inputs: &[&Path]) -> Result<SafetensorsSink> {
        let mut out = Vec::with_capacity(files.len());
        let mut places = Vec::new();
        let (mut data_size, mut file_size) = (0u64, 0u64);
        for (fi, f) in files.iter().enumerate() {
            let entries: Vec<(&str, DType, &[u64], u64)> =
                f.tensors.iter().map(|(n, d, s, b)| (n.as_str(), *d, s.as_slice(), *b)).collect();
            let header = crate::hf::writer::header(&entries)?;
            let mut file = AtomicFile::create(dir.join(&f.name), inputs)?;
            file.write_all_at(&(header.len() as u64).to_le_bytes(), 0)?;
            file.write_all_at(&header, 8)?;
            let mut at = 8 + header.len() as u64;
            for (.., bytes) in &f.tensors {
                places.push((fi, at, *bytes));
                at += bytes;
                data_size += bytes;
            }
            file_size += at;
            out.push(file);
        }
        Ok(SafetensorsSink { dest: dir.to_path_buf(), files: out, places, data_size, file_size, written: 0 })
    }
}

impl Sink for SafetensorsSink {
    fn dest(&self) -> &Path {
        &self.dest
    }
    fn data_size(&self) -> u64 {
        self.data_size
    }
    fn file_size(&self) -> u64 {
        self.file_size
    }
    fn write(&mut self, k: usize, at: u64, bytes: &[u8]) -> Result<()> {
        let &(f, offset, size) = self.places.get(k).ok_or_else(|| Error::Other(format!("no output tensor {k}")))?;
        if at + bytes.len() as u64 > size {
            return Err(Error::Other(format!("{}: write past the end of tensor {k}", self.dest.display())));
        }
        self.files[f].write_all_at(bytes, offset + at)?;
        self.written += bytes.len() as u64;
        Ok(())
    }
    fn finish(&mut self) -> Result<()> {
        if self.written != self.data_size {
            return Err(Error::Other(format!(
                "{}: incomplete output ({} of {} tensor bytes written)",
                self.dest.display(),
                self.written,
                self.data_size
            )));
        }
        Ok(())
    }
    fn commit(self: Box<Self>) -> Result<()> {
        for f in self.files {
            f.commit()?;
        }
        Ok(())
    }
}
