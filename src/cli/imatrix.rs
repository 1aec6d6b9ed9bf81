use std::path::PathBuf;
use std::process::ExitCode;

use ggufkit::infer::imatrix::{collect, write_gguf};
use ggufkit::pipeline::thread_pool;
use ggufkit::Result;

use super::eval::ForwardArgs;
use super::output::{print_json, TermProgress};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    input: ForwardArgs,
    /// The imatrix GGUF to write (llama-imatrix's format; ggufkit quantize --imatrix and
    /// llama-quantize --imatrix read it).
    #[arg(short, long)]
    output: PathBuf,
    /// Also collect output.weight (llama-imatrix --process-output).
    #[arg(long)]
    process_output: bool,
    /// Print a JSON summary.
    #[arg(long)]
    json: bool,
    /// No progress bars.
    #[arg(long, short)]
    quiet: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let progress = TermProgress::new(args.quiet, args.json);
    let model = args.input.open(&progress)?;
    let (chunks, _) = args.input.chunks(&model)?;
    let pool = thread_pool(args.input.threads)?;
    let run = model.with_model(args.input.forward_options(), |m| {
        pool.install(|| collect(m, &chunks, args.process_output, &progress))
    })?;
    // llama-imatrix records the text file's name as given.
    let dataset = args.input.dataset();
    write_gguf(&run, &[dataset], &args.output, &model.inputs())?;
    let entries = run.collector.stats.len();
    if args.json {
        let v = serde_json::json!({
            "output": args.output.display().to_string(),
            "entries": entries,
            "chunk_count": run.chunk_count,
            "chunk_size": run.chunk_size,
            "ppl": run.ppl.ppl,
            "ppl_stderr": run.ppl.ppl_stderr,
        });
        print_json(&v);
    } else {
        println!(
            "{}: {entries} entries, {} chunks of {} tokens; PPL {:.4} ± {:.5}",
            args.output.display(),
            run.chunk_count,
            run.chunk_size,
            run.ppl.ppl,
            run.ppl.ppl_stderr
        );
    }
    Ok(ExitCode::SUCCESS)
}
