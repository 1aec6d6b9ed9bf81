use std::path::PathBuf;
use std::process::ExitCode;

use ggufkit::hf::writer::parse_size;
use ggufkit::hf::DType;
use ggufkit::imatrix::Imatrix;
use ggufkit::lora::{merge_to_dir, merge_to_gguf, AdapterSpec, MergeOptions};
use ggufkit::target::Target;
use ggufkit::{Error, Result};

use super::output::{print_json, TermProgress};

/// Merge PEFT LoRA adapters into their base model, as PEFT's merge_and_unload does.
///
/// With -o DIR: a Hugging Face directory (safetensors sharded like transformers, config and tokenizer files).
/// With -o FILE.gguf: the merged model converted to GGUF in the same pass (any convert --outtype or
/// llama-quantize type, e.g. Q4_K_M), with no intermediate files.
#[derive(clap::Args)]
pub struct Args {
    /// The base model's Hugging Face directory (16-bit or f32 safetensors, not the bnb-4bit one).
    base_dir: PathBuf,
    /// A PEFT adapter directory, optionally with a weight for its ΔW (DIR=0.5). Repeat to merge several, in order.
    #[arg(long = "lora", value_name = "DIR[=WEIGHT]", required = true)]
    lora: Vec<AdapterSpec>,
    /// Output: a directory, or a .gguf file.
    #[arg(short, long, value_name = "OUT")]
    output: PathBuf,
    /// Safetensors dtype of a directory output: f32, f16 or bf16 (default: the base's).
    #[arg(long)]
    dtype: Option<String>,
    /// Largest safetensors shard (transformers' notation: 5GB, 500MB, 2GiB).
    #[arg(long, default_value = "5GB")]
    max_shard_size: String,
    /// GGUF output type: f32, f16, bf16, q8_0, auto, or a llama-quantize type (Q4_K_M, Q6_K, ...).
    #[arg(long, default_value = "auto")]
    outtype: String,
    /// Importance matrix for a quantized --outtype.
    #[arg(long, value_name = "FILE")]
    imatrix: Option<PathBuf>,
    /// Replace an existing output directory.
    #[arg(long)]
    force: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    json: bool,
    /// No progress bar or warnings.
    #[arg(long, short)]
    quiet: bool,
}

fn parse_dtype(s: &str) -> Result<DType> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "f32" | "float32" => DType::F32,
        "f16" | "float16" => DType::F16,
        "bf16" | "bfloat16" => DType::BF16,
        _ => return Err(Error::usage(format!("unknown --dtype '{s}' (expected f32, f16 or bf16)"))),
    })
}

pub fn run(args: Args) -> Result<ExitCode> {
    if args.threads == Some(0) {
        return Err(Error::usage("--threads must be at least 1"));
    }
    let max_shard_size = parse_size(&args.max_shard_size)
        .filter(|&n| n > 0)
        .ok_or_else(|| Error::usage(format!("--max-shard-size '{}' is not a size like 5GB", args.max_shard_size)))?;
    let gguf = args.output.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
    let progress = TermProgress::new(args.quiet, args.json);
    let mut opts = MergeOptions { threads: args.threads, max_shard_size, force: args.force, ..Default::default() };
    let summary = if gguf {
        if args.dtype.is_some() {
            return Err(Error::usage("--dtype is for directory outputs; use --outtype with a .gguf output"));
        }
        let target = Target::parse(&args.outtype).map_err(|e| Error::usage(format!("--outtype: {e}")))?;
        if matches!(target, Target::Convert(_)) && args.imatrix.is_some() {
            return Err(Error::usage("--imatrix applies to quantized output types (e.g. --outtype Q4_K_M)"));
        }
        let imatrix = args.imatrix.as_ref().map(Imatrix::load).transpose()?;
        opts.measure_error = args.json;
        merge_to_gguf(&args.base_dir, &args.lora, &args.output, target, imatrix.as_ref(), &opts, &progress)?
    } else {
        if args.outtype != "auto" || args.imatrix.is_some() {
            return Err(Error::usage("--outtype and --imatrix are for .gguf outputs; use --dtype with a directory"));
        }
        opts.dtype = args.dtype.as_deref().map(parse_dtype).transpose()?;
        merge_to_dir(&args.base_dir, &args.lora, &args.output, &opts, &progress)?
    };
    if args.json {
        print_json(&serde_json::to_value(&summary).unwrap_or_default());
    } else if !args.quiet {
        let adapters: usize = summary.report.adapters.iter().map(|a| a.lora_modules).sum();
        eprintln!(
            "ggufkit: wrote {} ({} {}, {} tensors, {} changed by {} LoRA module(s){}; {} bytes)",
            summary.output.display(),
            summary.format,
            summary.dtype,
            summary.n_tensors,
            summary.report.changed_tensors.len(),
            adapters,
            if summary.report.untied { ", lm_head untied from the embeddings" } else { "" },
            summary.output_bytes
        );
    }
    Ok(ExitCode::SUCCESS)
}
