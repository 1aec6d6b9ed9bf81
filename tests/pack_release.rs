//! `ggufkit pack` on the bundled tiny model (examples/tiny-mistral): the
//! release directory against the reference tools and against itself.
//!
//! * the GGUFs equal, byte for byte, what `ggufkit convert` / `convert
//!   --outtype f32` + `ggufkit quantize` write separately (those commands are
//!   themselves checked against convert_hf_to_gguf.py and llama-quantize by
//!   the convert and quantize parity tests);
//! * they load and generate in real llama.cpp (llama-cpp-python of the
//!   reference environment), with the vocabulary and control tokens intact;
//! * the error figures of manifest.json equal an independent computation
//!   with gguf-py's dequantizers against the F32 conversion;
//! * every Modelfile passes `modelfile::check` and names its GGUF;
//!   SHA256SUMS verifies with `sha256sum -c`;
//! * two runs (different thread counts, different paths) give identical
//!   directories; refusals and failures leave nothing behind.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The types of the main test release: quantized types (k-quants with their
/// fallbacks, legacy, IQ4_NL) and every convert type.
const TYPES: &str = "Q4_K_M,Q8_0,Q6_K,Q5_K_S,Q4_0,IQ4_NL,Q3_K_M,f16,bf16,f32";
const CONVERT_TYPES: [&str; 4] = ["Q8_0", "F16", "BF16", "F32"];

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ggufkit"))
}

fn run(args: &[&std::ffi::OsStr]) -> Output {
    bin().args(args).output().expect("run ggufkit")
}

fn ok(o: &Output, what: &str) {
    assert_eq!(o.status.code(), Some(0), "{what}: {}", String::from_utf8_lossy(&o.stderr));
}

fn example() -> PathBuf {
    common::repo_root().join("examples/tiny-mistral")
}

fn sha(path: &Path) -> String {
    Sha256::digest(std::fs::read(path).unwrap()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Every file of a directory (no subdirectories expected) with its SHA-256.
fn dir_hashes(dir: &Path) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        assert!(e.file_type().unwrap().is_file(), "{} is not a file", e.path().display());
        m.insert(e.file_name().to_string_lossy().into_owned(), sha(&e.path()));
    }
    m
}

fn pack(src: &Path, dest: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<&std::ffi::OsStr> = vec!["pack".as_ref(), src.as_os_str(), "-o".as_ref(), dest.as_os_str()];
    args.extend(extra.iter().map(|s| s.as_ref() as &std::ffi::OsStr));
    run(&args)
}

struct Release {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    manifest: Value,
    json: Value,
}

/// The main release, packed once for all tests.
fn release() -> &'static Release {
    static R: OnceLock<Release> = OnceLock::new();
    R.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("release");
        let o = pack(&example(), &dir, &["--types", TYPES, "--threads", "2", "--json"]);
        ok(&o, "pack");
        let json: Value = serde_json::from_slice(&o.stdout).expect("--json output");
        let manifest: Value = serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
        Release { _tmp: tmp, dir, manifest, json }
    })
}

fn outputs(r: &Release) -> &Vec<Value> {
    r.manifest["outputs"].as_array().unwrap()
}

#[test]
fn release_layout_and_manifest() {
    let r = release();
    let files = dir_hashes(&r.dir);
    let outs = outputs(r);
    assert_eq!(outs.len(), 10);
    // GGUF's naming convention: basename (from the directory name), size label.
    let name = r.manifest["name"].as_str().unwrap();
    assert_eq!(name, "Tiny-Mistral-2.2M");
    let mut expect: Vec<String> = vec!["SHA256SUMS".into(), "manifest.json".into()];
    for o in outs {
        let ty = o["type"].as_str().unwrap();
        assert_eq!(o["file"], format!("{name}-{ty}.gguf"));
        assert_eq!(o["modelfile"]["file"], format!("Modelfile.{ty}"));
        expect.push(format!("{name}-{ty}.gguf"));
        expect.push(format!("Modelfile.{ty}"));
        // Size, hash and tensor types are those of the file.
        let path = r.dir.join(o["file"].as_str().unwrap());
        assert_eq!(o["size"].as_u64().unwrap(), std::fs::metadata(&path).unwrap().len());
        assert_eq!(o["sha256"].as_str().unwrap(), sha(&path));
        let g = ggufkit::gguf::GgufFile::open(&path).unwrap();
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for t in &g.header.tensors {
            *counts.entry(t.ty.name().to_string()).or_default() += 1;
        }
        let got: BTreeMap<String, u64> =
            o["tensor_types"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap())).collect();
        assert_eq!(got, counts, "{ty}");
        assert_eq!(o["tensor_count"].as_u64().unwrap(), g.header.tensors.len() as u64);
        assert_eq!(g.header.metadata.get_u64("general.file_type").unwrap(), o["file_type"].as_u64().unwrap(), "{ty}");
        assert_eq!(o["modelfile"]["sha256"].as_str().unwrap(), sha(&r.dir.join(format!("Modelfile.{ty}"))));
        assert_eq!(o["modelfile"]["family"], "mistral");
        assert_eq!(o["modelfile"]["stop"], serde_json::json!(["[INST]", "[/INST]"]));
    }
    expect.sort();
    assert_eq!(files.keys().cloned().collect::<Vec<_>>(), expect);
    // Outputs sorted by file name.
    let names: Vec<&str> = outs.iter().map(|o| o["file"].as_str().unwrap()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);

    // Sources: relative paths, sizes and hashes of the real files.
    assert_eq!(r.manifest["tool"]["name"], "ggufkit");
    assert_eq!(r.manifest["tool"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(r.manifest["source"]["dir"], "tiny-mistral");
    assert_eq!(r.manifest["source"]["architecture"], "MistralForCausalLM");
    let src: Vec<&str> =
        r.manifest["source"]["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(
        src,
        [
            "README.md",
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "tokenizer.model",
            "tokenizer_config.json"
        ]
    );
    for f in r.manifest["source"]["files"].as_array().unwrap() {
        let p = example().join(f["path"].as_str().unwrap());
        assert_eq!(f["sha256"].as_str().unwrap(), sha(&p));
        assert_eq!(f["size"].as_u64().unwrap(), std::fs::metadata(&p).unwrap().len());
    }
    assert_eq!(r.manifest["adapters"], serde_json::json!([]));
    // No absolute paths anywhere in the release's text files.
    for f in ["manifest.json", "SHA256SUMS"]
        .iter()
        .map(|s| s.to_string())
        .chain(outs.iter().map(|o| o["modelfile"]["file"].as_str().unwrap().to_string()))
    {
        let text = std::fs::read_to_string(r.dir.join(&f)).unwrap();
        for needle in [r.dir.to_str().unwrap(), example().to_str().unwrap(), "/tmp/", "/root/", "/home/"] {
            assert!(!text.contains(needle), "{f} contains {needle}");
        }
    }
    // --json: the same manifest, and the files with their hashes.
    assert_eq!(r.json["manifest"], r.manifest);
    let listed: BTreeMap<String, String> = r.json["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap().to_string(), f["sha256"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(listed, files);
}

#[test]
fn sha256sums_verifies_with_sha256sum() {
    let r = release();
    let sums = std::fs::read_to_string(r.dir.join("SHA256SUMS")).unwrap();
    let names: Vec<&str> = sums.lines().map(|l| l.split_once("  ").unwrap().1).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "sorted by name");
    let all: Vec<String> = dir_hashes(&r.dir).into_keys().filter(|n| n != "SHA256SUMS").collect();
    assert_eq!(names, all, "covers every other file");
    for l in sums.lines() {
        let (h, _) = l.split_once("  ").unwrap();
        assert!(h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    }
    let o = Command::new("sha256sum").args(["-c", "--strict", "SHA256SUMS"]).current_dir(&r.dir).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stdout));
    assert_eq!(String::from_utf8_lossy(&o.stdout).matches(": OK").count(), all.len());
}

#[test]
fn modelfiles_pass_ollama_grammar() {
    let r = release();
    for o in outputs(r) {
        let path = r.dir.join(o["modelfile"]["file"].as_str().unwrap());
        let text = ggufkit::modelfile::decode(&std::fs::read(&path).unwrap());
        let mf = ggufkit::modelfile::check(&text).unwrap_or_else(|d| panic!("{}: {d:?}", path.display()));
        let from = mf.commands().into_iter().find_map(|c| match c {
            ggufkit::modelfile::Command::From(f) => Some(f),
            _ => None,
        });
        assert_eq!(from.as_deref(), Some(format!("./{}", o["file"].as_str().unwrap()).as_str()));
        assert!(text.contains("TEMPLATE"), "{}", path.display());
        assert!(text.contains("PARAMETER stop \"[INST]\"") || text.contains("PARAMETER stop [INST]"), "{text}");
        assert!(text.contains("LICENSE"), "the model card's license reaches the Modelfile");
    }
}

/// Each GGUF is what the separate commands write: `convert --outtype T` for
/// convert_hf_to_gguf.py's types, `convert --outtype f32` + `quantize T` otherwise.
#[test]
fn outputs_equal_convert_and_quantize() {
    let r = release();
    let tmp = tempfile::tempdir().unwrap();
    let f32_path = tmp.path().join("f32.gguf");
    ok(
        &run(&[
            "convert".as_ref(),
            example().as_os_str(),
            f32_path.as_os_str(),
            "--outtype".as_ref(),
            "f32".as_ref(),
            "-q".as_ref(),
        ]),
        "convert f32",
    );
    let mut compared = 0u64;
    for o in outputs(r) {
        let ty = o["type"].as_str().unwrap();
        let separate = tmp.path().join(format!("{ty}.gguf"));
        if CONVERT_TYPES.contains(&ty) {
            assert_eq!(o["made_as"], format!("convert --outtype {}", ty.to_ascii_lowercase()));
            let out = run(&[
                "convert".as_ref(),
                example().as_os_str(),
                separate.as_os_str(),
                "--outtype".as_ref(),
                ty.to_ascii_lowercase().as_ref(),
                "-q".as_ref(),
            ]);
            ok(&out, ty);
        } else {
            assert_eq!(o["made_as"], format!("convert --outtype f32 | quantize {ty}"));
            let out =
                run(&["quantize".as_ref(), f32_path.as_os_str(), separate.as_os_str(), ty.as_ref(), "-q".as_ref()]);
            ok(&out, ty);
        }
        let a = std::fs::read(r.dir.join(o["file"].as_str().unwrap())).unwrap();
        let b = std::fs::read(&separate).unwrap();
        assert!(a == b, "{ty}: pack's file differs from the separate commands' ({} vs {} bytes)", a.len(), b.len());
        compared += a.len() as u64;
    }
    eprintln!("compared {compared} bytes in {} files", outputs(r).len());
}

#[test]
fn pack_is_deterministic() {
    let r = release();
    // Another thread count, another (relative) path, types in another order and spelling.
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("deeper").join("again");
    let types = "f32,bf16,f16,Q3_K,iq4_nl,q4_0,Q5_K_S,q6_k,q8_0,q4_k";
    let o = pack(&example(), &dest, &["--types", types, "--threads", "1", "-q"]);
    ok(&o, "second pack");
    assert_eq!(dir_hashes(&dest), dir_hashes(&r.dir));
    // And again with --force over it: still the same.
    let o = pack(&example(), &dest, &["--types", TYPES, "--force", "-q"]);
    ok(&o, "third pack");
    assert_eq!(dir_hashes(&dest), dir_hashes(&r.dir));
}

const LOAD_PY: &str = r#"
import json, sys, glob, os
import numpy as np
from llama_cpp import Llama
import sentencepiece
sp = sentencepiece.SentencePieceProcessor(model_file=sys.argv[2])
out = {}
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.gguf"))):
    llm = Llama(model_path=path, n_ctx=128, n_threads=2, seed=0, logits_all=False, verbose=False)
    inst = llm.tokenize(b"[INST]", add_bos=False, special=True)
    prompt = llm.tokenize(b"[INST] Write a haiku about GGUF. [/INST]", add_bos=True, special=True)
    llm.eval(prompt)
    finite = bool(np.isfinite(np.asarray(llm.scores[llm.n_tokens - 1])).all())
    llm.reset()
    gen = []
    for tok in llm.generate(prompt, temp=0.0):
        gen.append(int(tok))
        if len(gen) == 6:
            break
    text = "Hello world, write a haiku about GGUF files."
    plain = llm.tokenize(text.encode(), add_bos=False, special=False)
    out[os.path.basename(path)] = {"n_vocab": llm.n_vocab(), "inst": inst, "prompt": prompt[:2],
                                   "generated": gen, "finite": finite,
                                   "plain_matches_sentencepiece": plain == sp.encode(text)}
    del llm
print(json.dumps(out))
"#;

/// The GGUFs load in real llama.cpp and generate; the vocabulary is the
/// Llama-2 SentencePiece one plus the two control tokens.
#[test]
fn release_loads_and_generates_in_llama_cpp() {
    if !common::parity_enabled("pack_release::release_loads_and_generates_in_llama_cpp") {
        return;
    }
    let r = release();
    let o = Command::new(common::ref_python())
        .arg("-c")
        .arg(LOAD_PY)
        .arg(&r.dir)
        .arg(example().join("tokenizer.model"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let got: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let got = got.as_object().unwrap();
    assert_eq!(got.len(), outputs(r).len());
    for (file, g) in got {
        assert_eq!(g["n_vocab"], 32002, "{file}");
        assert_eq!(g["inst"], serde_json::json!([32000]), "{file}: [INST] is one control token");
        assert_eq!(g["prompt"], serde_json::json!([1, 32000]), "{file}: BOS, [INST]");
        assert_eq!(g["plain_matches_sentencepiece"], true, "{file}: llama.cpp and sentencepiece tokenize alike");
        assert_eq!(g["generated"].as_array().unwrap().len(), 6, "{file}");
        assert_eq!(g["finite"], true, "{file}");
    }
}

const QUALITY_PY: &str = r#"
import json, sys
import numpy as np
import gguf
from gguf.quants import dequantize
ref = {t.name: np.asarray(t.data, dtype=np.float64).reshape(-1) for t in gguf.GGUFReader(sys.argv[1]).tensors}
out = {}
for path in sys.argv[2:]:
    se = sr = n = 0.0
    mx = 0.0
    for t in gguf.GGUFReader(path).tensors:
        y = dequantize(t.data, t.tensor_type).astype(np.float64).reshape(-1)
        x = ref[t.name]
        d = x - y
        se += float(np.dot(d, d)); sr += float(np.dot(x, x)); n += x.size
        mx = max(mx, float(np.abs(d).max()))
    out[path] = {"rms": (se / n) ** 0.5, "rel": (se / sr) ** 0.5, "max": mx}
print(json.dumps(out))
"#;

/// The manifest's error figures against an independent computation: gguf-py
/// dequantizes each output and compares it with the F32 conversion.
#[test]
fn quality_figures_match_gguf_py() {
    if !common::parity_enabled("pack_release::quality_figures_match_gguf_py") {
        return;
    }
    let r = release();
    let outs = outputs(r);
    let f32_file = r.dir.join(outs.iter().find(|o| o["type"] == "F32").unwrap()["file"].as_str().unwrap());
    let mut cmd = Command::new(common::ref_python());
    cmd.arg("-c").arg(QUALITY_PY).arg(&f32_file);
    for o in outs {
        cmd.arg(r.dir.join(o["file"].as_str().unwrap()));
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let got: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * b.abs().max(1e-12);
    for o in outs {
        let ty = o["type"].as_str().unwrap();
        let g = &got[r.dir.join(o["file"].as_str().unwrap()).to_str().unwrap()];
        let q = &o["quality"];
        let (rms, rel, max) = (
            q["rms_error"].as_f64().unwrap(),
            q["relative_rms_error"].as_f64().unwrap(),
            q["max_abs_error"].as_f64().unwrap(),
        );
        assert!(close(rms, g["rms"].as_f64().unwrap()), "{ty}: rms {rms} vs {}", g["rms"]);
        assert!(close(rel, g["rel"].as_f64().unwrap()), "{ty}: relative {rel} vs {}", g["rel"]);
        assert!(close(max, g["max"].as_f64().unwrap()), "{ty}: max {max} vs {}", g["max"]);
        match ty {
            "F32" => assert_eq!(rel, 0.0),
            // The bf16 weights are exact in BF16 and F16 (small values); 8-bit types err less than 4-bit ones.
            "BF16" => assert_eq!(rel, 0.0),
            _ => assert!(rel > 0.0 && rel < 0.2, "{ty}: {rel}"),
        }
        eprintln!("{ty:>7}: relative RMS error {rel:.3e}, max {max:.3e}");
    }
    let rel =
        |t: &str| outs.iter().find(|o| o["type"] == t).unwrap()["quality"]["relative_rms_error"].as_f64().unwrap();
    assert!(rel("Q8_0") < rel("Q6_K") && rel("Q6_K") < rel("Q4_K_M") && rel("Q4_K_M") < rel("Q3_K_M"));
}

fn leftovers(parent: &Path) -> Vec<String> {
    std::fs::read_dir(parent).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

#[test]
fn refuses_non_empty_dir_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("rel");
    std::fs::create_dir(&dest).unwrap();
    std::fs::write(dest.join("keep.txt"), b"mine").unwrap();
    let o = pack(&example(), &dest, &["--types", "Q8_0"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not empty") && err.contains("--force"), "{err}");
    assert_eq!(leftovers(&dest), ["keep.txt"]);
    assert_eq!(leftovers(tmp.path()), ["rel"]);
    // An empty directory is fine; --force replaces a non-empty one.
    let o = pack(&example(), &dest, &["--types", "Q8_0", "--force", "-q"]);
    ok(&o, "--force");
    assert!(!dest.join("keep.txt").exists());
    assert!(dest.join("SHA256SUMS").exists());
    assert_eq!(leftovers(tmp.path()), ["rel"]);
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    ok(&pack(&example(), &empty, &["--types", "Q8_0", "-q"]), "empty dir");
}

#[test]
fn errors_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("rel");
    let cases: [(&[&str], &str); 6] = [
        (&["--types", "Q4_K_M,Q9_X"], "unknown type 'Q9_X'"),
        (&["--types", "Q4_K_M,,Q8_0"], "empty item"),
        (&["--types", "Q4_K_M,Q4_K"], "same output"),
        (&["--types", "bf16,auto"], "both give the BF16 file"),
        (&["--types", "IQ2_XXS"], "importance matrix"),
        (&["--types", "Q8_0", "--parameter", "temprature=0.2"], "temprature"),
    ];
    for (args, msg) in cases {
        let o = pack(&example(), &dest, args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(msg), "{args:?}: {err}");
        assert!(leftovers(tmp.path()).is_empty(), "{args:?} left {:?}", leftovers(tmp.path()));
    }
    for (args, msg) in [
        (vec!["--types", "Q8_0", "--name", "../x"], "--name"),
        (vec!["--types", "Q8_0", "--threads", "0"], "--threads"),
        (vec!["--types", "Q8_0", "--lora", "/nonexistent/adapter"], "/nonexistent/adapter"),
    ] {
        let o = pack(&example(), &dest, &args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&o.stderr).contains(msg), "{args:?}");
        assert!(leftovers(tmp.path()).is_empty());
    }
    // Writing over the input is refused, even with --force.
    let o = pack(&example(), &example(), &["--types", "Q8_0", "--force"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("inside it"));
    assert!(example().join("model.safetensors").exists());
}

/// A failure half-way through the pass (a NaN in the last layer's weights,
/// met after every output has started) leaves neither the release nor any
/// temporary file, and an existing release replaced with --force survives.
#[test]
fn failure_mid_way_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("broken");
    std::fs::create_dir(&model).unwrap();
    for e in std::fs::read_dir(example()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), model.join(e.file_name())).unwrap();
    }
    // Put a bf16 NaN into the middle of the last tensor the pass reads.
    let st = model.join("model.safetensors");
    let mut bytes = std::fs::read(&st).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let name = "model.layers.1.self_attn.v_proj.weight";
    let offs = header[name]["data_offsets"].as_array().unwrap();
    let mid = 8 + n + (offs[0].as_u64().unwrap() as usize + offs[1].as_u64().unwrap() as usize) / 2;
    bytes[mid..mid + 2].copy_from_slice(&0x7fc0u16.to_le_bytes());
    std::fs::write(&st, bytes).unwrap();

    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let dest = out.join("rel");
    let o = pack(&model, &dest, &["--types", "Q4_K_M,Q8_0,f16"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("blk.1.attn_v.weight") && err.contains("non-finite"), "{err}");
    assert!(leftovers(&out).is_empty(), "left {:?}", leftovers(&out));

    ok(&pack(&example(), &dest, &["--types", "Q8_0", "-q"]), "good release");
    let before = dir_hashes(&dest);
    let o = pack(&model, &dest, &["--types", "Q4_K_M,Q8_0,f16", "--force"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(dir_hashes(&dest), before, "the old release is intact");
    assert_eq!(leftovers(&out), ["rel"]);
}

/// With an adapter, each GGUF of the release is byte-identical to what
/// `merge BASE --lora A=W -o NAME-TYPE.gguf --outtype TYPE` writes, differs
/// from the base model's release, is reproducible, and the manifest records
/// the adapter (files with hashes, weight).
#[test]
fn lora_release_equals_merge() {
    let tmp = tempfile::tempdir().unwrap();
    let adapter = common::repo_root().join("examples/tiny-mistral-lora");
    let lora = format!("{}=0.5", adapter.display());
    let types = "Q4_K_M,Q8_0,f16";
    let (d1, d2) = (tmp.path().join("rel1"), tmp.path().join("rel2"));
    ok(&pack(&example(), &d1, &["--types", types, "--lora", &lora, "--threads", "2"]), "pack --lora");
    ok(&pack(&example(), &d2, &["--types", "f16,Q8_0,Q4_K_M", "--lora", &lora, "--threads", "1"]), "pack --lora again");
    assert_eq!(dir_hashes(&d1), dir_hashes(&d2), "pack --lora is deterministic");

    let manifest: Value = serde_json::from_slice(&std::fs::read(d1.join("manifest.json")).unwrap()).unwrap();
    let adapters = manifest["adapters"].as_array().unwrap();
    assert_eq!(adapters.len(), 1, "{manifest}");
    assert_eq!(adapters[0]["weight"].as_f64(), Some(0.5), "{manifest}");
    let text = adapters[0].to_string();
    assert!(
        text.contains("adapter_model.safetensors") && text.contains(&sha(&adapter.join("adapter_model.safetensors")))
    );

    let base_release = release();
    let mut compared = 0;
    for o in manifest["outputs"].as_array().unwrap() {
        let file = o["file"].as_str().unwrap();
        let ty = o["type"].as_str().unwrap();
        let separate = tmp.path().join("merged").join(file);
        std::fs::create_dir_all(separate.parent().unwrap()).unwrap();
        let merged = run(&[
            "merge".as_ref(),
            example().as_os_str(),
            "--lora".as_ref(),
            lora.as_ref(),
            "-o".as_ref(),
            separate.as_os_str(),
            "--outtype".as_ref(),
            ty.as_ref(),
            "-q".as_ref(),
        ]);
        ok(&merged, &format!("merge --outtype {ty}"));
        let a = std::fs::read(d1.join(file)).unwrap();
        assert!(a == std::fs::read(&separate).unwrap(), "{ty}: pack --lora differs from merge --outtype {ty}");
        // The adapter changed the weights: the same type without it differs.
        if let Some(b) = outputs(base_release).iter().find(|b| b["type"] == o["type"]) {
            let base = std::fs::read(base_release.dir.join(b["file"].as_str().unwrap())).unwrap();
            assert!(base != a, "{ty}: the adapter made no difference");
        }
        compared += 1;
    }
    assert_eq!(compared, 3);
    assert!(leftovers(tmp.path()).iter().all(|n| n == "rel1" || n == "rel2" || n == "merged"));
}

/// The committed example is exactly what scripts/gen_example.py generates.
#[test]
fn example_is_what_the_generator_writes() {
    if !common::parity_enabled("pack_release::example_is_what_the_generator_writes") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let script = common::repo_root().join("scripts/gen_example.py");
    common::run_ref_python(
        &script,
        &["--llama-src".as_ref(), common::ref_src().as_os_str(), "--out".as_ref(), tmp.path().as_os_str()],
    );
    for d in ["tiny-mistral", "tiny-mistral-lora"] {
        assert_eq!(
            dir_hashes(&tmp.path().join(d)),
            dir_hashes(&common::repo_root().join("examples").join(d)),
            "examples/{d} differs from what scripts/gen_example.py writes"
        );
    }
    let total: u64 = ["tiny-mistral", "tiny-mistral-lora"]
        .iter()
        .flat_map(|d| std::fs::read_dir(common::repo_root().join("examples").join(d)).unwrap())
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(total <= 5_000_000, "the bundled example is {total} bytes");
}

/// A fixture of scripts/gen_fixtures.py (cached per generator version).
fn fixture(name: &str) -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let script = common::repo_root().join("scripts/gen_fixtures.py");
    let dir = common::keyed_cache_dir("pack-fixtures", common::FIXTURE_INPUTS);
    std::fs::create_dir_all(&dir).unwrap();
    common::run_ref_python(
        &script,
        &["--llama-src".as_ref(), common::ref_src().as_os_str(), "--out".as_ref(), dir.as_os_str(), name.as_ref()],
    );
    dir.join(name)
}

/// A sharded bf16 Qwen2.5-Coder-like model with a BPE tokenizer.json: the
/// release's GGUFs equal the library's separate conversions; the manifest
/// lists the shards and the index; the Modelfiles get the Qwen template.
#[test]
fn sharded_qwen_model() {
    if !common::parity_enabled("pack_release::sharded_qwen_model") {
        return;
    }
    use ggufkit::convert::{convert_dir, convert_dir_quantized, ConvertOptions, OutType};
    use ggufkit::policy::{FileType, Options};
    use ggufkit::progress::NoProgress;
    let model = fixture("qwen2.5-coder-bf16-sharded");
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("rel");
    let o = pack(&model, &dest, &["--types", "Q4_K_M,auto,Q5_0", "--name", "acme-coder", "--json"]);
    ok(&o, "pack qwen");
    let manifest: Value = serde_json::from_slice(&std::fs::read(dest.join("manifest.json")).unwrap()).unwrap();
    let files: Vec<&str> =
        manifest["source"]["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    for f in [
        "model-00001-of-00003.safetensors",
        "model-00002-of-00003.safetensors",
        "model-00003-of-00003.safetensors",
        "model.safetensors.index.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "config.json",
    ] {
        assert!(files.contains(&f), "{f} not in {files:?}");
    }
    let sep = tmp.path().join("separate");
    std::fs::create_dir(&sep).unwrap();
    let auto = sep.join("auto.gguf");
    convert_dir(&model, &auto, &ConvertOptions { outtype: OutType::Auto, ..Default::default() }, &NoProgress).unwrap();
    assert_eq!(std::fs::read(dest.join("acme-coder-BF16.gguf")).unwrap(), std::fs::read(&auto).unwrap());
    for (ty, ft) in [("Q4_K_M", FileType::Q4_K_M), ("Q5_0", FileType::Q5_0)] {
        let path = sep.join(format!("{ty}.gguf"));
        convert_dir_quantized(&model, &path, &ConvertOptions::default(), &Options::new(ft), None, &NoProgress).unwrap();
        assert_eq!(
            std::fs::read(dest.join(format!("acme-coder-{ty}.gguf"))).unwrap(),
            std::fs::read(&path).unwrap(),
            "{ty}"
        );
    }
    for o in manifest["outputs"].as_array().unwrap() {
        assert_eq!(o["modelfile"]["family"], "qwen2.5-coder", "{}", o["type"]);
        assert!(o["modelfile"]["stop"].as_array().unwrap().contains(&serde_json::json!("<|im_end|>")));
    }
}

/// SIGTERM half-way through the pass: exit code 130, no release, no
/// temporary directory or file.
#[test]
fn interrupted_pack_leaves_nothing() {
    if !common::parity_enabled("pack_release::interrupted_pack_leaves_nothing") {
        return;
    }
    let model = fixture("qwen2.5-coder-bf16-sharded");
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("rel");
    let mut child = bin()
        .args(["pack", "--threads", "1", "-q", "--types", "Q4_K_M,Q5_K_M,Q6_K,IQ4_XS,Q3_K_L,f32,f16", "-o"])
        .arg(&dest)
        .arg(&model)
        .spawn()
        .unwrap();
    // Wait until the temporary release directory holds a GGUF being written.
    let start = std::time::Instant::now();
    'wait: loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("pack finished ({status}) before it could be interrupted");
        }
        for e in std::fs::read_dir(tmp.path()).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() && p.file_name().unwrap().to_string_lossy().ends_with(".tmpdir") {
                for f in std::fs::read_dir(&p).into_iter().flatten() {
                    if f.map(|f| f.metadata().map(|m| m.len() > 1 << 20).unwrap_or(false)).unwrap_or(false) {
                        break 'wait;
                    }
                }
            }
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(120), "no temporary release appeared");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    // SAFETY: signalling the child we spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(leftovers(tmp.path()).is_empty(), "left {:?}", leftovers(tmp.path()));
}

/// A text for `--eval` / `--imatrix-text`: the repository's README, repeated
/// (several chunks at a small context).
fn eval_text(dir: &Path) -> PathBuf {
    let readme = std::fs::read_to_string(common::repo_root().join("README.md")).unwrap();
    let text: String = std::iter::repeat_n(readme.as_str(), 3).collect::<Vec<_>>().join("\n\n");
    let p = dir.join("eval.txt");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn eval_scores_every_output_and_records_it() {
    let tmp = tempfile::tempdir().unwrap();
    let text = eval_text(tmp.path());
    let dest = tmp.path().join("rel");
    let args = ["--types", "Q8_0,F16,Q4_K_M", "--eval", text.to_str().unwrap(), "--eval-ctx", "64"];
    let mut a = args.to_vec();
    a.extend(["--eval-chunks", "6", "--threads", "2", "-q"]);
    ok(&pack(&example(), &dest, &a), "pack --eval");
    let m: Value = serde_json::from_slice(&std::fs::read(dest.join("manifest.json")).unwrap()).unwrap();
    let ev = &m["eval"];
    assert_eq!(ev["text"]["file"], "eval.txt");
    assert_eq!(ev["text"]["sha256"].as_str().unwrap(), sha(&text));
    assert_eq!((ev["ctx"].as_u64(), ev["chunks"].as_u64()), (Some(64), Some(6)));
    assert!(m.get("imatrix").is_none());
    for o in m["outputs"].as_array().unwrap() {
        let ty = o["type"].as_str().unwrap();
        let e = &o["eval"];
        assert_eq!(e["chunks"].as_u64(), Some(6), "{ty}");
        assert_eq!(e["tokens"].as_u64(), Some(6 * (64 - 1 - 32)), "{ty}");
        let ppl = e["ppl"].as_f64().unwrap();
        assert!(ppl.is_finite() && ppl > 1.0, "{ty}: PPL {ppl}");
        let kld = e["kld"]["mean"].as_f64().unwrap();
        for key in ["same_top", "rms_dp", "ppl_ratio"] {
            assert!(e[key].as_f64().unwrap().is_finite(), "{ty}: {key}");
        }
        match ty {
            "Q8_0" => assert!(kld > 0.0 && kld < 0.01, "Q8_0: mean KLD {kld}"),
            "F16" => assert!(kld.abs() < 1e-4, "F16: mean KLD {kld}"),
            _ => assert!(kld > 0.0 && kld < 0.5, "{ty}: mean KLD {kld}"),
        }
        // The Modelfile's verification, in the manifest and its header comment.
        let v = &o["modelfile"]["verified"];
        assert!(v["conversations"].as_u64().unwrap() > 0, "{ty}");
        assert_eq!(v["identical"], v["conversations"], "{ty}");
        assert_eq!(v["differences"].as_array().unwrap().len(), 0);
        let mf = std::fs::read_to_string(dest.join(o["modelfile"]["file"].as_str().unwrap())).unwrap();
        assert!(mf.contains("# TEMPLATE verified: renders exactly like the GGUF's chat template"), "{mf}");
    }
    // The same run again gives the same manifest (the evaluation is reproducible).
    let dest2 = tmp.path().join("rel2");
    ok(&pack(&example(), &dest2, &a), "pack --eval again");
    assert_eq!(dir_hashes(&dest), dir_hashes(&dest2));

    // Bad texts: a clear error, exit 2, nothing left behind.
    let short = tmp.path().join("short.txt");
    std::fs::write(&short, "Just a few words.").unwrap();
    let empty = tmp.path().join("empty.txt");
    std::fs::write(&empty, " \n").unwrap();
    let bad = tmp.path().join("bad");
    for (flag, file, msg) in [
        ("--eval", "/nonexistent/text.txt", "/nonexistent/text.txt"),
        ("--eval", short.to_str().unwrap(), "two chunks"),
        ("--eval", empty.to_str().unwrap(), "empty"),
        ("--imatrix-text", short.to_str().unwrap(), "two chunks"),
    ] {
        let o = pack(&example(), &bad, &["--types", "Q4_K_M", flag, file, "-q"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{flag} {file}: {err}");
        assert!(err.contains(msg), "{flag} {file}: {err}");
        assert!(!bad.exists());
    }
    let o = pack(&example(), &bad, &["--types", "Q8_0", "--imatrix-text", text.to_str().unwrap(), "-q"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("quantized output types"));
    assert!(!bad.exists());
}

#[test]
fn imatrix_text_ships_and_is_used() {
    let tmp = tempfile::tempdir().unwrap();
    let text = eval_text(tmp.path());
    let dest = tmp.path().join("rel");
    let t = text.to_str().unwrap();
    let args = ["--types", "IQ4_XS,Q4_K_M,Q8_0", "--imatrix-text", t, "--imatrix-ctx", "64", "-q"];
    ok(&pack(&example(), &dest, &args), "pack --imatrix-text");
    let m: Value = serde_json::from_slice(&std::fs::read(dest.join("manifest.json")).unwrap()).unwrap();
    let name = m["name"].as_str().unwrap();
    let file = format!("{name}.imatrix.gguf");
    let im = &m["imatrix"];
    assert_eq!(im["file"].as_str(), Some(file.as_str()));
    assert_eq!(im["sha256"].as_str().unwrap(), sha(&dest.join(&file)));
    assert_eq!(im["text"]["sha256"].as_str().unwrap(), sha(&text));
    assert!(im["chunks"].as_u64().unwrap() >= 2);
    assert_eq!(im["ctx"].as_u64(), Some(64));
    assert_eq!(im["used_by"], serde_json::json!(["IQ4_XS", "Q4_K_M"]));
    let sums = std::fs::read_to_string(dest.join("SHA256SUMS")).unwrap();
    assert!(sums.contains(&format!("{}  {file}\n", sha(&dest.join(&file)))), "{sums}");
    // Each quantized output is what `quantize --imatrix` writes from that file.
    let f32 = tmp.path().join("f32.gguf");
    ok(
        &run(&[
            "convert".as_ref(),
            example().as_os_str(),
            f32.as_os_str(),
            "--outtype".as_ref(),
            "f32".as_ref(),
            "-q".as_ref(),
        ]),
        "convert",
    );
    for ty in ["IQ4_XS", "Q4_K_M"] {
        let o = m["outputs"].as_array().unwrap().iter().find(|o| o["type"] == ty).unwrap();
        assert_eq!(o["made_as"], format!("convert --outtype f32 | quantize --imatrix {file} {ty}"));
        let g = ggufkit::gguf::GgufFile::open(dest.join(o["file"].as_str().unwrap())).unwrap();
        assert_eq!(g.header.metadata.get_str("quantize.imatrix.file"), Some(file.as_str()));
        assert_eq!(g.header.metadata.get_str("quantize.imatrix.dataset"), Some("eval.txt"));
        let q = tmp.path().join(format!("{ty}.gguf"));
        let out = bin()
            .current_dir(&dest)
            .args([
                "quantize".as_ref(),
                f32.as_os_str(),
                q.as_os_str(),
                ty.as_ref(),
                "--imatrix".as_ref(),
                file.as_ref(),
                "-q".as_ref(),
            ])
            .output()
            .unwrap();
        ok(&out, "quantize --imatrix");
        assert_eq!(sha(&q), o["sha256"].as_str().unwrap(), "{ty}");
    }
    // The imatrix reader loads the shipped file.
    assert!(!ggufkit::imatrix::Imatrix::load(dest.join(&file)).unwrap().is_empty());
}
