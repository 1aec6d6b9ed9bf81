//! Text to token ids for `eval` and `imatrix`, as llama.cpp's
//! `common_tokenize(ctx, text, add_special = true)` does.
//!
//! The tokenizer is `crate::tokenize` (llama.cpp-identical, from the GGUF
//! vocabulary metadata; a Hugging Face directory's metadata is built as
//! `convert` writes it). `--tokens FILE` takes ids directly.

use std::path::Path;

use crate::error::{Error, Result};
use crate::gguf::Metadata;
use crate::tokenize::Tokenizer;

/// The BOS token llama.cpp writes over the first token of each chunk, when
/// the vocabulary adds one (`llama_vocab_get_add_bos`). A model without a
/// vocabulary (token ids given directly) gets none.
pub fn chunk_bos(md: &Metadata) -> Result<Option<u32>> {
    if md.get("tokenizer.ggml.model").is_none() {
        return Ok(None);
    }
    let t = Tokenizer::from_metadata(md)?;
    Ok(if t.add_bos() { t.bos() } else { None })
}

/// The vocabulary size the tokenizer metadata declares (`tokenizer.ggml.tokens`).
pub fn vocab_tokens(md: &Metadata) -> Option<Vec<&str>> {
    let a = md.get("tokenizer.ggml.tokens")?.as_array()?;
    a.values.iter().map(|v| v.as_str()).collect()
}

/// Tokenizes `text` with the model's own vocabulary, as llama-perplexity and
/// llama-imatrix do (`common_tokenize(ctx, text, add_special = true,
/// parse_special = false)`).
pub fn tokenize(md: &Metadata, text: &str) -> Result<Vec<u32>> {
    let t = Tokenizer::from_metadata(md)?;
    if t.add_eos() {
        // llama-perplexity asserts the same: an appended EOS would be scored.
        return Err(Error::Unsupported(
            "the vocabulary appends EOS to every text (add_eos_token); perplexity is not defined for it".into(),
        ));
    }
    t.encode(text, true, false)
}

/// Reads a text to evaluate: UTF-8, not empty (an error naming the file otherwise).
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, "read", e))?;
    let text = String::from_utf8(bytes).map_err(|_| Error::input(path, "the text is not UTF-8"))?;
    if text.trim().is_empty() {
        return Err(Error::input(path, "the text is empty"));
    }
    Ok(text)
}

/// Reads token ids: a JSON array or integers separated by white space or commas
/// (`llama-tokenize --ids` prints `[1, 2, 3]`).
pub fn read_token_ids(path: &Path) -> Result<Vec<u32>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, "read", e))?;
    parse_token_ids(&text).map_err(|msg| Error::Input { path: path.to_path_buf(), msg })
}

fn parse_token_ids(text: &str) -> std::result::Result<Vec<u32>, String> {
    let body = text.trim().trim_start_matches('[').trim_end_matches(']');
    body.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|s| !s.is_empty())
        .enumerate()
        .map(|(i, s)| s.parse::<u32>().map_err(|_| format!("token ids: item {i} ('{s}') is not a token id")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_id_lists() {
        assert_eq!(parse_token_ids("[1, 2, 3]\n").unwrap(), vec![1, 2, 3]);
        assert_eq!(parse_token_ids("4 5\n6").unwrap(), vec![4, 5, 6]);
        assert!(parse_token_ids("1 x").unwrap_err().contains("item 1"));
        assert!(parse_token_ids("").unwrap().is_empty());
    }
}
