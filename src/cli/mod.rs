//! Command-line parsing and dispatch. Each subcommand lives in its own file
//! with an `Args` struct (clap derive) and a `run` function; the library does
//! the work.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use ggufkit::Error;

mod convert;
mod diff;
mod edit;
mod eval;
mod imatrix;
mod inspect;
mod merge;
mod modelfile;
pub mod output;
mod pack;
mod quantize;

/// ggufkit: convert, merge, quantize and package GGUF models, bit-identical to llama.cpp.
#[derive(Parser)]
#[command(name = "ggufkit", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert a Hugging Face model directory (safetensors) to GGUF, as llama.cpp's convert_hf_to_gguf.py does.
    Convert(convert::Args),
    /// Show a GGUF file's metadata and tensors.
    Inspect(inspect::Args),
    /// Compare two GGUF files: metadata and tensors (exit 0 identical, 1 different, 2 error).
    Diff(diff::Args),
    /// Rewrite a GGUF file with metadata keys set or removed (tensors copied unchanged).
    Edit(edit::Args),
    /// Write an Ollama Modelfile for a GGUF (template, stops, parameters), or check one.
    Modelfile(modelfile::Args),
    /// Quantize a GGUF (Q4_K_M, Q8_0, ...) bit-identically to llama.cpp's llama-quantize.
    Quantize(quantize::Args),
    /// Build a release: GGUFs for several types from one read of the model, Modelfiles, manifest, SHA256SUMS.
    Pack(pack::Args),
    /// Merge PEFT LoRA adapters into their base model: a Hugging Face directory, or straight to GGUF.
    Merge(merge::Args),
    /// Perplexity of a model on a text, and with --ref the KL divergence against a reference (llama-perplexity).
    Eval(eval::Args),
    /// Compute an importance matrix from a text (llama-imatrix), for quantize --imatrix.
    Imatrix(imatrix::Args),
}

/// Parses the command line, runs the command, prints errors, returns the exit code.
pub fn main() -> ExitCode {
    ggufkit::fileio::install_signal_handlers();
    // Die quietly on a closed stdout pipe (`ggufkit inspect x | head`), like other Unix tools.
    // SAFETY: restoring the default disposition of SIGPIPE.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let args = quantize::expand_type_flags(std::env::args_os().collect());
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let result = match cli.command {
        Command::Convert(a) => convert::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Diff(a) => diff::run(a),
        Command::Edit(a) => edit::run(a),
        Command::Modelfile(a) => modelfile::run(a),
        Command::Quantize(a) => quantize::run(a),
        Command::Pack(a) => pack::run(a),
        Command::Merge(a) => merge::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Imatrix(a) => imatrix::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            print_error(&e);
            ExitCode::from(e.exit_code())
        }
    }
}

/// Prints an error with its chain of causes.
pub fn print_error(e: &Error) {
    let mut msg = format!("ggufkit: error: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(&format!("\n  caused by: {text}"));
        }
        source = s.source();
    }
    eprintln!("{msg}");
}
