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
            // A tool and its function always have a name: never empty (tools.rs).
            Val::Go(_, Kind::Tool | Kind::ToolFunction) => "true".into(),
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
            Val::Dict(d) => (!d.is_empty()).to_string(),
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
                if let Some(v) = self.attr_of_char(a)? {
                    return Ok(v);
                }
                let base = self.expr(&a.expr)?;
                self.attr(base, a.name, line)
            }
            Expr::GetItem(g) => {
                // `s.split(sep)[k]`: one part, without the list.
                if let Expr::Call(c) = &g.expr {
                    if let Expr::GetAttr(a) = &c.expr {
                        if a.name == "split" {
                            let Some(CallArg::Pos(Expr::Const(sep))) = c.args.first() else {
                                bail!(line, "method .split() with a computed or no separator")
                            };
                            let Some(sep) = sep.value.as_str().map(str::to_string) else {
                                bail!(line, "method .split() with a non-string separator")
                            };
                            let limit = match c.args.get(1) {
                                None => None,
                                Some(CallArg::Pos(l)) => match self.expr(l)? {
                                    Val::Int(-1) => None,
                                    Val::Int(n) if n >= 0 => Some(n),
                                    _ => bail!(line, "method .split() with a computed limit"),
                                },
                                Some(_) => bail!(line, "method .split() with keyword arguments"),
                            };
                            if c.args.len() > 2 {
                                bail!(line, "method .split() with extra arguments");
                            }
                            let Val::Int(k) = self.expr(&g.subscript_expr)? else {
                                bail!(line, "a computed item of .split()")
                            };
                            let hay = self.expr(&a.expr)?;
                            return self.split_item(hay, &sep, k, limit, line);
                        }
                    }
                }
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
                                _ => {
                                    let i = self.py_index(&iter, Val::IntOff(idx, off), line)?;
                                    Ok(Val::Go(format!("(index {iter} {i})"), Kind::Message))
                                }
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
                    sub => match self.schema_item(&base, &sub, line)? {
                        Some(v) => Ok(v),
                        None => bail!(line, "subscript"),
                    },
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
                // An end, a negative start or a start computed with an offset: Python's slice rules,
                // which clamp to the list (loops.rs).
                if s.stop.is_some() || matches!(start, Val::IntOff(..) | Val::Int(i64::MIN..=-1)) {
                    let stop = match &s.stop {
                        Some(x) => Some(self.expr(x)?),
                        None => None,
                    };
                    return match base {
                        Val::Go(g, k @ (Kind::Messages | Kind::Tools | Kind::ToolCalls)) => {
                            Ok(Val::Go(self.py_slice(&g, Some(start), stop, line)?, k))
                        }
                        other => bail!(line, "slice of {}", describe(&other)),
                    };
                }
                match base {
                    Val::Go(g, k @ (Kind::Messages | Kind::Tools | Kind::ToolCalls)) => {
                        Ok(Val::Go(self.slice_from(&g, start, line)?, k))
                    }
                    Val::Go(g, Kind::SplitParts) => self.split_slice(&g, start, line),
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
                // A condition known here (`x.function if x.function is defined else x`).
                match (c.as_str(), &ie.false_expr) {
                    ("true", _) => return self.expr(&ie.true_expr),
                    ("false", Some(f)) => return self.expr(f),
                    ("false", None) => return Ok(Val::Undefined),
                    _ => {}
                }
                let t = self.expr(&ie.true_expr)?;
                let f = match &ie.false_expr {
                    Some(f) => self.expr(f)?,
                    None => Val::Undefined,
                };
                let printable = |v: &Val| {
                    is_text(v)
                        || matches!(
                            v,
                            Val::Raw(_) | Val::Fragment(_) | Val::Int(_) | Val::Go(_, Kind::ArgValue | Kind::Int)
                        )
                };
                if (!is_text(&t) || !is_text(&f)) && printable(&t) && printable(&f) {
                    return self.printed_choice(&c, t, f, line);
                }
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
            Expr::Map(m) => self.dict_literal(m, line),
        }
    }

    pub(super) fn loop_ctx_any(&self) -> Option<&LoopCtx> {
        self.loops.last()
    }

    pub(super) fn lookup_user_var(&self, name: &str) -> Option<Kind> {
        self.vars.get(name).copied()
    }

    pub(super) fn loop_attr(&mut self, name: &str, line: usize) -> Result<Val, Untranslatable> {
        if let Some(v) = self.map_loop_attr(name, line)? {
            return Ok(v);
        }
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
        if let Val::Go(g, Kind::MaybeMessage) = &base {
            return self.maybe_message_attr(g, name, line);
        }
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
            Val::Dict(d) => return Ok(values::dict_get(&d, name)),
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
            (k, n) => match self.schema_attr(&g, k, n, line)? {
                Some(v) => Ok(v),
                None => bail!(line, "attribute {n} of a {k:?}"),
            },
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
            Val::Go(g, k @ (Kind::ToolCalls | Kind::Tools)) => Ok(Val::Go(
                format!("(index {g} (len (slice {g} {})))", -i),
                if k == Kind::Tools { Kind::Tool } else { Kind::ToolCall },
            )),
            Val::Go(g, Kind::SplitParts) => self.split_index(&g, i, line),
            // An item of a constant list (unrolled loops over pairs).
            Val::List(mut items) if i >= 0 && (i as usize) < items.len() => Ok(items.swap_remove(i as usize)),
            other => bail!(line, "item {i} of {}", describe(&other)),
        }
    }

    pub(super) fn binop(&mut self, b: &ast::BinOp<'_>, line: usize) -> Result<Val, Untranslatable> {
        use ast::BinOpKind as K;
        let l = self.expr(&b.left)?;
        // Jinja short-circuits: a left side known here that decides `and`/`or` is the
        // value, and the right side is never evaluated (it need not even be translatable:
        // `content is not string and content[0].text`).
        if matches!(b.op, K::ScAnd | K::ScOr) && known_truth(&l) == Some(matches!(b.op, K::ScOr)) {
            return Ok(l);
        }
        let r = self.expr(&b.right)?;
        // Tool schemas (tools.rs): `x in required`, `'key' in tool`, `required or []`.
        if matches!(b.op, K::In) {
            if let Some(v) = self.schema_in(&l, &r, line)? {
                return Ok(v);
            }
        }
        if let (K::ScOr, Some(v)) = (b.op, self.schema_or(&l, &r)) {
            return Ok(v);
        }
        match b.op {
            K::Add | K::Concat => match (l, r) {
                (Val::Int(a), Val::Int(c)) => Ok(Val::Int(a + c)),
                (Val::IntOff(g, o), Val::Int(c)) | (Val::Int(c), Val::IntOff(g, o)) => Ok(Val::IntOff(g, o + c)),
                (Val::Go(g, Kind::Int), Val::Int(c)) | (Val::Int(c), Val::Go(g, Kind::Int)) => Ok(Val::IntOff(g, c)),
                (l @ (Val::IntOff(..) | Val::Go(_, Kind::Int)), r @ (Val::IntOff(..) | Val::Go(_, Kind::Int))) => {
                    self.int_add(l, r, line)
                }
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
                            // `~` prints a number; Go's print writes an int the same way.
                            Val::Go(g, Kind::Int) if matches!(b.op, K::Concat) => {
                                parts.push(Val::Go(format!("(print {g})"), Kind::Str))
                            }
                            // JSON text (`x | tojson`) is a string in Jinja; printed in place.
                            v @ Val::Raw(_) => parts.push(v),
                            // Jinja's `+` fails unless the argument is a string: where it
                            // renders, printing the value is the same.
                            Val::Go(g, Kind::ArgValue) if matches!(b.op, K::Add) => parts.push(Val::Go(g, Kind::Str)),
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
                (l, r) => self.int_sub(l, r, line),
            },
            K::ScAnd | K::ScOr => {
                // `tools or []`: the list itself (no items either way).
                if let (K::ScOr, Val::Go(g, k @ (Kind::Messages | Kind::Tools | Kind::ToolCalls)), Val::List(items)) =
                    (b.op, &l, &r)
                {
                    if items.is_empty() {
                        return Ok(Val::Go(format!("(or {g} (slice {g} 0 0))"), *k));
                    }
                }
                // On strings Jinja's `a or b` is a value (the first non-empty one): so is Go's.
                if is_text(&l) && is_text(&r) {
                    return self.text_and_or(matches!(b.op, K::ScOr), l, r, line);
                }
                if let Some(v) = self.known_and_or(matches!(b.op, K::ScOr), &l, &r) {
                    return Ok(v);
                }
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
                r if is_text(&r) => self.text_contains(r, l, line),
                Val::Go(m, Kind::Message) => self.has_key(&m, l, line),
                Val::Dict(d) => self.dict_has(&d, &l, line),
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
            // Both computed: the left side's offset moved to the right (loops.rs).
            _ => {
                let r = self.int_operand(Val::IntOff(rg, ro - lo), line)?;
                Ok((lg, r))
            }
        }
    }

    pub(super) fn equal(&mut self, l: Val, r: Val, line: usize) -> Result<Val, Untranslatable> {
        if let Some(v) = self.think_equal(&l, &r) {
            return Ok(v);
        }
        self.maybe_equal(&l, &r, line)?;
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
        if let Some(r) = self.schema_filter(f, &v, line)? {
            return Ok(r);
        }
        let v = match self.string_filter(f, v, line)? {
            Ok(r) => return Ok(r),
            Err(v) => v,
        };
        match f.name {
            "length" | "count" => match v {
                Val::Go(g, Kind::Messages | Kind::Tools | Kind::ToolCalls | Kind::Selected) => {
                    Ok(Val::Go(format!("(len {g})"), Kind::Int))
                }
                Val::Undefined => Ok(Val::Int(0)),
                Val::Str(s) => Ok(Val::Int(s.chars().count() as i64)),
                Val::List(l) => Ok(Val::Int(l.len() as i64)),
                Val::Dict(d) => Ok(Val::Int(d.len() as i64)),
                other => bail!(line, "|length of {}", describe(&other)),
            },
            "trim" => {
                if !f.args.is_empty() {
                    bail!(line, "|trim with characters");
                }
                match v {
                    Val::Str(s) => Ok(Val::Str(s.trim().to_string())),
                    Val::Undefined => Ok(Val::Str(String::new())),
                    v => self.strip(v, true, true, None, line),
                }
            }
            "string" | "safe" | "e" | "escape" if f.args.is_empty() => match v {
                v @ (Val::Str(_) | Val::Go(_, Kind::Str) | Val::Concat(_) | Val::Undefined) => Ok(v),
                Val::Int(i) => Ok(Val::Str(i.to_string())),
                Val::Go(g, Kind::Int) if matches!(f.name, "string") => Ok(Val::Go(format!("(print {g})"), Kind::Str)),
                v @ Val::Raw(_) if matches!(f.name, "string" | "safe") => Ok(v),
                other => bail!(line, "|{} of {}", f.name, describe(&other)),
            },
            "default" | "d" => {
                let Some(CallArg::Pos(d)) = f.args.first() else { bail!(line, "|default without a value") };
                match v {
                    Val::Undefined => self.expr(d),
                    Val::Go(ref g, Kind::Str) if self.vals.maybe.contains_key(g) => {
                        bail!(line, "|default of a field of a message that may be none")
                    }
                    Val::Go(ref g, Kind::Bool) if g == "$.Think" => {
                        let d = self.expr(d)?;
                        self.think_default(d, line)
                    }
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
                    Val::Go(g, Kind::ToolFunction) => {
                        let g = g.strip_suffix(".Function").unwrap_or(&g).to_string();
                        Ok(self.raw_go(format!("{{{{ with {} }}}}{}{{{{ end }}}}", paren(&g), function_json())))
                    }
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
            "list" if f.args.is_empty() => match v {
                v @ (Val::List(_) | Val::Go(_, Kind::Messages | Kind::Tools | Kind::ToolCalls | Kind::Selected)) => {
                    Ok(v)
                }
                Val::Undefined => Ok(Val::List(Vec::new())),
                other => bail!(line, "|list of {}", describe(&other)),
            },
            "first" if f.args.is_empty() => match v {
                Val::List(l) => Ok(l.into_iter().next().unwrap_or(Val::Undefined)),
                v @ Val::Go(_, Kind::Messages | Kind::Tools | Kind::ToolCalls) => {
                    let (g, k) = self.operand(v, line)?;
                    let item = match k {
                        Kind::Messages => Kind::Message,
                        Kind::Tools => Kind::Tool,
                        _ => Kind::ToolCall,
                    };
                    if item != Kind::Message {
                        bail!(line, "|first of a {k:?} value");
                    }
                    Ok(Val::Go(format!("(index {g} 0)"), item))
                }
                other => bail!(line, "|first of {}", describe(&other)),
            },
            "selectattr" | "rejectattr" => self.select_tools(f, v, line),
            "items" if f.args.is_empty() => match v {
                v @ Val::Go(_, Kind::Arguments) => Ok(v),
                other => bail!(line, "|items of {}", describe(&other)),
            },
            "upper" | "lower" | "capitalize" | "title" if f.args.is_empty() => match v {
                Val::Str(s) => Ok(Val::Str(case(&s, f.name))),
                _ => bail!(line, "filter |{}", f.name),
            },
            "int" if f.args.is_empty() => self.int_filter(v, line),
            other => bail!(line, "filter |{other}"),
        }
    }

    /// A piece of Go template text to be printed as is (only valid in printing context).
    pub(super) fn raw_go(&mut self, text: String) -> Val {
        Val::Raw(text)
    }

    pub(super) fn test(&mut self, t: &ast::Test<'_>, line: usize) -> Result<Val, Untranslatable> {
        if let Some(r) = self.defined_test(t, line)? {
            return Ok(r);
        }
        let v = self.expr(&t.expr)?;
        if let Some(r) = self.schema_test(&v, t.name, line)? {
            return Ok(r);
        }
        if let Val::Go(g, Kind::ArgValue) = &v {
            return self.arg_value_test(g, t.name, line);
        }
        if matches!(v, Val::Relative { .. }) && matches!(t.name, "defined" | "undefined") {
            return self.neighbour_defined(v, t.name == "defined", line);
        }
        if let Some(r) = self.maybe_test(&v, t.name, line) {
            return r;
        }
        if let Some(r) = self.list_test(&v, t.name) {
            return Ok(r);
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
        if let Val::Go(g, Kind::ArgValue) = &v {
            // The argument's dynamic type decides (Go's %T of a decoded JSON value).
            return Ok(match t.name {
                "defined" => Val::Bool(true),
                "undefined" => Val::Bool(false),
                "string" => Val::Go(format!("(eq (printf \"%T\" {g}) \"string\")"), Kind::Bool),
                "mapping" => Val::Go(format!("(eq (printf \"%T\" {g}) \"map[string]interface {{}}\")"), Kind::Bool),
                other => bail!(line, "test `is {other}` of a tool-call argument"),
            });
        }
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
            "mapping" => Ok(Val::Bool(matches!(
                v,
                Val::Dict(_) | Val::Go(_, Kind::Message | Kind::Tool | Kind::ToolCall | Kind::Arguments)
            ))),
            "iterable" | "sequence" => Ok(Val::Bool(matches!(
                v,
                Val::Str(_)
                    | Val::List(_)
                    | Val::Dict(_)
                    | Val::Go(_, Kind::Str | Kind::Messages | Kind::Tools | Kind::ToolCalls)
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
                    "upper" | "lower" if strings::is_data_text(&base) => {
                        self.string_method(base, a.name, &c.args, line)
                    }
                    "strip" | "lstrip" | "rstrip" | "replace" | "startswith" | "endswith"
                        if matches!(base, Val::Fragment(_) | Val::Raw(_)) =>
                    {
                        let base = self.fragment_value(base);
                        self.str_method(base, a.name, &c.args, line)
                    }
                    "startswith" | "endswith" | "replace" | "upper" | "lower" | "capitalize" | "title" | "strip"
                    | "lstrip" | "rstrip" => self.str_method(base, a.name, &c.args, line),
                    "items" if c.args.is_empty() => match base {
                        v @ Val::Go(_, Kind::Arguments) => Ok(v),
                        other => bail!(line, ".items() of {}", describe(&other)),
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
                    other => self.string_method(base, other, &c.args, line),
                }
            }
            Expr::Var(v) if self.is_macro(v.id) => self.inline_macro(v.id, c, line),
            Expr::Var(v) => bail!(line, "function {}()", v.id),
            _ => bail!(line, "call"),
        }
    }
}

/// A string-valued expression: a constant, text from Ollama's data, a concatenation, or
/// undefined (which prints and tests as the empty string).
pub(super) fn is_text(v: &Val) -> bool {
    matches!(v, Val::Str(_) | Val::Undefined | Val::Concat(_) | Val::Go(_, Kind::Str | Kind::Undefined))
}

/// Go names of one scan (see [`Translator::scan`]).
pub(super) struct Scan {
    /// The scanned string.
    pub s: String,
    /// The byte position (inside `on_match`: where the occurrence starts).
    pub i: String,
    /// Where the text after the previous occurrence starts (0 before the first); after the
    /// loop, where the text after the last one starts.
    pub from: String,
    /// One `x` per occurrence found so far (Go has no arithmetic: a count is a length).
    pub count: String,
}

impl Translator<'_> {
    /// `a or b` / `a and b` on strings: Go's `or`/`and` return an operand, as Jinja's do.
    pub(super) fn text_and_or(&mut self, or: bool, l: Val, r: Val, line: usize) -> Result<Val, Untranslatable> {
        if let Val::Str(s) = &l {
            return Ok(match (or, s.is_empty()) {
                (true, false) | (false, true) => l,
                _ => r,
            });
        }
        let (a, _) = self.operand(l, line)?;
        let (b, _) = self.operand(r, line)?;
        Ok(Val::Go(format!("({} {a} {b})", if or { "or" } else { "and" }), Kind::Str))
    }

    /// Writes Go code that finds the non-overlapping occurrences of `needle` in `hay` from the
    /// left (as Python's `str.split`, `str.replace` and `in` do), running `on_match` at each.
    /// Go templates have no string functions, so this ranges over the byte positions (Go 1.22+
    /// ranges over an integer) and compares `slice`s; a match can only start on a character
    /// boundary since the needle is valid UTF-8. The occurrence's remaining bytes are skipped
    /// by consuming a string of that length (`slice $skip 1`), the count is a string's length.
    pub(super) fn scan(
        &mut self,
        hay: Val,
        needle: &str,
        on_match: impl Fn(&Scan) -> String,
        line: usize,
    ) -> Result<Scan, Untranslatable> {
        self.scan_limited(hay, needle, None, on_match, line)
    }

    /// [`scan`](Self::scan) stopping after `limit` occurrences (Python's `maxsplit`).
    pub(super) fn scan_limited(
        &mut self,
        hay: Val,
        needle: &str,
        limit: Option<i64>,
        on_match: impl Fn(&Scan) -> String,
        line: usize,
    ) -> Result<Scan, Untranslatable> {
        if needle.is_empty() || needle.contains('\u{fffd}') {
            bail!(line, "searching for {needle:?} in a string");
        }
        let (hay, _) = self.operand(hay, line)?;
        let sc = Scan { s: self.fresh(), i: self.fresh(), from: self.fresh(), count: self.fresh() };
        let (skip, pend, t) = (self.fresh(), self.fresh(), self.fresh());
        let n = needle.len();
        let rest = go_quote(&"x".repeat(n - 1));
        let body = on_match(&sc);
        let Scan { s, i, from, count } = &sc;
        self.out.push_str(&format!(
            "{{{{ {s} := {hay} }}}}{{{{ {count} := \"\" }}}}{{{{ {from} := 0 }}}}{{{{ {pend} := false }}}}{{{{ {skip} := \"\" }}}}\
             {{{{ range {i} := len {s} }}}}{{{{ if {skip} }}}}{{{{ {skip} = slice {skip} 1 }}}}{{{{ else }}}}\
             {{{{ if {pend} }}}}{{{{ {from} = {i} }}}}{{{{ {pend} = false }}}}{{{{ end }}}}\
             {{{{ {t} := slice {s} {i} }}}}{{{{ if and {more}(ge (len {t}) {n}) (eq (slice {t} 0 {n}) {q}) }}}}{body}\
             {{{{ {count} = print {count} \"x\" }}}}{{{{ {skip} = {rest} }}}}{{{{ {pend} = true }}}}{{{{ end }}}}{{{{ end }}}}{{{{ end }}}}\
             {{{{ if {pend} }}}}{{{{ {from} = len {s} }}}}{{{{ end }}}}",
            q = go_quote(needle),
            more = match limit {
                Some(m) => format!("(lt (len {count}) {m}) "),
                None => String::new(),
            }
        ));
        Ok(sc)
    }

    /// `needle in hay` on strings.
    pub(super) fn text_contains(&mut self, hay: Val, needle: Val, line: usize) -> Result<Val, Untranslatable> {
        let needle = match needle {
            Val::Str(s) => s,
            other => bail!(line, "`in` with {} as the needle", describe(&other)),
        };
        match &hay {
            Val::Str(h) => return Ok(Val::Bool(h.contains(&needle))),
            Val::Undefined => return Ok(Val::Bool(false)),
            _ if needle.is_empty() => return Ok(Val::Bool(true)),
            _ => {}
        }
        let sc = self.scan(hay, &needle, |_| String::new(), line)?;
        Ok(Val::Go(format!("(ne (len {}) 0)", sc.count), Kind::Bool))
    }

    /// `s.split(sep)[k]` for a constant `k` (0, 1, ... or -1): the text between the
    /// occurrences. A `k` past the last part is an error in Jinja (not compared); empty here.
    pub(super) fn split_item(
        &mut self,
        hay: Val,
        sep: &str,
        k: i64,
        limit: Option<i64>,
        line: usize,
    ) -> Result<Val, Untranslatable> {
        if let Val::Str(h) = &hay {
            let parts: Vec<&str> = match limit {
                Some(n) => h.splitn(n as usize + 1, sep).collect(),
                None => h.split(sep).collect(),
            };
            let idx = if k < 0 { parts.len() as i64 + k } else { k };
            return match parts.get(idx as usize) {
                Some(p) if idx >= 0 && !sep.is_empty() => Ok(Val::Str(p.to_string())),
                _ => bail!(line, "split() item {k} of a constant"),
            };
        }
        if matches!(hay, Val::Undefined) {
            bail!(line, ".split() of an undefined value");
        }
        if k < -1 {
            bail!(line, "split() item {k}");
        }
        if matches!(limit, Some(n) if k > n) {
            bail!(line, "split() item {k} past the limit");
        }
        let r = self.fresh();
        self.out.push_str(&format!("{{{{ {r} := \"\" }}}}"));
        let sc = self.scan_limited(
            hay,
            sep,
            limit,
            |sc| {
                if k < 0 {
                    return String::new();
                }
                format!(
                    "{{{{ if eq (len {c}) {k} }}}}{{{{ {r} = slice {s} {f} {i} }}}}{{{{ end }}}}",
                    c = sc.count,
                    s = sc.s,
                    f = sc.from,
                    i = sc.i
                )
            },
            line,
        )?;
        // The last part runs from the end of the last occurrence.
        let last = if k < 0 { String::new() } else { format!("if eq (len {}) {k} ", sc.count) };
        if last.is_empty() {
            self.out.push_str(&format!("{{{{ {r} = slice {} {} }}}}", sc.s, sc.from));
        } else {
            self.out.push_str(&format!("{{{{ {last}}}}}{{{{ {r} = slice {} {} }}}}{{{{ end }}}}", sc.s, sc.from));
        }
        Ok(Val::Go(r, Kind::Str))
    }

    /// `s.replace(old, new)`.
    pub(super) fn replace(&mut self, hay: Val, old: &str, new: Val, line: usize) -> Result<Val, Untranslatable> {
        if let (Val::Str(h), Val::Str(n)) = (&hay, &new) {
            if !old.is_empty() {
                return Ok(Val::Str(h.replace(old, n)));
            }
        }
        match hay {
            Val::Undefined => bail!(line, ".replace() of an undefined value"),
            ref h if !is_text(h) => bail!(line, ".replace() of {}", describe(h)),
            _ => {}
        }
        if !is_text(&new) {
            bail!(line, ".replace() with {}", describe(&new));
        }
        let (new, _) = self.operand(new, line)?;
        let r = self.fresh();
        self.out.push_str(&format!("{{{{ {r} := \"\" }}}}"));
        let sc = self.scan(
            hay,
            old,
            |sc| format!("{{{{ {r} = print {r} (slice {} {} {}) {new} }}}}", sc.s, sc.from, sc.i),
            line,
        )?;
        self.out.push_str(&format!("{{{{ {r} = print {r} (slice {} {}) }}}}", sc.s, sc.from));
        Ok(Val::Go(r, Kind::Str))
    }

    /// `s.startswith(x)` / `s.endswith(x)` for a constant `x`.
    pub(super) fn affix(&mut self, hay: Val, x: &str, start: bool, line: usize) -> Result<Val, Untranslatable> {
        match &hay {
            Val::Str(h) => return Ok(Val::Bool(if start { h.starts_with(x) } else { h.ends_with(x) })),
            Val::Undefined => bail!(line, "a method of an undefined value"),
            h if !is_text(h) => bail!(line, "startswith/endswith of {}", describe(h)),
            _ if x.is_empty() => return Ok(Val::Bool(true)),
            _ => {}
        }
        if x.contains('\u{fffd}') {
            bail!(line, "startswith/endswith of {x:?}");
        }
        let (s, _) = self.operand(hay, line)?;
        let n = x.len();
        let q = go_quote(x);
        if start {
            return Ok(Val::Go(format!("(and (ge (len {s}) {n}) (eq (slice {s} 0 {n}) {q}))"), Kind::Bool));
        }
        // A suffix: some position where the rest equals x.
        let (v, f, i) = (self.fresh(), self.fresh(), self.fresh());
        self.out.push_str(&format!(
            "{{{{ {v} := {s} }}}}{{{{ {f} := false }}}}{{{{ range {i} := len {v} }}}}{{{{ if eq (slice {v} {i}) {q} }}}}{{{{ {f} = true }}}}{{{{ end }}}}{{{{ end }}}}"
        ));
        Ok(Val::Go(f, Kind::Bool))
    }
}

impl Translator<'_> {
    /// A method call's arguments, translated; keyword arguments are untranslatable.
    pub(super) fn method_args(
        &mut self,
        name: &str,
        args: &[CallArg<'_>],
        line: usize,
    ) -> Result<Vec<Val>, Untranslatable> {
        let mut vals = Vec::new();
        for a in args {
            match a {
                CallArg::Pos(e) => vals.push(self.expr(e)?),
                _ => bail!(line, "method .{name}() with keyword arguments"),
            }
        }
        Ok(vals)
    }

    /// Python string methods: evaluated here on constants; on data, the ones Go code can
    /// compute exactly (`startswith`, `endswith`, `replace` with a constant to find).
    pub(super) fn str_method(
        &mut self,
        base: Val,
        name: &str,
        args: &[CallArg<'_>],
        line: usize,
    ) -> Result<Val, Untranslatable> {
        let vals = self.method_args(name, args, line)?;
        let konst = |v: &Val| match v {
            Val::Str(s) => Some(s.clone()),
            _ => None,
        };
        match (name, vals.as_slice()) {
            ("startswith" | "endswith", [x]) => {
                let Some(x) = konst(x) else { bail!(line, "method .{name}() of a computed string") };
                self.affix(base, &x, name == "startswith", line)
            }
            ("replace", [old, new]) => {
                let Some(old) = konst(old) else { bail!(line, "method .replace() of a computed string") };
                self.replace_any(base, &old, new.clone(), line)
            }
            ("strip" | "lstrip" | "rstrip", [chars]) => match (&base, konst(chars)) {
                (Val::Str(s), Some(cs)) => {
                    let set = |c: char| cs.contains(c);
                    Ok(Val::Str(
                        match name {
                            "strip" => s.trim_matches(set),
                            "lstrip" => s.trim_start_matches(set),
                            _ => s.trim_end_matches(set),
                        }
                        .to_string(),
                    ))
                }
                (_, Some(cs)) => self.strip(base, name != "rstrip", name != "lstrip", Some(&cs), line),
                _ => bail!(line, "method .{name}() with computed characters"),
            },
            ("strip" | "lstrip" | "rstrip", []) => match base {
                Val::Str(s) => Ok(Val::Str(match name {
                    "strip" => s.trim().to_string(),
                    "lstrip" => s.trim_start().to_string(),
                    _ => s.trim_end().to_string(),
                })),
                v => self.strip(v, name != "rstrip", name != "lstrip", None, line),
            },
            ("upper" | "lower" | "capitalize" | "title", []) => match base {
                Val::Str(s) => Ok(Val::Str(case(&s, name))),
                Val::Undefined => bail!(line, "method .{name}() of an undefined value"),
                other => bail!(line, "method .{name}() of {}", describe(&other)),
            },
            _ => bail!(line, "method .{name}() with {} arguments", vals.len()),
        }
    }
}

/// Python's `str.upper/lower/capitalize/title` (and Jinja's filters of the same names).
pub(super) fn case(s: &str, how: &str) -> String {
    match how {
        "upper" => s.to_uppercase(),
        "lower" => s.to_lowercase(),
        "capitalize" => {
            let mut c = s.chars();
            match c.next() {
                Some(f) => f.to_uppercase().chain(c.flat_map(char::to_lowercase)).collect(),
                None => String::new(),
            }
        }
        _ => {
            // title: a letter after a non-letter starts a word.
            let mut out = String::new();
            let mut prev_letter = false;
            for ch in s.chars() {
                if ch.is_alphabetic() {
                    if prev_letter {
                        out.extend(ch.to_lowercase());
                    } else {
                        out.extend(ch.to_uppercase());
                    }
                    prev_letter = true;
                } else {
                    out.push(ch);
                    prev_letter = false;
                }
            }
            out
        }
    }
}

/// A tool's `function` object as `json.dumps` writes it: [`TOOL_JSON`] without the wrapper.
pub(super) fn function_json() -> &'static str {
    let inner = TOOL_JSON.strip_prefix(r#"{"type": "function", "function": "#).and_then(|t| t.strip_suffix('}'));
    inner.expect("TOOL_JSON wraps the function object")
}

impl Translator<'_> {
    /// `tools | selectattr("type", "equalto", "x")` (or `rejectattr`): every tool Ollama passes
    /// has the type "function", so the result is all of the tools or none.
    fn select_tools(&mut self, f: &ast::Filter<'_>, v: Val, line: usize) -> Result<Val, Untranslatable> {
        let mut args = Vec::new();
        for a in &f.args {
            match a {
                CallArg::Pos(e) => args.push(self.expr(e)?),
                _ => bail!(line, "|{} with keyword arguments", f.name),
            }
        }
        let select = f.name == "selectattr";
        let keep = match (&v, args.as_slice()) {
            (Val::Undefined, _) => return Ok(Val::List(Vec::new())),
            (Val::List(l), _) if l.is_empty() => return Ok(Val::List(Vec::new())),
            (Val::Go(_, Kind::Tools), [Val::Str(attr), Val::Str(test), Val::Str(want)])
                if attr == "type" && matches!(test.as_str(), "equalto" | "eq" | "==" | "sameas") =>
            {
                (want == "function") == select
            }
            (Val::Go(_, Kind::Tools), [Val::Str(attr)]) if attr == "type" => select,
            (Val::Go(_, Kind::Tools), [Val::Str(attr)]) if attr == "function" => select,
            (Val::Go(g, Kind::Messages), [Val::Str(attr), Val::Str(test), Val::Str(want)])
                if attr == "role" && matches!(test.as_str(), "equalto" | "eq" | "==" | "sameas") =>
            {
                // Counted as they are picked: a byte per message.
                let t = self.fresh();
                let cmp = if select { "eq" } else { "ne" };
                self.out.push_str(&format!(
                    "{{{{ {t} := \"\" }}}}{{{{ range {g} }}}}{{{{ if {cmp} .Role {} }}}}{{{{ {t} = print {t} \"x\" }}}}{{{{ end }}}}{{{{ end }}}}",
                    go_quote(want)
                ));
                return Ok(Val::Go(t, Kind::Selected));
            }
            _ => bail!(line, "|{} of {}", f.name, describe(&v)),
        };
        Ok(if keep { v } else { Val::List(Vec::new()) })
    }

    /// Go template text that prints (a JSON writer, a date) turned into a string value: the
    /// same code accumulating into a variable with `print` instead of writing, so that the
    /// text can be assigned, concatenated and compared. Returns the variable.
    pub(super) fn raw_value(&mut self, raw: &str) -> String {
        let acc = self.fresh();
        let mut out = format!("{{{{ {acc} := \"\" }}}}");
        let mut text = String::new();
        let mut rest = raw;
        let mut trim_next = false;
        let flush = |text: &mut String, out: &mut String| {
            if !text.is_empty() {
                out.push_str(&format!("{{{{ {acc} = print {acc} {} }}}}", go_quote(text)));
                text.clear();
            }
        };
        while let Some(open) = rest.find("{{") {
            let mut chunk = &rest[..open];
            if trim_next {
                chunk = chunk.trim_start();
            }
            let after = &rest[open + 2..];
            let (trim_before, after) = match after.strip_prefix("- ") {
                Some(a) => (true, a),
                None => (false, after),
            };
            if trim_before {
                chunk = chunk.trim_end();
            }
            text.push_str(chunk);
            let close = after.find("}}").unwrap_or(after.len());
            let mut inner = &after[..close];
            trim_next = false;
            if let Some(i) = inner.strip_suffix(" -") {
                inner = i;
                trim_next = true;
            }
            rest = after.get(close + 2..).unwrap_or("");
            let inner = inner.trim();
            let word = inner.split_whitespace().next().unwrap_or("");
            let control = matches!(word, "if" | "else" | "end" | "range" | "with" | "break" | "continue");
            let decl = word.starts_with('$') && {
                let mut w = inner.split_whitespace().skip(1);
                matches!(w.next(), Some(":=" | "="))
            };
            if inner.starts_with("/*") {
                continue;
            }
            flush(&mut text, &mut out);
            if control || decl {
                out.push_str(&format!("{{{{ {inner} }}}}"));
            } else {
                out.push_str(&format!("{{{{ {acc} = print {acc} ({inner}) }}}}"));
            }
        }
        let mut chunk = rest;
        if trim_next {
            chunk = chunk.trim_start();
        }
        text.push_str(chunk);
        flush(&mut text, &mut out);
        self.out.push_str(&out);
        acc
    }

    /// `s.strip()` / `lstrip` / `rstrip` (and `|trim`) on data, exactly: Go code walks the
    /// character starts (a byte below 0x80 or from 0xC0), decides whether each character is
    /// Python whitespace (`str.isspace`: ASCII 9-13 and 28-32, U+0085, U+00A0, U+1680,
    /// U+2000-U+200A, U+2028, U+2029, U+202F, U+205F, U+3000, told apart by their UTF-8
    /// bytes) or one of `chars` (ASCII only), and slices from the first kept character to the
    /// end of the last one.
    pub(super) fn strip(
        &mut self,
        v: Val,
        left: bool,
        right: bool,
        chars: Option<&str>,
        line: usize,
    ) -> Result<Val, Untranslatable> {
        if !is_text(&v) {
            bail!(line, "trimming {}", describe(&v));
        }
        let (src, _) = self.operand(v, line)?;
        let [s, i, c, t, a, b, keep, r] = [(); 8].map(|_| self.fresh());
        let ws = match chars {
            None => format!(
                "(or (eq {c} 32) (and (ge {c} 9) (le {c} 13)) (and (ge {c} 28) (le {c} 31)) \
                 (and (eq {c} 194) (or (eq (index {t} 1) 133) (eq (index {t} 1) 160))) \
                 (and (eq {c} 225) (eq (index {t} 1) 154) (eq (index {t} 2) 128)) \
                 (and (eq {c} 226) (or (and (eq (index {t} 1) 128) (or (le (index {t} 2) 138) (eq (index {t} 2) 168) (eq (index {t} 2) 169) (eq (index {t} 2) 175))) (and (eq (index {t} 1) 129) (eq (index {t} 2) 159)))) \
                 (and (eq {c} 227) (eq (index {t} 1) 128) (eq (index {t} 2) 128)))"
            ),
            Some(cs) if cs.is_ascii() => {
                if cs.is_empty() {
                    "false".to_string()
                } else {
                    format!("(or false {})", cs.bytes().map(|x| format!("(eq {c} {x})")).collect::<Vec<_>>().join(" "))
                }
            }
            Some(cs) => bail!(line, "stripping the characters {cs:?}"),
        };
        // $a: start of the first kept character (-1: none); $b: end of the last one.
        self.out.push_str(&format!(
            "{{{{ {s} := {src} }}}}{{{{ {a} := -1 }}}}{{{{ {b} := 0 }}}}{{{{ {keep} := false }}}}\
             {{{{ range {i} := len {s} }}}}{{{{ {c} := index {s} {i} }}}}{{{{ if or (lt {c} 128) (ge {c} 192) }}}}\
             {{{{ if {keep} }}}}{{{{ {b} = {i} }}}}{{{{ end }}}}{{{{ {t} := slice {s} {i} }}}}{{{{ {keep} = not {ws} }}}}\
             {{{{ if and {keep} (eq {a} -1) }}}}{{{{ {a} = {i} }}}}{{{{ end }}}}{{{{ end }}}}{{{{ end }}}}\
             {{{{ if {keep} }}}}{{{{ {b} = len {s} }}}}{{{{ end }}}}{{{{ {r} := \"\" }}}}"
        ));
        let from = if left { a.clone() } else { "0".to_string() };
        let to = if right { b.clone() } else { format!("(len {s})") };
        self.out.push_str(&format!("{{{{ if ne {a} -1 }}}}{{{{ {r} = slice {s} {from} {to} }}}}{{{{ end }}}}"));
        Ok(Val::Go(r, Kind::Str))
    }

    /// `'key' in message`: the keys a Hugging Face message dict has for Ollama's message
    /// (role and content always; the others when Ollama's field is set).
    pub(super) fn has_key(&mut self, m: &str, key: Val, line: usize) -> Result<Val, Untranslatable> {
        let Val::Str(key) = key else { bail!(line, "`in` on a message with a computed key") };
        let field = |f: &str| Ok(Val::Go(format!("{}.{f}", paren(m)), Kind::Bool));
        match key.as_str() {
            "role" | "content" => Ok(Val::Bool(true)),
            "tool_calls" => field("ToolCalls"),
            "reasoning_content" => field("Thinking"),
            "tool_call_id" => field("ToolCallID"),
            "name" => field("ToolName"),
            _ => Ok(Val::Bool(false)),
        }
    }
}

/// The truth of a value known at translation time (`None` for Go values).
pub(super) fn known_truth(v: &Val) -> Option<bool> {
    Some(match v {
        Val::Undefined => false,
        Val::Bool(b) => *b,
        Val::Int(i) => *i != 0,
        Val::Str(s) => !s.is_empty(),
        Val::Dict(d) => !d.is_empty(),
        Val::List(items) => !items.is_empty(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::super::render::chat::{Chat, Message};
    use super::super::super::render::go::{GoTemplate, Request};
    use super::super::super::render::jinja::{JinjaContext, JinjaTemplate};
    use super::*;
    use crate::modelfile::verify::{verify, TemplateContext};

    fn tr(jinja: &str) -> Translation {
        translate(jinja, &crate::modelfile::translate::tests::opts()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Translates, verifies on the built-in conversations, and renders both sides on one
    /// user/assistant exchange per text of `texts` (awkward strings for the string scans).
    fn same(jinja: &str, texts: &[&str]) -> Translation {
        let t = crate::modelfile::translate::tests::check(jinja);
        let go = GoTemplate::parse(&t.template).unwrap();
        let j = JinjaTemplate::parse(jinja).unwrap();
        let jctx = JinjaContext { bos_token: "<s>".into(), eos_token: "</s>".into(), ..Default::default() };
        for text in texts {
            let chat = Chat {
                messages: vec![Message::new("user", text), Message::new("assistant", &format!("{text}|{text}"))],
                ..Default::default()
            };
            let want = j.render(&chat, &jctx).unwrap();
            let got = go.render(&chat, &Request::default()).unwrap();
            assert_eq!(got, want, "on {text:?}\n{}", t.template);
        }
        t
    }

    const AWKWARD: &[&str] = &[
        "",
        "a",
        "aaa",
        "aaaa",
        "/think",
        "x/no_think/think y",
        "héllo wörld 你好 </think> tail",
        "</think></think>",
        "a</think>b</think>c",
        "ends with /think",
    ];

    #[test]
    fn in_on_strings_scans_the_text() {
        let t = same(
            "{% for m in messages %}{% if '/think' in m.content %}[T]{% endif %}{% if 'aa' in m.content %}[A]{% endif %}\
             {% if '你' not in m.content %}[N]{% endif %}{{ m.content }}{% endfor %}{% if 'x' in 'xyz' %}!{% endif %}",
            AWKWARD,
        );
        assert!(t.template.contains("range $j"), "{}", t.template);
        assert!(t.template.ends_with('!'), "{}", t.template);
    }

    #[test]
    fn split_items() {
        same(
            "{% for m in messages %}<{{ m.content.split('</think>')[-1] }}|{{ m.content.split('</think>')[0] }}\
             |{{ m.content.split('aa')[-1] }}|{{ m.content.split('aa')[0] }}>{% if '</think>' in m.content %}\
             ({{ m.content.split('</think>')[1] }}){% endif %}{% endfor %}{{ 'a,b'.split(',')[1] }}",
            AWKWARD,
        );
    }

    #[test]
    fn replace_startswith_endswith() {
        same(
            "{% for m in messages %}{{ m.content.replace('/think', '').replace('aa', 'b' + m.role) }}\
             {% if m.content.startswith('/th') %}[S]{% endif %}{% if m.content.endswith('think') %}[E]{% endif %}\
             {% if m.content.endswith('你好 </think> tail') %}[U]{% endif %}{% endfor %}",
            AWKWARD,
        );
    }

    #[test]
    fn or_and_on_strings_are_values() {
        let t = same(
            "{% set ns = namespace(s='') %}{% for m in messages %}{% set ns.s = ns.s + (m.content or '-') + (m.role and '+') %}\
             {% endfor %}{{ ns.s }}{{ '' or 'c' }}{{ 'a' and 'b' }}",
            AWKWARD,
        );
        assert!(t.template.contains("(or $j_message.Content \"-\")") || t.template.contains("(or "), "{}", t.template);
    }

    #[test]
    fn numbers_and_json_in_concatenations() {
        same(
            "{% for m in messages %}{{ 'n' ~ loop.index0 ~ ':' + loop.index0|string + m.content }}{% endfor %}\
             {% if tools %}{{ 'T:' + tools[0] | tojson + '.' }}{% endif %}",
            AWKWARD,
        );
    }

    #[test]
    fn trimming_is_exact() {
        let t = same(
            "{% for m in messages %}<{{ m.content | trim }}|{{ m.content.lstrip() }}|{{ m.content.rstrip() }}             |{{ m.content.strip('a\n') }}|{{ m.content.rstrip('/think') }}|{{ m.content.lstrip(' x') }}>{% endfor %}",
            &[
                "",
                "   ",
                " \t\n a b \r\n",
                "\u{3000}\u{a0}全角\u{2009}x\u{85}\u{2028}",
                "\u{2010}dash\u{2010}",
                "aa\nhello\na",
                "x/think",
                "é ",
                "no-space",
            ],
        );
        assert!(t.notes.is_empty(), "{:?}", t.notes);
    }

    #[test]
    fn keys_of_a_message() {
        let t = same(
            "{% for m in messages %}{% if 'content' in m %}C{% endif %}{% if 'tool_calls' in m %}T{% endif %}             {% if 'reasoning_content' in m %}R{% endif %}{% if 'name' in m %}N{% endif %}{% if 'x' not in m %}-{% endif %}             {{ m.content }}{% endfor %}{% if 'role' in messages[0] %}!{% endif %}",
            &["a"],
        );
        assert!(t.template.contains(".ToolCalls }}T"), "{}", t.template);
    }

    #[test]
    fn constant_string_methods_are_evaluated() {
        let t = tr("{{ 'ab c'.upper() }}{{ 'Ab C'|lower }}{{ 'ab'|capitalize }}{{ 'ab cd'.title() }}{{ '--x--'.strip('-') }}{{ 'x\n'.rstrip('\n') }}");
        assert_eq!(t.template, "AB Cab cAbAb Cdxx");
    }

    #[test]
    fn unsupported_string_operations_still_fail() {
        for (j, what) in [
            ("{% for m in messages %}{{ m.content.split(m.role)[0] }}{% endfor %}", "split"),
            ("{% for m in messages %}{{ m.content.split('a') }}{% endfor %}", "SplitParts"),
            ("{% for m in messages %}{% if m.role in m.content %}x{% endif %}{% endfor %}", "needle"),
            ("{% for m in messages %}{{ m.content.capitalize() }}{% endfor %}", "capitalize"),
            ("{% for m in messages %}{{ m.content.strip('é') }}{% endfor %}", "stripping"),
            ("{% for m in messages %}{{ m.content.strip(m.role) }}{% endfor %}", "strip"),
        ] {
            let e = translate(j, &TranslateOptions::default()).unwrap_err();
            assert!(e.to_string().contains(what), "{j}: {e}");
        }
    }

    fn verified(jinja: &str) -> Translation {
        crate::modelfile::translate::tests::check(jinja)
    }

    #[test]
    fn json_text_as_a_value() {
        // Assigned, concatenated and compared: the JSON writer accumulates with print.
        verified(
            "{% set ns = namespace(t='') %}{% for tool in tools %}{% set ns.t = ns.t + (tool | tojson) + ';' %}{% endfor %}\
             {% if ns.t != '' %}[{{ ns.t }}]{% endif %}{% for m in messages %}{% for c in m.tool_calls %}\
             {% set a = c.function.arguments | tojson %}{{ c.function.name + a }}{% endfor %}{{ m.content }}{% endfor %}\
             {% set d = strftime_now('%d %B %Y') %}{{ 'Today: ' + d }}",
        );
    }

    #[test]
    fn tool_functions_selectattr_and_constant_conditions() {
        let t = verified(
            "{% set code = tools | selectattr('type', 'equalto', 'code_interpreter') | list | length > 0 %}\
             {% set fns = tools | selectattr('type', 'equalto', 'function') | list %}{% if code %}CODE{% endif %}\
             {% for tool in fns %}{{ (tool.function if tool.function is defined else tool) | tojson }}\n{% endfor %}\
             {% for m in messages %}{{ m.content }}{% endfor %}",
        );
        assert!(t.template.contains("$j_code = (gt 0 0)"), "{}", t.template);
    }

    #[test]
    fn split_with_a_limit() {
        verified(
            "{% for m in messages %}{% if '</think>' in m.content %}{{ m.content.split('</think>', 1)[1] }}{% else %}\
             {{ m.content.split(' ', 1)[0] }}|{{ m.content.split(' ', 1)[-1] }}|{{ m.content.split(' ', 2)[1] }}{% endif %}{% endfor %}",
        );
    }

    #[test]
    fn loop_over_tool_call_arguments() {
        let jinja = "{% for m in messages %}{{ m.content }}{% for tc in m.tool_calls %}{% set func = tc.function %}\
                     <{{ func.name }}>{% set args = func.arguments %}{% if args is string %}{{ args }}{% else %}\
                     {% for key, val in args.items() %}{% if val is string %}[{{ key + '=' + val }}]{% else %}\
                     [{{ key }}:{{ val | tojson }}]{% endif %}{% endfor %}{% for k, v in args | items %}{{ k }};{% endfor %}\
                     {% endif %}{% endfor %}{% endfor %}";
        let t = translate(jinja, &TranslateOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        assert!(t.template.contains("range $j_key, $j_val := "), "{}", t.template);
        let v = verify(&t.template, jinja, &TemplateContext::default()).unwrap();
        assert!(v.is_verified(), "{}\n{:#?}", t.template, v.differences);
        assert!(v.identical_conversations.iter().any(|c| c.contains("tool")), "{:?}", v.identical_conversations);
    }
}
