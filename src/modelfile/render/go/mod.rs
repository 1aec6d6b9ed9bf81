//! Ollama's TEMPLATE, rendered as an Ollama server renders it: Go's `text/template`
//! semantics over Ollama's template data, after Ollama's own preprocessing of the chat.
//!
//! Why not a crate: the one Go-template crate (`gtmpl`) has been unmaintained since 2021,
//! lacks `break`/`continue`, `html`/`js`, Go's map ordering and the `String()` methods
//! Ollama's types rely on, and its error messages are not Go's; verifying Modelfiles needs
//! Go's exact output, so this module implements the language (`parse`, `exec`) and
//! Ollama's data model (`value`, below).
//!
//! What is mirrored from Ollama (`template/template.go`, `server/routes.go`, as reproduced
//! by `tests/templates/ollama_render.go`, which the parity test runs with real Go):
//! - The Modelfile SYSTEM becomes a first system message when the chat has none.
//! - collate: consecutive messages of one role (except `tool`) are merged with a blank
//!   line; every system message joins `.System`.
//! - A template that mentions `Messages` runs once with `.System`, `.Messages`, `.Tools`,
//!   `.Response` (empty), `.Think`, `.ThinkLevel`, `.IsThinkSet`; otherwise the legacy
//!   path runs it once per (system, prompt, response) turn and cuts the last run at the
//!   first `{{ .Response }}`. A template that mentions neither `Messages` nor `Response`
//!   gets `{{ .Response }}` appended.
//! - A generate request with a suffix runs with `.Prompt`, `.Suffix`, `.Response` only.
//! - Tool-call arguments and tool properties are Go maps (keys in sorted order) that print
//!   as compact JSON; numbers in them are float64.

mod exec;
mod parse;
pub mod value;

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

pub use exec::{is_func, quote, Limits};
pub use parse::ParseError;
use parse::{Arg, Node, Pipe, Tree};
use value::{Field, Kind, List, Map, Struct, Value};

use super::chat::{Chat, Message};

/// A parsed TEMPLATE.
#[derive(Debug, Clone)]
pub struct GoTemplate {
    tree: Tree,
    vars: BTreeSet<String>,
}

/// What an Ollama request adds to the chat.
#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    /// The Modelfile's SYSTEM.
    pub system: Option<&'a str>,
    /// `currentDate` as YYYY-MM-DD (`None`: today, UTC).
    pub date: Option<&'a str>,
    /// A generate request's prompt and suffix (fill-in-the-middle when both are set).
    pub prompt: Option<&'a str>,
    pub suffix: Option<&'a str>,
    pub limits: Limits,
}

impl GoTemplate {
    /// Parses a TEMPLATE with Go's rules (unknown functions are errors, as `ollama create`
    /// reports them when it first runs the template).
    pub fn parse(src: &str) -> Result<GoTemplate, ParseError> {
        let mut tree = parse::parse(src, &is_func)?;
        let mut vars = BTreeSet::new();
        for n in tree.root.iter().chain(tree.defines.values().flatten()) {
            identifiers(n, &mut vars);
        }
        if !vars.contains("messages") && !vars.contains("response") {
            tree.root.push(Node::Action {
                line: 1,
                pipe: Pipe {
                    decl: Vec::new(),
                    is_assign: false,
                    cmds: vec![parse::Cmd::new(vec![Arg::Field(vec!["Response".into()])])],
                },
            });
        }
        Ok(GoTemplate { tree, vars })
    }

    /// Does the template use `.Messages` (else Ollama drives it with `.Prompt`/`.Response`)?
    pub fn uses_messages(&self) -> bool {
        self.vars.contains("messages")
    }

    /// Does the template read `.Tools`?
    pub fn uses_tools(&self) -> bool {
        self.vars.contains("tools")
    }

    /// Renders a chat request as Ollama does before tokenizing (without the BOS token,
    /// which Ollama's runtime adds itself).
    pub fn render(&self, chat: &Chat, req: &Request<'_>) -> Result<String, String> {
        let today = match req.date {
            Some(d) => d.to_string(),
            None => today_utc(),
        };
        let yesterday = day_before(&today);
        let run = |root: &[Node], data: &Value| {
            let env = exec::Env { tree: &self.tree, root, today: &today, yesterday: &yesterday, limits: req.limits };
            exec::execute(&env, data)
        };
        if let (Some(p), Some(s)) = (req.prompt, req.suffix) {
            if !p.is_empty() && !s.is_empty() {
                let data = exec::map_of(vec![
                    ("Prompt", Value::str(p)),
                    ("Suffix", Value::str(s)),
                    ("Response", Value::str("")),
                ]);
                return run(&self.tree.root, &data);
            }
        }
        let mut msgs: Vec<Message> = chat.messages.clone();
        if let Some(p) = req.prompt.filter(|p| !p.is_empty()) {
            msgs.push(Message::new("user", p));
        }
        if let Some(sys) = req.system.filter(|s| !s.is_empty()) {
            if msgs.first().is_some_and(|m| m.role != "system") {
                msgs.insert(0, Message::new("system", sys));
            }
        }
        let (system, collated) = collate(&msgs);

        if self.uses_messages() {
            let data = exec::map_of(vec![
                ("System", Value::str(&system)),
                ("Messages", Value::list(collated.iter().map(message_value).collect())),
                ("Tools", tools_value(chat.tools.as_deref())),
                ("Response", Value::str("")),
                ("Think", Value::Bool(chat.think.unwrap_or(false))),
                ("ThinkLevel", Value::str("")),
                ("IsThinkSet", Value::Bool(chat.think.is_some())),
            ]);
            return run(&self.tree.root, &data);
        }

        // Legacy path: one execution per completed turn, the last one cut at .Response.
        let mut out = String::new();
        let (mut system, mut prompt, mut response) = (String::new(), String::new(), String::new());
        let legacy = |s: &str, p: &str, r: &str| {
            exec::map_of(vec![("System", Value::str(s)), ("Prompt", Value::str(p)), ("Response", Value::str(r))])
        };
        for m in &collated {
            match m.role.as_str() {
                "system" => {
                    if !prompt.is_empty() || !response.is_empty() {
                        out.push_str(&run(&self.tree.root, &legacy(&system, &prompt, &response))?);
                        (prompt, response) = (String::new(), String::new());
                    }
                    system = m.content.clone();
                }
                "user" => {
                    if !response.is_empty() {
                        out.push_str(&run(&self.tree.root, &legacy(&system, &prompt, &response))?);
                        (system, response) = (String::new(), String::new());
                    }
                    prompt = m.content.clone();
                }
                "assistant" => response = m.content.clone(),
                _ => {}
            }
        }
        let mut root = self.tree.root.clone();
        let mut cut = false;
        cut_list(&mut root, &mut cut)?;
        out.push_str(&run(&root, &legacy(&system, &prompt, &response))?);
        if out.len() > req.limits.max_output {
            return Err(format!("template: output exceeds {} bytes", req.limits.max_output));
        }
        Ok(out)
    }
}

/// Ollama's collate: the system prompt (all system messages joined by a blank line) and
/// the messages with consecutive same-role messages (except tool results) merged.
fn collate(msgs: &[Message]) -> (String, Vec<Message>) {
    let mut system = Vec::new();
    let mut out: Vec<Message> = Vec::new();
    for m in msgs {
        if m.role == "system" {
            system.push(m.content.as_str());
        }
        match out.last_mut() {
            Some(last) if last.role == m.role && m.role != "tool" => {
                last.content.push_str("\n\n");
                last.content.push_str(&m.content);
            }
            _ => out.push(m.clone()),
        }
    }
    (system.join("\n\n"), out)
}

fn field(name: &'static str, value: Value) -> Field {
    Field { name, json: "", omitempty: false, value }
}

fn tagged(name: &'static str, json: &'static str, omitempty: bool, value: Value) -> Field {
    Field { name, json, omitempty, value }
}

fn message_value(m: &Message) -> Value {
    let calls: Vec<Value> = m
        .tool_calls
        .iter()
        .map(|c| {
            let args: BTreeMap<String, Value> =
                c.function.arguments.iter().map(|(k, v)| (k.clone(), Value::from_json(v))).collect();
            let func = Struct {
                type_name: "template.templateToolCallFunction",
                fields: vec![
                    field("Index", Value::Int(c.function.index.unwrap_or(0))),
                    field("Name", Value::str(&c.function.name)),
                    field(
                        "Arguments",
                        Value::Map(Rc::new(Map {
                            entries: args,
                            kind: Kind::JsonString { nil_text: "{}" },
                            is_nil: false,
                        })),
                    ),
                ],
                pointer: false,
            };
            Value::Struct(Rc::new(Struct {
                type_name: "template.templateToolCall",
                fields: vec![field("ID", Value::str(&c.id)), field("Function", Value::Struct(Rc::new(func)))],
                pointer: false,
            }))
        })
        .collect();
    let calls = Value::List(Rc::new(List { is_nil: calls.is_empty(), items: calls, kind: Kind::Plain }));
    Value::Struct(Rc::new(Struct {
        type_name: "template.templateMessage",
        fields: vec![
            field("Role", Value::str(&m.role)),
            field("Content", Value::str(&m.content)),
            field("Thinking", Value::str(m.thinking.as_deref().unwrap_or(""))),
            field("ToolCalls", calls),
            field("ToolName", Value::str(m.tool_name.as_deref().unwrap_or(""))),
            field("ToolCallID", Value::str(m.tool_call_id.as_deref().unwrap_or(""))),
        ],
        pointer: true,
    }))
}

/// A JSON-schema property as api.ToolProperty.
fn property_value(p: &serde_json::Value) -> Value {
    let get = |k: &str| p.get(k);
    let any_of: Vec<Value> = match get("anyOf") {
        Some(serde_json::Value::Array(a)) => a.iter().map(property_value).collect(),
        _ => Vec::new(),
    };
    let types: Vec<Value> = match get("type") {
        Some(serde_json::Value::String(s)) => vec![Value::str(s)],
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|t| t.as_str()).map(Value::str).collect(),
        _ => Vec::new(),
    };
    let enum_: Vec<Value> = match get("enum") {
        Some(serde_json::Value::Array(a)) => a.iter().map(Value::from_json).collect(),
        _ => Vec::new(),
    };
    let props = properties_value(get("properties"), Kind::Plain);
    Value::Struct(Rc::new(Struct {
        type_name: "api.ToolProperty",
        fields: vec![
            tagged(
                "AnyOf",
                "anyOf",
                true,
                Value::List(Rc::new(List { is_nil: any_of.is_empty(), items: any_of, kind: Kind::Plain })),
            ),
            tagged(
                "Type",
                "type",
                true,
                Value::List(Rc::new(List { is_nil: types.is_empty(), items: types, kind: Kind::PropertyType })),
            ),
            tagged("Items", "items", true, get("items").map(Value::from_json).unwrap_or(Value::Nil)),
            tagged(
                "Description",
                "description",
                true,
                Value::str(get("description").and_then(|d| d.as_str()).unwrap_or("")),
            ),
            tagged(
                "Enum",
                "enum",
                true,
                Value::List(Rc::new(List { is_nil: enum_.is_empty(), items: enum_, kind: Kind::Plain })),
            ),
            tagged("Properties", "properties", true, props),
        ],
        pointer: false,
    }))
}

fn properties_value(p: Option<&serde_json::Value>, kind: Kind) -> Value {
    match p {
        Some(serde_json::Value::Object(o)) => Value::Map(Rc::new(Map {
            entries: o.iter().map(|(k, v)| (k.clone(), property_value(v))).collect(),
            kind,
            is_nil: false,
        })),
        _ => Value::Map(Rc::new(Map { entries: BTreeMap::new(), kind, is_nil: true })),
    }
}

fn tools_value(tools: Option<&[serde_json::Value]>) -> Value {
    let Some(tools) = tools else {
        return Value::List(Rc::new(List {
            items: Vec::new(),
            kind: Kind::JsonString { nil_text: "null" },
            is_nil: true,
        }));
    };
    let s = |v: Option<&serde_json::Value>| Value::str(v.and_then(|x| x.as_str()).unwrap_or(""));
    let items = tools
        .iter()
        .map(|t| {
            let f = t.get("function");
            let fget = |k: &str| f.and_then(|f| f.get(k));
            let params = fget("parameters");
            let pget = |k: &str| params.and_then(|p| p.get(k));
            let required: Vec<Value> = match pget("required") {
                Some(serde_json::Value::Array(a)) => a.iter().filter_map(|x| x.as_str()).map(Value::str).collect(),
                _ => Vec::new(),
            };
            let parameters = Struct {
                type_name: "template.templateToolFunctionParameters",
                fields: vec![
                    tagged("Type", "type", false, s(pget("type"))),
                    tagged("Defs", "$defs", true, pget("$defs").map(Value::from_json).unwrap_or(Value::Nil)),
                    tagged("Items", "items", true, pget("items").map(Value::from_json).unwrap_or(Value::Nil)),
                    tagged(
                        "Required",
                        "required",
                        true,
                        Value::List(Rc::new(List { is_nil: required.is_empty(), items: required, kind: Kind::Plain })),
                    ),
                    tagged(
                        "Properties",
                        "properties",
                        false,
                        properties_value(pget("properties"), Kind::JsonString { nil_text: "{}" }),
                    ),
                ],
                pointer: false,
            };
            let function = Struct {
                type_name: "template.templateToolFunction",
                fields: vec![
                    tagged("Name", "name", false, s(fget("name"))),
                    tagged("Description", "description", false, s(fget("description"))),
                    tagged("Parameters", "parameters", false, Value::Struct(Rc::new(parameters))),
                ],
                pointer: false,
            };
            Value::Struct(Rc::new(Struct {
                type_name: "template.templateTool",
                fields: vec![
                    tagged("Type", "type", false, s(t.get("type"))),
                    tagged("Items", "items", true, t.get("items").map(Value::from_json).unwrap_or(Value::Nil)),
                    tagged("Function", "function", false, Value::Struct(Rc::new(function))),
                ],
                pointer: false,
            }))
        })
        .collect();
    Value::List(Rc::new(List { items, kind: Kind::JsonString { nil_text: "null" }, is_nil: false }))
}

/// Ollama's Identifiers: every field and variable name the template mentions (lower case).
fn identifiers(n: &Node, out: &mut BTreeSet<String>) {
    match n {
        Node::Action { pipe, .. } => pipe_identifiers(pipe, out),
        Node::If(b) | Node::Range(b) | Node::With(b) => {
            pipe_identifiers(&b.pipe, out);
            for l in std::iter::once(&b.list).chain(b.else_list.iter()) {
                for n in l {
                    identifiers(n, out);
                }
            }
        }
        Node::Template { pipe: Some(p), .. } => pipe_identifiers(p, out),
        _ => {}
    }
}

fn pipe_identifiers(p: &Pipe, out: &mut BTreeSet<String>) {
    for c in &p.cmds {
        for a in &c.args {
            match a {
                Arg::Field(f) => out.extend(f.iter().map(|x| x.to_lowercase())),
                Arg::Variable(v, f) => {
                    out.insert(v.to_lowercase());
                    out.extend(f.iter().map(|x| x.to_lowercase()));
                }
                Arg::Pipe(p) => pipe_identifiers(p, out),
                _ => {}
            }
        }
    }
}

/// Ollama's deleteNode for the legacy path: everything after the first `.Response` field
/// (in tree order) is removed.
#[allow(clippy::collapsible_match)] // the pipe is cut in place
fn cut_list(nodes: &mut Vec<Node>, cut: &mut bool) -> Result<(), String> {
    let mut keep = Vec::with_capacity(nodes.len());
    for mut n in std::mem::take(nodes) {
        if *cut {
            continue;
        }
        match &mut n {
            Node::Action { pipe, .. } => {
                if !cut_pipe(pipe, cut) {
                    continue;
                }
            }
            Node::If(b) | Node::Range(b) | Node::With(b) => {
                cut_list(&mut b.list, cut)?;
                if let Some(e) = &mut b.else_list {
                    if *cut {
                        // Ollama's walk hits a nil list here and panics.
                        return Err(
                            "template: Ollama cannot cut this template at {{ .Response }} (legacy prompt path)".into(),
                        );
                    }
                    cut_list(e, cut)?;
                }
            }
            _ => {}
        }
        keep.push(n);
    }
    *nodes = keep;
    Ok(())
}

/// Returns false when the pipe is deleted.
#[allow(clippy::collapsible_match)] // the pipe is cut in place
fn cut_pipe(p: &mut Pipe, cut: &mut bool) -> bool {
    let mut cmds = Vec::new();
    for mut c in std::mem::take(&mut p.cmds) {
        let mut args = Vec::new();
        for mut a in std::mem::take(&mut c.args) {
            if *cut {
                continue;
            }
            match &mut a {
                Arg::Field(f) if f.iter().any(|x| x == "Response") => *cut = true,
                Arg::Pipe(inner) => {
                    if !cut_pipe(inner, cut) {
                        continue;
                    }
                }
                _ => {}
            }
            args.push(a);
        }
        if args.is_empty() {
            return false;
        }
        c.args = args;
        cmds.push(c);
    }
    if cmds.is_empty() {
        return false;
    }
    p.cmds = cmds;
    true
}

/// Today's date in UTC, YYYY-MM-DD.
pub fn today_utc() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (y, m, d) = civil_from_days((secs / 86400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The day before a YYYY-MM-DD date (the input unchanged if it is not one).
pub fn day_before(date: &str) -> String {
    let parts: Vec<i64> = date.split('-').filter_map(|p| p.parse().ok()).collect();
    if parts.len() != 3 {
        return date.to_string();
    }
    let (y, m, d) = civil_from_days(days_from_civil(parts[0], parts[1], parts[2]) - 1);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// The date of a day number since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modelfile::render::chat::{Chat, Message};

    fn render(t: &str, chat: &Chat, system: Option<&str>) -> Result<String, String> {
        let tmpl = GoTemplate::parse(t).map_err(|e| e.0)?;
        tmpl.render(chat, &Request { system, date: Some("2024-09-03"), ..Default::default() })
    }

    fn chat(msgs: &[(&str, &str)]) -> Chat {
        Chat { messages: msgs.iter().map(|(r, c)| Message::new(r, c)).collect(), ..Default::default() }
    }

    #[test]
    fn chatml_with_messages() {
        let t = "{{- range $i, $m := .Messages }}{{ if eq $m.Role \"system\" }}S:{{ $m.Content }}\n{{ else }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}{{ end }}<|im_start|>assistant\n";
        let out = render(t, &chat(&[("user", "hi"), ("user", "there")]), Some("be nice")).unwrap();
        assert_eq!(out, "S:be nice\n<|im_start|>user\nhi\n\nthere<|im_end|>\n<|im_start|>assistant\n");
    }

    #[test]
    fn legacy_prompt_response() {
        let t = "{{ if .System }}<<{{ .System }}>>{{ end }}[INST] {{ .Prompt }} [/INST]{{ .Response }}</s>";
        let out = render(t, &chat(&[("system", "S"), ("user", "a"), ("assistant", "b"), ("user", "c")]), None).unwrap();
        assert_eq!(out, "<<S>>[INST] a [/INST]b</s>[INST] c [/INST]");
        // No .Response at all: appended.
        let out = render("Q: {{ .Prompt }} A:", &chat(&[("user", "x")]), None).unwrap();
        assert_eq!(out, "Q: x A:");
    }

    #[test]
    fn go_semantics() {
        let c = chat(&[("user", "hi")]);
        assert_eq!(render("{{ .Prompt }}|{{ .Messages }}", &Chat::default(), None).unwrap(), "<no value>|[]");
        assert_eq!(
            render("{{ len .Messages }}{{ index .Messages 0 | printf \"%v\" | len | lt 3 }}", &c, None).unwrap(),
            "1true"
        );
        assert_eq!(
            render("{{ range $i, $_ := .Messages }}{{ if $i }}x{{ end }}{{ break }}{{ end }}{{ with .Tools }}t{{ else }}none{{ end }}", &c, None)
                .unwrap(),
            "none"
        );
        assert!(render("{{ .Messages.Foo }}", &c, None).unwrap_err().contains("can't evaluate field Foo"));
        assert!(render("{{ eq 1 1.0 }}{{ .Messages }}", &c, None)
            .unwrap_err()
            .contains("incompatible types for comparison"));
        assert_eq!(
            render("{{ currentDate }} {{ yesterdayDate }}{{ .Messages | len }}", &c, None).unwrap(),
            "2024-09-03 2024-09-021"
        );
        assert_eq!(
            render(
                "{{ define \"x\" }}[{{ . }}]{{ end }}{{ template \"x\" .System }}{{ .Messages | len }}",
                &c,
                Some("s")
            )
            .unwrap(),
            "[s]2"
        );
    }

    #[test]
    fn runaway_templates_are_bounded() {
        let t = "{{ define \"a\" }}{{ template \"a\" . }}{{ end }}{{ template \"a\" .Messages }}";
        assert!(render(t, &chat(&[("user", "x")]), None).unwrap_err().contains("maximum template depth"));
    }

    #[test]
    fn dates() {
        assert_eq!(day_before("2024-03-01"), "2024-02-29");
        assert_eq!(day_before("2025-01-01"), "2024-12-31");
        assert_eq!(civil_from_days(0), (1970, 1, 1));
    }
}
