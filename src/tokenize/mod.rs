//! Tokenization from a GGUF's own vocabulary, with the ids llama.cpp's
//! `llama_tokenize` gives (what `llama-perplexity` and `llama-imatrix` feed
//! the model).
//!
//! * [`Tokenizer::from_metadata`] reads and validates `tokenizer.ggml.*`.
//! * [`Tokenizer::encode`]: special/control token texts are split out first
//!   (with `parse_special`; user-defined tokens always), then each text
//!   fragment goes through the vocabulary's algorithm: SentencePiece-style
//!   merges (`llama`, [`spm`]) or pre-split + ranked BPE merges (`gpt2`,
//!   [`bpe`] with [`pretokenize`]).
//!
//! Spec as implemented: `formats/tokenizer.md`.

mod bpe;
mod pretokenize;
mod spm;
mod unicode;
mod vocab;

use crate::error::Result;
use crate::gguf::Metadata;
pub use vocab::Kind;
use vocab::{attr, Vocab};

/// A GGUF vocabulary ready to tokenize text.
#[derive(Debug)]
pub struct Tokenizer {
    vocab: Vocab,
    pre: Option<pretokenize::PreTokenizer>,
}

/// A piece of the input: text still to tokenize, or a special token found in it.
enum Fragment<'t> {
    Text(&'t str),
    Token(u32),
}

impl Tokenizer {
    /// Reads the tokenizer from GGUF metadata. Every key is checked: a
    /// missing or malformed one is an error naming it; unsupported tokenizer
    /// or pre-tokenizer types are an error naming the type.
    pub fn from_metadata(md: &Metadata) -> Result<Tokenizer> {
        let vocab = Vocab::from_metadata(md)?;
        let pre = match vocab.kind {
            Kind::Bpe => Some(pretokenize::PreTokenizer::new(&vocab.pre)?),
            Kind::Spm => None,
        };
        Ok(Tokenizer { vocab, pre })
    }

    /// The token ids of `text`, as llama.cpp's `llama_tokenize(text,
    /// add_special, parse_special)`: `add_special` adds BOS/EOS as the
    /// vocabulary asks (`add_bos()`, `add_eos()`); `parse_special` lets the
    /// text of control tokens (e.g. `<|im_start|>`) become those tokens.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<u32>> {
        let v = &self.vocab;
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        let fragments = if text.is_empty() { Vec::new() } else { self.partition(text, parse_special) };
        if add_special && v.add_bos {
            out.extend(v.bos);
        }
        match v.kind {
            Kind::Spm => {
                // A space prefix goes before the first fragment and after
                // every special token.
                let mut prev_special = true;
                let mut buf = String::new();
                for f in &fragments {
                    match *f {
                        Fragment::Text(t) => {
                            buf.clear();
                            if v.add_space_prefix && prev_special {
                                buf.push('\u{2581}');
                            }
                            for c in t.chars() {
                                buf.push(if c == ' ' { '\u{2581}' } else { c });
                            }
                            spm::tokenize(v, &buf, &mut out)?;
                            prev_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                    }
                }
            }
            Kind::Bpe => {
                let pre = self.pre.as_ref().expect("BPE has a pre-tokenizer");
                let mut session = bpe::Session::default();
                let mut buf = String::new();
                for f in &fragments {
                    match *f {
                        Fragment::Text(t) if v.escape_whitespaces => {
                            buf.clear();
                            buf.extend(t.chars().map(|c| if c == ' ' { '\u{2581}' } else { c }));
                            session.tokenize(v, pre, &buf, &mut out)?;
                        }
                        Fragment::Text(t) => session.tokenize(v, pre, t, &mut out)?,
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
        }
        if add_special && v.add_eos {
            out.extend(v.eos);
        }
        Ok(out)
    }

    /// Splits the special tokens' texts out of `text`, each special token in
    /// turn (longest text first), every occurrence left to right. Control
    /// and unknown tokens only with `parse_special`; user-defined ones always.
    fn partition<'t>(&self, text: &'t str, parse_special: bool) -> Vec<Fragment<'t>> {
        let v = &self.vocab;
        let mut frags = vec![Fragment::Text(text)];
        for &id in &v.special_cache {
            let a = v.attrs[id as usize];
            if !parse_special && a & (attr::CONTROL | attr::UNKNOWN) != 0 {
                continue;
            }
            // A token text that is not UTF-8 cannot be cut out of a &str cleanly.
            let Ok(needle) = std::str::from_utf8(&v.texts[id as usize]) else { continue };
            if !frags.iter().any(|f| matches!(f, Fragment::Text(t) if t.contains(needle))) {
                continue;
            }
            let mut next = Vec::with_capacity(frags.len() + 2);
            for f in frags {
                let Fragment::Text(mut t) = f else {
                    next.push(f);
                    continue;
                };
                while let Some(pos) = t.find(needle) {
                    let mut left = &t[..pos];
                    if a & attr::LSTRIP != 0 {
                        left = left.trim_end_matches(is_c_space);
                    }
                    if !left.is_empty() {
                        next.push(Fragment::Text(left));
                    }
                    next.push(Fragment::Token(id));
                    t = &t[pos + needle.len()..];
                    if a & attr::RSTRIP != 0 {
                        t = t.trim_start_matches(is_c_space);
                    }
                }
                if !t.is_empty() {
                    next.push(Fragment::Text(t));
                }
            }
            frags = next;
        }
        frags
    }

    /// Whether `encode(.., add_special = true, ..)` starts with BOS.
    pub fn add_bos(&self) -> bool {
        self.vocab.add_bos
    }
    /// Whether `encode(.., add_special = true, ..)` ends with EOS.
    pub fn add_eos(&self) -> bool {
        self.vocab.add_eos
    }
    /// Whether the vocabulary wants a separator token appended (BERT-style).
    pub fn add_sep(&self) -> bool {
        self.vocab.add_sep
    }
    /// The `tokenizer.ggml.model` value.
    pub fn model(&self) -> &str {
        &self.vocab.model
    }
    pub fn bos(&self) -> Option<u32> {
        self.vocab.bos
    }
    pub fn eos(&self) -> Option<u32> {
        self.vocab.eos
    }
    pub fn eot(&self) -> Option<u32> {
        self.vocab.eot
    }
    pub fn unk(&self) -> Option<u32> {
        self.vocab.unk
    }
    pub fn sep(&self) -> Option<u32> {
        self.vocab.sep
    }
    pub fn pad(&self) -> Option<u32> {
        self.vocab.pad
    }
    pub fn n_vocab(&self) -> usize {
        self.vocab.texts.len()
    }
    pub fn kind(&self) -> Kind {
        self.vocab.kind
    }
    /// The `tokenizer.ggml.pre` value in effect (empty for SPM).
    pub fn pre(&self) -> &str {
        &self.vocab.pre
    }
    /// The token's text as stored in the vocabulary.
    pub fn token_text(&self, id: u32) -> Option<&[u8]> {
        self.vocab.texts.get(id as usize).map(|t| &**t)
    }
    /// The token id of an exact token text.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.vocab.id(text)
    }

    /// The bytes a token stands for, as llama.cpp's `token_to_piece`
    /// (control tokens give nothing unless `special`).
    pub fn token_to_piece(&self, id: u32, special: bool) -> Vec<u8> {
        let v = &self.vocab;
        let Some(text) = v.texts.get(id as usize) else { return Vec::new() };
        let a = v.attrs[id as usize];
        if a & attr::CONTROL != 0 {
            return if special { text.to_vec() } else { Vec::new() };
        }
        if a & attr::USER_DEFINED != 0 {
            return text.to_vec();
        }
        let unescape = |t: &[u8]| String::from_utf8_lossy(t).replace('\u{2581}', " ").into_bytes();
        match v.kind {
            Kind::Spm => {
                if a & attr::BYTE != 0 {
                    return byte_of(text).map(|b| vec![b]).unwrap_or_default();
                }
                if a & attr::UNKNOWN != 0 {
                    return "\u{2585}".as_bytes().to_vec();
                }
                unescape(text)
            }
            Kind::Bpe if self.pre.as_ref().is_some_and(|p| !p.byte_encode) => {
                if a & attr::BYTE != 0 {
                    return byte_of(text).map(|b| vec![b]).unwrap_or_default();
                }
                if v.escape_whitespaces {
                    unescape(text)
                } else {
                    text.to_vec()
                }
            }
            Kind::Bpe => match std::str::from_utf8(text) {
                Ok(s) => s.chars().map(|c| unicode::char_to_byte(c).unwrap_or(b'?')).collect(),
                Err(_) => text.to_vec(),
            },
        }
    }

    /// The text of a sequence of tokens (bytes joined, invalid UTF-8 replaced).
    pub fn decode(&self, ids: &[u32], special: bool) -> String {
        let bytes: Vec<u8> = ids.iter().flat_map(|&id| self.token_to_piece(id, special)).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// C's `isspace` in the "C" locale.
fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0B' | '\x0C' | '\r')
}

/// The byte of a `<0xXX>` token.
fn byte_of(text: &[u8]) -> Option<u8> {
    let s = std::str::from_utf8(text).ok()?;
    u8::from_str_radix(s.strip_prefix("<0x")?.strip_suffix('>')?, 16).ok()
}

#[cfg(test)]
mod tests;
