//! llama.cpp's SentencePiece-style tokenizer (`tokenizer.ggml.model = llama`).
//!
//! This is not SentencePiece's Unigram Viterbi search (which `tokenizers`
//! would give): llama.cpp starts from single UTF-8 characters and keeps
//! merging the adjacent pair whose concatenation is the highest-scoring token
//! (ties: the leftmost pair), then emits each piece as its token or, when the
//! piece is not a token, as byte tokens `<0xXX>`. The two disagree on real
//! vocabularies, and llama.cpp is the reference.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::vocab::Vocab;
use crate::error::{Error, Result};

struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    size: usize,
    id: u32,
}

impl PartialEq for Bigram {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Bigram {
    /// Max-heap order: higher score first, then the leftmost pair.
    fn cmp(&self, o: &Self) -> Ordering {
        self.score.total_cmp(&o.score).then_with(|| o.left.cmp(&self.left))
    }
}

#[derive(Clone, Copy)]
struct Sym {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
    /// The token of this piece, when it is one.
    id: Option<u32>,
}

/// Tokenizes already-escaped text (spaces as U+2581) and appends the ids.
pub fn tokenize(v: &Vocab, text: &str, out: &mut Vec<u32>) -> Result<()> {
    let bytes = text.as_bytes();
    let mut syms: Vec<Sym> = Vec::with_capacity(text.len());
    let n_chars = text.chars().count();
    for (i, (start, c)) in text.char_indices().enumerate() {
        let len = c.len_utf8();
        syms.push(Sym {
            start,
            len,
            prev: i.checked_sub(1),
            next: (i + 1 < n_chars).then_some(i + 1),
            id: v.ids.get(&bytes[start..start + len]).copied(),
        });
    }
    let mut heap = BinaryHeap::new();
    let try_pair = |syms: &[Sym], heap: &mut BinaryHeap<Bigram>, left: Option<usize>, right: Option<usize>| {
        let (Some(l), Some(r)) = (left, right) else { return };
        let (a, b) = (syms[l], syms[r]);
        let piece = &bytes[a.start..b.start + b.len];
        if let Some(&id) = v.ids.get(piece) {
            heap.push(Bigram { left: l, right: r, score: v.scores[id as usize], size: piece.len(), id });
        }
    };
    for i in 1..syms.len() {
        try_pair(&syms, &mut heap, Some(i - 1), Some(i));
    }
    while let Some(bg) = heap.pop() {
        let (l, r) = (syms[bg.left], syms[bg.right]);
        if l.len == 0 || r.len == 0 || l.len + r.len != bg.size {
            continue;
        }
        syms[bg.left].len += r.len;
        syms[bg.left].id = Some(bg.id);
        syms[bg.left].next = r.next;
        syms[bg.right].len = 0;
        if let Some(nx) = r.next {
            syms[nx].prev = Some(bg.left);
        }
        try_pair(&syms, &mut heap, l.prev, Some(bg.left));
        try_pair(&syms, &mut heap, Some(bg.left), syms[bg.left].next);
    }
    let mut i = if syms.is_empty() { None } else { Some(0) };
    while let Some(k) = i {
        let s = syms[k];
        match s.id {
            Some(id) => out.push(id),
            None => {
                for &b in &bytes[s.start..s.start + s.len] {
                    out.push(byte_token(v, b)?);
                }
            }
        }
        i = s.next;
    }
    Ok(())
}

/// The token of one byte: `<0xXX>`, else the byte itself as a token.
pub fn byte_token(v: &Vocab, b: u8) -> Result<u32> {
    let hex = format!("<0x{b:02X}>");
    v.ids.get(hex.as_bytes()).or_else(|| v.ids.get(&[b][..])).copied().ok_or_else(|| {
        Error::Other(format!(
            "tokenizer: the text needs byte {b:#04x}, but the vocabulary has no byte token '{hex}' (no byte fallback)"
        ))
    })
}
