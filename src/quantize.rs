//! `quantize`: a GGUF file to a quantized GGUF, byte for byte what
//! llama.cpp's llama-quantize writes.
//!
//! The policy ([`crate::policy::plan`]) decides every tensor's type, the
//! tensor order and the metadata before any data is read; the pipeline
//! ([`crate::pipeline::write_gguf`]) then streams the tensors through the
//! quantization kernels in parallel row chunks.

use std::path::Path;

use serde_json::json;

use crate::error::Result;
use crate::gguf::GgufFile;
use crate::imatrix::Imatrix;
use crate::pipeline::{self, GgufSource, Planned, WriteOptions, WriteSummary};
use crate::policy::{self, Options, Plan};
use crate::progress::Progress;

/// Decides the plan for `input` (what `--dry-run` shows).
pub fn plan(input: &GgufFile, opts: &Options, imatrix: Option<&Imatrix>) -> Result<Plan> {
    policy::plan(&input.header, opts, imatrix)
}

/// Writes `input` quantized by `plan` to `dest`.
pub fn write(
    input: &GgufFile,
    plan: &Plan,
    imatrix: Option<&Imatrix>,
    dest: &Path,
    write_opts: &WriteOptions,
    progress: &dyn Progress,
) -> Result<WriteSummary> {
    let mut source = GgufSource::new(input);
    let mut planned = Vec::with_capacity(plan.tensors.len());
    for tp in &plan.tensors {
        // llama-quantize writes ggml_n_dims dimensions (trailing 1s dropped).
        source.set_dims(tp.index, tp.dims.clone());
        let mut p = Planned::new(tp.index, tp.output_type);
        if tp.use_imatrix {
            if let (Some(m), Some(t)) = (imatrix, policy::input_tensor(&input.header, tp)) {
                p.imatrix = m.for_tensor(t)?.map(<[f32]>::to_vec);
            }
        }
        planned.push(p);
    }
    for w in &plan.warnings {
        progress.warn(w);
    }
    pipeline::write_gguf(&source, &planned, &plan.metadata, dest, &[input.path()], write_opts, progress)
}

/// The `--dry-run` report: per tensor, the type decision and the sizes.
pub fn plan_json(input: &GgufFile, plan: &Plan) -> serde_json::Value {
    let input_bytes = plan.input_bytes(&input.header);
    let output_bytes = plan.output_bytes();
    json!({
        "input": input.path().display().to_string(),
        "file_type": plan.file_type,
        "input_bytes": input_bytes,
        "output_tensor_bytes": output_bytes,
        "fallbacks": plan.n_fallback,
        "warnings": plan.warnings,
        "tensors": plan.tensors.iter().map(|t| json!({
            "name": t.name,
            "shape": t.dims,
            "input_type": t.input_type.name(),
            "type": t.output_type.name(),
            "reason": t.reason,
            "input_bytes": input.header.tensors[t.index].size,
            "bytes": t.output_size,
            "imatrix": t.use_imatrix,
        })).collect::<Vec<_>>(),
    })
}
