//! llama-quantize's quantization policy: for a GGUF header and the
//! quantize options, the type of every output tensor, the tensor order and
//! the output metadata — decided before any data is read, exactly as
//! llama.cpp's `llama_model_quantize_impl` decides them (`src/llama-quant.cpp`
//! at the pinned commit).
//!
//! [`plan`] is the entry point. It reproduces llama-quantize's refusals too
//! (a type that needs an importance matrix without one, requantizing without
//! `--allow-requantize`, an imatrix entry of the wrong size …), but reports
//! them before any work where llama.cpp finds some of them half-way through.
//!
//! Data: `formats/quantize.json` (file types, tensors never quantized).
//! Logic: [`rules`] (mix rules, fallbacks), [`order`] (tensor order),
//! [`metadata`] (keys and `--override-kv`).

pub mod ftype;
pub mod metadata;
pub mod order;
pub mod quantize;
pub mod rules;

use std::fmt;

pub use ftype::{file_types, parse_target, FileType, FileTypeInfo, Target, ALL_FILE_TYPES, FTYPE_GUESSED};
pub use metadata::{
    imatrix_overrides, output_metadata, KvOverride, OverrideValue, KEY_FILE_TYPE, KEY_IMATRIX_DATASET,
    KEY_IMATRIX_FILE, KEY_IMATRIX_N_CHUNKS, KEY_IMATRIX_N_ENTRIES, KEY_QUANTIZATION_VERSION, QUANTIZATION_VERSION,
};
pub use order::{compare_names, output_order, scanf_blk_layer};
pub(crate) use rules::is_token_embd;
pub use rules::ModelParams;

use crate::error::{Error, Result};
use crate::gguf::{GgmlType, Gguf, Metadata, TensorInfo, Value};
use crate::imatrix::Imatrix;
use rules::{Category, MixState, TensorView};

/// A `--tensor-type PATTERN=TYPE` rule: tensors whose name the regular
/// expression finds a match in (`std::regex_search`) get TYPE. The first
/// matching rule wins.
#[derive(Debug, Clone)]
pub struct TensorTypeRule {
    /// The pattern as llama-quantize uses it (lower-cased).
    pub pattern: String,
    pub ty: GgmlType,
    regex: regex::bytes::Regex,
}

impl TensorTypeRule {
    /// Parses `PATTERN=TYPE` as llama-quantize's `parse_tensor_type`: the
    /// pattern is everything before the first `=`, lower-cased (ASCII); TYPE
    /// is any ggml type name in any case.
    ///
    /// llama.cpp compiles the pattern as an ECMAScript `std::regex`; ggufkit
    /// uses the `regex` crate on bytes without Unicode classes, which agrees
    /// on the usual syntax. Patterns with look-around or back-references are
    /// refused with an error.
    pub fn parse(spec: &str) -> Result<TensorTypeRule> {
        let (name, ty) = spec
            .split_once('=')
            .ok_or_else(|| Error::usage(format!("malformed --tensor-type '{spec}' (expected PATTERN=TYPE)")))?;
        if name.is_empty() {
            return Err(Error::usage(format!("--tensor-type '{spec}': missing tensor name")));
        }
        if ty.is_empty() {
            return Err(Error::usage(format!("--tensor-type '{spec}': missing quantization type")));
        }
        let ty: GgmlType = ty.parse().map_err(|e| Error::usage(format!("--tensor-type '{spec}': {e}")))?;
        TensorTypeRule::new(&name.to_ascii_lowercase(), ty)
    }

    /// A rule from an already lower-cased pattern.
    pub fn new(pattern: &str, ty: GgmlType) -> Result<TensorTypeRule> {
        let regex = regex::bytes::RegexBuilder::new(pattern)
            .unicode(false)
            .build()
            .map_err(|e| Error::usage(format!("--tensor-type pattern '{pattern}': {e}")))?;
        Ok(TensorTypeRule { pattern: pattern.to_string(), ty, regex })
    }

    pub fn is_match(&self, name: &str) -> bool {
        self.regex.is_match(name.as_bytes())
    }
}

/// Parses a `--tensor-type-file`: `PATTERN=TYPE` items separated by whitespace.
pub fn parse_tensor_type_file(text: &str) -> Result<Vec<TensorTypeRule>> {
    text.split_ascii_whitespace().map(TensorTypeRule::parse).collect()
}

/// The quantize options that decide the plan (llama-quantize's flags).
#[derive(Debug, Clone)]
pub struct Options {
    pub ftype: FileType,
    /// `COPY`: every tensor keeps its type; `general.file_type` keeps the input's.
    pub only_copy: bool,
    /// `--pure`: no mix rules, every quantized tensor gets the default type.
    pub pure: bool,
    /// `false` with `--leave-output-tensor`.
    pub quantize_output_tensor: bool,
    /// `--output-tensor-type`.
    pub output_tensor_type: Option<GgmlType>,
    /// `--token-embedding-type`.
    pub token_embedding_type: Option<GgmlType>,
    /// `--tensor-type`, in command-line order.
    pub tensor_types: Vec<TensorTypeRule>,
    /// `--allow-requantize`.
    pub allow_requantize: bool,
    /// `--override-kv`, in command-line order.
    pub kv_overrides: Vec<KvOverride>,
    /// `--dry-run`: a tensor that would need an importance matrix is a warning, not an error.
    pub dry_run: bool,
    /// ggufkit's own: a shape fallback (e.g. Q4_K → Q5_0 for rows of 896) is an error.
    pub no_fallback: bool,
}

impl Options {
    /// llama-quantize's defaults for a file type.
    pub fn new(ftype: FileType) -> Options {
        Options {
            ftype,
            only_copy: false,
            pure: false,
            quantize_output_tensor: true,
            output_tensor_type: None,
            token_embedding_type: None,
            tensor_types: Vec::new(),
            allow_requantize: false,
            kv_overrides: Vec::new(),
            dry_run: false,
            no_fallback: false,
        }
    }

    /// Options for a parsed target (`COPY` behaves as llama-quantize's F32 + only_copy).
    pub fn for_target(target: Target) -> Options {
        match target {
            Target::FileType(f) => Options::new(f),
            Target::Copy => Options { only_copy: true, ..Options::new(FileType::F32) },
        }
    }
}

/// What happens to one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorPlan {
    /// Index in the input's tensor list.
    pub index: usize,
    pub name: String,
    /// Dimensions as llama-quantize writes them: up to the last one larger
    /// than 1 (`ggml_n_dims`), so an input `[256, 1]` is written as `[256]`.
    pub dims: Vec<u64>,
    pub input_type: GgmlType,
    pub output_type: GgmlType,
    /// Bytes of the output tensor.
    pub output_size: u64,
    /// Why this type (for `--dry-run`).
    pub reason: String,
    /// The importance-matrix entry of this tensor is used when converting it.
    pub use_imatrix: bool,
    /// The output type needs an importance matrix (`tensor_requires_imatrix`).
    pub requires_imatrix: bool,
}

impl TensorPlan {
    /// The data is converted (otherwise copied byte for byte).
    pub fn converts(&self) -> bool {
        self.input_type != self.output_type
    }
}

/// The decisions of one quantization.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `general.file_type` of the output.
    pub file_type: u32,
    /// Output tensors in output order.
    pub tensors: Vec<TensorPlan>,
    /// Output metadata in output order.
    pub metadata: Metadata,
    pub model: ModelParams,
    /// Tensors that got a fallback type because of their row length.
    pub n_fallback: usize,
    /// Things llama-quantize warns about (missing imatrix entries, fallbacks, dry-run notes).
    pub warnings: Vec<String>,
}

impl Plan {
    pub fn input_bytes(&self, header: &Gguf) -> u64 {
        self.tensors.iter().map(|t| header.tensors.get(t.index).map_or(0, |i| i.size)).sum()
    }
    pub fn output_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.output_size).sum()
    }
}

impl fmt::Display for TensorPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shape: Vec<String> = self.dims.iter().map(u64::to_string).collect();
        write!(
            f,
            "{:<40} [{}] {} -> {} ({})",
            self.name,
            shape.join(", "),
            self.input_type,
            self.output_type,
            self.reason
        )
    }
}

/// Reads metadata as llama.cpp's model loader does for the keys the policy
/// needs, with `--override-kv` values taking precedence (the first override
/// of a key wins there, and only one of the matching type is used).
struct Hparams<'a> {
    md: &'a Metadata,
    overrides: &'a [KvOverride],
}

impl Hparams<'_> {
    fn override_of(&self, key: &str) -> Option<&OverrideValue> {
        self.overrides.iter().find(|o| o.key == key).map(|o| &o.value)
    }

    /// An integer key (`get_key` into a `uint32_t`).
    fn u32(&self, key: &str) -> Result<Option<u32>> {
        if let Some(OverrideValue::Int(v)) = self.override_of(key) {
            return Ok(Some(*v as u32));
        }
        match self.md.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .map(Some)
                .ok_or_else(|| Error::Unsupported(format!("metadata key '{key}' is not a UINT32 value"))),
        }
    }

    /// A per-layer key that may be one value or an array (`get_key_or_arr`): layer 0's value.
    fn u32_layer0(&self, key: &str) -> Result<Option<u32>> {
        match self.md.get(key) {
            Some(Value::Array(a)) => match a.values.first() {
                Some(v) => v
                    .as_u64()
                    .and_then(|x| u32::try_from(x).ok())
                    .map(Some)
                    .ok_or_else(|| Error::Unsupported(format!("metadata key '{key}' holds non-integer values"))),
                None => Ok(None),
            },
            Some(_) => self.u32(key),
            None => Ok(None),
        }
    }

    fn arch(&self) -> Result<String> {
        if let Some(OverrideValue::Str(s)) = self.override_of(crate::gguf::KEY_ARCHITECTURE) {
            return Ok(String::from_utf8_lossy(s).into_owned());
        }
        self.md
            .architecture()
            .map(str::to_string)
            .ok_or_else(|| Error::Unsupported("the model has no general.architecture string".into()))
    }
}

/// The model facts the rules use, as llama.cpp's `load_hparams` reads them.
pub fn model_params(md: &Metadata, overrides: &[KvOverride]) -> Result<ModelParams> {
    let h = Hparams { md, overrides };
    let arch = h.arch()?;
    let key = |k: &str| format!("{arch}.{k}");
    let n_layer = h
        .u32(&key("block_count"))?
        .ok_or_else(|| Error::Unsupported(format!("the model has no {arch}.block_count")))?;
    if n_layer == 0 {
        return Err(Error::Unsupported(format!("{arch}.block_count is 0")));
    }
    let n_nextn = h.u32(&key("nextn_predict_layers"))?.unwrap_or(0);
    let mut n_expert = h.u32(&key("expert_count"))?.unwrap_or(0);
    if matches!(arch.as_str(), "hunyuan_vl" | "hunyuan-dense") && n_expert <= 1 {
        n_expert = 0;
    }
    let n_head = h.u32_layer0(&key("attention.head_count"))?.unwrap_or(0);
    let n_head_kv = h.u32_layer0(&key("attention.head_count_kv"))?.unwrap_or(n_head);
    // llama.cpp's model type: only "70B" matters for the policy
    let n_main = n_layer.saturating_sub(n_nextn);
    let is_70b = match arch.as_str() {
        "llama" => n_expert != 8 && n_main == 80 && n_head != n_head_kv,
        "qwen2" | "deci" | "olmo" => n_main == 80,
        "jais2" => n_main == 68,
        _ => false,
    };
    Ok(ModelParams { arch, n_layer, n_head, n_head_kv, n_expert, is_70b })
}

/// llama.cpp's guess of a file type from the most common tensor type
/// (`general.file_type` of a `COPY` of a file without that key).
fn guessed_file_type(header: &Gguf, order: &[usize]) -> u32 {
    use FileType as F;
    let mut counts: Vec<(GgmlType, u32)> = Vec::new();
    let (mut best, mut best_n) = (GgmlType::F32, 0u32);
    for &i in order {
        let ty = header.tensors[i].ty;
        let n = match counts.iter_mut().find(|(t, _)| *t == ty) {
            Some(e) => {
                e.1 += 1;
                e.1
            }
            None => {
                counts.push((ty, 1));
                1
            }
        };
        if best_n < n {
            best_n = n;
            best = ty;
        }
    }
    let ft = match best {
        GgmlType::F16 => F::F16,
        GgmlType::BF16 => F::BF16,
        GgmlType::Q4_0 => F::Q4_0,
        GgmlType::Q4_1 => F::Q4_1,
        GgmlType::Q5_0 => F::Q5_0,
        GgmlType::Q5_1 => F::Q5_1,
        GgmlType::Q8_0 => F::Q8_0,
        GgmlType::Q2_K => F::Q2_K,
        GgmlType::Q3_K => F::Q3_K_M,
        GgmlType::Q4_K => F::Q4_K_M,
        GgmlType::Q5_K => F::Q5_K_M,
        GgmlType::Q6_K => F::Q6_K,
        GgmlType::TQ1_0 => F::TQ1_0,
        GgmlType::TQ2_0 => F::TQ2_0,
        GgmlType::IQ2_XXS => F::IQ2_XXS,
        GgmlType::IQ2_XS => F::IQ2_XS,
        GgmlType::IQ2_S => F::IQ2_S,
        GgmlType::IQ3_XXS => F::IQ3_XXS,
        GgmlType::IQ1_S => F::IQ1_S,
        GgmlType::IQ1_M => F::IQ1_M,
        GgmlType::IQ4_NL => F::IQ4_NL,
        GgmlType::IQ4_XS => F::IQ4_XS,
        GgmlType::IQ3_S => F::IQ3_S,
        GgmlType::NVFP4 => F::NVFP4,
        GgmlType::Q1_0 => F::Q1_0,
        GgmlType::Q2_0 => F::Q2_0,
        _ => F::F32,
    };
    ft.id() | FTYPE_GUESSED
}

/// `ggml_n_dims`: the dimensions up to the last one larger than 1 (at least one).
pub fn written_dims(dims: &[u64]) -> Vec<u64> {
    let n = dims.iter().rposition(|&d| d > 1).map_or(1, |i| i + 1);
    let mut v: Vec<u64> = dims.iter().copied().take(n).collect();
    if v.is_empty() {
        v.push(1);
    }
    v
}

/// The input type can be turned into f32 rows by llama-quantize.
fn can_dequantize(ty: GgmlType) -> bool {
    ty.is_quantized() || matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
}

/// The type llama-quantize gives one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct TypeDecision {
    /// Index in the input's tensor list.
    pub index: usize,
    pub ty: GgmlType,
    pub reason: String,
    /// `tensor_allows_quantization`: the rules were asked (otherwise the type is the input's).
    pub allows_quantization: bool,
    /// `tensor_requires_imatrix` for the chosen type.
    pub requires_imatrix: bool,
}

/// The per-tensor types of one quantization, in output order.
#[derive(Debug, Clone)]
pub struct TypeDecisions {
    pub tensors: Vec<TypeDecision>,
    pub model: ModelParams,
    pub n_fallback: usize,
}

/// The type of every tensor, in output order, as llama-quantize's
/// preliminary pass chooses it (`llama_tensor_get_type`), without the checks
/// that follow (see [`plan`]). `has_imatrix` changes a few mix rules.
pub fn decide_types(header: &Gguf, opts: &Options, has_imatrix: bool) -> Result<TypeDecisions> {
    let ftype = opts.ftype;
    let default_type = ftype
        .default_type()
        .ok_or_else(|| Error::usage(format!("invalid output file type {} ({ftype})", ftype.id())))?;
    let model = model_params(&header.metadata, &opts.kv_overrides)?;
    let order = output_order(&header.tensors);
    let names = order.iter().map(|&i| header.tensors[i].name.as_str());
    let mut st = MixState::new(names, model.n_layer, has_imatrix);
    let mut tensors = Vec::with_capacity(order.len());
    for &i in &order {
        let t = &header.tensors[i];
        let view = TensorView::new(t);
        let (ty, reason, allows) = match rules::allows_quantization(opts, &model.arch, &view) {
            Ok(()) => {
                let c = rules::choose_type(&mut st, &model, opts, ftype, default_type, &view)?;
                (c.ty, c.reason, true)
            }
            Err(why) => (t.ty, format!("kept: {why}"), false),
        };
        let requires_imatrix = rules::requires_imatrix(&t.name, ty, ftype);
        tensors.push(TypeDecision { index: i, ty, reason, allows_quantization: allows, requires_imatrix });
    }
    Ok(TypeDecisions { tensors, model, n_fallback: st.n_fallback })
}

/// Decides everything llama-quantize decides before writing: each tensor's
/// output type (with the reason), the output order and the output metadata,
/// or the error llama-quantize would stop with.
///
/// `imatrix` is the loaded and filtered importance matrix (`None`, or one
/// with no entries, quantizes without one and adds no `quantize.imatrix.*`
/// keys, as llama-quantize does).
pub fn plan(header: &Gguf, opts: &Options, imatrix: Option<&Imatrix>) -> Result<Plan> {
    let imatrix = imatrix.filter(|m| !m.is_empty());
    if let Some(m) = imatrix {
        if let Some((name, v)) = m.first_non_finite() {
            return Err(Error::input(&m.file, format!("imatrix entry '{name}' contains a non-finite value ({v})")));
        }
    }
    let decisions = decide_types(header, opts, imatrix.is_some())?;
    let mut warnings = Vec::new();

    let file_type = if opts.only_copy {
        let h = Hparams { md: &header.metadata, overrides: &opts.kv_overrides };
        let order: Vec<usize> = decisions.tensors.iter().map(|d| d.index).collect();
        h.u32(KEY_FILE_TYPE)?.unwrap_or_else(|| guessed_file_type(header, &order))
    } else {
        opts.ftype.id()
    };
    let mut overrides = opts.kv_overrides.clone();
    if let Some(m) = imatrix {
        overrides.extend(metadata::imatrix_overrides(m));
    }
    let metadata = output_metadata(&header.metadata, file_type, &overrides)?;

    // the preliminary pass's imatrix requirement
    let mut will_require_imatrix = false;
    let mut tensors = Vec::with_capacity(decisions.tensors.len());
    for d in &decisions.tensors {
        let t = &header.tensors[d.index];
        if imatrix.is_none() && d.allows_quantization && d.requires_imatrix {
            if opts.dry_run {
                will_require_imatrix = true;
            } else {
                return Err(Error::Unsupported(format!(
                    "this quantization requires an importance matrix (--imatrix): tensor '{}' gets type {}",
                    t.name, d.ty
                )));
            }
        }
        let output_size = d.ty.tensor_size(&t.dims).ok_or_else(|| {
            Error::Unsupported(format!(
                "tensor '{}': row length {} is not a multiple of the {} block size {}",
                t.name,
                t.row_len(),
                d.ty,
                d.ty.block_size()
            ))
        })?;
        tensors.push(TensorPlan {
            index: d.index,
            name: t.name.clone(),
            dims: written_dims(&t.dims),
            input_type: t.ty,
            output_type: d.ty,
            output_size,
            reason: d.reason.clone(),
            use_imatrix: false,
            requires_imatrix: d.requires_imatrix,
        });
    }

    // the checks llama-quantize makes while converting each tensor
    for tp in tensors.iter_mut().filter(|tp| tp.converts()) {
        let t = &header.tensors[tp.index];
        if let Some(m) = imatrix {
            match m.get(&t.name) {
                None => warnings.push(format!("no importance data for tensor '{}'", t.name)),
                Some(_) => match m.for_tensor(t, is_token_embd(&t.name)) {
                    Ok(v) => tp.use_imatrix = v.is_some(),
                    Err(e) if opts.dry_run => warnings.push(e.to_string()),
                    Err(e) => return Err(e),
                },
            }
        }
        if opts.dry_run {
            continue;
        }
        if !tp.use_imatrix && tp.requires_imatrix {
            return Err(Error::Unsupported(format!(
                "missing importance matrix for tensor '{}' in a very low-bit quantization ({})",
                t.name, tp.output_type
            )));
        }
        if t.ty.is_quantized() && !opts.allow_requantize {
            return Err(Error::Unsupported(format!(
                "tensor '{}' is already quantized ({}): requantizing is disabled (use --allow-requantize)",
                t.name, t.ty
            )));
        }
        if !can_dequantize(t.ty) {
            return Err(Error::Unsupported(format!("tensor '{}': cannot convert tensor type {}", t.name, t.ty)));
        }
    }

    let n_fallback = decisions.n_fallback;
    if n_fallback > 0 {
        warnings.push(format!("{n_fallback} of {} tensor(s) required fallback quantization", header.tensors.len()));
    }
    if will_require_imatrix {
        warnings.push("dry run: actually completing this quantization will require an importance matrix".into());
    }
    Ok(Plan { file_type, tensors, metadata, model: decisions.model, n_fallback, warnings })
}

/// The category name of a tensor in llama-quantize's rules (for reports).
pub fn tensor_category(name: &str) -> &'static str {
    match Category::of(name) {
        Category::TokenEmbd => "token_embd",
        Category::AttnQ => "attn_q",
        Category::AttnV => "attn_v",
        Category::AttnK => "attn_k",
        Category::AttnQkv => "attn_qkv",
        Category::AttnKvB => "attn_kv_b",
        Category::AttnOutput => "attn_output",
        Category::FfnUp => "ffn_up",
        Category::FfnGate => "ffn_gate",
        Category::FfnDown => "ffn_down",
        Category::Output => "output",
        Category::Other => "other",
    }
}

/// The tensor's info in the header (for callers holding a [`TensorPlan`]).
pub fn input_tensor<'a>(header: &'a Gguf, tp: &TensorPlan) -> Option<&'a TensorInfo> {
    header.tensors.get(tp.index)
}

#[cfg(test)]
mod tests;
