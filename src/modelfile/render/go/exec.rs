//! Executing a parsed Go template: Go's evaluation rules (fields of maps and structs,
//! `missingkey=zero`, truthiness, variables and scopes, range over slices, maps and ints,
//! break/continue, `template` calls) and the builtin functions, plus Ollama's `json`,
//! `currentDate`, `yesterdayDate` and `toTypeScriptType`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::parse::{Arg, Branch, Cmd, Node, Pipe, Tree};
use super::value::{format_g, Kind, Value};

/// Execution limits: Go has none but its recursion depth; a verification must end.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Output bytes.
    pub max_output: usize,
    /// Nodes evaluated.
    pub max_steps: u64,
    /// Nested `template` calls (Go: 100000).
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_output: 4 << 20, max_steps: 2_000_000, max_depth: 200 }
    }
}

pub struct Env<'a> {
    pub tree: &'a Tree,
    /// The root list to execute (Ollama's legacy path cuts it at `.Response`).
    pub root: &'a [Node],
    /// `currentDate` (YYYY-MM-DD) and the day before.
    pub today: &'a str,
    pub yesterday: &'a str,
    pub limits: Limits,
}

enum Flow {
    Normal,
    Break,
    Continue,
}

struct State<'a> {
    env: &'a Env<'a>,
    out: String,
    vars: Vec<(String, Value)>,
    steps: u64,
    depth: usize,
    /// The node being executed, for error messages.
    at: std::rc::Rc<str>,
    line: usize,
}

type R<T> = Result<T, String>;

/// The names of the functions a TEMPLATE may call (Go's builtins and Ollama's).
pub fn is_func(name: &str) -> bool {
    matches!(
        name,
        "and"
            | "or"
            | "not"
            | "len"
            | "index"
            | "slice"
            | "print"
            | "printf"
            | "println"
            | "html"
            | "js"
            | "urlquery"
            | "call"
            | "eq"
            | "ne"
            | "lt"
            | "le"
            | "gt"
            | "ge"
            | "json"
            | "currentDate"
            | "yesterdayDate"
            | "toTypeScriptType"
    )
}

/// Executes `env.root` with `data` as dot and `$`.
pub fn execute(env: &Env<'_>, data: &Value) -> R<String> {
    let mut st = State {
        env,
        out: String::new(),
        vars: vec![("$".into(), data.clone())],
        steps: 0,
        depth: 0,
        at: "".into(),
        line: 1,
    };
    match st.list(env.root, data) {
        Ok(_) => Ok(st.out),
        Err(e) => Err(e),
    }
}

impl State<'_> {
    fn fail(&self, msg: impl std::fmt::Display) -> String {
        if self.at.is_empty() {
            format!("template: :{}: {msg}", self.line)
        } else {
            format!("template: :{}: executing \"\" at <{}>: {msg}", self.line, self.at)
        }
    }

    fn step(&mut self) -> R<()> {
        self.steps += 1;
        if self.steps > self.env.limits.max_steps {
            return Err(format!("template: execution stopped after {} steps", self.env.limits.max_steps));
        }
        Ok(())
    }

    fn write(&mut self, s: &str) -> R<()> {
        if self.out.len() + s.len() > self.env.limits.max_output {
            return Err(format!("template: output exceeds {} bytes", self.env.limits.max_output));
        }
        self.out.push_str(s);
        Ok(())
    }

    fn list(&mut self, nodes: &[Node], dot: &Value) -> R<Flow> {
        for n in nodes {
            match self.node(n, dot)? {
                Flow::Normal => {}
                f => return Ok(f),
            }
        }
        Ok(Flow::Normal)
    }

    fn node(&mut self, n: &Node, dot: &Value) -> R<Flow> {
        self.step()?;
        match n {
            Node::Text(t) => self.write(t)?,
            Node::Action { line, pipe } => {
                self.line = *line;
                let v = self.pipeline(pipe, dot)?;
                if pipe.decl.is_empty() {
                    let s = self.printable(&v)?;
                    self.write(&s)?;
                }
            }
            Node::If(b) => return self.if_with(b, dot, false),
            Node::With(b) => return self.if_with(b, dot, true),
            Node::Range(b) => return self.range(b, dot),
            Node::Break => return Ok(Flow::Break),
            Node::Continue => return Ok(Flow::Continue),
            Node::Template { line, name, pipe } => {
                self.line = *line;
                let Some(body) = self.env.tree.defines.get(name) else {
                    return Err(self.fail(format!("no such template {name:?}")));
                };
                let new_dot = match pipe {
                    Some(p) => self.pipeline(p, dot)?,
                    None => Value::Nil,
                };
                if self.depth >= self.env.limits.max_depth {
                    return Err(self.fail(format!("exceeded maximum template depth ({})", self.env.limits.max_depth)));
                }
                self.depth += 1;
                let saved = std::mem::replace(&mut self.vars, vec![("$".into(), new_dot.clone())]);
                let r = self.list(body, &new_dot);
                self.vars = saved;
                self.depth -= 1;
                r?;
            }
        }
        Ok(Flow::Normal)
    }

    fn if_with(&mut self, b: &Branch, dot: &Value, with: bool) -> R<Flow> {
        self.line = b.line;
        let mark = self.vars.len();
        let v = self.pipeline(&b.pipe, dot)?;
        let r = if v.truth() {
            let d = if with { v } else { dot.clone() };
            self.list(&b.list, &d)
        } else if let Some(e) = &b.else_list {
            self.list(e, dot)
        } else {
            Ok(Flow::Normal)
        };
        self.vars.truncate(mark);
        r
    }

    fn range(&mut self, b: &Branch, dot: &Value) -> R<Flow> {
        self.line = b.line;
        let mark = self.vars.len();
        // The declared variables are set per element, not by the pipeline.
        let v = self.commands(&b.pipe.cmds, dot)?;
        let items: Vec<(Value, Value)> = match &v {
            Value::List(l) => l.items.iter().enumerate().map(|(i, x)| (Value::Int(i as i64), x.clone())).collect(),
            Value::Map(m) => m.entries.iter().map(|(k, x)| (Value::str(k), x.clone())).collect(),
            Value::Int(n) => (0..*n).map(|i| (Value::Int(i), Value::Int(i))).collect(),
            Value::Missing | Value::Nil => Vec::new(),
            other => {
                self.at = b.pipe.describe().into();
                return Err(self.fail(format!("range can't iterate over {}", other.print())));
            }
        };
        if let Value::Int(_) = v {
            if b.pipe.decl.len() > 1 {
                return Err(self.fail("can't use int to iterate over more than one variable"));
            }
        }
        if items.is_empty() {
            let r = match &b.else_list {
                Some(e) => self.list(e, dot),
                None => Ok(Flow::Normal),
            };
            self.vars.truncate(mark);
            return r;
        }
        for (k, x) in items {
            self.step()?;
            match b.pipe.decl.len() {
                0 => {}
                1 => self.set_or_push(&b.pipe.decl[0], x.clone(), b.pipe.is_assign),
                _ => {
                    self.set_or_push(&b.pipe.decl[0], k, b.pipe.is_assign);
                    self.set_or_push(&b.pipe.decl[1], x.clone(), b.pipe.is_assign);
                }
            }
            let inner = self.vars.len();
            let r = self.list(&b.list, &x)?;
            self.vars.truncate(inner);
            // Each iteration declares its variables afresh.
            if !b.pipe.is_assign {
                self.vars.truncate(mark);
            }
            if let Flow::Break = r {
                break;
            }
        }
        self.vars.truncate(mark);
        Ok(Flow::Normal)
    }

    fn set_or_push(&mut self, name: &str, v: Value, assign: bool) {
        if assign {
            if let Some(slot) = self.vars.iter_mut().rev().find(|(n, _)| n == name) {
                slot.1 = v;
                return;
            }
        }
        self.vars.push((name.to_string(), v));
    }

    fn pipeline(&mut self, p: &Pipe, dot: &Value) -> R<Value> {
        let v = self.commands(&p.cmds, dot)?;
        for name in &p.decl {
            self.set_or_push(name, v.clone(), p.is_assign);
        }
        Ok(v)
    }

    /// A pipeline's commands, each given the previous one's value as its last argument.
    fn commands(&mut self, cmds: &[Cmd], dot: &Value) -> R<Value> {
        let mut last: Option<Value> = None;
        for cmd in cmds {
            self.step()?;
            let v = self.command(cmd, dot, last.take())?;
            last = Some(v);
        }
        Ok(last.unwrap_or(Value::Missing))
    }

    fn command(&mut self, cmd: &Cmd, dot: &Value, fin: Option<Value>) -> R<Value> {
        let args = &cmd.args[..];
        let first = &args[0];
        self.at = cmd.desc.clone();
        match first {
            Arg::Ident(name) => self.call(name, &args[1..], dot, fin),
            Arg::Field(fields) => {
                self.no_args(first, args, &fin)?;
                self.fields(dot.clone(), fields, first)
            }
            Arg::Variable(v, fields) => {
                self.no_args(first, args, &fin)?;
                let base = self.var(v)?;
                self.fields(base, fields, first)
            }
            Arg::Chain(inner, fields) => {
                self.no_args(first, args, &fin)?;
                let base = self.arg(inner, dot)?;
                self.fields(base, fields, first)
            }
            Arg::Pipe(p) => {
                self.no_args(first, args, &fin)?;
                let mark = self.vars.len();
                let v = self.pipeline(p, dot)?;
                self.vars.truncate(mark);
                Ok(v)
            }
            _ => {
                self.no_args(first, args, &fin)?;
                self.arg(first, dot)
            }
        }
    }

    fn no_args(&self, first: &Arg, args: &[Arg], fin: &Option<Value>) -> R<()> {
        if args.len() > 1 || fin.is_some() {
            return Err(match first {
                Arg::Field(f) | Arg::Variable(_, f) | Arg::Chain(_, f) if !f.is_empty() => {
                    self.fail(format!("{} has arguments but cannot be invoked as function", f.last().unwrap()))
                }
                _ => self.fail(format!("can't give argument to non-function {}", first.describe())),
            });
        }
        Ok(())
    }

    fn var(&self, name: &str) -> R<Value> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| self.fail(format!("undefined variable: {name}")))
    }

    fn fields(&self, mut v: Value, fields: &[String], _node: &Arg) -> R<Value> {
        for f in fields {
            v = match &v {
                Value::Map(m) => match m.entries.get(f) {
                    Some(x) => x.clone(),
                    // missingkey=zero: the zero value of the element type (any: no value).
                    None => Value::Missing,
                },
                Value::Struct(s) => match s.fields.iter().find(|x| x.name == f.as_str()) {
                    Some(x) => x.value.clone(),
                    None => {
                        return Err(self.fail(format!("can't evaluate field {f} in type {}", v.type_name())));
                    }
                },
                Value::Missing => Value::Missing,
                Value::Nil => return Err(self.fail(format!("nil pointer evaluating interface {{}}.{f}"))),
                other => {
                    return Err(self.fail(format!("can't evaluate field {f} in type {}", other.type_name())));
                }
            };
        }
        Ok(v)
    }

    /// An argument's value.
    fn arg(&mut self, a: &Arg, dot: &Value) -> R<Value> {
        Ok(match a {
            Arg::Dot => dot.clone(),
            Arg::Nil => return Err(self.fail("nil is not a command")),
            Arg::Bool(b) => Value::Bool(*b),
            Arg::Int(i) => Value::Int(*i),
            Arg::Float(f) => Value::Float(*f),
            Arg::Str(s) => Value::str(s),
            Arg::Field(f) => self.fields(dot.clone(), f, a)?,
            Arg::Variable(v, f) => {
                let base = self.var(v)?;
                self.fields(base, f, a)?
            }
            Arg::Chain(inner, f) => {
                let base = self.arg(inner, dot)?;
                self.fields(base, f, a)?
            }
            Arg::Pipe(p) => {
                let mark = self.vars.len();
                let v = self.pipeline(p, dot)?;
                self.vars.truncate(mark);
                v
            }
            Arg::Ident(name) => self.call(name, &[], dot, None)?,
        })
    }

    fn call(&mut self, name: &str, args: &[Arg], dot: &Value, fin: Option<Value>) -> R<Value> {
        let at = self.at.clone();
        // and/or evaluate lazily and return an argument.
        if name == "and" || name == "or" {
            let n = args.len() + usize::from(fin.is_some());
            if n == 0 {
                return Err(self.fail(format!("wrong number of args for {name}: want at least 1 got 0")));
            }
            let mut last = Value::Missing;
            for a in args {
                last = self.arg(a, dot)?;
                if last.truth() != (name == "and") {
                    self.at = at;
                    return Ok(last);
                }
            }
            if let Some(f) = fin {
                last = f;
            }
            self.at = at;
            return Ok(last);
        }
        let mut vals = Vec::with_capacity(args.len() + 1);
        for a in args {
            if let Arg::Nil = a {
                vals.push(Value::Nil);
                continue;
            }
            vals.push(self.arg(a, dot)?);
        }
        if let Some(f) = fin {
            vals.push(f);
        }
        self.at = at;
        let want = |n: usize| -> R<()> {
            if vals.len() != n {
                Err(format!("wrong number of args for {name}: want {n} got {}", vals.len()))
            } else {
                Ok(())
            }
        };
        let r: R<Value> = match name {
            "not" => want(1).map(|_| Value::Bool(!vals[0].truth())),
            "len" => want(1).and_then(|_| match &vals[0] {
                Value::Str(s) => Ok(Value::Int(s.len() as i64)),
                Value::List(l) => Ok(Value::Int(l.items.len() as i64)),
                Value::Map(m) => Ok(Value::Int(m.entries.len() as i64)),
                Value::Missing | Value::Nil => Err("error calling len: len of nil pointer".into()),
                v => Err(format!("error calling len: len of type {}", v.type_name())),
            }),
            "index" => {
                if vals.is_empty() {
                    Err("wrong number of args for index: want at least 1 got 0".into())
                } else {
                    index(&vals[0], &vals[1..]).map_err(|e| format!("error calling index: {e}"))
                }
            }
            "slice" => {
                if vals.is_empty() {
                    Err("wrong number of args for slice: want at least 1 got 0".into())
                } else {
                    slice(&vals[0], &vals[1..]).map_err(|e| format!("error calling slice: {e}"))
                }
            }
            "print" => Ok(Value::str(sprint(&vals))),
            "println" => {
                let s: Vec<String> = vals.iter().map(|v| v.print_inner()).collect();
                Ok(Value::str(s.join(" ") + "\n"))
            }
            "printf" => match vals.first() {
                Some(Value::Str(f)) => Ok(Value::str(sprintf(f, &vals[1..]))),
                Some(v) => Err(format!("wrong type for value; expected string; got {}", v.type_name())),
                None => Err("wrong number of args for printf: want at least 1 got 0".into()),
            },
            "html" => Ok(Value::str(html_escape(&sprint(&vals)))),
            "js" => Ok(Value::str(js_escape(&sprint(&vals)))),
            "urlquery" => Ok(Value::str(query_escape(&sprint(&vals)))),
            "call" => Err(match vals.first() {
                Some(Value::Missing | Value::Nil) | None => "error calling call: call of nil".to_string(),
                Some(v) => format!("error calling call: non-function of type {}", v.type_name()),
            }),
            "eq" => {
                if vals.len() < 2 {
                    Err("error calling eq: missing argument for comparison".into())
                } else {
                    let mut truth = false;
                    let mut r = Ok(());
                    for b in &vals[1..] {
                        match eq(&vals[0], b) {
                            Ok(true) => {
                                truth = true;
                                break;
                            }
                            Ok(false) => {}
                            Err(e) => {
                                r = Err(format!("error calling eq: {e}"));
                                break;
                            }
                        }
                    }
                    r.map(|_| Value::Bool(truth))
                }
            }
            "ne" => want(2).and_then(|_| {
                eq(&vals[0], &vals[1]).map(|t| Value::Bool(!t)).map_err(|e| format!("error calling ne: {e}"))
            }),
            "lt" | "le" | "gt" | "ge" => want(2).and_then(|_| {
                let o = compare(&vals[0], &vals[1]).map_err(|e| format!("error calling {name}: {e}"))?;
                Ok(Value::Bool(match name {
                    "lt" => o.is_lt(),
                    "le" => o.is_le(),
                    "gt" => o.is_gt(),
                    _ => o.is_ge(),
                }))
            }),
            "json" => want(1).map(|_| Value::str(vals[0].json())),
            "currentDate" => Ok(Value::str(self.env.today)),
            "yesterdayDate" => Ok(Value::str(self.env.yesterday)),
            "toTypeScriptType" => want(1).map(|_| Value::str(typescript_type(&vals[0]))),
            _ => Err(format!("function {name:?} not defined")),
        };
        r.map_err(|e| self.fail(e))
    }

    /// What an action prints: `<no value>` for no value.
    fn printable(&self, v: &Value) -> R<String> {
        Ok(v.print())
    }
}

impl Value {
    /// fmt's printing of an operand (no value prints `<nil>` inside print calls).
    fn print_inner(&self) -> String {
        match self {
            Value::Missing => "<nil>".into(),
            v => v.print(),
        }
    }
}

/// fmt.Sprint: a space between operands when neither is a string.
fn sprint(vals: &[Value]) -> String {
    let mut s = String::new();
    for (i, v) in vals.iter().enumerate() {
        if i > 0 && !matches!(v, Value::Str(_)) && !matches!(vals[i - 1], Value::Str(_)) {
            s.push(' ');
        }
        s.push_str(&v.print_inner());
    }
    s
}

fn index(v: &Value, keys: &[Value]) -> Result<Value, String> {
    let mut v = v.clone();
    for k in keys {
        v = match (&v, k) {
            (Value::List(l), Value::Int(i)) => {
                if *i < 0 || *i as usize >= l.items.len() {
                    return Err(format!("index out of range: {i}"));
                }
                l.items[*i as usize].clone()
            }
            (Value::Str(s), Value::Int(i)) => {
                if *i < 0 || *i as usize >= s.len() {
                    return Err(format!("index out of range: {i}"));
                }
                Value::Int(s.as_bytes()[*i as usize] as i64)
            }
            (Value::Map(m), Value::Str(key)) => m.entries.get(&**key).cloned().unwrap_or(Value::Missing),
            (Value::Map(_), k) => return Err(format!("value has type {}; should be string", k.type_name())),
            (Value::List(_) | Value::Str(_), k) => {
                return Err(format!("cannot index slice/array with type {}", k.type_name()))
            }
            (Value::Missing | Value::Nil, _) => return Err("index of untyped nil".into()),
            (v, _) => return Err(format!("can't index item of type {}", v.type_name())),
        };
    }
    Ok(v)
}

fn slice(v: &Value, idx: &[Value]) -> Result<Value, String> {
    if idx.len() > 3 {
        return Err(format!("too many slice indexes: {}", idx.len()));
    }
    let mut ix = Vec::new();
    for i in idx {
        match i {
            Value::Int(n) => ix.push(*n),
            other => return Err(format!("cannot index slice/array with type {}", other.type_name())),
        }
    }
    let len = match v {
        Value::Str(s) => {
            if idx.len() == 3 {
                return Err("cannot 3-index slice a string".into());
            }
            s.len()
        }
        Value::List(l) => l.items.len(),
        Value::Missing | Value::Nil => return Err("slice of untyped nil".into()),
        other => return Err(format!("can't slice item of type {}", other.type_name())),
    } as i64;
    let lo = ix.first().copied().unwrap_or(0);
    let hi = ix.get(1).copied().unwrap_or(len);
    for &i in &ix {
        if i < 0 || i > len {
            return Err(format!("index out of range: {i}"));
        }
    }
    if lo > hi {
        return Err(format!("invalid slice index: {lo} > {hi}"));
    }
    Ok(match v {
        Value::Str(s) => match s.get(lo as usize..hi as usize) {
            Some(sub) => Value::str(sub),
            // A cut inside a UTF-8 sequence: Go keeps the bytes; text stays valid here.
            None => Value::str(String::from_utf8_lossy(&s.as_bytes()[lo as usize..hi as usize])),
        },
        Value::List(l) => Value::List(std::rc::Rc::new(super::value::List {
            items: l.items[lo as usize..hi as usize].to_vec(),
            kind: l.kind,
            is_nil: false,
        })),
        _ => unreachable!(),
    })
}

#[derive(PartialEq)]
enum BasicKind {
    Invalid,
    Bool,
    Int,
    Float,
    Str,
    Other,
}

fn basic(v: &Value) -> BasicKind {
    match v {
        Value::Missing | Value::Nil => BasicKind::Invalid,
        Value::Bool(_) => BasicKind::Bool,
        Value::Int(_) => BasicKind::Int,
        Value::Float(_) => BasicKind::Float,
        Value::Str(_) => BasicKind::Str,
        _ => BasicKind::Other,
    }
}

/// Go's `eq` for two arguments.
fn eq(a: &Value, b: &Value) -> Result<bool, String> {
    let (ka, kb) = (basic(a), basic(b));
    if ka != kb {
        if ka != BasicKind::Invalid && kb != BasicKind::Invalid {
            return Err("incompatible types for comparison".into());
        }
        return Ok(false);
    }
    Ok(match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Int(x), Value::Int(y)) => x == y,
        (Value::Float(x), Value::Float(y)) => x == y,
        (Value::Str(x), Value::Str(y)) => x == y,
        (Value::Missing | Value::Nil, Value::Missing | Value::Nil) => true,
        (Value::Struct(_), Value::Struct(_)) => return Err("non-comparable types".into()),
        _ => return Err(format!("non-comparable type {}: {}", b.print(), b.type_name())),
    })
}

fn compare(a: &Value, b: &Value) -> Result<std::cmp::Ordering, String> {
    let (ka, kb) = (basic(a), basic(b));
    if ka != kb {
        return Err("incompatible types for comparison".into());
    }
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Ok(x.cmp(y)),
        (Value::Float(x), Value::Float(y)) => Ok(x.partial_cmp(y).unwrap_or(std::cmp::Ordering::Equal)),
        (Value::Str(x), Value::Str(y)) => Ok(x.as_bytes().cmp(y.as_bytes())),
        _ => Err("invalid type for comparison".into()),
    }
}

/// api.ToolProperty.ToTypeScriptType (anything else: `any`).
fn typescript_type(v: &Value) -> String {
    let Value::Struct(s) = v else { return "any".into() };
    if s.type_name != "api.ToolProperty" {
        return "any".into();
    }
    if let Some(Value::List(any_of)) = v.field("AnyOf") {
        if !any_of.items.is_empty() {
            return any_of.items.iter().map(typescript_type).collect::<Vec<_>>().join(" | ");
        }
    }
    let types: Vec<String> = match v.field("Type") {
        Some(Value::List(l)) => l.items.iter().map(|t| t.print()).collect(),
        _ => Vec::new(),
    };
    if types.is_empty() {
        return "any".into();
    }
    types
        .iter()
        .map(|t| match t.as_str() {
            "string" => "string",
            "number" | "integer" => "number",
            "boolean" => "boolean",
            "array" => "any[]",
            "object" => "Record<string, any>",
            "null" => "null",
            _ => "any",
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

fn html_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\0' => o.push('\u{FFFD}'),
            '"' => o.push_str("&#34;"),
            '\'' => o.push_str("&#39;"),
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            c => o.push(c),
        }
    }
    o
}

fn js_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '\'' => o.push_str("\\'"),
            '"' => o.push_str("\\\""),
            '<' => o.push_str("\\u003C"),
            '>' => o.push_str("\\u003E"),
            '&' => o.push_str("\\u0026"),
            '=' => o.push_str("\\u003D"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04X}", c as u32);
            }
            c if !is_print(c) => {
                let _ = write!(o, "\\u{:04X}", c as u32);
            }
            c => o.push(c),
        }
    }
    o
}

fn query_escape(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => o.push(b as char),
            b' ' => o.push('+'),
            b => {
                let _ = write!(o, "%{b:02X}");
            }
        }
    }
    o
}

/// Go's unicode.IsPrint, approximated without Unicode tables: no control or format
/// characters, no space other than U+0020.
fn is_print(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    !(c.is_control()
        || c.is_whitespace()
        || matches!(c as u32, 0xAD | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x180E | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x206F | 0xFEFF | 0xFFF9..=0xFFFB | 0xE000..=0xF8FF | 0xFFFE | 0xFFFF))
}

/// strconv.Quote.
pub fn quote(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\x07' => o.push_str("\\a"),
            '\x08' => o.push_str("\\b"),
            '\x0c' => o.push_str("\\f"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            '\x0b' => o.push_str("\\v"),
            c if is_print(c) => o.push(c),
            c if (c as u32) < 0x80 => {
                let _ = write!(o, "\\x{:02x}", c as u32);
            }
            c if (c as u32) < 0x10000 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(o, "\\U{:08x}", c as u32);
            }
        }
    }
    o.push('"');
    o
}

/// fmt.Sprintf for the verbs templates use: %v %s %q %d %t %f %g %e %x %X %c %%, with
/// flags `-+ 0#`, width and precision.
fn sprintf(format: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut argi = 0;
    let mut it = format.chars().peekable();
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let (mut minus, mut plus, mut zero, mut space, mut sharp) = (false, false, false, false, false);
        while let Some(&f) = it.peek() {
            match f {
                '-' => minus = true,
                '+' => plus = true,
                '0' => zero = true,
                ' ' => space = true,
                '#' => sharp = true,
                _ => break,
            }
            it.next();
        }
        let mut width: Option<usize> = None;
        while let Some(&d) = it.peek() {
            if let Some(v) = d.to_digit(10) {
                width = Some(width.unwrap_or(0) * 10 + v as usize);
                it.next();
            } else {
                break;
            }
        }
        let mut prec: Option<usize> = None;
        if it.peek() == Some(&'.') {
            it.next();
            prec = Some(0);
            while let Some(&d) = it.peek() {
                if let Some(v) = d.to_digit(10) {
                    prec = Some(prec.unwrap_or(0) * 10 + v as usize);
                    it.next();
                } else {
                    break;
                }
            }
        }
        let Some(verb) = it.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(argi) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        argi += 1;
        let bad = || format!("%!{verb}({}={})", arg.type_name(), arg.print_inner());
        let mut body = match (verb, arg) {
            ('v', v) => v.print_inner(),
            ('s', Value::Str(s)) => match prec {
                Some(p) => s.chars().take(p).collect(),
                None => s.to_string(),
            },
            ('s', v @ (Value::List(_) | Value::Map(_) | Value::Struct(_))) => v.print(),
            ('q', Value::Str(s)) => {
                if sharp && !s.contains('`') {
                    format!("`{s}`")
                } else {
                    quote(s)
                }
            }
            ('q', Value::Int(i)) => match char::from_u32(*i as u32) {
                Some(c) => {
                    let q = quote(&c.to_string());
                    format!("'{}'", &q[1..q.len() - 1].replace("\\\"", "\"").replace('\'', "\\'"))
                }
                None => bad(),
            },
            ('d', Value::Int(i)) => {
                let s = i.abs().to_string();
                let sign = if *i < 0 {
                    "-"
                } else if plus {
                    "+"
                } else if space {
                    " "
                } else {
                    ""
                };
                format!("{sign}{s}")
            }
            ('t', Value::Bool(b)) => b.to_string(),
            // The operand's Go type (ARGS_JSON tells strings from other argument values).
            ('T', v) => v.type_name(),
            ('c', Value::Int(i)) => char::from_u32(*i as u32).unwrap_or('\u{FFFD}').to_string(),
            ('x' | 'X', Value::Int(i)) => {
                let s = if verb == 'x' { format!("{:x}", i.unsigned_abs()) } else { format!("{:X}", i.unsigned_abs()) };
                format!("{}{}{s}", if *i < 0 { "-" } else { "" }, if sharp { "0x" } else { "" })
            }
            ('x' | 'X', Value::Str(s)) => {
                let mut h = String::new();
                for b in s.bytes() {
                    let _ = if verb == 'x' { write!(h, "{b:02x}") } else { write!(h, "{b:02X}") };
                }
                h
            }
            ('f' | 'F', Value::Float(f)) => format!("{f:.*}", prec.unwrap_or(6)),
            ('e', Value::Float(f)) => {
                let s = format!("{f:.*e}", prec.unwrap_or(6));
                let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
                let e: i32 = e.parse().unwrap_or(0);
                format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
            }
            ('g', Value::Float(f)) if prec.is_none() => format_g(*f),
            ('f' | 'F' | 'e' | 'g', Value::Int(_)) => bad(),
            _ => bad(),
        };
        if plus && matches!(arg, Value::Float(f) if *f >= 0.0) && matches!(verb, 'f' | 'F' | 'e' | 'g' | 'v') {
            body.insert(0, '+');
        }
        if let Some(w) = width {
            let n = body.chars().count();
            if n < w {
                let pad = w - n;
                if minus {
                    body.push_str(&" ".repeat(pad));
                } else if zero && matches!(verb, 'd' | 'f' | 'F' | 'e' | 'g' | 'x' | 'X') {
                    let (sign, digits) =
                        if body.starts_with(['-', '+']) { body.split_at(1) } else { ("", body.as_str()) };
                    body = format!("{sign}{}{digits}", "0".repeat(pad));
                } else {
                    body = format!("{}{body}", " ".repeat(pad));
                }
            }
        }
        out.push_str(&body);
    }
    if argi < args.len() {
        out.push_str("%!(EXTRA ");
        let extra: Vec<String> =
            args[argi..].iter().map(|a| format!("{}={}", a.type_name(), a.print_inner())).collect();
        out.push_str(&extra.join(", "));
        out.push(')');
    }
    out
}

/// Ordered map helper for building data.
pub fn map_of(entries: Vec<(&str, Value)>) -> Value {
    let m: BTreeMap<String, Value> = entries.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    Value::map(m)
}

#[allow(dead_code)]
fn _kind_used(_: Kind) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printf_verbs() {
        let v = |s: &str| Value::str(s);
        assert_eq!(sprintf("%q", &[v("héllo\u{a0}\x01\"")]), "\"héllo\\u00a0\\x01\\\"\"");
        assert_eq!(
            sprintf("%s-%d-%v-%t", &[v("a"), Value::Int(-3), Value::Float(2.5), Value::Bool(true)]),
            "a--3-2.5-true"
        );
        assert_eq!(sprintf("%5d|%-3s|%03d", &[Value::Int(42), v("x"), Value::Int(7)]), "   42|x  |007");
        assert_eq!(sprintf("%d", &[v("x")]), "%!d(string=x)");
        assert_eq!(sprintf("%s %s", &[v("x")]), "x %!s(MISSING)");
        assert_eq!(sprint(&[Value::Int(1), Value::Int(2), v("a"), v("b"), Value::Int(3)]), "1 2ab3");
    }
}
