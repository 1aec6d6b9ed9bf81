//! `ggufkit imatrix` against `llama-imatrix` on the same model, text and ctx,
//! for the imatrix parity tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use ggufkit::imatrix::{parse_gguf, ImatrixFile};

/// Both tools' imatrix GGUFs of `gguf` on `text` (`ctx` tokens a chunk, at
/// most `chunks`), written into `out_dir` under `stem`; returns their paths,
/// llama.cpp's first.
pub fn both(gguf: &Path, text: &Path, ctx: usize, chunks: usize, out_dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
    let theirs = out_dir.join(format!("{stem}.llama.imatrix.gguf"));
    let ours = out_dir.join(format!("{stem}.ours.imatrix.gguf"));
    let (ctx, chunks) = (ctx.to_string(), chunks.to_string());
    let os = |s: &'static str| -> &std::ffi::OsStr { s.as_ref() };
    let out = std::process::Command::new(super::ref_tools().join("llama-imatrix"))
        .args([os("-m"), gguf.as_os_str(), os("-f"), text.as_os_str(), os("-o"), theirs.as_os_str()])
        .args(["-c", &ctx, "-b", &ctx, "--chunks", &chunks, "-t", "2"])
        .output()
        .expect("run llama-imatrix");
    assert!(out.status.success(), "llama-imatrix {stem}:\n{}", String::from_utf8_lossy(&out.stderr));
    super::ggufkit_ok(&[
        os("imatrix"),
        gguf.as_os_str(),
        os("--text"),
        text.as_os_str(),
        os("--ctx"),
        ctx.as_ref(),
        os("--chunks"),
        chunks.as_ref(),
        os("-o"),
        ours.as_os_str(),
        os("--quiet"),
    ]);
    (theirs, ours)
}

/// Parses both files and checks the same entries, chunk keys, counts and
/// sum lengths; returns llama.cpp's and the largest relative `in_sum2`
/// difference with its entry.
pub fn compare(theirs: &Path, ours: &Path) -> (ImatrixFile, (f64, String)) {
    let a = parse_gguf(&std::fs::read(theirs).unwrap()).unwrap();
    let b = parse_gguf(&std::fs::read(ours).unwrap()).unwrap();
    assert_eq!(a.entries.keys().collect::<Vec<_>>(), b.entries.keys().collect::<Vec<_>>(), "entries");
    assert_eq!((a.chunk_count, a.chunk_size), (b.chunk_count, b.chunk_size), "chunk keys");
    let mut worst = (0f64, String::new());
    for (name, ea) in &a.entries {
        let shown = String::from_utf8_lossy(name).into_owned();
        let eb = &b.entries[name];
        assert_eq!(ea.counts, eb.counts, "counts of {shown}");
        assert_eq!(ea.sums.len(), eb.sums.len(), "{shown}");
        for (x, y) in ea.sums.iter().zip(&eb.sums) {
            let rel = ((x - y).abs() / x.abs().max(1e-30)) as f64;
            if rel > worst.0 {
                worst = (rel, shown.clone());
            }
        }
    }
    (a, worst)
}

/// Quantizes `gguf` to IQ4_XS with the `imatrix` file, with ggufkit and with
/// llama-quantize, into `out_dir`; asserts the two outputs are byte-identical
/// and returns ggufkit's.
pub fn iq4xs_with_both_quantizers(imatrix: &Path, gguf: &Path, out_dir: &Path) -> PathBuf {
    let os = |s: &'static str| -> &std::ffi::OsStr { s.as_ref() };
    let q_ours = out_dir.join("iq4xs-ggufkit.gguf");
    let q_theirs = out_dir.join("iq4xs-llama.gguf");
    super::ggufkit_ok(&[
        os("quantize"),
        os("--imatrix"),
        imatrix.as_os_str(),
        gguf.as_os_str(),
        q_ours.as_os_str(),
        os("IQ4_XS"),
        os("--quiet"),
    ]);
    let out = std::process::Command::new(super::ref_tools().join("llama-quantize"))
        .args([os("--imatrix"), imatrix.as_os_str(), gguf.as_os_str(), q_theirs.as_os_str(), os("IQ4_XS"), os("2")])
        .output()
        .expect("run llama-quantize");
    assert!(out.status.success(), "llama-quantize:\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::read(&q_ours).unwrap() == std::fs::read(&q_theirs).unwrap(), "IQ4_XS outputs differ");
    q_ours
}
