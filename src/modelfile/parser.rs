//! Ollama Modelfile parser, following the state machine of Ollama's `parser/parser.go`
//! (`ParseFile`) rune by rune, plus the checks Ollama applies when it turns the parsed
//! commands into a create request (`CreateRequest`, `api.FormatParams`).
//!
//! [`parse`] stops at the first syntax error, as Ollama does. [`check`] parses and then
//! validates every command, collecting all semantic errors (unknown parameters, bad values,
//! missing FROM, bad REQUIRES) instead of stopping at the first.

use std::fmt;

use super::params::{self, ParamCheck};
use super::{Command, Role};

/// How serious a [`Diagnostic`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Ollama accepts the file but the line does not do what it seems to (deprecated or
    /// shadowing parameter names).
    Warning,
    /// `ollama create` would reject the file.
    Error,
}

/// One problem found in a Modelfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// 1-based line the problem is on (`None` for whole-file problems such as a missing FROM).
    pub line: Option<usize>,
    pub severity: Severity,
    /// Ollama's own wording where it has one.
    pub message: String,
}

impl Diagnostic {
    fn error(line: Option<usize>, message: impl Into<String>) -> Self {
        Diagnostic { line, severity: Severity::Error, message: message.into() }
    }
    fn warning(line: Option<usize>, message: impl Into<String>) -> Self {
        Diagnostic { line, severity: Severity::Warning, message: message.into() }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Warning => "warning: ",
            Severity::Error => "",
        };
        match self.line {
            Some(l) => write!(f, "{sev}(line {l}): {}", self.message),
            None => write!(f, "{sev}{}", self.message),
        }
    }
}

/// A command with the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub line: usize,
    pub command: Command,
}

/// A parsed Modelfile: its commands in file order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Modelfile {
    pub entries: Vec<Entry>,
    /// Warnings found by [`check`] (deprecated parameters and the like).
    pub warnings: Vec<Diagnostic>,
}

impl Modelfile {
    /// The commands without line numbers.
    pub fn commands(&self) -> Vec<Command> {
        self.entries.iter().map(|e| e.command.clone()).collect()
    }
}

pub(crate) const ERR_INVALID_COMMAND: &str = "command must be one of \"from\", \"license\", \"template\", \"system\", \"adapter\", \"draft\", \"renderer\", \"parser\", \"parameter\", \"message\", or \"requires\"";
pub(crate) const ERR_INVALID_ROLE: &str = "message role must be one of \"system\", \"user\", or \"assistant\"";
pub(crate) const ERR_MISSING_FROM: &str = "no FROM line";
const ERR_EOF: &str = "unexpected EOF";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Nil,
    Name,
    Value,
    Parameter,
    Message,
    Comment,
}

/// Ollama's `isSpace`: only space and tab.
fn is_space(c: char) -> bool {
    c == ' ' || c == '\t'
}

fn is_newline(c: char) -> bool {
    c == '\r' || c == '\n'
}

/// Go's `unicode.IsSpace` (the set `strings.TrimSpace` trims).
pub(crate) fn is_go_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\u{0B}' | '\u{0C}' | '\r' | ' ' | '\u{85}' | '\u{A0}')
        || (c > '\u{FF}' && c.is_whitespace())
}

/// Go's `strings.TrimSpace`.
pub(crate) fn go_trim(s: &str) -> &str {
    s.trim_matches(is_go_space)
}

/// An approximation of Go's `strconv.IsPrint`: letters, marks, numbers, punctuation,
/// symbols and the ASCII space. Ollama silently drops every other character it reads
/// outside the tab/newline handling, so the writer refuses values that contain them.
/// Control characters, non-ASCII spaces, line/paragraph separators, the common format
/// characters and private-use code points are non-printable; unassigned code points are
/// not detected.
pub fn is_go_print(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    let u = c as u32;
    let format = matches!(u,
        0xAD | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x890..=0x891 | 0x8E2 | 0x180E
        | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F | 0xFEFF
        | 0xFFF9..=0xFFFB | 0x110BD | 0x110CD | 0x13430..=0x1343F | 0x1BCA0..=0x1BCA3
        | 0x1D173..=0x1D17A | 0xE0001 | 0xE0020..=0xE007F);
    let private = matches!(u, 0xE000..=0xF8FF | 0xF0000..=0xFFFFD | 0x100000..=0x10FFFD);
    let nonchar = (0xFDD0..=0xFDEF).contains(&u) || (u & 0xFFFE) == 0xFFFE;
    !(format || private || nonchar)
}

/// Ollama's `unquote`: strips `"""…"""` or `"…"`; `None` when a quote is still open.
pub(crate) fn unquote(s: &str) -> Option<&str> {
    if let Some(rest) = s.strip_prefix("\"\"\"") {
        if s.len() >= 6 && s.ends_with("\"\"\"") {
            return Some(&rest[..rest.len() - 3]);
        }
        return None;
    }
    if let Some(rest) = s.strip_prefix('"') {
        if s.len() >= 2 && s.ends_with('"') {
            return Some(&rest[..rest.len() - 1]);
        }
        return None;
    }
    Some(s)
}

/// Decodes the bytes as Ollama does: a UTF-8 or UTF-16 (LE/BE) byte-order mark selects the
/// encoding, otherwise UTF-8 with invalid bytes replaced by U+FFFD.
pub fn decode(bytes: &[u8]) -> String {
    if let Some(rest) = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        return String::from_utf8_lossy(rest).into_owned();
    }
    let utf16 = |rest: &[u8], be: bool| -> String {
        let units = rest.chunks(2).map(|c| match (c, be) {
            ([a, b], false) => u16::from_le_bytes([*a, *b]),
            ([a, b], true) => u16::from_be_bytes([*a, *b]),
            _ => 0xFFFD,
        });
        char::decode_utf16(units).map(|r| r.unwrap_or('\u{FFFD}')).collect()
    };
    if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        return utf16(rest, false);
    }
    if let Some(rest) = bytes.strip_prefix(&[0xFE, 0xFF]) {
        return utf16(rest, true);
    }
    String::from_utf8_lossy(bytes).into_owned()
}

fn is_valid_command(s: &str) -> bool {
    matches!(
        s.to_ascii_lowercase().as_str(),
        "from"
            | "license"
            | "template"
            | "system"
            | "adapter"
            | "draft"
            | "renderer"
            | "parser"
            | "parameter"
            | "message"
            | "requires"
    )
}

fn make_command(name: &str, param: &str, role: Option<Role>, args: String) -> Command {
    match name {
        "from" => Command::From(args),
        "license" => Command::License(args),
        "template" => Command::Template(args),
        "system" => Command::System(args),
        "adapter" => Command::Adapter(args),
        "draft" => Command::Draft(args),
        "renderer" => Command::Renderer(args),
        "parser" => Command::Parser(args),
        "requires" => Command::Requires(args),
        "message" => Command::Message { role: role.unwrap_or(Role::User), content: args },
        _ => Command::Parameter { name: param.to_string(), value: args },
    }
}

/// Parses Modelfile text with Ollama's grammar. Stops at the first syntax error.
///
/// Line numbers count `\r\n` as one line break (Ollama counts both characters) and point
/// at the line the offending character is on; for an error found at a line break, the
/// line that break ends.
pub fn parse(text: &str) -> Result<Modelfile, Diagnostic> {
    let mut entries = Vec::new();
    let mut state = State::Nil;
    let mut buf = String::new();
    let mut name = String::new(); // lower-cased command name
    let mut param = String::new();
    let mut role: Option<Role> = None;
    let mut line = 1usize;
    let mut cmd_line = 1usize;
    let mut value_line = 1usize;
    let mut prev_cr = false;

    for c in text.chars() {
        // The line this character is on; a line break belongs to the line it ends, and
        // \r\n is one break.
        let crlf_tail = c == '\n' && prev_cr;
        let here = if crlf_tail { line - 1 } else { line };
        if is_newline(c) && !crlf_tail {
            line += 1;
        }
        prev_cr = c == '\r';

        // parseRuneForState
        let (next, keep): (State, Option<char>) = match state {
            State::Nil => {
                if c == '#' {
                    (State::Comment, None)
                } else if is_space(c) || is_newline(c) {
                    (State::Nil, None)
                } else {
                    cmd_line = here;
                    (State::Name, Some(c))
                }
            }
            State::Name => {
                if c.is_ascii_alphabetic() {
                    (State::Name, Some(c))
                } else if is_space(c) {
                    (State::Value, None)
                } else {
                    return Err(Diagnostic::error(Some(here), ERR_INVALID_COMMAND));
                }
            }
            State::Value => {
                if is_newline(c) || is_space(c) {
                    (State::Nil, Some(c))
                } else {
                    (State::Value, Some(c))
                }
            }
            State::Parameter => {
                if c.is_ascii_alphanumeric() || c == '_' {
                    (State::Parameter, Some(c))
                } else if is_space(c) {
                    (State::Value, None)
                } else {
                    return Err(Diagnostic::error(Some(here), format!("{ERR_EOF}: {buf}")));
                }
            }
            State::Message => {
                if c.is_ascii_alphabetic() {
                    (State::Message, Some(c))
                } else if is_space(c) {
                    (State::Value, None)
                } else {
                    return Err(Diagnostic::error(Some(here), format!("{ERR_EOF}: {buf}")));
                }
            }
            State::Comment => {
                if is_newline(c) {
                    (State::Nil, None)
                } else {
                    (State::Comment, None)
                }
            }
        };

        let mut next = next;
        if next != state {
            match state {
                State::Name => {
                    if !is_valid_command(&buf) {
                        return Err(Diagnostic::error(Some(here), ERR_INVALID_COMMAND));
                    }
                    name = buf.to_ascii_lowercase();
                    match name.as_str() {
                        "parameter" => next = State::Parameter,
                        "message" => next = State::Message,
                        _ => {}
                    }
                    value_line = here;
                }
                State::Parameter => {
                    param = buf.clone();
                    value_line = here;
                }
                State::Message => {
                    role = match buf.as_str() {
                        "system" => Some(Role::System),
                        "user" => Some(Role::User),
                        "assistant" => Some(Role::Assistant),
                        _ => return Err(Diagnostic::error(Some(here), ERR_INVALID_ROLE)),
                    };
                    value_line = here;
                }
                State::Comment | State::Nil => {}
                State::Value => {
                    let complete = unquote(go_trim(&buf)).map(str::to_string);
                    match complete {
                        Some(args) if !is_space(c) => {
                            entries.push(Entry { line: cmd_line, command: make_command(&name, &param, role, args) });
                            role = None;
                        }
                        _ => {
                            // Still inside a quoted value (or a space): keep reading.
                            buf.push(c);
                            continue;
                        }
                    }
                }
            }
            buf.clear();
            state = next;
        }

        if let Some(k) = keep {
            if is_go_print(k) {
                buf.push(k);
            }
        }
    }

    match state {
        State::Comment | State::Nil => {}
        State::Value => match unquote(go_trim(&buf)) {
            Some(args) => {
                let args = args.to_string();
                entries.push(Entry { line: cmd_line, command: make_command(&name, &param, role, args) })
            }
            None => {
                return Err(Diagnostic::error(
                    Some(value_line),
                    format!("{ERR_EOF} (the quoted value that starts on line {value_line} is never closed)"),
                ))
            }
        },
        _ => return Err(Diagnostic::error(Some(line), ERR_EOF)),
    }

    if !entries.iter().any(|e| matches!(e.command, Command::From(_))) {
        return Err(Diagnostic::error(None, ERR_MISSING_FROM));
    }
    Ok(Modelfile { entries, warnings: Vec::new() })
}

/// Checks a semantic version the way Ollama checks REQUIRES (golang.org/x/mod/semver
/// after adding a `v` prefix): `MAJOR[.MINOR[.PATCH[-PRE][+BUILD]]]`, no leading zeros.
pub(crate) fn is_valid_semver(s: &str) -> bool {
    let v = s.strip_prefix('v').unwrap_or(s);
    let num = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && (p == "0" || !p.starts_with('0'));
    let ident_ok = |p: &str, numeric_rule: bool| {
        !p.is_empty()
            && p.split('.').all(|id| {
                !id.is_empty()
                    && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && (!numeric_rule || !id.bytes().all(|b| b.is_ascii_digit()) || id == "0" || !id.starts_with('0'))
            })
    };
    let (core, build) = match v.split_once('+') {
        Some((c, b)) => (c, Some(b)),
        None => (v, None),
    };
    let (core, pre) = match core.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (core, None),
    };
    let parts: Vec<&str> = core.split('.').collect();
    if parts.len() > 3 || !parts.iter().all(|p| num(p)) {
        return false;
    }
    if (pre.is_some() || build.is_some()) && parts.len() != 3 {
        return false;
    }
    pre.is_none_or(|p| ident_ok(p, true)) && build.is_none_or(|b| ident_ok(b, false))
}

/// Parses and validates a Modelfile as `ollama create` would: syntax (first error only),
/// then every command: FROM present, PARAMETER names and values, REQUIRES.
///
/// On success the returned [`Modelfile`] carries the warnings (deprecated parameters,
/// parameter names that Ollama reads as commands).
pub fn check(text: &str) -> Result<Modelfile, Vec<Diagnostic>> {
    let mut mf = parse(text).map_err(|d| vec![d])?;
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    for e in &mf.entries {
        match &e.command {
            Command::Parameter { name, value } => match params::check(name, value) {
                ParamCheck::Ok => {}
                ParamCheck::Deprecated => {
                    warnings.push(Diagnostic::warning(Some(e.line), format!("parameter {name} is deprecated")))
                }
                ParamCheck::Shadowed(cmd) => warnings.push(Diagnostic::warning(
                    Some(e.line),
                    format!("parameter name '{name}' is a command name: Ollama reads this line as {cmd}"),
                )),
                ParamCheck::Err(msg) => errors.push(Diagnostic::error(Some(e.line), msg)),
            },
            Command::Requires(v) if !is_valid_semver(v) => {
                errors.push(Diagnostic::error(Some(e.line), "requires must be a valid semver (e.g. 0.14.0)"))
            }
            _ => {}
        }
    }
    if errors.is_empty() {
        mf.warnings = warnings;
        Ok(mf)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmds(text: &str) -> Vec<Command> {
        parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}")).commands()
    }
    fn from(s: &str) -> Command {
        Command::From(s.into())
    }
    fn p(n: &str, v: &str) -> Command {
        Command::Parameter { name: n.into(), value: v.into() }
    }
    fn err(text: &str) -> Diagnostic {
        match parse(text) {
            Ok(m) => panic!("{text:?} parsed: {:?}", m.commands()),
            Err(e) => e,
        }
    }

    // The cases below follow Ollama's parser/parser_test.go.

    #[test]
    fn basic_file() {
        let input = "\nFROM model1\nADAPTER adapter1\nLICENSE MIT\nPARAMETER param1 value1\nPARAMETER param2 value2\nTEMPLATE \"\"\"{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}\"\"\"    \n";
        assert_eq!(
            cmds(input),
            vec![
                from("model1"),
                Command::Adapter("adapter1".into()),
                Command::License("MIT".into()),
                p("param1", "value1"),
                p("param2", "value2"),
                Command::Template(
                    "{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}"
                        .into()
                ),
            ]
        );
    }

    #[test]
    fn trim_space() {
        let input = "\nFROM \"     model 1\"\nADAPTER      adapter3\nLICENSE \"MIT       \"\nPARAMETER param1        value1\nTEMPLATE \"\"\"   {{ .Prompt }}   \"\"\"    \n";
        assert_eq!(
            cmds(input),
            vec![
                from("     model 1"),
                Command::Adapter("adapter3".into()),
                Command::License("MIT       ".into()),
                p("param1", "value1"),
                Command::Template("   {{ .Prompt }}   ".into()),
            ]
        );
    }

    #[test]
    fn from_cases() {
        assert_eq!(cmds("FROM \"FOO  BAR  \""), vec![from("FOO  BAR  ")]);
        assert_eq!(cmds("FROM \"FOO BAR\"\nPARAMETER param1 value1"), vec![from("FOO BAR"), p("param1", "value1")]);
        assert_eq!(cmds("FROM     FOOO BAR    "), vec![from("FOOO BAR")]);
        assert_eq!(cmds("FROM /what/is/the path "), vec![from("/what/is/the path")]);
        assert_eq!(cmds("FROM llama3:7b-instruct-q4_K_M"), vec![from("llama3:7b-instruct-q4_K_M")]);
        assert_eq!(err("").message, ERR_MISSING_FROM);
        assert_eq!(err("PARAMETER param1 value1").message, ERR_MISSING_FROM);
        assert_eq!(cmds("PARAMETER param1 value1\nFROM foo"), vec![p("param1", "value1"), from("foo")]);
        assert_eq!(
            cmds("PARAMETER what the \nFROM lemons make lemonade "),
            vec![p("what", "the"), from("lemons make lemonade")]
        );
    }

    #[test]
    fn case_insensitive_commands() {
        assert_eq!(
            cmds("from foo\nParameter stop x\nsYsTeM hi"),
            vec![from("foo"), p("stop", "x"), Command::System("hi".into())]
        );
    }

    #[test]
    fn parameter_missing_value() {
        let e = err("\nFROM foo\nPARAMETER param1\n");
        assert_eq!(e.message, "unexpected EOF: param1");
        assert_eq!(e.line, Some(3));
    }

    #[test]
    fn bad_command() {
        let e = err("\nFROM foo\nBADCOMMAND param1 value1\n");
        assert_eq!(e.message, ERR_INVALID_COMMAND);
        assert_eq!(e.line, Some(3));
        assert_eq!(e.to_string(), format!("(line 3): {ERR_INVALID_COMMAND}"));
        // A command name directly followed by a newline, or a non-letter.
        assert_eq!(err("FROM\nfoo").message, ERR_INVALID_COMMAND);
        assert_eq!(err("FROM foo\nPARAMETER2 x y").message, ERR_INVALID_COMMAND);
    }

    #[test]
    fn other_commands() {
        assert_eq!(cmds("FROM foo\nRENDERER renderer1\nPARSER parser1\nDRAFT ./d\nREQUIRES 0.12.0").len(), 5);
    }

    #[test]
    fn messages() {
        let m = |r, c: &str| Command::Message { role: r, content: c.into() };
        assert_eq!(
            cmds("\nFROM foo\nMESSAGE system You are a file parser. Always parse things.\n"),
            vec![from("foo"), m(Role::System, "You are a file parser. Always parse things.")]
        );
        assert_eq!(
            cmds("\nFROM foo\nMESSAGE system You are a file parser. Always parse things."),
            vec![from("foo"), m(Role::System, "You are a file parser. Always parse things.")]
        );
        assert_eq!(
            cmds("FROM foo\nMESSAGE user Hey there!\nMESSAGE assistant Hello, I want to parse all the things!\n"),
            vec![
                from("foo"),
                m(Role::User, "Hey there!"),
                m(Role::Assistant, "Hello, I want to parse all the things!")
            ]
        );
        assert_eq!(
            cmds("\nFROM foo\nMESSAGE system \"\"\"\nYou are a multiline file parser. Always parse things.\n\"\"\"\n\t\t\t"),
            vec![from("foo"), m(Role::System, "\nYou are a multiline file parser. Always parse things.\n")]
        );
        let e = err("\nFROM foo\nMESSAGE badguy I'm a bad guy!\n");
        assert_eq!((e.line, e.message.as_str()), (Some(3), ERR_INVALID_ROLE));
        assert!(err("\nFROM foo\nMESSAGE system\n").message.starts_with("unexpected EOF"));
        assert!(err("\nFROM foo\nMESSAGE system").message.starts_with("unexpected EOF"));
        // Roles are case-sensitive.
        assert_eq!(err("FROM foo\nMESSAGE User hi\n").message, ERR_INVALID_ROLE);
    }

    #[test]
    fn quoted() {
        let s = |v: &str| vec![from("foo"), Command::System(v.into())];
        assert_eq!(
            cmds("\nFROM foo\nSYSTEM \"\"\"\nThis is a\nmultiline system.\n\"\"\"\n\t\t\t"),
            s("\nThis is a\nmultiline system.\n")
        );
        assert_eq!(
            cmds("\nFROM foo\nSYSTEM \"\"\"\nThis is a\nmultiline system.\"\"\"\n"),
            s("\nThis is a\nmultiline system.")
        );
        assert_eq!(
            cmds("\nFROM foo\nSYSTEM \"\"\"This is a\nmultiline system.\"\"\"\n"),
            s("This is a\nmultiline system.")
        );
        assert_eq!(
            cmds("\nFROM foo\nSYSTEM \"\"\"This is a multiline system.\"\"\"\n"),
            s("This is a multiline system.")
        );
        assert!(err("\nFROM foo\nSYSTEM \"\"\"This is a multiline system.\"\"\n")
            .message
            .starts_with("unexpected EOF"));
        assert!(err("\nFROM foo\nSYSTEM \"\n\t\t\t").message.starts_with("unexpected EOF"));
        assert_eq!(
            cmds("\nFROM foo\nSYSTEM \"\"\"\nThis is a multiline system with \"quotes\".\n\"\"\"\n"),
            s("\nThis is a multiline system with \"quotes\".\n")
        );
        assert_eq!(cmds("\nFROM foo\nSYSTEM \"\"\"\"\"\"\n"), s(""));
        assert_eq!(cmds("\nFROM foo\nSYSTEM \"\"\n"), s(""));
        assert_eq!(cmds("\nFROM foo\nSYSTEM \"'\"\n"), s("'"));
        assert_eq!(
            cmds("\nFROM foo\nSYSTEM \"\"\"''\"'\"\"'\"\"'\"'''''\"\"'\"\"'\"\"\"\n"),
            s("''\"'\"\"'\"\"'\"'''''\"\"'\"\"'")
        );
        assert_eq!(
            cmds("\nFROM foo\nTEMPLATE \"\"\"\n{{ .Prompt }}\n\"\"\""),
            vec![from("foo"), Command::Template("\n{{ .Prompt }}\n".into())]
        );
        // A single-quoted value may also span lines.
        assert_eq!(cmds("FROM foo\nSYSTEM \"a\nb\"\n"), s("a\nb"));
        // A line of a """ value that ends in """ closes it, even mid-text.
        let e = err("FROM foo\nSYSTEM \"\"\"a\"\"\"\nb\"\"\"\n");
        assert_eq!(e.line, Some(3));
    }

    #[test]
    fn parameters() {
        let cases = [
            ("num_ctx 1", "num_ctx", "1"),
            ("top_p 1.0", "top_p", "1.0"),
            ("stop ### User:", "stop", "### User:"),
            ("stop ### User: ", "stop", "### User:"),
            ("stop \"### User:\"", "stop", "### User:"),
            ("stop \"### User: \"", "stop", "### User: "),
            ("stop \"\"\"### User:\"\"\"", "stop", "### User:"),
            ("stop \"\"\"### User:\n\"\"\"", "stop", "### User:\n"),
            ("stop <|endoftext|>", "stop", "<|endoftext|>"),
            ("stop </s>", "stop", "</s>"),
        ];
        for (line, n, v) in cases {
            assert_eq!(cmds(&format!("FROM foo\nPARAMETER {line}\n")), vec![from("foo"), p(n, v)], "{line}");
        }
        // Parameter names keep their case; a non-identifier character ends the file early.
        assert_eq!(cmds("FROM foo\nPARAMETER Stop x"), vec![from("foo"), p("Stop", "x")]);
        assert!(err("FROM foo\nPARAMETER num-ctx 4").message.starts_with("unexpected EOF"));
    }

    #[test]
    fn comments() {
        assert_eq!(cmds("\n# comment\nFROM foo\n\t"), vec![from("foo")]);
        assert_eq!(cmds("  # indented comment\nFROM foo # not a comment"), vec![from("foo # not a comment")]);
    }

    #[test]
    fn utf16_and_bom() {
        let data = "FROM bob\nPARAMETER param1 1\nSYSTEM You are a utf16 file.\n";
        let mut le = vec![0xFF, 0xFE];
        let mut be = vec![0xFE, 0xFF];
        for u in data.encode_utf16() {
            le.extend_from_slice(&u.to_le_bytes());
            be.extend_from_slice(&u.to_be_bytes());
        }
        let want = vec![from("bob"), p("param1", "1"), Command::System("You are a utf16 file.".into())];
        assert_eq!(cmds(&decode(&le)), want);
        assert_eq!(cmds(&decode(&be)), want);
        let mut bom = vec![0xEF, 0xBB, 0xBF];
        bom.extend_from_slice(data.as_bytes());
        assert_eq!(cmds(&decode(&bom)), want);
        assert_eq!(cmds("FROM test\n\tSYSTEM 你好👋"), vec![from("test"), Command::System("你好👋".into())]);
    }

    #[test]
    fn non_printable_dropped_and_crlf() {
        assert_eq!(cmds("FROM a\u{1}b\u{200B}c"), vec![from("abc")]);
        assert_eq!(
            cmds("FROM foo\r\nSYSTEM \"\"\"a\r\nb\"\"\"\r\n"),
            vec![from("foo"), Command::System("a\r\nb".into())]
        );
        let e = err("FROM foo\r\nBAD x\r\n");
        assert_eq!(e.line, Some(2));
    }

    #[test]
    fn check_parameters() {
        let e = check("FROM foo\nPARAMETER num_ctx abc\nPARAMETER temperature hot\nPARAMETER use_mmap maybe\nPARAMETER bogus 1\nPARAMETER Temperature 1\n").unwrap_err();
        let msgs: Vec<String> = e.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            msgs,
            vec![
                "(line 2): invalid int value [abc]",
                "(line 3): invalid float value [hot]",
                "(line 4): invalid bool value [maybe]",
                "(line 5): unknown parameter 'bogus'",
                "(line 6): unknown parameter 'Temperature'",
            ]
        );
        let ok = check("FROM foo\nPARAMETER num_ctx 8192\nPARAMETER temperature 0.2\nPARAMETER stop <|im_end|>\nPARAMETER stop <|im_start|>\nPARAMETER mirostat 2\nPARAMETER use_mmap true\nPARAMETER seed -1\n").unwrap();
        assert_eq!(ok.warnings.len(), 1);
        assert_eq!(ok.warnings[0].to_string(), "warning: (line 6): parameter mirostat is deprecated");
        assert!(check("FROM foo\nPARAMETER temperature 1e39\n").is_err());
        assert!(check("FROM foo\nPARAMETER num_ctx 1.5\n").is_err());
        assert!(check("FROM foo\nPARAMETER num_ctx 99999999999999999999\n").is_err());
        assert!(check("FROM foo\nPARAMETER top_p .5\nPARAMETER top_k +40\nPARAMETER min_p 5e-2\n").is_ok());
        let w = check("FROM foo\nPARAMETER system hi\n").unwrap();
        assert!(w.warnings[0].message.contains("SYSTEM"));
    }

    #[test]
    fn check_requires() {
        assert!(check("FROM foo\nREQUIRES 0.14.0\n").is_ok());
        assert!(check("FROM foo\nREQUIRES v0.14.0-rc1\n").is_ok());
        let e = check("FROM foo\nREQUIRES 0.14.x\n").unwrap_err();
        assert_eq!(e[0].message, "requires must be a valid semver (e.g. 0.14.0)");
        assert!(check("FROM foo\nREQUIRES 01.2.3\n").is_err());
    }

    #[test]
    fn never_panics_on_odd_input() {
        for s in [
            "\"",
            "\"\"\"",
            "FROM \"\"\"",
            "FROM \"\"\"\"",
            "#",
            "F",
            "FROM ",
            "FROM \t",
            "MESSAGE",
            "PARAMETER",
            "\r\r\n\n",
            "FROM x\nMESSAGE user \"\"\"a",
        ] {
            let _ = check(s);
        }
    }
}
