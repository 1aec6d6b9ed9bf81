//! Faults: a quantize killed half-way, a full disk, an input truncated while
//! it is read. In every case no file may be left at the destination (nor a
//! temporary file beside it), the error must say what happened, and the input
//! must be unchanged.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ggufkit::gguf::{GgmlType, GgufWriter, Metadata, TensorSpec, Value};
use sha2::{Digest, Sha256};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ggufkit")
}

/// A llama-shaped F32 GGUF with `n` matrices of `rows` x 4096 (about n*rows*16 KiB).
fn write_model(path: &Path, n: usize, rows: u64) {
    let mut md = Metadata::new();
    md.push("general.architecture", Value::string("llama"));
    md.push("llama.block_count", Value::U32(n as u32));
    md.push("llama.embedding_length", Value::U32(4096));
    md.push("llama.attention.head_count", Value::U32(32));
    md.push("llama.attention.head_count_kv", Value::U32(8));
    let specs: Vec<TensorSpec> =
        (0..n).map(|i| TensorSpec::new(format!("blk.{i}.ffn_up.weight"), vec![4096, rows], GgmlType::F32)).collect();
    let f = std::fs::File::create(path).unwrap();
    let mut w = GgufWriter::new(std::io::BufWriter::new(f), path, &md, specs).unwrap();
    let mut row = vec![0u8; 4096 * 4];
    let mut x = 0x12345678u32;
    for _ in 0..n as u64 * rows {
        for c in row.chunks_exact_mut(4) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            c.copy_from_slice(&((x as f32 / u32::MAX as f32) - 0.5).to_le_bytes());
        }
        w.write_data(&row).unwrap();
    }
    w.finish().unwrap();
}

fn sha(path: &Path) -> Vec<u8> {
    Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

/// The directory holds exactly these file names.
fn assert_only(dir: &Path, names: &[&str]) {
    let mut found: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    found.sort();
    let mut want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(found, want, "unexpected files in {}", dir.display());
}

/// Waits until a temporary output file appears in `dir` and has data.
fn wait_for_temp(child: &mut Child, dir: &Path) -> PathBuf {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("ggufkit finished ({status}) before it could be interrupted");
        }
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with('.') && name.ends_with(".tmp") && p.metadata().map(|m| m.len() > 0).unwrap_or(false) {
                return p;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(120), "no temporary output appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn spawn_quantize(input: &Path, output: &Path, ty: &str) -> Child {
    Command::new(bin())
        .args(["quantize", "--threads", "1", "--quiet"])
        .arg(input)
        .arg(output)
        .arg(ty)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn kill_midway(signal: libc::c_int, expected_code: i32) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.gguf");
    write_model(&input, 4, 2048); // 128 MiB of F32: seconds of Q6_K work
    let before = sha(&input);
    let output = dir.path().join("out.gguf");
    let mut child = spawn_quantize(&input, &output, "Q6_K");
    wait_for_temp(&mut child, dir.path());
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, signal) };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(expected_code), "stderr: {err}");
    assert!(err.contains("interrupted"), "stderr: {err}");
    assert!(!output.exists(), "a partial output was left at the destination");
    assert_only(dir.path(), &["in.gguf"]);
    assert_eq!(sha(&input), before, "the input changed");
}

#[test]
fn sigterm_leaves_no_partial_output() {
    kill_midway(libc::SIGTERM, 130);
}

#[test]
fn ctrl_c_leaves_no_partial_output() {
    kill_midway(libc::SIGINT, 130);
}

/// `ulimit -f`: the kernel refuses writes past the limit (SIGXFSZ is ignored,
/// so the write fails with EFBIG instead of killing the process).
#[test]
fn file_size_limit_leaves_no_partial_output() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.gguf");
    write_model(&input, 2, 256); // 8 MiB F32 -> 8 MiB F32 copy
    let before = sha(&input);
    let output = dir.path().join("out.gguf");
    let script =
        format!("ulimit -f 1024; exec '{}' quantize --quiet '{}' '{}' F32", bin(), input.display(), output.display());
    let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(err.contains("File too large"), "stderr: {err}");
    assert!(err.contains("out.gguf"), "the error should name the output: {err}");
    assert_only(dir.path(), &["in.gguf"]);
    assert_eq!(sha(&input), before);
}

/// A real full filesystem: a 4 MiB tmpfs (needs root and mount; skipped, loudly, without).
#[test]
fn full_disk_leaves_no_partial_output() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.gguf");
    write_model(&input, 2, 256);
    let before = sha(&input);
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let mounted =
        Command::new("mount").args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"]).arg(&mnt).status().map(|s| s.success());
    if !matches!(mounted, Ok(true)) {
        eprintln!("SKIPPED full_disk_leaves_no_partial_output: cannot mount a tmpfs here (file_size_limit covers ENOSPC-like failures)");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    let output = mnt.join("out.gguf");
    let out = Command::new(bin()).args(["quantize", "--quiet"]).arg(&input).arg(&output).arg("F32").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(err.contains("No space left on device"), "stderr: {err}");
    assert_only(&mnt, &[]);
    assert_eq!(sha(&input), before);
}

/// An input truncated while it is being read: an error, not a crash, and no output.
#[test]
fn input_truncated_while_reading() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.gguf");
    write_model(&input, 4, 2048);
    let output = dir.path().join("out.gguf");
    let mut child = spawn_quantize(&input, &output, "Q6_K");
    wait_for_temp(&mut child, dir.path());
    let f = std::fs::OpenOptions::new().write(true).open(&input).unwrap();
    f.set_len(1 << 20).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(err.contains("changed") || err.contains("truncated"), "stderr: {err}");
    assert!(!output.exists());
    assert_only(dir.path(), &["in.gguf"]);
}
