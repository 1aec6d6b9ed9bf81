//! Tool definitions as data: a tool's `parameters` (a JSON schema) read field by field, as
//! templates that write their own tool format do (Qwen3-Coder's `<parameter>` XML, the
//! TypeScript-ish namespaces of gpt-oss and Apertus, Gemma 4's declarations).
//!
//! Ollama hands the template `.Tools[i].Function.Parameters` as a struct (`Type`, `Defs`,
//! `Items`, `Required`, `Properties`) whose `Properties` is a Go map of `api.ToolProperty`
//! (`AnyOf`, `Type`, `Items`, `Description`, `Enum`, `Properties`). The schema a Jinja
//! template sees is the request's JSON itself, so the translation rests on these
//! assumptions (each recorded in the translation's notes where it is used):
//!
//! - **Order.** A Go map ranges in sorted key order, Jinja in the request's order: a loop over
//!   a schema's properties (`.items()`, `|items`) visits them sorted by name. `|dictsort`
//!   sorts case-insensitively, Go by bytes: the same unless names differ only in case.
//!   The keys of one schema object are visited in Ollama's struct order.
//! - **Presence.** Ollama keeps only the fields above and drops empty ones (`omitempty`):
//!   a field is taken as present when it is not empty, and every other schema key
//!   (`nullable`, `default`, `oneOf`, `additionalProperties`...) as absent.
//! - **Types.** A property's `type` is one JSON type name (a list of types prints as Go
//!   prints a list).
//!
//! Loops over `required`, `enum` and the property map are Go `range`s (with a counter string
//! for `loop.first`/`loop.last`/`loop.index0` over a map: Go has no arithmetic, but
//! `len (print $c "x")` is one more than `len $c`); a loop over the keys of one schema object
//! is unrolled over the fields Ollama keeps, each iteration guarded by the field's presence.

use minijinja::machinery::ast::{self, CallArg, Expr};

use super::*;

/// The fields of Ollama's `templateToolFunctionParameters` in struct order: JSON key, Go
/// field, kind.
const PARAMS_FIELDS: &[(&str, &str, Kind)] = &[
    ("type", "Type", Kind::Str),
    ("$defs", "Defs", Kind::ArgValue),
    ("items", "Items", Kind::ArgValue),
    ("required", "Required", Kind::StrList),
    ("properties", "Properties", Kind::Props),
];

/// The fields of `api.ToolProperty` the translation reads, in struct order (`anyOf` is not
/// read: see [`Translator::schema_attr`]).
const PROP_FIELDS: &[(&str, &str, Kind)] = &[
    ("type", "Type", Kind::Str),
    ("items", "Items", Kind::ArgValue),
    ("description", "Description", Kind::Str),
    ("enum", "Enum", Kind::JsonList),
    ("properties", "Properties", Kind::Props),
];

/// The fields of a tool's `function` in struct order.
const FUNCTION_FIELDS: &[(&str, &str, Kind)] = &[
    ("name", "Name", Kind::Str),
    ("description", "Description", Kind::Str),
    ("parameters", "Parameters", Kind::Params),
];

const NOTE_ORDER: &str = "tool schema properties are visited in sorted order (a Go map), not in the request's order";
const NOTE_PRESENCE: &str =
    "tool schema fields Ollama does not keep (nullable, default, oneOf, anyOf...) or leaves empty are taken as absent";
const NOTE_TYPE: &str = "a tool property's type is taken to be one JSON type name";

/// A property's `type` as a string (`api.PropertyType` prints one type as itself).
fn type_str(g: &str) -> String {
    format!("(print {}.Type)", paren(g))
}

impl Translator<'_> {
    /// Attributes of tool schemas: `function.parameters`, the parameters' fields, a property
    /// map's entries and a property's fields. `None`: not a schema value.
    pub(super) fn schema_attr(
        &mut self,
        g: &str,
        kind: Kind,
        name: &str,
        line: usize,
    ) -> Result<Option<Val>, Untranslatable> {
        let field = |f: &str, k: Kind| Val::Go(format!("{}.{f}", paren(g)), k);
        Ok(Some(match (kind, name) {
            (Kind::ToolFunction, "parameters") => field("Parameters", Kind::Params),
            (Kind::ToolFunction | Kind::Tool, _) => {
                self.note(NOTE_PRESENCE);
                Val::Undefined
            }
            (Kind::Params, _) => match PARAMS_FIELDS.iter().find(|(k, _, _)| *k == name) {
                Some((_, f, k)) => field(f, *k),
                None => {
                    self.note(NOTE_PRESENCE);
                    Val::Undefined
                }
            },
            (Kind::Prop, "type") => {
                self.note(NOTE_TYPE);
                Val::Go(type_str(g), Kind::Str)
            }
            (Kind::Prop, "anyOf") => bail!(line, "attribute anyOf of a tool property"),
            (Kind::Prop, _) => match PROP_FIELDS.iter().find(|(k, _, _)| *k == name) {
                Some((_, f, k)) => field(f, *k),
                None => {
                    self.note(NOTE_PRESENCE);
                    Val::Undefined
                }
            },
            (Kind::Props, _) => Val::Go(format!("(index {} {})", paren(g), go_quote(name)), Kind::Prop),
            _ => return Ok(None),
        }))
    }

    /// `x[key]` with a key computed in Go (a loop's key): an entry of a property map.
    pub(super) fn schema_item(&mut self, base: &Val, key: &Val, _line: usize) -> Result<Option<Val>, Untranslatable> {
        let Val::Go(k, Kind::Str) = key else { return Ok(None) };
        let Val::Go(g, kind) = base else { return Ok(None) };
        Ok((*kind == Kind::Props).then(|| Val::Go(format!("(index {} {k})", paren(g)), Kind::Prop)))
    }

    /// Is this Go operand an optional field of a schema (absent when empty)?
    fn optional_field(g: &str, kind: Kind) -> bool {
        match kind {
            Kind::Str => g.ends_with(".Description") || g.ends_with(".Type") || g.ends_with(".Type)"),
            Kind::ArgValue => g.ends_with(".Items") || g.ends_with(".Defs"),
            Kind::Props | Kind::StrList | Kind::JsonList => true,
            _ => false,
        }
    }

    /// Tests of schema values (`is defined`, `is mapping`...). `None`: not a schema value.
    pub(super) fn schema_test(&mut self, v: &Val, test: &str, line: usize) -> Result<Option<Val>, Untranslatable> {
        let Val::Go(g, kind) = v else { return Ok(None) };
        let (g, kind) = (g.as_str(), *kind);
        if let (Kind::Tools, "$.Tools", Some(none)) = (kind, g, self.tools_default) {
            return Ok(match test {
                "defined" => Some(Val::Bool(true)),
                "undefined" => Some(Val::Bool(false)),
                "none" if none => Some(Val::Go("(not $.Tools)".into(), Kind::Bool)),
                "none" => Some(Val::Bool(false)),
                _ => None,
            });
        }
        let schema = matches!(kind, Kind::Params | Kind::Props | Kind::Prop | Kind::StrList | Kind::JsonList);
        let optional = Self::optional_field(g, kind);
        if !schema && !optional {
            return Ok(None);
        }
        let present = || Val::Go(format!("(not (not {g}))"), Kind::Bool);
        let absent = || Val::Go(format!("(not {g})"), Kind::Bool);
        if matches!(test, "defined" | "undefined" | "none") && optional {
            self.note(NOTE_PRESENCE);
        }
        Ok(Some(match (test, kind) {
            ("defined", _) if optional => present(),
            ("undefined" | "none", _) if optional => absent(),
            ("defined", _) => Val::Bool(true),
            ("undefined" | "none", _) => Val::Bool(false),
            ("mapping", Kind::ArgValue) => self.arg_value_test(g, "mapping", line)?,
            ("mapping", k) => Val::Bool(matches!(k, Kind::Params | Kind::Props | Kind::Prop)),
            ("string", Kind::ArgValue) => self.arg_value_test(g, "string", line)?,
            ("string", k) => Val::Bool(k == Kind::Str),
            ("sequence", Kind::ArgValue) => self.arg_value_test(g, "sequence", line)?,
            ("sequence", k) => Val::Bool(matches!(k, Kind::Str | Kind::StrList | Kind::JsonList)),
            ("iterable", Kind::ArgValue) => {
                let m = self.arg_value_test(g, "mapping", line)?;
                let s = self.arg_value_test(g, "sequence", line)?;
                let (Val::Go(m, _), Val::Go(s, _)) = (m, s) else { bail!(line, "test `is iterable`") };
                Val::Go(format!("(or {m} {s})"), Kind::Bool)
            }
            ("iterable", _) => Val::Bool(true),
            ("number" | "integer" | "boolean", Kind::ArgValue) => self.arg_value_test(g, test, line)?,
            ("number" | "integer" | "boolean", _) => Val::Bool(false),
            _ => return Ok(None),
        }))
    }

    /// Filters of schema values: `|length`, `|items`, `|dictsort`, `|tojson`, `|join`,
    /// `|list`. `None`: not a schema value.
    pub(super) fn schema_filter(
        &mut self,
        f: &ast::Filter<'_>,
        v: &Val,
        line: usize,
    ) -> Result<Option<Val>, Untranslatable> {
        let Val::Go(g, kind) = v else { return Ok(None) };
        let (g, kind) = (g.clone(), *kind);
        if kind == Kind::ArgValue && f.name == "string" && f.args.is_empty() {
            // Python's str() of a JSON scalar: strings as they are, booleans capitalized,
            // null as None; lists and objects (Python's repr) as JSON, with a note.
            self.note("tool-call argument lists and objects printed as JSON (Python prints their repr)");
            let first = format!("(slice (json {g}) 0 1)");
            return Ok(Some(Val::Raw(format!(
                "{{{{ if eq {first} \"t\" \"f\" }}}}{{{{ if {g} }}}}True{{{{ else }}}}False{{{{ end }}}}\
                 {{{{ else if eq {first} \"n\" }}}}None{{{{ else if eq {first} \"\\\"\" }}}}{{{{ {g} }}}}{{{{ else }}}}{{{{ json {g} }}}}{{{{ end }}}}"
            ))));
        }
        if !matches!(kind, Kind::Params | Kind::Props | Kind::Prop | Kind::StrList | Kind::JsonList) {
            return Ok(None);
        }
        Ok(Some(match (f.name, kind) {
            ("length" | "count", Kind::Props | Kind::StrList | Kind::JsonList) => {
                Val::Go(format!("(len {})", paren(&g)), Kind::Int)
            }
            ("items", Kind::Props) if f.args.is_empty() => Val::Go(g, kind),
            ("dictsort", Kind::Props) if f.args.is_empty() => {
                self.note("|dictsort of tool schema properties sorts by bytes (Go), not case-insensitively");
                Val::Go(g, kind)
            }
            ("list", Kind::StrList | Kind::JsonList) if f.args.is_empty() => Val::Go(g, kind),
            ("tojson", _) => {
                if f.args.iter().any(|a| !matches!(a, CallArg::Kwarg("ensure_ascii", _))) {
                    bail!(line, "|tojson with arguments");
                }
                if matches!(kind, Kind::Params | Kind::Props | Kind::Prop) {
                    self.note("tool schemas are written as JSON without nested properties or items");
                }
                Val::Raw(schema_json(&g, kind))
            }
            ("join", Kind::StrList | Kind::JsonList) => {
                let sep = match f.args.first() {
                    None => Val::Str(String::new()),
                    Some(CallArg::Pos(e)) => self.expr(e)?,
                    Some(_) => bail!(line, "|join with keyword arguments"),
                };
                if f.args.len() > 1 || !super::expr::is_text(&sep) {
                    bail!(line, "|join with {} arguments", f.args.len());
                }
                let (sep, _) = self.operand(sep, line)?;
                let (r, k, e) = (self.fresh(), self.fresh(), self.fresh());
                if kind == Kind::JsonList {
                    self.note("|join of an enum prints its values as Go prints them");
                }
                self.out.push_str(&format!(
                    "{{{{ {r} := \"\" }}}}{{{{ range {k}, {e} := {g} }}}}{{{{ if {k} }}}}{{{{ {r} = print {r} {sep} }}}}{{{{ end }}}}\
                     {{{{ {r} = print {r} {e} }}}}{{{{ end }}}}"
                ));
                Val::Go(r, Kind::Str)
            }
            _ => return Ok(None),
        }))
    }

    /// `x in list` / `'key' in object` on schema values and tools. `None`: not one.
    pub(super) fn schema_in(&mut self, needle: &Val, hay: &Val, line: usize) -> Result<Option<Val>, Untranslatable> {
        let Val::Go(g, kind) = hay else { return Ok(None) };
        let (g, kind) = (g.clone(), *kind);
        match kind {
            Kind::StrList | Kind::JsonList => {
                if !super::expr::is_text(needle) {
                    bail!(line, "`in` on a list with {} as the needle", describe(needle));
                }
                let (n, _) = self.operand(needle.clone(), line)?;
                let (found, e) = (self.fresh(), self.fresh());
                let test = if kind == Kind::StrList {
                    format!("eq {e} {n}")
                } else {
                    format!("and (eq (printf \"%T\" {e}) \"string\") (eq (print {e}) {n})")
                };
                self.out.push_str(&format!(
                    "{{{{ {found} := false }}}}{{{{ range {e} := {g} }}}}{{{{ if {test} }}}}{{{{ {found} = true }}}}{{{{ end }}}}{{{{ end }}}}"
                ));
                Ok(Some(Val::Go(found, Kind::Bool)))
            }
            Kind::Props => {
                let (n, _) = self.operand(needle.clone(), line)?;
                let (found, k) = (self.fresh(), self.fresh());
                self.out.push_str(&format!(
                    "{{{{ {found} := false }}}}{{{{ range {k}, $_ := {g} }}}}{{{{ if eq {k} {n} }}}}{{{{ {found} = true }}}}{{{{ end }}}}{{{{ end }}}}"
                ));
                Ok(Some(Val::Go(found, Kind::Bool)))
            }
            Kind::Tool | Kind::ToolFunction | Kind::Params | Kind::Prop => {
                let Val::Str(key) = needle else { bail!(line, "`in` on a tool with a computed key") };
                let fields: &[(&str, &str, Kind)] = match kind {
                    Kind::Tool => return Ok(Some(Val::Bool(matches!(key.as_str(), "type" | "function")))),
                    Kind::ToolFunction => FUNCTION_FIELDS,
                    Kind::Params => PARAMS_FIELDS,
                    _ => PROP_FIELDS,
                };
                self.note(NOTE_PRESENCE);
                Ok(Some(match fields.iter().find(|(k, _, _)| *k == key) {
                    Some((_, f, _)) => {
                        let v = if kind == Kind::Prop && *f == "Type" {
                            type_str(&g)
                        } else {
                            format!("{}.{f}", paren(&g))
                        };
                        Val::Go(format!("(not (not {v}))"), Kind::Bool)
                    }
                    None => Val::Bool(false),
                }))
            }
            _ => Ok(None),
        }
    }

    /// `a or b` where `a` is a schema list (`required or []`): Go's `or` cannot build a list,
    /// but every use of a missing list (loops, `in`, `|length`) behaves as an empty one.
    pub(super) fn schema_or(&mut self, l: &Val, r: &Val) -> Option<Val> {
        match (l, r) {
            (Val::Go(_, Kind::StrList | Kind::JsonList | Kind::Props), Val::List(items)) if items.is_empty() => {
                Some(l.clone())
            }
            _ => None,
        }
    }

    /// Loops over schema values: `required`, `enum`, a property map's names, and the keys
    /// of one schema object. `Err` when the value is not one of them.
    pub(super) fn schema_loop(
        &mut self,
        f: &ast::ForLoop<'_>,
        target: &str,
        iter: Val,
        line: usize,
    ) -> Result<(), Untranslatable> {
        let Val::Go(g, kind) = iter else { bail!(line, "loop over {}", describe(&iter)) };
        match kind {
            // A tool-call argument that is a list (under `is sequence`): its items.
            Kind::StrList | Kind::JsonList | Kind::ArgValue => {
                let item = if kind == Kind::StrList { Kind::Str } else { Kind::ArgValue };
                let (index, var) = (self.fresh(), format!("${}", go_var(target)));
                self.loops.push(LoopCtx {
                    iter: g.clone(),
                    index: index.clone(),
                    target: target.to_string(),
                    expr: var.clone(),
                    prev: None,
                    kind: item,
                });
                self.out.push_str(&format!("{{{{ range {index}, {var} := {g} }}}}"));
                let r = self.schema_loop_body(f, line);
                self.loops.pop();
                r?;
                self.schema_loop_else(f)
            }
            Kind::Props => self.map_loop(f, &g, &[target], line),
            Kind::Params | Kind::Prop | Kind::ToolFunction => {
                // The keys of one object: unrolled over the fields Ollama keeps.
                if mentions(&f.body, "loop") || mentions_loop_control(&f.body) || !f.else_body.is_empty() {
                    bail!(line, "loop over the keys of a tool schema using loop, break, continue or else");
                }
                let fields = match kind {
                    Kind::Params => PARAMS_FIELDS,
                    Kind::Prop => PROP_FIELDS,
                    _ => FUNCTION_FIELDS,
                };
                self.note(NOTE_PRESENCE);
                for (key, _, _) in fields {
                    let Some(Val::Go(field, _)) = self.schema_attr(&g, kind, key, line)? else { continue };
                    let r = self.with_bound(target, Val::Str(key.to_string()), |t| {
                        let c = match &f.filter_expr {
                            Some(fe) => t.cond(fe, line)?,
                            None => "true".to_string(),
                        };
                        if c == "false" {
                            return Ok(());
                        }
                        t.out.push_str(&format!("{{{{ if {field} }}}}"));
                        if c != "true" {
                            t.out.push_str(&format!("{{{{ if {c} }}}}"));
                        }
                        t.stmts_block(&f.body)?;
                        if c != "true" {
                            t.out.push_str("{{ end }}");
                        }
                        t.out.push_str("{{ end }}");
                        Ok(())
                    });
                    r?;
                }
                Ok(())
            }
            _ => bail!(line, "loop over a {kind:?} value"),
        }
    }

    fn schema_loop_body(&mut self, f: &ast::ForLoop<'_>, line: usize) -> Result<(), Untranslatable> {
        if let Some(fe) = &f.filter_expr {
            if mentions(&f.body, "loop") {
                bail!(line, "loop variable in a filtered loop");
            }
            let c = self.cond(fe, line)?;
            self.out.push_str(&format!("{{{{ if {c} }}}}"));
            self.stmts_block(&f.body)?;
            self.out.push_str("{{ end }}");
            Ok(())
        } else {
            self.stmts_block(&f.body)
        }
    }

    fn schema_loop_else(&mut self, f: &ast::ForLoop<'_>) -> Result<(), Untranslatable> {
        if !f.else_body.is_empty() {
            self.out.push_str("{{ else }}");
            self.stmts_block(&f.else_body)?;
        }
        self.out.push_str("{{ end }}");
        Ok(())
    }

    /// A loop over a property map: names (and properties) in Go's sorted order; `loop.first`,
    /// `loop.last`, `loop.index0`, `loop.index` and `loop.length` from a counter string.
    pub(super) fn map_loop(
        &mut self,
        f: &ast::ForLoop<'_>,
        g: &str,
        names: &[&str],
        line: usize,
    ) -> Result<(), Untranslatable> {
        if mentions_loop_control(&f.body) || f.filter_expr.is_some() && mentions(&f.body, "loop") {
            bail!(line, "loop over tool properties using break, continue, or loop with a filter");
        }
        self.note(NOTE_ORDER);
        let counter = self.fresh();
        let k = format!("${}", go_var(names[0]));
        let v = match names.get(1) {
            Some(n) => format!("${}", go_var(n)),
            None => "$_".to_string(),
        };
        let depth = self.loops.len();
        for (name, expr, kind) in
            [(names[0], &k, Kind::Str)].into_iter().chain(names.get(1).map(|n| (*n, &v, Kind::Prop)))
        {
            self.loops.push(LoopCtx {
                iter: g.to_string(),
                index: counter.clone(),
                target: name.to_string(),
                expr: expr.clone(),
                prev: None,
                kind,
            });
        }
        self.map_counters.insert(counter.clone());
        self.out.push_str(&format!("{{{{ {counter} := \"\" }}}}{{{{ range {k}, {v} := {g} }}}}"));
        let r = self.schema_loop_body(f, line);
        self.out.push_str(&format!("{{{{ {counter} = print {counter} \"x\" }}}}"));
        self.loops.truncate(depth);
        r?;
        self.schema_loop_else(f)
    }

    /// `loop.*` in a loop over a property map (see [`map_loop`](Self::map_loop)).
    pub(super) fn map_loop_attr(&self, name: &str, line: usize) -> Result<Option<Val>, Untranslatable> {
        let Some(l) = self.loops.last() else { return Ok(None) };
        if !self.map_counters.contains(&l.index) {
            return Ok(None);
        }
        let (c, m) = (&l.index, &l.iter);
        Ok(Some(match name {
            "first" => Val::Go(format!("(eq (len {c}) 0)"), Kind::Bool),
            "last" => Val::Go(format!("(eq (len (print {c} \"x\")) (len {m}))"), Kind::Bool),
            "index0" => Val::Go(format!("(len {c})"), Kind::Int),
            "index" => Val::Go(format!("(len (print {c} \"x\"))"), Kind::Int),
            "length" => Val::Go(format!("(len {m})"), Kind::Int),
            other => bail!(line, "loop.{other} in a loop over tool properties"),
        }))
    }
}

/// A schema value as `json.dumps` writes it (`.` rebound with `with`).
fn schema_json(g: &str, kind: Kind) -> String {
    let strs = r#"[{{ range $k, $r := . }}{{ if $k }}, {{ end }}{{ printf "%q" $r }}{{ end }}]"#;
    let values = r#"[{{ range $k, $e := . }}{{ if $k }}, {{ end }}{{ if eq (printf "%T" $e) "string" }}{{ printf "%q" $e }}{{ else }}{{ json $e }}{{ end }}{{ end }}]"#;
    let body = match kind {
        Kind::StrList => strs.to_string(),
        Kind::JsonList => values.to_string(),
        Kind::Prop => PROP_JSON.replace("$p.", ".").replace("$p", "."),
        Kind::Props => PROPS_JSON.to_string(),
        _ => PARAMS_JSON.to_string(),
    };
    format!(
        "{{{{ with {} }}}}{body}{{{{ else }}}}{}{{{{ end }}}}",
        paren(g),
        if matches!(kind, Kind::Props | Kind::Prop | Kind::Params) { "{}" } else { "[]" }
    )
}

/// One property as `json.dumps` writes it (`$p` the property), in [`TOOL_JSON`]'s order.
const PROP_JSON: &str = r#"{"type": {{ json $p.Type }}{{ if $p.Description }}, "description": {{ printf "%q" $p.Description }}{{ end }}{{ if $p.Enum }}, "enum": [{{ range $k, $e := $p.Enum }}{{ if $k }}, {{ end }}{{ if eq (printf "%T" $e) "string" }}{{ printf "%q" $e }}{{ else }}{{ json $e }}{{ end }}{{ end }}]{{ end }}}"#;

/// A property map as `json.dumps` writes it (`.` the map).
const PROPS_JSON: &str = r#"{ {{- $first := true }}{{ range $name, $p := . }}{{ if not $first }}, {{ end }}{{ $first = false }}{{ printf "%q" $name }}: {"type": {{ json $p.Type }}{{ if $p.Description }}, "description": {{ printf "%q" $p.Description }}{{ end }}{{ if $p.Enum }}, "enum": [{{ range $k, $e := $p.Enum }}{{ if $k }}, {{ end }}{{ if eq (printf "%T" $e) "string" }}{{ printf "%q" $e }}{{ else }}{{ json $e }}{{ end }}{{ end }}]{{ end }}}{{ end }}}"#;

/// A tool's parameters as `json.dumps` writes them (`.` the parameters).
const PARAMS_JSON: &str = r#"{"type": {{ json .Type }}, "properties": { {{- $first := true }}{{ range $name, $p := .Properties }}{{ if not $first }}, {{ end }}{{ $first = false }}{{ printf "%q" $name }}: {"type": {{ json $p.Type }}{{ if $p.Description }}, "description": {{ printf "%q" $p.Description }}{{ end }}{{ if $p.Enum }}, "enum": [{{ range $k, $e := $p.Enum }}{{ if $k }}, {{ end }}{{ if eq (printf "%T" $e) "string" }}{{ printf "%q" $e }}{{ else }}{{ json $e }}{{ end }}{{ end }}]{{ end }}}{{ end }}}{{ if .Required }}, "required": [{{ range $k, $r := .Required }}{{ if $k }}, {{ end }}{{ printf "%q" $r }}{{ end }}]{{ end }}}"#;

/// Is this `tools` (the variable Ollama's `.Tools` stands for)?
fn is_tools(e: &Expr<'_>) -> bool {
    matches!(e, Expr::Var(v) if v.id == "tools")
}

/// `tools is not defined` (also written `not tools is defined`, `tools is undefined`), or
/// that `or tools is none`.
fn tools_undefined(e: &Expr<'_>) -> bool {
    match e {
        Expr::UnaryOp(u) if matches!(u.op, ast::UnaryOpKind::Not) => {
            matches!(&u.expr, Expr::Test(t) if t.name == "defined" && is_tools(&t.expr))
        }
        Expr::Test(t) => t.name == "undefined" && is_tools(&t.expr),
        Expr::BinOp(b) if matches!(b.op, ast::BinOpKind::ScOr) => {
            tools_undefined(&b.left) && matches!(&b.right, Expr::Test(t) if t.name == "none" && is_tools(&t.expr))
        }
        _ => false,
    }
}

impl Translator<'_> {
    /// `{% if tools is not defined %}{% set tools = none %}{% endif %}` (or `= []`): Ollama's
    /// `.Tools` is empty when no tools are offered, which every later use (loops, `|length`,
    /// truth, `selectattr`) treats as the default; only `is defined`/`is none` then answer
    /// differently, and [`schema_test`](Self::schema_test) answers them as Jinja would.
    pub(super) fn tools_default_if(&mut self, c: &ast::IfCond<'_>) -> bool {
        if !c.false_body.is_empty() || !tools_undefined(&c.expr) || self.vars.contains_key("tools") {
            return false;
        }
        let mut default = None;
        for s in &c.true_body {
            match s {
                Stmt::EmitRaw(r) if r.raw.trim().is_empty() => {}
                Stmt::Set(set) if is_tools(&set.target) => match &set.expr {
                    Expr::Const(k) if k.value.is_none() || k.value.is_undefined() => default = Some(true),
                    Expr::List(l) if l.items.is_empty() => default = Some(false),
                    _ => return false,
                },
                _ => return false,
            }
        }
        if !self.st.at_top() || self.tools_default.is_some_and(|d| Some(d) != default) {
            return false;
        }
        self.tools_default = default;
        default.is_some()
    }
}

/// The names a template tests with `x is defined` / `x is not defined` / `x is undefined`
/// (a textual over-approximation: only variables the template sets are affected).
pub(super) fn tested_defined(jinja: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let words: Vec<&str> = jinja.split(|c: char| !(c.is_alphanumeric() || c == '_')).collect();
    let mut rest = jinja;
    while let Some(p) = rest.find(" is ") {
        let before = &rest[..p];
        let after = rest[p + 4..].trim_start();
        let after = after.strip_prefix("not ").map(str::trim_start).unwrap_or(after);
        if after.starts_with("defined") || after.starts_with("undefined") {
            let name: String = before
                .chars()
                .rev()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            // Names the caller passes (defined even before the template sets them) keep the
            // tests of expr.rs.
            let context = [
                "messages",
                "tools",
                "documents",
                "add_generation_prompt",
                "bos_token",
                "eos_token",
                "enable_thinking",
            ];
            if !name.is_empty() && words.contains(&name.as_str()) && !context.contains(&name.as_str()) {
                out.insert(name);
            }
        }
        rest = &rest[p + 4..];
    }
    out
}

impl Translator<'_> {
    /// Name of the Go flag recording that a top-level variable was assigned.
    fn defined_flag(name: &str) -> String {
        format!("{name}__defined")
    }

    /// After an assignment to a top-level variable the template tests with `is defined`:
    /// set its flag (declared false at the top), so that a variable set only in some branches
    /// is defined exactly where Jinja's is.
    pub(super) fn mark_defined(&mut self, name: &str) {
        if name.contains('.') || !self.st.at_frames_top() || !self.tested_defined.contains(name) {
            return;
        }
        let flag = Self::defined_flag(name);
        self.vars.insert(flag.clone(), Kind::Bool);
        self.out.push_str(&format!("{{{{ ${} = true }}}}", go_var(&flag)));
    }

    /// `x is defined` / `x is undefined` of a top-level variable that has a flag.
    pub(super) fn defined_test(&mut self, t: &ast::Test<'_>, line: usize) -> Result<Option<Val>, Untranslatable> {
        let Expr::Var(v) = &t.expr else { return Ok(None) };
        if !matches!(t.name, "defined" | "undefined") || !self.st.at_frames_top() || self.loop_ctx(v.id).is_some() {
            return Ok(None);
        }
        let flag = Self::defined_flag(v.id);
        if !self.vars.contains_key(&flag) {
            return Ok(None);
        }
        if let Some(e) = self.poisoned.get(v.id) {
            return Err(Untranslatable { construct: e.construct.clone(), line });
        }
        let g = format!("${}", go_var(&flag));
        Ok(Some(if t.name == "defined" { Val::Go(g, Kind::Bool) } else { Val::Go(format!("(not {g})"), Kind::Bool) }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::render::chat::{Chat, Message};
    use super::super::super::render::go::{GoTemplate, Request};
    use super::super::super::render::jinja::{JinjaContext, JinjaTemplate};
    use super::*;

    /// Renders both sides on one conversation offering `tools` (JSON).
    fn both(t: &Translation, jinja: &str, tools: &str) -> (String, String) {
        let go = GoTemplate::parse(&t.template).unwrap_or_else(|e| panic!("{e}\n{}", t.template));
        let j = JinjaTemplate::parse(jinja).unwrap();
        let jctx = JinjaContext { bos_token: "<s>".into(), eos_token: "</s>".into(), ..Default::default() };
        let chat = Chat {
            messages: vec![Message::new("user", "hi")],
            tools: Some(serde_json::from_str(tools).unwrap()),
            ..Default::default()
        };
        (j.render(&chat, &jctx).unwrap(), go.render(&chat, &Request::default()).unwrap())
    }

    /// A richer tool than the built-in conversations offer: names given in sorted order,
    /// several optional fields, an integer enum, a nested object and an array.
    const RICH: &str = r#"[{"type": "function", "function": {"name": "book", "description": "Book a table",
        "parameters": {"type": "object", "properties": {
          "a_size": {"type": "integer", "description": " Party size ", "enum": [2, 4, 6]},
          "b_when": {"type": "string"},
          "c_where": {"type": "object", "description": "Place", "properties": {"city": {"type": "string"}}},
          "d_tags": {"type": "array", "items": {"type": "string"}}},
         "required": ["a_size", "c_where"]}}},
      {"type": "function", "function": {"name": "noop", "description": "Nothing",
        "parameters": {"type": "object", "properties": {}}}}]"#;

    const XML: &str = "{% for tool in tools %}<function><name>{{ tool.function.name }}</name>\
        {% if tool.function.parameters is defined and tool.function.parameters is mapping and tool.function.parameters.properties is mapping %}\
        {% for pname, pf in tool.function.parameters.properties|items %}{% if loop.first %}[{% endif %}<parameter name=\"{{ pname }}\" type=\"{{ pf.type | string }}\"\
        {% if pname in (tool.function.parameters.required or []) %} required{% endif %}>{% if pf.description is defined %}{{ pf.description | trim }}{% endif %}\
        {% if pf.enum %} enum={{ pf.enum | tojson }}|{{ pf.enum | length }}{% endif %}{% if pf['items'] is mapping %} items{% endif %}\
        {% for k in pf if k not in ['type', 'description', 'items'] %}<{{ k }}>{{ pf[k] | tojson }}</{{ k }}>{% endfor %}\
        {% if not loop.last %},{% else %}]{{ loop.index }}/{{ loop.length }}{% endif %}</parameter>{% endfor %}{% endif %}\
        {% for k in tool.function.parameters if k not in ['type', 'properties'] %}<{{ k }}>{{ tool.function.parameters[k] | tojson }}</{{ k }}>{% endfor %}\
        {% for r in tool.function.parameters.required %}{{ r }};{% endfor %}\
        </function>{% endfor %}{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}";

    #[test]
    fn parameters_read_field_by_field() {
        let t = crate::modelfile::translate::tests::check(XML);
        assert!(t.notes.iter().any(|n| n.contains("sorted order")), "{:?}", t.notes);
        let (want, got) = both(&t, XML, RICH);
        assert_eq!(got, want, "\n{}", t.template);
        assert!(want.contains("enum=[2, 4, 6]|3"), "{want}");
    }

    #[test]
    fn property_order_follows_go() {
        // The assumption the notes state: names out of order in the request come out sorted.
        let t = crate::modelfile::translate::tests::check(XML);
        let unsorted = RICH.replace("\"a_size\"", "\"z_size\"").replace("[\"z_size\"", "[\"a_size\"");
        let (want, got) = both(&t, XML, &unsorted);
        assert_ne!(got, want);
        assert!(got.find("c_where").unwrap() < got.find("z_size").unwrap(), "{got}");
    }

    #[test]
    fn keys_loop_and_dictsort_and_join() {
        let jinja = "{% for tool in tools %}{% for key, value in tool.function.parameters.properties | dictsort %}\
            {{ key }}={{ value['type'] }}{% if value['enum'] %}:{{ value['enum'] | join('|') }}{% endif %}\
            {% if 'description' in value %}({{ value.description }}){% endif %}{% if value.nullable %}?{% endif %}\
            {{ ',' if not loop.last }}{% endfor %}{% if 'type' in tool %}!{% endif %}{% endfor %}{% for m in messages %}{{ m.content }}{% endfor %}";
        let t = crate::modelfile::translate::tests::check(jinja);
        let (want, got) = both(&t, jinja, RICH);
        assert_eq!(got, want, "\n{}", t.template);
    }

    #[test]
    fn tools_defaulted_when_undefined() {
        let jinja = "{% if not tools is defined %}{% set tools = none %}{% endif %}\
            {% set code = tools | selectattr('type', 'equalto', 'code_interpreter') | list | length > 0 %}\
            {% if tools is none %}NONE{% endif %}{% if tools is defined %}DEF{% endif %}{% if tools %}T{% endif %}\
            {% for m in messages %}{{ m.content }}{% endfor %}";
        let t = crate::modelfile::translate::tests::check(jinja);
        assert!(t.template.contains("(not $.Tools)"), "{}", t.template);
    }

    #[test]
    fn macro_rebinds_its_loop_name_and_braces_before_actions() {
        // `set tool = tool.function` inside a macro reads the loop's `tool`; `{` written just
        // before an action must not form `{{`; `if tool.function` is always true.
        let jinja = "{%- macro ns(tools) -%}{%- for tool in tools %}{% if tool.get('function') %}{%- set tool = tool.function %}{% endif %}\
            type {{ tool.name }} = (_: {{ '{' }}{% for k, p in tool.parameters.properties.items() %}{{ k }}: {{ p.type }}{% endfor %}}{% endfor %}\
            {%- endmacro -%}{% if tools %}{{ ns(tools) }}{% endif %}{% for m in messages %}{{ m.content }}{% endfor %}";
        let t = crate::modelfile::translate::tests::check(jinja);
        let (want, got) = both(&t, jinja, RICH);
        assert_eq!(got, want, "\n{}", t.template);
        assert!(want.contains("type book = (_: {a_size: integer"), "{want}");
    }
}

#[cfg(test)]
mod defined_tests {
    #[test]
    fn variables_set_in_one_branch_are_defined_only_there() {
        let jinja = "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] %}\
            {%- set loop_messages = messages[1:] %}{%- else %}{%- set loop_messages = messages %}{%- endif %}\
            {%- if system_message is defined %}<sys>{{ system_message }}</sys>{% endif %}\
            {%- if system_message is not defined %}<none>{% endif %}\
            {%- for m in loop_messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}";
        let t = crate::modelfile::translate::tests::check(jinja);
        assert!(t.template.contains("$j_system_message__defined"), "{}", t.template);
        assert_eq!(super::tested_defined("{% if a is defined and b is not defined or c is undefined %}").len(), 3);
    }
}

#[cfg(test)]
mod text_tests {
    #[test]
    fn text_never_joins_into_delimiters() {
        let t = crate::modelfile::translate::tests::check(
            "{% for m in messages %}{\"{{ m.role }}\": \"\"\"{{ m.content }}\"\"\"}{{ '{' }}{{ '{' }}{{ m.content }}{% endfor %}",
        );
        assert!(!t.template.contains("\"\"\""), "{}", t.template);
        assert!(!t.template.contains("{{{"), "{}", t.template);
    }
}

#[cfg(test)]
mod argument_tests {
    use super::super::super::render::chat::{Chat, FunctionCall, Message, ToolCall};
    use super::super::super::render::go::{GoTemplate, Request};
    use super::super::super::render::jinja::{JinjaContext, JinjaTemplate};

    #[test]
    fn nested_arguments_loop_as_maps_and_lists() {
        let jinja = "{% for m in messages %}{{ m.content }}{% for tc in m.tool_calls %}{{ tc.function.name }}(\
            {% for k, v in tc.function.arguments | dictsort %}{{ k }}=\
            {% if v is mapping %}{{ '{' }}{% for k2, v2 in v | dictsort %}{{ k2 }}:{{ v2 }};{% endfor %}}\
            {% elif v is sequence and v is not string %}[{% for x in v %}{{ x }},{% endfor %}]{% else %}{{ v }}{% endif %} {% endfor %})\
            {% endfor %}{% endfor %}";
        let t = crate::modelfile::translate::tests::check(jinja);
        let mut call = Message::new("assistant", "");
        let args = serde_json::json!({"b": {"y": "2", "x": "1"}, "a": ["p", "q"], "c": "s"});
        call.tool_calls = vec![ToolCall {
            id: "1".into(),
            kind: "function".into(),
            function: FunctionCall { index: None, name: "f".into(), arguments: args.as_object().cloned().unwrap() },
        }];
        let chat = Chat { messages: vec![Message::new("user", "hi"), call], ..Default::default() };
        let want = JinjaTemplate::parse(jinja)
            .unwrap()
            .render(&chat, &JinjaContext { bos_token: "<s>".into(), eos_token: "</s>".into(), ..Default::default() })
            .unwrap();
        let got = GoTemplate::parse(&t.template).unwrap().render(&chat, &Request::default()).unwrap();
        assert_eq!(got, want, "\n{}", t.template);
        assert!(want.contains("a=[p,q,] b={x:1;y:2;} c=s"), "{want}");
    }
}
