//! `edit`: rewrite a GGUF file with changed metadata and the same tensors.
//!
//! With no changes, the output is byte-identical to any input written by
//! llama.cpp or gguf-py (same key order, tensor order, alignment and padding),
//! which is how the reader/writer round trip is tested.

use std::path::Path;

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, Metadata, Value, ValueType, KEY_ALIGNMENT};
use crate::pipeline::{write_gguf, GgufSource, Planned, WriteOptions};
use crate::progress::Progress;

/// A metadata change.
#[derive(Debug, Clone, PartialEq)]
pub enum Edit {
    /// Set a key (replaced in place when it exists, else appended).
    Set(String, Value),
    /// Remove a key.
    Remove(String),
}

/// Parses `KEY=TYPE:VALUE`. TYPE is a GGUF scalar type (`u8` … `f64`, `bool`,
/// `str`/`string`), or llama.cpp's override types `int` (stored as UINT32, as
/// llama-quantize does), `float` (FLOAT32).
pub fn parse_set(s: &str) -> Result<(String, Value)> {
    let bad = |why: &str| Error::usage(format!("bad metadata setting '{s}': {why} (expected KEY=TYPE:VALUE)"));
    let (key, rest) = s.split_once('=').ok_or_else(|| bad("no '='"))?;
    if key.is_empty() {
        return Err(bad("empty key"));
    }
    let (ty, val) = rest.split_once(':').ok_or_else(|| bad("no ':' after the type"))?;
    let num = |what: &str| bad(&format!("'{val}' is not a valid {what}"));
    let value = match ty.to_ascii_lowercase().as_str() {
        "int" => Value::U32(val.trim().parse::<i64>().map_err(|_| num("integer"))?.unsigned_abs() as u32),
        "float" => Value::F32(val.trim().parse::<f64>().map_err(|_| num("number"))? as f32),
        other => match ValueType::from_name(other) {
            Some(ValueType::U8) => Value::U8(val.parse().map_err(|_| num("u8"))?),
            Some(ValueType::I8) => Value::I8(val.parse().map_err(|_| num("i8"))?),
            Some(ValueType::U16) => Value::U16(val.parse().map_err(|_| num("u16"))?),
            Some(ValueType::I16) => Value::I16(val.parse().map_err(|_| num("i16"))?),
            Some(ValueType::U32) => Value::U32(val.parse().map_err(|_| num("u32"))?),
            Some(ValueType::I32) => Value::I32(val.parse().map_err(|_| num("i32"))?),
            Some(ValueType::U64) => Value::U64(val.parse().map_err(|_| num("u64"))?),
            Some(ValueType::I64) => Value::I64(val.parse().map_err(|_| num("i64"))?),
            Some(ValueType::F32) => Value::F32(val.parse().map_err(|_| num("f32"))?),
            Some(ValueType::F64) => Value::F64(val.parse().map_err(|_| num("f64"))?),
            Some(ValueType::Bool) => match val {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => return Err(num("bool (true or false)")),
            },
            Some(ValueType::String) => Value::string(val),
            _ => return Err(bad(&format!("unknown type '{ty}'"))),
        },
    };
    Ok((key.to_string(), value))
}

/// Applies edits to a copy of `md`.
pub fn apply(md: &Metadata, edits: &[Edit]) -> Result<Metadata> {
    let mut out = md.clone();
    for e in edits {
        match e {
            Edit::Set(k, v) => {
                if k == KEY_ALIGNMENT && !matches!(v, Value::U32(a) if a.is_power_of_two()) {
                    return Err(Error::usage("general.alignment must be set as a power-of-two u32"));
                }
                out.set(k.clone(), v.clone())
            }
            Edit::Remove(k) => {
                if out.remove(k).is_none() {
                    return Err(Error::usage(format!("cannot remove '{k}': no such key")));
                }
            }
        }
    }
    Ok(out)
}

/// Writes `input` to `dest` with `edits` applied, tensors copied unchanged
/// (verbatim, through the engine: a plan of copies of a [`GgufSource`]).
pub fn rewrite(input: &GgufFile, dest: &Path, edits: &[Edit], progress: &dyn Progress) -> Result<()> {
    let md = apply(&input.header.metadata, edits)?;
    let src = GgufSource::new(input);
    let plan: Vec<Planned> = input
        .header
        .tensors
        .iter()
        .enumerate()
        .map(|(i, t)| Planned { dims: Some(t.dims.clone()), ..Planned::new(i, t.ty) })
        .collect();
    let opts = WriteOptions {
        container: input.header.writer_options(input.bytes().len() as u64),
        verbatim: true,
        ..Default::default()
    };
    write_gguf(&src, &plan, &md, dest, &[input.path()], &opts, progress)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_settings() {
        assert_eq!(parse_set("a.b=int:-5").unwrap(), ("a.b".into(), Value::U32(5)));
        assert_eq!(parse_set("a=float:0.5").unwrap().1, Value::F32(0.5));
        assert_eq!(parse_set("a=bool:true").unwrap().1, Value::Bool(true));
        assert_eq!(parse_set("a=str:x:y=z").unwrap().1, Value::string("x:y=z"));
        assert_eq!(parse_set("a=i64:-7").unwrap().1, Value::I64(-7));
        assert!(parse_set("a=bool:yes").is_err());
        assert!(parse_set("a=u8:300").is_err());
        assert!(parse_set("noequals").is_err());
        assert!(parse_set("a=what:1").is_err());
    }
}
