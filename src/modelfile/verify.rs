//! Verifying a Modelfile TEMPLATE against the GGUF's Jinja chat template: both are rendered
//! on a built-in set of conversations (Ollama's way for the Go template, transformers' way
//! for the Jinja one) and compared byte for byte.
//!
//! The rules (also in `formats/modelfile.md`):
//! - The Go side gets the Modelfile's SYSTEM as Ollama does: as a first system message when
//!   the conversation has none. The Jinja side gets the conversation unchanged (its own
//!   default system prompt, if any, applies).
//! - BOS: Ollama's runtime puts the BOS token before the prompt itself when the vocabulary
//!   says so (`tokenizer.ggml.add_bos_token`, llama.cpp's default for SPM vocabularies),
//!   so when it does, one leading `bos_token` text is removed from the Jinja rendering
//!   before comparing. When it does not, the Go template must write it.
//! - `currentDate` and `strftime_now` see the same date.
//! - A conversation the Jinja template rejects (`raise_exception`) or cannot render is
//!   reported as such and not counted; the rest are either identical or a difference with
//!   the first differing character and an excerpt of each side.
//! - Conversations with tools are included when the Jinja template mentions tools; those
//!   with reasoning when it reads `reasoning_content`, and the `think` switch when it reads
//!   `enable_thinking`.

use std::time::Instant;

use serde::Serialize;

use super::render::chat::{Chat, FunctionCall, Message, ToolCall};
use super::render::go::{GoTemplate, Request};
use super::render::jinja::{JinjaContext, JinjaError, JinjaTemplate};
use crate::error::{Error, Result};

/// What the renderings depend on besides the two templates.
#[derive(Debug, Clone, Default)]
pub struct TemplateContext {
    /// `bos_token` / `eos_token` text for Jinja (from `tokenizer.ggml.bos_token_id` /
    /// `eos_token_id`).
    pub bos_token: String,
    pub eos_token: String,
    /// Does the runtime add BOS itself (`tokenizer.ggml.add_bos_token`)?
    pub add_bos: bool,
    /// The vocabulary's special (control) tokens, for the caller's use (stops, detection).
    pub special_tokens: Vec<String>,
    /// The Modelfile's SYSTEM.
    pub system: Option<String>,
    /// The date both sides see (YYYY-MM-DD); `None`: today (UTC).
    pub date: Option<String>,
}

/// One conversation that does not render identically.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Difference {
    pub conversation: String,
    /// Character offset of the first difference (in the Jinja rendering, after the BOS rule).
    pub position: usize,
    /// Up to ~60 characters of each rendering from a little before that point.
    pub jinja: String,
    pub ollama: String,
    /// The Go template failed on this conversation (Ollama would answer with this error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A conversation that was not compared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skipped {
    pub conversation: String,
    /// `rejected` (the Jinja template raises an exception on it) or `jinja-error`.
    pub status: String,
    pub reason: String,
}

/// The result of a verification.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verification {
    /// Conversations compared.
    pub conversations: usize,
    /// Of which rendered identically.
    pub identical: usize,
    pub differences: Vec<Difference>,
    /// Conversations not compared (the Jinja template rejects them, or fails).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<Skipped>,
    /// Names of the identical conversations.
    pub identical_conversations: Vec<String>,
    /// Time spent, milliseconds (not serialized: runs must be reproducible).
    #[serde(skip)]
    pub millis: f64,
}

impl Verification {
    /// Every compared conversation is identical, and there was at least one.
    pub fn is_verified(&self) -> bool {
        self.conversations > 0 && self.identical == self.conversations
    }

    /// One line for people.
    pub fn summary(&self) -> String {
        let mut s = if self.is_verified() {
            format!(
                "TEMPLATE verified: renders exactly like the GGUF's chat template on all {} conversations",
                self.conversations
            )
        } else if self.conversations == 0 {
            "TEMPLATE NOT verified: the GGUF's chat template rendered none of the test conversations".to_string()
        } else {
            format!(
                "TEMPLATE NOT verified: differs from the GGUF's chat template on {} of {} conversations ({})",
                self.differences.len(),
                self.conversations,
                self.differences.iter().map(|d| d.conversation.as_str()).collect::<Vec<_>>().join(", ")
            )
        };
        if !self.skipped.is_empty() {
            s.push_str(&format!(
                "; not compared: {}",
                self.skipped
                    .iter()
                    .map(|x| format!("{} ({})", x.conversation, x.status))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        s
    }

    /// Comment lines for the Modelfile header (without `# `).
    pub fn comment_lines(&self) -> Vec<String> {
        let mut lines = vec![self.summary()];
        for d in &self.differences {
            match &d.error {
                Some(e) => lines.push(format!("  {}: Ollama fails: {}", d.conversation, one_line(e, 160))),
                None => lines.push(format!(
                    "  {}: first difference at character {}: chat template {} vs TEMPLATE {}",
                    d.conversation,
                    d.position,
                    escape(&d.jinja),
                    escape(&d.ollama)
                )),
            }
        }
        lines
    }
}

fn one_line(s: &str, max: usize) -> String {
    let s = s.replace('\n', " ");
    if s.chars().count() > max {
        format!("{}...", s.chars().take(max).collect::<String>())
    } else {
        s
    }
}

/// A string as a one-line quoted literal (`\n` shown as such).
fn escape(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// A built-in test conversation.
#[derive(Debug, Clone)]
pub struct Conversation {
    pub name: &'static str,
    pub chat: Chat,
    /// Included only when the Jinja template mentions this (`tools`, `reasoning_content`,
    /// `enable_thinking`).
    pub needs: Option<&'static str>,
}

fn tools() -> Vec<serde_json::Value> {
    serde_json::from_str(
        r#"[
  {"type": "function", "function": {"name": "get_weather", "description": "Get the current weather in a city",
   "parameters": {"type": "object", "properties": {
     "city": {"type": "string", "description": "City name, e.g. Paris"},
     "unit": {"type": "string", "description": "Temperature unit", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city"]}}}
]"#,
    )
    .unwrap_or_default()
}

fn call(id: &str, name: &str, args: serde_json::Value) -> ToolCall {
    ToolCall {
        id: id.into(),
        kind: "function".into(),
        function: FunctionCall {
            index: None,
            name: name.into(),
            arguments: args.as_object().cloned().unwrap_or_default(),
        },
    }
}

/// The built-in conversations: no system, a system, an empty system, multi-turn (with
/// and without a system), unicode and multi-line content, tools offered, a tool call and
/// its result, reasoning in the history and thinking switched off.
pub fn conversations() -> Vec<Conversation> {
    let m = Message::new;
    let chat = |messages: Vec<Message>| Chat { messages, ..Default::default() };
    let with_tools = |messages: Vec<Message>| Chat { messages, tools: Some(tools()), ..Default::default() };
    let mut assistant_call = m("assistant", "");
    assistant_call.tool_calls =
        vec![call("callParis", "get_weather", serde_json::json!({"city": "Paris", "unit": "celsius"}))];
    let mut tool_result = m("tool", "{\"temperature\": 22, \"sky\": \"clear\"}");
    tool_result.tool_call_id = Some("callParis".into());
    tool_result.tool_name = Some("get_weather".into());
    let mut thought = m("assistant", "A mutex lets one thread at a time into a critical section.");
    thought.thinking = Some("The user wants a short definition.".into());
    vec![
        Conversation {
            name: "user",
            chat: chat(vec![m("user", "Write a Python function that reverses a string.")]),
            needs: None,
        },
        Conversation {
            name: "system-user",
            chat: chat(vec![
                m("system", "You are a careful senior engineer. Answer with code first."),
                m("user", "Write a Rust function that checks whether a number is prime."),
            ]),
            needs: None,
        },
        Conversation { name: "empty-system", chat: chat(vec![m("system", ""), m("user", "Say hello.")]), needs: None },
        Conversation {
            name: "multi-turn",
            chat: chat(vec![
                m("user", "What does `git rebase -i` do?"),
                m("assistant", "It lets you rewrite, reorder, squash or drop commits interactively."),
                m("user", "How do I squash the last three commits?"),
            ]),
            needs: None,
        },
        Conversation {
            name: "system-multi-turn",
            chat: chat(vec![
                m("system", "You answer in one short paragraph."),
                m("user", "Explain a mutex."),
                m("assistant", "A mutex is a lock that lets only one thread at a time enter a critical section."),
                m("user", "And a semaphore?"),
            ]),
            needs: None,
        },
        Conversation {
            name: "unicode-multiline",
            chat: chat(vec![
                m(
                    "system",
                    "Rules:\n1. Use \"double quotes\" in JSON.\n2. Never write '''triple''' strings.\nÜnïcödé ✓ 日本語",
                ),
                m("user", "Fix this:\n```python\ndef f(x):\n    return x*2\n```"),
                m("assistant", "```python\ndef f(x: int) -> int:\n    return x * 2\n```\nAdded type hints."),
                m("user", "Now add a docstring with \"quotes\" and a tab:\tdone. 🚀"),
            ]),
            needs: None,
        },
        Conversation {
            name: "tools-offer",
            chat: with_tools(vec![m("user", "What's the weather in Paris?")]),
            needs: Some("tools"),
        },
        Conversation {
            name: "tools-call-result",
            chat: with_tools(vec![m("user", "What's the weather in Paris?"), assistant_call, tool_result]),
            needs: Some("tools"),
        },
        Conversation {
            name: "thinking-history",
            chat: chat(vec![m("user", "Explain a mutex."), thought, m("user", "And a semaphore?")]),
            needs: Some("reasoning_content"),
        },
        Conversation {
            name: "think-off",
            chat: Chat { messages: vec![m("user", "Explain a mutex.")], tools: None, think: Some(false) },
            needs: Some("enable_thinking"),
        },
    ]
}

/// Does the Jinja template use this feature?
fn jinja_uses(jinja: &str, needs: &str) -> bool {
    match needs {
        "tools" => jinja.contains("tools") || jinja.contains("tool_calls"),
        other => jinja.contains(other),
    }
}

/// Renders both templates on every built-in conversation that applies and compares them.
///
/// Errors: the TEMPLATE is not valid Go template syntax, or the chat template does not
/// parse as Jinja. Everything else is reported in the [`Verification`].
pub fn verify(go_template: &str, jinja_template: &str, ctx: &TemplateContext) -> Result<Verification> {
    let start = Instant::now();
    let go = GoTemplate::parse(go_template)
        .map_err(|e| Error::Usage(format!("TEMPLATE is not a valid Go template: {e}")))?;
    let jinja = JinjaTemplate::parse(jinja_template).map_err(|e| Error::Usage(e.to_string()))?;
    let mut v = Verification {
        conversations: 0,
        identical: 0,
        differences: Vec::new(),
        skipped: Vec::new(),
        identical_conversations: Vec::new(),
        millis: 0.0,
    };
    let date = ctx.date.clone().unwrap_or_else(super::render::go::today_utc);
    let jctx = JinjaContext {
        bos_token: ctx.bos_token.clone(),
        eos_token: ctx.eos_token.clone(),
        date: Some(date.clone()),
        ..Default::default()
    };
    let req = Request { system: ctx.system.as_deref(), date: Some(&date), ..Default::default() };
    for conv in conversations() {
        if let Some(n) = conv.needs {
            if !jinja_uses(jinja_template, n) {
                continue;
            }
        }
        let want = match jinja.render(&conv.chat, &jctx) {
            Ok(w) => w,
            Err(JinjaError::Rejected(r)) => {
                v.skipped.push(Skipped { conversation: conv.name.into(), status: "rejected".into(), reason: r });
                continue;
            }
            Err(e) => {
                v.skipped.push(Skipped {
                    conversation: conv.name.into(),
                    status: "jinja-error".into(),
                    reason: e.to_string(),
                });
                continue;
            }
        };
        let want = if ctx.add_bos && !ctx.bos_token.is_empty() {
            want.strip_prefix(ctx.bos_token.as_str()).map(str::to_string).unwrap_or(want)
        } else {
            want
        };
        v.conversations += 1;
        match go.render(&conv.chat, &req) {
            Ok(got) if got == want => {
                v.identical += 1;
                v.identical_conversations.push(conv.name.into());
            }
            Ok(got) => v.differences.push(difference(conv.name, &want, &got)),
            Err(e) => v.differences.push(Difference {
                conversation: conv.name.into(),
                position: 0,
                jinja: excerpt(&want, 0),
                ollama: String::new(),
                error: Some(e),
            }),
        }
    }
    v.millis = start.elapsed().as_secs_f64() * 1e3;
    Ok(v)
}

/// The first differing character and an excerpt of each side from a little before it.
pub fn difference(name: &str, want: &str, got: &str) -> Difference {
    let pos = want.chars().zip(got.chars()).take_while(|(a, b)| a == b).count();
    Difference {
        conversation: name.into(),
        position: pos,
        jinja: excerpt(want, pos),
        ollama: excerpt(got, pos),
        error: None,
    }
}

fn excerpt(s: &str, pos: usize) -> String {
    let start = pos.saturating_sub(20);
    let text: String = s.chars().skip(start).take(60).collect();
    if start > 0 {
        format!("…{text}")
    } else {
        text
    }
}

/// The verification context a GGUF implies: its BOS/EOS token texts, whether the runtime
/// adds BOS (`tokenizer.ggml.add_bos_token`; when absent, llama.cpp's default: yes for
/// SentencePiece `llama` vocabularies), its control tokens, and the Modelfile's SYSTEM.
pub fn context_from_gguf(meta: &crate::gguf::Metadata, system: Option<&str>) -> TemplateContext {
    let tokens: Vec<&str> = meta
        .get("tokenizer.ggml.tokens")
        .and_then(|v| v.as_array())
        .map(|a| a.values.iter().map(|v| v.as_str().unwrap_or("")).collect())
        .unwrap_or_default();
    let token =
        |key: &str| meta.get_u64(key).and_then(|id| tokens.get(id as usize)).map(|s| s.to_string()).unwrap_or_default();
    let types: Vec<i64> = meta
        .get("tokenizer.ggml.token_type")
        .and_then(|v| v.as_array())
        .map(|a| a.values.iter().map(|v| v.as_i64().unwrap_or(1)).collect())
        .unwrap_or_default();
    let special_tokens = tokens.iter().zip(&types).filter(|(_, t)| **t == 3).map(|(s, _)| s.to_string()).collect();
    let add_bos = match meta.get("tokenizer.ggml.add_bos_token").and_then(|v| v.as_bool()) {
        Some(b) => b,
        None => meta.get_str("tokenizer.ggml.model") == Some("llama"),
    };
    TemplateContext {
        bos_token: token("tokenizer.ggml.bos_token_id"),
        eos_token: token("tokenizer.ggml.eos_token_id"),
        add_bos,
        special_tokens,
        system: system.map(str::to_string),
        date: None,
    }
}

/// Ollama's TEMPLATE when a Modelfile has none and Ollama finds no built-in match.
pub const OLLAMA_DEFAULT_TEMPLATE: &str = "{{ .Prompt }}";

/// Verifies a Modelfile spec (its TEMPLATE and SYSTEM) against the GGUF's chat template;
/// `None` when the GGUF has no chat template. This is what `modelfile` and `pack` record.
pub fn verify_gguf(meta: &crate::gguf::Metadata, spec: &super::ModelfileSpec) -> Result<Option<Verification>> {
    let Some(jinja) = meta.get_str("tokenizer.chat_template") else {
        return Ok(None);
    };
    let ctx = context_from_gguf(meta, spec.system.as_deref());
    let go = spec.template.as_deref().unwrap_or(OLLAMA_DEFAULT_TEMPLATE);
    verify(go, jinja, &ctx).map(Some)
}

/// Adds the verification's lines to the Modelfile's header comment (replacing a
/// "not verified" remark of the fallback).
pub fn annotate(spec: &mut super::ModelfileSpec, v: Option<&Verification>) {
    match v {
        Some(v) => spec.comments.extend(v.comment_lines()),
        None => spec.comments.push("TEMPLATE not verified: the GGUF has no chat template to compare with".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML_JINJA: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
    const CHATML_GO: &str =
        "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n";

    #[test]
    fn chatml_is_identical() {
        let v = verify(CHATML_GO, CHATML_JINJA, &TemplateContext::default()).unwrap();
        assert!(v.is_verified(), "{v:#?}");
        assert_eq!(v.conversations, 6);
        assert!(v.summary().starts_with("TEMPLATE verified"));
    }

    #[test]
    fn a_wrong_template_is_reported() {
        let go =
            "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>{{ end }}<|im_start|>assistant\n";
        let v = verify(go, CHATML_JINJA, &TemplateContext::default()).unwrap();
        assert!(!v.is_verified());
        assert_eq!(v.identical, 0);
        let d = &v.differences[0];
        assert_eq!(d.conversation, "user");
        assert_eq!(
            d.position,
            "<|im_start|>user\nWrite a Python function that reverses a string.<|im_end|>".chars().count()
        );
        assert!(d.jinja.contains("<|im_end|>\n<|im_start|>assistant"));
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["conversations"], 6);
        assert_eq!(json["identical"], 0);
        assert!(v.comment_lines()[0].contains("NOT verified"));
    }

    #[test]
    fn the_modelfile_system_is_used_when_the_chat_has_none() {
        let jinja = "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nDefault.<|im_end|>\n{% endif %}"
            .to_string()
            + CHATML_JINJA;
        let ctx = TemplateContext { system: Some("Default.".into()), ..Default::default() };
        let go = "{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}{{- range .Messages }}{{ if ne .Role \"system\" }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}{{ end }}<|im_start|>assistant\n";
        let v = verify(go, &jinja, &ctx).unwrap();
        // The empty system message: Jinja writes an empty system block, Ollama's .System is empty.
        assert_eq!(v.differences.iter().map(|d| d.conversation.as_str()).collect::<Vec<_>>(), vec!["empty-system"]);
        assert_eq!(v.identical, 5);
    }

    #[test]
    fn rejections_are_not_differences() {
        let jinja =
            "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
                .to_string()
                + CHATML_JINJA;
        let v = verify(CHATML_GO, &jinja, &TemplateContext::default()).unwrap();
        assert!(v.is_verified());
        assert_eq!(v.skipped.len(), 4);
        assert!(v.skipped.iter().all(|s| s.status == "rejected"));
    }

    #[test]
    fn bos_rule() {
        let jinja = "{{ bos_token }}".to_string() + CHATML_JINJA;
        let mut ctx = TemplateContext { bos_token: "<s>".into(), add_bos: true, ..Default::default() };
        assert!(verify(CHATML_GO, &jinja, &ctx).unwrap().is_verified());
        ctx.add_bos = false;
        assert!(!verify(CHATML_GO, &jinja, &ctx).unwrap().is_verified());
    }

    #[test]
    fn bad_templates_are_errors() {
        assert!(verify("{{ if }}", CHATML_JINJA, &TemplateContext::default())
            .unwrap_err()
            .to_string()
            .contains("missing value for if"));
        assert!(verify(CHATML_GO, "{% for %}", &TemplateContext::default())
            .unwrap_err()
            .to_string()
            .contains("does not parse"));
        let runaway = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
        let v = verify(CHATML_GO, runaway, &TemplateContext::default()).unwrap();
        assert_eq!(v.conversations, 0);
        assert!(v.skipped.iter().all(|s| s.status == "jinja-error" && s.reason.contains("stopped")));
    }
}
