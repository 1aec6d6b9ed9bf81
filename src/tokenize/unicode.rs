//! Codepoint classes as llama.cpp's pre-tokenizers see them.
//!
//! llama.cpp (`src/unicode.cpp`) gives every codepoint one general-category
//! class (number, letter, punctuation, mark, symbol, or other) plus a
//! whitespace flag (the Unicode `White_Space` property). Its hand-written
//! splitters test those flags, and its regex fallback "collapses" every
//! non-ASCII codepoint to one stand-in byte per class before running
//! `std::regex`. We take the class ranges from `regex-syntax`'s Unicode tables
//! (the same tables `regex` uses for `\p{L}`), so no table is hand-written here.

use std::sync::OnceLock;

/// General-category class of a codepoint (only the ones the regexes name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Class {
    /// Anything not below: control, format, separator, unassigned...
    Other = 0,
    Number = 1,
    Letter = 2,
    Punctuation = 3,
    Mark = 4,
    Symbol = 5,
}

const WS_BIT: u8 = 0x80;
const MAX_CPT: usize = 0x110000;

fn table() -> &'static [u8] {
    static TABLE: OnceLock<Vec<u8>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = vec![Class::Other as u8; MAX_CPT];
        for (pat, class) in [
            (r"\p{N}", Class::Number),
            (r"\p{L}", Class::Letter),
            (r"\p{P}", Class::Punctuation),
            (r"\p{M}", Class::Mark),
            (r"\p{S}", Class::Symbol),
        ] {
            for (lo, hi) in class_ranges(pat) {
                t[lo as usize..=hi as usize].fill(class as u8);
            }
        }
        for (lo, hi) in class_ranges(r"\p{White_Space}") {
            for v in &mut t[lo as usize..=hi as usize] {
                *v |= WS_BIT;
            }
        }
        t
    })
}

/// The codepoint ranges of a one-class Unicode pattern, from regex-syntax.
fn class_ranges(pat: &str) -> Vec<(u32, u32)> {
    use regex_syntax::hir::{Class as HClass, HirKind};
    let hir = regex_syntax::Parser::new().parse(pat).expect("built-in Unicode class pattern");
    match hir.kind() {
        HirKind::Class(HClass::Unicode(c)) => c.ranges().iter().map(|r| (r.start() as u32, r.end() as u32)).collect(),
        other => unreachable!("{pat} parsed to {other:?}"),
    }
}

#[inline]
pub fn class(c: char) -> Class {
    match table()[c as usize] & !WS_BIT {
        1 => Class::Number,
        2 => Class::Letter,
        3 => Class::Punctuation,
        4 => Class::Mark,
        5 => Class::Symbol,
        _ => Class::Other,
    }
}

#[inline]
pub fn is_whitespace(c: char) -> bool {
    table()[c as usize] & WS_BIT != 0
}

#[inline]
pub fn is_number(c: char) -> bool {
    class(c) == Class::Number
}

/// The stand-in character of a codepoint in llama.cpp's collapsed text:
/// ASCII stays itself, non-ASCII whitespace becomes `\x0B`, other
/// non-ASCII codepoints become one of U+00D0..U+00D5 by class (llama.cpp
/// uses the bytes 0xD0..0xD5; one Latin-1 char each keeps offsets per codepoint).
pub fn collapse(c: char) -> char {
    if (c as u32) < 128 {
        return c;
    }
    if is_whitespace(c) {
        return '\x0B';
    }
    match class(c) {
        Class::Number => '\u{D1}',
        Class::Letter => '\u{D2}',
        Class::Punctuation => '\u{D3}',
        Class::Mark => '\u{D4}',
        Class::Symbol => '\u{D5}',
        Class::Other => '\u{D0}',
    }
}

/// The regex class body that stands for `\p{..}` over collapsed text
/// (the collapsed stand-in plus the category's ASCII members).
pub fn collapsed_class_body(name: &str) -> Option<&'static str> {
    Some(match name {
        "N" => r"\x{D1}0-9",
        "L" | "Lu" | "Ll" | "Lt" | "Lm" | "Lo" => r"\x{D2}A-Za-z",
        "P" => r"\x{D3}!-#%-*,-/:;?@\[-\]_\{\}",
        "M" => r"\x{D4}",
        "S" => r"\x{D5}\$\+<->\^`\|~",
        _ => return None,
    })
}

/// GPT-2's byte-to-unicode map: printable Latin-1 bytes map to themselves,
/// the others to U+0100 + n in byte order.
pub fn byte_to_char(b: u8) -> char {
    static MAP: OnceLock<[char; 256]> = OnceLock::new();
    MAP.get_or_init(|| {
        let mut m = ['\0'; 256];
        let mut n = 0u32;
        for (i, slot) in m.iter_mut().enumerate() {
            let printable = (0x21..=0x7E).contains(&i) || (0xA1..=0xAC).contains(&i) || (0xAE..=0xFF).contains(&i);
            *slot = if printable {
                char::from_u32(i as u32).unwrap()
            } else {
                n += 1;
                char::from_u32(255 + n).unwrap()
            };
        }
        m
    })[b as usize]
}

/// The inverse of [`byte_to_char`].
pub fn char_to_byte(c: char) -> Option<u8> {
    let u = c as u32;
    if u < 256 && byte_to_char(u as u8) == c {
        return Some(u as u8);
    }
    (0..=255u8).find(|&b| byte_to_char(b) == c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(class('a'), Class::Letter);
        assert_eq!(class('é'), Class::Letter);
        assert_eq!(class('5'), Class::Number);
        assert_eq!(class('٣'), Class::Number);
        assert_eq!(class('!'), Class::Punctuation);
        assert_eq!(class('$'), Class::Symbol);
        assert_eq!(class('\u{301}'), Class::Mark);
        assert_eq!(class(' '), Class::Other);
        assert!(is_whitespace(' ') && is_whitespace('\u{A0}') && is_whitespace('\u{3000}') && is_whitespace('\u{85}'));
        assert!(!is_whitespace('\u{200B}') && !is_whitespace('a'));
    }

    #[test]
    fn ascii_class_bodies_match_unicode() {
        // The ASCII members listed for each collapsed class are exactly the
        // ASCII members of the Unicode category.
        for (name, cls) in [("N", Class::Number), ("L", Class::Letter), ("P", Class::Punctuation), ("S", Class::Symbol)]
        {
            let re = regex::Regex::new(&format!("^[{}]$", collapsed_class_body(name).unwrap())).unwrap();
            for b in 0u8..128 {
                let c = b as char;
                assert_eq!(re.is_match(c.encode_utf8(&mut [0; 4])), class(c) == cls, "{name} {b:#x}");
            }
        }
    }

    #[test]
    fn byte_map() {
        assert_eq!(byte_to_char(b'A'), 'A');
        assert_eq!(byte_to_char(b' '), '\u{120}');
        assert_eq!(byte_to_char(b'\n'), '\u{10A}');
        assert_eq!(byte_to_char(0), '\u{100}');
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(byte_to_char(b)), Some(b));
        }
    }
}
