//! Values beyond strings and Ollama's data:
//!
//! - `enable_thinking` is undefined unless the request sets `think` (Ollama's `.IsThinkSet`):
//!   `enable_thinking | default(x)` is `.Think` when set and `x` otherwise, and
//!   `enable_thinking == false` holds only when it is set (undefined equals nothing);
//! - dict literals (`{"role": "system", "content": x}`, `{}`) are bound at translation time:
//!   their items are translated values, read by key (`d.role`, `d["role"]`, `d.get(...)`,
//!   `'k' in d`, `|length`); `args or {}` on tool-call arguments is the arguments (an empty
//!   map behaves as `{}` everywhere), and `a or b` / `a and b` whose left side is known here
//!   is the value Jinja picks, not a boolean;
//! - a conditional expression whose sides Go cannot hold as one string variable (a tool-call
//!   argument value, JSON text, captured output) is Go template text printing the chosen
//!   side (`{{ if c }}...{{ else }}...{{ end }}`), printed where the value is printed; a
//!   side guarded by `v is string` on an argument value prints it as the string it is;
//! - a variable set to none and then (in a branch) to a message, such as `messages[0]` when it
//!   is the system message, is a Go variable holding `""` or the message: it tests as Jinja's
//!   none or dict, and its text fields read `(and $m $m.Content)` (empty for none, as Jinja's
//!   undefined), whose tests (`is defined`, `is string`) are whether the message exists;
//! - `loop.nextitem is undefined` (and `previtem`, `is defined`): whether that message exists;
//! - `{% set x = x | tojson %}` (or any other text) on a loop's own variable, directly in the
//!   loop's body: the range variable itself holds the text for the rest of the iteration
//!   (Go's range assigns it again at the next one, as Jinja's loop scope does).

use std::collections::BTreeSet;

use minijinja::machinery::ast;

use super::*;

/// State of the value translations.
#[derive(Default)]
pub(super) struct ValState {
    /// The nesting depth of each open loop's body, by its index variable.
    pub(super) loop_nest: BTreeMap<String, usize>,
    /// Variables that have only ever been assigned none.
    none_only: BTreeSet<String>,
    /// Fields of a message that may be none (`(and $m $m.Content)`), with the guard (`$m`).
    pub(super) maybe: BTreeMap<String, String>,
}

impl ValState {
    /// Bookkeeping of an assignment (before it is made).
    pub(super) fn assigned(&mut self, name: &str, v: &Val, declared: bool) {
        if matches!(v, Val::Undefined) && (!declared || self.none_only.contains(name)) {
            self.none_only.insert(name.to_string());
        } else {
            self.none_only.remove(name);
        }
    }
}

impl Translator<'_> {
    /// `enable_thinking | default(d)`: `.Think` when the request sets it, `d` otherwise.
    pub(super) fn think_default(&mut self, d: Val, line: usize) -> Result<Val, Untranslatable> {
        Ok(match d {
            Val::Bool(true) => Val::Go("(or $.Think (not $.IsThinkSet))".into(), Kind::Bool),
            Val::Bool(false) | Val::Undefined => Val::Go("(and $.IsThinkSet $.Think)".into(), Kind::Bool),
            Val::Go(g, Kind::Bool) => {
                Val::Go(format!("(or (and $.IsThinkSet $.Think) (and (not $.IsThinkSet) {g}))"), Kind::Bool)
            }
            other => bail!(line, "enable_thinking | default({})", describe(&other)),
        })
    }

    /// `enable_thinking == x` for a constant boolean `x` (`None` when `l`/`r` is not that).
    pub(super) fn think_equal(&self, l: &Val, r: &Val) -> Option<Val> {
        let (b, other) = match (l, r) {
            (Val::Bool(b), o) | (o, Val::Bool(b)) => (*b, o),
            _ => return None,
        };
        match other {
            Val::Go(g, Kind::Bool) if g == "$.Think" => Some(if b {
                Val::Go("$.Think".into(), Kind::Bool)
            } else {
                Val::Go("(and $.IsThinkSet (not $.Think))".into(), Kind::Bool)
            }),
            _ => None,
        }
    }

    /// A dict literal with constant string keys: its items, translated (later keys replace
    /// earlier ones in place, as Python's dict does).
    pub(super) fn dict_literal(&mut self, m: &ast::Map<'_>, line: usize) -> Result<Val, Untranslatable> {
        let mut items: Vec<(String, Val)> = Vec::new();
        for (k, v) in m.keys.iter().zip(&m.values) {
            let key = match self.expr(k)? {
                Val::Str(s) => s,
                other => bail!(line, "dict literal with {} as a key", describe(&other)),
            };
            let v = self.expr(v)?;
            match items.iter_mut().find(|(x, _)| *x == key) {
                Some(slot) => slot.1 = v,
                None => items.push((key, v)),
            }
        }
        Ok(Val::Dict(items))
    }

    /// `'k' in d` for a dict bound here.
    pub(super) fn dict_has(&self, d: &[(String, Val)], key: &Val, line: usize) -> Result<Val, Untranslatable> {
        match key {
            Val::Str(k) => Ok(Val::Bool(d.iter().any(|(x, _)| x == k))),
            other => bail!(line, "`in` on a dict with {} as the key", describe(other)),
        }
    }

    /// `a or b` / `a and b` as Jinja's value (the side it picks) when that is known here:
    /// the left side's truth is known, or the right side is an empty `{}`/`[]` that the
    /// left side's data behaves as when empty. `None`: not such a case.
    pub(super) fn known_and_or(&mut self, or: bool, l: &Val, r: &Val) -> Option<Val> {
        let empty_alt = match r {
            Val::Dict(d) => d.is_empty(),
            Val::List(items) => items.is_empty(),
            _ => false,
        };
        if or && empty_alt {
            match (l, r) {
                (Val::Go(_, Kind::Arguments), Val::Dict(_))
                | (Val::Go(_, Kind::Messages | Kind::Tools | Kind::ToolCalls), Val::List(_)) => return Some(l.clone()),
                _ => {}
            }
        }
        let truth = super::expr::known_truth(l)?;
        // Jinja's `or` gives the left side when true, the right one otherwise; `and` the
        // other way round.
        Some(if truth == or { l.clone() } else { r.clone() })
    }

    /// `c ? t : f` for sides Go cannot hold as one string value: Go text printing the side
    /// chosen, a raw value printed (or accumulated into a string) where it is used.
    pub(super) fn printed_choice(&mut self, cond: &str, t: Val, f: Val, line: usize) -> Result<Val, Untranslatable> {
        let t = narrow(cond, t, true);
        let f = narrow(cond, f, false);
        let saved = std::mem::take(&mut self.out);
        let r = self.choice_text(cond, t, f, line);
        let text = std::mem::replace(&mut self.out, saved);
        r?;
        Ok(Val::Raw(text))
    }

    fn choice_text(&mut self, cond: &str, t: Val, f: Val, line: usize) -> Result<(), Untranslatable> {
        self.out.push_str(&format!("{{{{ if {cond} }}}}"));
        self.emit(t, line)?;
        self.out.push_str("{{ else }}");
        self.emit(f, line)?;
        self.out.push_str("{{ end }}");
        Ok(())
    }

    /// `{% set x = messages[0] %}` where `x` has only held none so far (or already is such a
    /// variable): a Go variable holding the message, or `""` for none. `None`: not such a case.
    pub(super) fn set_maybe_message(&mut self, name: &str, v: &Val) -> Option<Result<(), Untranslatable>> {
        let Val::Go(g, Kind::Message) = v else { return None };
        let maybe = match self.vars.get(name) {
            Some(Kind::MaybeMessage) => true,
            Some(Kind::Str | Kind::Undefined) => self.vals.none_only.contains(name),
            _ => false,
        };
        if !maybe || self.loops.iter().any(|l| l.target == name) || self.poisoned.contains_key(name) {
            return None;
        }
        self.vars.insert(name.to_string(), Kind::MaybeMessage);
        self.out.push_str(&format!("{{{{ ${} = {g} }}}}", go_var(name)));
        self.assigned(name);
        Some(Ok(()))
    }

    /// An attribute of a message that may be none: its text field, or "" (Jinja's undefined
    /// attribute of none prints and tests as empty).
    pub(super) fn maybe_message_attr(&mut self, g: &str, name: &str, line: usize) -> Result<Val, Untranslatable> {
        match self.attr(Val::Go(g.to_string(), Kind::Message), name, line)? {
            Val::Go(f, Kind::Str) => {
                let v = format!("(and {g} {f})");
                self.vals.maybe.insert(v.clone(), g.to_string());
                Ok(Val::Go(v, Kind::Str))
            }
            Val::Undefined => Ok(Val::Undefined),
            other => bail!(line, "attribute {name} ({}) of a message that may be none", describe(&other)),
        }
    }

    /// Jinja tests on a message that may be none, or on one of its fields. `None`: neither.
    pub(super) fn maybe_test(&mut self, v: &Val, test: &str, line: usize) -> Option<Result<Val, Untranslatable>> {
        let (guard, whole) = match v {
            Val::Go(g, Kind::MaybeMessage) => (g.clone(), true),
            Val::Go(g, Kind::Str) => (self.vals.maybe.get(g)?.clone(), false),
            _ => return None,
        };
        let exists = Val::Go(guard.clone(), Kind::Bool);
        let missing = Val::Go(format!("(not {guard})"), Kind::Bool);
        Some(Ok(match (test, whole) {
            // None is defined; a field of none is not.
            ("defined", true) => Val::Bool(true),
            ("undefined", true) => Val::Bool(false),
            ("none", true) => missing,
            // A message is a dict: a mapping, iterable (over its keys) and a sequence (it has a
            // length and items).
            ("mapping" | "iterable" | "sequence", true) => exists,
            ("string" | "number" | "boolean", true) => Val::Bool(false),
            ("defined" | "string", false) => exists,
            ("undefined", false) => missing,
            ("none" | "mapping" | "number" | "boolean", false) => Val::Bool(false),
            _ => {
                return Some(Err(Untranslatable {
                    construct: format!("test `is {test}` on a message that may be none"),
                    line,
                }))
            }
        }))
    }

    /// Comparing a field of a message that may be none with none: an undefined field equals
    /// nothing, an empty string is not none; Go cannot tell these from `""` here.
    pub(super) fn maybe_equal(&self, l: &Val, r: &Val, line: usize) -> Result<(), Untranslatable> {
        let maybe = |v: &Val| matches!(v, Val::Go(g, Kind::Str) if self.vals.maybe.contains_key(g));
        if (maybe(l) && matches!(r, Val::Undefined)) || (maybe(r) && matches!(l, Val::Undefined)) {
            bail!(line, "comparing a field of a message that may be none with none");
        }
        Ok(())
    }

    /// `loop.nextitem is defined` / `loop.previtem is undefined`: whether the neighbouring
    /// message exists (Jinja's is undefined past either end).
    pub(super) fn neighbour_defined(&mut self, v: Val, defined: bool, line: usize) -> Result<Val, Untranslatable> {
        let exists = self.truth(v, line)?;
        Ok(if defined { Val::Go(exists, Kind::Bool) } else { Val::Go(format!("(not {exists})"), Kind::Bool) })
    }

    /// `{% set x = text %}` where `x` is the innermost enclosing loop's variable, directly in
    /// its body: the range variable holds the text from here on in this iteration. `None`:
    /// not such an assignment.
    pub(super) fn set_loop_target(&mut self, name: &str, v: &Val, line: usize) -> Option<Result<(), Untranslatable>> {
        let text = matches!(v, Val::Str(_) | Val::Raw(_) | Val::Concat(_) | Val::Go(_, Kind::Str));
        let l = self.loops.last()?;
        if l.target != name || !text || matches!(l.kind, Kind::Str | Kind::ArgValue) {
            return None;
        }
        let (expr, index, kind) = (l.expr.clone(), l.index.clone(), l.kind);
        // Only the range variable itself, assigned in the loop's own body (not in a branch),
        // and not in a loop over messages (whose item is also read as the previous message
        // and as `messages[loop.index0]`).
        if kind == Kind::Message
            || expr != format!("${}", go_var(name))
            || self.vals.loop_nest.get(&index).copied() != Some(self.nest_depth())
        {
            // Afterwards the name may mean either: reading it is untranslatable (the caller
            // poisons the name, which the loop no longer shadows).
            if let Some(l) = self.loops.last_mut() {
                l.target = format!("\0{name}");
            }
            return Some(Err(Untranslatable {
                construct: format!("loop variable {name} replaced by text inside a branch or a loop over messages"),
                line,
            }));
        }
        Some((|| {
            let (operand, _) = self.operand(v.clone(), line)?;
            self.out.push_str(&format!("{{{{ {expr} = {operand} }}}}"));
            if let Some(l) = self.loops.last_mut() {
                l.kind = Kind::Str;
            }
            Ok(())
        })())
    }
}

/// A side of `v if v is string else ...` (or `... if v is not string else v`) on a tool-call
/// argument value: where it is chosen, the value is a string and prints as itself.
pub(super) fn narrow(cond: &str, v: Val, true_side: bool) -> Val {
    match v {
        Val::Go(g, Kind::ArgValue) => {
            let is_str = format!("(eq (slice (json {g}) 0 1) \"\\\"\")");
            let want = if true_side { is_str.clone() } else { format!("(not {is_str})") };
            if cond == want {
                Val::Go(g, Kind::Str)
            } else {
                Val::Go(g, Kind::ArgValue)
            }
        }
        v => v,
    }
}

/// An item of a dict bound at translation time (undefined when missing).
pub(super) fn dict_get(d: &[(String, Val)], key: &str) -> Val {
    d.iter().find(|(k, _)| k == key).map_or(Val::Undefined, |(_, v)| v.clone())
}

#[cfg(test)]
mod tests {
    use super::super::super::render::chat::{Chat, Message};
    use super::super::super::render::go::{GoTemplate, Request};
    use super::super::super::render::jinja::{JinjaContext, JinjaTemplate};
    use super::super::tests::{check, opts};
    use super::super::{translate, translate_lenient};

    const CHAT: &str = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}<|assistant|>";

    /// Renders both sides on `chat` (with `think` as given) and compares.
    fn same_on(jinja: &str, template: &str, chat: &Chat) {
        let go = GoTemplate::parse(template).unwrap();
        let j = JinjaTemplate::parse(jinja).unwrap();
        let jctx = JinjaContext { bos_token: "<s>".into(), eos_token: "</s>".into(), ..Default::default() };
        let want = j.render(chat, &jctx).unwrap();
        let got = go.render(chat, &Request::default()).unwrap();
        assert_eq!(got, want, "{template}");
    }

    /// `and`/`or` with a left side known at translation time never translate the right side
    /// (Jinja never evaluates it), and messages picked by role are counted.
    #[test]
    fn known_left_sides_short_circuit_and_picked_messages_count() {
        let jinja = format!(
            "{{% for m in messages %}}{{% if m.content is not string and m.content[0].text %}}[list]{{% endif %}}\
             {{% if m.content is string or m.content[0].text %}}[text]{{% endif %}}{{% endfor %}}{CHAT}"
        );
        let t = check(&jinja);
        assert!(!t.template.contains("index"), "{}", t.template);
        let jinja = format!(
            "{{% if messages|selectattr('role', 'equalto', 'system')|list|length == 0 %}}<|system|>default\n{{% endif %}}\
             {{% if messages|rejectattr('role', 'eq', 'user')|list %}}[not only users]{{% endif %}}\
             [{{{{ messages|selectattr('role', 'equalto', 'user')|list|length }}}}]{CHAT}"
        );
        let t = check(&jinja);
        let chats = [
            vec![Message::new("user", "hi")],
            vec![Message::new("system", "s"), Message::new("user", "hi")],
            vec![Message::new("user", "a"), Message::new("assistant", "b"), Message::new("user", "c")],
            vec![],
        ];
        for messages in chats {
            same_on(&jinja, &t.template, &Chat { messages, ..Default::default() });
        }
        // Other attributes and tests stay untranslatable.
        assert!(translate(
            &format!("{{{{ messages|selectattr('content', 'equalto', 'x')|list|length }}}}{CHAT}"),
            &opts()
        )
        .is_err());
    }

    #[test]
    fn enable_thinking_default_is_the_default_only_when_unset() {
        for d in ["true", "false"] {
            let jinja = format!(
                "{{% set enable_thinking = enable_thinking | default({d}) %}}{CHAT}{{% if enable_thinking %}}<think>{{% else %}}</think>{{% endif %}}"
            );
            let t = check(&jinja);
            for think in [None, Some(true), Some(false)] {
                let chat = Chat { messages: vec![Message::new("user", "hi")], think, ..Default::default() };
                same_on(&jinja, &t.template, &chat);
            }
        }
        // Undefined equals neither true nor false.
        let jinja = format!(
            "{CHAT}{{% if enable_thinking == false %}}[off]{{% endif %}}{{% if enable_thinking != true %}}[not on]{{% endif %}}"
        );
        let t = check(&jinja);
        for think in [None, Some(true), Some(false)] {
            let chat = Chat { messages: vec![Message::new("user", "hi")], think, ..Default::default() };
            same_on(&jinja, &t.template, &chat);
        }
    }

    #[test]
    fn dict_literals_are_read_by_key() {
        let t = check(
            "{% macro turn(m, extra={}) %}<|{{ m['role'] }}|>{{ m.content }}{{ m.get('name', '') }}\
             {% if 'x' in extra %}X{{ extra.x }}{% endif %}{{ extra | length }}{% if extra is iterable %}I{% endif %}\n{% endmacro %}\
             {{ turn({'role': 'developer', 'content': 'Be brief.', 'role': 'dev'}) }}\
             {% for m in messages %}{{ turn({'role': m.role, 'content': m.content}, {'x': m.role}) }}{% endfor %}<|assistant|>",
        );
        assert!(t.template.starts_with("<|dev|>Be brief.0I{{"), "{}", t.template);
        // Tool-call arguments or an empty dict: the arguments.
        check(
            "{% for m in messages %}{{ m.content }}{% for tc in m.tool_calls %}{% set a = tc.function.arguments or {} %}\
             {% if a is not mapping %}{{ raise_exception('no') }}{% endif %}\
             {% for k, v in a.items() %}<{{ k }}>{% endfor %}{% endfor %}\n{% endfor %}",
        );
        // `or`/`and` with a known left side is the side picked, not a boolean.
        check(&format!("{{% for t in (none or tools) %}}{{{{ t.function.name }}}};{{% endfor %}}{CHAT}"));
        assert!(translate("{{ {'a': 1} }}", &opts()).is_err());
    }

    #[test]
    fn conditional_values_of_argument_values_and_json() {
        let jinja = "{% for m in messages %}{{ m.content }}{% for tc in m.tool_calls %}{% for k, v in tc.function.arguments.items() %}\
                     {{ '<' ~ k ~ '>' ~ (v if v is string else v | tojson) ~ '</' ~ k ~ '>' }}\
                     {% set s = (v | tojson if v is not string else v) + ';' %}{{ s }}{% endfor %}{% endfor %}\n{% endfor %}";
        let t = check(jinja);
        assert!(t.notes.is_empty(), "{:?}", t.notes);
        // Arguments of every JSON type, with awkward strings.
        let mut chat = Chat { messages: vec![Message::new("user", "go")], ..Default::default() };
        // (Lists and objects are left out: Go's json writes them without Python's spaces.)
        let call: Message = serde_json::from_str(
            r#"{"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f",
                "arguments": {"a": "x\"y é", "b": 1.5, "c": true, "d": null, "e": 3}}}]}"#,
        )
        .unwrap();
        chat.messages.push(call);
        same_on(jinja, &t.template, &chat);
    }

    #[test]
    fn neighbours_are_undefined_past_the_ends() {
        check(
            "{% for m in messages %}{% if loop.previtem is undefined or loop.previtem.role != m.role %}<{{ m.role }}>{% endif %}\
             {{ m.content }}{% if loop.nextitem is undefined or loop.nextitem.role != m.role %}</{{ m.role }}>{% endif %}\
             {% if loop.nextitem is defined %}+{% endif %}{% endfor %}"
        );
    }

    #[test]
    fn a_message_or_none() {
        let t = check(
            "{% set sys = none %}{% set rest = messages %}{% if messages and messages[0].role == 'system' %}\
             {% set sys = messages[0] %}{% set rest = messages[1:] %}{% endif %}\
             {% macro head(s) %}{% if s and s.content %}[{{ s.content }}]{% else %}[default]{% endif %}\
             {% if s.content is defined %}D{% endif %}{% if s.content is string %}S{% endif %}{% if s is none %}N{% endif %}\
             {% if s.role == 'system' %}R{% endif %}{% endmacro %}{{ head(sys) }}\
             {% for m in rest %}<|{{ m.role }}|>{{ m.content }}{% if m.tool_calls %}({{ m.tool_calls[-1].function.name }}){% endif %}\n{% endfor %}",
        );
        assert!(t.template.contains("(and $j_sys $j_sys.Content)"), "{}", t.template);
        // A variable that held text cannot become a message.
        let e = translate(
            "{% set sys = 'x' %}{% if messages[0].role == 'system' %}{% set sys = messages[0] %}{% endif %}{{ sys.content }}",
            &opts(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("read outside it"), "{e}");
        assert!(translate(
            "{% set s = none %}{% if messages %}{% set s = messages[0] %}{% endif %}{{ s.content | default('d') }}",
            &opts()
        )
        .is_err());
    }

    #[test]
    fn loop_variable_replaced_by_its_json() {
        let jinja = format!(
            "{{% set ns = namespace(s='') %}}{{% for tool in tools %}}{{% if tool is not string %}}{{% set tool = tool | tojson %}}{{% endif %}}\
             {{% set ns.s = ns.s + tool %}}{{% if not loop.last %}}{{% set ns.s = ns.s + ', ' %}}{{% endif %}}{{% endfor %}}\
             {{% if ns.s %}}[{{{{ ns.s }}}}]{{% endif %}}{CHAT}"
        );
        let t = check(&jinja);
        assert!(t.template.contains("{{ $j_tool = $j"), "{}", t.template);
        // Replaced in a branch: afterwards it may be either.
        let jinja = format!(
            "{{% for m in messages %}}{{% if m.role == 'user' %}}{{% set m = 'u' %}}{{% endif %}}{{{{ m.content }}}}{{% endfor %}}{CHAT}"
        );
        let e = translate(&jinja, &opts()).unwrap_err();
        assert!(e.to_string().contains("inside a branch"), "{e}");
        assert!(translate_lenient(&jinja, &opts()).is_ok());
    }
}
