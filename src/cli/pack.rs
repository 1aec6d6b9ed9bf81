use std::path::PathBuf;
use std::process::ExitCode;

use ggufkit::commands::inspect::human_bytes;
use ggufkit::infer::EvalOptions;
use ggufkit::pack::{self, AdapterSpec, PackOptions};
use ggufkit::{modelfile, Error, Result};

use super::output::{print_json, TermProgress};

/// Build a release directory: one GGUF and one Ollama Modelfile per type, manifest.json and SHA256SUMS.
///
/// TYPES are what `convert --outtype` takes: f32, f16, bf16, q8_0 and auto as convert_hf_to_gguf.py
/// writes them, or any llama-quantize file type (Q4_K_M, Q5_K_M, Q6_K, IQ4_XS, ...), quantized exactly as
/// `quantize` quantizes the f32 conversion. The model is read once for all types.
///
/// Example: ggufkit pack ./my-finetune --types Q4_K_M,Q8_0 -o release
///          ollama create my-finetune -f release/Modelfile.Q4_K_M
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Hugging Face model directory (config.json, *.safetensors, tokenizer files).
    hf_dir: PathBuf,
    /// A PEFT LoRA adapter directory to merge first, with an optional weight (DIR or DIR=W; repeatable).
    #[arg(long = "lora", value_name = "DIR[=W]")]
    lora: Vec<AdapterSpec>,
    /// Output types, comma-separated (e.g. Q4_K_M,Q8_0).
    #[arg(long, value_name = "TYPES", required = true)]
    types: Vec<String>,
    /// The release directory (built under a temporary name, renamed into place when complete).
    #[arg(short = 'o', long = "output", value_name = "RELEASE_DIR")]
    output: PathBuf,
    /// Stem of the file names, NAME-TYPE.gguf (default: from the model's name, size and fine-tune).
    #[arg(long)]
    name: Option<String>,
    /// Replace RELEASE_DIR if it exists and is not empty.
    #[arg(long)]
    force: bool,
    /// Worker threads (default: all cores). The release does not depend on it.
    #[arg(long)]
    threads: Option<usize>,
    /// SYSTEM prompt of the Modelfiles.
    #[arg(long)]
    system: Option<String>,
    /// Extra Modelfile PARAMETER (repeatable): KEY=VALUE, e.g. temperature=0.2, num_ctx=16384.
    #[arg(long = "parameter", value_name = "KEY=VALUE")]
    parameters: Vec<String>,
    /// Score every output against the unquantized (merged) model on this text (PPL and KL
    /// divergence, as `ggufkit eval OUTPUT --ref HF_DIR`); recorded in manifest.json.
    #[arg(long = "eval", value_name = "TEXT")]
    eval: Option<PathBuf>,
    /// Tokens per chunk of the --eval text.
    #[arg(long, default_value_t = 512, value_name = "N")]
    eval_ctx: usize,
    /// Evaluate at most this many chunks of the --eval text.
    #[arg(long, value_name = "N")]
    eval_chunks: Option<usize>,
    /// Compute the importance matrix from the (merged) model on this text, ship it as
    /// NAME.imatrix.gguf and use it for every quantized type (as quantize --imatrix does).
    #[arg(long, value_name = "TEXT")]
    imatrix_text: Option<PathBuf>,
    /// Tokens per chunk of the --imatrix-text text.
    #[arg(long, default_value_t = 512, value_name = "N")]
    imatrix_ctx: usize,
    /// Use at most this many chunks of the --imatrix-text text.
    #[arg(long, value_name = "N")]
    imatrix_chunks: Option<usize>,
    /// Print a JSON summary (files, hashes, the manifest) on standard output.
    #[arg(long)]
    json: bool,
    /// No progress bars or warnings.
    #[arg(long, short)]
    quiet: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    if args.threads == Some(0) {
        return Err(Error::usage("--threads must be at least 1"));
    }
    let opts = PackOptions {
        types: args.types.clone(),
        adapters: args.lora.clone(),
        name: args.name.clone(),
        force: args.force,
        threads: args.threads.unwrap_or(0),
        system: args.system.clone(),
        parameters: args.parameters.iter().map(|p| modelfile::parse_parameter_arg(p)).collect::<Result<Vec<_>>>()?,
        eval_text: args.eval.clone(),
        eval: EvalOptions { ctx: args.eval_ctx, max_chunks: args.eval_chunks },
        imatrix_text: args.imatrix_text.clone(),
        imatrix: EvalOptions { ctx: args.imatrix_ctx, max_chunks: args.imatrix_chunks },
    };
    let progress = TermProgress::new(args.quiet, args.json);
    let summary = pack::pack(&args.hf_dir, &args.output, &opts, &progress)?;
    if args.json {
        print_json(&summary.to_json());
    } else if !args.quiet {
        eprintln!(
            "ggufkit: packed {} into {} in {:.1} s",
            args.hf_dir.display(),
            summary.release_dir.display(),
            summary.seconds
        );
        let width = summary.files.iter().map(|f| f.path.len()).max().unwrap_or(0);
        for f in &summary.files {
            eprintln!("  {:<width$}  {:>10}  sha256 {}…", f.path, human_bytes(f.size), &f.sha256[..16]);
        }
        let m = &summary.manifest;
        if let Some(im) = m.get("imatrix") {
            eprintln!(
                "  imatrix  {}: {} entries from {} chunks of {} tokens of {}",
                im["file"].as_str().unwrap_or("?"),
                im["entries"],
                im["chunks"],
                im["ctx"],
                im["text"]["file"].as_str().unwrap_or("?")
            );
        }
        if let Some(ev) = m.get("eval") {
            eprintln!(
                "  eval     {}: {} chunks of {} tokens; reference (F32) PPL {}",
                ev["text"]["file"].as_str().unwrap_or("?"),
                ev["chunks"],
                ev["ctx"],
                ev["reference_ppl"]
            );
        }
        if let Some(outputs) = m["outputs"].as_array() {
            for o in outputs {
                let q = &o["quality"];
                let v = &o["modelfile"]["verified"];
                let verified = match (v["conversations"].as_u64(), v["identical"].as_u64()) {
                    (Some(n), Some(k)) if n > 0 && n == k => format!("verified on {n} conversations"),
                    (Some(n), Some(k)) => format!("NOT verified ({k} of {n} conversations identical)"),
                    _ => "not verified (no chat template)".to_string(),
                };
                eprintln!(
                    "  {:<8} {:>6.2} bits/weight, error vs F32: relative RMS {}, max {}; Modelfile: {} template, {verified}",
                    o["type"].as_str().unwrap_or("?"),
                    o["bits_per_weight"].as_f64().unwrap_or(0.0),
                    q["relative_rms_error"],
                    q["max_abs_error"],
                    o["modelfile"]["family"].as_str().unwrap_or("fallback")
                );
                if let Some(e) = o.get("eval") {
                    eprintln!(
                        "  {:<8} PPL {:.4} ± {:.4}, mean KLD {:.6} ± {:.6}, same top {:.2} %",
                        "",
                        e["ppl"].as_f64().unwrap_or(f64::NAN),
                        e["ppl_stderr"].as_f64().unwrap_or(f64::NAN),
                        e["kld"]["mean"].as_f64().unwrap_or(f64::NAN),
                        e["kld"]["stderr"].as_f64().unwrap_or(f64::NAN),
                        100.0 * e["same_top"].as_f64().unwrap_or(f64::NAN)
                    );
                }
            }
            if let Some(first) = outputs.first() {
                eprintln!(
                    "ggufkit: try it: ollama create {} -f {}",
                    summary.name.to_ascii_lowercase(),
                    summary.release_dir.join(first["modelfile"]["file"].as_str().unwrap_or("")).display()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
