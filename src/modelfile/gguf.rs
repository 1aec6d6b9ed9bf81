//! Building a [`ModelfileSpec`] from GGUF metadata.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use super::families::{self, DetectInput, Match};
use super::params::{self, ParamCheck};
use super::ModelfileSpec;
use crate::error::{Error, Result};
use crate::gguf::{Metadata, Value};

/// Default upper bound for `PARAMETER num_ctx`.
///
/// Ollama allocates the whole KV cache for `num_ctx` when it loads a model. Writing the
/// model's full trained context (32768 for Qwen2.5-Coder-7B, 131072 for Llama 3.1) would
/// make every load reserve 1.8 GB (Qwen2.5-Coder-7B, f16 cache) to 17 GB (Llama 3.1 8B) of
/// KV cache, which fails or spills to the CPU on the GPUs customers typically have. 8192
/// tokens hold a sizeable source file plus the conversation, keep the cache under ~0.5 GB
/// for 7-8B models with grouped-query attention, and are larger than Ollama's own default
/// (2048 or 4096 depending on the version). A larger window is one `--parameter num_ctx=N`
/// away, and the Modelfile says so in a comment when the cap applied.
pub const DEFAULT_NUM_CTX_CAP: u64 = 8192;

/// Options for [`from_gguf`].
#[derive(Debug, Clone)]
pub struct FromGgufOptions {
    /// The FROM value: a path relative to the Modelfile's directory (see
    /// [`relative_from`]) or a model reference such as `qwen2.5-coder:7b`, written verbatim.
    pub from: String,
    /// ADAPTER value (path relative to the Modelfile's directory), if any.
    pub adapter: Option<String>,
    /// Use this family instead of detecting one.
    pub family: Option<String>,
    /// SYSTEM prompt; replaces the family's default.
    pub system: Option<String>,
    /// Extra `PARAMETER` lines (`stop` adds to the family's stops; others replace computed
    /// values). Validated like Ollama does.
    pub parameters: Vec<(String, String)>,
    /// Upper bound for the computed `num_ctx` (0: no bound).
    pub max_num_ctx: u64,
    /// Fail instead of falling back when the chat template is not recognised.
    pub strict: bool,
    /// Write LICENSE from `general.license*` when present.
    pub license: bool,
}

impl Default for FromGgufOptions {
    fn default() -> Self {
        FromGgufOptions {
            from: String::new(),
            adapter: None,
            family: None,
            system: None,
            parameters: Vec::new(),
            max_num_ctx: DEFAULT_NUM_CTX_CAP,
            strict: false,
            license: true,
        }
    }
}

/// Splits `KEY=VALUE` (as given to `--parameter`).
pub fn parse_parameter_arg(arg: &str) -> Result<(String, String)> {
    match arg.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(Error::Usage(format!("--parameter expects KEY=VALUE, got '{arg}'"))),
    }
}

fn string_array(v: Option<&Value>) -> Option<Vec<&str>> {
    let arr = v?.as_array()?;
    Some(arr.values.iter().map(|v| v.as_str().unwrap_or("")).collect())
}

/// Builds a Modelfile spec from GGUF metadata. Returns the spec and warnings for the user.
///
/// Reads `tokenizer.chat_template`, `tokenizer.ggml.tokens`, `general.name`/`basename`/
/// `finetune`, `<arch>.context_length` and `general.license*`.
pub fn from_gguf(meta: &Metadata, opts: &FromGgufOptions) -> Result<(ModelfileSpec, Vec<String>)> {
    let mut warnings = Vec::new();
    if opts.from.is_empty() {
        return Err(Error::Usage("Modelfile FROM must not be empty".into()));
    }
    let chat_template = meta.get_str("tokenizer.chat_template");
    let tokens = string_array(meta.get("tokenizer.ggml.tokens"));
    let vocab: Option<HashSet<&str>> = tokens.as_ref().map(|t| t.iter().copied().collect());
    let has_token = |t: &str| vocab.as_ref().is_none_or(|v| v.contains(t));
    let mut names: Vec<&str> =
        ["general.name", "general.basename", "general.finetune"].iter().filter_map(|k| meta.get_str(k)).collect();
    names.extend(
        meta.iter()
            .filter(|(k, _)| k.starts_with("general.base_model.") && k.ends_with(".name"))
            .filter_map(|(_, v)| v.as_str()),
    );

    let mut spec = ModelfileSpec::new(opts.from.clone());
    let mut translated: Option<(String, Vec<String>)> = None;
    let mut translate_note: Option<String> = None;
    let mut stops: Vec<String>;
    let family_system: Option<String>;

    let chosen = match &opts.family {
        Some(name) => {
            let f = families::family(name).ok_or_else(|| {
                let known: Vec<&str> = families::families().iter().map(|f| f.name.as_str()).collect();
                Error::Usage(format!("unknown template family '{name}' (known: {})", known.join(", ")))
            })?;
            spec.comments.push(format!("Chat template: {} ({}), chosen by the user", f.name, f.title));
            Some(f)
        }
        None => {
            let has: &dyn Fn(&str) -> bool = &has_token;
            let input = DetectInput {
                chat_template,
                has_token: if vocab.is_some() { Some(has) } else { None },
                names: names.clone(),
            };
            let detected = families::detect(&input);
            // The family and a translation of the Jinja template compete on the rendering
            // comparison; the family wins ties (its stops and tool tags are curated).
            match chat_template.map(|j| super::translate::choose(meta, j, detected.as_ref().map(|(f, _)| *f))) {
                Some(super::translate::Choice::Translated { template, stops: t_stops, note }) => {
                    spec.comments.push(format!("Chat template: {note}"));
                    translated = Some((template, t_stops));
                    None
                }
                Some(super::translate::Choice::Family { note: Some(note) }) => {
                    translate_note = Some(note);
                    detected.map(|(f, how)| family_comment(&mut spec, f, how))
                }
                _ => detected.map(|(f, how)| family_comment(&mut spec, f, how)),
            }
        }
    };

    match chosen {
        _ if translated.is_some() => {
            let (template, t_stops) = translated.take().unwrap_or_default();
            spec.template = Some(template);
            stops = t_stops;
            family_system = None;
        }
        Some(f) => {
            warnings.extend(translate_note.take());
            spec.template = Some(f.template.clone());
            stops = f.stop.iter().filter(|s| has_token(s)).cloned().collect();
            family_system = match chat_template {
                Some(t) => f.default_system(t),
                None => f.system.clone(),
            };
        }
        None => {
            let why = match chat_template {
                Some(_) => "the GGUF's chat template matches no known family",
                None => "the GGUF has no tokenizer.chat_template",
            };
            if opts.strict {
                return Err(Error::Unsupported(format!(
                    "{why}; choose a family explicitly (known: {})",
                    families::families().iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(", ")
                )));
            }
            let (tmpl, fallback_stops, desc) = families::fallback(&has_token);
            let why = match translate_note.take() {
                Some(n) => format!("{why} and {n}"),
                None => why.to_string(),
            };
            warnings
                .push(format!("{why}; writing a minimal template for {desc}. Check it, or choose a family explicitly"));
            spec.comments.push(format!(
                "Chat template: minimal fallback for {desc} (not verified against the model's template)"
            ));
            spec.template = Some(tmpl);
            stops = fallback_stops;
            family_system = None;
        }
    }

    spec.system = opts.system.clone().or(family_system);
    spec.adapter = opts.adapter.clone();

    // User parameters: validated as Ollama does.
    let mut user_params: Vec<(String, String)> = Vec::new();
    for (name, value) in &opts.parameters {
        match params::check(name, value) {
            ParamCheck::Ok => {}
            ParamCheck::Deprecated => warnings.push(format!("parameter {name} is deprecated; Ollama ignores it")),
            ParamCheck::Shadowed(cmd) => {
                return Err(Error::Usage(format!("parameter name '{name}' is a Modelfile command ({cmd})")))
            }
            ParamCheck::Err(msg) => return Err(Error::Usage(format!("--parameter {name}: {msg}"))),
        }
        if name == "stop" {
            if !stops.contains(value) {
                stops.push(value.clone());
            }
        } else {
            user_params.retain(|(n, _)| n != name);
            user_params.push((name.clone(), value.clone()));
        }
    }

    for s in stops {
        spec.parameters.push(("stop".into(), s));
    }
    if !user_params.iter().any(|(n, _)| n == "num_ctx") {
        let ctx = meta.architecture().and_then(|a| meta.get_u64(&format!("{a}.context_length")));
        match ctx {
            Some(ctx) if ctx > 0 => {
                let n = if opts.max_num_ctx > 0 && ctx > opts.max_num_ctx {
                    spec.comments.push(format!(
                        "num_ctx is capped at {} (the model was trained for {ctx}); a larger window needs more memory for the KV cache: --parameter num_ctx={ctx}",
                        opts.max_num_ctx
                    ));
                    opts.max_num_ctx
                } else {
                    ctx
                };
                spec.parameters.push(("num_ctx".into(), n.to_string()));
            }
            _ => warnings.push("the GGUF has no <arch>.context_length; num_ctx left to Ollama's default".into()),
        }
    }
    spec.parameters.extend(user_params);

    if opts.license {
        let parts: Vec<&str> = ["general.license", "general.license.name", "general.license.link"]
            .iter()
            .filter_map(|k| meta.get_str(k))
            .filter(|s| !s.trim().is_empty())
            .collect();
        if !parts.is_empty() {
            spec.license = Some(parts.join("\n"));
        }
    }

    Ok((spec, warnings))
}

fn family_comment(spec: &mut ModelfileSpec, f: &'static families::Family, how: Match) -> &'static families::Family {
    let how = match how {
        Match::Exact => "the GGUF's chat template is a known one",
        Match::Markers => "recognised from the GGUF's chat template",
    };
    spec.comments.push(format!("Chat template: {} ({}), {how}", f.name, f.title));
    f
}

/// The FROM/ADAPTER value for `target` in a Modelfile written to `modelfile_dir`: a relative
/// path starting with `./` or `../` and using `/`, which Ollama resolves against the
/// Modelfile's directory. Both paths are made absolute (and symlinks resolved where they
/// exist) first.
pub fn relative_from(target: &Path, modelfile_dir: &Path) -> Result<String> {
    let abs = |p: &Path| -> Result<PathBuf> {
        if let Ok(c) = p.canonicalize() {
            return Ok(c);
        }
        // A file that does not exist yet: canonicalize its directory.
        let parent = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let base = parent
            .canonicalize()
            .or_else(|_| std::path::absolute(parent))
            .map_err(|e| Error::io(parent, "resolve", e))?;
        Ok(match p.file_name() {
            Some(n) => base.join(n),
            None => base,
        })
    };
    let t = abs(target)?;
    let d = abs(modelfile_dir)?;
    let tc: Vec<Component> = t.components().collect();
    let dc: Vec<Component> = d.components().collect();
    let common = tc.iter().zip(&dc).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = Vec::new();
    for _ in common..dc.len() {
        parts.push("..".into());
    }
    for c in &tc[common..] {
        let s = c.as_os_str().to_str().ok_or_else(|| Error::Usage(format!("{}: path is not UTF-8", t.display())))?;
        parts.push(s.to_string());
    }
    if parts.is_empty() {
        return Ok(".".into());
    }
    let joined = parts.join("/");
    Ok(if joined.starts_with("..") { joined } else { format!("./{joined}") })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::Value;

    fn qwen_meta(name: &str, template: &str) -> Metadata {
        let mut m = Metadata::new();
        m.push("general.architecture", Value::string("qwen2"));
        m.push("general.name", Value::string(name));
        m.push("general.license", Value::string("apache-2.0"));
        m.push("qwen2.context_length", Value::U32(32768));
        m.push("tokenizer.chat_template", Value::string(template));
        m.push(
            "tokenizer.ggml.tokens",
            Value::string_array([
                "a",
                "<|endoftext|>",
                "<|im_start|>",
                "<|im_end|>",
                "<|fim_prefix|>",
                "<|fim_suffix|>",
                "<|fim_middle|>",
            ]),
        );
        m.push("tokenizer.ggml.eos_token_id", Value::U32(3));
        m
    }

    const QWEN_TMPL: &str = "{%- if tools %}<|im_start|>system\\n{{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}<tools></tools><tool_call><tool_response>{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}";

    #[test]
    fn qwen_coder_from_metadata() {
        let meta = qwen_meta("Qwen2.5 Coder 7B Instruct", QWEN_TMPL);
        let opts = FromGgufOptions { from: "./model.gguf".into(), ..Default::default() };
        let (spec, warnings) = from_gguf(&meta, &opts).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(spec.template.as_deref().unwrap().contains("<|fim_prefix|>"));
        assert_eq!(
            spec.system.as_deref(),
            Some("You are Qwen, created by Alibaba Cloud. You are a helpful assistant.")
        );
        assert_eq!(spec.parameter("num_ctx"), vec!["8192"]);
        assert!(spec.parameter("stop").contains(&"<|im_end|>"));
        // Stops the vocabulary lacks are left out.
        assert!(!spec.parameter("stop").contains(&"<|repo_name|>"));
        assert_eq!(spec.license.as_deref(), Some("apache-2.0"));
        let text = crate::modelfile::render(&spec).unwrap();
        assert!(text.contains("# num_ctx is capped at 8192"));
    }

    #[test]
    fn user_overrides_and_validation() {
        let meta = qwen_meta("Qwen2.5 7B Instruct", QWEN_TMPL);
        let opts = FromGgufOptions {
            from: "qwen-base".into(),
            system: Some("You review Rust code.".into()),
            parameters: vec![
                ("num_ctx".into(), "16384".into()),
                ("stop".into(), "END".into()),
                ("temperature".into(), "0.1".into()),
            ],
            ..Default::default()
        };
        let (spec, _) = from_gguf(&meta, &opts).unwrap();
        assert!(!spec.template.as_deref().unwrap().contains("fim_prefix"));
        assert_eq!(spec.system.as_deref(), Some("You review Rust code."));
        assert_eq!(spec.parameter("num_ctx"), vec!["16384"]);
        assert_eq!(spec.parameter("stop").last(), Some(&"END"));
        let bad = FromGgufOptions {
            from: "x".into(),
            parameters: vec![("top_k".into(), "many".into())],
            ..Default::default()
        };
        assert!(from_gguf(&meta, &bad).unwrap_err().to_string().contains("invalid int value [many]"));
        let bad = FromGgufOptions { from: "x".into(), family: Some("nope".into()), ..Default::default() };
        assert!(from_gguf(&meta, &bad).is_err());
    }

    #[test]
    fn unknown_template_falls_back_or_fails() {
        let meta = qwen_meta("Custom", "{{ messages }}");
        let opts = FromGgufOptions { from: "./m.gguf".into(), ..Default::default() };
        let (spec, warnings) = from_gguf(&meta, &opts).unwrap();
        assert_eq!(warnings.len(), 1);
        assert!(spec.template.unwrap().contains("<|im_start|>{{ .Role }}"));
        let strict = FromGgufOptions { strict: true, ..opts };
        assert!(from_gguf(&meta, &strict).is_err());
    }

    #[test]
    fn relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("out");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(dir.path().join("m.gguf"), b"x").unwrap();
        assert_eq!(relative_from(&dir.path().join("m.gguf"), &sub).unwrap(), "../m.gguf");
        assert_eq!(relative_from(&sub.join("new.gguf"), &sub).unwrap(), "./new.gguf");
        assert_eq!(relative_from(&dir.path().join("m.gguf"), dir.path()).unwrap(), "./m.gguf");
    }

    #[test]
    fn parameter_args() {
        assert_eq!(parse_parameter_arg("stop=a=b").unwrap(), ("stop".into(), "a=b".into()));
        assert!(parse_parameter_arg("novalue").is_err());
    }
}
