//! `pack`: a fine-tuned Hugging Face model (plus LoRA adapters) to a release
//! directory customers load with `ollama create`:
//!
//! ```text
//! RELEASE/
//!   NAME-Q4_K_M.gguf   Modelfile.Q4_K_M     one GGUF and one Modelfile per type
//!   NAME-Q8_0.gguf     Modelfile.Q8_0
//!   NAME.imatrix.gguf  with --imatrix-text: the importance matrix the quantized types used
//!   manifest.json      tool, sources and adapters with hashes, per output: type, size,
//!                      hash, tensor types, error against the F32 weights, Modelfile family
//!                      and its verification, with --eval: PPL and KL divergence
//!   SHA256SUMS         `sha256sum -c SHA256SUMS` verifies every other file
//! ```
//!
//! * Each GGUF is byte-identical to what `convert --outtype TYPE` writes (for a
//!   quantized type: `convert --outtype f32` then `quantize TYPE`); see
//!   [`types`] for how a type name is read.
//! * The source is read once for all types: the engine ([`pipeline::run`])
//!   decodes each tensor's rows once and encodes them for every output, each
//!   in its own tensor order, with memory bounded by a few row chunks. The
//!   same pass measures every output's error against the F32 rows.
//! * Deterministic: the same inputs give byte-identical release directories
//!   (no timestamps or absolute paths; outputs sorted by file name; figures
//!   summed in a fixed order whatever the thread count).
//! * Atomic: the release is built in a temporary directory beside the
//!   destination ([`AtomicDir`]) and renamed into place at the end; an error
//!   leaves nothing, and an existing non-empty destination is replaced only
//!   with `force`.
//! * Quality: every Modelfile's TEMPLATE is verified against the GGUF's
//!   chat template ([`crate::modelfile::verify_gguf`]); with `--eval TEXT`
//!   every output is scored against the unquantized (merged) model
//!   ([`evaluate_release`]); with `--imatrix-text TEXT` the importance matrix
//!   is computed from that model first and used for every quantized type.
//! * LoRA adapters enter through one call, [`open_model`]: the model to pack,
//!   opened as a conversion source ([`Model`]) for one output type.
//!   Everything after it (plans, the single pass, error figures, Modelfiles,
//!   manifest) is the same with or without adapters.

pub mod manifest;
pub mod types;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use rayon::prelude::*;
use serde_json::{json, Value as Json};

use crate::convert::vocab::Vocab;
use crate::convert::{ConvertOptions, HfToGguf, ModelIdentity, OutType};
use crate::error::{Error, Result};
use crate::fileio::AtomicDir;
use crate::gguf::{GgmlType, GgufFile, Metadata};
use crate::hf::HfModelDir;
use crate::imatrix::Imatrix;
use crate::infer::eval::{EvalOptions, EvalReport};
use crate::infer::{Chunks, ForwardOptions, Precision};
use crate::modelfile::{self, FromGgufOptions, ModelfileSpec};
use crate::pipeline::{self, thread_pool, ErrorStats, MultiOutput, Planned, TensorSource, WriteOptions, WriteSummary};
use crate::progress::{CollectWarnings, Progress};

pub use crate::target::{Model, Target};
pub use manifest::{
    AdapterRecord, EvalRecord, FileRecord, ImatrixRecord, Manifest, ModelfileRecord, OutputRecord, Quality,
    SourceRecord, TextRecord, Tool, TypeQuality, VerifiedRecord, WorstTensor, MANIFEST, SHA256SUMS,
};
pub use types::{parse_types, OutputType};

/// The model `pack` converts (see [`crate::target::Model`]).
pub use crate::target::Model as PackModel;

/// Version of the manifest's layout.
pub const MANIFEST_VERSION: u32 = 1;

/// Side files of a Hugging Face directory that conversion reads (when present).
const SOURCE_SIDE_FILES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "README.md",
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "vocab.json",
    "merges.txt",
];

/// Files of a PEFT adapter directory (when present).
const ADAPTER_FILES: &[&str] = &["adapter_config.json", "adapter_model.safetensors"];

/// A LoRA adapter to merge before packing (`--lora DIR[=WEIGHT]`), as `merge` takes it.
pub use crate::lora::AdapterSpec;

/// Options of [`pack`].
#[derive(Debug, Clone, Default)]
pub struct PackOptions {
    /// The `--types` items (each may be a comma-separated list); see [`types`].
    pub types: Vec<String>,
    /// LoRA adapters merged into the model first, in order.
    pub adapters: Vec<AdapterSpec>,
    /// Stem of the GGUF file names (default: from the model's metadata, see [`default_name`]).
    pub name: Option<String>,
    /// Replace an existing non-empty release directory.
    pub force: bool,
    /// Worker threads (0: all cores). The release does not depend on it.
    pub threads: usize,
    /// SYSTEM prompt of the Modelfiles (replaces the chat template's default one).
    pub system: Option<String>,
    /// Extra PARAMETER lines of the Modelfiles (`stop` adds, others replace).
    pub parameters: Vec<(String, String)>,
    /// `--eval TEXT`: score every output against the unquantized (merged) model on this text.
    pub eval_text: Option<PathBuf>,
    /// How the `--eval` text is cut (`eval`'s `--ctx` and `--chunks`).
    pub eval: EvalOptions,
    /// `--imatrix-text TEXT`: compute the importance matrix from the (merged) model on
    /// this text, ship it and use it for every quantized type.
    pub imatrix_text: Option<PathBuf>,
    /// How the `--imatrix-text` text is cut (`imatrix`'s `--ctx` and `--chunks`).
    pub imatrix: EvalOptions,
}

/// What [`pack`] made.
#[derive(Debug, Clone)]
pub struct PackSummary {
    pub release_dir: PathBuf,
    pub name: String,
    /// `manifest.json` as written.
    pub manifest: Json,
    /// Every file of the release, `SHA256SUMS` included, sorted by name.
    pub files: Vec<FileRecord>,
    pub warnings: Vec<String>,
    pub seconds: f64,
}

impl PackSummary {
    /// The `--json` summary.
    pub fn to_json(&self) -> Json {
        json!({
            "release_dir": self.release_dir.display().to_string(),
            "name": self.name,
            "files": self.files.iter().map(FileRecord::to_json).collect::<Vec<_>>(),
            "warnings": self.warnings,
            "seconds": (self.seconds * 1000.0).round() / 1000.0,
            "manifest": self.manifest,
        })
    }
}

/// The one place LoRA adapters enter `pack`: the model to pack, opened as a
/// conversion source for `outtype` (F32 for the quantized types, which
/// quantize the F32 conversion). Without adapters this is the directory as
/// `convert` opens it. With adapters it is the base with the adapters merged
/// in, opened as `merge -o STEM.gguf` opens it (`stem`, the output file's
/// name without `.gguf`, is where a merged GGUF's naming metadata comes from).
///
/// Every model opened for one release must list the same tensors, in the
/// same order, with the same rows: the pass reads the rows from one of them
/// and takes only plans and metadata from the others. `vocab`: the
/// vocabulary an earlier open of `hf_dir` read (the same for every output
/// type), not read again.
pub fn open_model(
    hf_dir: &Path,
    adapters: &[AdapterSpec],
    outtype: OutType,
    stem: &str,
    vocab: Option<&Vocab>,
    progress: &dyn Progress,
) -> Result<Box<dyn PackModel>> {
    if adapters.is_empty() {
        let opts = ConvertOptions { outtype, threads: None, vocab_pre: None };
        let model = HfModelDir::open(hf_dir)?;
        let identity = ModelIdentity::of_dir(hf_dir);
        return Ok(Box::new(HfToGguf::from_model_with_vocab(model, &identity, &opts, vocab, progress)?));
    }
    let (model, _report) = crate::lora::open_merged_conversion(hf_dir, adapters, outtype, stem, None, vocab, progress)?;
    Ok(Box::new(model))
}

fn same_tensors(a: &dyn TensorSource, b: &dyn TensorSource) -> bool {
    a.tensors().len() == b.tensors().len()
        && a.tensors().iter().zip(b.tensors()).all(|(x, y)| x.name == y.name && x.dims == y.dims)
}

/// Records warnings (once each) while passing every report on.
struct Recorder<'a> {
    inner: &'a dyn Progress,
    warnings: Mutex<Vec<String>>,
}

impl Recorder<'_> {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Progress for Recorder<'_> {
    fn begin(&self, phase: &str, total: u64) {
        self.inner.begin(phase, total)
    }
    fn item(&self, name: &str) {
        self.inner.item(name)
    }
    fn advance(&self, bytes: u64) {
        self.inner.advance(bytes)
    }
    fn finish(&self) {
        self.inner.finish()
    }
    fn warn(&self, msg: &str) {
        let mut w = self.warnings.lock().unwrap_or_else(|e| e.into_inner());
        if !w.iter().any(|x| x == msg) {
            w.push(msg.to_string());
            drop(w);
            self.inner.warn(msg);
        }
    }
}

/// One planned output.
struct Output {
    label: String,
    target: Target,
    file: String,
    modelfile: String,
    plan: Vec<Planned>,
    metadata: Metadata,
    file_type: u32,
}

/// The default file-name stem: GGUF's naming convention (as gguf-py names
/// converted files) from the metadata, `general.basename` (else
/// `general.name`) followed by the size label, fine-tune and version, made
/// file-name safe; else the directory's name.
pub fn default_name(md: &Metadata, dir: &Path) -> String {
    if let Some(base) = md.get_str("general.basename").or_else(|| md.get_str("general.name")) {
        let mut s = base.trim().to_string();
        for key in ["general.size_label", "general.finetune", "general.version"] {
            if let Some(v) = md.get_str(key).filter(|v| !v.trim().is_empty()) {
                s.push('-');
                s.push_str(v.trim());
            }
        }
        let slug = manifest::slugify(&s);
        if !slug.is_empty() {
            return slug;
        }
    }
    let dir_name = dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let slug = manifest::slugify(&dir_name);
    if slug.is_empty() {
        "model".into()
    } else {
        slug
    }
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !name.starts_with(['.', '-']);
    if ok {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "--name '{name}': use ASCII letters, digits, '.', '_' and '-' (not first), at most 200 characters"
        )))
    }
}

/// An absolute, normalized form of a path that may not exist yet.
fn absolute(p: &Path) -> Result<PathBuf> {
    if let Ok(c) = p.canonicalize() {
        return Ok(c);
    }
    let parent = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let base =
        parent.canonicalize().or_else(|_| std::path::absolute(parent)).map_err(|e| Error::io(parent, "resolve", e))?;
    Ok(match p.file_name() {
        Some(n) => base.join(n),
        None => base,
    })
}

/// Refuses a release directory that is, or contains, one of the input
/// directories (`--force` would delete it).
fn check_destination(dest: &Path, inputs: &[&Path]) -> Result<()> {
    let d = absolute(dest)?;
    for input in inputs {
        let i = absolute(input)?;
        if i.starts_with(&d) {
            return Err(Error::usage(format!(
                "refusing to write the release to {}: the input {} is inside it",
                dest.display(),
                input.display()
            )));
        }
    }
    Ok(())
}

/// The files of a directory that a release records, as relative paths.
fn record_list(dir: &Path, names: &[&str], extra: &[&Path]) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> =
        names.iter().map(|n| (n.to_string(), dir.join(n))).filter(|(_, p)| p.is_file()).collect();
    for p in extra {
        // Relative to the directory (weights live in it); never an absolute path.
        let rel = match p.strip_prefix(dir) {
            Ok(r) => r.to_string_lossy().into_owned(),
            Err(_) => p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        };
        if !out.iter().any(|(r, _)| *r == rel) {
            out.push((rel, p.to_path_buf()));
        }
    }
    out.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out
}

fn hash_records(list: &[(String, PathBuf)]) -> Result<Vec<FileRecord>> {
    list.iter()
        .map(|(rel, path)| {
            let (size, sha256) = manifest::hash_file(path, None)?;
            Ok(FileRecord { path: rel.clone(), size, sha256 })
        })
        .collect()
}

fn dir_name(p: &Path) -> String {
    p.canonicalize()
        .ok()
        .as_deref()
        .unwrap_or(p)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Builds the release directory `release_dir` from the Hugging Face model
/// directory `hf_dir`, in three phases: [`plan_release`] (everything that can
/// be checked before reading the weights is: types, names, Modelfile
/// parameters, plans, the destination; such errors leave no trace),
/// [`write_release`] (the single pass, inputs hashed beside it) and
/// [`describe_release`] (Modelfiles, `manifest.json`, `SHA256SUMS`).
pub fn pack(hf_dir: &Path, release_dir: &Path, opts: &PackOptions, progress: &dyn Progress) -> Result<PackSummary> {
    let start = Instant::now();
    let rec = Recorder { inner: progress, warnings: Mutex::new(Vec::new()) };
    let plan = plan_release(hf_dir, release_dir, opts, &rec)?;
    let dir = AtomicDir::create(release_dir, opts.force)?;
    let written = write_release(&plan, dir.path(), opts, &rec)?;
    let evaluation = evaluate_release(&plan, dir.path(), opts, &rec)?;
    let (manifest, files) = describe_release(&plan, &written, evaluation.as_ref(), dir.path(), opts, &rec)?;
    dir.commit()?;
    Ok(PackSummary {
        release_dir: release_dir.to_path_buf(),
        name: plan.name.clone(),
        manifest: serde_json::to_value(&manifest).map_err(|e| Error::Other(format!("manifest: {e}")))?,
        files,
        warnings: rec.take(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// A release decided before any weight is read.
pub struct ReleasePlan {
    hf_dir: PathBuf,
    /// The file-name stem.
    pub name: String,
    /// The base model as `convert --outtype f32` opens it.
    base: HfToGguf,
    /// With adapters: the merged model the pass reads.
    merged: Option<Box<dyn PackModel>>,
    /// The outputs, sorted by file name.
    outputs: Vec<Output>,
    /// What the release records about its inputs (relative path, file).
    source_list: Vec<(String, PathBuf)>,
    adapter_lists: Vec<Vec<(String, PathBuf)>>,
    adapters: Vec<AdapterSpec>,
    /// `--eval`: the text's record and its chunks.
    eval: Option<(TextRecord, Chunks)>,
    /// `--imatrix-text`: the importance matrix, computed.
    imatrix: Option<ReleaseImatrix>,
}

/// The importance matrix of a release (`--imatrix-text`).
struct ReleaseImatrix {
    /// `NAME.imatrix.gguf`.
    file: String,
    /// The file's bytes (llama-imatrix's GGUF format).
    bytes: Vec<u8>,
    /// As `quantize --imatrix NAME.imatrix.gguf` loads it, in the release directory.
    loaded: Imatrix,
    text: TextRecord,
    chunks: u32,
    ctx: u32,
}

/// Reads a text file given to `--eval` / `--imatrix-text` and tokenizes it
/// with the model's vocabulary, cut into chunks as `eval` / `imatrix` cut it.
fn read_text(path: &Path, flag: &str, md: &Metadata, eopts: &EvalOptions) -> Result<(TextRecord, Chunks)> {
    let text = crate::infer::text::read_text(path).map_err(|e| match e {
        Error::Input { path, msg } => Error::Input { path, msg: format!("{flag}: {msg}") },
        other => other,
    })?;
    let tokens = crate::infer::text::tokenize(md, &text)?;
    let chunks = Chunks::new(tokens, crate::infer::text::chunk_bos(md)?, eopts).map_err(|e| match e {
        Error::Usage(m) => Error::input(path, format!("{flag}: {m}")),
        other => other,
    })?;
    let record = TextRecord {
        file: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        size: text.len() as u64,
        sha256: manifest::hash_bytes(text.as_bytes()),
    };
    Ok((record, chunks))
}

/// The forward pass's options in `pack`: those of `eval` and `imatrix` by default.
const FORWARD: ForwardOptions = ForwardOptions { kv_f16: true };

/// `--imatrix-text`: the importance matrix of the (merged) F32 model, as
/// `ggufkit imatrix` computes it, written to bytes and loaded back as
/// `quantize --imatrix NAME.imatrix.gguf` loads it (that relative name is
/// what the quantized GGUFs record in `quantize.imatrix.file`).
fn compute_imatrix(
    reader: &dyn PackModel,
    name: &str,
    text: TextRecord,
    chunks: &Chunks,
    threads: usize,
    rec: &dyn Progress,
) -> Result<ReleaseImatrix> {
    let pool = thread_pool(threads)?;
    let model = crate::infer::Model::new(reader.metadata(), reader.source(), Precision::F32, FORWARD)?;
    let run = pool.install(|| crate::infer::imatrix::collect(&model, chunks, false, rec))?;
    let file = format!("{name}.imatrix.gguf");
    let tmp = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), "create temporary directory", e))?;
    let path = tmp.path().join(&file);
    crate::infer::imatrix::write_gguf(&run, std::slice::from_ref(&text.file), &path, &[])?;
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, "read", e))?;
    let parsed = crate::imatrix::parse(&bytes).map_err(|e| Error::parse(&path, "imatrix GGUF", e))?;
    let loaded = Imatrix::from_file(&file, parsed)?;
    Ok(ReleaseImatrix { file, bytes, loaded, text, chunks: run.chunk_count, ctx: run.chunk_size })
}

impl ReleasePlan {
    /// The model whose rows the pass reads.
    fn reader(&self) -> &dyn PackModel {
        self.merged.as_deref().unwrap_or(&self.base)
    }
}

/// Phase 1: parses and checks everything, opens the model (merged with the
/// adapters) and plans every output.
pub fn plan_release(hf_dir: &Path, release_dir: &Path, opts: &PackOptions, rec: &dyn Progress) -> Result<ReleasePlan> {
    let requested = parse_types(&opts.types)?;
    if let Some(n) = &opts.name {
        check_name(n)?;
    }
    for a in &opts.adapters {
        if !a.dir.is_dir() {
            return Err(Error::input(&a.dir, "not a directory (expected a PEFT LoRA adapter directory)"));
        }
    }
    let mut input_dirs: Vec<&Path> = vec![hf_dir];
    input_dirs.extend(opts.adapters.iter().map(|a| a.dir.as_path()));
    check_destination(release_dir, &input_dirs)?;

    // The base model as `convert --outtype f32` opens it: checks, the default
    // name, the recorded source files; without adapters also the rows.
    let f32_opts = ConvertOptions { outtype: OutType::F32, threads: None, vocab_pre: None };
    let base = HfToGguf::open(hf_dir, &f32_opts, rec)?;
    let name = match &opts.name {
        Some(n) => n.clone(),
        None => default_name(&base.metadata, hf_dir),
    };
    let merged: Option<Box<dyn PackModel>> = if opts.adapters.is_empty() {
        None
    } else {
        Some(open_model(hf_dir, &opts.adapters, OutType::F32, &format!("{name}-F32"), Some(&base.vocab), rec)?)
    };
    let reader: &dyn PackModel = merged.as_deref().unwrap_or(&base);
    let src = reader.source();

    // The texts, checked before anything is computed.
    let eval = match &opts.eval_text {
        Some(p) => Some(read_text(p, "--eval", reader.metadata(), &opts.eval)?),
        None => None,
    };
    let imatrix_text = match &opts.imatrix_text {
        Some(p) => {
            if !requested.iter().any(|r| matches!(r.target, Target::Quantize(_))) {
                return Err(Error::usage(
                    "--imatrix-text applies to quantized output types (e.g. --types IQ4_XS,Q4_K_M)",
                ));
            }
            Some(read_text(p, "--imatrix-text", reader.metadata(), &opts.imatrix)?)
        }
        None => None,
    };
    let imatrix = match imatrix_text {
        Some((text, chunks)) => Some(compute_imatrix(reader, &name, text, &chunks, opts.threads, rec)?),
        None => None,
    };

    let mut outputs: Vec<Output> = Vec::with_capacity(requested.len());
    let mut auto: Option<OutType> = None;
    for req in &requested {
        let outtype = match req.target {
            // `auto` is the type convert_hf_to_gguf.py picks from the base's weights.
            Target::Convert(OutType::Auto) => match auto {
                Some(t) => t,
                None => {
                    let quiet = CollectWarnings::default();
                    let auto_opts = ConvertOptions { outtype: OutType::Auto, ..f32_opts.clone() };
                    let model = HfModelDir::open(hf_dir)?;
                    let identity = ModelIdentity::of_dir(hf_dir);
                    let t = HfToGguf::from_model_with_vocab(model, &identity, &auto_opts, Some(&base.vocab), &quiet)?
                        .outtype;
                    *auto.insert(t)
                }
            },
            t => t.conversion(),
        };
        let target = match req.target {
            Target::Convert(_) => Target::Convert(outtype),
            t => t,
        };
        let label = target.name().unwrap_or("F16");
        if let Some(prev) = outputs.iter().find(|o| o.label == label) {
            return Err(Error::usage(format!(
                "--types: '{}' and '{}' both give the {label} file",
                prev.target.describe(&prev.label),
                req.requested
            )));
        }
        // The model as this output's separate command would open it; the
        // reader itself when that is the same conversion.
        let opened: Option<Box<dyn PackModel>> = if outtype == OutType::F32 && opts.adapters.is_empty() {
            None
        } else {
            let stem = format!("{name}-{label}");
            let quiet = CollectWarnings::default();
            let m = open_model(hf_dir, &opts.adapters, outtype, &stem, Some(&base.vocab), &quiet)?;
            for w in m.warnings() {
                if !reader.warnings().contains(w) {
                    rec.warn(&format!("{}: {w}", req.requested));
                }
            }
            Some(m)
        };
        let model: &dyn PackModel = opened.as_deref().unwrap_or(reader);
        if !same_tensors(model.source(), src) {
            return Err(Error::Other(format!(
                "{}: the model opened for {} does not list the same tensors",
                hf_dir.display(),
                req.requested
            )));
        }
        if model.outtype() != outtype {
            return Err(Error::Other(format!(
                "{}: opened as {:?}, not {outtype:?}",
                hf_dir.display(),
                model.outtype()
            )));
        }
        let im = match target {
            Target::Quantize(_) => imatrix.as_ref().map(|m| &m.loaded),
            Target::Convert(_) => None,
        };
        let resolved = target.resolve(model, im)?;
        for w in &resolved.warnings {
            rec.warn(&format!("{label}: {w}"));
        }
        let (plan, metadata, file_type) = (resolved.plan, resolved.metadata, resolved.file_type);
        let label = label.to_string();
        outputs.push(Output {
            file: format!("{name}-{label}.gguf"),
            modelfile: format!("Modelfile.{label}"),
            label,
            target: req.target,
            plan,
            metadata,
            file_type,
        });
    }
    outputs.sort_by(|a, b| a.file.as_bytes().cmp(b.file.as_bytes()));
    for o in &outputs {
        pipeline::check_plan(src, &o.plan)?;
    }
    // The Modelfile options, checked on the source's metadata.
    modelfile::from_gguf(&base.metadata, &modelfile_options(opts, "./check.gguf"))?;

    let source_list = record_list(hf_dir, SOURCE_SIDE_FILES, &base.inputs());
    let adapter_lists: Vec<Vec<(String, PathBuf)>> =
        opts.adapters.iter().map(|a| record_list(&a.dir, ADAPTER_FILES, &[])).collect();
    Ok(ReleasePlan {
        hf_dir: hf_dir.to_path_buf(),
        name,
        base,
        merged,
        outputs,
        source_list,
        adapter_lists,
        adapters: opts.adapters.clone(),
        eval,
        imatrix,
    })
}

/// What [`write_release`] wrote and hashed.
pub struct Written {
    /// Per output (in the plan's order): the engine's summary.
    summaries: Vec<WriteSummary>,
    /// Per output: size and SHA-256 of its GGUF.
    hashes: Vec<(u64, String)>,
    source_records: Vec<FileRecord>,
    adapter_records: Vec<Vec<FileRecord>>,
    /// `--imatrix-text`: the imatrix file written.
    imatrix: Option<FileRecord>,
}

/// Phase 2: the single pass over the weights into `tmp` (every output
/// through the engine, error measured), the inputs hashed beside it, then
/// the outputs hashed.
pub fn write_release(plan: &ReleasePlan, tmp: &Path, opts: &PackOptions, rec: &dyn Progress) -> Result<Written> {
    let reader = plan.reader();
    let src = reader.source();
    let weight_files = reader.inputs();
    let wopts = WriteOptions {
        threads: opts.threads,
        chunk_bytes: 16 << 20,
        measure_error: true,
        hash: true,
        ..Default::default()
    };
    let dests: Vec<PathBuf> = plan.outputs.iter().map(|o| tmp.join(&o.file)).collect();
    let multi: Vec<MultiOutput> = plan
        .outputs
        .iter()
        .zip(&dests)
        .map(|(o, dest)| MultiOutput { plan: &o.plan, metadata: &o.metadata, dest })
        .collect();
    let (source_list, adapter_lists) = (&plan.source_list, &plan.adapter_lists);
    let (written, hashed) = std::thread::scope(|s| {
        let hashing = s.spawn(move || -> Result<(Vec<FileRecord>, Vec<Vec<FileRecord>>)> {
            let sources = hash_records(source_list)?;
            let adapters = adapter_lists.iter().map(|l| hash_records(l)).collect::<Result<Vec<_>>>()?;
            Ok((sources, adapters))
        });
        let written = pipeline::write_gguf_multi(src, &multi, &weight_files, &wopts, rec);
        let hashed = hashing.join().unwrap_or_else(|_| Err(Error::Other("hashing thread panicked".into())));
        (written, hashed)
    });
    let summaries = written?;
    let (source_records, adapter_records) = hashed?;

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads)
        .build()
        .map_err(|e| Error::Other(format!("cannot start worker threads: {e}")))?;
    // The sinks hash what they write as it goes by; an output they could not
    // (written too far out of order) is read back.
    let unhashed: u64 = summaries.iter().filter(|w| w.sha256.is_none()).map(|w| w.file_size).sum();
    if unhashed > 0 {
        rec.begin("hashing", unhashed);
    }
    let hashes: Vec<(u64, String)> = pool.install(|| {
        dests
            .par_iter()
            .zip(&summaries)
            .map(|(d, w)| match &w.sha256 {
                Some(h) => Ok((w.file_size, h.clone())),
                None => manifest::hash_file(d, Some(rec)),
            })
            .collect::<Result<Vec<_>>>()
    })?;
    if unhashed > 0 {
        rec.finish();
    }
    let imatrix = match &plan.imatrix {
        Some(m) => {
            let path = tmp.join(&m.file);
            std::fs::write(&path, &m.bytes).map_err(|e| Error::io(&path, "write", e))?;
            Some(FileRecord {
                path: m.file.clone(),
                size: m.bytes.len() as u64,
                sha256: manifest::hash_bytes(&m.bytes),
            })
        }
        None => None,
    };
    Ok(Written { summaries, hashes, source_records, adapter_records, imatrix })
}

/// What [`evaluate_release`] measured.
pub struct Evaluation {
    pub record: EvalRecord,
    /// Per output (in the plan's order), figures to 6 significant digits.
    pub reports: Vec<EvalReport>,
}

/// The figures of a report to 6 significant digits (the manifest shows
/// figures, not float noise).
fn rounded(mut r: EvalReport) -> EvalReport {
    let s = manifest::sig6;
    r.ppl = s(r.ppl);
    r.ppl_stderr = s(r.ppl_stderr);
    if let Some(k) = &mut r.kld {
        k.mean = s(k.mean);
        k.stderr = s(k.stderr);
        k.median = s(k.median);
        k.p99 = s(k.p99);
        k.max = s(k.max);
    }
    r.same_top = r.same_top.map(s);
    r.rms_dp = r.rms_dp.map(s);
    r.ppl_ratio = r.ppl_ratio.map(s);
    r
}

/// Phase 2b (`--eval`): the unquantized (merged) F32 model evaluated once on
/// the text, then every output GGUF in `tmp` scored against it, as `ggufkit
/// eval OUTPUT --ref HF_DIR` scores it.
pub fn evaluate_release(
    plan: &ReleasePlan,
    tmp: &Path,
    opts: &PackOptions,
    rec: &dyn Progress,
) -> Result<Option<Evaluation>> {
    let Some((text, chunks)) = &plan.eval else {
        return Ok(None);
    };
    let pool = thread_pool(opts.threads)?;
    let reader = plan.reader();
    let reference = {
        let model = crate::infer::Model::new(reader.metadata(), reader.source(), Precision::F32, FORWARD)?;
        pool.install(|| crate::infer::Reference::compute(&model, chunks, rec))?
    };
    let mut reports = Vec::with_capacity(plan.outputs.len());
    for o in &plan.outputs {
        let path = tmp.join(&o.file);
        let file = GgufFile::open(&path)?;
        let src = pipeline::GgufSource::new(&file);
        let model =
            crate::infer::Model::new(&file.header.metadata, &src as &dyn TensorSource, Precision::AsStored, FORWARD)?;
        let labeled = crate::progress::Labeled { inner: rec, label: &o.label };
        let report = pool.install(|| crate::infer::eval::score(&model, &reference, &labeled))?;
        reports.push(rounded(report));
    }
    let record = EvalRecord {
        text: text.clone(),
        reference: if plan.adapters.is_empty() {
            "the F32 conversion of the source (what convert --outtype f32 writes)".into()
        } else {
            "the F32 conversion of the source with the adapters merged (what merge --outtype f32 writes)".into()
        },
        ctx: chunks.ctx,
        chunks: chunks.n_chunks,
        reference_ppl: manifest::sig6(reference.ppl),
    };
    Ok(Some(Evaluation { record, reports }))
}

/// Phase 3: the Modelfiles (from the metadata as written), `manifest.json`
/// and `SHA256SUMS` in `tmp`; returns the manifest and every file's record,
/// sorted by name.
pub fn describe_release(
    plan: &ReleasePlan,
    written: &Written,
    evaluation: Option<&Evaluation>,
    tmp: &Path,
    opts: &PackOptions,
    rec: &dyn Progress,
) -> Result<(Manifest, Vec<FileRecord>)> {
    let mut files: Vec<FileRecord> = Vec::new();
    let mut outputs = Vec::with_capacity(plan.outputs.len());
    for (i, ((o, w), (size, sha))) in plan.outputs.iter().zip(&written.summaries).zip(&written.hashes).enumerate() {
        let gguf = GgufFile::open(tmp.join(&o.file))?;
        let (mut spec, mwarn) =
            modelfile::from_gguf(&gguf.header.metadata, &modelfile_options(opts, &format!("./{}", o.file)))?;
        for m in &mwarn {
            rec.warn(&format!("Modelfile: {m}"));
        }
        // The TEMPLATE against the GGUF's chat template, as `modelfile` verifies it.
        let verification = modelfile::verify_gguf(&gguf.header.metadata, &spec)?;
        modelfile::annotate(&mut spec, verification.as_ref());
        if let Some(v) = verification.as_ref().filter(|v| !v.is_verified()) {
            rec.warn(&format!("Modelfile: {}", v.summary()));
        }
        let text = modelfile::render(&spec)?;
        let mpath = tmp.join(&o.modelfile);
        std::fs::write(&mpath, text.as_bytes()).map_err(|e| Error::io(&mpath, "write", e))?;
        let msha = manifest::hash_bytes(text.as_bytes());
        files.push(FileRecord { path: o.file.clone(), size: *size, sha256: sha.clone() });
        files.push(FileRecord { path: o.modelfile.clone(), size: text.len() as u64, sha256: msha.clone() });
        let mut r = output_record(o, w, *size, sha, &spec, &msha);
        r.modelfile.verified = verification.map(|v| VerifiedRecord {
            conversations: v.conversations,
            identical: v.identical,
            differences: v.differences,
        });
        r.eval = evaluation.map(|e| e.reports[i].clone());
        let with_imatrix = plan.imatrix.as_ref().filter(|_| matches!(o.target, Target::Quantize(_)));
        if let Some(m) = with_imatrix {
            r.made_as = format!("convert --outtype f32 | quantize --imatrix {} {}", m.file, o.label);
        }
        if !plan.adapters.is_empty() {
            // The separate command that writes the same file.
            let t = match o.target {
                Target::Convert(_) => o.label.to_ascii_lowercase(),
                Target::Quantize(_) => o.label.clone(),
            };
            let loras: Vec<String> = plan.adapters.iter().map(|a| format!("--lora ADAPTER={}", a.weight)).collect();
            r.made_as = format!("merge BASE {} -o {} --outtype {t}", loras.join(" "), o.file);
            if let Some(m) = with_imatrix {
                r.made_as.push_str(&format!(" --imatrix {}", m.file));
            }
        }
        outputs.push(r);
    }

    let base = &plan.base;
    let manifest = Manifest {
        manifest_version: MANIFEST_VERSION,
        tool: Tool { name: env!("CARGO_PKG_NAME").into(), version: env!("CARGO_PKG_VERSION").into() },
        name: plan.name.clone(),
        source: SourceRecord {
            dir: dir_name(&plan.hf_dir),
            architecture: base.hf_architecture.clone(),
            gguf_architecture: base.spec.gguf_arch.clone(),
            parameters: base.tensors.iter().map(|t| t.n_elements()).sum::<u64>(),
            files: written.source_records.clone(),
        },
        adapters: plan
            .adapters
            .iter()
            .zip(&written.adapter_records)
            .map(|(a, recs)| AdapterRecord { dir: dir_name(&a.dir), weight: a.weight, files: recs.clone() })
            .collect(),
        imatrix: plan.imatrix.as_ref().zip(written.imatrix.as_ref()).map(|(m, f)| ImatrixRecord {
            file: f.path.clone(),
            size: f.size,
            sha256: f.sha256.clone(),
            text: m.text.clone(),
            entries: m.loaded.data.len(),
            chunks: m.chunks,
            ctx: m.ctx,
            used_by: outputs
                .iter()
                .filter(|r| plan.outputs.iter().any(|o| o.file == r.file && matches!(o.target, Target::Quantize(_))))
                .map(|r| r.ty.clone())
                .collect(),
        }),
        eval: evaluation.map(|e| e.record.clone()),
        outputs,
    };
    if let Some(f) = &written.imatrix {
        files.push(f.clone());
    }
    let text = manifest.to_text();
    let mpath = tmp.join(MANIFEST);
    std::fs::write(&mpath, text.as_bytes()).map_err(|e| Error::io(&mpath, "write", e))?;
    files.push(FileRecord {
        path: MANIFEST.into(),
        size: text.len() as u64,
        sha256: manifest::hash_bytes(text.as_bytes()),
    });

    let sums = manifest::sha256sums(&files);
    let spath = tmp.join(SHA256SUMS);
    std::fs::write(&spath, sums.as_bytes()).map_err(|e| Error::io(&spath, "write", e))?;
    files.push(FileRecord {
        path: SHA256SUMS.into(),
        size: sums.len() as u64,
        sha256: manifest::hash_bytes(sums.as_bytes()),
    });
    files.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    Ok((manifest, files))
}

fn modelfile_options(opts: &PackOptions, from: &str) -> FromGgufOptions {
    FromGgufOptions {
        from: from.to_string(),
        system: opts.system.clone(),
        parameters: opts.parameters.clone(),
        ..Default::default()
    }
}

/// The chat-template family a Modelfile got (by its TEMPLATE), `None` for the fallback.
fn family_of(spec: &ModelfileSpec) -> Option<&'static str> {
    let t = spec.template.as_deref()?;
    modelfile::families::families().iter().find(|f| f.template == t).map(|f| f.name.as_str())
}

fn quality(w: &WriteSummary) -> Quality {
    let tensors = &w.tensors;
    let mut total = ErrorStats::default();
    let mut by_type: Vec<(GgmlType, usize, ErrorStats)> = Vec::new();
    let mut worst: Option<(usize, f64)> = None;
    for (i, (t, e)) in tensors.iter().zip(&w.errors).enumerate() {
        total.add(e);
        match by_type.iter_mut().find(|b| b.0 == t.ty) {
            Some(b) => {
                b.1 += 1;
                b.2.add(e);
            }
            None => by_type.push((t.ty, 1, *e)),
        }
        let r = e.relative_rms();
        if r > 0.0 && worst.is_none_or(|(_, w)| r > w) {
            worst = Some((i, r));
        }
    }
    by_type.sort_by_key(|b| b.0.id());
    Quality {
        reference: "the F32 source weights (what convert --outtype f32 writes)".into(),
        rms_error: manifest::sig6(total.rms()),
        relative_rms_error: manifest::sig6(total.relative_rms()),
        max_abs_error: manifest::sig6(total.max_abs_err),
        by_type: by_type
            .iter()
            .map(|(ty, n, e)| TypeQuality {
                ty: ty.name().into(),
                tensors: *n,
                parameters: e.n,
                relative_rms_error: manifest::sig6(e.relative_rms()),
                max_abs_error: manifest::sig6(e.max_abs_err),
            })
            .collect(),
        worst_tensor: worst.map(|(i, r)| WorstTensor {
            name: tensors[i].name.clone(),
            ty: tensors[i].ty.name().into(),
            relative_rms_error: manifest::sig6(r),
        }),
    }
}

fn output_record(o: &Output, w: &WriteSummary, size: u64, sha: &str, spec: &ModelfileSpec, msha: &str) -> OutputRecord {
    let tensors = &w.tensors;
    let params: u64 = tensors.iter().map(|t| t.dims.iter().product::<u64>()).sum();
    let bytes: u64 = tensors.iter().map(|t| t.bytes).sum();
    let mut counts: Vec<(GgmlType, usize)> = Vec::new();
    for t in tensors {
        match counts.iter_mut().find(|c| c.0 == t.ty) {
            Some(c) => c.1 += 1,
            None => counts.push((t.ty, 1)),
        }
    }
    counts.sort_by_key(|c| c.0.id());
    OutputRecord {
        ty: o.label.clone(),
        made_as: o.target.describe(&o.label),
        file: o.file.clone(),
        size,
        sha256: sha.to_string(),
        file_type: o.file_type,
        tensor_count: tensors.len(),
        parameters: params,
        bits_per_weight: manifest::sig6(if params > 0 { bytes as f64 * 8.0 / params as f64 } else { 0.0 }),
        tensor_types: counts.iter().map(|(t, n)| (t.name().to_string(), Json::from(*n))).collect(),
        quality: quality(w),
        modelfile: ModelfileRecord {
            file: o.modelfile.clone(),
            sha256: msha.to_string(),
            family: family_of(spec).map(str::to_string),
            stop: spec.parameter("stop").into_iter().map(str::to_string).collect(),
            num_ctx: spec.parameter("num_ctx").first().map(|s| s.to_string()),
            system: spec.system.is_some(),
            verified: None,
        },
        eval: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::Value;

    #[test]
    fn names() {
        let mut md = Metadata::new();
        md.push("general.name", Value::string("Acme Coder"));
        assert_eq!(default_name(&md, Path::new(".")), "Acme-Coder");
        md.push("general.basename", Value::string("Qwen2.5-Coder"));
        md.push("general.size_label", Value::string("7B"));
        md.push("general.finetune", Value::string("Instruct"));
        assert_eq!(default_name(&md, Path::new(".")), "Qwen2.5-Coder-7B-Instruct");
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("my model");
        std::fs::create_dir(&dir).unwrap();
        assert_eq!(default_name(&Metadata::new(), &dir), "my-model");
        assert!(check_name("tiny-mistral_v2.1").is_ok());
        for bad in ["", ".hidden", "-x", "a/b", "a b", "ü"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn destination_may_not_hold_an_input() {
        let d = tempfile::tempdir().unwrap();
        let model = d.path().join("model");
        std::fs::create_dir(&model).unwrap();
        assert!(check_destination(&model, &[&model]).is_err());
        assert!(check_destination(d.path(), &[&model]).is_err());
        assert!(check_destination(&d.path().join("release"), &[&model]).is_ok());
        assert!(check_destination(&model.join("release"), &[&model]).is_ok());
    }
}
