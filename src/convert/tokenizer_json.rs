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
//!
//! A conversion encodes only a few texts (llama.cpp's pre-tokenizer check
//! text and the added tokens): [`load_for`] builds a tokenizer that encodes
//! those exactly as the full one does, with only the merges they can use.
//! BPE merges two adjacent symbols of one pre-tokenized word by their ids.
//! When every character of every word is in the vocabulary and the ids are
//! a permutation of 0..len, each symbol is a substring of its word and each
//! id one string, so a merge whose result is not a substring of any word
//! those texts pre-tokenize to is never looked up; the kept merges keep
//! their order, so their ranks compare as before. Otherwise (an unknown
//! character dropped, replaced by the unknown token or split into bytes; ids
//! shared or with holes) every merge is kept. Every merge is still checked
//! against the vocabulary as the crate's builder checks it, so a file the
//! crate refuses is refused (by the crate's own path, with its own message).
//! For the 151k-merge Qwen2 tokenizer this leaves a few hundred merges to
//! build.

use std::borrow::Cow;
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

/// A tokenizer that encodes each of `texts`, and each added token's content,
/// as the one `Tokenizer::from_bytes(bytes)` gives does, and has the same
/// vocabulary, added tokens, parts and decoding; its model keeps only the
/// merges those encodings can use (all of them when the model is not a plain
/// BPE, see the module notes).
pub fn load_for(bytes: &[u8], texts: &[&str]) -> tokenizers::Result<Tokenizer> {
    match fast(bytes, Some(texts)) {
        Some(t) => Ok(t),
        None => Tokenizer::from_bytes(bytes),
    }
}

/// At most this many bytes of substrings are collected from the words of
/// the texts to encode; beyond it every merge is kept.
const MAX_PIECE_BYTES: usize = 1 << 25;

/// The merges that can apply to the words `texts` pre-tokenize to (see the
/// module notes), in their order; all of them when the conditions of that
/// argument do not hold. `None` sends the file to the crate's path: a merge
/// not in `vocab` (the crate's builder reports it), or a text the
/// pre-tokenizer fails on.
fn merges_used(
    vocab: &Vocab,
    merges: MergeList,
    texts: &[&str],
    added: &[AddedToken],
    normalizer: Option<&NormalizerWrapper>,
    pre_tokenizer: Option<&PreTokenizerWrapper>,
) -> Option<Merges> {
    use tokenizers::{OffsetReferential, OffsetType, PreTokenizer};

    // The crate's builder checks every merge against the vocabulary; two
    // threads share the 150k lookups. Also the longest merge result: no
    // longer substring of a word can be a symbol.
    let check = |ms: &[(Cow<str>, Cow<str>)]| -> Option<usize> {
        let mut buf = String::new();
        let mut longest = 0;
        for (a, b) in ms {
            let joined = concat(&mut buf, a, b);
            if !(vocab.contains_key(a.as_ref()) && vocab.contains_key(b.as_ref()) && vocab.contains_key(joined)) {
                return None;
            }
            longest = longest.max(joined.len());
        }
        Some(longest)
    };
    let (lo, hi) = merges.0.split_at(merges.0.len() / 2);
    let longest = std::thread::scope(|s| {
        let other = std::thread::Builder::new().spawn_scoped(s, || check(hi));
        let mine = check(lo);
        let theirs = other.map_or_else(|_| check(hi), |h| h.join().unwrap_or(None));
        Some(mine?.max(theirs?))
    })?;

    // Added tokens are split off first, as the tokenizer does. The stand-in
    // model gives them other ids than the real one, which matters only when
    // two of them share an id; with the model's ids a permutation of
    // 0..len (checked below) none do.
    let mut av = tokenizers::AddedVocabulary::new();
    av.add_tokens(added, &BPE::default(), normalizer);
    let mut words: ahash::AHashSet<String> = ahash::AHashSet::new();
    for text in texts.iter().copied().chain(added.iter().map(|t| t.content.as_str())) {
        let mut pts = av.extract_and_normalize(normalizer, text);
        if let Some(p) = pre_tokenizer {
            p.pre_tokenize(&mut pts).ok()?;
        }
        for (word, _, tokens) in pts.get_splits(OffsetReferential::Original, OffsetType::Byte) {
            if tokens.is_none() {
                words.insert(word.to_string());
            }
        }
    }
    let all = |merges: MergeList| Some(merges.owned());
    // The argument needs every symbol to be a substring of its word: each
    // character has its own id (no unknown character dropped, replaced by
    // the unknown token or split into byte tokens) and each id one token.
    if !ids_are_a_permutation(vocab)
        || !words.iter().all(|w| w.chars().all(|c| vocab.contains_key(c.encode_utf8(&mut [0; 4]) as &str)))
    {
        return all(merges);
    }
    let mut pieces: ahash::AHashSet<&str> = ahash::AHashSet::new();
    let mut budget = MAX_PIECE_BYTES;
    for w in &words {
        let bounds: Vec<usize> = w.char_indices().map(|(i, _)| i).chain([w.len()]).collect();
        for (k, &a) in bounds.iter().enumerate() {
            for &b in bounds[k + 1..].iter().take_while(|&&b| b - a <= longest) {
                budget = match budget.checked_sub(b - a) {
                    Some(left) => left,
                    None => return all(merges),
                };
                pieces.insert(&w[a..b]);
            }
        }
    }
    let mut buf = String::new();
    let mut kept = Vec::new();
    for (a, b) in merges.0 {
        if pieces.contains(concat(&mut buf, &a, &b)) {
            kept.push((a.into_owned(), b.into_owned()));
        }
    }
    Some(kept)
}

/// `a` followed by `b`, in `buf` (a merge's result, as the crate's builder
/// forms it with no subword prefix).
fn concat<'b>(buf: &'b mut String, a: &str, b: &str) -> &'b str {
    buf.clear();
    buf.push_str(a);
    buf.push_str(b);
    buf
}

/// True when the vocabulary's ids are exactly 0..len, each once.
fn ids_are_a_permutation(vocab: &Vocab) -> bool {
    let mut seen = vec![false; vocab.len()];
    vocab.values().all(|&id| seen.get_mut(id as usize).is_some_and(|s| !std::mem::replace(s, true)))
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
    #[serde(borrow)]
    merges: MergeList<'a>,
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
/// Unescaped strings are borrowed from the file's text: most merges of a
/// subset build are never kept, and are then never allocated.
struct MergeList<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl MergeList<'_> {
    fn owned(self) -> Merges {
        self.0.into_iter().map(|(a, b)| (a.into_owned(), b.into_owned())).collect()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for MergeList<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(MergeVisitor)
    }
}

struct MergeVisitor;

impl<'de> Visitor<'de> for MergeVisitor {
    type Value = MergeList<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of merges")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MergeList<'de>, A::Error> {
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

/// One merge.
enum Merge<'a> {
    Line(Cow<'a, str>, Cow<'a, str>),
    Pair(Cow<'a, str>, Cow<'a, str>),
    Version,
}

/// The two tokens of a `"a b"` line, borrowed when the line is.
fn split_line<'a, E: de::Error>(s: Cow<'a, str>) -> Result<Merge<'a>, E> {
    if s.starts_with("#version") {
        return Ok(Merge::Version);
    }
    let mut parts = s.split(' ');
    let (Some(a), Some(b), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(E::custom("a merge is not two tokens"));
    };
    Ok(match s {
        Cow::Borrowed(s) => Merge::Line(Cow::Borrowed(&s[..a.len()]), Cow::Borrowed(&s[a.len() + 1..])),
        Cow::Owned(_) => Merge::Line(Cow::Owned(a.to_string()), Cow::Owned(b.to_string())),
    })
}

impl<'de> Deserialize<'de> for Merge<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Merge<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a merge")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Merge<'de>, E> {
                split_line(Cow::Borrowed(s))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Merge<'de>, E> {
                split_line(Cow::Owned(s.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Merge<'de>, A::Error> {
                let a: Token = seq.next_element()?.ok_or_else(|| de::Error::custom("short merge"))?;
                let b: Token = seq.next_element()?.ok_or_else(|| de::Error::custom("short merge"))?;
                if seq.next_element::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::custom("long merge"));
                }
                Ok(Merge::Pair(a.0, b.0))
            }
        }
        d.deserialize_any(V)
    }
}

/// A string, borrowed from the file's text when it has no escapes.
struct Token<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Token<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Token<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Token<'de>, E> {
                Ok(Token(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Token<'de>, E> {
                Ok(Token(Cow::Owned(s.to_string())))
            }
        }
        d.deserialize_str(V)
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

/// The crate's tokenizer built from the parsed parts, or `None` for the
/// crate's own path; with `texts`, only the merges they use (see [`load_for`]).
fn fast(bytes: &[u8], texts: Option<&[&str]>) -> Option<Tokenizer> {
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
    let normalizer: Option<NormalizerWrapper> = part(top.normalizer)?;
    let pre_tokenizer: Option<PreTokenizerWrapper> = part(top.pre_tokenizer)?;
    let plain =
        model.dropout.is_none() && model.continuing_subword_prefix.is_none() && model.end_of_word_suffix.is_none();
    let merges = match texts.filter(|_| plain) {
        Some(texts) => {
            merges_used(&model.vocab, model.merges, texts, &added, normalizer.as_ref(), pre_tokenizer.as_ref())?
        }
        None => model.merges.owned(),
    };
    let mut b = BPE::builder().vocab_and_merges(model.vocab, merges);
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
    let built = Builder::new()
        .with_model(ModelWrapper::BPE(bpe))
        .with_truncation(part::<TruncationParams>(top.truncation)?)
        .with_padding(part::<PaddingParams>(top.padding)?)
        .with_normalizer(normalizer)
        .with_pre_tokenizer(pre_tokenizer)
        .with_post_processor(part(top.post_processor)?)
        .with_decoder(part(top.decoder)?)
        .build()
        .ok()?;
    let mut tok = Tokenizer::from(built);
    tok.add_tokens(&added);
    Some(tok)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The full tokenizer (every merge), as `Tokenizer::from_bytes` gives it.
    fn load(bytes: &[u8]) -> tokenizers::Result<Tokenizer> {
        match fast(bytes, None) {
            Some(t) => Ok(t),
            None => Tokenizer::from_bytes(bytes),
        }
    }

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
        assert_eq!(fast(text.as_bytes(), None).is_some(), fast_path, "{text}");
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

    /// `load_for(text, texts)` encodes each of `texts` and each added token's
    /// content as the crate's tokenizer does (with and without special
    /// tokens), decodes alike, has the same vocabulary and added tokens, and
    /// its model has `kept` merges.
    fn same_for(text: &str, texts: &[&str], kept: usize) {
        let want = Tokenizer::from_bytes(text.as_bytes()).unwrap();
        let got = load_for(text.as_bytes(), texts).unwrap();
        let added: Vec<String> = want.get_added_tokens_decoder().values().map(|t| t.content.clone()).collect();
        for s in texts.iter().copied().chain(added.iter().map(String::as_str)) {
            for special in [false, true] {
                let (a, b) = (want.encode(s, special).unwrap(), got.encode(s, special).unwrap());
                assert_eq!(a.get_ids(), b.get_ids(), "{s:?} in {text}");
                assert_eq!(want.decode(a.get_ids(), false).unwrap(), got.decode(b.get_ids(), false).unwrap());
            }
        }
        assert_eq!(want.get_vocab(true), got.get_vocab(true));
        assert_eq!(want.get_added_tokens_decoder(), got.get_added_tokens_decoder());
        let model: serde_json::Value = serde_json::from_str(&got.to_string(false).unwrap()).unwrap();
        assert_eq!(model["model"]["merges"].as_array().map(Vec::len), Some(kept), "{text}");
    }

    #[test]
    fn a_subset_build_keeps_the_merges_its_texts_use() {
        let merges = r#"["a b", "ab c", "\u0120 a", "\u0120a b", "c d"]"#;
        let vocab = VOCAB.replace(r#""\u0120ab": 8}"#, r#""\u0120ab": 8, "cd": 9}"#);
        let d = doc(&bpe(merges, "").replace(VOCAB, &vocab), "");
        // The added token "ab" is split off before the model sees the text.
        same_for(&d, &["abc"], 0);
        let d = d.replace(r#""content": "ab""#, r#""content": "zz""#);
        // "abc": a b, ab c.
        same_for(&d, &["abc"], 2);
        // " ab" pre-tokenizes to "\u0120ab": a b, \u0120 a, \u0120a b.
        same_for(&d, &[" ab"], 3);
        // Added tokens split the text: "d", "abcd" (c d too).
        same_for(&d, &["abc", " ab", "d<|end|>abcd"], 5);
        same_for(&d, &[], 0);
        // A normalizer that changes the text, a pre-tokenizer that adds a
        // prefix: "ABC" is the word "\u0120abc".
        let d2 = d.replace(r#"{"type": "NFC"}"#, r#"{"type": "Lowercase"}"#).replace(
            r#""add_prefix_space": false, "trim_offsets": true"#,
            r#""add_prefix_space": true, "trim_offsets": true"#,
        );
        same_for(&d2, &["ABC"], 4);
        // Options the subset build does not take: every merge is kept.
        same_for(&d.replace(r#""end_of_word_suffix": null"#, r#""end_of_word_suffix": "d""#), &["abc"], 5);
        // A character out of the vocabulary (dropped, so "a" and "b" meet; or
        // the unknown token; or bytes): every merge is kept.
        same_for(&d, &["azb"], 5);
        same_for(&d.replace(r#""unk_token": null"#, r#""unk_token": "d""#), &["azb"], 5);
        let bytes = d
            .replace(r#""byte_fallback": false"#, r#""byte_fallback": true"#)
            .replace(r#""cd": 9}"#, r#""cd": 9, "<0x7A>": 10}"#);
        same_for(&bytes, &["azb"], 5);
        // Ids shared by two tokens, or with a hole: every merge is kept. (The
        // text of a shared id depends on the crate's map order, so the text
        // encodes to ids that are not shared.)
        same_for(&d.replace(r#""cd": 9}"#, r#""cd": 9, "q": 5}"#), &["ab"], 5);
        same_for(&d.replace(r#""cd": 9}"#, r#""cd": 20}"#), &["abc"], 5);
        // Metaspace puts its replacement in front: "ab" is the word "\u2581ab".
        let meta = d
            .replace(
                r#"{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}"#,
                r#"{"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": true}"#,
            )
            .replace(r#""cd": 9}"#, r#""cd": 9, "\u2581": 10, "\u2581a": 11}"#)
            .replace(r#""c d"]"#, r#""c d", "\u2581 a"]"#);
        same_for(&meta, &["ab"], 2);
        // A long word costs its length times the longest merge, not its square.
        same_for(&d, &[&"a".repeat(50_000)], 0);
        // A merge out of the vocabulary is the crate's error, whatever the texts use.
        let bad = doc(&bpe(r#"["a b", "x y"]"#, ""), "");
        let (w, g) = (Tokenizer::from_bytes(bad.as_bytes()), load_for(bad.as_bytes(), &["ab"]));
        assert_eq!(w.unwrap_err().to_string(), g.unwrap_err().to_string());
    }
}
