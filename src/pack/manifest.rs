//! The records of a release directory: `manifest.json` as typed records
//! (the contract of `formats/release.md`: fields serialize in declaration
//! order, and fields are only ever added), file hashes, `SHA256SUMS` and
//! the small helpers that keep the manifest deterministic.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{IoContext, Result};
use crate::progress::Progress;

/// The name of the checksum file (`sha256sum -c SHA256SUMS` verifies a release).
pub const SHA256SUMS: &str = "SHA256SUMS";
/// The name of the manifest.
pub const MANIFEST: &str = "manifest.json";

/// `manifest.json` (`manifest_version` 1).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Manifest {
    pub manifest_version: u32,
    pub tool: Tool,
    pub name: String,
    pub source: SourceRecord,
    pub adapters: Vec<AdapterRecord>,
    pub outputs: Vec<OutputRecord>,
    /// `--imatrix-text`: the importance matrix computed from the (merged) model and
    /// shipped in the release.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imatrix: Option<ImatrixRecord>,
    /// `--eval`: the text every output was scored on (per output: [`OutputRecord::eval`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval: Option<EvalRecord>,
}

/// A text file given to `pack` (recorded by its name, never its path).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TextRecord {
    pub file: String,
    pub size: u64,
    pub sha256: String,
}

/// The importance matrix of a release (`--imatrix-text`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ImatrixRecord {
    /// `NAME.imatrix.gguf`, in the release.
    pub file: String,
    pub size: u64,
    pub sha256: String,
    /// The calibration text.
    pub text: TextRecord,
    /// Tensors with statistics (`quantize.imatrix.entries_count`).
    pub entries: usize,
    /// Chunks evaluated (`imatrix.chunk_count`) and tokens per chunk.
    pub chunks: u32,
    pub ctx: u32,
    /// The quantized types it was used for.
    pub used_by: Vec<String>,
}

/// The evaluation of a release (`--eval`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EvalRecord {
    pub text: TextRecord,
    /// What the outputs are scored against.
    pub reference: String,
    pub ctx: usize,
    pub chunks: usize,
    /// Perplexity of the reference itself on the same tokens.
    pub reference_ppl: f64,
}

/// The tool that wrote the release.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Tool {
    pub name: String,
    pub version: String,
}

/// The Hugging Face model directory packed.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SourceRecord {
    /// The directory's name (never an absolute path).
    pub dir: String,
    /// The Hugging Face architecture (`config.json`'s `architectures[0]`).
    pub architecture: String,
    pub gguf_architecture: String,
    pub parameters: u64,
    pub files: Vec<FileRecord>,
}

/// A LoRA adapter merged before packing.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AdapterRecord {
    pub dir: String,
    pub weight: f64,
    pub files: Vec<FileRecord>,
}

/// One GGUF of the release. Later additions (an evaluation, a template
/// verification) are optional fields at the end, skipped when absent.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OutputRecord {
    #[serde(rename = "type")]
    pub ty: String,
    /// The separate command line that writes the same bytes.
    pub made_as: String,
    pub file: String,
    pub size: u64,
    pub sha256: String,
    pub file_type: u32,
    pub tensor_count: usize,
    pub parameters: u64,
    pub bits_per_weight: f64,
    /// ggml type name → tensor count, in type-id order.
    pub tensor_types: serde_json::Map<String, serde_json::Value>,
    pub quality: Quality,
    pub modelfile: ModelfileRecord,
    /// `--eval`: perplexity and KL divergence against the unquantized model
    /// (the keys of `ggufkit eval --json`, figures to 6 significant digits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval: Option<crate::infer::eval::EvalReport>,
}

/// The error of an output against the F32 weights it was made from.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Quality {
    pub reference: String,
    pub rms_error: f64,
    pub relative_rms_error: f64,
    pub max_abs_error: f64,
    pub by_type: Vec<TypeQuality>,
    pub worst_tensor: Option<WorstTensor>,
}

/// The error of all tensors of one type.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TypeQuality {
    #[serde(rename = "type")]
    pub ty: String,
    pub tensors: usize,
    pub parameters: u64,
    pub relative_rms_error: f64,
    pub max_abs_error: f64,
}

/// The tensor with the largest relative RMS error.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WorstTensor {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub relative_rms_error: f64,
}

/// An output's Modelfile.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelfileRecord {
    pub file: String,
    pub sha256: String,
    /// The chat-template family (`None` for the fallback template).
    pub family: Option<String>,
    pub stop: Vec<String>,
    pub num_ctx: Option<String>,
    /// Whether it has a SYSTEM prompt.
    pub system: bool,
    /// The TEMPLATE rendered against the GGUF's chat template on the built-in
    /// conversations (absent when the GGUF has no chat template).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified: Option<VerifiedRecord>,
}

/// The result of the Modelfile verification (as `modelfile --json` reports it).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct VerifiedRecord {
    pub conversations: usize,
    pub identical: usize,
    pub differences: Vec<crate::modelfile::verify::Difference>,
}

impl Manifest {
    /// The file's text: two-space indented JSON and a final newline.
    pub fn to_text(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }
}

/// A file with its size and SHA-256, named by a relative path.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileRecord {
    /// Relative to the directory it belongs to, `/`-separated.
    pub path: String,
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
}

impl FileRecord {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "path": self.path, "size": self.size, "sha256": self.sha256 })
    }
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Size and SHA-256 of a file, read front to back; `progress` gets the bytes.
pub fn hash_file(path: &Path, progress: Option<&dyn Progress>) -> Result<(u64, String)> {
    let mut f = File::open(path).at(path, "open")?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).at(path, "read")?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
        if let Some(p) = progress {
            p.advance(n as u64);
        }
    }
    Ok((size, hex(&h.finalize())))
}

/// SHA-256 of bytes in memory.
pub fn hash_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The text of a `SHA256SUMS` file in `sha256sum`'s format (`<hex>  <name>`,
/// one line each), sorted by file name byte by byte.
pub fn sha256sums(files: &[FileRecord]) -> String {
    let mut sorted: Vec<&FileRecord> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    sorted.iter().map(|f| format!("{}  {}\n", f.sha256, f.path)).collect()
}

/// `x` rounded to 6 significant digits (so the manifest shows figures, not
/// float noise; the rounding itself is deterministic).
pub fn sig6(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    format!("{x:.5e}").parse().unwrap_or(x)
}

/// A name usable in file names: ASCII letters, digits, `.`, `_` and `-`;
/// every other run of characters becomes one `-`; no leading or trailing
/// `-`/`.`. Empty when nothing usable is left.
pub fn slugify(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches(|c| c == '-' || c == '.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_format_and_order() {
        let f = |p: &str, h: &str| FileRecord { path: p.into(), size: 0, sha256: h.into() };
        let text = sha256sums(&[f("b.gguf", "22"), f("Modelfile.Q8_0", "11"), f("a.gguf", "33")]);
        assert_eq!(text, "11  Modelfile.Q8_0\n33  a.gguf\n22  b.gguf\n");
        assert_eq!(hash_bytes(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn names_and_numbers() {
        assert_eq!(slugify("Qwen2.5 Coder 7B Instruct"), "Qwen2.5-Coder-7B-Instruct");
        assert_eq!(slugify("  a/b:c  "), "a-b-c");
        assert_eq!(slugify("..//"), "");
        assert_eq!(slugify("tiny-mistral-2.1M"), "tiny-mistral-2.1M");
        assert_eq!(sig6(0.0123456789), 0.0123457);
        assert_eq!(sig6(0.0), 0.0);
        assert_eq!(sig6(123456789.0), 123457000.0);
    }
}
