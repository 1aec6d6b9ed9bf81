//! Jinja chat template → Ollama Go template, for the constructs a Go template with Ollama's
//! data and functions can express.
//!
//! The Jinja source is parsed by minijinja's own parser (`unstable_machinery`: the same
//! lexer, whitespace control — `trim_blocks`/`lstrip_blocks` as transformers sets them — and
//! AST that minijinja renders with), so every raw text run reaches the translator with the
//! whitespace Jinja would output. Each statement and expression is then mapped onto Ollama's
//! data (`.Messages` with `Role`, `Content`, `Thinking`, `ToolCalls`, `ToolCallID`; `.Tools`;
//! `.Think`/`.IsThinkSet`; `currentDate`):
//!
//! - `for message in messages` (or a slice such as `messages[1:]`, or a variable holding
//!   one) → `range`; `loop.first`, `loop.last`, `loop.index`, `loop.index0` (compared with
//!   constants), `loop.previtem`/`loop.nextitem` and `messages[loop.index0 ± 1]`;
//! - role conditions, `messages[0]` special-casing, `x in ['a', 'b']`, `is defined`,
//!   `is none`, `is string`, `is false`, `|length` of message lists;
//! - `set`, `namespace()` variables and their attributes (declared once at the top, since
//!   a Go variable lives in the block that declares it);
//! - string concatenation (`+`, `~`), conditional expressions, default system prompts,
//!   `add_generation_prompt` (always true for Ollama), `bos_token` (empty: Ollama's runtime
//!   adds BOS when it tokenizes), `eos_token`, `strftime_now` for common formats (built from
//!   `currentDate`), `raise_exception` (a conversation the template rejects is not compared);
//! - tool definitions and tool-call arguments through `|tojson`, written as Python's
//!   `json.dumps` writes them.
//!
//! Everything else — string methods other than trimming, macros, `in` on strings, arithmetic
//! beyond `loop.index ± constant`, reversed loops — is reported as
//! [`Untranslatable`] with the construct and its line. Trimming (`|trim`, `.strip()`) cannot
//! be expressed and is translated as the identity, with a note: the rendering comparison
//! shows whether it matters on the conversations that are checked.

use std::collections::BTreeMap;
use std::fmt;

use minijinja::machinery::ast::{self, CallArg, Expr, Stmt};
use minijinja::machinery::{parse, WhitespaceConfig};
use minijinja::value::ValueKind;

/// What the translation needs to know about the vocabulary.
#[derive(Debug, Clone, Default)]
pub struct TranslateOptions {
    /// The text of `eos_token` (written literally where the template writes it).
    pub eos_token: String,
}

/// A Go template translated from a Jinja chat template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translation {
    /// The Go template (Ollama's TEMPLATE).
    pub template: String,
    /// The template writes `bos_token`, which the Go template leaves to Ollama's runtime.
    pub writes_bos: bool,
    /// Approximations made (e.g. trimming translated as the identity).
    pub notes: Vec<String>,
}

/// Why a template cannot be translated: the construct and the line it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Untranslatable {
    pub construct: String,
    pub line: usize,
}

impl fmt::Display for Untranslatable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "untranslatable: {}", self.construct)
        } else {
            write!(f, "untranslatable: {} at line {}", self.construct, self.line)
        }
    }
}

impl std::error::Error for Untranslatable {}

/// What [`choose`] picked for a GGUF.
#[derive(Debug, Clone)]
pub enum Choice {
    /// Keep the detected family (or the fallback when none); `note`: why the translation
    /// was not used, when it was tried.
    Family { note: Option<String> },
    /// The translated template renders identically on more conversations than the family.
    Translated { template: String, stops: Vec<String>, note: String },
}

/// Picks between the detected family and a translation of the GGUF's own Jinja template,
/// judged by [`verify`](super::verify::verify) on the built-in conversations: a family that
/// renders identically everywhere is kept without translating; otherwise the translation is
/// used when it renders identically on more conversations than the family (or when there is
/// no family and it renders anything identically).
pub fn choose(meta: &crate::gguf::Metadata, jinja: &str, family: Option<&super::Family>) -> Choice {
    use super::verify::{context_from_gguf, verify};
    let fam_score = family.map(|f| {
        let ctx = context_from_gguf(meta, f.default_system(jinja).as_deref());
        verify(&f.template, jinja, &ctx).ok()
    });
    let fam_identical = match &fam_score {
        Some(Some(v)) if v.is_verified() => return Choice::Family { note: None },
        Some(Some(v)) => Some(v.identical),
        // The chat template itself does not parse: nothing to translate.
        Some(None) => return Choice::Family { note: None },
        None => None,
    };
    let ctx = context_from_gguf(meta, None);
    let t = match translate(jinja, &TranslateOptions { eos_token: ctx.eos_token.clone() }) {
        Ok(t) => t,
        Err(e) => {
            return Choice::Family { note: Some(format!("the chat template could not be translated ({e})")) };
        }
    };
    let v = match verify(&t.template, jinja, &ctx) {
        Ok(v) => v,
        Err(e) => return Choice::Family { note: Some(format!("the translated chat template failed to verify: {e}")) },
    };
    let better = match fam_identical {
        Some(n) => v.identical > n,
        None => v.identical > 0,
    };
    if !better {
        return Choice::Family {
            note: Some(format!(
                "a translation of the chat template rendered identically on only {}/{} conversations",
                v.identical, v.conversations
            )),
        };
    }
    let mut eog = vec![ctx.eos_token.clone()];
    for key in ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
        if let Some(tok) = meta.get_u64(key).and_then(|id| token_text(meta, id)) {
            eog.push(tok);
        }
    }
    Choice::Translated {
        stops: stops(&t.template, &ctx.special_tokens, &eog),
        template: t.template,
        note: format!(
            "translated from the GGUF's Jinja chat template ({}/{} conversations identical{})",
            v.identical,
            v.conversations,
            if t.notes.is_empty() { String::new() } else { format!("; {}", t.notes.join("; ")) }
        ),
    }
}

fn token_text(meta: &crate::gguf::Metadata, id: u64) -> Option<String> {
    let arr = meta.get("tokenizer.ggml.tokens")?.as_array()?;
    arr.values.get(id as usize)?.as_str().map(str::to_string)
}

/// Stop strings for a translated template: the control tokens it writes (its turn markers,
/// in order of first appearance) and the vocabulary's end-of-generation tokens.
pub fn stops(template: &str, control_tokens: &[String], eog: &[String]) -> Vec<String> {
    let mut found: Vec<(usize, &String)> = control_tokens
        .iter()
        .filter(|t| !t.is_empty())
        .filter_map(|t| template.find(t.as_str()).map(|p| (p, t)))
        .collect();
    found.sort();
    let mut out: Vec<String> = Vec::new();
    for t in found.into_iter().map(|(_, t)| t).chain(eog.iter().filter(|t| !t.is_empty())) {
        if !out.contains(t) {
            out.push(t.clone());
        }
    }
    out
}

/// Translates a Jinja chat template into an Ollama Go template.
pub fn translate(jinja: &str, opts: &TranslateOptions) -> Result<Translation, Untranslatable> {
    let ws = WhitespaceConfig { keep_trailing_newline: false, lstrip_blocks: true, trim_blocks: true };
    // A unit struct unless minijinja's custom_syntax feature is on (then a real default).
    #[allow(clippy::default_constructed_unit_structs)]
    let syntax = minijinja::syntax::SyntaxConfig::default();
    let tree = parse(jinja, "chat_template", syntax, ws).map_err(|e| Untranslatable {
        construct: format!("template does not parse: {e}"),
        line: e.line().unwrap_or(0),
    })?;
    let mut t = Translator {
        opts,
        vars: BTreeMap::new(),
        loops: Vec::new(),
        out: String::new(),
        notes: Vec::new(),
        writes_bos: false,
        counter: 0,
        poisoned: BTreeMap::new(),
    };
    let Stmt::Template(root) = &tree else {
        return Err(Untranslatable { construct: "template root".into(), line: 0 });
    };
    t.stmts(&root.children)?;
    let mut template = String::new();
    for (name, kind) in &t.vars {
        if *kind == Kind::Namespace {
            continue;
        }
        template.push_str(&format!("{{{{- ${} := {} }}}}", go_var(name), kind.zero()));
    }
    template.push_str(&t.out);
    let mut notes = t.notes;
    notes.dedup();
    Ok(Translation { template, writes_bos: t.writes_bos, notes })
}

/// What a value is, as far as the Go side is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Int,
    Bool,
    /// A list of messages (`.Messages` or a slice of it).
    Messages,
    Message,
    Tools,
    Tool,
    ToolFunction,
    ToolCalls,
    ToolCall,
    ToolCallFunction,
    Arguments,
    /// Jinja's undefined / none: empty when printed, false when tested.
    Undefined,
    /// A `namespace()` object; its attributes are separate variables.
    Namespace,
}

impl Kind {
    fn zero(self) -> &'static str {
        match self {
            Kind::Str | Kind::Undefined | Kind::Namespace => "\"\"",
            Kind::Int => "0",
            Kind::Bool => "false",
            Kind::Messages => "$.Messages",
            Kind::Tools => "$.Tools",
            _ => "\"\"",
        }
    }
}

/// A translated expression.
#[derive(Debug, Clone)]
enum Val {
    Str(String),
    Int(i64),
    Bool(bool),
    /// A Go operand (a variable, a field chain, or a parenthesized call) of a kind.
    Go(String, Kind),
    /// An integer Go operand plus a constant (`loop.index` = `$i` + 1).
    IntOff(String, i64),
    /// Strings concatenated.
    Concat(Vec<Val>),
    /// The message at `offset` from the current one in a loop over `iter`.
    Relative {
        iter: String,
        index: String,
        offset: i64,
    },
    /// A constant list (for `x in [...]`).
    List(Vec<Val>),
    /// Go template text printed as is (JSON writers, dates).
    Raw(String),
    Undefined,
}

struct LoopCtx {
    /// The Go operand ranged over.
    iter: String,
    /// The index variable (`$jN`).
    index: String,
    /// The loop target name in Jinja.
    target: String,
    /// What the target name means in Go (the range variable, or a part of it after
    /// `set tool_call = tool_call.function`).
    expr: String,
    /// The previous-item variable, if the loop needs one.
    prev: Option<String>,
    kind: Kind,
}

struct Translator<'o> {
    opts: &'o TranslateOptions,
    /// Variables set anywhere (declared once at the top), with their kind.
    vars: BTreeMap<String, Kind>,
    loops: Vec<LoopCtx>,
    out: String,
    notes: Vec<String>,
    writes_bos: bool,
    counter: usize,
    /// Variables whose assignment could not be translated, with the reason.
    poisoned: BTreeMap<String, Untranslatable>,
}

fn go_var(name: &str) -> String {
    format!("j_{}", name.replace('.', "_"))
}

/// A Go string literal (Go accepts UTF-8 text in literals; control characters are escaped).
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Raw template text that Go's parser passes through unchanged.
fn go_text(s: &str) -> String {
    if !s.contains("{{") {
        return s.to_string();
    }
    s.split("{{").collect::<Vec<_>>().join("{{ \"{{\" }}")
}

macro_rules! bail {
    ($line:expr, $($arg:tt)*) => {
        return Err(Untranslatable { construct: format!($($arg)*), line: $line })
    };
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Tool definitions as Python's `json.dumps` writes them (Ollama's tool struct order: type,
/// function{name, description, parameters{type, properties{type, description, enum}, required}}).
const TOOL_JSON: &str = r#"{"type": "function", "function": {"name": {{ printf "%q" .Function.Name }}, "description": {{ printf "%q" .Function.Description }}, "parameters": {"type": {{ json .Function.Parameters.Type }}, "properties": { {{- $first := true }}{{ range $name, $p := .Function.Parameters.Properties }}{{ if not $first }}, {{ end }}{{ $first = false }}{{ printf "%q" $name }}: {"type": {{ json $p.Type }}{{ if $p.Description }}, "description": {{ printf "%q" $p.Description }}{{ end }}{{ if $p.Enum }}, "enum": [{{ range $k, $e := $p.Enum }}{{ if $k }}, {{ end }}{{ if eq (printf "%T" $e) "string" }}{{ printf "%q" $e }}{{ else }}{{ json $e }}{{ end }}{{ end }}]{{ end }}}{{ end }}}{{ if .Function.Parameters.Required }}, "required": [{{ range $k, $r := .Function.Parameters.Required }}{{ if $k }}, {{ end }}{{ printf "%q" $r }}{{ end }}]{{ end }}}}}"#;

/// Tool-call arguments as `json.dumps` writes them (keys in Go's sorted map order).
const ARGS_JSON: &str = r#"{ {{- $first := true }}{{ range $k, $v := .Arguments }}{{ if not $first }}, {{ end }}{{ $first = false }}{{ printf "%q" $k }}: {{ if eq (printf "%T" $v) "string" }}{{ printf "%q" $v }}{{ else }}{{ json $v }}{{ end }}{{ end }}}"#;

impl Translator<'_> {
    fn note(&mut self, n: &str) {
        if !self.notes.iter().any(|x| x == n) {
            self.notes.push(n.to_string());
        }
    }

    fn fresh(&mut self) -> String {
        self.counter += 1;
        format!("$j{}", self.counter)
    }

    fn stmts(&mut self, stmts: &[Stmt<'_>]) -> Result<(), Untranslatable> {
        for s in stmts {
            self.stmt(s)?;
        }
        Ok(())
    }

    fn stmt(&mut self, s: &Stmt<'_>) -> Result<(), Untranslatable> {
        match s {
            Stmt::Template(t) => self.stmts(&t.children),
            Stmt::EmitRaw(r) => {
                self.out.push_str(&go_text(r.raw));
                Ok(())
            }
            Stmt::EmitExpr(e) => {
                if is_raise(&e.expr) {
                    return Ok(());
                }
                let line = e.span().start_line as usize;
                let v = self.expr(&e.expr)?;
                self.emit(v, line)
            }
            Stmt::IfCond(c) => {
                let line = c.span().start_line as usize;
                // A branch that only rejects the conversation: the conversations it rejects are
                // not compared, so the check itself has nothing to translate.
                if only_raises(&c.true_body) && c.false_body.is_empty() {
                    return Ok(());
                }
                let cond = self.cond(&c.expr, line)?;
                // A condition known at translation time keeps only the branch taken (e.g. `is
                // string` on message content: the list-of-blocks branch never runs).
                match cond.as_str() {
                    "true" => return self.stmts(&c.true_body),
                    "false" => return self.stmts(&c.false_body),
                    _ => {}
                }
                self.out.push_str(&format!("{{{{ if {cond} }}}}"));
                self.stmts(&c.true_body)?;
                if !c.false_body.is_empty() {
                    self.out.push_str("{{ else }}");
                    self.stmts(&c.false_body)?;
                }
                self.out.push_str("{{ end }}");
                Ok(())
            }
            Stmt::ForLoop(f) => self.for_loop(f, f.span().start_line as usize),
            Stmt::Set(set) => {
                let line = set.span().start_line as usize;
                self.set(&set.target, &set.expr, line)
            }
            Stmt::Do(d) => {
                let line = d.span().start_line as usize;
                if matches!(&d.call.expr, Expr::Var(v) if v.id == "raise_exception") {
                    return Ok(());
                }
                bail!(line, "{{% do %}}")
            }
            Stmt::WithBlock(w) => bail!(w.span().start_line as usize, "{{% with %}}"),
            Stmt::SetBlock(b) => bail!(b.span().start_line as usize, "{{% set %}} block"),
            Stmt::AutoEscape(b) => bail!(b.span().start_line as usize, "{{% autoescape %}}"),
            Stmt::FilterBlock(b) => bail!(b.span().start_line as usize, "{{% filter %}}"),
            Stmt::Macro(m) => bail!(m.span().start_line as usize, "macro {}", m.name),
            Stmt::CallBlock(c) => bail!(c.span().start_line as usize, "{{% call %}}"),
            Stmt::Continue(c) => bail!(c.span().start_line as usize, "{{% continue %}}"),
            Stmt::Break(b) => bail!(b.span().start_line as usize, "{{% break %}}"),
            #[allow(unreachable_patterns)]
            _ => bail!(0, "template inheritance or imports"),
        }
    }

    /// Writes a value into the output.
    fn emit(&mut self, v: Val, line: usize) -> Result<(), Untranslatable> {
        match v {
            Val::Str(s) => self.out.push_str(&go_text(&s)),
            Val::Int(i) => self.out.push_str(&i.to_string()),
            Val::Bool(_) => bail!(line, "printing a boolean"),
            Val::Undefined => {}
            Val::Concat(parts) => {
                for p in parts {
                    self.emit(p, line)?;
                }
            }
            Val::Go(g, kind) => match kind {
                Kind::Str | Kind::Int => self.out.push_str(&format!("{{{{ {g} }}}}")),
                Kind::Undefined => {}
                k => bail!(line, "printing a {k:?} value"),
            },
            Val::IntOff(g, off) => {
                // Only loop.index (= $i + 1) is common; Go has no arithmetic.
                bail!(line, "printing {g} + {off}")
            }
            Val::Relative { .. } => bail!(line, "printing a message"),
            Val::List(_) => bail!(line, "printing a list"),
            Val::Raw(r) => self.out.push_str(&r),
        }
        Ok(())
    }

    fn set(&mut self, target: &Expr<'_>, value: &Expr<'_>, line: usize) -> Result<(), Untranslatable> {
        let name = match target {
            Expr::Var(v) => v.id.to_string(),
            Expr::GetAttr(a) => match &a.expr {
                Expr::Var(ns) if self.vars.get(ns.id) == Some(&Kind::Namespace) => format!("{}.{}", ns.id, a.name),
                _ => bail!(line, "assignment to an attribute"),
            },
            _ => bail!(line, "assignment to a tuple"),
        };
        // A value that cannot be translated poisons the variable: only a later read fails
        // (counters that only feed raise_exception checks never are read).
        let mark = self.out.len();
        match self.set_named(&name, value, line) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.out.truncate(mark);
                self.poisoned.insert(name, e);
                Ok(())
            }
        }
    }

    fn set_named(&mut self, name: &str, value: &Expr<'_>, line: usize) -> Result<(), Untranslatable> {
        // namespace(a=..., b=...): one variable per attribute.
        if let Expr::Call(c) = value {
            if matches!(&c.expr, Expr::Var(v) if v.id == "namespace") {
                self.declare(name, Kind::Namespace, line)?;
                for arg in &c.args {
                    match arg {
                        CallArg::Kwarg(k, e) => {
                            let attr = format!("{name}.{k}");
                            let mark = self.out.len();
                            if let Err(err) = self.set_named(&attr, e, line) {
                                self.out.truncate(mark);
                                self.poisoned.insert(attr, err);
                            }
                        }
                        _ => bail!(line, "namespace() with positional arguments"),
                    }
                }
                return Ok(());
            }
        }
        // `set x = a if c else b` becomes an if statement.
        if let Expr::IfExpr(ie) = value {
            let cond = self.cond(&ie.test_expr, line)?;
            match cond.as_str() {
                "true" => return self.set_named(name, &ie.true_expr, line),
                "false" => {
                    return match &ie.false_expr {
                        Some(f) => self.set_named(name, f, line),
                        None => self.assign(name, Val::Undefined, line),
                    }
                }
                _ => {}
            }
            self.out.push_str(&format!("{{{{ if {cond} }}}}"));
            self.set_named(name, &ie.true_expr, line)?;
            self.out.push_str("{{ else }}");
            match &ie.false_expr {
                Some(f) => self.set_named(name, f, line)?,
                None => self.assign(name, Val::Undefined, line)?,
            }
            self.out.push_str("{{ end }}");
            return Ok(());
        }
        let v = self.expr(value)?;
        // `set tool_call = tool_call.function` inside a loop: the loop name now means the part.
        if let Val::Go(g, k @ (Kind::ToolFunction | Kind::ToolCallFunction)) = &v {
            if let Some(l) = self.loops.iter_mut().rev().find(|l| l.target == name) {
                l.expr = g.clone();
                l.kind = *k;
                return Ok(());
            }
        }
        self.assign(name, v, line)
    }

    fn assign(&mut self, name: &str, v: Val, line: usize) -> Result<(), Untranslatable> {
        let (operand, kind) = self.operand(v, line)?;
        let kind = match (kind, self.vars.get(name)) {
            (Kind::Undefined, Some(k)) => *k,
            (Kind::Undefined, None) => Kind::Str,
            (k, _) => k,
        };
        self.declare(name, kind, line)?;
        self.poisoned.remove(name);
        self.out.push_str(&format!("{{{{ ${} = {} }}}}", go_var(name), operand));
        Ok(())
    }

    fn declare(&mut self, name: &str, kind: Kind, line: usize) -> Result<(), Untranslatable> {
        match self.vars.get(name) {
            Some(k) if *k != kind => {
                // A string variable also holding an undefined value is still a string.
                if !(matches!((k, kind), (Kind::Str, Kind::Undefined) | (Kind::Undefined, Kind::Str))) {
                    bail!(line, "variable {name} holding both {k:?} and {kind:?} values")
                }
                self.vars.insert(name.to_string(), Kind::Str);
            }
            Some(_) => {}
            None => {
                if matches!(
                    kind,
                    Kind::Message
                        | Kind::ToolCall
                        | Kind::Tool
                        | Kind::ToolFunction
                        | Kind::ToolCallFunction
                        | Kind::Arguments
                ) {
                    bail!(line, "variable {name} holding a {kind:?}")
                }
                self.vars.insert(name.to_string(), kind);
            }
        }
        Ok(())
    }

    /// A value as one Go operand (for a variable assignment or a function argument).
    fn operand(&mut self, v: Val, line: usize) -> Result<(String, Kind), Untranslatable> {
        Ok(match v {
            Val::Str(s) => (go_quote(&s), Kind::Str),
            Val::Int(i) => (i.to_string(), Kind::Int),
            Val::Bool(b) => (b.to_string(), Kind::Bool),
            Val::Undefined => ("\"\"".into(), Kind::Undefined),
            Val::Go(g, k) => (g, k),
            Val::Concat(parts) => {
                let mut args = Vec::new();
                for p in parts {
                    let (o, k) = self.operand(p, line)?;
                    if !matches!(k, Kind::Str | Kind::Undefined) {
                        bail!(line, "concatenating a {k:?} value");
                    }
                    args.push(o);
                }
                (format!("(print {})", args.join(" ")), Kind::Str)
            }
            Val::IntOff(g, off) => bail!(line, "arithmetic ({g} {off:+})"),
            Val::Relative { .. } => bail!(line, "a neighbouring message as a value"),
            Val::List(_) => bail!(line, "a list value"),
            Val::Raw(_) => bail!(line, "JSON or a date inside an expression"),
        })
    }

    fn for_loop(&mut self, f: &ast::ForLoop<'_>, line: usize) -> Result<(), Untranslatable> {
        if f.recursive {
            bail!(line, "recursive loop");
        }
        let target = match &f.target {
            Expr::Var(v) => v.id.to_string(),
            _ => bail!(line, "loop over key/value pairs"),
        };
        let iter = self.expr(&f.iter)?;
        let (iter, kind) = match iter {
            Val::Go(g, k @ (Kind::Messages | Kind::Tools | Kind::ToolCalls)) => (g, k),
            Val::Undefined => {
                // Looping over an undefined value yields nothing (the else branch).
                self.stmts(&f.else_body)?;
                return Ok(());
            }
            other => bail!(line, "loop over {}", describe(&other)),
        };
        let item_kind = match kind {
            Kind::Messages => Kind::Message,
            Kind::Tools => Kind::Tool,
            _ => Kind::ToolCall,
        };
        let index = self.fresh();
        let item = format!("${}", go_var(&target));
        // Messages loops remember the previous message (loop.previtem, messages[loop.index0 - 1]).
        let prev = if item_kind == Kind::Message && !mentions_loop_control(&f.body) {
            let p = self.fresh();
            self.out.push_str(&format!("{{{{ {p} := \"\" }}}}"));
            Some(p)
        } else {
            None
        };
        self.loops.push(LoopCtx {
            iter: iter.clone(),
            index: index.clone(),
            target: target.clone(),
            expr: item.clone(),
            prev: prev.clone(),
            kind: item_kind,
        });
        self.out.push_str(&format!("{{{{ range {index}, {item} := {iter} }}}}"));
        if let Some(fe) = &f.filter_expr {
            if mentions(&f.body, "loop") {
                bail!(line, "loop variable in a filtered loop");
            }
            let c = self.cond(fe, line)?;
            self.out.push_str(&format!("{{{{ if {c} }}}}"));
            self.stmts(&f.body)?;
            self.out.push_str("{{ end }}");
        } else {
            self.stmts(&f.body)?;
        }
        if let Some(p) = &prev {
            self.out.push_str(&format!("{{{{ {p} = {item} }}}}"));
        }
        if !f.else_body.is_empty() {
            self.out.push_str("{{ else }}");
            self.loops.pop();
            self.stmts(&f.else_body)?;
        } else {
            self.loops.pop();
        }
        self.out.push_str("{{ end }}");
        Ok(())
    }

    /// A condition as a Go pipeline (no surrounding braces).
    fn cond(&mut self, e: &Expr<'_>, line: usize) -> Result<String, Untranslatable> {
        let v = self.expr(e)?;
        self.truth(v, line)
    }

    fn truth(&mut self, v: Val, line: usize) -> Result<String, Untranslatable> {
        Ok(match v {
            Val::Bool(b) => b.to_string(),
            Val::Str(s) => (!s.is_empty()).to_string(),
            Val::Int(i) => (i != 0).to_string(),
            Val::Undefined => "false".into(),
            Val::Go(g, Kind::Undefined) => {
                let _ = g;
                "false".into()
            }
            Val::Go(g, _) => g,
            Val::Concat(_) => {
                let (o, _) = self.operand(v, line)?;
                o
            }
            Val::IntOff(g, off) => {
                // $i + off is true unless $i == -off.
                format!("(ne {g} {})", -off)
            }
            Val::Relative { iter, index, offset } => {
                // The neighbouring message exists.
                if offset == -1 {
                    iter
                } else if offset == 1 {
                    format!("(gt (len (slice {iter} {index})) 1)")
                } else {
                    bail!(line, "testing a neighbouring message")
                }
            }
            Val::List(l) => (!l.is_empty()).to_string(),
            Val::Raw(_) => "true".into(),
        })
    }

    fn loop_ctx(&self, name: &str) -> Option<&LoopCtx> {
        self.loops.iter().rev().find(|l| l.target == name)
    }

    fn expr(&mut self, e: &Expr<'_>) -> Result<Val, Untranslatable> {
        let line = expr_line(e);
        match e {
            Expr::Const(c) => Ok(match c.value.kind() {
                ValueKind::String => Val::Str(c.value.as_str().unwrap_or_default().to_string()),
                ValueKind::Number if c.value.as_i64().is_some() => Val::Int(c.value.as_i64().unwrap_or(0)),
                ValueKind::Bool => Val::Bool(c.value.is_true()),
                ValueKind::None | ValueKind::Undefined => Val::Undefined,
                _ => bail!(line, "constant {}", c.value),
            }),
            Expr::List(l) => {
                let mut items = Vec::new();
                for i in &l.items {
                    items.push(self.expr(i)?);
                }
                Ok(Val::List(items))
            }
            Expr::Var(v) => self.var(v.id, line),
            Expr::GetAttr(a) => {
                // loop.first / loop.last / ...
                if let Expr::Var(v) = &a.expr {
                    if v.id == "loop" && self.loop_ctx_any().is_some() && self.lookup_user_var("loop").is_none() {
                        return self.loop_attr(a.name, line);
                    }
                    if self.vars.get(v.id) == Some(&Kind::Namespace) {
                        let name = format!("{}.{}", v.id, a.name);
                        if let Some(e) = self.poisoned.get(&name) {
                            return Err(e.clone());
                        }
                        return match self.vars.get(&name) {
                            Some(k) => Ok(Val::Go(format!("${}", go_var(&name)), *k)),
                            None => Ok(Val::Undefined),
                        };
                    }
                }
                let base = self.expr(&a.expr)?;
                self.attr(base, a.name, line)
            }
            Expr::GetItem(g) => {
                let base = self.expr(&g.expr)?;
                let sub = self.expr(&g.subscript_expr)?;
                match sub {
                    Val::Str(s) => self.attr(base, &s, line),
                    Val::Int(i) => self.index(base, i, line),
                    Val::IntOff(idx, off) => match base {
                        Val::Go(iter, Kind::Messages) => {
                            // messages[loop.index0 ± k] inside a loop over the same list.
                            let l = self.loops.iter().rev().find(|l| l.index == idx && l.iter == iter);
                            match (l, off) {
                                (Some(l), 1) => {
                                    Ok(Val::Relative { iter: l.iter.clone(), index: l.index.clone(), offset: 1 })
                                }
                                (Some(LoopCtx { prev: Some(p), .. }), -1) => {
                                    Ok(Val::Relative { iter: p.clone(), index: "prev".into(), offset: -1 })
                                }
                                _ => bail!(line, "indexing messages by a computed position"),
                            }
                        }
                        _ => bail!(line, "indexing by a computed position"),
                    },
                    Val::Go(idx, Kind::Int) => match base {
                        Val::Go(iter, Kind::Messages) => {
                            let l = self.loops.iter().rev().find(|l| l.index == idx && l.iter == iter);
                            match l {
                                Some(l) => Ok(Val::Go(format!("${}", go_var(&l.target)), Kind::Message)),
                                None => Ok(Val::Go(format!("(index {iter} {idx})"), Kind::Message)),
                            }
                        }
                        _ => bail!(line, "indexing by a computed position"),
                    },
                    _ => bail!(line, "subscript"),
                }
            }
            Expr::Slice(s) => {
                let base = self.expr(&s.expr)?;
                if s.step.is_some() {
                    bail!(line, "slice with a step (reversed list)");
                }
                let start = match &s.start {
                    None => 0,
                    Some(x) => match self.expr(x)? {
                        Val::Int(i) if i >= 0 => i,
                        _ => bail!(line, "slice with a computed or negative start"),
                    },
                };
                if s.stop.is_some() {
                    bail!(line, "slice with an end");
                }
                match base {
                    Val::Go(g, k @ (Kind::Messages | Kind::Tools | Kind::ToolCalls)) => {
                        if start == 0 {
                            Ok(Val::Go(g, k))
                        } else {
                            // slice fails past the end: guard with the length.
                            Ok(Val::Go(format!("(slice {g} {start})"), k))
                        }
                    }
                    other => bail!(line, "slice of {}", describe(&other)),
                }
            }
            Expr::UnaryOp(u) => {
                let v = self.expr(&u.expr)?;
                match u.op {
                    ast::UnaryOpKind::Not => {
                        let t = self.truth(v, line)?;
                        Ok(match t.as_str() {
                            "true" => Val::Bool(false),
                            "false" => Val::Bool(true),
                            _ => Val::Go(format!("(not {t})"), Kind::Bool),
                        })
                    }
                    ast::UnaryOpKind::Neg => match v {
                        Val::Int(i) => Ok(Val::Int(-i)),
                        _ => bail!(line, "negation"),
                    },
                }
            }
            Expr::BinOp(b) => self.binop(b, line),
            Expr::Compare(_) => bail!(line, "chained comparison"),
            Expr::IfExpr(ie) => {
                // Only in printing context: handled by emitting an if.
                let c = self.cond(&ie.test_expr, line)?;
                let t = self.expr(&ie.true_expr)?;
                let f = match &ie.false_expr {
                    Some(f) => self.expr(f)?,
                    None => Val::Undefined,
                };
                let (to, tk) = self.operand(t, line)?;
                let (fo, fk) = self.operand(f, line)?;
                let kind = if tk == Kind::Undefined { fk } else { tk };
                if !matches!(kind, Kind::Str | Kind::Undefined) {
                    bail!(line, "conditional expression of {kind:?} values");
                }
                // Go has no conditional operator; `or (and c a) b` is wrong when a is empty,
                // so build it from slices: index (list) of the chosen position is not
                // available either — use a nested template call instead.
                let tmp = self.fresh();
                self.out
                    .push_str(&format!("{{{{ {tmp} := {fo} }}}}{{{{ if {c} }}}}{{{{ {tmp} = {to} }}}}{{{{ end }}}}"));
                Ok(Val::Go(tmp, Kind::Str))
            }
            Expr::Filter(f) => self.filter(f, line),
            Expr::Test(t) => self.test(t, line),
            Expr::Call(c) => self.call(c, line),
            Expr::Map(_) => bail!(line, "dict literal"),
        }
    }

    fn loop_ctx_any(&self) -> Option<&LoopCtx> {
        self.loops.last()
    }

    fn lookup_user_var(&self, name: &str) -> Option<Kind> {
        self.vars.get(name).copied()
    }

    fn loop_attr(&mut self, name: &str, line: usize) -> Result<Val, Untranslatable> {
        let Some(l) = self.loops.last() else { bail!(line, "loop outside a loop") };
        let (iter, index) = (l.iter.clone(), l.index.clone());
        Ok(match name {
            "first" => Val::Go(format!("(eq {index} 0)"), Kind::Bool),
            "last" => Val::Go(format!("(eq (len (slice {iter} {index})) 1)"), Kind::Bool),
            "index0" => Val::Go(index, Kind::Int),
            "index" => Val::IntOff(index, 1),
            "length" => Val::Go(format!("(len {iter})"), Kind::Int),
            "nextitem" if l.kind == Kind::Message => Val::Relative { iter, index, offset: 1 },
            "previtem" if l.kind == Kind::Message => match &l.prev {
                Some(p) => Val::Relative { iter: p.clone(), index: "prev".into(), offset: -1 },
                None => bail!(line, "loop.previtem"),
            },
            other => bail!(line, "loop.{other}"),
        })
    }

    fn var(&mut self, id: &str, line: usize) -> Result<Val, Untranslatable> {
        if let Some(l) = self.loop_ctx(id) {
            return Ok(Val::Go(l.expr.clone(), l.kind));
        }
        if let Some(e) = self.poisoned.get(id) {
            return Err(e.clone());
        }
        if let Some(k) = self.vars.get(id) {
            return Ok(Val::Go(format!("${}", go_var(id)), *k));
        }
        Ok(match id {
            "messages" => Val::Go("$.Messages".into(), Kind::Messages),
            "tools" => Val::Go("$.Tools".into(), Kind::Tools),
            "add_generation_prompt" => Val::Bool(true),
            "bos_token" => {
                self.writes_bos = true;
                Val::Str(String::new())
            }
            "eos_token" => Val::Str(self.opts.eos_token.clone()),
            "enable_thinking" => Val::Go("$.Think".into(), Kind::Bool),
            "true" | "True" => Val::Bool(true),
            "false" | "False" => Val::Bool(false),
            "none" | "None" => Val::Undefined,
            "loop" => bail!(line, "loop outside a loop"),
            // Anything else is not passed by Ollama nor by transformers' defaults: undefined.
            _ => Val::Undefined,
        })
    }

    fn attr(&mut self, base: Val, name: &str, line: usize) -> Result<Val, Untranslatable> {
        let (g, kind) = match base {
            Val::Go(g, k) => (g, k),
            Val::Relative { iter, index, offset } => {
                let m = match (index.as_str(), offset) {
                    ("prev", -1) => iter.clone(),
                    (_, 1) => format!("(index (slice {iter} {index}) 1)"),
                    _ => bail!(line, "message at a computed position"),
                };
                if index == "prev" {
                    // The previous message, or "" before the first one.
                    let f = match name {
                        "role" => "Role",
                        "content" => "Content",
                        "tool_call_id" => "ToolCallID",
                        _ => bail!(line, "loop.previtem.{name}"),
                    };
                    return Ok(Val::Go(format!("(or (and {m} {m}.{f}) \"\")"), Kind::Str));
                }
                (m, Kind::Message)
            }
            Val::Undefined => return Ok(Val::Undefined),
            other => bail!(line, "attribute {name} of {}", describe(&other)),
        };
        let field = |f: &str, k: Kind| Ok(Val::Go(format!("{}.{f}", paren(&g)), k));
        match (kind, name) {
            (Kind::Message, "role") => field("Role", Kind::Str),
            (Kind::Message, "content") => field("Content", Kind::Str),
            (Kind::Message, "tool_calls") => field("ToolCalls", Kind::ToolCalls),
            (Kind::Message, "tool_call_id") => field("ToolCallID", Kind::Str),
            (Kind::Message, "reasoning_content" | "thinking") => field("Thinking", Kind::Str),
            (Kind::Message, "name" | "tool_name") => field("ToolName", Kind::Str),
            (Kind::Message, _) => Ok(Val::Undefined),
            (Kind::Tool, "function") => Ok(Val::Go(format!("{}.Function", paren(&g)), Kind::ToolFunction)),
            (Kind::Tool, "type") => Ok(Val::Str("function".into())),
            (Kind::ToolFunction, "name") => field("Name", Kind::Str),
            (Kind::ToolFunction, "description") => field("Description", Kind::Str),
            (Kind::ToolCall, "function") => Ok(Val::Go(format!("{}.Function", paren(&g)), Kind::ToolCallFunction)),
            (Kind::ToolCall, "id") => field("ID", Kind::Str),
            (Kind::ToolCall, "type") => Ok(Val::Str("function".into())),
            (Kind::ToolCallFunction, "name") => field("Name", Kind::Str),
            (Kind::ToolCallFunction, "arguments") => Ok(Val::Go(format!("{}.Arguments", paren(&g)), Kind::Arguments)),
            (k, n) => bail!(line, "attribute {n} of a {k:?}"),
        }
    }

    fn index(&mut self, base: Val, i: i64, line: usize) -> Result<Val, Untranslatable> {
        match base {
            Val::Go(g, k @ (Kind::Messages | Kind::ToolCalls | Kind::Tools)) if i >= 0 => {
                let item = match k {
                    Kind::Messages => Kind::Message,
                    Kind::ToolCalls => Kind::ToolCall,
                    _ => Kind::Tool,
                };
                Ok(Val::Go(format!("(index {g} {i})"), item))
            }
            Val::Go(_, Kind::Messages) => bail!(line, "messages[{i}] (from the end)"),
            other => bail!(line, "item {i} of {}", describe(&other)),
        }
    }

    fn binop(&mut self, b: &ast::BinOp<'_>, line: usize) -> Result<Val, Untranslatable> {
        use ast::BinOpKind as K;
        let l = self.expr(&b.left)?;
        let r = self.expr(&b.right)?;
        match b.op {
            K::Add | K::Concat => match (l, r) {
                (Val::Int(a), Val::Int(c)) => Ok(Val::Int(a + c)),
                (Val::IntOff(g, o), Val::Int(c)) | (Val::Int(c), Val::IntOff(g, o)) => Ok(Val::IntOff(g, o + c)),
                (Val::Go(g, Kind::Int), Val::Int(c)) | (Val::Int(c), Val::Go(g, Kind::Int)) => Ok(Val::IntOff(g, c)),
                (l, r) => {
                    let mut parts = Vec::new();
                    for v in [l, r] {
                        match v {
                            Val::Concat(p) => parts.extend(p),
                            Val::Str(_) | Val::Undefined | Val::Go(_, Kind::Str | Kind::Undefined) => parts.push(v),
                            Val::Int(i) if matches!(b.op, K::Concat) => parts.push(Val::Str(i.to_string())),
                            other => bail!(line, "adding {}", describe(&other)),
                        }
                    }
                    Ok(Val::Concat(parts))
                }
            },
            K::Sub => match (l, r) {
                (Val::Int(a), Val::Int(c)) => Ok(Val::Int(a - c)),
                (Val::IntOff(g, o), Val::Int(c)) => Ok(Val::IntOff(g, o - c)),
                (Val::Go(g, Kind::Int), Val::Int(c)) => Ok(Val::IntOff(g, -c)),
                _ => bail!(line, "subtraction"),
            },
            K::ScAnd | K::ScOr => {
                let a = self.truth(l, line)?;
                let c = self.truth(r, line)?;
                let op = if matches!(b.op, K::ScAnd) { "and" } else { "or" };
                Ok(match (b.op, a.as_str(), c.as_str()) {
                    (K::ScAnd, "false", _) | (K::ScAnd, _, "false") => Val::Bool(false),
                    (K::ScOr, "true", _) | (K::ScOr, _, "true") => Val::Bool(true),
                    (K::ScAnd, "true", _) | (K::ScOr, "false", _) => Val::Go(c, Kind::Bool),
                    (K::ScAnd, _, "true") | (K::ScOr, _, "false") => Val::Go(a, Kind::Bool),
                    _ => Val::Go(format!("({op} {a} {c})"), Kind::Bool),
                })
            }
            K::Eq | K::Ne => {
                let eq = self.equal(l, r, line)?;
                Ok(if matches!(b.op, K::Eq) {
                    eq
                } else {
                    match eq {
                        Val::Bool(x) => Val::Bool(!x),
                        Val::Go(g, _) => Val::Go(format!("(not {g})"), Kind::Bool),
                        _ => unreachable!(),
                    }
                })
            }
            K::Lt | K::Lte | K::Gt | K::Gte => {
                let op = match b.op {
                    K::Lt => "lt",
                    K::Lte => "le",
                    K::Gt => "gt",
                    _ => "ge",
                };
                let (lo, ro) = self.int_pair(l, r, line)?;
                Ok(Val::Go(format!("({op} {lo} {ro})"), Kind::Bool))
            }
            K::In => match r {
                Val::List(items) => {
                    let mut alts = Vec::new();
                    for it in items {
                        match self.equal(l.clone(), it, line)? {
                            Val::Bool(true) => return Ok(Val::Bool(true)),
                            Val::Bool(false) => {}
                            Val::Go(g, _) => alts.push(g),
                            _ => unreachable!(),
                        }
                    }
                    Ok(match alts.len() {
                        0 => Val::Bool(false),
                        1 => Val::Go(alts.remove(0), Kind::Bool),
                        _ => Val::Go(format!("(or {})", alts.join(" ")), Kind::Bool),
                    })
                }
                Val::Undefined => Ok(Val::Bool(false)),
                other => bail!(line, "`in` on {}", describe(&other)),
            },
            _ => bail!(line, "arithmetic ({:?})", b.op),
        }
    }

    /// Two integer operands, with `$i + k == c` rewritten as `$i == c - k`.
    fn int_pair(&mut self, l: Val, r: Val, line: usize) -> Result<(String, String), Untranslatable> {
        let one = |v: Val| -> Result<(String, i64), Untranslatable> {
            match v {
                Val::Int(i) => Ok((String::new(), i)),
                Val::IntOff(g, o) => Ok((g, o)),
                Val::Go(g, Kind::Int) => Ok((g, 0)),
                other => Err(Untranslatable { construct: format!("comparing {}", describe(&other)), line }),
            }
        };
        let (lg, lo) = one(l)?;
        let (rg, ro) = one(r)?;
        match (lg.is_empty(), rg.is_empty()) {
            (false, true) => Ok((lg, (ro - lo).to_string())),
            (true, false) => Ok(((lo - ro).to_string(), rg)),
            (false, false) if lo == ro => Ok((lg, rg)),
            (true, true) => Ok((lo.to_string(), ro.to_string())),
            _ => bail!(line, "comparing two computed positions"),
        }
    }

    fn equal(&mut self, l: Val, r: Val, line: usize) -> Result<Val, Untranslatable> {
        match (&l, &r) {
            (Val::Str(a), Val::Str(b)) => return Ok(Val::Bool(a == b)),
            (Val::Int(a), Val::Int(b)) => return Ok(Val::Bool(a == b)),
            (Val::Bool(a), Val::Bool(b)) => return Ok(Val::Bool(a == b)),
            (Val::Undefined, Val::Undefined) => return Ok(Val::Bool(true)),
            _ => {}
        }
        let is_int = |v: &Val| matches!(v, Val::Int(_) | Val::IntOff(..) | Val::Go(_, Kind::Int));
        if is_int(&l) && is_int(&r) {
            let (a, b) = self.int_pair(l, r, line)?;
            return Ok(Val::Go(format!("(eq {a} {b})"), Kind::Bool));
        }
        let (a, ak) = self.operand(l, line)?;
        let (b, bk) = self.operand(r, line)?;
        let basic = |k: Kind| matches!(k, Kind::Str | Kind::Int | Kind::Bool | Kind::Undefined);
        if !basic(ak) || !basic(bk) {
            bail!(line, "comparing {ak:?} with {bk:?}");
        }
        Ok(Val::Go(format!("(eq {a} {b})"), Kind::Bool))
    }

    fn filter(&mut self, f: &ast::Filter<'_>, line: usize) -> Result<Val, Untranslatable> {
        let Some(arg) = &f.expr else { bail!(line, "filter {} without a value", f.name) };
        let v = self.expr(arg)?;
        match f.name {
            "length" | "count" => match v {
                Val::Go(g, Kind::Messages | Kind::Tools | Kind::ToolCalls) => {
                    Ok(Val::Go(format!("(len {g})"), Kind::Int))
                }
                Val::Undefined => Ok(Val::Int(0)),
                Val::Str(s) => Ok(Val::Int(s.chars().count() as i64)),
                other => bail!(line, "|length of {}", describe(&other)),
            },
            "trim" => {
                if !f.args.is_empty() {
                    bail!(line, "|trim with characters");
                }
                match v {
                    Val::Str(s) => Ok(Val::Str(s.trim().to_string())),
                    v => {
                        self.note("|trim / .strip() translated as the identity (Go templates cannot trim)");
                        Ok(v)
                    }
                }
            }
            "string" | "safe" | "e" | "escape" if f.args.is_empty() => match v {
                v @ (Val::Str(_) | Val::Go(_, Kind::Str) | Val::Concat(_) | Val::Undefined) => Ok(v),
                Val::Int(i) => Ok(Val::Str(i.to_string())),
                other => bail!(line, "|{} of {}", f.name, describe(&other)),
            },
            "default" | "d" => {
                let Some(CallArg::Pos(d)) = f.args.first() else { bail!(line, "|default without a value") };
                match v {
                    Val::Undefined => self.expr(d),
                    v => Ok(v),
                }
            }
            "tojson" => {
                if f.args.iter().any(|a| !matches!(a, CallArg::Kwarg("ensure_ascii", _))) {
                    bail!(line, "|tojson with arguments");
                }
                let range = |items: &str, body: &str| {
                    format!("[{{{{ range $k, $t := {items} }}}}{{{{ if $k }}}}, {{{{ end }}}}{{{{ with $t }}}}{body}{{{{ end }}}}{{{{ end }}}}]")
                };
                match v {
                    Val::Go(g, Kind::Tools) => Ok(self.raw_go(range(&g, TOOL_JSON))),
                    Val::Go(g, Kind::Tool) => Ok(self.raw_go(format!("{{{{ with {g} }}}}{TOOL_JSON}{{{{ end }}}}"))),
                    Val::Go(g, Kind::Arguments) => {
                        let g = g.strip_suffix(".Arguments").unwrap_or(&g).to_string();
                        Ok(self.raw_go(format!("{{{{ with {g} }}}}{ARGS_JSON}{{{{ end }}}}")))
                    }
                    Val::Go(g, Kind::Str) => Ok(Val::Go(format!("(printf \"%q\" {g})"), Kind::Str)),
                    Val::Str(s) => Ok(Val::Str(serde_json::to_string(&s).unwrap_or_default())),
                    other => bail!(line, "|tojson of {}", describe(&other)),
                }
            }
            other => bail!(line, "filter |{other}"),
        }
    }

    /// A piece of Go template text to be printed as is (only valid in printing context).
    fn raw_go(&mut self, text: String) -> Val {
        Val::Raw(text)
    }

    fn test(&mut self, t: &ast::Test<'_>, line: usize) -> Result<Val, Untranslatable> {
        let v = self.expr(&t.expr)?;
        let truthy = |s: &mut Self, v: Val| -> Result<Val, Untranslatable> {
            let g = s.truth(v, line)?;
            Ok(match g.as_str() {
                "true" => Val::Bool(true),
                "false" => Val::Bool(false),
                _ => Val::Go(g, Kind::Bool),
            })
        };
        let not = |v: Val| match v {
            Val::Bool(b) => Val::Bool(!b),
            Val::Go(g, _) => Val::Go(format!("(not {g})"), Kind::Bool),
            v => v,
        };
        match t.name {
            "defined" => match v {
                Val::Undefined => Ok(Val::Bool(false)),
                // Optional data: defined when present (Ollama sends no empty tool lists).
                v @ Val::Go(_, Kind::Tools | Kind::ToolCalls) => truthy(self, v),
                Val::Go(ref g, Kind::Bool) if g == "$.Think" => Ok(Val::Go("$.IsThinkSet".into(), Kind::Bool)),
                Val::Go(ref g, Kind::Str) if g.ends_with(".Thinking") => truthy(self, v),
                _ => Ok(Val::Bool(true)),
            },
            "undefined" => match v {
                Val::Undefined => Ok(Val::Bool(true)),
                v @ Val::Go(_, Kind::Tools | Kind::ToolCalls) => Ok(not(truthy(self, v)?)),
                Val::Go(ref g, Kind::Bool) if g == "$.Think" => Ok(Val::Go("(not $.IsThinkSet)".into(), Kind::Bool)),
                Val::Go(ref g, Kind::Str) if g.ends_with(".Thinking") => Ok(not(truthy(self, v)?)),
                _ => Ok(Val::Bool(false)),
            },
            "none" => match v {
                Val::Undefined => Ok(Val::Bool(true)),
                v @ Val::Go(_, Kind::Tools | Kind::ToolCalls) => Ok(not(truthy(self, v)?)),
                Val::Go(ref g, Kind::Str) if g.ends_with(".Thinking") => Ok(not(truthy(self, v)?)),
                _ => Ok(Val::Bool(false)),
            },
            "string" => Ok(Val::Bool(matches!(v, Val::Str(_) | Val::Concat(_) | Val::Go(_, Kind::Str)))),
            "number" | "integer" => Ok(Val::Bool(matches!(v, Val::Int(_) | Val::IntOff(..) | Val::Go(_, Kind::Int)))),
            "boolean" => Ok(Val::Bool(matches!(v, Val::Bool(_) | Val::Go(_, Kind::Bool)))),
            "mapping" => {
                Ok(Val::Bool(matches!(v, Val::Go(_, Kind::Message | Kind::Tool | Kind::ToolCall | Kind::Arguments))))
            }
            "iterable" | "sequence" => Ok(Val::Bool(matches!(
                v,
                Val::Str(_) | Val::List(_) | Val::Go(_, Kind::Str | Kind::Messages | Kind::Tools | Kind::ToolCalls)
            ))),
            "false" | "true" => {
                let want = t.name == "true";
                match v {
                    Val::Bool(b) => Ok(Val::Bool(b == want)),
                    Val::Go(ref g, Kind::Bool) if g == "$.Think" => Ok(if want {
                        Val::Go("$.Think".into(), Kind::Bool)
                    } else {
                        Val::Go("(and $.IsThinkSet (not $.Think))".into(), Kind::Bool)
                    }),
                    _ => Ok(Val::Bool(false)),
                }
            }
            "equalto" | "eq" | "sameas" => {
                let Some(CallArg::Pos(o)) = t.args.first() else { bail!(line, "is {} without a value", t.name) };
                let o = self.expr(o)?;
                self.equal(v, o, line)
            }
            other => bail!(line, "test `is {other}`"),
        }
    }

    fn call(&mut self, c: &ast::Call<'_>, line: usize) -> Result<Val, Untranslatable> {
        match &c.expr {
            Expr::Var(v) if v.id == "raise_exception" => Ok(Val::Undefined),
            Expr::Var(v) if v.id == "strftime_now" => {
                let Some(CallArg::Pos(Expr::Const(f))) = c.args.first() else {
                    bail!(line, "strftime_now with a computed format")
                };
                let fmt = f.value.as_str().unwrap_or_default().to_string();
                Ok(self.raw_go(strftime(&fmt, line)?))
            }
            Expr::GetAttr(a) => {
                let base = self.expr(&a.expr)?;
                match a.name {
                    "strip" | "lstrip" | "rstrip" if c.args.is_empty() => match base {
                        Val::Str(s) => Ok(Val::Str(match a.name {
                            "strip" => s.trim().to_string(),
                            "lstrip" => s.trim_start().to_string(),
                            _ => s.trim_end().to_string(),
                        })),
                        v => {
                            self.note("|trim / .strip() translated as the identity (Go templates cannot trim)");
                            Ok(v)
                        }
                    },
                    "get" => {
                        let Some(CallArg::Pos(Expr::Const(k))) = c.args.first() else {
                            bail!(line, ".get() with a computed key")
                        };
                        let key = k.value.as_str().unwrap_or_default().to_string();
                        let v = self.attr(base, &key, line)?;
                        match (v, c.args.get(1)) {
                            (Val::Undefined, Some(CallArg::Pos(d))) => self.expr(d),
                            (v, _) => Ok(v),
                        }
                    }
                    other => bail!(line, "method .{other}()"),
                }
            }
            Expr::Var(v) => bail!(line, "function {}()", v.id),
            _ => bail!(line, "call"),
        }
    }
}

/// `strftime_now(fmt)` from Ollama's `currentDate` ("2006-01-02").
fn strftime(fmt: &str, line: usize) -> Result<String, Untranslatable> {
    let mut out = String::from("{{ $d := currentDate }}");
    let month = |full: bool| {
        let mut s = String::from("{{ $m := slice $d 5 7 }}");
        for (i, name) in MONTHS.iter().enumerate() {
            let n = if full { name.to_string() } else { name[..3].to_string() };
            s.push_str(&format!("{{{{ {}if eq $m \"{:02}\" }}}}{n}", if i == 0 { "" } else { "else " }, i + 1));
        }
        s.push_str("{{ end }}");
        s
    };
    let mut chars = fmt.chars();
    while let Some(ch) = chars.next() {
        if ch != '%' {
            out.push_str(&go_text(&ch.to_string()));
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str("{{ slice $d 0 4 }}"),
            Some('m') => out.push_str("{{ slice $d 5 7 }}"),
            Some('d') => out.push_str("{{ slice $d 8 10 }}"),
            Some('b') => out.push_str(&month(false)),
            Some('B') => out.push_str(&month(true)),
            Some('%') => out.push('%'),
            Some(o) => bail!(line, "strftime_now format %{o}"),
            None => bail!(line, "strftime_now format ending in %"),
        }
    }
    Ok(out)
}

fn paren(g: &str) -> String {
    if g.starts_with('(') || g.starts_with('$') {
        g.to_string()
    } else {
        format!("({g})")
    }
}

fn describe(v: &Val) -> String {
    match v {
        Val::Str(_) => "a string".into(),
        Val::Int(_) => "a number".into(),
        Val::Bool(_) => "a boolean".into(),
        Val::Go(_, k) => format!("a {k:?} value"),
        Val::IntOff(..) => "a computed number".into(),
        Val::Concat(_) => "a concatenation".into(),
        Val::Relative { .. } => "a neighbouring message".into(),
        Val::List(_) => "a list".into(),
        Val::Raw(_) => "JSON text".into(),
        Val::Undefined => "an undefined value".into(),
    }
}

fn expr_line(e: &Expr<'_>) -> usize {
    e.span().start_line as usize
}

fn is_raise(e: &Expr<'_>) -> bool {
    matches!(e, Expr::Call(c) if matches!(&c.expr, Expr::Var(v) if v.id == "raise_exception"))
}

fn only_raises(body: &[Stmt<'_>]) -> bool {
    !body.is_empty()
        && body.iter().all(|s| match s {
            Stmt::EmitExpr(e) => is_raise(&e.expr),
            Stmt::EmitRaw(r) => r.raw.trim().is_empty(),
            _ => false,
        })
        && body.iter().any(|s| matches!(s, Stmt::EmitExpr(_)))
}

/// Does a statement list mention this identifier/attribute name anywhere (cheap, textual)?
fn mentions(body: &[Stmt<'_>], name: &str) -> bool {
    format!("{body:?}").contains(&format!("\"{name}\""))
}

fn mentions_loop_control(body: &[Stmt<'_>]) -> bool {
    let d = format!("{body:?}");
    d.contains("Continue") || d.contains("Break")
}

#[cfg(test)]
mod tests {
    use super::super::verify::{verify, TemplateContext};
    use super::*;

    fn check(jinja: &str) -> Translation {
        let t = translate(jinja, &TranslateOptions { eos_token: "</s>".into() }).unwrap_or_else(|e| panic!("{e}"));
        let ctx = TemplateContext {
            bos_token: "<s>".into(),
            eos_token: "</s>".into(),
            add_bos: t.writes_bos,
            ..Default::default()
        };
        let v = verify(&t.template, jinja, &ctx).unwrap();
        assert!(v.is_verified(), "{}\n{:#?}", t.template, v.differences);
        assert!(v.conversations >= 5);
        t
    }

    #[test]
    fn chatml() {
        let t = check("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}");
        assert!(t.template.contains("{{ range $j1, $j_message := $.Messages }}<|im_start|>{{ $j_message.Role }}"));
        assert!(!t.writes_bos);
    }

    #[test]
    fn default_system_prompt_loop_first_and_bos() {
        check(
            "{{ bos_token }}{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}\
             {{ '<|im_start|>system\\nYou are helpful.<|im_end|>\\n' }}{% endif %}\
             {{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}\
             {% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
        );
    }

    #[test]
    fn namespace_loop_messages_and_raise() {
        // Gemma-style: system folded into the first user turn, alternation enforced.
        let jinja = "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set first_user_prefix = messages[0]['content'] + '\n\n' %}{% set loop_messages = messages[1:] %}{% else %}{% set first_user_prefix = '' %}{% set loop_messages = messages %}{% endif %}\
{% set ns = namespace(n=0) %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('roles must alternate') }}{% endif %}{% set ns.n = ns.n + 1 %}\
{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}\
{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}{% endfor %}\
{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}";
        let t = check(jinja);
        assert!(t.writes_bos);
        assert_eq!(t.notes.len(), 1, "{:?}", t.notes);
    }

    #[test]
    fn loop_last_index_and_eos() {
        check(
            "{% for message in messages %}{% if message.role == 'user' %}[INST] {{ message.content }} [/INST]\
             {% elif message.role == 'assistant' %}{{ message.content }}{{ eos_token }}\
             {% elif message.role == 'system' and loop.index == 1 %}<<SYS>>{{ message.content }}<</SYS>>{% endif %}\
             {% if loop.last and message.role != 'user' %}!{% endif %}{% endfor %}",
        );
    }

    #[test]
    fn thinking_switch() {
        let t = translate(
            "{% for m in messages %}{{ m.content }}{% endfor %}{% if enable_thinking is defined and enable_thinking is false %}<think></think>{% endif %}",
            &TranslateOptions::default(),
        )
        .unwrap();
        assert!(
            t.template.contains("{{ if (and $.IsThinkSet (and $.IsThinkSet (not $.Think))) }}")
                || t.template.contains("IsThinkSet")
        );
    }

    #[test]
    fn untranslatable_constructs_name_their_line() {
        let e = translate(
            "{% for m in messages %}\n{{ m.content.split('</think>')[-1] }}{% endfor %}",
            &TranslateOptions::default(),
        )
        .unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.to_string().starts_with("untranslatable: method .split() at line 2"), "{e}");
        let e = translate("{% macro f(x) %}{{ x }}{% endmacro %}{{ f(1) }}", &TranslateOptions::default()).unwrap_err();
        assert!(e.to_string().contains("macro f"), "{e}");
        let e = translate("{% for m in messages[::-1] %}{% endfor %}", &TranslateOptions::default()).unwrap_err();
        assert!(e.to_string().contains("step"), "{e}");
        let e = translate("{% if %}", &TranslateOptions::default()).unwrap_err();
        assert!(e.to_string().contains("does not parse"), "{e}");
    }

    #[test]
    fn stops_are_the_written_control_tokens_then_eog() {
        let s = stops(
            "<|im_start|>{{ .Role }}<|im_end|>",
            &["<|im_end|>".into(), "<|im_start|>".into(), "<|endoftext|>".into()],
            &["<|endoftext|>".into()],
        );
        assert_eq!(s, ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]);
    }
}
