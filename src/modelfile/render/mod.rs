//! The two renderers a Modelfile is verified with: Ollama's Go TEMPLATE ([`go`]) and the
//! GGUF's Jinja chat template ([`jinja`]), over the same [`chat::Chat`].

pub mod chat;
pub mod go;
pub mod jinja;

pub use chat::{Chat, FunctionCall, Message, ToolCall};
