//! A GGUF's Jinja chat template, rendered as Hugging Face transformers'
//! `apply_chat_template` renders it (jinja2 with `trim_blocks`, `lstrip_blocks`, loop
//! controls, its `tojson`, `raise_exception` and `strftime_now`), with minijinja and the
//! Python string/dict methods of minijinja-contrib's pycompat.
//!
//! Differences from jinja2 that remain: `{{ true }}`/`{{ none }}` print as `true`/`none`
//! (Python: `True`/`None`); templates rarely print those.
//!
//! Runaway templates are bounded: minijinja's fuel limits the work, and the output is
//! capped.

use std::io::Write;
use std::sync::{Arc, Mutex};

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind};

use super::chat::Chat;

/// Marker put before a `raise_exception` message, so that a template's own rejection is
/// told apart from an error of the engine.
const RAISED: &str = "raise_exception: ";

/// Bounds for one rendering.
#[derive(Debug, Clone, Copy)]
pub struct JinjaLimits {
    /// minijinja fuel (roughly, instructions executed).
    pub fuel: u64,
    /// Output bytes.
    pub max_output: usize,
}

impl Default for JinjaLimits {
    fn default() -> Self {
        JinjaLimits { fuel: 5_000_000, max_output: 4 << 20 }
    }
}

/// Why a rendering failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JinjaError {
    /// The template rejects the conversation (`raise_exception("...")`).
    Rejected(String),
    /// Does not parse.
    Syntax(String),
    /// Ran out of fuel or produced too much output.
    Limit(String),
    /// Failed while rendering.
    Render(String),
}

impl std::fmt::Display for JinjaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JinjaError::Rejected(m) => write!(f, "the chat template rejects this conversation: {m}"),
            JinjaError::Syntax(m) => write!(f, "the chat template does not parse: {m}"),
            JinjaError::Limit(m) => write!(f, "the chat template was stopped: {m}"),
            JinjaError::Render(m) => write!(f, "the chat template failed: {m}"),
        }
    }
}

/// What the template sees besides the messages.
#[derive(Debug, Clone, Default)]
pub struct JinjaContext {
    pub bos_token: String,
    pub eos_token: String,
    /// Date for `strftime_now` (YYYY-MM-DD, noon UTC); `None`: today.
    pub date: Option<String>,
    pub limits: JinjaLimits,
}

/// A compiled chat template.
pub struct JinjaTemplate {
    env: Environment<'static>,
    date: Arc<Mutex<(i64, i64, i64)>>,
}

impl std::fmt::Debug for JinjaTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JinjaTemplate")
    }
}

impl JinjaTemplate {
    /// Compiles a chat template (HF's `{% generation %}` markers are kept as plain blocks)
    /// with the default fuel.
    pub fn parse(source: &str) -> Result<JinjaTemplate, JinjaError> {
        Self::parse_with_fuel(source, JinjaLimits::default().fuel)
    }

    /// Compiles a chat template; each rendering may spend `fuel`.
    pub fn parse_with_fuel(source: &str, fuel: u64) -> Result<JinjaTemplate, JinjaError> {
        let mut env = Environment::new();
        env.set_fuel(Some(fuel));
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: Value| -> Result<Value, Error> {
            Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("{RAISED}{}", msg.as_str().unwrap_or(&msg.to_string())),
            ))
        });
        let date = Arc::new(Mutex::new((2024, 1, 1)));
        let d = date.clone();
        env.add_function("strftime_now", move |fmt: String| -> String {
            let (y, m, day) = *d.lock().unwrap_or_else(|e| e.into_inner());
            strftime(&fmt, y, m, day)
        });
        env.add_filter("tojson", tojson);
        // jinja2's `string` is Python's str(); its `indent` keeps a trailing newline.
        env.add_filter("string", |v: Value| -> Value {
            match v.kind() {
                ValueKind::String => v,
                _ => Value::from(py_str(&v)),
            }
        });
        env.add_filter("indent", indent);
        // jinja2: `none is iterable` is false (minijinja iterates none as empty).
        env.add_test("iterable", |v: Value| !v.is_none() && !v.is_undefined() && v.try_iter().is_ok());
        // Python's str() of what a template prints: True/None, and repr() inside lists and dicts.
        env.set_formatter(|out: &mut minijinja::Output, _state: &minijinja::State, v: &Value| {
            let text = match v.kind() {
                ValueKind::Undefined => return Ok(()),
                ValueKind::String => return out.write_str(v.as_str().unwrap_or("")).map_err(Error::from),
                _ => py_str(v),
            };
            out.write_str(&text).map_err(Error::from)
        });
        let source = generation_blocks(source);
        env.add_template_owned("chat_template", source).map_err(|e| JinjaError::Syntax(describe(&e)))?;
        Ok(JinjaTemplate { env, date })
    }

    /// Renders the chat with `add_generation_prompt=True`.
    pub fn render(&self, chat: &Chat, ctx: &JinjaContext) -> Result<String, JinjaError> {
        let today = ctx.date.clone().unwrap_or_else(super::go::today_utc);
        let p: Vec<i64> = today.split('-').filter_map(|x| x.parse().ok()).collect();
        if p.len() == 3 {
            *self.date.lock().unwrap_or_else(|e| e.into_inner()) = (p[0], p[1], p[2]);
        }
        let tmpl = self.env.get_template("chat_template").map_err(|e| JinjaError::Render(describe(&e)))?;
        let messages: Vec<serde_json::Value> = chat.messages.iter().map(hf_message).collect();
        let mut vars = serde_json::Map::new();
        vars.insert("messages".into(), serde_json::Value::Array(messages));
        vars.insert(
            "tools".into(),
            chat.tools.clone().map(serde_json::Value::Array).unwrap_or(serde_json::Value::Null),
        );
        vars.insert("documents".into(), serde_json::Value::Null);
        vars.insert("add_generation_prompt".into(), true.into());
        vars.insert("bos_token".into(), ctx.bos_token.clone().into());
        vars.insert("eos_token".into(), ctx.eos_token.clone().into());
        if let Some(t) = chat.think {
            vars.insert("enable_thinking".into(), t.into());
        }
        let mut out = Capped { buf: Vec::new(), cap: ctx.limits.max_output };
        match tmpl.render_captured_to(Value::from_serialize(&vars), &mut out) {
            Ok(_) => String::from_utf8(out.buf).map_err(|_| JinjaError::Render("output is not UTF-8".into())),
            Err(e) => Err(classify(&e, ctx.limits)),
        }
    }
}

/// jinja2's `indent(width=4, first=False, blank=False)` (`width` may be a string).
fn indent(
    s: String,
    width: Option<Value>,
    first: Option<bool>,
    blank: Option<bool>,
    kwargs: Kwargs,
) -> Result<String, Error> {
    let width = kwargs.get::<Option<Value>>("width")?.or(width);
    let first = kwargs.get::<Option<bool>>("first")?.or(first).unwrap_or(false);
    let blank = kwargs.get::<Option<bool>>("blank")?.or(blank).unwrap_or(false);
    kwargs.assert_all_used()?;
    let ind = match &width {
        None => "    ".to_string(),
        Some(w) => match w.as_i64() {
            Some(n) => " ".repeat(n.max(0) as usize),
            None => w.as_str().unwrap_or("").to_string(),
        },
    };
    let s = format!("{s}\n");
    let lines: Vec<&str> = py_splitlines(&s);
    let mut rv = String::new();
    if blank {
        rv = lines.join(&format!("\n{ind}"));
    } else if let Some((head, rest)) = lines.split_first() {
        rv.push_str(head);
        if !rest.is_empty() {
            rv.push('\n');
            let parts: Vec<String> =
                rest.iter().map(|l| if l.is_empty() { String::new() } else { format!("{ind}{l}") }).collect();
            rv.push_str(&parts.join("\n"));
        }
    }
    if first {
        rv = format!("{ind}{rv}");
    }
    Ok(rv)
}

/// Python's `str.splitlines()` for `\n`, `\r\n` and `\r` line ends.
fn py_splitlines(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\n' || b[i] == b'\r' {
            out.push(&s[start..i]);
            if b[i] == b'\r' && i + 1 < b.len() && b[i + 1] == b'\n' {
                i += 1;
            }
            start = i + 1;
        }
        i += 1;
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

/// Python's `str()` of a value (`repr()` for the items of lists and dicts).
fn py_str(v: &Value) -> String {
    match v.kind() {
        ValueKind::String => v.as_str().unwrap_or("").to_string(),
        _ => py_repr(v),
    }
}

fn py_repr(v: &Value) -> String {
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => "None".into(),
        ValueKind::Bool => if v.is_true() { "True" } else { "False" }.into(),
        ValueKind::String => py_repr_str(v.as_str().unwrap_or("")),
        ValueKind::Number => {
            if let Some(i) = v.as_i64() {
                i.to_string()
            } else {
                match f64::try_from(v.clone()) {
                    Ok(f) => py_float_repr(f),
                    Err(_) => v.to_string(),
                }
            }
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<String> = v.try_iter().map(|it| it.map(|x| py_repr(&x)).collect()).unwrap_or_default();
            format!("[{}]", items.join(", "))
        }
        ValueKind::Map => {
            let items: Vec<String> = v
                .try_iter()
                .map(|it| {
                    it.map(|k| {
                        let val = v.get_item(&k).unwrap_or_default();
                        format!("{}: {}", py_repr(&k), py_repr(&val))
                    })
                    .collect()
                })
                .unwrap_or_default();
            format!("{{{}}}", items.join(", "))
        }
        _ => v.to_string(),
    }
}

/// Python's `repr(str)`.
fn py_repr_str(s: &str) -> String {
    let q = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    let mut o = String::with_capacity(s.len() + 2);
    o.push(q);
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if c == q => {
                o.push('\\');
                o.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => o.push_str(&format!("\\x{:02x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push(q);
    o
}

/// The message as transformers passes it: `tool_calls` only when there are calls,
/// reasoning as `reasoning_content`.
pub fn hf_message(m: &super::chat::Message) -> serde_json::Value {
    let mut o = serde_json::Map::new();
    o.insert("role".into(), m.role.clone().into());
    o.insert("content".into(), m.content.clone().into());
    if let Some(t) = &m.thinking {
        o.insert("reasoning_content".into(), t.clone().into());
    }
    if !m.tool_calls.is_empty() {
        o.insert("tool_calls".into(), serde_json::to_value(&m.tool_calls).unwrap_or_default());
    }
    if let Some(id) = &m.tool_call_id {
        o.insert("tool_call_id".into(), id.clone().into());
    }
    if let Some(n) = &m.tool_name {
        o.insert("name".into(), n.clone().into());
    }
    serde_json::Value::Object(o)
}

fn describe(e: &Error) -> String {
    let mut s = match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    };
    if let Some(line) = e.line() {
        s.push_str(&format!(" (line {line})"));
    }
    s
}

fn classify(e: &Error, limits: JinjaLimits) -> JinjaError {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(me) = err.downcast_ref::<Error>() {
            if let Some(d) = me.detail() {
                if let Some(msg) = d.strip_prefix(RAISED) {
                    return JinjaError::Rejected(msg.to_string());
                }
            }
            match me.kind() {
                ErrorKind::OutOfFuel => return JinjaError::Limit(format!("ran out of fuel ({} units)", limits.fuel)),
                ErrorKind::WriteFailure => {
                    return JinjaError::Limit(format!("output exceeds {} bytes", limits.max_output))
                }
                _ => {}
            }
        }
        cur = err.source();
    }
    JinjaError::Render(describe(e))
}

struct Capped {
    buf: Vec<u8>,
    cap: usize,
}

impl Write for Capped {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + b.len() > self.cap {
            return Err(std::io::Error::other("output cap"));
        }
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `{% generation %}` / `{% endgeneration %}` (transformers' assistant-mask extension)
/// become `{% if true %}` / `{% endif %}`, keeping their whitespace control.
pub(crate) fn generation_blocks(src: &str) -> String {
    if !src.contains("generation") {
        return src.to_string();
    }
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = RE.get_or_init(|| regex::Regex::new(r"\{%([-+]?)\s*(end)?generation\s*([-+]?)%\}").expect("static regex"));
    re.replace_all(src, |c: &regex::Captures<'_>| {
        let body = if c.get(2).is_some() { "endif" } else { "if true" };
        format!("{{%{} {body} {}%}}", &c[1], &c[3])
    })
    .into_owned()
}

/// transformers' `tojson`: Python's `json.dumps(x, ensure_ascii=False, indent=indent,
/// separators=separators, sort_keys=sort_keys)`.
fn tojson(value: Value, indent: Option<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<Value> = match kwargs.get::<Option<Value>>("indent")? {
        Some(v) => Some(v),
        None => indent,
    };
    let ensure_ascii: bool = kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false);
    let sort_keys: bool = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let indent: Option<String> = match indent {
        None => None,
        Some(v) if v.is_none() || v.is_undefined() => None,
        Some(v) => match v.as_i64() {
            Some(n) => Some(" ".repeat(n.max(0) as usize)),
            None => Some(v.as_str().unwrap_or("").to_string()),
        },
    };
    let (item_sep, key_sep) = match &separators {
        Some(s) if s.len() == 2 => (s[0].clone(), s[1].clone()),
        _ => (if indent.is_some() { ",".to_string() } else { ", ".to_string() }, ": ".to_string()),
    };
    let json = serde_json::to_value(&value).map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    let mut out = String::new();
    let opts = PyJson { indent, item_sep, key_sep, sort_keys, ensure_ascii };
    opts.write(&mut out, &json, 0);
    Ok(Value::from_safe_string(out))
}

struct PyJson {
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
    ensure_ascii: bool,
}

impl PyJson {
    fn newline(&self, out: &mut String, level: usize) {
        if let Some(ind) = &self.indent {
            out.push('\n');
            for _ in 0..level {
                out.push_str(ind);
            }
        }
    }

    fn write(&self, out: &mut String, v: &serde_json::Value, level: usize) {
        match v {
            serde_json::Value::Null => out.push_str("null"),
            serde_json::Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            serde_json::Value::Number(n) => {
                if n.is_i64() || n.is_u64() {
                    out.push_str(&n.to_string())
                } else {
                    out.push_str(&py_float_repr(n.as_f64().unwrap_or(0.0)))
                }
            }
            serde_json::Value::String(s) => py_json_string(out, s, self.ensure_ascii),
            serde_json::Value::Array(a) => {
                if a.is_empty() {
                    out.push_str("[]");
                    return;
                }
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push_str(&self.item_sep);
                    }
                    self.newline(out, level + 1);
                    self.write(out, x, level + 1);
                }
                self.newline(out, level);
                out.push(']');
            }
            serde_json::Value::Object(o) => {
                if o.is_empty() {
                    out.push_str("{}");
                    return;
                }
                out.push('{');
                let mut entries: Vec<(&String, &serde_json::Value)> = o.iter().collect();
                if self.sort_keys {
                    entries.sort_by(|a, b| a.0.cmp(b.0));
                }
                for (i, (k, x)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push_str(&self.item_sep);
                    }
                    self.newline(out, level + 1);
                    py_json_string(out, k, self.ensure_ascii);
                    out.push_str(&self.key_sep);
                    self.write(out, x, level + 1);
                }
                self.newline(out, level);
                out.push('}');
            }
        }
    }
}

fn py_json_string(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && (c as u32) > 0x7e) => {
                let mut buf = [0u16; 2];
                for u in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{:04x}", u));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `repr(float)`: shortest round-trip digits, exponent form when the exponent is
/// below -4 or at least 16, always a `.0` on integral values.
fn py_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0".into() } else { "0.0".into() };
    }
    let e = format!("{f:e}");
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..16).contains(&exp) {
        format!("{mant}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    } else {
        let s = format!("{f}");
        if s.contains('.') {
            s
        } else {
            format!("{s}.0")
        }
    }
}

/// English month names, as Python's `strftime("%B")` writes them.
pub(crate) const MONTHS: [&str; 12] = [
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
const DAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];

/// Python's `datetime.strftime` for a date at 12:00:00 (the common directives, glibc's
/// `%-d` style flags included).
pub fn strftime(fmt: &str, y: i64, m: i64, d: i64) -> String {
    let days = super::go::days_from_civil(y, m, d);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let yday = days - super::go::days_from_civil(y, 1, 1) + 1;
    let mut out = String::new();
    let mut it = fmt.chars().peekable();
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let nopad = it.peek() == Some(&'-');
        if nopad {
            it.next();
        }
        let Some(k) = it.next() else {
            out.push('%');
            break;
        };
        let num = |n: i64, w: usize| if nopad { n.to_string() } else { format!("{n:0w$}") };
        match k {
            'd' => out.push_str(&num(d, 2)),
            'e' => out.push_str(&if nopad { d.to_string() } else { format!("{d:2}") }),
            'm' => out.push_str(&num(m, 2)),
            'Y' => out.push_str(&y.to_string()),
            'y' => out.push_str(&num(y % 100, 2)),
            'B' => out.push_str(MONTHS[(m - 1) as usize]),
            'b' | 'h' => out.push_str(&MONTHS[(m - 1) as usize][..3]),
            'A' => out.push_str(DAYS[weekday]),
            'a' => out.push_str(&DAYS[weekday][..3]),
            'w' => out.push_str(&((weekday + 1) % 7).to_string()),
            'u' => out.push_str(&(weekday + 1).to_string()),
            'j' => out.push_str(&num(yday, 3)),
            'H' => out.push_str(&num(12, 2)),
            'I' => out.push_str(&num(12, 2)),
            'M' | 'S' => out.push_str(&num(0, 2)),
            'p' => out.push_str("PM"),
            'F' => out.push_str(&format!("{y:04}-{m:02}-{d:02}")),
            'D' => out.push_str(&format!("{m:02}/{d:02}/{:02}", y % 100)),
            '%' => out.push('%'),
            other => {
                out.push('%');
                out.push(other);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modelfile::render::chat::Message;

    fn chat(msgs: &[(&str, &str)]) -> Chat {
        Chat { messages: msgs.iter().map(|(r, c)| Message::new(r, c)).collect(), ..Default::default() }
    }

    #[test]
    fn hf_environment() {
        let t = JinjaTemplate::parse(
            "{{ bos_token }}{% for m in messages %}\n  {% if loop.first and m.role == 'system' %}{{ m.content.strip() | upper }}\n{% else %}{{ m.role }}: {{ m['content'].split(' ')[0] }}\n{% endif %}{% endfor %}\n{% if add_generation_prompt %}A:{% endif %}",
        )
        .unwrap();
        let ctx = JinjaContext { bos_token: "<s>".into(), ..Default::default() };
        assert_eq!(
            t.render(&chat(&[("system", " x "), ("user", "hello world")]), &ctx).unwrap(),
            "<s>X\nuser: hello\nA:"
        );
    }

    #[test]
    fn raise_exception_is_a_rejection() {
        let t = JinjaTemplate::parse(
            "{% if messages[0].role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}ok",
        )
        .unwrap();
        let e = t.render(&chat(&[("system", "s")]), &JinjaContext::default()).unwrap_err();
        assert_eq!(e, JinjaError::Rejected("System role not supported".into()));
        assert_eq!(t.render(&chat(&[("user", "u")]), &JinjaContext::default()).unwrap(), "ok");
    }

    #[test]
    fn bad_and_runaway_templates() {
        assert!(matches!(JinjaTemplate::parse("{% for %}").unwrap_err(), JinjaError::Syntax(_)));
        let t =
            JinjaTemplate::parse("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}")
                .unwrap();
        assert!(matches!(t.render(&chat(&[]), &JinjaContext::default()).unwrap_err(), JinjaError::Limit(_)));
        let t = JinjaTemplate::parse("{% for i in range(10000) %}{{ 'x' * 10000 }}{% endfor %}").unwrap();
        assert!(matches!(t.render(&chat(&[]), &JinjaContext::default()).unwrap_err(), JinjaError::Limit(_)));
    }

    #[test]
    fn tojson_like_python() {
        let t = JinjaTemplate::parse("{{ x | tojson }}|{{ x | tojson(indent=2) }}").unwrap();
        let _ = t;
        let mut out = String::new();
        PyJson { indent: None, item_sep: ", ".into(), key_sep: ": ".into(), sort_keys: false, ensure_ascii: false }
            .write(&mut out, &serde_json::json!({"b": [1, 2.0, "é\n"], "a": null}), 0);
        assert_eq!(out, r#"{"b": [1, 2.0, "é\n"], "a": null}"#);
        assert_eq!(py_float_repr(1e16), "1e+16");
        assert_eq!(py_float_repr(0.0001), "0.0001");
        assert_eq!(py_float_repr(1e-5), "1e-05");
    }

    #[test]
    fn strftime_dates() {
        assert_eq!(
            strftime("%d %b %Y|%B %-d, %Y|%A|%Y-%m-%d", 2024, 9, 3),
            "03 Sep 2024|September 3, 2024|Tuesday|2024-09-03"
        );
    }
}
