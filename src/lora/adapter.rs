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
//! the config (parsed by [`super::config`]: only `peft_type` LORA; features
//! that cannot be merged are refused), the key forms, A/B pairs, ranks against
//! `r` / `rank_pattern`, dtypes, and NaN/Inf in every tensor.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use super::config::{LoraConfig, CONFIG_FILE};
use crate::error::{Error, Result};
use crate::hf::{SafetensorsModel, TensorEntry};
use crate::progress::Progress;

/// The PEFT key prefix of a transformers model wrapped by a `LoraModel`.
pub const KEY_PREFIX: &str = "base_model.model.";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";

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

#[cfg(test)]
mod tests {
    use super::*;

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

    fn from_memory(config: &str, tensors: &[(&str, Vec<usize>, Vec<f32>)]) -> Result<Adapter> {
        let dir = PathBuf::from("mem");
        let st =
            SafetensorsModel::from_bytes(&dir.join(WEIGHTS_FILE), crate::hf::safetensors::f32_file_bytes(tensors))?;
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
        let mut bytes = crate::hf::safetensors::f32_file_bytes(&[(a, vec![2, 3], vec![0.5; 6])]);
        bytes.pop();
        let e = SafetensorsModel::from_bytes(Path::new("mem/adapter_model.safetensors"), bytes).unwrap_err();
        assert!(e.to_string().contains("adapter_model.safetensors"), "{e}");
    }
}
