//! Statements: text, output expressions, `if`, `for`, `set`, and the Go variables they
//! declare.

use minijinja::machinery::ast::{self, Expr, Stmt};

use super::*;

impl Translator<'_> {
    pub(super) fn stmts(&mut self, stmts: &[Stmt<'_>]) -> Result<(), Untranslatable> {
        for s in stmts {
            self.stmt(s)?;
        }
        Ok(())
    }

    pub(super) fn stmt(&mut self, s: &Stmt<'_>) -> Result<(), Untranslatable> {
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
    pub(super) fn emit(&mut self, v: Val, line: usize) -> Result<(), Untranslatable> {
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

    pub(super) fn set(&mut self, target: &Expr<'_>, value: &Expr<'_>, line: usize) -> Result<(), Untranslatable> {
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

    pub(super) fn set_named(&mut self, name: &str, value: &Expr<'_>, line: usize) -> Result<(), Untranslatable> {
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

    pub(super) fn assign(&mut self, name: &str, v: Val, line: usize) -> Result<(), Untranslatable> {
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

    pub(super) fn declare(&mut self, name: &str, kind: Kind, line: usize) -> Result<(), Untranslatable> {
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
                // Go template variables are untyped: one declared as "" may hold a message
                // or a tool call's function later; only whole messages need a guard.
                if matches!(kind, Kind::Message) {
                    bail!(line, "variable {name} holding a {kind:?}")
                }
                self.vars.insert(name.to_string(), kind);
            }
        }
        Ok(())
    }

    /// A value as one Go operand (for a variable assignment or a function argument).
    pub(super) fn operand(&mut self, v: Val, line: usize) -> Result<(String, Kind), Untranslatable> {
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
            Val::Raw(r) => (self.raw_value(&r), Kind::Str),
        })
    }

    pub(super) fn for_loop(&mut self, f: &ast::ForLoop<'_>, line: usize) -> Result<(), Untranslatable> {
        if f.recursive {
            bail!(line, "recursive loop");
        }
        let target = match &f.target {
            Expr::Var(v) => v.id.to_string(),
            Expr::List(_) => return self.pairs_loop(f, line),
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
}
