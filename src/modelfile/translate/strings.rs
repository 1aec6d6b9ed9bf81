//! String filters and methods on data, and a few list idioms around them (issue 14).
//!
//! - `|lower` / `|upper` (and the methods `.lower()` / `.upper()`) of text from Ollama's data:
//!   Go code walks the bytes and maps `A`–`Z` (or `a`–`z`). Python's case mapping is Unicode
//!   aware, so other characters are handled exactly or not at all: the only non-ASCII
//!   character whose lowercase is ASCII is the Kelvin sign U+212A (→ `k`), mapped here; any
//!   other non-ASCII character makes the Go rendering fail (`slice` out of range) instead of
//!   writing a possibly wrong text. Roles and types are ASCII in practice.
//! - `|replace(old, new)` as the method `.replace` (exact byte scan, see `expr.rs`); the
//!   replacement may be captured output (a macro's or a set block's), accumulated into a
//!   string value.
//! - `|length` of text: Python counts code points, Go code counts the bytes that start a
//!   character (below 0x80 or from 0xC0) into a string whose length is the count.
//! - `'...{}...'.format(...)` of a constant with constant arguments: evaluated here.
//! - `s.split(sep)` used as a list: bound at translation time to the text and separator
//!   ([`Kind::SplitParts`]); `parts[k]`, `parts[-1]`, `parts[k:] | join(sep)` (the text after
//!   the k-th occurrence, or empty) and `parts | length` are computed by the scans of
//!   `expr.rs`.
//! - `x or []` of a list (`set tools = tools or []`): the list itself (an empty and an absent
//!   list behave alike in Go: no items, false, length 0); a variable assigned so at the top
//!   level is `defined` and not `none` afterwards, as in Jinja. `set tools = none` empties the
//!   list (the translator's model: Ollama never sends an empty tool list, so none ≡ empty).
//! - `s[k].attr` of text (`content[0].type`, written for content given as a list of parts):
//!   undefined, as a character has no such attribute.
//! - `tools | map(attribute='function')` ([`Kind::ToolFunctions`]) and `|tojson(indent=n)`
//!   of it or of the tools: the compact JSON re-indented by a byte scan, as Python's
//!   `json.dumps(indent=n)` writes it.
//! - Loops over a string, `.split()` with a computed separator, other methods of data stay
//!   [`Untranslatable`].

use std::collections::BTreeMap;

use minijinja::machinery::ast::{self, CallArg};

use super::*;

/// A string split by a constant separator, bound at translation time: the Go variable holding
/// the text, the separator, and how many leading parts a slice `[k:]` dropped.
#[derive(Debug, Clone, Default)]
pub(super) struct SplitInfo {
    pub sep: String,
    pub skip: i64,
}

/// State of this module kept on the [`Translator`].
#[derive(Debug, Default)]
pub(super) struct StringState {
    /// `Kind::SplitParts` operands (Go variables) → how they were split.
    pub splits: BTreeMap<String, SplitInfo>,
    /// List variables (`$j_name`) that hold `X or []` (assigned at the top level): defined and
    /// not none even when empty.
    pub not_none: std::collections::BTreeSet<String>,
    /// List variables assigned at the top level: defined from then on, whatever the value.
    pub assigned: std::collections::BTreeSet<String>,
}

/// Python's `str` methods (attributes a character does have).
const STR_METHODS: &[&str] = &[
    "capitalize",
    "casefold",
    "center",
    "count",
    "encode",
    "endswith",
    "expandtabs",
    "find",
    "format",
    "format_map",
    "index",
    "isalnum",
    "isalpha",
    "isascii",
    "isdecimal",
    "isdigit",
    "isidentifier",
    "islower",
    "isnumeric",
    "isprintable",
    "isspace",
    "istitle",
    "isupper",
    "join",
    "ljust",
    "lower",
    "lstrip",
    "maketrans",
    "partition",
    "removeprefix",
    "removesuffix",
    "replace",
    "rfind",
    "rindex",
    "rjust",
    "rpartition",
    "rsplit",
    "rstrip",
    "split",
    "splitlines",
    "startswith",
    "strip",
    "swapcase",
    "title",
    "translate",
    "upper",
    "zfill",
];

/// A Go action that makes the rendering fail (a string sliced past its end).
const FAIL: &str = "{{ slice \"\" 1 }}";

impl Translator<'_> {
    /// Filters on text and lists handled by this module: `Ok(Ok(value))` when handled,
    /// `Ok(Err(v))` to give the value back to the general filter code.
    pub(super) fn string_filter(
        &mut self,
        f: &ast::Filter<'_>,
        v: Val,
        line: usize,
    ) -> Result<Result<Val, Val>, Untranslatable> {
        let v = match v {
            Val::Fragment(_) | Val::Raw(_) if matches!(f.name, "trim" | "lower" | "upper" | "replace" | "length") => {
                self.fragment_value(v)
            }
            v => v,
        };
        match (f.name, f.args.as_slice()) {
            ("lower" | "upper", []) if matches!(v, Val::Undefined) => Ok(Ok(Val::Str(String::new()))),
            ("lower" | "upper", []) if is_data_text(&v) => Ok(Ok(self.case_map(v, f.name == "lower", line)?)),
            ("replace", [CallArg::Pos(old), CallArg::Pos(new)]) => {
                let old = match self.expr(old)? {
                    Val::Str(s) => s,
                    _ => bail!(line, "|replace of a computed string"),
                };
                let new = self.expr(new)?;
                Ok(Ok(self.replace_any(v, &old, new, line)?))
            }
            ("length" | "count", []) => match v {
                Val::Go(g, Kind::SplitParts) => Ok(Ok(self.split_count(&g, line)?)),
                v if is_data_text(&v) => Ok(Ok(self.char_count(v, line)?)),
                v => Ok(Err(v)),
            },
            ("map", [CallArg::Kwarg("attribute", attr)]) => match (self.expr(attr)?, v) {
                (Val::Str(a), Val::Go(g, Kind::Tools)) if a == "function" => Ok(Ok(Val::Go(g, Kind::ToolFunctions))),
                (_, v) => bail!(line, "|map of {}", describe(&v)),
            },
            ("tojson", args) if matches!(v, Val::Go(_, Kind::ToolFunctions)) || !args.is_empty() => {
                self.tojson_indent(v, args, line)
            }
            ("join", [CallArg::Pos(sep)]) => {
                let Val::Go(g, Kind::SplitParts) = v else { return Ok(Err(v)) };
                let sep = match self.expr(sep)? {
                    Val::Str(s) => s,
                    _ => bail!(line, "|join with a computed separator"),
                };
                self.split_join(&g, &sep, line).map(Ok)
            }
            _ => Ok(Err(v)),
        }
    }

    /// String methods of this module (`format`, `split` as a list, `lower`/`upper` of data);
    /// anything else is untranslatable.
    pub(super) fn string_method(
        &mut self,
        base: Val,
        name: &str,
        args: &[CallArg<'_>],
        line: usize,
    ) -> Result<Val, Untranslatable> {
        let vals = self.method_args(name, args, line)?;
        match (name, base) {
            ("format", Val::Str(s)) => py_format(&s, &vals, line),
            ("split", base) => {
                let [Val::Str(sep)] = vals.as_slice() else {
                    bail!(line, "method .split() with a computed or no separator")
                };
                if sep.is_empty() || !is_data_text(&base) {
                    bail!(line, "method .split() of {} by {sep:?}", describe(&base));
                }
                let (o, _) = self.operand(base, line)?;
                let g = self.fresh();
                self.out.push_str(&format!("{{{{ {g} := {o} }}}}"));
                self.strs.splits.insert(g.clone(), SplitInfo { sep: sep.clone(), skip: 0 });
                Ok(Val::Go(g, Kind::SplitParts))
            }
            ("lower" | "upper", v) if vals.is_empty() && is_data_text(&v) => self.case_map(v, name == "lower", line),
            (_, base) => bail!(line, "method .{name}() of {}", describe(&base)),
        }
    }

    /// `parts[k]` of a split string.
    pub(super) fn split_index(&mut self, g: &str, k: i64, line: usize) -> Result<Val, Untranslatable> {
        let info = self.split_info(g, line)?;
        if info.skip > 0 && k < 0 {
            bail!(line, "a negative item of a sliced .split() list");
        }
        let k = if k < 0 { k } else { k + info.skip };
        self.split_item(Val::Go(g.to_string(), Kind::Str), &info.sep, k, None, line)
    }

    /// `parts[k:]` of a split string (still bound at translation time).
    pub(super) fn split_slice(&mut self, g: &str, start: Val, line: usize) -> Result<Val, Untranslatable> {
        let mut info = self.split_info(g, line)?;
        match start {
            Val::Int(k) if k >= 0 => info.skip += k,
            Val::Undefined => {}
            other => bail!(line, "a .split() list sliced from {}", describe(&other)),
        }
        let n = self.fresh();
        self.out.push_str(&format!("{{{{ {n} := {g} }}}}"));
        self.strs.splits.insert(n.clone(), info);
        Ok(Val::Go(n, Kind::SplitParts))
    }

    /// `for part in s.split(sep)`, with a body that uses neither `loop` nor `break`/`continue`
    /// (and no filter or `else`): the body is written twice, with `part` a Go variable — at
    /// each occurrence of `sep`, set to the text before it (from the end of the previous
    /// one), and after the scan, set to the text after the last occurrence — so it runs once
    /// per part, in order, as Jinja's loop does.
    pub(super) fn split_loop(
        &mut self,
        f: &ast::ForLoop<'_>,
        target: &str,
        g: String,
        line: usize,
    ) -> Result<(), Untranslatable> {
        let info = self.split_info(&g, line)?;
        if info.skip > 0
            || f.filter_expr.is_some()
            || !f.else_body.is_empty()
            || mentions(&f.body, "loop")
            || mentions_loop_control(&f.body)
        {
            bail!(line, "loop over .split() parts using a slice, loop, a filter, else, break or continue");
        }
        let part = self.fresh();
        self.out.push_str(&format!("{{{{ {part} := \"\" }}}}"));
        let mark = self.out.len();
        self.with_bound(target, Val::Go(part.clone(), Kind::Str), |t| t.stmts_block(&f.body))?;
        let body = self.out.split_off(mark);
        let sc = self.scan(
            Val::Go(g, Kind::Str),
            &info.sep,
            |sc| format!("{{{{ {part} = slice {} {} {} }}}}{body}", sc.s, sc.from, sc.i),
            line,
        )?;
        self.out.push_str(&format!("{{{{ {part} = slice {} {} }}}}{body}", sc.s, sc.from));
        Ok(())
    }

    fn split_info(&self, g: &str, line: usize) -> Result<SplitInfo, Untranslatable> {
        match self.strs.splits.get(g) {
            Some(i) => Ok(i.clone()),
            None => bail!(line, "a .split() list out of its scope"),
        }
    }

    /// `parts[k:] | join(sep)` with the separator it was split by: the text after the k-th
    /// occurrence (empty when there are fewer).
    fn split_join(&mut self, g: &str, sep: &str, line: usize) -> Result<Val, Untranslatable> {
        let info = self.split_info(g, line)?;
        if info.sep != sep {
            bail!(line, "|join of a .split() list by another separator");
        }
        let hay = Val::Go(g.to_string(), Kind::Str);
        if info.skip == 0 {
            return Ok(hay);
        }
        self.split_item(hay, sep, info.skip, Some(info.skip), line)
    }

    /// `parts | length`: occurrences + 1 (less the dropped leading parts, not below 0).
    fn split_count(&mut self, g: &str, line: usize) -> Result<Val, Untranslatable> {
        let info = self.split_info(g, line)?;
        let sc = self.scan(Val::Go(g.to_string(), Kind::Str), &info.sep, |_| String::new(), line)?;
        // One "x" per part: the occurrences plus one, then `slice` drops the skipped parts when
        // there are that many.
        let (p, r) = (self.fresh(), self.fresh());
        self.out.push_str(&format!("{{{{ {p} := print {} \"x\" }}}}{{{{ {r} := 0 }}}}", sc.count));
        self.out.push_str(&format!(
            "{{{{ if ge (len {p}) {k} }}}}{{{{ {r} = len (slice {p} {k}) }}}}{{{{ end }}}}",
            k = info.skip
        ));
        Ok(Val::Go(r, Kind::Int))
    }

    /// The number of characters of a text (Python's `len`).
    fn char_count(&mut self, v: Val, line: usize) -> Result<Val, Untranslatable> {
        if let Val::Str(s) = &v {
            return Ok(Val::Int(s.chars().count() as i64));
        }
        if matches!(v, Val::Undefined) {
            return Ok(Val::Int(0));
        }
        let (o, _) = self.operand(v, line)?;
        let [s, n, i, c] = [(); 4].map(|_| self.fresh());
        self.out.push_str(&format!(
            "{{{{ {s} := {o} }}}}{{{{ {n} := \"\" }}}}{{{{ range {i} := len {s} }}}}{{{{ {c} := index {s} {i} }}}}\
             {{{{ if or (lt {c} 128) (ge {c} 192) }}}}{{{{ {n} = print {n} \"x\" }}}}{{{{ end }}}}{{{{ end }}}}"
        ));
        Ok(Val::Go(format!("(len {n})"), Kind::Int))
    }

    /// `|lower` / `|upper` of data text (see the module documentation): each ASCII byte `c`
    /// is looked up in a 128-byte table (`slice (slice TABLE c) 0 1`).
    fn case_map(&mut self, v: Val, lower: bool, line: usize) -> Result<Val, Untranslatable> {
        if let Val::Str(s) = &v {
            return Ok(Val::Str(expr::case(s, if lower { "lower" } else { "upper" })));
        }
        if matches!(v, Val::Undefined) {
            return Ok(Val::Str(String::new()));
        }
        let (o, _) = self.operand(v, line)?;
        let [s, r, i, c, skip] = [(); 5].map(|_| self.fresh());
        let table: String =
            (0u8..128).map(|b| if lower { b.to_ascii_lowercase() } else { b.to_ascii_uppercase() } as char).collect();
        let table = go_quote(&table);
        // The Kelvin sign (E2 84 AA) lowercases to `k`; no other non-ASCII character maps to
        // ASCII under lower() (nor is handled here: the rendering fails on it).
        let kelvin = if lower {
            format!(
                "{{{{ else if and (eq {c} 226) (eq (slice (print (slice {s} {i}) \"xx\") 0 3) \"\u{212a}\") }}}}\
                 {{{{ {r} = print {r} \"k\" }}}}{{{{ {skip} = \"xx\" }}}}"
            )
        } else {
            String::new()
        };
        self.out.push_str(&format!(
            "{{{{ {s} := {o} }}}}{{{{ {r} := \"\" }}}}{{{{ {skip} := \"\" }}}}{{{{ range {i} := len {s} }}}}\
             {{{{ {c} := index {s} {i} }}}}{{{{ if {skip} }}}}{{{{ {skip} = slice {skip} 1 }}}}\
             {{{{ else if lt {c} 128 }}}}{{{{ {r} = print {r} (slice (slice {table} {c}) 0 1) }}}}\
             {kelvin}{{{{ else }}}}{FAIL}{{{{ end }}}}{{{{ end }}}}"
        ));
        self.note(
            "|lower / |upper of text from the conversation: ASCII only (the rendering fails on other characters)",
        );
        Ok(Val::Go(r, Kind::Str))
    }

    /// Captured output (or JSON text) as a string value, accumulated where it is read.
    pub(super) fn fragment_value(&mut self, v: Val) -> Val {
        match v {
            Val::Fragment(t) | Val::Raw(t) => Val::Go(self.raw_value(&t), Kind::Str),
            v => v,
        }
    }

    /// `set x = X or []` at the top level: `x` is a list (possibly empty), never none.
    pub(super) fn note_list_assign(&mut self, name: &str, operand: &str, kind: Kind) {
        let or_empty = operand.starts_with("(or ") && operand.ends_with(" 0 0))");
        let list = matches!(kind, Kind::Messages | Kind::Tools | Kind::ToolCalls);
        if list && self.st_top_level() {
            self.strs.assigned.insert(format!("${}", go_var(name)));
        }
        if or_empty && list && self.st_top_level() {
            self.strs.not_none.insert(format!("${}", go_var(name)));
        } else {
            self.strs.not_none.remove(&format!("${}", go_var(name)));
        }
    }

    /// `is defined` / `is none` / `is undefined` of a list variable known to hold a list.
    pub(super) fn list_test(&self, v: &Val, test: &str) -> Option<Val> {
        let Val::Go(g, Kind::Messages | Kind::Tools | Kind::ToolCalls) = v else { return None };
        if !self.strs.not_none.contains(g) {
            // `set tools = none` at the top level: defined (as none); none ≡ empty otherwise.
            return match test {
                "defined" if self.strs.assigned.contains(g) => Some(Val::Bool(true)),
                "undefined" if self.strs.assigned.contains(g) => Some(Val::Bool(false)),
                _ => None,
            };
        }
        match test {
            "defined" => Some(Val::Bool(true)),
            "none" | "undefined" => Some(Val::Bool(false)),
            _ => None,
        }
    }

    /// `s[k].name` where `s` is text (`message.content[0].type`, written for content given as
    /// a list of parts): a character has no attributes other than its methods, so the
    /// attribute is undefined (an empty `s` makes Jinja fail: not compared).
    pub(super) fn attr_of_char(&mut self, a: &ast::GetAttr<'_>) -> Result<Option<Val>, Untranslatable> {
        let ast::Expr::GetItem(g) = &a.expr else { return Ok(None) };
        let ast::Expr::Const(c) = &g.subscript_expr else { return Ok(None) };
        if c.value.as_i64().is_none() || STR_METHODS.contains(&a.name) {
            return Ok(None);
        }
        let (mark, counter) = (self.out.len(), self.counter);
        let base = self.expr(&g.expr)?;
        self.out.truncate(mark);
        self.counter = counter;
        Ok((is_data_text(&base) || matches!(base, Val::Str(_))).then_some(Val::Undefined))
    }

    /// `|tojson(indent=n)` of the tools (or their functions), and `|tojson` of the functions:
    /// the compact JSON of `expr.rs` accumulated into a string, then re-indented as Python's
    /// `json.dumps(indent=n)` writes it (items separated by `,` and a new line, keys by `: `,
    /// empty containers as `{}`/`[]`) by a byte scan that skips string contents.
    fn tojson_indent(&mut self, v: Val, args: &[CallArg<'_>], line: usize) -> Result<Result<Val, Val>, Untranslatable> {
        let mut indent = None;
        for a in args {
            match a {
                CallArg::Kwarg("indent", e) | CallArg::Pos(e) if indent.is_none() => match self.expr(e)? {
                    Val::Int(n) if (0..=16).contains(&n) => indent = Some(n as usize),
                    Val::Undefined => {}
                    _ => bail!(line, "|tojson with a computed indent"),
                },
                CallArg::Kwarg("ensure_ascii", e) if matches!(self.expr(e)?, Val::Bool(false)) => {}
                _ => return Ok(Err(v)),
            }
        }
        let range = |g: &str, body: &str| {
            format!("[{{{{ range $k, $t := {g} }}}}{{{{ if $k }}}}, {{{{ end }}}}{{{{ with $t }}}}{body}{{{{ end }}}}{{{{ end }}}}]")
        };
        let compact = match &v {
            Val::Go(g, Kind::Tools) => range(g, TOOL_JSON),
            Val::Go(g, Kind::ToolFunctions) => range(g, expr::function_json()),
            _ => return Ok(Err(v)),
        };
        let Some(n) = indent else { return Ok(Ok(Val::Raw(compact))) };
        let src = self.raw_value(&compact);
        let [s, r, ind, st, esc, skip, i, ch, nx] = [(); 9].map(|_| self.fresh());
        let step = go_quote(&" ".repeat(n));
        let nl_ind = |x: &str| format!("\"\\n\" {x}");
        self.out.push_str(&format!(
            "{{{{ {s} := {src} }}}}{{{{ {r} := \"\" }}}}{{{{ {ind} := \"\" }}}}{{{{ {st} := false }}}}{{{{ {esc} := false }}}}{{{{ {skip} := false }}}}\
             {{{{ range {i} := len {s} }}}}{{{{ {ch} := slice (slice {s} {i}) 0 1 }}}}{{{{ {nx} := slice (print (slice {s} {i}) \"  \") 1 2 }}}}\
             {{{{ if {skip} }}}}{{{{ {skip} = false }}}}\
             {{{{ else if {st} }}}}{{{{ {r} = print {r} {ch} }}}}{{{{ if {esc} }}}}{{{{ {esc} = false }}}}{{{{ else if eq {ch} \"\\\\\" }}}}{{{{ {esc} = true }}}}{{{{ else if eq {ch} \"\\\"\" }}}}{{{{ {st} = false }}}}{{{{ end }}}}\
             {{{{ else if eq {ch} \"\\\"\" }}}}{{{{ {r} = print {r} {ch} }}}}{{{{ {st} = true }}}}\
             {{{{ else if or (and (eq {ch} \"{{\") (eq {nx} \"}}\")) (and (eq {ch} \"[\") (eq {nx} \"]\")) }}}}{{{{ {r} = print {r} {ch} {nx} }}}}{{{{ {skip} = true }}}}\
             {{{{ else if or (eq {ch} \"{{\") (eq {ch} \"[\") }}}}{{{{ {ind} = print {ind} {step} }}}}{{{{ {r} = print {r} {ch} {nl} }}}}\
             {{{{ else if or (eq {ch} \"}}\") (eq {ch} \"]\") }}}}{{{{ {ind} = slice {ind} {n} }}}}{{{{ {r} = print {r} {nl} {ch} }}}}\
             {{{{ else if eq {ch} \",\" }}}}{{{{ {r} = print {r} {ch} {nl} }}}}{{{{ {skip} = eq {nx} \" \" }}}}\
             {{{{ else }}}}{{{{ {r} = print {r} {ch} }}}}{{{{ end }}}}{{{{ end }}}}",
            nl = nl_ind(&ind),
        ));
        Ok(Ok(Val::Go(r, Kind::Str)))
    }

    /// `.replace(old, new)` / `|replace(old, new)`, where `new` may be captured output.
    pub(super) fn replace_any(&mut self, hay: Val, old: &str, new: Val, line: usize) -> Result<Val, Untranslatable> {
        let new = self.fragment_value(new);
        self.replace(hay, old, new, line)
    }
}

/// Text from Ollama's data (not a constant): what the Go scans of this module work on.
pub(super) fn is_data_text(v: &Val) -> bool {
    matches!(v, Val::Concat(_) | Val::Go(_, Kind::Str))
}

/// Python's `str.format` with positional (`{}`, `{0}`) fields and `{{`/`}}` escapes, of
/// constant string and number arguments.
fn py_format(s: &str, args: &[Val], line: usize) -> Result<Val, Untranslatable> {
    let mut parts = Vec::new();
    let mut out = String::new();
    let mut auto = 0usize;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let mut field = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(x) => field.push(x),
                        None => bail!(line, ".format() of an unterminated field"),
                    }
                }
                let idx = if field.is_empty() {
                    auto += 1;
                    auto - 1
                } else {
                    match field.parse::<usize>() {
                        Ok(i) => i,
                        Err(_) => bail!(line, ".format() field {{{field}}}"),
                    }
                };
                match args.get(idx) {
                    Some(Val::Str(a)) => out.push_str(a),
                    Some(Val::Int(i)) => out.push_str(&i.to_string()),
                    Some(Val::Undefined) => {}
                    // Text from data or a variable: `{}` writes str(x), the text itself.
                    Some(v @ (Val::Go(_, Kind::Str) | Val::Concat(_))) => {
                        parts.push(Val::Str(std::mem::take(&mut out)));
                        parts.push(v.clone());
                    }
                    Some(other) => bail!(line, ".format() of {}", describe(other)),
                    None => bail!(line, ".format() with too few arguments"),
                }
            }
            '}' => bail!(line, ".format() with a single }}"),
            c => out.push(c),
        }
    }
    if parts.is_empty() {
        return Ok(Val::Str(out));
    }
    parts.push(Val::Str(out));
    parts.retain(|p| !matches!(p, Val::Str(s) if s.is_empty()));
    Ok(Val::Concat(parts))
}

impl Translator<'_> {
    /// Outside any branch, loop or macro call (an assignment there always happens, once).
    fn st_top_level(&self) -> bool {
        self.loops.is_empty() && self.st.is_top_level()
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::render::chat::{Chat, Message};
    use super::super::super::render::go::{GoTemplate, Request};
    use super::super::super::render::jinja::{JinjaContext, JinjaTemplate};
    use super::super::tests::{check, opts};
    use super::super::translate;

    /// Translates, verifies on the built-in conversations, then renders both sides on one
    /// exchange per (role, text) of `chats`; `None` from Go means the rendering must fail.
    fn same(jinja: &str, chats: &[(&str, &str)]) -> String {
        let t = check(jinja);
        let go = GoTemplate::parse(&t.template).unwrap();
        let j = JinjaTemplate::parse(jinja).unwrap();
        let jctx = JinjaContext { bos_token: "<s>".into(), eos_token: "</s>".into(), ..Default::default() };
        for (role, text) in chats {
            let chat = Chat {
                messages: vec![Message::new(role, text), Message::new("assistant", &format!("{text}|{text}"))],
                ..Default::default()
            };
            let want = j.render(&chat, &jctx).unwrap();
            let got = go.render(&chat, &Request::default()).unwrap();
            assert_eq!(got, want, "on {role:?} {text:?}\n{}", t.template);
        }
        t.template
    }

    /// `for part in text.split(sep)` (the loop of Gemma 4's `strip_thinking`): every part
    /// once, in order, with separators at the ends, adjacent, absent, and overlapping their
    /// own prefix.
    #[test]
    fn loops_over_split_parts() {
        let jinja = "{%- set ns = namespace(result='') -%}{%- for m in messages -%}{%- set ns.result = '' -%}\
            {%- for part in m.content.split('<c|>') -%}{%- if '<|c>' in part -%}\
            {%- set ns.result = ns.result + part.split('<|c>')[0] -%}{%- else -%}\
            {%- set ns.result = ns.result + '[' + part + ']' -%}{%- endif -%}{%- endfor -%}\
            <{{ m.role }}>{{ ns.result | trim }}\n{%- endfor -%}<assistant>";
        let cases = [
            ("user", "plain"),
            ("user", ""),
            ("user", "<c|>"),
            ("user", "a<c|>b"),
            ("user", "<c|>start"),
            ("user", "end<c|>"),
            ("user", "x<c|><c|>y"),
            ("user", "<|c>thought<c|>answer"),
            ("user", "pre<|c>t1<c|>mid<|c>t2<c|>post"),
            ("user", "<c<c|>|>é<c|>ü"),
        ];
        same(jinja, &cases);
        let top =
            "{%- for m in messages -%}{%- for p in m.content.split(', ') -%}({{ p }}){%- endfor -%}\n{%- endfor -%}";
        same(top, &[("user", "a, b,, c"), ("user", ", "), ("user", "none here")]);
        // A body that needs the loop's position is refused.
        assert!(translate(
            "{%- for m in messages -%}{%- for p in m.content.split(',') -%}{{ loop.index }}{%- endfor -%}{%- endfor -%}",
            &opts()
        )
        .is_err());
    }

    /// Renders both sides on one exchange per (role, text); `None`: the Go rendering fails.
    fn render_both(jinja: &str, role: &str, text: &str) -> (Option<String>, String) {
        let t = translate(jinja, &opts()).unwrap_or_else(|e| panic!("{e}"));
        let go = GoTemplate::parse(&t.template).unwrap();
        let j = JinjaTemplate::parse(jinja).unwrap();
        let chat = Chat { messages: vec![Message::new(role, text)], ..Default::default() };
        let want = j.render(&chat, &JinjaContext::default()).unwrap();
        let r = go.render(&chat, &Request::default());
        (r.ok(), want)
    }

    #[test]
    fn lower_and_upper_of_data_are_exact_on_ascii() {
        same(
            "{% for m in messages %}{% if m.role | lower == 'system' %}S:{% endif %}\
             {% set r = m.role | lower %}<{{ r }}|{{ m.role | upper }}|{{ m.role.lower() }}>{{ m.content }}{% endfor %}",
            &[("USER", "a"), ("System", "b"), ("aZ@[`{", "")],
        );
        let jinja = "{% for m in messages %}<{{ m.content | lower }}|{{ m.content.upper() }}>{% endfor %}";
        for text in ["Hello World [x] @`{~", "", "\u{212a}", "ABC\u{212a}xyz"] {
            let (go, want) = render_both(jinja, "user", text);
            if text.contains('\u{212a}') {
                // lower() maps the Kelvin sign; upper() of it is not ASCII: Go fails.
                assert_eq!(go, None, "{text:?}");
                let (go, want) =
                    render_both("{% for m in messages %}{{ m.content | lower }}{% endfor %}", "user", text);
                assert_eq!(go.as_deref(), Some(want.as_str()));
            } else {
                assert_eq!(go.as_deref(), Some(want.as_str()), "{text:?}");
            }
        }
        // Other non-ASCII characters: the Go rendering fails rather than being wrong.
        for text in ["Émile", "straße", "ǅ"] {
            assert_eq!(render_both(jinja, "user", text).0, None, "{text:?}");
        }
        // Undefined lowercased is empty.
        check("{% if reasoning_effort is defined and reasoning_effort | lower == 'none' %}x{% endif %}{% for m in messages %}{{ m.content }}{% endfor %}");
    }

    #[test]
    fn replace_filter_and_captured_replacement() {
        same(
            "{% macro esc(v) %}{{ v | string | replace('&', '&amp;') | replace('\"', '&quot;') }}{% endmacro %}\
             {% set tail %}{% for m in messages %}[{{ m.role }}]{% endfor %}{% endset %}\
             {% for m in messages %}{{ esc(m.content) }}|{{ m.content.replace('<sep>', tail) }}\n{% endfor %}",
            &[("user", "a & b \"q\" && <sep>"), ("user", "&&&"), ("user", "<sep><sep>")],
        );
    }

    #[test]
    fn length_of_text_counts_characters() {
        same(
            "{% for m in messages %}{% if m.content | length > 3 %}long{% else %}short{% endif %}\
             {% if (m.role + m.content) | length == 8 %}=8{% endif %}:{{ m.content }}\n{% endfor %}",
            &[("user", "abc"), ("user", "abcd"), ("user", "你好吗"), ("user", "你好吗啊"), ("user", "éé")],
        );
    }

    #[test]
    fn format_of_constants() {
        let t = translate(
            "{% set K = ':x' %}{% set e = '<eos{}|{0}>{{}}'.format(K) %}{{ e }}{{ '{}-{}'.format('a', 2) }}",
            &opts(),
        )
        .unwrap();
        assert!(
            t.template.ends_with("{{ $j_e = (print \"<eos\" $j_K \"|\" $j_K \">{}\") }}{{ $j_e }}a-2"),
            "{}",
            t.template
        );
        assert!(translate("{% for m in messages %}{{ m.content.format(1) }}{% endfor %}", &opts()).is_err());
    }

    #[test]
    fn split_as_a_list() {
        same(
            "{% for m in messages %}{% set c = m.content %}{% if '</think>' in c %}{% set parts = c.split('</think>') %}\
             {% set r = parts[0].split('<think>')[-1] %}{% set c = parts[1:] | join('</think>') %}[{{ r }}]\
             {{ parts | length }},{{ parts[1:] | length }},{{ parts[-1] }},{{ parts[2:] | join('</think>') }}{% endif %}\
             ({{ c }})\n{% endfor %}",
            &[
                ("user", "<think>a</think>b"),
                ("user", "x<think>a</think>b</think>c"),
                ("user", "</think>"),
                ("user", "no tags"),
            ],
        );
    }

    #[test]
    fn attribute_of_a_character_is_undefined() {
        let t = same(
            "{% for m in messages %}{% if m.content and m.content[0].type == 'thinking' %}T{{ m.content[0].thinking }}{% endif %}\
             {{ m.content[0].text | default('-') }}{{ m.content }}\n{% endfor %}",
            &[("user", "thinking"), ("user", "x")],
        );
        assert!(t.contains("(eq \"\" \"thinking\")"), "{t}");
    }

    #[test]
    fn tool_functions_and_indented_json() {
        let t = check(
            "{% if tools %}{{ tools | map(attribute='function') | tojson(indent=2) }}|{{ tools | tojson(indent=4) }}\
             |{{ tools | map(attribute='function') | tojson }}{% endif %}{% for m in messages %}{{ m.content }}{% endfor %}",
        );
        assert!(t.template.contains("range $k, $t := $.Tools"), "{}", t.template);
        assert!(translate("{{ tools | map(attribute='name') | tojson }}", &opts()).is_err());
    }

    #[test]
    fn none_assigned_at_the_top_level_is_defined() {
        same(
            "{% set tools = none %}{% if tools is defined %}D{% endif %}{% if tools is none %}N{% endif %}\
             {% for m in messages %}{{ m.content }}{% endfor %}",
            &[("user", "a")],
        );
    }

    #[test]
    fn messages_indexed_from_a_loop_over_a_slice() {
        // The index is relative to the slice, the list indexed is the whole one (as written).
        same(
            "{% if messages[0].role == 'system' %}{% set start = 1 %}{% else %}{% set start = 0 %}{% endif %}\
             {% for m in messages[start:] %}{% if loop.index0 == 0 or messages[loop.index0 - 1].role != m.role %}<{{ m.role }}>{% endif %}\
             {{ m.content }}{% if not loop.last and messages[loop.index0 + 1].role == 'user' %}|{% endif %}\n{% endfor %}",
            &[("user", "a"), ("system", "b")],
        );
    }

    #[test]
    fn a_macro_parameter_reassigned_from_itself() {
        same(
            "{% macro show(text) %}{% set text = text | string %}{% set text = text.replace('a', 'b') %}[{{ text }}]{% endmacro %}\
             {% for m in messages %}{{ show(m.content) }}{{ show(m.role) }}\n{% endfor %}",
            &[("user", "banana")],
        );
    }

    #[test]
    fn list_or_empty_and_none() {
        let t = same(
            "{% set tools = tools or [] %}{% set messages = messages or [] %}{% if tools | length > 0 %}T{% endif %}\
             {% if not tools is defined %}{% set tools = none %}{% endif %}{% if tools is not none %}N{% endif %}\
             {% for m in messages %}{{ m.content }}{% endfor %}",
            &[("user", "a")],
        );
        assert!(!t.contains("$j_tools = \"\""), "{t}");
    }
}
