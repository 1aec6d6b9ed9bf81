//! PEFT LoRA adapters as PEFT saves them: `adapter_config.json` and
//! `adapter_model.safetensors` (pickled `adapter_model.bin` files are never
//! loaded).
//!
//! Keys are PEFT's `get_peft_model_state_dict` names (adapter name removed):
//!
//! | key | meaning |
//! | --- | --- |
//! | `base_model.model.<m>.lora_A.weight` | A (r, in) of Linear module `<m>` |
//! | `base_model.model.<m>.lora_B.weight` | B (out, r) |
//! | `base_model.model.<m>.lora_B.bias` | B's bias (out,), `lora_bias` |
//! | `base_model.model.<m>.lora_embedding_A` | A (r, vocab) of Embedding `<m>` |
//! | `base_model.model.<m>.lora_embedding_B` | B (hidden, r) |
//! | `base_model.model.<m>.lora_magnitude_vector` | DoRA magnitude |
//! | `base_model.model.<m>.base_layer.weight` / `.bias` | the wrapped base layer's tensor (saved embedding layers, `bias="all"`) |
//! | `base_model.model.<p>.weight` / `.bias` | a full tensor: `modules_to_save`, trained biases |
//!
//! [`Adapter::open`] validates everything that does not need the base model:
//! the config (only `peft_type` LORA; features that cannot be merged are
//! refused), the key forms, A/B pairs, ranks against `r` / `rank_pattern`,
//! dtypes, and NaN/Inf in every tensor.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::hf::{SafetensorsModel, TensorEntry};
use crate::progress::Progress;

/// The PEFT key prefix of a transformers model wrapped by a `LoraModel`.
pub const KEY_PREFIX: &str = "base_model.model.";
pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";

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

/// The kind of layer a LoRA module adapts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleKind {
    /// nn.Linear: `lora_A` (r, in), `lora_B` (out, r).
    Linear,
    /// nn.Embedding: `lora_embedding_A` (r, vocab), `lora_embedding_B` (hidden, r).
    Embedding,
}

/// One adapted module.
#[derive(Debug, Clone)]
pub struct LoraModule {
    /// Module name in the transformers model, e.g. `model.layers.0.self_attn.q_proj`.
    pub path: String,
    pub kind: ModuleKind,
    /// A and B (tensor names in the adapter file).
    pub a: String,
    pub b: String,
    /// B's bias (`lora_bias`).
    pub bias: Option<String>,
    /// DoRA magnitude.
    pub magnitude: Option<String>,
    pub rank: u64,
    pub alpha: f64,
    /// PEFT's `scaling` (alpha / r, or alpha / √r).
    pub scaling: f64,
    /// Columns of A: `in_features` (Linear) or the vocabulary (Embedding).
    pub a_cols: u64,
    /// Rows of B: `out_features` (Linear) or the hidden size (Embedding).
    pub b_rows: u64,
}

/// A full tensor of the adapter replacing a base tensor.
#[derive(Debug, Clone)]
pub struct FullTensor {
    /// The base tensor it replaces, e.g. `lm_head.weight`.
    pub target: String,
    /// Its name in the adapter file.
    pub key: String,
    /// Saved as the wrapped `base_layer` of a LoRA module (PEFT saves the
    /// embedding layers this way; normally equal to the base).
    pub base_layer: bool,
}

/// An opened and validated PEFT LoRA adapter.
pub struct Adapter {
    dir: PathBuf,
    pub config: LoraConfig,
    pub weights: SafetensorsModel,
    /// LoRA modules, in the order of their first key in the file.
    pub modules: Vec<LoraModule>,
    pub full: Vec<FullTensor>,
}

impl std::fmt::Debug for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adapter").field("dir", &self.dir).field("modules", &self.modules.len()).finish()
    }
}

/// What a key of the adapter file is.
enum KeyKind<'a> {
    A(&'a str),
    B(&'a str),
    BBias(&'a str),
    EmbA(&'a str),
    EmbB(&'a str),
    Magnitude(&'a str),
    /// A full tensor replacing base tensor `.0`; `.1`: saved as `base_layer`.
    Full(String, bool),
}

fn classify(rest: &str) -> Option<KeyKind<'_>> {
    const SUFFIXES: [&str; 6] = [
        ".lora_A.weight",
        ".lora_B.weight",
        ".lora_B.bias",
        ".lora_embedding_A",
        ".lora_embedding_B",
        ".lora_magnitude_vector",
    ];
    for (i, suffix) in SUFFIXES.iter().enumerate() {
        if let Some(m) = rest.strip_suffix(suffix) {
            if m.is_empty() || m.contains("lora_") {
                return None;
            }
            return Some(match i {
                0 => KeyKind::A(m),
                1 => KeyKind::B(m),
                2 => KeyKind::BBias(m),
                3 => KeyKind::EmbA(m),
                4 => KeyKind::EmbB(m),
                _ => KeyKind::Magnitude(m),
            });
        }
    }
    if rest.contains("lora_") {
        return None;
    }
    for (suffix, param) in [(".base_layer.weight", "weight"), (".base_layer.bias", "bias")] {
        if let Some(m) = rest.strip_suffix(suffix) {
            return (!m.is_empty()).then(|| KeyKind::Full(format!("{m}.{param}"), true));
        }
    }
    if rest.ends_with(".weight") || rest.ends_with(".bias") {
        if rest.contains(".base_layer.") {
            return None;
        }
        return Some(KeyKind::Full(rest.to_string(), false));
    }
    None
}

#[derive(Default)]
struct Parts {
    a: Option<String>,
    b: Option<String>,
    bias: Option<String>,
    ea: Option<String>,
    eb: Option<String>,
    magnitude: Option<String>,
}

impl Adapter {
    /// Opens an adapter directory and validates it on its own (see the module docs).
    pub fn open(dir: impl AsRef<Path>, progress: &dyn Progress) -> Result<Adapter> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            return Err(Error::input(&dir, "not a directory (expected a PEFT adapter directory)"));
        }
        let cfg_path = dir.join(CONFIG_FILE);
        let st_path = dir.join(WEIGHTS_FILE);
        if !st_path.is_file() {
            if dir.join("adapter_model.bin").is_file() {
                return Err(Error::input(
                    dir.join("adapter_model.bin"),
                    "pickled PyTorch adapters are never loaded (unpickling can run arbitrary code); save the adapter \
                     as adapter_model.safetensors (PEFT's save_pretrained does by default)",
                ));
            }
            return Err(Error::input(&dir, format!("no {WEIGHTS_FILE} (is this a PEFT adapter directory?)")));
        }
        if !cfg_path.is_file() {
            return Err(Error::input(&cfg_path, "missing adapter_config.json"));
        }
        let config_text = crate::hf::read_text(&cfg_path)?;
        // The config first: a bad config is reported before the weights are opened.
        LoraConfig::parse(&config_text, &cfg_path)?;
        let weights = SafetensorsModel::open_files(std::slice::from_ref(&st_path))?;
        Self::from_parts(dir, &config_text, weights, progress)
    }

    /// The validation of [`Adapter::open`] without file access: the text of
    /// `adapter_config.json` and the opened weights (`dir` names the files in
    /// messages). The fuzz target `adapter_config` runs this on arbitrary bytes.
    pub fn from_parts(
        dir: PathBuf,
        config_text: &str,
        weights: SafetensorsModel,
        progress: &dyn Progress,
    ) -> Result<Adapter> {
        let cfg_path = dir.join(CONFIG_FILE);
        let st_path = dir.join(WEIGHTS_FILE);
        let config = LoraConfig::parse(config_text, &cfg_path)?;

        // Group the keys by module.
        let mut parts: BTreeMap<String, Parts> = BTreeMap::new();
        let mut order: Vec<String> = Vec::new();
        let mut full = Vec::new();
        for t in weights.tensors() {
            let rest = t.name.strip_prefix(KEY_PREFIX).ok_or_else(|| {
                Error::input(
                    &st_path,
                    format!("tensor '{}' does not start with '{KEY_PREFIX}' (not a PEFT LoRA state dict)", t.name),
                )
            })?;
            let kind = classify(rest).ok_or_else(|| {
                Error::input(
                    &st_path,
                    format!(
                        "unexpected tensor '{}': not a LoRA tensor (lora_A/lora_B.weight, lora_embedding_A/B, \
                         lora_magnitude_vector) or a full .weight/.bias",
                        t.name
                    ),
                )
            })?;
            if !t.dtype.is_readable_float() {
                return Err(Error::input(
                    &st_path,
                    format!("tensor '{}' has dtype {}; only F32, F16 and BF16 are supported", t.name, t.dtype),
                ));
            }
            let module = match &kind {
                KeyKind::A(m)
                | KeyKind::B(m)
                | KeyKind::BBias(m)
                | KeyKind::EmbA(m)
                | KeyKind::EmbB(m)
                | KeyKind::Magnitude(m) => m.to_string(),
                KeyKind::Full(target, base_layer) => {
                    full.push(FullTensor { target: target.clone(), key: t.name.clone(), base_layer: *base_layer });
                    continue;
                }
            };
            let p = parts.entry(module.clone()).or_insert_with(|| {
                order.push(module.clone());
                Parts::default()
            });
            let slot = match kind {
                KeyKind::A(_) => &mut p.a,
                KeyKind::B(_) => &mut p.b,
                KeyKind::BBias(_) => &mut p.bias,
                KeyKind::EmbA(_) => &mut p.ea,
                KeyKind::EmbB(_) => &mut p.eb,
                KeyKind::Magnitude(_) => &mut p.magnitude,
                KeyKind::Full(..) => continue,
            };
            *slot = Some(t.name.clone());
        }

        let mut modules = Vec::with_capacity(order.len());
        for path in &order {
            let p = &parts[path];
            modules.push(build_module(path, p, &config, &weights, &st_path)?);
        }
        if modules.is_empty() && full.is_empty() {
            return Err(Error::input(&st_path, "the adapter holds no LoRA tensors"));
        }
        let adapter = Adapter { dir, config, weights, modules, full };
        adapter.check_finite(progress)?;
        Ok(adapter)
    }

    /// The adapter directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The safetensors file.
    pub fn file(&self) -> PathBuf {
        self.dir.join(WEIGHTS_FILE)
    }

    /// A tensor of the adapter file.
    pub fn entry(&self, name: &str) -> Result<&TensorEntry> {
        self.weights.tensor(name).ok_or_else(|| Error::Other(format!("adapter tensor '{name}' vanished")))
    }

    /// Scans every tensor for NaN and infinities.
    fn check_finite(&self, progress: &dyn Progress) -> Result<()> {
        const CHUNK: u64 = 1 << 20;
        let mut buf = vec![0f32; CHUNK as usize];
        progress.begin("checking adapter", self.weights.total_bytes());
        for t in self.weights.tensors() {
            let n = t.n_elements();
            let row = t.row_len().max(1);
            let mut at = 0u64;
            while at < n {
                let len = CHUNK.min(n - at);
                let out = &mut buf[..len as usize];
                self.weights.read_f32(t, at, out)?;
                if let Some(pos) = out.iter().position(|v| !v.is_finite()) {
                    let elem = at + pos as u64;
                    let what = if out[pos].is_nan() { "NaN" } else { "an infinity" };
                    return Err(Error::input(
                        self.file(),
                        format!(
                            "tensor '{}' row {} (element {}) holds {what}: the adapter is broken",
                            t.name,
                            elem / row,
                            elem % row
                        ),
                    ));
                }
                self.weights.release_elements(t, at, len);
                progress.advance(len * t.dtype.float_size().unwrap_or(4) as u64);
                at += len;
            }
        }
        progress.finish();
        Ok(())
    }
}

fn shape2(e: &TensorEntry, file: &Path) -> Result<(u64, u64)> {
    match e.shape.as_slice() {
        [a, b] => Ok((*a, *b)),
        s => Err(Error::input(file, format!("tensor '{}' has shape {s:?}; expected a matrix", e.name))),
    }
}

fn build_module(path: &str, p: &Parts, config: &LoraConfig, w: &SafetensorsModel, file: &Path) -> Result<LoraModule> {
    let get = |n: &Option<String>| n.as_ref().and_then(|n| w.tensor(n));
    let missing = |what: &str, have: &str| {
        Error::input(file, format!("module '{path}': {have} is present but {what} is missing"))
    };
    let (kind, a, b) = match (&p.a, &p.b, &p.ea, &p.eb) {
        (Some(a), Some(b), None, None) => (ModuleKind::Linear, a, b),
        (None, None, Some(a), Some(b)) => (ModuleKind::Embedding, a, b),
        (Some(_), None, None, None) => return Err(missing("lora_B.weight", "lora_A.weight")),
        (None, Some(_), None, None) => return Err(missing("lora_A.weight", "lora_B.weight")),
        (None, None, Some(_), None) => return Err(missing("lora_embedding_B", "lora_embedding_A")),
        (None, None, None, Some(_)) => return Err(missing("lora_embedding_A", "lora_embedding_B")),
        (None, None, None, None) => {
            let have = if p.magnitude.is_some() { "lora_magnitude_vector" } else { "lora_B.bias" };
            return Err(missing("lora_A/lora_B", have));
        }
        _ => {
            return Err(Error::input(
                file,
                format!("module '{path}' has both Linear (lora_A/lora_B) and Embedding (lora_embedding_A/B) tensors"),
            ))
        }
    };
    let (ea, eb) = (
        get(&Some(a.clone())).ok_or_else(|| missing("A", "B"))?,
        get(&Some(b.clone())).ok_or_else(|| missing("B", "A"))?,
    );
    let (ra, a_cols) = shape2(ea, file)?;
    let (b_rows, rb) = shape2(eb, file)?;
    if ra != rb {
        return Err(Error::input(
            file,
            format!("rank mismatch in module '{path}': '{a}' has rank {ra} (shape {:?}) but '{b}' has rank {rb} (shape {:?})", ea.shape, eb.shape),
        ));
    }
    let (rank, alpha, scaling) = config.module_params(path)?;
    if ra != rank {
        return Err(Error::input(
            file,
            format!(
                "rank mismatch in module '{path}': its tensors have rank {ra} but adapter_config.json gives r = {rank} \
                 (r / rank_pattern)"
            ),
        ));
    }
    if a_cols == 0 || b_rows == 0 {
        return Err(Error::input(file, format!("module '{path}' has an empty LoRA tensor")));
    }
    if let Some(bias) = &p.bias {
        if kind == ModuleKind::Embedding {
            return Err(Error::input(file, format!("'{bias}': embeddings have no LoRA bias")));
        }
        if !config.lora_bias {
            return Err(Error::input(
                file,
                format!("'{bias}' is present but adapter_config.json has lora_bias = false"),
            ));
        }
        let e = w.tensor(bias).ok_or_else(|| missing("bias", "bias"))?;
        if e.shape != [b_rows] {
            return Err(Error::input(file, format!("'{bias}' has shape {:?}; expected [{b_rows}]", e.shape)));
        }
    } else if config.lora_bias && kind == ModuleKind::Linear {
        return Err(missing("lora_B.bias (adapter_config.json has lora_bias = true)", "lora_B.weight"));
    }
    match (&p.magnitude, config.use_dora) {
        (Some(m), true) => {
            let e = w.tensor(m).ok_or_else(|| missing("magnitude", "magnitude"))?;
            if e.shape != [b_rows] {
                return Err(Error::input(
                    file,
                    format!(
                        "'{m}' has shape {:?}; DoRA needs one magnitude per {} ([{b_rows}])",
                        e.shape,
                        match kind {
                            ModuleKind::Linear => "output row",
                            ModuleKind::Embedding => "embedding dimension",
                        }
                    ),
                ));
            }
        }
        (Some(m), false) => {
            return Err(Error::input(file, format!("'{m}' is present but adapter_config.json has use_dora = false")))
        }
        (None, true) => {
            return Err(missing("lora_magnitude_vector (adapter_config.json has use_dora = true)", "lora_A/lora_B"))
        }
        (None, false) => {}
    }
    Ok(LoraModule {
        path: path.to_string(),
        kind,
        a: a.clone(),
        b: b.clone(),
        bias: p.bias.clone(),
        magnitude: p.magnitude.clone(),
        rank,
        alpha,
        scaling,
        a_cols,
        b_rows,
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
    fn key_forms() {
        assert!(matches!(
            classify("model.layers.0.self_attn.q_proj.lora_A.weight"),
            Some(KeyKind::A("model.layers.0.self_attn.q_proj"))
        ));
        assert!(matches!(classify("model.embed_tokens.lora_embedding_B"), Some(KeyKind::EmbB("model.embed_tokens"))));
        assert!(matches!(classify("lm_head.weight"), Some(KeyKind::Full(ref t, false)) if t == "lm_head.weight"));
        assert!(
            matches!(classify("model.embed_tokens.base_layer.weight"), Some(KeyKind::Full(ref t, true)) if t == "model.embed_tokens.weight")
        );
        assert!(classify("model.layers.0.self_attn.q_proj.lora_A.default.weight").is_none());
        assert!(classify("model.layers.0.self_attn.q_proj.lora_E").is_none());
        assert!(classify("model.layers.0.foo").is_none());
    }

    /// A safetensors file in memory from (name, shape, f32 values).
    fn st_bytes(tensors: &[(&str, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
        use ::safetensors::tensor::TensorView;
        let data: Vec<Vec<u8>> = tensors.iter().map(|t| t.2.iter().flat_map(|v| v.to_le_bytes()).collect()).collect();
        let views: Vec<(&str, TensorView)> = tensors
            .iter()
            .zip(&data)
            .map(|(t, d)| (t.0, TensorView::new(::safetensors::Dtype::F32, t.1.clone(), d).unwrap()))
            .collect();
        ::safetensors::serialize(views, None).unwrap()
    }

    fn from_memory(config: &str, tensors: &[(&str, Vec<usize>, Vec<f32>)]) -> Result<Adapter> {
        let dir = PathBuf::from("mem");
        let st = SafetensorsModel::from_bytes(&dir.join(WEIGHTS_FILE), st_bytes(tensors))?;
        Adapter::from_parts(dir, config, st, &crate::progress::NoProgress)
    }

    #[test]
    fn tensors_validated_in_memory() {
        const CFG: &str = r#"{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"]}"#;
        let a = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
        let b = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight";
        let ok = from_memory(CFG, &[(a, vec![2, 3], vec![0.5; 6]), (b, vec![4, 2], vec![1.0; 8])]).unwrap();
        assert_eq!(ok.modules.len(), 1);
        let m = &ok.modules[0];
        assert_eq!((m.kind, m.rank, m.a_cols, m.b_rows, m.scaling), (ModuleKind::Linear, 2, 3, 4, 2.0));
        let err = |tensors: &[(&str, Vec<usize>, Vec<f32>)], needle: &str| {
            let e = from_memory(CFG, tensors).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        };
        err(&[(a, vec![2, 3], vec![0.5; 6])], "lora_B.weight is missing");
        err(&[(a, vec![2, 3], vec![0.5; 6]), (b, vec![4, 1], vec![1.0; 4])], "rank mismatch");
        err(&[(a, vec![3, 3], vec![0.5; 9]), (b, vec![4, 3], vec![1.0; 12])], "r = 2");
        let mut nan = vec![0.5; 6];
        nan[4] = f32::NAN;
        err(&[(a, vec![2, 3], nan), (b, vec![4, 2], vec![1.0; 8])], "row 1 (element 1) holds NaN");
        err(&[("model.layers.0.q_proj.lora_A.weight", vec![2, 3], vec![0.5; 6])], "does not start with");
        let e = from_memory("{", &[(a, vec![2, 3], vec![0.5; 6])]).unwrap_err().to_string();
        assert!(e.contains("adapter_config.json") && e.contains("invalid JSON"), "{e}");
        // Truncated weights: the safetensors header check names the file.
        let mut bytes = st_bytes(&[(a, vec![2, 3], vec![0.5; 6])]);
        bytes.pop();
        let e = SafetensorsModel::from_bytes(Path::new("mem/adapter_model.safetensors"), bytes).unwrap_err();
        assert!(e.to_string().contains("adapter_model.safetensors"), "{e}");
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
