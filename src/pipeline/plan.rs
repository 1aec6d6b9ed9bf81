//! Plans: which source tensor each output tensor comes from, and as what type.

use super::source::TensorSource;
use super::write::WriteOptions;
use crate::error::{Error, Result};
use crate::gguf::{GgmlType, Layout, Metadata, TensorSpec};
use crate::quant;
use crate::shape::Shape;

/// One output tensor: which source tensor, and as what type.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub source: usize,
    pub ty: GgmlType,
    /// Importance weights for the quantizer (row length × number of experts), if any.
    pub imatrix: Option<Vec<f32>>,
    /// Dimensions to write instead of the source's (same row length and
    /// element count; e.g. trailing 1s dropped, as llama-quantize writes them).
    pub dims: Option<Vec<u64>>,
}

impl Planned {
    pub fn new(source: usize, ty: GgmlType) -> Self {
        Planned { source, ty, imatrix: None, dims: None }
    }
}

/// The output tensor specs of a plan.
pub fn specs(src: &dyn TensorSource, plan: &[Planned]) -> Vec<TensorSpec> {
    let tensors = src.tensors();
    plan.iter()
        .map(|p| {
            let t = &tensors[p.source];
            TensorSpec::new(t.name.clone(), p.dims.clone().unwrap_or_else(|| t.dims.clone()), p.ty)
        })
        .collect()
}

/// Checks a plan against its source: indices in range, each source tensor used
/// at most once, row lengths compatible with the output types, and the codec
/// able to produce each conversion.
pub fn check_plan(src: &dyn TensorSource, plan: &[Planned]) -> Result<()> {
    let tensors = src.tensors();
    let mut used = vec![false; tensors.len()];
    for p in plan {
        let t = tensors.get(p.source).ok_or_else(|| Error::Other(format!("plan names source tensor {}", p.source)))?;
        if std::mem::replace(&mut used[p.source], true) {
            return Err(Error::Other(format!("tensor '{}' planned twice", t.name)));
        }
        if let Some(d) = &p.dims {
            if Shape::Ggml(d).row_len() != t.row_len() || Shape::Ggml(d).n_elements() != t.n_elements() {
                return Err(Error::Other(format!("tensor '{}': dimensions {d:?} do not fit {:?}", t.name, t.dims)));
            }
        }
        if t.row_len() % p.ty.block_size() != 0 {
            return Err(Error::Other(format!(
                "tensor '{}': row length {} is not a multiple of the {} block size {}",
                t.name,
                t.row_len(),
                p.ty,
                p.ty.block_size()
            )));
        }
        let copy = p.ty == t.ty;
        if !copy && (!quant::can_dequantize(t.ty) || !quant::can_quantize(p.ty)) {
            return Err(Error::Unsupported(format!("tensor '{}': cannot convert {} to {}", t.name, t.ty, p.ty)));
        }
        if let Some(im) = &p.imatrix {
            if im.is_empty() || !(im.len() as u64).is_multiple_of(t.row_len()) {
                return Err(Error::Other(format!(
                    "tensor '{}': importance matrix of {} values does not fit rows of {}",
                    t.name,
                    im.len(),
                    t.row_len()
                )));
            }
        }
    }
    Ok(())
}

/// The layout a plan produces (for `--dry-run` sizes).
pub fn layout(src: &dyn TensorSource, plan: &[Planned], metadata: &Metadata, opts: &WriteOptions) -> Result<Layout> {
    check_plan(src, plan)?;
    Layout::new(opts.container, metadata, &specs(src, plan))
}
