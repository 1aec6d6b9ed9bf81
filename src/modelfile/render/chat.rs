//! A chat conversation as both renderers receive it: OpenAI-style messages (what Ollama's
//! API and Hugging Face's `apply_chat_template` take), tools as JSON schemas, and Ollama's
//! `think` flag.

use serde::{Deserialize, Serialize};

/// One tool call of an assistant message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    #[serde(default)]
    pub id: String,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionCall,
}

fn function_type() -> String {
    "function".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<i64>,
    pub name: String,
    /// An object (Ollama decodes it into a Go map; Jinja sees it in this order).
    #[serde(default)]
    pub arguments: serde_json::Map<String, serde_json::Value>,
}

/// One message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    #[serde(default)]
    pub content: String,
    /// Reasoning text: Ollama's `.Thinking`, Hugging Face's `reasoning_content`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Ollama's `tool_name` of a tool result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<String>,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Message {
        Message { role: role.into(), content: content.into(), ..Default::default() }
    }
}

/// A conversation, rendered with the generation prompt for the next assistant turn.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Chat {
    pub messages: Vec<Message>,
    /// Tool definitions (`{"type": "function", "function": {...}}`), if offered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<serde_json::Value>>,
    /// Ollama's `think` request flag (`enable_thinking` for Jinja); `None`: not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub think: Option<bool>,
}
