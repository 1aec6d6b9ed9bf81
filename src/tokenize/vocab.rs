//! A GGUF's tokenizer metadata, read and validated: tokens, scores, token
//! attributes, merges, special token ids and the flags that steer
//! tokenization, with the defaults and per-model adjustments llama.cpp's
//! `llama_vocab::impl::load` applies.

use ahash::AHashMap as HashMap;

use crate::error::{Error, Result};
use crate::gguf::{Metadata, Value, ValueType};

/// Token attributes (llama.cpp's `llama_token_attr` bits we use).
pub mod attr {
    pub const UNKNOWN: u32 = 1 << 0;
    pub const UNUSED: u32 = 1 << 1;
    pub const NORMAL: u32 = 1 << 2;
    pub const CONTROL: u32 = 1 << 3;
    pub const USER_DEFINED: u32 = 1 << 4;
    pub const BYTE: u32 = 1 << 5;
    pub const UNDEFINED: u32 = 1 << 7;
    pub const LSTRIP: u32 = 1 << 8;
    pub const RSTRIP: u32 = 1 << 9;
}

/// The tokenizer algorithm (`tokenizer.ggml.model`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `llama`: SentencePiece-style score-driven merges with byte fallback.
    Spm,
    /// `gpt2` (and `gemma4`): regex pre-split and ranked merges.
    Bpe,
}

#[derive(Debug)]
pub struct Vocab {
    pub kind: Kind,
    pub model: String,
    pub pre: String,
    pub texts: Vec<Box<[u8]>>,
    pub scores: Vec<f32>,
    pub attrs: Vec<u32>,
    pub ids: HashMap<Box<[u8]>, u32>,
    /// BPE merges: (left id, right id) -> (rank, id of the merged text if a token).
    pub merges: HashMap<(u32, u32), (u32, Option<u32>)>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub unk: Option<u32>,
    pub sep: Option<u32>,
    pub pad: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_sep: bool,
    pub add_space_prefix: bool,
    pub escape_whitespaces: bool,
    pub ignore_merges: bool,
    /// Tokens split out of the text before tokenizing (control, user-defined
    /// and unknown tokens), longest text first.
    pub special_cache: Vec<u32>,
}

const K_MODEL: &str = "tokenizer.ggml.model";
const K_PRE: &str = "tokenizer.ggml.pre";
const K_TOKENS: &str = "tokenizer.ggml.tokens";
const K_SCORES: &str = "tokenizer.ggml.scores";
const K_TYPES: &str = "tokenizer.ggml.token_type";
const K_MERGES: &str = "tokenizer.ggml.merges";

fn bad(key: &str, msg: impl std::fmt::Display) -> Error {
    Error::Other(format!("tokenizer metadata: key '{key}': {msg}"))
}

fn get_array<'a>(md: &'a Metadata, key: &str, elem: &[ValueType]) -> Result<Option<&'a [Value]>> {
    let Some(v) = md.get(key) else { return Ok(None) };
    let Some(a) = v.as_array() else { return Err(bad(key, format!("expected an array, found {}", v.value_type()))) };
    if !elem.contains(&a.elem_type) {
        return Err(bad(key, format!("expected an array of {}, found an array of {}", elem[0], a.elem_type)));
    }
    Ok(Some(&a.values))
}

fn get_bool(md: &Metadata, key: &str) -> Result<Option<bool>> {
    match md.get(key) {
        None => Ok(None),
        Some(v) => v.as_bool().map(Some).ok_or_else(|| bad(key, format!("expected a bool, found {}", v.value_type()))),
    }
}

fn get_string(md: &Metadata, key: &str) -> Result<Option<String>> {
    match md.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_str()
            .map(|s| Some(s.to_string()))
            .ok_or_else(|| bad(key, format!("expected a UTF-8 string, found {}", v.value_type()))),
    }
}

const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
/// Texts llama.cpp recognises as FIM tokens when no id is given, per kind
/// (the metadata key that would give the id, then the texts).
const FIM_TEXTS: &[(&str, &[&str])] = &[
    ("tokenizer.ggml.eom_token_id", &["<|eom_id|>"]),
    (
        "tokenizer.ggml.fim_pre_token_id",
        &[
            "<|fim_prefix|>",
            "<fim-prefix>",
            "<fim_prefix>",
            "<｜fim▁begin｜>",
            "<PRE>",
            "▁<PRE>",
            "<|code_prefix|>",
            "<|prefix|>",
        ],
    ),
    (
        "tokenizer.ggml.fim_suf_token_id",
        &[
            "<|fim_suffix|>",
            "<fim-suffix>",
            "<fim_suffix>",
            "<｜fim▁hole｜>",
            "<SUF>",
            "▁<SUF>",
            "<|code_suffix|>",
            "<|suffix|>",
        ],
    ),
    (
        "tokenizer.ggml.fim_mid_token_id",
        &[
            "<|fim_middle|>",
            "<fim-middle>",
            "<fim_middle>",
            "<｜fim▁end｜>",
            "<MID>",
            "▁<MID>",
            "<|code_middle|>",
            "<|middle|>",
        ],
    ),
    ("tokenizer.ggml.fim_pad_token_id", &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"]),
    ("tokenizer.ggml.fim_rep_token_id", &["<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"]),
    ("tokenizer.ggml.fim_sep_token_id", &["<|file_sep|>"]),
];

impl Vocab {
    pub fn from_metadata(md: &Metadata) -> Result<Vocab> {
        let model = get_string(md, K_MODEL)?.ok_or_else(|| bad(K_MODEL, "missing"))?;
        let mut pre = get_string(md, K_PRE)?.unwrap_or_default();
        let kind = match model.as_str() {
            "llama" => Kind::Spm,
            "gpt2" => Kind::Bpe,
            "gemma4" => {
                pre = "gemma4".into();
                Kind::Bpe
            }
            "no_vocab" | "none" => return Err(bad(K_MODEL, format!("'{model}': the file has no vocabulary"))),
            "bert" | "t5" | "rwkv" | "plamo2" | "hybriddna" | "whitespace" => {
                return Err(Error::Unsupported(format!(
                    "{K_MODEL} '{model}': this tokenizer type is not supported (supported: llama, gpt2, gemma4)"
                )))
            }
            other => return Err(bad(K_MODEL, format!("unknown tokenizer type '{other}'"))),
        };

        // Tokens.
        let tokens = get_array(md, K_TOKENS, &[ValueType::String])?.ok_or_else(|| bad(K_TOKENS, "missing"))?;
        if tokens.is_empty() {
            return Err(bad(K_TOKENS, "empty vocabulary"));
        }
        if tokens.len() > i32::MAX as usize {
            return Err(bad(K_TOKENS, "too many tokens"));
        }
        let n = tokens.len();
        let mut texts: Vec<Box<[u8]>> = Vec::with_capacity(n);
        let mut ids: HashMap<Box<[u8]>, u32> = HashMap::with_capacity(n);
        for (i, t) in tokens.iter().enumerate() {
            let Value::String(b) = t else { return Err(bad(K_TOKENS, format!("token {i} is not a string"))) };
            let text: Box<[u8]> =
                if b.is_empty() { format!("[EMPTY_{i}]").into_bytes().into() } else { b.clone().into_boxed_slice() };
            if let Some(prev) = ids.insert(text.clone(), i as u32) {
                return Err(bad(
                    K_TOKENS,
                    format!("token {i} '{}' repeats token {prev}", String::from_utf8_lossy(&text)),
                ));
            }
            texts.push(text);
        }

        // Scores.
        let mut scores = vec![0f32; n];
        if let Some(s) = get_array(md, K_SCORES, &[ValueType::F32, ValueType::I32])? {
            if s.len() < n {
                return Err(bad(K_SCORES, format!("{} scores for {n} tokens", s.len())));
            }
            for (dst, v) in scores.iter_mut().zip(s) {
                *dst = match *v {
                    Value::F32(f) => f,
                    Value::I32(i) => i as f32,
                    _ => unreachable!("array element type checked"),
                };
            }
        }

        // Token types -> attributes.
        let mut attrs = vec![attr::NORMAL; n];
        if let Some(t) = get_array(md, K_TYPES, &[ValueType::I32])? {
            if t.len() < n {
                return Err(bad(K_TYPES, format!("{} token types for {n} tokens", t.len())));
            }
            for (dst, v) in attrs.iter_mut().zip(t) {
                let Value::I32(ty) = *v else { unreachable!("array element type checked") };
                *dst = match ty {
                    1 => attr::NORMAL,
                    2 => attr::UNKNOWN,
                    3 => attr::CONTROL,
                    4 => attr::USER_DEFINED,
                    5 => attr::UNUSED,
                    6 => attr::BYTE,
                    _ => attr::UNDEFINED,
                };
            }
        }

        // Merges.
        let mut merges = HashMap::default();
        if kind == Kind::Bpe {
            let m = get_array(md, K_MERGES, &[ValueType::String])?.ok_or_else(|| bad(K_MERGES, "missing"))?;
            merges.reserve(m.len());
            for (rank, v) in m.iter().enumerate() {
                let Value::String(b) = v else { unreachable!("array element type checked") };
                let pos = b.iter().skip(1).position(|&c| c == b' ').map(|p| p + 1);
                let Some(pos) = pos else {
                    return Err(bad(K_MERGES, format!("merge {rank} '{}' has no space", String::from_utf8_lossy(b))));
                };
                let (l, r) = (&b[..pos], &b[pos + 1..]);
                let lookup = |part: &[u8]| {
                    ids.get(part).copied().ok_or_else(|| {
                        bad(
                            K_MERGES,
                            format!(
                                "merge {rank} '{}' refers to '{}', which is not a token",
                                String::from_utf8_lossy(b),
                                String::from_utf8_lossy(part)
                            ),
                        )
                    })
                };
                let (li, ri) = (lookup(l)?, lookup(r)?);
                let mut joined = Vec::with_capacity(l.len() + r.len());
                joined.extend_from_slice(l);
                joined.extend_from_slice(r);
                let merged = ids.get(joined.as_slice()).copied();
                merges.entry((li, ri)).or_insert((rank as u32, merged));
            }
        }

        // Flags per type and pre-tokenizer, as llama.cpp sets them.
        let mut add_bos = false;
        let mut add_eos = false;
        let mut add_sep = false;
        let mut add_space_prefix = false;
        let mut escape_whitespaces = false;
        let mut ignore_merges = false;
        let (mut bos, eos, unk, sep, pad): (i64, i64, i64, i64, i64);
        match kind {
            Kind::Spm => {
                (bos, eos, unk, sep, pad) = (1, 2, 0, -1, -1);
                add_space_prefix = true;
                add_bos = true;
            }
            Kind::Bpe => {
                (bos, eos, unk, sep, pad) = if model == "gemma4" { (-1, -1, -1, -1, -1) } else { (11, 11, -1, -1, -1) };
                match pre.as_str() {
                    "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0" | "lfm2"
                    | "jina-v5-nano" | "tekken" => {
                        ignore_merges = true;
                        add_bos = true;
                    }
                    "chameleon" => add_bos = true,
                    "minicpm5" | "youtu" | "granite-embed-multi-97m" => ignore_merges = true,
                    "glm4" | "glm5" => {
                        ignore_merges = true;
                        bos = -1;
                    }
                    "chatglm-bpe" => bos = -1,
                    "gemma4" | "granite-embed-multi-311m" | "sarvam-moe" => escape_whitespaces = true,
                    "jina-v1-en" | "jina-v2-code" | "roberta-bpe" => add_sep = true,
                    _ => {}
                }
            }
        }
        if let Some(v) = get_bool(md, "tokenizer.ggml.add_space_prefix")? {
            add_space_prefix = v;
        }

        // Special token ids: defaults outside the vocabulary are disabled; an
        // id in the metadata must be a token.
        let special = |key: &str, default: i64| -> Result<Option<u32>> {
            match md.get(key) {
                None => Ok((default >= 0 && (default as usize) < n).then_some(default as u32)),
                Some(v) => match v.as_u64() {
                    Some(id) if (id as usize) < n => Ok(Some(id as u32)),
                    Some(id) => Err(bad(key, format!("token id {id} is out of range (vocabulary of {n} tokens)"))),
                    None => Err(bad(key, format!("expected a token id, found {}", v.summary(4)))),
                },
            }
        };
        let bos = special("tokenizer.ggml.bos_token_id", bos)?;
        let eos = special("tokenizer.ggml.eos_token_id", eos)?;
        let eot = special("tokenizer.ggml.eot_token_id", -1)?;
        let unk = special("tokenizer.ggml.unknown_token_id", unk)?;
        let sep = special("tokenizer.ggml.seperator_token_id", sep)?;
        let pad = special("tokenizer.ggml.padding_token_id", pad)?;
        let mut fim_given = Vec::new();
        for key in [
            "tokenizer.ggml.eom_token_id",
            "tokenizer.ggml.fim_pre_token_id",
            "tokenizer.ggml.fim_suf_token_id",
            "tokenizer.ggml.fim_mid_token_id",
            "tokenizer.ggml.fim_pad_token_id",
            "tokenizer.ggml.fim_rep_token_id",
            "tokenizer.ggml.fim_sep_token_id",
            "tokenizer.ggml.mask_token_id",
        ] {
            fim_given.push((key, special(key, -1)?));
        }
        if let Some(v) = get_bool(md, "tokenizer.ggml.add_bos_token")? {
            add_bos = v;
        }
        if let Some(v) = get_bool(md, "tokenizer.ggml.add_eos_token")? {
            add_eos = v;
        }
        if let Some(v) = get_bool(md, "tokenizer.ggml.add_sep_token")? {
            add_sep = v;
        }
        if pre == "gemma4" || pre == "granite-embed-multi-311m" {
            add_bos = true;
        }
        if add_bos && bos.is_none() {
            return Err(bad("tokenizer.ggml.bos_token_id", "the vocabulary adds BOS but has no BOS token"));
        }
        if add_eos && eos.is_none() {
            return Err(bad("tokenizer.ggml.eos_token_id", "the vocabulary adds EOS but has no EOS token"));
        }

        let mut v = Vocab {
            kind,
            model,
            pre,
            texts,
            scores,
            attrs,
            ids,
            merges,
            bos,
            eos,
            eot,
            unk,
            sep,
            pad,
            add_bos,
            add_eos,
            add_sep,
            add_space_prefix,
            escape_whitespaces,
            ignore_merges,
            special_cache: Vec::new(),
        };
        v.adjust_attributes(md, &fim_given);
        Ok(v)
    }

    pub fn id(&self, text: &str) -> Option<u32> {
        self.ids.get(text.as_bytes()).copied()
    }

    /// llama.cpp's text-based fix-ups of token attributes (control-looking
    /// tokens become control, a few model-specific exceptions, lstrip/rstrip)
    /// and the special-token cache.
    fn adjust_attributes(&mut self, md: &Metadata, fim_given: &[(&str, Option<u32>)]) {
        let mut eog: Vec<u32> = Vec::new();
        // EOT: the first of the texts present (by id), unless given.
        let eot = self.eot.or_else(|| EOT_TEXTS.iter().filter_map(|t| self.id(t)).min());
        if let Some(id) = eot {
            if self.eot.is_none() {
                self.attrs[id as usize] |= attr::CONTROL;
            }
            eog.push(id);
        }
        for (key, texts) in FIM_TEXTS {
            let given = fim_given.iter().find(|(k, _)| k == key).and_then(|(_, v)| *v);
            let found = given.or_else(|| texts.iter().filter_map(|t| self.id(t)).min());
            if let Some(id) = found {
                if given.is_none() {
                    self.attrs[id as usize] |= attr::CONTROL;
                }
                if key.contains("eom") || key.contains("pad") || key.contains("rep") || key.contains("sep") {
                    eog.push(id);
                }
            }
        }
        for t in EOG_TEXTS {
            if let Some(id) = self.id(t) {
                eog.push(id);
                self.attrs[id as usize] |= attr::CONTROL;
            }
        }
        for t in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
            if let Some(id) = self.id(t) {
                self.attrs[id as usize] = attr::USER_DEFINED;
            }
        }
        eog.extend(self.eos);
        let eog_has = |t: &str| eog.iter().any(|&id| &*self.texts[id as usize] == t.as_bytes());
        if let Some(end) = self.id("<|end|>").filter(|id| eog.contains(id)) {
            let call = eog_has("<|call|>") || eog_has("<|calls|>");
            if call && (eog_has("<|return|>") || eog_has("<|flush|>")) {
                self.attrs[end as usize] = attr::USER_DEFINED;
            }
        }
        if let Some(s) = self.id("</s>").filter(|id| eog.contains(id)) {
            if eog_has("<|tool_response>") || eog_has("<|plamo:eos|>") {
                self.attrs[s as usize] = attr::NORMAL;
            }
        }

        let mut cache: Vec<u32> = (0..self.texts.len() as u32)
            .filter(|&id| self.attrs[id as usize] & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0)
            .collect();
        cache.sort_by_key(|&id| std::cmp::Reverse(self.texts[id as usize].len()));

        let name = md.get_str("general.name").unwrap_or("").to_ascii_lowercase();
        let arch = md.get_str("general.architecture").unwrap_or("");
        let pre = md.get_str(K_PRE).unwrap_or("");
        let any = |s: &str, subs: &[&str]| subs.iter().any(|x| s.contains(x));
        if any(pre, &["jina-v2-de", "jina-v2-es", "jina-v2-code"]) || any(arch, &["nomic-bert-moe", "jina-bert-v3"]) {
            if let Some(id) = self.id("<mask>") {
                self.attrs[id as usize] |= attr::LSTRIP;
            }
        } else if any(&name, &["phi-3", "phi3"]) {
            for &id in &cache {
                self.attrs[id as usize] |= attr::RSTRIP;
            }
            if let Some(id) = self.id("</s>") {
                self.attrs[id as usize] |= attr::RSTRIP;
            }
            for t in ["<unk>", "<s>", "<|endoftext|>"] {
                if let Some(id) = self.id(t) {
                    self.attrs[id as usize] &= !attr::RSTRIP;
                }
            }
        } else if any(&name, &["modern-bert"]) {
            if let Some(id) = self.id("[MASK]") {
                self.attrs[id as usize] |= attr::LSTRIP;
            }
        }
        self.special_cache = cache;
    }
}
