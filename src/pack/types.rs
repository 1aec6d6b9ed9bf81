//! The `--types` list of `pack`: which GGUF files a release holds. Each
//! item is a [`Target`] and means exactly what it means to `ggufkit convert
//! --outtype` (see [`crate::target`]), so each release file is byte-identical
//! to what `convert` (and, for quantized types, `convert --outtype f32`
//! followed by `quantize`) writes for the same input.

use crate::error::{Error, Result};
use crate::target::Target;

/// One requested output type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputType {
    /// As the user wrote it.
    pub requested: String,
    pub target: Target,
}

/// Parses the `--types` items (each may itself be a comma-separated list).
/// Empty items, unknown names, `COPY` and the same item twice are errors.
pub fn parse_types(items: &[String]) -> Result<Vec<OutputType>> {
    let mut out: Vec<OutputType> = Vec::new();
    for item in items.iter().flat_map(|s| s.split(',')) {
        let t = item.trim();
        if t.is_empty() {
            return Err(Error::usage("--types: empty item in the list"));
        }
        let target = Target::parse(t).map_err(|e| Error::usage(format!("--types: {e}")))?;
        if let Some(prev) = out.iter().find(|o| o.target == target) {
            return Err(Error::usage(format!("--types: '{t}' and '{}' name the same output", prev.requested)));
        }
        out.push(OutputType { requested: t.to_string(), target });
    }
    if out.is_empty() {
        return Err(Error::usage("--types: no output type given"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::OutType;
    use crate::policy::FileType;

    fn p(s: &str) -> Result<Vec<OutputType>> {
        parse_types(&[s.to_string()])
    }

    #[test]
    fn convert_and_quantize_types() {
        // 15 is llama-quantize's id of Q4_K_M.
        assert!(p("Q4_K_M,15").unwrap_err().to_string().contains("same output"));
        let t = p("Q4_K_M,q8_0, F16 ,auto,Q6_K,iq4_xs").unwrap();
        assert_eq!(t[0].target, Target::Quantize(FileType::Q4_K_M));
        assert_eq!(t[1].target, Target::Convert(OutType::Q8_0));
        assert_eq!(t[2].target, Target::Convert(OutType::F16));
        assert_eq!(t[2].requested, "F16");
        assert_eq!(t[3].target, Target::Convert(OutType::Auto));
        assert_eq!(t[3].target.name(), None);
        assert_eq!(t[5].target.name(), Some("IQ4_XS"));
        assert_eq!(t[0].target.describe("Q4_K_M"), "convert --outtype f32 | quantize Q4_K_M");
        assert_eq!(t[1].target.describe("Q8_0"), "convert --outtype q8_0");
    }

    #[test]
    fn bad_lists() {
        assert!(p("Q4_K_M,,Q8_0").is_err());
        assert!(p("").is_err());
        assert!(p("Q4_K_M,Q4_K").unwrap_err().to_string().contains("same output"));
        assert!(p("Q9_X").unwrap_err().to_string().contains("unknown type 'Q9_X'"));
        assert!(p("COPY").is_err());
        assert!(parse_types(&[]).is_err());
        assert_eq!(parse_types(&["Q4_K_M".into(), "Q8_0,Q6_K".into()]).unwrap().len(), 3);
    }
}
