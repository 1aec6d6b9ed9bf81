//! Tokenization parity with llama.cpp:
//! * every `models/ggml-vocab-*.gguf` with `.inp`/`.out` cases (llama.cpp's
//!   own `test-tokenizer-0` protocol: add_special = false, parse_special = false);
//! * a few hundred KB of real text (llama.cpp sources, license, every test
//!   input, unicode-heavy text, special-token texts) against `llama-tokenize`,
//!   for every supported vocab file, both with BOS + special parsing and without;
//! * the GGUFs `ggufkit convert` makes of the fixture models (Llama-2 SPM,
//!   Llama-3 BPE, Qwen2 BPE) against `llama-tokenize`.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use ggufkit::gguf::GgufFile;
use ggufkit::tokenize::Tokenizer;
use ggufkit::Error;

/// Vocab files llama.cpp tests that we do not support (and why).
const UNSUPPORTED: &[(&str, &str)] = &[("bert-bge", "WPM (bert) tokenizer")];

fn vocab_files(src: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(src.join("models"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("ggml-vocab-") && n.ends_with(".gguf")
        })
        .collect();
    v.sort();
    v
}

fn short_name(p: &Path) -> String {
    let n = p.file_name().unwrap().to_string_lossy();
    n.trim_start_matches("ggml-vocab-").trim_end_matches(".gguf").to_string()
}

fn load(p: &Path) -> Result<Tokenizer, Error> {
    let f = GgufFile::open(p)?;
    Tokenizer::from_metadata(&f.header.metadata)
}

/// The cases of `test-tokenizer-0`: inputs split on "\n__ggml_vocab_test__\n",
/// one line of expected ids each.
fn cases(gguf: &Path) -> Option<Vec<(String, Vec<u32>)>> {
    let inp = std::fs::read_to_string(format!("{}.inp", gguf.display())).ok()?;
    let out = std::fs::read_to_string(format!("{}.out", gguf.display())).ok()?;
    let sep = "\n__ggml_vocab_test__\n";
    let mut texts = Vec::new();
    let mut pos = 0;
    while pos < inp.len() {
        match inp[pos..].find(sep) {
            Some(i) => {
                texts.push(inp[pos..pos + i].to_string());
                pos += i + sep.len();
            }
            None => {
                texts.push(inp[pos..].to_string());
                break;
            }
        }
    }
    let ids: Vec<Vec<u32>> =
        out.lines().map(|l| l.split_whitespace().map(|t| t.parse().expect("id")).collect()).collect();
    assert_eq!(texts.len(), ids.len(), "{}: inputs and outputs differ in number", gguf.display());
    Some(texts.into_iter().zip(ids).collect())
}

#[test]
fn vocab_files_match_llama_cpp_cases() {
    if !common::parity_enabled("tokenize_parity") {
        return;
    }
    let src = common::ref_src();
    let mut report = Vec::new();
    let mut failures = Vec::new();
    let mut unsupported = Vec::new();
    for p in vocab_files(src) {
        let name = short_name(&p);
        let Some(cases) = cases(&p) else { continue };
        let tok = match load(&p) {
            Ok(t) => t,
            Err(Error::Unsupported(msg)) => {
                report.push(format!("{name:<18} unsupported: {msg}"));
                unsupported.push(name);
                continue;
            }
            Err(e) => panic!("{name}: {e}"),
        };
        let mut ok = 0;
        for (text, want) in &cases {
            let got = tok.encode(text, false, false).unwrap();
            if &got == want {
                ok += 1;
            } else if failures.len() < 20 {
                failures.push(format!("{name}: {text:?}\n  want {want:?}\n  got  {got:?}"));
            }
        }
        report.push(format!("{name:<18} {ok}/{} cases", cases.len()));
        if ok != cases.len() {
            failures.push(format!("{name}: {ok}/{} cases", cases.len()));
        }
    }
    eprintln!("tokenizer cases per vocab (llama.cpp models/ggml-vocab-*.gguf.inp/.out):\n{}", report.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let expected: Vec<&str> = UNSUPPORTED.iter().map(|(n, _)| *n).collect();
    assert_eq!(unsupported, expected, "the set of unsupported vocab files changed");
}

/// A few hundred KB of real and unicode-heavy text, with special-token texts.
fn corpus(src: &Path) -> String {
    let mut s = String::new();
    for f in ["src/llama-vocab.cpp", "LICENSE", "README.md", "src/unicode.cpp"] {
        s.push_str(&std::fs::read_to_string(src.join(f)).unwrap());
        s.push('\n');
    }
    for p in vocab_files(src) {
        if let Ok(t) = std::fs::read_to_string(format!("{}.inp", p.display())) {
            s.push_str(&t.replace("__ggml_vocab_test__", ""));
        }
    }
    // Many scripts, marks, digits, odd whitespace and special-token texts.
    let samples = [
        "Ελληνικά κείμενα με τόνους, русский текст, עברית, العربية ١٢٣٤٥, हिन्दी पाठ, ไทย, 日本語のテキスト、中文文本。한국어",
        "e\u{301}te\u{301} cafe\u{301} \u{1F600}\u{1F44D}\u{1F3FD} \u{200B}zero\u{200D}width \u{A0}nbsp\u{2003}em\u{3000}ideo",
        "   leading and trailing   \t\t\n\n\r\n  \u{85}next-line 1234567890 3.14159 1,000,000 $42.50 ¼½¾ ²³",
        "I'm you're we've they'll he'd IT'S DON'T O'Neil rock'n'roll 'quoted' \"double\"",
        "<s> </s> <unk> <|im_start|>user\nhi<|im_end|> <|begin_of_text|><|eot_id|> <|endoftext|> [INST] <<SYS>>",
        "tabs\tand\u{0B}vertical\u{0C}feed \\u00e9 \\n literal",
    ];
    for _ in 0..3 {
        for t in samples {
            s.push_str(t);
            s.push('\n');
        }
    }
    s
}

fn llama_tokenize(tools: &Path, gguf: &Path, file: &Path, bos_and_special: bool) -> Vec<u32> {
    let mut cmd = Command::new(tools.join("llama-tokenize"));
    cmd.arg("-m").arg(gguf).arg("-f").arg(file).args(["--ids", "--log-disable", "--no-escape"]);
    if !bos_and_special {
        cmd.args(["--no-bos", "--no-parse-special"]);
    }
    let out = cmd.output().expect("run llama-tokenize");
    assert!(out.status.success(), "llama-tokenize {}: {}", gguf.display(), String::from_utf8_lossy(&out.stderr));
    let s = String::from_utf8(out.stdout).unwrap();
    let line = s.lines().rev().find(|l| l.trim_start().starts_with('[')).expect("ids line");
    line.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .filter(|t| !t.trim().is_empty())
        .map(|t| t.trim().parse().unwrap())
        .collect()
}

fn first_difference(a: &[u32], b: &[u32]) -> String {
    let i = a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
    let lo = i.saturating_sub(3);
    format!(
        "lengths {} vs {}, first difference at {i}: ours {:?} llama.cpp {:?}",
        a.len(),
        b.len(),
        &a[lo..(i + 5).min(a.len())],
        &b[lo..(i + 5).min(b.len())]
    )
}

fn compare_with_llama_tokenize(ggufs: &[(String, PathBuf)], text: &str) -> Vec<String> {
    let tools = common::ref_tools();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("corpus.txt");
    std::fs::write(&file, text).unwrap();
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for (name, p) in ggufs {
        let tok = match load(p) {
            Ok(t) => t,
            Err(Error::Unsupported(_)) => continue,
            Err(e) => panic!("{name}: {e}"),
        };
        for special in [true, false] {
            let want = llama_tokenize(tools, p, &file, special);
            let t0 = std::time::Instant::now();
            let got = tok.encode(text, special && tok.add_bos(), special).unwrap();
            let dt = t0.elapsed();
            let ok = got == want;
            report.push(format!(
                "{name:<28} bos+special={special:<5} {} tokens {} ({:.0} ms for {} KB)",
                want.len(),
                if ok { "identical" } else { "DIFFERENT" },
                dt.as_secs_f64() * 1e3,
                text.len() / 1024
            ));
            if !ok {
                failures.push(format!("{name} bos+special={special}: {}", first_difference(&got, &want)));
            }
        }
    }
    eprintln!("{}", report.join("\n"));
    failures
}

#[test]
fn long_text_matches_llama_tokenize() {
    if !common::parity_enabled("tokenize_parity") {
        return;
    }
    let src = common::ref_src();
    let text = corpus(src);
    let ggufs: Vec<(String, PathBuf)> = vocab_files(src).into_iter().map(|p| (short_name(&p), p)).collect();
    let failures = compare_with_llama_tokenize(&ggufs, &text);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn converted_fixtures_match_llama_tokenize() {
    if !common::parity_enabled("tokenize_parity") {
        return;
    }
    let src = common::ref_src();
    let text = corpus(src);
    let fixtures = common::fixtures_dir();
    let scratch = common::Scratch::new("tokenize-converted");
    let out = scratch.path();
    let mut ggufs = Vec::new();
    for name in ["llama2-spm-f32", "llama3-bf16-sharded", "qwen2-f32"] {
        let gguf = out.join(format!("{name}.gguf"));
        common::ggufkit_ok(&[
            "convert".as_ref(),
            fixtures.join(name).as_os_str(),
            gguf.as_os_str(),
            "--outtype".as_ref(),
            "f16".as_ref(),
        ]);
        ggufs.push((name.to_string(), gguf));
    }
    let failures = compare_with_llama_tokenize(&ggufs, &text);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
