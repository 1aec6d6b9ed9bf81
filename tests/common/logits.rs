//! Per-token logits for the forward-pass parity tests: llama.cpp's
//! (llama-cpp-python with `logits_all`, tests/parity/eval_ref.py) and ours,
//! and their comparison.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use ggufkit::infer::source::ModelInput;
use ggufkit::infer::ForwardOptions;
use ggufkit::progress::NoProgress;

/// The evaluation text of every forward-pass test: llama.cpp's README.md.
pub fn text() -> PathBuf {
    super::ref_src().join("README.md")
}

fn eval_ref_py() -> PathBuf {
    super::repo_root().join("tests/parity/eval_ref.py")
}

/// The text's token ids as llama.cpp's tools get them (a JSON file in `out_dir`).
pub fn token_ids(gguf: &Path, out_dir: &Path) -> Vec<u32> {
    let out = out_dir.join(format!("{}.ids.json", gguf.file_stem().unwrap().to_string_lossy()));
    super::run_ref_python(
        &eval_ref_py(),
        &["tokenize".as_ref(), gguf.as_os_str(), text().as_os_str(), out.as_os_str()],
    );
    serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap()
}

/// llama.cpp's logits of every position (f32 KV cache), and the vocabulary size.
pub fn llama_logits(gguf: &Path, ids: &[u32], out_dir: &Path) -> (Vec<f32>, usize) {
    let stem = gguf.file_stem().unwrap().to_string_lossy().into_owned();
    let ids_path = out_dir.join(format!("{stem}.logit-ids.json"));
    std::fs::write(&ids_path, serde_json::to_string(ids).unwrap()).unwrap();
    let out = out_dir.join(format!("{stem}.logits.f32"));
    let nv: usize = super::run_ref_python(
        &eval_ref_py(),
        &["logits".as_ref(), gguf.as_os_str(), ids_path.as_os_str(), out.as_os_str()],
    )
    .trim()
    .parse()
    .unwrap();
    let bytes = std::fs::read(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    (bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(), nv)
}

/// Our logits of every position (f32 K and V, as llama_logits runs llama.cpp).
pub fn our_logits(model: &Path, ids: &[u32]) -> Vec<f32> {
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

/// How two sets of logits differ.
pub struct LogitDiff {
    /// Positions whose argmax differs by a margin of at least the tie tolerance
    /// in llama.cpp's logits.
    pub mismatches: usize,
    /// Mean KL divergence (reference ‖ ours).
    pub kld: f64,
    pub max_diff: f32,
    /// Largest |logit| of the reference.
    pub max_logit: f32,
}

/// Compares `ours` with `reference` (`nv` logits per position). An argmax
/// flip between top logits closer than `tie` in the reference (a near-tie,
/// which random weights make) is not counted; `tie` 0 counts every flip.
pub fn compare(reference: &[f32], ours: &[f32], nv: usize, tie: f32) -> LogitDiff {
    assert_eq!(reference.len(), ours.len(), "logit counts differ");
    let mut d = LogitDiff { mismatches: 0, kld: 0.0, max_diff: 0.0, max_logit: 0.0 };
    let n = reference.len() / nv;
    for (a, b) in reference.chunks(nv).zip(ours.chunks(nv)) {
        let (ia, ib) = (argmax(a), argmax(b));
        if ia != ib && a[ia] - a[ib] >= tie {
            d.mismatches += 1;
        }
        let (la, lb) = (log_softmax(a), log_softmax(b));
        d.kld += la.iter().zip(&lb).map(|(&p, &q)| p.exp() * (p - q)).sum::<f64>();
        d.max_diff = a.iter().zip(b).fold(d.max_diff, |m, (x, y)| m.max((x - y).abs()));
        d.max_logit = a.iter().fold(d.max_logit, |m, x| m.max(x.abs()));
    }
    d.kld /= n as f64;
    d
}
