use std::path::PathBuf;
use std::process::ExitCode;

use ggufkit::commands::diff::diff;
use ggufkit::gguf::GgufFile;
use ggufkit::Result;

use super::output::print_json;

#[derive(clap::Args)]
pub struct Args {
    /// First GGUF file (A).
    a: PathBuf,
    /// Second GGUF file (B).
    b: PathBuf,
    /// Print a JSON report.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let a = GgufFile::open(&args.a)?;
    let b = GgufFile::open(&args.b)?;
    let report = diff(&a, &b)?;
    if args.json {
        print_json(&report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    Ok(if report.identical() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
