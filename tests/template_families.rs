//! Every template family in formats/templates renders, through ggufkit's Go template
//! renderer with Ollama's data, exactly what each of its Jinja sources renders (minijinja,
//! transformers' environment), on every built-in conversation the Jinja source accepts
//! (`modelfile::verify`); and each source is detected as its own family.
//!
//! The sources named `ref:<file>` are the pinned llama.cpp's models/templates, `gguf:<file>`
//! the chat template of one of its models/*.gguf vocabularies, anything else a file in
//! formats/templates.

use std::path::Path;

use ggufkit::modelfile::families::{self, DetectInput, Family, JinjaSource};
use ggufkit::modelfile::verify::{verify, TemplateContext};

mod common;

/// Differences a family cannot avoid, with the reason: (family, source, conversation).
const KNOWN: &[(&str, &str, &str, &str)] = &[(
    "phi3",
    "phi3-mini.jinja",
    "empty-system",
    "Phi-3 mini's Jinja writes an empty system turn, Phi-3.5's (same family) skips it",
)];

/// A date that is neither a hard-coded one nor today.
const DATE: &str = "2024-09-03";

fn load(src: &JinjaSource) -> String {
    let s = &src.source;
    if let Some(f) = s.strip_prefix("ref:") {
        return std::fs::read_to_string(common::ref_src().join("models/templates").join(f)).unwrap();
    }
    if let Some(f) = s.strip_prefix("gguf:") {
        let g = ggufkit::gguf::GgufFile::open(common::ref_src().join("models").join(f)).unwrap();
        return g.header.metadata.get_str("tokenizer.chat_template").unwrap().to_string();
    }
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("formats/templates").join(s)).unwrap()
}

fn context(fam: &Family, src: &JinjaSource, jinja: &str) -> TemplateContext {
    TemplateContext {
        bos_token: src.bos_token.clone().or_else(|| fam.bos_token.clone()).unwrap_or_default(),
        eos_token: fam.eos_token.clone().unwrap_or_default(),
        add_bos: fam.bos.is_some() || src.bos_token.is_some(),
        special_tokens: Vec::new(),
        system: fam.default_system(jinja),
        date: Some(DATE.into()),
    }
}

#[test]
fn families_render_exactly_like_their_jinja_sources() {
    if !common::parity_enabled("template_families") {
        return;
    }
    let mut failures = Vec::new();
    println!("{:18} {:58} {:>9} {:>8}", "family", "Jinja source", "identical", "rejected");
    for fam in families::families() {
        for src in &fam.jinja {
            let jinja = load(src);
            let ctx = context(fam, src, &jinja);
            let v = verify(&fam.template, &jinja, &ctx).unwrap();
            println!(
                "{:18} {:58} {:>4}/{:<4} {:>8}",
                fam.name,
                src.source,
                v.identical,
                v.conversations,
                v.skipped.len()
            );
            for d in &v.differences {
                let lacks_system = src.lacks.iter().any(|l| l == "system")
                    && (d.conversation.contains("system") || d.conversation == "unicode-multiline");
                if lacks_system || KNOWN.iter().any(|k| (k.0, k.1, k.2) == (&*fam.name, &*src.source, &*d.conversation))
                {
                    println!("  known difference: {} / {} / {}", fam.name, src.source, d.conversation);
                    continue;
                }
                failures.push(format!(
                    "{} / {} / {}: at {}: jinja {:?} ollama {:?} {}",
                    fam.name,
                    src.source,
                    d.conversation,
                    d.position,
                    d.jinja,
                    d.ollama,
                    d.error.clone().unwrap_or_default()
                ));
            }
            if v.conversations + v.skipped.len() < 5 || v.conversations < 2 {
                failures
                    .push(format!("{} / {}: only {} conversations compared", fam.name, src.source, v.conversations));
            }
            // Detection: the source picks its own family (vocabulary = the family's tokens).
            let tokens: Vec<String> = fam.stop.iter().cloned().chain(["<|im_sep|>".to_string()]).collect();
            let has = |t: &str| tokens.iter().any(|x| x == t) || !t.starts_with('<') && !t.starts_with('[');
            let names: Vec<&str> = if fam.name.contains("coder") { vec!["Qwen2.5 Coder 7B Instruct"] } else { vec![] };
            let input = DetectInput { chat_template: Some(&jinja), has_token: Some(&has), names };
            let got = families::detect(&input).map(|(f, _)| f.name.as_str());
            if got != Some(fam.name.as_str()) && !(fam.name == "qwen2.5" && got == Some("qwen2.5-coder")) {
                failures.push(format!("{} / {}: detected as {got:?}", fam.name, src.source));
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
