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
    #[command(flatten)]
    input: ForwardArgs,
    /// The reference (unquantized) model, a GGUF or a Hugging Face directory: adds the
    /// KL-divergence statistics of llama-perplexity --kl-divergence.
    #[arg(long = "ref", value_name = "REF")]
    reference: Option<PathBuf>,
    /// Print a JSON report.
    #[arg(long)]
    json: bool,
    /// No progress bars.
    #[arg(long, short)]
    quiet: bool,
}

/// What `eval` and `imatrix` share: the model, its text and how to run it.
#[derive(clap::Args)]
pub struct ForwardArgs {
    /// The model: a GGUF file or a Hugging Face directory.
    pub model: PathBuf,
    /// The text (tokenized with the model's own vocabulary, as llama.cpp does).
    #[arg(long, required_unless_present = "tokens")]
    pub text: Option<PathBuf>,
    /// Token ids instead of a text (a JSON array or white-space separated, BOS included).
    #[arg(long, conflicts_with = "text")]
    pub tokens: Option<PathBuf>,
    /// Tokens per chunk (llama-perplexity / llama-imatrix -c).
    #[arg(long, default_value_t = 512)]
    pub ctx: usize,
    /// Evaluate at most this many chunks.
    #[arg(long)]
    pub chunks: Option<usize>,
    /// Worker threads (default: all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// PEFT LoRA adapter merged into MODEL (a Hugging Face directory) first; repeatable, DIR[=WEIGHT].
    #[arg(long = "lora", value_name = "DIR[=WEIGHT]")]
    pub lora: Vec<AdapterSpec>,
    /// Keep K and V in f32 (llama.cpp -ctk f32 -ctv f32); the default rounds them to f16 like
    /// llama.cpp's default KV cache.
    #[arg(long)]
    pub kv_f32: bool,
}

impl ForwardArgs {
    /// The model, with its adapters merged on the fly.
    pub fn open(&self, progress: &TermProgress) -> Result<ModelInput> {
        ModelInput::open(&self.model, &self.lora, progress)
    }

    pub fn forward_options(&self) -> ForwardOptions {
        ForwardOptions { kv_f16: !self.kv_f32 }
    }

    /// The text's tokens cut into chunks as llama.cpp's tools cut them, and the text's length in tokens.
    pub fn chunks(&self, model: &ModelInput) -> Result<(Chunks, usize)> {
        let tokens = text_tokens(self.text.as_deref(), self.tokens.as_deref(), model.metadata())?;
        let n_text = tokens.len();
        let opts = EvalOptions { ctx: self.ctx, max_chunks: self.chunks };
        Ok((Chunks::new(tokens, text::chunk_bos(model.metadata())?, &opts)?, n_text))
    }

    /// The text's name as llama-imatrix records it (the path as given).
    pub fn dataset(&self) -> String {
        self.text.as_ref().or(self.tokens.as_ref()).map(|p| p.display().to_string()).unwrap_or_default()
    }
}

/// The tokens of `--text` (or `--tokens`) for a model.
fn text_tokens(text: Option<&Path>, ids: Option<&Path>, md: &ggufkit::gguf::Metadata) -> Result<Vec<u32>> {
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
    let model = args.input.open(&progress)?;
    let reference = args.reference.as_deref().map(|r| ModelInput::open(r, &[], &progress)).transpose()?;
    let fopts = args.input.forward_options();
    if let Some(r) = &reference {
        vocab_check(&model, r, fopts)?;
    }
    let (chunks, n_text) = args.input.chunks(&model)?;
    let pool = thread_pool(args.input.threads)?;
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
