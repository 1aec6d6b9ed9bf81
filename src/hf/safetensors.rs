//! Safetensors weights of a model directory, single file or sharded, read
//! through read-only memory maps.
//!
//! Headers are validated by the `safetensors` crate (JSON header, offsets that
//! cover the data exactly, byte length = elements × dtype size); on top of
//! that this module checks the shard index against the shards in both
//! directions, refuses duplicate tensor names and odd file names, and caps
//! counts. Tensor data is read on demand, a range of rows at a time, and
//! converted to f32.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use super::tensors::{HfTensor, HfTensors};
use crate::error::{Error, IoContext, ParseError, Result};

/// Most tensors accepted in one safetensors file.
pub const MAX_TENSORS_PER_FILE: usize = 1_000_000;
/// Most shard files accepted in one model.
pub const MAX_SHARDS: usize = 100_000;
/// Most dimensions accepted for a tensor.
pub const MAX_DIMS: usize = 8;

/// Element type of a safetensors tensor.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    I16,
    I8,
    U8,
    U16,
    U32,
    U64,
    BOOL,
    F8_E4M3,
    F8_E5M2,
    F8_E8M0,
    F4,
    F6_E2M3,
    F6_E3M2,
}

impl DType {
    fn from_st(d: ::safetensors::Dtype) -> Option<DType> {
        use ::safetensors::Dtype as D;
        Some(match d {
            D::F32 => DType::F32,
            D::F16 => DType::F16,
            D::BF16 => DType::BF16,
            D::F64 => DType::F64,
            D::I64 => DType::I64,
            D::I32 => DType::I32,
            D::I16 => DType::I16,
            D::I8 => DType::I8,
            D::U8 => DType::U8,
            D::U16 => DType::U16,
            D::U32 => DType::U32,
            D::U64 => DType::U64,
            D::BOOL => DType::BOOL,
            D::F8_E4M3 => DType::F8_E4M3,
            D::F8_E5M2 => DType::F8_E5M2,
            D::F8_E8M0 => DType::F8_E8M0,
            D::F4 => DType::F4,
            D::F6_E2M3 => DType::F6_E2M3,
            D::F6_E3M2 => DType::F6_E3M2,
            _ => return None,
        })
    }

    /// The name used in safetensors headers.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::F64 => "F64",
            DType::I64 => "I64",
            DType::I32 => "I32",
            DType::I16 => "I16",
            DType::I8 => "I8",
            DType::U8 => "U8",
            DType::U16 => "U16",
            DType::U32 => "U32",
            DType::U64 => "U64",
            DType::BOOL => "BOOL",
            DType::F8_E4M3 => "F8_E4M3",
            DType::F8_E5M2 => "F8_E5M2",
            DType::F8_E8M0 => "F8_E8M0",
            DType::F4 => "F4",
            DType::F6_E2M3 => "F6_E2M3",
            DType::F6_E3M2 => "F6_E3M2",
        }
    }

    /// Bytes per element for the types that can be read as f32 rows.
    pub fn float_size(self) -> Option<usize> {
        match self {
            DType::F32 => Some(4),
            DType::F16 | DType::BF16 => Some(2),
            _ => None,
        }
    }

    /// The `torch_dtype` name transformers writes in config.json.
    pub fn torch_name(self) -> Option<&'static str> {
        match self {
            DType::F32 => Some("float32"),
            DType::F16 => Some("float16"),
            DType::BF16 => Some("bfloat16"),
            _ => None,
        }
    }

    /// True for the types [`SafetensorsModel::read_f32`] can read (F32, F16, BF16).
    pub fn is_readable_float(self) -> bool {
        self.float_size().is_some()
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One tensor of the model.
#[derive(Debug, Clone)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: DType,
    /// Shape as in the safetensors header (row-major, the last dimension varies fastest).
    pub shape: Vec<u64>,
    /// Index of the file holding it (see [`SafetensorsModel::file_path`]).
    pub file: usize,
    /// Absolute byte range in that file.
    start: usize,
    len: usize,
}

crate::shape::shape_accessors!(TensorEntry, RowMajor, shape);

impl TensorEntry {
    /// Size of the data in bytes.
    pub fn n_bytes(&self) -> u64 {
        self.len as u64
    }
}

/// The bytes of one file: a read-only map, or a buffer for in-memory input
/// ([`SafetensorsModel::from_bytes`]).
enum FileBytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(m) => m,
            FileBytes::Owned(v) => v,
        }
    }
}

impl FileBytes {
    /// Drops the resident pages of a byte range of a mapped file.
    fn release(&self, start: usize, len: usize) {
        if let FileBytes::Mapped(m) = self {
            crate::fileio::release_pages(m, start, len);
        }
    }
}

struct Shard {
    path: PathBuf,
    map: FileBytes,
    metadata: BTreeMap<String, String>,
}

/// All safetensors files of a model, opened and cross-checked.
pub struct SafetensorsModel {
    shards: Vec<Shard>,
    tensors: Vec<TensorEntry>,
    /// The same tensors as [`HfTensors`] lists them.
    metas: Vec<HfTensor>,
    by_name: HashMap<String, usize>,
    index: Option<PathBuf>,
}

impl fmt::Debug for SafetensorsModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SafetensorsModel")
            .field("files", &self.shards.iter().map(|s| &s.path).collect::<Vec<_>>())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

/// The name of the shard index file.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// The name of a single-file model.
pub const SINGLE_FILE: &str = "model.safetensors";

impl SafetensorsModel {
    /// Opens the weights of a model directory: the shards named by
    /// `model.safetensors.index.json` when it exists, else `model.safetensors`,
    /// else every `model*.safetensors` file (sorted by name).
    pub fn open_dir(dir: &Path) -> Result<SafetensorsModel> {
        let index = dir.join(INDEX_FILE);
        if index.is_file() {
            return Self::open_index(&index);
        }
        let single = dir.join(SINGLE_FILE);
        if single.is_file() {
            return Self::open_files(&[single]);
        }
        let mut parts = Vec::new();
        for entry in fs::read_dir(dir).at(dir, "read directory")? {
            let entry = entry.at(dir, "read directory")?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("model") && name.ends_with(".safetensors") {
                parts.push(entry.path());
            }
        }
        if parts.is_empty() {
            let hint = if dir.join("pytorch_model.bin").exists() || dir.join("pytorch_model.bin.index.json").exists() {
                " (PyTorch .bin weights are not supported; convert them to safetensors first)"
            } else {
                ""
            };
            return Err(Error::input(dir, format!("no {SINGLE_FILE} or {INDEX_FILE} found{hint}")));
        }
        parts.sort();
        Self::open_files(&parts)
    }

    /// Opens a sharded model through its index file, checking that the index
    /// and the shards agree both ways.
    pub fn open_index(index_path: &Path) -> Result<SafetensorsModel> {
        let dir = index_path.parent().unwrap_or(Path::new("."));
        let index = super::read_json(index_path)?;
        let wanted = parse_index_map(&index).map_err(|msg| Error::input(index_path, msg))?;
        let mut files: Vec<&String> = wanted.values().collect();
        files.sort();
        files.dedup();
        let missing: Vec<&str> = files.iter().filter(|f| !dir.join(f.as_str()).is_file()).map(|f| f.as_str()).collect();
        if !missing.is_empty() {
            let tensors: Vec<&str> =
                wanted.iter().filter(|(_, f)| missing.contains(&f.as_str())).map(|(t, _)| t.as_str()).take(5).collect();
            return Err(Error::input(
                index_path,
                format!(
                    "missing shard file(s) named by the index: {} (holding e.g. {})",
                    missing.join(", "),
                    tensors.join(", ")
                ),
            ));
        }
        let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f.as_str())).collect();
        let mut model = Self::open_files(&paths)?;
        model.index = Some(index_path.to_path_buf());

        // Every tensor of every shard must be named by the index, with that shard.
        for t in &model.tensors {
            let shard_name = file_name(&model.shards[t.file].path);
            match wanted.get(&t.name) {
                None => {
                    return Err(Error::input(
                        &model.shards[t.file].path,
                        format!("tensor '{}' is in this shard but not named by {INDEX_FILE}", t.name),
                    ))
                }
                Some(f) if *f != shard_name => {
                    return Err(Error::input(
                        &model.shards[t.file].path,
                        format!("tensor '{}' is in this shard but {INDEX_FILE} places it in {f}", t.name),
                    ))
                }
                Some(_) => {}
            }
        }
        // And every tensor of the index must be in its shard.
        for (tensor, file) in &wanted {
            if !model.by_name.contains_key(tensor) {
                return Err(Error::input(
                    dir.join(file),
                    format!("{INDEX_FILE} names tensor '{tensor}' in this shard, but the shard does not contain it"),
                ));
            }
        }
        Ok(model)
    }

    /// Opens a list of safetensors files as one model. Tensor names must be
    /// unique across the files.
    pub fn open_files(paths: &[PathBuf]) -> Result<SafetensorsModel> {
        let mut parsed = Vec::with_capacity(paths.len());
        for (file_idx, path) in paths.iter().enumerate() {
            parsed.push(open_shard(path, file_idx)?);
        }
        Self::from_shards(parsed)
    }

    /// One safetensors file held in memory, validated as [`Self::open_files`]
    /// validates a file; `path` only names it in messages.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<SafetensorsModel> {
        Self::from_shards(vec![parse_shard(FileBytes::Owned(bytes), path, 0)?])
    }

    fn from_shards(parsed: Vec<(Shard, Vec<TensorEntry>)>) -> Result<SafetensorsModel> {
        let mut shards: Vec<Shard> = Vec::with_capacity(parsed.len());
        let mut tensors = Vec::new();
        let mut by_name: HashMap<String, usize> = HashMap::new();
        for (shard, mut entries) in parsed {
            let path = &shard.path;
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            for e in entries {
                if let Some(&prev) = by_name.get(&e.name) {
                    let other: &Shard = &shards[tensors_file(&tensors, prev)];
                    return Err(Error::input(path, format!("tensor '{}' is also in {}", e.name, other.path.display())));
                }
                by_name.insert(e.name.clone(), tensors.len());
                tensors.push(e);
            }
            shards.push(shard);
        }
        let metas =
            tensors.iter().map(|t| HfTensor { name: t.name.clone(), dtype: t.dtype, shape: t.shape.clone() }).collect();
        Ok(SafetensorsModel { shards, tensors, metas, by_name, index: None })
    }

    /// All tensors, in the order convert_hf_to_gguf.py visits them: files
    /// sorted by name, and within a file tensors sorted by name.
    pub fn tensors(&self) -> &[TensorEntry] {
        &self.tensors
    }

    /// A tensor by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorEntry> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// The files, in order.
    pub fn files(&self) -> Vec<&Path> {
        self.shards.iter().map(|s| s.path.as_path()).collect()
    }

    /// The path of the file holding a tensor.
    pub fn file_path(&self, t: &TensorEntry) -> &Path {
        &self.shards[t.file].path
    }

    /// The index file, for sharded models.
    pub fn index_path(&self) -> Option<&Path> {
        self.index.as_deref()
    }

    /// The `__metadata__` of a file (string to string).
    pub fn file_metadata(&self, file: usize) -> Option<&BTreeMap<String, String>> {
        self.shards.get(file).map(|s| &s.metadata)
    }

    /// Total bytes of tensor data.
    pub fn total_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.len as u64).sum()
    }

    /// The raw bytes of a tensor (little-endian, as stored).
    pub fn raw(&self, t: &TensorEntry) -> &[u8] {
        &self.shards[t.file].map[t.start..t.start + t.len]
    }

    /// Reads `out.len()` elements starting at element `first` as f32.
    /// Only F32, F16 and BF16 tensors can be read; other dtypes are an error
    /// naming the file and tensor.
    pub fn read_f32(&self, t: &TensorEntry, first: u64, out: &mut [f32]) -> Result<()> {
        let Some(size) = t.dtype.float_size() else {
            return Err(Error::input(
                self.file_path(t),
                format!(
                    "tensor '{}' has dtype {}, which cannot be read as floats (F32, F16 and BF16 only)",
                    t.name, t.dtype
                ),
            ));
        };
        let end = first.checked_add(out.len() as u64).filter(|&e| e <= t.n_elements()).ok_or_else(|| {
            Error::Other(format!(
                "read of elements {first}..+{} past the end of tensor '{}' ({} elements)",
                out.len(),
                t.name,
                t.n_elements()
            ))
        })?;
        let bytes = &self.raw(t)[first as usize * size..end as usize * size];
        decode_f32(t.dtype, bytes, out);
        Ok(())
    }

    /// Reads whole rows (see [`TensorEntry::row_len`]) starting at row
    /// `first_row`; `out.len()` must be a multiple of the row length.
    pub fn read_rows_f32(&self, t: &TensorEntry, first_row: u64, out: &mut [f32]) -> Result<()> {
        let row = t.row_len();
        if row == 0 || !(out.len() as u64).is_multiple_of(row) {
            return Err(Error::Other(format!(
                "tensor '{}': buffer of {} is not a whole number of rows of {row}",
                t.name,
                out.len()
            )));
        }
        let first = first_row.checked_mul(row).ok_or_else(|| Error::Other("row index overflows".into()))?;
        self.read_f32(t, first, out)
    }

    /// Tells the kernel that elements `first..first + n` of a tensor will not
    /// be read again soon (whole pages inside that range only), so a tensor
    /// read front to back in chunks never has more than a chunk resident.
    pub fn release_elements(&self, t: &TensorEntry, first: u64, n: u64) {
        let Some(size) = t.dtype.float_size() else { return };
        let (Some(start), Some(len)) = ((first as usize).checked_mul(size), (n as usize).checked_mul(size)) else {
            return;
        };
        if start.checked_add(len).is_some_and(|end| end <= t.len) {
            self.shards[t.file].map.release(t.start + start, len);
        }
    }

    /// Tells the kernel the tensor's pages will not be needed again soon.
    pub fn release(&self, t: &TensorEntry) {
        self.shards[t.file].map.release(t.start, t.len);
    }
}

impl HfTensors for SafetensorsModel {
    fn tensors(&self) -> &[HfTensor] {
        &self.metas
    }
    fn index_of(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }
    fn read_rows_f32(&self, index: usize, first_row: u64, out: &mut [f32]) -> Result<()> {
        let t = self.tensors.get(index).ok_or_else(|| Error::Other(format!("no tensor {index}")))?;
        self.read_rows_f32(t, first_row, out)
    }
    fn raw(&self, index: usize) -> Option<&[u8]> {
        self.tensors.get(index).map(|t| self.raw(t))
    }
    fn release_rows(&self, index: usize, first_row: u64, n_rows: u64) {
        if let Some(t) = self.tensors.get(index) {
            let row = t.row_len();
            if let (Some(first), Some(n)) = (first_row.checked_mul(row), n_rows.checked_mul(row)) {
                self.release_elements(t, first, n);
            }
        }
    }
    fn release(&self, index: usize) {
        if let Some(t) = self.tensors.get(index) {
            self.release(t);
        }
    }
    fn file_of(&self, index: usize) -> &Path {
        match self.tensors.get(index) {
            Some(t) => self.file_path(t),
            None => self.shards.first().map_or(Path::new(""), |s| s.path.as_path()),
        }
    }
    fn inputs(&self) -> Vec<&Path> {
        let mut v = self.files();
        if let Some(ix) = self.index_path() {
            v.push(ix);
        }
        v
    }
}

/// Validates a parsed `model.safetensors.index.json` (I/O-free): its
/// `weight_map` must map tensor names to plain shard file names, with at most
/// [`MAX_SHARDS`] distinct shards. Returns tensor name → shard file name.
pub fn parse_index_map(index: &serde_json::Value) -> std::result::Result<BTreeMap<String, String>, String> {
    let weight_map = index
        .get("weight_map")
        .and_then(|w| w.as_object())
        .ok_or_else(|| "\"weight_map\" is missing or not an object".to_string())?;
    let mut wanted: BTreeMap<String, String> = BTreeMap::new();
    let mut shards: std::collections::BTreeSet<&str> = Default::default();
    for (tensor, file) in weight_map {
        let file = file.as_str().ok_or_else(|| format!("weight_map[\"{tensor}\"] is not a file name string"))?;
        check_shard_name(tensor, file)?;
        shards.insert(file);
        if shards.len() > MAX_SHARDS {
            return Err(format!("more than the limit of {MAX_SHARDS} shard files"));
        }
        wanted.insert(tensor.clone(), file.to_string());
    }
    Ok(wanted)
}

fn tensors_file(tensors: &[TensorEntry], i: usize) -> usize {
    tensors[i].file
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Shard names must be plain file names inside the model directory.
fn check_shard_name(tensor: &str, file: &str) -> std::result::Result<(), String> {
    let bad = file.is_empty()
        || file.contains('/')
        || file.contains('\\')
        || file == "."
        || file == ".."
        || file.contains('\0');
    if bad {
        return Err(format!("weight_map[\"{tensor}\"] = \"{file}\" is not a plain file name in the model directory"));
    }
    Ok(())
}

/// A safetensors file's header, parsed and validated against the whole file.
#[derive(Debug, Clone)]
pub struct Header {
    /// Tensors in header order (name order, as the safetensors crate keeps them).
    pub tensors: Vec<HeaderTensor>,
    /// The `__metadata__` map.
    pub metadata: BTreeMap<String, String>,
}

/// One tensor of a [`Header`].
#[derive(Debug, Clone)]
pub struct HeaderTensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<u64>,
    /// Byte range in the file (from the start of the file, not of the data).
    pub start: usize,
    pub len: usize,
}

/// Parses a whole safetensors file's bytes (I/O-free): header length and
/// JSON, dtypes, shapes against byte ranges, ranges covering the data section
/// exactly, the tensor count and rank limits. Every range returned lies
/// within `buf`.
pub fn parse_header(buf: &[u8]) -> std::result::Result<Header, ParseError> {
    let (header_len, meta) =
        ::safetensors::SafeTensors::read_metadata(buf).map_err(|e| ParseError::new("header", 0, st_error(&e)))?;
    let data_start =
        8usize.checked_add(header_len).ok_or_else(|| ParseError::new("header", 0, "header length overflows"))?;
    let names = meta.offset_keys();
    if names.len() > MAX_TENSORS_PER_FILE {
        return Err(ParseError::new(
            "header",
            8,
            format!("{} tensors is more than the limit of {MAX_TENSORS_PER_FILE}", names.len()),
        ));
    }
    let mut tensors = Vec::with_capacity(names.len());
    for name in names {
        let Some(info) = meta.info(&name) else { continue };
        let field = || format!("header[\"{name}\"]");
        let dtype = DType::from_st(info.dtype)
            .ok_or_else(|| ParseError::new(field(), 8, format!("unknown dtype {:?}", info.dtype)))?;
        if name.is_empty() {
            return Err(ParseError::new(field(), 8, "empty tensor name"));
        }
        if info.shape.len() > MAX_DIMS {
            return Err(ParseError::new(field(), 8, format!("{} dimensions (at most {MAX_DIMS})", info.shape.len())));
        }
        let (b, e) = info.data_offsets;
        let start = data_start.checked_add(b).filter(|&s| s <= buf.len());
        let len = e.checked_sub(b);
        let (Some(start), Some(len)) = (start, len) else {
            return Err(ParseError::new(field(), 8, "bad data_offsets"));
        };
        if start.checked_add(len).is_none_or(|end| end > buf.len()) {
            return Err(ParseError::new(field(), 8, "data past the end of the file"));
        }
        let shape: Vec<u64> = info.shape.iter().map(|&d| d as u64).collect();
        // The safetensors crate has checked that the range matches dtype × shape.
        tensors.push(HeaderTensor { name, dtype, shape, start, len });
    }
    let metadata = meta.metadata().as_ref().map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
    Ok(Header { tensors, metadata: metadata.unwrap_or_default() })
}

/// Maps one file and validates its header.
fn open_shard(path: &Path, file_idx: usize) -> Result<(Shard, Vec<TensorEntry>)> {
    let file = File::open(path).at(path, "open")?;
    let map = crate::fileio::map_file(&file, path)?;
    parse_shard(FileBytes::Mapped(map), path, file_idx)
}

/// Validates the header of one file's bytes (`path` names it in messages).
fn parse_shard(map: FileBytes, path: &Path, file_idx: usize) -> Result<(Shard, Vec<TensorEntry>)> {
    let header = parse_header(&map).map_err(|e| Error::parse(path, "safetensors", e))?;
    let entries = header
        .tensors
        .into_iter()
        .map(|t| TensorEntry {
            name: t.name,
            dtype: t.dtype,
            shape: t.shape,
            file: file_idx,
            start: t.start,
            len: t.len,
        })
        .collect();
    Ok((Shard { path: path.to_path_buf(), map, metadata: header.metadata }, entries))
}

fn st_error(e: &::safetensors::SafeTensorError) -> String {
    use ::safetensors::SafeTensorError as E;
    match e {
        E::HeaderTooSmall => "file too small for a safetensors header".into(),
        E::HeaderTooLarge => "header length exceeds the 100 MB limit".into(),
        E::InvalidHeaderLength => "header length points past the end of the file (truncated?)".into(),
        E::MetadataIncompleteBuffer => {
            "tensor data does not cover the rest of the file exactly (truncated or trailing bytes)".into()
        }
        E::TensorInvalidInfo => "a tensor's byte range does not match its dtype and shape".into(),
        E::InvalidOffset(name) => format!("tensor '{name}' has data_offsets that leave a hole or overlap"),
        other => other.to_string(),
    }
}

/// Decodes little-endian F32/F16/BF16 bytes into f32.
pub fn decode_f32(dtype: DType, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        DType::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        // The SIMD decoders of the quantization kernels (same bits as the
        // scalar loops below, which serve when the lengths do not line up).
        DType::F16 if crate::quant::dequantize_rows(crate::gguf::GgmlType::F16, bytes, out).is_ok() => {}
        DType::BF16 if crate::quant::dequantize_rows(crate::gguf::GgmlType::BF16, bytes, out).is_ok() => {}
        DType::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
            }
        }
        DType::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16);
            }
        }
        _ => out.fill(0.0),
    }
}

/// A safetensors file in memory from (name, shape, f32 values), for tests.
#[cfg(test)]
pub(crate) fn f32_file_bytes(tensors: &[(&str, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
    use ::safetensors::tensor::TensorView;
    let data: Vec<Vec<u8>> = tensors.iter().map(|t| t.2.iter().flat_map(|v| v.to_le_bytes()).collect()).collect();
    let views: Vec<(&str, TensorView)> = tensors
        .iter()
        .zip(&data)
        .map(|(t, d)| (t.0, TensorView::new(::safetensors::Dtype::F32, t.1.clone(), d).unwrap()))
        .collect();
    ::safetensors::serialize(views, None).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Writes a safetensors file from (name, dtype, shape, bytes).
    fn write_st(path: &Path, tensors: &[(&str, &str, Vec<u64>, Vec<u8>)]) {
        let mut header = serde_json::Map::new();
        let mut off = 0usize;
        let mut data = Vec::new();
        for (name, dtype, shape, bytes) in tensors {
            header.insert(
                name.to_string(),
                serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [off, off + bytes.len()]}),
            );
            off += bytes.len();
            data.extend_from_slice(bytes);
        }
        let h = serde_json::to_vec(&header).unwrap();
        let mut f = File::create(path).unwrap();
        f.write_all(&(h.len() as u64).to_le_bytes()).unwrap();
        f.write_all(&h).unwrap();
        f.write_all(&data).unwrap();
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn single_file_rows_and_dtypes() {
        let dir = tempfile::tempdir().unwrap();
        let bf: Vec<u8> =
            [1.0f32, -2.5, 3.0, 0.5].iter().flat_map(|x| ((x.to_bits() >> 16) as u16).to_le_bytes()).collect();
        let h: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|x| half::f16::from_f32(*x).to_bits().to_le_bytes()).collect();
        write_st(
            &dir.path().join("model.safetensors"),
            &[
                ("b", "BF16", vec![2, 2], bf),
                ("a", "F32", vec![3], f32s(&[1.0, 2.0, 3.0])),
                ("c", "F16", vec![2], h),
                ("i", "I64", vec![1], vec![0; 8]),
            ],
        );
        let m = SafetensorsModel::open_dir(dir.path()).unwrap();
        let names: Vec<&str> = m.tensors().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "i"]);
        let b = m.tensor("b").unwrap();
        assert_eq!((b.row_len(), b.n_rows()), (2, 2));
        let mut row = [0f32; 2];
        m.read_rows_f32(b, 1, &mut row).unwrap();
        assert_eq!(row, [3.0, 0.5]);
        let mut c = [0f32; 2];
        m.read_f32(m.tensor("c").unwrap(), 0, &mut c).unwrap();
        assert_eq!(c, [1.0, 2.0]);
        let e = m.read_f32(m.tensor("i").unwrap(), 0, &mut [0f32; 1]).unwrap_err().to_string();
        assert!(e.contains("'i'") && e.contains("I64") && e.contains("model.safetensors"), "{e}");
        assert!(m.read_rows_f32(b, 2, &mut row).is_err());
    }

    #[test]
    fn sharded_index_checked_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_st(&d.join("model-00001-of-00002.safetensors"), &[("x", "F32", vec![1], f32s(&[1.0]))]);
        write_st(&d.join("model-00002-of-00002.safetensors"), &[("y", "F32", vec![1], f32s(&[2.0]))]);
        let index = |map: serde_json::Value| {
            fs::write(d.join(INDEX_FILE), serde_json::json!({"metadata": {}, "weight_map": map}).to_string()).unwrap()
        };
        index(serde_json::json!({"x": "model-00001-of-00002.safetensors", "y": "model-00002-of-00002.safetensors"}));
        let m = SafetensorsModel::open_dir(d).unwrap();
        assert_eq!(m.tensors().len(), 2);
        assert_eq!(m.files().len(), 2);

        // A tensor in a shard that the index does not name.
        index(serde_json::json!({"x": "model-00001-of-00002.safetensors", "w": "model-00002-of-00002.safetensors"}));
        write_st(
            &d.join("model-00002-of-00002.safetensors"),
            &[("w", "F32", vec![1], f32s(&[2.0])), ("y", "F32", vec![1], f32s(&[2.0]))],
        );
        let e = SafetensorsModel::open_dir(d).unwrap_err().to_string();
        assert!(e.contains("'y'") && e.contains("not named"), "{e}");
        write_st(&d.join("model-00002-of-00002.safetensors"), &[("y", "F32", vec![1], f32s(&[2.0]))]);
        // A tensor the index names that its shard lacks.
        index(
            serde_json::json!({"x": "model-00001-of-00002.safetensors", "y": "model-00002-of-00002.safetensors", "z": "model-00002-of-00002.safetensors"}),
        );
        let e = SafetensorsModel::open_dir(d).unwrap_err().to_string();
        assert!(e.contains("'z'") && e.contains("00002"), "{e}");
        // Index places a tensor in the wrong shard.
        index(serde_json::json!({"x": "model-00002-of-00002.safetensors", "y": "model-00002-of-00002.safetensors"}));
        let e = SafetensorsModel::open_dir(d).unwrap_err().to_string();
        assert!(e.contains("'x'"), "{e}");
        // Missing shard file.
        index(serde_json::json!({"x": "model-00001-of-00002.safetensors", "y": "model-00003-of-00002.safetensors"}));
        let e = SafetensorsModel::open_dir(d).unwrap_err().to_string();
        assert!(e.contains("missing shard") && e.contains("00003"), "{e}");
        // Path traversal.
        index(serde_json::json!({"x": "../model-00001-of-00002.safetensors"}));
        assert!(SafetensorsModel::open_dir(d).unwrap_err().to_string().contains("plain file name"));
    }

    #[test]
    fn duplicate_and_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_st(&d.join("model-a.safetensors"), &[("x", "F32", vec![1], f32s(&[1.0]))]);
        write_st(&d.join("model-b.safetensors"), &[("x", "F32", vec![1], f32s(&[2.0]))]);
        let e = SafetensorsModel::open_dir(d).unwrap_err().to_string();
        assert!(e.contains("'x' is also in"), "{e}");

        let p = d.join("model.safetensors");
        write_st(&p, &[("x", "F32", vec![2], f32s(&[1.0, 2.0]))]);
        let bytes = fs::read(&p).unwrap();
        fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
        let e = SafetensorsModel::open_dir(d).unwrap_err().to_string();
        assert!(e.contains("model.safetensors") && e.contains("safetensors"), "{e}");
        fs::write(&p, b"\x05\0\0\0\0\0\0\0{}").unwrap();
        assert!(SafetensorsModel::open_dir(d).is_err());
        fs::write(&p, b"").unwrap();
        assert!(SafetensorsModel::open_dir(d).is_err());
    }
}
