//! What an output is: a convert type or a quantize type.
//!
//! One [`Target`] names every output `convert`, `merge -o X.gguf` and `pack`
//! write: `f32`, `f16`, `bf16`, `q8_0` and `auto` (any case) are
//! convert_hf_to_gguf.py's output types; every other llama-quantize file type
//! (`Q4_K_M`, `Q6_K`, `IQ4_XS`, aliases such as `Q4_K`, numeric ids) is the
//! F32 conversion quantized by llama-quantize's policy. [`Target::resolve`]
//! turns a model opened as [`Target::conversion`] into what the engine
//! writes: the plan, the metadata and the file type. The output is therefore
//! byte-identical to `convert --outtype T` (for a quantized type: `convert
//! --outtype f32` followed by `quantize T`) whichever command writes it.

use std::path::Path;

use crate::convert::{ConvertOptions, ConvertSummary, HfToGguf, OutType};
use crate::error::{Error, Result};
use crate::gguf::{GgmlType, Metadata};
use crate::imatrix::Imatrix;
use crate::pipeline::{Planned, TensorSource, WriteOptions, WriteSummary};
use crate::policy::{self, FileType};
use crate::progress::Progress;

/// An output type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// convert_hf_to_gguf.py's `--outtype T`.
    Convert(OutType),
    /// `--outtype f32`, then llama-quantize's `T`.
    Quantize(FileType),
}

impl Target {
    /// Reads a type name: a convert type first, else a llama-quantize file
    /// type (`COPY` is not an output type).
    pub fn parse(s: &str) -> Result<Target> {
        let t = s.trim();
        match t.parse::<OutType>() {
            Ok(o) => Ok(Target::Convert(o)),
            Err(_) => match policy::parse_target(t) {
                Some(policy::Target::FileType(f)) => Ok(Target::Quantize(f)),
                Some(policy::Target::Copy) => Err(Error::usage("COPY is not an output type")),
                None => Err(Error::usage(format!(
                    "unknown type '{t}' (expected f32, f16, bf16, q8_0, auto or a llama-quantize file type \
                     such as Q4_K_M, Q5_K_M, Q6_K, IQ4_XS; see ggufkit quantize --help)"
                ))),
            },
        }
    }

    /// The conversion the model is opened as: the type itself, or F32 for a
    /// quantized type (which quantizes the F32 conversion).
    pub fn conversion(self) -> OutType {
        match self {
            Target::Convert(t) => t,
            Target::Quantize(_) => OutType::F32,
        }
    }

    /// The name file names and summaries use (`F16`, `Q4_K_M`); `None` for
    /// `auto`, which is known only once the model's weights are seen.
    pub fn name(self) -> Option<&'static str> {
        match self {
            Target::Convert(t) => t.name(),
            Target::Quantize(f) => Some(f.name()),
        }
    }

    /// The equivalent separate commands (`label` is [`Target::name`] resolved).
    pub fn describe(self, label: &str) -> String {
        match self {
            Target::Convert(_) => format!("convert --outtype {}", label.to_ascii_lowercase()),
            Target::Quantize(_) => format!("convert --outtype f32 | quantize {label}"),
        }
    }

    /// What the engine writes for `model`, opened as [`Target::conversion`]:
    /// the conversion's own plan, or llama-quantize's plan of the F32 GGUF the
    /// conversion would write (with `imatrix`, if given).
    pub fn resolve(self, model: &dyn Model, imatrix: Option<&Imatrix>) -> Result<Resolved> {
        let want = self.conversion();
        if want != OutType::Auto && model.outtype() != want {
            return Err(Error::Other(format!("model opened as {:?}, not {want:?}", model.outtype())));
        }
        match self {
            Target::Convert(_) => {
                if imatrix.is_some() {
                    return Err(Error::usage("--imatrix applies to quantized output types (e.g. --outtype Q4_K_M)"));
                }
                let t = Target::Convert(model.outtype());
                Ok(Resolved {
                    target: t,
                    name: t.name().unwrap_or("F16").to_string(),
                    plan: model.plan(),
                    metadata: model.metadata().clone(),
                    file_type: model.file_type(),
                    warnings: Vec::new(),
                })
            }
            Target::Quantize(ftype) => {
                let src = model.source();
                let header = policy::quantize::virtual_header(model.metadata(), src, GgmlType::F32)?;
                let plan = policy::plan(&header, &policy::Options::new(ftype), imatrix)?;
                let planned = policy::quantize::planned(&header, &plan, imatrix)?;
                let name = FileType::from_id(plan.file_type).map_or(ftype.name(), |f| f.name()).to_string();
                Ok(Resolved {
                    target: self,
                    name,
                    plan: planned,
                    metadata: plan.metadata,
                    file_type: plan.file_type,
                    warnings: plan.warnings,
                })
            }
        }
    }
}

/// `convert --outtype T`: a Hugging Face directory to one GGUF, in one pass
/// for every target (a quantized type is quantized from the F32 conversion
/// with no intermediate file). `opts.outtype` is ignored (the target's
/// [`Target::conversion`] is used).
pub fn convert(
    dir: &Path,
    out: &Path,
    target: Target,
    opts: &ConvertOptions,
    imatrix: Option<&Imatrix>,
    wopts: &WriteOptions,
    progress: &dyn Progress,
) -> Result<(ConvertSummary, WriteSummary)> {
    let copts = ConvertOptions { outtype: target.conversion(), ..opts.clone() };
    let src = HfToGguf::open(dir, &copts, progress)?;
    let r = target.resolve(&src, imatrix)?;
    for w in &r.warnings {
        progress.warn(w);
    }
    let inputs = src.inputs();
    let written = crate::pipeline::write_gguf(&src, &r.plan, &r.metadata, out, &inputs, wopts, progress)?;
    let mut summary = src.summary(out, written.file_size);
    summary.file_type = r.file_type;
    summary.outtype = r.name.clone();
    crate::convert::drop_later((src, r));
    Ok((summary, written))
}

/// A [`Target`] applied to a model.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The target, `auto` resolved.
    pub target: Target,
    /// [`Target::name`] of the resolved target.
    pub name: String,
    pub plan: Vec<Planned>,
    pub metadata: Metadata,
    /// `general.file_type`.
    pub file_type: u32,
    /// The quantization policy's warnings.
    pub warnings: Vec<String>,
}

/// A model being converted, as [`Target::resolve`] and `pack` need it:
/// [`HfToGguf`], whatever its weights are read through (the safetensors
/// files, or a LoRA merge over them).
pub trait Model {
    /// The tensors and their rows as f32.
    fn source(&self) -> &dyn TensorSource;
    /// GGUF metadata of the conversion.
    fn metadata(&self) -> &Metadata;
    /// The conversion's plan (convert_hf_to_gguf.py's type choice).
    fn plan(&self) -> Vec<Planned>;
    /// The output type, `auto` resolved.
    fn outtype(&self) -> OutType;
    /// `general.file_type`.
    fn file_type(&self) -> u32;
    /// The files read.
    fn inputs(&self) -> Vec<&Path>;
    /// Warnings found when opening.
    fn warnings(&self) -> &[String];
}

impl<W: crate::hf::HfTensors> Model for HfToGguf<W> {
    fn source(&self) -> &dyn TensorSource {
        self
    }
    fn metadata(&self) -> &Metadata {
        &self.metadata
    }
    fn plan(&self) -> Vec<Planned> {
        HfToGguf::plan(self)
    }
    fn outtype(&self) -> OutType {
        self.outtype
    }
    fn file_type(&self) -> u32 {
        self.file_type
    }
    fn inputs(&self) -> Vec<&Path> {
        HfToGguf::inputs(self)
    }
    fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_parsing() {
        assert_eq!(Target::parse("Q4_K_M").unwrap(), Target::Quantize(FileType::Q4_K_M));
        assert_eq!(Target::parse("15").unwrap(), Target::Quantize(FileType::Q4_K_M));
        assert_eq!(Target::parse(" q8_0").unwrap(), Target::Convert(OutType::Q8_0));
        assert_eq!(Target::parse("F16").unwrap().name(), Some("F16"));
        assert_eq!(Target::parse("auto").unwrap().name(), None);
        assert_eq!(Target::parse("iq4_xs").unwrap().name(), Some("IQ4_XS"));
        assert_eq!(Target::parse("Q4_K_M").unwrap().conversion(), OutType::F32);
        assert!(Target::parse("COPY").is_err());
        assert!(Target::parse("Q9_X").unwrap_err().to_string().contains("unknown type 'Q9_X'"));
        assert_eq!(Target::Quantize(FileType::Q4_K_M).describe("Q4_K_M"), "convert --outtype f32 | quantize Q4_K_M");
        assert_eq!(Target::Convert(OutType::Q8_0).describe("Q8_0"), "convert --outtype q8_0");
    }
}
