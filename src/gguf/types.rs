//! The ggml tensor type table: every type id a GGUF file may carry, with its
//! name, block size (elements per block) and bytes per block.
//!
//! The table covers all types of llama.cpp's `ggml.h` (as of the pinned
//! reference), so any real GGUF can be read and sized, including types that
//! ggufkit cannot quantize to.

use std::fmt;
use std::str::FromStr;

/// A ggml tensor type, by its numeric id in GGUF files.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    IQ2_XXS = 16,
    IQ2_XS = 17,
    IQ3_XXS = 18,
    IQ1_S = 19,
    IQ4_NL = 20,
    IQ3_S = 21,
    IQ2_S = 22,
    IQ4_XS = 23,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    IQ1_M = 29,
    BF16 = 30,
    TQ1_0 = 34,
    TQ2_0 = 35,
    MXFP4 = 39,
    NVFP4 = 40,
    Q1_0 = 41,
    Q2_0 = 42,
}

/// Static facts about a type.
#[derive(Debug, Clone, Copy)]
pub struct TypeInfo {
    pub ty: GgmlType,
    pub name: &'static str,
    /// Elements per block.
    pub block_size: u64,
    /// Bytes per block.
    pub type_size: u64,
}

const QK_K: u64 = 256;

macro_rules! types {
    ($($t:ident => $name:literal, $bs:expr, $ts:expr;)*) => {
        /// Every known type, in id order.
        pub const ALL_TYPES: &[TypeInfo] = &[
            $(TypeInfo { ty: GgmlType::$t, name: $name, block_size: $bs, type_size: $ts },)*
        ];
        impl GgmlType {
            /// The type with this numeric id, if it is a known one.
            pub fn from_id(id: u32) -> Option<GgmlType> {
                $(if id == GgmlType::$t as u32 { return Some(GgmlType::$t); })*
                None
            }
            pub fn info(self) -> TypeInfo {
                match self {
                    $(GgmlType::$t => TypeInfo { ty: GgmlType::$t, name: $name, block_size: $bs, type_size: $ts },)*
                }
            }
        }
    };
}

types! {
    F32 => "F32", 1, 4;
    F16 => "F16", 1, 2;
    Q4_0 => "Q4_0", 32, 2 + 16;
    Q4_1 => "Q4_1", 32, 2 + 2 + 16;
    Q5_0 => "Q5_0", 32, 2 + 4 + 16;
    Q5_1 => "Q5_1", 32, 2 + 2 + 4 + 16;
    Q8_0 => "Q8_0", 32, 2 + 32;
    Q8_1 => "Q8_1", 32, 2 + 2 + 32;
    Q2_K => "Q2_K", QK_K, 2 + 2 + QK_K / 16 + QK_K / 4;
    Q3_K => "Q3_K", QK_K, 2 + QK_K / 4 + QK_K / 8 + 12;
    Q4_K => "Q4_K", QK_K, 2 + 2 + QK_K / 2 + 12;
    Q5_K => "Q5_K", QK_K, 2 + 2 + QK_K / 2 + QK_K / 8 + 12;
    Q6_K => "Q6_K", QK_K, 2 + QK_K / 2 + QK_K / 4 + QK_K / 16;
    Q8_K => "Q8_K", QK_K, 4 + QK_K + QK_K / 8;
    IQ2_XXS => "IQ2_XXS", QK_K, 2 + QK_K / 4;
    IQ2_XS => "IQ2_XS", QK_K, 2 + QK_K / 4 + QK_K / 32;
    IQ3_XXS => "IQ3_XXS", QK_K, 2 + QK_K / 4 + QK_K / 8;
    IQ1_S => "IQ1_S", QK_K, 2 + QK_K / 8 + QK_K / 16;
    IQ4_NL => "IQ4_NL", 32, 2 + 16;
    IQ3_S => "IQ3_S", QK_K, 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4;
    IQ2_S => "IQ2_S", QK_K, 2 + QK_K / 4 + QK_K / 16;
    IQ4_XS => "IQ4_XS", QK_K, 2 + 2 + QK_K / 2 + QK_K / 64;
    I8 => "I8", 1, 1;
    I16 => "I16", 1, 2;
    I32 => "I32", 1, 4;
    I64 => "I64", 1, 8;
    F64 => "F64", 1, 8;
    IQ1_M => "IQ1_M", QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32;
    BF16 => "BF16", 1, 2;
    TQ1_0 => "TQ1_0", QK_K, 2 + 4 * 13;
    TQ2_0 => "TQ2_0", QK_K, 2 + 64;
    MXFP4 => "MXFP4", 32, 1 + 16;
    NVFP4 => "NVFP4", 64, 4 + 32;
    Q1_0 => "Q1_0", 128, 2 + 16;
    Q2_0 => "Q2_0", 64, 2 + 16;
}

impl GgmlType {
    pub fn id(self) -> u32 {
        self as u32
    }
    pub fn name(self) -> &'static str {
        self.info().name
    }
    pub fn block_size(self) -> u64 {
        self.info().block_size
    }
    pub fn type_size(self) -> u64 {
        self.info().type_size
    }
    /// True for the plain float types (F32, F16, BF16, F64).
    pub fn is_float(self) -> bool {
        matches!(self, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::F64)
    }
    /// True for block-quantized types.
    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Bytes of one row of `n` elements, or `None` when `n` is not a whole
    /// number of blocks or the size overflows.
    pub fn row_size(self, n: u64) -> Option<u64> {
        let info = self.info();
        if !n.is_multiple_of(info.block_size) {
            return None;
        }
        (n / info.block_size).checked_mul(info.type_size)
    }

    /// Bytes of a tensor with these dimensions (ne0 first), or `None` when
    /// ne0 is not a whole number of blocks or the size overflows.
    pub fn tensor_size(self, dims: &[u64]) -> Option<u64> {
        let mut size = self.row_size(crate::shape::Shape::Ggml(dims).row_len())?;
        for &d in dims.iter().skip(1) {
            size = size.checked_mul(d)?;
        }
        Some(size)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for GgmlType {
    type Err = String;
    /// Parses a type name, case-insensitively (`q4_k`, `Q4_K`, `bf16`).
    fn from_str(s: &str) -> Result<Self, String> {
        ALL_TYPES
            .iter()
            .find(|t| t.name.eq_ignore_ascii_case(s))
            .map(|t| t.ty)
            .ok_or_else(|| format!("unknown tensor type '{s}'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for t in ALL_TYPES {
            assert_eq!(GgmlType::from_id(t.ty.id()), Some(t.ty));
            assert_eq!(t.ty.info().name, t.name);
            assert_eq!(t.name.parse::<GgmlType>().unwrap(), t.ty);
            assert_eq!(t.name.to_lowercase().parse::<GgmlType>().unwrap(), t.ty);
        }
        for removed in [4, 5, 31, 32, 33, 36, 37, 38, 43, 1000] {
            assert_eq!(GgmlType::from_id(removed), None);
        }
    }

    #[test]
    fn sizes_match_ggml_common() {
        // sizeof(block_*) from ggml-common.h
        let expect = [
            (GgmlType::Q4_0, 18),
            (GgmlType::Q4_1, 20),
            (GgmlType::Q5_0, 22),
            (GgmlType::Q5_1, 24),
            (GgmlType::Q8_0, 34),
            (GgmlType::Q8_1, 36),
            (GgmlType::Q2_K, 84),
            (GgmlType::Q3_K, 110),
            (GgmlType::Q4_K, 144),
            (GgmlType::Q5_K, 176),
            (GgmlType::Q6_K, 210),
            (GgmlType::Q8_K, 292),
            (GgmlType::IQ4_NL, 18),
            (GgmlType::IQ4_XS, 136),
            (GgmlType::MXFP4, 17),
        ];
        for (t, size) in expect {
            assert_eq!(t.type_size(), size, "{t}");
        }
    }

    #[test]
    fn tensor_sizes() {
        assert_eq!(GgmlType::Q4_0.tensor_size(&[64, 3]), Some(2 * 18 * 3));
        assert_eq!(GgmlType::Q4_0.tensor_size(&[63, 3]), None);
        assert_eq!(GgmlType::F32.tensor_size(&[u64::MAX, 2]), None);
        assert_eq!(GgmlType::F32.tensor_size(&[]), Some(4));
    }
}
