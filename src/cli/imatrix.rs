use std::path::PathBuf;
use std::process::ExitCode;

use ggufkit::infer::eval::{Chunks, EvalOptions};
use ggufkit::infer::imatrix::{collect, write_gguf};
use ggufkit::infer::source::ModelInput;
use ggufkit::infer::text;
use ggufkit::infer::ForwardOptions;
use ggufkit::lora::AdapterSpec;
use ggufkit::Result;

use super::eval::text_tokens;
use super::output::{print_json, TermProgress};
use ggufkit::pipeline::thread_pool;

#[derive(clap::Args)]
pub struct Args {
    /// The model: a GGUF file or a Hugging Face directory.
    model: PathBuf,
    /// The calibration text (tokenized with the model's own vocabulary).
    #[arg(long, required_unless_present = "tokens")]
    text: Option<PathBuf>,
    /// Token ids instead of a text (a JSON array or white-space separated, BOS included).
    #[arg(long, conflicts_with = "text")]
    tokens: Option<PathBuf>,
    /// The imatrix GGUF to write (llama-imatrix's format; ggufkit quantize --imatrix and
    /// llama-quantize --imatrix read it).
    #[arg(short, long)]
    output: PathBuf,
    /// Tokens per chunk (llama-imatrix -c).
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Evaluate at most this many chunks.
    #[arg(long)]
    chunks: Option<usize>,
    /// Also collect output.weight (llama-imatrix --process-output).
    #[arg(long)]
    process_output: bool,
    /// Worker threads (default: all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// PEFT LoRA adapter merged into MODEL (a Hugging Face directory) first; repeatable, DIR[=WEIGHT].
    #[arg(long = "lora", value_name = "DIR[=WEIGHT]")]
    lora: Vec<AdapterSpec>,
    /// Keep K and V in f32 (the default rounds them to f16 like llama.cpp's KV cache).
    #[arg(long)]
    kv_f32: bool,
    /// Print a JSON summary.
    #[arg(long)]
    json: bool,
    /// No progress bars.
    #[arg(long, short)]
    quiet: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let progress = TermProgress::new(args.quiet, args.json);
    let model = ModelInput::open(&args.model, &args.lora, &progress)?;
    let tokens = text_tokens(args.text.as_deref(), args.tokens.as_deref(), model.metadata())?;
    let opts = EvalOptions { ctx: args.ctx, max_chunks: args.chunks };
    let chunks = Chunks::new(tokens, text::chunk_bos(model.metadata())?, &opts)?;
    let fopts = ForwardOptions { kv_f16: !args.kv_f32 };
    let pool = thread_pool(args.threads)?;
    let run = model.with_model(fopts, |m| pool.install(|| collect(m, &chunks, args.process_output, &progress)))?;
    // llama-imatrix records the text file's name as given.
    let dataset = args.text.as_ref().or(args.tokens.as_ref()).map(|p| p.display().to_string()).unwrap_or_default();
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
