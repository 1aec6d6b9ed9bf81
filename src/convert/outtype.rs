//! `--outtype`: convert_hf_to_gguf.py's output types, their names and file types, and the
//! type it gives each tensor.

use crate::gguf::GgmlType;

/// `--outtype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutType {
    F32,
    F16,
    BF16,
    Q8_0,
    /// BF16 when the first 2-D weight is bf16, F16 otherwise.
    #[default]
    Auto,
}

impl std::str::FromStr for OutType {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "f32" => OutType::F32,
            "f16" => OutType::F16,
            "bf16" => OutType::BF16,
            "q8_0" => OutType::Q8_0,
            "auto" => OutType::Auto,
            _ => return Err(format!("unknown output type '{s}' (expected f32, f16, bf16, q8_0 or auto)")),
        })
    }
}

impl OutType {
    /// `general.file_type` (`auto` before it is resolved counts as F16).
    pub fn file_type(self) -> u32 {
        match self {
            OutType::F32 => 0,
            OutType::F16 | OutType::Auto => 1,
            OutType::Q8_0 => 7,
            OutType::BF16 => 32,
        }
    }

    /// convert_hf_to_gguf.py's name of the type (`auto` not yet resolved: `None`).
    pub fn name(self) -> Option<&'static str> {
        match self {
            OutType::F32 => Some("F32"),
            OutType::F16 => Some("F16"),
            OutType::BF16 => Some("BF16"),
            OutType::Q8_0 => Some("Q8_0"),
            OutType::Auto => None,
        }
    }
}

/// The type convert_hf_to_gguf.py gives a tensor.
pub(super) fn tensor_type(
    name: &str,
    n_dims: usize,
    row_len: u64,
    outtype: OutType,
    warnings: &mut Vec<String>,
) -> GgmlType {
    if n_dims <= 1 || name.ends_with("_norm.weight") || !name.ends_with(".weight") || always_f32(name) {
        return GgmlType::F32;
    }
    match outtype {
        OutType::F32 => GgmlType::F32,
        OutType::F16 | OutType::Auto => GgmlType::F16,
        OutType::BF16 => GgmlType::BF16,
        OutType::Q8_0 => {
            if row_len.is_multiple_of(32) {
                GgmlType::Q8_0
            } else {
                warnings.push(format!("{name}: row length {row_len} is not a multiple of 32, falling back to F16"));
                GgmlType::F16
            }
        }
    }
}

/// Tensors convert_hf_to_gguf.py always writes as F32 (those of its list
/// that ggufkit's architectures have): the MoE routers.
pub(super) fn always_f32(name: &str) -> bool {
    let kind = name.strip_prefix("blk.").and_then(|r| r.split_once('.')).map_or(name, |(_, k)| k);
    matches!(kind, "ffn_gate_inp.weight" | "ffn_gate_inp_shexp.weight")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_follow_convert() {
        let mut w = Vec::new();
        assert_eq!(tensor_type("blk.0.attn_norm.weight", 1, 8, OutType::F16, &mut w), GgmlType::F32);
        assert_eq!(tensor_type("blk.0.attn_q.bias", 1, 8, OutType::BF16, &mut w), GgmlType::F32);
        assert_eq!(tensor_type("blk.0.attn_q_norm.weight", 1, 8, OutType::BF16, &mut w), GgmlType::F32);
        assert_eq!(tensor_type("token_embd.weight", 2, 64, OutType::Q8_0, &mut w), GgmlType::Q8_0);
        assert_eq!(tensor_type("token_embd.weight", 2, 48, OutType::Q8_0, &mut w), GgmlType::F16);
        assert_eq!(w.len(), 1);
    }
}
