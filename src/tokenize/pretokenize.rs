//! BPE pre-tokenization: splitting text into words before the merges, as
//! llama.cpp's `unicode_regex_split` does.
//!
//! Each `tokenizer.ggml.pre` type names a list of regexes, applied in turn;
//! each regex re-splits every piece left by the previous one, and the text
//! between two matches becomes a piece of its own. llama.cpp runs most of
//! them with `std::regex` over a "collapsed" text, where every non-ASCII
//! codepoint is replaced by one stand-in per Unicode class, and `\p{L}` etc.
//! are rewritten into classes over those stand-ins (so `\p{Lu}` means every
//! letter there, not only upper case). We reproduce that with `fancy-regex`
//! over the same collapsed text, rather than running the original Unicode
//! regexes, because the two differ (e.g. on `\p{Lu}`, on `\s` for U+0085).
//! For the common GPT-2 and Llama-3/Qwen2 patterns llama.cpp uses
//! hand-written matchers; we do the same (`Family`), for speed; unit tests
//! check them against the regex path.

use super::unicode::{self, Class};
use crate::error::{Error, Result};

/// One splitting step.
#[derive(Debug)]
enum Step {
    /// A hand-written matcher of one of the common pattern families.
    Family(Family),
    /// A regex run over collapsed text (when it uses `\p{..}`) or over the
    /// text with non-ASCII whitespace replaced by `\x0B`.
    Regex { re: fancy_regex::Regex, collapsed: bool },
}

/// The shape of the GPT-2 / Llama-3 / Qwen2 patterns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Family {
    /// Llama-3 style (`(?i:'s|..)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`)
    /// rather than GPT-2 style (`'s|..| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`).
    llama3: bool,
    /// Longest digit run in one piece (`None`: unbounded).
    max_digits: Option<usize>,
    /// Letters runs take combining marks too (`[\p{L}\p{M}]+`, Qwen3.5).
    marks: bool,
}

/// A pre-tokenizer: its splitting steps and whether words are then
/// GPT-2 byte-encoded.
#[derive(Debug)]
pub struct PreTokenizer {
    steps: Vec<Step>,
    pub byte_encode: bool,
}

const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN35: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const STARCODER_DIGITS: &[&str] = &[r"\p{N}", GPT2];
const NEWLINES: &str = r"[^\n]+|[\n]+";

/// The regexes of a `tokenizer.ggml.pre` value, llama.cpp's table
/// (`llm_tokenizer_bpe` in `src/llama-vocab.cpp`), and whether the words are
/// GPT-2 byte-encoded. `Err` names pre-tokenizers llama.cpp knows but we do
/// not implement.
pub(crate) fn regexes_for(pre: &str) -> Option<std::result::Result<(Vec<&'static str>, bool), &'static str>> {
    let v = |r: &[&'static str]| Some(Ok((r.to_vec(), true)));
    match pre {
        "" | "default" => v(&[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"]),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0" | "lfm2"
        | "jina-v5-nano" | "dbrx" | "smaug-bpe" => v(&[LLAMA3]),
        "chatglm-bpe" | "glm4" | "glm5" => v(&[LLAMA3]),
        "jais-2" => v(&[
            r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s{512}(?!\S)|\s{256}(?!\S)|\s{128}(?!\S)|\s{64}(?!\S)|\s{32}(?!\S)|\s{16}(?!\S)|\s{8}(?!\S)|\s{4}(?!\S)|\s{1,2}(?!\S)|\s{1}",
        ]),
        "deepseek-llm" => v(&[
            "[\r\n]",
            "\\s?[A-Za-z\u{B5}\u{C0}-\u{D6}\u{D8}-\u{F6}\u{F8}-\u{1BA}\u{1BC}-\u{1BF}\u{1C4}-\u{293}\u{295}-\u{2AF}\u{370}-\u{373}\u{376}\u{377}\u{37B}-\u{37D}\u{37F}\u{386}\u{388}-\u{38A}\u{38C}\u{38E}-\u{3A1}\u{3A3}-\u{3F5}\u{3F7}-\u{481}\u{48A}-\u{52F}\u{531}-\u{556}\u{10A0}-\u{10C5}\u{13A0}-\u{13F5}\u{13F8}-\u{13FD}\u{1C90}-\u{1CBA}\u{1CBD}-\u{1CBF}\u{1D00}-\u{1D2B}\u{1D6B}-\u{1D77}\u{1D79}-\u{1D9A}\u{1E00}-\u{1F15}\u{1F18}-\u{1F1D}\u{1F20}-\u{1F45}\u{1F48}-\u{1F4D}\u{1F50}-\u{1F57}\u{1F59}\u{1F5B}\u{1F5D}\u{1F5F}-\u{1F7D}\u{1F80}-\u{1FB4}\u{1FB6}-\u{1FBC}\u{1FBE}\u{1FC2}-\u{1FC4}\u{1FC6}-\u{1FCC}\u{1FD0}-\u{1FD3}\u{1FD6}-\u{1FDB}\u{1FE0}-\u{1FEC}\u{1FF2}-\u{1FF4}\u{1FF6}-\u{1FFC}\u{2102}\u{2107}\u{210A}-\u{2113}\u{2115}\u{2119}-\u{211D}\u{2124}\u{2126}\u{2128}\u{212A}-\u{212D}\u{212F}-\u{2134}\u{2139}\u{213C}-\u{213F}\u{2145}-\u{2149}\u{214E}\u{2183}\u{2184}\u{2C00}-\u{2C7B}\u{2C7E}-\u{2CE4}\u{2CEB}-\u{2CEE}\u{2CF2}\u{2CF3}\u{A640}-\u{A66D}\u{A680}-\u{A69B}\u{A722}-\u{A76F}\u{A771}-\u{A787}\u{A78B}-\u{A78E}\u{AB70}-\u{ABBF}\u{FB00}-\u{FB06}\u{FB13}-\u{FB17}\u{FF21}-\u{FF3A}\u{FF41}-\u{FF5A}\u{10400}-\u{1044F}\u{104B0}-\u{104D3}\u{104D8}-\u{104FB}\u{10C80}-\u{10CB2}\u{10CC0}-\u{10CF2}\u{118A0}-\u{118DF}\u{1E900}-\u{1E943}]+",
            "\\s?[!-/:-~\u{FF01}-\u{FF0F}\u{FF1A}-\u{FF5E}\u{2018}-\u{201F}\u{3000}-\u{3002}]+",
            "\\s+$",
            "[\u{4E00}-\u{9FA5}\u{800}-\u{4E00}\u{AC00}-\u{D7FF}]+",
            r"\p{N}+",
        ]),
        "deepseek-v3" | "hunyuan-dense" | "joyai-llm" | "hy_v4" => v(&[
            r"\p{N}{1,3}",
            "[\u{4E00}-\u{9FA5}\u{3040}-\u{309F}\u{30A0}-\u{30FF}]+",
            "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
        ]),
        "deepseek-coder" => v(&["[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", "[\u{4E00}-\u{9FA5}\u{800}-\u{4E00}\u{AC00}-\u{D7FF}]+", r"\p{N}"]),
        "falcon" => v(&[r"[\p{P}\$\+<=>\^~\|`]+", GPT2, "[0-9][0-9][0-9]"]),
        "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone" | "minerva-7b" | "mellum2" => {
            v(STARCODER_DIGITS)
        }
        "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de" | "a.x-4.0" | "mellum"
        | "modern-bert" | "jina-v1-en" | "jina-v2-code" | "roberta-bpe" | "mpt" | "olmo" | "jais" | "trillion"
        | "granite-docling" | "exaone4" => v(&[GPT2]),
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" | "stablelm2" | "hunyuan" | "solar-open"
        | "grok-2" => v(&[QWEN2]),
        "qwen35" => v(&[QWEN35]),
        "poro-chat" | "bloom" | "gpt3-finnish" => v(&[" ?[^(\\s|.,!?\u{2026}\u{3002}\u{FF0C}\u{3001}\u{964}\u{6D4}\u{60C})]+"]),
        "viking" => v(&[" ?[^(\\s|.,!?\u{2026}\u{3002}\u{FF0C}\u{3001}\u{964}\u{6D4}\u{60C})]+", r"\p{N}"]),
        "tekken" => v(&[
            r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ]),
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => v(&[GPT4O]),
        "seed-coder" => v(&[
            r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+",
        ]),
        "bailingmoe" | "bailingmoe2" | "llada-moe" => v(&[
            r"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+",
        ]),
        "ufakzeka" => v(&[r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"]),
        "exaone-moe" => v(&[
            r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?(?:\p{L}\p{M}*(?: \p{L}\p{M}*)*)+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]?|\s*[\r\n]|\s+(?!\S)|\s+",
        ]),
        "laguna" => v(&[NEWLINES, QWEN2]),
        "minicpm5" => v(&[
            r"\p{N}{1,3}",
            r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}+| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ]),
        "spark2_5" => v(&[
            r"\p{N}{1,3}",
            "[\u{4E00}-\u{9FA5}\u{3040}-\u{309F}\u{30A0}-\u{30FF}]+",
            "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+|[\r\n]|\\s+(?!\\S)|\\s+",
            r"\p{N}",
        ]),
        "chameleon" => v(&[
            "<sentinel:[0-9]+>",
            "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z",
            "([\\t\\n]|    |  )",
            r"\p{N}",
            r"[\p{P}!-/:-@\[-`{-~]",
            GPT2,
        ]),
        "gemma4" | "granite-embed-multi-311m" | "sarvam-moe" => Some(Ok((vec![NEWLINES], false))),
        "whitespace" => Some(Ok((vec![r"\S+"], false))),
        // llama.cpp implements these with dedicated code we do not reproduce.
        "kimi-k2" | "afmoe" | "tiny_aya" | "cohere2moe" | "superbpe" | "youtu" | "granite-embed-multi-97m" => {
            Some(Err("a pre-tokenizer with dedicated splitting code in llama.cpp"))
        }
        _ => None,
    }
}

impl PreTokenizer {
    /// The pre-tokenizer for a `tokenizer.ggml.pre` value.
    pub fn new(pre: &str) -> Result<PreTokenizer> {
        let (exprs, byte_encode) = match regexes_for(pre) {
            Some(Ok(v)) => v,
            Some(Err(why)) => {
                return Err(Error::Unsupported(format!("tokenizer.ggml.pre '{pre}' ({why}) is not supported")))
            }
            None => return Err(Error::Unsupported(format!("unknown tokenizer.ggml.pre '{pre}'"))),
        };
        let steps = exprs.iter().map(|e| Step::new(e)).collect::<Result<Vec<_>>>()?;
        Ok(PreTokenizer { steps, byte_encode })
    }

    /// Splits `text` into words (not byte-encoded).
    pub fn split<'t>(&self, text: &'t str) -> Result<Vec<&'t str>> {
        let chars: Vec<char> = text.chars().collect();
        // Piece lengths in codepoints, as llama.cpp keeps them.
        let mut pieces = vec![chars.len()];
        for step in &self.steps {
            pieces = step.split(&chars, &pieces)?;
        }
        let mut words = Vec::with_capacity(pieces.len());
        let mut byte = 0;
        let mut it = text.char_indices().map(|(i, _)| i).chain(std::iter::once(text.len()));
        let mut cpt = 0;
        let _ = it.next();
        for len in pieces {
            let start = byte;
            if len > 0 {
                byte = it.nth(len - 1).expect("piece lengths add up to the text");
            }
            cpt += len;
            words.push(&text[start..byte]);
        }
        debug_assert_eq!(cpt, chars.len());
        Ok(words)
    }
}

impl Step {
    fn new(expr: &str) -> Result<Step> {
        let family = match expr {
            GPT2 => Some(Family { llama3: false, max_digits: None, marks: false }),
            LLAMA3 => Some(Family { llama3: true, max_digits: Some(3), marks: false }),
            QWEN2 => Some(Family { llama3: true, max_digits: Some(1), marks: false }),
            QWEN35 => Some(Family { llama3: true, max_digits: Some(1), marks: true }),
            _ => None,
        };
        if let Some(f) = family {
            return Ok(Step::Family(f));
        }
        Self::regex(expr)
    }

    /// The regex path for any expression (also used by tests for the families).
    fn regex(expr: &str) -> Result<Step> {
        let collapsed = ["N", "L", "P", "M", "S", "Lu", "Ll", "Lt", "Lm", "Lo"]
            .iter()
            .any(|c| expr.contains(&format!("\\p{{{c}}}")));
        let pattern = rewrite(expr, collapsed);
        let re = fancy_regex::RegexBuilder::new(&pattern)
            .backtrack_limit(10_000_000)
            .build()
            .map_err(|e| Error::Other(format!("pre-tokenizer regex '{expr}': {e}")))?;
        Ok(Step::Regex { re, collapsed })
    }

    fn split(&self, chars: &[char], pieces: &[usize]) -> Result<Vec<usize>> {
        let mut out = Vec::with_capacity(pieces.len() * 2);
        match self {
            Step::Family(f) => {
                let mut start = 0;
                for &len in pieces {
                    f.split(&chars[start..start + len], &mut out);
                    start += len;
                }
            }
            Step::Regex { re, collapsed } => {
                let text: String = chars
                    .iter()
                    .map(|&c| {
                        if *collapsed {
                            unicode::collapse(c)
                        } else if (c as u32) > 0x7F && unicode::is_whitespace(c) {
                            '\x0B'
                        } else {
                            c
                        }
                    })
                    .collect();
                let mut byte_start = 0;
                let mut char_iter = text.char_indices();
                for &len in pieces {
                    // Byte range of this piece in `text`.
                    let byte_end = if len == 0 {
                        byte_start
                    } else {
                        let _ = char_iter.nth(len - 1);
                        char_iter.clone().next().map_or(text.len(), |(i, _)| i)
                    };
                    split_regex(re, &text[byte_start..byte_end], &mut out)?;
                    byte_start = byte_end;
                }
            }
        }
        Ok(out)
    }
}

/// Runs one regex over one piece: matches and the gaps between them become
/// pieces (lengths in codepoints).
fn split_regex(re: &fancy_regex::Regex, piece: &str, out: &mut Vec<usize>) -> Result<()> {
    let count = |s: &str| s.chars().count();
    let mut last = 0;
    for m in re.find_iter(piece) {
        let m = m.map_err(|e| Error::Other(format!("pre-tokenizer regex: {e}")))?;
        if m.start() > last {
            out.push(count(&piece[last..m.start()]));
        }
        out.push(count(m.as_str()));
        last = m.end();
    }
    if last < piece.len() {
        out.push(count(&piece[last..]));
    }
    Ok(())
}

/// Rewrites a llama.cpp pre-tokenizer regex (ECMAScript, as `std::regex`
/// reads it) for `fancy-regex`: `\p{..}` become classes over the collapsed
/// stand-ins, and `\s`, `\S`, `\d` keep their ASCII-only `std::regex` meaning.
fn rewrite(expr: &str, collapsed: bool) -> String {
    let mut out = String::with_capacity(expr.len() * 2);
    let mut inside = false;
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let Some(n) = chars.next() else {
                    out.push('\\');
                    break;
                };
                match n {
                    'p' if collapsed && chars.peek() == Some(&'{') => {
                        let rest: String = chars.clone().take_while(|&c| c != '}').collect();
                        let name = &rest[1..];
                        if let Some(body) = unicode::collapsed_class_body(name) {
                            for _ in 0..rest.chars().count() + 1 {
                                chars.next();
                            }
                            if inside {
                                out.push_str(body);
                            } else {
                                out.push('[');
                                out.push_str(body);
                                out.push(']');
                            }
                        } else {
                            out.push_str("\\p");
                        }
                    }
                    's' => out.push_str(if inside { r"\t\n\x0B\x0C\r " } else { r"[\t\n\x0B\x0C\r ]" }),
                    'S' if !inside => out.push_str(r"[^\t\n\x0B\x0C\r ]"),
                    'd' => out.push_str(if inside { "0-9" } else { "[0-9]" }),
                    _ => {
                        out.push('\\');
                        out.push(n);
                    }
                }
            }
            '[' if !inside => {
                inside = true;
                out.push('[');
                // A leading '^' negation stays as is.
                if chars.peek() == Some(&'^') {
                    out.push(chars.next().unwrap());
                }
            }
            '[' => out.push_str(r"\["),
            ']' if inside => {
                inside = false;
                out.push(']');
            }
            // Operators of Rust's class syntax that ECMAScript reads literally.
            '&' | '~' | '-' if inside && chars.peek() == Some(&c) => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

impl Family {
    #[inline]
    fn is_letter(&self, c: char) -> bool {
        match unicode::class(c) {
            Class::Letter => true,
            Class::Mark => self.marks,
            _ => false,
        }
    }

    /// Neither whitespace, letter (nor mark, for Qwen3.5), nor number.
    #[inline]
    fn is_other(&self, c: char) -> bool {
        !unicode::is_whitespace(c) && !self.is_letter(c) && !unicode::is_number(c)
    }

    /// Splits one piece into words, appending their lengths.
    fn split(&self, s: &[char], out: &mut Vec<usize>) {
        let n = s.len();
        let mut pos = 0;
        while pos < n {
            let len = self.match_at(s, pos);
            out.push(len);
            pos += len;
        }
    }

    /// Length of the word starting at `pos` (at least 1: where nothing
    /// matches, the codepoint is a word of its own, as the regex's gap would be).
    fn match_at(&self, s: &[char], pos: usize) -> usize {
        let n = s.len();
        let at = |i: usize| if i < n { Some(s[i]) } else { None };
        let c = s[pos];
        let run = |from: usize, f: &dyn Fn(char) -> bool| (from..n).take_while(|&i| f(s[i])).count();

        // Contractions: 's 't 're 've 'm 'll 'd (either case for Llama-3).
        if c == '\'' {
            let fold = |x: Option<char>| x.map(|x| if self.llama3 { x.to_ascii_lowercase() } else { x });
            match (fold(at(pos + 1)), fold(at(pos + 2))) {
                (Some('s' | 't' | 'm' | 'd'), _) => return 2,
                (Some('r'), Some('e')) | (Some('v'), Some('e')) | (Some('l'), Some('l')) => return 3,
                _ => {}
            }
        }

        let is_letter = |x: char| self.is_letter(x);
        let is_other = |x: char| self.is_other(x);
        if self.llama3 {
            // [^\r\n\p{L}\p{N}]?\p{L}+
            if is_letter(c) {
                return 1 + run(pos + 1, &is_letter);
            }
            if c != '\r' && c != '\n' && !unicode::is_number(c) && at(pos + 1).is_some_and(is_letter) {
                return 1 + run(pos + 1, &is_letter);
            }
            // \p{N}{1,k}
            if unicode::is_number(c) {
                let r = run(pos, &unicode::is_number);
                return self.max_digits.map_or(r, |k| r.min(k));
            }
            // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
            let start = if c == ' ' && at(pos + 1).is_some_and(is_other) { pos + 1 } else { pos };
            if is_other(s[start]) {
                let end = start + run(start, &is_other);
                return end - pos + run(end, &|x| x == '\r' || x == '\n');
            }
        } else {
            // ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+'
            let (start, next) = if c == ' ' { (pos + 1, at(pos + 1)) } else { (pos, Some(c)) };
            if let Some(x) = next {
                let class: [&dyn Fn(char) -> bool; 3] = [&is_letter, &unicode::is_number, &is_other];
                for f in class {
                    if f(x) {
                        return start - pos + run(start, f);
                    }
                }
            }
        }

        // Whitespace: '\s*[\r\n]+' (Llama-3), '\s+(?!\S)', '\s+'.
        let ws = run(pos, &unicode::is_whitespace);
        if ws > 0 {
            if self.llama3 {
                if let Some(last_nl) = (pos..pos + ws).rev().find(|&i| s[i] == '\r' || s[i] == '\n') {
                    return last_nl + 1 - pos;
                }
            }
            if ws > 1 && pos + ws < n {
                return ws - 1;
            }
            return ws;
        }
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(pre: &str, text: &str) -> Vec<String> {
        PreTokenizer::new(pre).unwrap().split(text).unwrap().into_iter().map(String::from).collect()
    }

    #[test]
    fn llama3_words() {
        assert_eq!(
            words("llama-bpe", "Hello world's 12345 $abc  \n\n x!!\r\n"),
            ["Hello", " world", "'s", " ", "123", "45", " $", "abc", "  \n\n", " x", "!!\r\n"]
        );
        assert_eq!(words("qwen2", "a 123"), ["a", " ", "1", "2", "3"]);
        assert_eq!(words("gpt-2", "I'M  fine 42"), ["I", "'", "M", " ", " fine", " 42"]);
    }

    #[test]
    fn rewrite_collapsed() {
        assert_eq!(rewrite(r"\p{N}+", true), r"[\x{D1}0-9]+");
        assert_eq!(rewrite(r"[^\s\p{L}]", true), r"[^\t\n\x0B\x0C\r \x{D2}A-Za-z]");
        assert_eq!(rewrite(r"\s+(?!\S)", false), r"[\t\n\x0B\x0C\r ]+(?![^\t\n\x0B\x0C\r ])");
    }

    /// The hand-written family matchers agree with the regex path on
    /// random text mixing the classes they care about.
    #[test]
    fn families_match_regex() {
        let alphabet: Vec<char> =
            "aZé文ß' \t\r\n\u{A0}\u{3000}0٣½!.$+_\u{301}\u{200B}sStTrReEvVlLmMdD😀-/".chars().collect();
        let mut seed = 0x2545F4914F6CDD1Du64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for expr in [GPT2, LLAMA3, QWEN2, QWEN35] {
            let fast = Step::new(expr).unwrap();
            assert!(matches!(fast, Step::Family(_)));
            let slow = Step::regex(expr).unwrap();
            for _ in 0..3000 {
                let len = (rnd() % 24) as usize;
                let s: Vec<char> = (0..len).map(|_| alphabet[(rnd() % alphabet.len() as u64) as usize]).collect();
                let a = fast.split(&s, &[s.len()]).unwrap();
                let b = slow.split(&s, &[s.len()]).unwrap();
                assert_eq!(a, b, "{expr}\n{:?}", s.iter().collect::<String>());
            }
        }
    }

    #[test]
    fn every_known_pre_compiles() {
        for pre in [
            "default",
            "llama-bpe",
            "deepseek-llm",
            "deepseek-v3",
            "deepseek-coder",
            "falcon",
            "starcoder",
            "gpt-2",
            "qwen2",
            "qwen35",
            "bloom",
            "viking",
            "tekken",
            "gpt-4o",
            "seed-coder",
            "bailingmoe",
            "ufakzeka",
            "exaone-moe",
            "laguna",
            "minicpm5",
            "spark2_5",
            "chameleon",
            "gemma4",
            "whitespace",
            "jais-2",
        ] {
            let p = PreTokenizer::new(pre).unwrap_or_else(|e| panic!("{pre}: {e}"));
            p.split("Hello, world! 123 ñ 文字 \n\n  x").unwrap();
        }
        assert!(PreTokenizer::new("kimi-k2").unwrap_err().to_string().contains("kimi-k2"));
        assert!(PreTokenizer::new("nope").unwrap_err().to_string().contains("'nope'"));
    }
}
