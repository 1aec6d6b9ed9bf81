//! The forward pass of gemma2, gemma3 and phi3 against llama.cpp, on the tiny
//! random-weight models of scripts/gen_arch_fixtures.py (real configs of
//! Gemma-2-2B, Gemma-3-1B, Gemma-3-4B's text model, Phi-3.5-mini and Phi-4,
//! shrunk; sliding window 8 in the Gemma fixtures, so the 64-token sequences
//! cross it):
//!
//! * logits: llama-cpp-python (logits_all, f32 KV cache, no flash attention)
//!   on F32 and F16 conversions vs our forward pass: argmax everywhere, mean
//!   KLD(llama.cpp ‖ ours) < 1e-5 on F32 (1e-4 on F16), max |Δlogit| reported;
//! * `ggufkit eval` PPL within 0.5% of `llama-perplexity` (F32 model, its
//!   default F16 KV cache on both sides).
//!
//! Needs the reference environment; runs under scripts/test.sh (GGUFKIT_PARITY=1).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

mod common;
use common::logits::{compare, llama_logits, our_logits, text, token_ids};

/// Fixture, output types for the logit comparison.
const RUNS: &[(&str, &[&str])] = &[
    ("gemma2-2b-f32", &["f32", "f16"]),
    ("gemma3-1b-f32", &["f32", "f16"]),
    ("gemma3-4b-mm-bf16", &["f32", "f16"]),
    ("phi3.5-mini-f32", &["f32", "f16"]),
    ("phi4-bf16-sharded", &["f32", "f16"]),
];

/// Tokens per logit comparison (the Gemma fixtures' window is 8).
const N_TOKENS: usize = 64;
/// `eval` / `llama-perplexity` context and chunks.
const CTX: usize = 64;
const CHUNKS: usize = 3;

fn os(s: &str) -> &std::ffi::OsStr {
    s.as_ref()
}

fn out_dir() -> PathBuf {
    common::run_dir("arch-forward")
}

/// The fixtures of scripts/gen_arch_fixtures.py, in the directory
/// tests/arch_parity.rs uses (same key: the generator scripts' hash).
fn fixtures() -> &'static Path {
    static NAMES: OnceLock<Vec<&'static str>> = OnceLock::new();
    common::arch_fixtures(NAMES.get_or_init(|| RUNS.iter().map(|(f, _)| *f).collect()))
}

fn converted(fixture: &str, outtype: &str) -> PathBuf {
    let out = out_dir().join(format!("{fixture}-{outtype}.gguf"));
    if !out.exists() {
        let dir = fixtures().join(fixture);
        common::ggufkit_ok(&[os("convert"), dir.as_os_str(), out.as_os_str(), os("--outtype"), os(outtype)]);
    }
    out
}

#[test]
fn logits_match_llama_cpp() {
    if !common::parity_enabled("arch_forward") {
        return;
    }
    let mut failures = vec![];
    for (fixture, types) in RUNS {
        for outtype in *types {
            let gguf = converted(fixture, outtype);
            let ids = token_ids(&gguf, &out_dir());
            assert!(ids.len() >= N_TOKENS, "{fixture}: only {} tokens", ids.len());
            let ids = &ids[..N_TOKENS];
            let (reference, nv) = llama_logits(&gguf, ids, &out_dir());
            let ours = our_logits(&gguf, ids);
            if std::env::var_os("GGUFKIT_ARCH_FORWARD_DUMP").is_some() {
                let b: Vec<u8> = ours.iter().flat_map(|v| v.to_le_bytes()).collect();
                std::fs::write(out_dir().join(format!("{fixture}-{outtype}.ours.f32")), b).unwrap();
            }
            let d = compare(&reference, &ours, nv, 0.0);
            let (mism, kld, maxd, maxl) = (d.mismatches, d.kld, d.max_diff, d.max_logit);
            eprintln!(
                "{fixture} {outtype}: {N_TOKENS} tokens, argmax mismatches {mism}, mean KLD {kld:.3e}, \
                 max |Δlogit| {maxd:.3e} (max |logit| {maxl:.2})"
            );
            let kld_limit = if *outtype == "f32" { 1e-5 } else { 1e-4 };
            if mism != 0 || kld.is_nan() || kld >= kld_limit {
                failures.push(format!("{fixture} {outtype}: argmax mismatches {mism}, mean KLD {kld:.3e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// `llama-perplexity` on the F32 model; its log.
fn llama_perplexity(gguf: &Path, text: &Path, ctx: &str, chunks: &str) -> String {
    common::llama_tool_log(
        "llama-perplexity",
        &[
            os("-m"),
            gguf.as_os_str(),
            os("-f"),
            text.as_os_str(),
            os("-c"),
            os(ctx),
            os("-b"),
            os(ctx),
            os("--chunks"),
            os(chunks),
            os("-t"),
            os("2"),
        ],
        "Final estimate: PPL =",
    )
}

#[test]
fn eval_ppl_matches_llama_perplexity() {
    if !common::parity_enabled("arch_forward") {
        return;
    }
    let (ctx, chunks) = (CTX.to_string(), CHUNKS.to_string());
    let mut failures = vec![];
    for (fixture, _) in RUNS {
        let gguf = converted(fixture, "f32");
        let all = llama_perplexity(&gguf, &text(), &ctx, &chunks);
        let ref_ppl = common::number_after(&all, "Final estimate: PPL =");
        let run = common::ggufkit_ok(&[
            os("eval"),
            gguf.as_os_str(),
            os("--text"),
            text().as_os_str(),
            os("--ctx"),
            os(&ctx),
            os("--chunks"),
            os(&chunks),
            os("--json"),
            os("--threads"),
            os("2"),
        ]);
        let r: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        let ppl = r["ppl"].as_f64().unwrap();
        let rel = (ppl / ref_ppl - 1.0).abs();
        eprintln!("{fixture} f32: PPL ours {ppl:.4} llama-perplexity {ref_ppl:.4} (rel {rel:.2e})");
        if rel.is_nan() || rel >= 0.005 {
            failures.push(format!("{fixture}: PPL {ppl} vs {ref_ppl}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// `ggufkit imatrix` against `llama-imatrix` (fused `attn_qkv` / `ffn_up` of
/// Phi-3 and Gemma's GEGLU feed the same matrices): the same entries and
/// counts, `in_sum2` within 1e-3 relative.
#[test]
fn imatrix_matches_llama_imatrix() {
    if !common::parity_enabled("arch_forward") {
        return;
    }
    for fixture in ["gemma3-1b-f32", "phi3.5-mini-f32"] {
        let gguf = converted(fixture, "f32");
        let (theirs, ours) = common::imatrix::both(&gguf, &text(), CTX, CHUNKS, &out_dir(), fixture);
        let (a, worst) = common::imatrix::compare(&theirs, &ours);
        eprintln!(
            "{fixture}: {} imatrix entries; max relative in_sum2 difference {:.3e} ({})",
            a.entries.len(),
            worst.0,
            worst.1
        );
        assert!(worst.0 < 1e-3, "{fixture}: in_sum2 differs by {:.3e} in {}", worst.0, worst.1);
    }
}

/// Our f16 GELU table (Gemma's GEGLU) equals llama.cpp's `ggml_table_gelu_f16`
/// entry for entry (read from the reference venv's libggml-cpu).
#[test]
fn gelu_table_matches_libggml_cpu() {
    if !common::parity_enabled("arch_forward") {
        return;
    }
    let out = out_dir().join("ggml_gelu_table.bin");
    common::run_ref_python(&common::repo_root().join("tests/parity/ggml_gelu_table.py"), &[out.as_os_str()]);
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(bytes.len(), 2 * 65536);
    let ours = ggufkit::infer::ops::gelu_table();
    let differ: Vec<usize> = (0..65536)
        .filter(|&i| {
            let g = half::f16::from_bits(u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]])).to_f32();
            !(g == ours[i] || (g.is_nan() && ours[i].is_nan()))
        })
        .collect();
    assert!(differ.is_empty(), "{} entries differ, first at f16 bits {:#06x}", differ.len(), differ[0]);
}

/// Phi-3.5's longrope past its original context (4096): at ctx 4352 llama.cpp
/// divides by `rope_factors_long` (the short factors give a PPL 1% higher on
/// this model); `eval` must agree within 1e-4. The text is llama.cpp's README
/// and three of its docs (≥ 2 chunks of 4352 tokens).
#[test]
fn phi3_long_rope_factors_past_the_original_context() {
    if !common::parity_enabled("arch_forward") {
        return;
    }
    let text = out_dir().join("long.txt");
    let mut all = Vec::new();
    for f in ["README.md", "docs/build.md", "docs/docker.md", "docs/install.md"] {
        all.extend(std::fs::read(common::ref_src().join(f)).unwrap());
    }
    std::fs::write(&text, all).unwrap();
    let gguf = converted("phi3.5-mini-f32", "f32");
    let log = llama_perplexity(&gguf, &text, "4352", "1");
    let ref_ppl = common::number_after(&log, "Final estimate: PPL =");
    let run = common::ggufkit_ok(&[
        os("eval"),
        gguf.as_os_str(),
        os("--text"),
        text.as_os_str(),
        os("--ctx"),
        os("4352"),
        os("--chunks"),
        os("1"),
        os("--json"),
        os("--threads"),
        os("2"),
    ]);
    let r: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let ppl = r["ppl"].as_f64().unwrap();
    let rel = (ppl / ref_ppl - 1.0).abs();
    eprintln!(
        "phi3.5-mini-f32 ctx 4352 (long factors): PPL ours {ppl:.4} llama-perplexity {ref_ppl:.4} (rel {rel:.2e})"
    );
    assert!(rel < 1e-4, "PPL {ppl} vs {ref_ppl}");
}
