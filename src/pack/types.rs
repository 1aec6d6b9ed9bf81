//! The `--types` list of `pack`: which GGUF files a release holds and how
//! each one is made.
//!
//! A type means exactly what it means to `ggufkit convert --outtype`:
//! `f32`, `f16`, `bf16`, `q8_0` and `auto` (any case) are convert_hf_to_gguf.py's
//! output types; every other llama-quantize file type (`Q4_K_M`, `Q6_K`,
//! `IQ4_XS`, aliases such as `Q4_K`, numeric ids) is a conversion to F32
//! quantized by llama-quantize's policy. Each release file is therefore
//! byte-identical to what `convert` (and, for quantized types, `convert
//! --outtype f32` followed by `quantize`) writes for the same input.

use crate::convert::OutType;
use crate::error::{Error, Result};
use crate::policy::{self, FileType, Target};

/// How an output is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipe {
    /// `convert --outtype T` (convert_hf_to_gguf.py's types).
    Convert(OutType),
    /// `convert --outtype f32`, then `quantize T`.
    Quantize(FileType),
}

/// One requested output type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputType {
    /// As the user wrote it.
    pub requested: String,
    pub recipe: Recipe,
}

impl Recipe {
    /// The file-type name used in file names (`Q4_K_M`, `F16`); `None` for
    /// `auto`, which is known only once the model's weights are seen.
    pub fn label(self) -> Option<&'static str> {
        match self {
            Recipe::Convert(OutType::F32) => Some("F32"),
            Recipe::Convert(OutType::F16) => Some("F16"),
            Recipe::Convert(OutType::BF16) => Some("BF16"),
            Recipe::Convert(OutType::Q8_0) => Some("Q8_0"),
            Recipe::Convert(OutType::Auto) => None,
            Recipe::Quantize(f) => Some(f.name()),
        }
    }

    /// The equivalent separate commands, for the manifest.
    pub fn describe(self, label: &str) -> String {
        match self {
            Recipe::Convert(_) => format!("convert --outtype {}", label.to_ascii_lowercase()),
            Recipe::Quantize(_) => format!("convert --outtype f32 | quantize {label}"),
        }
    }
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
        let recipe = match t.parse::<OutType>() {
            Ok(o) => Recipe::Convert(o),
            Err(_) => match policy::parse_target(t) {
                Some(Target::FileType(f)) => Recipe::Quantize(f),
                Some(Target::Copy) => return Err(Error::usage("--types: COPY is not an output type")),
                None => {
                    return Err(Error::usage(format!(
                        "--types: unknown type '{t}' (expected f32, f16, bf16, q8_0, auto or a llama-quantize \
                         file type such as Q4_K_M, Q5_K_M, Q6_K, IQ4_XS; see ggufkit quantize --help)"
                    )))
                }
            },
        };
        if let Some(prev) = out.iter().find(|o| o.recipe == recipe) {
            return Err(Error::usage(format!("--types: '{t}' and '{}' name the same output", prev.requested)));
        }
        out.push(OutputType { requested: t.to_string(), recipe });
    }
    if out.is_empty() {
        return Err(Error::usage("--types: no output type given"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Vec<OutputType>> {
        parse_types(&[s.to_string()])
    }

    #[test]
    fn convert_and_quantize_types() {
        // 15 is llama-quantize's id of Q4_K_M.
        assert!(p("Q4_K_M,15").unwrap_err().to_string().contains("same output"));
        let t = p("Q4_K_M,q8_0, F16 ,auto,Q6_K,iq4_xs").unwrap();
        assert_eq!(t[0].recipe, Recipe::Quantize(FileType::Q4_K_M));
        assert_eq!(t[1].recipe, Recipe::Convert(OutType::Q8_0));
        assert_eq!(t[2].recipe, Recipe::Convert(OutType::F16));
        assert_eq!(t[2].requested, "F16");
        assert_eq!(t[3].recipe, Recipe::Convert(OutType::Auto));
        assert_eq!(t[3].recipe.label(), None);
        assert_eq!(t[5].recipe.label(), Some("IQ4_XS"));
        assert_eq!(t[0].recipe.describe("Q4_K_M"), "convert --outtype f32 | quantize Q4_K_M");
        assert_eq!(t[1].recipe.describe("Q8_0"), "convert --outtype q8_0");
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
