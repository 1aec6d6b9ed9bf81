//! `adapter_config.json` as PEFT's `LoraConfig.to_dict()` writes it: the
//! fields that decide the merge ([`LoraConfig`]), PEFT's module selectors
//! (`target_modules`, `exclude_modules`, `layers_to_transform`) and per-module
//! rank / alpha patterns, and the refusal of features that cannot be merged.
//! Format notes: `formats/peft-adapter.md`.

use std::path::Path;

use regex::Regex;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

pub const CONFIG_FILE: &str = "adapter_config.json";

/// `target_modules` / `exclude_modules`.
#[derive(Debug, Clone, PartialEq)]
pub enum ModuleSelector {
    /// A list: a module matches when its name equals an entry or ends with `.entry`.
    List(Vec<String>),
    /// A string: `re.fullmatch` against the module name.
    Regex(String),
    /// `"all-linear"`: every Linear layer except the output layer.
    AllLinear,
}

/// The fields of `adapter_config.json` that decide the merge.
#[derive(Debug, Clone)]
pub struct LoraConfig {
    pub r: u64,
    pub lora_alpha: f64,
    pub use_rslora: bool,
    pub use_dora: bool,
    pub fan_in_fan_out: bool,
    /// `rank_pattern`, in file order (the first matching key wins).
    pub rank_pattern: Vec<(String, u64)>,
    /// `alpha_pattern`, in file order.
    pub alpha_pattern: Vec<(String, f64)>,
    pub target_modules: Option<ModuleSelector>,
    pub exclude_modules: Option<ModuleSelector>,
    pub layers_to_transform: Option<Vec<u64>>,
    pub layers_pattern: Option<Vec<String>>,
    pub modules_to_save: Vec<String>,
    /// `bias`: "none", "all" or "lora_only".
    pub bias: String,
    pub lora_bias: bool,
    pub base_model_name_or_path: Option<String>,
    pub ensure_weight_tying: bool,
}

fn cfg_err(path: &Path, key: &str, msg: impl std::fmt::Display) -> Error {
    Error::input(path, format!("\"{key}\": {msg}"))
}

fn opt_bool(m: &Map<String, Value>, path: &Path, key: &str) -> Result<bool> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(cfg_err(path, key, format!("expected true or false, not {v}"))),
    }
}

fn positive_int(v: &Value, path: &Path, key: &str) -> Result<u64> {
    match v.as_u64() {
        Some(n) if n > 0 => Ok(n),
        _ => Err(cfg_err(path, key, format!("expected a positive integer, not {v}"))),
    }
}

fn number(v: &Value, path: &Path, key: &str) -> Result<f64> {
    v.as_f64().filter(|x| x.is_finite()).ok_or_else(|| cfg_err(path, key, format!("expected a number, not {v}")))
}

fn selector(m: &Map<String, Value>, path: &Path, key: &str) -> Result<Option<ModuleSelector>> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("all-linear") && key == "target_modules" => {
            Ok(Some(ModuleSelector::AllLinear))
        }
        Some(Value::String(s)) => Ok(Some(ModuleSelector::Regex(s.clone()))),
        Some(Value::Array(a)) => {
            let mut v = Vec::with_capacity(a.len());
            for x in a {
                v.push(
                    x.as_str()
                        .ok_or_else(|| cfg_err(path, key, format!("entries must be strings, not {x}")))?
                        .to_string(),
                );
            }
            Ok(Some(ModuleSelector::List(v)))
        }
        Some(v) => Err(cfg_err(path, key, format!("expected a list of names or a regex string, not {v}"))),
    }
}

fn string_list(m: &Map<String, Value>, path: &Path, key: &str) -> Result<Option<Vec<String>>> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().map(str::to_string).ok_or_else(|| cfg_err(path, key, format!("not a string: {x}"))))
            .collect::<Result<Vec<_>>>()
            .map(Some),
        Some(v) => Err(cfg_err(path, key, format!("expected a string or a list of strings, not {v}"))),
    }
}

/// Set when a config value means something other than "off".
fn is_set(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(Value::String(s)) => !s.is_empty(),
        _ => true,
    }
}

impl LoraConfig {
    /// Parses and checks `adapter_config.json`.
    pub fn parse(text: &str, path: &Path) -> Result<LoraConfig> {
        let v: Value = serde_json::from_str(text).map_err(|e| Error::input(path, format!("invalid JSON: {e}")))?;
        let m = v.as_object().ok_or_else(|| Error::input(path, "not a JSON object"))?;
        match m.get("peft_type").and_then(Value::as_str) {
            Some("LORA") => {}
            Some(other) => {
                return Err(Error::input(
                    path,
                    format!("peft_type is {other}; only LoRA adapters (peft_type \"LORA\") can be merged"),
                ))
            }
            None => return Err(Error::input(path, "missing \"peft_type\" (expected \"LORA\")")),
        }
        // Features whose adapters are not "W + ΔW" of the checkpoint base.
        let refuse = |key: &str, why: &str| -> Result<()> {
            if is_set(m.get(key)) {
                return Err(Error::input(path, format!("\"{key}\" is set: {why}; this cannot be merged")));
            }
            Ok(())
        };
        refuse("alora_invocation_tokens", "an activated LoRA only applies after its invocation tokens")?;
        refuse("invocation_string", "an activated LoRA only applies after its invocation string")?;
        refuse("use_qalora", "QA-LoRA pools the input and is tied to a quantized base")?;
        refuse("trainable_token_indices", "trainable-token deltas are not supported by ggufkit")?;
        refuse("layer_replication", "the adapter was trained on a model with replicated layers")?;
        refuse("target_parameters", "LoRA on nn.Parameter targets is not supported by ggufkit")?;
        refuse("use_bdlora", "block-diagonal LoRA is not supported by ggufkit")?;
        if let Some(Value::String(init)) = m.get("init_lora_weights") {
            let lower = init.to_ascii_lowercase();
            if ["pissa", "olora", "corda", "loftq"].iter().any(|p| lower.starts_with(p)) {
                return Err(Error::input(
                    path,
                    format!(
                        "init_lora_weights is \"{init}\": the base weights were changed when the adapter was \
                         initialized, so it only fits that modified base (convert it with PEFT's \
                         path_initial_model_for_weight_conversion first)"
                    ),
                ));
            }
        }
        let r = positive_int(m.get("r").unwrap_or(&Value::Null), path, "r")?;
        let lora_alpha = match m.get("lora_alpha") {
            None | Some(Value::Null) => 8.0, // PEFT's default
            Some(v) => number(v, path, "lora_alpha")?,
        };
        let mut rank_pattern = Vec::new();
        if let Some(p) = m.get("rank_pattern").filter(|v| !v.is_null()) {
            let o = p.as_object().ok_or_else(|| cfg_err(path, "rank_pattern", "expected an object"))?;
            for (k, v) in o {
                rank_pattern.push((k.clone(), positive_int(v, path, &format!("rank_pattern.{k}"))?));
            }
        }
        let mut alpha_pattern = Vec::new();
        if let Some(p) = m.get("alpha_pattern").filter(|v| !v.is_null()) {
            let o = p.as_object().ok_or_else(|| cfg_err(path, "alpha_pattern", "expected an object"))?;
            for (k, v) in o {
                alpha_pattern.push((k.clone(), number(v, path, &format!("alpha_pattern.{k}"))?));
            }
        }
        let layers_to_transform = match m.get("layers_to_transform") {
            None | Some(Value::Null) => None,
            Some(v @ Value::Number(_)) => {
                Some(vec![v.as_u64().ok_or_else(|| cfg_err(path, "layers_to_transform", "expected layer numbers"))?])
            }
            Some(Value::Array(a)) if a.is_empty() => None,
            Some(Value::Array(a)) => Some(
                a.iter()
                    .map(|x| x.as_u64().ok_or_else(|| cfg_err(path, "layers_to_transform", "expected layer numbers")))
                    .collect::<Result<Vec<_>>>()?,
            ),
            Some(v) => return Err(cfg_err(path, "layers_to_transform", format!("expected layer numbers, not {v}"))),
        };
        let bias = match m.get("bias") {
            None | Some(Value::Null) => "none".to_string(),
            Some(Value::String(s)) if ["none", "all", "lora_only"].contains(&s.as_str()) => s.clone(),
            Some(v) => {
                return Err(cfg_err(path, "bias", format!("expected \"none\", \"all\" or \"lora_only\", not {v}")))
            }
        };
        Ok(LoraConfig {
            r,
            lora_alpha,
            use_rslora: opt_bool(m, path, "use_rslora")?,
            use_dora: opt_bool(m, path, "use_dora")?,
            fan_in_fan_out: opt_bool(m, path, "fan_in_fan_out")?,
            rank_pattern,
            alpha_pattern,
            target_modules: selector(m, path, "target_modules")?,
            exclude_modules: selector(m, path, "exclude_modules")?,
            layers_to_transform,
            layers_pattern: string_list(m, path, "layers_pattern")?.filter(|v| !v.is_empty()),
            modules_to_save: string_list(m, path, "modules_to_save")?.unwrap_or_default(),
            bias,
            lora_bias: opt_bool(m, path, "lora_bias")?,
            base_model_name_or_path: m.get("base_model_name_or_path").and_then(Value::as_str).map(str::to_string),
            ensure_weight_tying: opt_bool(m, path, "ensure_weight_tying")?,
        })
    }

    /// PEFT's `get_pattern_key`: the first key `k` of `keys` with
    /// `re.match(rf"(.*\.)?({k})$", module)`.
    fn pattern_match<'a, T>(pairs: &'a [(String, T)], module: &str) -> Result<Option<&'a T>> {
        for (k, v) in pairs {
            let re = compile(&format!(r"^(?:.*\.)?(?:{k})$"), k)?;
            if re.is_match(module) {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    /// The rank, alpha and scaling PEFT gives module `module` (its name in
    /// the transformers model, e.g. `model.layers.0.self_attn.q_proj`):
    /// `rank_pattern` / `alpha_pattern` override `r` / `lora_alpha`, and the
    /// scaling is alpha / r, or alpha / √r with rsLoRA.
    pub fn module_params(&self, module: &str) -> Result<(u64, f64, f64)> {
        let r = *Self::pattern_match(&self.rank_pattern, module)?.unwrap_or(&self.r);
        let alpha = *Self::pattern_match(&self.alpha_pattern, module)?.unwrap_or(&self.lora_alpha);
        let scaling = if self.use_rslora { alpha / (r as f64).sqrt() } else { alpha / r as f64 };
        Ok((r, alpha, scaling))
    }

    /// PEFT's `check_target_module_exists` for a module name, given whether
    /// the module is a Linear layer and whether it is the output layer (for
    /// `all-linear`). `None` when `target_modules` is not set.
    pub fn targets(&self, module: &str, is_linear: bool, is_output: bool) -> Result<Option<bool>> {
        if let Some(ex) = &self.exclude_modules {
            let excluded = match ex {
                ModuleSelector::Regex(p) => compile(&format!("^(?:{p})$"), p)?.is_match(module),
                ModuleSelector::List(l) => l.iter().any(|k| module == k || module.ends_with(&format!(".{k}"))),
                ModuleSelector::AllLinear => false,
            };
            if excluded {
                return Ok(Some(false));
            }
        }
        // Adapters never wrap a modules_to_save module.
        for m in &self.modules_to_save {
            if compile(&format!(r"^(?:^|.*\.)(?:{m})(?:$|\..*)$"), m)?.is_match(module) {
                return Ok(Some(false));
            }
        }
        let Some(t) = &self.target_modules else { return Ok(None) };
        Ok(Some(match t {
            ModuleSelector::Regex(p) => compile(&format!("^(?:{p})$"), p)?.is_match(module),
            ModuleSelector::AllLinear => is_linear && !is_output,
            ModuleSelector::List(l) if l.iter().any(|k| k == module) => true,
            ModuleSelector::List(l) => {
                let found = l.iter().any(|k| module.ends_with(&format!(".{k}")));
                match (&self.layers_to_transform, found) {
                    (Some(layers), true) => match self.layer_index(module)? {
                        Some(i) => layers.contains(&i),
                        None => false,
                    },
                    _ => found,
                }
            }
        }))
    }

    /// The layer number PEFT reads for `layers_to_transform`.
    fn layer_index(&self, module: &str) -> Result<Option<u64>> {
        let patterns: Vec<String> = match &self.layers_pattern {
            None => vec![r"^.*\.[^.]*\.(\d+)\.".to_string()],
            Some(ps) => ps.iter().map(|p| format!(r"^.*\.{p}\.(\d+)\.")).collect(),
        };
        for p in &patterns {
            if let Some(c) = compile(p, p)?.captures(module) {
                return Ok(c.get(1).and_then(|g| g.as_str().parse().ok()));
            }
        }
        Ok(None)
    }
}

fn compile(pattern: &str, original: &str) -> Result<Regex> {
    Regex::new(pattern).map_err(|e| {
        Error::Unsupported(format!("adapter_config.json: cannot evaluate the pattern \"{original}\" ({e})"))
    })
}

/// A model id reduced for comparison: organization dropped, lower-case,
/// Unsloth's `-bnb-4bit` / `-bnb-8bit` / `-unsloth` suffixes removed.
pub fn normalize_model_name(id: &str) -> String {
    let id = id.trim().trim_end_matches('/');
    let last = id.rsplit('/').next().unwrap_or(id);
    let mut s = last.to_ascii_lowercase();
    loop {
        let before = s.len();
        for suffix in ["-bnb-4bit", "-bnb-8bit", "-unsloth"] {
            if let Some(t) = s.strip_suffix(suffix) {
                s = t.to_string();
            }
        }
        if s.len() == before {
            return s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> LoraConfig {
        let text = format!(r#"{{"peft_type": "LORA", "r": 8, "lora_alpha": 16{extra}}}"#);
        LoraConfig::parse(&text, Path::new("adapter_config.json")).unwrap()
    }

    #[test]
    fn pattern_keys_follow_peft() {
        let c =
            cfg(r#", "rank_pattern": {"q_proj": 4, "layers.1.mlp.down_proj": 2, "model.layers.1.mlp.down_proj": 7},
                 "alpha_pattern": {"layers\\.[12]\\.self_attn\\.v_proj": 3}"#);
        assert_eq!(c.module_params("model.layers.0.self_attn.q_proj").unwrap(), (4, 16.0, 4.0));
        assert_eq!(c.module_params("model.layers.0.self_attn.k_proj").unwrap(), (8, 16.0, 2.0));
        // First matching key wins (file order).
        assert_eq!(c.module_params("model.layers.1.mlp.down_proj").unwrap().0, 2);
        // The key must match a whole dotted suffix.
        assert_eq!(c.module_params("model.layers.11.mlp.down_proj").unwrap().0, 8);
        assert_eq!(c.module_params("model.layers.2.self_attn.v_proj").unwrap(), (8, 3.0, 3.0 / 8.0));
        assert_eq!(c.module_params("model.layers.0.self_attn.v_proj").unwrap().1, 16.0);
        let rs = cfg(r#", "use_rslora": true"#);
        assert_eq!(rs.module_params("x.q_proj").unwrap().2, 16.0 / 8f64.sqrt());
    }

    #[test]
    fn target_modules_forms() {
        let c = cfg(r#", "target_modules": ["q_proj", "model.layers.0.mlp.up_proj"]"#);
        assert_eq!(c.targets("model.layers.3.self_attn.q_proj", true, false).unwrap(), Some(true));
        assert_eq!(c.targets("model.layers.0.mlp.up_proj", true, false).unwrap(), Some(true));
        assert_eq!(c.targets("model.layers.1.mlp.up_proj", true, false).unwrap(), Some(false));
        assert_eq!(c.targets("model.layers.3.self_attn.xq_proj", true, false).unwrap(), Some(false));
        let c = cfg(r#", "target_modules": ".*\\.(q|v)_proj""#);
        assert_eq!(c.targets("model.layers.3.self_attn.v_proj", true, false).unwrap(), Some(true));
        assert_eq!(c.targets("model.layers.3.self_attn.o_proj", true, false).unwrap(), Some(false));
        let c = cfg(r#", "target_modules": "all-linear", "exclude_modules": ["down_proj"]"#);
        assert_eq!(c.targets("model.layers.3.mlp.up_proj", true, false).unwrap(), Some(true));
        assert_eq!(c.targets("model.layers.3.mlp.down_proj", true, false).unwrap(), Some(false));
        assert_eq!(c.targets("lm_head", true, true).unwrap(), Some(false));
        assert_eq!(c.targets("model.embed_tokens", false, false).unwrap(), Some(false));
        let c = cfg(r#", "target_modules": ["q_proj"], "layers_to_transform": [0, 2], "layers_pattern": "layers""#);
        assert_eq!(c.targets("model.layers.2.self_attn.q_proj", true, false).unwrap(), Some(true));
        assert_eq!(c.targets("model.layers.1.self_attn.q_proj", true, false).unwrap(), Some(false));
        let c = cfg(r#", "target_modules": ["q_proj", "lm_head"], "modules_to_save": ["lm_head"]"#);
        assert_eq!(c.targets("lm_head", true, true).unwrap(), Some(false));
        assert_eq!(cfg("").targets("x", true, false).unwrap(), None);
    }

    #[test]
    fn refused_configs() {
        let bad = |text: &str, needle: &str| {
            let e = LoraConfig::parse(text, Path::new("adapter_config.json")).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        };
        bad(r#"{"peft_type": "IA3", "r": 8}"#, "only LoRA");
        bad(r#"{"r": 8}"#, "peft_type");
        bad(r#"{"peft_type": "LORA", "r": 0}"#, "\"r\"");
        bad(r#"{"peft_type": "LORA", "r": 8, "init_lora_weights": "pissa_niter_4"}"#, "pissa");
        bad(r#"{"peft_type": "LORA", "r": 8, "alora_invocation_tokens": [1, 2]}"#, "activated");
        bad(r#"{"peft_type": "LORA", "r": 8, "bias": "some"}"#, "bias");
        // Set-but-off values are fine.
        LoraConfig::parse(
            r#"{"peft_type": "LORA", "r": 8, "trainable_token_indices": null, "use_qalora": false, "layer_replication": null}"#,
            Path::new("a"),
        )
        .unwrap();
    }

    #[test]
    fn model_names() {
        assert_eq!(normalize_model_name("unsloth/qwen2.5-coder-7b-instruct-bnb-4bit"), "qwen2.5-coder-7b-instruct");
        assert_eq!(
            normalize_model_name("unsloth/Qwen2.5-Coder-7B-Instruct-unsloth-bnb-4bit"),
            "qwen2.5-coder-7b-instruct"
        );
        assert_eq!(normalize_model_name("/models/Qwen2.5-Coder-7B-Instruct/"), "qwen2.5-coder-7b-instruct");
    }
}
