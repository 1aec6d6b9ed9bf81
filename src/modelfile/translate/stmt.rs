//! Statements: text, output expressions, `if`, `for`, `set`, macros and `{% set %}` blocks,
//! `break`/`continue`, and the Go variables they declare.
//!
//! - A macro is inlined at each call: its parameters are bound to the translated argument
//!   expressions (positional, keyword, defaults), its own `set` variables get names private
//!   to that call, and its output becomes a [`Val::Fragment`] of Go template text printed
//!   where the call is printed. Recursive macros cannot be inlined.
//! - Go cannot capture output into a variable, so `{% set x %}...{% endset %}` and
//!   `{% set x = macro(...) %}` bind `x` to the fragment, printed wherever `x` is printed: sound
//!   only while nothing it reads has changed, it is read in the block that set it (or one
//!   nested in it), and it sets no variables itself — otherwise reading `x` is untranslatable.
//!   A fragment cannot be tested (`if x`): Go cannot know whether it renders empty.
//! - In lenient mode ([`translate_lenient`](super::translate_lenient)) an untranslatable
//!   statement inside a conditional branch or a loop (or a whole top-level `if` or `for`) is left out
//!   and recorded; variables it would set become untranslatable to read.

use std::collections::BTreeSet;

use minijinja::machinery::ast::{self, Expr, Stmt};

use super::*;

/// Macro calls nested deeper than this are refused (recursion is refused outright).
const MAX_MACRO_DEPTH: usize = 16;
/// The translated Go template is refused beyond this size (inlining can multiply text).
const MAX_OUTPUT: usize = 1 << 20;
const TOO_LARGE: &str = "translation larger than 1 MiB";

/// Statement-level state of a [`Translator`].
#[derive(Default)]
pub(super) struct StmtState<'o> {
    /// Leave out untranslatable statements in branches and loops instead of failing.
    pub(super) lenient: bool,
    /// What lenient mode left out ("construct at line N").
    pub(super) left_out: Vec<String>,
    /// Top-level macro definitions by name.
    macros: BTreeMap<String, &'o ast::Macro<'o>>,
    /// Macro calls being inlined, innermost last.
    frames: Vec<Frame>,
    /// Variables bound to captured output.
    fragments: BTreeMap<String, Fragment>,
    /// Captured texts whose translation assigned variables outside the capture.
    impure: BTreeSet<String>,
    /// Open captures: `frames.len()` when each started, and whether it assigned anything
    /// outside its own macro frames.
    captures: Vec<(usize, bool)>,
    /// The branch/loop bodies being translated (unique ids), outermost first; their
    /// number is the depth lenient mode leaves out statements at (only inside them).
    blocks: Vec<usize>,
    block_counter: usize,
    /// Whether each open block is conditional on tools (for left-out notes).
    tools_ctx: Vec<bool>,
    /// Assignment counter, and the counter at each Go variable's last assignment.
    generation: usize,
    last_assign: BTreeMap<String, usize>,
    /// Macro calls inlined so far (names private to each call).
    inlined: usize,
}

impl StmtState<'_> {
    pub(super) fn new(lenient: bool) -> Self {
        StmtState { lenient, ..Default::default() }
    }

    /// Outside any macro call.
    pub(super) fn at_frames_top(&self) -> bool {
        self.frames.is_empty()
    }

    /// Outside any macro call, branch or loop.
    pub(super) fn at_top(&self) -> bool {
        self.frames.is_empty() && self.blocks.is_empty()
    }

    /// Outside any branch, loop body or macro call.
    pub(super) fn is_top_level(&self) -> bool {
        self.at_top() && self.captures.is_empty()
    }
}

struct Frame {
    name: String,
    /// Parameters bound to the caller's translated arguments.
    params: BTreeMap<String, Val>,
    /// The macro's own `set` variables: Jinja name → private name.
    locals: BTreeMap<String, String>,
    id: usize,
    /// `loops.len()` at the call: the caller's loop variables are not visible in the macro.
    loop_base: usize,
}

/// A variable bound at translation time rather than in Go: captured output, or a value Go
/// cannot hold in a variable of ours (a message, a tool, a constant list, JSON text).
struct Fragment {
    val: Val,
    blocks: Vec<usize>,
    generation: usize,
}

/// The Go variables (`$j_name`) a piece of translated text reads.
fn go_vars_in(text: &str) -> BTreeSet<&str> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(p) = rest.find("$j_") {
        let tail = &rest[p..];
        let end = tail[1..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(tail.len(), |e| e + 1);
        out.insert(&tail[..end]);
        rest = &tail[end..];
    }
    out
}

impl<'o> Translator<'o> {
    /// Records the template's top-level macro definitions (inlined at their calls).
    pub(super) fn collect_macros(&mut self, stmts: &'o [Stmt<'o>]) {
        for s in stmts {
            if let Stmt::Macro(m) = s {
                let m: &'o ast::Macro<'o> = m;
                self.st.macros.entry(m.name.to_string()).or_insert(m);
            }
        }
    }
}

impl Translator<'_> {
    pub(super) fn stmts(&mut self, stmts: &[Stmt<'_>]) -> Result<(), Untranslatable> {
        for s in stmts {
            if self.out.len() > MAX_OUTPUT {
                bail!(0, "{TOO_LARGE}");
            }
            let catch =
                self.st.lenient && (!self.st.blocks.is_empty() || matches!(s, Stmt::IfCond(_) | Stmt::ForLoop(_)));
            if !catch {
                self.stmt(s)?;
                continue;
            }
            let (mark, loops) = (self.out.len(), self.loops.len());
            if let Err(e) = self.stmt(s) {
                if e.construct == TOO_LARGE {
                    return Err(e);
                }
                self.out.truncate(mark);
                self.loops.truncate(loops);
                self.leave_out(s, &e);
            }
        }
        Ok(())
    }

    /// Records a statement left out by lenient mode; the variables it sets become
    /// untranslatable to read (their Go values would be wrong).
    fn leave_out(&mut self, s: &Stmt<'_>, e: &Untranslatable) {
        let tools = self.st.tools_ctx.last().copied().unwrap_or(false) || mentions(std::slice::from_ref(s), "tools");
        let mut what = e.construct.clone();
        if e.line > 0 {
            what.push_str(&format!(" at line {}", e.line));
        }
        if tools {
            what.push_str(" (tools)");
        }
        if !self.st.left_out.contains(&what) {
            self.st.left_out.push(what.clone());
        }
        let mut targets = BTreeSet::new();
        let mut seen = BTreeSet::new();
        self.set_targets(std::slice::from_ref(s), &mut targets, &mut seen);
        for name in targets {
            let internal = self.resolve_local(&name);
            self.st.fragments.remove(&internal);
            self.poisoned.insert(
                internal,
                Untranslatable { construct: format!("variable {name} set in a left-out statement"), line: e.line },
            );
        }
    }

    /// The variables (and namespace attributes) a statement list may set, following the
    /// macros it calls.
    fn set_targets(&self, stmts: &[Stmt<'_>], out: &mut BTreeSet<String>, seen: &mut BTreeSet<String>) {
        for s in stmts {
            match s {
                Stmt::Set(set) => target_name(&set.target, out),
                Stmt::SetBlock(b) => {
                    target_name(&b.target, out);
                    self.set_targets(&b.body, out, seen);
                }
                Stmt::IfCond(c) => {
                    self.set_targets(&c.true_body, out, seen);
                    self.set_targets(&c.false_body, out, seen);
                }
                Stmt::ForLoop(f) => {
                    self.set_targets(&f.body, out, seen);
                    self.set_targets(&f.else_body, out, seen);
                }
                _ => {}
            }
            let text = format!("{s:?}");
            let called: Vec<&ast::Macro<'_>> = self
                .st
                .macros
                .iter()
                .filter(|(n, _)| !seen.contains(*n) && text.contains(&format!("\"{n}\"")))
                .map(|(_, m)| *m)
                .collect();
            for m in called {
                seen.insert(m.name.to_string());
                // A macro's own variables are private; only namespace attributes escape.
                let mut inner = BTreeSet::new();
                self.set_targets(&m.body, &mut inner, seen);
                out.extend(inner.into_iter().filter(|n| n.contains('.')));
            }
        }
    }

    /// A Jinja variable name as the translator stores it (a macro's own variables are private).
    fn resolve_local(&self, name: &str) -> String {
        match self.st.frames.last() {
            Some(f) => f.locals.get(name).cloned().unwrap_or_else(|| name.to_string()),
            None => name.to_string(),
        }
    }

    /// The name a `set` inside the current macro call assigns (created on first use).
    fn local_name(&mut self, name: &str) -> String {
        match self.st.frames.last_mut() {
            Some(f) => {
                f.params.remove(name);
                let id = f.id;
                f.locals.entry(name.to_string()).or_insert_with(|| format!("m{id}_{name}")).clone()
            }
            None => name.to_string(),
        }
    }

    /// Translates a branch or loop body (a block of its own).
    pub(super) fn block(&mut self, body: &[Stmt<'_>], tools: bool) -> Result<(), Untranslatable> {
        self.st.block_counter += 1;
        let tools = tools || self.st.tools_ctx.last().copied().unwrap_or(false);
        self.st.blocks.push(self.st.block_counter);
        self.st.tools_ctx.push(tools);
        let r = self.stmts(body);
        self.st.tools_ctx.pop();
        self.st.blocks.pop();
        r
    }

    /// Translates into a separate buffer: the Go text, and whether it assigned variables
    /// other than the private ones of macros called inside it.
    fn capture(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<(), Untranslatable>,
    ) -> Result<(String, bool), Untranslatable> {
        let saved = std::mem::take(&mut self.out);
        self.st.captures.push((self.st.frames.len(), false));
        let r = f(self);
        let effects = self.st.captures.pop().is_some_and(|(_, e)| e);
        let text = std::mem::replace(&mut self.out, saved);
        r?;
        if text.len() > MAX_OUTPUT {
            bail!(0, "{TOO_LARGE}");
        }
        Ok((text, effects))
    }

    pub(super) fn is_macro(&self, name: &str) -> bool {
        self.st.macros.contains_key(name) && self.bound_name(name).is_none()
    }

    /// A name bound by a macro call (parameter or private variable) or to captured output.
    fn bound_name(&self, name: &str) -> Option<()> {
        let f = self.st.frames.last()?;
        (f.params.contains_key(name) || f.locals.contains_key(name)).then_some(())
    }

    /// Inlines a macro call: its output, as a fragment printed where the call is printed.
    pub(super) fn inline_macro(&mut self, name: &str, c: &ast::Call<'_>, line: usize) -> Result<Val, Untranslatable> {
        let Some(def) = self.st.macros.get(name).copied() else { bail!(line, "function {name}()") };
        if self.st.frames.iter().any(|f| f.name == name) {
            bail!(line, "recursive macro {name}");
        }
        if self.st.frames.len() >= MAX_MACRO_DEPTH {
            bail!(line, "macro calls nested deeper than {MAX_MACRO_DEPTH}");
        }
        let mut names = Vec::new();
        for a in &def.args {
            match a {
                Expr::Var(v) => names.push(v.id),
                _ => bail!(line, "macro {name} with a complex parameter"),
            }
        }
        // Arguments are translated where the call is.
        let mut params = BTreeMap::new();
        let mut pos = 0;
        for a in &c.args {
            match a {
                ast::CallArg::Pos(e) => {
                    let Some(n) = names.get(pos) else { bail!(line, "macro {name} called with too many arguments") };
                    let v = self.expr(e)?;
                    params.insert(n.to_string(), v);
                    pos += 1;
                }
                ast::CallArg::Kwarg(k, e) => {
                    if !names.contains(k) {
                        bail!(line, "macro {name} called with an unknown argument {k}");
                    }
                    let v = self.expr(e)?;
                    params.insert(k.to_string(), v);
                }
                _ => bail!(line, "macro {name} called with * or ** arguments"),
            }
        }
        self.st.inlined += 1;
        let frame = Frame {
            name: name.to_string(),
            params,
            locals: BTreeMap::new(),
            id: self.st.inlined,
            loop_base: self.loops.len(),
        };
        let first_default = names.len().saturating_sub(def.defaults.len());
        let (text, effects) = self.capture(|t| {
            t.st.frames.push(frame);
            let r = (|| {
                // Defaults are evaluated in the macro's scope (earlier parameters visible).
                for (i, n) in names.iter().enumerate() {
                    if t.st.frames.last().is_some_and(|f| f.params.contains_key(*n)) {
                        continue;
                    }
                    let v = match i.checked_sub(first_default) {
                        Some(d) => t.expr(&def.defaults[d])?,
                        None => Val::Undefined,
                    };
                    if let Some(f) = t.st.frames.last_mut() {
                        f.params.insert(n.to_string(), v);
                    }
                }
                t.stmts(&def.body)
            })();
            t.st.frames.pop();
            r
        })?;
        if effects {
            self.st.impure.insert(text.clone());
            return Ok(Val::Fragment(text));
        }
        Ok(simple_fragment(&text).unwrap_or(Val::Fragment(text)))
    }

    /// A name bound by the statement level: a macro parameter or private variable, the
    /// caller's loop variable (undefined inside a macro), or captured output.
    pub(super) fn bound_var(&mut self, id: &str, line: usize) -> Result<Option<Val>, Untranslatable> {
        if let Some(f) = self.st.frames.last() {
            if let Some(v) = f.params.get(id) {
                return Ok(Some(v.clone()));
            }
            if let Some(n) = f.locals.get(id).cloned() {
                if let Some(v) = self.fragment_var(&n, line)? {
                    return Ok(Some(v));
                }
                if let Some(e) = self.poisoned.get(&n) {
                    return Err(e.clone());
                }
                // Not assigned yet (`set tool = tool.function` reads the loop's `tool`).
                if let Some(k) = self.vars.get(&n) {
                    return Ok(Some(Val::Go(format!("${}", go_var(&n)), *k)));
                }
                if !self.loops[f.loop_base.min(self.loops.len())..].iter().any(|l| l.target == id) {
                    return Ok(Some(Val::Undefined));
                }
            }
            if self.loops[..f.loop_base.min(self.loops.len())].iter().any(|l| l.target == id) {
                return Ok(Some(Val::Undefined));
            }
        }
        self.fragment_var(id, line)
    }

    fn fragment_var(&self, name: &str, line: usize) -> Result<Option<Val>, Untranslatable> {
        let Some(f) = self.st.fragments.get(name) else { return Ok(None) };
        if !self.st.blocks.starts_with(&f.blocks) {
            bail!(line, "output captured into {name} inside a branch or loop, read outside it");
        }
        let text = format!("{:?}", f.val);
        for v in go_vars_in(&text) {
            if self.st.last_assign.get(v).is_some_and(|g| *g > f.generation) {
                bail!(line, "output captured into {name}, read after a variable it prints changed");
            }
        }
        Ok(Some(f.val.clone()))
    }

    /// Binds a variable to captured output (see the module documentation).
    fn bind_fragment(&mut self, name: &str, val: Val, line: usize) -> Result<(), Untranslatable> {
        if matches!(&val, Val::Fragment(text) if self.st.impure.contains(text)) {
            bail!(line, "captured output that sets variables");
        }
        self.poisoned.remove(name);
        self.st
            .fragments
            .insert(name.to_string(), Fragment { val, blocks: self.st.blocks.clone(), generation: self.st.generation });
        Ok(())
    }

    /// Bookkeeping of an assignment to a variable (by its stored name).
    pub(super) fn assigned(&mut self, name: &str) {
        self.st.generation += 1;
        self.st.last_assign.insert(format!("${}", go_var(name)), self.st.generation);
        for i in 0..self.st.captures.len() {
            let base = self.st.captures[i].0;
            let private =
                self.st.frames.get(base..).is_some_and(|fs| fs.iter().any(|f| f.locals.values().any(|n| n == name)));
            if !private {
                self.st.captures[i].1 = true;
            }
        }
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
                if let Expr::IfExpr(ie) = &e.expr {
                    return self.emit_if_expr(ie, line);
                }
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
                // `tools` defaulted to none or [] when undefined: Ollama's empty .Tools (tools.rs).
                if self.tools_default_if(c) {
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
                let tools = mentions_expr(&c.expr, "tools");
                self.out.push_str(&format!("{{{{ if {cond} }}}}"));
                self.block(&c.true_body, tools)?;
                if !c.false_body.is_empty() {
                    self.out.push_str("{{ else }}");
                    self.block(&c.false_body, tools)?;
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
            Stmt::SetBlock(b) => self.set_block(b, b.span().start_line as usize),
            Stmt::AutoEscape(b) => bail!(b.span().start_line as usize, "{{% autoescape %}}"),
            Stmt::FilterBlock(b) => bail!(b.span().start_line as usize, "{{% filter %}}"),
            Stmt::Macro(m) => {
                let def: &ast::Macro<'_> = m;
                match self.st.macros.get(m.name) {
                    // The definition itself prints nothing; calls are inlined.
                    Some(d) if std::ptr::eq(*d as *const ast::Macro<'_> as *const u8, def as *const _ as *const u8) => {
                        Ok(())
                    }
                    _ => bail!(m.span().start_line as usize, "macro {} defined inside a block", m.name),
                }
            }
            Stmt::CallBlock(c) => bail!(c.span().start_line as usize, "{{% call %}}"),
            Stmt::Continue(c) => self.loop_control("continue", c.span().start_line as usize),
            Stmt::Break(b) => self.loop_control("break", b.span().start_line as usize),
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
                // Python's str(): strings and numbers as they are, booleans capitalized; lists
                // and objects (Python's repr) are written as JSON, with a note.
                Kind::ArgValue => {
                    self.note("tool-call argument lists and objects printed as JSON (Python prints their repr)");
                    self.out.push_str(&format!(
                        "{{{{ if eq (slice (json {g}) 0 1) \"t\" \"f\" }}}}{{{{ if {g} }}}}True{{{{ else }}}}False{{{{ end }}}}\
                         {{{{ else if eq (slice (json {g}) 0 1) \"\\\"\" }}}}{{{{ {g} }}}}{{{{ else }}}}{{{{ json {g} }}}}{{{{ end }}}}"
                    ))
                }
                Kind::Undefined => {}
                k => bail!(line, "printing a {k:?} value"),
            },
            v @ Val::IntOff(..) => {
                // Computed with tallies (loops.rs).
                let g = self.int_operand(v, line)?;
                self.out.push_str(&format!("{{{{ {g} }}}}"));
            }
            Val::Relative { .. } => bail!(line, "printing a message"),
            Val::List(_) => bail!(line, "printing a list"),
            Val::Raw(r) | Val::Fragment(r) => self.out.push_str(&r),
            Val::Dict(_) => bail!(line, "printing a dict"),
        }
        Ok(())
    }

    pub(super) fn set(&mut self, target: &Expr<'_>, value: &Expr<'_>, line: usize) -> Result<(), Untranslatable> {
        // `set x = x | f` in a macro whose parameter is x: the value reads the parameter.
        let param = match target {
            Expr::Var(v) => self.st.frames.last().and_then(|f| f.params.get(v.id).cloned()).map(|p| (v.id, p)),
            _ => None,
        };
        let name = match target {
            Expr::Var(v) => self.local_name(v.id),
            Expr::GetAttr(a) => match &a.expr {
                Expr::Var(ns) if self.vars.get(ns.id) == Some(&Kind::Namespace) => format!("{}.{}", ns.id, a.name),
                _ => bail!(line, "assignment to an attribute"),
            },
            _ => bail!(line, "assignment to a tuple"),
        };
        if let (Some((id, p)), Some(f)) = (&param, self.st.frames.last_mut()) {
            f.params.insert(id.to_string(), p.clone());
        }
        // A value that cannot be translated poisons the variable: only a later read fails
        // (counters that only feed raise_exception checks never are read).
        let mark = self.out.len();
        let impure = self.st.impure.len();
        let r = self.set_named(&name, value, line);
        if let (Some((id, _)), Some(f)) = (&param, self.st.frames.last_mut()) {
            f.params.remove(*id);
        }
        match r {
            Ok(()) => Ok(()),
            // Dropping a macro call that sets variables would lose those assignments.
            Err(e) if self.st.impure.len() != impure => Err(e),
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
                if !self.st.frames.is_empty() {
                    bail!(line, "namespace() inside a macro");
                }
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
        if let Some(r) = self.set_loop_target(name, &v, line) {
            return r;
        }
        if let Some(r) = self.set_maybe_message(name, &v) {
            return r;
        }
        // `set tools = []` (when none were given): an empty list of the same data.
        if matches!(&v, Val::List(items) if items.is_empty()) || matches!(v, Val::Undefined) {
            let current = match self.vars.get(name) {
                Some(k) => Some((format!("${}", go_var(name)), *k)),
                None if name == "tools" => Some(("$.Tools".to_string(), Kind::Tools)),
                None if name == "messages" => Some(("$.Messages".to_string(), Kind::Messages)),
                None => None,
            };
            if let Some((g, k @ (Kind::Tools | Kind::Messages | Kind::ToolCalls))) = current {
                return self.assign(name, Val::Go(format!("(slice {g} 0 0)"), k), line);
            }
        }
        // Values Go cannot hold in one of our variables are bound at translation time.
        if matches!(
            v,
            Val::Fragment(_)
                | Val::Dict(_)
                | Val::List(_)
                | Val::Raw(_)
                | Val::Go(
                    _,
                    Kind::Message
                        | Kind::ToolCall
                        | Kind::Tool
                        | Kind::ToolFunction
                        | Kind::ToolCallFunction
                        | Kind::Arguments
                        | Kind::Params
                        | Kind::Props
                        | Kind::Prop
                        | Kind::StrList
                        | Kind::JsonList
                        | Kind::SplitParts
                )
        ) && !self.loops.iter().any(|l| l.target == name)
        {
            return self.bind_fragment(name, v, line);
        }
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
        self.vals.assigned(name, &v, self.vars.contains_key(name));
        let (operand, kind) = self.operand(v, line)?;
        let kind = match (kind, self.vars.get(name)) {
            (Kind::Undefined, Some(k)) => *k,
            (Kind::Undefined, None) => Kind::Str,
            (k, _) => k,
        };
        self.declare(name, kind, line)?;
        self.poisoned.remove(name);
        self.note_list_assign(name, &operand, kind);
        self.out.push_str(&format!("{{{{ ${} = {} }}}}", go_var(name), operand));
        self.mark_defined(name);
        self.assigned(name);
        // A variable holding captured output set in an enclosing block: which one it holds
        // after this block depends on the branch taken.
        if let Some(f) = self.st.fragments.remove(name) {
            if f.blocks != self.st.blocks {
                self.poisoned.insert(
                    name.to_string(),
                    Untranslatable { construct: format!("variable {name} holding captured output or a value"), line },
                );
            }
        }
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
            v @ Val::IntOff(..) => (self.int_operand(v, line)?, Kind::Int),
            Val::Relative { .. } => bail!(line, "a neighbouring message as a value"),
            Val::List(_) => bail!(line, "a list value"),
            Val::Raw(r) | Val::Fragment(r) => (self.raw_value(&r), Kind::Str),
            Val::Dict(_) => bail!(line, "a dict value"),
        })
    }

    pub(super) fn for_loop(&mut self, f: &ast::ForLoop<'_>, line: usize) -> Result<(), Untranslatable> {
        if f.recursive {
            bail!(line, "recursive loop");
        }
        let target = match &f.target {
            Expr::Var(v) => v.id.to_string(),
            Expr::List(t) => return self.pairs_loop(f, t, line),
            _ => bail!(line, "loop over key/value pairs"),
        };
        // Reversed lists and range() (loops.rs).
        if let Some(r) = self.special_loop(f, &target, line) {
            return r;
        }
        let iter = self.expr(&f.iter)?;
        let (iter, kind) = match iter {
            Val::Go(g, k @ (Kind::Messages | Kind::Tools | Kind::ToolCalls)) => (g, k),
            Val::Undefined => {
                // Looping over an undefined value yields nothing (the else branch).
                self.stmts(&f.else_body)?;
                return Ok(());
            }
            Val::List(items) => return self.unrolled_loop(f, &target, items, line),
            Val::Go(g, Kind::SplitParts) => return self.split_loop(f, &target, g, line),
            other => return self.schema_loop(f, &target, other, line),
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
        self.vals.loop_nest.insert(index.clone(), self.st.blocks.len() + 1);
        self.out.push_str(&format!("{{{{ range {index}, {item} := {iter} }}}}"));
        self.loop_body(f, line)?;
        if let Some(p) = &prev {
            self.out.push_str(&format!("{{{{ {p} = {item} }}}}"));
        }
        if !f.else_body.is_empty() {
            self.out.push_str("{{ else }}");
            self.loops.pop();
            self.block(&f.else_body, false)?;
        } else {
            self.loops.pop();
        }
        self.out.push_str("{{ end }}");
        Ok(())
    }
}

impl Translator<'_> {
    /// `{{ a if c else b }}` printed: an `if` around each side's printing (either may be JSON
    /// or captured output, which Go cannot hold as a value).
    fn emit_if_expr(&mut self, ie: &ast::IfExpr<'_>, line: usize) -> Result<(), Untranslatable> {
        let cond = self.cond(&ie.test_expr, line)?;
        match cond.as_str() {
            "true" => {
                let v = self.expr(&ie.true_expr)?;
                return self.emit(v, line);
            }
            "false" => {
                let v = match &ie.false_expr {
                    Some(f) => self.expr(f)?,
                    None => Val::Undefined,
                };
                return self.emit(v, line);
            }
            _ => {}
        }
        self.out.push_str(&format!("{{{{ if {cond} }}}}"));
        let v = self.expr(&ie.true_expr)?;
        self.emit(values::narrow(&cond, v, true), line)?;
        if let Some(f) = &ie.false_expr {
            self.out.push_str("{{ else }}");
            let v = self.expr(f)?;
            self.emit(values::narrow(&cond, v, false), line)?;
        }
        self.out.push_str("{{ end }}");
        Ok(())
    }

    /// `for k, v in arguments.items()` (or `|items`) over a tool call's arguments: Go ranges
    /// over the map in sorted key order, which is the order Ollama can give them in.
    fn pairs_loop(&mut self, f: &ast::ForLoop<'_>, t: &ast::List<'_>, line: usize) -> Result<(), Untranslatable> {
        let names: Vec<&str> = t
            .items
            .iter()
            .filter_map(|e| match e {
                Expr::Var(v) => Some(v.id),
                _ => None,
            })
            .collect();
        let base = match &f.iter {
            Expr::Call(c) if c.args.is_empty() => match &c.expr {
                Expr::GetAttr(a) if a.name == "items" => &a.expr,
                _ => bail!(line, "loop over key/value pairs"),
            },
            // `|dictsort` of a property map (tools.rs: sorted by Go).
            Expr::Filter(fl) if fl.name == "dictsort" && fl.args.is_empty() => match &fl.expr {
                Some(e) if matches!(self.expr(e), Ok(Val::Go(_, Kind::Props | Kind::Arguments | Kind::ArgValue))) => {
                    self.note("|dictsort visits keys in Go's byte order (case-sensitive)");
                    e
                }
                _ => bail!(line, "loop over key/value pairs"),
            },
            Expr::Filter(fl) if fl.name == "items" && fl.args.is_empty() => match &fl.expr {
                Some(e) => e,
                None => bail!(line, "loop over key/value pairs"),
            },
            _ => bail!(line, "loop over key/value pairs"),
        };
        if names.len() != 2 || t.items.len() != 2 {
            bail!(line, "loop over key/value pairs into {} names", t.items.len());
        }
        if let Val::Go(g, Kind::Props) = self.expr(base)? {
            return self.map_loop(f, &g, &names, line);
        }
        if f.recursive || f.filter_expr.is_some() || mentions(&f.body, "loop") {
            bail!(line, "loop over key/value pairs using loop or a filter");
        }
        let g = match self.expr(base)? {
            // A tool-call argument that is an object (under `is mapping`): a map as well.
            Val::Go(g, Kind::Arguments | Kind::ArgValue) => g,
            Val::Undefined => return self.block(&f.else_body, false),
            other => bail!(line, "loop over the key/value pairs of {}", describe(&other)),
        };
        let (k, v) = (format!("${}", go_var(names[0])), format!("${}", go_var(names[1])));
        let depth = self.loops.len();
        for (name, expr, kind) in [(names[0], &k, Kind::Str), (names[1], &v, Kind::ArgValue)] {
            self.loops.push(LoopCtx {
                iter: g.clone(),
                index: k.clone(),
                target: name.to_string(),
                expr: expr.clone(),
                prev: None,
                kind,
            });
        }
        self.out.push_str(&format!("{{{{ range {k}, {v} := {g} }}}}"));
        let r = self.block(&f.body, false);
        self.loops.truncate(depth);
        r?;
        if !f.else_body.is_empty() {
            self.out.push_str("{{ else }}");
            self.block(&f.else_body, false)?;
        }
        self.out.push_str("{{ end }}");
        Ok(())
    }

    /// A Jinja test on a tool-call argument value, by the first character of its JSON
    /// (`"` string, `t`/`f` boolean, `{` object, `[` list, `n` null, else a number).
    pub(super) fn arg_value_test(&mut self, g: &str, test: &str, line: usize) -> Result<Val, Untranslatable> {
        let is = |firsts: &str| Val::Go(format!("(eq (slice (json {g}) 0 1) {firsts})"), Kind::Bool);
        Ok(match test {
            "string" => is("\"\\\"\""),
            "number" => Val::Go(format!("(not {})", go_of(is("\"\\\"\" \"t\" \"f\" \"{\" \"[\" \"n\""))), Kind::Bool),
            "boolean" => is("\"t\" \"f\""),
            "mapping" => is("\"{\""),
            "sequence" | "iterable" => is("\"\\\"\" \"[\""),
            "defined" => Val::Bool(true),
            "none" => is("\"n\""),
            other => bail!(line, "test `is {other}` on a tool-call argument"),
        })
    }

    /// A loop over a constant list (`for a in ['x', 'y']`, a macro's list argument): the body
    /// translated once per item, with the loop name bound to it.
    fn unrolled_loop(
        &mut self,
        f: &ast::ForLoop<'_>,
        target: &str,
        items: Vec<Val>,
        line: usize,
    ) -> Result<(), Untranslatable> {
        if f.filter_expr.is_some() || mentions(&f.body, "loop") || mentions_loop_control(&f.body) {
            bail!(line, "loop over a list using loop, a filter, break or continue");
        }
        if items.is_empty() {
            return self.block(&f.else_body, false);
        }
        for item in items {
            let r = match self.st.frames.last_mut() {
                Some(fr) => {
                    let saved = fr.params.insert(target.to_string(), item);
                    let r = self.block(&f.body, false);
                    if let Some(fr) = self.st.frames.last_mut() {
                        match saved {
                            Some(v) => fr.params.insert(target.to_string(), v),
                            None => fr.params.remove(target),
                        };
                    }
                    r
                }
                None => {
                    let fragment =
                        Fragment { val: item, blocks: self.st.blocks.clone(), generation: self.st.generation };
                    let saved = self.st.fragments.insert(target.to_string(), fragment);
                    let r = self.block(&f.body, false);
                    match saved {
                        Some(v) => self.st.fragments.insert(target.to_string(), v),
                        None => self.st.fragments.remove(target),
                    };
                    r
                }
            };
            r?;
        }
        Ok(())
    }

    /// `{% break %}` / `{% continue %}`: Go's own (Go ≥ 1.18), inside a loop of this scope.
    fn loop_control(&mut self, what: &str, line: usize) -> Result<(), Untranslatable> {
        let base = self.st.frames.last().map_or(0, |f| f.loop_base);
        if self.loops.len() <= base {
            bail!(line, "{{% {what} %}} outside a loop");
        }
        self.out.push_str(&format!("{{{{ {what} }}}}"));
        Ok(())
    }

    /// `{% set x %}...{% endset %}`: `x` holds the body's output (a fragment).
    fn set_block(&mut self, b: &ast::SetBlock<'_>, line: usize) -> Result<(), Untranslatable> {
        let name = match &b.target {
            Expr::Var(v) => self.local_name(v.id),
            _ => bail!(line, "{{% set %}} block into an attribute"),
        };
        let (text, effects) = self.capture(|t| t.stmts(&b.body))?;
        if effects {
            bail!(line, "{{% set %}} block that sets variables");
        }
        let mut filter = b.filter.as_ref();
        while let Some(f) = filter {
            match f {
                Expr::Filter(f) if f.name == "trim" && f.args.is_empty() => {
                    self.note("|trim / .strip() translated as the identity (Go templates cannot trim)");
                    filter = f.expr.as_ref();
                }
                _ => bail!(line, "{{% set %}} block with a filter other than trim"),
            }
        }
        match simple_fragment(&text) {
            Some(v) => self.assign(&name, v, line),
            None => self.bind_fragment(&name, Val::Fragment(text), line),
        }
    }

    /// A list sliced from a start: `X[k:]`, `X[-k:]`, `X[n:]`, `X[n + k:]`.
    pub(super) fn slice_from(&mut self, g: &str, start: Val, line: usize) -> Result<String, Untranslatable> {
        Ok(match start {
            Val::Int(0) | Val::Undefined => g.to_string(),
            Val::Int(i) if i > 0 => format!("(slice {g} {i})"),
            // X[-k:] starts at len(X) - k = len(slice X k).
            Val::Int(i) => format!("(slice {g} (len (slice {g} {})))", -i),
            // Past the end or negative, Go's slice fails the rendering (never a wrong text).
            Val::Go(n, Kind::Int) => format!("(slice {g} {n})"),
            Val::IntOff(n, 0) => format!("(slice {g} {n})"),
            Val::IntOff(n, k) if k > 0 => format!("(slice (slice {g} {n}) {k})"),
            other => bail!(line, "slice starting at {}", describe(&other)),
        })
    }
}

/// Captured output made only of text and printed operands (`a{{ $x }}b`) is an ordinary
/// string value (`print "a" $x "b"`), which Go can hold, test and compare.
fn simple_fragment(text: &str) -> Option<Val> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(p) = rest.find("{{") {
        if p > 0 {
            parts.push(Val::Str(rest[..p].to_string()));
        }
        let inner = &rest[p + 2..];
        // The action's end, outside Go string literals.
        let (mut quoted, mut escaped, mut end) = (false, false, None);
        for (i, c) in inner.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                '}' if !quoted && inner[i..].starts_with("}}") => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let end = end?;
        let action = &inner[..end];
        if action.starts_with('-') || action.ends_with('-') || action.contains('`') {
            return None;
        }
        let action = action.trim();
        let first = action.split_whitespace().next()?;
        let second = action.split_whitespace().nth(1);
        if matches!(
            first,
            "if" | "else" | "end" | "range" | "with" | "break" | "continue" | "template" | "define" | "block"
        ) || matches!(second, Some(":=" | "="))
            || action.contains('|')
        {
            return None;
        }
        let operand = if action.contains(char::is_whitespace) && !(action.starts_with('(') && action.ends_with(')')) {
            format!("({action})")
        } else {
            action.to_string()
        };
        parts.push(match operand.strip_prefix('"').and_then(|o| o.strip_suffix('"')) {
            Some(lit) if !lit.contains('\\') && !lit.contains('"') => Val::Str(lit.to_string()),
            _ => Val::Go(operand, Kind::Str),
        });
        rest = &inner[end + 2..];
    }
    if !rest.is_empty() {
        parts.push(Val::Str(rest.to_string()));
    }
    Some(match parts.len() {
        0 => Val::Str(String::new()),
        1 => parts.remove(0),
        _ => Val::Concat(parts),
    })
}

fn go_of(v: Val) -> String {
    match v {
        Val::Go(g, _) => g,
        _ => String::new(),
    }
}

/// The name a `set` target assigns (`x`, or `ns.attr`).
fn target_name(e: &Expr<'_>, out: &mut BTreeSet<String>) {
    match e {
        Expr::Var(v) => {
            out.insert(v.id.to_string());
        }
        Expr::GetAttr(a) => {
            if let Expr::Var(ns) = &a.expr {
                out.insert(format!("{}.{}", ns.id, a.name));
            }
        }
        _ => {}
    }
}

/// Does an expression mention this identifier (cheap, textual)?
fn mentions_expr(e: &Expr<'_>, name: &str) -> bool {
    format!("{e:?}").contains(&format!("\"{name}\""))
}

impl Translator<'_> {
    /// How deep in branches and loop bodies the statement being translated sits.
    pub(super) fn nest_depth(&self) -> usize {
        self.st.blocks.len()
    }

    /// A loop body (a block of its own) for loops written elsewhere (tools.rs).
    pub(super) fn stmts_block(&mut self, body: &[Stmt<'_>]) -> Result<(), Untranslatable> {
        self.block(body, false)
    }

    /// Runs `f` with the name `target` bound to a value known here (as [`Self::unrolled_loop`]
    /// binds each item).
    pub(super) fn with_bound<R>(&mut self, target: &str, item: Val, f: impl FnOnce(&mut Self) -> R) -> R {
        match self.st.frames.last_mut() {
            Some(fr) => {
                let saved = fr.params.insert(target.to_string(), item);
                let r = f(self);
                if let Some(fr) = self.st.frames.last_mut() {
                    match saved {
                        Some(v) => fr.params.insert(target.to_string(), v),
                        None => fr.params.remove(target),
                    };
                }
                r
            }
            None => {
                let fragment = Fragment { val: item, blocks: self.st.blocks.clone(), generation: self.st.generation };
                let saved = self.st.fragments.insert(target.to_string(), fragment);
                let r = f(self);
                match saved {
                    Some(v) => self.st.fragments.insert(target.to_string(), v),
                    None => self.st.fragments.remove(target),
                };
                r
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{check, judge, opts};
    use super::super::{translate, translate_lenient};

    fn err(jinja: &str) -> String {
        translate(jinja, &opts()).unwrap_err().to_string()
    }

    const CHAT: &str = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}<|assistant|>";

    #[test]
    fn macros_are_inlined_with_positional_keyword_and_default_arguments() {
        let t = check(
            "{% macro render(c, prefix='> ', is_system=false) %}{% if is_system %}[sys]{% endif %}{{ prefix }}\
             {% if c is string %}{{ c }}{% else %}{% for i in c %}{{ i.text }}{% endfor %}{% endif %}{% endmacro %}\
             {% for m in messages %}<|{{ m.role }}|>{{ render(m.content, is_system=m.role == 'system') }}|\
             {{ render(prefix='#', c=m.content) }}\n{% endfor %}<|assistant|>",
        );
        assert!(t.template.contains("> {{ $j_m.Content }}|#{{ $j_m.Content }}"), "{}", t.template);
        assert!(!t.template.contains("macro"));
        // A macro's own variables are private to each call; the caller's loop variable is
        // not visible inside it.
        check(
            "{% macro tag(r) %}{% set m = '<' + r + '>' %}{{ m }}{{ message }}{% endmacro %}\
             {% for message in messages %}{{ tag(message.role) }}{{ tag('x') }}{{ message.content }}\n{% endfor %}",
        );
    }

    #[test]
    fn set_from_a_macro_and_set_blocks_print_where_read() {
        check(
            "{% macro render(c) %}{% if c is string %}{{ c }}{% endif %}{% endmacro %}\
             {% for m in messages %}{% set content = render(m.content) | trim %}<|{{ m.role }}|>{{ content }}\n{% endfor %}<|assistant|>",
        );
        // Text and printed values only: an ordinary string value, which can be tested.
        let t = check(
            "{% set sys %}You are {{ 'helpful' }}{{ messages[0].role }}.{% endset %}{% for m in messages %}\
             {% if loop.first and m.role != 'system' and sys %}<|system|>{{ sys }}\n{% endif %}<|{{ m.role }}|>{{ m.content }}\n\
             {% endfor %}<|assistant|>",
        );
        assert!(
            t.template.contains("{{ $j_sys = (print \"You are helpful\" ((index $.Messages 0).Role) \".\") }}"),
            "{}",
            t.template
        );
        // With control flow: printed where it is read.
        let t = check(
            "{% set sys %}{% for m in messages %}{% if m.role == 'system' %}[{{ m.content }}]{% endif %}{% endfor %}{% endset %}\
             {% for m in messages %}<|{{ m.role }}|>{{ m.content }}{{ sys }}\n{% endfor %}<|assistant|>",
        );
        assert!(!t.template.contains("$j_sys"), "{}", t.template);
        // An empty list replacing the tools when none are given.
        let t = check(&format!("{{% if tools is none %}}{{% set tools = [] %}}{{% endif %}}{{% if tools | length > 0 %}}T{{% endif %}}{CHAT}"));
        assert!(t.template.contains("{{ $j_tools = (slice $.Tools 0 0) }}"), "{}", t.template);
        // Key/value loops over tool-call arguments, conditional expressions printed.
        let t = check(
            "{% for m in messages %}{{ m.role }}: {{ m.content }}{% if m.tool_calls %}{% for tc in m.tool_calls %}\
             {% set tc = tc.function %}<call>{{ tc.name }}{% for k, v in tc.arguments.items() %}\
             <{{ k }}>{{ v | tojson if v is not string else v }}|{{ v }}|{{ 's' if v is string else 'n' }}</{{ k }}>\
             {% endfor %}{% endfor %}{% endif %}\n{% endfor %}",
        );
        assert!(t.template.contains("{{ range $j_k, $j_v := "), "{}", t.template);
        // Loops over constant lists are unrolled.
        let t = check(
            "{% macro tags(attrs=[]) %}{% for a in attrs %} {{ a[0] }}={{ a[1] }}{% endfor %}{% endmacro %}\
             {% for m in messages %}<|{{ m.role }}{{ tags([['k', m.role], ['n', '1']]) }}{{ tags() }}|>{{ m.content }}\n{% endfor %}",
        );
        assert!(t.template.contains("<|{{ $j_m.Role }} k={{ $j_m.Role }} n=1|>"), "{}", t.template);
        // Values Go variables of ours cannot hold are bound at translation time.
        check(
            "{% set keys = ['user', 'assistant'] %}{% set first = messages[0] %}{% for m in messages %}\
             {% if m.role in keys %}<|{{ m.role }}|>{% endif %}{{ m.content }}|{{ first.role }}\n{% endfor %}",
        );
    }

    #[test]
    fn unsound_captures_are_untranslatable() {
        // Whether captured output is empty cannot be tested in Go.
        assert!(err("{% set x %}{% for m in messages %}{{ m.content }}{% endfor %}{% endset %}{% if x %}a{% endif %}")
            .contains("testing captured output"));
        // Captured in a branch, read after it.
        let e = err(&format!(
            "{{% if messages[0].role == 'system' %}}{{% set x %}}{{% for m in messages %}}S{{% endfor %}}{{% endset %}}{{% endif %}}{{{{ x }}}}{CHAT}"
        ));
        assert!(e.contains("inside a branch or loop, read outside it"), "{e}");
        // Printed after a variable it prints changed.
        let e = err("{% set ns = namespace(r='a') %}{% macro show() %}{% if ns.r %}{{ ns.r }}{% endif %}{% endmacro %}{% set s = show() %}{% set ns.r = 'b' %}{{ s }}");
        assert!(e.contains("read after a variable it prints changed"), "{e}");
        // A captured macro call that sets variables cannot be moved nor dropped.
        let e = err("{% set ns = namespace(n='') %}{% macro bump() %}{% set ns.n = 'x' %}y{% endmacro %}{% set s = bump() %}{{ ns.n }}");
        assert!(e.contains("captured output that sets variables"), "{e}");
        let e = err("{% set ns = namespace(n='') %}{% set s %}{% set ns.n = 'x' %}{% endset %}{{ ns.n }}");
        assert!(e.contains("block that sets variables"), "{e}");
    }

    #[test]
    fn recursion_and_blow_up_are_clear_errors() {
        let e = err("{% macro f(x) %}{{ f(x) }}{% endmacro %}{{ f(1) }}");
        assert!(e.contains("recursive macro f"), "{e}");
        // Each macro prints the previous one eight times: 8^9 copies of the text.
        let mut j = String::from("{% macro m0() %}0123456789abcdef{% endmacro %}");
        for i in 1..10 {
            let p = i - 1;
            j.push_str(&format!("{{% macro m{i}() %}}{}{{% endmacro %}}", format!("{{{{ m{p}() }}}}").repeat(8)));
        }
        j.push_str("{{ m9() }}");
        let e = err(&j);
        assert!(e.contains("larger than 1 MiB"), "{e}");
        // Lenient mode does not leave such a blow-up out.
        assert!(translate_lenient(
            &format!("{{% for m in messages %}}{{% if m %}}{{{{ m9() }}}}{{% endif %}}{{% endfor %}}{j}"),
            &opts()
        )
        .is_err());
    }

    #[test]
    fn break_continue_and_generation() {
        let t = check(
            "{% for m in messages %}{% if m.role == 'system' %}{% continue %}{% endif %}{{ m.role }}: {{ m.content }}\n\
             {% if loop.index0 == 2 %}{% break %}{% endif %}{% endfor %}",
        );
        assert!(t.template.contains("{{ continue }}") && t.template.contains("{{ break }}"), "{}", t.template);
        assert!(translate("{% break %}", &opts()).is_err());
        check(
            "{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}A: {{ m.content }}{% endgeneration %}\
             {% else %}{{ m.role }}: {{ m.content }}{% endif %}\n{% endfor %}",
        );
    }

    #[test]
    fn computed_and_negative_slices_and_indices() {
        let t = check(
            "{% set ns = namespace(last=0) %}{% for m in messages %}{% if m.role == 'user' %}{% set ns.last = loop.index0 %}{% endif %}{% endfor %}\
             {% for m in messages[ns.last:] %}{{ m.role }}: {{ m.content }}\n{% endfor %}\
             {% for m in messages[-1:] %}[{{ m.role }}]{% endfor %}{% if messages[-1].role == 'user' %}A:{% endif %}",
        );
        assert!(t.template.contains("(slice $.Messages $j_ns_last)"), "{}", t.template);
        assert!(t.template.contains("(index $.Messages (len (slice $.Messages 1)))"), "{}", t.template);
        check("{% for m in messages %}{% for f in messages[loop.index:] %}{{ f.role }},{% endfor %}{{ m.content }}\n{% endfor %}");
    }

    #[test]
    fn lenient_translation_leaves_out_what_sits_in_branches() {
        let jinja = format!(
            "{{% macro tooldoc(t) %}}{{{{ t.function.name | capitalize }}}}{{% endmacro %}}{{% if tools %}}<tools>{{% for t in tools %}}{{{{ tooldoc(t) }}}}{{% endfor %}}</tools>{{% endif %}}{CHAT}"
        );
        assert!(err(&jinja).contains("filter |capitalize"));
        let t = translate_lenient(&jinja, &opts()).unwrap();
        assert_eq!(t.left_out, ["filter |capitalize at line 1 (tools)"]);
        let v = judge(&t, &jinja);
        assert!(!v.is_verified());
        assert!(
            v.identical >= 5 && v.differences.iter().all(|d| d.conversation.starts_with("tools")),
            "{:#?}",
            v.differences
        );
        // What a left-out statement would set cannot be read afterwards.
        let jinja = format!(
            "{{% set ns = namespace(flag=false) %}}{{% for m in messages %}}{{% if m.content | weird %}}{{% set ns.flag = true %}}{{% endif %}}{{% endfor %}}\
             {{% if ns.flag %}}x{{% endif %}}{CHAT}"
        );
        let t = translate_lenient(&jinja, &opts()).unwrap();
        assert_eq!(t.left_out.len(), 2, "{:?}", t.left_out);
        assert!(t.left_out[1].starts_with("variable ns.flag set in a left-out statement"), "{:?}", t.left_out);
        // A whole top-level loop can be left out (as if it ran no iteration).
        let jinja = format!("{{% for m in messages[::2] %}}{{{{ m.role }}}}{{% endfor %}}{CHAT}");
        let t = translate_lenient(&jinja, &opts()).unwrap();
        assert_eq!(t.left_out, ["slice with a step (reversed list) at line 1"]);
        // A top-level statement that fails still fails.
        assert!(translate_lenient(&format!("{{{{ messages | weird }}}}{CHAT}"), &opts()).is_err());
    }
}
