//! The GGUF container: types, metadata values, a validating parser over
//! bytes, a memory-mapped file wrapper and a streaming writer.
//!
//! Format notes as implemented: `formats/gguf.md`.

pub mod reader;
pub mod types;
pub mod value;
pub mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};

pub use reader::parse;
pub use types::GgmlType;
pub use value::{Array, Value, ValueType};
pub use writer::{GgufWriter, Layout, TensorSpec, WriterOptions};

use crate::error::{Error, IoContext, Result};

pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";
pub const GGUF_VERSION: u32 = 3;
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's GGML_MAX_DIMS.
pub const MAX_DIMS: usize = 4;
/// ggml's GGML_MAX_NAME (64) minus the terminating NUL.
pub const MAX_NAME_LEN: u64 = 63;
pub const KEY_ALIGNMENT: &str = "general.alignment";
pub const KEY_ARCHITECTURE: &str = "general.architecture";

/// Metadata key/value pairs in file order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    entries: Vec<(String, Value)>,
}

impl Metadata {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn with_capacity(n: usize) -> Self {
        Metadata { entries: Vec::with_capacity(n) }
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_str())
    }
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(Value::as_u64)
    }
    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(Value::as_f64)
    }
    /// Appends a key (the caller keeps keys unique; see [`Metadata::set`]).
    pub fn push(&mut self, key: impl Into<String>, value: Value) {
        self.entries.push((key.into(), value));
    }
    /// Replaces the value of an existing key in place, or appends it.
    pub fn set(&mut self, key: impl Into<String>, value: Value) {
        let key = key.into();
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some(e) => e.1 = value,
            None => self.entries.push((key, value)),
        }
    }
    /// Removes a key, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let i = self.entries.iter().position(|(k, _)| k == key)?;
        Some(self.entries.remove(i).1)
    }
    pub fn retain(&mut self, mut f: impl FnMut(&str, &Value) -> bool) {
        self.entries.retain(|(k, v)| f(k, v));
    }
    /// The architecture named by `general.architecture`.
    pub fn architecture(&self) -> Option<&str> {
        self.get_str(KEY_ARCHITECTURE)
    }
}

impl FromIterator<(String, Value)> for Metadata {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Self {
        Metadata { entries: iter.into_iter().collect() }
    }
}

/// A tensor as described in a GGUF header.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions, row length (ne0) first.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
    /// Size of the data in bytes.
    pub size: u64,
    pub n_elements: u64,
}

crate::shape::shape_accessors!(TensorInfo, Ggml, dims);

impl TensorInfo {
    pub fn spec(&self) -> TensorSpec {
        TensorSpec { name: self.name.clone(), dims: self.dims.clone(), ty: self.ty }
    }
}

/// A parsed GGUF header: everything but the tensor data.
#[derive(Debug, Clone, PartialEq)]
pub struct Gguf {
    pub version: u32,
    pub metadata: Metadata,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
}

impl Gguf {
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }
    /// Total number of elements over all tensors.
    pub fn n_params(&self) -> u64 {
        self.tensors.iter().map(|t| t.n_elements).sum()
    }
    /// Total bytes of tensor data (without padding).
    pub fn tensor_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.size).sum()
    }
    /// The writer options that reproduce this file's container layout.
    pub fn writer_options(&self, file_len: u64) -> WriterOptions {
        WriterOptions { version: self.version, pad_empty: !self.tensors.is_empty() || file_len >= self.data_offset }
    }
}

/// A GGUF file opened through a read-only memory map.
pub struct GgufFile {
    path: PathBuf,
    map: memmap2::Mmap,
    pub header: Gguf,
}

impl GgufFile {
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let file = File::open(path).at(path, "open")?;
        let map = crate::fileio::map_file(&file, path)?;
        let header = parse(&map).map_err(|e| Error::parse(path, "GGUF", e))?;
        Ok(GgufFile { path: path.to_path_buf(), map, header })
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }
    /// A tensor's data (validated in range by the parser).
    pub fn data(&self, t: &TensorInfo) -> &[u8] {
        let start = (self.header.data_offset + t.offset) as usize;
        &self.map[start..start + t.size as usize]
    }
    /// Tells the kernel the tensor's pages will not be needed again soon.
    pub fn release(&self, t: &TensorInfo) {
        self.release_range(t, 0, t.size);
    }
    /// Like [`GgufFile::release`] for `len` bytes of the tensor's data from `start`.
    pub fn release_range(&self, t: &TensorInfo, start: u64, len: u64) {
        let begin = (self.header.data_offset + t.offset + start.min(t.size)) as usize;
        crate::fileio::release_pages(&self.map, begin, len.min(t.size - start.min(t.size)) as usize);
    }
}
