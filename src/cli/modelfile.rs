use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ggufkit::fileio::AtomicFile;
use ggufkit::gguf::GgufFile;
use ggufkit::modelfile::{self, FromGgufOptions};
use ggufkit::{Error, Result};
use serde_json::json;

use super::output::print_json;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["model", "check"])))]
pub struct Args {
    /// The GGUF model the Modelfile is for.
    model: Option<PathBuf>,
    /// Where to write the Modelfile ("-" for standard output). Default: `Modelfile` beside the model.
    #[arg(short, long, value_name = "PATH")]
    output: Option<PathBuf>,
    /// A GGUF LoRA adapter to apply (ADAPTER).
    #[arg(long, value_name = "ADAPTER.gguf")]
    adapter: Option<PathBuf>,
    /// SYSTEM prompt (replaces the chat template's default one).
    #[arg(long)]
    system: Option<String>,
    /// Extra PARAMETER (repeatable): KEY=VALUE, e.g. temperature=0.2, stop=<|im_end|>, num_ctx=16384.
    #[arg(long = "parameter", value_name = "KEY=VALUE")]
    parameters: Vec<String>,
    /// FROM this model reference or path instead of the model file's relative path.
    #[arg(long, value_name = "REF")]
    from: Option<String>,
    /// Use this template family instead of detecting it (e.g. qwen2.5-coder, llama3.1, chatml).
    #[arg(long)]
    family: Option<String>,
    /// Fail when the chat template is not recognised (default: warn and write a minimal template).
    #[arg(long)]
    strict: bool,
    /// Upper bound for the num_ctx parameter computed from the context length (0: none).
    #[arg(long, default_value_t = modelfile::DEFAULT_NUM_CTX_CAP)]
    max_num_ctx: u64,
    /// Do not copy the GGUF's license into LICENSE.
    #[arg(long)]
    no_license: bool,
    /// Check a Modelfile against Ollama's grammar instead of writing one (exit 1 when it has errors).
    #[arg(long, value_name = "MODELFILE", conflicts_with_all = ["model", "adapter", "system", "parameters", "from", "family"])]
    check: Option<PathBuf>,
    /// Print a JSON summary (the written path, family, warnings; or the check's diagnostics).
    #[arg(long)]
    json: bool,
    /// No warnings on standard error.
    #[arg(long, short)]
    quiet: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    if let Some(path) = &args.check {
        return check(path, args.json);
    }
    let model = args.model.as_deref().ok_or_else(|| Error::usage("a GGUF model is required"))?;
    let gguf = GgufFile::open(model)?;
    let to_stdout = args.output.as_deref() == Some(Path::new("-"));
    let dest = match &args.output {
        Some(p) if !to_stdout => p.clone(),
        _ => model.parent().unwrap_or(Path::new(".")).join("Modelfile"),
    };
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let from = match &args.from {
        Some(r) => r.clone(),
        None if to_stdout => modelfile::relative_from(model, Path::new("."))?,
        None => modelfile::relative_from(model, &dir)?,
    };
    let adapter = match &args.adapter {
        Some(a) if to_stdout => Some(modelfile::relative_from(a, Path::new("."))?),
        Some(a) => Some(modelfile::relative_from(a, &dir)?),
        None => None,
    };
    let parameters = args.parameters.iter().map(|p| modelfile::parse_parameter_arg(p)).collect::<Result<Vec<_>>>()?;
    let opts = FromGgufOptions {
        from,
        adapter,
        family: args.family.clone(),
        system: args.system.clone(),
        parameters,
        max_num_ctx: args.max_num_ctx,
        strict: args.strict,
        license: !args.no_license,
    };
    let (spec, warnings) = modelfile::from_gguf(&gguf.header.metadata, &opts)?;
    let text = modelfile::render(&spec)?;
    if !args.quiet && !args.json {
        for w in &warnings {
            eprintln!("ggufkit: warning: {w}");
        }
    }
    if to_stdout {
        print!("{text}");
    } else {
        let mut f = AtomicFile::create(&dest, &[model])?;
        f.write_all(text.as_bytes()).map_err(|e| Error::io(&dest, "write", e))?;
        f.commit()?;
    }
    if args.json {
        print_json(&json!({
            "modelfile": if to_stdout { None } else { Some(dest.display().to_string()) },
            "from": spec.from,
            "stop": spec.parameter("stop"),
            "num_ctx": spec.parameter("num_ctx").first(),
            "warnings": warnings,
        }));
    }
    Ok(ExitCode::SUCCESS)
}

fn check(path: &Path, json_out: bool) -> Result<ExitCode> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, "read", e))?;
    let text = modelfile::decode(&bytes);
    let (ok, diags): (bool, Vec<String>) = match modelfile::check(&text) {
        Ok(mf) => (true, mf.warnings.iter().map(|w| w.to_string()).collect()),
        Err(diags) => (false, diags.iter().map(|d| d.to_string()).collect()),
    };
    if json_out {
        print_json(&json!({ "file": path.display().to_string(), "valid": ok, "diagnostics": diags }));
    } else {
        for d in &diags {
            eprintln!("{}: {d}", path.display());
        }
        if ok {
            println!("{}: valid Modelfile", path.display());
        }
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
