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
//!   `json.dumps` writes them;
//! - macros (inlined at each call), `{% set %}` blocks, `break`/`continue`, `{% generation %}`,
//!   `messages[-k]` and slices from a computed start (see `stmt.rs`).
//!
//! - strings (`expr.rs`): `in`, `.split(sep[, n])[k]`, `.replace`, `.startswith`,
//!   `.endswith`, `.strip`/`.lstrip`/`.rstrip`/`|trim` are computed exactly by Go code that
//!   ranges over the byte positions (Go 1.22+ ranges over an integer) and compares `slice`s
//!   and bytes (`index`); `a or b` on strings is Go's `or`; `|tojson` output and dates become
//!   string values by accumulating with `print`; case methods and other methods of constants
//!   are evaluated here.
//!
//! - reversed loops (`xs[::-1]`, `|reverse`), `range()` loops, integer arithmetic between
//!   computed numbers and slices with an end (`loops.rs`): exact integer values from tallies
//!   (strings or lists whose length is the number).
//!
//! Everything else — other string methods on data, slices with other steps... — is reported
//! as [`Untranslatable`] with the construct and its line.

use std::collections::BTreeMap;
use std::fmt;

use minijinja::machinery::ast::{CallArg, Expr, Stmt};
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
    /// Statements a lenient translation ([`translate_lenient`]) left out, each with its
    /// construct and line; empty for a complete translation.
    pub left_out: Vec<String>,
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
    let opts = TranslateOptions { eos_token: ctx.eos_token.clone() };
    let t = match translate(jinja, &opts) {
        Ok(t) => t,
        // A partial translation (leaving out what sits in branches or loops) may still render
        // more conversations identically than the family: verify decides.
        Err(e) => match translate_lenient(jinja, &opts) {
            Ok(t) if !t.left_out.is_empty() => t,
            _ => return Choice::Family { note: Some(format!("the chat template could not be translated ({e})")) },
        },
    };
    let v = match verify(&t.template, jinja, &ctx) {
        Ok(v) => v,
        Err(e) => return Choice::Family { note: Some(format!("the translated chat template failed to verify: {e}")) },
    };
    let better = match fam_identical {
        Some(n) => v.identical > n,
        // No family: the translation must beat the minimal fallback that would be written.
        None => v.identical > fallback_identical(meta, jinja, &ctx),
    };
    if !better {
        return Choice::Family {
            note: Some(format!(
                "a {}translation of the chat template rendered identically on only {}/{} conversations",
                if t.left_out.is_empty() { "" } else { "partial " },
                v.identical,
                v.conversations
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
            "{} from the GGUF's Jinja chat template ({}/{} conversations identical{}{})",
            if t.left_out.is_empty() { "translated" } else { "partially translated" },
            v.identical,
            v.conversations,
            if t.notes.is_empty() { String::new() } else { format!("; {}", t.notes.join("; ")) },
            if t.left_out.is_empty() { String::new() } else { format!("; left out: {}", t.left_out.join("; ")) }
        ),
    }
}

/// How many conversations the vocabulary's minimal fallback template renders identically.
fn fallback_identical(meta: &crate::gguf::Metadata, jinja: &str, ctx: &super::verify::TemplateContext) -> usize {
    let tokens: std::collections::HashSet<&str> = meta
        .get("tokenizer.ggml.tokens")
        .and_then(|v| v.as_array())
        .map(|a| a.values.iter().filter_map(|t| t.as_str()).collect())
        .unwrap_or_default();
    let (template, _, _) = super::families::fallback(&|t: &str| tokens.contains(t));
    super::verify::verify(&template, jinja, ctx).map_or(0, |v| v.identical)
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
    translate_mode(jinja, opts, false)
}

/// Like [`translate`], but statements that cannot be translated and sit inside a conditional
/// branch or a loop (a tools-only macro, a `tools` block...), or are a whole top-level `if` or
/// `for`, are left out instead of failing the whole template; [`Translation::left_out`] lists
/// them. Such a translation is partial:
/// only the rendering comparison can tell on which conversations it is exact.
pub fn translate_lenient(jinja: &str, opts: &TranslateOptions) -> Result<Translation, Untranslatable> {
    translate_mode(jinja, opts, true)
}

fn translate_mode(jinja: &str, opts: &TranslateOptions, lenient: bool) -> Result<Translation, Untranslatable> {
    // transformers' `{% generation %}` markers are transparent (as the Jinja side renders them).
    let jinja = &crate::modelfile::render::jinja::generation_blocks(jinja);
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
        st: stmt::StmtState::new(lenient),
        vals: values::ValState::default(),
        map_counters: Default::default(),
        tools_default: None,
        tested_defined: tools::tested_defined(jinja),
        strs: strings::StringState::default(),
    };
    let Stmt::Template(root) = &tree else {
        return Err(Untranslatable { construct: "template root".into(), line: 0 });
    };
    t.collect_macros(&root.children);
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
    Ok(Translation { template, writes_bos: t.writes_bos, notes, left_out: t.st.left_out })
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
    /// A tool-call argument value (string, number, boolean, list or object).
    ArgValue,
    /// A variable holding a message or none (`""` in Go; see `values.rs`).
    MaybeMessage,
    /// A tool's `parameters` (Ollama's templateToolFunctionParameters; see `tools.rs`).
    Params,
    /// A map of tool properties by name.
    Props,
    /// One tool property (api.ToolProperty).
    Prop,
    /// A list of strings (a schema's `required`).
    StrList,
    /// A list of JSON values (a property's `enum`).
    JsonList,
    /// `s.split(sep)` kept as a list: the Go operand holds `s` (see `strings.rs`).
    SplitParts,
    /// `tools | map(attribute='function')`: the Go operand is the list of tools.
    ToolFunctions,
    /// Messages picked by `selectattr`/`rejectattr` on their role, only to be counted or
    /// tested: the Go operand is a string of one byte per message picked.
    Selected,
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
    /// Go template text produced by a macro or a `{% set %}` block: printed as is where the
    /// Jinja prints it; Go cannot capture it into a value, so it cannot be tested or compared.
    Fragment(String),
    /// A dict bound at translation time: its items by key (see `values.rs`).
    Dict(Vec<(String, Val)>),
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
    /// Statement-level state: macros, captured output, lenient mode (see `stmt.rs`).
    st: stmt::StmtState<'o>,
    /// State of the value translations (see `values.rs`).
    vals: values::ValState,
    /// Counter variables of loops over tool property maps (see `tools.rs`).
    map_counters: std::collections::BTreeSet<String>,
    /// `tools` was defaulted when undefined (`set tools = none` if true, `= []` if false).
    tools_default: Option<bool>,
    /// Names the template tests with `is defined`/`is undefined` (see `tools.rs`).
    tested_defined: std::collections::BTreeSet<String>,
    /// String filters and methods on data (see `strings.rs`).
    strs: strings::StringState,
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
    let mut out = if s.contains("{{") { s.split("{{").collect::<Vec<_>>().join("{{ \"{{\" }}") } else { s.to_string() };
    // `"""` would end the Modelfile's quoted TEMPLATE (Ollama has no escapes).
    if out.contains("\"\"\"") {
        out = out.replace("\"\"\"", "\"\"{{ \"\\\"\" }}");
    }
    // A final `{` would join an action (or text) written next into `{{`, a final `"` text
    // written next into `"""`: written as actions.
    let mut tail = String::new();
    loop {
        if out.ends_with('{') {
            tail.insert_str(0, "{{ \"{\" }}");
        } else if out.ends_with('"') {
            tail.insert_str(0, "{{ \"\\\"\" }}");
        } else {
            break;
        }
        out.pop();
    }
    out + &tail
}

macro_rules! bail {
    ($line:expr, $($arg:tt)*) => {
        return Err(Untranslatable { construct: format!($($arg)*), line: $line })
    };
}

/// Tool definitions as Python's `json.dumps` writes them (Ollama's tool struct order: type,
/// function{name, description, parameters{type, properties{type, description, enum}, required}}).
const TOOL_JSON: &str = r#"{"type": "function", "function": {"name": {{ printf "%q" .Function.Name }}, "description": {{ printf "%q" .Function.Description }}, "parameters": {"type": {{ json .Function.Parameters.Type }}, "properties": { {{- $first := true }}{{ range $name, $p := .Function.Parameters.Properties }}{{ if not $first }}, {{ end }}{{ $first = false }}{{ printf "%q" $name }}: {"type": {{ json $p.Type }}{{ if $p.Description }}, "description": {{ printf "%q" $p.Description }}{{ end }}{{ if $p.Enum }}, "enum": [{{ range $k, $e := $p.Enum }}{{ if $k }}, {{ end }}{{ if eq (printf "%T" $e) "string" }}{{ printf "%q" $e }}{{ else }}{{ json $e }}{{ end }}{{ end }}]{{ end }}}{{ end }}}{{ if .Function.Parameters.Required }}, "required": [{{ range $k, $r := .Function.Parameters.Required }}{{ if $k }}, {{ end }}{{ printf "%q" $r }}{{ end }}]{{ end }}}}}"#;

/// Tool-call arguments as `json.dumps` writes them (keys in Go's sorted map order).
const ARGS_JSON: &str = r#"{ {{- $first := true }}{{ range $k, $v := .Arguments }}{{ if not $first }}, {{ end }}{{ $first = false }}{{ printf "%q" $k }}: {{ if eq (printf "%T" $v) "string" }}{{ printf "%q" $v }}{{ else }}{{ json $v }}{{ end }}{{ end }}}"#;

impl Translator<'_> {
    /// Records an assumption the translation makes (shown in the Modelfile's notes).
    fn note(&mut self, n: &str) {
        if !self.notes.iter().any(|x| x == n) {
            self.notes.push(n.to_string());
        }
    }

    fn fresh(&mut self) -> String {
        self.counter += 1;
        format!("$j{}", self.counter)
    }
}

mod expr;
mod loops;
mod stmt;
mod strings;
mod tools;
mod values;

/// `strftime_now(fmt)` from Ollama's `currentDate` ("2006-01-02").
fn strftime(fmt: &str, line: usize) -> Result<String, Untranslatable> {
    let mut out = String::from("{{ $d := currentDate }}");
    let month = |full: bool| {
        let mut s = String::from("{{ $m := slice $d 5 7 }}");
        for (i, name) in super::render::jinja::MONTHS.iter().enumerate() {
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
        Val::Fragment(_) => "captured output (a macro's or a set block's)".into(),
        Val::Dict(_) => "a dict".into(),
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
    use super::super::verify::{verify, TemplateContext, Verification};
    use super::*;

    pub(super) fn opts() -> TranslateOptions {
        TranslateOptions { eos_token: "</s>".into() }
    }

    /// The verification of a translation against its Jinja on the built-in conversations.
    pub(super) fn judge(t: &Translation, jinja: &str) -> Verification {
        let ctx = TemplateContext {
            bos_token: "<s>".into(),
            eos_token: "</s>".into(),
            add_bos: t.writes_bos,
            ..Default::default()
        };
        verify(&t.template, jinja, &ctx).unwrap()
    }

    /// Translates strictly and checks the Go template renders like the Jinja everywhere.
    pub(super) fn check(jinja: &str) -> Translation {
        let t = translate(jinja, &opts()).unwrap_or_else(|e| panic!("{e}"));
        let v = judge(&t, jinja);
        assert!(v.is_verified(), "{}\n{:#?}", t.template, v.differences);
        assert!(v.conversations >= 5, "{v:#?}");
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
        assert!(t.notes.is_empty(), "{:?}", t.notes);
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
            "{% for m in messages %}\n{{ m.content.split(m.role)[-1] }}{% endfor %}",
            &TranslateOptions::default(),
        )
        .unwrap_err();
        assert_eq!(e.line, 2);
        assert!(
            e.to_string().starts_with("untranslatable: method .split() with a computed or no separator at line 2"),
            "{e}"
        );
        let e =
            translate("{% macro f(x) %}{{ f(x) }}{% endmacro %}{{ f(1) }}", &TranslateOptions::default()).unwrap_err();
        assert!(e.to_string().contains("macro f"), "{e}");
        let e = translate("{% for m in messages[::2] %}{% endfor %}", &TranslateOptions::default()).unwrap_err();
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
