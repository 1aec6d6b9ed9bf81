//! Chat-template families, loaded from `formats/templates/*.json` and `*.gotmpl` (compiled
//! into the binary), and their detection from a GGUF's chat template and vocabulary.

use std::sync::OnceLock;

use regex::Regex;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The family files, embedded at build time: (JSON, Go template).
const SOURCES: &[(&str, &str)] = &[
    (include_str!("../../formats/templates/qwen2.5.json"), include_str!("../../formats/templates/qwen2.5.gotmpl")),
    (
        include_str!("../../formats/templates/qwen2.5-coder.json"),
        include_str!("../../formats/templates/qwen2.5-coder.gotmpl"),
    ),
    (include_str!("../../formats/templates/llama3.1.json"), include_str!("../../formats/templates/llama3.1.gotmpl")),
    (include_str!("../../formats/templates/llama3.2.json"), include_str!("../../formats/templates/llama3.2.gotmpl")),
    (include_str!("../../formats/templates/mistral.json"), include_str!("../../formats/templates/mistral.gotmpl")),
    (
        include_str!("../../formats/templates/mistral-nemo.json"),
        include_str!("../../formats/templates/mistral-nemo.gotmpl"),
    ),
    (include_str!("../../formats/templates/gemma.json"), include_str!("../../formats/templates/gemma.gotmpl")),
    (include_str!("../../formats/templates/phi3.json"), include_str!("../../formats/templates/phi3.gotmpl")),
    (include_str!("../../formats/templates/phi4.json"), include_str!("../../formats/templates/phi4.gotmpl")),
    (
        include_str!("../../formats/templates/deepseek-r1.json"),
        include_str!("../../formats/templates/deepseek-r1.gotmpl"),
    ),
    (
        include_str!("../../formats/templates/deepseek-r1-llama.json"),
        include_str!("../../formats/templates/deepseek-r1-llama.gotmpl"),
    ),
    (include_str!("../../formats/templates/qwq.json"), include_str!("../../formats/templates/qwq.gotmpl")),
    (include_str!("../../formats/templates/qwen3.json"), include_str!("../../formats/templates/qwen3.gotmpl")),
    (include_str!("../../formats/templates/smollm3.json"), include_str!("../../formats/templates/smollm3.gotmpl")),
    (
        include_str!("../../formats/templates/granite3.3.json"),
        include_str!("../../formats/templates/granite3.3.gotmpl"),
    ),
    (include_str!("../../formats/templates/hermes3.json"), include_str!("../../formats/templates/hermes3.gotmpl")),
    (
        include_str!("../../formats/templates/mistral-small3.2.json"),
        include_str!("../../formats/templates/mistral-small3.2.gotmpl"),
    ),
    (include_str!("../../formats/templates/devstral.json"), include_str!("../../formats/templates/devstral.gotmpl")),
    (
        include_str!("../../formats/templates/ministral3.json"),
        include_str!("../../formats/templates/ministral3.gotmpl"),
    ),
    (include_str!("../../formats/templates/chatml.json"), include_str!("../../formats/templates/chatml.gotmpl")),
];

#[derive(Debug, Clone, Deserialize)]
struct Detect {
    #[serde(default)]
    priority: i32,
    /// The template matches when it contains every string of at least one group.
    #[serde(default)]
    all_of: Vec<Vec<String>>,
    /// The template matches when it contains any of these strings.
    #[serde(default)]
    any_of: Vec<String>,
    /// Tokens that must be in the vocabulary (when the vocabulary is known).
    #[serde(default)]
    tokens: Vec<String>,
    /// If set, `general.name`/`basename`/`finetune` must contain one of these (any case).
    #[serde(default)]
    name_contains: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct JinjaSource {
    /// `ref:<file>` (llama.cpp's models/templates) or a file in formats/templates.
    pub source: String,
    /// sha256 of the exact text, used to recognise the template exactly.
    #[serde(default)]
    pub sha256: String,
    #[serde(default)]
    pub origin: Option<String>,
    /// The `bos_token` this source is rendered with, when it differs from the family's.
    #[serde(default)]
    pub bos_token: Option<String>,
    /// Capabilities of the family this source does not have (its conversations are skipped).
    #[serde(default)]
    pub lacks: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct FamilyFile {
    name: String,
    title: String,
    stop: Vec<String>,
    system: Option<String>,
    #[serde(default)]
    system_regex: Option<String>,
    #[serde(default)]
    bos: Option<String>,
    #[serde(default)]
    bos_token: Option<String>,
    #[serde(default)]
    eos_token: Option<String>,
    #[serde(default)]
    capabilities: Vec<String>,
    detect: Detect,
    jinja: Vec<JinjaSource>,
}

/// A chat-template family: an Ollama Go template and what goes with it.
#[derive(Debug, Clone)]
pub struct Family {
    /// Short id, e.g. `qwen2.5-coder`.
    pub name: String,
    /// One-line description.
    pub title: String,
    /// The Go template (Ollama's TEMPLATE), exactly as Ollama must receive it.
    pub template: String,
    /// PARAMETER stop values.
    pub stop: Vec<String>,
    /// The default system prompt the Jinja template hard-codes, if any.
    pub system: Option<String>,
    /// BOS token the Jinja template writes and Ollama's runtime adds itself.
    pub bos: Option<String>,
    /// The `bos_token` / `eos_token` texts of the vocabularies this family's Jinja sources
    /// are tested with.
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    /// `system`, `tools`, `parallel_tool_calls`, `insert` (fill-in-the-middle).
    pub capabilities: Vec<String>,
    /// The Jinja templates this family is tested against.
    pub jinja: Vec<JinjaSource>,
    detect: Detect,
    system_regex: Option<Regex>,
}

impl Family {
    /// Does the family support this capability (`tools`, `insert`, ...)?
    pub fn has(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c == capability)
    }

    /// The default system prompt that `chat_template` hard-codes, read with the family's
    /// pattern; `None` if the template has none.
    pub fn default_system(&self, chat_template: &str) -> Option<String> {
        if let Some(re) = &self.system_regex {
            if let Some(m) = re.captures(chat_template).and_then(|c| c.name("system")) {
                return Some(m.as_str().replace("\\n", "\n"));
            }
        }
        self.system.clone().filter(|s| chat_template.contains(s.as_str()))
    }
}

fn load() -> Result<Vec<Family>, String> {
    let mut out = Vec::new();
    for (json, gotmpl) in SOURCES {
        let f: FamilyFile = serde_json::from_str(json).map_err(|e| format!("formats/templates: {e}"))?;
        let system_regex = match &f.system_regex {
            Some(r) => {
                Some(Regex::new(r).map_err(|e| format!("formats/templates/{}.json: system_regex: {e}", f.name))?)
            }
            None => None,
        };
        // The file's final newline ends the file, not the template.
        let template = gotmpl.strip_suffix('\n').unwrap_or(gotmpl).to_string();
        out.push(Family {
            name: f.name,
            title: f.title,
            template,
            stop: f.stop,
            system: f.system,
            bos: f.bos,
            bos_token: f.bos_token,
            eos_token: f.eos_token,
            capabilities: f.capabilities,
            jinja: f.jinja,
            detect: f.detect,
            system_regex,
        });
    }
    Ok(out)
}

/// All built-in families.
pub fn families() -> &'static [Family] {
    static FAMILIES: OnceLock<Vec<Family>> = OnceLock::new();
    // The embedded files are checked by unit tests; a broken one yields no families.
    FAMILIES.get_or_init(|| load().unwrap_or_default())
}

/// The family with this name.
pub fn family(name: &str) -> Option<&'static Family> {
    families().iter().find(|f| f.name == name)
}

/// What the GGUF tells about its chat format.
#[derive(Clone, Default)]
pub struct DetectInput<'a> {
    /// `tokenizer.chat_template`.
    pub chat_template: Option<&'a str>,
    /// A check for "is this token text in the vocabulary?"; `None` when unknown.
    pub has_token: Option<&'a dyn Fn(&str) -> bool>,
    /// `general.name`, `general.basename`, `general.finetune`, ...
    pub names: Vec<&'a str>,
}

/// How a family was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// The chat template is byte-identical to one of the family's Jinja sources.
    Exact,
    /// The chat template contains the family's markers.
    Markers,
}

/// Picks the family for a chat template, or `None`.
pub fn detect(input: &DetectInput<'_>) -> Option<(&'static Family, Match)> {
    let tmpl = input.chat_template?;
    let digest = hex(&Sha256::digest(tmpl.as_bytes()));
    let names_lower: Vec<String> = input.names.iter().map(|n| n.to_lowercase()).collect();
    let mut best: Option<(i32, &'static Family, Match)> = None;
    for fam in families() {
        let d = &fam.detect;
        let exact = fam.jinja.iter().any(|j| !j.sha256.is_empty() && j.sha256 == digest);
        let markers = d.all_of.iter().any(|g| g.iter().all(|m| tmpl.contains(m.as_str())))
            || d.any_of.iter().any(|m| tmpl.contains(m.as_str()));
        if !exact && !markers {
            continue;
        }
        if let Some(has) = input.has_token {
            if !d.tokens.iter().all(|t| has(t)) {
                continue;
            }
        }
        if !d.name_contains.is_empty()
            && !d.name_contains.iter().any(|n| names_lower.iter().any(|x| x.contains(&n.to_lowercase())))
        {
            continue;
        }
        let score = d.priority + if exact { 1000 } else { 0 };
        if best.as_ref().is_none_or(|(s, _, _)| score > *s) {
            best = Some((score, fam, if exact { Match::Exact } else { Match::Markers }));
        }
    }
    best.map(|(_, f, m)| (f, m))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A minimal template for a chat format the families do not cover, built from the special
/// tokens the vocabulary has: (template, stop strings, description).
pub fn fallback(has_token: &dyn Fn(&str) -> bool) -> (String, Vec<String>, &'static str) {
    if has_token("<|im_start|>") && has_token("<|im_end|>") {
        let f = family("chatml").map(|f| f.template.clone()).unwrap_or_default();
        return (f, vec!["<|im_start|>".into(), "<|im_end|>".into()], "ChatML (<|im_start|>/<|im_end|> tokens)");
    }
    if has_token("<|start_header_id|>") && has_token("<|eot_id|>") {
        let t = "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>\n{{- end }}<|start_header_id|>assistant<|end_header_id|>\n\n";
        return (
            t.to_string(),
            vec!["<|start_header_id|>".into(), "<|end_header_id|>".into(), "<|eot_id|>".into()],
            "Llama 3 headers (<|start_header_id|>/<|eot_id|> tokens)",
        );
    }
    if has_token("<start_of_turn>") && has_token("<end_of_turn>") {
        let f = family("gemma").map(|f| f.template.clone()).unwrap_or_default();
        return (f, vec!["<start_of_turn>".into(), "<end_of_turn>".into()], "Gemma turns (<start_of_turn> tokens)");
    }
    if has_token("[INST]") && has_token("[/INST]") {
        let t = "{{- range .Messages }}{{ if eq .Role \"user\" }}[INST] {{ .Content }} [/INST]{{ else if eq .Role \"assistant\" }} {{ .Content }}</s>{{ else if eq .Role \"system\" }}[INST] {{ .Content }} [/INST] Understood.</s>{{ end }}{{ end }}";
        return (t.to_string(), vec!["[INST]".into(), "[/INST]".into()], "[INST] instruction tokens");
    }
    if has_token("<|user|>") && has_token("<|assistant|>") && has_token("<|end|>") {
        let f = family("phi3").map(|f| f.template.clone()).unwrap_or_default();
        return (f, vec!["<|end|>".into(), "<|user|>".into(), "<|assistant|>".into()], "<|user|>/<|assistant|> tokens");
    }
    ("{{ .Prompt }}".to_string(), Vec::new(), "no chat tokens: raw prompt")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_families_load() {
        let fams = load().unwrap();
        assert_eq!(fams.len(), SOURCES.len());
        for f in &fams {
            assert!(!f.template.is_empty() && !f.stop.is_empty(), "{}", f.name);
            assert!(!f.jinja.is_empty(), "{}", f.name);
        }
        assert!(family("qwen2.5-coder")
            .unwrap()
            .template
            .contains("<|fim_prefix|>{{ .Prompt }}<|fim_suffix|>{{ .Suffix }}<|fim_middle|>"));
    }

    #[test]
    fn detection_by_markers() {
        let vocab = ["<|im_start|>", "<|im_end|>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"];
        let has = |t: &str| vocab.contains(&t);
        let qwen = "{%- if tools %}<|im_start|>system <tools> <tool_call> <tool_response> <|im_end|>";
        let mut input =
            DetectInput { chat_template: Some(qwen), has_token: Some(&has), names: vec!["Qwen2.5 7B Instruct"] };
        assert_eq!(detect(&input).unwrap().0.name, "qwen2.5");
        input.names = vec!["Qwen2.5 Coder 7B Instruct"];
        assert_eq!(detect(&input).unwrap().0.name, "qwen2.5-coder");
        let smol = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}";
        input.chat_template = Some(smol);
        let (f, _) = detect(&input).unwrap();
        assert_eq!(f.name, "chatml");
        assert_eq!(
            f.default_system(smol).as_deref(),
            Some("You are a helpful AI assistant named SmolLM, trained by Hugging Face")
        );
        let qwen2 = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}";
        assert_eq!(family("chatml").unwrap().default_system(qwen2).as_deref(), Some("You are a helpful assistant."));
        input.chat_template = Some("{{ unknown }}");
        assert!(detect(&input).is_none());
    }
}
