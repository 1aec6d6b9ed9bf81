//! Whole-file parity of `ggufkit quantize` with llama.cpp's llama-quantize
//! (the real command, compiled from the pinned source against the reference
//! venv's libllama): for synthetic models with adversarial rows (all zero,
//! constant, tiny, huge, one-signed, heavy-tailed, exact ties, spikes,
//! subnormal-scale, alternating, ramps) in every matrix, stored as F32, F16
//! and BF16, with row lengths that are and are not multiples of 256, tied and
//! untied output and a MoE model, every file type is quantized by both, with
//! and without an importance matrix, with different thread counts, and the
//! output files must be byte-identical. Where llama.cpp refuses, ggufkit must
//! refuse too.
//!
//! Run with `--nocapture` to see the table.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const TYPES: &[&str] = &[
    "F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q2_K_S", "Q3_K_S", "Q3_K_M", "Q3_K_L",
    "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "IQ4_NL", "IQ4_XS",
];

struct Models {
    dir: PathBuf,
    names: Vec<String>,
}

fn models() -> &'static Models {
    static M: OnceLock<Models> = OnceLock::new();
    M.get_or_init(|| {
        // made by llama.cpp through synth.py (not by ggufkit): cached per version of the script
        let dir = common::keyed_cache_dir("quantize-parity-models", &["tests/parity/synth.py"]);
        std::fs::create_dir_all(&dir).unwrap();
        let synth = common::repo_root().join("tests/parity/synth.py");
        common::run_ref_python(&synth, &["data-models".as_ref(), dir.as_os_str()]);
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
        let names: Vec<String> =
            manifest.as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap().to_string()).collect();
        for n in &names {
            for fmt in ["gguf", "dat"] {
                let out = dir.join(format!("{n}.imatrix.{fmt}"));
                if !out.exists() {
                    let model = dir.join(format!("{n}.gguf"));
                    common::run_ref_python(
                        &synth,
                        &["imatrix".as_ref(), model.as_os_str(), out.as_os_str(), "--format".as_ref(), fmt.as_ref()],
                    );
                }
            }
        }
        Models { dir, names }
    })
}

fn llama(args: &[&str]) -> Output {
    Command::new(common::llama_quantize_tool())
        .args(args)
        .env("GGML_NO_BACKTRACE", "1")
        .output()
        .expect("run llama-quantize")
}

fn ours(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ggufkit")).arg("quantize").arg("--quiet").args(args).output().expect("run ggufkit")
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Same,
    Differ(String),
    BothRefuse,
    OnlyOursRefuses(String),
    OnlyLlamaRefuses,
}

/// Runs one case: `opts` are llama-quantize options (ggufkit takes the same
/// spelling), then INPUT OUTPUT TYPE; llama.cpp gets `llama_threads`, we get `our_threads`.
fn case(model: &str, ty: &str, opts: &[&str], llama_threads: u32, our_threads: u32, out: &Path) -> Outcome {
    let input = models().dir.join(format!("{model}.gguf"));
    let (a, b) = (out.join("llama.gguf"), out.join("ours.gguf"));
    let _ = (std::fs::remove_file(&a), std::fs::remove_file(&b));
    let lt = llama_threads.to_string();
    let mut la: Vec<&str> = opts.to_vec();
    la.extend([input.to_str().unwrap(), a.to_str().unwrap(), ty, &lt]);
    let lo = llama(&la);
    let ot = our_threads.to_string();
    let mut oa: Vec<&str> = opts.to_vec();
    oa.extend(["--threads", &ot, input.to_str().unwrap(), b.to_str().unwrap(), ty]);
    let oo = ours(&oa);
    let err = String::from_utf8_lossy(&oo.stderr).into_owned();
    assert!(!err.contains("panicked"), "{model} {ty} {opts:?}: {err}");
    match (lo.status.success() && a.exists(), oo.status.success()) {
        (true, true) => {
            let (x, y) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
            if x == y {
                Outcome::Same
            } else {
                let d = Command::new(env!("CARGO_BIN_EXE_ggufkit")).args(["diff"]).arg(&a).arg(&b).output().unwrap();
                Outcome::Differ(String::from_utf8_lossy(&d.stdout).lines().take(12).collect::<Vec<_>>().join("\n"))
            }
        }
        (false, false) => {
            assert_eq!(oo.status.code(), Some(2), "{model} {ty}: {err}");
            assert!(!b.exists(), "{model} {ty}: refused but left an output");
            Outcome::BothRefuse
        }
        (true, false) => Outcome::OnlyOursRefuses(err),
        (false, true) => Outcome::OnlyLlamaRefuses,
    }
}

fn run_matrix(label: &str, cases: Vec<(String, String, Vec<String>, u32, u32)>) {
    let tmp = tempfile::tempdir().unwrap();
    let mut bad = Vec::new();
    let (mut same, mut refused) = (0, 0);
    for (model, ty, opts, lt, ot) in &cases {
        let o: Vec<&str> = opts.iter().map(String::as_str).collect();
        let r = case(model, ty, &o, *lt, *ot, tmp.path());
        println!("{label:10} {model:20} {ty:7} {:40} threads {lt}/{ot}: {r:?}", opts.join(" "));
        match r {
            Outcome::Same => same += 1,
            Outcome::BothRefuse => refused += 1,
            other => bad.push(format!("{model} {ty} {opts:?}: {other:?}")),
        }
    }
    println!("{label}: {same} byte-identical, {refused} refused by both, {} mismatches", bad.len());
    assert!(bad.is_empty(), "{label}: mismatches:\n{}", bad.join("\n"));
    assert!(same > 0);
}

#[test]
fn every_type_without_imatrix() {
    if !common::parity_enabled("quantize_parity::every_type_without_imatrix") {
        return;
    }
    let m = models();
    let mut cases = Vec::new();
    for (i, model) in m.names.iter().enumerate() {
        for (j, ty) in TYPES.iter().enumerate() {
            // Vary the thread counts on both sides: the output may not depend on them.
            let (lt, ot) = if (i + j) % 2 == 0 { (1, 3) } else { (2, 1) };
            cases.push((model.clone(), ty.to_string(), vec![], lt, ot));
        }
    }
    run_matrix("plain", cases);
}

#[test]
fn every_type_with_imatrix() {
    if !common::parity_enabled("quantize_parity::every_type_with_imatrix") {
        return;
    }
    let m = models();
    let mut cases = Vec::new();
    for (i, model) in m.names.iter().enumerate() {
        for (j, ty) in TYPES.iter().enumerate() {
            // Both imatrix formats: llama-imatrix's GGUF and the legacy .dat.
            let fmt = if (i + j) % 3 == 0 { "dat" } else { "gguf" };
            let im = m.dir.join(format!("{model}.imatrix.{fmt}")).display().to_string();
            let (lt, ot) = if j % 2 == 0 { (2, 1) } else { (1, 4) };
            cases.push((model.clone(), ty.to_string(), vec!["--imatrix".into(), im], lt, ot));
        }
    }
    run_matrix("imatrix", cases);
}

#[test]
fn options() {
    if !common::parity_enabled("quantize_parity::options") {
        return;
    }
    let m = models();
    let im = m.dir.join("data_f32_512.imatrix.gguf").display().to_string();
    let sets: Vec<Vec<&str>> = vec![
        vec!["--pure"],
        vec!["--leave-output-tensor"],
        vec!["--output-tensor-type", "q8_0", "--token-embedding-type", "q4_k"],
        vec!["--tensor-type", "attn_v=q8_0", "--tensor-type", "ffn_down=q5_k"],
        vec!["--override-kv", "general.name=str:renamed", "--override-kv", "ggufkit.n=int:7"],
        vec!["--imatrix", &im, "--exclude-weights", "attn_q"],
        vec!["--imatrix", &im, "--include-weights", "ffn"],
    ];
    let mut cases = Vec::new();
    for model in ["data_f32_512", "data_bf16_896"] {
        for opts in &sets {
            if opts.contains(&im.as_str()) && model != "data_f32_512" {
                continue;
            }
            for ty in ["Q4_K_M", "Q3_K_S", "Q6_K", "Q4_0", "IQ4_XS"] {
                cases.push((model.to_string(), ty.to_string(), opts.iter().map(|s| s.to_string()).collect(), 2, 3));
            }
        }
    }
    // Requantizing: a Q8_0 model, refused without --allow-requantize, allowed with it.
    run_matrix("options", cases);
}

#[test]
fn requantize_and_copy() {
    if !common::parity_enabled("quantize_parity::requantize_and_copy") {
        return;
    }
    let m = models();
    let tmp = tempfile::tempdir().unwrap();
    let q8 = tmp.path().join("q8.gguf");
    let input = m.dir.join("data_f16_384_tied.gguf");
    assert!(llama(&[input.to_str().unwrap(), q8.to_str().unwrap(), "Q8_0"]).status.success());
    let q8s = q8.to_str().unwrap();
    for (opts, ty) in [
        (vec![], "Q4_K_M"),
        (vec!["--allow-requantize"], "Q4_K_M"),
        (vec!["--allow-requantize"], "Q4_0"),
        (vec![], "COPY"),
    ] {
        let (a, b) = (tmp.path().join("a.gguf"), tmp.path().join("b.gguf"));
        let _ = (std::fs::remove_file(&a), std::fs::remove_file(&b));
        let mut la = opts.clone();
        la.extend([q8s, a.to_str().unwrap(), ty]);
        let lo = llama(&la);
        let mut oa = opts.clone();
        oa.extend([q8s, b.to_str().unwrap(), ty]);
        let oo = ours(&oa);
        assert_eq!(lo.status.success(), oo.status.success(), "{opts:?} {ty}: {}", String::from_utf8_lossy(&oo.stderr));
        if oo.status.success() {
            assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(), "{opts:?} {ty}: files differ");
        } else {
            assert!(String::from_utf8_lossy(&oo.stderr).contains("--allow-requantize"));
            assert!(!b.exists());
        }
    }
}

#[test]
fn shorthand_flags_and_default_output_name() {
    if !common::parity_enabled("quantize_parity::shorthand_flags_and_default_output_name") {
        return;
    }
    let m = models();
    let tmp = tempfile::tempdir().unwrap();
    let input = m.dir.join("data_f32_512.gguf");
    let (a, b) = (tmp.path().join("a.gguf"), tmp.path().join("b.gguf"));
    assert!(llama(&[input.to_str().unwrap(), a.to_str().unwrap(), "Q4_0"]).status.success());
    // `ggufkit quantize --q4_0 in.gguf out.gguf`, exactly as written.
    let o =
        Command::new(env!("CARGO_BIN_EXE_ggufkit")).args(["quantize", "--q4_0"]).arg(&input).arg(&b).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());
    // INPUT TYPE only: ggml-model-TYPE.gguf beside the input, as llama-quantize names it.
    let local = tmp.path().join("in.gguf");
    std::fs::copy(&input, &local).unwrap();
    let o = ours(&[local.to_str().unwrap(), "q5_k_m"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(tmp.path().join("ggml-model-Q5_K_M.gguf").exists());
    // A flag and a TYPE together is a usage error.
    let o = ours(&["--q4_0", input.to_str().unwrap(), b.to_str().unwrap(), "Q8_0"]);
    assert_eq!(o.status.code(), Some(2));
}
