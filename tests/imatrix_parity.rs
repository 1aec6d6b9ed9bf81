//! `ggufkit imatrix` against `llama-imatrix` on the same model, text and ctx:
//! the same entries, identical counts and chunk keys, `in_sum2` within 1e-3
//! relative; and both `ggufkit quantize --imatrix` and `llama-quantize
//! --imatrix` read the result (giving the same bytes).

use std::path::PathBuf;

mod common;

const CTX: &str = "128";
const CHUNKS: &str = "4";

fn os(s: &str) -> &std::ffi::OsStr {
    s.as_ref()
}

fn text() -> PathBuf {
    common::ref_src().join("README.md")
}

#[test]
fn imatrix_matches_llama_imatrix_and_both_quantizers_read_it() {
    if !common::parity_enabled("imatrix_parity") {
        return;
    }
    let scratch = common::Scratch::new("imatrix-parity");
    let gguf = scratch.join("llama-eval-256-f32.gguf");
    let model = common::eval_fixture();
    common::ggufkit_ok(&[os("convert"), model.as_os_str(), gguf.as_os_str(), os("--outtype"), os("f32")]);
    let (theirs, ours) =
        common::imatrix::both(&gguf, &text(), CTX.parse().unwrap(), CHUNKS.parse().unwrap(), scratch.path(), "fixture");
    let (a, worst) = common::imatrix::compare(&theirs, &ours);
    eprintln!("{} entries; max relative in_sum2 difference {:.3e} ({})", a.entries.len(), worst.0, worst.1);
    assert!(worst.0 < 1e-3, "in_sum2 differs by {:.3e} in {}", worst.0, worst.1);

    // Both quantizers take it, and agree byte for byte.
    common::imatrix::iq4xs_with_both_quantizers(&ours, &gguf, scratch.path());
}
