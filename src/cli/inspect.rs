use std::path::PathBuf;
use std::process::ExitCode;

use ggufkit::commands::inspect::{to_json, to_text, InspectOptions};
use ggufkit::gguf::GgufFile;
use ggufkit::Result;

use super::output::print_json;

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF file.
    file: PathBuf,
    /// Print a JSON report (complete arrays; schema in formats/inspect-json.md).
    #[arg(long)]
    json: bool,
    /// List every tensor: name, type, shape, offset, bytes.
    #[arg(long)]
    tensors: bool,
    /// In text output, show at most this many items of each array.
    #[arg(long, default_value_t = 8)]
    max_items: usize,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let file = GgufFile::open(&args.file)?;
    let opts = InspectOptions { tensors: args.tensors, max_array_items: args.max_items };
    if args.json {
        print_json(&to_json(&file, opts));
    } else {
        print!("{}", to_text(&file, opts));
    }
    Ok(ExitCode::SUCCESS)
}
