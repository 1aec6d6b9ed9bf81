//! Sinks: where the scheduler's encoded bytes go.
//!
//! A sink knows its layout before any data arrives (so a tensor's chunk goes
//! straight to its place, whatever order the scheduler visits tensors in),
//! writes its own headers and padding, hands its output to the kernel's
//! writeback as it grows ([`AtomicFile`]'s windows), and commits atomically:
//! until [`Sink::commit`] nothing is visible at the destination, and a sink
//! dropped uncommitted leaves nothing behind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

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
    /// After [`Sink::finish`]: the SHA-256 of the whole output (hex) when the
    /// sink could compute it as the bytes went by, `None` when the caller has
    /// to read the file back for it.
    fn sha256(&self) -> Option<String> {
        None
    }
}

/// SHA-256 of a file written at known positions, computed as the bytes are
/// written: bytes that continue the hashed prefix are hashed at once; bytes
/// written ahead of it are only noted, and read back from the file (the page
/// cache, as a rule) once the gap before them is filled, so memory stays
/// bounded whatever the write order. Regions never written (padding) are
/// zeros, as they read back. Writing over hashed bytes, or a failed read,
/// gives no hash (the caller reads the file instead).
pub struct StreamHash {
    hasher: Option<Sha256>,
    /// Everything before this position has been hashed.
    next: u64,
    /// Written but not yet hashed: start → end.
    ahead: BTreeMap<u64, u64>,
    /// Sorted, disjoint `[start, end)` ranges that will be written; anything
    /// else up to `total` is zeros.
    regions: Vec<(u64, u64)>,
    total: u64,
}

/// Reads bytes already written at a position of the file being hashed.
pub type ReadBack<'a> = &'a mut dyn FnMut(&mut [u8], u64) -> Result<()>;

impl StreamHash {
    /// A file of `total` bytes whose written parts are `regions` (sorted, disjoint).
    pub fn new(regions: Vec<(u64, u64)>, total: u64) -> StreamHash {
        StreamHash { hasher: Some(Sha256::new()), next: 0, ahead: BTreeMap::new(), regions, total }
    }

    /// `bytes` were written at absolute position `at`.
    pub fn write(&mut self, at: u64, bytes: &[u8], read: ReadBack<'_>) {
        if self.hasher.is_none() || bytes.is_empty() {
            return;
        }
        self.skip_zeros();
        let end = at + bytes.len() as u64;
        if at < self.next || self.ahead.range(..end).next_back().is_some_and(|(_, &e)| e > at) {
            return self.give_up();
        }
        if at > self.next {
            // Ahead of the hashed prefix: noted, hashed when the prefix reaches it.
            self.ahead.insert(at, end);
            return;
        }
        self.feed(bytes);
        self.catch_up(read);
    }

    /// The digest once the whole file went by, else `None`.
    pub fn finish(&mut self, read: ReadBack<'_>) -> Option<String> {
        self.catch_up(read);
        self.skip_zeros();
        if self.next != self.total || !self.ahead.is_empty() {
            self.give_up();
        }
        self.hasher.take().map(|h| h.finalize().iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Hashes the noted ranges that now continue the prefix, reading them back.
    fn catch_up(&mut self, read: ReadBack<'_>) {
        let mut buf = Vec::new();
        loop {
            self.skip_zeros();
            let Some(end) = self.ahead.remove(&self.next) else { return };
            buf.resize((1usize << 20).min((end - self.next) as usize), 0);
            while self.next < end {
                let n = ((end - self.next) as usize).min(buf.len());
                if read(&mut buf[..n], self.next).is_err() {
                    return self.give_up();
                }
                if let Some(h) = self.hasher.as_mut() {
                    h.update(&buf[..n]);
                }
                self.next += n as u64;
            }
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        if let Some(h) = self.hasher.as_mut() {
            h.update(bytes);
        }
        self.next += bytes.len() as u64;
    }

    /// Hashes the zeros from `next` to the next written region (or the end).
    fn skip_zeros(&mut self) {
        let i = self.regions.partition_point(|&(_, end)| end <= self.next);
        let upto = match self.regions.get(i) {
            Some(&(start, _)) if start <= self.next => return,
            Some(&(start, _)) => start,
            None => self.total,
        };
        const ZEROS: [u8; 4096] = [0; 4096];
        while self.next < upto {
            let n = (upto - self.next).min(ZEROS.len() as u64) as usize;
            self.feed(&ZEROS[..n]);
        }
    }

    fn give_up(&mut self) {
        self.hasher = None;
        self.ahead.clear();
    }
}

/// A GGUF file: header written first, tensor data at the offsets of its
/// [`Layout`], zero padding between tensors and at the end.
pub struct GgufSink {
    file: AtomicFile,
    layout: Layout,
    dest: PathBuf,
    /// Tensor bytes written so far (checked against the layout at the end).
    written: u64,
    hash: Option<StreamHash>,
    digest: Option<String>,
}

impl GgufSink {
    /// Creates the (temporary) file for `dest` and writes its header.
    /// `inputs` are the files the run reads, which `dest` may not be. With
    /// `hash`, the sink computes the output's SHA-256 as it writes
    /// ([`Sink::sha256`]).
    pub fn create(
        dest: &Path,
        metadata: &Metadata,
        specs: &[TensorSpec],
        container: WriterOptions,
        inputs: &[&Path],
        hash: bool,
    ) -> Result<GgufSink> {
        let layout = Layout::new(container, metadata, specs)?;
        let header = crate::gguf::writer::encode_header(&layout, metadata, specs);
        let mut file = AtomicFile::create(dest, inputs)?;
        file.write_all_at(&header, 0)?;
        let hash = hash.then(|| {
            let mut regions = vec![(0, header.len() as u64)];
            regions.extend(
                layout
                    .offsets
                    .iter()
                    .zip(&layout.sizes)
                    .filter(|(_, &s)| s > 0)
                    .map(|(&o, &s)| (layout.data_offset + o, layout.data_offset + o + s)),
            );
            let mut h = StreamHash::new(regions, layout.total_size);
            h.write(0, &header, &mut |_, _| Err(Error::Other("nothing to read back".into())));
            h
        });
        Ok(GgufSink { file, layout, dest: dest.to_path_buf(), written: 0, hash, digest: None })
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
        let pos = self.layout.data_offset + self.layout.offsets[k] + at;
        self.file.write_all_at(bytes, pos)?;
        if let Some(h) = self.hash.as_mut() {
            let file = &mut self.file;
            h.write(pos, bytes, &mut |buf, at| file.read_exact_at(buf, at));
        }
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
        let file = &mut self.file;
        self.digest = self.hash.as_mut().and_then(|h| h.finish(&mut |buf, at| file.read_exact_at(buf, at)));
        Ok(())
    }
    fn commit(self: Box<Self>) -> Result<()> {
        self.file.commit()
    }
    fn sha256(&self) -> Option<String> {
        self.digest.clone()
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

#[cfg(test)]
mod tests {
    use super::StreamHash;
    use sha2::{Digest, Sha256};

    fn hex(b: &[u8]) -> String {
        Sha256::digest(b).iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A 40-byte file: bytes 0..8 and 16..30 written, the rest zeros.
    fn file() -> (Vec<u8>, Vec<(u64, u64)>) {
        let mut f = vec![0u8; 40];
        for i in (0..8).chain(16..30) {
            f[i] = i as u8 + 1;
        }
        (f, vec![(0, 8), (16, 30)])
    }

    /// Writes `pieces` (start, end) of `f` in the given order, reading back from `f`.
    fn hash_of(f: &[u8], regions: &[(u64, u64)], pieces: &[(usize, usize)]) -> Option<String> {
        let mut h = StreamHash::new(regions.to_vec(), f.len() as u64);
        let mut read = |buf: &mut [u8], at: u64| {
            buf.copy_from_slice(&f[at as usize..at as usize + buf.len()]);
            Ok(())
        };
        for &(a, b) in pieces {
            h.write(a as u64, &f[a..b], &mut read);
        }
        h.finish(&mut read)
    }

    #[test]
    fn in_order_with_padding_is_the_file_hash() {
        let (f, regions) = file();
        assert_eq!(hash_of(&f, &regions, &[(0, 8), (16, 20), (20, 30)]), Some(hex(&f)));
    }

    #[test]
    fn out_of_order_is_the_file_hash() {
        let (f, regions) = file();
        assert_eq!(hash_of(&f, &regions, &[(20, 30), (16, 20), (0, 8)]), Some(hex(&f)));
        assert_eq!(hash_of(&f, &regions, &[(16, 18), (24, 30), (0, 8), (18, 24)]), Some(hex(&f)));
    }

    #[test]
    fn missing_overlapping_or_unreadable_bytes_give_no_hash() {
        let (f, regions) = file();
        assert_eq!(hash_of(&f, &regions, &[(0, 8), (20, 30)]), None);
        assert_eq!(hash_of(&f, &regions, &[(0, 8), (0, 8), (16, 30)]), None);
        assert_eq!(hash_of(&f, &regions, &[(20, 30), (18, 22), (0, 8), (16, 18)]), None);
        let mut h = StreamHash::new(regions, 40);
        let mut fail = |_: &mut [u8], _: u64| Err(crate::Error::Other("unreadable".into()));
        h.write(16, &f[16..30], &mut fail);
        h.write(0, &f[0..8], &mut fail);
        assert_eq!(h.finish(&mut fail), None);
    }
}
