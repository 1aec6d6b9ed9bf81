//! Writing Modelfiles: quoting values so that Ollama's parser reads back exactly the same
//! string, and rendering a [`ModelfileSpec`].

use super::parser::{go_trim, is_go_print};
use super::{Command, ModelfileSpec};
use crate::error::{Error, Result};

/// How a value may be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuoteStyle {
    /// Bare when that reads back unchanged, `"""…"""` otherwise (FROM, ADAPTER, PARAMETER).
    Auto,
    /// Always `"""…"""` (TEMPLATE, SYSTEM, LICENSE, MESSAGE), for readable blocks.
    Block,
}

/// Why a value cannot be written so that Ollama reads it back unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuoteError {
    /// Ollama silently drops this character (it is not printable in Go's sense).
    NonPrintable { ch: char, index: usize },
    /// A line of the value ends in `"""` (ignoring trailing spaces), which would close a
    /// `"""` block early; no other quoting can hold a line break.
    ClosesBlock { line: usize },
}

impl std::fmt::Display for QuoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QuoteError::NonPrintable { ch, index } => {
                write!(f, "character U+{:04X} at byte {index} would be dropped by Ollama's parser", *ch as u32)
            }
            QuoteError::ClosesBlock { line } => write!(
                f,
                "line {line} of the value ends with \"\"\", which would end the quoted block early (Ollama has no escapes)"
            ),
        }
    }
}

/// Can `value` be written without quotes?
fn bare_ok(value: &str) -> bool {
    !value.is_empty()
        && !value.contains(['\n', '\r'])
        && go_trim(value) == value
        && !value.starts_with('"')
        && value.chars().all(|c| c == '\t' || is_go_print(c))
}

/// Quotes a value so that Ollama's parser returns exactly `value`.
///
/// Rules (from `parser.go`): a value runs to the end of the line and is trimmed, unless it
/// starts with `"` or `"""`; at every line break the text read so far is trimmed and, if it
/// then starts and ends with the same quote, the value is complete. There are no escapes.
/// So a `"""` block holds any text whose lines (trailing spaces ignored) do not end in
/// `"""`; quotes, leading and trailing spaces and blank lines inside are kept as they are.
pub fn quote(value: &str, style: QuoteStyle) -> Result<String, QuoteError> {
    if let Some((index, ch)) = value.char_indices().find(|&(_, c)| !(matches!(c, '\t' | '\n' | '\r') || is_go_print(c)))
    {
        return Err(QuoteError::NonPrintable { ch, index });
    }
    if style == QuoteStyle::Auto && bare_ok(value) {
        return Ok(value.to_string());
    }
    if value.is_empty() {
        return Ok("\"\"".to_string());
    }
    let mut line = 1;
    for (i, c) in value.char_indices() {
        if c == '\n' || c == '\r' {
            let before = value[..i].trim_end_matches([' ', '\t', '\r', '\n']);
            if before.ends_with("\"\"\"") {
                return Err(QuoteError::ClosesBlock { line });
            }
            if c == '\n' {
                line += 1;
            }
        }
    }
    Ok(format!("\"\"\"{value}\"\"\""))
}

fn quoted(cmd: &str, value: &str, style: QuoteStyle) -> Result<String> {
    quote(value, style).map_err(|e| Error::Unsupported(format!("Modelfile {cmd}: {e}")))
}

/// Writes one command as a Modelfile line (with its final newline).
pub fn render_command(cmd: &Command) -> Result<String> {
    use QuoteStyle::{Auto, Block};
    let line = match cmd {
        Command::From(v) => format!("FROM {}", quoted("FROM", v, Auto)?),
        Command::Adapter(v) => format!("ADAPTER {}", quoted("ADAPTER", v, Auto)?),
        Command::Template(v) => format!("TEMPLATE {}", quoted("TEMPLATE", v, Block)?),
        Command::System(v) => format!("SYSTEM {}", quoted("SYSTEM", v, Block)?),
        Command::License(v) => format!("LICENSE {}", quoted("LICENSE", v, Block)?),
        Command::Requires(v) => format!("REQUIRES {}", quoted("REQUIRES", v, Auto)?),
        Command::Draft(v) => format!("DRAFT {}", quoted("DRAFT", v, Auto)?),
        Command::Renderer(v) => format!("RENDERER {}", quoted("RENDERER", v, Auto)?),
        Command::Parser(v) => format!("PARSER {}", quoted("PARSER", v, Auto)?),
        Command::Parameter { name, value } => {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(Error::Unsupported(format!("Modelfile PARAMETER: invalid name '{name}'")));
            }
            format!("PARAMETER {name} {}", quoted("PARAMETER", value, Auto)?)
        }
        Command::Message { role, content } => {
            format!("MESSAGE {} {}", role.as_str(), quoted("MESSAGE", content, Block)?)
        }
    };
    Ok(line + "\n")
}

/// Renders a Modelfile. The output is deterministic: comment lines, then FROM, ADAPTER,
/// TEMPLATE, SYSTEM, PARAMETER lines (in the spec's order), MESSAGE lines, LICENSE.
///
/// Fails (naming the command) when a value cannot be quoted so that Ollama reads it back
/// unchanged; see [`quote`].
pub fn render(spec: &ModelfileSpec) -> Result<String> {
    let mut out = String::new();
    for c in &spec.comments {
        for l in c.lines() {
            if l.is_empty() {
                out.push_str("#\n");
            } else {
                out.push_str("# ");
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    let cmds = spec.commands();
    for (i, cmd) in cmds.iter().enumerate() {
        // A blank line before block commands keeps long files readable.
        if i > 0 && matches!(cmd, Command::Template(_) | Command::System(_) | Command::License(_)) {
            out.push('\n');
        }
        if i > 0 && matches!(cmd, Command::Parameter { .. } | Command::Message { .. }) {
            let prev_same = matches!(
                (&cmds[i - 1], cmd),
                (Command::Parameter { .. }, Command::Parameter { .. })
                    | (Command::Message { .. }, Command::Message { .. })
            );
            if !prev_same {
                out.push('\n');
            }
        }
        out.push_str(&render_command(cmd)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::parser::parse;
    use super::*;

    fn roundtrip(value: &str, style: QuoteStyle) {
        let q = quote(value, style).unwrap_or_else(|e| panic!("{value:?}: {e}"));
        let text = format!("FROM base\nSYSTEM {q}\n");
        let m = parse(&text).unwrap_or_else(|e| panic!("{value:?} -> {text:?}: {e}"));
        assert_eq!(m.commands()[1], Command::System(value.to_string()), "{text:?}");
    }

    #[test]
    fn quoting_roundtrips() {
        for v in [
            "plain",
            "",
            " leading",
            "trailing ",
            "\"starts with quote",
            "ends with quote\"",
            "\"\"",
            "\"\"\"",
            "a \"\"\" b",
            "multi\nline\n",
            "\nleading newline",
            "line ends with quote\"\nnext",
            "line ends with two quotes\"\"\nnext",
            "\"\"\"\"x",
            "tabs\tinside\t",
            "crlf\r\nkept",
            "{{ if .System }}{{ .System }}{{ end }}",
            "ünïcode ✓ 日本語 👋",
            "# not a comment",
            "   ",
            "\n",
        ] {
            roundtrip(v, QuoteStyle::Auto);
            roundtrip(v, QuoteStyle::Block);
        }
    }

    #[test]
    fn unquotable_values() {
        assert_eq!(quote("a\"\"\"\nb", QuoteStyle::Block), Err(QuoteError::ClosesBlock { line: 1 }));
        assert_eq!(quote("x\ny\"\"\"  \nz", QuoteStyle::Auto), Err(QuoteError::ClosesBlock { line: 2 }));
        assert!(matches!(quote("bell\u{7}", QuoteStyle::Auto), Err(QuoteError::NonPrintable { .. })));
        assert!(matches!(quote("nbsp\u{A0}", QuoteStyle::Auto), Err(QuoteError::NonPrintable { .. })));
        // A value ending in """ without a following line break is fine.
        roundtrip("ends with \"\"\"", QuoteStyle::Block);
    }

    #[test]
    fn bare_when_possible() {
        assert_eq!(quote("<|im_end|>", QuoteStyle::Auto).unwrap(), "<|im_end|>");
        assert_eq!(quote("./model.gguf", QuoteStyle::Auto).unwrap(), "./model.gguf");
        assert_eq!(quote(" x", QuoteStyle::Auto).unwrap(), "\"\"\" x\"\"\"");
        assert_eq!(quote("x", QuoteStyle::Block).unwrap(), "\"\"\"x\"\"\"");
    }
}
