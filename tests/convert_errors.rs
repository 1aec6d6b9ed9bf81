//! Bad input to `convert`: every case must fail with an error naming the file
//! and the tensor/key, and leave nothing at the output path. The models are
//! tiny llama-shaped directories built here (SentencePiece or BPE tokenizer).

use std::fs;
use std::path::{Path, PathBuf};

mod common;

use ggufkit::convert::{convert_dir, ConvertOptions, OutType};
use ggufkit::progress::CollectWarnings;

const H: usize = 8;
const FF: usize = 16;
const V: usize = 8;

/// The SentencePiece vocabulary of the tiny models (V pieces).
const SPM_PIECES: [(&str, u64); V] =
    [("<unk>", 2), ("<s>", 3), ("</s>", 3), ("▁a", 1), ("▁b", 1), ("a", 1), ("b", 1), ("<0x0A>", 6)];

fn tensors() -> Vec<(String, &'static str, Vec<usize>)> {
    let mut t = vec![
        ("model.embed_tokens.weight".to_string(), "F32", vec![V, H]),
        ("model.norm.weight".to_string(), "F32", vec![H]),
        ("lm_head.weight".to_string(), "F32", vec![V, H]),
    ];
    for b in 0..2 {
        let p = format!("model.layers.{b}.");
        t.push((p.clone() + "input_layernorm.weight", "F32", vec![H]));
        t.push((p.clone() + "post_attention_layernorm.weight", "F32", vec![H]));
        t.push((p.clone() + "self_attn.q_proj.weight", "F32", vec![H, H]));
        t.push((p.clone() + "self_attn.k_proj.weight", "F32", vec![H / 2, H]));
        t.push((p.clone() + "self_attn.v_proj.weight", "F32", vec![H / 2, H]));
        t.push((p.clone() + "self_attn.o_proj.weight", "F32", vec![H, H]));
        t.push((p.clone() + "mlp.gate_proj.weight", "F32", vec![FF, H]));
        t.push((p.clone() + "mlp.up_proj.weight", "F32", vec![FF, H]));
        t.push((p + "mlp.down_proj.weight", "F32", vec![H, FF]));
    }
    t
}

fn config() -> serde_json::Value {
    serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "hidden_size": H, "intermediate_size": FF,
        "num_attention_heads": 2, "num_key_value_heads": 1, "num_hidden_layers": 2, "vocab_size": V,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 64,
        "bos_token_id": 1, "eos_token_id": 2
    })
}

/// A valid model directory.
fn model(dir: &Path) -> PathBuf {
    let d = dir.join("Tiny-Llama-v0.1");
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join("config.json"), config().to_string()).unwrap();
    fs::write(d.join("tokenizer.model"), common::tiny::spm_model(&SPM_PIECES)).unwrap();
    common::tiny::write_safetensors(&d.join("model.safetensors"), &tensors());
    d
}

fn convert(d: &Path, out: &Path, opts: &ConvertOptions) -> Result<ggufkit::convert::ConvertSummary, String> {
    convert_dir(d, out, opts, &CollectWarnings::default()).map_err(|e| e.to_string())
}

/// Asserts conversion fails with a message containing all `needles`, and leaves no output.
fn fails(d: &Path, needles: &[&str]) {
    let out = d.parent().unwrap().join("out.gguf");
    let e = convert(d, &out, &ConvertOptions::default()).expect_err("conversion should fail");
    for n in needles {
        assert!(e.contains(n), "error {e:?} should mention {n:?}");
    }
    assert!(!out.exists(), "partial output left behind");
    let stray: Vec<_> = fs::read_dir(d.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(stray.is_empty(), "temporary files left behind: {stray:?}");
}

#[test]
fn tiny_model_converts() {
    let t = tempfile::tempdir().unwrap();
    let d = model(t.path());
    let out = t.path().join("ok.gguf");
    let s = convert(&d, &out, &ConvertOptions { outtype: OutType::F16, ..Default::default() }).unwrap();
    assert_eq!(s.gguf_architecture, "llama");
    assert_eq!(s.n_tensors, 3 + 2 * 9);
    let g = ggufkit::gguf::GgufFile::open(&out).unwrap();
    let md = &g.header.metadata;
    assert_eq!(md.get_str("general.name"), Some("Tiny Llama v0.1"));
    assert_eq!(md.get_str("general.basename"), Some("Tiny-Llama"));
    assert_eq!(md.get_str("general.version"), Some("v0.1"));
    assert_eq!(md.get_str("tokenizer.ggml.model"), Some("llama"));
    // transformers' LlamaConfig fills in head_dim = hidden_size / num_attention_heads
    assert_eq!(md.get_u64("llama.attention.key_length"), Some(4));
    assert_eq!(g.header.tensor("blk.0.attn_q.weight").unwrap().ty, ggufkit::gguf::GgmlType::F16);
    assert_eq!(g.header.tensor("blk.0.attn_norm.weight").unwrap().ty, ggufkit::gguf::GgmlType::F32);
}

#[test]
fn missing_or_malformed_config() {
    let t = tempfile::tempdir().unwrap();
    let d = model(t.path());
    fs::remove_file(d.join("config.json")).unwrap();
    fails(&d, &["config.json", "missing"]);
    fs::write(d.join("config.json"), "{\"architectures\": [").unwrap();
    fails(&d, &["config.json", "invalid JSON"]);
    fs::write(d.join("config.json"), "[]").unwrap();
    fails(&d, &["config.json", "not a JSON object"]);
    let mut c = config();
    c.as_object_mut().unwrap().remove("hidden_size");
    fs::write(d.join("config.json"), c.to_string()).unwrap();
    fails(&d, &["config.json", "hidden_size"]);
    let mut c = config();
    c["num_hidden_layers"] = serde_json::json!("two");
    fs::write(d.join("config.json"), c.to_string()).unwrap();
    fails(&d, &["config.json", "num_hidden_layers"]);
}

#[test]
fn unknown_architecture_lists_supported() {
    let t = tempfile::tempdir().unwrap();
    let d = model(t.path());
    let mut c = config();
    c["architectures"] = serde_json::json!(["GPTNeoXForCausalLM"]);
    fs::write(d.join("config.json"), c.to_string()).unwrap();
    fails(&d, &["GPTNeoXForCausalLM", "not supported", "LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"]);
}

#[test]
fn shape_mismatch_and_missing_tensor() {
    let t = tempfile::tempdir().unwrap();
    let d = model(t.path());
    let mut ts = tensors();
    ts[5].2 = vec![H, H + 1]; // blk.0 q_proj
    common::tiny::write_safetensors(&d.join("model.safetensors"), &ts);
    fails(&d, &["model.safetensors", "model.layers.0.self_attn.q_proj.weight", "shape"]);
    let mut ts = tensors();
    ts.retain(|t| t.0 != "model.layers.1.mlp.up_proj.weight");
    common::tiny::write_safetensors(&d.join("model.safetensors"), &ts);
    fails(&d, &["missing", "model.layers.1.mlp.up_proj.weight"]);
    let mut ts = tensors();
    ts.push(("model.layers.0.self_attn.mystery.weight".into(), "F32", vec![H]));
    common::tiny::write_safetensors(&d.join("model.safetensors"), &ts);
    fails(&d, &["cannot map", "model.layers.0.self_attn.mystery.weight"]);
    let mut ts = tensors();
    ts.push(("model.layers.7.input_layernorm.weight".into(), "F32", vec![H]));
    common::tiny::write_safetensors(&d.join("model.safetensors"), &ts);
    fails(&d, &["model.layers.7.input_layernorm.weight", "block 7"]);
}

#[test]
fn unsupported_dtypes() {
    let t = tempfile::tempdir().unwrap();
    let d = model(t.path());
    for dtype in ["I64", "F8_E4M3"] {
        let mut ts = tensors();
        ts[5].1 = dtype;
        common::tiny::write_safetensors(&d.join("model.safetensors"), &ts);
        fails(&d, &["model.safetensors", "model.layers.0.self_attn.q_proj.weight", dtype]);
    }
}

#[test]
fn shard_index_inconsistencies() {
    let t = tempfile::tempdir().unwrap();
    let d = model(t.path());
    fs::remove_file(d.join("model.safetensors")).unwrap();
    let ts = tensors();
    let (a, b) = ts.split_at(10);
    common::tiny::write_safetensors(&d.join("model-00001-of-00002.safetensors"), a);
    common::tiny::write_safetensors(&d.join("model-00002-of-00002.safetensors"), b);
    let mut map = serde_json::Map::new();
    for (n, _, _) in a {
        map.insert(n.clone(), "model-00001-of-00002.safetensors".into());
    }
    for (n, _, _) in b {
        map.insert(n.clone(), "model-00002-of-00002.safetensors".into());
    }
    let write_index = |m: &serde_json::Map<String, serde_json::Value>| {
        fs::write(
            d.join("model.safetensors.index.json"),
            serde_json::json!({"metadata": {}, "weight_map": m}).to_string(),
        )
        .unwrap()
    };
    write_index(&map);
    let out = t.path().join("sharded.gguf");
    convert(&d, &out, &ConvertOptions::default()).unwrap();
    fs::remove_file(&out).unwrap();

    // the index names a tensor that its shard does not hold
    let mut m2 = map.clone();
    m2.insert("model.layers.0.extra.weight".into(), "model-00002-of-00002.safetensors".into());
    write_index(&m2);
    fails(&d, &["model-00002-of-00002.safetensors", "model.layers.0.extra.weight"]);
    // a shard holds a tensor that the index does not name
    let mut m3 = map.clone();
    m3.remove(&b[0].0);
    write_index(&m3);
    fails(&d, &["model-00002-of-00002.safetensors", &b[0].0, "not named"]);
    // the index names a shard that does not exist
    let mut m4 = map.clone();
    m4.insert(b[0].0.clone(), "model-00003-of-00002.safetensors".into());
    write_index(&m4);
    fails(&d, &["model-00003-of-00002.safetensors", "missing shard"]);
    // a truncated shard
    write_index(&map);
    let p = d.join("model-00001-of-00002.safetensors");
    let bytes = fs::read(&p).unwrap();
    fs::write(&p, &bytes[..bytes.len() - 3]).unwrap();
    fails(&d, &["model-00001-of-00002.safetensors"]);
}

#[test]
fn tokenizer_problems() {
    let t = tempfile::tempdir().unwrap();
    let d = model(t.path());
    fs::remove_file(d.join("tokenizer.model")).unwrap();
    fails(&d, &["tokenizer.json", "missing"]);
    fs::write(d.join("tokenizer.model"), b"not a sentencepiece model at all").unwrap();
    fails(&d, &["tokenizer.model"]);
    fs::remove_file(d.join("tokenizer.model")).unwrap();

    // A byte-level BPE tokenizer.json whose pre-tokenizer llama.cpp does not know.
    let vocab: serde_json::Map<String, serde_json::Value> = ["a", "b", "c", "Ġ", "ab", "<|end|>", "d", "e"]
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), i.into()))
        .collect();
    let tj = serde_json::json!({
        "version": "1.0", "added_tokens": [{"id": 5, "content": "<|end|>", "special": true, "normalized": false,
                                            "single_word": false, "lstrip": false, "rstrip": false}],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null, "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "vocab": vocab, "merges": ["a b"]}
    });
    fs::write(d.join("tokenizer.json"), tj.to_string()).unwrap();
    let out = t.path().join("bpe.gguf");
    let e = convert(&d, &out, &ConvertOptions::default()).unwrap_err();
    assert!(e.contains("tokenizer.json") && e.contains("--vocab-pre") && e.contains("hash"), "{e}");
    let hash = ggufkit::convert::vocab::pretokenizer_hash(&d.join("tokenizer.json")).unwrap();
    assert!(e.contains(&hash), "{e} should name {hash}");
    assert!(!out.exists());
    let opts = ConvertOptions { vocab_pre: Some("gpt-2".into()), ..Default::default() };
    let s = convert(&d, &out, &opts).unwrap();
    assert_eq!((s.tokenizer_model.as_str(), s.tokenizer_pre.as_str()), ("gpt2", "gpt-2"));
    let g = ggufkit::gguf::GgufFile::open(&out).unwrap();
    let types = g.header.metadata.get("tokenizer.ggml.token_type").unwrap().as_array().unwrap();
    assert_eq!(types.values[5].as_i64(), Some(3), "special added token is CONTROL");
    assert_eq!(types.values[0].as_i64(), Some(1));

    // vocab_size smaller than the tokenizer
    let mut c = config();
    c["vocab_size"] = serde_json::json!(4);
    fs::write(d.join("config.json"), c.to_string()).unwrap();
    fails(&d, &["vocab_size"]);
}

#[test]
fn refuses_output_onto_input_and_non_directory() {
    let t = tempfile::tempdir().unwrap();
    let d = model(t.path());
    let st = d.join("model.safetensors");
    let before = fs::read(&st).unwrap();
    let e = convert(&d, &st, &ConvertOptions::default()).unwrap_err();
    assert!(e.contains("input"), "{e}");
    assert_eq!(fs::read(&st).unwrap(), before);
    let e = convert(&st, &t.path().join("x.gguf"), &ConvertOptions::default()).unwrap_err();
    assert!(e.contains("not a directory"), "{e}");
}

#[test]
fn cli_exit_codes_and_json() {
    let t = tempfile::tempdir().unwrap();
    let d = model(t.path());
    let out = t.path().join("cli.gguf");
    let bin = env!("CARGO_BIN_EXE_ggufkit");
    let r = std::process::Command::new(bin)
        .args(["convert", d.to_str().unwrap(), out.to_str().unwrap(), "--outtype", "bf16", "--threads", "2", "--json"])
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(0), "{}", String::from_utf8_lossy(&r.stderr));
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(v["outtype"], "BF16");
    assert_eq!(v["file_type"], 32);
    assert!(out.exists());
    let mut c = config();
    c["architectures"] = serde_json::json!(["BertModel"]);
    fs::write(d.join("config.json"), c.to_string()).unwrap();
    let bad = t.path().join("bad.gguf");
    let r =
        std::process::Command::new(bin).args(["convert", d.to_str().unwrap(), bad.to_str().unwrap()]).output().unwrap();
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("BertModel"));
    assert!(!bad.exists());
    let r = std::process::Command::new(bin)
        .args(["convert", d.to_str().unwrap(), bad.to_str().unwrap(), "--outtype", "q4_k"])
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(2));
}
