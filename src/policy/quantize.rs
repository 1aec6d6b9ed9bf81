//! `quantize`: a model to a quantized GGUF, byte for byte what llama.cpp's
//! llama-quantize writes.
//!
//! The policy ([`crate::policy::plan`]) decides every tensor's type, the
//! tensor order and the metadata before any data is read; the pipeline
//! ([`crate::pipeline::write_gguf`]) then streams the tensors through the
//! quantization kernels in parallel row chunks.
//!
//! The input is a GGUF file, or any tensor source (a Hugging Face directory
//! being converted, a LoRA merge): such a source is quantized exactly as
//! llama-quantize would quantize the F32 GGUF that `convert --outtype f32`
//! writes from it, without that intermediate file ever existing.

use std::path::Path;

use serde_json::json;

use crate::error::{Error, Result};
use crate::gguf::{GgmlType, Gguf, GgufFile, Layout, Metadata, TensorInfo, TensorSpec, WriterOptions};
use crate::imatrix::Imatrix;
use crate::pipeline::{self, GgufSource, Planned, TensorSource, WriteOptions, WriteSummary};
use crate::policy::{self, Options, Plan};
use crate::progress::Progress;

/// Decides the plan for a GGUF input (what `--dry-run` shows).
pub fn plan(input: &GgufFile, opts: &Options, imatrix: Option<&Imatrix>) -> Result<Plan> {
    policy::plan(&input.header, opts, imatrix)
}

/// The header of the GGUF a source would be written as with every tensor in
/// `ty` (the input llama-quantize would see), without writing it.
pub fn virtual_header(metadata: &Metadata, src: &dyn TensorSource, ty: GgmlType) -> Result<Gguf> {
    let specs: Vec<TensorSpec> =
        src.tensors().iter().map(|t| TensorSpec::new(t.name.clone(), t.dims.clone(), ty)).collect();
    let layout = Layout::new(WriterOptions::default(), metadata, &specs)?;
    let tensors = specs
        .iter()
        .zip(layout.offsets.iter().zip(&layout.sizes))
        .map(|(s, (&offset, &size))| TensorInfo {
            name: s.name.clone(),
            dims: s.dims.clone(),
            ty,
            offset,
            size,
            n_elements: s.n_elements(),
        })
        .collect();
    Ok(Gguf {
        version: layout.version,
        metadata: metadata.clone(),
        tensors,
        alignment: layout.alignment,
        data_offset: layout.data_offset,
    })
}

/// The pipeline's plan for a policy plan: source index, type, written
/// dimensions and importance weights of every output tensor.
pub fn planned(header: &Gguf, plan: &Plan, imatrix: Option<&Imatrix>) -> Result<Vec<Planned>> {
    let mut out = Vec::with_capacity(plan.tensors.len());
    for tp in &plan.tensors {
        let mut p = Planned::new(tp.index, tp.output_type);
        // llama-quantize writes ggml_n_dims dimensions (trailing 1s dropped).
        p.dims = Some(tp.dims.clone());
        if tp.use_imatrix {
            let t = policy::input_tensor(header, tp)
                .ok_or_else(|| Error::Other(format!("plan names a missing tensor '{}'", tp.name)))?;
            if let Some(m) = imatrix {
                p.imatrix = m.for_tensor(t, policy::is_token_embd(&t.name))?.map(<[f32]>::to_vec);
            }
        }
        out.push(p);
    }
    Ok(out)
}

/// Writes the GGUF `input` quantized by `plan` to `dest`.
pub fn write(
    input: &GgufFile,
    plan: &Plan,
    imatrix: Option<&Imatrix>,
    dest: &Path,
    write_opts: &WriteOptions,
    progress: &dyn Progress,
) -> Result<WriteSummary> {
    let source = GgufSource::new(input);
    let planned = planned(&input.header, plan, imatrix)?;
    for w in &plan.warnings {
        progress.warn(w);
    }
    pipeline::write_gguf(&source, &planned, &plan.metadata, dest, &[input.path()], write_opts, progress)
}

/// Quantizes a tensor source with `metadata` (an F32 conversion's metadata)
/// in one pass: the result equals writing the source as an F32 GGUF and
/// quantizing that file.
#[allow(clippy::too_many_arguments)]
pub fn write_source(
    src: &dyn TensorSource,
    metadata: &Metadata,
    inputs: &[&Path],
    opts: &Options,
    imatrix: Option<&Imatrix>,
    dest: &Path,
    write_opts: &WriteOptions,
    progress: &dyn Progress,
) -> Result<(Plan, WriteSummary)> {
    let header = virtual_header(metadata, src, GgmlType::F32)?;
    let plan = policy::plan(&header, opts, imatrix)?;
    let planned = planned(&header, &plan, imatrix)?;
    for w in &plan.warnings {
        progress.warn(w);
    }
    let summary = pipeline::write_gguf(src, &planned, &plan.metadata, dest, inputs, write_opts, progress)?;
    Ok((plan, summary))
}

/// The `--dry-run` report: per tensor, the type decision and the sizes.
pub fn plan_json(header: &Gguf, plan: &Plan) -> serde_json::Value {
    json!({
        "file_type": plan.file_type,
        "input_bytes": plan.input_bytes(header),
        "output_tensor_bytes": plan.output_bytes(),
        "fallbacks": plan.n_fallback,
        "warnings": plan.warnings,
        "tensors": plan.tensors.iter().map(|t| json!({
            "name": t.name,
            "shape": t.dims,
            "input_type": t.input_type.name(),
            "type": t.output_type.name(),
            "reason": t.reason,
            "input_bytes": header.tensors.get(t.index).map_or(0, |i| i.size),
            "bytes": t.output_size,
            "imatrix": t.use_imatrix,
        })).collect::<Vec<_>>(),
    })
}
