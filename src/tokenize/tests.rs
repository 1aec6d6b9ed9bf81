//! Unit tests on small hand-made vocabularies.

use super::*;
use crate::gguf::{Value, ValueType};

const UNK: i32 = 2;
const CONTROL: i32 = 3;
const USER: i32 = 4;
const BYTE: i32 = 6;

/// An SPM vocabulary: <unk> <s> </s>, the 256 byte tokens, then `pieces`.
fn spm_md(pieces: &[(&str, f32, i32)], with_bytes: bool) -> Metadata {
    let mut toks: Vec<(String, f32, i32)> =
        vec![("<unk>".into(), 0.0, UNK), ("<s>".into(), 0.0, CONTROL), ("</s>".into(), 0.0, CONTROL)];
    if with_bytes {
        toks.extend((0..=255u8).map(|b| (format!("<0x{b:02X}>"), 0.0, BYTE)));
    }
    toks.extend(pieces.iter().map(|&(t, s, ty)| (t.to_string(), s, ty)));
    let mut md = Metadata::new();
    md.push("tokenizer.ggml.model", Value::string("llama"));
    md.push("tokenizer.ggml.tokens", Value::string_array(toks.iter().map(|t| t.0.clone())));
    md.push("tokenizer.ggml.scores", Value::array(ValueType::F32, toks.iter().map(|t| Value::F32(t.1)).collect()));
    md.push("tokenizer.ggml.token_type", Value::array(ValueType::I32, toks.iter().map(|t| Value::I32(t.2)).collect()));
    md.push("tokenizer.ggml.bos_token_id", Value::U32(1));
    md.push("tokenizer.ggml.eos_token_id", Value::U32(2));
    md
}

fn spm() -> Tokenizer {
    Tokenizer::from_metadata(&spm_md(
        &[
            ("▁", -1.0, 1),
            ("a", -2.0, 1),
            ("b", -2.0, 1),
            ("▁a", -1.5, 1),
            ("ab", -0.5, 1),
            ("▁ab", -3.0, 1),
            ("<ctrl>", 0.0, CONTROL),
            ("<user>", 0.0, USER),
        ],
        true,
    ))
    .unwrap()
}

fn ids(t: &Tokenizer, texts: &[&str]) -> Vec<u32> {
    texts.iter().map(|s| t.token_id(s).unwrap_or_else(|| panic!("no token {s}"))).collect()
}

#[test]
fn spm_empty_and_bos() {
    let t = spm();
    assert_eq!(t.encode("", false, false).unwrap(), Vec::<u32>::new());
    assert_eq!(t.encode("", true, false).unwrap(), vec![1]);
    assert!(t.add_bos() && !t.add_eos());
    assert_eq!((t.bos(), t.eos(), t.n_vocab()), (Some(1), Some(2), 3 + 256 + 8));
}

#[test]
fn spm_merges_by_score() {
    let t = spm();
    // "▁ab": pairs (▁,a) -1.5 and (a,b) -0.5: "ab" first, then (▁,ab) -> "▁ab".
    assert_eq!(t.encode("ab", false, false).unwrap(), ids(&t, &["▁ab"]));
    // Leading spaces each become ▁ (plus the prefix space).
    assert_eq!(t.encode("  a", false, false).unwrap(), ids(&t, &["▁", "▁", "▁a"]));
    assert_eq!(t.encode("ab", true, false).unwrap()[0], 1);
}

#[test]
fn spm_add_space_prefix_off() {
    let mut md = spm_md(&[("▁", -1.0, 1), ("a", -2.0, 1), ("▁a", -1.5, 1)], true);
    md.push("tokenizer.ggml.add_space_prefix", Value::Bool(false));
    let t = Tokenizer::from_metadata(&md).unwrap();
    assert_eq!(t.encode("a", false, false).unwrap(), ids(&t, &["a"]));
    assert_eq!(t.encode(" a", false, false).unwrap(), ids(&t, &["▁a"]));
}

#[test]
fn spm_byte_fallback_and_unknown_bytes() {
    let t = spm();
    assert_eq!(t.encode("é", false, false).unwrap(), ids(&t, &["▁", "<0xC3>", "<0xA9>"]));
    assert_eq!(t.decode(&t.encode("é ab", false, false).unwrap(), false), " é ab");
    // Without byte tokens, a character outside the vocabulary is an error, not a panic.
    let t = Tokenizer::from_metadata(&spm_md(&[("▁", -1.0, 1), ("a", -1.0, 1)], false)).unwrap();
    let e = t.encode("aé", false, false).unwrap_err().to_string();
    assert!(e.contains("0xc3") && e.contains("<0xC3>"), "{e}");
}

#[test]
fn spm_special_tokens() {
    let t = spm();
    let ctrl = t.token_id("<ctrl>").unwrap();
    let user = t.token_id("<user>").unwrap();
    // parse_special: the control token's text is that token; a space prefix follows it.
    assert_eq!(t.encode("a<ctrl>a", false, true).unwrap(), [ids(&t, &["▁a"]), vec![ctrl], ids(&t, &["▁a"])].concat());
    // Without parse_special it is plain text (bytes here); user-defined tokens split anyway.
    let plain = t.encode("<ctrl>", false, false).unwrap();
    assert!(!plain.contains(&ctrl) && plain.len() > 1);
    assert_eq!(t.encode("<user>", false, false).unwrap(), vec![user]);
    assert_eq!(t.decode(&[ctrl], false), "");
    assert_eq!(t.decode(&[ctrl], true), "<ctrl>");
}

/// A byte-level BPE vocabulary: the 256 byte characters, then `extra`.
fn bpe_md(pre: &str, extra: &[&str], merges: &[&str]) -> Metadata {
    let mut toks: Vec<String> = (0..=255u8).map(|b| unicode::byte_to_char(b).to_string()).collect();
    toks.extend(extra.iter().map(|s| s.to_string()));
    let mut md = Metadata::new();
    md.push("tokenizer.ggml.model", Value::string("gpt2"));
    md.push("tokenizer.ggml.pre", Value::string(pre));
    md.push("tokenizer.ggml.tokens", Value::string_array(toks.clone()));
    let types = toks.iter().map(|t| Value::I32(if t.starts_with("<|") { CONTROL } else { 1 })).collect();
    md.push("tokenizer.ggml.token_type", Value::array(ValueType::I32, types));
    md.push("tokenizer.ggml.merges", Value::string_array(merges.iter().map(|s| s.to_string())));
    md.push("tokenizer.ggml.bos_token_id", Value::U32(256 + extra.len() as u32 - 1));
    md
}

#[test]
fn bpe_merges_by_rank() {
    let md = bpe_md("gpt-2", &["ab", "Ġa", "Ġab", "<|bos|>"], &["a b", "Ġ a", "Ġ ab"]);
    let t = Tokenizer::from_metadata(&md).unwrap();
    assert_eq!(t.encode(" ab", false, false).unwrap(), ids(&t, &["Ġab"]));
    assert_eq!(t.encode("ba", false, false).unwrap(), ids(&t, &["b", "a"]));
    assert_eq!(t.encode("", true, false).unwrap(), Vec::<u32>::new(), "gpt-2 does not add BOS");
    assert_eq!(t.decode(&t.encode("héllo\n world", false, false).unwrap(), false), "héllo\n world");
    let bos = t.token_id("<|bos|>").unwrap();
    assert_eq!(t.encode("<|bos|>", false, true).unwrap(), vec![bos]);
    assert_ne!(t.encode("<|bos|>", false, false).unwrap(), vec![bos]);
}

#[test]
fn bpe_llama3_adds_bos_and_ignores_merges() {
    // "ab" is a token but there is no merge for it: llama-bpe takes whole words that are tokens.
    let md = bpe_md("llama-bpe", &["ab", "<|begin_of_text|>"], &[]);
    let t = Tokenizer::from_metadata(&md).unwrap();
    assert!(t.add_bos());
    let bos = t.token_id("<|begin_of_text|>").unwrap();
    assert_eq!(t.encode("ab", true, false).unwrap(), [vec![bos], ids(&t, &["ab"])].concat());
    let md = bpe_md("gpt-2", &["ab", "<|x|>"], &[]);
    let t = Tokenizer::from_metadata(&md).unwrap();
    assert_eq!(t.encode("ab", true, false).unwrap(), ids(&t, &["a", "b"]));
}

fn err(md: &Metadata) -> String {
    Tokenizer::from_metadata(md).unwrap_err().to_string()
}

#[test]
fn malformed_metadata_errors_name_the_key() {
    let good = spm_md(&[("a", 0.0, 1)], true);
    assert!(Tokenizer::from_metadata(&good).is_ok());

    let mut md = good.clone();
    md.remove("tokenizer.ggml.tokens");
    assert!(err(&md).contains("tokenizer.ggml.tokens") && err(&md).contains("missing"));

    let mut md = good.clone();
    md.remove("tokenizer.ggml.model");
    assert!(err(&md).contains("tokenizer.ggml.model"));

    let mut md = good.clone();
    md.set("tokenizer.ggml.model", Value::string("mystery"));
    assert!(err(&md).contains("mystery"));

    let mut md = good.clone();
    md.set("tokenizer.ggml.model", Value::string("t5"));
    assert!(matches!(Tokenizer::from_metadata(&md), Err(crate::Error::Unsupported(m)) if m.contains("t5")));

    let mut md = good.clone();
    md.set("tokenizer.ggml.scores", Value::array(ValueType::F32, vec![Value::F32(0.0); 3]));
    assert!(err(&md).contains("tokenizer.ggml.scores") && err(&md).contains("3 scores"));

    let mut md = good.clone();
    md.set("tokenizer.ggml.scores", Value::string("x"));
    assert!(err(&md).contains("tokenizer.ggml.scores"));

    let mut md = good.clone();
    md.set("tokenizer.ggml.token_type", Value::array(ValueType::I32, vec![Value::I32(1)]));
    assert!(err(&md).contains("tokenizer.ggml.token_type"));

    let mut md = good.clone();
    md.set("tokenizer.ggml.tokens", Value::array(ValueType::U32, vec![Value::U32(1)]));
    assert!(err(&md).contains("tokenizer.ggml.tokens"));

    let mut md = good.clone();
    md.set("tokenizer.ggml.tokens", Value::string_array(["a", "a", "b"]));
    md.remove("tokenizer.ggml.scores");
    md.remove("tokenizer.ggml.token_type");
    assert!(err(&md).contains("repeats"));

    let mut md = good.clone();
    md.set("tokenizer.ggml.bos_token_id", Value::U32(1_000_000));
    assert!(err(&md).contains("tokenizer.ggml.bos_token_id") && err(&md).contains("out of range"));

    let mut md = good.clone();
    md.set("tokenizer.ggml.eos_token_id", Value::string("2"));
    assert!(err(&md).contains("tokenizer.ggml.eos_token_id"));

    let mut md = good.clone();
    md.set("tokenizer.ggml.add_bos_token", Value::U8(1));
    assert!(err(&md).contains("tokenizer.ggml.add_bos_token"));

    // BPE: merges missing, without a space, or naming unknown tokens; unknown pre-tokenizer.
    let bpe = bpe_md("gpt-2", &["ab", "<|x|>"], &["a b"]);
    assert!(Tokenizer::from_metadata(&bpe).is_ok());
    let mut md = bpe.clone();
    md.remove("tokenizer.ggml.merges");
    assert!(err(&md).contains("tokenizer.ggml.merges"));
    let mut md = bpe.clone();
    md.set("tokenizer.ggml.merges", Value::string_array(["ab"]));
    assert!(err(&md).contains("tokenizer.ggml.merges") && err(&md).contains("no space"));
    let mut md = bpe.clone();
    md.set("tokenizer.ggml.merges", Value::string_array(["a zz"]));
    assert!(err(&md).contains("'zz'") && err(&md).contains("not a token"));
    let mut md = bpe.clone();
    md.set("tokenizer.ggml.pre", Value::string("no-such-pre"));
    assert!(err(&md).contains("no-such-pre"));
    let mut md = bpe.clone();
    md.set("tokenizer.ggml.pre", Value::string("kimi-k2"));
    assert!(matches!(Tokenizer::from_metadata(&md), Err(crate::Error::Unsupported(m)) if m.contains("kimi-k2")));
    // A vocabulary that adds BOS must have one (the BPE default, 11, is outside these 5 tokens).
    let mut md = Metadata::new();
    md.push("tokenizer.ggml.model", Value::string("gpt2"));
    md.push("tokenizer.ggml.tokens", Value::string_array(["a", "b", "c", "d", "e"]));
    md.push("tokenizer.ggml.merges", Value::string_array(["a b"]));
    assert!(Tokenizer::from_metadata(&md).unwrap().bos().is_none());
    md.push("tokenizer.ggml.add_bos_token", Value::Bool(true));
    assert!(err(&md).contains("bos_token_id"));
}

#[test]
fn phi3_special_tokens_strip_spaces_to_their_right() {
    let mut md = spm_md(&[("▁", -1.0, 1), ("a", -2.0, 1), ("▁a", -1.5, 1), ("<ctrl>", 0.0, CONTROL)], true);
    let plain = Tokenizer::from_metadata(&md).unwrap();
    let ctrl = plain.token_id("<ctrl>").unwrap();
    assert_eq!(plain.encode("<ctrl> a", false, true).unwrap(), [vec![ctrl], ids(&plain, &["▁", "▁a"])].concat());
    md.push("general.name", Value::string("Phi-3 Mini"));
    let phi3 = Tokenizer::from_metadata(&md).unwrap();
    assert_eq!(phi3.encode("<ctrl> a", false, true).unwrap(), [vec![ctrl], ids(&phi3, &["▁a"])].concat());
}
