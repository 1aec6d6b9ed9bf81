//! Go `text/template` syntax: lexing (delimiters `{{ }}`, trim markers `{{- ` and ` -}}`,
//! comments) and parsing to a tree, with Go's error wording (`template: :LINE: ...`).

use std::collections::BTreeMap;

/// A parse error, worded as Go's text/template/parse reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Text(String),
    Action { line: usize, pipe: Pipe },
    If(Branch),
    Range(Branch),
    With(Branch),
    Template { line: usize, name: String, pipe: Option<Pipe> },
    Break,
    Continue,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Branch {
    pub line: usize,
    pub pipe: Pipe,
    pub list: Vec<Node>,
    pub else_list: Option<Vec<Node>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pipe {
    /// Declared variables (`$x :=`, `$i, $m :=`).
    pub decl: Vec<String>,
    /// `=` instead of `:=`.
    pub is_assign: bool,
    pub cmds: Vec<Cmd>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cmd {
    pub args: Vec<Arg>,
    /// The command as Go's errors show it (`at <...>`), made once at parse time.
    pub desc: std::rc::Rc<str>,
}

impl Cmd {
    pub fn new(args: Vec<Arg>) -> Cmd {
        let desc = args.iter().map(|a| a.describe()).collect::<Vec<_>>().join(" ").into();
        Cmd { args, desc }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    /// `.A.B`
    Field(Vec<String>),
    /// `$x.A.B` (`$` alone is the data).
    Variable(String, Vec<String>),
    /// `(pipeline).A.B`
    Chain(Box<Arg>, Vec<String>),
    Dot,
    Nil,
    Bool(bool),
    /// An integer constant that fits an int, or a float constant.
    Int(i64),
    Float(f64),
    Str(String),
    /// A function name.
    Ident(String),
    Pipe(Box<Pipe>),
}

impl Arg {
    /// Go's String() of the node, for `executing "" at <...>`.
    pub fn describe(&self) -> String {
        match self {
            Arg::Field(f) => f.iter().map(|x| format!(".{x}")).collect(),
            Arg::Variable(v, f) => format!("{v}{}", f.iter().map(|x| format!(".{x}")).collect::<String>()),
            Arg::Chain(a, f) => format!("{}{}", a.describe(), f.iter().map(|x| format!(".{x}")).collect::<String>()),
            Arg::Dot => ".".into(),
            Arg::Nil => "nil".into(),
            Arg::Bool(b) => b.to_string(),
            Arg::Int(i) => i.to_string(),
            Arg::Float(f) => f.to_string(),
            Arg::Str(s) => format!("{s:?}"),
            Arg::Ident(s) => s.clone(),
            Arg::Pipe(p) => format!("({})", p.describe()),
        }
    }
}

impl Pipe {
    pub fn describe(&self) -> String {
        let mut s = String::new();
        if !self.decl.is_empty() {
            s.push_str(&self.decl.join(", "));
            s.push_str(if self.is_assign { " = " } else { " := " });
        }
        let cmds: Vec<String> =
            self.cmds.iter().map(|c| c.args.iter().map(|a| a.describe()).collect::<Vec<_>>().join(" ")).collect();
        s.push_str(&cmds.join(" | "));
        s
    }
}

/// A parsed template and the ones it defines.
#[derive(Debug, Clone, PartialEq)]
pub struct Tree {
    pub root: Vec<Node>,
    pub defines: BTreeMap<String, Vec<Node>>,
}

// ---------------------------------------------------------------- lexer

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Text(String),
    LeftDelim,
    RightDelim,
    Space,
    Field(String),
    Variable(String),
    Dot,
    Ident(String),
    Str(String),
    RawStr(String),
    Char(char),
    Number(String),
    Bool(bool),
    Nil,
    Pipe,
    Declare,
    Assign,
    LeftParen,
    RightParen,
    Comma,
    Keyword(&'static str),
    Eof,
}

const KEYWORDS: &[&str] = &["block", "break", "continue", "define", "else", "end", "if", "range", "template", "with"];

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_alnum(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    line: usize,
    toks: Vec<(Tok, usize)>,
    paren_depth: usize,
}

fn err(line: usize, msg: impl std::fmt::Display) -> ParseError {
    ParseError(format!("template: :{line}: {msg}"))
}

impl<'a> Lexer<'a> {
    fn emit(&mut self, t: Tok, line: usize) {
        self.toks.push((t, line));
    }

    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    fn advance(&mut self, n: usize) {
        self.line += self.src[self.pos..self.pos + n].matches('\n').count();
        self.pos += n;
    }

    fn run(mut self) -> Result<Vec<(Tok, usize)>, ParseError> {
        loop {
            // Text up to the next "{{".
            let rest = self.rest();
            let Some(i) = rest.find("{{") else {
                if !rest.is_empty() {
                    let line = self.line;
                    self.emit(Tok::Text(rest.to_string()), line);
                    self.advance(rest.len());
                }
                let line = self.line;
                self.emit(Tok::Eof, line);
                return Ok(self.toks);
            };
            let after = &rest[i + 2..];
            let trim_left = after.starts_with('-') && after[1..].starts_with(is_space);
            let mut text = &rest[..i];
            if trim_left {
                text = text.trim_end_matches(is_space);
            }
            if !text.is_empty() {
                let line = self.line;
                self.emit(Tok::Text(text.to_string()), line);
            }
            self.advance(i + 2);
            if trim_left {
                self.advance(2);
            }
            // A comment.
            let r = self.rest();
            let r_trim = r.trim_start_matches(is_space);
            if r.starts_with("/*") || (trim_left && r_trim.starts_with("/*") && r.len() == r_trim.len()) {
                let Some(end) = r.find("*/") else {
                    return Err(err(self.line, "unclosed comment"));
                };
                self.advance(end + 2);
                let r = self.rest();
                let (trim_right, close) = if r.starts_with(" -}}") || r.starts_with("\t-}}") || r.starts_with("\n-}}") {
                    (true, 4)
                } else if r.starts_with("}}") {
                    (false, 2)
                } else {
                    return Err(err(self.line, "comment ends before closing delimiter"));
                };
                self.advance(close);
                if trim_right {
                    let r = self.rest();
                    let n = r.len() - r.trim_start_matches(is_space).len();
                    self.advance(n);
                }
                continue;
            }
            let line = self.line;
            self.emit(Tok::LeftDelim, line);
            self.inside_action()?;
        }
    }

    fn inside_action(&mut self) -> Result<(), ParseError> {
        loop {
            let r = self.rest();
            let line = self.line;
            // Right delimiter, possibly with a trim marker.
            let sp = r.len() - r.trim_start_matches(is_space).len();
            if sp > 0 && r[sp..].starts_with("-}}") {
                if self.paren_depth > 0 {
                    return Err(err(line, "unclosed left paren"));
                }
                self.advance(sp + 3);
                self.emit(Tok::RightDelim, line);
                let r = self.rest();
                let n = r.len() - r.trim_start_matches(is_space).len();
                self.advance(n);
                return Ok(());
            }
            if r.starts_with("}}") {
                if self.paren_depth > 0 {
                    return Err(err(line, "unclosed left paren"));
                }
                self.advance(2);
                self.emit(Tok::RightDelim, line);
                return Ok(());
            }
            let Some(c) = r.chars().next() else {
                return Err(err(line, "unclosed action"));
            };
            match c {
                c if is_space(c) => {
                    if c == '\n' || r[..sp].contains('\n') {
                        // Go allows newlines inside actions since 1.16.
                    }
                    self.advance(sp);
                    self.emit(Tok::Space, line);
                }
                '=' => {
                    self.advance(1);
                    self.emit(Tok::Assign, line);
                }
                ':' => {
                    if !r.starts_with(":=") {
                        return Err(err(line, "expected :="));
                    }
                    self.advance(2);
                    self.emit(Tok::Declare, line);
                }
                '|' => {
                    self.advance(1);
                    self.emit(Tok::Pipe, line);
                }
                ',' => {
                    self.advance(1);
                    self.emit(Tok::Comma, line);
                }
                '(' => {
                    self.advance(1);
                    self.paren_depth += 1;
                    self.emit(Tok::LeftParen, line);
                }
                ')' => {
                    if self.paren_depth == 0 {
                        return Err(err(line, "unexpected right paren"));
                    }
                    self.paren_depth -= 1;
                    self.advance(1);
                    self.emit(Tok::RightParen, line);
                }
                '"' => {
                    let mut end = None;
                    let mut esc = false;
                    for (i, ch) in r.char_indices().skip(1) {
                        if esc {
                            esc = false;
                            continue;
                        }
                        match ch {
                            '\\' => esc = true,
                            '\n' => break,
                            '"' => {
                                end = Some(i);
                                break;
                            }
                            _ => {}
                        }
                    }
                    let Some(end) = end else {
                        return Err(err(line, "unterminated quoted string"));
                    };
                    let raw = r[..=end].to_string();
                    self.advance(end + 1);
                    self.emit(Tok::Str(raw), line);
                }
                '`' => {
                    let Some(end) = r[1..].find('`') else {
                        return Err(err(line, "unterminated raw quoted string"));
                    };
                    let s = r[1..1 + end].to_string();
                    self.advance(end + 2);
                    self.emit(Tok::RawStr(s), line);
                }
                '\'' => {
                    let mut end = None;
                    let mut esc = false;
                    for (i, ch) in r.char_indices().skip(1) {
                        if esc {
                            esc = false;
                            continue;
                        }
                        match ch {
                            '\\' => esc = true,
                            '\n' => break,
                            '\'' => {
                                end = Some(i);
                                break;
                            }
                            _ => {}
                        }
                    }
                    let Some(end) = end else {
                        return Err(err(line, "unterminated character constant"));
                    };
                    let body = &r[1..end];
                    let ch = unquote_char(body)
                        .ok_or_else(|| err(line, format!("malformed character constant: {}", &r[..=end])))?;
                    self.advance(end + 1);
                    self.emit(Tok::Char(ch), line);
                }
                '$' => {
                    let n = 1 + r[1..].find(|c: char| !is_alnum(c)).unwrap_or(r.len() - 1);
                    let name = r[..n].to_string();
                    self.advance(n);
                    self.emit(Tok::Variable(name), line);
                }
                '.' => {
                    let next = r[1..].chars().next();
                    if next.is_some_and(|c| c.is_ascii_digit()) {
                        self.number(line)?;
                    } else if next.is_some_and(is_alnum) {
                        let n = 1 + r[1..].find(|c: char| !is_alnum(c)).unwrap_or(r.len() - 1);
                        let name = r[1..n].to_string();
                        self.advance(n);
                        self.emit(Tok::Field(name), line);
                    } else {
                        self.advance(1);
                        self.emit(Tok::Dot, line);
                    }
                }
                '+' | '-' | '0'..='9' => self.number(line)?,
                c if is_alnum(c) => {
                    let n = r.find(|c: char| !is_alnum(c)).unwrap_or(r.len());
                    let word = &r[..n];
                    let tok = if let Some(k) = KEYWORDS.iter().find(|k| **k == word) {
                        Tok::Keyword(k)
                    } else if word == "true" || word == "false" {
                        Tok::Bool(word == "true")
                    } else if word == "nil" {
                        Tok::Nil
                    } else {
                        Tok::Ident(word.to_string())
                    };
                    self.advance(n);
                    self.emit(tok, line);
                }
                c => return Err(err(line, format!("unrecognized character in action: {c:?}"))),
            }
        }
    }

    fn number(&mut self, line: usize) -> Result<(), ParseError> {
        let r = self.rest();
        let n = r
            .char_indices()
            .skip(1)
            .find(|&(i, c)| {
                !(c.is_ascii_alphanumeric()
                    || c == '.'
                    || c == '_'
                    || ((c == '+' || c == '-') && matches!(r.as_bytes()[i - 1], b'e' | b'E' | b'p' | b'P')))
            })
            .map(|(i, _)| i)
            .unwrap_or(r.len());
        let s = r[..n].to_string();
        self.advance(n);
        self.emit(Tok::Number(s), line);
        Ok(())
    }
}

fn unquote_char(body: &str) -> Option<char> {
    let s = unquote(body, '\'')?;
    let mut it = s.chars();
    let c = it.next()?;
    it.next().is_none().then_some(c)
}

/// Go's strconv.Unquote body (without the quotes).
fn unquote(body: &str, quote: char) -> Option<String> {
    let mut out = String::new();
    let mut it = body.chars().peekable();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let e = it.next()?;
        match e {
            'a' => out.push('\x07'),
            'b' => out.push('\x08'),
            'f' => out.push('\x0c'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'v' => out.push('\x0b'),
            '\\' => out.push('\\'),
            '\'' | '"' => {
                if e != quote {
                    return None;
                }
                out.push(e)
            }
            'x' | 'u' | 'U' => {
                let n = match e {
                    'x' => 2,
                    'u' => 4,
                    _ => 8,
                };
                let hex: String = (0..n).filter_map(|_| it.next()).collect();
                if hex.len() != n {
                    return None;
                }
                let v = u32::from_str_radix(&hex, 16).ok()?;
                if e == 'x' {
                    // A byte; only ASCII keeps the string valid UTF-8.
                    out.push(char::from_u32(v).filter(|_| v < 0x80)?);
                } else {
                    out.push(char::from_u32(v)?);
                }
            }
            '0'..='7' => {
                let mut v = e.to_digit(8)?;
                for _ in 0..2 {
                    v = v * 8 + it.next()?.to_digit(8)?;
                }
                if v >= 0x80 {
                    return None;
                }
                out.push(char::from_u32(v)?);
            }
            _ => return None,
        }
    }
    Some(out)
}

// ---------------------------------------------------------------- parser

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    vars: Vec<String>,
    range_depth: usize,
    defines: BTreeMap<String, Vec<Node>>,
}

/// What ended a list.
enum ListEnd {
    Eof,
    Closed,
    Else,
}

/// Parses a template as Go's text/template does (with Ollama's functions known).
pub fn parse(src: &str, funcs: &dyn Fn(&str) -> bool) -> Result<Tree, ParseError> {
    let toks = Lexer { src, pos: 0, line: 1, toks: Vec::new(), paren_depth: 0 }.run()?;
    let mut p = Parser { toks, pos: 0, vars: vec!["$".into()], range_depth: 0, defines: BTreeMap::new() };
    let (root, end) = p.list(true, funcs)?;
    match end {
        ListEnd::Eof => {}
        ListEnd::Closed => return Err(err(p.line(), "unexpected {{end}}")),
        ListEnd::Else => return Err(err(p.line(), "unexpected {{else}}")),
    }
    Ok(Tree { root, defines: p.defines })
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos].0
    }

    fn line(&self) -> usize {
        self.toks[self.pos.min(self.toks.len() - 1)].1
    }

    fn next(&mut self) -> Tok {
        let t = self.toks[self.pos].0.clone();
        if self.pos < self.toks.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn next_non_space(&mut self) -> Tok {
        loop {
            let t = self.next();
            if t != Tok::Space {
                return t;
            }
        }
    }

    fn peek_non_space(&mut self) -> Tok {
        let save = self.pos;
        let t = self.next_non_space();
        self.pos = save;
        t
    }

    fn unexpected(&self, t: &Tok, context: &str) -> ParseError {
        let what = match t {
            Tok::Eof => return err(self.line(), "unexpected EOF"),
            Tok::RightDelim => "\"}}\"".to_string(),
            Tok::Ident(s) | Tok::Field(s) | Tok::Variable(s) | Tok::Number(s) | Tok::Str(s) => format!("{s:?}"),
            Tok::Keyword(k) => format!("<{k}>"),
            Tok::Pipe => "\"|\"".into(),
            Tok::LeftParen => "\"(\"".into(),
            Tok::RightParen => "\")\"".into(),
            Tok::Comma => "\",\"".into(),
            Tok::Declare => "\":=\"".into(),
            Tok::Assign => "\"=\"".into(),
            other => format!("{other:?}"),
        };
        err(self.line(), format!("unexpected {what} in {context}"))
    }

    /// Nodes until EOF, `{{end}}` or `{{else}}` (the latter two consumed up to the keyword).
    fn list(&mut self, top: bool, funcs: &dyn Fn(&str) -> bool) -> Result<(Vec<Node>, ListEnd), ParseError> {
        let mut nodes = Vec::new();
        loop {
            match self.next() {
                Tok::Eof => return Ok((nodes, ListEnd::Eof)),
                Tok::Text(t) => nodes.push(Node::Text(t)),
                Tok::LeftDelim => {
                    let line = self.line();
                    match self.peek_non_space() {
                        Tok::Keyword("end") => {
                            self.next_non_space();
                            self.expect_close("end")?;
                            return Ok((nodes, ListEnd::Closed));
                        }
                        Tok::Keyword("else") => {
                            self.next_non_space();
                            return Ok((nodes, ListEnd::Else));
                        }
                        Tok::Keyword("define") => {
                            if !top {
                                return Err(err(line, "unexpected <define> in command"));
                            }
                            self.next_non_space();
                            self.define(funcs, false)?;
                        }
                        Tok::Keyword("block") => {
                            self.next_non_space();
                            let node = self.define(funcs, true)?;
                            nodes.push(node);
                        }
                        _ => nodes.push(self.action(funcs)?),
                    }
                }
                t => return Err(self.unexpected(&t, "input")),
            }
        }
    }

    fn expect_close(&mut self, context: &str) -> Result<(), ParseError> {
        match self.next_non_space() {
            Tok::RightDelim => Ok(()),
            t => Err(self.unexpected(&t, context)),
        }
    }

    fn string_arg(&mut self, context: &str) -> Result<String, ParseError> {
        match self.next_non_space() {
            Tok::Str(raw) => {
                unquote(&raw[1..raw.len() - 1], '"').ok_or_else(|| err(self.line(), format!("invalid syntax: {raw}")))
            }
            Tok::RawStr(s) => Ok(s),
            t => Err(self.unexpected(&t, context)),
        }
    }

    /// `define "name"` or `block "name" pipeline`, after the keyword.
    fn define(&mut self, funcs: &dyn Fn(&str) -> bool, block: bool) -> Result<Node, ParseError> {
        let line = self.line();
        let ctx = if block { "block clause" } else { "define clause" };
        let name = self.string_arg(ctx)?;
        let pipe = if block {
            Some(self.pipeline(ctx, funcs, false)?)
        } else {
            self.expect_close(ctx)?;
            None
        };
        let saved_vars = std::mem::replace(&mut self.vars, vec!["$".into()]);
        let saved_range = std::mem::replace(&mut self.range_depth, 0);
        let (body, end) = self.list(false, funcs)?;
        self.vars = saved_vars;
        self.range_depth = saved_range;
        match end {
            ListEnd::Closed => {}
            ListEnd::Eof => return Err(err(self.line(), "unexpected EOF")),
            ListEnd::Else => return Err(err(self.line(), "unexpected {{else}}")),
        }
        // An empty body does not replace an earlier definition.
        let blank = body.iter().all(|n| matches!(n, Node::Text(t) if t.trim().is_empty()));
        if !blank || !self.defines.contains_key(&name) {
            self.defines.insert(name.clone(), body);
        }
        Ok(Node::Template { line, name, pipe })
    }

    fn action(&mut self, funcs: &dyn Fn(&str) -> bool) -> Result<Node, ParseError> {
        let line = self.line();
        match self.peek_non_space() {
            Tok::Keyword(k @ ("if" | "range" | "with")) => {
                self.next_non_space();
                self.branch(k, funcs)
            }
            Tok::Keyword("template") => {
                self.next_non_space();
                let name = self.string_arg("template clause")?;
                let pipe = if self.peek_non_space() == Tok::RightDelim {
                    self.next_non_space();
                    None
                } else {
                    Some(self.pipeline("template clause", funcs, false)?)
                };
                Ok(Node::Template { line, name, pipe })
            }
            Tok::Keyword(k @ ("break" | "continue")) => {
                self.next_non_space();
                if self.range_depth == 0 {
                    return Err(err(line, format!("{{{{{k}}}}} outside {{{{range}}}}")));
                }
                self.expect_close(&format!("{{{{{k}}}}}"))?;
                Ok(if k == "break" { Node::Break } else { Node::Continue })
            }
            _ => Ok(Node::Action { line, pipe: self.pipeline("command", funcs, false)? }),
        }
    }

    /// if/range/with after the keyword (also `else if` / `else with` chains).
    fn branch(&mut self, kind: &str, funcs: &dyn Fn(&str) -> bool) -> Result<Node, ParseError> {
        let line = self.line();
        let mark = self.vars.len();
        let pipe = self.pipeline(kind, funcs, kind == "range")?;
        if kind == "range" {
            self.range_depth += 1;
        }
        let (list, end) = self.list(false, funcs)?;
        if kind == "range" {
            self.range_depth -= 1;
        }
        let else_list = match end {
            ListEnd::Eof => return Err(err(self.line(), "unexpected EOF")),
            ListEnd::Closed => None,
            ListEnd::Else => {
                // `{{else if ...}}` / `{{else with ...}}`: a nested branch sharing our {{end}}.
                match self.peek_non_space() {
                    Tok::Keyword(k @ ("if" | "with")) if k == kind => {
                        self.next_non_space();
                        let nested = self.branch(k, funcs)?;
                        Some(vec![nested])
                    }
                    _ => {
                        self.expect_close("else")?;
                        let (else_list, end) = self.list(false, funcs)?;
                        match end {
                            ListEnd::Closed => {}
                            ListEnd::Eof => return Err(err(self.line(), "unexpected EOF")),
                            ListEnd::Else => return Err(err(self.line(), "expected end; found {{else}}")),
                        }
                        Some(else_list)
                    }
                }
            }
        };
        self.vars.truncate(mark);
        let b = Branch { line, pipe, list, else_list };
        Ok(match kind {
            "if" => Node::If(b),
            "range" => Node::Range(b),
            _ => Node::With(b),
        })
    }

    /// A pipeline up to the closing delimiter (consumed).
    fn pipeline(&mut self, context: &str, funcs: &dyn Fn(&str) -> bool, range: bool) -> Result<Pipe, ParseError> {
        let mut decl = Vec::new();
        let mut is_assign = false;
        // Declarations: `$x :=`, `$x =`, `$i, $m :=` (range only).
        let save = self.pos;
        if let Tok::Variable(v) = self.next_non_space() {
            match self.next_non_space() {
                Tok::Declare | Tok::Assign => {
                    is_assign = self.toks[self.pos - 1].0 == Tok::Assign;
                    decl.push(v);
                }
                Tok::Comma if range => {
                    if let Tok::Variable(v2) = self.next_non_space() {
                        match self.next_non_space() {
                            Tok::Declare | Tok::Assign => {
                                is_assign = self.toks[self.pos - 1].0 == Tok::Assign;
                                decl.push(v);
                                decl.push(v2);
                            }
                            t => return Err(self.unexpected(&t, "range")),
                        }
                    } else {
                        return Err(err(self.line(), "range can only initialize variables"));
                    }
                }
                Tok::Comma => return Err(err(self.line(), format!("too many declarations in {context}"))),
                _ => self.pos = save,
            }
        } else {
            self.pos = save;
        }
        if is_assign {
            for v in &decl {
                if !self.vars.contains(v) {
                    return Err(err(self.line(), format!("undefined variable {v:?}")));
                }
            }
        }
        let mut cmds = Vec::new();
        loop {
            match self.peek_non_space() {
                Tok::RightDelim => {
                    self.next_non_space();
                    break;
                }
                Tok::Eof => return Err(err(self.line(), "unclosed action")),
                _ => {}
            }
            let cmd = self.command(funcs)?;
            cmds.push(cmd);
            match self.next_non_space() {
                Tok::RightDelim => break,
                Tok::Pipe => {
                    if matches!(self.peek_non_space(), Tok::RightDelim | Tok::RightParen) {
                        return Err(err(self.line(), "missing command after pipe"));
                    }
                }
                t => return Err(self.unexpected(&t, "command")),
            }
        }
        if cmds.is_empty() {
            return Err(err(self.line(), format!("missing value for {context}")));
        }
        check_pipeline(&cmds, self.line())?;
        if !is_assign {
            self.vars.extend(decl.iter().cloned());
        }
        Ok(Pipe { decl, is_assign, cmds })
    }

    /// A parenthesized pipeline after `(`, up to `)` (consumed).
    fn paren_pipeline(&mut self, funcs: &dyn Fn(&str) -> bool) -> Result<Pipe, ParseError> {
        let mut decl = Vec::new();
        let save = self.pos;
        let mut is_assign = false;
        if let Tok::Variable(v) = self.next_non_space() {
            match self.next_non_space() {
                Tok::Declare | Tok::Assign => {
                    is_assign = self.toks[self.pos - 1].0 == Tok::Assign;
                    decl.push(v);
                }
                _ => self.pos = save,
            }
        } else {
            self.pos = save;
        }
        let mut cmds = Vec::new();
        loop {
            if self.peek_non_space() == Tok::RightParen {
                self.next_non_space();
                break;
            }
            cmds.push(self.command(funcs)?);
            match self.next_non_space() {
                Tok::RightParen => break,
                Tok::Pipe => {}
                t => return Err(self.unexpected(&t, "parenthesized pipeline")),
            }
        }
        if cmds.is_empty() {
            return Err(err(self.line(), "missing value for parenthesized pipeline"));
        }
        check_pipeline(&cmds, self.line())?;
        if !is_assign {
            self.vars.extend(decl.iter().cloned());
        }
        Ok(Pipe { decl, is_assign, cmds })
    }

    fn command(&mut self, funcs: &dyn Fn(&str) -> bool) -> Result<Cmd, ParseError> {
        let mut args = Vec::new();
        loop {
            // Operands are separated by spaces.
            while self.peek() == &Tok::Space {
                self.next();
            }
            match self.peek() {
                Tok::RightDelim | Tok::Pipe | Tok::RightParen | Tok::Eof => break,
                _ => {}
            }
            let arg = self.operand(funcs)?;
            args.push(arg);
            match self.peek() {
                Tok::Space | Tok::RightDelim | Tok::Pipe | Tok::RightParen => {}
                Tok::Eof => return Err(err(self.line(), "unclosed action")),
                t => {
                    let t = t.clone();
                    return Err(self.unexpected(&t, "operand"));
                }
            }
        }
        if args.is_empty() {
            return Err(err(self.line(), "empty command"));
        }
        Ok(Cmd::new(args))
    }

    fn operand(&mut self, funcs: &dyn Fn(&str) -> bool) -> Result<Arg, ParseError> {
        let line = self.line();
        let term = match self.next() {
            Tok::Ident(name) => {
                if !funcs(&name) {
                    return Err(err(line, format!("function {name:?} not defined")));
                }
                Arg::Ident(name)
            }
            Tok::Dot => Arg::Dot,
            Tok::Nil => Arg::Nil,
            Tok::Variable(v) => {
                if !self.vars.contains(&v) {
                    return Err(err(line, format!("undefined variable {v:?}")));
                }
                Arg::Variable(v, Vec::new())
            }
            Tok::Field(f) => Arg::Field(vec![f]),
            Tok::Bool(b) => Arg::Bool(b),
            Tok::Char(c) => Arg::Int(c as i64),
            Tok::Number(n) => number(&n).ok_or_else(|| err(line, format!("bad number syntax: {n:?}")))?,
            Tok::Str(raw) => Arg::Str(
                unquote(&raw[1..raw.len() - 1], '"').ok_or_else(|| err(line, format!("invalid syntax: {raw}")))?,
            ),
            Tok::RawStr(s) => Arg::Str(s),
            Tok::LeftParen => Arg::Pipe(Box::new(self.paren_pipeline(funcs)?)),
            t => return Err(self.unexpected(&t, "operand")),
        };
        // Field chain.
        let mut fields = Vec::new();
        while let Tok::Field(f) = self.peek() {
            fields.push(f.clone());
            self.next();
        }
        if fields.is_empty() {
            return Ok(term);
        }
        Ok(match term {
            Arg::Field(mut f) => {
                f.extend(fields);
                Arg::Field(f)
            }
            Arg::Variable(v, mut f) => {
                f.extend(fields);
                Arg::Variable(v, f)
            }
            Arg::Bool(_) | Arg::Str(_) | Arg::Int(_) | Arg::Float(_) | Arg::Nil | Arg::Dot => {
                return Err(err(line, format!("unexpected . after term {:?}", term.describe())))
            }
            other => Arg::Chain(Box::new(other), fields),
        })
    }
}

/// Go's checks on a pipeline: only the first command may be a non-executable operand.
fn check_pipeline(cmds: &[Cmd], line: usize) -> Result<(), ParseError> {
    for c in &cmds[1..] {
        match &c.args[0] {
            Arg::Bool(_) | Arg::Dot | Arg::Nil | Arg::Int(_) | Arg::Float(_) | Arg::Str(_) => {
                return Err(err(line, format!("non executable command in pipeline stage {}", 2)))
            }
            _ => {}
        }
    }
    Ok(())
}

fn number(s: &str) -> Option<Arg> {
    let clean = s.replace('_', "");
    let (neg, body) = match clean.strip_prefix('-') {
        Some(b) => (true, b.to_string()),
        None => (false, clean.strip_prefix('+').unwrap_or(&clean).to_string()),
    };
    let lower = body.to_ascii_lowercase();
    let int = if let Some(h) = lower.strip_prefix("0x") {
        i64::from_str_radix(h, 16).ok()
    } else if let Some(o) = lower.strip_prefix("0o") {
        i64::from_str_radix(o, 8).ok()
    } else if let Some(b) = lower.strip_prefix("0b") {
        i64::from_str_radix(b, 2).ok()
    } else if lower.len() > 1 && lower.starts_with('0') && lower.bytes().all(|b| b.is_ascii_digit()) {
        i64::from_str_radix(&lower[1..], 8).ok()
    } else {
        lower.parse::<i64>().ok()
    };
    if let Some(i) = int {
        return Some(Arg::Int(if neg { -i } else { i }));
    }
    let f: f64 = lower.parse().ok()?;
    Some(Arg::Float(if neg { -f } else { f }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Tree, ParseError> {
        parse(s, &|n| matches!(n, "eq" | "len" | "json" | "and" | "not"))
    }

    #[test]
    fn trims_and_comments() {
        let t = p("a  {{- .X -}}  b {{/* c */}} d {{- /* e */ -}}\n f").unwrap();
        assert_eq!(t.root.len(), 5);
        assert_eq!(t.root[0], Node::Text("a".into()));
        assert_eq!(t.root[2], Node::Text("b ".into()));
        assert_eq!(t.root[3], Node::Text(" d".into()));
        assert_eq!(t.root[4], Node::Text("f".into()));
    }

    #[test]
    fn go_error_wording() {
        assert_eq!(p("{{ if }}").unwrap_err().0, "template: :1: missing value for if");
        assert_eq!(p("{{ range .A }}").unwrap_err().0, "template: :1: unexpected EOF");
        assert_eq!(p("{{ foo }}").unwrap_err().0, "template: :1: function \"foo\" not defined");
        assert_eq!(p("a\n{{ end }}").unwrap_err().0, "template: :2: unexpected {{end}}");
        assert_eq!(p("{{ $x }}").unwrap_err().0, "template: :1: undefined variable \"$x\"");
        assert_eq!(p("{{ \"abc }}").unwrap_err().0, "template: :1: unterminated quoted string");
        assert_eq!(p("{{ .A ").unwrap_err().0, "template: :1: unclosed action");
        assert!(p("{{ break }}").is_err());
    }

    #[test]
    fn else_chains_and_variables() {
        let t = p("{{ range $i, $m := .Messages }}{{ if eq $i 0 }}a{{ else if $m }}b{{ else }}c{{ end }}{{ end }}")
            .unwrap();
        let Node::Range(r) = &t.root[0] else { panic!() };
        assert_eq!(r.pipe.decl, vec!["$i", "$m"]);
        let Node::If(i) = &r.list[0] else { panic!() };
        let Some(e) = &i.else_list else { panic!() };
        assert!(matches!(e[0], Node::If(_)));
        assert!(p("{{ range .A }}{{ end }}{{ $m }}").is_err());
    }
}
