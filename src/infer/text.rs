//! Text to token ids for `eval` and `imatrix`, as llama.cpp's
//! `common_tokenize(ctx, text, add_special = true)` does.
//!
//! Tokenizing from a GGUF's vocabulary is the job of the tokenizer module
//! (being built on its own branch); until it is merged, [`tokenize`] says so
//! and the commands take the ids directly (`--tokens FILE`).

use std::path::Path;

use crate::error::{Error, Result};
use crate::gguf::Metadata;

/// The BOS token llama.cpp writes over the first token of each chunk, when
/// the vocabulary adds one (`tokenizer.ggml.add_bos_token`; SentencePiece
/// vocabularies add it when the key is absent).
pub fn chunk_bos(md: &Metadata) -> Option<u32> {
    let add = match md.get("tokenizer.ggml.add_bos_token").and_then(|v| v.as_bool()) {
        Some(b) => b,
        None => md.get_str("tokenizer.ggml.model") == Some("llama"),
    };
    if !add {
        return None;
    }
    md.get_u64("tokenizer.ggml.bos_token_id").map(|b| b as u32)
}

/// The vocabulary size the tokenizer metadata declares (`tokenizer.ggml.tokens`).
pub fn vocab_tokens(md: &Metadata) -> Option<Vec<&str>> {
    let a = md.get("tokenizer.ggml.tokens")?.as_array()?;
    a.values.iter().map(|v| v.as_str()).collect()
}

/// Tokenizes `text` with the model's own vocabulary.
pub fn tokenize(_md: &Metadata, _text: &str) -> Result<Vec<u32>> {
    Err(Error::Unsupported(
        "tokenizing text from a GGUF vocabulary is not available in this build yet; \
         pass the token ids with --tokens FILE (as llama-tokenize --ids prints them)"
            .into(),
    ))
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
    use crate::gguf::Value;

    #[test]
    fn parses_id_lists() {
        assert_eq!(parse_token_ids("[1, 2, 3]\n").unwrap(), vec![1, 2, 3]);
        assert_eq!(parse_token_ids("4 5\n6").unwrap(), vec![4, 5, 6]);
        assert!(parse_token_ids("1 x").unwrap_err().contains("item 1"));
        assert!(parse_token_ids("").unwrap().is_empty());
    }

    #[test]
    fn bos_follows_add_bos_token() {
        let mut md = Metadata::new();
        md.push("tokenizer.ggml.model", Value::string("llama"));
        md.push("tokenizer.ggml.bos_token_id", Value::U32(1));
        assert_eq!(chunk_bos(&md), Some(1));
        md.push("tokenizer.ggml.add_bos_token", Value::Bool(false));
        assert_eq!(chunk_bos(&md), None);
    }
}
