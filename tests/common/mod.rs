//! Helpers shared by the integration tests: the reference environment.
//!
//! `ref_python()` is the interpreter of the pinned Python venv (real
//! llama.cpp via llama-cpp-python, gguf-py, …) and `ref_src()` the matching
//! llama.cpp source tree. Both come from the repository's scripts, which build
//! or fetch them on a fresh machine and cache them under `~/.cache/ggufkit`
//! (or from `GGUFKIT_REF_PYTHON` / `GGUFKIT_LLAMA_SRC`, which
//! `scripts/test.sh` exports); the answer is computed once per test binary.
#![allow(dead_code)]

pub mod imatrix;
pub mod logits;
pub mod tiny;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The repository root.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The path in environment variable `var` if set, else the one `scripts/<name>` prints.
fn env_or_script(var: &str, name: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(p) if !p.is_empty() => {
            let path = PathBuf::from(p);
            assert!(path.exists(), "{var}={} does not exist", path.display());
            path
        }
        _ => script_path(name),
    }
}

/// Runs `scripts/<name>` and returns the path it prints (its last stdout line).
fn script_path(name: &str) -> PathBuf {
    let script = repo_root().join("scripts").join(name);
    let out =
        Command::new("bash").arg(&script).output().unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed ({}):\n{}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default().trim();
    let path = PathBuf::from(line);
    assert!(path.exists(), "{} printed '{line}', which does not exist", script.display());
    path
}

/// True when the parity tests against the reference environment should run:
/// `GGUFKIT_PARITY=1` (set by `scripts/test.sh`, hence by CI). Plain `cargo test`
/// leaves it unset, so a parity test calls this first and returns early,
/// printing that it was skipped; it never builds the reference environment.
///
/// ```ignore
/// if !common::parity_enabled("quantize_parity") { return; }
/// ```
pub fn parity_enabled(test: &str) -> bool {
    let on = matches!(std::env::var("GGUFKIT_PARITY").as_deref(), Ok("1"));
    if !on {
        eprintln!("skipped {test}: parity test against llama.cpp; run scripts/test.sh (GGUFKIT_PARITY=1)");
    }
    on
}

/// The directory of llama.cpp's command-line tools built from the pinned source
/// (`$GGUFKIT_LLAMA_TOOLS` or `scripts/ref-tools.sh`): llama-perplexity,
/// llama-imatrix, llama-gguf-split, llama-tokenize, llama-quantize.
pub fn ref_tools() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| env_or_script("GGUFKIT_LLAMA_TOOLS", "ref-tools.sh"))
}

/// Runs one of llama.cpp's tools (`ref_tools()/tool`) and returns its whole
/// log (stdout then stderr, written to a file). Its logger is a thread whose
/// last lines are sometimes lost at exit: a run whose log lacks `marker` is
/// repeated, up to five times in all (common/log.cpp: logs "may be lost if
/// not flushed before the program exits").
#[allow(dead_code)]
pub fn llama_tool_log(tool: &str, args: &[&std::ffi::OsStr], marker: &str) -> String {
    let dir = cache_dir("llama-tool-logs");
    let mut last = String::new();
    for attempt in 0..5 {
        let path = dir.join(format!("{tool}-{}-{attempt}.log", std::process::id()));
        let log = std::fs::File::create(&path).unwrap();
        let status = std::process::Command::new(ref_tools().join(tool))
            .args(args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .status()
            .unwrap_or_else(|e| panic!("run {tool}: {e}"));
        last = std::fs::read_to_string(&path).unwrap_or_default();
        let _ = std::fs::remove_file(&path);
        assert!(status.success(), "{tool} failed:\n{last}");
        if last.contains(marker) {
            return last;
        }
    }
    panic!("{tool}: '{marker}' not in its log after 5 runs:\n{last}");
}

/// The reference venv's python (`$GGUFKIT_REF_PYTHON` or `scripts/ref-env.sh`).
pub fn ref_python() -> &'static Path {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| env_or_script("GGUFKIT_REF_PYTHON", "ref-env.sh"))
}

/// The pinned llama.cpp source tree (`$GGUFKIT_LLAMA_SRC` or `scripts/ref-src.sh`).
pub fn ref_src() -> &'static Path {
    static SRC: OnceLock<PathBuf> = OnceLock::new();
    SRC.get_or_init(|| env_or_script("GGUFKIT_LLAMA_SRC", "ref-src.sh"))
}

/// Runs `python <script> <args>` with the reference interpreter; panics with
/// its stderr when it fails. Returns stdout.
pub fn run_ref_python(script: &Path, args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(ref_python())
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", ref_python().display()));
    assert!(
        out.status.success(),
        "{} {} failed ({}):\n{}",
        ref_python().display(),
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A directory under cargo's per-target temporary dir for cached test artifacts.
pub fn cache_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("cannot create {}: {e}", d.display()));
    d
}

/// A test's own output directory under cargo's per-target temporary dir:
/// emptied when made, removed when the test passes and kept when it fails
/// (to look at). The suite writes gigabytes of models it only compares; kept,
/// they would fill a CI machine's disk.
pub struct Scratch(PathBuf);

impl Scratch {
    /// `name` must be unique among the tests that run at the same time.
    pub fn new(name: &str) -> Scratch {
        let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("scratch").join(name);
        if d.exists() {
            std::fs::remove_dir_all(&d).unwrap_or_else(|e| panic!("cannot empty {}: {e}", d.display()));
        }
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("cannot create {}: {e}", d.display()));
        Scratch(d)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A directory for outputs the tests of one test binary share (a model
/// converted once, then run by several tests): emptied the first time this
/// process asks for it, so it never serves an output of an earlier run's
/// `ggufkit`.
pub fn run_dir(name: &str) -> PathBuf {
    static MADE: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let mut made = MADE.lock().unwrap_or_else(|e| e.into_inner());
    if !made.iter().any(|n| n == name) {
        if d.exists() {
            std::fs::remove_dir_all(&d).unwrap_or_else(|e| panic!("cannot empty {}: {e}", d.display()));
        }
        made.push(name.to_string());
    }
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("cannot create {}: {e}", d.display()));
    d
}

/// `CARGO_TARGET_TMPDIR/<prefix>-<key>` for artifacts made by the repository
/// files `inputs` (generator scripts, the tables they read): `key` is their
/// SHA-256, so a changed generator makes a new directory, and the
/// directories of other keys (older versions) are removed.
pub fn keyed_cache_dir(prefix: &str, inputs: &[&str]) -> PathBuf {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for f in inputs {
        h.update(std::fs::read(repo_root().join(f)).unwrap_or_else(|e| panic!("read {f}: {e}")));
    }
    let key: String = h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let name = format!("{prefix}-{key}");
    if let Ok(entries) = std::fs::read_dir(&tmp) {
        for e in entries.flatten() {
            let other = e.file_name().to_string_lossy().into_owned();
            if other != name && other.strip_prefix(prefix).and_then(|r| r.strip_prefix('-')).is_some_and(is_key) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    tmp.join(name)
}

fn is_key(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The real `llama-quantize` command, compiled from the pinned llama.cpp source
/// against the reference venv's libllama (`tests/parity/synth.py build-tool`, cached).
pub fn llama_quantize_tool() -> &'static Path {
    static TOOL: OnceLock<PathBuf> = OnceLock::new();
    TOOL.get_or_init(|| {
        let synth = repo_root().join("tests/parity/synth.py");
        let out = run_ref_python(&synth, &["build-tool".as_ref(), ref_src().as_os_str()]);
        let path = PathBuf::from(out.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default().trim());
        assert!(path.exists(), "build-tool printed '{}'", path.display());
        path
    })
}

/// What scripts/gen_fixtures.py's models depend on.
pub const FIXTURE_INPUTS: &[&str] = &["scripts/gen_fixtures.py", "formats/pretokenizers.json"];

/// The fixture model directories of scripts/gen_fixtures.py, built once
/// (cached by the generator's hash under the target's temporary dir; the
/// same directory tests/convert_parity.rs uses).
pub fn fixtures_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = keyed_cache_dir("convert-fixtures", FIXTURE_INPUTS);
        let status = Command::new(ref_python())
            .arg(repo_root().join("scripts/gen_fixtures.py"))
            .arg("--llama-src")
            .arg(ref_src())
            .arg("--out")
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run gen_fixtures.py");
        assert!(status.success(), "gen_fixtures.py failed");
        dir
    })
}

/// The PEFT adapters of scripts/gen_adapters.py for those fixtures, built once
/// (cached by both generators' hashes).
pub fn adapters_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let fixtures = fixtures_dir();
        let dir = keyed_cache_dir("lora-adapters", &[FIXTURE_INPUTS, &["scripts/gen_adapters.py"]].concat());
        let status = Command::new(ref_python())
            .arg(repo_root().join("scripts/gen_adapters.py"))
            .arg("--fixtures")
            .arg(fixtures)
            .arg("--out")
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run gen_adapters.py");
        assert!(status.success(), "gen_adapters.py failed");
        dir
    })
}

/// The 256-wide llama of scripts/gen_eval_fixture.py (so that Q4_K_M uses
/// K-quants), built once (cached by the generators' hash).
pub fn eval_fixture() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = keyed_cache_dir("eval-fixture", &[FIXTURE_INPUTS, &["scripts/gen_eval_fixture.py"]].concat());
        let out = run_ref_python(
            &repo_root().join("scripts/gen_eval_fixture.py"),
            &["--llama-src".as_ref(), ref_src().as_os_str(), "--out".as_ref(), dir.as_os_str()],
        );
        PathBuf::from(out.lines().last().unwrap_or_default().trim())
    })
}

/// Output of one run of the `ggufkit` binary.
pub struct CliRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the `ggufkit` binary built for the tests.
pub fn ggufkit(args: &[&std::ffi::OsStr]) -> CliRun {
    let out = Command::new(env!("CARGO_BIN_EXE_ggufkit")).args(args).output().expect("run ggufkit");
    CliRun {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `ggufkit` and panics with its stderr unless it exits 0.
pub fn ggufkit_ok(args: &[&std::ffi::OsStr]) -> CliRun {
    let r = ggufkit(args);
    assert_eq!(r.code, 0, "ggufkit {args:?} failed:\n{}", r.stderr);
    r
}

/// The tiny models of scripts/gen_arch_fixtures.py (`names`, or its default
/// set when empty), built once per version of the generator scripts into a
/// directory keyed by their hash; the first call of a test binary decides
/// which are built (the generator skips complete ones).
#[allow(dead_code)]
pub fn arch_fixtures(names: &[&str]) -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = repo_root();
        let dir = keyed_cache_dir("arch-fixtures", &[FIXTURE_INPUTS, &["scripts/gen_arch_fixtures.py"]].concat());
        let status = std::process::Command::new(ref_python())
            .arg(root.join("scripts/gen_arch_fixtures.py"))
            .arg("--llama-src")
            .arg(ref_src())
            .arg("--out")
            .arg(&dir)
            .args(names)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run gen_arch_fixtures.py");
        assert!(status.success(), "gen_arch_fixtures.py failed");
        dir
    })
}

/// The number printed right after `label` in a tool's log (llama-perplexity's
/// `Mean KLD:` and the like).
pub fn number_after(text: &str, label: &str) -> f64 {
    let i = text.find(label).unwrap_or_else(|| panic!("'{label}' not in:\n{text}"));
    text[i + label.len()..].split_whitespace().next().unwrap().parse().unwrap()
}
