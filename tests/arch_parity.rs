//! `convert` of the issue-15 architectures (qwen3moe, gemma3, gemma2, phi3)
//! against llama.cpp's own convert_hf_to_gguf.py (run with the numpy-backed
//! torch/transformers stand-ins of tests/parity/convert_ref_stubs), byte for
//! byte, on the tiny random-weight models of scripts/gen_arch_fixtures.py:
//! real configs of Qwen3-30B-A3B, Qwen3-Coder-30B-A3B, Gemma-2-2B, Gemma-3-1B,
//! Gemma-3-4B (Gemma3ForConditionalGeneration), Phi-3.5-mini and Phi-4, shrunk.
//!
//! Also: llama.cpp's logits against a float64 numpy forward pass, and
//! `merge` of PEFT LoRA adapters on each architecture (Qwen3-MoE experts;
//! Gemma's tied embeddings; Gemma3ForConditionalGeneration in both
//! transformers module namings; Phi-3's fused projections) against PEFT's
//! formulas (tests/parity/arch_merge_check.py).
//!
//! Needs the reference environment (scripts/ref-env.sh) and llama.cpp's source
//! (scripts/ref-src.sh); runs under scripts/test.sh (GGUFKIT_PARITY=1).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use ggufkit::convert::{convert_dir, ConvertOptions};
use ggufkit::progress::CollectWarnings;

mod common;

/// The fixtures, built once per version of the generator scripts.
fn fixtures() -> &'static std::path::Path {
    common::arch_fixtures(&[])
}

fn ours(dir: &Path, fixture: &str, outtype: &str) -> PathBuf {
    let out = dir.join(format!("{fixture}-{outtype}.gguf"));
    let opts = ConvertOptions { outtype: outtype.parse().unwrap(), ..Default::default() };
    convert_dir(fixtures().join(fixture), &out, &opts, &CollectWarnings::default())
        .unwrap_or_else(|e| panic!("convert {fixture} --outtype {outtype}: {e}"));
    out
}

fn reference(dir: &Path, fixture: &str, outtype: &str) -> PathBuf {
    let out = dir.join(format!("{fixture}-{outtype}.ref.gguf"));
    let res = Command::new(common::ref_python())
        .arg(common::ref_src().join("convert_hf_to_gguf.py"))
        .arg(fixtures().join(fixture))
        .args(["--outfile", out.to_str().unwrap(), "--outtype", outtype, "--no-lazy"])
        .env("PYTHONPATH", common::repo_root().join("tests/parity/convert_ref_stubs"))
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "convert_hf_to_gguf.py {fixture} --outtype {outtype} failed:\n{}",
        String::from_utf8_lossy(&res.stderr)
    );
    out
}

const ALL_TYPES: [&str; 5] = ["f32", "f16", "bf16", "q8_0", "auto"];

/// Every output type on one fixture per architecture, the source type (auto)
/// and one more on the others.
const RUNS: &[(&str, &[&str])] = &[
    ("qwen3moe-30b-a3b-bf16", &ALL_TYPES),
    ("qwen3moe-coder-bf16-sharded", &["auto", "q8_0"]),
    ("qwen3moe-f32", &["f32", "auto"]),
    ("gemma3-1b-bf16", &ALL_TYPES),
    ("gemma3-1b-f16", &["auto", "f32"]),
    ("gemma3-1b-f32", &["f32"]),
    ("gemma3-4b-mm-bf16", &["auto", "q8_0"]),
    ("gemma2-2b-f32", &ALL_TYPES),
    ("gemma2-2b-bf16", &["auto"]),
    ("phi3.5-mini-bf16", &ALL_TYPES),
    ("phi3.5-mini-f32", &["f32"]),
    ("phi4-bf16-sharded", &["auto", "f16"]),
];

#[test]
fn identical_to_convert_hf_to_gguf() {
    if !common::parity_enabled("arch_parity::identical_to_convert_hf_to_gguf") {
        return;
    }
    let scratch = common::Scratch::new("arch-identical");
    let mut failures = Vec::new();
    let mut n = 0;
    for (fixture, types) in RUNS {
        for t in *types {
            let (a, b) = (reference(scratch.path(), fixture, t), ours(scratch.path(), fixture, t));
            let same = std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap();
            eprintln!("{fixture} --outtype {t}: {}", if same { "identical" } else { "DIFFERENT" });
            if !same {
                failures.push(format!("{fixture} {t}: {} vs {}", a.display(), b.display()));
                continue;
            }
            n += 1;
            // The fixtures are what they claim to be.
            let g = || ggufkit::gguf::GgufFile::open(&b).unwrap();
            match (*fixture, *t) {
                ("qwen3moe-30b-a3b-bf16", "auto") => {
                    let g = g();
                    assert_eq!(g.header.metadata.get_u64("qwen3moe.expert_count"), Some(8));
                    assert_eq!(g.header.tensor("blk.1.ffn_down_exps.weight").unwrap().dims, vec![32, 64, 8]);
                }
                ("phi3.5-mini-bf16", "auto") => assert!(g().header.tensor("rope_factors_long.weight").is_some()),
                ("gemma3-4b-mm-bf16", "auto") => {
                    assert_eq!(g().header.metadata.get_str("gemma3.rope.scaling.type"), Some("linear"))
                }
                _ => {}
            }
            let _ = (std::fs::remove_file(&a), std::fs::remove_file(&b));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} outputs differ:\n{}",
        failures.len(),
        n + failures.len(),
        failures.join("\n")
    );
}

/// `quantize` Q4_K_M / Q6_K / Q8_0 byte-identical to llama-quantize on each
/// architecture's converted model (rows of 256, so the K-quants are used; the
/// MoE rules of an 8-expert model apply to qwen3moe).
#[test]
fn quantize_identical_to_llama_quantize() {
    if !common::parity_enabled("arch_parity::quantize_identical_to_llama_quantize") {
        return;
    }
    let scratch = common::Scratch::new("arch-quantize");
    let tool = common::ref_tools().join("llama-quantize");
    let mut failures = Vec::new();
    for fixture in ["qwen3moe-k256-bf16", "gemma3-k256-bf16", "gemma2-k256-bf16", "phi3.5-k256-bf16"] {
        let f32 = ours(scratch.path(), fixture, "f32");
        for q in ["Q4_K_M", "Q6_K", "Q8_0"] {
            let reference = scratch.join(format!("{fixture}-{q}.ref.gguf"));
            let res = Command::new(&tool).arg(&f32).arg(&reference).arg(q).output().unwrap();
            assert!(res.status.success(), "llama-quantize {fixture} {q}:\n{}", String::from_utf8_lossy(&res.stderr));
            let mine = scratch.join(format!("{fixture}-{q}.gguf"));
            common::ggufkit_ok(&["quantize".as_ref(), f32.as_os_str(), mine.as_os_str(), q.as_ref()]);
            let same = std::fs::read(&reference).unwrap() == std::fs::read(&mine).unwrap();
            eprintln!("{fixture} {q}: {}", if same { "identical" } else { "DIFFERENT" });
            if !same {
                failures.push(format!("{fixture} {q}"));
                continue;
            }
            if (fixture, q) == ("qwen3moe-k256-bf16", "Q4_K_M") {
                // The MoE rules were exercised: an 8-expert model's attn_k is Q8_0 in Q4_K_M.
                let g = ggufkit::gguf::GgufFile::open(&mine).unwrap();
                assert_eq!(g.header.tensor("blk.0.attn_k.weight").unwrap().ty, ggufkit::gguf::GgmlType::Q8_0);
                assert_ne!(g.header.tensor("blk.0.ffn_gate_exps.weight").unwrap().ty, ggufkit::gguf::GgmlType::F32);
            }
            let _ = (std::fs::remove_file(&reference), std::fs::remove_file(&mine));
        }
        let _ = std::fs::remove_file(&f32);
    }
    assert!(failures.is_empty(), "differ from llama-quantize: {failures:?}");
}

/// llama.cpp (llama-cpp-python) runs the converted models: its logits match an
/// independent float64 numpy forward pass of the HF weights
/// (tests/parity/convert_check.py: Qwen3-MoE routing with renormalized top-k;
/// Gemma's scaled embeddings, 1 + w norms, sandwich norms, sliding-window
/// layers with their own rope base, attention and final logit softcaps;
/// Phi-3's fused qkv and gate_up projections and LongRoPE short factors with
/// their attention factor, Phi-4's plain rope and GQA).
/// F32 output: within 5e-4 of the largest |logit| (at least 1e-3: Gemma's
/// scaled embeddings make activations of ~100, and llama.cpp accumulates in
/// F32; measured up to 1.0e-4 relative); the source's 16-bit type: within 1%.
#[test]
fn logits_match_float64_reference() {
    if !common::parity_enabled("arch_parity::logits_match_float64_reference") {
        return;
    }
    let scratch = common::Scratch::new("arch-logits");
    let script = common::repo_root().join("tests/parity/convert_check.py");
    let mut report = Vec::new();
    for fixture in [
        "qwen3moe-f32",
        "qwen3moe-30b-a3b-bf16",
        "gemma3-1b-f32",
        "gemma3-1b-bf16",
        "gemma3-4b-mm-bf16",
        "gemma2-2b-f32",
        "phi3.5-mini-f32",
        "phi3.5-mini-bf16",
        "phi4-bf16-sharded",
    ] {
        for outtype in ["f32", "auto"] {
            let gguf = ours(scratch.path(), fixture, outtype);
            let fx = fixtures().join(fixture);
            let out = common::run_ref_python(&script, &["logits".as_ref(), fx.as_os_str(), gguf.as_os_str()]);
            let r: serde_json::Value = serde_json::from_str(out.lines().last().unwrap_or("")).unwrap();
            for p in r["prompts"].as_array().unwrap() {
                let diff = p["max_abs_diff"].as_f64().unwrap();
                let maxl = p["max_abs_logit"].as_f64().unwrap();
                let bound = if outtype == "f32" { (5e-4 * maxl).max(1e-3) } else { 0.01 * maxl.max(1.0) };
                let agree = p["argmax_agree"].as_f64().unwrap_or(0.0);
                report.push(format!(
                    "{fixture} {outtype}: {} tokens, max |diff| {diff:.3e} (max |logit| {maxl:.1}), argmax agreement {agree}",
                    p["n_tokens"]
                ));
                if outtype != "f32" && fixture.starts_with("qwen3moe") {
                    // 16-bit MoE: llama.cpp rounds the router's input to the weight type, so a
                    // near-tie in the top-k expert choice can flip for a token and move that
                    // token's logits far (not a conversion error: the f32 output of the same
                    // fixture is held to the tight bound). Most tokens must still agree.
                    assert!(agree >= 0.9, "{fixture} {outtype}: argmax agreement {agree}\n{r}");
                    continue;
                }
                assert!(diff < bound, "{fixture} {outtype}: logits differ by {diff} (bound {bound})\n{r}");
                if outtype == "f32" {
                    assert_eq!(p["argmax_agree"].as_f64(), Some(1.0), "{fixture}: argmax differs");
                }
            }
            let _ = std::fs::remove_file(&gguf);
        }
    }
    eprintln!("{}", report.join("\n"));
}

/// `ggufkit merge BASE --lora ADAPTER -o OUT` and `rest`.
fn merge_args<'a>(base: &'a Path, adapter: &'a Path, out: &'a Path, rest: &[&'a str]) -> Vec<&'a OsStr> {
    let mut a: Vec<&OsStr> = vec!["merge".as_ref(), base.as_os_str(), "--lora".as_ref(), adapter.as_os_str()];
    a.extend(["-o".as_ref(), out.as_os_str()]);
    a.extend(rest.iter().map(|r| OsStr::new(*r)));
    a
}

/// `merge` of a PEFT LoRA adapter on every expert's gate/up/down projections
/// (and q_proj) of a Qwen3-MoE base: merged per expert as PEFT's
/// `W + alpha/r * B @ A`, then stacked into `ffn_*_exps`.
#[test]
fn merge_lora_on_experts() {
    if !common::parity_enabled("arch_parity::merge_lora_on_experts") {
        return;
    }
    let scratch = common::Scratch::new("arch-merge-experts");
    let script = common::repo_root().join("tests/parity/arch_merge_check.py");
    let base = fixtures().join("qwen3moe-f32");
    let adapter = scratch.join("qwen3moe-experts-lora");
    common::run_ref_python(&script, &["make".as_ref(), base.as_os_str(), adapter.as_os_str()]);
    let merged = scratch.join("qwen3moe-experts-merged.gguf");
    common::ggufkit_ok(&[
        "merge".as_ref(),
        base.as_os_str(),
        "--lora".as_ref(),
        adapter.as_os_str(),
        "-o".as_ref(),
        merged.as_os_str(),
        "--outtype".as_ref(),
        "f32".as_ref(),
    ]);
    let out = common::run_ref_python(
        &script,
        &["check".as_ref(), base.as_os_str(), adapter.as_os_str(), common::ref_src().as_os_str(), merged.as_os_str()],
    );
    let r: serde_json::Value = serde_json::from_str(out.lines().last().unwrap_or("")).unwrap();
    eprintln!("merge on experts: {r}");
    assert_eq!(r["n_experts"], 2 * 3 * 16);
    assert!(r["max_abs_diff"].as_f64().unwrap() < 1e-6, "{r}");
}

/// `merge` of PEFT LoRA adapters on Gemma 2, Gemma 3 (Gemma3ForCausalLM, and
/// Gemma3ForConditionalGeneration's text model with the module names of
/// transformers 4.50 and of ≥ 4.52), Phi-3.5-mini and Phi-4 (the fused
/// qkv_proj / gate_up_proj), against PEFT's merge in float64
/// (tests/parity/arch_merge_check.py `check-dir`): Gemma's tied embeddings as
/// PEFT leaves them (LoRA on embed_tokens or lm_head changes the one shared
/// weight; a modules_to_save replacement unties). The merged GGUF equals
/// `convert` of the merged directory, byte for byte.
#[test]
fn merge_lora_on_gemma_and_phi3() {
    if !common::parity_enabled("arch_parity::merge_lora_on_gemma_and_phi3") {
        return;
    }
    let scratch = common::Scratch::new("arch-merge-gemma-phi3");
    let script = common::repo_root().join("tests/parity/arch_merge_check.py");
    let os = |s: &str| std::ffi::OsString::from(s);
    // (case, base fixture, untied by the merge, GGUF has output.weight)
    let cases = [
        ("gemma2", "gemma2-2b-f32", false, false),
        ("gemma3", "gemma3-1b-f32", false, false),
        ("gemma3-mm-new", "gemma3-4b-mm-bf16", false, false),
        ("gemma3-mm-old", "gemma3-4b-mm-bf16", true, true),
        ("phi3", "phi3.5-mini-f32", false, true),
        ("phi4", "phi4-bf16-sharded", false, true),
    ];
    let mut report = Vec::new();
    for (case, fixture, untied, has_output) in cases {
        let base = fixtures().join(fixture);
        let adapter = scratch.join(format!("{case}-lora"));
        let _ = std::fs::remove_dir_all(&adapter);
        common::run_ref_python(
            &script,
            &[os("make-case").as_os_str(), os(case).as_os_str(), base.as_os_str(), adapter.as_os_str()],
        );
        let dir = scratch.join("merged-dir").join(format!("{case}-merged"));
        common::ggufkit_ok(&merge_args(&base, &adapter, &dir, &["--dtype", "f32", "--force", "-q"]));
        let out = common::run_ref_python(
            &script,
            &[
                os("check-dir").as_os_str(),
                os(case).as_os_str(),
                base.as_os_str(),
                adapter.as_os_str(),
                dir.as_os_str(),
            ],
        );
        let r: serde_json::Value = serde_json::from_str(out.lines().last().unwrap_or("")).unwrap();
        assert!(r["problems"].as_array().unwrap().is_empty(), "{case}: {r:#}");
        assert_eq!(r["untied"], untied, "{case}: {r}");
        if untied {
            assert_eq!(r["config_tie_word_embeddings"], false, "{case}");
        }
        let changed = r["changed"].as_array().unwrap();
        assert!(changed.len() >= 4, "{case}: too few tensors changed: {r}");
        // The merged GGUF in one pass == convert of the merged directory.
        let gguf_dir = scratch.join("merged-gguf");
        std::fs::create_dir_all(&gguf_dir).unwrap();
        let gguf = gguf_dir.join(format!("{case}-merged.gguf"));
        common::ggufkit_ok(&merge_args(&base, &adapter, &gguf, &["--outtype", "f32", "-q"]));
        let conv = scratch.join(format!("{case}-merged-converted.gguf"));
        let opts = ConvertOptions { outtype: "f32".parse().unwrap(), ..Default::default() };
        convert_dir(&dir, &conv, &opts, &CollectWarnings::default()).unwrap_or_else(|e| panic!("convert {case}: {e}"));
        assert!(
            std::fs::read(&gguf).unwrap() == std::fs::read(&conv).unwrap(),
            "{case}: merged GGUF differs from convert of the merged directory"
        );
        let g = ggufkit::gguf::GgufFile::open(&gguf).unwrap();
        assert_eq!(g.header.tensor("output.weight").is_some(), has_output, "{case}: output.weight");
        report.push(format!(
            "{case} on {fixture}: {} tensors changed, max |ours - float64 PEFT| {:.2e}, untied {untied}; GGUF == convert(merged dir)",
            changed.len(),
            r["max_abs_diff"].as_f64().unwrap()
        ));
        let _ = (std::fs::remove_dir_all(&adapter), std::fs::remove_dir_all(&dir));
        let _ = (std::fs::remove_file(&gguf), std::fs::remove_file(&conv));
    }
    // Gemma 2 with a replaced (modules_to_save) embedding: the directory unties lm_head; a
    // GGUF cannot hold it (llama.cpp's gemma2 has no output layer of its own), so merge refuses.
    let base = fixtures().join("gemma2-2b-f32");
    let adapter = scratch.join("gemma2-mts-lora");
    let _ = std::fs::remove_dir_all(&adapter);
    common::run_ref_python(
        &script,
        &[os("make-case").as_os_str(), os("gemma2-mts").as_os_str(), base.as_os_str(), adapter.as_os_str()],
    );
    let gguf = scratch.join("gemma2-mts-merged.gguf");
    let _ = std::fs::remove_file(&gguf);
    let run = common::ggufkit(&merge_args(&base, &adapter, &gguf, &["--outtype", "f32"]));
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("gemma2") && run.stderr.contains("output layer"), "{}", run.stderr);
    assert!(!gguf.exists());
    let dir = scratch.join("merged-dir").join("gemma2-mts-merged");
    common::ggufkit_ok(&merge_args(&base, &adapter, &dir, &["--dtype", "f32", "--force", "-q"]));
    let out = common::run_ref_python(
        &script,
        &[
            os("check-dir").as_os_str(),
            os("gemma2-mts").as_os_str(),
            base.as_os_str(),
            adapter.as_os_str(),
            dir.as_os_str(),
        ],
    );
    let r: serde_json::Value = serde_json::from_str(out.lines().last().unwrap_or("")).unwrap();
    assert!(r["problems"].as_array().unwrap().is_empty(), "gemma2-mts: {r:#}");
    assert_eq!(r["untied"], true);
    eprintln!("{}", report.join("\n"));
}
