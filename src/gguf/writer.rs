//! Streaming GGUF writer.
//!
//! The layout (every tensor's offset and the file size) is computed up front
//! from names, shapes and types, so the header is written first and tensor
//! data is then streamed in, one tensor after another, with zero padding to
//! the alignment after the tensor infos and after each tensor (as llama.cpp
//! and gguf-py write it).

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;

use super::types::GgmlType;
use super::value::Value;
use super::{Metadata, DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION, KEY_ALIGNMENT, MAX_DIMS, MAX_NAME_LEN};
use crate::error::{Error, Result};

/// An output tensor: name, dimensions (ne0 first) and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgmlType,
}

impl TensorSpec {
    pub fn new(name: impl Into<String>, dims: Vec<u64>, ty: GgmlType) -> Self {
        TensorSpec { name: name.into(), dims, ty }
    }
}

crate::shape::shape_accessors!(TensorSpec, Ggml, dims);

/// How the container itself is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterOptions {
    /// GGUF version written in the header (2 or 3; the layout is the same).
    pub version: u32,
    /// Pad the header to the alignment even when there are no tensors. llama.cpp
    /// always does; gguf-py's vocab-only files end right after the metadata.
    pub pad_empty: bool,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions { version: GGUF_VERSION, pad_empty: true }
    }
}

/// Where everything goes in the output file.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub version: u32,
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
    /// Per tensor: offset from the data section and size in bytes.
    pub offsets: Vec<u64>,
    pub sizes: Vec<u64>,
    /// Size of the whole file.
    pub total_size: u64,
}

fn pad(n: u64, align: u64) -> u64 {
    n.div_ceil(align) * align
}

impl Layout {
    /// Validates the tensors and computes offsets. The alignment is taken from
    /// `general.alignment` when the metadata has it.
    pub fn new(opts: WriterOptions, metadata: &Metadata, tensors: &[TensorSpec]) -> Result<Layout> {
        let version = opts.version;
        let alignment = match metadata.get(KEY_ALIGNMENT) {
            None => DEFAULT_ALIGNMENT,
            Some(Value::U32(a)) if *a != 0 && a.is_power_of_two() => *a as u64,
            Some(v) => return Err(Error::Other(format!("general.alignment must be a power-of-two UINT32, not {v:?}"))),
        };
        let mut header = 4 + 4 + 8 + 8u64;
        for (k, v) in metadata.iter() {
            header += 8 + k.len() as u64 + 4 + v.encoded_len() as u64;
        }
        let mut seen = HashSet::with_capacity(tensors.len());
        for t in tensors {
            if t.name.len() as u64 > MAX_NAME_LEN {
                return Err(Error::Other(format!("tensor name '{}' is longer than {MAX_NAME_LEN} bytes", t.name)));
            }
            if !seen.insert(t.name.as_str()) {
                return Err(Error::Other(format!("duplicate tensor name '{}'", t.name)));
            }
            if t.dims.len() > MAX_DIMS {
                return Err(Error::Other(format!("tensor '{}' has {} dimensions", t.name, t.dims.len())));
            }
            header += 8 + t.name.len() as u64 + 4 + 8 * t.dims.len() as u64 + 4 + 8;
        }
        let data_offset = if tensors.is_empty() && !opts.pad_empty { header } else { pad(header, alignment) };
        let mut offsets = Vec::with_capacity(tensors.len());
        let mut sizes = Vec::with_capacity(tensors.len());
        let mut pos = 0u64;
        for t in tensors {
            let size = t.ty.tensor_size(&t.dims).ok_or_else(|| {
                Error::Other(format!(
                    "tensor '{}': shape {:?} does not fit type {} (row length must be a multiple of {})",
                    t.name,
                    t.dims,
                    t.ty,
                    t.ty.block_size()
                ))
            })?;
            offsets.push(pos);
            sizes.push(size);
            pos = pos
                .checked_add(size)
                .map(|p| pad(p, alignment))
                .ok_or_else(|| Error::Other("output size overflows".into()))?;
        }
        Ok(Layout { version, alignment, data_offset, offsets, sizes, total_size: data_offset + pos })
    }
}

/// Encodes the header, metadata, tensor infos and the padding up to the data section.
pub fn encode_header(layout: &Layout, metadata: &Metadata, tensors: &[TensorSpec]) -> Vec<u8> {
    let mut out = Vec::with_capacity(layout.data_offset as usize);
    out.extend_from_slice(GGUF_MAGIC);
    out.extend(layout.version.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata.iter() {
        put_str(&mut out, k.as_bytes());
        out.extend(v.value_type().id().to_le_bytes());
        put_value(&mut out, v);
    }
    for (t, off) in tensors.iter().zip(&layout.offsets) {
        put_str(&mut out, t.name.as_bytes());
        out.extend((t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            out.extend(d.to_le_bytes());
        }
        out.extend(t.ty.id().to_le_bytes());
        out.extend(off.to_le_bytes());
    }
    out.resize(layout.data_offset as usize, 0);
    out
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend_from_slice(s);
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend(x.to_le_bytes()),
        Value::I16(x) => out.extend(x.to_le_bytes()),
        Value::U32(x) => out.extend(x.to_le_bytes()),
        Value::I32(x) => out.extend(x.to_le_bytes()),
        Value::F32(x) => out.extend(x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => put_str(out, s),
        Value::Array(a) => {
            out.extend(a.elem_type.id().to_le_bytes());
            out.extend((a.values.len() as u64).to_le_bytes());
            for x in a.values.iter() {
                put_value(out, x);
            }
        }
        Value::U64(x) => out.extend(x.to_le_bytes()),
        Value::I64(x) => out.extend(x.to_le_bytes()),
        Value::F64(x) => out.extend(x.to_le_bytes()),
    }
}

/// Writes a GGUF file to `out`: the header at construction, then each
/// tensor's bytes in order through [`GgufWriter::write_data`].
pub struct GgufWriter<W: Write> {
    out: W,
    path: PathBuf,
    layout: Layout,
    tensors: Vec<TensorSpec>,
    current: usize,
    written_in_current: u64,
}

const ZEROS: [u8; 256] = [0; 256];

impl<W: Write> GgufWriter<W> {
    /// Computes the layout and writes the header. `path` names the output in errors.
    pub fn new(out: W, path: impl Into<PathBuf>, metadata: &Metadata, tensors: Vec<TensorSpec>) -> Result<Self> {
        Self::with_options(out, path, metadata, tensors, WriterOptions::default())
    }

    /// Like [`GgufWriter::new`], with explicit container options.
    pub fn with_options(
        mut out: W,
        path: impl Into<PathBuf>,
        metadata: &Metadata,
        tensors: Vec<TensorSpec>,
        opts: WriterOptions,
    ) -> Result<Self> {
        let path = path.into();
        let layout = Layout::new(opts, metadata, &tensors)?;
        let header = encode_header(&layout, metadata, &tensors);
        out.write_all(&header).map_err(|e| Error::io(&path, "write", e))?;
        let mut w = GgufWriter { out, path, layout, tensors, current: 0, written_in_current: 0 };
        w.skip_empty()?;
        Ok(w)
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn tensors(&self) -> &[TensorSpec] {
        &self.tensors
    }

    /// The tensor whose data is expected next.
    pub fn current(&self) -> Option<&TensorSpec> {
        self.tensors.get(self.current)
    }

    /// Bytes still expected for the current tensor.
    pub fn remaining_in_current(&self) -> u64 {
        self.layout.sizes.get(self.current).map_or(0, |s| s - self.written_in_current)
    }

    /// Appends data to the current tensor. Data may arrive in any number of
    /// pieces but may not run past the end of the current tensor.
    pub fn write_data(&mut self, data: &[u8]) -> Result<()> {
        let Some(t) = self.tensors.get(self.current) else {
            return Err(Error::Other(format!("{}: tensor data written after the last tensor", self.path.display())));
        };
        let left = self.remaining_in_current();
        if data.len() as u64 > left {
            return Err(Error::Other(format!(
                "{}: tensor '{}' got {} bytes more than its size {}",
                self.path.display(),
                t.name,
                data.len() as u64 - left,
                self.layout.sizes[self.current]
            )));
        }
        self.out.write_all(data).map_err(|e| Error::io(&self.path, "write", e))?;
        self.written_in_current += data.len() as u64;
        if self.remaining_in_current() == 0 {
            self.end_tensor()?;
        }
        Ok(())
    }

    fn end_tensor(&mut self) -> Result<()> {
        let size = self.layout.sizes[self.current];
        let mut padding = pad(size, self.layout.alignment) - size;
        while padding > 0 {
            let n = padding.min(ZEROS.len() as u64) as usize;
            self.out.write_all(&ZEROS[..n]).map_err(|e| Error::io(&self.path, "write", e))?;
            padding -= n as u64;
        }
        self.current += 1;
        self.written_in_current = 0;
        self.skip_empty()
    }

    /// Zero-sized tensors have no data; move past them.
    fn skip_empty(&mut self) -> Result<()> {
        while self.current < self.tensors.len() && self.layout.sizes[self.current] == 0 {
            self.current += 1;
        }
        Ok(())
    }

    /// Checks every tensor was written and returns the output.
    pub fn finish(mut self) -> Result<W> {
        if let Some(t) = self.tensors.get(self.current) {
            return Err(Error::Other(format!(
                "{}: tensor '{}' is incomplete ({} of {} bytes written)",
                self.path.display(),
                t.name,
                self.written_in_current,
                self.layout.sizes[self.current]
            )));
        }
        self.out.flush().map_err(|e| Error::io(&self.path, "write", e))?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::parse;

    #[test]
    fn layout_and_stream() {
        let mut md = Metadata::new();
        md.push("general.architecture", Value::string("llama"));
        md.push("general.alignment", Value::U32(64));
        let tensors =
            vec![TensorSpec::new("t0", vec![3], GgmlType::F32), TensorSpec::new("t1", vec![32, 2], GgmlType::Q4_0)];
        let mut w = GgufWriter::new(Vec::new(), "mem", &md, tensors).unwrap();
        w.write_data(&[1u8; 5]).unwrap();
        w.write_data(&[2u8; 7]).unwrap();
        assert_eq!(w.current().unwrap().name, "t1");
        w.write_data(&[3u8; 36]).unwrap();
        assert!(w.write_data(&[0]).is_err());
        let layout = w.layout().clone();
        let buf = w.finish().unwrap();
        assert_eq!(buf.len() as u64, layout.total_size);
        let g = parse(&buf).unwrap();
        assert_eq!(g.alignment, 64);
        assert_eq!(g.tensors[1].offset, 64);
        let start = (g.data_offset + 64) as usize;
        assert_eq!(&buf[start..start + 36], &[3u8; 36]);
    }

    #[test]
    fn incomplete_is_an_error() {
        let md = Metadata::new();
        let w = GgufWriter::new(Vec::new(), "mem", &md, vec![TensorSpec::new("t", vec![4], GgmlType::F32)]).unwrap();
        assert!(w.finish().is_err());
    }

    #[test]
    fn rejects_bad_shapes() {
        let md = Metadata::new();
        assert!(Layout::new(WriterOptions::default(), &md, &[TensorSpec::new("t", vec![33], GgmlType::Q4_0)]).is_err());
        assert!(Layout::new(WriterOptions::default(), &md, &[TensorSpec::new("x".repeat(64), vec![1], GgmlType::F32)])
            .is_err());
    }
}
