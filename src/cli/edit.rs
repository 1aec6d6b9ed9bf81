use std::path::PathBuf;
use std::process::ExitCode;

use ggufkit::commands::edit::{parse_set, rewrite, Edit};
use ggufkit::gguf::GgufFile;
use ggufkit::Result;

use super::output::TermProgress;

#[derive(clap::Args)]
pub struct Args {
    /// Input GGUF file.
    input: PathBuf,
    /// Output GGUF file (written atomically; may not be the input).
    output: PathBuf,
    /// Set a metadata key: KEY=TYPE:VALUE (TYPE: u8..u64, i8..i64, f32, f64, bool, str; or int/float as llama.cpp).
    #[arg(long = "set", value_name = "KEY=TYPE:VALUE")]
    set: Vec<String>,
    /// Remove a metadata key.
    #[arg(long = "remove", value_name = "KEY")]
    remove: Vec<String>,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let mut edits = Vec::new();
    for s in &args.set {
        let (k, v) = parse_set(s)?;
        edits.push(Edit::Set(k, v));
    }
    edits.extend(args.remove.iter().cloned().map(Edit::Remove));
    let input = GgufFile::open(&args.input)?;
    rewrite(&input, &args.output, &edits, &TermProgress::new(args.quiet, false))?;
    Ok(ExitCode::SUCCESS)
}
