//! GGUF parsing over a byte slice. No I/O here: [`parse`] takes the whole
//! file's bytes (normally a memory map) and validates every count, length,
//! offset and shape against them before anything is allocated or used.

use super::types::GgmlType;
use super::value::{Value, ValueType};
use super::{Gguf, Metadata, TensorInfo, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_DIMS, MAX_NAME_LEN};
use crate::error::ParseError;

/// Nested arrays deeper than this are refused (llama.cpp itself reads no nesting).
pub const MAX_ARRAY_DEPTH: usize = 8;
/// Longest metadata key accepted.
pub const MAX_KEY_LEN: u64 = 65_535;

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

type PResult<T> = Result<T, ParseError>;

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: u64, field: &dyn Fn() -> String) -> PResult<&'a [u8]> {
        if n > self.remaining() as u64 {
            return Err(ParseError::new(
                field(),
                self.pos as u64,
                format!("needs {n} bytes but only {} remain (file truncated?)", self.remaining()),
            ));
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, field: &dyn Fn() -> String) -> PResult<[u8; N]> {
        let s = self.take(N as u64, field)?;
        Ok(s.try_into().expect("take returned N bytes"))
    }

    fn u32(&mut self, field: &dyn Fn() -> String) -> PResult<u32> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &dyn Fn() -> String) -> PResult<u64> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    /// A GGUF string: u64 length + bytes.
    fn bytes(&mut self, max: u64, field: &dyn Fn() -> String) -> PResult<&'a [u8]> {
        let at = self.pos as u64;
        let len = self.u64(field)?;
        if len > max {
            return Err(ParseError::new(field(), at, format!("string length {len} exceeds the limit of {max}")));
        }
        self.take(len, field)
    }

    fn err(&self, field: &dyn Fn() -> String, msg: impl Into<String>) -> ParseError {
        ParseError::new(field(), self.pos as u64, msg)
    }
}

/// Bytes that at least each item of a counted list occupies; used to refuse
/// counts that could not fit in the rest of the file before allocating.
fn check_count(c: &Cursor, count: u64, min_item: u64, field: &dyn Fn() -> String) -> PResult<()> {
    let fits = (c.remaining() as u64) / min_item.max(1);
    if count > fits {
        return Err(c.err(
            field,
            format!(
                "count {count} cannot fit in the {} remaining bytes (at least {min_item} bytes each; file truncated or corrupt?)",
                c.remaining()
            ),
        ));
    }
    Ok(())
}

fn read_value(c: &mut Cursor, ty: ValueType, depth: usize, field: &dyn Fn() -> String) -> PResult<Value> {
    Ok(match ty {
        ValueType::U8 => Value::U8(c.array::<1>(field)?[0]),
        ValueType::I8 => Value::I8(c.array::<1>(field)?[0] as i8),
        ValueType::U16 => Value::U16(u16::from_le_bytes(c.array(field)?)),
        ValueType::I16 => Value::I16(i16::from_le_bytes(c.array(field)?)),
        ValueType::U32 => Value::U32(u32::from_le_bytes(c.array(field)?)),
        ValueType::I32 => Value::I32(i32::from_le_bytes(c.array(field)?)),
        ValueType::F32 => Value::F32(f32::from_le_bytes(c.array(field)?)),
        ValueType::U64 => Value::U64(u64::from_le_bytes(c.array(field)?)),
        ValueType::I64 => Value::I64(i64::from_le_bytes(c.array(field)?)),
        ValueType::F64 => Value::F64(f64::from_le_bytes(c.array(field)?)),
        ValueType::Bool => {
            let at = c.pos;
            match c.array::<1>(field)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(ParseError::new(field(), at as u64, format!("bool value must be 0 or 1, found {b}"))),
            }
        }
        ValueType::String => Value::String(c.bytes(u64::MAX, field)?.to_vec()),
        ValueType::Array => {
            if depth >= MAX_ARRAY_DEPTH {
                return Err(c.err(field, format!("arrays nested deeper than {MAX_ARRAY_DEPTH} levels")));
            }
            let at = c.pos as u64;
            let elem_id = c.u32(field)?;
            let elem_type = ValueType::from_id(elem_id)
                .ok_or_else(|| ParseError::new(field(), at, format!("unknown array element type {elem_id}")))?;
            let count = c.u64(field)?;
            let min_item = match elem_type {
                ValueType::String => 8,
                ValueType::Array => 12,
                t => t.fixed_size().unwrap_or(1) as u64,
            };
            check_count(c, count, min_item, field)?;
            let mut values = Vec::with_capacity(count as usize);
            for i in 0..count {
                let f = || format!("{}[{i}]", field());
                values.push(read_value(c, elem_type, depth + 1, &f)?);
            }
            Value::array(elem_type, values)
        }
    })
}

/// Parses and validates a whole GGUF file held in `buf`.
pub fn parse(buf: &[u8]) -> Result<Gguf, ParseError> {
    let mut c = Cursor { buf, pos: 0 };
    let magic = c.array::<4>(&|| "magic".into())?;
    if &magic != GGUF_MAGIC {
        return Err(ParseError::new("magic", 0, format!("expected \"GGUF\", found {:02x?} (not a GGUF file)", magic)));
    }
    let version = c.u32(&|| "version".into())?;
    match version {
        2 | 3 => {}
        1 => return Err(ParseError::new("version", 4, "GGUF version 1 is obsolete and not supported")),
        v if v.swap_bytes() <= 3 => {
            return Err(ParseError::new("version", 4, "big-endian GGUF files are not supported"));
        }
        v => return Err(ParseError::new("version", 4, format!("unsupported GGUF version {v} (supported: 2, 3)"))),
    }
    let tensor_count = c.u64(&|| "tensor_count".into())?;
    let kv_count = c.u64(&|| "metadata_kv_count".into())?;

    // Each key/value needs at least 8 (key length) + 4 (type) + 1 bytes.
    check_count(&c, kv_count, 13, &|| "metadata_kv_count".into())?;
    let mut metadata = Metadata::with_capacity(kv_count as usize);
    for i in 0..kv_count {
        let key_at = c.pos as u64;
        let key_field = || format!("metadata[{i}].key");
        let key = c.bytes(MAX_KEY_LEN, &key_field)?;
        let key = std::str::from_utf8(key)
            .map_err(|_| ParseError::new(key_field(), key_at, "key is not valid UTF-8"))?
            .to_string();
        if key.is_empty() {
            return Err(ParseError::new(key_field(), key_at, "empty key"));
        }
        if metadata.get(&key).is_some() {
            return Err(ParseError::new(key_field(), key_at, format!("duplicate key '{key}'")));
        }
        let vfield = || format!("metadata[\"{key}\"]");
        let type_at = c.pos as u64;
        let type_id = c.u32(&vfield)?;
        let ty = ValueType::from_id(type_id)
            .ok_or_else(|| ParseError::new(vfield(), type_at, format!("unknown value type {type_id}")))?;
        let value = read_value(&mut c, ty, 0, &vfield)?;
        metadata.push(key, value);
    }

    let alignment = match metadata.get(super::KEY_ALIGNMENT) {
        None => DEFAULT_ALIGNMENT,
        Some(Value::U32(a)) if *a != 0 && a.is_power_of_two() => *a as u64,
        Some(v) => {
            return Err(ParseError::new(
                "metadata[\"general.alignment\"]",
                0,
                format!("must be a non-zero power of two of type UINT32, found {} {}", v.value_type(), v.summary(4)),
            ))
        }
    };

    // Each tensor info needs at least 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset) bytes.
    check_count(&c, tensor_count, 24, &|| "tensor_count".into())?;
    let mut tensors: Vec<TensorInfo> = Vec::with_capacity(tensor_count as usize);
    let mut names = std::collections::HashSet::with_capacity(tensor_count as usize);
    for i in 0..tensor_count {
        let name_at = c.pos as u64;
        let nfield = || format!("tensor_infos[{i}].name");
        let name = c.bytes(u64::MAX, &nfield)?;
        if name.len() as u64 > MAX_NAME_LEN {
            return Err(ParseError::new(
                nfield(),
                name_at,
                format!("tensor name is {} bytes long; the limit is {MAX_NAME_LEN}", name.len()),
            ));
        }
        let name = std::str::from_utf8(name)
            .map_err(|_| ParseError::new(nfield(), name_at, "tensor name is not valid UTF-8"))?
            .to_string();
        if !names.insert(name.clone()) {
            return Err(ParseError::new(nfield(), name_at, format!("duplicate tensor name '{name}'")));
        }
        let field = |what: &str| format!("tensor_infos[{i}] ('{name}').{what}");
        let dims_at = c.pos as u64;
        let n_dims = c.u32(&|| field("n_dims"))?;
        if n_dims as usize > MAX_DIMS {
            return Err(ParseError::new(
                field("n_dims"),
                dims_at,
                format!("{n_dims} dimensions; at most {MAX_DIMS} allowed"),
            ));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            let at = c.pos as u64;
            let v = c.u64(&|| field(&format!("dims[{d}]")))?;
            if v > i64::MAX as u64 {
                return Err(ParseError::new(
                    field(&format!("dims[{d}]")),
                    at,
                    format!("dimension {v} is out of range"),
                ));
            }
            dims.push(v);
        }
        let n_elements =
            dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)).filter(|&n| n <= i64::MAX as u64).ok_or_else(
                || ParseError::new(field("dims"), dims_at, format!("element count of {dims:?} overflows")),
            )?;
        let type_at = c.pos as u64;
        let type_id = c.u32(&|| field("type"))?;
        let ty = GgmlType::from_id(type_id)
            .ok_or_else(|| ParseError::new(field("type"), type_at, format!("unknown tensor type id {type_id}")))?;
        let ne0 = dims.first().copied().unwrap_or(1);
        if ne0 % ty.block_size() != 0 {
            return Err(ParseError::new(
                field("dims[0]"),
                dims_at,
                format!("row length {ne0} is not a multiple of the {ty} block size {}", ty.block_size()),
            ));
        }
        let size = ty
            .tensor_size(&dims)
            .ok_or_else(|| ParseError::new(field("dims"), dims_at, format!("byte size of {dims:?} {ty} overflows")))?;
        let off_at = c.pos as u64;
        let offset = c.u64(&|| field("offset"))?;
        if offset % alignment != 0 {
            return Err(ParseError::new(
                field("offset"),
                off_at,
                format!("data offset {offset} is not a multiple of the alignment {alignment}"),
            ));
        }
        tensors.push(TensorInfo { name, dims, ty, offset, size, n_elements });
    }

    let infos_end = c.pos as u64;
    let data_offset = infos_end.div_ceil(alignment) * alignment;
    let data_len = (buf.len() as u64).saturating_sub(data_offset);

    // Every tensor lies inside the data section, and no two overlap.
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by_key(|&i| (tensors[i].offset, tensors[i].size));
    let mut prev_end = 0u64;
    let mut prev: Option<usize> = None;
    for &i in &order {
        let t = &tensors[i];
        let end = t.offset.checked_add(t.size).filter(|&e| e <= data_len).ok_or_else(|| {
            ParseError::new(
                format!("tensor_infos[{i}] ('{}').offset", t.name),
                infos_end,
                format!(
                    "tensor data [{}, {}+{}) runs past the end of the file (data section is {data_len} bytes; file truncated?)",
                    t.offset, t.offset, t.size
                ),
            )
        })?;
        if let Some(p) = prev {
            if t.offset < prev_end && t.size > 0 {
                return Err(ParseError::new(
                    format!("tensor_infos[{i}] ('{}').offset", t.name),
                    infos_end,
                    format!("tensor data overlaps that of '{}'", tensors[p].name),
                ));
            }
        }
        if t.size > 0 {
            prev_end = end;
            prev = Some(i);
        }
    }

    Ok(Gguf { version, metadata, tensors, alignment, data_offset })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::writer::encode_header;
    use crate::gguf::TensorSpec;

    fn sample() -> Vec<u8> {
        let mut md = Metadata::default();
        md.push("general.architecture", Value::string("llama"));
        md.push("x.arr", Value::array(ValueType::I32, vec![Value::I32(1), Value::I32(-2)]));
        md.push("x.strs", Value::string_array(["a", "bc"]));
        md.push("x.f", Value::F32(0.5));
        md.push("x.b", Value::Bool(true));
        let tensors = vec![
            TensorSpec { name: "a".into(), dims: vec![4, 2], ty: GgmlType::F32 },
            TensorSpec { name: "b".into(), dims: vec![32], ty: GgmlType::Q8_0 },
        ];
        let layout = crate::gguf::Layout::new(Default::default(), &md, &tensors).unwrap();
        let mut out = encode_header(&layout, &md, &tensors);
        out.resize(layout.total_size as usize, 0);
        out
    }

    #[test]
    fn parses_what_the_writer_writes() {
        let buf = sample();
        let g = parse(&buf).unwrap();
        assert_eq!(g.version, 3);
        assert_eq!(g.metadata.len(), 5);
        assert_eq!(g.metadata.get_str("general.architecture"), Some("llama"));
        assert_eq!(g.tensors.len(), 2);
        assert_eq!(g.tensors[0].size, 32);
        assert_eq!(g.tensors[1].offset, 32);
        assert_eq!(g.tensors[1].size, 34);
        assert_eq!(g.data_offset % 32, 0);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let buf = sample();
        for len in 0..buf.len() - 1 {
            // The last tensor's trailing padding may be cut without harm.
            let r = parse(&buf[..len]);
            let data_end = {
                let g = parse(&buf).unwrap();
                g.data_offset + 32 + 34
            };
            if (len as u64) < data_end {
                assert!(r.is_err(), "truncated to {len} bytes parsed");
            }
        }
    }

    #[test]
    fn huge_counts_are_refused_before_allocating() {
        let mut buf = b"GGUF".to_vec();
        buf.extend(3u32.to_le_bytes());
        buf.extend(u64::MAX.to_le_bytes());
        buf.extend(0u64.to_le_bytes());
        let e = parse(&buf).unwrap_err();
        assert_eq!(e.field, "tensor_count");
        let mut buf = b"GGUF".to_vec();
        buf.extend(3u32.to_le_bytes());
        buf.extend(0u64.to_le_bytes());
        buf.extend((1u64 << 60).to_le_bytes());
        let e = parse(&buf).unwrap_err();
        assert_eq!(e.field, "metadata_kv_count");
    }

    #[test]
    fn bad_magic_and_version() {
        assert!(parse(b"GGUX\x03\0\0\0").unwrap_err().msg.contains("not a GGUF"));
        assert!(parse(b"GGUF\x01\0\0\0").unwrap_err().msg.contains("version 1"));
        assert!(parse(b"GGUF\0\0\0\x03").unwrap_err().msg.contains("big-endian"));
    }
}
