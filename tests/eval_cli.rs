//! `ggufkit eval` and `ggufkit imatrix` on bad input: each case is a clear
//! error and exit 2. Hermetic: the bundled tiny model (examples/tiny-mistral,
//! converted by the binary) and small GGUFs written here.

use std::path::{Path, PathBuf};

use ggufkit::gguf::{GgmlType, GgufWriter, Metadata, TensorSpec, Value};

mod common;

fn os(s: &str) -> &std::ffi::OsStr {
    s.as_ref()
}

fn dir() -> PathBuf {
    common::run_dir("eval-cli")
}

/// examples/tiny-mistral as an F32 GGUF (real SentencePiece vocabulary).
fn tiny() -> PathBuf {
    let out = dir().join("tiny-mistral-f32.gguf");
    if !out.exists() {
        let src = common::repo_root().join("examples/tiny-mistral");
        common::ggufkit_ok(&[os("convert"), src.as_os_str(), out.as_os_str(), os("--outtype"), os("f32")]);
    }
    out
}

/// A one-block llama-shaped GGUF with pseudo-random weights, no tokenizer.
fn synthetic(name: &str, arch: &str, vocab: u64, nan_in_output: bool) -> PathBuf {
    let path = dir().join(name);
    let mut md = Metadata::new();
    md.push("general.architecture", Value::string(arch));
    md.push(format!("{arch}.embedding_length"), Value::U32(8));
    md.push(format!("{arch}.block_count"), Value::U32(1));
    md.push(format!("{arch}.attention.head_count"), Value::U32(2));
    md.push(format!("{arch}.attention.head_count_kv"), Value::U32(1));
    md.push(format!("{arch}.feed_forward_length"), Value::U32(16));
    md.push(format!("{arch}.attention.layer_norm_rms_epsilon"), Value::F32(1e-5));
    let tensors: Vec<(&str, Vec<u64>)> = vec![
        ("token_embd.weight", vec![8, vocab]),
        ("output_norm.weight", vec![8]),
        ("output.weight", vec![8, vocab]),
        ("blk.0.attn_norm.weight", vec![8]),
        ("blk.0.attn_q.weight", vec![8, 8]),
        ("blk.0.attn_k.weight", vec![8, 4]),
        ("blk.0.attn_v.weight", vec![8, 4]),
        ("blk.0.attn_output.weight", vec![8, 8]),
        ("blk.0.ffn_norm.weight", vec![8]),
        ("blk.0.ffn_gate.weight", vec![8, 16]),
        ("blk.0.ffn_up.weight", vec![8, 16]),
        ("blk.0.ffn_down.weight", vec![16, 8]),
    ];
    let specs = tensors.iter().map(|(n, d)| TensorSpec::new(*n, d.clone(), GgmlType::F32)).collect();
    let file = std::fs::File::create(&path).unwrap();
    let mut w = GgufWriter::new(file, &path, &md, specs).unwrap();
    let mut seed = 1u32;
    for (name, dims) in &tensors {
        let n: u64 = dims.iter().product();
        let mut v: Vec<f32> = (0..n)
            .map(|_| {
                seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
                (seed >> 8) as f32 / (1 << 24) as f32 - 0.5
            })
            .collect();
        if name.ends_with("norm.weight") {
            v.iter_mut().for_each(|x| *x = 1.0);
        }
        if nan_in_output && *name == "output.weight" {
            v[3] = f32::NAN;
        }
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        w.write_data(&bytes).unwrap();
    }
    w.finish().unwrap();
    path
}

fn write(name: &str, text: &str) -> PathBuf {
    let p = dir().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn long_text() -> PathBuf {
    write("long.txt", &"The quick brown fox jumps over the lazy dog. ".repeat(40))
}

fn fails(args: &[&std::ffi::OsStr], needles: &[&str]) -> String {
    let r = common::ggufkit(args);
    assert_eq!(r.code, 2, "ggufkit {args:?}: exit {}\nstdout {}\nstderr {}", r.code, r.stdout, r.stderr);
    for n in needles {
        assert!(r.stderr.contains(n), "ggufkit {args:?}: '{n}' not in:\n{}", r.stderr);
    }
    r.stderr
}

#[test]
fn text_shorter_than_two_chunks() {
    let t = write("short.txt", "Hello world, this is short.");
    fails(
        &[os("eval"), tiny().as_os_str(), os("--text"), t.as_os_str(), os("--ctx"), os("64")],
        &["needs at least 128"],
    );
    let out = dir().join("short.imatrix.gguf");
    fails(
        &[
            os("imatrix"),
            tiny().as_os_str(),
            os("--text"),
            t.as_os_str(),
            os("--ctx"),
            os("64"),
            os("-o"),
            out.as_os_str(),
        ],
        &["needs at least 128"],
    );
    assert!(!out.exists());
}

#[test]
fn empty_text() {
    let t = write("empty.txt", "");
    fails(&[os("eval"), tiny().as_os_str(), os("--text"), t.as_os_str()], &["empty.txt", "empty"]);
}

#[test]
fn unsupported_architecture_is_named() {
    let m = dir().join("mamba.gguf");
    if !m.exists() {
        common::ggufkit_ok(&[
            os("edit"),
            tiny().as_os_str(),
            m.as_os_str(),
            os("--set"),
            os("general.architecture=str:mamba"),
            os("-q"),
        ]);
    }
    fails(
        &[os("eval"), m.as_os_str(), os("--text"), long_text().as_os_str(), os("--ctx"), os("16")],
        &["'mamba'", "not supported"],
    );
}

#[test]
fn model_and_reference_with_different_vocabularies() {
    let r = synthetic("vocab100.gguf", "llama", 100, false);
    fails(
        &[os("eval"), tiny().as_os_str(), os("--ref"), r.as_os_str(), os("--text"), long_text().as_os_str()],
        &["different vocabularies", "32002", "100"],
    );
}

#[test]
fn nan_logits_name_chunk_and_token() {
    let m = synthetic("nan.gguf", "llama", 50, true);
    let ids = write("ids.json", &format!("{:?}", (0..40u32).map(|i| i % 50).collect::<Vec<_>>()));
    fails(
        &[os("eval"), m.as_os_str(), os("--tokens"), ids.as_os_str(), os("--ctx"), os("16")],
        &["non-finite logit", "chunk 1", "token position 8"],
    );
}

#[test]
fn eval_json_has_exactly_the_documented_keys() {
    let m = synthetic("ok.gguf", "llama", 50, false);
    let ids = write("ids2.json", &format!("{:?}", (0..64u32).map(|i| (i * 7) % 50).collect::<Vec<_>>()));
    let base = [os("eval"), m.as_os_str(), os("--tokens"), ids.as_os_str(), os("--ctx"), os("16"), os("--json")];
    let r = common::ggufkit_ok(&base);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(|s| s.as_str()).collect();
    assert_eq!(keys, ["tokens", "chunks", "ctx", "ppl", "ppl_stderr"]);
    assert_eq!((v["tokens"].as_u64(), v["chunks"].as_u64()), (Some(4 * 7), Some(4)));
    let mut with_ref = base.to_vec();
    with_ref.extend([os("--ref"), m.as_os_str()]);
    let v: serde_json::Value = serde_json::from_str(&common::ggufkit_ok(&with_ref).stdout).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(|s| s.as_str()).collect();
    assert_eq!(keys, ["tokens", "chunks", "ctx", "ppl", "ppl_stderr", "kld", "same_top", "rms_dp", "ppl_ratio"]);
    let kld: Vec<&str> = v["kld"].as_object().unwrap().keys().map(|s| s.as_str()).collect();
    assert_eq!(kld, ["mean", "stderr", "median", "p99", "max"]);
    // A model against itself: no divergence, same top token everywhere.
    assert!(v["kld"]["mean"].as_f64().unwrap().abs() < 1e-5, "{v}");
    assert_eq!(v["same_top"].as_f64(), Some(1.0));
    assert!((v["ppl_ratio"].as_f64().unwrap() - 1.0).abs() < 1e-3, "{v}");
}

#[test]
fn imatrix_writes_a_file_quantize_reads() {
    let m = synthetic("imat.gguf", "llama", 50, false);
    let ids = write("ids3.json", &format!("{:?}", (0..64u32).map(|i| (i * 3) % 50).collect::<Vec<_>>()));
    let out = dir().join("imat.imatrix.gguf");
    common::ggufkit_ok(&[
        os("imatrix"),
        m.as_os_str(),
        os("--tokens"),
        ids.as_os_str(),
        os("--ctx"),
        os("16"),
        os("-o"),
        out.as_os_str(),
        os("-q"),
    ]);
    let f = ggufkit::imatrix::parse_gguf(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!((f.chunk_count, f.chunk_size), (4, 16));
    assert_eq!(f.entries.len(), 7);
    assert!(f.entries.values().all(|e| e.counts == vec![64]));
    let q = dir().join("imat-q4.gguf");
    let _ = Path::new(&q);
    common::ggufkit_ok(&[
        os("quantize"),
        os("--imatrix"),
        out.as_os_str(),
        m.as_os_str(),
        q.as_os_str(),
        os("Q4_0"),
        os("-q"),
    ]);
}
