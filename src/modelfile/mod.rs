//! Ollama Modelfiles: writing them from a GGUF's metadata, and parsing/checking them with
//! Ollama's own grammar.
//!
//! - [`from_gguf`] turns GGUF metadata into a [`ModelfileSpec`]: FROM, the TEMPLATE of the
//!   detected chat-template family (see [`families`]), its stop tokens, `num_ctx`, the
//!   default SYSTEM prompt the Jinja template hard-codes, ADAPTER, LICENSE, and the user's
//!   own SYSTEM and PARAMETERs.
//! - [`render`] writes a spec as Modelfile text, quoting every value so that Ollama reads
//!   back exactly the same string, and verifies that by parsing its own output.
//! - [`check`] parses and validates a Modelfile as `ollama create` would, reporting every
//!   problem with its line and Ollama's wording ([`parse`] stops at the first syntax error).
//!
//! ```no_run
//! use ggufkit::gguf::GgufFile;
//! use ggufkit::modelfile::{self, FromGgufOptions};
//! # fn main() -> ggufkit::Result<()> {
//! // Writing: FROM relative to the directory the Modelfile goes to.
//! let gguf = GgufFile::open("out/model-q4_k_m.gguf")?;
//! let opts = FromGgufOptions {
//!     from: modelfile::relative_from("out/model-q4_k_m.gguf".as_ref(), "out".as_ref())?,
//!     parameters: vec![modelfile::parse_parameter_arg("temperature=0.2")?],
//!     ..Default::default()
//! };
//! let (spec, warnings) = modelfile::from_gguf(&gguf.header.metadata, &opts)?;
//! let text = modelfile::render(&spec)?; // already checked: reads back to the same commands
//!
//! // Checking (`--check FILE`): every problem, with its line; exit code 1 when any.
//! let bytes = std::fs::read("Modelfile").map_err(|e| ggufkit::Error::io("Modelfile", "read", e))?;
//! match modelfile::check(&modelfile::decode(&bytes)) {
//!     Ok(mf) => mf.warnings.iter().for_each(|w| eprintln!("Modelfile: {w}")),
//!     Err(diags) => diags.iter().for_each(|d| eprintln!("Modelfile: {d}")),
//! }
//! # let _ = (warnings, text);
//! # Ok(()) }
//! ```
//!
//! The families are data: `formats/templates/<name>.gotmpl` (the Go template) and
//! `<name>.json` (stops, default system prompt, detection markers, the Jinja sources it is
//! tested against). `formats/modelfile.md` describes the grammar, the quoting rules and the
//! detection.

pub mod families;
mod gguf;
pub mod params;
mod parser;
pub mod render;
pub mod translate;
pub mod verify;
mod writer;

pub use families::{detect, family, Family};
pub use gguf::{from_gguf, parse_parameter_arg, relative_from, FromGgufOptions, DEFAULT_NUM_CTX_CAP};
pub use parser::{check, decode, is_go_print, parse, Diagnostic, Entry, Modelfile, Severity};
pub use verify::{annotate, verify, verify_gguf, TemplateContext, Verification};
pub use writer::{quote, render_command, QuoteError, QuoteStyle};

use crate::error::{Error, Result};

/// A MESSAGE role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One Modelfile command with its (unquoted) value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    From(String),
    Adapter(String),
    Template(String),
    System(String),
    License(String),
    /// `PARAMETER name value`; `stop` may repeat.
    Parameter {
        name: String,
        value: String,
    },
    Message {
        role: Role,
        content: String,
    },
    /// `REQUIRES` (minimum Ollama version, recent Ollama only).
    Requires(String),
    /// `DRAFT` (speculative-decoding draft model, recent Ollama only).
    Draft(String),
    /// `RENDERER` (recent Ollama only).
    Renderer(String),
    /// `PARSER` (recent Ollama only).
    Parser(String),
}

/// What a Modelfile says, before it is written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelfileSpec {
    /// Comment lines written at the top (without `# `).
    pub comments: Vec<String>,
    /// FROM: a path (relative to the Modelfile's directory, see [`relative_from`]) or a
    /// model reference, written verbatim.
    pub from: String,
    pub adapter: Option<String>,
    pub template: Option<String>,
    pub system: Option<String>,
    /// PARAMETER lines in order (`stop` repeated once per value).
    pub parameters: Vec<(String, String)>,
    pub messages: Vec<(Role, String)>,
    pub license: Option<String>,
}

impl ModelfileSpec {
    /// A spec with only FROM.
    pub fn new(from: impl Into<String>) -> Self {
        ModelfileSpec { from: from.into(), ..Default::default() }
    }

    /// The commands, in the order [`render`] writes them.
    pub fn commands(&self) -> Vec<Command> {
        let mut c = vec![Command::From(self.from.clone())];
        if let Some(a) = &self.adapter {
            c.push(Command::Adapter(a.clone()));
        }
        if let Some(t) = &self.template {
            c.push(Command::Template(t.clone()));
        }
        if let Some(s) = &self.system {
            c.push(Command::System(s.clone()));
        }
        for (name, value) in &self.parameters {
            c.push(Command::Parameter { name: name.clone(), value: value.clone() });
        }
        for (role, content) in &self.messages {
            c.push(Command::Message { role: *role, content: content.clone() });
        }
        if let Some(l) = &self.license {
            c.push(Command::License(l.clone()));
        }
        c
    }

    /// The values of a parameter.
    pub fn parameter(&self, name: &str) -> Vec<&str> {
        self.parameters.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect()
    }
}

/// Writes a Modelfile. Deterministic; fails when a value cannot be quoted for Ollama (a
/// non-printable character, or a line ending in `"""`) or when the result would not pass
/// [`check`] (unknown parameter, bad value, empty FROM). The output is parsed back and
/// must give exactly the spec's commands.
pub fn render(spec: &ModelfileSpec) -> Result<String> {
    if spec.from.is_empty() {
        return Err(Error::Usage("Modelfile FROM must not be empty".into()));
    }
    let text = writer::render(spec)?;
    let parsed = check(&text).map_err(|d| {
        Error::Usage(format!(
            "the Modelfile would not be accepted by Ollama: {}",
            d.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("; ")
        ))
    })?;
    if parsed.commands() != spec.commands() {
        return Err(Error::Other(
            "internal error: the written Modelfile does not read back to the same commands".into(),
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_and_read_back() {
        let mut spec = ModelfileSpec::new("./model.gguf");
        spec.comments = vec!["made by a test".into()];
        spec.adapter = Some("./adapter.gguf".into());
        spec.template = Some(family("qwen2.5-coder").unwrap().template.clone());
        spec.system = Some("You are Qwen, created by Alibaba Cloud. You are a helpful assistant.".into());
        spec.parameters = vec![
            ("stop".into(), "<|im_end|>".into()),
            ("stop".into(), "\n\n\n".into()),
            ("num_ctx".into(), "8192".into()),
            ("temperature".into(), "0.2".into()),
        ];
        spec.messages = vec![(Role::User, "hi \"there\"".into()), (Role::Assistant, " spaced ".into())];
        spec.license = Some("apache-2.0\nhttps://www.apache.org/licenses/LICENSE-2.0".into());
        let text = render(&spec).unwrap();
        assert!(text.starts_with("# made by a test\nFROM ./model.gguf\nADAPTER ./adapter.gguf\n\nTEMPLATE \"\"\""));
        assert_eq!(check(&text).unwrap().commands(), spec.commands());
        assert_eq!(render(&spec).unwrap(), text);
    }

    #[test]
    fn render_rejects_what_ollama_would_reject() {
        let mut spec = ModelfileSpec::new("base");
        spec.parameters = vec![("temprature".into(), "0.2".into())];
        assert!(render(&spec).unwrap_err().to_string().contains("unknown parameter 'temprature'"));
        spec.parameters = vec![("num_ctx".into(), "big".into())];
        assert!(render(&spec).unwrap_err().to_string().contains("invalid int value [big]"));
        let mut spec = ModelfileSpec::new("base");
        spec.system = Some("ends badly \"\"\"\nnext".into());
        assert!(render(&spec).unwrap_err().to_string().contains("SYSTEM"));
        assert!(render(&ModelfileSpec::new("")).is_err());
    }
}
