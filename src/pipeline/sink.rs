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
/// written: in order it hashes them at once; out of order it keeps them until
/// the gap before them is filled, up to [`StreamHash::MAX_PENDING`] bytes,
/// after which it gives up (the caller reads the file back instead). Regions
/// never written (padding) are zeros, as they read back.
pub struct StreamHash {
    hasher: Option<Sha256>,
    /// Everything before this position has been hashed.
    next: u64,
    pending: BTreeMap<u64, Vec<u8>>,
    pending_bytes: usize,
    /// Sorted, disjoint `[start, end)` ranges that will be written; anything
    /// else up to `total` is zeros.
    regions: Vec<(u64, u64)>,
    total: u64,
}

impl StreamHash {
    /// Out-of-order bytes kept at most before giving up.
    pub const MAX_PENDING: usize = 64 << 20;

    /// A file of `total` bytes whose written parts are `regions` (sorted, disjoint).
    pub fn new(regions: Vec<(u64, u64)>, total: u64) -> StreamHash {
        StreamHash { hasher: Some(Sha256::new()), next: 0, pending: BTreeMap::new(), pending_bytes: 0, regions, total }
    }

    /// `bytes` written at absolute position `at`.
    pub fn write(&mut self, at: u64, bytes: &[u8]) {
        if self.hasher.is_none() || bytes.is_empty() {
            return;
        }
        self.skip_zeros();
        if at != self.next {
            if at < self.next || self.pending_bytes + bytes.len() > Self::MAX_PENDING {
                self.give_up();
            } else {
                self.pending_bytes += bytes.len();
                self.pending.insert(at, bytes.to_vec());
            }
            return;
        }
        self.feed(bytes);
        loop {
            self.skip_zeros();
            let Some(chunk) = self.pending.remove(&self.next) else { break };
            self.pending_bytes -= chunk.len();
            self.feed(&chunk);
        }
    }

    /// The digest once the whole file went by, else `None`.
    pub fn finish(&mut self) -> Option<String> {
        self.skip_zeros();
        if self.next != self.total || !self.pending.is_empty() {
            self.give_up();
        }
        self.hasher.take().map(|h| h.finalize().iter().map(|b| format!("{b:02x}")).collect())
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
        self.pending.clear();
        self.pending_bytes = 0;
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
            h.write(0, &header);
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
            h.write(pos, bytes);
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
        self.digest = self.hash.as_mut().and_then(StreamHash::finish);
        Ok(())
    }
    fn commit(self: Box<Self>) -> Result<()> {
        self.file.commit()
    }
    fn sha256(&self) -> Option<String> {
        self.digest.clone()
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

    #[test]
    fn in_order_with_padding_is_the_file_hash() {
        let (f, regions) = file();
        let mut h = StreamHash::new(regions, 40);
        h.write(0, &f[0..8]);
        h.write(16, &f[16..20]);
        h.write(20, &f[20..30]);
        assert_eq!(h.finish(), Some(hex(&f)));
    }

    #[test]
    fn out_of_order_within_the_bound_is_the_file_hash() {
        let (f, regions) = file();
        let mut h = StreamHash::new(regions, 40);
        h.write(20, &f[20..30]);
        h.write(16, &f[16..20]);
        h.write(0, &f[0..8]);
        assert_eq!(h.finish(), Some(hex(&f)));
    }

    #[test]
    fn missing_or_rewritten_bytes_give_no_hash() {
        let (f, regions) = file();
        let mut h = StreamHash::new(regions.clone(), 40);
        h.write(0, &f[0..8]);
        h.write(20, &f[20..30]);
        assert_eq!(h.finish(), None);
        let mut h = StreamHash::new(regions, 40);
        h.write(0, &f[0..8]);
        h.write(0, &f[0..8]);
        assert_eq!(h.finish(), None);
    }
}
