use std::path::PathBuf;
use std::process::ExitCode;

use ggufkit::convert::{convert_dir, ConvertOptions, OutType};
use ggufkit::{Error, Result};

use super::output::{print_json, TermProgress};

#[derive(clap::Args)]
pub struct Args {
    /// Hugging Face model directory (config.json, *.safetensors, tokenizer files).
    hf_dir: PathBuf,
    /// Output GGUF file (written atomically).
    output: PathBuf,
    /// Tensor type: f32, f16, bf16, q8_0, or auto (bf16 for bf16 weights, else f16).
    #[arg(long, default_value = "auto", value_parser = parse_outtype)]
    outtype: OutType,
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

fn parse_outtype(s: &str) -> std::result::Result<OutType, String> {
    s.parse()
}

pub fn run(args: Args) -> Result<ExitCode> {
    if args.threads == Some(0) {
        return Err(Error::usage("--threads must be at least 1"));
    }
    let opts = ConvertOptions { outtype: args.outtype, threads: args.threads, vocab_pre: args.vocab_pre };
    let summary = convert_dir(&args.hf_dir, &args.output, &opts, &TermProgress::new(args.quiet, args.json))?;
    if args.json {
        print_json(&serde_json::to_value(&summary).unwrap_or_default());
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
