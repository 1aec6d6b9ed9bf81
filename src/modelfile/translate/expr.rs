//! Expressions: conditions, variables and attributes of Ollama's data, operators, filters,
//! tests and calls.

use minijinja::machinery::ast::{self, CallArg, Expr};

use super::*;

impl Translator<'_> {
    /// A condition as a Go pipeline (no surrounding braces).
    pub(super) fn cond(&mut self, e: &Expr<'_>, line: usize) -> Result<String, Untranslatable> {
        let v = self.expr(e)?;
        self.truth(v, line)
    }

    pub(super) fn truth(&mut self, v: Val, line: usize) -> Result<String, Untranslatable> {
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
            Val::Fragment(_) => bail!(line, "testing captured output (a macro's or a set block's)"),
        })
    }

    pub(super) fn loop_ctx(&self, name: &str) -> Option<&LoopCtx> {
        self.loops.iter().rev().find(|l| l.target == name)
    }

    pub(super) fn expr(&mut self, e: &Expr<'_>) -> Result<Val, Untranslatable> {
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
                    None => Val::Int(0),
                    Some(x) => self.expr(x)?,
                };
                if s.stop.is_some() {
                    bail!(line, "slice with an end");
                }
                match base {
                    Val::Go(g, k @ (Kind::Messages | Kind::Tools | Kind::ToolCalls)) => {
                        Ok(Val::Go(self.slice_from(&g, start, line)?, k))
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

    pub(super) fn loop_ctx_any(&self) -> Option<&LoopCtx> {
        self.loops.last()
    }

    pub(super) fn lookup_user_var(&self, name: &str) -> Option<Kind> {
        self.vars.get(name).copied()
    }

    pub(super) fn loop_attr(&mut self, name: &str, line: usize) -> Result<Val, Untranslatable> {
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

    pub(super) fn var(&mut self, id: &str, line: usize) -> Result<Val, Untranslatable> {
        if let Some(v) = self.bound_var(id, line)? {
            return Ok(v);
        }
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

    pub(super) fn attr(&mut self, base: Val, name: &str, line: usize) -> Result<Val, Untranslatable> {
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

    pub(super) fn index(&mut self, base: Val, i: i64, line: usize) -> Result<Val, Untranslatable> {
        match base {
            Val::Go(g, k @ (Kind::Messages | Kind::ToolCalls | Kind::Tools)) if i >= 0 => {
                let item = match k {
                    Kind::Messages => Kind::Message,
                    Kind::ToolCalls => Kind::ToolCall,
                    _ => Kind::Tool,
                };
                Ok(Val::Go(format!("(index {g} {i})"), item))
            }
            // messages[-k]: Go has no arithmetic, but `slice X k` is k shorter than X.
            Val::Go(g, Kind::Messages) => Ok(Val::Go(format!("(index {g} (len (slice {g} {})))", -i), Kind::Message)),
            // An item of a constant list (unrolled loops over pairs).
            Val::List(mut items) if i >= 0 && (i as usize) < items.len() => Ok(items.swap_remove(i as usize)),
            other => bail!(line, "item {i} of {}", describe(&other)),
        }
    }

    pub(super) fn binop(&mut self, b: &ast::BinOp<'_>, line: usize) -> Result<Val, Untranslatable> {
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
                            Val::Str(_)
                            | Val::Undefined
                            | Val::Go(_, Kind::Str | Kind::Undefined)
                            | Val::Fragment(_) => parts.push(v),
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
    pub(super) fn int_pair(&mut self, l: Val, r: Val, line: usize) -> Result<(String, String), Untranslatable> {
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

    pub(super) fn equal(&mut self, l: Val, r: Val, line: usize) -> Result<Val, Untranslatable> {
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

    pub(super) fn filter(&mut self, f: &ast::Filter<'_>, line: usize) -> Result<Val, Untranslatable> {
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
                    Val::Go(g, Kind::ArgValue) => Ok(self.raw_go(format!(
                        "{{{{ if eq (slice (json {g}) 0 1) \"\\\"\" }}}}{{{{ printf \"%q\" {g} }}}}{{{{ else }}}}{{{{ json {g} }}}}{{{{ end }}}}"
                    ))),
                    Val::Str(s) => Ok(Val::Str(serde_json::to_string(&s).unwrap_or_default())),
                    other => bail!(line, "|tojson of {}", describe(&other)),
                }
            }
            other => bail!(line, "filter |{other}"),
        }
    }

    /// A piece of Go template text to be printed as is (only valid in printing context).
    pub(super) fn raw_go(&mut self, text: String) -> Val {
        Val::Raw(text)
    }

    pub(super) fn test(&mut self, t: &ast::Test<'_>, line: usize) -> Result<Val, Untranslatable> {
        let v = self.expr(&t.expr)?;
        if let Val::Go(g, Kind::ArgValue) = &v {
            return self.arg_value_test(g, t.name, line);
        }
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

    pub(super) fn call(&mut self, c: &ast::Call<'_>, line: usize) -> Result<Val, Untranslatable> {
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
            Expr::Var(v) if self.is_macro(v.id) => self.inline_macro(v.id, c, line),
            Expr::Var(v) => bail!(line, "function {}()", v.id),
            _ => bail!(line, "call"),
        }
    }
}
