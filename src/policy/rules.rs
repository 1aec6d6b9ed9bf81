//! The per-tensor rules of llama-quantize (`src/llama-quant.cpp`): which
//! tensors may be quantized, the category of a tensor, the mix rules that
//! move some tensors of a file type to other types, and the fallback when a
//! row does not hold a whole number of blocks.
//!
//! The rules are kept in llama.cpp's order of evaluation, because that order
//! decides the result: the layer counters advance only in the branches that
//! advance them there, and the first matching condition wins.

use super::ftype::{tables, FileType};
use super::order::scanf_blk_layer;
use super::Options;
use crate::error::{Error, Result};
use crate::gguf::{GgmlType, TensorInfo};

/// What llama-quantize's rules read about a tensor.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TensorView<'a> {
    pub name: &'a str,
    /// ne0: the row length.
    pub ne0: u64,
    /// ne2: the number of experts of a 3-D expert tensor (1 otherwise).
    pub ne2: u64,
    /// ggml_n_dims: dimensions up to the last one larger than 1.
    pub n_dims: usize,
}

impl<'a> TensorView<'a> {
    pub fn new(t: &'a TensorInfo) -> Self {
        let n_dims = t.dims.iter().rposition(|&d| d > 1).map_or(1, |i| i + 1);
        TensorView { name: &t.name, ne0: t.row_len(), ne2: t.dims.get(2).copied().unwrap_or(1), n_dims }
    }
}

/// The model facts the rules use (llama.cpp's hparams after `load_hparams`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelParams {
    /// `general.architecture`.
    pub arch: String,
    /// `{arch}.block_count`, including any next-token-prediction layers.
    pub n_layer: u32,
    /// Heads and KV heads of layer 0 (`{arch}.attention.head_count[_kv]`).
    pub n_head: u32,
    pub n_head_kv: u32,
    /// `{arch}.expert_count` (0 for dense models).
    pub n_expert: u32,
    /// llama.cpp classifies the model as a 70B one (which gives attn_v more bits).
    pub is_70b: bool,
}

impl ModelParams {
    /// Grouped-query attention ratio n_head / n_head_kv (0 without KV heads).
    pub fn n_gqa(&self) -> u32 {
        self.n_head.checked_div(self.n_head_kv).unwrap_or(0)
    }
}

/// llama-quantize's broad tensor categories (`tensor_category`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Category {
    TokenEmbd,
    AttnQ,
    AttnV,
    AttnK,
    AttnQkv,
    AttnKvB,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Output,
    Other,
}

impl Category {
    /// `tensor_get_category`: exact names first, then substrings in this order.
    pub fn of(name: &str) -> Category {
        if name == "output.weight" {
            return Category::Output;
        }
        if is_token_embd(name) {
            return Category::TokenEmbd;
        }
        const SUBSTRINGS: &[(&str, Category)] = &[
            ("attn_qkv.weight", Category::AttnQkv),
            ("attn_kv_b.weight", Category::AttnKvB),
            ("attn_v.weight", Category::AttnV),
            ("attn_k.weight", Category::AttnK),
            ("attn_q.weight", Category::AttnQ),
            ("attn_output.weight", Category::AttnOutput),
            ("ffn_up", Category::FfnUp),
            ("ffn_gate", Category::FfnGate),
            ("ffn_down", Category::FfnDown),
        ];
        SUBSTRINGS.iter().find(|(s, _)| name.contains(s)).map_or(Category::Other, |&(_, c)| c)
    }

    /// attn_v-like tensors (more sensitive to quantization), which share one counter.
    pub fn is_attn_v(self) -> bool {
        matches!(self, Category::AttnV | Category::AttnQkv | Category::AttnKvB)
    }
}

/// The token-embedding tensors (`tensor_name_match_token_embd`).
pub(crate) fn is_token_embd(name: &str) -> bool {
    name == "token_embd.weight" || name == "per_layer_token_embd.weight"
}

/// `tensor_allows_quantization`: `Ok(())` when the tensor may change type,
/// else the reason it keeps its type.
pub(crate) fn allows_quantization(opts: &Options, arch: &str, t: &TensorView) -> Result<(), String> {
    if opts.only_copy {
        return Err("COPY".into());
    }
    if t.n_dims < 2 {
        return Err("not a matrix (fewer than 2 dimensions)".into());
    }
    let name = t.name;
    // llama.cpp tests `name.rfind("weight") == name.size() - 6`, which also
    // holds for every 5-byte name (both sides are then npos).
    if !(name.ends_with("weight") || name.len() == 5) {
        return Err("name does not end in 'weight'".into());
    }
    if name.contains("_norm.weight") {
        return Err("normalization weights are never quantized".into());
    }
    if !opts.quantize_output_tensor && name == "output.weight" {
        return Err("--leave-output-tensor".into());
    }
    let never = &tables().never_quantize;
    if let Some(s) = never.contains.iter().find(|s| name.contains(s.as_str())) {
        return Err(format!("never quantized (name contains '{s}')"));
    }
    if never.equals.iter().any(|s| s == name) {
        return Err("never quantized (positional or token-type embeddings)".into());
    }
    if let Some(list) = never.by_arch.get(arch) {
        if let Some(s) = list.iter().find(|s| name.contains(s.as_str())) {
            return Err(format!("never quantized for {arch} (name contains '{s}')"));
        }
    }
    Ok(())
}

/// `tensor_requires_imatrix`: llama-quantize refuses to produce this type for
/// this tensor without importance data.
pub(crate) fn requires_imatrix(name: &str, ty: GgmlType, ftype: FileType) -> bool {
    if is_token_embd(name) || name == "output.weight" {
        return false;
    }
    match ty {
        GgmlType::IQ3_XXS
        | GgmlType::IQ2_XXS
        | GgmlType::IQ2_XS
        | GgmlType::IQ2_S
        | GgmlType::IQ1_M
        | GgmlType::IQ1_S => true,
        GgmlType::Q2_K => ftype == FileType::Q2_K_S,
        _ => false,
    }
}

fn use_more_bits(i_layer: i64, n_layers: i64) -> bool {
    i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2
}

/// The running state of one quantization (`quantize_state_impl`).
#[derive(Debug, Clone, Default)]
pub(crate) struct MixState {
    pub n_attention_wv: i64,
    pub i_attention_wv: i64,
    pub n_ffn_down: i64,
    pub i_ffn_down: i64,
    pub n_ffn_gate: i64,
    pub i_ffn_gate: i64,
    pub n_ffn_up: i64,
    pub i_ffn_up: i64,
    pub n_fallback: usize,
    pub has_imatrix: bool,
    pub has_tied_embeddings: bool,
}

impl MixState {
    /// `init_quantize_state_counters` over all tensor names (in output order).
    pub fn new<'a>(names: impl Iterator<Item = &'a str>, n_layer: u32, has_imatrix: bool) -> MixState {
        let mut st = MixState { has_imatrix, has_tied_embeddings: true, ..Default::default() };
        for name in names {
            let cat = Category::of(name);
            if cat.is_attn_v() {
                st.n_attention_wv += 1;
            }
            if cat == Category::Output {
                st.has_tied_embeddings = false;
            }
        }
        st.n_ffn_down = n_layer as i64;
        st.n_ffn_gate = n_layer as i64;
        st.n_ffn_up = n_layer as i64;
        st
    }
}

/// A chosen type and why.
pub(crate) struct Choice {
    pub ty: GgmlType,
    pub reason: String,
}

/// `llama_tensor_get_type` for a tensor that allows quantization.
pub(crate) fn choose_type(
    st: &mut MixState,
    model: &ModelParams,
    opts: &Options,
    ftype: FileType,
    default_type: GgmlType,
    t: &TensorView,
) -> Result<Choice> {
    let cat = Category::of(t.name);
    if let (Some(ty), Category::TokenEmbd) = (opts.token_embedding_type, cat) {
        // per_layer_token_embd follows --token-embedding-type unless a --tensor-type rule names it
        let named = t.name == "per_layer_token_embd.weight" && opts.tensor_types.iter().any(|r| r.is_match(t.name));
        if !named {
            return Ok(Choice { ty, reason: "--token-embedding-type".into() });
        }
    }
    if let (Some(ty), Category::Output) = (opts.output_tensor_type, cat) {
        return Ok(Choice { ty, reason: "--output-tensor-type".into() });
    }

    let mut choice = Choice { ty: default_type, reason: format!("{ftype} default") };
    if !default_type.is_quantized() {
        return Ok(choice);
    }
    let manual = opts.tensor_types.iter().find(|r| r.is_match(t.name));
    if let Some(rule) = manual {
        choice = Choice { ty: rule.ty, reason: format!("--tensor-type {}={}", rule.pattern, rule.ty) };
    } else if opts.pure {
        choice.reason = format!("{ftype} default (--pure)");
    } else {
        mix(st, model, opts, ftype, t, cat, &mut choice)?;
    }
    fallback(st, opts, t, choice)
}

/// `tensor_type_fallback`: a type whose block does not divide the row length
/// is replaced by one whose block does, or by F16.
fn fallback(st: &mut MixState, opts: &Options, t: &TensorView, choice: Choice) -> Result<Choice> {
    let target = choice.ty;
    let block = target.block_size();
    if t.ne0.is_multiple_of(block) {
        return Ok(choice);
    }
    st.n_fallback += 1;
    use GgmlType as G;
    let mut to = match target {
        G::IQ1_S | G::IQ1_M | G::IQ2_XXS | G::IQ2_XS | G::IQ2_S | G::IQ3_XXS | G::IQ3_S | G::IQ4_XS => G::IQ4_NL,
        G::Q2_0 | G::Q2_K | G::Q3_K | G::TQ1_0 | G::TQ2_0 => G::Q4_0,
        G::Q4_K => G::Q5_0,
        G::Q5_K => G::Q5_1,
        G::Q6_K => G::Q8_0,
        _ if block <= 32 => target,
        _ => {
            return Err(Error::Unsupported(format!(
                "tensor '{}': row length {} is not a multiple of {block} (required for {target}) and no fallback \
                 type is defined for {target}",
                t.name, t.ne0
            )))
        }
    };
    if !t.ne0.is_multiple_of(to.block_size()) {
        to = G::F16;
    }
    if opts.no_fallback {
        return Err(Error::Unsupported(format!(
            "tensor '{}': row length {} is not a multiple of {block} (required for {target}); llama-quantize would \
             fall back to {to} (refused by --no-fallback)",
            t.name, t.ne0
        )));
    }
    Ok(Choice {
        ty: to,
        reason: format!(
            "{}; row length {} not a multiple of {block}: {target} falls back to {to}",
            choice.reason, t.ne0
        ),
    })
}

/// `layer_info`: the layer of a tensor counted by a per-category counter. For
/// MoE models the layer is read from the name, since expert tensors are not
/// always in layer order.
fn layer_info(model: &ModelParams, counter: i64, n_layer: i64, name: &str) -> Result<(i64, i64)> {
    if model.n_expert <= 1 {
        return Ok((counter, n_layer));
    }
    let il = scanf_blk_layer(name)
        .ok_or_else(|| Error::Unsupported(format!("tensor '{name}': failed to determine its layer")))?;
    let il = i64::from(il);
    if il < 0 || il >= n_layer {
        return Err(Error::Unsupported(format!("tensor '{name}': bad layer {il}, must be in [0, {n_layer})")));
    }
    Ok((il, n_layer))
}

/// `llama_tensor_get_type_impl`: the mix rules of the file type.
fn mix(
    st: &mut MixState,
    model: &ModelParams,
    opts: &Options,
    ftype: FileType,
    t: &TensorView,
    cat: Category,
    choice: &mut Choice,
) -> Result<()> {
    use FileType as F;
    use GgmlType as G;
    let arch = model.arch.as_str();
    let falcon = arch == "falcon";
    let n_expert = model.n_expert;
    let gqa = model.n_gqa();
    let name = t.name;
    // the type so far (the default type on entry) and why it changed
    let mut ty = choice.ty;
    let mut why: Option<String> = None;
    macro_rules! set {
        ($t:expr, $w:expr) => {{
            ty = $t;
            why = Some($w);
        }};
    }
    let is = |fts: &[FileType]| fts.contains(&ftype);
    let iq2_family = [F::IQ2_XXS, F::IQ2_XS, F::IQ1_S, F::IQ2_S, F::IQ2_M, F::IQ1_M];

    if arch == "glm5-next"
        && (name.contains("attn_q_a") || name.contains("attn_q_b") || name.contains("nextn.eh_proj"))
        && !matches!(ty, G::F32 | G::BF16 | G::F16)
    {
        choice.ty = G::Q8_0;
        choice.reason = format!("{ftype}: glm5-next keeps attn_q_a/attn_q_b/nextn.eh_proj at Q8_0");
        return Ok(());
    }

    if cat == Category::Output || (st.has_tied_embeddings && cat == Category::TokenEmbd) {
        let what = if cat == Category::Output { "output" } else { "tied token embeddings" };
        if let Some(ty) = opts.output_tensor_type {
            set!(ty, format!("{what}: --output-tensor-type"));
        } else if ftype == F::MXFP4_MOE {
            set!(G::Q8_0, what.into());
        } else if falcon || !t.ne0.is_multiple_of(ty.block_size()) {
            set!(G::Q8_0, format!("{what}: row length {} not a multiple of {}", t.ne0, ty.block_size()));
        } else if is(&[F::IQ2_XXS, F::IQ2_XS, F::IQ3_XXS, F::IQ1_S, F::IQ2_S, F::IQ2_M, F::IQ1_M]) {
            set!(G::Q5_K, what.into());
        } else if ty != G::Q8_0 {
            set!(G::Q6_K, what.into());
        }
    } else if ftype == F::MXFP4_MOE {
        let bailing_expert =
            arch == "bailingmoe3" && matches!(cat, Category::FfnUp | Category::FfnGate | Category::FfnDown);
        if t.ne2 > 1 && (arch != "bailingmoe3" || bailing_expert) {
            set!(G::MXFP4, "expert tensor".into());
        } else {
            set!(G::Q8_0, "not an expert tensor".into());
        }
    } else if cat == Category::TokenEmbd {
        if let Some(ty) = opts.token_embedding_type {
            set!(ty, "token embeddings: --token-embedding-type".into());
        } else if is(&[F::IQ2_XXS, F::IQ2_XS, F::IQ1_S, F::IQ1_M]) {
            set!(G::Q2_K, "token embeddings".into());
        } else if is(&[F::IQ2_S, F::IQ2_M, F::IQ3_XXS]) {
            set!(G::IQ3_S, "token embeddings".into());
        } else if is(&[F::TQ1_0, F::TQ2_0, F::Q2_0]) {
            set!(G::Q4_K, "token embeddings".into());
        }
    } else if is(&iq2_family) {
        if cat.is_attn_v() {
            if gqa >= 4 || n_expert >= 4 {
                set!(G::Q4_K, format!("attn_v with n_gqa {gqa} / n_expert {n_expert}"));
            } else if is(&[F::IQ2_S, F::IQ2_M]) {
                set!(G::IQ3_S, "attn_v".into());
            } else {
                set!(G::Q2_K, "attn_v".into());
            }
            st.i_attention_wv += 1;
        } else if n_expert == 8 && cat == Category::AttnK {
            set!(G::Q4_K, "attn_k of an 8-expert model".into());
        } else if cat == Category::FfnDown {
            if st.i_ffn_down < st.n_ffn_down / 8 {
                let ty = if is(&[F::IQ2_S, F::IQ2_M]) { G::IQ3_S } else { G::Q2_K };
                set!(ty, format!("ffn_down #{} of the first {}", st.i_ffn_down, st.n_ffn_down / 8));
            }
            st.i_ffn_down += 1;
        } else if cat == Category::AttnOutput {
            if n_expert == 8 {
                set!(G::Q5_K, "attn_output of an 8-expert model".into());
            } else if is(&[F::IQ1_S, F::IQ1_M]) {
                set!(G::IQ2_XXS, "attn_output".into());
            } else if is(&[F::IQ2_S, F::IQ2_M]) {
                set!(G::IQ3_S, "attn_output".into());
            }
        }
    } else if cat.is_attn_v() {
        let i = st.i_attention_wv;
        if ftype == F::Q2_K {
            set!(if gqa >= 4 { G::Q4_K } else { G::Q3_K }, format!("attn_v with n_gqa {gqa}"));
        } else if ftype == F::Q2_K_S && gqa >= 4 {
            set!(G::Q4_K, format!("attn_v with n_gqa {gqa}"));
        } else if ftype == F::IQ3_XXS {
            let ty = if gqa >= 4 {
                G::Q4_K
            } else if !st.has_imatrix {
                G::IQ3_S
            } else {
                G::IQ3_XXS
            };
            set!(ty, format!("attn_v with n_gqa {gqa}, imatrix {}", st.has_imatrix));
        } else if is(&[F::IQ3_XS, F::IQ3_S]) && gqa >= 4 {
            set!(G::Q4_K, format!("attn_v with n_gqa {gqa}"));
        } else if ftype == F::IQ3_M {
            set!(G::Q4_K, "attn_v".into());
        } else if ftype == F::Q3_K_M {
            set!(if i < 2 { G::Q5_K } else { G::Q4_K }, format!("attn_v #{i} (first 2 get Q5_K)"));
        } else if ftype == F::Q3_K_L {
            set!(G::Q5_K, "attn_v".into());
        } else if is(&[F::IQ4_NL, F::IQ4_XS]) && gqa >= 4 {
            set!(G::Q5_K, format!("attn_v with n_gqa {gqa}"));
        } else if is(&[F::Q4_K_M, F::Q5_K_M]) && use_more_bits(i, st.n_attention_wv) {
            set!(G::Q6_K, format!("attn_v #{i} of {}: use_more_bits", st.n_attention_wv));
        } else if ftype == F::Q4_K_S && i < 4 {
            set!(G::Q5_K, format!("attn_v #{i} (first 4 get Q5_K)"));
        }
        if model.is_70b && matches!(ty, G::Q3_K | G::Q4_K) {
            set!(G::Q5_K, "attn_v of a 70B model".into());
        }
        if n_expert == 8 {
            set!(G::Q8_0, "attn_v of an 8-expert model".into());
        }
        st.i_attention_wv += 1;
    } else if cat == Category::AttnK {
        if n_expert == 8 {
            set!(G::Q8_0, "attn_k of an 8-expert model".into());
        } else if ftype == F::IQ3_XS {
            set!(G::IQ3_XXS, "attn_k".into());
        } else if ftype == F::IQ3_XXS {
            set!(G::IQ2_S, "attn_k".into());
        }
    } else if cat == Category::AttnQ {
        if ftype == F::IQ3_XS {
            set!(G::IQ3_XXS, "attn_q".into());
        } else if ftype == F::IQ3_XXS {
            set!(G::IQ2_S, "attn_q".into());
        }
    } else if cat == Category::FfnDown {
        let (il, nl) = layer_info(model, st.i_ffn_down, st.n_ffn_down, name)?;
        let umb = use_more_bits(il, nl);
        let at = format!("ffn_down layer {il} of {nl}");
        if ftype == F::Q2_K {
            set!(G::Q3_K, at);
        } else if ftype == F::Q2_K_S {
            if il < nl / 8 {
                set!(G::Q4_K, format!("{at}: first eighth"));
            }
        } else if ftype == F::IQ3_XXS && !st.has_imatrix {
            set!(if il < nl / 8 { G::Q4_K } else { G::Q3_K }, format!("{at} without imatrix"));
        } else if ftype == F::Q3_K_M {
            let ty = if il < nl / 16 {
                G::Q5_K
            } else if !falcon || umb {
                G::Q4_K
            } else {
                G::Q3_K
            };
            set!(ty, at);
        } else if ftype == F::IQ3_M && (il < nl / 8 || (n_expert == 8 && umb)) {
            set!(G::Q4_K, at);
        } else if ftype == F::Q3_K_L {
            set!(if falcon { G::Q4_K } else { G::Q5_K }, at);
        } else if ftype == F::Q4_K_M {
            if falcon {
                let ty = if il < nl / 16 {
                    G::Q6_K
                } else if umb {
                    G::Q5_K
                } else {
                    G::Q4_K
                };
                set!(ty, at);
            } else if umb {
                set!(G::Q6_K, format!("{at}: use_more_bits"));
            }
        } else if il < nl / 8 && is(&[F::IQ4_NL, F::IQ4_XS]) && !st.has_imatrix {
            set!(G::Q5_K, format!("{at}: first eighth without imatrix"));
        } else if ftype == F::Q5_K_M && umb {
            set!(G::Q6_K, format!("{at}: use_more_bits"));
        } else if ftype == F::Q4_K_S && !falcon && il < nl / 8 {
            set!(G::Q5_K, format!("{at}: first eighth"));
        } else if is(&[F::Q4_0, F::Q5_0]) && st.has_imatrix && il < nl / 8 {
            set!(if ftype == F::Q4_0 { G::Q4_1 } else { G::Q5_1 }, format!("{at}: first eighth with imatrix"));
        }
        st.i_ffn_down += 1;
    } else if cat == Category::AttnOutput {
        if !falcon {
            if n_expert == 8 {
                let bumped = [
                    F::Q2_K,
                    F::IQ3_XS,
                    F::IQ3_XXS,
                    F::Q3_K_S,
                    F::Q3_K_M,
                    F::IQ4_NL,
                    F::Q4_K_S,
                    F::Q4_K_M,
                    F::IQ3_S,
                    F::IQ3_M,
                    F::IQ4_XS,
                ];
                if is(&bumped) {
                    set!(G::Q5_K, "attn_output of an 8-expert model".into());
                }
            } else {
                let ty = match ftype {
                    F::Q2_K => Some(G::Q3_K),
                    F::IQ3_XXS => Some(G::IQ3_S),
                    F::Q3_K_M => Some(G::Q4_K),
                    F::Q3_K_L => Some(G::Q5_K),
                    F::IQ3_M => Some(G::Q4_K),
                    _ => None,
                };
                if let Some(ty) = ty {
                    set!(ty, "attn_output".into());
                }
            }
        } else if ftype == F::Q3_K_L {
            set!(G::Q4_K, "attn_output (falcon)".into());
        }
    } else if cat == Category::AttnQkv {
        // unreachable in llama.cpp too: attn_qkv is attn_v-like and handled above
        if is(&[F::Q3_K_M, F::Q3_K_L, F::IQ3_M]) {
            set!(G::Q4_K, "attn_qkv".into());
        } else if ftype == F::Q4_K_M {
            set!(G::Q5_K, "attn_qkv".into());
        } else if ftype == F::Q5_K_M {
            set!(G::Q6_K, "attn_qkv".into());
        }
    } else if matches!(cat, Category::FfnGate | Category::FfnUp) {
        let counter = if cat == Category::FfnGate { st.i_ffn_gate } else { st.i_ffn_up };
        let n = if cat == Category::FfnGate { st.n_ffn_gate } else { st.n_ffn_up };
        let (il, nl) = layer_info(model, counter, n, name)?;
        if ftype == F::IQ3_XS && il >= nl / 8 && il < 7 * nl / 8 {
            set!(G::IQ3_XXS, format!("ffn_gate/up layer {il} of {nl}: middle layers"));
        }
        if cat == Category::FfnGate {
            st.i_ffn_gate += 1;
        } else {
            st.i_ffn_up += 1;
        }
    }
    if let Some(w) = why {
        choice.ty = ty;
        choice.reason = format!("{ftype}: {w}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories() {
        assert_eq!(Category::of("output.weight"), Category::Output);
        assert_eq!(Category::of("token_embd.weight"), Category::TokenEmbd);
        assert_eq!(Category::of("blk.0.attn_v.weight"), Category::AttnV);
        assert_eq!(Category::of("blk.0.attn_k.weight"), Category::AttnK);
        assert_eq!(Category::of("blk.0.attn_k_b.weight"), Category::Other);
        assert_eq!(Category::of("blk.0.ffn_gate_inp.weight"), Category::FfnGate);
        assert_eq!(Category::of("blk.0.ffn_down_exps.weight"), Category::FfnDown);
        assert_eq!(Category::of("blk.0.attn_qkv.weight"), Category::AttnQkv);
        assert!(Category::AttnQkv.is_attn_v());
    }

    #[test]
    fn more_bits() {
        // 32 layers: first 4, last 4, and every third in between starting at 6
        let picked: Vec<i64> = (0..32).filter(|&i| use_more_bits(i, 32)).collect();
        assert_eq!(picked, vec![0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]);
    }

    #[test]
    fn five_byte_names_count_as_weights() {
        let opts = Options::new(FileType::Q4_0);
        let t = TensorView { name: "abcde", ne0: 64, ne2: 1, n_dims: 2 };
        assert!(allows_quantization(&opts, "llama", &t).is_ok());
        let t = TensorView { name: "abcd", ..t };
        assert!(allows_quantization(&opts, "llama", &t).is_err());
        let t = TensorView { name: "blk.0.attn_norm.weight", ..t };
        assert!(allows_quantization(&opts, "llama", &t).is_err());
        let t = TensorView { name: "position_embd.weight", ..t };
        assert!(allows_quantization(&opts, "llama", &t).is_err());
    }
}
