//! The forward pass and `ggufkit eval` against llama.cpp:
//!
//! * logits: llama.cpp (llama-cpp-python, logits_all, f32 KV cache) on F32,
//!   F16 (and BF16) GGUFs of every fixture architecture vs our forward pass;
//!   argmax everywhere, mean KLD(llama.cpp ‖ ours) < 1e-5 for F32;
//! * PPL of Q8_0 and Q4_K_M models within 0.5% of `llama-perplexity`'s, mean
//!   KLD against the F32 model within 10% of `llama-perplexity --kl-divergence`;
//! * the user's own check: `eval model-F32.gguf --ref HF_DIR` ≈ 0, F16 ≲ 1e-5.
//!
//! Fixtures: scripts/gen_fixtures.py (64-wide models of each architecture) and
//! scripts/gen_eval_fixture.py (a 256-wide llama so that Q4_K_M uses K-quants);
//! the text is llama.cpp's README.md. Needs the reference environment.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use ggufkit::infer::source::ModelInput;
use ggufkit::infer::ForwardOptions;
use ggufkit::progress::NoProgress;
use serde_json::Value;

mod common;

const CTX: usize = 128;
const CHUNKS: usize = 4;

fn out_dir() -> PathBuf {
    common::cache_dir("eval-parity")
}

fn os(s: &str) -> &std::ffi::OsStr {
    s.as_ref()
}

/// The 256-wide llama fixture (cached by the generators' hash).
pub fn eval_fixture() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for f in ["scripts/gen_eval_fixture.py", "scripts/gen_fixtures.py"] {
            h.update(std::fs::read(common::repo_root().join(f)).unwrap());
        }
        let key: String = h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("eval-fixture-{key}"));
        let out = common::run_ref_python(
            &common::repo_root().join("scripts/gen_eval_fixture.py"),
            &[os("--llama-src"), common::ref_src().as_os_str(), os("--out"), dir.as_os_str()],
        );
        PathBuf::from(out.lines().last().unwrap().trim())
    })
}

/// `ggufkit convert DIR --outtype T` (once per test binary).
fn converted(dir: &Path, outtype: &str) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let out = out_dir().join(format!("{name}-{outtype}.gguf"));
    if !out.exists() {
        common::ggufkit_ok(&[os("convert"), dir.as_os_str(), out.as_os_str(), os("--outtype"), os(outtype)]);
    }
    out
}

/// `ggufkit quantize F32.gguf OUT TYPE` (byte-identical to llama-quantize).
fn quantized(f32_gguf: &Path, ty: &str) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let out = out_dir().join(format!("{}-{ty}.gguf", f32_gguf.file_stem().unwrap().to_string_lossy()));
    if !out.exists() {
        common::ggufkit_ok(&[os("quantize"), f32_gguf.as_os_str(), out.as_os_str(), os(ty), os("--quiet")]);
    }
    out
}

fn text() -> PathBuf {
    common::ref_src().join("README.md")
}

fn eval_ref_py() -> PathBuf {
    common::repo_root().join("tests/parity/eval_ref.py")
}

/// The text's token ids as llama.cpp's tools get them, as a JSON file.
fn token_ids(gguf: &Path) -> Vec<u32> {
    let out = out_dir().join(format!("{}.ids.json", gguf.file_stem().unwrap().to_string_lossy()));
    common::run_ref_python(&eval_ref_py(), &[os("tokenize"), gguf.as_os_str(), text().as_os_str(), out.as_os_str()]);
    serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap()
}

fn llama_logits(gguf: &Path, ids: &[u32]) -> (Vec<f32>, usize) {
    let stem = gguf.file_stem().unwrap().to_string_lossy().into_owned();
    let ids_path = out_dir().join(format!("{stem}.logit-ids.json"));
    std::fs::write(&ids_path, serde_json::to_string(ids).unwrap()).unwrap();
    let out = out_dir().join(format!("{stem}.logits.f32"));
    let nv: usize = common::run_ref_python(
        &eval_ref_py(),
        &[os("logits"), gguf.as_os_str(), ids_path.as_os_str(), out.as_os_str()],
    )
    .trim()
    .parse()
    .unwrap();
    let bytes = std::fs::read(&out).unwrap();
    (bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(), nv)
}

fn our_logits(model: &Path, ids: &[u32]) -> Vec<f32> {
    let m = ModelInput::open(model, &[], &NoProgress).unwrap();
    m.with_model(ForwardOptions { kv_f16: false }, |m| m.forward(ids, 0, None)).unwrap()
}

fn log_softmax(x: &[f32]) -> Vec<f64> {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = x.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
    x.iter().map(|&v| v as f64 - lse).collect()
}

fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best
}

/// (argmax mismatches beyond near-ties, mean KLD(ref ‖ ours), max |Δlogit|).
fn compare(reference: &[f32], ours: &[f32], nv: usize) -> (usize, f64, f32) {
    assert_eq!(reference.len(), ours.len());
    let (mut mism, mut kld, mut maxd) = (0, 0f64, 0f32);
    let n = reference.len() / nv;
    for (a, b) in reference.chunks(nv).zip(ours.chunks(nv)) {
        // A flip between near-equal top logits (closer than 1e-3 in llama.cpp's
        // logits, random weights make such ties) is not counted.
        let (ia, ib) = (argmax(a), argmax(b));
        if ia != ib && a[ia] - a[ib] > 1e-3 {
            mism += 1;
        }
        let (la, lb) = (log_softmax(a), log_softmax(b));
        kld += la.iter().zip(&lb).map(|(&p, &q)| p.exp() * (p - q)).sum::<f64>();
        maxd = a.iter().zip(b).fold(maxd, |m, (x, y)| m.max((x - y).abs()));
    }
    (mism, kld / n as f64, maxd)
}

#[test]
fn logits_match_llama_cpp_for_every_architecture() {
    if !common::parity_enabled("eval_parity") {
        return;
    }
    let fx = common::fixtures_dir();
    let mut dirs: Vec<PathBuf> =
        ["qwen2-f32", "qwen2-bf16-tied", "qwen3-f16-tied", "llama3-bf16-sharded", "mistral-spm-f16", "llama2-spm-f32"]
            .iter()
            .map(|n| fx.join(n))
            .collect();
    dirs.push(eval_fixture().to_path_buf());
    // GGUFKIT_EVAL_ONLY=name[,name] / GGUFKIT_EVAL_TYPES=f16 narrow the run (for investigating).
    if let Ok(only) = std::env::var("GGUFKIT_EVAL_ONLY") {
        dirs.retain(|d| only.split(',').any(|n| d.ends_with(n)));
    }
    let types = std::env::var("GGUFKIT_EVAL_TYPES").unwrap_or_else(|_| "f32,f16,bf16".into());
    let mut failures = vec![];
    for dir in &dirs {
        for outtype in types.split(',') {
            let gguf = converted(dir, outtype);
            let ids = token_ids(&gguf);
            let ids = &ids[..ids.len().min(96)];
            let (reference, nv) = llama_logits(&gguf, ids);
            let ours = our_logits(&gguf, ids);
            let (mism, kld, maxd) = compare(&reference, &ours, nv);
            eprintln!(
                "{} {outtype}: {} tokens, argmax mismatches {mism}, mean KLD {kld:.3e}, max |Δlogit| {maxd:.3e}",
                dir.file_name().unwrap().to_string_lossy(),
                ids.len()
            );
            // The bar: argmax everywhere on F32 and F16, mean KLD < 1e-5 on F32.
            // BF16 is reported, held to the KLD bound only (a near-tie may flip).
            let kld_limit = if outtype == "f32" { 1e-5 } else { 1e-4 };
            if (mism != 0 && outtype != "bf16") || kld >= kld_limit {
                failures.push(format!("{} {outtype}: mism {mism} kld {kld:.3e}", dir.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

fn ggufkit_eval_json(args: &[&std::ffi::OsStr]) -> Value {
    let mut a = vec![os("eval")];
    a.extend_from_slice(args);
    a.extend_from_slice(&[os("--json"), os("--threads"), os("2")]);
    serde_json::from_str(&common::ggufkit_ok(&a).stdout).unwrap()
}

/// Runs llama-perplexity over `chunks` chunks until its output holds `until`
/// (at most 5 times). llama.cpp's logger is a leaked singleton written by a
/// worker thread (common/log.cpp: logs "may be lost if not flushed before the
/// program exits"): on a loaded machine the last lines of a run are often lost.
fn llama_perplexity(args: &[&std::ffi::OsStr], chunks: usize, until: &str) -> String {
    let tool = common::ref_tools().join("llama-perplexity");
    let ctx = CTX.to_string();
    let chunks = chunks.to_string();
    let mut all = String::new();
    for _ in 0..5 {
        let out = Command::new(&tool)
            .args(args)
            .args(["-c", &ctx, "-b", &ctx, "--chunks", &chunks, "-t", "2"])
            .output()
            .expect("run llama-perplexity");
        all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "llama-perplexity failed:\n{all}");
        if all.contains(until) {
            break;
        }
    }
    all
}

fn number_after(text: &str, label: &str) -> f64 {
    let i = text.find(label).unwrap_or_else(|| panic!("'{label}' not in:\n{text}"));
    text[i + label.len()..].split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn ppl_and_kld_of_quantized_models_match_llama_perplexity() {
    if !common::parity_enabled("eval_parity") {
        return;
    }
    let f32_gguf = converted(eval_fixture(), "f32");
    let base = out_dir().join("base.kld");
    let _ = std::fs::remove_file(&base);
    llama_perplexity(
        &[os("-m"), f32_gguf.as_os_str(), os("-f"), text().as_os_str(), os("--kl-divergence-base"), base.as_os_str()],
        CHUNKS,
        "",
    );
    let (c, n) = (CTX.to_string(), CHUNKS.to_string());
    let mut failures = vec![];
    for ty in ["Q8_0", "Q4_K_M"] {
        let q = quantized(&f32_gguf, ty);
        // The running PPL printed after chunk CHUNKS of a run of CHUNKS + 1 (the
        // same number as a CHUNKS run's final estimate) is flushed while the
        // last chunk computes, so it is not lost with the final lines.
        let after = format!("[{CHUNKS}]");
        let ppl_text = llama_perplexity(&[os("-m"), q.as_os_str(), os("-f"), text().as_os_str()], CHUNKS + 1, &after);
        let i = ppl_text.find(&after).unwrap_or_else(|| panic!("'{after}' not in:\n{ppl_text}"));
        let ref_ppl: f64 = ppl_text[i + after.len()..].split(',').next().unwrap().parse().unwrap();
        let kld_text = llama_perplexity(
            &[os("-m"), q.as_os_str(), os("--kl-divergence-base"), base.as_os_str(), os("--kl-divergence")],
            CHUNKS,
            "Mean    KLD:",
        );
        let ref_kld = number_after(&kld_text, "Mean    KLD:");
        let ours = ggufkit_eval_json(&[
            q.as_os_str(),
            os("--text"),
            text().as_os_str(),
            os("--ref"),
            f32_gguf.as_os_str(),
            os("--ctx"),
            os(&c),
            os("--chunks"),
            os(&n),
        ]);
        let plain = ggufkit_eval_json(&[
            q.as_os_str(),
            os("--text"),
            text().as_os_str(),
            os("--ctx"),
            os(&c),
            os("--chunks"),
            os(&n),
        ]);
        let ppl = plain["ppl"].as_f64().unwrap();
        let kld = ours["kld"]["mean"].as_f64().unwrap();
        let dppl = (ppl / ref_ppl - 1.0).abs();
        let dkld = (kld / ref_kld - 1.0).abs();
        eprintln!(
            "{ty}: PPL ours {ppl:.4} llama.cpp {ref_ppl:.4} (rel {dppl:.2e}); mean KLD ours {kld:.6} llama.cpp {ref_kld:.6} (rel {dkld:.2e}); same top {:.4}",
            ours["same_top"].as_f64().unwrap()
        );
        if dppl > 0.005 || dkld > 0.10 {
            failures.push(format!("{ty}: ppl rel {dppl:.3e}, kld rel {dkld:.3e}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn gguf_against_its_own_hf_directory() {
    if !common::parity_enabled("eval_parity") {
        return;
    }
    let dir = eval_fixture();
    let (c, n) = (CTX.to_string(), CHUNKS.to_string());
    for (outtype, limit) in [("f32", 1e-6), ("f16", 2e-5)] {
        let gguf = converted(dir, outtype);
        let r = ggufkit_eval_json(&[
            gguf.as_os_str(),
            os("--text"),
            text().as_os_str(),
            os("--ref"),
            dir.as_os_str(),
            os("--ctx"),
            os(&c),
            os("--chunks"),
            os(&n),
        ]);
        let kld = r["kld"]["mean"].as_f64().unwrap();
        eprintln!("{outtype} GGUF vs HF dir: mean KLD {kld:.3e}, same top {}", r["same_top"]);
        assert!(kld < limit, "{outtype}: {kld}");
    }
}
