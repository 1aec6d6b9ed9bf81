//! Fuzzes the PEFT LoRA adapter reader used by merge and by convert --base:
//! adapter_config.json parsing, PEFT's module selection and pattern rules,
//! and the validation of the adapter's tensors (key forms, A/B pairs, ranks
//! against the config, shapes, dtypes, NaN/Inf scan).
//!
//! Input: the text of adapter_config.json, a NUL byte, then the bytes of
//! adapter_model.safetensors. Seeds: the adapters under
//! tests/corpus/inputs/*/adapter joined the same way.
#![no_main]
use std::path::{Path, PathBuf};

use ggufkit::hf::SafetensorsModel;
use ggufkit::lora::{Adapter, LoraConfig};
use ggufkit::progress::NoProgress;
use libfuzzer_sys::fuzz_target;

const MODULES: [&str; 4] =
    ["model.layers.0.self_attn.q_proj", "model.layers.12.mlp.down_proj", "model.embed_tokens", "lm_head"];

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let Ok(config_text) = std::str::from_utf8(&data[..split]) else { return };
    // The config on its own, and the rules PEFT applies with it.
    if let Ok(cfg) = LoraConfig::parse(config_text, Path::new("adapter_config.json")) {
        for m in MODULES {
            let _ = cfg.targets(m, m != "model.embed_tokens", m == "lm_head");
            let _ = cfg.module_params(m);
        }
    }
    let weights = data.get(split + 1..).unwrap_or_default().to_vec();
    let dir = PathBuf::from("adapter");
    let Ok(st) = SafetensorsModel::from_bytes(&dir.join("adapter_model.safetensors"), weights) else { return };
    if let Ok(a) = Adapter::from_parts(dir, config_text, st, &NoProgress) {
        for m in &a.modules {
            let _ = a.config.targets(&m.path, true, m.path == "lm_head");
        }
    }
});
