//! Architecture tables (`formats/arch/*.json`): which Hugging Face
//! architectures map to which GGUF architecture, the tensor-name map with
//! expected shapes and transforms, and the config defaults that
//! `transformers.AutoConfig` would fill in.
//!
//! Adding an architecture whose conversion is a renaming (plus the existing
//! transforms) is a new JSON file listed in [`ARCH_FILES`].

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The architecture tables compiled into the binary.
pub const ARCH_FILES: &[(&str, &str)] = &[
    ("llama.json", include_str!("../../formats/arch/llama.json")),
    ("qwen2.json", include_str!("../../formats/arch/qwen2.json")),
    ("qwen3.json", include_str!("../../formats/arch/qwen3.json")),
    ("qwen3moe.json", include_str!("../../formats/arch/qwen3moe.json")),
    ("gemma2.json", include_str!("../../formats/arch/gemma2.json")),
    ("gemma3.json", include_str!("../../formats/arch/gemma3.json")),
    ("phi3.json", include_str!("../../formats/arch/phi3.json")),
];

/// How the vocabulary is read (the `set_vocab` of the Python model class).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VocabKind {
    /// LlamaModel: `tokenizer.model` (SentencePiece) if present, else
    /// `tokenizer.json` (GPT-2 style BPE); `add_prefix_space` from
    /// tokenizer_config.json becomes `tokenizer.ggml.add_space_prefix`.
    Llama,
    /// Qwen2Model: `tokenizer.model` if present, else `tokenizer.json`.
    Qwen2,
    /// TextModel's default `_set_vocab_gpt2`: `tokenizer.json` only.
    Gpt2,
    /// Gemma2Model: `tokenizer.model` (required), then
    /// `tokenizer.ggml.add_space_prefix = false` after the special tokens.
    Gemma,
    /// Gemma3Model: as `gemma` when `tokenizer.model` exists, else `tokenizer.json`.
    Gemma3,
    /// Phi3MiniModel: `tokenizer.json` when tokenizer_config.json's class is
    /// `GPT2Tokenizer` (Phi-4), else `tokenizer.model` (required).
    Phi3,
}

/// A transform applied to a tensor's rows on the way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transform {
    /// llama.cpp's Q row permutation (heads = n_head).
    PermuteQ,
    /// The same for K (heads = n_head_kv).
    PermuteK,
    /// Gemma's RMSNorm multiplies by `1 + w`: the converter stores `w + 1`
    /// (added in the checkpoint's precision for F16 and F32, in F32 for BF16).
    AddOne,
    /// Gemma 3: embedding rows beyond the vocabulary's token count are dropped.
    TruncateToVocab,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorRule {
    /// Hugging Face name, with `{bid}` for the block number.
    pub hf: String,
    /// GGUF name, with `{bid}`.
    pub gguf: String,
    /// Expected shape in HF order (outer dimension first), as names of
    /// hyperparameters (see [`Hparams::dim`]).
    pub shape: Vec<String>,
    #[serde(default)]
    pub transform: Option<Transform>,
    #[serde(default = "yes")]
    pub required: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HfArchEntry {
    /// Config values `transformers` fills in when config.json omits them:
    /// a number, or `"=name"` / `"=a/b"` referring to other config values.
    #[serde(default)]
    pub defaults: Map<String, Value>,
}

/// One `formats/arch/*.json` file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchSpec {
    #[serde(rename = "_comment", default)]
    pub comment: String,
    pub gguf_arch: String,
    pub hf_architectures: BTreeMap<String, HfArchEntry>,
    pub vocab: VocabKind,
    pub permute_qk: bool,
    /// Llama 3 rope scaling (`rope_type: llama3`) becomes a `rope_freqs` tensor.
    pub llama3_rope_freqs: bool,
    /// Phi-3 long-context rope scaling (`rope_scaling.long_factor` /
    /// `short_factor`) becomes `rope_factors_long` / `rope_factors_short`
    /// tensors and `rope.scaling.attn_factor` (see `convert/rope_factors.rs`).
    #[serde(default)]
    pub rope_factor_tensors: bool,
    /// Keys written after `general.file_type`: `vocab_size`, `rope_dimension_count`.
    #[serde(default)]
    pub extra_keys: Vec<String>,
    /// Tensors ending with one of these are dropped.
    #[serde(default)]
    pub skip_suffixes: Vec<String>,
    /// Tensors of exactly these names are dropped (Gemma 2's `lm_head.weight`).
    #[serde(default)]
    pub skip_names: Vec<String>,
    /// How the `<arch>.*` keys are written (default: TextModel's keys only).
    #[serde(default)]
    pub params: ParamsSpec,
    pub tensors: Vec<TensorRule>,
    /// Integer config values usable as shape dimension names beyond the
    /// built-in ones (`moe_intermediate_size`, `num_experts`, ...).
    #[serde(default)]
    pub config_dims: Vec<String>,
    /// Mixture-of-experts layers whose per-expert tensors are stacked.
    #[serde(default)]
    pub experts: Option<ExpertSpec>,
    /// Facts for the forward pass (rope layout), read by `infer::arch`.
    #[serde(default)]
    pub infer: Option<Value>,
}

/// Per-expert checkpoint tensors stacked into one 3-D GGUF tensor per block
/// (`ffn_{gate,up,down}_exps`), as convert_hf_to_gguf.py's MoE models do:
/// the stacks of a block are written, in `stack` order, where the last of the
/// block's expert tensors comes in the checkpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpertSpec {
    /// The config keys giving the number of experts (first present wins).
    pub count: Vec<String>,
    /// The config key giving the number of experts used per token, if any.
    #[serde(default)]
    pub used_count: Vec<String>,
    /// A config key listing blocks that have a dense MLP instead of experts.
    #[serde(default)]
    pub dense_layers: Option<String>,
    /// The router tensor (GGUF name with `{bid}`), required in every expert block.
    pub router: String,
    /// The dense MLP tensors (GGUF names with `{bid}`), required in every dense block.
    #[serde(default)]
    pub dense: Vec<String>,
    /// One rule per stacked tensor: `hf` has `{bid}` and `{xid}` (the expert
    /// number), `gguf` has `{bid}`, `shape` is one expert's.
    pub stack: Vec<TensorRule>,
}

/// A per-expert tensor name matched against [`ExpertSpec::stack`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpertMatch {
    /// Index into `stack`.
    pub rule: usize,
    pub bid: u64,
    pub xid: u64,
}

fn parse_index(s: &str) -> Option<u64> {
    if !s.is_empty() && s.len() <= 9 && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

impl ExpertSpec {
    /// Matches a checkpoint tensor name against the per-expert rules.
    pub fn match_tensor(&self, name: &str) -> Option<ExpertMatch> {
        for (i, rule) in self.stack.iter().enumerate() {
            let Some((pre, rest)) = rule.hf.split_once("{bid}") else { continue };
            let Some((mid, post)) = rest.split_once("{xid}") else { continue };
            let Some(r) = name.strip_prefix(pre).and_then(|r| r.strip_suffix(post)) else { continue };
            let Some((b, x)) = r.split_once(mid) else { continue };
            if let (Some(bid), Some(xid)) = (parse_index(b), parse_index(x)) {
                return Some(ExpertMatch { rule: i, bid, xid });
            }
        }
        None
    }
}

/// The `<arch>.*` keys of a model class's `set_gguf_parameters`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamsSpec {
    /// Whether TextModel's keys are written first (the class calls `super()`).
    #[serde(default = "yes")]
    pub text_model: bool,
    /// Keys written afterwards, in order; a key written before is replaced
    /// where it stands (gguf-py's writer is a dict).
    #[serde(default)]
    pub keys: Vec<ParamKey>,
}

impl Default for ParamsSpec {
    fn default() -> Self {
        ParamsSpec { text_model: true, keys: Vec::new() }
    }
}

/// The value type of a [`ParamKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamType {
    U32,
    F32,
}

/// One key of [`ParamsSpec::keys`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamKey {
    /// The key after `<arch>.`.
    pub key: String,
    /// Config keys, the first present wins; or one of `=block_count`,
    /// `=file_type`, `=rope.KEY` (a key of the full-attention rope
    /// parameters), `=rope_dims` (`int(partial_rotary_factor * hidden) // heads`).
    pub from: Vec<String>,
    #[serde(rename = "type")]
    pub ty: ParamType,
    /// The value when no source key is present (`hparams.get(k, default)`).
    #[serde(default)]
    pub default: Option<Value>,
    /// Skip the key when no source is present (otherwise that is an error).
    #[serde(default)]
    pub optional: bool,
    /// Skip the key when the value is 0 (`if hparams.get(k):`).
    #[serde(default)]
    pub skip_zero: bool,
    /// Skip the key when the config key has this value.
    #[serde(default)]
    pub unless: Option<(String, Value)>,
}

/// The name convert_hf_to_gguf.py's TextModel gives a checkpoint tensor
/// (`filter_tensors`), or `None` when it drops it: the tensors of vision and
/// audio towers and projectors of multimodal checkpoints are skipped, and
/// `language_model.` is removed (Gemma3ForConditionalGeneration's text model).
pub fn text_model_name(name: &str) -> Option<String> {
    const PREFIXES: &[&str] = &[
        "mlp",
        "vit.",
        "vpm.",
        "siglip2.",
        "conformer.",
        "merger.",
        "resampler.",
        "sound_encoder.",
        "sound_projection.",
        "speech_embeddings.",
    ];
    const PARTS: &[&str] = &[
        "visual.",
        "vision.",
        "audio.",
        "talker.",
        "vision_",
        "audio_",
        "token2wav.",
        "code2wav.",
        "projector.",
        "pre_mm_projector_norm",
        "image_newline",
        "view_seperator",
        "patch_embed",
        "patch_embedding",
        "patch_merger.",
        "patch_merge_mlp.",
        "model.connector.",
    ];
    if PREFIXES.iter().any(|p| name.starts_with(p)) || PARTS.iter().any(|p| name.contains(p)) {
        return None;
    }
    let mut name = name.to_string();
    if name.ends_with("e_score_correction_bias") {
        name = name.replace("e_score_correction_bias", "e_score_correction.bias");
    }
    if name.contains("language_model.") {
        name = name.replace("language_model.", "");
    }
    Some(name)
}

/// All architecture tables, parsed.
pub fn all_specs() -> Result<Vec<ArchSpec>> {
    ARCH_FILES
        .iter()
        .map(|(name, text)| {
            serde_json::from_str::<ArchSpec>(text)
                .map_err(|e| Error::Other(format!("formats/arch/{name}: invalid architecture table: {e}")))
        })
        .collect()
}

/// The Hugging Face architecture names ggufkit converts, sorted.
pub fn supported_architectures() -> Vec<String> {
    let mut v: Vec<String> =
        all_specs().unwrap_or_default().into_iter().flat_map(|s| s.hf_architectures.into_keys()).collect();
    v.sort();
    v
}

/// The table for a Hugging Face architecture name (`config.json`'s `architectures[0]`).
pub fn spec_for(hf_arch: &str) -> Result<Option<ArchSpec>> {
    Ok(all_specs()?.into_iter().find(|s| s.hf_architectures.contains_key(hf_arch)))
}

/// A rule matched against a tensor name.
#[derive(Debug, Clone)]
pub struct Matched<'a> {
    pub rule: &'a TensorRule,
    pub bid: Option<u64>,
}

impl ArchSpec {
    /// Finds the rule for a Hugging Face tensor name.
    pub fn match_tensor(&self, name: &str) -> Option<Matched<'_>> {
        for rule in &self.tensors {
            match rule.hf.split_once("{bid}") {
                None if rule.hf == name => return Some(Matched { rule, bid: None }),
                None => {}
                Some((pre, post)) => {
                    if let Some(bid) = name.strip_prefix(pre).and_then(|r| r.strip_suffix(post)).and_then(parse_index) {
                        return Some(Matched { rule, bid: Some(bid) });
                    }
                }
            }
        }
        None
    }

    /// True when a tensor of this name is dropped.
    pub fn skipped(&self, name: &str) -> bool {
        self.skip_suffixes.iter().any(|s| name.ends_with(s.as_str())) || self.skip_names.iter().any(|s| s == name)
    }
}

impl Matched<'_> {
    /// The GGUF name.
    pub fn gguf_name(&self) -> String {
        match self.bid {
            Some(b) => self.rule.gguf.replace("{bid}", &b.to_string()),
            None => self.rule.gguf.clone(),
        }
    }
}

/// The hyperparameters conversion needs, read from the config with the
/// architecture's defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Hparams {
    pub block_count: u64,
    pub hidden_size: u64,
    pub intermediate_size: u64,
    pub vocab_size: u64,
    pub n_head: u64,
    pub n_head_kv: u64,
    /// head_dim from the config (explicit or filled in as transformers does), if any.
    pub head_dim_cfg: Option<u64>,
    /// head_dim used for shapes: the explicit one, else hidden_size / n_head.
    pub head_dim: u64,
    /// The architecture's `config_dims`, read from the config.
    pub extra: BTreeMap<String, u64>,
}

impl Hparams {
    /// The value of a shape dimension name.
    pub fn dim(&self, name: &str) -> Option<u64> {
        Some(match name {
            "vocab_size" => self.vocab_size,
            "hidden_size" => self.hidden_size,
            "intermediate_size" => self.intermediate_size,
            "head_dim" => self.head_dim,
            "q_dim" => self.n_head.checked_mul(self.head_dim)?,
            "kv_dim" => self.n_head_kv.checked_mul(self.head_dim)?,
            "qkv_dim" => (self.n_head.checked_add(self.n_head_kv.checked_mul(2)?)?).checked_mul(self.head_dim)?,
            "gate_up_dim" => self.intermediate_size.checked_mul(2)?,
            other => *self.extra.get(other)?,
        })
    }
}

/// Applies the defaults of `transformers`' config class, in table order:
/// a missing (or null) key gets the default; `"=a"` copies key `a`,
/// `"=a/b"` is the integer quotient of keys `a` and `b`.
pub fn apply_defaults(config: &mut Map<String, Value>, defaults: &Map<String, Value>) {
    for (key, default) in defaults {
        if config.get(key).is_some_and(|v| !v.is_null()) {
            continue;
        }
        let value = match default {
            Value::String(expr) if expr.starts_with('=') => {
                let expr = &expr[1..];
                match expr.split_once('/') {
                    Some((a, b)) => {
                        match (config.get(a).and_then(Value::as_u64), config.get(b).and_then(Value::as_u64)) {
                            (Some(a), Some(b)) if b != 0 => Value::from(a / b),
                            _ => continue,
                        }
                    }
                    None => match config.get(expr) {
                        Some(v) => v.clone(),
                        None => continue,
                    },
                }
            }
            v => v.clone(),
        };
        config.insert(key.clone(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_parse_and_match() {
        let specs = all_specs().unwrap();
        assert_eq!(specs.len(), ARCH_FILES.len());
        let llama = spec_for("MistralForCausalLM").unwrap().unwrap();
        assert_eq!(llama.gguf_arch, "llama");
        let m = llama.match_tensor("model.layers.12.self_attn.k_proj.weight").unwrap();
        assert_eq!(m.gguf_name(), "blk.12.attn_k.weight");
        assert_eq!(m.rule.transform, Some(Transform::PermuteK));
        assert!(llama.match_tensor("model.layers.x.self_attn.k_proj.weight").is_none());
        assert!(llama.match_tensor("model.layers..self_attn.k_proj.weight").is_none());
        assert_eq!(llama.match_tensor("lm_head.weight").unwrap().gguf_name(), "output.weight");
        assert!(llama.skipped("model.layers.0.self_attn.rotary_emb.inv_freq"));
        assert!(spec_for("GPT2LMHeadModel").unwrap().is_none());
        assert_eq!(
            text_model_name("language_model.model.layers.0.mlp.up_proj.weight").unwrap(),
            "model.layers.0.mlp.up_proj.weight"
        );
        assert_eq!(text_model_name("model.language_model.norm.weight").unwrap(), "model.norm.weight");
        assert!(text_model_name("vision_tower.vision_model.embeddings.patch_embedding.weight").is_none());
        assert!(text_model_name("multi_modal_projector.mm_input_projection_weight").is_none());
        let names = supported_architectures();
        assert!(names.contains(&"Qwen2ForCausalLM".to_string()) && names.contains(&"Qwen3ForCausalLM".to_string()));
    }

    #[test]
    fn defaults() {
        let mut c: Map<String, Value> =
            serde_json::from_str(r#"{"hidden_size": 64, "num_attention_heads": 4, "rope_theta": null}"#).unwrap();
        let d: Map<String, Value> = serde_json::from_str(
            r#"{"rope_theta": 10000.0, "num_key_value_heads": "=num_attention_heads", "head_dim": "=hidden_size/num_attention_heads"}"#,
        )
        .unwrap();
        apply_defaults(&mut c, &d);
        assert_eq!(c["rope_theta"], 10000.0);
        assert_eq!(c["num_key_value_heads"], 4);
        assert_eq!(c["head_dim"], 16);
    }
}
