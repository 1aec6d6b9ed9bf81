//! Tiny model files built by the tests: a SentencePiece `tokenizer.model` and
//! safetensors files with deterministic contents.

use std::fs;
use std::io::Write;
use std::path::Path;

/// A protobuf varint.
pub fn varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// A SentencePiece `ModelProto` holding `pieces` (text, type), piece `i`
/// scoring `-i`.
pub fn spm_model(pieces: &[(&str, u64)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, (p, t)) in pieces.iter().enumerate() {
        let mut m = vec![0x0a];
        varint(p.len() as u64, &mut m);
        m.extend_from_slice(p.as_bytes());
        m.push(0x15);
        m.extend_from_slice(&(-(i as f32)).to_le_bytes());
        m.push(0x18);
        varint(*t, &mut m);
        out.push(0x0a);
        varint(m.len() as u64, &mut out);
        out.extend(m);
    }
    out
}

/// A safetensors file of (name, dtype, shape) tensors: F32 tensors hold a
/// small repeating pattern, other dtypes the byte 0x3c throughout.
pub fn write_safetensors(path: &Path, tensors: &[(String, &str, Vec<usize>)]) {
    let mut header = serde_json::Map::new();
    let mut off = 0usize;
    let mut data = Vec::new();
    for (i, (name, dtype, shape)) in tensors.iter().enumerate() {
        let n: usize = shape.iter().product();
        let size = match *dtype {
            "F32" => 4,
            "I64" => 8,
            "F8_E4M3" => 1,
            _ => 2,
        };
        let bytes: Vec<u8> = match *dtype {
            "F32" => (0..n).flat_map(|k| (((k + i) % 7) as f32 * 0.1 - 0.3).to_le_bytes()).collect(),
            _ => vec![0x3c; n * size],
        };
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [off, off + bytes.len()]}),
        );
        off += bytes.len();
        data.extend(bytes);
    }
    let h = serde_json::to_vec(&header).unwrap();
    let mut f = fs::File::create(path).unwrap();
    f.write_all(&(h.len() as u64).to_le_bytes()).unwrap();
    f.write_all(&h).unwrap();
    f.write_all(&data).unwrap();
}
