//! The metadata llama-quantize writes, and its `--override-kv` values.
//!
//! llama.cpp copies the input's keys in order (with `gguf_set_kv`), then sets
//! `general.quantization_version` and `general.file_type`, removes the
//! `split.*` keys, and applies the overrides (the user's, then the
//! `quantize.imatrix.*` ones). Every set removes the key and appends it, so a
//! key that is set moves to the end.

use crate::error::{Error, Result};
use crate::gguf::{Metadata, Value, KEY_ALIGNMENT};

/// `GGML_QNT_VERSION`, written as `general.quantization_version`.
pub const QUANTIZATION_VERSION: u32 = 2;
pub const KEY_QUANTIZATION_VERSION: &str = "general.quantization_version";
pub const KEY_FILE_TYPE: &str = "general.file_type";
pub const SPLIT_KEYS: [&str; 3] = ["split.no", "split.count", "split.tensors.count"];
pub const KEY_IMATRIX_FILE: &str = "quantize.imatrix.file";
pub const KEY_IMATRIX_DATASET: &str = "quantize.imatrix.dataset";
pub const KEY_IMATRIX_N_ENTRIES: &str = "quantize.imatrix.entries_count";
pub const KEY_IMATRIX_N_CHUNKS: &str = "quantize.imatrix.chunks_count";

/// Longest key and string value an override can hold (llama.cpp's `char[128]`).
pub const OVERRIDE_MAX_LEN: usize = 127;

/// The value of a `--override-kv KEY=TYPE:VALUE`.
#[derive(Debug, Clone, PartialEq)]
pub enum OverrideValue {
    /// `int:` — written as UINT32 of the absolute value, as llama-quantize does.
    Int(i64),
    /// `float:` — written as FLOAT32.
    Float(f64),
    /// `bool:` (`true` or `false`).
    Bool(bool),
    /// `str:` (at most 127 bytes).
    Str(Vec<u8>),
}

/// One metadata override (`llama_model_kv_override`).
#[derive(Debug, Clone, PartialEq)]
pub struct KvOverride {
    pub key: String,
    pub value: OverrideValue,
}

impl KvOverride {
    /// Parses `KEY=TYPE:VALUE` as llama.cpp's `string_parse_kv_override`:
    /// TYPE is `int`, `float`, `bool` or `str` (lower case); `int` and
    /// `float` values are read like C's `atol`/`atof` (leading number, rest
    /// ignored, 0 when there is none).
    ///
    /// Refused where llama.cpp would not give a usable result: an empty key
    /// (llama.cpp reads it as the end of the list and silently drops every
    /// later override), and hexadecimal floats (not implemented).
    pub fn parse(s: &str) -> Result<KvOverride> {
        let bad = |why: &str| Error::usage(format!("malformed --override-kv '{s}': {why} (expected KEY=TYPE:VALUE)"));
        let (key, rest) = s.split_once('=').ok_or_else(|| bad("no '='"))?;
        if key.len() > OVERRIDE_MAX_LEN {
            return Err(bad("the key is longer than 127 bytes"));
        }
        if key.is_empty() {
            return Err(bad("empty key"));
        }
        let value = if let Some(v) = rest.strip_prefix("int:") {
            OverrideValue::Int(c_atol(v))
        } else if let Some(v) = rest.strip_prefix("float:") {
            OverrideValue::Float(c_atof(v).ok_or_else(|| bad("hexadecimal floats are not supported"))?)
        } else if let Some(v) = rest.strip_prefix("bool:") {
            match v {
                "true" => OverrideValue::Bool(true),
                "false" => OverrideValue::Bool(false),
                _ => return Err(bad("a bool is 'true' or 'false'")),
            }
        } else if let Some(v) = rest.strip_prefix("str:") {
            if v.len() > OVERRIDE_MAX_LEN {
                return Err(bad("the value cannot exceed 127 bytes"));
            }
            OverrideValue::Str(v.as_bytes().to_vec())
        } else {
            return Err(bad("TYPE must be int, float, bool or str"));
        };
        Ok(KvOverride { key: key.to_string(), value })
    }

    /// A string override (used for the imatrix keys): truncated to 127 bytes as llama.cpp's `strncpy` does.
    pub fn string(key: &str, value: &[u8]) -> KvOverride {
        let end = value.iter().position(|&b| b == 0).unwrap_or(value.len()).min(OVERRIDE_MAX_LEN);
        KvOverride { key: key.to_string(), value: OverrideValue::Str(value[..end].to_vec()) }
    }

    /// The GGUF value llama-quantize writes for this override.
    pub fn gguf_value(&self) -> Value {
        match &self.value {
            OverrideValue::Int(v) => Value::U32(v.unsigned_abs() as u32),
            OverrideValue::Float(v) => Value::F32(*v as f32),
            OverrideValue::Bool(b) => Value::Bool(*b),
            OverrideValue::Str(s) => Value::String(s.clone()),
        }
    }
}

/// C's `atol` (glibc `strtol` base 10): whitespace, sign, digits; saturates on overflow; 0 without digits.
pub(crate) fn c_atol(s: &str) -> i64 {
    let b = s.as_bytes();
    let mut i = b.iter().take_while(|c| is_c_space(**c)).count();
    let neg = match b.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let mut v: i128 = 0;
    for &d in b.get(i..).unwrap_or_default().iter().take_while(|c| c.is_ascii_digit()) {
        v = (v * 10 + i128::from(d - b'0')).min(i128::from(i64::MAX) + 1);
    }
    let v = if neg { -v } else { v };
    v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

fn is_c_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// C's `atof` (`strtod`): the longest leading decimal number, `inf`,
/// `infinity` or `nan` (any case), else 0. `None` for a hexadecimal float,
/// which is not implemented.
pub(crate) fn c_atof(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let start = b.iter().take_while(|c| is_c_space(**c)).count();
    let mut i = start;
    if matches!(b.get(i), Some(b'+' | b'-')) {
        i += 1;
    }
    let body = &s[i..];
    let lower = body.get(..8.min(body.len())).unwrap_or("").to_ascii_lowercase();
    if lower.starts_with("0x") && body.as_bytes().get(2).is_some_and(|c| c.is_ascii_hexdigit() || *c == b'.') {
        return None;
    }
    let special = if lower.starts_with("infinity") {
        Some(8)
    } else if lower.starts_with("inf") || lower.starts_with("nan") {
        Some(3)
    } else {
        None
    };
    let end = if let Some(n) = special {
        i + n
    } else {
        let int = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        let mut j = i + int;
        let mut frac = 0;
        if b.get(j) == Some(&b'.') {
            frac = b[j + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
            if int + frac > 0 {
                j += 1 + frac;
            }
        }
        if int + frac == 0 {
            return Some(0.0);
        }
        if matches!(b.get(j), Some(b'e' | b'E')) {
            let mut k = j + 1;
            if matches!(b.get(k), Some(b'+' | b'-')) {
                k += 1;
            }
            let exp = b.get(k..).unwrap_or_default().iter().take_while(|c| c.is_ascii_digit()).count();
            if exp > 0 {
                j = k + exp;
            }
        }
        j
    };
    s[start..end].parse::<f64>().ok().or(Some(0.0))
}

/// Strings as llama.cpp copies them: `gguf_set_val_str(key, value.c_str())`
/// keeps the bytes before the first NUL.
fn c_string(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(s.split(|&b| b == 0).next().unwrap_or_default().to_vec()),
        // A vocabulary has no NUL: its (shared) array is kept as it is.
        Value::Array(a)
            if a.elem_type == crate::gguf::ValueType::String
                && a.values.iter().any(|x| matches!(x, Value::String(s) if s.contains(&0))) =>
        {
            Value::array(a.elem_type, a.values.iter().map(c_string).collect())
        }
        other => other.clone(),
    }
}

/// Sets a key as `gguf_set_val_*` does: removed, then appended.
fn set_last(md: &mut Metadata, key: &str, value: Value) -> Result<()> {
    if key == KEY_ALIGNMENT && !matches!(value, Value::U32(a) if a.is_power_of_two()) {
        return Err(Error::usage(format!(
            "{KEY_ALIGNMENT} must be a power-of-two UINT32 (llama.cpp aborts otherwise)"
        )));
    }
    md.remove(key);
    md.push(key, value);
    Ok(())
}

/// The `quantize.imatrix.*` overrides llama-quantize adds for an importance
/// matrix, in its order: file, first dataset (if any), entry count, chunk
/// count (if positive).
pub fn imatrix_overrides(m: &crate::imatrix::Imatrix) -> Vec<KvOverride> {
    let mut out = Vec::with_capacity(4);
    out.push(KvOverride::string(KEY_IMATRIX_FILE, path_bytes(&m.file)));
    if let Some(d) = m.datasets.first() {
        out.push(KvOverride::string(KEY_IMATRIX_DATASET, d));
    }
    out.push(KvOverride { key: KEY_IMATRIX_N_ENTRIES.into(), value: OverrideValue::Int(m.data.len() as i64) });
    if m.chunk_count > 0 {
        out.push(KvOverride { key: KEY_IMATRIX_N_CHUNKS.into(), value: OverrideValue::Int(i64::from(m.chunk_count)) });
    }
    out
}

#[cfg(unix)]
fn path_bytes(p: &std::path::Path) -> &[u8] {
    use std::os::unix::ffi::OsStrExt;
    p.as_os_str().as_bytes()
}

#[cfg(not(unix))]
fn path_bytes(p: &std::path::Path) -> &[u8] {
    p.to_str().map(str::as_bytes).unwrap_or_default()
}

/// The output metadata of llama-quantize: the input's keys in order,
/// `general.quantization_version` = 2 and `general.file_type` = `file_type`
/// moved to the end, `split.*` removed, then each override set in order
/// (`overrides` = the user's `--override-kv` followed by the imatrix keys,
/// see [`imatrix_overrides`]).
///
/// The input's `general.alignment` key is copied as it is (llama-quantize
/// nevertheless writes the file with 32-byte alignment).
pub fn output_metadata(input: &Metadata, file_type: u32, overrides: &[KvOverride]) -> Result<Metadata> {
    let mut md = Metadata::with_capacity(input.len() + 2 + overrides.len());
    for (k, v) in input.iter() {
        if let Value::Array(a) = v {
            if a.elem_type == crate::gguf::ValueType::Array {
                return Err(Error::Unsupported(format!(
                    "metadata key '{k}' is an array of arrays, which llama.cpp cannot copy"
                )));
            }
        }
        set_last(&mut md, k, c_string(v))?;
    }
    set_last(&mut md, KEY_QUANTIZATION_VERSION, Value::U32(QUANTIZATION_VERSION))?;
    set_last(&mut md, KEY_FILE_TYPE, Value::U32(file_type))?;
    for k in SPLIT_KEYS {
        md.remove(k);
    }
    for o in overrides {
        set_last(&mut md, &o.key, o.gguf_value())?;
    }
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_overrides() {
        let o = KvOverride::parse("a.b=int:-12abc").unwrap();
        assert_eq!(o.value, OverrideValue::Int(-12));
        assert_eq!(o.gguf_value(), Value::U32(12));
        assert_eq!(KvOverride::parse("k=int:zz").unwrap().value, OverrideValue::Int(0));
        assert_eq!(KvOverride::parse("k=float: 1.5e3x").unwrap().gguf_value(), Value::F32(1500.0));
        assert_eq!(KvOverride::parse("k=float:.5").unwrap().value, OverrideValue::Float(0.5));
        assert_eq!(KvOverride::parse("k=float:5.").unwrap().value, OverrideValue::Float(5.0));
        assert_eq!(KvOverride::parse("k=float:1e").unwrap().value, OverrideValue::Float(1.0));
        assert_eq!(KvOverride::parse("k=float:-INF").unwrap().value, OverrideValue::Float(f64::NEG_INFINITY));
        assert_eq!(KvOverride::parse("k=float:abc").unwrap().value, OverrideValue::Float(0.0));
        assert!(KvOverride::parse("k=float:0x1p3").is_err());
        assert_eq!(KvOverride::parse("k=bool:true").unwrap().value, OverrideValue::Bool(true));
        assert!(KvOverride::parse("k=bool:True").is_err());
        assert_eq!(KvOverride::parse("k=str:a=b:c").unwrap().value, OverrideValue::Str(b"a=b:c".to_vec()));
        assert!(KvOverride::parse("k=STR:x").is_err());
        assert!(KvOverride::parse("k=u32:1").is_err());
        assert!(KvOverride::parse("=int:1").is_err());
        assert!(KvOverride::parse(&format!("k=str:{}", "x".repeat(128))).is_err());
        assert!(KvOverride::parse(&format!("{}=str:x", "k".repeat(128))).is_err());
        assert_eq!(c_atol("99999999999999999999"), i64::MAX);
        assert_eq!(c_atol("  -7"), -7);
    }

    #[test]
    fn key_order() {
        let mut input = Metadata::new();
        input.push("general.architecture", Value::string("llama"));
        input.push("general.file_type", Value::U32(1));
        input.push("split.count", Value::U16(2));
        input.push("x", Value::String(b"ab\0cd".to_vec()));
        input.push("general.quantization_version", Value::U32(2));
        input.push("y", Value::U32(3));
        let ov = [KvOverride::parse("x=int:5").unwrap()];
        let md = output_metadata(&input, 15, &ov).unwrap();
        let keys: Vec<&str> = md.keys().collect();
        assert_eq!(keys, ["general.architecture", "y", "general.quantization_version", "general.file_type", "x"]);
        assert_eq!(md.get("general.file_type"), Some(&Value::U32(15)));
        assert_eq!(md.get("x"), Some(&Value::U32(5)));
        let md = output_metadata(&input, 15, &[]).unwrap();
        assert_eq!(md.get("x"), Some(&Value::String(b"ab".to_vec())));
    }
}
