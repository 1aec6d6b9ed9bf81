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
#[command(group(clap::ArgGroup::new("input").required(true).multiple(true).args(["model", "check"])))]
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
    /// Fail unless the TEMPLATE renders exactly like the GGUF's chat template on every test
    /// conversation (and when the chat template is not recognised); nothing is written then.
    #[arg(long)]
    strict: bool,
    /// Do not verify the TEMPLATE against the GGUF's chat template.
    #[arg(long)]
    no_verify: bool,
    /// Upper bound for the num_ctx parameter computed from the context length (0: none).
    #[arg(long, default_value_t = modelfile::DEFAULT_NUM_CTX_CAP)]
    max_num_ctx: u64,
    /// Do not copy the GGUF's license into LICENSE.
    #[arg(long)]
    no_license: bool,
    /// Check a Modelfile against Ollama's grammar instead of writing one (exit 1 when it has
    /// errors); with `--model GGUF` also verify its TEMPLATE and SYSTEM against the GGUF's chat
    /// template (exit 1 unless every conversation renders identically).
    #[arg(long, value_name = "MODELFILE", conflicts_with_all = ["adapter", "system", "parameters", "from", "family"])]
    check: Option<PathBuf>,
    /// The GGUF to verify a `--check`ed Modelfile against (same as the positional MODEL).
    #[arg(long = "model", value_name = "GGUF", requires = "check")]
    model_flag: Option<PathBuf>,
    /// Print a JSON summary (the written path, family, warnings; or the check's diagnostics).
    #[arg(long)]
    json: bool,
    /// No warnings on standard error.
    #[arg(long, short)]
    quiet: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    if let Some(path) = &args.check {
        let model = args.model_flag.as_deref().or(args.model.as_deref());
        return check(path, model, args.json);
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
    let (mut spec, warnings) = modelfile::from_gguf(&gguf.header.metadata, &opts)?;
    let verification = if args.no_verify {
        None
    } else {
        let v = modelfile::verify_gguf(&gguf.header.metadata, &spec).map_err(|e| in_model(model, e))?;
        modelfile::annotate(&mut spec, v.as_ref());
        v
    };
    if args.strict && !args.no_verify {
        match &verification {
            Some(v) if v.is_verified() => {}
            Some(v) => {
                return Err(Error::Unsupported(format!(
                    "{}: --strict: {}",
                    model.display(),
                    v.comment_lines().join("\n")
                )))
            }
            None => {
                return Err(Error::Unsupported(format!(
                    "{}: --strict: the GGUF has no chat template to verify the TEMPLATE against",
                    model.display()
                )))
            }
        }
    }
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
            "verified": verification,
        }));
    } else if !args.quiet {
        if let Some(v) = &verification {
            if !v.is_verified() {
                for line in v.comment_lines() {
                    eprintln!("ggufkit: warning: {line}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A template error, naming the GGUF it comes from.
fn in_model(model: &Path, e: Error) -> Error {
    match e {
        Error::Usage(m) => Error::Input { path: model.to_path_buf(), msg: m },
        other => other,
    }
}

fn check(path: &Path, model: Option<&Path>, json_out: bool) -> Result<ExitCode> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, "read", e))?;
    let text = modelfile::decode(&bytes);
    let parsed = modelfile::check(&text);
    let (ok, diags): (bool, Vec<String>) = match &parsed {
        Ok(mf) => (true, mf.warnings.iter().map(|w| w.to_string()).collect()),
        Err(diags) => (false, diags.iter().map(|d| d.to_string()).collect()),
    };
    // Verification against the model's chat template.
    let mut verification = None;
    let mut verify_error = None;
    if let (Some(model), Ok(mf)) = (model, &parsed) {
        let gguf = GgufFile::open(model)?;
        let mut spec = modelfile::ModelfileSpec::new("model");
        for c in mf.commands() {
            match c {
                modelfile::Command::Template(t) => spec.template = Some(t),
                modelfile::Command::System(s) => spec.system = Some(s),
                _ => {}
            }
        }
        if spec.template.is_none() {
            verify_error = Some(
                "the Modelfile has no TEMPLATE: Ollama would pick one of its built-in templates by similarity; not verified"
                    .to_string(),
            );
        } else {
            match modelfile::verify_gguf(&gguf.header.metadata, &spec) {
                Ok(Some(v)) => verification = Some(v),
                Ok(None) => verify_error = Some(format!("{}: the GGUF has no chat template", model.display())),
                Err(Error::Usage(m)) => {
                    return Err(Error::Input {
                        path: if m.starts_with("TEMPLATE") { path.to_path_buf() } else { model.to_path_buf() },
                        msg: m,
                    })
                }
                Err(e) => return Err(e),
            }
        }
    }
    let verified_ok = model.is_none() || verification.as_ref().is_some_and(|v| v.is_verified());
    if json_out {
        let mut out = json!({ "file": path.display().to_string(), "valid": ok, "diagnostics": diags });
        if model.is_some() {
            out["verified"] = serde_json::to_value(&verification).unwrap_or_default();
            if let Some(e) = &verify_error {
                out["verify_error"] = json!(e);
            }
        }
        print_json(&out);
    } else {
        for d in &diags {
            eprintln!("{}: {d}", path.display());
        }
        if ok {
            println!("{}: valid Modelfile", path.display());
        }
        if let Some(v) = &verification {
            let lines = v.comment_lines();
            if v.is_verified() {
                println!("{}: {}", path.display(), lines[0]);
            } else {
                for l in &lines {
                    eprintln!("{}: {l}", path.display());
                }
            }
        }
        if let Some(e) = &verify_error {
            eprintln!("{}: {e}", path.display());
        }
    }
    Ok(if ok && verified_ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
