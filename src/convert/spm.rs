//! A reader for SentencePiece model files (`tokenizer.model`), which are
//! protocol-buffer messages (`ModelProto` in sentencepiece_model.proto).
//!
//! Only what conversion needs is decoded: the pieces (field 1) with their
//! text (1), score (2) and type (3). Every other field is skipped after its
//! wire format is validated.

use crate::error::ParseError;

/// SentencePiece piece types (`ModelProto.SentencePiece.Type`), which are
/// also the GGUF token types.
pub const NORMAL: i32 = 1;
pub const UNKNOWN: i32 = 2;
pub const CONTROL: i32 = 3;
pub const USER_DEFINED: i32 = 4;
pub const UNUSED: i32 = 5;
pub const BYTE: i32 = 6;

/// One vocabulary entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    pub piece: String,
    pub score: f32,
    /// The piece type (1..=6); NORMAL when the field is absent.
    pub kind: i32,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: u64,
}

type PResult<T> = Result<T, ParseError>;

impl<'a> Reader<'a> {
    fn err(&self, field: &str, msg: impl Into<String>) -> ParseError {
        ParseError::new(field, self.base + self.pos as u64, msg)
    }

    fn varint(&mut self, field: &str) -> PResult<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(self.err(field, "truncated varint"));
            };
            self.pos += 1;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err(field, "varint longer than 10 bytes"))
    }

    fn bytes(&mut self, n: u64, field: &str) -> PResult<&'a [u8]> {
        if n > (self.buf.len() - self.pos) as u64 {
            return Err(self.err(field, format!("length {n} runs past the end of the message")));
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    /// Reads a field key; returns (field number, wire type).
    fn key(&mut self, field: &str) -> PResult<(u64, u8)> {
        let k = self.varint(field)?;
        Ok((k >> 3, (k & 7) as u8))
    }

    /// Skips a value of the given wire type.
    fn skip(&mut self, wire: u8, field: &str) -> PResult<()> {
        match wire {
            0 => {
                self.varint(field)?;
            }
            1 => {
                self.bytes(8, field)?;
            }
            2 => {
                let n = self.varint(field)?;
                self.bytes(n, field)?;
            }
            5 => {
                self.bytes(4, field)?;
            }
            w => return Err(self.err(field, format!("unsupported wire type {w}"))),
        }
        Ok(())
    }
}

/// Parses the pieces of a SentencePiece model.
pub fn parse_pieces(buf: &[u8]) -> Result<Vec<Piece>, ParseError> {
    let mut r = Reader { buf, pos: 0, base: 0 };
    let mut pieces = Vec::new();
    while r.pos < buf.len() {
        let (num, wire) = r.key("ModelProto")?;
        if num == 1 {
            let field = format!("pieces[{}]", pieces.len());
            if wire != 2 {
                return Err(r.err(&field, format!("wire type {wire}, expected a message")));
            }
            let n = r.varint(&field)?;
            let start = r.pos;
            let body = r.bytes(n, &field)?;
            pieces.push(parse_piece(body, start as u64, &field)?);
        } else {
            r.skip(wire, &format!("ModelProto field {num}"))?;
        }
    }
    if pieces.is_empty() {
        return Err(ParseError::new("pieces", 0, "no pieces: not a SentencePiece model"));
    }
    Ok(pieces)
}

fn parse_piece(buf: &[u8], base: u64, field: &str) -> PResult<Piece> {
    let mut r = Reader { buf, pos: 0, base };
    let mut piece = None;
    let mut score = 0f32;
    let mut kind = NORMAL;
    while r.pos < buf.len() {
        let (num, wire) = r.key(field)?;
        match (num, wire) {
            (1, 2) => {
                let n = r.varint(field)?;
                let b = r.bytes(n, field)?;
                let s = std::str::from_utf8(b).map_err(|_| r.err(&format!("{field}.piece"), "not valid UTF-8"))?;
                piece = Some(s.to_string());
            }
            (2, 5) => {
                let b = r.bytes(4, field)?;
                score = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
            (3, 0) => {
                let v = r.varint(field)?;
                if !(1..=6).contains(&v) {
                    return Err(r.err(&format!("{field}.type"), format!("unknown piece type {v}")));
                }
                kind = v as i32;
            }
            (1..=3, w) => return Err(r.err(field, format!("field {num} has wire type {w}"))),
            (_, w) => r.skip(w, field)?,
        }
    }
    let piece = piece.ok_or_else(|| ParseError::new(field, base, "piece without text"))?;
    Ok(Piece { piece, score, kind })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        }
    }

    fn piece(text: &str, score: f32, kind: Option<u64>) -> Vec<u8> {
        let mut p = vec![0x0a];
        varint(text.len() as u64, &mut p);
        p.extend_from_slice(text.as_bytes());
        p.push(0x15);
        p.extend_from_slice(&score.to_le_bytes());
        if let Some(k) = kind {
            p.push(0x18);
            varint(k, &mut p);
        }
        let mut out = vec![0x0a];
        varint(p.len() as u64, &mut out);
        out.extend(p);
        out
    }

    #[test]
    fn parses_pieces_and_skips_other_fields() {
        let mut m = piece("<unk>", 0.0, Some(2));
        m.extend(piece("▁the", -1.5, None));
        // trainer_spec (field 2) with a nested varint, then a fixed32 field 9
        m.extend([0x12, 0x02, 0x18, 0x02, 0x4d, 1, 2, 3, 4]);
        m.extend(piece("<0x0A>", 0.0, Some(6)));
        let p = parse_pieces(&m).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[0], Piece { piece: "<unk>".into(), score: 0.0, kind: UNKNOWN });
        assert_eq!(p[1], Piece { piece: "▁the".into(), score: -1.5, kind: NORMAL });
        assert_eq!(p[2].kind, BYTE);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_pieces(b"").is_err());
        assert!(parse_pieces(b"{\"model\": 1}").is_err());
        let mut m = piece("a", 0.0, None);
        m.truncate(m.len() - 2);
        assert!(parse_pieces(&m).is_err());
        assert!(parse_pieces(&piece("a", 0.0, Some(9))).is_err());
        for n in 0..64 {
            let data: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            let _ = parse_pieces(&data);
        }
    }
}
