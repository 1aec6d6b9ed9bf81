//! Values as Go's `text/template` sees them through reflection, for the data Ollama passes
//! to a TEMPLATE: strings, ints, float64s (JSON numbers decoded into `any`), bools, slices,
//! maps with string keys (visited in sorted key order) and structs (fields by name), plus
//! the few Ollama types whose `String()` method changes how they print.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::rc::Rc;

/// How a slice or map prints and marshals, for the Ollama types that define `String()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A plain Go slice or map: `[a b]`, `map[k:v]`.
    Plain,
    /// A type whose `String()` is its `json.Marshal` (templateTools, templateArgs,
    /// templateProperties). `nil_text` is what a nil value prints.
    JsonString { nil_text: &'static str },
    /// api.PropertyType: one type prints as itself, several as `[a b]`; JSON is a string
    /// for one, a list otherwise.
    PropertyType,
}

/// A slice (`nil` when `is_nil`, which only JSON and `String()` can tell).
#[derive(Debug, Clone)]
pub struct List {
    pub items: Vec<Value>,
    pub kind: Kind,
    pub is_nil: bool,
}

/// A `map[string]T`.
#[derive(Debug, Clone)]
pub struct Map {
    pub entries: BTreeMap<String, Value>,
    pub kind: Kind,
    pub is_nil: bool,
}

/// One struct field: Go name, JSON name (`""`: the Go name; `"-"`: never marshalled) and
/// `omitempty`.
#[derive(Debug, Clone)]
pub struct Field {
    pub name: &'static str,
    pub json: &'static str,
    pub omitempty: bool,
    pub value: Value,
}

/// A struct (through a pointer when `pointer`, as Ollama's `[]*api.Message`).
#[derive(Debug, Clone)]
pub struct Struct {
    pub type_name: &'static str,
    pub fields: Vec<Field>,
    pub pointer: bool,
}

/// A value in a template.
#[derive(Debug, Clone)]
pub enum Value {
    /// No value at all (a missing key of a `map[string]any`): prints `<no value>`.
    Missing,
    /// A nil interface or pointer: prints `<nil>`.
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<str>),
    List(Rc<List>),
    Map(Rc<Map>),
    Struct(Rc<Struct>),
}

impl Value {
    pub fn str(s: impl AsRef<str>) -> Value {
        Value::Str(Rc::from(s.as_ref()))
    }

    pub fn list(items: Vec<Value>) -> Value {
        Value::List(Rc::new(List { items, kind: Kind::Plain, is_nil: false }))
    }

    /// A `map[string]any` (missing keys give [`Value::Missing`]).
    pub fn map(entries: BTreeMap<String, Value>) -> Value {
        Value::Map(Rc::new(Map { entries, kind: Kind::Plain, is_nil: false }))
    }

    /// A JSON value decoded into Go's `any` (numbers become float64, objects
    /// `map[string]any`, arrays `[]any`, null a nil interface).
    pub fn from_json(v: &serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null => Value::Nil,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => Value::Float(n.as_f64().unwrap_or(0.0)),
            serde_json::Value::String(s) => Value::str(s),
            serde_json::Value::Array(a) => Value::list(a.iter().map(Value::from_json).collect()),
            serde_json::Value::Object(o) => {
                Value::map(o.iter().map(|(k, v)| (k.clone(), Value::from_json(v))).collect())
            }
        }
    }

    /// Go's name of the value's type, for error messages.
    pub fn type_name(&self) -> String {
        match self {
            Value::Missing => "<nil>".into(),
            Value::Nil => "interface {}".into(),
            Value::Bool(_) => "bool".into(),
            Value::Int(_) => "int".into(),
            Value::Float(_) => "float64".into(),
            Value::Str(_) => "string".into(),
            Value::List(l) => match l.kind {
                Kind::PropertyType => "api.PropertyType".into(),
                Kind::JsonString { .. } => "template.templateTools".into(),
                Kind::Plain => "[]interface {}".into(),
            },
            Value::Map(m) => match m.kind {
                Kind::Plain => "map[string]interface {}".into(),
                _ => "template.templateArgs".into(),
            },
            Value::Struct(s) => format!("{}{}", if s.pointer { "*" } else { "" }, s.type_name),
        }
    }

    /// Go's truth (`if`, `with`, `and`, `or`, `not`): false, 0, a nil pointer or interface,
    /// and an empty string, slice or map are false.
    pub fn truth(&self) -> bool {
        match self {
            Value::Missing | Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::List(l) => !l.items.is_empty(),
            Value::Map(m) => !m.entries.is_empty(),
            Value::Struct(_) => true,
        }
    }

    /// What `{{ . }}` writes (fmt.Fprint, with the `String()` methods of Ollama's types).
    pub fn print(&self) -> String {
        let mut s = String::new();
        self.write_print(&mut s, true);
        s
    }

    fn write_print(&self, out: &mut String, top: bool) {
        match self {
            Value::Missing => out.push_str(if top { "<no value>" } else { "<nil>" }),
            Value::Nil => out.push_str("<nil>"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::Float(f) => out.push_str(&format_g(*f)),
            Value::Str(s) => out.push_str(s),
            Value::List(l) => match l.kind {
                Kind::JsonString { nil_text } => {
                    if l.is_nil {
                        out.push_str(nil_text)
                    } else {
                        self.write_json(out)
                    }
                }
                Kind::PropertyType if l.items.len() == 1 => l.items[0].write_print(out, false),
                Kind::PropertyType if l.items.is_empty() => {}
                _ => {
                    out.push('[');
                    for (i, v) in l.items.iter().enumerate() {
                        if i > 0 {
                            out.push(' ');
                        }
                        v.write_print(out, false);
                    }
                    out.push(']');
                }
            },
            Value::Map(m) => match m.kind {
                Kind::JsonString { nil_text } => {
                    if m.is_nil {
                        out.push_str(nil_text)
                    } else {
                        self.write_json(out)
                    }
                }
                _ => {
                    out.push_str("map[");
                    for (i, (k, v)) in m.entries.iter().enumerate() {
                        if i > 0 {
                            out.push(' ');
                        }
                        out.push_str(k);
                        out.push(':');
                        v.write_print(out, false);
                    }
                    out.push(']');
                }
            },
            Value::Struct(s) => {
                if s.pointer && !top {
                    // fmt prints a pointer inside a composite as its address; Ollama's
                    // data never reaches that, an address has no stable text anyway.
                    out.push_str("0xc000000000");
                    return;
                }
                if s.pointer {
                    out.push('&');
                }
                out.push('{');
                for (i, f) in s.fields.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    f.value.write_print(out, false);
                }
                out.push('}');
            }
        }
    }

    /// Go's `json.Marshal` (HTML-safe escaping, sorted map keys, struct tags).
    pub fn json(&self) -> String {
        let mut s = String::new();
        self.write_json(&mut s);
        s
    }

    fn write_json(&self, out: &mut String) {
        match self {
            Value::Missing | Value::Nil => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::Float(f) => out.push_str(&json_float(*f)),
            Value::Str(s) => json_string(out, s),
            Value::List(l) => {
                if l.kind == Kind::PropertyType && l.items.len() == 1 {
                    return l.items[0].write_json(out);
                }
                if l.is_nil {
                    out.push_str("null");
                    return;
                }
                out.push('[');
                for (i, v) in l.items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write_json(out);
                }
                out.push(']');
            }
            Value::Map(m) => {
                if m.is_nil {
                    out.push_str("null");
                    return;
                }
                out.push('{');
                for (i, (k, v)) in m.entries.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    json_string(out, k);
                    out.push(':');
                    v.write_json(out);
                }
                out.push('}');
            }
            Value::Struct(s) => {
                out.push('{');
                let mut first = true;
                for f in &s.fields {
                    if f.json == "-" || (f.omitempty && f.value.is_empty_json()) {
                        continue;
                    }
                    if !first {
                        out.push(',');
                    }
                    first = false;
                    json_string(out, if f.json.is_empty() { f.name } else { f.json });
                    out.push(':');
                    f.value.write_json(out);
                }
                out.push('}');
            }
        }
    }

    /// encoding/json's "empty" for omitempty.
    fn is_empty_json(&self) -> bool {
        match self {
            Value::Missing | Value::Nil => true,
            Value::Bool(b) => !b,
            Value::Int(i) => *i == 0,
            Value::Float(f) => *f == 0.0,
            Value::Str(s) => s.is_empty(),
            Value::List(l) => l.items.is_empty(),
            Value::Map(m) => m.entries.is_empty(),
            Value::Struct(_) => false,
        }
    }

    /// A field of a struct or a key of a map.
    pub fn field(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Struct(s) => s.fields.iter().find(|f| f.name == name).map(|f| &f.value),
            Value::Map(m) => m.entries.get(name),
            _ => None,
        }
    }
}

/// A JSON string as Go's encoding/json writes it (with HTML escaping).
pub fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A float64 as encoding/json writes it: shortest decimal, exponent form below 1e-6 and
/// from 1e21 on (`1e-7`, `1e+21`).
pub fn json_float(f: f64) -> String {
    if !f.is_finite() {
        return "null".into();
    }
    let a = f.abs();
    if a != 0.0 && !(1e-6..1e21).contains(&a) {
        let s = format!("{f:e}");
        // Rust: 1e-7, 1e21; Go: 1e-07 cleaned to 1e-7, 1e+21.
        match s.split_once('e') {
            Some((m, e)) if !e.starts_with('-') => format!("{m}e+{e}"),
            _ => s,
        }
    } else {
        format!("{f}")
    }
}

/// A float64 as fmt's `%v` writes it (strconv 'g', shortest): exponent form when the
/// exponent is below -4 or at least 6 (`1e+06`, `1e-05`), plain decimal otherwise.
pub fn format_g(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    let e = format!("{f:e}");
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mant}e{sign}{:02}", exp.abs())
    } else {
        format!("{f}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_go() {
        assert_eq!(format_g(3.0), "3");
        assert_eq!(format_g(0.1), "0.1");
        assert_eq!(format_g(1e6), "1e+06");
        assert_eq!(format_g(123456.0), "123456");
        assert_eq!(format_g(1e-5), "1e-05");
        assert_eq!(json_float(1e21), "1e+21");
        assert_eq!(json_float(1e6), "1000000");
        assert_eq!(json_float(1e-7), "1e-7");
    }

    #[test]
    fn json_is_html_safe_and_sorted() {
        let v = Value::from_json(&serde_json::json!({"b": "<a&b>", "a": [1, 2.5, null, true]}));
        assert_eq!(v.json(), r#"{"a":[1,2.5,null,true],"b":"\u003ca\u0026b\u003e"}"#);
        assert_eq!(v.print(), "map[a:[1 2.5 <nil> true] b:<a&b>]");
    }
}
