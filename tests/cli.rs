//! Integration tests of the `ggufkit` binary: exit codes, error messages,
//! the malformed-input corpus, and outputs that must never be left behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ggufkit"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run ggufkit")
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every file of the malformed corpus is refused by every command that reads
/// GGUF: exit code as expected, a message naming the file and the problem, no
/// panic, and no output file left behind.
#[test]
fn malformed_gguf_corpus() {
    let dir = root().join("tests/corpus/gguf");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let cases = expected.as_object().unwrap();
    assert!(cases.len() >= 50, "corpus has {} cases", cases.len());
    let out_dir = tempfile::tempdir().unwrap();
    for (name, want) in cases {
        let file = dir.join(name);
        let file = file.to_str().unwrap();
        let code = want["exit"].as_i64().unwrap() as i32;
        let msg = want["message"].as_str().unwrap();
        let out = out_dir.path().join("out.gguf");
        let out_s = out.to_str().unwrap();
        for args in [
            vec!["inspect", file],
            vec!["inspect", "--json", file],
            vec!["edit", file, out_s],
            vec!["diff", file, file],
        ] {
            let o = run(&args);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
            assert!(err.contains(msg), "{args:?}: message {err:?} lacks {msg:?}");
            assert!(err.contains(name.as_str()), "{args:?}: message {err:?} does not name the file");
            assert!(!err.contains("panicked"), "{args:?}: {err}");
            assert!(!out.exists(), "{args:?} left an output file");
        }
        assert_eq!(std::fs::read_dir(out_dir.path()).unwrap().count(), 0, "{name}: temporary files left behind");
    }
}

/// Reads every file under `dir` (sorted), to check that inputs are never modified.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Runs the binary with a time limit; `None` when it had to be killed.
fn run_limited(args: &[String], limit: std::time::Duration) -> Option<Output> {
    use std::process::Stdio;
    let mut child = bin().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run ggufkit");
    let start = std::time::Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The malformed-input corpus of every other parser (scripts/gen_input_corpus.py):
/// safetensors headers, shard indexes, config and tokenizer files, Modelfiles,
/// importance matrices, PEFT adapters. Each case runs its command under a
/// time limit: the exit code and message are as expected, nothing panics,
/// the inputs are unchanged, and a failed command leaves no output behind.
#[test]
fn malformed_input_corpus() {
    let dir = root().join("tests/corpus/inputs");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let cases = expected.as_object().unwrap();
    assert!(cases.len() >= 100, "corpus has {} cases", cases.len());
    let before = snapshot(&dir);
    let mut failures = Vec::new();
    for (name, want) in cases {
        let out_dir = tempfile::tempdir().unwrap();
        let args: Vec<String> = want["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                a.as_str()
                    .unwrap()
                    .replace("{case}", dir.join(name).to_str().unwrap())
                    .replace("{shared}", dir.join("_shared").to_str().unwrap())
                    .replace("{out}", out_dir.path().to_str().unwrap())
            })
            .collect();
        let code = want["exit"].as_i64().unwrap() as i32;
        let msg = want["message"].as_str().unwrap();
        let writes = want["args"].as_array().unwrap().iter().any(|a| a.as_str().unwrap().contains("{out}"));
        let Some(o) = run_limited(&args, std::time::Duration::from_secs(20)) else {
            failures.push(format!("{name}: still running after 20 s"));
            continue;
        };
        let err = stderr(&o);
        let left = std::fs::read_dir(out_dir.path()).unwrap().count();
        if o.status.code() != Some(code) {
            failures.push(format!("{name}: exit {:?}, expected {code}: {err}", o.status.code()));
        } else if !err.contains(msg) {
            failures.push(format!("{name}: message {err:?} lacks {msg:?}"));
        } else if err.contains("panicked") {
            failures.push(format!("{name}: panicked: {err}"));
        } else if code != 0 && left != 0 {
            failures.push(format!("{name}: failed but left {left} file(s) in the output directory"));
        } else if code == 0 && writes && left == 0 {
            failures.push(format!("{name}: succeeded without writing its output"));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
    assert!(snapshot(&dir) == before, "a command modified its input files");
}

fn write_small_gguf(path: &Path, name: &str) {
    use ggufkit::gguf::{GgmlType, GgufWriter, Metadata, TensorSpec, Value};
    let mut md = Metadata::new();
    md.push("general.architecture", Value::string("llama"));
    md.push("general.name", Value::string(name));
    let w = std::fs::File::create(path).unwrap();
    let mut w = GgufWriter::new(w, path, &md, vec![TensorSpec::new("t", vec![8, 2], GgmlType::F32)]).unwrap();
    let data: Vec<u8> = (0..16).flat_map(|i| (i as f32).to_le_bytes()).collect();
    w.write_data(&data).unwrap();
    w.finish().unwrap();
}

#[test]
fn diff_exit_codes_and_json() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (d.path().join("a.gguf"), d.path().join("b.gguf"));
    write_small_gguf(&a, "one");
    write_small_gguf(&b, "two");
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let o = run(&["diff", a, a]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("byte-identical"));
    let o = run(&["diff", "--json", a, b]);
    assert_eq!(o.status.code(), Some(1));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["identical"], false);
    assert_eq!(j["metadata"]["differences"][0]["key"], "general.name");
    assert_eq!(j["tensors"]["identical"], 1);
    let o = run(&["diff", a, "/nonexistent/x.gguf"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/nonexistent/x.gguf"));
}

#[test]
fn edit_refuses_to_overwrite_its_input() {
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("a.gguf");
    write_small_gguf(&a, "one");
    let before = std::fs::read(&a).unwrap();
    let s = a.to_str().unwrap();
    let o = run(&["edit", s, s, "--set", "general.name=str:x"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("onto the input"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&a).unwrap(), before);
}

#[test]
fn edit_sets_and_removes_keys() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (d.path().join("a.gguf"), d.path().join("b.gguf"));
    write_small_gguf(&a, "one");
    let o = run(&[
        "edit",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--set",
        "general.name=str:renamed",
        "--set",
        "x.n=int:7",
        "--remove",
        "general.architecture",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let f = ggufkit::gguf::GgufFile::open(&b).unwrap();
    let keys: Vec<&str> = f.header.metadata.keys().collect();
    assert_eq!(keys, ["general.name", "x.n"]);
    assert_eq!(f.header.metadata.get_str("general.name"), Some("renamed"));
    assert_eq!(f.header.metadata.get("x.n"), Some(&ggufkit::gguf::Value::U32(7)));
}

#[test]
fn usage_errors_exit_2() {
    let o = run(&["inspect"]);
    assert_eq!(o.status.code(), Some(2));
    let o = run(&["no-such-command"]);
    assert_eq!(o.status.code(), Some(2));
    let o = run(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
}

/// `quantize --json` and `convert --json` list every tensor's type and its
/// error against the source (the values themselves are checked against
/// numpy in tests/report_parity.rs).
#[test]
fn json_reports_list_each_tensor_error() {
    let d = tempfile::tempdir().unwrap();
    let f32_path = d.path().join("f32.gguf");
    let ex = root().join("examples/tiny-mistral");
    let o = run(&["convert", ex.to_str().unwrap(), f32_path.to_str().unwrap(), "--outtype", "f32", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let tensors = j["tensors"].as_array().unwrap();
    assert_eq!(tensors.len() as u64, j["n_tensors"].as_u64().unwrap());
    // BF16 weights written as F32 are exact.
    assert!(tensors.iter().all(|t| t["error"]["max"] == 0.0), "{j}");

    let q = d.path().join("q.gguf");
    let o = run(&["quantize", f32_path.to_str().unwrap(), q.to_str().unwrap(), "Q4_0", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let tensors = j["tensors"].as_array().unwrap();
    let quantized: Vec<_> = tensors.iter().filter(|t| t["type"] == "Q4_0").collect();
    assert!(!quantized.is_empty());
    for t in tensors {
        let e = &t["error"];
        let (rms, rel, max) =
            (e["rms"].as_f64().unwrap(), e["relative_rms"].as_f64().unwrap(), e["max"].as_f64().unwrap());
        if t["type"] == "F32" {
            assert_eq!(max, 0.0, "{t}");
        } else {
            assert!(rms > 0.0 && rms <= max && rel > 0.0 && rel < 0.5, "{t}");
        }
    }
}
