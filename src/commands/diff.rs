//! `diff`: tensor-by-tensor and key-by-key comparison of two GGUF files.
//!
//! Reports metadata keys missing on either side, differing types or values,
//! and key order; tensors missing on either side, differing type or shape,
//! byte equality, and for tensors both sides can decode to f32 the max-abs and
//! RMS difference. Two files are *identical* when every key and tensor matches
//! in order and bytes (the whole files are then byte-identical too, which is
//! checked directly).

use serde_json::{json, Value as J};

use crate::error::Result;
use crate::gguf::value::json as vjson;
use crate::gguf::{GgmlType, GgufFile, TensorInfo, Value};

/// A metadata difference.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyDiff {
    OnlyInA(String),
    OnlyInB(String),
    Type { key: String, a: String, b: String },
    Value { key: String, detail: String },
}

/// Numerical comparison of two tensors decoded to f32.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub max_abs: f64,
    pub rms: f64,
    /// RMS of the difference divided by the RMS of A (0 when A is all zero).
    pub rel_rms: f64,
    /// Elements that differ (as f32 values; NaN equals NaN).
    pub n_different: u64,
}

/// A tensor present in both files that differs.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorDiff {
    pub name: String,
    pub a_type: GgmlType,
    pub b_type: GgmlType,
    pub a_shape: Vec<u64>,
    pub b_shape: Vec<u64>,
    pub same_bytes: bool,
    /// When both sides decode and shapes match.
    pub stats: Option<Stats>,
}

#[derive(Debug, Clone, Default)]
pub struct DiffReport {
    pub byte_identical: bool,
    pub version: Option<(u32, u32)>,
    pub alignment: Option<(u64, u64)>,
    pub keys: Vec<KeyDiff>,
    pub key_order_differs: bool,
    pub only_in_a: Vec<String>,
    pub only_in_b: Vec<String>,
    pub tensors: Vec<TensorDiff>,
    pub tensor_order_differs: bool,
    pub identical_tensors: usize,
}

impl DiffReport {
    /// True when nothing differs.
    pub fn identical(&self) -> bool {
        self.byte_identical
            || (self.version.is_none()
                && self.alignment.is_none()
                && self.keys.is_empty()
                && !self.key_order_differs
                && self.only_in_a.is_empty()
                && self.only_in_b.is_empty()
                && self.tensors.is_empty()
                && !self.tensor_order_differs)
    }
}

/// Decodes F32, F16, BF16 and every type the quantization engine can dequantize.
pub fn decode(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<()> {
    crate::quant::dequantize_rows(ty, src, dst)
}

pub fn can_decode(ty: GgmlType) -> bool {
    crate::quant::can_dequantize(ty)
}

fn describe_value_diff(a: &Value, b: &Value) -> String {
    match (a, b) {
        (Value::Array(x), Value::Array(y)) => {
            if x.elem_type != y.elem_type {
                return format!("array element type {} vs {}", x.elem_type, y.elem_type);
            }
            if x.values.len() != y.values.len() {
                return format!("array length {} vs {}", x.values.len(), y.values.len());
            }
            let i = x.values.iter().zip(y.values.iter()).position(|(p, q)| !same_value(p, q)).unwrap_or(0);
            format!("element {i}: {} vs {}", x.values[i].summary(4), y.values[i].summary(4))
        }
        _ => format!("{} vs {}", a.summary(8), b.summary(8)),
    }
}

/// Value equality where NaN equals NaN with the same bits (byte equality of the encoding).
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::F32(x), Value::F32(y)) => x.to_bits() == y.to_bits(),
        (Value::F64(x), Value::F64(y)) => x.to_bits() == y.to_bits(),
        (Value::Array(x), Value::Array(y)) => {
            x.elem_type == y.elem_type
                && x.values.len() == y.values.len()
                && x.values.iter().zip(y.values.iter()).all(|(p, q)| same_value(p, q))
        }
        _ => a == b,
    }
}

/// Rows decoded per step when comparing (bounds memory for huge tensors).
const CHUNK_ELEMENTS: usize = 1 << 20;

fn compare_values(a: &GgufFile, ta: &TensorInfo, b: &GgufFile, tb: &TensorInfo) -> Result<Option<Stats>> {
    if ta.dims != tb.dims || !can_decode(ta.ty) || !can_decode(tb.ty) {
        return Ok(None);
    }
    let row = ta.row_len() as usize;
    let rows = ta.n_rows() as usize;
    let rows_per_chunk = (CHUNK_ELEMENTS / row.max(1)).max(1);
    let (da, db) = (a.data(ta), b.data(tb));
    let (ra, rb) = (ta.ty.row_size(row as u64).unwrap_or(0) as usize, tb.ty.row_size(row as u64).unwrap_or(0) as usize);
    let mut fa = vec![0f32; rows_per_chunk.min(rows.max(1)) * row];
    let mut fb = fa.clone();
    let (mut max_abs, mut sum_sq, mut sum_sq_a, mut n_diff) = (0f64, 0f64, 0f64, 0u64);
    let mut r0 = 0;
    while r0 < rows {
        let n = rows_per_chunk.min(rows - r0);
        let (xa, xb) = (&mut fa[..n * row], &mut fb[..n * row]);
        decode(ta.ty, &da[r0 * ra..(r0 + n) * ra], xa)?;
        decode(tb.ty, &db[r0 * rb..(r0 + n) * rb], xb)?;
        for (&x, &y) in xa.iter().zip(xb.iter()) {
            if x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()) {
                sum_sq_a += (x as f64) * (x as f64);
                continue;
            }
            n_diff += 1;
            let d = (x as f64 - y as f64).abs();
            let d = if d.is_nan() { f64::INFINITY } else { d };
            max_abs = max_abs.max(d);
            sum_sq += d * d;
            sum_sq_a += (x as f64) * (x as f64);
        }
        r0 += n;
    }
    let count = ta.n_elements.max(1) as f64;
    let rms = (sum_sq / count).sqrt();
    let rms_a = (sum_sq_a / count).sqrt();
    Ok(Some(Stats { max_abs, rms, rel_rms: if rms_a > 0.0 { rms / rms_a } else { 0.0 }, n_different: n_diff }))
}

/// Compares two GGUF files.
pub fn diff(a: &GgufFile, b: &GgufFile) -> Result<DiffReport> {
    let mut r = DiffReport { byte_identical: a.bytes() == b.bytes(), ..Default::default() };
    let (ha, hb) = (&a.header, &b.header);
    if ha.version != hb.version {
        r.version = Some((ha.version, hb.version));
    }
    if ha.alignment != hb.alignment {
        r.alignment = Some((ha.alignment, hb.alignment));
    }
    for (k, va) in ha.metadata.iter() {
        match hb.metadata.get(k) {
            None => r.keys.push(KeyDiff::OnlyInA(k.to_string())),
            Some(vb) => {
                let (ta, tb) = (type_name(va), type_name(vb));
                if ta != tb {
                    r.keys.push(KeyDiff::Type { key: k.to_string(), a: ta, b: tb });
                } else if !same_value(va, vb) {
                    r.keys.push(KeyDiff::Value { key: k.to_string(), detail: describe_value_diff(va, vb) });
                }
            }
        }
    }
    for k in hb.metadata.keys() {
        if ha.metadata.get(k).is_none() {
            r.keys.push(KeyDiff::OnlyInB(k.to_string()));
        }
    }
    let common_a: Vec<&str> = ha.metadata.keys().filter(|k| hb.metadata.get(k).is_some()).collect();
    let common_b: Vec<&str> = hb.metadata.keys().filter(|k| ha.metadata.get(k).is_some()).collect();
    r.key_order_differs = common_a != common_b;

    for ta in &ha.tensors {
        let Some(tb) = hb.tensor(&ta.name) else {
            r.only_in_a.push(ta.name.clone());
            continue;
        };
        let same_bytes = ta.ty == tb.ty && ta.dims == tb.dims && a.data(ta) == b.data(tb);
        if same_bytes {
            r.identical_tensors += 1;
            continue;
        }
        let stats = compare_values(a, ta, b, tb)?;
        r.tensors.push(TensorDiff {
            name: ta.name.clone(),
            a_type: ta.ty,
            b_type: tb.ty,
            a_shape: ta.dims.clone(),
            b_shape: tb.dims.clone(),
            same_bytes,
            stats,
        });
    }
    for tb in &hb.tensors {
        if ha.tensor(&tb.name).is_none() {
            r.only_in_b.push(tb.name.clone());
        }
    }
    let order_a: Vec<&str> = ha.tensors.iter().map(|t| t.name.as_str()).filter(|n| hb.tensor(n).is_some()).collect();
    let order_b: Vec<&str> = hb.tensors.iter().map(|t| t.name.as_str()).filter(|n| ha.tensor(n).is_some()).collect();
    r.tensor_order_differs = order_a != order_b;
    Ok(r)
}

fn type_name(v: &Value) -> String {
    match v {
        Value::Array(a) => format!("ARRAY[{}]", a.elem_type.name()),
        v => v.value_type().name().to_string(),
    }
}

impl DiffReport {
    pub fn to_json(&self) -> J {
        let keys: Vec<J> = self
            .keys
            .iter()
            .map(|k| match k {
                KeyDiff::OnlyInA(k) => json!({"key": k, "kind": "only_in_a"}),
                KeyDiff::OnlyInB(k) => json!({"key": k, "kind": "only_in_b"}),
                KeyDiff::Type { key, a, b } => json!({"key": key, "kind": "type", "a": a, "b": b}),
                KeyDiff::Value { key, detail } => json!({"key": key, "kind": "value", "detail": detail}),
            })
            .collect();
        let tensors: Vec<J> = self
            .tensors
            .iter()
            .map(|t| {
                let mut j = json!({
                    "name": t.name,
                    "a_type": t.a_type.name(),
                    "b_type": t.b_type.name(),
                    "a_shape": t.a_shape,
                    "b_shape": t.b_shape,
                    "same_bytes": t.same_bytes,
                });
                if let Some(s) = t.stats {
                    j["max_abs"] = vjson::float(s.max_abs);
                    j["rms"] = vjson::float(s.rms);
                    j["rel_rms"] = vjson::float(s.rel_rms);
                    j["n_different"] = json!(s.n_different);
                }
                j
            })
            .collect();
        json!({
            "identical": self.identical(),
            "byte_identical": self.byte_identical,
            "version": self.version.map(|(a, b)| json!([a, b])),
            "alignment": self.alignment.map(|(a, b)| json!([a, b])),
            "metadata": { "differences": keys, "order_differs": self.key_order_differs },
            "tensors": {
                "identical": self.identical_tensors,
                "only_in_a": self.only_in_a,
                "only_in_b": self.only_in_b,
                "order_differs": self.tensor_order_differs,
                "differences": tensors,
            },
        })
    }

    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        if self.byte_identical {
            s.push_str("files are byte-identical\n");
            return s;
        }
        if let Some((a, b)) = self.version {
            let _ = writeln!(s, "version: {a} vs {b}");
        }
        if let Some((a, b)) = self.alignment {
            let _ = writeln!(s, "alignment: {a} vs {b}");
        }
        for k in &self.keys {
            let _ = match k {
                KeyDiff::OnlyInA(k) => writeln!(s, "key {k}: only in A"),
                KeyDiff::OnlyInB(k) => writeln!(s, "key {k}: only in B"),
                KeyDiff::Type { key, a, b } => writeln!(s, "key {key}: type {a} vs {b}"),
                KeyDiff::Value { key, detail } => writeln!(s, "key {key}: {detail}"),
            };
        }
        if self.key_order_differs {
            s.push_str("metadata key order differs\n");
        }
        for n in &self.only_in_a {
            let _ = writeln!(s, "tensor {n}: only in A");
        }
        for n in &self.only_in_b {
            let _ = writeln!(s, "tensor {n}: only in B");
        }
        for t in &self.tensors {
            let mut line = format!("tensor {}:", t.name);
            if t.a_type != t.b_type {
                let _ = write!(line, " type {} vs {}", t.a_type, t.b_type);
            }
            if t.a_shape != t.b_shape {
                let _ = write!(line, " shape {:?} vs {:?}", t.a_shape, t.b_shape);
            }
            if t.a_type == t.b_type && t.a_shape == t.b_shape {
                line.push_str(" bytes differ");
            }
            if let Some(st) = t.stats {
                let _ = write!(
                    line,
                    "; {} values differ, max-abs {:.6e}, rms {:.6e}, rel-rms {:.3e}",
                    st.n_different, st.max_abs, st.rms, st.rel_rms
                );
            }
            let _ = writeln!(s, "{line}");
        }
        if self.tensor_order_differs {
            s.push_str("tensor order differs\n");
        }
        if self.identical() {
            s.push_str("files are identical (metadata and tensors)\n");
        } else {
            let _ = writeln!(
                s,
                "{} tensors identical, {} differ, {} only in A, {} only in B; {} metadata differences",
                self.identical_tensors,
                self.tensors.len(),
                self.only_in_a.len(),
                self.only_in_b.len(),
                self.keys.len() + self.key_order_differs as usize
            );
        }
        s
    }
}
