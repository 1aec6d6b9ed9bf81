//! llama.cpp's BPE tokenizer (`tokenizer.ggml.model = gpt2`): each word of
//! the pre-tokenizer is GPT-2 byte-encoded (unless the pre-tokenizer works
//! on raw UTF-8, as Gemma 4's), split into characters, and the adjacent pair
//! with the lowest merge rank is merged until none is left (ties: leftmost).
//! A final piece that is not a token falls back to one token per byte of its
//! text, where such a token exists (llama.cpp silently drops the others).
//!
//! `tokenizers`' BPE model differs from llama.cpp in that fallback and in
//! `ignore_merges` details, so the merge loop is our own.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::pretokenize::PreTokenizer;
use super::unicode;
use super::vocab::Vocab;
use crate::error::Result;

#[derive(PartialEq, Eq)]
struct Bigram {
    rank: u32,
    left: usize,
    right: usize,
    left_len: usize,
    right_len: usize,
    merged: Option<u32>,
}

impl Ord for Bigram {
    /// Max-heap order: lowest rank first, then the leftmost pair.
    fn cmp(&self, o: &Self) -> Ordering {
        o.rank.cmp(&self.rank).then_with(|| o.left.cmp(&self.left))
    }
}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

#[derive(Clone, Copy)]
struct Sym {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
    id: Option<u32>,
}

/// Reusable buffers for tokenizing many words.
#[derive(Default)]
pub struct Session {
    syms: Vec<Sym>,
    heap: BinaryHeap<Bigram>,
    word: String,
}

impl Session {
    /// Tokenizes one text fragment (no special tokens in it) and appends the ids.
    pub fn tokenize(&mut self, v: &Vocab, pre: &PreTokenizer, text: &str, out: &mut Vec<u32>) -> Result<()> {
        for w in pre.split(text)? {
            if w.is_empty() {
                continue;
            }
            self.word.clear();
            if pre.byte_encode {
                self.word.extend(w.bytes().map(unicode::byte_to_char));
            } else {
                self.word.push_str(w);
            }
            let word = std::mem::take(&mut self.word);
            self.word_tokens(v, pre, &word, out);
            self.word = word;
        }
        Ok(())
    }

    fn word_tokens(&mut self, v: &Vocab, pre: &PreTokenizer, word: &str, out: &mut Vec<u32>) {
        let bytes = word.as_bytes();
        if v.ignore_merges || (v.pre == "gemma4" && bytes.iter().all(|&b| b == b'\n')) {
            if let Some(&id) = v.ids.get(bytes) {
                out.push(id);
                return;
            }
        }
        self.syms.clear();
        self.heap.clear();
        for (start, c) in word.char_indices() {
            let len = c.len_utf8();
            let i = self.syms.len();
            self.syms.push(Sym {
                start,
                len,
                prev: i.checked_sub(1),
                next: (start + len < bytes.len()).then_some(i + 1),
                id: v.ids.get(&bytes[start..start + len]).copied(),
            });
        }
        let push = |syms: &[Sym], heap: &mut BinaryHeap<Bigram>, left: Option<usize>, right: Option<usize>| {
            let (Some(l), Some(r)) = (left, right) else { return };
            let (a, b) = (syms[l], syms[r]);
            let (Some(la), Some(rb)) = (a.id, b.id) else { return };
            if let Some(&(rank, merged)) = v.merges.get(&(la, rb)) {
                heap.push(Bigram { rank, left: l, right: r, left_len: a.len, right_len: b.len, merged });
            }
        };
        for i in 1..self.syms.len() {
            push(&self.syms, &mut self.heap, Some(i - 1), Some(i));
        }
        while let Some(bg) = self.heap.pop() {
            let (l, r) = (self.syms[bg.left], self.syms[bg.right]);
            if l.len != bg.left_len || r.len != bg.right_len || l.len == 0 || r.len == 0 {
                continue;
            }
            let s = &mut self.syms[bg.left];
            s.len += r.len;
            s.id = bg.merged;
            s.next = r.next;
            self.syms[bg.right].len = 0;
            if let Some(nx) = r.next {
                self.syms[nx].prev = Some(bg.left);
            }
            push(&self.syms, &mut self.heap, l.prev, Some(bg.left));
            push(&self.syms, &mut self.heap, Some(bg.left), self.syms[bg.left].next);
        }
        let mut i = if self.syms.is_empty() { None } else { Some(0) };
        while let Some(k) = i {
            let s = self.syms[k];
            match s.id {
                Some(id) => out.push(id),
                None => {
                    for &b in &bytes[s.start..s.start + s.len] {
                        let id = if pre.byte_encode {
                            v.ids.get(&[b][..]).copied()
                        } else {
                            v.ids.get(format!("<0x{b:02X}>").as_bytes()).copied()
                        };
                        out.extend(id);
                    }
                }
            }
            i = s.next;
        }
    }
}
