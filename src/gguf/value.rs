//! GGUF metadata values.

use std::fmt;

/// The type tag of a metadata value (`gguf_type` in llama.cpp).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    pub fn from_id(id: u32) -> Option<ValueType> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }
    pub fn id(self) -> u32 {
        self as u32
    }
    /// The name gguf-py and llama.cpp use (`UINT32`, `STRING`, ...).
    pub fn name(self) -> &'static str {
        use ValueType::*;
        match self {
            U8 => "UINT8",
            I8 => "INT8",
            U16 => "UINT16",
            I16 => "INT16",
            U32 => "UINT32",
            I32 => "INT32",
            F32 => "FLOAT32",
            Bool => "BOOL",
            String => "STRING",
            Array => "ARRAY",
            U64 => "UINT64",
            I64 => "INT64",
            F64 => "FLOAT64",
        }
    }
    /// Encoded size of a fixed-size value; `None` for strings and arrays.
    pub fn fixed_size(self) -> Option<usize> {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => Some(1),
            U16 | I16 => Some(2),
            U32 | I32 | F32 => Some(4),
            U64 | I64 | F64 => Some(8),
            String | Array => None,
        }
    }
    /// Parses a type name as used by `--override-kv` (`int`, `float`, `bool`, `str`)
    /// or by gguf-py (`UINT32`, ...), case-insensitively.
    pub fn from_name(s: &str) -> Option<ValueType> {
        use ValueType::*;
        let s = s.to_ascii_lowercase();
        Some(match s.as_str() {
            "u8" | "uint8" => U8,
            "i8" | "int8" => I8,
            "u16" | "uint16" => U16,
            "i16" | "int16" => I16,
            "u32" | "uint32" => U32,
            "i32" | "int32" => I32,
            "f32" | "float32" => F32,
            "bool" => Bool,
            "str" | "string" => String,
            "u64" | "uint64" => U64,
            "i64" | "int64" => I64,
            "f64" | "float64" => F64,
            _ => return None,
        })
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A metadata value. Strings keep their raw bytes (GGUF does not require
/// UTF-8), so any file round-trips exactly.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(Vec<u8>),
    Array(Array),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// A typed array; `elem_type` is kept even when the array is empty.
///
/// The values are shared: a vocabulary is a few hundred thousand strings, and
/// metadata is cloned once per output (`Arc::make_mut` to change one).
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    pub elem_type: ValueType,
    pub values: std::sync::Arc<Vec<Value>>,
}

impl Value {
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(_) => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }

    /// A string value.
    pub fn string(s: impl Into<String>) -> Value {
        Value::String(s.into().into_bytes())
    }

    /// An array of strings.
    pub fn string_array<I, S>(items: I) -> Value
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Value::array(ValueType::String, items.into_iter().map(Value::string).collect())
    }

    /// An array of values of one type.
    pub fn array(elem_type: ValueType, values: Vec<Value>) -> Value {
        debug_assert!(values.iter().all(|v| v.value_type() == elem_type));
        Value::Array(Array { elem_type, values: std::sync::Arc::new(values) })
    }

    /// The string, if this is a UTF-8 string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&Array> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// Any integer value that fits in u64 (unsigned, or signed and non-negative).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer value as i64, if it fits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::I8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::U64(v) => i64::try_from(v).ok(),
            Value::I64(v) => Some(v),
            _ => None,
        }
    }

    /// Any numeric value as f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// Encoded size in bytes (type tag not included).
    pub fn encoded_len(&self) -> usize {
        match self {
            Value::String(s) => 8 + s.len(),
            Value::Array(a) => 4 + 8 + a.values.iter().map(Value::encoded_len).sum::<usize>(),
            v => v.value_type().fixed_size().unwrap_or(0),
        }
    }

    /// A short human-readable rendering; long arrays and strings are summarized.
    pub fn summary(&self, max_items: usize) -> String {
        match self {
            Value::String(b) => {
                let s = String::from_utf8_lossy(b);
                let mut out = String::new();
                let chars: Vec<char> = s.chars().collect();
                let limit = 120;
                for c in chars.iter().take(limit) {
                    out.extend(c.escape_debug());
                }
                if chars.len() > limit {
                    format!("\"{out}\"... ({} chars)", chars.len())
                } else {
                    format!("\"{out}\"")
                }
            }
            Value::Array(a) => {
                let shown: Vec<String> = a.values.iter().take(max_items).map(|v| v.summary(max_items)).collect();
                if a.values.len() > max_items {
                    format!("[{}, ...] ({} x {})", shown.join(", "), a.values.len(), a.elem_type)
                } else {
                    format!("[{}]", shown.join(", "))
                }
            }
            Value::F32(v) => format_f32(*v),
            Value::F64(v) => format!("{v:?}"),
            Value::Bool(b) => b.to_string(),
            v => v.as_i64().map(|x| x.to_string()).unwrap_or_else(|| format!("{v:?}")),
        }
    }
}

fn format_f32(v: f32) -> String {
    format!("{v:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_ids() {
        for id in 0..13 {
            assert_eq!(ValueType::from_id(id).unwrap().id(), id);
        }
        assert_eq!(ValueType::from_id(13), None);
    }

    #[test]
    fn accessors() {
        assert_eq!(Value::U32(5).as_u64(), Some(5));
        assert_eq!(Value::I32(-5).as_u64(), None);
        assert_eq!(Value::I32(-5).as_i64(), Some(-5));
        assert_eq!(Value::U64(u64::MAX).as_i64(), None);
        assert_eq!(Value::F32(1.5).as_f64(), Some(1.5));
        assert_eq!(Value::string("abc").as_str(), Some("abc"));
        assert_eq!(Value::string("abc").encoded_len(), 11);
    }

    #[test]
    fn summary_truncates() {
        let v = Value::array(ValueType::U32, (0..100).map(Value::U32).collect());
        assert_eq!(v.summary(3), "[0, 1, 2, ...] (100 x UINT32)");
    }
}

/// JSON rendering of metadata values, used by `inspect --json` and `diff --json`
/// (documented in `formats/inspect-json.md`).
pub mod json {
    use super::Value;
    use serde_json::{json, Value as J};

    /// A float as a JSON number, or the strings "NaN", "inf", "-inf".
    pub fn float(v: f64) -> J {
        if v.is_nan() {
            J::from("NaN")
        } else if v.is_infinite() {
            J::from(if v > 0.0 { "inf" } else { "-inf" })
        } else {
            json!(v)
        }
    }

    /// The value alone: numbers, booleans, strings (lossy UTF-8) and arrays of them.
    pub fn value(v: &Value) -> J {
        match v {
            Value::U8(x) => json!(x),
            Value::I8(x) => json!(x),
            Value::U16(x) => json!(x),
            Value::I16(x) => json!(x),
            Value::U32(x) => json!(x),
            Value::I32(x) => json!(x),
            Value::U64(x) => json!(x),
            Value::I64(x) => json!(x),
            Value::F32(x) => float(*x as f64),
            Value::F64(x) => float(*x),
            Value::Bool(b) => json!(b),
            Value::String(s) => J::from(String::from_utf8_lossy(s).into_owned()),
            Value::Array(a) => J::Array(a.values.iter().map(value).collect()),
        }
    }
}
