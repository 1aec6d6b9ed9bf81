//! Importance matrices (`llama-imatrix` output) as llama-quantize reads them.
//!
//! Two formats (llama.cpp `common/imatrix-loader.cpp`, `tools/imatrix/imatrix.cpp`):
//!
//! - **GGUF** (current): for each weight `W`, an F32 tensor `W.in_sum2`
//!   (ne `[n_per_row, n_mat]`, the sums of squared activations per column and
//!   expert) and an F32 tensor `W.counts` (ne `[1, n_mat]`, tokens seen per
//!   expert), plus keys `imatrix.datasets` (string array),
//!   `imatrix.chunk_count` and `imatrix.chunk_size` (UINT32).
//! - **legacy `.dat`**: i32 entry count; per entry i32 name length, name
//!   bytes, i32 `ncall`, i32 value count, f32 values (already divided by the
//!   token count and multiplied by `ncall`); then optionally i32 chunk count,
//!   i32 dataset name length and the dataset name. All little-endian.
//!
//! A file starting with `GGUF` is read as GGUF, anything else as legacy.
//! llama-quantize turns each entry into the vector the quantizers weight
//! columns with ([`Imatrix::load`], `load_imatrix` in `quantize.cpp`):
//! GGUF sums are divided by their expert's count (rounded to an integer; a
//! count of 0 gives 1.0 for the whole expert), legacy values by `ncall`
//! (kept as they are when `ncall` ≤ 0).
//!
//! Every length and count is checked against the bytes that remain before
//! anything is allocated; a malformed file gives an error naming the entry.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, ParseError, Result};
use crate::gguf::{self, GgmlType, TensorInfo, Value, ValueType};

pub const KEY_DATASETS: &str = "imatrix.datasets";
pub const KEY_CHUNK_COUNT: &str = "imatrix.chunk_count";
pub const KEY_CHUNK_SIZE: &str = "imatrix.chunk_size";
const SUFFIX_SUMS: &str = ".in_sum2";
const SUFFIX_COUNTS: &str = ".counts";

/// Which format a file was in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Gguf,
    Legacy,
}

/// One entry as stored in the file (`common_imatrix_entry`).
#[derive(Debug, Clone, PartialEq)]
pub struct RawEntry {
    /// GGUF: sums of squared activations, expert-major. Legacy: the stored values.
    pub sums: Vec<f32>,
    /// GGUF: tokens per expert (rounded to integers as llama.cpp does). Legacy: `[ncall]`.
    pub counts: Vec<i64>,
}

/// An importance-matrix file as read (`common_imatrix`).
#[derive(Debug, Clone, PartialEq)]
pub struct ImatrixFile {
    pub format: Format,
    /// Entries by name (byte-wise order, as llama.cpp's `std::map`).
    pub entries: BTreeMap<Vec<u8>, RawEntry>,
    /// Dataset names (each cut at its first NUL byte, as llama.cpp reads them).
    pub datasets: Vec<Vec<u8>>,
    /// Chunks the matrix was computed over (may be 0 or negative in a hostile file).
    pub chunk_count: i32,
    /// Tokens per chunk (GGUF only).
    pub chunk_size: i32,
    /// A GGUF file has all three `imatrix.*` keys (llama-quantize refuses it otherwise).
    pub has_metadata: bool,
}

/// The importance data llama-quantize hands to the quantizers, plus what it
/// records in the output's `quantize.imatrix.*` keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Imatrix {
    /// The file name as given (written to `quantize.imatrix.file`).
    pub file: PathBuf,
    pub format: Format,
    /// Per-tensor vectors of `n_per_row * n_expert` values, by tensor name.
    pub data: BTreeMap<Vec<u8>, Vec<f32>>,
    pub datasets: Vec<Vec<u8>>,
    /// `m_last_call`: written as `quantize.imatrix.chunks_count` when positive.
    pub chunk_count: i32,
}

fn perr(field: impl Into<String>, offset: usize, msg: impl Into<String>) -> ParseError {
    ParseError::new(field, offset as u64, msg)
}

/// Little-endian reader over a byte slice that never reads past the end.
struct Bytes<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Bytes<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.remaining() {
            return None;
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Some(s)
    }
    fn i32(&mut self) -> Option<i32> {
        self.take(4).map(|s| i32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    /// Reads up to 4 bytes as an `istream::read` into an int does: the bytes
    /// present are stored, the rest stay 0. Returns the value and whether all 4 were there.
    fn i32_partial(&mut self) -> (i32, bool) {
        let n = self.remaining().min(4);
        let mut b = [0u8; 4];
        b[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        (i32::from_le_bytes(b), n == 4)
    }
}

/// Bytes before the first NUL (how llama.cpp turns a read buffer into a `std::string`).
fn c_str(b: &[u8]) -> Vec<u8> {
    b.split(|&c| c == 0).next().unwrap_or_default().to_vec()
}

/// Parses the legacy `.dat` format (`common_imatrix_load_legacy`).
pub fn parse_legacy(buf: &[u8]) -> Result<ImatrixFile, ParseError> {
    let mut r = Bytes { buf, pos: 0 };
    let n_entries = r.i32().unwrap_or(0);
    if n_entries < 1 {
        return Err(perr("entry count", 0, "no data (the entry count is missing or less than 1)"));
    }
    let mut entries = BTreeMap::new();
    for i in 0..n_entries {
        let at = r.pos;
        let field = |what: &str| format!("entry {}: {what}", i + 1);
        let len = r.i32().ok_or_else(|| perr(field("name length"), at, "file truncated"))?;
        let len = usize::try_from(len).map_err(|_| perr(field("name length"), at, format!("negative ({len})")))?;
        let name = r.take(len).ok_or_else(|| {
            perr(field("name"), at + 4, format!("needs {len} bytes but only {} remain", r.remaining()))
        })?;
        let name = c_str(name);
        let at = r.pos;
        let ncall = r.i32().ok_or_else(|| perr(field("ncall"), at, "file truncated"))?;
        let nval = r.i32().ok_or_else(|| perr(field("value count"), at + 4, "file truncated"))?;
        if nval < 1 {
            return Err(perr(field("value count"), at + 4, format!("{nval} is less than 1")));
        }
        let nbytes = (nval as usize).saturating_mul(4);
        let at = r.pos;
        let data = r.take(nbytes).ok_or_else(|| {
            perr(field("values"), at, format!("{nval} values need {nbytes} bytes but only {} remain", buf.len() - at))
        })?;
        let sums = data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        // a repeated name replaces the earlier entry, as in llama.cpp
        entries.insert(name, RawEntry { sums, counts: vec![i64::from(ncall)] });
    }
    let mut chunk_count = 0;
    let mut datasets = Vec::new();
    if r.remaining() > 0 {
        let (n, full) = r.i32_partial();
        chunk_count = n;
        if full {
            if let Some(len) = r.i32() {
                if len > 0 {
                    if let Some(name) = r.take(len as usize) {
                        datasets.push(c_str(name));
                    }
                }
            }
        }
    }
    Ok(ImatrixFile { format: Format::Legacy, entries, datasets, chunk_count, chunk_size: 0, has_metadata: false })
}

/// `std::lround` as compiled for x86-64: out-of-range and non-finite values give `i64::MIN`.
fn lround(v: f32) -> i64 {
    const LIMIT: f32 = 9.223_372e18; // 2^63
    if !v.is_finite() || v.abs() >= LIMIT {
        return i64::MIN;
    }
    v.round() as i64
}

fn f32s(data: &[u8]) -> Vec<f32> {
    data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// Parses the GGUF format (`common_imatrix_load` after `gguf_init_from_file`).
pub fn parse_gguf(buf: &[u8]) -> Result<ImatrixFile, ParseError> {
    let g = gguf::parse(buf)?;
    if g.tensors.is_empty() {
        return Err(perr("tensors", 0, "no data (the file holds no tensors)"));
    }
    let md = &g.metadata;
    let mut datasets = Vec::new();
    if let Some(Value::Array(a)) = md.get(KEY_DATASETS) {
        if a.elem_type == ValueType::String {
            for v in a.values.iter() {
                if let Value::String(s) = v {
                    datasets.push(c_str(s));
                }
            }
        }
    }
    let u32_key = |key: &str| -> Result<Option<u32>, ParseError> {
        match md.get(key) {
            None => Ok(None),
            Some(Value::U32(v)) => Ok(Some(*v)),
            Some(v) => Err(perr(
                format!("metadata[\"{key}\"]"),
                0,
                format!("must be UINT32, not {} (llama.cpp aborts)", v.value_type()),
            )),
        }
    };
    let chunk_count = u32_key(KEY_CHUNK_COUNT)?;
    let chunk_size = u32_key(KEY_CHUNK_SIZE)?;
    let has_metadata = md.get(KEY_DATASETS).is_some() && chunk_count.is_some() && chunk_size.is_some();

    let mut pairs: BTreeMap<Vec<u8>, (Option<&TensorInfo>, Option<&TensorInfo>)> = BTreeMap::new();
    for t in &g.tensors {
        if t.name.is_empty() {
            continue;
        }
        if let Some(base) = t.name.strip_suffix(SUFFIX_SUMS) {
            pairs.entry(base.as_bytes().to_vec()).or_default().0 = Some(t);
        } else if let Some(base) = t.name.strip_suffix(SUFFIX_COUNTS) {
            pairs.entry(base.as_bytes().to_vec()).or_default().1 = Some(t);
        }
    }
    let data_of = |t: &TensorInfo| -> &[u8] {
        // the parser checked that every tensor's data lies inside the buffer
        let start = (g.data_offset + t.offset) as usize;
        buf.get(start..start + t.size as usize).unwrap_or_default()
    };
    let mut entries = BTreeMap::new();
    for (name, (sums, counts)) in pairs {
        let shown = String::from_utf8_lossy(&name).into_owned();
        let (Some(sums), Some(counts)) = (sums, counts) else {
            return Err(perr(format!("entry '{shown}'"), 0, "mismatched sums and counts (one of the pair is missing)"));
        };
        if sums.ty != GgmlType::F32 || counts.ty != GgmlType::F32 {
            return Err(perr(format!("entry '{shown}'"), 0, "sums and counts must be F32"));
        }
        let sums_v = f32s(data_of(sums));
        let counts_v: Vec<i64> = f32s(data_of(counts)).into_iter().map(lround).collect();
        if counts_v.is_empty() {
            return Err(perr(format!("entry '{shown}'"), 0, "the counts tensor is empty"));
        }
        entries.insert(name, RawEntry { sums: sums_v, counts: counts_v });
    }
    Ok(ImatrixFile {
        format: Format::Gguf,
        entries,
        datasets,
        chunk_count: chunk_count.unwrap_or(0) as i32,
        chunk_size: chunk_size.unwrap_or(0) as i32,
        has_metadata,
    })
}

/// Parses either format (GGUF when the bytes start with `GGUF`).
pub fn parse(buf: &[u8]) -> Result<ImatrixFile, ParseError> {
    if buf.starts_with(gguf::GGUF_MAGIC) {
        parse_gguf(buf)
    } else {
        parse_legacy(buf)
    }
}

impl ImatrixFile {
    /// The per-tensor vectors llama-quantize computes (`load_imatrix`).
    pub fn vectors(&self) -> BTreeMap<Vec<u8>, Vec<f32>> {
        let mut out = BTreeMap::new();
        for (name, e) in &self.entries {
            let mut v = vec![0f32; e.sums.len()];
            match self.format {
                Format::Gguf => {
                    let n = e.counts.len();
                    let ne0 = e.sums.len() / n.max(1);
                    for (j, &c) in e.counts.iter().enumerate() {
                        let count = c as f32;
                        let range = j * ne0..(j + 1) * ne0;
                        if count > 0.0 {
                            for i in range {
                                v[i] = e.sums[i] / count;
                            }
                        } else {
                            v[range].fill(1.0);
                        }
                    }
                }
                Format::Legacy => {
                    let ncall = e.counts.first().copied().unwrap_or(0);
                    if ncall > 0 {
                        let d = ncall as f32;
                        for (o, s) in v.iter_mut().zip(&e.sums) {
                            *o = s / d;
                        }
                    } else {
                        v.copy_from_slice(&e.sums);
                    }
                }
            }
            out.insert(name.clone(), v);
        }
        out
    }
}

impl Imatrix {
    /// Loads an importance-matrix file as llama-quantize's `load_imatrix` does.
    pub fn load(path: impl AsRef<Path>) -> Result<Imatrix> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).at(path, "read")?;
        let format_name = if bytes.starts_with(gguf::GGUF_MAGIC) { "imatrix GGUF" } else { "imatrix" };
        let file = parse(&bytes).map_err(|e| Error::parse(path, format_name, e))?;
        Imatrix::from_file(path, file)
    }

    /// Turns a parsed file into the data llama-quantize uses.
    pub fn from_file(path: impl AsRef<Path>, file: ImatrixFile) -> Result<Imatrix> {
        let path = path.as_ref();
        if file.format == Format::Gguf && !file.has_metadata {
            return Err(Error::input(
                path,
                format!("missing imatrix metadata (the keys {KEY_DATASETS}, {KEY_CHUNK_COUNT} and {KEY_CHUNK_SIZE})"),
            ));
        }
        Ok(Imatrix {
            file: path.to_path_buf(),
            format: file.format,
            data: file.vectors(),
            datasets: file.datasets,
            chunk_count: file.chunk_count,
        })
    }

    /// `--include-weights` / `--exclude-weights`: keep only the entries whose
    /// name contains one of `include`, or drop those containing one of
    /// `exclude` (llama-quantize refuses both at once).
    pub fn filter(&mut self, include: &[String], exclude: &[String]) -> Result<()> {
        if !include.is_empty() && !exclude.is_empty() {
            return Err(Error::usage("--include-weights and --exclude-weights cannot be used together"));
        }
        let contains = |name: &[u8], pat: &str| pat.is_empty() || name.windows(pat.len()).any(|w| w == pat.as_bytes());
        if !exclude.is_empty() {
            self.data.retain(|name, _| !exclude.iter().any(|p| contains(name, p)));
        }
        if !include.is_empty() {
            self.data.retain(|name, _| include.iter().any(|p| contains(name, p)));
        }
        Ok(())
    }

    /// No entries: llama-quantize then quantizes as if no imatrix was given
    /// (and writes no `quantize.imatrix.*` keys).
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&[f32]> {
        self.data.get(name.as_bytes()).map(Vec::as_slice)
    }

    /// The first non-finite value, if any (llama-quantize refuses the file).
    pub fn first_non_finite(&self) -> Option<(String, f32)> {
        self.data.iter().find_map(|(name, v)| {
            v.iter().find(|x| !x.is_finite()).map(|&x| (String::from_utf8_lossy(name).into_owned(), x))
        })
    }

    /// The vector for a tensor of these dimensions: `Ok(None)` when there is
    /// no entry, or when the entry has the wrong size and `lenient` (llama-quantize
    /// is lenient for token embeddings and quantizes them without one); an
    /// error for any other size mismatch.
    pub fn for_tensor(&self, t: &TensorInfo, lenient: bool) -> Result<Option<&[f32]>> {
        let Some(v) = self.get(&t.name) else { return Ok(None) };
        let ne0 = t.row_len();
        let ne2 = t.dims.get(2).copied().unwrap_or(1);
        let want = ne0.checked_mul(ne2);
        if want == Some(v.len() as u64) {
            return Ok(Some(v));
        }
        if lenient {
            return Ok(None);
        }
        Err(Error::input(
            &self.file,
            format!(
                "imatrix entry for '{}' has {} values but the tensor needs {} (row length {ne0} x {ne2} experts)",
                t.name,
                v.len(),
                want.map_or("too many".to_string(), |w| w.to_string())
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legacy(entries: &[(&[u8], i32, &[f32])], tail: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend((entries.len() as i32).to_le_bytes());
        for (name, ncall, vals) in entries {
            b.extend((name.len() as i32).to_le_bytes());
            b.extend(*name);
            b.extend(ncall.to_le_bytes());
            b.extend((vals.len() as i32).to_le_bytes());
            for v in *vals {
                b.extend(v.to_le_bytes());
            }
        }
        b.extend(tail);
        b
    }

    #[test]
    fn legacy_roundtrip() {
        let mut tail = 7i32.to_le_bytes().to_vec();
        tail.extend(4i32.to_le_bytes());
        tail.extend(b"ab\0c");
        let b = legacy(&[(b"x.weight", 2, &[2.0, 4.0]), (b"y", 0, &[3.0])], &tail);
        let f = parse(&b).unwrap();
        assert_eq!(f.chunk_count, 7);
        assert_eq!(f.datasets, vec![b"ab".to_vec()]);
        let v = f.vectors();
        assert_eq!(v[&b"x.weight".to_vec()], vec![1.0, 2.0]);
        assert_eq!(v[&b"y".to_vec()], vec![3.0]);
        // partial trailing count: the bytes present are used
        let b2 = legacy(&[(b"y", 1, &[1.0])], &[5, 1]);
        assert_eq!(parse(&b2).unwrap().chunk_count, 0x105);
    }

    #[test]
    fn legacy_hostile() {
        assert!(parse(&[]).is_err());
        assert!(parse(&0i32.to_le_bytes()).is_err());
        let mut b = 1i32.to_le_bytes().to_vec();
        b.extend(i32::MAX.to_le_bytes());
        assert!(parse(&b).is_err());
        let mut b = 1i32.to_le_bytes().to_vec();
        b.extend((-1i32).to_le_bytes());
        assert!(parse(&b).is_err());
        let mut b = legacy(&[(b"y", 1, &[1.0])], &[]);
        let n = b.len();
        b[n - 8..n - 4].copy_from_slice(&i32::MAX.to_le_bytes());
        assert!(parse(&b).is_err());
        let mut b = legacy(&[(b"y", 1, &[1.0])], &[]);
        b[0..4].copy_from_slice(&i32::MAX.to_le_bytes());
        assert!(parse(&b).is_err());
        // a huge dataset length is ignored, not allocated
        let mut tail = 1i32.to_le_bytes().to_vec();
        tail.extend(i32::MAX.to_le_bytes());
        assert!(parse(&legacy(&[(b"y", 1, &[1.0])], &tail)).unwrap().datasets.is_empty());
    }

    #[test]
    fn filters() {
        let b = legacy(&[(b"blk.0.attn_q.weight", 1, &[1.0]), (b"blk.0.ffn_up.weight", 1, &[1.0])], &[]);
        let mut m = Imatrix::from_file("x.dat", parse(&b).unwrap()).unwrap();
        m.filter(&[], &["attn".into()]).unwrap();
        assert_eq!(m.data.len(), 1);
        assert!(m.get("blk.0.ffn_up.weight").is_some());
        assert!(m.filter(&["a".into()], &["b".into()]).is_err());
    }
}
