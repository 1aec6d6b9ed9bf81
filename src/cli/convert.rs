use std::path::PathBuf;
use std::process::ExitCode;

use ggufkit::convert::{ConvertOptions, OutType};
use ggufkit::imatrix::Imatrix;
use ggufkit::pipeline::WriteOptions;
use ggufkit::target::Target;
use ggufkit::{Error, Result};

use super::output::{print_json, TermProgress};

#[derive(clap::Args)]
pub struct Args {
    /// Hugging Face model directory (config.json, *.safetensors, tokenizer files); with --base, a PEFT
    /// LoRA adapter directory.
    hf_dir: PathBuf,
    /// Output GGUF file (written atomically).
    output: PathBuf,
    /// Output type: f32, f16, bf16, q8_0 or auto (bf16 for bf16 weights, else f16) as
    /// convert_hf_to_gguf.py; or any llama-quantize file type (Q4_K_M, Q6_K, IQ4_XS, ...),
    /// quantized in the same pass exactly as `quantize` would quantize the f32 conversion.
    /// With --base: f32 (default, as convert_lora_to_gguf.py), f16, bf16, q8_0 or auto.
    #[arg(long)]
    outtype: Option<String>,
    /// Convert HF_DIR as a PEFT LoRA adapter of this base model directory into a GGUF LoRA adapter
    /// (llama.cpp --lora, Ollama ADAPTER), as llama.cpp's convert_lora_to_gguf.py does.
    #[arg(long, value_name = "BASE_DIR")]
    base: Option<PathBuf>,
    /// Importance matrix for a quantized --outtype.
    #[arg(long, value_name = "FILE")]
    imatrix: Option<PathBuf>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// llama.cpp pre-tokenizer name to use when the tokenizer's hash is not in llama.cpp's table.
    #[arg(long, value_name = "NAME")]
    vocab_pre: Option<String>,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    json: bool,
    /// No progress bar or warnings.
    #[arg(long, short)]
    quiet: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    if args.threads == Some(0) {
        return Err(Error::usage("--threads must be at least 1"));
    }
    let progress = TermProgress::new(args.quiet, args.json);
    if let Some(base) = &args.base {
        return run_adapter(&args, base, &progress);
    }
    let outtype_arg = args.outtype.clone().unwrap_or_else(|| "auto".into());
    let target = Target::parse(&outtype_arg).map_err(|e| Error::usage(format!("--outtype: {e}")))?;
    if matches!(target, Target::Convert(_)) && args.imatrix.is_some() {
        return Err(Error::usage("--imatrix applies to quantized output types (e.g. --outtype Q4_K_M)"));
    }
    let imatrix = args.imatrix.as_ref().map(Imatrix::load).transpose()?;
    let opts =
        ConvertOptions { outtype: target.conversion(), threads: args.threads, vocab_pre: args.vocab_pre.clone() };
    let wopts = WriteOptions { threads: args.threads.unwrap_or(0), measure_error: args.json, ..Default::default() };
    let (summary, written) =
        ggufkit::target::convert(&args.hf_dir, &args.output, target, &opts, imatrix.as_ref(), &wopts, &progress)?;
    if args.json {
        let mut j = serde_json::to_value(&summary).unwrap_or_default();
        j["tensors"] = written.to_json()["tensors"].take();
        print_json(&j);
    } else if !args.quiet {
        eprintln!(
            "ggufkit: wrote {} ({} {}, {} tensors, {} parameters, {} bytes; tokenizer {}/{})",
            summary.output.display(),
            summary.gguf_architecture,
            summary.outtype,
            summary.n_tensors,
            summary.n_params,
            summary.output_bytes,
            summary.tokenizer_model,
            summary.tokenizer_pre
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `convert ADAPTER_DIR OUT.gguf --base BASE_DIR`: a GGUF LoRA adapter.
fn run_adapter(args: &Args, base: &std::path::Path, progress: &TermProgress) -> Result<ExitCode> {
    if args.imatrix.is_some() || args.vocab_pre.is_some() {
        return Err(Error::usage("--imatrix and --vocab-pre do not apply to LoRA adapters"));
    }
    let outtype = match &args.outtype {
        None => OutType::F32,
        Some(s) => s
            .parse::<OutType>()
            .map_err(|e| Error::usage(format!("{e} (LoRA adapters: f32, f16, bf16, q8_0, auto)")))?,
    };
    let opts = ggufkit::lora::to_gguf::AdapterGgufOptions { outtype, threads: args.threads };
    let summary = ggufkit::lora::to_gguf::convert_adapter(&args.hf_dir, base, &args.output, &opts, progress)?;
    if args.json {
        print_json(&serde_json::to_value(&summary).unwrap_or_default());
    } else if !args.quiet {
        eprintln!(
            "ggufkit: wrote LoRA adapter {} ({} {}, {} modules, alpha {}, {} bytes)",
            summary.output.display(),
            summary.gguf_architecture,
            summary.outtype,
            summary.n_modules,
            summary.lora_alpha,
            summary.output_bytes
        );
    }
    Ok(ExitCode::SUCCESS)
}
