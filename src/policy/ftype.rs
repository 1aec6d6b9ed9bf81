//! File types (`general.file_type`, llama.cpp's `llama_ftype`): the
//! targets of `quantize`, with llama-quantize's names, ids, default tensor
//! types and labels, read from `formats/quantize.json`.

use std::fmt;
use std::sync::OnceLock;

use serde::Deserialize;

use crate::gguf::GgmlType;

/// A llama.cpp file type. The discriminant is the `general.file_type` id.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum FileType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q8_0 = 7,
    Q5_0 = 8,
    Q5_1 = 9,
    Q2_K = 10,
    Q3_K_S = 11,
    Q3_K_M = 12,
    Q3_K_L = 13,
    Q4_K_S = 14,
    Q4_K_M = 15,
    Q5_K_S = 16,
    Q5_K_M = 17,
    Q6_K = 18,
    IQ2_XXS = 19,
    IQ2_XS = 20,
    Q2_K_S = 21,
    IQ3_XS = 22,
    IQ3_XXS = 23,
    IQ1_S = 24,
    IQ4_NL = 25,
    IQ3_S = 26,
    IQ3_M = 27,
    IQ2_S = 28,
    IQ2_M = 29,
    IQ4_XS = 30,
    IQ1_M = 31,
    BF16 = 32,
    TQ1_0 = 36,
    TQ2_0 = 37,
    MXFP4_MOE = 38,
    NVFP4 = 39,
    Q1_0 = 40,
    Q2_0 = 41,
}

/// Every file type, in id order.
pub const ALL_FILE_TYPES: &[FileType] = {
    use FileType::*;
    &[
        F32, F16, Q4_0, Q4_1, Q8_0, Q5_0, Q5_1, Q2_K, Q3_K_S, Q3_K_M, Q3_K_L, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K,
        IQ2_XXS, IQ2_XS, Q2_K_S, IQ3_XS, IQ3_XXS, IQ1_S, IQ4_NL, IQ3_S, IQ3_M, IQ2_S, IQ2_M, IQ4_XS, IQ1_M, BF16,
        TQ1_0, TQ2_0, MXFP4_MOE, NVFP4, Q1_0, Q2_0,
    ]
};

/// The `general.file_type` bit llama.cpp sets on a file type it guessed from
/// the tensor types (`LLAMA_FTYPE_GUESSED`).
pub const FTYPE_GUESSED: u32 = 1024;

/// One row of the file-type table.
#[derive(Debug, Clone)]
pub struct FileTypeInfo {
    pub ftype: FileType,
    /// llama-quantize's name (`Q4_K_M`).
    pub name: String,
    /// Further names llama-quantize accepts (`Q4_K`).
    pub aliases: Vec<String>,
    /// The type of every quantizable tensor before the mix rules
    /// (`llama_ftype_get_default_type`); `None` when llama-quantize refuses the file type.
    pub default_type: Option<GgmlType>,
    /// `llama_ftype_name` (`Q4_K - Medium`).
    pub label: String,
    /// llama-quantize's one-line description.
    pub description: String,
    /// A llama-style model cannot be quantized to this file type without an
    /// importance matrix (the exact check is per tensor, see [`super::plan`]).
    pub requires_imatrix: bool,
}

#[derive(Deserialize)]
struct Row {
    name: String,
    id: u32,
    default_type: Option<String>,
    label: String,
    description: String,
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default)]
    requires_imatrix: bool,
}

#[derive(Deserialize)]
pub(crate) struct NeverQuantize {
    pub contains: Vec<String>,
    pub equals: Vec<String>,
    pub by_arch: std::collections::BTreeMap<String, Vec<String>>,
}

#[derive(Deserialize)]
struct Tables {
    file_types: Vec<Row>,
    never_quantize: NeverQuantize,
}

pub(crate) struct Loaded {
    /// In llama-quantize's listing order.
    pub file_types: Vec<FileTypeInfo>,
    pub never_quantize: NeverQuantize,
}

const TABLE_JSON: &str = include_str!("../../formats/quantize.json");

fn parse_tables() -> Result<Loaded, String> {
    let t: Tables = serde_json::from_str(TABLE_JSON).map_err(|e| format!("formats/quantize.json: {e}"))?;
    let mut file_types = Vec::with_capacity(t.file_types.len());
    for r in t.file_types {
        let ftype = FileType::from_id(r.id).ok_or_else(|| format!("formats/quantize.json: unknown id {}", r.id))?;
        let default_type = match r.default_type {
            Some(s) => Some(s.parse::<GgmlType>().map_err(|e| format!("formats/quantize.json: {}: {e}", r.name))?),
            None => None,
        };
        file_types.push(FileTypeInfo {
            ftype,
            name: r.name,
            aliases: r.aliases,
            default_type,
            label: r.label,
            description: r.description,
            requires_imatrix: r.requires_imatrix,
        });
    }
    for &ft in ALL_FILE_TYPES {
        if file_types.iter().filter(|i| i.ftype == ft).count() != 1 {
            return Err(format!("formats/quantize.json: file type id {} must appear exactly once", ft as u32));
        }
    }
    Ok(Loaded { file_types, never_quantize: t.never_quantize })
}

pub(crate) fn tables() -> &'static Loaded {
    static TABLES: OnceLock<Loaded> = OnceLock::new();
    // The table is compiled in and checked by a unit test, so a failure here is a build defect.
    TABLES.get_or_init(|| parse_tables().unwrap_or_else(|e| panic!("{e}")))
}

/// The file-type table in llama-quantize's listing order.
pub fn file_types() -> &'static [FileTypeInfo] {
    &tables().file_types
}

impl FileType {
    pub fn id(self) -> u32 {
        self as u32
    }

    pub fn from_id(id: u32) -> Option<FileType> {
        ALL_FILE_TYPES.iter().copied().find(|f| f.id() == id)
    }

    pub fn info(self) -> &'static FileTypeInfo {
        // Every variant is in the table (checked when the table is loaded).
        file_types().iter().find(|i| i.ftype == self).unwrap_or_else(|| unreachable!())
    }

    /// llama-quantize's name (`Q4_K_M`).
    pub fn name(self) -> &'static str {
        &self.info().name
    }

    /// The tensor type before the mix rules; `None` when llama-quantize refuses this file type.
    pub fn default_type(self) -> Option<GgmlType> {
        self.info().default_type
    }

    pub fn requires_imatrix(self) -> bool {
        self.info().requires_imatrix
    }

    /// Parses a file type as llama-quantize does: a name or alias in any case
    /// (`q4_k_m`, `Q4_K`), or a numeric id (`15`) of a type it lists. `COPY`
    /// is not a file type (see [`parse_target`]).
    pub fn parse(s: &str) -> Option<FileType> {
        for info in file_types() {
            if info.default_type.is_none() {
                continue;
            }
            if info.name.eq_ignore_ascii_case(s) || info.aliases.iter().any(|a| a.eq_ignore_ascii_case(s)) {
                return Some(info.ftype);
            }
        }
        let id = parse_c_int(s)?;
        let id = u32::try_from(id).ok()?;
        FileType::from_id(id).filter(|f| f.default_type().is_some())
    }
}

/// What `quantize` is asked to produce: a file type, or `COPY` (tensors
/// copied unchanged, llama-quantize's `only_copy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    FileType(FileType),
    Copy,
}

/// Parses a quantize target as llama-quantize does (`Q4_K_M`, `q4_k`, `15`, `COPY`).
pub fn parse_target(s: &str) -> Option<Target> {
    if s.eq_ignore_ascii_case("COPY") {
        return Some(Target::Copy);
    }
    FileType::parse(s).map(Target::FileType)
}

/// `std::stoi`: optional leading whitespace, a sign, at least one digit; the
/// rest of the string is ignored. `None` when there are no digits or the
/// value does not fit in an `int`.
fn parse_c_int(s: &str) -> Option<i64> {
    let t = s.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let n = digits.bytes().take_while(u8::is_ascii_digit).count();
    if n == 0 {
        return None;
    }
    let v: i64 = digits[..n].parse().ok()?;
    let v = if neg { -v } else { v };
    (i32::MIN as i64..=i32::MAX as i64).contains(&v).then_some(v)
}

impl fmt::Display for FileType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_loads_and_covers_every_variant() {
        let t = parse_tables().unwrap();
        assert_eq!(t.file_types.len(), ALL_FILE_TYPES.len());
        for &ft in ALL_FILE_TYPES {
            assert_eq!(FileType::from_id(ft.id()), Some(ft));
            assert_eq!(ft.info().ftype, ft);
        }
    }

    #[test]
    fn names_and_ids() {
        use FileType::*;
        let expect = [
            ("F32", F32, 0),
            ("F16", F16, 1),
            ("BF16", BF16, 32),
            ("Q8_0", Q8_0, 7),
            ("Q4_0", Q4_0, 2),
            ("Q4_1", Q4_1, 3),
            ("Q5_0", Q5_0, 8),
            ("Q5_1", Q5_1, 9),
            ("Q2_K", Q2_K, 10),
            ("Q2_K_S", Q2_K_S, 21),
            ("Q3_K_S", Q3_K_S, 11),
            ("Q3_K_M", Q3_K_M, 12),
            ("Q3_K_L", Q3_K_L, 13),
            ("Q4_K_S", Q4_K_S, 14),
            ("Q4_K_M", Q4_K_M, 15),
            ("Q5_K_S", Q5_K_S, 16),
            ("Q5_K_M", Q5_K_M, 17),
            ("Q6_K", Q6_K, 18),
            ("IQ4_NL", IQ4_NL, 25),
            ("IQ4_XS", IQ4_XS, 30),
            ("Q3_K", Q3_K_M, 12),
            ("Q4_K", Q4_K_M, 15),
            ("Q5_K", Q5_K_M, 17),
        ];
        for (name, ft, id) in expect {
            assert_eq!(FileType::parse(name), Some(ft), "{name}");
            assert_eq!(FileType::parse(&name.to_lowercase()), Some(ft), "{name}");
            assert_eq!(ft.id(), id);
        }
        assert_eq!(FileType::parse("15"), Some(Q4_K_M));
        assert_eq!(FileType::parse(" 15xyz"), Some(Q4_K_M));
        assert_eq!(FileType::parse("39"), None); // NVFP4 is not a quantize target
        assert_eq!(FileType::parse("4"), None);
        assert_eq!(FileType::parse("Q4_K_X"), None);
        assert_eq!(parse_target("copy"), Some(Target::Copy));
        assert_eq!(Q4_K_M.default_type(), Some(GgmlType::Q4_K));
        assert_eq!(IQ2_S.default_type(), Some(GgmlType::IQ2_XS));
        assert!(Q2_K_S.requires_imatrix());
        assert!(!Q2_K.requires_imatrix());
    }
}
