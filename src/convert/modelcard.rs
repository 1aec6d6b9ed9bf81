//! The YAML front matter of a model card (`README.md`), which gguf-py reads
//! for the authorship metadata (license, base models, datasets, tags,
//! languages, ...).
//!
//! Model cards use a small part of YAML; this reader handles that part:
//! `key: scalar`, `key:` followed by a block list (`- item`, items may be
//! `k: v` maps) or a nested map, flow lists (`[a, b]`), plain / single- /
//! double-quoted scalars with YAML 1.1 resolution (as PyYAML's `safe_load`:
//! `no` is false, `1.5` is a float), and `|` / `>` block scalars. Deeper
//! nesting (e.g. `model-index`) is skipped. Anything it cannot read makes the
//! whole card unreadable (the caller warns and goes on without it).

use serde_json::{Map, Value};

/// Extracts and parses the front matter of a model card, as gguf-py's
/// `Metadata.load_model_card` does (including its "Norway problem" and tab fixes).
/// `Ok(None)`: no front matter.
pub fn parse_model_card(text: &str) -> Result<Option<Map<String, Value>>, String> {
    let mut lines = text.lines();
    if lines.next() != Some("---") {
        return Ok(None);
    }
    let mut yaml: Vec<String> = Vec::new();
    for l in lines {
        if l == "---" {
            break;
        }
        yaml.push(l.to_string());
    }
    let mut joined = yaml.join("\n") + "\n";
    joined = joined.replace("- no\n", "- \"no\"\n").replace('\t', "  ");
    let lines: Vec<&str> = joined.lines().collect();
    let mut p = Parser { lines, pos: 0 };
    match p.mapping(0)? {
        Value::Object(m) => Ok(Some(m)),
        _ => Ok(None),
    }
}

struct Parser<'a> {
    lines: Vec<&'a str>,
    pos: usize,
}

fn indent_of(l: &str) -> usize {
    l.len() - l.trim_start_matches(' ').len()
}

fn is_blank(l: &str) -> bool {
    let t = l.trim();
    t.is_empty() || t.starts_with('#')
}

/// Splits `key: rest` at the first `": "` (or a trailing `:`) outside quotes.
fn split_key(s: &str) -> Option<(String, &str)> {
    let bytes = s.as_bytes();
    let (key, after) = if s.starts_with('"') || s.starts_with('\'') {
        let q = bytes[0];
        let end = s[1..].find(q as char)? + 1;
        (s[1..end].to_string(), &s[end + 1..])
    } else {
        let i = s.find(':')?;
        (s[..i].trim_end().to_string(), &s[i..])
    };
    let after = after.strip_prefix(':')?;
    if !after.is_empty() && !after.starts_with(' ') {
        return None;
    }
    Some((key, after.trim()))
}

impl<'a> Parser<'a> {
    fn skip_blank(&mut self) {
        while self.pos < self.lines.len() && is_blank(self.lines[self.pos]) {
            self.pos += 1;
        }
    }

    fn next_indent(&mut self) -> Option<usize> {
        self.skip_blank();
        self.lines.get(self.pos).map(|l| indent_of(l))
    }

    /// A block mapping whose keys are at `indent`.
    fn mapping(&mut self, indent: usize) -> Result<Value, String> {
        let mut m = Map::new();
        while let Some(ind) = self.next_indent() {
            if ind < indent {
                break;
            }
            if ind > indent {
                return Err(format!("line {}: unexpected indentation", self.pos + 1));
            }
            let line = self.lines[self.pos].trim();
            if line.starts_with("- ") || line == "-" {
                break;
            }
            let (key, rest) = split_key(line).ok_or_else(|| format!("line {}: expected `key: value`", self.pos + 1))?;
            self.pos += 1;
            let v = self.value_after_key(rest, indent)?;
            m.insert(key, v);
        }
        Ok(Value::Object(m))
    }

    /// The value of a key whose inline text is `rest`, with the key at `indent`.
    fn value_after_key(&mut self, rest: &str, indent: usize) -> Result<Value, String> {
        let rest = strip_comment(rest);
        if rest == "|"
            || rest == ">"
            || rest.starts_with("|-")
            || rest.starts_with(">-")
            || rest.starts_with("|+")
            || rest.starts_with(">+")
        {
            return Ok(self.block_scalar(rest, indent));
        }
        if !rest.is_empty() {
            return scalar_or_flow(rest);
        }
        match self.next_indent() {
            Some(ind) if ind > indent => {
                let l = self.lines[self.pos].trim();
                if l.starts_with("- ") || l == "-" {
                    self.sequence(ind)
                } else {
                    self.mapping(ind)
                }
            }
            // A list may sit at the same indentation as its key.
            Some(ind) if ind == indent && self.lines[self.pos].trim_start().starts_with("- ") => self.sequence(ind),
            _ => Ok(Value::Null),
        }
    }

    fn sequence(&mut self, indent: usize) -> Result<Value, String> {
        let mut items = Vec::new();
        while let Some(ind) = self.next_indent() {
            let line = self.lines[self.pos].trim();
            if ind != indent || !(line.starts_with("- ") || line == "-") {
                if ind > indent {
                    return Err(format!("line {}: unexpected indentation in a list", self.pos + 1));
                }
                break;
            }
            let item = line[1..].trim_start();
            self.pos += 1;
            if item.is_empty() {
                items.push(self.value_after_key("", indent)?);
            } else if let Some((k, rest)) = split_key(item).filter(|_| !item.starts_with('[') && !item.starts_with('{'))
            {
                // A mapping inside a list: first key inline, the others indented under it.
                let inner = indent + (line.len() - item.len());
                let mut m = Map::new();
                let v = self.value_after_key(rest, inner)?;
                m.insert(k, v);
                if let Value::Object(more) = self.mapping(inner)? {
                    m.extend(more);
                }
                items.push(Value::Object(m));
            } else {
                items.push(scalar_or_flow(strip_comment(item))?);
            }
        }
        Ok(Value::Array(items))
    }

    fn block_scalar(&mut self, header: &str, indent: usize) -> Value {
        let mut body: Vec<String> = Vec::new();
        let mut block_indent = None;
        while self.pos < self.lines.len() {
            let l = self.lines[self.pos];
            if l.trim().is_empty() {
                body.push(String::new());
                self.pos += 1;
                continue;
            }
            let ind = indent_of(l);
            if ind <= indent {
                break;
            }
            let bi = *block_indent.get_or_insert(ind);
            body.push(l.get(bi.min(ind)..).unwrap_or("").to_string());
            self.pos += 1;
        }
        while body.last().is_some_and(|l| l.is_empty()) {
            body.pop();
        }
        let mut text = if header.starts_with('>') { body.join(" ") } else { body.join("\n") };
        if !header.contains('-') {
            text.push('\n');
        }
        Value::String(text)
    }
}

fn strip_comment(s: &str) -> &str {
    if s.starts_with('"') || s.starts_with('\'') {
        return s;
    }
    match s.find(" #") {
        Some(i) => s[..i].trim_end(),
        None => s,
    }
}

fn scalar_or_flow(s: &str) -> Result<Value, String> {
    let s = s.trim();
    if let Some(inner) = s.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or_else(|| format!("unterminated flow list: {s}"))?;
        if inner.trim().is_empty() {
            return Ok(Value::Array(Vec::new()));
        }
        return split_flow(inner)?
            .into_iter()
            .map(|x| scalar(x.trim()))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array);
    }
    if s.starts_with('{') {
        return Err(format!("flow mappings are not supported: {s}"));
    }
    scalar(s)
}

fn split_flow(s: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, ',') => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            (None, '[' | '{') => return Err("nested flow collections are not supported".into()),
            _ => {}
        }
    }
    if quote.is_some() {
        return Err("unterminated quote".into());
    }
    out.push(&s[start..]);
    Ok(out)
}

/// A scalar with PyYAML's YAML 1.1 resolution.
fn scalar(s: &str) -> Result<Value, String> {
    if let Some(body) = s.strip_prefix('"') {
        let body = body.strip_suffix('"').ok_or_else(|| format!("unterminated string: {s}"))?;
        let mut out = String::new();
        let mut chars = body.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('"') => out.push('"'),
                Some('\\') => out.push('\\'),
                Some('/') => out.push('/'),
                Some(o) => return Err(format!("unsupported escape \\{o}")),
                None => return Err("dangling backslash".into()),
            }
        }
        return Ok(Value::String(out));
    }
    if let Some(body) = s.strip_prefix('\'') {
        let body = body.strip_suffix('\'').ok_or_else(|| format!("unterminated string: {s}"))?;
        return Ok(Value::String(body.replace("''", "'")));
    }
    Ok(match s {
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "y" | "Y" => Value::Bool(true),
        "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "n" | "N" => Value::Bool(false),
        _ => {
            let plain_int = |t: &str| {
                let d = t.strip_prefix(['-', '+']).unwrap_or(t);
                !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit() || b == b'_') && d.as_bytes()[0].is_ascii_digit()
            };
            if plain_int(s) {
                if let Ok(v) = s.replace('_', "").parse::<i64>() {
                    return Ok(Value::from(v));
                }
            }
            if is_yaml11_float(s) {
                if let Ok(v) = s.replace('_', "").parse::<f64>() {
                    return Ok(Value::from(v));
                }
            }
            Value::String(s.to_string())
        }
    })
}

/// PyYAML's float pattern: `[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?` or `[-+]?\.[0-9_]+`.
fn is_yaml11_float(s: &str) -> bool {
    let t = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (mant, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let Some((int, frac)) = mant.split_once('.') else { return false };
    let digits = |x: &str| x.bytes().all(|b| b.is_ascii_digit() || b == b'_');
    let int_ok = if int.is_empty() {
        !frac.is_empty() && exp.is_none()
    } else {
        int.as_bytes()[0].is_ascii_digit() && digits(int)
    };
    let exp_ok = exp.is_none_or(|e| {
        e.len() > 1 && (e.starts_with('-') || e.starts_with('+')) && e[1..].bytes().all(|b| b.is_ascii_digit())
    });
    int_ok && digits(frac) && exp_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typical_card() {
        let card = "---\nlicense: apache-2.0\nlicense_link: https://huggingface.co/Qwen/x/blob/main/LICENSE\nlanguage:\n- en\n- no\nbase_model:\n  - Qwen/Qwen2.5-Coder-7B-Instruct\npipeline_tag: text-generation\ntags: [code, 'qwen2', \"chat\"]\nlibrary_name: transformers\nmodel-index:\n- name: m\n  results:\n  - task:\n      type: text-generation\n    metrics:\n    - value: 61.6\ndescription: |\n  Line one\n  line two\ninference: false\nversion: 1.5\n# comment\n---\n# Title\n";
        let m = parse_model_card(card).unwrap().unwrap();
        assert_eq!(m["license"], "apache-2.0");
        assert_eq!(m["language"], serde_json::json!(["en", "no"]));
        assert_eq!(m["base_model"], serde_json::json!(["Qwen/Qwen2.5-Coder-7B-Instruct"]));
        assert_eq!(m["tags"], serde_json::json!(["code", "qwen2", "chat"]));
        assert_eq!(m["description"], "Line one\nline two\n");
        assert_eq!(m["inference"], false);
        assert_eq!(m["version"], 1.5);
        assert_eq!(m["model-index"][0]["name"], "m");
        assert!(parse_model_card("# no front matter").unwrap().is_none());
        assert!(parse_model_card("---\nkey: {a: 1}\n---\n").is_err());
    }
}
