//! The merge: a base model's tensors with LoRA adapters applied, as PEFT's
//! `merge_and_unload` computes them, read row chunk by row chunk.
//!
//! For a Linear module with `lora_A` (r, in), `lora_B` (out, r) and PEFT's
//! `scaling` s (alpha / r, or alpha / √r with rsLoRA, per-module rank and
//! alpha from `rank_pattern` / `alpha_pattern`), times the user's weight w:
//!
//! ```text
//! ΔW = (B @ A) · (w·s)                    computed in f32 as PEFT does:
//!      d = f32(Σ_k B[o,k]·A[k,j])         (the product; f64 sums, one rounding)
//!      Δ = f32(d · f32(w·s))
//! W' = f32(W + Δ)
//! DoRA: V = f32(W + Δ); W' = f32(f32(m[o] / f32(‖V[o,:]‖)) · V)   (norm per output row)
//! ```
//!
//! Embeddings (`lora_embedding_A` (r, vocab), `lora_embedding_B` (hidden, r))
//! have ΔW = (B @ A)ᵀ; their DoRA norms are taken per embedding dimension
//! (over the vocabulary), as PEFT's `DoraEmbeddingLayer` does. A Linear with
//! `fan_in_fan_out` stores (in, out) and has the same transposed form, but
//! PEFT forces `fan_in_fan_out` off for `nn.Linear` layers (all the
//! architectures ggufkit converts), and so does this merge.
//!
//! `lora_bias`: b' = f32(b + f32(bias_B · f32(w·s))). Full tensors
//! (`modules_to_save`, trained biases): W' = R (w = 1) or W + w·(R − W).
//! Several adapters apply in order, each to the previous result; the result
//! stays in f32 between adapters and is rounded to the output dtype once, by
//! the writer.
//!
//! Tied embeddings: LoRA on either side (and a saved `base_layer` copy) goes
//! into the one shared weight and the model stays tied; a `modules_to_save`
//! replacement unties (see [`resolve_tied`]). Multimodal module names are
//! mapped between transformers' two namings ([`Naming`]).
//!
//! Memory: ΔW is never materialized; each read computes the requested rows
//! from B's rows and A (or A's columns, for embeddings). Only DoRA on an
//! embedding needs a first pass (its column norms, one vector).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::adapter::{Adapter, ModuleKind};
use crate::error::{Error, Result};
use crate::hf::{DType, HfTensor, HfTensors, SafetensorsModel};
use crate::progress::Progress;

/// One adapter and the weight its ΔW is scaled by.
pub struct WeightedAdapter {
    pub adapter: Adapter,
    pub weight: f64,
}

/// One change to a tensor.
#[derive(Debug)]
enum Op {
    /// A full tensor of adapter `adapter` (key `key`) replaces the rows.
    Replace { adapter: usize, key: String, weight: f32 },
    /// LoRA ΔW of module `module`.
    Delta {
        adapter: usize,
        module: usize,
        transposed: bool,
        scale: f32,
        dora: bool,
        factors: Mutex<Option<Arc<Vec<f32>>>>,
    },
    /// B's bias of module `module` added to a bias vector.
    Bias { adapter: usize, module: usize, scale: f32 },
}

#[derive(Debug)]
struct TensorPlan {
    /// Index of the base tensor the rows start from.
    source: usize,
    ops: Vec<Op>,
}

/// What the merge changes, for summaries.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MergeReport {
    /// Per adapter: modules merged (LoRA/DoRA), full tensors replaced.
    pub adapters: Vec<AdapterReport>,
    /// Tensors whose values change.
    pub changed_tensors: Vec<String>,
    /// The base had tied embeddings and the output gets its own lm_head.
    pub untied: bool,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct AdapterReport {
    pub path: PathBuf,
    pub weight: f64,
    pub lora_modules: usize,
    pub dora_modules: usize,
    pub embedding_modules: usize,
    pub bias_vectors: usize,
    pub full_tensors: usize,
    pub unchanged_base_layer_copies: usize,
}

/// A base model with adapters merged, readable as [`HfTensors`].
pub struct LoraMerged {
    base: SafetensorsModel,
    adapters: Vec<WeightedAdapter>,
    tensors: Vec<HfTensor>,
    by_name: HashMap<String, usize>,
    plans: Vec<TensorPlan>,
    pub report: MergeReport,
}

/// Module names of a multimodal checkpoint. transformers ≥ 4.52 loads a
/// Gemma3ForConditionalGeneration checkpoint (`language_model.model.…`,
/// `vision_tower.…`) under new module names (`model.language_model.…`,
/// `_checkpoint_conversion_mapping`) and saves it back under the old ones;
/// PEFT names an adapter's keys after the live modules, and maps old-style
/// keys on load. Both forms are accepted. (old prefix, new prefix).
const VLM_RENAMES: [(&str, &str); 4] = [
    ("language_model.model", "model.language_model"),
    ("vision_tower", "model.vision_tower"),
    ("multi_modal_projector", "model.multi_modal_projector"),
    ("language_model.lm_head", "lm_head"),
];

/// How a name set spells the modules of a multimodal model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Naming {
    /// A text-only model (`model.…`, `lm_head`).
    Plain,
    /// transformers < 4.52 / checkpoint names (`language_model.model.…`).
    Old,
    /// transformers ≥ 4.52 module names (`model.language_model.…`).
    New,
}

impl Naming {
    /// The naming of a base checkpoint, from its tensor names.
    fn of_base<'a>(mut names: impl Iterator<Item = &'a str>) -> Naming {
        let mut n = Naming::Plain;
        for name in &mut names {
            if name.starts_with("language_model.") {
                return Naming::Old;
            }
            if name.starts_with("model.language_model.") {
                n = Naming::New;
            }
        }
        n
    }

    /// The naming of an adapter's module paths on a base named `base`.
    fn of_adapter(a: &Adapter, base: Naming) -> Naming {
        if base == Naming::Plain {
            return Naming::Plain;
        }
        let paths = a.modules.iter().map(|m| m.path.as_str()).chain(a.full.iter().map(|f| f.target.as_str()));
        let mut found = base;
        for p in paths {
            if VLM_RENAMES.iter().any(|(_, new)| prefixed(p, new).is_some()) {
                return Naming::New;
            }
            if VLM_RENAMES.iter().any(|(old, _)| prefixed(p, old).is_some()) {
                found = Naming::Old;
            }
        }
        found
    }

    /// `name` (in this naming) in naming `to`.
    fn convert(self, name: &str, to: Naming) -> String {
        if self == to || self == Naming::Plain || to == Naming::Plain {
            return name.to_string();
        }
        for (old, new) in VLM_RENAMES {
            let (from, into) = if self == Naming::Old { (old, new) } else { (new, old) };
            if let Some(rest) = prefixed(name, from) {
                return format!("{into}{rest}");
            }
        }
        name.to_string()
    }

    /// The input embeddings' and the output layer's weight names.
    fn embed_and_head(self) -> (&'static str, &'static str) {
        match self {
            Naming::Plain => ("model.embed_tokens.weight", "lm_head.weight"),
            Naming::Old => ("language_model.model.embed_tokens.weight", "language_model.lm_head.weight"),
            Naming::New => ("model.language_model.embed_tokens.weight", "lm_head.weight"),
        }
    }
}

/// The rest of `name` after the dotted prefix `prefix` (empty or starting with '.').
fn prefixed<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    name.strip_prefix(prefix).filter(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// Where an op goes: a base tensor, or the output layer tied to the embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Tensor(usize),
    TiedHead,
}

/// Which side of tied embeddings an op was planned on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Embed,
    Head,
}

impl Op {
    /// The same change, with no cached DoRA factors.
    fn fresh(&self) -> Op {
        match self {
            Op::Replace { adapter, key, weight } => {
                Op::Replace { adapter: *adapter, key: key.clone(), weight: *weight }
            }
            Op::Delta { adapter, module, transposed, scale, dora, .. } => Op::Delta {
                adapter: *adapter,
                module: *module,
                transposed: *transposed,
                scale: *scale,
                dora: *dora,
                factors: Mutex::new(None),
            },
            Op::Bias { adapter, module, scale } => Op::Bias { adapter: *adapter, module: *module, scale: *scale },
        }
    }
}

/// The ops of a tied embedding / output pair, in merge order, resolved as
/// PEFT's `merge_and_unload` leaves them: the two modules share one
/// Parameter, so a LoRA merged into either (and a saved `base_layer` copy
/// loaded into either) changes both; a `modules_to_save` replacement swaps
/// in a new module on its side only, after which the two are separate
/// tensors (PEFT then sets `tie_word_embeddings = false`).
/// Returns (embedding ops, output ops, untied).
fn resolve_tied(events: Vec<(Side, Op, bool)>) -> (Vec<Op>, Vec<Op>, bool) {
    let (mut e_ops, mut h_ops) = (Vec::new(), Vec::new());
    let (mut e_own, mut h_own) = (false, false);
    for (side, op, detaches) in events {
        let (mine, other, own) = match side {
            Side::Embed => (&mut e_ops, &mut h_ops, &mut e_own),
            Side::Head => (&mut h_ops, &mut e_ops, &mut h_own),
        };
        if detaches {
            *own = true;
        } else if !e_own && !h_own {
            other.push(op.fresh());
        }
        mine.push(op);
    }
    (e_ops, h_ops, e_own || h_own)
}

fn f32s(w: &SafetensorsModel, name: &str, first: u64, n: usize) -> Result<Vec<f32>> {
    let e = w.tensor(name).ok_or_else(|| Error::Other(format!("adapter tensor '{name}' vanished")))?;
    let mut v = vec![0f32; n];
    w.read_f32(e, first, &mut v)?;
    Ok(v)
}

impl LoraMerged {
    /// Checks the adapters against the base (`config`: the base's config.json
    /// at `base_dir`) and plans every tensor's changes. Nothing is read beyond
    /// headers and the adapters' full tensors (compared with the base).
    pub fn new(
        base: SafetensorsModel,
        base_dir: &Path,
        config: &serde_json::Map<String, serde_json::Value>,
        adapters: Vec<WeightedAdapter>,
        progress: &dyn Progress,
    ) -> Result<LoraMerged> {
        let mut tensors: Vec<HfTensor> = HfTensors::tensors(&base).to_vec();
        let mut plans: Vec<TensorPlan> =
            (0..tensors.len()).map(|i| TensorPlan { source: i, ops: Vec::new() }).collect();
        let mut report = MergeReport::default();
        let naming = Naming::of_base(tensors.iter().map(|t| t.name.as_str()));
        let (embed_name, head_name) = naming.embed_and_head();
        let embed_index = base.index_of(embed_name);
        let tied = base.index_of(head_name).is_none() && embed_index.is_some();
        let head_path = head_name.trim_end_matches(".weight");

        // The modules PEFT could wrap (base names): every 2-D weight, plus the tied lm_head.
        let mut modules: Vec<(String, bool, bool)> = Vec::new(); // (path, is_linear, is_output)
        for t in base.tensors() {
            if let Some(p) = t.name.strip_suffix(".weight") {
                if t.shape.len() == 2 {
                    modules.push((p.to_string(), !p.ends_with("embed_tokens"), p == head_path));
                }
            }
        }
        if tied {
            modules.push((head_path.to_string(), true, true));
        }

        // The base tensor a name (base naming) refers to.
        let resolve = |name: &str| -> Option<Target> {
            if let Some(i) = base.index_of(name) {
                return Some(Target::Tensor(i));
            }
            (tied && name == head_name).then_some(Target::TiedHead)
        };
        // The tensor whose shape and values a target has.
        let shape_of = |t: Target| match t {
            Target::Tensor(i) => i,
            Target::TiedHead => embed_index.unwrap_or_default(),
        };
        // Ops on either side of tied embeddings are resolved at the end.
        let mut tied_events: Vec<(Side, Op, bool)> = Vec::new();
        let mut push = |plans: &mut Vec<TensorPlan>, t: Target, op: Op, detaches: bool| match t {
            Target::Tensor(i) if tied && Some(i) == embed_index => tied_events.push((Side::Embed, op, detaches)),
            Target::Tensor(i) => plans[i].ops.push(op),
            Target::TiedHead => tied_events.push((Side::Head, op, detaches)),
        };

        let base_name_warning = base_name_check(base_dir, config, &adapters);
        report.warnings.extend(base_name_warning);
        let namings: Vec<Naming> = adapters.iter().map(|wa| Naming::of_adapter(&wa.adapter, naming)).collect();

        // Base-layer copies first (PEFT loads every adapter's state dict before merging).
        let mut pending: Vec<(Target, Op)> = Vec::new();
        for (ai, wa) in adapters.iter().enumerate() {
            let a = &wa.adapter;
            let file = a.file();
            let mut rep = AdapterReport { path: a.path().to_path_buf(), weight: wa.weight, ..Default::default() };
            for f in a.full.iter().filter(|f| f.base_layer) {
                let target = namings[ai].convert(&f.target, naming);
                let t = resolve(&target).ok_or_else(|| {
                    Error::input(&file, format!("'{}' replaces '{target}', which the base model does not have", f.key))
                })?;
                let idx = shape_of(t);
                check_same_shape(a, &f.key, &tensors[idx], &file)?;
                if same_values(&base, idx, a, &f.key)? {
                    rep.unchanged_base_layer_copies += 1;
                    continue;
                }
                rep.full_tensors += 1;
                pending.push((t, Op::Replace { adapter: ai, key: f.key.clone(), weight: 1.0 }));
            }
            report.adapters.push(rep);
        }
        for (t, op) in pending {
            // Loaded into the wrapped layer's Parameter: shared by a tied pair.
            push(&mut plans, t, op, false);
        }

        for (ai, wa) in adapters.iter().enumerate() {
            let a = &wa.adapter;
            let cfg = &a.config;
            let file = a.file();
            let cfg_file = a.path().join(super::config::CONFIG_FILE);
            let names = namings[ai];
            if cfg.fan_in_fan_out && a.modules.iter().any(|m| m.kind == ModuleKind::Linear) {
                report.warnings.push(format!(
                    "{}: fan_in_fan_out = true is ignored for nn.Linear layers, as PEFT does (\"Setting fan_in_fan_out to False\")",
                    cfg_file.display()
                ));
            }
            for (mi, m) in a.modules.iter().enumerate() {
                let path = names.convert(&m.path, naming);
                let Some((_, is_linear, is_output)) = modules.iter().find(|(p, ..)| *p == path) else {
                    return Err(Error::input(
                        &file,
                        format!(
                            "module '{}' of the adapter is not in the base model (no tensor '{path}.weight')",
                            m.path
                        ),
                    ));
                };
                if cfg.targets(&m.path, *is_linear, *is_output)? == Some(false) {
                    return Err(Error::input(
                        &file,
                        format!(
                            "module '{}' has LoRA tensors but target_modules in {} does not select it (PEFT would not load them)",
                            m.path,
                            cfg_file.display()
                        ),
                    ));
                }
                let want_kind = if *is_linear { ModuleKind::Linear } else { ModuleKind::Embedding };
                if m.kind != want_kind {
                    return Err(Error::input(
                        &file,
                        format!(
                            "module '{}' is an {} in the base but the adapter has {} tensors for it",
                            m.path,
                            if *is_linear { "nn.Linear" } else { "nn.Embedding" },
                            if m.kind == ModuleKind::Linear { "lora_A/lora_B" } else { "lora_embedding_A/B" }
                        ),
                    ));
                }
                let wname = format!("{path}.weight");
                let target = resolve(&wname)
                    .ok_or_else(|| Error::input(&file, format!("module '{}' is not in the base model", m.path)))?;
                let t = &tensors[shape_of(target)];
                let expect = match m.kind {
                    ModuleKind::Linear => vec![m.b_rows, m.a_cols],
                    ModuleKind::Embedding => vec![m.a_cols, m.b_rows],
                };
                if t.shape != expect {
                    return Err(Error::input(
                        &file,
                        format!(
                            "shape mismatch for module '{}': the base tensor '{}' is {:?} but '{}' {:?} and '{}' {:?} \
                             give {:?} (is this the adapter's base model?)",
                            m.path,
                            wname,
                            t.shape,
                            m.a,
                            a.entry(&m.a)?.shape,
                            m.b,
                            a.entry(&m.b)?.shape,
                            expect
                        ),
                    ));
                }
                if target == Target::TiedHead
                    && cfg.ensure_weight_tying
                    && is_tied_copy(a, m, names, naming, embed_name)?
                {
                    // PEFT's ensure_weight_tying: the output layer's LoRA is the embedding's own
                    // (A = Bₑᵀ, B = Aₑᵀ), so the trained model computed W + ΔW on both sides; merged once.
                    report.warnings.push(format!(
                        "{}: ensure_weight_tying: the LoRA of '{}' is the embeddings' (tied), merged once",
                        cfg_file.display(),
                        m.path
                    ));
                    continue;
                }
                let scale = (wa.weight * m.scaling) as f32;
                let rep = &mut report.adapters[ai];
                rep.lora_modules += 1;
                rep.dora_modules += usize::from(m.magnitude.is_some());
                rep.embedding_modules += usize::from(m.kind == ModuleKind::Embedding);
                let op = Op::Delta {
                    adapter: ai,
                    module: mi,
                    transposed: m.kind == ModuleKind::Embedding,
                    scale,
                    dora: m.magnitude.is_some(),
                    factors: Mutex::new(None),
                };
                push(&mut plans, target, op, false);
                if m.bias.is_some() {
                    let bname = format!("{path}.bias");
                    let bidx = base.index_of(&bname).ok_or_else(|| {
                        Error::input(
                            &file,
                            format!(
                                "module '{}' has a LoRA bias (lora_bias = true) but the base layer has no bias '{bname}' \
                                 (PEFT refuses this merge too)",
                                m.path
                            ),
                        )
                    })?;
                    if tensors[bidx].shape != [m.b_rows] {
                        return Err(Error::input(
                            &file,
                            format!(
                                "shape mismatch: base '{bname}' is {:?}, the LoRA bias [{}]",
                                tensors[bidx].shape, m.b_rows
                            ),
                        ));
                    }
                    report.adapters[ai].bias_vectors += 1;
                    plans[bidx].ops.push(Op::Bias { adapter: ai, module: mi, scale });
                }
            }
            for f in a.full.iter().filter(|f| !f.base_layer) {
                let target = names.convert(&f.target, naming);
                let t = resolve(&target).ok_or_else(|| {
                    Error::input(
                        &file,
                        format!("full tensor '{}' replaces '{target}', which the base model does not have", f.key),
                    )
                })?;
                check_same_shape(a, &f.key, &tensors[shape_of(t)], &file)?;
                report.adapters[ai].full_tensors += 1;
                // modules_to_save: a new module on its side only.
                push(&mut plans, t, Op::Replace { adapter: ai, key: f.key.clone(), weight: wa.weight as f32 }, true);
            }
            // Every module target_modules selects must have tensors.
            let lora_paths: std::collections::HashSet<String> =
                a.modules.iter().map(|m| names.convert(&m.path, naming)).collect();
            for (path, is_linear, is_output) in &modules {
                let live = naming.convert(path, names);
                if cfg.targets(&live, *is_linear, *is_output)? == Some(true) && !lora_paths.contains(path.as_str()) {
                    return Err(Error::input(
                        &file,
                        format!(
                            "missing LoRA tensors for module '{live}': target_modules in {} selects it but there is \
                             no '{}{live}.lora_A.weight' (or lora_embedding_A)",
                            cfg_file.display(),
                            super::adapter::KEY_PREFIX
                        ),
                    ));
                }
            }
        }

        if let (true, Some(e)) = (tied, embed_index) {
            let shared_lora = tied_events.iter().any(|(_, op, detaches)| !detaches && matches!(op, Op::Delta { .. }));
            let (e_ops, h_ops, untied) = resolve_tied(tied_events);
            if shared_lora {
                report.warnings.push(format!(
                    "the base ties the output layer to the token embeddings ({embed_name}): the LoRA merged into one \
                     changes both, as PEFT's merge_and_unload does"
                ));
            }
            plans[e].ops = e_ops;
            if untied {
                let mut t = tensors[e].clone();
                t.name = head_name.to_string();
                tensors.push(t);
                plans.push(TensorPlan { source: e, ops: h_ops });
            }
            report.untied = untied;
        }
        if report.untied && adapters.iter().any(|a| a.adapter.config.ensure_weight_tying) {
            report.warnings.push(
                "ensure_weight_tying is set, but the merge unties lm_head from the embeddings (each keeps its own \
                 trained values)"
                    .into(),
            );
        }
        for (t, p) in tensors.iter().zip(&plans) {
            if !p.ops.is_empty() {
                report.changed_tensors.push(t.name.clone());
            }
            if !p.ops.is_empty() && !t.dtype.is_readable_float() {
                return Err(Error::input(
                    base.file_of(p.source),
                    format!("base tensor '{}' has dtype {}; only F32, F16 and BF16 can be merged", t.name, t.dtype),
                ));
            }
        }
        for w in &report.warnings {
            progress.warn(w);
        }
        let by_name = tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        Ok(LoraMerged { base, adapters, tensors, by_name, plans, report })
    }

    /// Puts the tensors in the order a conversion of the merged directory
    /// (written in `dtype`, in shards of at most `max_shard_size`, as
    /// [`crate::hf::writer`] writes it) reads them: shard by shard, by name
    /// within a shard. A sharded base otherwise keeps its own order, and the
    /// GGUF's tensor order would differ from converting the written directory.
    pub fn order_as_written(&mut self, dtype: DType, max_shard_size: u64) -> Result<()> {
        let plan = crate::hf::writer::plan_for(self, dtype, max_shard_size)?;
        let mut order = Vec::with_capacity(self.tensors.len());
        for f in &plan.files {
            let mut idx = f.tensors.clone();
            idx.sort_by(|&a, &b| self.tensors[a].name.cmp(&self.tensors[b].name));
            order.extend(idx);
        }
        let mut plans: Vec<Option<TensorPlan>> = std::mem::take(&mut self.plans).into_iter().map(Some).collect();
        let tensors = std::mem::take(&mut self.tensors);
        for &i in &order {
            self.tensors.push(tensors[i].clone());
            self.plans.push(plans[i].take().ok_or_else(|| Error::Other("shard plan repeats a tensor".into()))?);
        }
        if self.tensors.len() != tensors.len() {
            return Err(Error::Other("shard plan misses tensors".into()));
        }
        self.by_name = self.tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        Ok(())
    }

    /// The base model's weights.
    pub fn base(&self) -> &SafetensorsModel {
        &self.base
    }

    /// The adapters, in merge order.
    pub fn adapters(&self) -> &[WeightedAdapter] {
        &self.adapters
    }

    /// Applies ops `ops[..upto]` of `plan` to rows `first_row..` in `out`.
    fn apply(&self, plan: &TensorPlan, upto: usize, first_row: u64, row_len: usize, out: &mut [f32]) -> Result<()> {
        for (k, op) in plan.ops.iter().enumerate().take(upto) {
            match op {
                Op::Replace { adapter, key, weight } => {
                    let w = &self.adapters[*adapter].adapter.weights;
                    let r = f32s(w, key, first_row * row_len as u64, out.len())?;
                    if *weight == 1.0 {
                        out.copy_from_slice(&r);
                    } else {
                        for (o, x) in out.iter_mut().zip(&r) {
                            *o += *weight * (*x - *o);
                        }
                    }
                }
                Op::Bias { adapter, module, scale } => {
                    let a = &self.adapters[*adapter].adapter;
                    let m = &a.modules[*module];
                    let bias = f32s(&a.weights, m.bias.as_deref().unwrap_or_default(), 0, out.len())?;
                    for (o, b) in out.iter_mut().zip(&bias) {
                        *o += *b * *scale;
                    }
                }
                Op::Delta { adapter, module, transposed, scale, dora, factors } => {
                    let a = &self.adapters[*adapter].adapter;
                    let m = &a.modules[*module];
                    if *transposed {
                        let f = if *dora { Some(self.column_factors(plan, k, factors)?) } else { None };
                        delta_transposed(a, m, *scale, first_row, row_len, out, f.as_deref().map(Vec::as_slice))?;
                    } else {
                        delta_rows(a, m, *scale, *dora, first_row, row_len, out)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// DoRA factors m[h] / ‖V[:, h]‖ of a transposed (embedding) delta:
    /// one pass over the tensor with the ops before `k` applied.
    fn column_factors(
        &self,
        plan: &TensorPlan,
        k: usize,
        cache: &Mutex<Option<Arc<Vec<f32>>>>,
    ) -> Result<Arc<Vec<f32>>> {
        let mut guard = cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = guard.as_ref() {
            return Ok(f.clone());
        }
        let Op::Delta { adapter, module, scale, .. } = &plan.ops[k] else {
            return Err(Error::Other("DoRA factors of a non-LoRA op".into()));
        };
        let a = &self.adapters[*adapter].adapter;
        let m = &a.modules[*module];
        let src = &self.base.tensors()[plan.source];
        let (rows, row_len) = (src.n_rows(), src.row_len() as usize);
        let mut sums = vec![0f64; row_len];
        let chunk_rows = ((8usize << 20) / (row_len * 4).max(1)).max(1) as u64;
        let mut r0 = 0u64;
        let mut buf = Vec::new();
        while r0 < rows {
            let n = chunk_rows.min(rows - r0) as usize;
            buf.resize(n * row_len, 0f32);
            HfTensors::read_rows_f32(&self.base, plan.source, r0, &mut buf)?;
            self.apply(plan, k, r0, row_len, &mut buf)?;
            delta_transposed(a, m, *scale, r0, row_len, &mut buf, None)?;
            for row in buf.chunks_exact(row_len) {
                for (s, v) in sums.iter_mut().zip(row) {
                    *s += f64::from(*v) * f64::from(*v);
                }
            }
            r0 += n as u64;
        }
        let mag = f32s(&a.weights, m.magnitude.as_deref().unwrap_or_default(), 0, row_len)?;
        let f: Vec<f32> = sums.iter().zip(&mag).map(|(s, m)| m / (s.sqrt() as f32)).collect();
        let f = Arc::new(f);
        *guard = Some(f.clone());
        Ok(f)
    }
}

/// ΔW = B @ A for rows `first_row..` of a Linear weight (out, in), added to
/// `out` (and DoRA applied per row).
fn delta_rows(
    a: &Adapter,
    m: &super::adapter::LoraModule,
    scale: f32,
    dora: bool,
    first_row: u64,
    row_len: usize,
    out: &mut [f32],
) -> Result<()> {
    let r = m.rank as usize;
    let n = out.len() / row_len;
    let am = f32s(&a.weights, &m.a, 0, r * row_len)?;
    let bm = f32s(&a.weights, &m.b, first_row * r as u64, n * r)?;
    let mag = match (&m.magnitude, dora) {
        (Some(name), true) => Some(f32s(&a.weights, name, first_row, n)?),
        _ => None,
    };
    let mut acc = vec![0f64; row_len];
    for (i, row) in out.chunks_exact_mut(row_len).enumerate() {
        acc.fill(0.0);
        for k in 0..r {
            let b = f64::from(bm[i * r + k]);
            if b == 0.0 {
                continue;
            }
            let ak = &am[k * row_len..(k + 1) * row_len];
            for (s, x) in acc.iter_mut().zip(ak) {
                *s += b * f64::from(*x);
            }
        }
        for (o, d) in row.iter_mut().zip(&acc) {
            *o += (*d as f32) * scale;
        }
        if let Some(mag) = &mag {
            let norm = row.iter().map(|v| f64::from(*v) * f64::from(*v)).sum::<f64>().sqrt() as f32;
            let f = mag[i] / norm;
            for o in row.iter_mut() {
                *o *= f;
            }
        }
    }
    Ok(())
}

/// ΔW = (B @ A)ᵀ for rows `first_row..` of an embedding (vocab, hidden):
/// row t gets Σ_k A[k, t]·B[:, k]. `factors`: DoRA column factors.
fn delta_transposed(
    a: &Adapter,
    m: &super::adapter::LoraModule,
    scale: f32,
    first_row: u64,
    row_len: usize,
    out: &mut [f32],
    factors: Option<&[f32]>,
) -> Result<()> {
    let r = m.rank as usize;
    let n = out.len() / row_len;
    let bm = f32s(&a.weights, &m.b, 0, row_len * r)?; // (row_len, r)
    let mut bt = vec![0f32; r * row_len];
    for h in 0..row_len {
        for k in 0..r {
            bt[k * row_len + h] = bm[h * r + k];
        }
    }
    let mut acols = Vec::with_capacity(r);
    for k in 0..r {
        acols.push(f32s(&a.weights, &m.a, k as u64 * m.a_cols + first_row, n)?);
    }
    let mut acc = vec![0f64; row_len];
    for (i, row) in out.chunks_exact_mut(row_len).enumerate() {
        acc.fill(0.0);
        for k in 0..r {
            let c = f64::from(acols[k][i]);
            if c == 0.0 {
                continue;
            }
            for (s, x) in acc.iter_mut().zip(&bt[k * row_len..(k + 1) * row_len]) {
                *s += c * f64::from(*x);
            }
        }
        for (o, d) in row.iter_mut().zip(&acc) {
            *o += (*d as f32) * scale;
        }
        if let Some(f) = factors {
            for (o, f) in row.iter_mut().zip(f) {
                *o *= *f;
            }
        }
    }
    Ok(())
}

/// True when Linear module `m` (the tied output layer) holds exactly the
/// transposes of the adapter's embedding LoRA (A = Bₑᵀ, B = Aₑᵀ, same
/// scaling): the tied adapter PEFT creates with `ensure_weight_tying`.
fn is_tied_copy(
    a: &Adapter,
    m: &super::adapter::LoraModule,
    names: Naming,
    naming: Naming,
    embed_name: &str,
) -> Result<bool> {
    let Some(e) = a.modules.iter().find(|e| {
        e.kind == ModuleKind::Embedding && format!("{}.weight", names.convert(&e.path, naming)) == embed_name
    }) else {
        return Ok(false);
    };
    if m.kind != ModuleKind::Linear || m.rank != e.rank || m.scaling != e.scaling || m.bias.is_some() {
        return Ok(false);
    }
    let r = m.rank as usize;
    let (hidden, vocab) = (e.b_rows as usize, e.a_cols as usize);
    if (m.a_cols as usize, m.b_rows as usize) != (hidden, vocab) {
        return Ok(false);
    }
    let (ha, hb) = (f32s(&a.weights, &m.a, 0, r * hidden)?, f32s(&a.weights, &m.b, 0, vocab * r)?);
    let (ea, eb) = (f32s(&a.weights, &e.a, 0, r * vocab)?, f32s(&a.weights, &e.b, 0, hidden * r)?);
    // A (r, hidden) = Bₑᵀ where Bₑ is (hidden, r); B (vocab, r) = Aₑᵀ where Aₑ is (r, vocab).
    let a_ok = (0..r).all(|k| (0..hidden).all(|h| ha[k * hidden + h] == eb[h * r + k]));
    let b_ok = (0..vocab).all(|t| (0..r).all(|k| hb[t * r + k] == ea[k * vocab + t]));
    Ok(a_ok && b_ok)
}

fn check_same_shape(a: &Adapter, key: &str, t: &HfTensor, file: &Path) -> Result<()> {
    let e = a.entry(key)?;
    if e.shape != t.shape {
        return Err(Error::input(
            file,
            format!(
                "shape mismatch: '{key}' is {:?} but the base tensor '{}' is {:?}{}",
                e.shape,
                t.name,
                t.shape,
                if t.name.contains("embed_tokens") || t.name.contains("lm_head") {
                    " (an adapter that resized the vocabulary is not supported)"
                } else {
                    ""
                }
            ),
        ));
    }
    Ok(())
}

/// True when an adapter tensor holds exactly the base tensor's values.
fn same_values(base: &SafetensorsModel, index: usize, a: &Adapter, key: &str) -> Result<bool> {
    let e = a.entry(key)?;
    let t = &base.tensors()[index];
    if e.dtype == t.dtype {
        let same = a.weights.raw(e) == base.raw(t);
        a.weights.release(e);
        base.release(t);
        return Ok(same);
    }
    let (rows, row_len) = (t.n_rows(), t.row_len() as usize);
    let chunk = ((4usize << 20) / (row_len * 4).max(1)).max(1) as u64;
    let (mut x, mut y) = (Vec::new(), Vec::new());
    let mut r0 = 0;
    while r0 < rows {
        let n = chunk.min(rows - r0) as usize;
        x.resize(n * row_len, 0f32);
        y.resize(n * row_len, 0f32);
        base.read_rows_f32(t, r0, &mut x)?;
        a.weights.read_rows_f32(e, r0, &mut y)?;
        if x != y {
            return Ok(false);
        }
        r0 += n as u64;
    }
    Ok(true)
}

/// The warning when an adapter names a different base model than the one given.
fn base_name_check(
    base_dir: &Path,
    config: &serde_json::Map<String, serde_json::Value>,
    adapters: &[WeightedAdapter],
) -> Vec<String> {
    use super::config::normalize_model_name as norm;
    let mut known = Vec::new();
    if let Some(n) = base_dir.canonicalize().ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    {
        known.push(norm(&n));
    }
    if let Some(n) = config.get("_name_or_path").and_then(|v| v.as_str()) {
        known.push(norm(n));
    }
    let mut out = Vec::new();
    for a in adapters {
        if let Some(want) = &a.adapter.config.base_model_name_or_path {
            if !known.contains(&norm(want)) {
                out.push(format!(
                    "{}: the adapter was trained on '{want}', which does not look like the base model given ({}); \
                     shapes match, merging anyway",
                    a.adapter.path().display(),
                    base_dir.display()
                ));
            }
        }
    }
    out
}

impl HfTensors for LoraMerged {
    fn tensors(&self) -> &[HfTensor] {
        &self.tensors
    }
    fn index_of(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }
    fn read_rows_f32(&self, index: usize, first_row: u64, out: &mut [f32]) -> Result<()> {
        let plan = self.plans.get(index).ok_or_else(|| Error::Other(format!("no tensor {index}")))?;
        let t = &self.tensors[index];
        let row_len = t.row_len() as usize;
        if row_len == 0 || !out.len().is_multiple_of(row_len) {
            return Err(Error::Other(format!("tensor '{}': buffer is not a whole number of rows", t.name)));
        }
        if first_row.checked_add((out.len() / row_len) as u64).is_none_or(|end| end > t.n_rows()) {
            return Err(Error::Other(format!("tensor '{}': rows past the end", t.name)));
        }
        HfTensors::read_rows_f32(&self.base, plan.source, first_row, out)?;
        self.apply(plan, plan.ops.len(), first_row, row_len, out)
    }
    fn raw(&self, index: usize) -> Option<&[u8]> {
        let plan = self.plans.get(index)?;
        if plan.ops.is_empty() {
            HfTensors::raw(&self.base, plan.source)
        } else {
            None
        }
    }
    fn release_rows(&self, index: usize, first_row: u64, n_rows: u64) {
        if let Some(p) = self.plans.get(index) {
            self.base.release_rows(p.source, first_row, n_rows);
        }
    }
    fn release(&self, index: usize) {
        if let Some(p) = self.plans.get(index) {
            HfTensors::release(&self.base, p.source);
        }
    }
    fn file_of(&self, index: usize) -> &Path {
        self.plans.get(index).map_or(Path::new(""), |p| self.base.file_of(p.source))
    }
    fn inputs(&self) -> Vec<&Path> {
        let mut v = self.base.inputs();
        for a in &self.adapters {
            v.extend(a.adapter.weights.files());
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multimodal_names_map_both_ways() {
        let old = Naming::of_base(["language_model.model.norm.weight", "vision_tower.x.weight"].into_iter());
        assert_eq!(old, Naming::Old);
        assert_eq!(Naming::of_base(["model.language_model.norm.weight"].into_iter()), Naming::New);
        assert_eq!(Naming::of_base(["model.norm.weight", "lm_head.weight"].into_iter()), Naming::Plain);
        let n = Naming::New;
        assert_eq!(
            n.convert("model.language_model.layers.0.self_attn.q_proj", old),
            "language_model.model.layers.0.self_attn.q_proj"
        );
        assert_eq!(n.convert("lm_head", old), "language_model.lm_head");
        assert_eq!(n.convert("lm_head.weight", old), "language_model.lm_head.weight");
        assert_eq!(n.convert("model.vision_tower.a.b", old), "vision_tower.a.b");
        assert_eq!(old.convert("language_model.model.embed_tokens", n), "model.language_model.embed_tokens");
        assert_eq!(old.convert("language_model.lm_head.weight", n), "lm_head.weight");
        // Only whole dotted prefixes.
        assert_eq!(n.convert("lm_heads.weight", old), "lm_heads.weight");
        assert_eq!(Naming::Plain.convert("model.layers.0.mlp.up_proj", n), "model.layers.0.mlp.up_proj");
        assert_eq!(old.embed_and_head(), ("language_model.model.embed_tokens.weight", "language_model.lm_head.weight"));
    }

    fn delta(module: usize) -> Op {
        Op::Delta { adapter: 0, module, transposed: false, scale: 1.0, dora: false, factors: Mutex::new(None) }
    }

    fn replace(key: &str) -> Op {
        Op::Replace { adapter: 0, key: key.into(), weight: 1.0 }
    }

    fn ids(ops: &[Op]) -> Vec<String> {
        ops.iter()
            .map(|o| match o {
                Op::Delta { module, .. } => format!("d{module}"),
                Op::Replace { key, .. } => key.clone(),
                Op::Bias { .. } => "b".into(),
            })
            .collect()
    }

    #[test]
    fn tied_pairs_resolve_as_peft() {
        // LoRA on either side: one shared weight, still tied.
        let (e, h, untied) = resolve_tied(vec![(Side::Embed, delta(0), false), (Side::Head, delta(1), false)]);
        assert!(!untied);
        assert_eq!((ids(&e), ids(&h)), (vec!["d0".to_string(), "d1".into()], vec!["d0".to_string(), "d1".into()]));
        // A base-layer copy is shared too; a modules_to_save replacement detaches its side.
        let (e, h, untied) = resolve_tied(vec![
            (Side::Embed, replace("bl"), false),
            (Side::Embed, replace("mts"), true),
            (Side::Head, delta(2), false),
            (Side::Embed, delta(3), false),
        ]);
        assert!(untied);
        assert_eq!(ids(&e), ["bl", "mts", "d3"]);
        assert_eq!(ids(&h), ["bl", "d2"]);
    }

    /// ensure_weight_tying on a tied base: lm_head's LoRA is the transposed
    /// embedding LoRA and is merged once; a different lm_head LoRA is merged
    /// into the shared weight too.
    #[test]
    fn ensure_weight_tying_merges_the_tied_adapter_once() {
        let (vocab, hidden, r) = (5usize, 3usize, 2usize);
        let w: Vec<f32> = (0..vocab * hidden).map(|i| i as f32 * 0.25 - 1.0).collect();
        let ea: Vec<f32> = (0..r * vocab).map(|i| (i as f32 * 0.5).sin()).collect(); // (r, vocab)
        let eb: Vec<f32> = (0..hidden * r).map(|i| (i as f32 * 0.7).cos()).collect(); // (hidden, r)
        let ha: Vec<f32> = (0..r * hidden).map(|i| eb[(i % hidden) * r + i / hidden]).collect(); // Bₑᵀ
        let hb: Vec<f32> = (0..vocab * r).map(|i| ea[(i % r) * vocab + i / r]).collect(); // Aₑᵀ
        let cfg = r#"{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["embed_tokens", "lm_head"],
                      "ensure_weight_tying": true}"#;
        let merged = |hb: Vec<f32>| {
            let base = SafetensorsModel::from_bytes(
                Path::new("mem/model.safetensors"),
                crate::hf::safetensors::f32_file_bytes(&[
                    ("model.embed_tokens.weight", vec![vocab, hidden], w.clone()),
                    ("model.norm.weight", vec![hidden], vec![1.0; 3]),
                ]),
            )
            .unwrap();
            let p = "base_model.model.";
            let ad = SafetensorsModel::from_bytes(
                Path::new("ad/adapter_model.safetensors"),
                crate::hf::safetensors::f32_file_bytes(&[
                    (&format!("{p}model.embed_tokens.lora_embedding_A"), vec![r, vocab], ea.clone()),
                    (&format!("{p}model.embed_tokens.lora_embedding_B"), vec![hidden, r], eb.clone()),
                    (&format!("{p}lm_head.lora_A.weight"), vec![r, hidden], ha.clone()),
                    (&format!("{p}lm_head.lora_B.weight"), vec![vocab, r], hb),
                ]),
            )
            .unwrap();
            let adapter = Adapter::from_parts("ad".into(), cfg, ad, &crate::progress::NoProgress).unwrap();
            let m = LoraMerged::new(
                base,
                Path::new("mem"),
                &serde_json::Map::new(),
                vec![WeightedAdapter { adapter, weight: 1.0 }],
                &crate::progress::NoProgress,
            )
            .unwrap();
            assert!(!m.report.untied);
            assert!(m.index_of("lm_head.weight").is_none());
            let mut out = vec![0f32; vocab * hidden];
            HfTensors::read_rows_f32(&m, m.index_of("model.embed_tokens.weight").unwrap(), 0, &mut out).unwrap();
            (out, m.report.warnings.iter().any(|w| w.contains("merged once")))
        };
        // ΔW (vocab, hidden) = 2 · (Bₑ @ Aₑ)ᵀ.
        let delta: Vec<f32> = (0..vocab * hidden)
            .map(|i| {
                let (t, h) = (i / hidden, i % hidden);
                2.0 * (0..r).map(|k| eb[h * r + k] as f64 * ea[k * vocab + t] as f64).sum::<f64>() as f32
            })
            .collect();
        let (once, warned) = merged(hb.clone());
        assert!(warned);
        for i in 0..vocab * hidden {
            assert!((once[i] - (w[i] + delta[i])).abs() < 1e-5, "{i}: {} vs {}", once[i], w[i] + delta[i]);
        }
        let mut other = hb;
        other[0] += 1.0;
        let (twice, warned) = merged(other);
        assert!(!warned);
        assert!((twice[5] - (w[5] + 2.0 * delta[5])).abs() < 1e-5);
    }
}
