//! Parity of the quantization policy (`ggufkit::policy`, `ggufkit::imatrix`)
//! with real llama.cpp, the pinned build in the reference environment.
//!
//! Three oracles, all llama.cpp's own code:
//! - `llama_model_quantize` through ctypes (`tests/parity/synth.py quantize`):
//!   synthetic models × file types × options; the output GGUF headers (tensor
//!   order, names, shapes, types, sizes; metadata keys, order, types, values)
//!   are compared with our plan, and a refusal by llama.cpp with an error
//!   from our plan.
//! - `llama_quant_compute_types` (`synth.py sweep`): llama.cpp's type choice
//!   on mock models, for a broad sweep of layer counts, head ratios, experts,
//!   row lengths, architectures, file types and options, without files.
//! - the real `llama-quantize` command built from the pinned source
//!   (`synth.py build-tool`): importance matrices in both formats,
//!   `--override-kv` strings, `--tensor-type` patterns, file-type names, and
//!   its `load_imatrix` vectors (`--dump-imatrix`, see
//!   `tests/parity/quantize_driver.cpp`) against our loader.
//!
//! Run with `--nocapture` to see the comparison tables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{json, Value as J};

use ggufkit::gguf::{GgmlType, Gguf, GgufFile, Metadata, TensorInfo, Value};
use ggufkit::imatrix::Imatrix;
use ggufkit::policy::{
    self, decide_types, file_types, parse_target, plan, FileType, KvOverride, Options, OverrideValue, Plan, Target,
    TensorTypeRule, ALL_FILE_TYPES,
};

// ---------------------------------------------------------------------------------------------
// environment

struct Env {
    python: PathBuf,
    src: PathBuf,
    dir: PathBuf,
    models: BTreeMap<String, J>,
}

mod common;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn synth(env: &Env, args: &[&str]) -> String {
    let out =
        Command::new(&env.python).arg(repo().join("tests/parity/synth.py")).args(args).output().expect("run synth.py");
    assert!(
        out.status.success(),
        "synth.py {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let python = common::ref_python().to_path_buf();
        let src = common::ref_src().to_path_buf();
        // the models depend only on synth.py
        let dir = common::keyed_cache_dir("policy-parity", &["tests/parity/synth.py"]);
        std::fs::create_dir_all(&dir).unwrap();
        let mut env = Env { python, src, dir: dir.clone(), models: BTreeMap::new() };
        synth(&env, &["models", dir.join("models").to_str().unwrap()]);
        let manifest: Vec<J> =
            serde_json::from_slice(&std::fs::read(dir.join("models/manifest.json")).unwrap()).unwrap();
        env.models = manifest.into_iter().map(|m| (m["name"].as_str().unwrap().to_string(), m)).collect();
        env
    })
}

fn tool() -> &'static PathBuf {
    static TOOL: OnceLock<PathBuf> = OnceLock::new();
    TOOL.get_or_init(|| PathBuf::from(synth(env(), &["build-tool", env().src.to_str().unwrap()])))
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn model_path(name: &str) -> PathBuf {
    PathBuf::from(env().models[name]["path"].as_str().unwrap())
}

fn header(path: &Path) -> Gguf {
    GgufFile::open(path).unwrap_or_else(|e| panic!("{e}")).header
}

/// Our plan against a file llama.cpp wrote: every difference, described.
fn compare(p: &Plan, out: &Gguf) -> Vec<String> {
    let mut d = Vec::new();
    if p.tensors.len() != out.tensors.len() {
        d.push(format!("tensor count: ours {} llama.cpp {}", p.tensors.len(), out.tensors.len()));
    }
    for (i, (a, b)) in p.tensors.iter().zip(&out.tensors).enumerate() {
        if a.name != b.name {
            d.push(format!("tensor #{i}: ours '{}' llama.cpp '{}'", a.name, b.name));
            continue;
        }
        if a.output_type != b.ty {
            d.push(format!("{}: ours {} llama.cpp {} ({})", a.name, a.output_type, b.ty, a.reason));
        }
        if a.dims != b.dims {
            d.push(format!("{}: dims ours {:?} llama.cpp {:?}", a.name, a.dims, b.dims));
        }
        if a.output_type == b.ty && a.output_size != b.size {
            d.push(format!("{}: size ours {} llama.cpp {}", a.name, a.output_size, b.size));
        }
    }
    let ka: Vec<&str> = p.metadata.keys().collect();
    let kb: Vec<&str> = out.metadata.keys().collect();
    if ka != kb {
        d.push(format!("key order:\n  ours     {ka:?}\n  llama.cpp {kb:?}"));
    }
    for (k, v) in out.metadata.iter() {
        match p.metadata.get(k) {
            Some(ours) if ours == v => {}
            Some(ours) => d.push(format!("key {k}: ours {} llama.cpp {}", show(ours), show(v))),
            None => {}
        }
    }
    d
}

/// Why a quantization was refused, from llama.cpp's log or our error message:
/// a class and, where the message names one, the tensor.
fn refusal(text: &str) -> (&'static str, Option<String>) {
    let after = |marker: &str| {
        text.find(marker).map(|i| {
            let rest = &text[i + marker.len()..];
            rest.trim_start_matches(['\'', ' ']).split(['\'', ' ', '\n']).next().unwrap_or("").to_string()
        })
    };
    if text.contains("requires an imatrix") || text.contains("requires an importance matrix") {
        ("needs an imatrix", after("offending tensor:").or_else(|| after("tensor '")))
    } else if text.contains("issing importance matrix for tensor") {
        ("missing imatrix entry", after("importance matrix for tensor"))
    } else if text.contains("requantiz") {
        ("requantize disabled", None)
    } else if text.contains("imatrix size") || text.contains("values but the tensor needs") {
        let llama = text.lines().find(|l| l.contains("is different from tensor size"));
        (
            "imatrix entry size",
            llama
                .and_then(|l| l.split_whitespace().last().map(str::to_string))
                .or_else(|| after("imatrix entry for '")),
        )
    } else if text.contains("missing imatrix metadata") {
        ("imatrix metadata", None)
    } else if text.contains("no tensor type fallback") || text.contains("no fallback type is defined") {
        ("no fallback type", None)
    } else {
        ("other", None)
    }
}

fn show(v: &Value) -> String {
    format!("{}:{}", v.value_type(), v.summary(8))
}

/// A comparison table: rows = option sets, columns = result per file type.
#[derive(Default)]
struct Table {
    rows: BTreeMap<String, BTreeMap<String, (usize, usize)>>,
    failures: Vec<String>,
    /// Refusal reasons both sides agreed on.
    refusals: BTreeMap<String, usize>,
}

impl Table {
    fn add(&mut self, row: &str, col: &str, ok: bool, failure: impl FnOnce() -> String) {
        let e = self.rows.entry(row.to_string()).or_default().entry(col.to_string()).or_default();
        e.1 += 1;
        if ok {
            e.0 += 1;
        } else {
            self.failures.push(failure());
        }
    }

    fn print(&self, title: &str) {
        eprintln!("\n== {title}");
        for (row, cols) in &self.rows {
            let cells: Vec<String> = cols
                .iter()
                .map(|(c, (ok, n))| if ok == n { format!("{c} {ok}/{n}") } else { format!("{c} {ok}/{n} DIFF") })
                .collect();
            eprintln!("{row:<28} {}", cells.join("  "));
        }
        if !self.refusals.is_empty() {
            eprintln!("refusals by reason: {:?}", self.refusals);
        }
        let total: usize = self.rows.values().flat_map(|c| c.values()).map(|v| v.1).sum();
        eprintln!("{} cases, {} differ", total, self.failures.len());
    }

    fn assert_ok(&self) {
        if !self.failures.is_empty() {
            let shown: Vec<&String> = self.failures.iter().take(12).collect();
            panic!(
                "{} case(s) differ from llama.cpp:\n{}",
                self.failures.len(),
                shown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n\n")
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// the file-type table

#[test]
fn file_types_match_llama_cpp() {
    if !common::parity_enabled("policy_parity::file_types_match_llama_cpp") {
        return;
    }
    let e = env();
    let out = e.dir.join("ftypes.json");
    synth(e, &["ftypes", e.src.to_str().unwrap(), out.to_str().unwrap()]);
    let facts: J = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let mut n = 0;
    // every QUANT_OPTIONS name parses to the same id; COPY is the copy target
    for o in facts["options"].as_array().unwrap() {
        let name = o["name"].as_str().unwrap();
        let id = o["id"].as_u64().unwrap() as u32;
        match parse_target(name) {
            Some(Target::Copy) => assert_eq!(name, "COPY"),
            Some(Target::FileType(f)) => assert_eq!(f.id(), id, "{name}"),
            None => panic!("llama-quantize accepts '{name}', we do not"),
        }
        assert_eq!(parse_target(&name.to_lowercase()), parse_target(name));
        n += 1;
    }
    // and nothing else
    let listed: Vec<&str> = facts["options"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
    for info in file_types() {
        for name in std::iter::once(&info.name).chain(&info.aliases) {
            assert_eq!(listed.contains(&name.as_str()), info.default_type.is_some(), "{name}");
        }
        let row = facts["options"].as_array().unwrap().iter().find(|o| o["name"] == info.name.as_str());
        if let Some(row) = row {
            assert_eq!(row["desc"].as_str().unwrap(), info.description, "{}", info.name);
        }
    }
    // ids, labels and default types for every llama_ftype
    let mut ids = Vec::new();
    for f in facts["ftypes"].as_array().unwrap() {
        let id = f["id"].as_u64().unwrap() as u32;
        ids.push(id);
        let ours = FileType::from_id(id).unwrap_or_else(|| panic!("llama_ftype {id} ({}) missing", f["enum"]));
        assert_eq!(ours.info().label, f["label"].as_str().unwrap(), "label of {id}");
        let d = f["default_type"].as_u64().map(|t| GgmlType::from_id(t as u32).unwrap());
        assert_eq!(ours.default_type(), d, "default type of {ours}");
        n += 1;
    }
    assert_eq!(ids.len(), ALL_FILE_TYPES.len());
    eprintln!("file types: {n} names/ids/labels/default types identical to llama.cpp");
}

// ---------------------------------------------------------------------------------------------
// llama_model_quantize on synthetic models

#[derive(Clone, Default)]
struct CaseOpts {
    label: &'static str,
    pure: bool,
    leave_output: bool,
    output_tensor_type: Option<GgmlType>,
    token_embedding_type: Option<GgmlType>,
    tensor_types: Vec<(&'static str, GgmlType)>,
    kv: Vec<(&'static str, &'static str, J)>,
    allow_requantize: bool,
    only_copy: bool,
    dry_run: bool,
}

impl CaseOpts {
    fn named(label: &'static str) -> CaseOpts {
        CaseOpts { label, ..Default::default() }
    }

    fn options(&self, ftype: FileType) -> Options {
        let mut o = if self.only_copy { Options::for_target(Target::Copy) } else { Options::new(ftype) };
        o.pure = self.pure;
        o.quantize_output_tensor = !self.leave_output;
        o.output_tensor_type = self.output_tensor_type;
        o.token_embedding_type = self.token_embedding_type;
        o.tensor_types = self.tensor_types.iter().map(|(p, t)| TensorTypeRule::new(p, *t).unwrap()).collect();
        o.allow_requantize = self.allow_requantize;
        o.dry_run = self.dry_run;
        o.kv_overrides = self
            .kv
            .iter()
            .map(|(k, tag, v)| KvOverride {
                key: k.to_string(),
                value: match *tag {
                    "int" => OverrideValue::Int(v.as_i64().unwrap()),
                    "float" => OverrideValue::Float(v.as_f64().unwrap()),
                    "bool" => OverrideValue::Bool(v.as_bool().unwrap()),
                    _ => OverrideValue::Str(v.as_str().unwrap().as_bytes().to_vec()),
                },
            })
            .collect();
        o
    }

    fn job(&self, id: &str, input: &Path, output: &Path, ftype: FileType) -> J {
        json!({
            "id": id,
            "input": input,
            "output": output,
            // COPY: llama-quantize passes F32 with only_copy
            "ftype": if self.only_copy { 0 } else { ftype.id() },
            "pure": self.pure,
            "leave_output": self.leave_output,
            "output_tensor_type": self.output_tensor_type.map(|t| t.id()),
            "token_embedding_type": self.token_embedding_type.map(|t| t.id()),
            "tensor_types": self.tensor_types.iter().map(|(p, t)| json!([p, t.id()])).collect::<Vec<_>>(),
            "kv_overrides": self.kv.iter().map(|(k, t, v)| json!([k, t, v])).collect::<Vec<_>>(),
            "allow_requantize": self.allow_requantize,
            "only_copy": self.only_copy,
            "dry_run": self.dry_run,
        })
    }
}

struct Case {
    id: String,
    model: &'static str,
    ftype: FileType,
    opts: CaseOpts,
}

/// The file types the task names, which ggufkit's kernels produce.
const CORE: &[FileType] = {
    use FileType::*;
    &[
        F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q2_K_S, Q3_K_S, Q3_K_M, Q3_K_L, Q4_K_S, Q4_K_M, Q5_K_S,
        Q5_K_M, Q6_K, IQ4_NL, IQ4_XS,
    ]
};

/// Every file type llama-quantize accepts.
fn all_targets() -> Vec<FileType> {
    file_types().iter().filter(|i| i.default_type.is_some()).map(|i| i.ftype).collect()
}

fn matrix_cases() -> Vec<Case> {
    use GgmlType as G;
    let mut cases = Vec::new();
    let mut add = |model: &'static str, ftype: FileType, opts: CaseOpts| {
        let id = format!("{model}-{}-{}", ftype.name(), opts.label);
        cases.push(Case { id, model, ftype, opts });
    };
    // every file type, default options, on every dense and MoE model
    for model in ["llama8", "llama12_tied", "llama3_896", "llama9_extras", "qwen2_10", "qwen2_5_untied", "moe8", "moe4"]
    {
        let fts = if matches!(model, "llama8" | "qwen2_10" | "moe8") { all_targets() } else { CORE.to_vec() };
        for ft in fts {
            add(model, ft, CaseOpts::named("default"));
        }
    }
    // the 70B attn_v rule needs 80 layers
    for ft in [FileType::Q2_K, FileType::Q3_K_S, FileType::Q3_K_M, FileType::Q4_K_M, FileType::IQ4_XS] {
        add("llama80", ft, CaseOpts::named("default"));
    }
    let option_sets: Vec<CaseOpts> = vec![
        CaseOpts { pure: true, ..CaseOpts::named("--pure") },
        CaseOpts { leave_output: true, ..CaseOpts::named("--leave-output-tensor") },
        CaseOpts { output_tensor_type: Some(G::Q8_0), ..CaseOpts::named("--output-tensor-type q8_0") },
        CaseOpts { output_tensor_type: Some(G::F16), ..CaseOpts::named("--output-tensor-type f16") },
        CaseOpts { token_embedding_type: Some(G::Q4_0), ..CaseOpts::named("--token-embedding-type q4_0") },
        CaseOpts {
            output_tensor_type: Some(G::Q5_1),
            token_embedding_type: Some(G::Q8_0),
            pure: true,
            ..CaseOpts::named("out q5_1 + embd q8_0 + pure")
        },
        CaseOpts {
            tensor_types: vec![("attn_v", G::Q8_0), ("blk\\.[0-2]\\.ffn_down", G::Q6_K), ("ffn_(gate|up)", G::IQ4_NL)],
            ..CaseOpts::named("--tensor-type x3")
        },
        CaseOpts {
            tensor_types: vec![("^blk\\.1\\.", G::F16), ("output", G::Q4_K), ("attn", G::Q5_0)],
            ..CaseOpts::named("--tensor-type first-wins")
        },
        CaseOpts {
            kv: vec![
                ("general.name", "str", json!("renamed")),
                ("ggufkit.test.int", "int", json!(-42)),
                ("ggufkit.test.float", "float", json!(0.1)),
                ("ggufkit.test.bool", "bool", json!(true)),
                ("general.architecture", "str", json!("llama")),
            ],
            ..CaseOpts::named("--override-kv x5")
        },
        CaseOpts {
            kv: vec![("llama.block_count", "int", json!(16)), ("general.file_type", "int", json!(3))],
            ..CaseOpts::named("--override-kv hparams")
        },
        CaseOpts { dry_run: true, ..CaseOpts::named("--dry-run") },
    ];
    // each option set: every named file type on one model, a sample on two others
    let sample =
        [FileType::Q4_K_M, FileType::Q3_K_M, FileType::Q5_K_S, FileType::Q4_0, FileType::IQ4_XS, FileType::F16];
    for opts in &option_sets {
        for &ft in CORE {
            add("llama12_tied", ft, opts.clone());
        }
        for model in ["llama8", "llama3_896"] {
            if opts.label == "--override-kv hparams" && model == "llama3_896" {
                continue;
            }
            for ft in sample {
                add(model, ft, opts.clone());
            }
        }
    }
    // requantizing and copying a quantized model
    for &ft in &[FileType::Q4_K_M, FileType::Q8_0, FileType::Q2_K, FileType::F16, FileType::IQ4_NL] {
        add("llama8_q8", ft, CaseOpts::named("default"));
        add("llama8_q8", ft, CaseOpts { allow_requantize: true, ..CaseOpts::named("--allow-requantize") });
    }
    add("llama8_q8", FileType::F32, CaseOpts { only_copy: true, ..CaseOpts::named("COPY") });
    add("llama12_tied", FileType::F32, CaseOpts { only_copy: true, ..CaseOpts::named("COPY") });
    cases
}

#[test]
fn quantize_matrix_matches_llama_cpp() {
    if !common::parity_enabled("policy_parity::quantize_matrix_matches_llama_cpp") {
        return;
    }
    let e = env();
    let scratch = common::Scratch::new("policy-parity-matrix");
    let out_dir = scratch.path();
    let cases = matrix_cases();
    let mut jobs = Vec::new();
    for c in &cases {
        let out =
            out_dir.join(format!("{}.gguf", c.id.replace(|ch: char| !ch.is_ascii_alphanumeric() && ch != '-', "_")));
        let _ = std::fs::remove_file(&out);
        jobs.push(c.opts.job(&c.id, &model_path(c.model), &out, c.ftype));
    }
    let jobs_path = out_dir.join("jobs.json");
    std::fs::write(&jobs_path, serde_json::to_vec(&jobs).unwrap()).unwrap();
    let results_path = out_dir.join("results.json");
    synth(e, &["quantize", jobs_path.to_str().unwrap(), results_path.to_str().unwrap()]);
    let results: Vec<J> = serde_json::from_slice(&std::fs::read(&results_path).unwrap()).unwrap();

    let mut table = Table::default();
    let mut headers: BTreeMap<&str, Gguf> = BTreeMap::new();
    let (mut n_tensors, mut n_keys) = (0usize, 0usize);
    for ((c, job), res) in cases.iter().zip(&jobs).zip(&results) {
        assert_eq!(res["id"], job["id"]);
        let input = headers.entry(c.model).or_insert_with(|| header(&model_path(c.model)));
        let rc = res["rc"].as_i64().unwrap();
        let ours = plan(input, &c.opts.options(c.ftype), None);
        let out_path = PathBuf::from(job["output"].as_str().unwrap());
        let log = || std::fs::read_to_string(out_path.with_extension("gguf.log")).unwrap_or_default();
        let last_line = |s: String| s.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").to_string();
        let row = format!("{} {}", c.opts.label, c.model);
        if c.model == "llama8" && c.opts.label == "default" {
            // the table's requires_imatrix flag: refused without an imatrix on a llama-style model
            table.add("requires_imatrix flag llama8", c.ftype.name(), (rc != 0) == c.ftype.requires_imatrix(), || {
                format!("{}: llama.cpp rc {rc}, requires_imatrix {}", c.id, c.ftype.requires_imatrix())
            });
        }
        match (rc, ours) {
            (0, Ok(_)) if c.opts.dry_run => {
                table.add(&row, c.ftype.name(), !out_path.exists(), || format!("{}: dry run wrote a file?", c.id))
            }
            (0, Ok(p)) => {
                let out = header(&out_path);
                let _ = std::fs::remove_file(&out_path);
                let diffs = compare(&p, &out);
                n_tensors += out.tensors.len();
                n_keys += out.metadata.len();
                table.add(&row, c.ftype.name(), diffs.is_empty(), || format!("{}:\n  {}", c.id, diffs.join("\n  ")));
            }
            (0, Err(err)) => {
                table.add(&row, c.ftype.name(), false, || format!("{}: llama.cpp succeeded, we refused: {err}", c.id))
            }
            (_, Ok(_)) => table.add(&row, c.ftype.name(), false, || {
                format!("{}: llama.cpp failed (rc {rc}: {}), we planned it", c.id, last_line(log()))
            }),
            (_, Err(err)) => {
                let (theirs, ours) = (refusal(&log()), refusal(&err.to_string()));
                *table.refusals.entry(theirs.0.to_string()).or_default() += 1;
                table.add(&format!("{row} (refused)"), c.ftype.name(), theirs == ours, || {
                    format!("{}: both refuse, llama.cpp: {theirs:?}, ours: {ours:?} ({err})", c.id)
                })
            }
        }
    }
    table.print("llama_model_quantize vs plan (ok/total per file type; '(refused)' rows: both refuse)");
    eprintln!("compared {n_tensors} tensor headers and {n_keys} metadata keys");
    table.assert_ok();
}

// ---------------------------------------------------------------------------------------------
// llama_quant_compute_types on mock models

struct SweepModel {
    arch: &'static str,
    n_layer: u32,
    n_head: u32,
    n_head_kv: u32,
    n_expert: u32,
    n_embd: u64,
    n_ff: u64,
    tied: bool,
}

fn sweep_tensors(m: &SweepModel) -> Vec<TensorInfo> {
    let mut v = Vec::new();
    let mut t = |name: String, dims: Vec<u64>| {
        let ty = if dims.len() == 1 { GgmlType::F32 } else { GgmlType::F16 };
        let size = ty.tensor_size(&dims).unwrap();
        let n = dims.iter().product();
        v.push(TensorInfo { name, dims, ty, offset: 0, size, n_elements: n });
    };
    let (e, ff, vocab) = (m.n_embd, m.n_ff, 128);
    let kv = e / m.n_head as u64 * m.n_head_kv as u64;
    t("token_embd.weight".into(), vec![e, vocab]);
    t("output_norm.weight".into(), vec![e]);
    if !m.tied {
        t("output.weight".into(), vec![e, vocab]);
    }
    for i in 0..m.n_layer {
        let p = |s: &str| format!("blk.{i}.{s}");
        t(p("attn_norm.weight"), vec![e]);
        match m.arch {
            "falcon" => t(p("attn_qkv.weight"), vec![e, e + 2 * kv]),
            "deepseek2" => {
                t(p("attn_q.weight"), vec![e, e]);
                t(p("attn_kv_a_mqa.weight"), vec![e, 64]);
                t(p("attn_kv_b.weight"), vec![64, 2 * e]);
            }
            _ => {
                t(p("attn_q.weight"), vec![e, e]);
                t(p("attn_k.weight"), vec![e, kv]);
                t(p("attn_v.weight"), vec![e, kv]);
            }
        }
        if m.arch == "qwen2" {
            t(p("attn_q.bias"), vec![e]);
        }
        t(p("attn_output.weight"), vec![e, e]);
        t(p("ffn_norm.weight"), vec![e]);
        if m.n_expert > 0 {
            let x = m.n_expert as u64;
            t(p("ffn_gate_inp.weight"), vec![e, x]);
            t(p("ffn_gate_exps.weight"), vec![e, ff, x]);
            t(p("ffn_up_exps.weight"), vec![e, ff, x]);
            t(p("ffn_down_exps.weight"), vec![ff, e, x]);
            t(p("ffn_up_shexp.weight"), vec![e, ff]);
        } else {
            if m.arch != "falcon" {
                t(p("ffn_gate.weight"), vec![e, ff]);
            }
            t(p("ffn_up.weight"), vec![e, ff]);
            t(p("ffn_down.weight"), vec![ff, e]);
        }
    }
    v
}

fn sweep_header(m: &SweepModel) -> Gguf {
    let mut md = Metadata::new();
    md.push("general.architecture", Value::string(m.arch));
    md.push(format!("{}.block_count", m.arch), Value::U32(m.n_layer));
    md.push(format!("{}.attention.head_count", m.arch), Value::U32(m.n_head));
    md.push(format!("{}.attention.head_count_kv", m.arch), Value::U32(m.n_head_kv));
    if m.n_expert > 0 {
        md.push(format!("{}.expert_count", m.arch), Value::U32(m.n_expert));
    }
    Gguf { version: 3, metadata: md, tensors: sweep_tensors(m), alignment: 32, data_offset: 0 }
}

/// A small deterministic generator (xorshift64*), so the sweep is reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

#[test]
fn type_sweep_matches_llama_cpp() {
    if !common::parity_enabled("policy_parity::type_sweep_matches_llama_cpp") {
        return;
    }
    use GgmlType as G;
    let e = env();
    let scratch = common::Scratch::new("policy-parity-sweep");
    let dir = scratch.path();
    let option_sets: Vec<CaseOpts> = vec![
        CaseOpts::named("default"),
        CaseOpts::named("default"),
        CaseOpts::named("default"),
        CaseOpts { pure: true, ..CaseOpts::named("--pure") },
        CaseOpts { output_tensor_type: Some(G::Q8_0), ..CaseOpts::named("--output-tensor-type") },
        CaseOpts { token_embedding_type: Some(G::Q4_K), ..CaseOpts::named("--token-embedding-type") },
        CaseOpts { leave_output: true, ..CaseOpts::named("--leave-output-tensor") },
        CaseOpts {
            tensor_types: vec![("attn_v", G::Q8_0), ("ffn_down", G::Q5_K), ("blk\\.1[0-9]\\.", G::IQ4_NL)],
            ..CaseOpts::named("--tensor-type")
        },
    ];
    let targets = all_targets();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut configs = Vec::new();
    let mut cases = Vec::new();
    for i in 0..2500 {
        let arch = rng.pick(&["llama", "llama", "qwen2", "falcon", "deepseek2", "gemma2"]);
        let n_expert = if matches!(arch, "llama" | "qwen2") { rng.pick(&[0, 0, 0, 4, 8]) } else { 0 };
        let mut n_layer = rng.pick(&[1, 2, 3, 4, 5, 7, 8, 9, 12, 15, 16, 17, 24, 28, 31, 32, 33, 40, 48, 60, 80]);
        if n_layer == 80 && (arch != "llama" || n_expert == 8) {
            n_layer = 79; // the mock model infers "70B" only for llama (the real loader also for qwen2, deci, olmo)
        }
        let (n_head, n_head_kv) = rng.pick(&[(8, 8), (8, 2), (8, 1), (32, 8), (28, 4), (14, 2), (16, 4), (12, 3)]);
        let n_embd = rng.pick(&[256u64, 512, 896, 384, 320, 4096, 3584]);
        let n_embd = n_embd / n_head as u64 * n_head as u64;
        let n_ff = rng.pick(&[256u64, 4864, 200, 96, 1024, 18944]);
        let m =
            SweepModel { arch, n_layer, n_head, n_head_kv, n_expert, n_embd, n_ff, tied: rng.next().is_multiple_of(3) };
        let ftype = rng.pick(&targets);
        let opts = option_sets[(rng.next() % option_sets.len() as u64) as usize].clone();
        let h = sweep_header(&m);
        let order = policy::output_order(&h.tensors);
        let tensors: Vec<J> = order
            .iter()
            .map(|&i| {
                let t = &h.tensors[i];
                json!([t.name, t.dims, t.ty.id()])
            })
            .collect();
        let mut cfg = opts.job(&i.to_string(), Path::new(""), Path::new(""), ftype);
        let obj = cfg.as_object_mut().unwrap();
        for (k, v) in [
            ("arch", json!(arch)),
            ("n_layer", json!(n_layer)),
            ("n_head", json!(n_head)),
            ("n_head_kv", json!(n_head_kv)),
            ("n_expert", json!(n_expert)),
            ("n_embd", json!(n_embd)),
            ("n_ff", json!(n_ff)),
            ("tensors", json!(tensors)),
            // a config we refuse runs in a child process: llama.cpp aborts on its exceptions here
            ("isolate", json!(decide_types(&h, &opts.options(ftype), false).is_err())),
        ] {
            obj.insert(k.into(), v);
        }
        configs.push(cfg);
        cases.push((h, ftype, opts, m));
    }
    let cfg_path = dir.join("configs.json");
    std::fs::write(&cfg_path, serde_json::to_vec(&configs).unwrap()).unwrap();
    let res_path = dir.join("results.json");
    synth(e, &["sweep", cfg_path.to_str().unwrap(), res_path.to_str().unwrap()]);
    let results: Vec<J> = serde_json::from_slice(&std::fs::read(&res_path).unwrap()).unwrap();

    let mut table = Table::default();
    let mut n_types = 0;
    for ((h, ftype, opts, m), res) in cases.iter().zip(&results) {
        let row = format!("{} {}", opts.label, m.arch);
        let ours = decide_types(h, &opts.options(*ftype), false);
        let rc = res["rc"].as_i64().unwrap();
        let desc = || {
            format!(
                "{} L{} heads {}/{} experts {} embd {} ff {} tied {} {ftype} {}",
                m.arch, m.n_layer, m.n_head, m.n_head_kv, m.n_expert, m.n_embd, m.n_ff, m.tied, opts.label
            )
        };
        match (rc, ours) {
            (0, Ok(d)) => {
                let theirs: Vec<u32> =
                    res["types"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
                let mut diffs = Vec::new();
                for (dec, t) in d.tensors.iter().zip(&theirs) {
                    n_types += 1;
                    if dec.ty.id() != *t {
                        let name = &h.tensors[dec.index].name;
                        diffs.push(format!(
                            "{name}: ours {} llama.cpp {:?} ({})",
                            dec.ty,
                            GgmlType::from_id(*t),
                            dec.reason
                        ));
                    }
                }
                table.add(&row, "", diffs.is_empty(), || format!("{}:\n  {}", desc(), diffs.join("\n  ")));
            }
            (0, Err(err)) => {
                table.add(&row, "", false, || format!("{}: llama.cpp chose types, we refused: {err}", desc()))
            }
            (_, Ok(_)) => table.add(&row, "", false, || format!("{}: llama.cpp failed (rc {rc}), we did not", desc())),
            (_, Err(_)) => table.add(&format!("{row} (both refuse)"), "", true, String::new),
        }
    }
    table.print("llama_quant_compute_types vs decide_types (mock models)");
    eprintln!("compared {n_types} tensor types");
    table.assert_ok();
}

// ---------------------------------------------------------------------------------------------
// the real llama-quantize: imatrix, CLI parsing

struct CliCase {
    label: String,
    model: &'static str,
    /// llama-quantize flags before the file names.
    flags: Vec<String>,
    target: &'static str,
}

fn imatrix_file(name: &str, model: &str, extra: &[&str]) -> PathBuf {
    let e = env();
    let dir = e.dir.join("imatrix");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    if !path.exists() {
        let model = model_path(model);
        let mut args = vec!["imatrix", model.to_str().unwrap(), path.to_str().unwrap()];
        args.extend_from_slice(extra);
        synth(e, &args);
    }
    path
}

/// Our side of a llama-quantize command line: the same flags through our parsers.
fn our_plan(model: &Gguf, flags: &[String], target: &str) -> ggufkit::Result<Plan> {
    let t = parse_target(target).ok_or_else(|| ggufkit::Error::usage(format!("invalid ftype '{target}'")))?;
    let mut o = Options::for_target(t);
    let (mut imatrix, mut include, mut exclude) = (None, Vec::new(), Vec::new());
    let mut it = flags.iter();
    while let Some(f) = it.next() {
        match f.as_str() {
            "--pure" => o.pure = true,
            "--leave-output-tensor" => o.quantize_output_tensor = false,
            "--allow-requantize" => o.allow_requantize = true,
            "--dry-run" => o.dry_run = true,
            "--output-tensor-type" => {
                o.output_tensor_type = Some(it.next().unwrap().parse().map_err(ggufkit::Error::usage)?)
            }
            "--token-embedding-type" => {
                o.token_embedding_type = Some(it.next().unwrap().parse().map_err(ggufkit::Error::usage)?)
            }
            "--tensor-type" => o.tensor_types.push(TensorTypeRule::parse(it.next().unwrap())?),
            "--override-kv" => o.kv_overrides.push(KvOverride::parse(it.next().unwrap())?),
            "--imatrix" => imatrix = Some(it.next().unwrap().clone()),
            "--include-weights" => include.push(it.next().unwrap().clone()),
            "--exclude-weights" => exclude.push(it.next().unwrap().clone()),
            other => panic!("flag {other} not handled by the test"),
        }
    }
    let im = match imatrix {
        Some(p) => {
            let mut m = Imatrix::load(&p)?;
            m.filter(&include, &exclude)?;
            Some(m)
        }
        None => None,
    };
    plan(model, &o, im.as_ref())
}

#[test]
fn llama_quantize_cli_matches() {
    if !common::parity_enabled("policy_parity::llama_quantize_cli_matches") {
        return;
    }
    let exe = tool();
    let scratch = common::Scratch::new("policy-parity-cli");
    let out_dir = scratch.path();
    let s = |x: &str| x.to_string();
    let im_gguf = imatrix_file("llama8.imatrix.gguf", "llama8", &[]);
    let im_dat = imatrix_file("llama8.imatrix.dat", "llama8", &["--format", "dat", "--chunks", "9"]);
    let im_moe = imatrix_file("moe8.imatrix.gguf", "moe8", &["--zero-expert"]);
    let im_moe_dat = imatrix_file("moe8.imatrix.dat", "moe8", &["--zero-expert", "--format", "dat"]);
    let im_missing = imatrix_file("llama8-missing.imatrix.gguf", "llama8", &["--skip", "blk.3.ffn_down.weight"]);
    let im_nometa = imatrix_file("llama8-nometa.imatrix.gguf", "llama8", &["--no-metadata"]);
    let im_other = imatrix_file("llama3_896.imatrix.gguf", "llama3_896", &[]);
    let im_tied = imatrix_file("llama12.imatrix.dat", "llama12_tied", &["--format", "dat", "--chunks", "0"]);
    let im_bad_embd = imatrix_file("llama8-bad-embd.imatrix.gguf", "llama8", &["--bad-embd"]);
    let p = |x: &PathBuf| x.to_str().unwrap().to_string();

    let mut cases: Vec<CliCase> = Vec::new();
    let imatrix_types = [
        "Q2_K_S", "Q2_K", "IQ4_XS", "IQ4_NL", "Q4_0", "Q5_0", "Q4_K_M", "IQ3_XXS", "IQ2_XXS", "IQ2_XS", "IQ2_S",
        "IQ2_M", "IQ1_S", "IQ1_M", "IQ3_XS", "IQ3_S", "IQ3_M",
    ];
    for ft in imatrix_types {
        cases.push(CliCase {
            label: s("--imatrix gguf"),
            model: "llama8",
            flags: vec![s("--imatrix"), p(&im_gguf)],
            target: ft,
        });
    }
    for ft in ["Q2_K_S", "Q4_0", "IQ3_XXS", "IQ4_XS", "Q4_K_M"] {
        cases.push(CliCase {
            label: s("--imatrix dat"),
            model: "llama8",
            flags: vec![s("--imatrix"), p(&im_dat)],
            target: ft,
        });
        cases.push(CliCase {
            label: s("--imatrix gguf moe8"),
            model: "moe8",
            flags: vec![s("--imatrix"), p(&im_moe)],
            target: ft,
        });
        cases.push(CliCase {
            label: s("--imatrix dat moe8"),
            model: "moe8",
            flags: vec![s("--imatrix"), p(&im_moe_dat)],
            target: ft,
        });
        cases.push(CliCase {
            label: s("--imatrix missing entry"),
            model: "llama8",
            flags: vec![s("--imatrix"), p(&im_missing)],
            target: ft,
        });
        cases.push(CliCase {
            label: s("--imatrix + --exclude-weights"),
            model: "llama8",
            flags: vec![
                s("--imatrix"),
                p(&im_gguf),
                s("--exclude-weights"),
                s("ffn_down"),
                s("--exclude-weights"),
                s("attn_q"),
            ],
            target: ft,
        });
        cases.push(CliCase {
            label: s("--imatrix + --include-weights"),
            model: "llama8",
            flags: vec![s("--imatrix"), p(&im_gguf), s("--include-weights"), s("blk.1.")],
            target: ft,
        });
        cases.push(CliCase {
            label: s("--imatrix excluded all"),
            model: "llama8",
            flags: vec![s("--imatrix"), p(&im_gguf), s("--include-weights"), s("nothing-matches")],
            target: ft,
        });
        cases.push(CliCase {
            label: s("--imatrix no metadata"),
            model: "llama8",
            flags: vec![s("--imatrix"), p(&im_nometa)],
            target: ft,
        });
        cases.push(CliCase {
            label: s("--imatrix wrong sizes"),
            model: "llama8",
            flags: vec![s("--imatrix"), p(&im_other)],
            target: ft,
        });
        cases.push(CliCase {
            label: s("--imatrix tied dat"),
            model: "llama12_tied",
            flags: vec![s("--imatrix"), p(&im_tied)],
            target: ft,
        });
        cases.push(CliCase {
            label: s("--imatrix token_embd wrong size"),
            model: "llama8",
            flags: vec![s("--imatrix"), p(&im_bad_embd)],
            target: ft,
        });
    }
    let cli_sets: Vec<(&str, Vec<String>)> = vec![
        (
            "--override-kv strings",
            vec![
                s("--override-kv"),
                s("general.name=str:renamed=x:y"),
                s("--override-kv"),
                s("ggufkit.i=int: -42junk"),
                s("--override-kv"),
                s("ggufkit.f=float:2.5e-3xyz"),
                s("--override-kv"),
                s("ggufkit.g=float:1e400"),
                s("--override-kv"),
                s("ggufkit.h=float:.5"),
                s("--override-kv"),
                s("ggufkit.b=bool:false"),
                s("--override-kv"),
                s("ggufkit.i=int:7"),
            ],
        ),
        ("--override-kv block_count", vec![s("--override-kv"), s("llama.block_count=int:24")]),
        (
            "--tensor-type case+regex",
            vec![
                s("--tensor-type"),
                s("ATTN_V=Q8_0"),
                s("--tensor-type"),
                s("BLK\\.1\\D=F16"),
                s("--tensor-type"),
                s("ffn_(up|gate)\\.weight$=q5_k"),
            ],
        ),
        (
            "type names",
            vec![
                s("--output-tensor-type"),
                s("Q5_K"),
                s("--token-embedding-type"),
                s("bf16"),
                s("--leave-output-tensor"),
            ],
        ),
        ("--pure", vec![s("--pure")]),
        ("--dry-run", vec![s("--dry-run")]),
    ];
    for (label, flags) in &cli_sets {
        for model in ["llama8", "llama12_tied"] {
            for ft in ["Q4_K_M", "q5_k_s", "17", "Q2_K_S", "IQ4_NL", "q3_k", "COPY"] {
                cases.push(CliCase { label: label.to_string(), model, flags: flags.clone(), target: ft });
            }
        }
    }

    let mut table = Table::default();
    let mut headers: BTreeMap<&str, Gguf> = BTreeMap::new();
    let (mut n_tensors, mut n_keys) = (0, 0);
    for (i, c) in cases.iter().enumerate() {
        let out = out_dir.join(format!("{i}.gguf"));
        let _ = std::fs::remove_file(&out);
        let run = Command::new(exe)
            .env("GGML_NO_BACKTRACE", "1")
            .args(&c.flags)
            .arg(model_path(c.model))
            .arg(&out)
            .arg(c.target)
            .arg("1")
            .output()
            .unwrap();
        let input = headers.entry(c.model).or_insert_with(|| header(&model_path(c.model)));
        let ours = our_plan(input, &c.flags, c.target);
        let row = format!("{} {}", c.label, c.model);
        let id = format!("#{i} {} {} {}", c.label, c.model, c.target);
        let dry = c.flags.iter().any(|f| f == "--dry-run");
        let tail = || {
            let err = String::from_utf8_lossy(&run.stderr);
            err.lines().rev().filter(|l| !l.trim().is_empty()).take(3).collect::<Vec<_>>().join(" | ")
        };
        match (run.status.success(), ours) {
            (true, Ok(_)) if dry => table.add(&row, c.target, !out.exists(), || format!("{id}: dry run wrote a file")),
            (true, Ok(p)) => {
                let h = header(&out);
                let _ = std::fs::remove_file(&out);
                let diffs = compare(&p, &h);
                n_tensors += h.tensors.len();
                n_keys += h.metadata.len();
                table.add(&row, c.target, diffs.is_empty(), || format!("{id}:\n  {}", diffs.join("\n  ")));
            }
            (true, Err(err)) => {
                table.add(&row, c.target, false, || format!("{id}: llama-quantize succeeded, we refused: {err}"))
            }
            (false, Ok(_)) => {
                table.add(&row, c.target, false, || format!("{id}: llama-quantize failed ({}), we did not", tail()))
            }
            (false, Err(err)) => {
                let text = String::from_utf8_lossy(&run.stderr).into_owned() + &String::from_utf8_lossy(&run.stdout);
                let (theirs, ours) = (refusal(&text), refusal(&err.to_string()));
                *table.refusals.entry(theirs.0.to_string()).or_default() += 1;
                table.add(&format!("{row} (refused)"), c.target, theirs == ours, || {
                    format!("{id}: both refuse, llama-quantize: {theirs:?}, ours: {ours:?} ({err})")
                })
            }
        }
    }
    table.print("llama-quantize (built from the pinned source) vs plan");
    eprintln!("compared {n_tensors} tensor headers and {n_keys} metadata keys");
    table.assert_ok();
}

#[test]
fn imatrix_vectors_match_load_imatrix() {
    if !common::parity_enabled("policy_parity::imatrix_vectors_match_load_imatrix") {
        return;
    }
    let exe = tool();
    let scratch = common::Scratch::new("policy-parity-imatrix-dump");
    let dir = scratch.path();
    let files = [
        (imatrix_file("llama8.imatrix.gguf", "llama8", &[]), vec![]),
        (imatrix_file("llama8.imatrix.dat", "llama8", &["--format", "dat", "--chunks", "9"]), vec![]),
        (imatrix_file("moe8.imatrix.gguf", "moe8", &["--zero-expert"]), vec![]),
        (imatrix_file("moe8.imatrix.dat", "moe8", &["--zero-expert", "--format", "dat"]), vec![]),
        (imatrix_file("llama12.imatrix.dat", "llama12_tied", &["--format", "dat", "--chunks", "0"]), vec![]),
        (
            imatrix_file("llama8.imatrix.gguf", "llama8", &[]),
            vec!["--exclude-weights", "attn", "--exclude-weights", "blk.7."],
        ),
        (
            imatrix_file("moe8.imatrix.gguf", "moe8", &[]),
            vec!["--include-weights", "exps", "--include-weights", "output"],
        ),
    ];
    let mut n_values = 0usize;
    for (i, (file, filters)) in files.iter().enumerate() {
        let out = dir.join(format!("{i}.json"));
        let run = Command::new(exe)
            .env("GGML_NO_BACKTRACE", "1")
            .arg("--dump-imatrix")
            .arg(file)
            .arg(&out)
            .args(filters)
            .output()
            .unwrap();
        assert!(run.status.success(), "{}: {}", file.display(), String::from_utf8_lossy(&run.stderr));
        let theirs: J = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        let mut ours = Imatrix::load(file).unwrap();
        let include: Vec<String> =
            filters.chunks(2).filter(|c| c[0] == "--include-weights").map(|c| c[1].to_string()).collect();
        let exclude: Vec<String> =
            filters.chunks(2).filter(|c| c[0] == "--exclude-weights").map(|c| c[1].to_string()).collect();
        ours.filter(&include, &exclude).unwrap();
        assert_eq!(theirs["chunks"].as_i64().unwrap(), i64::from(ours.chunk_count), "{}", file.display());
        let datasets: Vec<Vec<u8>> =
            theirs["datasets"].as_array().unwrap().iter().map(|d| unhex(d.as_str().unwrap())).collect();
        assert_eq!(datasets, ours.datasets, "{}", file.display());
        let entries = theirs["entries"].as_object().unwrap();
        assert_eq!(entries.len(), ours.data.len(), "{}: entry count", file.display());
        for (name, vals) in entries {
            let name = unhex(name);
            let v = ours
                .data
                .get(&name)
                .unwrap_or_else(|| panic!("{}: no entry {:?}", file.display(), String::from_utf8_lossy(&name)));
            let bits: Vec<u32> = vals.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
            let ours_bits: Vec<u32> = v.iter().map(|x| x.to_bits()).collect();
            assert_eq!(bits, ours_bits, "{}: values of {}", file.display(), String::from_utf8_lossy(&name));
            n_values += bits.len();
        }
    }
    // files llama.cpp refuses, we refuse too
    let good =
        std::fs::read(imatrix_file("llama8.imatrix.dat", "llama8", &["--format", "dat", "--chunks", "9"])).unwrap();
    let mut bad: Vec<(String, Vec<u8>)> = vec![
        ("empty".into(), vec![]),
        ("zero entries".into(), 0i32.to_le_bytes().to_vec()),
        ("truncated values".into(), good[..good.len() / 2].to_vec()),
        ("truncated name".into(), good[..10].to_vec()),
    ];
    let mut zero_nval = good.clone();
    let name_len = i32::from_le_bytes(good[4..8].try_into().unwrap()) as usize;
    zero_nval[8 + name_len + 4..8 + name_len + 8].copy_from_slice(&0i32.to_le_bytes());
    bad.push(("zero value count".into(), zero_nval));
    for (what, extra) in [
        ("gguf without a counts tensor", &["--drop-counts"][..]),
        ("gguf with F16 counts", &["--f16-counts"][..]),
        ("gguf with an INT32 chunk count", &["--chunk-count-i32"][..]),
    ] {
        let path = imatrix_file(&format!("bad-{}.gguf", what.replace(' ', "-")), "llama8", extra);
        bad.push((what.to_string(), std::fs::read(path).unwrap()));
    }
    for (what, bytes) in &bad {
        let path = dir.join(format!("bad-{}.dat", what.replace(' ', "-")));
        std::fs::write(&path, bytes).unwrap();
        let out = dir.join("bad.json");
        let run = Command::new(exe)
            .env("GGML_NO_BACKTRACE", "1")
            .arg("--dump-imatrix")
            .arg(&path)
            .arg(&out)
            .output()
            .unwrap();
        assert!(!run.status.success(), "llama.cpp accepted the {what} file");
        assert!(Imatrix::load(&path).is_err(), "we accepted the {what} file");
    }
    eprintln!("imatrix: {} files, {n_values} f32 values bit-identical to llama-quantize's load_imatrix; {} malformed files refused by both", files.len(), bad.len());
}
