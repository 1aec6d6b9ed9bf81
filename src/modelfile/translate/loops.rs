//! Reversed loops, `range()`, integer arithmetic between computed numbers, and slices with an
//! end.
//!
//! Go templates have no arithmetic, but Go ≥ 1.22 ranges over an integer and `len`/`slice`
//! measure and cut lists and strings, so integers are computed exactly with *tallies*:
//!
//! - `g + k` (a constant `k > 0`) is the length of a string of `k` x's extended by one x per
//!   iteration of `range g`; `g - k` is `len (slice T k)` for a tally `T` of length `g`
//!   (`.Messages` itself when `g` is its length);
//! - `a - b` is `len (slice T b)` with `T` a tally of `a`; `a + b` a tally of both;
//! - Go can produce a negative number only as a constant, so a result in `-4..-1` (or an
//!   operand in `-4..-1` where the tally needs `g ≥ 0`) is chosen among constants by
//!   comparisons; anything further below zero fails the rendering on purpose (an index out of
//!   range) rather than render a wrong text.
//!
//! - `for x in xs[::-1]` (or `xs|reverse`) ranges over `xs` forward and reads the item at
//!   `len(xs) - 1 - i` (`len (slice (slice xs i) 1)`), so the body, `break`, `loop.index0`,
//!   `loop.first`/`last` behave as in Jinja; `loop.previtem`/`nextitem` are refused.
//! - `for i in range(a, b)` ranges over `b` and skips the values below `a`;
//!   `range(a, b, -1)` ranges over a tally of `a + 1` values counting down and stops at `b`.
//! - `xs[a:b]` follows Python's slice rules (negative bounds count from the end, bounds are
//!   clamped to the list) computed on the list's length.

use minijinja::machinery::ast::{self, CallArg, Expr};

use super::*;

/// How far below zero a computed integer is handled exactly (chosen among constants).
const NEG: i64 = 4;

/// Fails the Go rendering (an index out of range): for values Go cannot compute exactly.
const FAIL: &str = r#"{{ slice "" 1 }}"#;

impl Translator<'_> {
    /// A Go operand holding the value of an integer expression (code computing it is written
    /// before the current position).
    pub(super) fn int_operand(&mut self, v: Val, line: usize) -> Result<String, Untranslatable> {
        match v {
            Val::Int(i) => Ok(i.to_string()),
            Val::Go(g, Kind::Int) | Val::IntOff(g, 0) => Ok(g),
            Val::IntOff(g, k) => Ok(self.plus_const(&g, k)),
            other => bail!(line, "arithmetic on {}", describe(&other)),
        }
    }

    /// Go code building a string of `g` x's (`g ≥ 0`) into a new variable, returned with the
    /// code; `(len X)` is its own tally (`X` a list or string).
    fn tally(&mut self, g: &str) -> (String, String) {
        if let Some(x) = g.strip_prefix("(len ").and_then(|r| r.strip_suffix(')')) {
            if balanced(x) {
                return (String::new(), paren(x));
            }
        }
        let t = self.fresh();
        (format!("{{{{ {t} := \"\" }}}}{{{{ range {g} }}}}{{{{ {t} = print {t} \"x\" }}}}{{{{ end }}}}"), t)
    }

    /// `g + k` for a Go integer `g` and a constant `k` (see the module documentation).
    fn plus_const(&mut self, g: &str, k: i64) -> String {
        let (code, r) = self.plus_const_code(g, k);
        self.out.push_str(&code);
        r
    }

    /// The code of [`plus_const`](Self::plus_const) and its result variable.
    fn plus_const_code(&mut self, g: &str, k: i64) -> (String, String) {
        let r = self.fresh();
        let known_natural = g.starts_with("(len ");
        let mut code = format!("{{{{ {r} := 0 }}}}");
        if !known_natural {
            code.push_str(&format!("{{{{ if ge {g} 0 }}}}"));
        }
        if k > 0 {
            let t = self.fresh();
            code.push_str(&format!(
                "{{{{ {t} := {} }}}}{{{{ range {g} }}}}{{{{ {t} = print {t} \"x\" }}}}{{{{ end }}}}{{{{ {r} = len {t} }}}}",
                go_quote(&"x".repeat(k as usize))
            ));
        } else {
            let kk = -k;
            let (tc, t) = self.tally(g);
            code.push_str(&format!("{{{{ if ge {g} {kk} }}}}{tc}{{{{ {r} = len (slice {t} {kk}) }}}}"));
            if kk <= NEG {
                for v in 0..kk {
                    code.push_str(&format!("{{{{ else if eq {g} {v} }}}}{{{{ {r} = {} }}}}", v + k));
                }
            } else {
                code.push_str(&format!("{{{{ else }}}}{FAIL}"));
            }
            code.push_str("{{ end }}");
        }
        if !known_natural {
            // g in -NEG..-1: g + k chosen among constants; further below, no exact value.
            for v in 1..=NEG {
                code.push_str(&format!("{{{{ else if eq {g} -{v} }}}}{{{{ {r} = {} }}}}", k - v));
            }
            code.push_str(&format!("{{{{ else }}}}{FAIL}{{{{ end }}}}"));
        }
        (code, r)
    }

    /// Code choosing `res = -d` for a Go integer `d` in `0..=NEG` (failing beyond).
    fn negated(d: &str, res: &str) -> String {
        let mut code = String::from("{{ if false }}");
        for v in 0..=NEG {
            code.push_str(&format!("{{{{ else if eq {d} {v} }}}}{{{{ {res} = -{v} }}}}"));
        }
        code.push_str(&format!("{{{{ else }}}}{FAIL}{{{{ end }}}}"));
        code
    }

    /// Code running `each(v)` where the Go integer `neg_of` is `-v` (`v` in `1..=NEG`), chosen
    /// by comparisons with the constants; failing further below zero.
    fn by_negative(&mut self, neg_of: &str, mut each: impl FnMut(&mut Self, i64) -> String) -> String {
        let mut code = String::from("{{ if false }}");
        for v in 1..=NEG {
            let body = each(self, v);
            code.push_str(&format!("{{{{ else if eq {neg_of} -{v} }}}}{body}"));
        }
        code.push_str(&format!("{{{{ else }}}}{FAIL}{{{{ end }}}}"));
        code
    }

    /// `l - r` on integers at least one of which is computed by Go.
    pub(super) fn int_sub(&mut self, l: Val, r: Val, line: usize) -> Result<Val, Untranslatable> {
        match (&l, &r) {
            (_, Val::Int(c)) => {
                let c = *c;
                return Ok(match l {
                    Val::Int(a) => Val::Int(a - c),
                    Val::IntOff(g, o) => Val::IntOff(g, o - c),
                    Val::Go(g, Kind::Int) => Val::IntOff(g, -c),
                    other => bail!(line, "subtracting from {}", describe(&other)),
                });
            }
            (_, Val::IntOff(_, o)) => {
                // a - (g + o) = (a - o) - g
                let o = *o;
                let Val::IntOff(g, _) = r else { unreachable!() };
                let l = match l {
                    Val::Int(a) => Val::Int(a - o),
                    Val::IntOff(h, p) => Val::IntOff(h, p - o),
                    Val::Go(h, Kind::Int) => Val::IntOff(h, -o),
                    other => bail!(line, "subtracting from {}", describe(&other)),
                };
                return self.int_sub(l, Val::Go(g, Kind::Int), line);
            }
            _ => {}
        }
        let Val::Go(b, Kind::Int) = r else { bail!(line, "subtracting {}", describe(&r)) };
        // (len X + k) - b with k < 0: X cut by b then by -k (the common `len - 1 - i`); where
        // that is not exact (b < 0, a negative result), the general computation.
        if let Val::IntOff(g, k) = &l {
            if *k < 0 && g.starts_with("(len ") {
                let (tc, t) = self.tally(g);
                let kk = -k;
                let (a_code, a) = self.plus_const_code(g, *k);
                let (gen_code, gen) = self.sub_code(&a, &b);
                let res = self.fresh();
                self.out.push_str(&format!(
                    "{tc}{{{{ {res} := 0 }}}}{{{{ if and (ge {b} 0) (ge (len (slice {t} {b})) {kk}) }}}}\
                     {{{{ {res} = len (slice (slice {t} {b}) {kk}) }}}}{{{{ else }}}}{a_code}{gen_code}{{{{ {res} = {gen} }}}}{{{{ end }}}}"
                ));
                return Ok(Val::Go(res, Kind::Int));
            }
        }
        let a = self.int_operand(l, line)?;
        let (code, res) = self.sub_code(&a, &b);
        self.out.push_str(&code);
        Ok(Val::Go(res, Kind::Int))
    }

    /// Code computing `a - b` for Go integers into a new variable (returned).
    fn sub_code(&mut self, a: &str, b: &str) -> (String, String) {
        let res = self.fresh();
        let (tc, t) = self.tally(a);
        let (tb_code, tb) = self.tally(b);
        let d = self.fresh();
        let neg_result = Self::negated(&d, &res);
        // b < 0: a + |b|.
        let b_neg = self.by_negative(b, |s, v| {
            let (code, r) = s.plus_const_code(a, v);
            format!("{code}{{{{ {res} = {r} }}}}")
        });
        // a < 0: -(b + |a|).
        let a_neg = self.by_negative(a, |s, v| {
            let (code, r) = s.plus_const_code(b, v);
            format!("{code}{}", Self::negated(&r, &res))
        });
        let code = format!(
            "{{{{ {res} := 0 }}}}{{{{ if and (ge {a} 0) (ge {b} 0) }}}}\
             {{{{ if ge {a} {b} }}}}{tc}{{{{ {res} = len (slice {t} {b}) }}}}\
             {{{{ else }}}}{tb_code}{{{{ {d} := len (slice {tb} {a}) }}}}{neg_result}{{{{ end }}}}\
             {{{{ else if ge {a} 0 }}}}{b_neg}{{{{ else if ge {b} 0 }}}}{a_neg}{{{{ else }}}}{FAIL}{{{{ end }}}}"
        );
        (code, res)
    }

    /// `l + r` on integers both computed by Go.
    pub(super) fn int_add(&mut self, l: Val, r: Val, line: usize) -> Result<Val, Untranslatable> {
        let a = self.int_operand(l, line)?;
        let b = self.int_operand(r, line)?;
        let (res, t) = (self.fresh(), self.fresh());
        // One operand below zero: the other plus a constant.
        let b_neg = self.by_negative(&b, |s, v| {
            let (code, r) = s.plus_const_code(&a, -v);
            format!("{code}{{{{ {res} = {r} }}}}")
        });
        let a_neg = self.by_negative(&a, |s, v| {
            let (code, r) = s.plus_const_code(&b, -v);
            format!("{code}{{{{ {res} = {r} }}}}")
        });
        self.out.push_str(&format!(
            "{{{{ {res} := 0 }}}}{{{{ if and (ge {a} 0) (ge {b} 0) }}}}{{{{ {t} := \"\" }}}}\
             {{{{ range {a} }}}}{{{{ {t} = print {t} \"x\" }}}}{{{{ end }}}}{{{{ range {b} }}}}{{{{ {t} = print {t} \"x\" }}}}{{{{ end }}}}\
             {{{{ {res} = len {t} }}}}{{{{ else if ge {a} 0 }}}}{b_neg}{{{{ else if ge {b} 0 }}}}{a_neg}{{{{ else }}}}{FAIL}{{{{ end }}}}"
        ));
        Ok(Val::Go(res, Kind::Int))
    }

    /// A Python slice bound normalized for a list of Go length `n` (a variable): negative
    /// counts from the end, clamped to `0..=n`.
    fn py_bound(&mut self, x: &str, n: &str, v: Val, line: usize) -> Result<String, Untranslatable> {
        let b = self.fresh();
        match v {
            Val::Int(c) if c >= 0 => {
                self.out
                    .push_str(&format!("{{{{ {b} := {c} }}}}{{{{ if gt {b} {n} }}}}{{{{ {b} = {n} }}}}{{{{ end }}}}"));
            }
            Val::Int(c) => {
                let k = -c;
                self.out.push_str(&format!(
                    "{{{{ {b} := 0 }}}}{{{{ if ge {n} {k} }}}}{{{{ {b} = len (slice {x} {k}) }}}}{{{{ end }}}}"
                ));
            }
            v => {
                let g = self.int_operand(v, line)?;
                let mut neg = String::new();
                for k in 1..=NEG {
                    neg.push_str(&format!(
                        "{{{{ else if eq {g} -{k} }}}}{{{{ if ge {n} {k} }}}}{{{{ {b} = len (slice {x} {k}) }}}}{{{{ end }}}}"
                    ));
                }
                self.out.push_str(&format!(
                    "{{{{ {b} := 0 }}}}{{{{ if gt {g} {n} }}}}{{{{ {b} = {n} }}}}{{{{ else if ge {g} 0 }}}}{{{{ {b} = {g} }}}}\
                     {neg}{{{{ else }}}}{FAIL}{{{{ end }}}}"
                ));
            }
        }
        Ok(b)
    }

    /// `xs[a:b]` (either bound optional) with Python's rules, on a list Go operand.
    pub(super) fn py_slice(
        &mut self,
        g: &str,
        start: Option<Val>,
        stop: Option<Val>,
        line: usize,
    ) -> Result<String, Untranslatable> {
        let (x, n) = (self.fresh(), self.fresh());
        self.out.push_str(&format!("{{{{ {x} := {g} }}}}{{{{ {n} := len {x} }}}}"));
        let a = match start {
            None | Some(Val::Undefined) => "0".to_string(),
            Some(v) => self.py_bound(&x, &n, v, line)?,
        };
        let b = match stop {
            None | Some(Val::Undefined) => n.clone(),
            Some(v) => self.py_bound(&x, &n, v, line)?,
        };
        let r = self.fresh();
        self.out.push_str(&format!(
            "{{{{ {r} := slice {x} 0 0 }}}}{{{{ if lt {a} {b} }}}}{{{{ {r} = slice {x} {a} {b} }}}}{{{{ end }}}}"
        ));
        Ok(r)
    }

    /// Loops this module translates: over a reversed list, or over `range(...)`. `None` when
    /// the loop is another kind.
    pub(super) fn special_loop(
        &mut self,
        f: &ast::ForLoop<'_>,
        target: &str,
        line: usize,
    ) -> Option<Result<(), Untranslatable>> {
        match &f.iter {
            Expr::Slice(s) if s.start.is_none() && s.stop.is_none() && is_minus_one(s.step.as_ref()) => {
                Some(self.reversed_loop(f, &s.expr, target, line))
            }
            Expr::Filter(fl) if fl.name == "reverse" && fl.args.is_empty() => {
                fl.expr.as_ref().map(|e| self.reversed_loop(f, e, target, line))
            }
            Expr::Call(c) if matches!(&c.expr, Expr::Var(v) if v.id == "range") && self.bound_name_free("range") => {
                Some(self.range_loop(f, c, target, line))
            }
            _ => None,
        }
    }

    fn bound_name_free(&self, name: &str) -> bool {
        !self.vars.contains_key(name) && self.loop_ctx(name).is_none() && !self.is_macro(name)
    }

    /// `for x in xs[::-1]`: forward over `xs`, reading the mirrored item.
    fn reversed_loop(
        &mut self,
        f: &ast::ForLoop<'_>,
        list: &Expr<'_>,
        target: &str,
        line: usize,
    ) -> Result<(), Untranslatable> {
        let (g, kind) = match self.expr(list)? {
            Val::Go(g, k @ (Kind::Messages | Kind::Tools | Kind::ToolCalls)) => (g, k),
            Val::Undefined => return self.block(&f.else_body, false),
            other => bail!(line, "reversed loop over {}", describe(&other)),
        };
        if mentions(&f.body, "previtem") || mentions(&f.body, "nextitem") {
            bail!(line, "loop.previtem/nextitem in a reversed loop");
        }
        let item_kind = match kind {
            Kind::Messages => Kind::Message,
            Kind::Tools => Kind::Tool,
            _ => Kind::ToolCall,
        };
        // The list is evaluated once, as Jinja does; its name never equals a list expression
        // (so `messages[loop.index0 ± k]` is not taken for a neighbour in iteration order).
        let (xs, i) = (self.fresh(), self.fresh());
        let item = format!("${}", go_var(target));
        self.out.push_str(&format!(
            "{{{{ {xs} := {g} }}}}{{{{ range {i}, {item} := {xs} }}}}{{{{ {item} = index {xs} (len (slice (slice {xs} {i}) 1)) }}}}"
        ));
        self.loops.push(LoopCtx {
            iter: xs.clone(),
            index: i,
            target: target.to_string(),
            expr: item,
            prev: None,
            kind: item_kind,
        });
        let r = self.loop_body(f, line);
        self.loops.pop();
        r?;
        self.loop_else(f)
    }

    /// A loop's body, inside `{{ if c }}` when the loop has a filter (`for x in xs if c`).
    pub(super) fn loop_body(&mut self, f: &ast::ForLoop<'_>, line: usize) -> Result<(), Untranslatable> {
        match &f.filter_expr {
            Some(fe) => {
                if mentions(&f.body, "loop") {
                    bail!(line, "loop variable in a filtered loop");
                }
                let c = self.cond(fe, line)?;
                self.out.push_str(&format!("{{{{ if {c} }}}}"));
                self.block(&f.body, false)?;
                self.out.push_str("{{ end }}");
                Ok(())
            }
            None => self.block(&f.body, false),
        }
    }

    fn loop_else(&mut self, f: &ast::ForLoop<'_>) -> Result<(), Untranslatable> {
        if !f.else_body.is_empty() {
            self.out.push_str("{{ else }}");
            self.block(&f.else_body, false)?;
        }
        self.out.push_str("{{ end }}");
        Ok(())
    }

    /// `for i in range(...)` with a step of 1 or -1.
    fn range_loop(
        &mut self,
        f: &ast::ForLoop<'_>,
        c: &ast::Call<'_>,
        target: &str,
        line: usize,
    ) -> Result<(), Untranslatable> {
        let mut args = Vec::new();
        for a in &c.args {
            match a {
                CallArg::Pos(e) => args.push(self.expr(e)?),
                _ => bail!(line, "range() with keyword or spread arguments"),
            }
        }
        let (start, stop, step) = match args.len() {
            1 => (Val::Int(0), args.remove(0), 1),
            2 | 3 => {
                let step = match args.get(2) {
                    None => 1,
                    Some(Val::Int(s @ (1 | -1))) => *s,
                    Some(_) => bail!(line, "range() with a step other than 1 or -1"),
                };
                let stop = args.remove(1);
                (args.remove(0), stop, step)
            }
            n => bail!(line, "range() with {n} arguments"),
        };
        let uses_loop = mentions(&f.body, "loop");
        if f.filter_expr.is_some() {
            bail!(line, "filtered loop over range()");
        }
        let from_zero = matches!(start, Val::Int(0));
        if step == 1 && !from_zero && (uses_loop || !f.else_body.is_empty()) {
            bail!(line, "loop or else in a loop over range() not starting at 0");
        }
        if step == -1 && (uses_loop || !f.else_body.is_empty()) {
            bail!(line, "loop or else in a loop over a descending range()");
        }
        let a = self.int_operand(start, line)?;
        let b = self.int_operand(stop, line)?;
        let (av, bv) = (self.fresh(), self.fresh());
        self.out.push_str(&format!("{{{{ {av} := {a} }}}}{{{{ {bv} := {b} }}}}"));
        let item = format!("${}", go_var(target));
        let (iter, index);
        if step == 1 {
            // Values below 0 would be missed by Go's range over an integer.
            if !matches!(a.parse::<i64>(), Ok(x) if x >= 0) {
                self.out.push_str(&format!("{{{{ if and (lt {av} 0) (lt {av} {bv}) }}}}{FAIL}{{{{ end }}}}"));
            }
            // loop.last / loop.length read a tally of the values.
            iter = if uses_loop {
                let (code, t) = self.tally(&bv);
                let t = if code.is_empty() {
                    let v = self.fresh();
                    self.out.push_str(&format!("{{{{ {v} := {t} }}}}"));
                    v
                } else {
                    self.out.push_str(&code);
                    t
                };
                t
            } else {
                self.fresh()
            };
            index = item.clone();
            self.out.push_str(&format!("{{{{ range {item} := {bv} }}}}"));
            if !from_zero {
                self.out.push_str(&format!("{{{{ if lt {item} {av} }}}}{{{{ continue }}}}{{{{ end }}}}"));
            }
        } else {
            // a, a-1, ..., down to b+1: a tally of a+1 counted down.
            let (t, k) = (self.fresh(), self.fresh());
            self.out.push_str(&format!(
                "{{{{ if and (lt {av} 0) (lt {bv} {av}) }}}}{FAIL}{{{{ end }}}}{{{{ {t} := \"\" }}}}{{{{ if ge {av} 0 }}}}{{{{ {t} = \"x\" }}}}\
                 {{{{ range {av} }}}}{{{{ {t} = print {t} \"x\" }}}}{{{{ end }}}}{{{{ end }}}}\
                 {{{{ range {k} := len {t} }}}}{{{{ {item} := len (slice (slice {t} {k}) 1) }}}}{{{{ if le {item} {bv} }}}}{{{{ break }}}}{{{{ end }}}}"
            ));
            iter = t;
            index = k;
        }
        self.loops.push(LoopCtx { iter, index, target: target.to_string(), expr: item, prev: None, kind: Kind::Int });
        let r = self.block(&f.body, false);
        self.loops.pop();
        r?;
        self.loop_else(f)
    }
}

fn is_minus_one(e: Option<&Expr<'_>>) -> bool {
    match e {
        Some(Expr::Const(c)) => c.value.as_i64() == Some(-1),
        Some(Expr::UnaryOp(u)) if matches!(u.op, ast::UnaryOpKind::Neg) => {
            matches!(&u.expr, Expr::Const(c) if c.value.as_i64() == Some(1))
        }
        _ => false,
    }
}

/// Parentheses balance in a Go operand (so `(len X)` is one call on one operand `X`).
fn balanced(x: &str) -> bool {
    let mut depth = 0i32;
    let mut quoted = false;
    let mut escaped = false;
    for c in x.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            ' ' if !quoted && depth == 0 => return false,
            _ => {}
        }
    }
    depth == 0 && !quoted
}

impl Translator<'_> {
    /// `xs[i]` for a computed `i`: a negative `i` (down to `-NEG`) counts from the end, as
    /// in Python. Past either end Go's `index` fails the rendering (Jinja: undefined).
    pub(super) fn py_index(&mut self, g: &str, v: Val, line: usize) -> Result<String, Untranslatable> {
        let i = self.int_operand(v, line)?;
        let k = self.fresh();
        let mut neg = String::new();
        for d in 1..=NEG {
            neg.push_str(&format!("{{{{ else if eq {i} -{d} }}}}{{{{ {k} = len (slice {g} {d}) }}}}"));
        }
        self.out.push_str(&format!("{{{{ {k} := {i} }}}}{{{{ if ge {i} 0 }}}}{neg}{{{{ else }}}}{FAIL}{{{{ end }}}}"));
        Ok(k)
    }
}

impl Translator<'_> {
    /// `x | int`: integers as they are, constant strings parsed as Jinja's filter does
    /// (an integer, else a float truncated, else 0).
    pub(super) fn int_filter(&mut self, v: Val, line: usize) -> Result<Val, Untranslatable> {
        Ok(match v {
            v @ (Val::Int(_) | Val::IntOff(..) | Val::Go(_, Kind::Int)) => v,
            Val::Bool(b) => Val::Int(b as i64),
            Val::Str(s) => {
                let t = s.trim();
                Val::Int(t.parse().unwrap_or_else(|_| t.parse::<f64>().map_or(0, |f| f.trunc() as i64)))
            }
            Val::Undefined => Val::Int(0),
            other => bail!(line, "|int of {}", describe(&other)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::render::chat::{Chat, FunctionCall, Message, ToolCall};
    use super::super::super::render::go::{GoTemplate, Request};
    use super::super::super::render::jinja::{JinjaContext, JinjaTemplate};
    use super::super::tests::{check, opts};
    use super::super::translate;

    fn call(name: &str) -> ToolCall {
        ToolCall {
            id: format!("id_{name}"),
            kind: "function".into(),
            function: FunctionCall { index: None, name: name.into(), arguments: Default::default() },
        }
    }

    fn tool(content: &str) -> Message {
        Message { tool_call_id: Some("id_f".into()), ..Message::new("tool", content) }
    }

    fn asst_calls(content: &str, names: &[&str]) -> Message {
        Message { tool_calls: names.iter().map(|n| call(n)).collect(), ..Message::new("assistant", content) }
    }

    /// Conversations where positions matter: tool responses wrapped as user turns, several
    /// queries, tool-call chains, a single message, a long one (tallies past 8).
    fn chats() -> Vec<Vec<Message>> {
        let u = |c: &str| Message::new("user", c);
        let a = |c: &str| Message::new("assistant", c);
        let mut long = vec![Message::new("system", "S")];
        for i in 0..12 {
            long.push(u(&format!("q{i}")));
            long.push(a(&format!("a{i}")));
        }
        long.push(u("last"));
        vec![
            vec![u("only")],
            vec![a("first-assistant"), u("q")],
            vec![
                u("q1"),
                a("a1"),
                u("q2"),
                asst_calls("", &["f"]),
                tool("r1"),
                asst_calls("x", &["f", "g"]),
                tool("r2"),
                tool("r3"),
            ],
            vec![
                u("q1"),
                a("a1"),
                u("<tool_response>x</tool_response>"),
                a("a2"),
                u("<tool_response>y</tool_response>"),
            ],
            vec![Message::new("system", "S"), u("q"), asst_calls("", &["f"]), tool("r"), a("done")],
            long,
        ]
    }

    /// Translates, verifies on the built-in conversations, and renders both sides on
    /// [`chats`]: the same text, or the Jinja side rejecting the conversation.
    fn same(jinja: &str) -> String {
        let t = check(jinja);
        let go = GoTemplate::parse(&t.template).unwrap();
        let j = JinjaTemplate::parse(jinja).unwrap();
        let jctx = JinjaContext { bos_token: "<s>".into(), eos_token: "</s>".into(), ..Default::default() };
        for messages in chats() {
            let chat = Chat { messages, ..Default::default() };
            let Ok(want) = j.render(&chat, &jctx) else { continue };
            let got = go.render(&chat, &Request::default());
            assert_eq!(got.as_deref(), Ok(want.as_str()), "on {:?}\n{}", chat.messages, t.template);
        }
        t.template
    }

    const TURNS: &str = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% for c in m.tool_calls %}[{{ c.function.name }}]{% endfor %}\n{% endfor %}";

    #[test]
    fn last_query_index_with_a_flag() {
        // Qwen3: the last user message that is not a tool response, found from the end.
        let g = same(
            "{% set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}\
             {% for message in messages[::-1] %}{% set index = (messages|length - 1) - loop.index0 %}\
             {% if ns.multi_step_tool and message.role == 'user' and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}\
             {% set ns.multi_step_tool = false %}{% set ns.last_query_index = index %}{% endif %}{% endfor %}\
             {% for m in messages %}{% if m.role == 'assistant' and loop.index0 > ns.last_query_index %}<think>{% endif %}\
             <|{{ m.role }}|>{{ m.content }}\n{% endfor %}[{{ ns.last_query_index }}]",
        );
        assert!(g.contains("range $j"), "{g}");
    }

    #[test]
    fn last_query_index_with_break_and_reversed_output() {
        // Reka: the same search ending with break; a reversed loop printing, with loop.*.
        same(
            "{% set ns = namespace(last_query_index=messages|length - 1) %}{% for msg in messages[::-1] %}\
             {% set idx = messages|length - 1 - loop.index0 %}{% if msg.get('role') == 'user' %}\
             {% set content = msg.get('content', '') %}{% if not (content is string and content.startswith('<tool_response>')) %}\
             {% set ns.last_query_index = idx %}{% break %}{% endif %}{% endif %}{% endfor %}{% set last_query_index = ns.last_query_index %}\
             {% for m in messages | reverse %}{{ loop.index0 }}{% if loop.first %}F{% endif %}{% if loop.last %}L{% endif %}:{{ m.role }}{% if messages[loop.index0].role == 'user' %}*{% endif %} {% endfor %}\
             {% for m in messages %}{% if loop.index0 > last_query_index %}+{% endif %}{{ m.content }};{% endfor %}",
        );
    }

    #[test]
    fn range_loops_and_slices_with_an_end() {
        // Kimi K2 Thinking: the last assistant message without tool calls, found by a
        // descending range, then the history split there.
        same(&format!(
            "{{% set ns = namespace(last=-1) %}}{{% for idx in range(messages|length-1, -1, -1) %}}\
             {{% if messages[idx]['role'] == 'assistant' and not messages[idx].get('tool_calls') %}}{{% set ns.last = idx %}}{{% endif %}}{{% endfor %}}\
             {{% set hist = messages[:ns.last+1] %}}{{% set suffix = messages[ns.last+1:] %}}\
             {{% for m in hist %}}H:{{{{ m.content }}}};{{% endfor %}}{{% for m in suffix %}}S:{{{{ m.content }}}};{{% endfor %}}\
             {{% for i in range(messages|length) %}}{{{{ i }}}}{{% if loop.last %}}L{{% endif %}}{{% endfor %}}|\
             {{% for i in range(1, messages|length) %}}{{{{ messages[i].role }}}}{{% endfor %}}|\
             {{% for i in range(2, -1, -1) %}}{{{{ i }}}}{{% endfor %}}|{{% for i in range(ns.last, 0, -1) %}}{{{{ i }}}}{{% endfor %}}\n{TURNS}"
        ));
        same(&format!(
            "{{% for m in messages[:-1] %}}{{{{ m.role }}}},{{% endfor %}}|{{% for m in messages[1:3] %}}{{{{ m.content }}}},{{% endfor %}}\
             |{{% for m in messages[-2:] %}}{{{{ m.content }}}},{{% endfor %}}|{{% for m in messages[:20] %}}.{{% endfor %}}\
             |{{% for m in messages[-30:-1] %}}-{{% endfor %}}|{{% for m in messages[3:1] %}}!{{% endfor %}}\n{TURNS}"
        ));
    }

    #[test]
    fn arithmetic_between_computed_numbers() {
        // DeepSeek V3.2: a tool result's position in its call chain.
        same(
            "{% for message in messages %}{% if message['role'] == 'tool' %}{% set outer_index = loop.index0 %}\
             {% set assistant_idx = namespace(value=-1) %}{% for prev_msg in messages %}\
             {% if prev_msg['role'] == 'assistant' and prev_msg['tool_calls'] and loop.index0 < outer_index %}{% set assistant_idx.value = loop.index0 %}{% endif %}\
             {% endfor %}{% set call_order = outer_index - assistant_idx.value %}{% set assistant_msg = messages[assistant_idx.value] %}\
             {% set tool_call_count = assistant_msg['tool_calls'] | length %}{% if call_order == 1 %}<results>{% endif %}<r>{{ message['content'] }}</r>\
             {% if call_order == tool_call_count %}</results>{% endif %}{{ call_order }}\n{% else %}<|{{ message.role }}|>{{ message.content }}\n{% endif %}{% endfor %}",
        );
        // Sums, differences and comparisons of computed numbers, and printed results,
        // including negative ones (n - 1 - 2i goes below zero on long conversations).
        same(
            "{% set ns = namespace(u=0, a=-1) %}{% for m in messages %}{% if m.role == 'user' %}{% set ns.u = ns.u + 1 %}\
             {% else %}{% set ns.a = loop.index0 %}{% endif %}{% endfor %}{{ ns.u + ns.a }},{{ ns.a - ns.u }},{{ ns.a + 1 }},\
             {{ messages|length - ns.u }},{{ loop_free }}{% for m in messages %}{% if loop.index0 + ns.u == messages|length %}={% endif %}\
             {{ loop.index }}/{{ (messages|length - 1) - loop.index0 }}/{{ (messages|length - 3) - loop.index0 }}:{{ m.content }} {% endfor %}\
             {{ messages|length - 1 - ns.a }}",
        );
    }

    #[test]
    fn below_the_exact_range_rendering_fails() {
        // u - a reaches -5 and -11 on two of the conversations: Go cannot make that number, so
        // the rendering fails there (never a wrong text) and is exact elsewhere.
        let jinja = "{% set ns = namespace(u=0, a=-1) %}{% for m in messages %}{% if m.role == 'user' %}{% set ns.u = ns.u + 1 %}\
                     {% else %}{% set ns.a = loop.index0 %}{% endif %}{% endfor %}{{ ns.u - ns.a }}";
        let t = translate(jinja, &opts()).unwrap();
        let go = GoTemplate::parse(&t.template).unwrap();
        let j = JinjaTemplate::parse(jinja).unwrap();
        let (mut exact, mut failed) = (0, 0);
        for messages in chats() {
            let chat = Chat { messages, ..Default::default() };
            let want = j.render(&chat, &JinjaContext::default()).unwrap();
            match go.render(&chat, &Request::default()) {
                Ok(got) => {
                    assert_eq!(got, want);
                    exact += 1;
                }
                Err(_) => {
                    assert!(want.parse::<i64>().unwrap() < -super::NEG, "{want}");
                    failed += 1;
                }
            }
        }
        assert_eq!((exact, failed), (4, 2));
    }

    #[test]
    fn int_filter() {
        // Reka: settings defaulted and converted; a count added to a position.
        same(
            "{% set n = num_img_tokens | default(64, true) | int %}{% set k = '12.7' | int %}\
             {% for m in messages %}{{ n + k }}:{{ loop.index0 + ('3' | int) }}:{{ m.content }};{% endfor %}",
        );
    }

    #[test]
    fn what_stays_untranslatable() {
        for (j, what) in [
            ("{% for m in messages[::2] %}{% endfor %}", "step"),
            ("{% for m in messages[::-1] %}{{ loop.nextitem.role }}{% endfor %}", "nextitem"),
            ("{% for i in range(0, 9, 2) %}{% endfor %}", "step other"),
            ("{% for i in range(2, 5) %}{{ loop.index }}{% endfor %}", "not starting at 0"),
        ] {
            let e = translate(j, &opts()).unwrap_err();
            assert!(e.to_string().contains(what), "{j}: {e}");
        }
    }
}
