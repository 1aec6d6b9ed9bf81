//! `inspect`: a summary of a GGUF file, as text or as JSON.
//!
//! The JSON form is documented in `formats/inspect-json.md` and kept stable:
//! fields are only ever added.

use serde_json::{json, Value as J};

use crate::gguf::value::json as vjson;
use crate::gguf::{GgmlType, GgufFile, Value};

/// Options for the report.
#[derive(Debug, Clone, Copy, Default)]
pub struct InspectOptions {
    /// Include the per-tensor list.
    pub tensors: bool,
    /// Arrays longer than this are summarized in text output (JSON is always complete).
    pub max_array_items: usize,
}

/// Per-type totals over a file's tensors, in type-id order.
pub fn type_counts(file: &GgufFile) -> Vec<(GgmlType, usize, u64)> {
    let mut counts: Vec<(GgmlType, usize, u64)> = Vec::new();
    for t in &file.header.tensors {
        match counts.iter_mut().find(|c| c.0 == t.ty) {
            Some(c) => {
                c.1 += 1;
                c.2 += t.n_elements;
            }
            None => counts.push((t.ty, 1, t.n_elements)),
        }
    }
    counts.sort_by_key(|c| c.0.id());
    counts
}

/// Bits per weight over all tensors (0 for an empty file).
pub fn bits_per_weight(file: &GgufFile) -> f64 {
    let n = file.header.n_params();
    if n == 0 {
        0.0
    } else {
        file.header.tensor_bytes() as f64 * 8.0 / n as f64
    }
}

/// The JSON report.
pub fn to_json(file: &GgufFile, opts: InspectOptions) -> J {
    let h = &file.header;
    let metadata: Vec<J> = h
        .metadata
        .iter()
        .map(|(k, v)| {
            let mut entry = json!({ "key": k, "type": v.value_type().name() });
            if let Value::Array(a) = v {
                entry["element_type"] = J::from(a.elem_type.name());
                entry["count"] = J::from(a.values.len());
            }
            if let Value::String(s) = v {
                if std::str::from_utf8(s).is_err() {
                    entry["utf8"] = J::from(false);
                }
            }
            entry["value"] = vjson::value(v);
            entry
        })
        .collect();
    let mut out = json!({
        "file": file.path().display().to_string(),
        "version": h.version,
        "file_size": file.bytes().len(),
        "alignment": h.alignment,
        "data_offset": h.data_offset,
        "architecture": h.metadata.architecture(),
        "metadata_count": h.metadata.len(),
        "tensor_count": h.tensors.len(),
        "parameter_count": h.n_params(),
        "tensor_bytes": h.tensor_bytes(),
        "bits_per_weight": vjson::float(bits_per_weight(file)),
        "tensor_types": type_counts(file).iter().map(|(t, n, e)| json!({"type": t.name(), "count": n, "elements": e})).collect::<Vec<_>>(),
        "metadata": metadata,
    });
    if opts.tensors {
        out["tensors"] = h
            .tensors
            .iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "type": t.ty.name(),
                    "type_id": t.ty.id(),
                    "shape": t.dims,
                    "n_elements": t.n_elements,
                    "offset": t.offset,
                    "absolute_offset": h.data_offset + t.offset,
                    "size": t.size,
                })
            })
            .collect::<J>();
    }
    out
}

/// Human-readable sizes: 1536 -> "1.50 KiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// Human-readable counts: 494032768 -> "494.03 M".
pub fn human_count(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2} B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2} M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.2} K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

/// The text report.
pub fn to_text(file: &GgufFile, opts: InspectOptions) -> String {
    use std::fmt::Write;
    let h = &file.header;
    let mut s = String::new();
    let _ = writeln!(s, "file:          {}", file.path().display());
    let _ = writeln!(
        s,
        "format:        GGUF v{}, {} ({} bytes), alignment {}",
        h.version,
        human_bytes(file.bytes().len() as u64),
        file.bytes().len(),
        h.alignment
    );
    let _ = writeln!(s, "architecture:  {}", h.metadata.architecture().unwrap_or("(none)"));
    if let Some(name) = h.metadata.get_str("general.name") {
        let _ = writeln!(s, "name:          {name}");
    }
    let _ = writeln!(
        s,
        "tensors:       {} ({} parameters, {} of data, {:.2} bits per weight)",
        h.tensors.len(),
        human_count(h.n_params()),
        human_bytes(h.tensor_bytes()),
        bits_per_weight(file)
    );
    let types: Vec<String> = type_counts(file).iter().map(|(t, n, _)| format!("{t} {n}")).collect();
    if !types.is_empty() {
        let _ = writeln!(s, "tensor types:  {}", types.join(", "));
    }
    let _ = writeln!(s, "\nmetadata ({} keys):", h.metadata.len());
    let width = h.metadata.keys().map(str::len).max().unwrap_or(0);
    for (k, v) in h.metadata.iter() {
        let ty = match v {
            Value::Array(a) => format!("{}[{}]", a.elem_type.name(), a.values.len()),
            v => v.value_type().name().to_string(),
        };
        let _ = writeln!(s, "  {k:width$}  {ty:<14} {}", v.summary(opts.max_array_items.max(1)));
    }
    if opts.tensors {
        let _ = writeln!(s, "\ntensors:");
        let nw = h.tensors.iter().map(|t| t.name.len()).max().unwrap_or(4).max(4);
        let _ = writeln!(s, "  {:nw$}  {:<7} {:<24} {:>14} {:>12}", "name", "type", "shape", "offset", "bytes");
        for t in &h.tensors {
            let shape = format!("{:?}", t.dims);
            let _ = writeln!(s, "  {:nw$}  {:<7} {:<24} {:>14} {:>12}", t.name, t.ty.name(), shape, t.offset, t.size);
        }
    }
    s
}
