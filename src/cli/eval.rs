use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ggufkit::infer::eval::{perplexity, score, Chunks, EvalOptions, Reference};
use ggufkit::infer::source::ModelInput;
use ggufkit::infer::text;
use ggufkit::infer::ForwardOptions;
use ggufkit::lora::AdapterSpec;
use ggufkit::pipeline::thread_pool;
use ggufkit::{Error, Result};

use super::output::{print_json, TermProgress};

#[derive(clap::Args)]
pub struct Args {
    /// The model: a GGUF file or a Hugging Face directory.
    model: PathBuf,
    /// The text to score (tokenized with the model's own vocabulary).
    #[arg(long, required_unless_present = "tokens")]
    text: Option<PathBuf>,
    /// Token ids instead of a text (a JSON array or white-space separated, BOS included).
    #[arg(long, conflicts_with = "text")]
    tokens: Option<PathBuf>,
    /// The reference (unquantized) model, a GGUF or a Hugging Face directory: adds the
    /// KL-divergence statistics of llama-perplexity --kl-divergence.
    #[arg(long = "ref", value_name = "REF")]
    reference: Option<PathBuf>,
    /// Tokens per chunk (llama-perplexity -c).
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Evaluate at most this many chunks.
    #[arg(long)]
    chunks: Option<usize>,
    /// Worker threads (default: all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// PEFT LoRA adapter merged into MODEL (a Hugging Face directory) first; repeatable, DIR[=WEIGHT].
    #[arg(long = "lora", value_name = "DIR[=WEIGHT]")]
    lora: Vec<AdapterSpec>,
    /// Keep K and V in f32 (llama.cpp -ctk f32 -ctv f32); the default rounds them to f16 like
    /// llama.cpp's default KV cache.
    #[arg(long)]
    kv_f32: bool,
    /// Print a JSON report.
    #[arg(long)]
    json: bool,
    /// No progress bars.
    #[arg(long, short)]
    quiet: bool,
}

/// The tokens of `--text` (or `--tokens`) for a model.
pub fn text_tokens(text: Option<&Path>, ids: Option<&Path>, md: &ggufkit::gguf::Metadata) -> Result<Vec<u32>> {
    if let Some(p) = ids {
        return text::read_token_ids(p);
    }
    let p = text.ok_or_else(|| Error::usage("--text FILE is required"))?;
    text::tokenize(md, &text::read_text(p)?)
}

fn vocab_check(a: &ModelInput, b: &ModelInput, opts: ForwardOptions) -> Result<()> {
    let na = a.with_model(opts, |m| Ok(m.config.n_vocab))?;
    let nb = b.with_model(opts, |m| Ok(m.config.n_vocab))?;
    let ta = text::vocab_tokens(a.metadata());
    let tb = text::vocab_tokens(b.metadata());
    let same_tokens = match (&ta, &tb) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    };
    if na != nb || !same_tokens {
        return Err(Error::usage(format!(
            "{} and {} have different vocabularies ({na} and {nb} tokens{}): the KL divergence needs the same one",
            a.path().display(),
            b.path().display(),
            if same_tokens { "" } else { ", different token lists" }
        )));
    }
    Ok(())
}

pub fn run(args: Args) -> Result<ExitCode> {
    let progress = TermProgress::new(args.quiet, args.json);
    let model = ModelInput::open(&args.model, &args.lora, &progress)?;
    let reference = args.reference.as_deref().map(|r| ModelInput::open(r, &[], &progress)).transpose()?;
    let fopts = ForwardOptions { kv_f16: !args.kv_f32 };
    if let Some(r) = &reference {
        vocab_check(&model, r, fopts)?;
    }
    let tokens = text_tokens(args.text.as_deref(), args.tokens.as_deref(), model.metadata())?;
    let n_text = tokens.len();
    let opts = EvalOptions { ctx: args.ctx, max_chunks: args.chunks };
    let chunks = Chunks::new(tokens, text::chunk_bos(model.metadata())?, &opts)?;
    let pool = thread_pool(args.threads)?;
    let report = match &reference {
        Some(r) => {
            let base = r.with_model(fopts, |m| pool.install(|| Reference::compute(m, &chunks, &progress)))?;
            model.with_model(fopts, |m| pool.install(|| score(m, &base, &progress)))?
        }
        None => model.with_model(fopts, |m| pool.install(|| perplexity(m, &chunks, &progress)))?,
    };
    if args.json {
        print_json(&serde_json::to_value(&report).map_err(|e| Error::Other(e.to_string()))?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("model      {}", model.path().display());
    println!(
        "text       {n_text} tokens; {} chunks of {} tokens, {} tokens scored",
        report.chunks, report.ctx, report.tokens
    );
    println!("PPL        {:.4} ± {:.5}", report.ppl, report.ppl_stderr);
    if let (Some(r), Some(k)) = (&reference, &report.kld) {
        let d = &report.details;
        println!(
            "reference  {}: PPL {:.4} ± {:.5}",
            r.path().display(),
            d.ppl_base.unwrap_or(f64::NAN),
            d.ppl_base_stderr.unwrap_or(f64::NAN)
        );
        println!(
            "PPL ratio  {:.6} ± {:.6}  (ln ratio {:.6} ± {:.6})",
            report.ppl_ratio.unwrap_or(f64::NAN),
            d.ppl_ratio_stderr.unwrap_or(f64::NAN),
            d.ln_ppl_ratio.unwrap_or(f64::NAN),
            d.ln_ppl_ratio_stderr.unwrap_or(f64::NAN)
        );
        println!("mean KLD   {:.6} ± {:.6}", k.mean, k.stderr);
        println!("median KLD {:.6}", k.median);
        println!("99% KLD    {:.6}", k.p99);
        println!("max KLD    {:.6}", k.max);
        println!(
            "same top p {:.3} ± {:.3} %",
            100.0 * report.same_top.unwrap_or(f64::NAN),
            100.0 * d.same_top_stderr.unwrap_or(f64::NAN)
        );
        println!(
            "RMS Δp     {:.3} ± {:.3} %",
            100.0 * report.rms_dp.unwrap_or(f64::NAN),
            100.0 * d.rms_dp_stderr.unwrap_or(f64::NAN)
        );
    }
    Ok(ExitCode::SUCCESS)
}
