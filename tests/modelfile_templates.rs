//! Template equality: every template family's Go template, rendered as Ollama renders it
//! (Go's text/template, Ollama's data shape and message preprocessing), must give exactly
//! what the model's Jinja chat template gives (jinja2, add_generation_prompt=True).
//!
//! The work is done by tests/templates/driver.py in the reference Python environment
//! (scripts/ref-env.sh), which builds and drives tests/templates/ollama_render.go (Go
//! standard library only; the driver installs golang-go with apt-get when Go is missing)
//! and reads the Jinja sources from the llama.cpp tree printed by scripts/ref-src.sh.

use std::path::Path;
use std::process::Command;

mod common;

#[test]
fn go_templates_render_exactly_like_the_jinja_templates() {
    if !common::parity_enabled("modelfile_templates::go_templates_render_exactly_like_the_jinja_templates") {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = common::ref_python().to_string_lossy().into_owned();
    let ref_src = common::ref_src().to_string_lossy().into_owned();
    let report = std::env::temp_dir().join(format!("ggufkit-template-report-{}.json", std::process::id()));

    // The fallback templates for unknown chat formats have no Jinja reference; they must at
    // least execute in Ollama's data shape and show the conversation.
    let token_sets: [&[&str]; 6] = [
        &["<|im_start|>", "<|im_end|>"],
        &["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        &["<start_of_turn>", "<end_of_turn>"],
        &["[INST]", "[/INST]"],
        &["<|user|>", "<|assistant|>", "<|end|>"],
        &[],
    ];
    let smoke: Vec<serde_json::Value> = token_sets
        .iter()
        .map(|set| {
            let has = |t: &str| set.contains(&t);
            let (template, _, desc) = ggufkit::modelfile::families::fallback(&has);
            serde_json::json!({"name": desc, "template": template})
        })
        .collect();
    let smoke_file = std::env::temp_dir().join(format!("ggufkit-fallback-templates-{}.json", std::process::id()));
    std::fs::write(&smoke_file, serde_json::to_string(&smoke).unwrap()).unwrap();

    let out = Command::new(&python)
        .arg(root.join("tests/templates/driver.py"))
        .arg("--ref-src")
        .arg(&ref_src)
        .arg("--json")
        .arg(&report)
        .arg("--smoke-templates")
        .arg(&smoke_file)
        .output()
        .expect("run driver.py");
    let _ = std::fs::remove_file(&smoke_file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "template equality failed:\n{stdout}\n{stderr}");

    // The report must show real comparisons for every family.
    let rows: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let _ = std::fs::remove_file(&report);
    let rows = rows.as_array().unwrap();
    for fam in ggufkit::modelfile::families::families() {
        let equal = rows.iter().filter(|r| r["family"] == fam.name.as_str() && r["status"] == "equal").count();
        assert!(equal >= 5, "family {} compared equal only {equal} times", fam.name);
        if fam.has("tools") {
            let tools = rows
                .iter()
                .filter(|r| {
                    r["family"] == fam.name.as_str()
                        && r["status"] == "equal"
                        && r["conversation"].as_str().unwrap_or("").starts_with("tools-")
                })
                .count();
            assert!(tools >= 3, "family {} compared only {tools} tool conversations", fam.name);
        }
    }
    assert!(rows.iter().all(|r| r["status"] != "DIFFERENT"));
    let smoked = rows.iter().filter(|r| r["family"].as_str().unwrap_or("").starts_with("smoke:")).count();
    assert!(smoked >= 6 * 5, "fallback templates executed only {smoked} times");
}
