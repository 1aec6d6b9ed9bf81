//! The `general.*` authorship keys as gguf-py's `Metadata` derives them:
//! name, basename, finetune, version and size label parsed from the model id
//! (`_name_or_path` of config.json, then the directory name), sampling
//! defaults from generation_config.json, and the size label from the
//! parameter count when the name has none.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use regex::Regex;
use serde_json::Value;

use crate::gguf::{Metadata, Value as GValue};

/// The authorship metadata (the subset ggufkit fills in).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GeneralInfo {
    pub sampling_sequence: Option<String>,
    pub sampling_top_k: Option<i32>,
    pub sampling_top_p: Option<f32>,
    pub sampling_min_p: Option<f32>,
    pub sampling_xtc_probability: Option<f32>,
    pub sampling_xtc_threshold: Option<f32>,
    pub sampling_temp: Option<f32>,
    pub sampling_penalty_last_n: Option<i32>,
    pub sampling_penalty_repeat: Option<f32>,
    pub sampling_mirostat: Option<i32>,
    pub sampling_mirostat_tau: Option<f32>,
    pub sampling_mirostat_eta: Option<f32>,
    pub name: Option<String>,
    pub author: Option<String>,
    pub version: Option<String>,
    pub organization: Option<String>,
    pub finetune: Option<String>,
    pub basename: Option<String>,
    pub description: Option<String>,
    pub size_label: Option<String>,
    pub license: Option<String>,
    pub license_name: Option<String>,
    pub license_link: Option<String>,
    pub source_url: Option<String>,
    pub source_doi: Option<String>,
    pub source_uuid: Option<String>,
    pub source_repo_url: Option<String>,
    /// `general.base_model.N.*`: (field, value) pairs per base model.
    pub base_models: Option<Vec<Vec<(String, String)>>>,
    /// `general.dataset.N.*`.
    pub datasets: Option<Vec<Vec<(String, String)>>>,
    pub tags: Option<Vec<String>>,
    pub languages: Option<Vec<String>>,
    /// Card values that could not be represented (gguf-py would fail on them).
    pub warnings: Vec<String>,
}

/// Fields of a base model / dataset entry, in the order gguf-py writes them.
const ENTRY_FIELDS: [&str; 9] =
    ["name", "author", "version", "organization", "description", "url", "doi", "uuid", "repo_url"];

/// Parts of a model id: (full name, organization, basename, finetune, version, size label).
pub type IdComponents =
    (Option<String>, Option<String>, Option<String>, Option<String>, Option<String>, Option<String>);

fn re(cell: &'static OnceLock<Regex>, pat: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pat).expect("valid regex"))
}

fn is_version(s: &str) -> bool {
    static R: OnceLock<Regex> = OnceLock::new();
    re(&R, r"(?i)^(?:(?:v|iter)?\d+(?:[.]\d+)*)$").is_match(s)
}
fn is_quant_type(s: &str) -> bool {
    static R: OnceLock<Regex> = OnceLock::new();
    re(&R, r"(?i)^(?:i?q\d(?:_\w)*|b?fp?(?:16|32))$").is_match(s)
}
fn is_size(s: &str) -> bool {
    static R: OnceLock<Regex> = OnceLock::new();
    re(&R, r"(?i)^(?:(?:[A]|\d+[x])?\d+(?:[._]\d+)?[KMBT][\d]?|small|mini|medium|large|x?xl)$").is_match(s)
}
fn is_finetune_word(s: &str) -> bool {
    static R: OnceLock<Regex> = OnceLock::new();
    re(&R, r"(?i)^(?:chat|instruct|vision|lora)$").is_match(s)
}

/// Python's `float()` for the strings the size regex lets through.
fn py_float(s: &str) -> Option<f64> {
    static R: OnceLock<Regex> = OnceLock::new();
    if re(&R, r"^\d+(?:\.\d+)?$").is_match(s) {
        s.parse().ok()
    } else {
        None
    }
}

fn is_decimal(c: char) -> bool {
    c.is_ascii_digit()
}

/// gguf-py `Metadata.get_model_id_components`.
pub fn model_id_components(model_id: Option<&str>, total_params: i64) -> IdComponents {
    let Some(model_id) = model_id else { return (None, None, None, None, None, None) };
    if model_id.contains(' ') {
        return (Some(model_id.to_string()), None, None, None, None, None);
    }
    let (mut org, full) = match model_id.split_once('/') {
        Some((o, n)) => (Some(o.to_string()), n.to_string()),
        None => (None, model_id.to_string()),
    };
    if org.as_deref().is_some_and(|o| o.starts_with('.')) {
        org = None;
    }
    let mut parts: Vec<String> = full.split('-').filter(|p| !p.is_empty()).map(str::to_string).collect();
    let mut types: Vec<BTreeSet<&'static str>> = vec![BTreeSet::new(); parts.len()];

    for i in 0..parts.len() {
        let part = parts[i].clone();
        if is_version(&part) {
            types[i].insert("version");
        } else if is_quant_type(&part) {
            types[i].insert("type");
            parts[i] = part.to_uppercase();
        } else if i > 0 && is_size(&part) {
            let mut p: Vec<char> = part.replace('_', ".").chars().collect();
            if p.last().is_some_and(|&c| is_decimal(c)) && p.len() >= 2 {
                // bloom-7b1 notation
                let n = p.len();
                let (a, b) = (p[n - 2], p[n - 1]);
                p.truncate(n - 2);
                p.extend(['.', b, a]);
            }
            let n = p.len();
            if n > 1 && is_decimal(p[n - 2]) && "kmbt".contains(p[n - 1]) {
                p[n - 1] = p[n - 1].to_ascii_uppercase();
            }
            if total_params != 0 && !p.is_empty() {
                let last = p[p.len() - 1];
                let head: String = p[..p.len() - 1].iter().collect();
                if let Some(v) = py_float(&head) {
                    let exp = " KMBT".find(last).map(|i| i as i32).unwrap_or(-1);
                    let label_params = v * 1000f64.powi(exp);
                    let t = total_params as f64;
                    let small_for_lora = total_params < 0 && label_params < (total_params.unsigned_abs() / 8) as f64;
                    let far =
                        total_params > 0 && (label_params - t).abs() > (7i64.saturating_mul(total_params) / 8) as f64;
                    if small_for_lora || far {
                        types[i].insert("finetune");
                        let l = p.len() - 1;
                        p[l] = p[l].to_ascii_lowercase();
                    }
                }
            }
            if types[i].is_empty() {
                types[i].insert("size_label");
            }
            parts[i] = p.into_iter().collect();
        } else if i > 0 && is_finetune_word(&part) {
            if total_params < 0 && part.eq_ignore_ascii_case("lora") {
                types[i].insert("type");
            } else {
                types[i].insert("finetune");
            }
        }
    }

    // Word-based size labels go when a number-based one is present.
    let has_numeric_size = parts.iter().zip(&types).any(|(n, t)| t.contains("size_label") && n.chars().any(is_decimal));
    if has_numeric_size {
        for (n, t) in parts.iter().zip(types.iter_mut()) {
            if t.contains("size_label") && n.chars().all(char::is_alphabetic) {
                t.remove("size_label");
            }
        }
    }

    let mut at_start = true;
    for (part, t) in parts.iter().zip(types.iter_mut()) {
        let alpha_first = part.chars().next().is_some_and(char::is_alphabetic);
        if at_start && ((t.is_empty() && alpha_first) || t.contains("version")) {
            t.insert("basename");
        } else {
            at_start = false;
            if t.is_empty() {
                t.insert("finetune");
            }
        }
    }
    for t in types.iter_mut().rev() {
        if t.contains("basename") && t.len() > 1 {
            t.remove("basename");
        } else {
            break;
        }
    }

    let join = |f: &dyn Fn(&BTreeSet<&str>) -> bool| -> Option<String> {
        let v: Vec<&str> = parts.iter().zip(&types).filter(|(_, t)| f(t)).map(|(p, _)| p.as_str()).collect();
        let s = v.join("-");
        (!s.is_empty()).then_some(s)
    };
    let mut basename = join(&|t| t.contains("basename"));
    let size_label = {
        let mut seen: Vec<&str> = Vec::new();
        for (p, t) in parts.iter().zip(&types) {
            if t.contains("size_label") && !seen.contains(&p.as_str()) {
                seen.push(p);
            }
        }
        let s = seen.join("-");
        (!s.is_empty()).then_some(s)
    };
    let finetune = join(&|t| t.contains("finetune"));
    let version = join(&|t| t.contains("version") && !t.contains("basename"));
    if size_label.is_none() && finetune.is_none() && version.is_none() {
        basename = None;
    }
    (Some(full), org, basename, finetune, version, size_label)
}

/// Python's `str.islower()`.
fn py_islower(s: &str) -> bool {
    let mut cased = false;
    for c in s.chars() {
        if c.is_uppercase() {
            return false;
        }
        if c.is_lowercase() {
            cased = true;
        }
    }
    cased
}

/// Python's `str.title()`.
fn py_title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_cased = false;
    for c in s.chars() {
        let cased = c.is_lowercase() || c.is_uppercase();
        if cased {
            if prev_cased {
                out.extend(c.to_lowercase());
            } else {
                out.extend(c.to_uppercase());
            }
        } else {
            out.push(c);
        }
        prev_cased = cased;
    }
    out
}

/// gguf-py `Metadata.id_to_title`.
pub fn id_to_title(s: &str) -> String {
    static R: OnceLock<Regex> = OnceLock::new();
    let keep = re(&R, r"^(?:v\d+(?:\.\d+)*|\d.*)");
    let s = s.trim().replace('-', " ");
    let words: Vec<String> = s
        .split_whitespace()
        .map(|w| if py_islower(w) && !keep.is_match(w) { py_title(w) } else { w.to_string() })
        .collect();
    words.join(" ")
}

/// Parameter counts as gguf-py's `GGUFWriter.get_total_parameter_count`
/// reports them: `total` (negative for a LoRA adapter), and for
/// mixture-of-experts models the parameters outside the `*_exps` tensors,
/// those of one expert, and the number of experts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParamCounts {
    pub total: i64,
    pub shared: u64,
    pub expert: u64,
    pub expert_count: u64,
}

impl ParamCounts {
    /// Counts over (GGUF name, ggml dims) pairs: a tensor whose name
    /// contains `_exps.` with three or more dimensions counts one expert's
    /// share (experts are the outermost dimension, the second for a bias).
    pub fn of<'a>(tensors: impl IntoIterator<Item = (&'a str, &'a [u64])>) -> ParamCounts {
        let (mut total, mut shared, mut expert, mut sum, mut n) = (0u64, 0u64, 0u64, 0u64, 0u64);
        for (name, dims) in tensors {
            let size: u64 = dims.iter().product();
            total += size;
            if name.contains("_exps.") && dims.len() >= 3 {
                let count = if name.contains(".bias") { dims[1] } else { dims[2] };
                let count = count.max(1);
                expert += size / count;
                sum += count;
                n += 1;
            } else {
                shared += size;
            }
        }
        ParamCounts { total: total as i64, shared, expert, expert_count: sum.checked_div(n).unwrap_or(0) }
    }

    /// A dense model (or adapter) of `total` parameters.
    pub fn dense(total: i64) -> ParamCounts {
        ParamCounts { total, shared: total.unsigned_abs(), ..Default::default() }
    }

    /// gguf-py `size_label`.
    pub fn size_label(&self) -> String {
        if self.expert_count > 0 {
            format!("{}x{}", self.expert_count, rounded_notation(self.shared + self.expert, 2))
        } else {
            rounded_notation(self.total.unsigned_abs(), 2)
        }
    }
}

/// gguf-py `model_weight_count_rounded_notation`.
pub fn rounded_notation(n: u64, min_digits: usize) -> String {
    let nf = n as f64;
    let (scaled, suffix) = if nf > 1e12 {
        (nf * 1e-12, "T")
    } else if nf > 1e9 {
        (nf * 1e-9, "B")
    } else if nf > 1e6 {
        (nf * 1e-6, "M")
    } else {
        (nf * 1e-3, "K")
    };
    // Python's round() is round-half-even; the value is only used for its digit count.
    let rounded = scaled.round_ties_even() as u64;
    let digits = rounded.to_string().trim_start_matches('0').len();
    let fix = min_digits.saturating_sub(digits);
    format!("{scaled:.fix$}{suffix}")
}

impl GeneralInfo {
    /// Derives the metadata as gguf-py's `Metadata.load` does from a model
    /// directory, without a model card or override file.
    pub fn derive(
        dir_name: &str,
        config: &serde_json::Map<String, Value>,
        gen_config: Option<&Value>,
        model_card: Option<&serde_json::Map<String, Value>>,
        params: ParamCounts,
    ) -> Self {
        let total_params = params.total;
        let mut m = GeneralInfo::default();
        if let Some(card) = model_card {
            m.apply_model_card(card, total_params);
        }
        let apply = |m: &mut GeneralInfo, id: &str| {
            let (full, org, basename, finetune, version, size) = model_id_components(Some(id), total_params);
            if m.name.is_none() {
                m.name = full.map(|f| id_to_title(&f));
            }
            if m.organization.is_none() {
                m.organization = org.map(|o| id_to_title(&o));
            }
            m.basename = m.basename.take().or(basename);
            m.finetune = m.finetune.take().or(finetune);
            m.version = m.version.take().or(version);
            m.size_label = m.size_label.take().or(size);
        };
        if let Some(id) = config.get("_name_or_path").and_then(Value::as_str) {
            if id.matches('/').count() <= 1 {
                apply(&mut m, id);
            }
        }
        apply(&mut m, dir_name);
        if let Some(g) = gen_config.and_then(Value::as_object) {
            let f = |k: &str| g.get(k).and_then(Value::as_f64).map(|v| v as f32);
            let i = |k: &str| g.get(k).and_then(Value::as_i64).and_then(|v| i32::try_from(v).ok());
            m.sampling_sequence = g.get("sequence").and_then(Value::as_str).map(str::to_string);
            m.sampling_top_k = i("top_k");
            m.sampling_top_p = f("top_p");
            m.sampling_min_p = f("min_p");
            m.sampling_xtc_probability = f("xtc_probability");
            m.sampling_xtc_threshold = f("xtc_threshold");
            m.sampling_temp = f("temperature");
            m.sampling_penalty_last_n = i("penalty_last_n");
            m.sampling_penalty_repeat = match g.get("penalty_repeat") {
                Some(v) => v.as_f64().map(|v| v as f32),
                None => f("repetition_penalty"),
            };
            m.sampling_mirostat = i("mirostat");
            m.sampling_mirostat_tau = f("mirostat_tau");
            m.sampling_mirostat_eta = f("mirostat_eta");
        }
        if m.name.is_none() {
            m.name = Some(dir_name.to_string());
        }
        if m.size_label.is_none() && total_params > 0 {
            m.size_label = Some(params.size_label());
        }
        m
    }

    /// The model-card part of gguf-py's `apply_metadata_heuristic`.
    fn apply_model_card(&mut self, card: &serde_json::Map<String, Value>, total_params: i64) {
        let mut warnings = Vec::new();
        let mut take = |slot: &mut Option<String>, key: &str| {
            if slot.is_some() {
                return;
            }
            match card.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::String(v)) => *slot = Some(v.clone()),
                Some(v) => warnings.push(format!("model card: {key} = {v} is not a string; ignored")),
            }
        };
        for (prefix, author_key) in [("", "author"), ("model_", "model_author")] {
            take(&mut self.name, &format!("{prefix}name"));
            take(&mut self.author, author_key);
            take(&mut self.version, &format!("{prefix}version"));
            take(&mut self.organization, &format!("{prefix}organization"));
            take(&mut self.description, &format!("{prefix}description"));
            take(&mut self.finetune, &format!("{prefix}finetune"));
            take(&mut self.basename, &format!("{prefix}basename"));
            take(&mut self.size_label, &format!("{prefix}size_label"));
            take(&mut self.source_url, &format!("{prefix}url"));
            take(&mut self.source_doi, &format!("{prefix}doi"));
            take(&mut self.source_uuid, &format!("{prefix}uuid"));
            take(&mut self.source_repo_url, &format!("{prefix}repo_url"));
        }
        take(&mut self.name, "model_name");
        take(&mut self.author, "model_creator");
        take(&mut self.basename, "model_type");

        let entries = |v: Option<&Value>, total: i64| -> Option<Vec<Vec<(String, String)>>> {
            let v = v?;
            let ids: Vec<&Value> = match v {
                Value::Array(a) => a.iter().collect(),
                Value::Null => Vec::new(),
                other => vec![other],
            };
            let mut out = Vec::new();
            for id in ids {
                let mut e: Vec<(String, String)> = Vec::new();
                match id {
                    Value::String(id) => {
                        let set_from = |e: &mut Vec<(String, String)>, comp: &str, with_repo: bool| {
                            let (full, org, _, _, version, _) = model_id_components(Some(comp), total);
                            if let Some(f) = &full {
                                e.push(("name".into(), id_to_title(f)));
                            }
                            if let Some(o) = &org {
                                e.push(("organization".into(), id_to_title(o)));
                            }
                            if let Some(v) = version {
                                e.push(("version".into(), v));
                            }
                            if with_repo {
                                if let (Some(o), Some(f)) = (org, full) {
                                    e.push(("repo_url".into(), format!("https://huggingface.co/{o}/{f}")));
                                }
                            }
                        };
                        if id.starts_with("http://") || id.starts_with("https://") || id.starts_with("ssh://") {
                            e.push(("repo_url".into(), id.clone()));
                            if id.contains("huggingface.co") {
                                let rest = id
                                    .strip_prefix("https://huggingface.co/")
                                    .or_else(|| id.strip_prefix("http://huggingface.co/"));
                                if let Some(rest) = rest
                                    .filter(|r| r.matches('/').count() == 1 && !r.ends_with('/') && !r.starts_with('/'))
                                {
                                    set_from(&mut e, rest, false);
                                }
                            }
                        } else {
                            set_from(&mut e, id, true);
                        }
                    }
                    Value::Object(o) => {
                        for f in ENTRY_FIELDS {
                            if let Some(Value::String(v)) = o.get(f) {
                                e.push((f.to_string(), v.clone()));
                            }
                        }
                    }
                    _ => {}
                }
                e.sort_by_key(|(k, _)| ENTRY_FIELDS.iter().position(|f| f == k));
                out.push(e);
            }
            Some(out)
        };
        let base =
            card.get("base_model").or_else(|| card.get("base_models")).or_else(|| card.get("base_model_sources"));
        if card.contains_key("base_model")
            || card.contains_key("base_models")
            || card.contains_key("base_model_sources")
        {
            self.base_models = Some(entries(base, total_params).unwrap_or_default());
        }
        let ds = card.get("datasets").or_else(|| card.get("dataset")).or_else(|| card.get("dataset_sources"));
        if card.contains_key("datasets") || card.contains_key("dataset") || card.contains_key("dataset_sources") {
            self.datasets = Some(entries(ds, total_params).unwrap_or_default());
        }
        match card.get("license") {
            Some(Value::String(l)) => self.license = Some(l.clone()),
            Some(Value::Array(a)) => {
                self.license = Some(
                    a.iter()
                        .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
                        .collect::<Vec<_>>()
                        .join(","),
                )
            }
            _ => {}
        }
        take(&mut self.license_name, "license_name");
        take(&mut self.license_link, "license_link");
        let mut list = |slot: &mut Option<Vec<String>>, key: &str| match card.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => slot.get_or_insert_with(Vec::new).push(s.clone()),
            Some(Value::Array(a)) => {
                let v = slot.get_or_insert_with(Vec::new);
                for x in a {
                    match x {
                        Value::String(s) => v.push(s.clone()),
                        other => warnings.push(format!("model card: {key} entry {other} is not a string; ignored")),
                    }
                }
            }
            Some(_) => {}
        };
        list(&mut self.tags, "tags");
        list(&mut self.tags, "pipeline_tag");
        list(&mut self.languages, "languages");
        list(&mut self.languages, "language");
        self.warnings.extend(warnings);
    }

    /// Appends the keys in `Metadata.set_gguf_meta_model` order.
    pub fn write_metadata(&self, md: &mut Metadata) {
        // gguf-py's add_string skips empty strings.
        let s = |md: &mut Metadata, k: &str, v: &Option<String>| {
            if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
                md.set(k, GValue::string(v.clone()));
            }
        };
        let f = |md: &mut Metadata, k: &str, v: Option<f32>| {
            if let Some(v) = v {
                md.set(k, GValue::F32(v));
            }
        };
        let i = |md: &mut Metadata, k: &str, v: Option<i32>| {
            if let Some(v) = v {
                md.set(k, GValue::I32(v));
            }
        };
        s(md, "general.sampling.sequence", &self.sampling_sequence);
        i(md, "general.sampling.top_k", self.sampling_top_k);
        f(md, "general.sampling.top_p", self.sampling_top_p);
        f(md, "general.sampling.min_p", self.sampling_min_p);
        f(md, "general.sampling.xtc_probability", self.sampling_xtc_probability);
        f(md, "general.sampling.xtc_threshold", self.sampling_xtc_threshold);
        f(md, "general.sampling.temp", self.sampling_temp);
        i(md, "general.sampling.penalty_last_n", self.sampling_penalty_last_n);
        f(md, "general.sampling.penalty_repeat", self.sampling_penalty_repeat);
        i(md, "general.sampling.mirostat", self.sampling_mirostat);
        f(md, "general.sampling.mirostat_tau", self.sampling_mirostat_tau);
        f(md, "general.sampling.mirostat_eta", self.sampling_mirostat_eta);
        md.set("general.name", GValue::string(self.name.clone().unwrap_or_default()));
        s(md, "general.author", &self.author);
        s(md, "general.version", &self.version);
        s(md, "general.organization", &self.organization);
        s(md, "general.finetune", &self.finetune);
        s(md, "general.basename", &self.basename);
        s(md, "general.description", &self.description);
        s(md, "general.size_label", &self.size_label);
        s(md, "general.license", &self.license);
        s(md, "general.license.name", &self.license_name);
        s(md, "general.license.link", &self.license_link);
        s(md, "general.source.url", &self.source_url);
        s(md, "general.source.doi", &self.source_doi);
        s(md, "general.source.uuid", &self.source_uuid);
        s(md, "general.source.repo_url", &self.source_repo_url);
        for (kind, list) in [("base_model", &self.base_models), ("dataset", &self.datasets)] {
            if let Some(list) = list {
                md.set(format!("general.{kind}.count"), GValue::U32(list.len() as u32));
                for (i, e) in list.iter().enumerate() {
                    for (k, v) in e.iter().filter(|(_, v)| !v.is_empty()) {
                        md.set(format!("general.{kind}.{i}.{k}"), GValue::string(v.clone()));
                    }
                }
            }
        }
        for (key, list) in [("general.tags", &self.tags), ("general.languages", &self.languages)] {
            if let Some(list) = list.as_ref().filter(|l| !l.is_empty()) {
                md.set(key, GValue::string_array(list.iter().cloned()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, total: i64) -> IdComponents {
        model_id_components(Some(id), total)
    }

    #[test]
    fn qwen_coder_names() {
        let (full, org, base, ft, ver, size) = c("Qwen/Qwen2.5-Coder-7B-Instruct", 7_615_616_512);
        assert_eq!(full.as_deref(), Some("Qwen2.5-Coder-7B-Instruct"));
        assert_eq!(org.as_deref(), Some("Qwen"));
        assert_eq!(base.as_deref(), Some("Qwen2.5-Coder"));
        assert_eq!(ft.as_deref(), Some("Instruct"));
        assert_eq!(ver, None);
        assert_eq!(size.as_deref(), Some("7B"));
        assert_eq!(id_to_title("Qwen2.5-Coder-7B-Instruct"), "Qwen2.5 Coder 7B Instruct");
        assert_eq!(id_to_title("my-llama-v2.1-7b"), "My Llama v2.1 7b");
        // A size far from the real parameter count is a finetune (context length).
        let (_, _, _, ft, _, size) = c("Mistral-7B-32K", 7_000_000_000);
        assert_eq!((ft.as_deref(), size.as_deref()), (Some("32k"), Some("7B")));
        assert_eq!(rounded_notation(494_032_768, 2), "494M");
        assert_eq!(rounded_notation(7_615_616_512, 2), "7.6B");
        assert_eq!(rounded_notation(1_234, 2), "1.2K");
    }
}
