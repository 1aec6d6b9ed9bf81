//! tokenizer.json into the `tokenizers` crate's [`Tokenizer`], quickly.
//!
//! `Tokenizer::from_bytes` reads a BPE model's vocabulary and merges through
//! three generic layers (an untagged enum buffering the whole model, a JSON
//! tree for its `type` tag, then an untagged merge list buffered again): for
//! a 151k-token vocabulary that is 0.36 s, the largest fixed cost of a
//! conversion. Here the model object is read once, by typed fields, and the
//! same [`BPE`] is built with the crate's own builder; every other part
//! (normalizer, pre-tokenizer, post-processor, decoder, truncation, padding)
//! is handed to the crate's own deserializers, and added tokens are added the
//! way its deserializer adds them.
//!
//! Anything else (a model that is not `"type": "BPE"`, an unexpected field
//! shape, an unknown field, a duplicate key, `null` or an array where the
//! crate wants an object) takes the crate's own path, so the result, and
//! every error, is what `Tokenizer::from_bytes` gives. One difference is
//! left: each part is parsed again from its own text, so serde_json's
//! nesting limit (128) counts from the part, one level more than the crate
//! allows a part nested exactly 127 deep.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokenizers::models::bpe::{Merges, Vocab, BPE};
use tokenizers::{
    AddedToken, DecoderWrapper, ModelWrapper, NormalizerWrapper, PaddingParams, PostProcessorWrapper,
    PreTokenizerWrapper, Tokenizer, TokenizerBuilder, TruncationParams,
};

/// The builder of the crate's [`Tokenizer`] (its wrappers of every part).
type Builder =
    TokenizerBuilder<ModelWrapper, NormalizerWrapper, PreTokenizerWrapper, PostProcessorWrapper, DecoderWrapper>;

/// The tokenizer `Tokenizer::from_bytes(bytes)` gives, built faster when the
/// model is a BPE.
pub fn load(bytes: &[u8]) -> tokenizers::Result<Tokenizer> {
    match fast(bytes) {
        Some(t) => Ok(t),
        None => Tokenizer::from_bytes(bytes),
    }
}

/// The top level, each part kept as its JSON text. The crate refuses a key
/// it does not know (its reader does not skip the value), so this does too.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Top<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    version: Option<&'a RawValue>,
    #[serde(borrow)]
    truncation: Option<&'a RawValue>,
    #[serde(borrow)]
    padding: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    added_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    normalizer: Option<&'a RawValue>,
    #[serde(borrow)]
    pre_tokenizer: Option<&'a RawValue>,
    #[serde(borrow)]
    post_processor: Option<&'a RawValue>,
    #[serde(borrow)]
    decoder: Option<&'a RawValue>,
    #[serde(borrow)]
    model: Option<&'a RawValue>,
}

/// A BPE model object, field by field as the crate's BPE deserializer reads
/// it. The crate checks the values of fields it does not know (it buffers the
/// whole object first); here an unknown field sends the file to the crate.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BpeFields<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    /// Read as f64 and narrowed, as the crate does (it reads the model from a JSON tree).
    dropout: Option<f64>,
    unk_token: Option<String>,
    continuing_subword_prefix: Option<String>,
    end_of_word_suffix: Option<String>,
    fuse_unk: Option<bool>,
    byte_fallback: Option<bool>,
    ignore_merges: Option<bool>,
    vocab: Vocab,
    merges: MergeList,
}

/// An added token as tokenizer.json lists it (the crate requires every field;
/// an unknown one sends the file to the crate, which checks its value).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddedEntry {
    #[allow(dead_code)] // required, as the crate requires it; the id is the model's or the next one
    id: u32,
    content: String,
    single_word: bool,
    lstrip: bool,
    rstrip: bool,
    normalized: bool,
    special: bool,
}

/// Merges in either format, read in one pass: `"a b"` strings (split at the
/// one space, `#version` lines skipped) or `["a", "b"]` pairs, never mixed.
struct MergeList(Merges);

impl<'de> Deserialize<'de> for MergeList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(MergeVisitor)
    }
}

struct MergeVisitor;

impl<'de> Visitor<'de> for MergeVisitor {
    type Value = MergeList;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of merges")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MergeList, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        let mut lines = None;
        while let Some(item) = seq.next_element::<Merge>()? {
            let is_line = matches!(item, Merge::Line(..) | Merge::Version);
            if *lines.get_or_insert(is_line) != is_line {
                return Err(de::Error::custom("merges of both formats"));
            }
            if let Merge::Line(a, b) | Merge::Pair(a, b) = item {
                out.push((a, b));
            }
        }
        Ok(MergeList(out))
    }
}

/// One merge, owned (escaped JSON strings cannot be borrowed).
enum Merge {
    Line(String, String),
    Pair(String, String),
    Version,
}

impl<'de> Deserialize<'de> for Merge {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Merge;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a merge")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Merge, E> {
                if s.starts_with("#version") {
                    return Ok(Merge::Version);
                }
                let mut parts = s.split(' ');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(a), Some(b), None) => Ok(Merge::Line(a.to_string(), b.to_string())),
                    _ => Err(E::custom("a merge is not two tokens")),
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Merge, A::Error> {
                let a: String = seq.next_element()?.ok_or_else(|| de::Error::custom("short merge"))?;
                let b: String = seq.next_element()?.ok_or_else(|| de::Error::custom("short merge"))?;
                if seq.next_element::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::custom("long merge"));
                }
                Ok(Merge::Pair(a, b))
            }
        }
        d.deserialize_any(V)
    }
}

fn part<'a, T: Deserialize<'a>>(raw: Option<&'a RawValue>) -> Option<Option<T>> {
    match raw {
        None => Some(None),
        Some(r) => serde_json::from_str::<Option<T>>(r.get()).ok(),
    }
}

/// A field that is there, `null` included (a plain `Option` reads `null` as
/// absent; the crate refuses `null` for `version` and `added_tokens`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// True for JSON text that is an object. The structs above would also take
/// an array of their fields in order; the crate takes only objects.
fn is_object(text: &[u8]) -> bool {
    text.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

fn fast(bytes: &[u8]) -> Option<Tokenizer> {
    if !is_object(bytes) {
        return None;
    }
    let top: Top = serde_json::from_slice(bytes).ok()?;
    // The crate requires the string "1.0" (not null); anything else is its to judge.
    if top.version.is_some_and(|v| v.get() != r#""1.0""#) {
        return None;
    }
    let model_text = top.model?.get();
    if !is_object(model_text.as_bytes()) {
        return None;
    }
    let model: BpeFields = serde_json::from_str(model_text).ok()?;
    if model.kind != "BPE" {
        return None;
    }
    let mut b = BPE::builder().vocab_and_merges(model.vocab, model.merges.0);
    if let Some(x) = model.dropout {
        b = b.dropout(x as f32);
    }
    if let Some(x) = model.unk_token {
        b = b.unk_token(x);
    }
    if let Some(x) = model.continuing_subword_prefix {
        b = b.continuing_subword_prefix(x);
    }
    if let Some(x) = model.end_of_word_suffix {
        b = b.end_of_word_suffix(x);
    }
    if let Some(x) = model.fuse_unk {
        b = b.fuse_unk(x);
    }
    if let Some(x) = model.byte_fallback {
        b = b.byte_fallback(x);
    }
    if let Some(x) = model.ignore_merges {
        b = b.ignore_merges(x);
    }
    let bpe = b.build().ok()?;
    // A list of objects (the crate refuses null and arrays in its place).
    let added: Vec<AddedEntry> = match top.added_tokens {
        None => Vec::new(),
        Some(r) => {
            let items: Vec<&RawValue> = serde_json::from_str(r.get()).ok()?;
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                if !is_object(item.get().as_bytes()) {
                    return None;
                }
                out.push(serde_json::from_str(item.get()).ok()?);
            }
            out
        }
    };
    let built = Builder::new()
        .with_model(ModelWrapper::BPE(bpe))
        .with_truncation(part::<TruncationParams>(top.truncation)?)
        .with_padding(part::<PaddingParams>(top.padding)?)
        .with_normalizer(part(top.normalizer)?)
        .with_pre_tokenizer(part(top.pre_tokenizer)?)
        .with_post_processor(part(top.post_processor)?)
        .with_decoder(part(top.decoder)?)
        .build()
        .ok()?;
    let mut tok = Tokenizer::from(built);
    let added: Vec<AddedToken> = added
        .into_iter()
        .map(|e| AddedToken {
            content: e.content,
            single_word: e.single_word,
            lstrip: e.lstrip,
            rstrip: e.rstrip,
            normalized: e.normalized,
            special: e.special,
        })
        .collect();
    tok.add_tokens(&added);
    Some(tok)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small byte-level BPE tokenizer.json with `model` and the top-level
    /// `extra` keys spliced in.
    fn doc(model: &str, extra: &str) -> String {
        format!(
            r#"{{"version": "1.0", "truncation": null, "padding": null,
  "added_tokens": [
    {{"id": 9, "content": "<|end|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}},
    {{"id": 10, "content": "ab", "single_word": false, "lstrip": true, "rstrip": false, "normalized": true, "special": false}}
  ],
  "normalizer": {{"type": "NFC"}},
  "pre_tokenizer": {{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}},
  "post_processor": {{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true}},
  "decoder": {{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}},
  {extra}"model": {model}}}"#
        )
    }

    const VOCAB: &str =
        r#"{"a": 0, "b": 1, "c": 2, "\u0120": 3, "ab": 4, "abc": 5, "\u0120a": 6, "d": 7, "\u0120ab": 8}"#;

    fn bpe(merges: &str, more: &str) -> String {
        format!(
            r#"{{"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, {more}"vocab": {VOCAB}, "merges": {merges}}}"#
        )
    }

    /// `load` gives what `Tokenizer::from_bytes` gives: the same serialized
    /// tokenizer (model, merges in rank order, every part, added tokens with
    /// their ids) and the same ids for a text.
    fn same(text: &str, fast_path: bool) {
        let want = Tokenizer::from_bytes(text.as_bytes());
        assert_eq!(fast(text.as_bytes()).is_some(), fast_path, "{text}");
        let got = load(text.as_bytes());
        match (want, got) {
            (Ok(w), Ok(g)) => {
                assert_eq!(w.to_string(false).unwrap(), g.to_string(false).unwrap(), "{text}");
                for s in ["abc ab<|end|>abd", " a  ab\u{e9}c", ""] {
                    let (a, b) = (w.encode(s, true).unwrap(), g.encode(s, true).unwrap());
                    assert_eq!(a.get_ids(), b.get_ids(), "{s:?} in {text}");
                }
                assert_eq!(w.get_vocab(true), g.get_vocab(true));
            }
            (Err(w), Err(g)) => assert_eq!(w.to_string(), g.to_string()),
            (w, g) => panic!("{text}: from_bytes {:?}, load {:?}", w.is_ok(), g.is_ok()),
        }
    }

    #[test]
    fn bpe_models_are_built_as_the_crate_builds_them() {
        // Both merge formats, with `#version` lines.
        same(&doc(&bpe(r#"["a b", "ab c", "\u0120 a", "\u0120a b"]"#, ""), ""), true);
        same(&doc(&bpe(r#"[["a", "b"], ["ab", "c"], ["\u0120", "a"], ["\u0120a", "b"]]"#, ""), ""), true);
        same(&doc(&bpe(r##"["#version: 0.2", "a b", "ab c"]"##, ""), ""), true);
        same(&doc(&bpe("[]", ""), ""), true);
        // Options, a missing `added_tokens`; a dropout whose f32 differs when
        // rounded once from the decimal and when rounded through f64.
        same(&doc(&bpe(r#"["a b"]"#, r#""ignore_merges": true, "#), ""), true);
        same(
            &doc(&bpe(r#"["a b"]"#, "").replace(r#""dropout": null"#, r#""dropout": 0.5000000298023223877"#), ""),
            true,
        );
        let options = bpe(r#"["a b"]"#, "")
            .replace(r#""unk_token": null"#, r#""unk_token": "d""#)
            .replace(r#""fuse_unk": false"#, r#""fuse_unk": true"#)
            .replace(r#""byte_fallback": false"#, r#""byte_fallback": true"#);
        same(&doc(&options, ""), true);
        let no_added = doc(&bpe(r#"["a b"]"#, ""), "");
        let start = no_added.find(r#""added_tokens""#).unwrap();
        let end = no_added.find(r#""normalizer""#).unwrap();
        same(&format!("{}{}", &no_added[..start], &no_added[end..]), true);
        // Null parts.
        same(&doc(&bpe(r#"["a b"]"#, ""), "").replace(r#"{"type": "NFC"}"#, "null"), true);
    }

    #[test]
    fn anything_else_takes_the_crates_path() {
        // Mixed merge formats, a merge of three tokens, a merge out of the vocabulary: errors.
        same(&doc(&bpe(r#"["a b", ["ab", "c"]]"#, ""), ""), false);
        same(&doc(&bpe(r#"["a b c"]"#, ""), ""), false);
        same(&doc(&bpe(r#"["c d", "x y"]"#, ""), ""), false);
        // An unknown top-level key (the crate's reader fails on it); a duplicate key,
        // another version, a model without `type`, another model.
        same(&doc(&bpe(r#"["a b"]"#, ""), r#""extra": {"y": 1}, "#), false);
        // Unknown model or added-token fields (the crate checks their values: a lone
        // surrogate, a number out of range), with valid values too.
        same(&doc(&bpe(r#"["a b"]"#, r#""future": [1, {"x": 2}], "#), ""), false);
        same(&doc(&bpe(r#"["a b"]"#, r#""future": "\ud800", "#), ""), false);
        same(&doc(&bpe(r#"["a b"]"#, r#""future": 1e999, "#), ""), false);
        let d = doc(&bpe(r#"["a b"]"#, ""), "");
        same(&d.replace(r#""special": true}"#, r#""special": true, "x": 1}"#), false);
        // null where the crate wants a string or a list; arrays where it wants objects.
        same(&d.replace(r#""version": "1.0""#, r#""version": null"#), false);
        let start = d.find(r#""added_tokens""#).unwrap();
        let end = d.find(r#""normalizer""#).unwrap();
        same(&format!("{}\"added_tokens\": null, {}", &d[..start], &d[end..]), false);
        same(
            &d.replace(
                r#"{"id": 9, "content": "<|end|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}"#,
                r#"[9, "<|end|>", false, false, false, false, true]"#,
            ),
            false,
        );
        same(&doc(r#"["BPE", null, null, null, null, false, false, false, {"a": 0}, []]"#, ""), false);
        same(r#"["1.0", null, null, [], null, null, null, null, null]"#, false);
        same(&doc(&bpe(r#"["a b"]"#, r#""dropout": null, "#), ""), false);
        same(&doc(&bpe(r#"["a b"]"#, ""), "").replace(r#""version": "1.0""#, r#""version": "2.0""#), false);
        same(&doc(&bpe(r#"["a b"]"#, "").replace(r#""type": "BPE", "#, ""), ""), false);
        same(&doc(r#"{"type": "WordLevel", "vocab": {"a": 0, "b": 1, "[UNK]": 2}, "unk_token": "[UNK]"}"#, ""), false);
        same("{}", false);
        same("not json", false);
    }
}
