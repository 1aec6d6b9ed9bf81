//! `convert` against the reference implementations, on fixture models made by
//! scripts/gen_fixtures.py (real tokenizers rebuilt from llama.cpp's vocab
//! GGUFs, random weights):
//!
//! * logits: llama.cpp (llama-cpp-python, logits_all) running our GGUF vs an
//!   independent float64 numpy forward pass over the HF weights;
//! * tokenization: llama.cpp (vocab_only) on our GGUF vs the `tokenizers`
//!   package on tokenizer.json and `sentencepiece` on tokenizer.model;
//! * bytes: our GGUF vs the one llama.cpp's own convert_hf_to_gguf.py writes
//!   for the same directory (run with the numpy-backed torch/transformers
//!   stand-ins in tests/parity/convert_ref_stubs, since the reference
//!   environment has no PyTorch).
//!
//! Needs the reference environment (scripts/ref-env.sh) and llama.cpp's source
//! (scripts/ref-src.sh); both are built on first use.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use ggufkit::convert::{convert_dir, ConvertOptions, OutType};
use ggufkit::progress::CollectWarnings;
use serde_json::Value;

mod common;

struct Env {
    py: PathBuf,
    src: PathBuf,
    fixtures: PathBuf,
}

fn repo() -> PathBuf {
    common::repo_root().to_path_buf()
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| Env {
        py: common::ref_python().to_path_buf(),
        src: common::ref_src().to_path_buf(),
        fixtures: common::fixtures_dir().to_path_buf(),
    })
}

fn ours(dir: &Path, fixture: &str, outtype: &str) -> PathBuf {
    let e = env();
    let out = dir.join(format!("{fixture}-{outtype}.gguf"));
    let opts = ConvertOptions { outtype: outtype.parse().unwrap(), ..Default::default() };
    let w = CollectWarnings::default();
    convert_dir(e.fixtures.join(fixture), &out, &opts, &w).unwrap_or_else(|err| panic!("convert {fixture}: {err}"));
    out
}

fn check(args: &[&str]) -> Value {
    let e = env();
    let out = Command::new(&e.py).arg(repo().join("tests/parity/convert_check.py")).args(args).output().unwrap();
    assert!(out.status.success(), "convert_check.py {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("bad JSON {e}: {stdout}"))
}

const ALL: [&str; 7] = [
    "qwen2-bf16-tied",
    "qwen2.5-coder-bf16-sharded",
    "qwen2-f32",
    "qwen3-f16-tied",
    "llama3-bf16-sharded",
    "llama2-spm-f32",
    "mistral-spm-f16",
];

/// F32 output: llama.cpp's logits within 1e-3 of the float64 reference.
/// 16-bit output (auto: the source's BF16/F16): within 1% of the largest |logit|
/// (llama.cpp then also rounds activations to 16 bits in its matmuls).
#[test]
fn logits_match_float64_reference() {
    if !common::parity_enabled("convert_parity::logits_match_float64_reference") {
        return;
    }
    let scratch = common::Scratch::new("convert-logits");
    let mut report = Vec::new();
    for f in ALL {
        for outtype in ["f32", "auto"] {
            let gguf = ours(scratch.path(), f, outtype);
            let fx = env().fixtures.join(f);
            let r = check(&["logits", fx.to_str().unwrap(), gguf.to_str().unwrap()]);
            for p in r["prompts"].as_array().unwrap() {
                let diff = p["max_abs_diff"].as_f64().unwrap();
                let maxl = p["max_abs_logit"].as_f64().unwrap();
                let bound = if outtype == "f32" { 1e-3 } else { 0.01 * maxl.max(1.0) };
                report.push(format!(
                    "{f} {outtype}: {} tokens, max |diff| {diff:.3e} (max |logit| {maxl:.1})",
                    p["n_tokens"]
                ));
                assert!(diff < bound, "{f} {outtype}: logits differ by {diff} (bound {bound})\n{r}");
                if outtype == "f32" {
                    assert_eq!(p["argmax_agree"].as_f64(), Some(1.0), "{f}: argmax differs");
                }
            }
            let _ = std::fs::remove_file(&gguf);
        }
    }
    eprintln!("{}", report.join("\n"));
}

/// llama.cpp tokenizes like the reference tokenizers on our GGUF. Differences
/// that are llama.cpp's own (no NFC normalizer; "</s>" promoted to an EOG
/// control token) are classified by the check script and reported, not failed.
#[test]
fn tokenization_matches_reference_tokenizers() {
    if !common::parity_enabled("convert_parity::tokenization_matches_reference_tokenizers") {
        return;
    }
    let scratch = common::Scratch::new("convert-tokenization");
    let cases = [
        ("qwen2-bf16-tied", "qwen2"),
        ("llama3-bf16-sharded", "llama-bpe"),
        ("llama2-spm-f32", "llama-spm"),
        ("mistral-spm-f16", "llama-spm"),
    ];
    for (f, vocab) in cases {
        let gguf = ours(scratch.path(), f, "auto");
        let fx = env().fixtures.join(f);
        let r = check(&["tokenize", fx.to_str().unwrap(), gguf.to_str().unwrap(), env().src.to_str().unwrap(), vocab]);
        let n = r["cases"].as_u64().unwrap();
        let known = r["known_llama_cpp_differences"].as_array().map_or(0, Vec::len);
        eprintln!("{f}: {n} cases vs {}, {known} known llama.cpp differences", r["references"]);
        assert!(n >= 60, "{f}: too few cases");
        assert!(r["mismatches"].as_array().unwrap().is_empty(), "{f}: tokenization differs:\n{r:#}");
    }
}

fn reference(dir: &Path, fixture: &str, outtype: &str) -> PathBuf {
    let e = env();
    let out = dir.join(format!("{fixture}-{outtype}.ref.gguf"));
    let res = Command::new(&e.py)
        .arg(e.src.join("convert_hf_to_gguf.py"))
        .arg(e.fixtures.join(fixture))
        .args(["--outfile", out.to_str().unwrap(), "--outtype", outtype, "--no-lazy"])
        .env("PYTHONPATH", repo().join("tests/parity/convert_ref_stubs"))
        .output()
        .unwrap();
    assert!(res.status.success(), "convert_hf_to_gguf.py {fixture} failed:\n{}", String::from_utf8_lossy(&res.stderr));
    out
}

fn describe_difference(a: &Path, b: &Path) -> String {
    let da = check(&["dump", a.to_str().unwrap()]);
    let db = check(&["dump", b.to_str().unwrap()]);
    let mut out = Vec::new();
    let ka: Vec<&Value> = da["kv"].as_array().unwrap().iter().collect();
    let kb: Vec<&Value> = db["kv"].as_array().unwrap().iter().collect();
    let names = |v: &[&Value]| v.iter().map(|x| x[0].as_str().unwrap().to_string()).collect::<Vec<_>>();
    if names(&ka) != names(&kb) {
        out.push(format!("key order:\n ref  {:?}\n ours {:?}", names(&ka), names(&kb)));
    }
    for x in &ka {
        if let Some(y) = kb.iter().find(|y| y[0] == x[0]) {
            if x != y {
                let s = |v: &Value| v.to_string().chars().take(200).collect::<String>();
                out.push(format!("{}: ref {} / ours {}", x[0], s(x), s(y)));
            }
        }
    }
    if da["tensors"] != db["tensors"] {
        out.push(format!("tensors:\n ref  {}\n ours {}", da["tensors"], db["tensors"]));
    }
    if out.is_empty() {
        out.push("metadata and tensor infos equal; tensor data differs".into());
    }
    out.join("\n")
}

/// Byte-for-byte the file convert_hf_to_gguf.py writes: same keys, types,
/// values, key order, tensor names/shapes/types/order and data.
#[test]
fn identical_to_convert_hf_to_gguf() {
    if !common::parity_enabled("convert_parity::identical_to_convert_hf_to_gguf") {
        return;
    }
    let mut runs: Vec<(&str, &str)> = ALL.iter().map(|f| (*f, "auto")).collect();
    runs.extend([
        ("qwen2-f32", "f32"),
        ("llama2-spm-f32", "bf16"),
        ("qwen2.5-coder-bf16-sharded", "q8_0"),
        ("llama3-bf16-sharded", "f32"),
        ("qwen3-f16-tied", "f16"),
    ]);
    let scratch = common::Scratch::new("convert-identical");
    let mut failures = Vec::new();
    for (f, t) in runs {
        let a = reference(scratch.path(), f, t);
        let b = ours(scratch.path(), f, t);
        let same = std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap();
        eprintln!("{f} --outtype {t}: {}", if same { "identical" } else { "DIFFERENT" });
        if same {
            let _ = (std::fs::remove_file(&a), std::fs::remove_file(&b));
        } else {
            failures.push(format!("{f} {t}:\n{}", describe_difference(&a, &b)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // The fixtures exercise the side files: chat_template.jinja (mistral),
    // model cards (qwen2.5-coder, llama3).
    let g = ggufkit::gguf::GgufFile::open(ours(scratch.path(), "mistral-spm-f16", "auto")).unwrap();
    assert!(g.header.metadata.get_str("tokenizer.chat_template").is_some_and(|t| t.contains("[INST]")));
    let g = ggufkit::gguf::GgufFile::open(ours(scratch.path(), "qwen2.5-coder-bf16-sharded", "auto")).unwrap();
    assert_eq!(g.header.metadata.get_str("general.license"), Some("apache-2.0"));
    assert_eq!(g.header.metadata.get_str("general.base_model.0.organization"), Some("Qwen"));
}

#[test]
fn outtype_parsing() {
    assert_eq!("BF16".parse::<OutType>().unwrap(), OutType::BF16);
    assert!("q4_k".parse::<OutType>().is_err());
}

/// formats/pretokenizers.json is llama.cpp's table (conversion/base.py) as pinned.
#[test]
fn pretokenizer_table_in_sync_with_llama_cpp() {
    if !common::parity_enabled("convert_parity::pretokenizer_table_in_sync_with_llama_cpp") {
        return;
    }
    let e = env();
    let table = repo().join("formats/pretokenizers.json");
    let r = check(&["pretok", e.src.to_str().unwrap(), table.to_str().unwrap()]);
    assert_eq!(r["chktxt_equal"], true, "{r}");
    assert_eq!(r["table_equal"], true, "{r}");
    assert_eq!(r["n_reference"], r["n_if"], "every `if chkhsh` entry extracted: {r}");
}
