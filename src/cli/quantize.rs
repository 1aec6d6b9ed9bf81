use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ggufkit::commands::inspect::human_bytes;
use ggufkit::gguf::{GgmlType, GgufFile};
use ggufkit::imatrix::Imatrix;
use ggufkit::pipeline::WriteOptions;
use ggufkit::policy::quantize;
use ggufkit::policy::{self, KvOverride, Options, Target, TensorTypeRule};
use ggufkit::progress::Progress;
use ggufkit::{Error, Result};

use super::output::{print_json, TermProgress};

/// Quantize a GGUF model exactly as llama.cpp's llama-quantize does.
///
/// TYPE is a llama.cpp file type, case-insensitive: Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q2_K_S Q3_K_S Q3_K_M Q3_K_L
/// Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K IQ4_NL IQ4_XS F16 BF16 F32 COPY (aliases Q3_K, Q4_K, Q5_K; or the numeric id).
/// A flag such as --q4_k_m may stand for TYPE: `ggufkit quantize --q4_0 in.gguf out.gguf`.
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// INPUT.gguf [OUTPUT.gguf] TYPE. Without OUTPUT, writes ggml-model-TYPE.gguf beside the input.
    #[arg(value_name = "INPUT [OUTPUT] [TYPE]", num_args = 1..=3, required = true)]
    positional: Vec<String>,
    /// The file type (same as the TYPE argument; --q4_k_m style flags set it too).
    #[arg(long = "type", value_name = "TYPE")]
    ftype: Option<String>,
    /// Worker threads (default: all cores). The output does not depend on it.
    #[arg(long, short = 't', default_value_t = 0)]
    threads: usize,
    /// Importance matrix (GGUF imatrix or legacy .dat) for the quantizers.
    #[arg(long, value_name = "FILE")]
    imatrix: Option<PathBuf>,
    /// Use the importance matrix only for tensors whose name contains this (repeatable).
    #[arg(long = "include-weights", value_name = "NAME")]
    include_weights: Vec<String>,
    /// Do not use the importance matrix for tensors whose name contains this (repeatable).
    #[arg(long = "exclude-weights", value_name = "NAME")]
    exclude_weights: Vec<String>,
    /// No k-quant mixture: every quantized tensor gets the file type's default type.
    #[arg(long)]
    pure: bool,
    /// Leave output.weight as it is.
    #[arg(long)]
    leave_output_tensor: bool,
    /// Type of output.weight.
    #[arg(long, value_name = "TYPE")]
    output_tensor_type: Option<String>,
    /// Type of token_embd.weight.
    #[arg(long, value_name = "TYPE")]
    token_embedding_type: Option<String>,
    /// REGEX=TYPE: tensors whose name matches REGEX get TYPE (repeatable; first match wins).
    #[arg(long = "tensor-type", value_name = "REGEX=TYPE")]
    tensor_type: Vec<String>,
    /// A file of REGEX=TYPE items separated by whitespace.
    #[arg(long = "tensor-type-file", value_name = "FILE")]
    tensor_type_file: Option<PathBuf>,
    /// Allow quantizing tensors that are already quantized.
    #[arg(long)]
    allow_requantize: bool,
    /// Set a metadata key in the output: KEY=TYPE:VALUE with TYPE int, float, bool or str (repeatable).
    #[arg(long = "override-kv", value_name = "KEY=TYPE:VALUE")]
    override_kv: Vec<String>,
    /// Show each tensor's type and the sizes without writing anything.
    #[arg(long)]
    dry_run: bool,
    /// Fail instead of silently giving a tensor another type when its rows do not fit the chosen one.
    #[arg(long)]
    no_fallback: bool,
    /// Print a JSON summary (per-tensor types and sizes, time) on standard output.
    #[arg(long)]
    json: bool,
    /// No progress bar or warnings.
    #[arg(long, short)]
    quiet: bool,
}

/// Rewrites `--q4_k_m`-style flags into `--type=q4_k_m` (called before clap parses the arguments).
pub fn expand_type_flags(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    if args.get(1).and_then(|a| a.to_str()) != Some("quantize") {
        return args;
    }
    args.into_iter()
        .map(|a| match a.to_str().and_then(|s| s.strip_prefix("--")) {
            Some(name)
                if !name.is_empty()
                    && !name.bytes().all(|b| b.is_ascii_digit())
                    && policy::parse_target(name).is_some() =>
            {
                format!("--type={name}").into()
            }
            _ => a,
        })
        .collect()
}

fn parse_type(what: &str, s: &str) -> Result<GgmlType> {
    s.parse::<GgmlType>().map_err(|e| Error::usage(format!("{what}: {e}")))
}

pub fn run(args: Args) -> Result<ExitCode> {
    let mut pos = args.positional.clone();
    let type_arg = match (&args.ftype, pos.len()) {
        (Some(t), 1 | 2) => t.clone(),
        (Some(_), _) => return Err(Error::usage("give the type either as a flag or as the TYPE argument, not both")),
        (None, 2 | 3) => pos.pop().unwrap_or_default(),
        (None, _) => {
            return Err(Error::usage("missing the quantization TYPE (e.g. Q4_K_M, or a flag such as --q4_k_m)"))
        }
    };
    let target = policy::parse_target(&type_arg)
        .ok_or_else(|| Error::usage(format!("unknown quantization type '{type_arg}' (see ggufkit quantize --help)")))?;
    let input_path = PathBuf::from(&pos[0]);
    let output_path = match pos.get(1) {
        Some(o) => PathBuf::from(o),
        None => {
            let name = match target {
                Target::Copy => "COPY".to_string(),
                Target::FileType(f) => f.name().to_string(),
            };
            input_path.parent().unwrap_or(Path::new(".")).join(format!("ggml-model-{name}.gguf"))
        }
    };

    let mut opts = Options::for_target(target);
    opts.pure = args.pure;
    opts.quantize_output_tensor = !args.leave_output_tensor;
    opts.output_tensor_type =
        args.output_tensor_type.as_deref().map(|t| parse_type("--output-tensor-type", t)).transpose()?;
    opts.token_embedding_type =
        args.token_embedding_type.as_deref().map(|t| parse_type("--token-embedding-type", t)).transpose()?;
    opts.tensor_types = args.tensor_type.iter().map(|s| TensorTypeRule::parse(s)).collect::<Result<Vec<_>>>()?;
    if let Some(f) = &args.tensor_type_file {
        let text = std::fs::read_to_string(f).map_err(|e| Error::io(f, "read", e))?;
        opts.tensor_types.extend(policy::parse_tensor_type_file(&text)?);
    }
    opts.allow_requantize = args.allow_requantize;
    opts.kv_overrides = args.override_kv.iter().map(|s| KvOverride::parse(s)).collect::<Result<Vec<_>>>()?;
    opts.dry_run = args.dry_run;
    opts.no_fallback = args.no_fallback;

    let imatrix = match &args.imatrix {
        Some(p) => {
            let mut m = Imatrix::load(p)?;
            m.filter(&args.include_weights, &args.exclude_weights)?;
            Some(m)
        }
        None if !args.include_weights.is_empty() || !args.exclude_weights.is_empty() => {
            return Err(Error::usage("--include-weights / --exclude-weights need --imatrix"))
        }
        None => None,
    };

    let input = GgufFile::open(&input_path)?;
    let plan = quantize::plan(&input, &opts, imatrix.as_ref())?;
    let progress = TermProgress::new(args.quiet, args.json);

    if args.dry_run {
        for w in &plan.warnings {
            progress.warn(w);
        }
        if args.json {
            print_json(&quantize::plan_json(&input.header, &plan));
        } else {
            for t in &plan.tensors {
                let size_in = input.header.tensors[t.index].size;
                println!("{t}  {} -> {}", human_bytes(size_in), human_bytes(t.output_size));
            }
            let (a, b) = (plan.input_bytes(&input.header), plan.output_bytes());
            println!(
                "total: {} -> {} ({:.2}%), {} tensors, file type {}",
                human_bytes(a),
                human_bytes(b),
                if a > 0 { 100.0 * b as f64 / a as f64 } else { 0.0 },
                plan.tensors.len(),
                plan.file_type
            );
        }
        return Ok(ExitCode::SUCCESS);
    }

    let write_opts = WriteOptions { threads: args.threads, measure_error: args.json, ..Default::default() };
    let summary = quantize::write(&input, &plan, imatrix.as_ref(), &output_path, &write_opts, &progress)?;
    if args.json {
        let mut j = summary.to_json();
        j["input"] = input_path.display().to_string().into();
        j["file_type"] = plan.file_type.into();
        j["warnings"] = plan.warnings.clone().into();
        print_json(&j);
    } else if !args.quiet {
        eprintln!(
            "ggufkit: wrote {} ({}, {} tensors) in {:.1} s",
            output_path.display(),
            human_bytes(summary.file_size),
            summary.tensors.len(),
            summary.seconds
        );
    }
    Ok(ExitCode::SUCCESS)
}
