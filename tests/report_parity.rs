//! The per-tensor report of `quantize --json`: each tensor's error against
//! the source, checked against numpy on the same files (gguf-py dequantizes
//! the written tensor).

mod common;

use std::path::Path;
use std::process::Command;

use ggufkit::gguf::{GgmlType, GgufWriter, Metadata, TensorSpec, Value};

fn write_model(path: &Path) {
    let mut md = Metadata::new();
    md.push("general.architecture", Value::string("llama"));
    md.push("llama.block_count", Value::U32(1));
    md.push("llama.embedding_length", Value::U32(256));
    md.push("llama.attention.head_count", Value::U32(2));
    md.push("llama.attention.head_count_kv", Value::U32(2));
    let specs = vec![
        TensorSpec::new("blk.0.ffn_up.weight", vec![256, 48], GgmlType::F32),
        TensorSpec::new("blk.0.attn_norm.weight", vec![256], GgmlType::F32),
    ];
    let f = std::fs::File::create(path).unwrap();
    let mut w = GgufWriter::new(std::io::BufWriter::new(f), path, &md, specs).unwrap();
    let mut x = 0x9e3779b9u32;
    for n in [256 * 48, 256] {
        let mut bytes = Vec::with_capacity(n * 4);
        for _ in 0..n {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            bytes.extend_from_slice(&((x as f32 / u32::MAX as f32 - 0.5) * 3.0).to_le_bytes());
        }
        w.write_data(&bytes).unwrap();
    }
    w.finish().unwrap();
}

const NUMPY: &str = r#"
import json, sys
import numpy as np
import gguf
from gguf.quants import dequantize
src, out, name = sys.argv[1], sys.argv[2], sys.argv[3]
def tensor(path):
    r = gguf.GGUFReader(path)
    t = next(t for t in r.tensors if t.name == name)
    return dequantize(t.data, t.tensor_type).astype(np.float64).reshape(-1)
a, b = tensor(src), tensor(out)
d = a - b
print(json.dumps({"rms": float(np.sqrt(np.mean(d * d))),
                  "relative_rms": float(np.sqrt(np.sum(d * d) / np.sum(a * a))),
                  "max": float(np.max(np.abs(d)))}))
"#;

#[test]
fn quantize_json_errors_match_numpy() {
    if !common::parity_enabled("report_parity::quantize_json_errors_match_numpy") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (src, out) = (tmp.path().join("in.gguf"), tmp.path().join("out.gguf"));
    write_model(&src);
    let o = Command::new(env!("CARGO_BIN_EXE_ggufkit"))
        .args(["quantize".as_ref(), src.as_os_str(), out.as_os_str(), "Q4_0".as_ref(), "--json".as_ref()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let tensors = report["tensors"].as_array().unwrap();
    let up = tensors.iter().find(|t| t["name"] == "blk.0.ffn_up.weight").unwrap();
    assert_eq!(up["type"], "Q4_0");
    // The copied norm has no error.
    let norm = tensors.iter().find(|t| t["name"] == "blk.0.attn_norm.weight").unwrap();
    assert_eq!(norm["error"]["max"], 0.0);

    let script = tmp.path().join("err.py");
    std::fs::write(&script, NUMPY).unwrap();
    let np = common::run_ref_python(&script, &[src.as_os_str(), out.as_os_str(), "blk.0.ffn_up.weight".as_ref()]);
    let np: serde_json::Value = serde_json::from_str(np.trim()).unwrap();
    for key in ["rms", "relative_rms", "max"] {
        let (ours, theirs) = (up["error"][key].as_f64().unwrap(), np[key].as_f64().unwrap());
        assert!(theirs > 0.0, "{key}: {np}");
        assert!((ours - theirs).abs() <= 1e-9 * theirs, "{key}: ours {ours}, numpy {theirs}");
    }
}
