//! The tokenizer part of conversion: token list, types, scores or merges,
//! the BPE pre-tokenizer name, special token ids and flags, chat template —
//! the `tokenizer.*` keys as convert_hf_to_gguf.py and gguf-py's
//! `SpecialVocab` write them.
//!
//! * GPT-2 style BPE (`tokenizer.json`): tokens come from the Hugging Face
//!   `tokenizers` crate (the same library transformers uses), added tokens are
//!   CONTROL when special (or looking special) and USER_DEFINED otherwise;
//!   the pre-tokenizer is identified as llama.cpp does, by hashing the ids of
//!   a check text (`formats/pretokenizers.json`).
//! * SentencePiece (`tokenizer.model`): pieces, scores and types from the
//!   protobuf, then `added_tokens.json` and `added_tokens_decoder` of
//!   tokenizer_config.json on top.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::spm;
use crate::error::{Error, IoContext, Result};
use crate::gguf::{Metadata, Value as GValue, ValueType};
use crate::progress::Progress;

/// GGUF token types (gguf-py `TokenType`).
pub const TOKEN_NORMAL: i32 = 1;
pub const TOKEN_CONTROL: i32 = 3;
pub const TOKEN_USER_DEFINED: i32 = 4;
pub const TOKEN_UNUSED: i32 = 5;

/// llama.cpp's pre-tokenizer table.
pub const PRETOKENIZERS_JSON: &str = include_str!("../../formats/pretokenizers.json");

/// The vocabulary and tokenizer settings of a model.
#[derive(Debug, Clone, Default)]
pub struct Vocab {
    /// `tokenizer.ggml.add_space_prefix` (LLaMA family, from tokenizer_config's `add_prefix_space`).
    pub add_space_prefix: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix` written after the special tokens
    /// (Gemma's `set_vocab` adds it last).
    pub add_space_prefix_last: Option<bool>,
    /// `gpt2` or `llama`.
    pub model: String,
    pub pre: String,
    pub tokens: Texts,
    pub scores: Option<Vec<f32>>,
    pub types: Vec<i32>,
    /// How the pre-tokenizer name was found: the check-text hash (BPE only).
    pub pre_hash: Option<String>,
    pub special: SpecialVocab,
}

impl Vocab {
    /// Appends the `tokenizer.*` keys in convert_hf_to_gguf.py's order.
    pub fn write_metadata(&self, md: &mut Metadata) {
        if let Some(b) = self.add_space_prefix {
            md.set("tokenizer.ggml.add_space_prefix", GValue::Bool(b));
        }
        md.set("tokenizer.ggml.model", GValue::string(self.model.clone()));
        md.set("tokenizer.ggml.pre", GValue::string(self.pre.clone()));
        if !self.tokens.is_empty() {
            md.set("tokenizer.ggml.tokens", self.tokens.value());
        }
        if let Some(scores) = self.scores.as_ref().filter(|s| !s.is_empty()) {
            md.set(
                "tokenizer.ggml.scores",
                GValue::array(ValueType::F32, scores.iter().map(|&s| GValue::F32(s)).collect()),
            );
        }
        if !self.types.is_empty() {
            md.set(
                "tokenizer.ggml.token_type",
                GValue::array(ValueType::I32, self.types.iter().map(|&t| GValue::I32(t)).collect()),
            );
        }
        self.special.write_metadata(md);
        if let Some(b) = self.add_space_prefix_last {
            md.set("tokenizer.ggml.add_space_prefix", GValue::Bool(b));
        }
    }
}

/// Strings written as one GGUF string array (tokens, merges), built once and
/// shared by every clone and every metadata that writes them: a vocabulary
/// is 150k allocations to copy, and `pack` writes it once per output type.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Texts(std::sync::Arc<Vec<GValue>>);

impl Texts {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The GGUF string array, sharing the strings.
    pub fn value(&self) -> GValue {
        GValue::Array(crate::gguf::Array { elem_type: ValueType::String, values: self.0.clone() })
    }
}

impl From<Vec<String>> for Texts {
    fn from(v: Vec<String>) -> Texts {
        Texts(std::sync::Arc::new(v.into_iter().map(GValue::string).collect()))
    }
}

/// gguf-py's `SpecialVocab`: merges, special token ids, add-token flags, chat
/// template and normalizer flags, in the order they are written.
#[derive(Debug, Clone, Default)]
pub struct SpecialVocab {
    pub merges: Texts,
    /// (type, id) in insertion order: `bos`, `eos`, `unk`, `sep`, `pad`, `cls`, `mask`, `eot`, `eom`.
    pub ids: Vec<(String, u32)>,
    /// (type, flag) in insertion order.
    pub add: Vec<(String, bool)>,
    pub chat_template: Option<ChatTemplate>,
    pub normalizer_lowercase: Option<bool>,
    pub normalizer_strip_accents: Option<bool>,
    /// Things gguf-py would log as warnings.
    pub warnings: Vec<String>,
}

/// A chat template: one string, or named templates (`default` is the main one).
#[derive(Debug, Clone, PartialEq)]
pub enum ChatTemplate {
    Single(String),
    Named(Vec<(String, String)>),
}

fn id_key(typ: &str) -> Option<&'static str> {
    Some(match typ {
        "bos" => "tokenizer.ggml.bos_token_id",
        "eos" => "tokenizer.ggml.eos_token_id",
        "unk" => "tokenizer.ggml.unknown_token_id",
        "sep" => "tokenizer.ggml.seperator_token_id",
        "pad" => "tokenizer.ggml.padding_token_id",
        "mask" => "tokenizer.ggml.mask_token_id",
        "eot" => "tokenizer.ggml.eot_token_id",
        "eom" => "tokenizer.ggml.eom_token_id",
        _ => return None,
    })
}

fn add_key(typ: &str) -> Option<&'static str> {
    Some(match typ {
        "bos" => "tokenizer.ggml.add_bos_token",
        "eos" => "tokenizer.ggml.add_eos_token",
        "sep" => "tokenizer.ggml.add_sep_token",
        _ => return None,
    })
}

impl SpecialVocab {
    pub fn get_id(&self, typ: &str) -> Option<u32> {
        self.ids.iter().find(|(t, _)| t == typ).map(|(_, id)| *id)
    }

    pub fn get_add(&self, typ: &str) -> Option<bool> {
        self.add.iter().find(|(t, _)| t == typ).map(|(_, b)| *b)
    }

    fn set_add(&mut self, typ: &str, v: bool) {
        match self.add.iter_mut().find(|(t, _)| t == typ) {
            Some(e) => e.1 = v,
            None => self.add.push((typ.to_string(), v)),
        }
    }

    fn set_add_default(&mut self, typ: &str, v: bool) {
        if self.get_add(typ).is_none() {
            self.add.push((typ.to_string(), v));
        }
    }

    /// `SpecialVocab._set_special_token`.
    fn set_special(&mut self, typ: &str, tid: Option<&Value>, n_vocab: Option<usize>) -> Result<()> {
        let Some(tid) = tid.and_then(|v| if v.is_boolean() { None } else { v.as_i64() }) else { return Ok(()) };
        if tid < 0 {
            return Err(Error::Other(format!("invalid value for special token type {typ}: {tid}")));
        }
        if n_vocab.is_none_or(|n| (tid as u64) < n as u64) {
            if self.get_id(typ).is_none() {
                let id = u32::try_from(tid)
                    .map_err(|_| Error::Other(format!("special token type {typ}: id {tid} does not fit in 32 bits")))?;
                self.ids.push((typ.to_string(), id));
            }
            return Ok(());
        }
        self.warnings.push(format!(
            "special token type {typ}, id {tid} out of range, must be under {} - skipping",
            n_vocab.unwrap_or(0)
        ));
        Ok(())
    }

    /// Appends the keys (merges, ids, add flags, chat template, normalizer flags).
    pub fn write_metadata(&self, md: &mut Metadata) {
        if !self.merges.is_empty() {
            md.set("tokenizer.ggml.merges", self.merges.value());
        }
        for (typ, id) in &self.ids {
            if let Some(k) = id_key(typ) {
                md.set(k, GValue::U32(*id));
            }
        }
        for (typ, v) in &self.add {
            if let Some(k) = add_key(typ) {
                md.set(k, GValue::Bool(*v));
            }
        }
        match &self.chat_template {
            None => {}
            Some(ChatTemplate::Single(t)) => md.set("tokenizer.chat_template", GValue::string(t.clone())),
            Some(ChatTemplate::Named(list)) => {
                let mut default = None;
                let mut names: Vec<String> = Vec::new();
                for (name, template) in list {
                    let name: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
                    if name.is_empty() {
                        continue;
                    }
                    if name == "default" {
                        default = Some(template.clone());
                    } else {
                        md.set(format!("tokenizer.chat_template.{name}"), GValue::string(template.clone()));
                        if !names.contains(&name) {
                            names.push(name);
                        }
                    }
                }
                if !names.is_empty() {
                    md.set("tokenizer.chat_templates", GValue::string_array(names));
                }
                if let Some(t) = default {
                    md.set("tokenizer.chat_template", GValue::string(t));
                }
            }
        }
        if let Some(b) = self.normalizer_lowercase {
            md.set("tokenizer.ggml.normalizer.lowercase", GValue::Bool(b));
        }
        if let Some(b) = self.normalizer_strip_accents {
            md.set("tokenizer.ggml.normalizer.strip_accents", GValue::Bool(b));
        }
    }

    fn parse_normalizer(&mut self, n: &Value) {
        match n.get("type").and_then(Value::as_str) {
            Some("Lowercase") => self.normalizer_lowercase = Some(true),
            Some("StripAccents") => self.normalizer_strip_accents = Some(true),
            Some("BertNormalizer") => {
                if let Some(v) = n.get("lowercase").and_then(Value::as_bool) {
                    self.normalizer_lowercase = Some(v);
                }
                if let Some(v) = n.get("strip_accents").and_then(Value::as_bool) {
                    self.normalizer_strip_accents = Some(v);
                }
            }
            Some("Sequence") => {
                if let Some(list) = n.get("normalizers").and_then(Value::as_array) {
                    for x in list {
                        self.parse_normalizer(x);
                    }
                }
            }
            _ => {}
        }
    }

    /// Loads it as `gguf.SpecialVocab(dir, load_merges, n_vocab=...)` does.
    pub fn load(dir: &Path, load_merges: bool, n_vocab: Option<usize>) -> Result<SpecialVocab> {
        let mut sv = SpecialVocab::default();
        let mut types: Vec<&str> = vec!["bos", "eos", "unk", "sep", "pad", "cls", "mask"];
        sv.load_tokenizer_json(dir, load_merges, n_vocab, &mut types)?;
        sv.load_config_json(dir, n_vocab, &types)?;
        if load_merges && sv.merges.is_empty() {
            sv.load_merges_txt(dir)?;
        }
        if load_merges && sv.merges.is_empty() {
            sv.warnings.push("Adding merges requested but no merges found, output may be non-functional.".into());
        }
        Ok(sv)
    }

    fn load_tokenizer_json(
        &mut self,
        dir: &Path,
        load_merges: bool,
        n_vocab: Option<usize>,
        types: &mut Vec<&'static str>,
    ) -> Result<()> {
        let tok_path = dir.join("tokenizer.json");
        let mut tokenizer = read_tokenizer_parts(&tok_path)?;
        let mut added_tokens: Vec<Value> = Vec::new();
        if let Some(tok) = tokenizer.as_mut() {
            if load_merges {
                if let Some(merges) = tok.merges.take() {
                    self.merges = merges.map_err(|m| Error::input(&tok_path, m))?.into();
                }
            }
            if let Some(n) = tok.parts.get("normalizer").filter(|n| truthy(n)) {
                self.parse_normalizer(n);
            }
            if let Some(list) = tok.parts.get("added_tokens").and_then(Value::as_array) {
                added_tokens = list.clone();
            }
        }
        let tc_path = dir.join("tokenizer_config.json");
        let mut tc: Option<Map<String, Value>> = match crate::hf::read_json_opt(&tc_path)? {
            None => None,
            Some(Value::Object(m)) => Some(m),
            Some(_) => return Err(Error::input(&tc_path, "not a JSON object")),
        };
        if let Some(tok) = tokenizer.as_ref().filter(|t| !t.empty) {
            self.apply_post_processor(&tok.parts, &mut tc, types);
        }
        let Some(tc) = tc.filter(|m| !m.is_empty()) else { return Ok(()) };

        // Chat template: tokenizer_config's own, else chat_template.jinja
        // (with additional_chat_templates/*.jinja), else chat_template.json.
        let mut alt: Option<Value> = None;
        let jinja = dir.join("chat_template.jinja");
        let json = dir.join("chat_template.json");
        if jinja.is_file() {
            let main = crate::hf::read_text(&jinja)?;
            let extra_dir = dir.join("additional_chat_templates");
            let mut extra = Vec::new();
            if extra_dir.is_dir() {
                for e in std::fs::read_dir(&extra_dir).at(&extra_dir, "read directory")? {
                    let p = e.at(&extra_dir, "read directory")?.path();
                    if p.extension().is_some_and(|x| x == "jinja") {
                        extra.push(p);
                    }
                }
            }
            extra.sort();
            if extra.is_empty() {
                alt = Some(Value::String(main));
            } else {
                let mut list = vec![serde_json::json!({"name": "default", "template": main})];
                for p in extra {
                    let name = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                    list.push(serde_json::json!({"name": name, "template": crate::hf::read_text(&p)?}));
                }
                alt = Some(Value::Array(list));
            }
        } else if json.is_file() {
            alt = crate::hf::read_json(&json)?.get("chat_template").cloned();
        }
        let ct = match tc.get("chat_template") {
            Some(v) => Some(v.clone()),
            None => alt,
        };
        match ct {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => self.chat_template = Some(ChatTemplate::Single(s)),
            Some(Value::Array(items)) => {
                let mut list = Vec::new();
                for it in items {
                    let name = it.get("name").and_then(Value::as_str).unwrap_or("");
                    if let Some(t) = it.get("template").and_then(Value::as_str) {
                        list.push((name.to_string(), t.to_string()));
                    }
                }
                self.chat_template = Some(ChatTemplate::Named(list));
            }
            Some(_) => {
                self.warnings.push(format!("Bad type for chat_template field in {} - ignoring", tc_path.display()))
            }
        }

        for typ in types.iter() {
            if let Some(Value::Bool(b)) = tc.get(&format!("add_{typ}_token")) {
                match self.get_add(typ) {
                    None => self.add.push((typ.to_string(), *b)),
                    Some(cur) if cur != *b => self.warnings.push(format!(
                        "Mismatch between tokenizer_config add_{typ}_token({b}) and tokenizer post_processor<{typ}>({cur}) - opting for the latter"
                    )),
                    Some(_) => {}
                }
            }
            let content = match tc.get(&format!("{typ}_token")) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Object(o)) => match o.get("content") {
                    Some(Value::String(s)) => s.clone(),
                    _ => continue,
                },
                _ => continue,
            };
            let id = added_tokens
                .iter()
                .find(|a| a.get("content").and_then(Value::as_str) == Some(content.as_str()))
                .and_then(|a| a.get("id"));
            self.set_special(typ, id, n_vocab)?;
        }
        Ok(())
    }

    /// The post_processor part of `_try_load_from_tokenizer_json`: decides
    /// add_bos/add_eos/add_sep and may fill bos/cls/eos/sep/eot/eom names
    /// into the tokenizer config.
    fn apply_post_processor(
        &mut self,
        tok: &Value,
        tc: &mut Option<Map<String, Value>>,
        types: &mut Vec<&'static str>,
    ) {
        let get = |tc: &Option<Map<String, Value>>, k: &str| {
            tc.as_ref().and_then(|m| m.get(k)).cloned().unwrap_or(Value::Null)
        };
        let tc_truthy = |tc: &Option<Map<String, Value>>| tc.as_ref().is_some_and(|m| !m.is_empty());
        let mut bos = get(tc, "bos_token");
        let mut cls = get(tc, "cls_token");
        let mut eos = get(tc, "eos_token");
        let mut sep = get(tc, "sep_token");
        if !truthy(&bos) && truthy(&cls) && tc_truthy(tc) {
            bos = cls.clone();
            set(tc, "bos_token", bos.clone());
        }
        if !truthy(&eos) && truthy(&sep) && tc_truthy(tc) {
            eos = sep.clone();
            set(tc, "eos_token", eos.clone());
        }
        let Some(pp) = tok.get("post_processor").filter(|p| truthy(p)) else { return };
        let procs: Vec<Value> = match pp.get("processors").and_then(Value::as_array) {
            Some(list) => list.clone(),
            None => vec![pp.clone()],
        };
        let special_id = |v: Option<&Value>| -> Value {
            v.and_then(|x| x.get("SpecialToken")).and_then(|s| s.get("id")).cloned().unwrap_or(Value::Null)
        };
        let seq_id = |v: Option<&Value>| -> Value {
            v.and_then(|x| x.get("Sequence")).and_then(|s| s.get("id")).cloned().unwrap_or(Value::Null)
        };
        for p in procs {
            match p.get("type").and_then(Value::as_str) {
                Some("ByteLevel") => {
                    self.set_add_default("bos", false);
                    self.set_add_default("eos", false);
                }
                Some("RobertaProcessing") => {
                    self.set_add("bos", true);
                    self.set_add("eos", true);
                    self.set_add("sep", true);
                    if !truthy(&cls) && tc_truthy(tc) {
                        cls = p.get("cls").and_then(|c| c.get(0)).cloned().unwrap_or(bos.clone());
                        set(tc, "cls_token", cls.clone());
                    }
                    if !truthy(&sep) && tc_truthy(tc) {
                        sep = p.get("sep").and_then(|c| c.get(0)).cloned().unwrap_or(eos.clone());
                        set(tc, "sep_token", sep.clone());
                    }
                }
                Some("TemplateProcessing") => {
                    let single: Vec<Value> = p.get("single").and_then(Value::as_array).cloned().unwrap_or_default();
                    let pair: Vec<Value> = p.get("pair").and_then(Value::as_array).cloned().unwrap_or_default();
                    let mut first = Value::Null;
                    let mut last = Value::Null;
                    if single.len() > 1 {
                        first = special_id(single.first());
                        if truthy(&first) {
                            if !tc_truthy(tc) {
                                bos = first.clone();
                            } else if first != bos && first != cls {
                                if !truthy(&bos) {
                                    bos = first.clone();
                                    set(tc, "bos_token", bos.clone());
                                }
                                if !truthy(&cls) {
                                    cls = first.clone();
                                    set(tc, "cls_token", cls.clone());
                                }
                            }
                            let known = first == bos || first == cls;
                            self.set_add("bos", known);
                            if !known {
                                self.warnings.push(format!(
                                    "Unknown leading special token {first} in TemplateProcessing<single>"
                                ));
                            }
                        }
                        last = special_id(single.last());
                        if truthy(&last) {
                            if !tc_truthy(tc) {
                                eos = last.clone();
                            } else if last != eos {
                                if !types.contains(&"eot") {
                                    types.push("eot");
                                    set(tc, "eot_token", eos.clone());
                                } else if !types.contains(&"eom") {
                                    types.push("eom");
                                    set(tc, "eom_token", eos.clone());
                                } else {
                                    self.warnings.push(format!(
                                        "Overriding EOS token {eos} with {last} without EOT/EOM fallback!"
                                    ));
                                }
                                eos = last.clone();
                                set(tc, "eos_token", eos.clone());
                            }
                            self.set_add("eos", last == eos);
                        }
                    }
                    if !pair.is_empty() {
                        let start = usize::from(truthy(&first) && special_id(pair.first()) == first);
                        let stop_trim = usize::from(truthy(&last) && special_id(pair.last()) == last);
                        let end = pair.len().saturating_sub(stop_trim);
                        let inner: &[Value] = if start < end { &pair[start..end] } else { &[] };
                        if !inner.is_empty() {
                            let a = seq_id(inner.first());
                            let b = seq_id(inner.last());
                            if a == "A" && b == "B" && inner.len() > 2 {
                                let mid = &inner[1..inner.len() - 1];
                                let mut add_sep = false;
                                let e0 = special_id(mid.first());
                                if truthy(&e0) && (e0 == sep || e0 == eos) && !truthy(&last) {
                                    add_sep = true;
                                }
                                if mid.len() == 2 {
                                    let e1 = special_id(mid.get(1));
                                    if truthy(&e1) && (e1 == sep || e1 == eos) {
                                        add_sep = true;
                                    }
                                }
                                self.set_add("sep", add_sep);
                                if add_sep && !truthy(&sep) && tc_truthy(tc) {
                                    set(tc, "sep_token", eos.clone());
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn load_config_json(&mut self, dir: &Path, n_vocab: Option<usize>, types: &[&str]) -> Result<()> {
        let Some(config) = crate::hf::read_json_opt(&dir.join("config.json"))? else { return Ok(()) };
        for typ in types {
            let key = format!("{typ}_token_id");
            let mut id = config.get(&key).filter(|v| !v.is_null());
            if id.is_none() {
                id = config.get("text_config").and_then(|t| t.get(&key));
            }
            self.set_special(typ, id, n_vocab)?;
        }
        Ok(())
    }

    fn load_merges_txt(&mut self, dir: &Path) -> Result<()> {
        let path = dir.join("merges.txt");
        if !path.is_file() {
            return Ok(());
        }
        let text = crate::hf::read_text(&path)?;
        let mut lines = text.lines().peekable();
        if lines.peek().is_some_and(|l| l.trim().starts_with('#')) {
            lines.next();
        }
        let mut merges = Vec::new();
        for line in lines {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let parts: Vec<&str> = line.split_whitespace().collect();
            if parts.len() == 2 {
                merges.push(format!("{} {}", parts[0], parts[1]));
            }
        }
        self.merges = merges.into();
        Ok(())
    }
}

fn set(tc: &mut Option<Map<String, Value>>, k: &str, v: Value) {
    if let Some(m) = tc.as_mut() {
        m.insert(k.to_string(), v);
    }
}

/// Python truthiness of a JSON value.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// tokenizer.json merges: `"a b"` strings, or `["a", "b"]` pairs (spaces
/// inside a pair's parts are encoded as U+0120, as gguf-py does).
/// What `SpecialVocab` reads of tokenizer.json: `normalizer`, `added_tokens`
/// and `post_processor` (in `parts`), and `model.merges` already converted.
#[derive(Debug)]
struct TokenizerParts {
    parts: Value,
    /// `model.merges` when it is a list (converted, or why it cannot be).
    merges: Option<std::result::Result<Vec<String>, String>>,
    /// The file holds `{}`.
    empty: bool,
}

/// Reads tokenizer.json's [`TokenizerParts`] without building a tree of the
/// whole file: the vocabulary (the tokenizers crate reads it) is skipped and
/// the merges are borrowed from the text. A file that does not have the
/// expected shape is read as a plain JSON tree, as before.
fn read_tokenizer_parts(path: &Path) -> Result<Option<TokenizerParts>> {
    use std::borrow::Cow;
    #[derive(serde::Deserialize)]
    struct Parts<'a> {
        #[serde(borrow, default)]
        model: Option<ModelParts<'a>>,
        #[serde(default)]
        normalizer: Option<Value>,
        #[serde(default)]
        added_tokens: Option<Value>,
        #[serde(default)]
        post_processor: Option<Value>,
    }
    #[derive(serde::Deserialize)]
    struct ModelParts<'a> {
        #[serde(borrow, default)]
        merges: Option<Vec<Merge<'a>>>,
    }
    /// A merge as `"a b"` or `["a", "b"]`.
    enum Merge<'a> {
        Joined(Cow<'a, str>),
        Pair(Cow<'a, str>, Cow<'a, str>),
    }
    struct Text<'a>(Cow<'a, str>);
    impl<'de: 'a, 'a> serde::Deserialize<'de> for Text<'a> {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Text<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a string")
                }
                fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<Text<'de>, E> {
                    Ok(Text(Cow::Borrowed(v)))
                }
                fn visit_str<E>(self, v: &str) -> std::result::Result<Text<'de>, E> {
                    Ok(Text(Cow::Owned(v.to_string())))
                }
            }
            d.deserialize_str(V)
        }
    }
    impl<'de: 'a, 'a> serde::Deserialize<'de> for Merge<'a> {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Merge<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a merge")
                }
                fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<Merge<'de>, E> {
                    Ok(Merge::Joined(Cow::Borrowed(v)))
                }
                fn visit_str<E>(self, v: &str) -> std::result::Result<Merge<'de>, E> {
                    Ok(Merge::Joined(Cow::Owned(v.to_string())))
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(
                    self,
                    mut seq: A,
                ) -> std::result::Result<Merge<'de>, A::Error> {
                    use serde::de::Error as _;
                    let a: Text = seq.next_element()?.ok_or_else(|| A::Error::custom("short merge"))?;
                    let b: Text = seq.next_element()?.ok_or_else(|| A::Error::custom("short merge"))?;
                    if seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                        return Err(A::Error::custom("long merge"));
                    }
                    Ok(Merge::Pair(a.0, b.0))
                }
            }
            d.deserialize_any(V)
        }
    }

    if !path.is_file() {
        return Ok(None);
    }
    let text = crate::hf::read_text(path)?;
    let empty = text.trim_start().strip_prefix('{').is_some_and(|r| r.trim_start().starts_with('}'));
    let Ok(parts) = serde_json::from_str::<Parts>(&text) else {
        // Not the usual shape (or not JSON): the tree, and its errors, as before.
        let tree = crate::hf::read_json(path)?;
        let merges =
            tree.get("model").and_then(|m| m.get("merges")).and_then(Value::as_array).map(|m| convert_merges(m));
        return Ok(Some(TokenizerParts { empty: !truthy(&tree), parts: tree, merges }));
    };
    let merges = parts.model.and_then(|m| m.merges).map(|list| {
        let joined = matches!(list.first(), Some(Merge::Joined(_)));
        let mut out = Vec::with_capacity(list.len());
        for (i, m) in list.into_iter().enumerate() {
            match (m, joined) {
                (Merge::Joined(s), true) => out.push(s.into_owned()),
                (Merge::Pair(a, b), false) => out.push(merge_pair(&a, &b)),
                (_, true) => return Err(format!("model.merges[{i}] is not a string")),
                (_, false) => return Err(format!("model.merges[{i}] is not a pair of strings")),
            }
        }
        Ok(out)
    });
    let mut obj = Map::new();
    for (k, v) in [
        ("normalizer", parts.normalizer),
        ("added_tokens", parts.added_tokens),
        ("post_processor", parts.post_processor),
    ] {
        if let Some(v) = v {
            obj.insert(k.to_string(), v);
        }
    }
    Ok(Some(TokenizerParts { parts: Value::Object(obj), merges, empty }))
}

/// A `[a, b]` merge as gguf-py writes it: `"a b"` with spaces inside each side as `Ġ`.
fn merge_pair(a: &str, b: &str) -> String {
    let enc = |s: &str| s.chars().map(|c| if c == ' ' { '\u{120}' } else { c }).collect::<String>();
    format!("{} {}", enc(a), enc(b))
}

fn convert_merges(merges: &[Value]) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::with_capacity(merges.len());
    let Some(first) = merges.first() else { return Ok(out) };
    if first.is_string() {
        for (i, m) in merges.iter().enumerate() {
            out.push(m.as_str().ok_or_else(|| format!("model.merges[{i}] is not a string"))?.to_string());
        }
    } else if first.as_array().is_some_and(|a| a.len() == 2 && a[0].is_string()) {
        for (i, m) in merges.iter().enumerate() {
            let pair = m
                .as_array()
                .filter(|a| a.len() == 2)
                .and_then(|a| Some((a[0].as_str()?, a[1].as_str()?)))
                .ok_or_else(|| format!("model.merges[{i}] is not a pair of strings"))?;
            out.push(merge_pair(pair.0, pair.1));
        }
    } else {
        return Err("Unknown tokenizer merges format".into());
    }
    Ok(out)
}

/// convert_hf_to_gguf.py's `does_token_look_special`.
pub fn looks_special(t: &str) -> bool {
    matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (t.starts_with("<|") && t.ends_with("|>"))
        || (t.starts_with("<｜") && t.ends_with("｜>"))
        || (t.starts_with("<unused") && t.ends_with('>'))
}

/// Python's `str(list_of_ints)`.
pub fn python_list_repr(ids: &[u32]) -> String {
    let parts: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

/// The pre-tokenizer table: (check text, [(hash, name)]).
pub fn pretokenizer_table() -> Result<(String, Vec<(String, String)>)> {
    let v: Value = serde_json::from_str(PRETOKENIZERS_JSON)
        .map_err(|e| Error::Other(format!("formats/pretokenizers.json: {e}")))?;
    let chk = v.get("chktxt").and_then(Value::as_str).unwrap_or_default().to_string();
    let mut table = Vec::new();
    for e in v.get("table").and_then(Value::as_array).into_iter().flatten() {
        if let (Some(h), Some(n)) = (e.get("hash").and_then(Value::as_str), e.get("name").and_then(Value::as_str)) {
            table.push((h.to_string(), n.to_string()));
        }
    }
    Ok((chk, table))
}

/// Looks a check-text hash up (the last matching entry wins, as in llama.cpp's chain of `if`s).
pub fn pre_name_for_hash(hash: &str) -> Result<Option<String>> {
    let (_, table) = pretokenizer_table()?;
    Ok(table.iter().rev().find(|(h, _)| h == hash).map(|(_, n)| n.clone()))
}

/// tokenizer.json as the `tokenizers` crate loads it, built to encode the
/// pre-tokenizer check text and the added tokens (all that a conversion
/// encodes; see `tokenizer_json::load_for`).
fn conversion_tokenizer(path: &Path) -> Result<tokenizers::Tokenizer> {
    let text = crate::hf::read_text(path)?;
    let (chk, _) = pretokenizer_table()?;
    super::tokenizer_json::load_for(text.as_bytes(), &[chk.as_str()])
        .map_err(|e| Error::input(path, format!("cannot load the tokenizer: {e}")))
}

/// The check-text hash of a tokenizer.json (sha256 of the Python repr of the ids).
pub fn pretokenizer_hash(path: &Path) -> Result<String> {
    let tok = conversion_tokenizer(path)?;
    hash_of(&tok, path)
}

fn hash_of(tok: &tokenizers::Tokenizer, path: &Path) -> Result<String> {
    let (chk, _) = pretokenizer_table()?;
    let enc = tok
        .encode(chk.as_str(), true)
        .map_err(|e| Error::input(path, format!("cannot tokenize the pre-tokenizer check text: {e}")))?;
    let digest = Sha256::digest(python_list_repr(enc.get_ids()).as_bytes());
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}

/// GPT-2 style BPE vocabulary from tokenizer.json (`_set_vocab_gpt2`).
pub fn bpe_vocab(
    dir: &Path,
    vocab_size: Option<u64>,
    vocab_pre: Option<&str>,
    progress: &dyn Progress,
) -> Result<Vocab> {
    // The special vocabulary (tokenizer.json read again for its merges and added
    // tokens, tokenizer_config.json, config.json) does not need the tokenizer:
    // it is read on a second core while the tokenizer is built.
    std::thread::scope(|s| {
        let special = std::thread::Builder::new().spawn_scoped(s, || SpecialVocab::load(dir, true, None));
        let vocab = bpe_tokens(dir, vocab_size, vocab_pre, progress);
        let special = match special {
            Ok(h) => h.join().unwrap_or_else(|_| Err(Error::Other("special vocabulary reader panicked".into()))),
            Err(_) => SpecialVocab::load(dir, true, None),
        };
        let mut vocab = vocab?;
        vocab.special = special?;
        Ok(vocab)
    })
}

/// The token of every id as convert_hf_to_gguf.py reads them (the reverse
/// of `get_vocab(true)`: the model's vocabulary and the added tokens), the
/// number of distinct tokens, and the largest id. Taken id by id when the
/// model's vocabulary is a map (not Unigram's list, which may repeat a
/// piece) whose ids are exactly `0..len`, as in every tokenizer.json seen:
/// then each id has one token (an added token that is in the model's
/// vocabulary has the model's id and text) and no vocabulary-sized map is
/// copied and freed (tens of milliseconds for 150k tokens).
fn tokens_by_id(
    tok: &tokenizers::Tokenizer,
    decoder: &AddedTokensDecoder,
) -> (Vec<Option<String>>, usize, Option<u32>) {
    let m_len = if matches!(tok.get_model(), tokenizers::ModelWrapper::Unigram(_)) {
        0 // the map below
    } else {
        tok.get_vocab_size(false)
    };
    let extra = decoder.keys().filter(|&&id| id as usize >= m_len).count();
    let mut by_id: Vec<Option<String>> = Vec::with_capacity(m_len + extra);
    let contiguous = m_len > 0
        && (0..m_len).all(|i| {
            let t = u32::try_from(i).ok().and_then(|i| tok.id_to_token(i));
            let found = t.is_some();
            by_id.push(t);
            found
        });
    if contiguous {
        for (&id, t) in decoder.iter().filter(|&(&id, _)| id as usize >= m_len) {
            if by_id.len() <= id as usize {
                by_id.resize(id as usize + 1, None);
            }
            by_id[id as usize] = Some(t.content.clone());
        }
        let max_id = decoder.keys().copied().chain(m_len.checked_sub(1).map(|m| m as u32)).max();
        return (by_id, m_len + extra, max_id);
    }
    let vocab: HashMap<String, u32> = tok.get_vocab(true);
    let max_id = vocab.values().copied().max();
    let len = vocab.len();
    if max_id.is_some_and(|m| m >= 1 << 26) {
        return (Vec::new(), len, max_id); // refused by the caller's bounds
    }
    let mut by_id: Vec<Option<String>> = vec![None; max_id.map_or(0, |m| m as usize + 1)];
    for (t, id) in vocab {
        by_id[id as usize] = Some(t);
    }
    (by_id, len, max_id)
}

/// The added tokens by id, as the `tokenizers` crate gives them.
type AddedTokensDecoder = ahash::AHashMap<u32, tokenizers::AddedToken>;

/// [`bpe_vocab`] without its special vocabulary.
fn bpe_tokens(dir: &Path, vocab_size: Option<u64>, vocab_pre: Option<&str>, progress: &dyn Progress) -> Result<Vocab> {
    let path = dir.join("tokenizer.json");
    if !path.is_file() {
        return Err(Error::input(&path, "missing tokenizer.json (and no tokenizer.model)"));
    }
    let tok = conversion_tokenizer(&path)?;
    let decoder = tok.get_added_tokens_decoder();
    let (mut by_id, len, max_id) = tokens_by_id(&tok, &decoder);
    let n = match vocab_size {
        Some(n) => n,
        None => len as u64,
    };
    if let Some(max_id) = max_id.filter(|&m| m as u64 >= n) {
        return Err(Error::input(
            &path,
            format!("token id {max_id} is not below the model's vocab_size {n} (config.json vocab_size too small?)"),
        ));
    }
    let n = usize::try_from(n).ok().filter(|&n| n <= 1 << 26).ok_or_else(|| {
        Error::input(dir.join("config.json"), format!("vocab_size {n} is larger than the supported {}", 1 << 26))
    })?;
    by_id.resize(n, None);

    let hash = hash_of(&tok, &path)?;
    let pre = match vocab_pre {
        Some(p) => p.to_string(),
        None => match pre_name_for_hash(&hash)? {
            Some(name) => name,
            None => {
                return Err(Error::input(
                    &path,
                    format!(
                        "the BPE pre-tokenizer was not recognized (check-text hash {hash} is not in llama.cpp's table); \
                         if you know which llama.cpp pre-tokenizer it uses, pass --vocab-pre NAME (e.g. qwen2, llama-bpe)"
                    ),
                ))
            }
        },
    };

    let added: HashMap<&str, u32> = decoder.iter().map(|(id, t)| (t.content.as_str(), *id)).collect();
    let mut tokens = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    for (i, slot) in by_id.into_iter().enumerate() {
        let Some(mut token) = slot else {
            tokens.push(format!("[PAD{i}]"));
            types.push(TOKEN_UNUSED);
            continue;
        };
        if added.contains_key(token.as_str()) {
            let info = decoder.get(&(i as u32));
            let (normalized, special) = info.map_or((true, false), |t| (t.normalized, t.special));
            if !normalized {
                // llama.cpp expects CONTROL / USER_DEFINED tokens pre-normalized.
                let before = token.clone();
                if let Ok(enc) = tok.encode(before.as_str(), false) {
                    if let Ok(dec) = tok.decode(enc.get_ids(), false) {
                        token = dec;
                    }
                }
                if token != before {
                    progress.warn(&format!("{before:?} is encoded and decoded back to {token:?}"));
                }
            }
            if special || looks_special(&token) {
                types.push(TOKEN_CONTROL);
            } else {
                token = token.replace('\u{2581}', " ");
                types.push(TOKEN_USER_DEFINED);
            }
        } else {
            types.push(TOKEN_NORMAL);
        }
        tokens.push(token);
    }
    // Freeing a 150k-token tokenizer takes tens of milliseconds nobody waits for.
    super::drop_later(tok);
    Ok(Vocab {
        add_space_prefix: None,
        add_space_prefix_last: None,
        model: "gpt2".into(),
        pre,
        tokens: tokens.into(),
        scores: None,
        types,
        pre_hash: Some(hash),
        special: SpecialVocab::default(),
    })
}

/// SentencePiece vocabulary from tokenizer.model (`_set_vocab_sentencepiece`).
pub fn spm_vocab(dir: &Path, vocab_size: Option<u64>, progress: &dyn Progress) -> Result<Vocab> {
    spm_vocab_as(dir, vocab_size, AddedTokens::Generic, progress)
}

/// How the added tokens of tokenizer_config.json (and tokenizer.json) mark
/// the SentencePiece vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddedTokens {
    /// `_create_vocab_sentencepiece`: `special` or special-looking tokens are
    /// control tokens, others user-defined (with `▁` turned into spaces).
    Generic,
    /// Phi3MiniModel's own reading: `special` decides alone, the text is kept
    /// as is, and tokenizer.json's `added_tokens` are applied the same way.
    Phi3,
}

/// [`spm_vocab`] with the added tokens read as a model class reads them.
pub fn spm_vocab_as(dir: &Path, vocab_size: Option<u64>, added: AddedTokens, progress: &dyn Progress) -> Result<Vocab> {
    let path = dir.join("tokenizer.model");
    let len = std::fs::metadata(&path).at(&path, "stat")?.len();
    if len > crate::hf::MAX_JSON_BYTES {
        return Err(Error::input(&path, format!("file of {len} bytes is too large for a SentencePiece model")));
    }
    let bytes = std::fs::read(&path).at(&path, "read")?;
    let pieces = spm::parse_pieces(&bytes).map_err(|e| Error::parse(&path, "SentencePiece model", e))?;
    let n = vocab_size.filter(|&v| v != 0).unwrap_or(pieces.len() as u64);
    let n = usize::try_from(n).ok().filter(|&n| n <= 1 << 26).ok_or_else(|| {
        Error::input(dir.join("config.json"), format!("vocab_size {n} is larger than the supported {}", 1 << 26))
    })?;
    let mut tokens: Vec<String> = (0..n).map(|i| format!("[PAD{i}]")).collect();
    let mut scores = vec![-10000.0f32; n];
    let mut types = vec![spm::UNUSED; n];
    for (id, p) in pieces.iter().enumerate() {
        if id >= n {
            progress.warn(&format!("ignore tokens from {id}: id is out of range, max={}", n - 1));
            break;
        }
        // sentencepiece's IsUnknown/IsControl/IsUnused/IsByte; USER_DEFINED stays NORMAL.
        let t = match p.kind {
            spm::UNKNOWN => spm::UNKNOWN,
            spm::CONTROL => spm::CONTROL,
            spm::UNUSED => spm::UNUSED,
            spm::BYTE => spm::BYTE,
            _ => spm::NORMAL,
        };
        tokens[id] = p.piece.clone();
        scores[id] = p.score;
        types[id] = t;
    }
    if let Some(added) = crate::hf::read_json_opt(&dir.join("added_tokens.json"))? {
        if let Some(obj) = added.as_object() {
            for (key, id) in obj {
                let Some(id) = id.as_u64() else { continue };
                if id as usize >= n {
                    progress.warn(&format!("ignore token {id}: id is out of range, max={}", n - 1));
                    continue;
                }
                tokens[id as usize] = key.clone();
                scores[id as usize] = -1000.0;
                types[id as usize] = spm::USER_DEFINED;
            }
        }
    }
    if let Some(tc) = crate::hf::read_json_opt(&dir.join("tokenizer_config.json"))? {
        if let Some(decoder) = tc.get("added_tokens_decoder").and_then(Value::as_object) {
            for (id, data) in decoder {
                let Ok(id) = id.parse::<usize>() else { continue };
                let Some(content) = data.get("content").and_then(Value::as_str) else { continue };
                if id >= n {
                    progress.warn(&format!("ignore token {id}: id is out of range, max={}", n - 1));
                    continue;
                }
                if types[id] != spm::UNUSED && tokens[id] != content {
                    progress.warn(&format!("replacing token {id}: {:?} -> {content:?}", tokens[id]));
                }
                let mut content = content.to_string();
                if added == AddedTokens::Phi3 {
                    types[id] = if data.get("special").is_some_and(truthy) { spm::CONTROL } else { spm::USER_DEFINED };
                } else if data.get("special").is_some_and(truthy) || looks_special(&content) {
                    types[id] = spm::CONTROL;
                } else {
                    content = content.replace('\u{2581}', " ");
                    types[id] = spm::USER_DEFINED;
                }
                scores[id] = -1000.0;
                tokens[id] = content;
            }
        }
    }
    if added == AddedTokens::Phi3 {
        if let Some(tj) = crate::hf::read_json_opt(&dir.join("tokenizer.json"))? {
            for data in tj.get("added_tokens").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
                let (Some(id), Some(content)) =
                    (data.get("id").and_then(Value::as_u64), data.get("content").and_then(Value::as_str))
                else {
                    continue;
                };
                let id = id as usize;
                if id >= n {
                    return Err(Error::input(
                        dir.join("tokenizer.json"),
                        format!("added token {content:?} has id {id}, beyond vocab_size {n}"),
                    ));
                }
                tokens[id] = content.to_string();
                scores[id] = -1000.0;
                types[id] = if data.get("special").is_some_and(truthy) { spm::CONTROL } else { spm::USER_DEFINED };
            }
        }
    }
    let special = SpecialVocab::load(dir, false, Some(tokens.len()))?;
    Ok(Vocab {
        add_space_prefix: None,
        add_space_prefix_last: None,
        model: "llama".into(),
        pre: "default".into(),
        tokens: tokens.into(),
        scores: Some(scores),
        types,
        pre_hash: None,
        special,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tokens_by_id` gives the reverse of `get_vocab(true)` (as
    /// convert_hf_to_gguf.py builds it), its size and largest id: for ids
    /// 0..len (read id by id) and for ids with a hole (through the map).
    #[test]
    fn tokens_by_id_is_the_reverse_vocabulary() {
        let doc = |vocab: &str| {
            format!(
                r#"{{"version": "1.0", "truncation": null, "padding": null,
  "added_tokens": [
    {{"id": 0, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}},
    {{"id": 7, "content": "<|end|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}},
    {{"id": 8, "content": "<|x|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": true, "special": false}}
  ],
  "normalizer": null, "pre_tokenizer": null, "post_processor": null, "decoder": null,
  "model": {{"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
    "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "vocab": {vocab}, "merges": ["a b"]}}}}"#
            )
        };
        for vocab in [r#"{"<s>": 0, "a": 1, "b": 2, "ab": 3}"#, r#"{"<s>": 0, "a": 1, "b": 2, "ab": 9}"#] {
            let tok = tokenizers::Tokenizer::from_bytes(doc(vocab).as_bytes()).unwrap();
            let map = tok.get_vocab(true);
            let max = map.values().copied().max().unwrap();
            let mut want = vec![None; max as usize + 1];
            for (t, &id) in &map {
                want[id as usize] = Some(t.clone());
            }
            let (mut got, len, max_id) = tokens_by_id(&tok, &tok.get_added_tokens_decoder());
            got.resize(want.len(), None);
            assert_eq!((got, len, max_id), (want, map.len(), Some(max)), "{vocab}");
        }
        // A Unigram list may repeat a piece: the map keeps the last id.
        let unigram = doc("{}").replace(
            r#"{"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
    "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "vocab": {}, "merges": ["a b"]}"#,
            r#"{"type": "Unigram", "unk_id": null, "vocab": [["<s>", 0.0], ["a", -1.0], ["b", -2.0], ["a", -3.0]]}"#,
        );
        let tok = tokenizers::Tokenizer::from_bytes(unigram.as_bytes()).unwrap();
        let (by_id, len, max_id) = tokens_by_id(&tok, &tok.get_added_tokens_decoder());
        assert_eq!(by_id[..4], [Some("<s>".to_string()), None, Some("b".to_string()), Some("a".to_string())]);
        assert_eq!((len, max_id), (tok.get_vocab(true).len(), tok.get_vocab(true).values().copied().max()));
    }

    #[test]
    fn repr_and_special_look() {
        assert_eq!(python_list_repr(&[]), "[]");
        assert_eq!(python_list_repr(&[1, 22, 333]), "[1, 22, 333]");
        assert!(looks_special("<|im_start|>"));
        assert!(looks_special("<｜begin▁of▁sentence｜>"));
        assert!(!looks_special("<tool_call>"));
    }

    #[test]
    fn table_loads() {
        let (chk, table) = pretokenizer_table().unwrap();
        assert!(chk.contains("🦙🦙 3 33 333"));
        assert!(table.len() > 50);
        assert_eq!(
            pre_name_for_hash("e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea").unwrap().as_deref(),
            Some("qwen2")
        );
        // Duplicate hash: the later entry wins.
        assert_eq!(
            pre_name_for_hash("0876d13b50744004aa9aeae05e7b0647eac9d801b5ba4668afc01e709c15e19f").unwrap().as_deref(),
            Some("jina-v2-en")
        );
    }

    #[test]
    fn merges_formats() {
        let m: Vec<Value> = serde_json::from_str(r#"[["Ġ", "t"], ["a b", "c"]]"#).unwrap();
        assert_eq!(convert_merges(&m).unwrap(), ["Ġ t", "a\u{120}b c"]);
        let m: Vec<Value> = serde_json::from_str(r#"["Ġ t", "h e"]"#).unwrap();
        assert_eq!(convert_merges(&m).unwrap(), ["Ġ t", "h e"]);
        let m: Vec<Value> = serde_json::from_str(r#"[1, 2]"#).unwrap();
        assert!(convert_merges(&m).is_err());
    }

    /// The borrowed parse of tokenizer.json reads what the JSON tree gives, for
    /// both merge formats (escaped strings included), and odd shapes fall back
    /// to the tree with its messages.
    #[test]
    fn tokenizer_parts_match_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        let cases = [
            r#"{"version": "1.0", "model": {"type": "BPE", "vocab": {"a": 0, "b\u0020": 1}, "merges": [["\u0120", "t"], ["a b", "c"]]},
               "normalizer": {"type": "NFC"}, "added_tokens": [{"id": 1, "content": "<s>"}], "post_processor": null}"#,
            r#"{"model": {"merges": ["\u0120 t", "h e"]}, "added_tokens": [], "post_processor": {"type": "ByteLevel"}}"#,
            r#"{"model": {"merges": []}}"#,
            r#"{"model": {"merges": null}, "normalizer": null}"#,
            r#"{"model": {"merges": [1, 2]}}"#,
            r#"{"model": {"merges": ["a b", ["c", "d"]]}}"#,
            r#"{"model": {"merges": [["a", "b"], "c d"]}}"#,
            r#"{"model": {"merges": [["a", "b", "c"]]}}"#,
            r#"{"model": "BPE"}"#,
            r#"{"model": {}, "model": {"merges": ["x y"]}}"#,
            r#"[1, 2]"#,
            r#" { } "#,
            r#"{"added_tokens": {"not": "a list"}}"#,
        ];
        for text in cases {
            std::fs::write(&path, text).unwrap();
            let got = read_tokenizer_parts(&path).unwrap().unwrap();
            let tree: Value = serde_json::from_str(text).unwrap();
            let want =
                tree.get("model").and_then(|m| m.get("merges")).and_then(Value::as_array).map(|m| convert_merges(m));
            assert_eq!(got.merges, want, "{text}");
            assert_eq!(got.empty, !truthy(&tree), "{text}");
            for k in ["normalizer", "added_tokens", "post_processor"] {
                let want = tree.get(k).filter(|v| !v.is_null());
                assert_eq!(got.parts.get(k).filter(|v| !v.is_null()), want, "{text}: {k}");
            }
        }
        assert!(read_tokenizer_parts(&dir.path().join("absent.json")).unwrap().is_none());
        std::fs::write(&path, "{not json").unwrap();
        assert!(read_tokenizer_parts(&path).unwrap_err().to_string().contains("tokenizer.json"));
    }

    #[test]
    fn special_vocab_template_processing() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("tokenizer.json"),
            r#"{"added_tokens": [{"id": 5, "content": "<s>"}, {"id": 6, "content": "</s>"}],
                "model": {"merges": ["a b"]},
                "post_processor": {"type": "TemplateProcessing",
                  "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                  "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                           {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}]}}"#,
        )
        .unwrap();
        std::fs::write(
            d.join("tokenizer_config.json"),
            r#"{"bos_token": "<s>", "eos_token": {"content": "</s>"}, "add_eos_token": true, "chat_template": "x"}"#,
        )
        .unwrap();
        std::fs::write(d.join("config.json"), r#"{"bos_token_id": 1, "pad_token_id": 6, "eos_token_id": [6, 7]}"#)
            .unwrap();
        let sv = SpecialVocab::load(d, true, None).unwrap();
        assert_eq!(sv.merges, Texts::from(vec!["a b".to_string()]));
        assert_eq!(sv.ids, [("bos".to_string(), 5), ("eos".to_string(), 6), ("pad".to_string(), 6)]);
        assert_eq!(sv.add, [("bos".to_string(), true), ("sep".to_string(), false), ("eos".to_string(), true)]);
        assert_eq!(sv.chat_template, Some(ChatTemplate::Single("x".into())));
    }
}
