//! Writing the weights of a Hugging Face model directory as transformers'
//! `save_pretrained` does.
//!
//! * Tensor order: the model's `state_dict()` order (module registration
//!   order of the transformers model class, see [`state_dict_order`]); tied
//!   weights that the source does not hold are not written.
//! * Sharding: huggingface_hub's `split_torch_state_dict_into_shards` rule —
//!   tensors are taken in state-dict order and a new shard starts when the
//!   next tensor would push the current one past the maximum; a tensor larger
//!   than the maximum gets a shard of its own (inserted where it occurs).
//!   One shard is written as `model.safetensors`, several as
//!   `model-0000N-of-0000M.safetensors` plus `model.safetensors.index.json`
//!   (`{"metadata": {"total_size": N}, "weight_map": {...}}`, keys sorted,
//!   two-space indent, as transformers writes it).
//! * Each file: the safetensors header built by the `safetensors` crate
//!   itself (the same code Python's `safetensors.torch.save_file` runs),
//!   `__metadata__` = `{"format": "pt"}`, data ordered by name.
//!
//! Data is streamed through the one write engine ([`crate::pipeline::run`],
//! the source [`super::source::HfSource`], a
//! [`crate::pipeline::SafetensorsSink`]): rows are read in chunks (in
//! parallel), encoded to the output dtype and written at their place, so
//! memory stays bounded by a few chunks whatever the model size.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::source::ggml_type;
use super::tensors::{HfTensor, HfTensors};
use super::DType;
use crate::error::{Error, IoContext, Result};
use crate::progress::Progress;

/// transformers' default `max_shard_size` ("5GB").
pub const DEFAULT_MAX_SHARD_SIZE: u64 = 5_000_000_000;

/// Parses a shard size as transformers' `convert_file_size_to_int` does:
/// `5GB` = 5·10⁹ bytes, `5GiB` = 5·2³⁰, `MB`/`MiB`, `KB`/`KiB`, a lower-case
/// final `b` meaning bits (`5Gb` = 5·10⁹/8), or a plain number of bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim();
    let upper = t.to_ascii_uppercase();
    let num = |n: &str| n.trim().parse::<u64>().ok();
    for (suffix, mult) in [("GIB", 1u64 << 30), ("MIB", 1 << 20), ("KIB", 1 << 10)] {
        if upper.ends_with(suffix) {
            return num(&t[..t.len() - 3])?.checked_mul(mult);
        }
    }
    for (suffix, mult) in [("GB", 1_000_000_000u64), ("MB", 1_000_000), ("KB", 1_000)] {
        if upper.ends_with(suffix) {
            let v = num(&t[..t.len() - 2])?.checked_mul(mult)?;
            return Some(if t.ends_with('b') { v / 8 } else { v });
        }
    }
    num(t)
}

/// Submodules of a llama/qwen2/qwen3/mistral/gemma/phi3 decoder layer in
/// registration order (`self_attn` (q, k, v, o, Phi-3's qkv after its o,
/// q_norm, k_norm), `mlp` (gate, up, Phi-3's gate_up, down),
/// `input_layernorm`, `post_attention_layernorm`, Gemma's
/// `pre_feedforward_layernorm`, `post_feedforward_layernorm`); a Linear
/// registers `weight` before `bias`.
const LAYER_ORDER: &[&str] = &[
    "self_attn.q_proj.weight",
    "self_attn.q_proj.bias",
    "self_attn.k_proj.weight",
    "self_attn.k_proj.bias",
    "self_attn.v_proj.weight",
    "self_attn.v_proj.bias",
    "self_attn.o_proj.weight",
    "self_attn.o_proj.bias",
    "self_attn.qkv_proj.weight",
    "self_attn.q_norm.weight",
    "self_attn.k_norm.weight",
    "mlp.gate_proj.weight",
    "mlp.gate_proj.bias",
    "mlp.up_proj.weight",
    "mlp.up_proj.bias",
    "mlp.gate_up_proj.weight",
    "mlp.down_proj.weight",
    "mlp.down_proj.bias",
    "input_layernorm.weight",
    "post_attention_layernorm.weight",
    "pre_feedforward_layernorm.weight",
    "post_feedforward_layernorm.weight",
];

/// The position of a tensor in a `*ForCausalLM` state dict: `model.embed_tokens`,
/// then the layers in order (each in [`LAYER_ORDER`]), `model.norm`, `lm_head`;
/// names outside this scheme follow, by name.
fn order_key(name: &str) -> (u8, u64, usize, &str) {
    if name.starts_with("model.embed_tokens.") {
        return (0, 0, 0, name);
    }
    if let Some(rest) = name.strip_prefix("model.layers.") {
        if let Some((n, sub)) = rest.split_once('.') {
            if let Ok(layer) = n.parse::<u64>() {
                let pos = LAYER_ORDER.iter().position(|s| *s == sub).unwrap_or(LAYER_ORDER.len());
                return (1, layer, pos, sub);
            }
        }
    }
    if name.starts_with("model.norm.") {
        return (2, 0, 0, name);
    }
    if name.starts_with("lm_head.") {
        return (3, 0, 0, name);
    }
    (4, 0, 0, name)
}

/// Indices of `tensors` in transformers' state-dict order.
pub fn state_dict_order(tensors: &[HfTensor]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..tensors.len()).collect();
    idx.sort_by(|&a, &b| order_key(&tensors[a].name).cmp(&order_key(&tensors[b].name)));
    idx
}

/// One output file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardFile {
    pub name: String,
    /// Indices into the source's tensors, in the order written (by name).
    pub tensors: Vec<usize>,
    pub bytes: u64,
}

/// The files a set of tensors is written to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardPlan {
    pub files: Vec<ShardFile>,
    /// Sum of the tensor sizes (`metadata.total_size` of the index).
    pub total_size: u64,
}

/// Splits tensors (indices in state-dict order, with their sizes in bytes)
/// into shards by huggingface_hub's rule (see the module docs).
pub fn plan_shards(
    order: &[usize],
    size_of: impl Fn(usize) -> u64,
    names: impl Fn(usize) -> String,
    max: u64,
) -> ShardPlan {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut current_size = 0u64;
    let mut total = 0u64;
    for &i in order {
        let size = size_of(i);
        total = total.saturating_add(size);
        if size > max {
            groups.push(vec![i]);
            continue;
        }
        if current_size.saturating_add(size) > max {
            groups.push(std::mem::take(&mut current));
            current_size = 0;
        }
        current.push(i);
        current_size += size;
    }
    if !current.is_empty() {
        groups.push(current);
    }
    let n = groups.len();
    let files = groups
        .into_iter()
        .enumerate()
        .map(|(k, mut g)| {
            g.sort_by_key(|&i| names(i));
            let bytes = g.iter().map(|&i| size_of(i)).sum();
            let name = if n == 1 {
                super::safetensors::SINGLE_FILE.to_string()
            } else {
                format!("model-{:05}-of-{:05}.safetensors", k + 1, n)
            };
            ShardFile { name, tensors: g, bytes }
        })
        .collect();
    ShardPlan { files, total_size: total }
}

fn st_dtype(d: DType) -> Result<::safetensors::Dtype> {
    Ok(match d {
        DType::F32 => ::safetensors::Dtype::F32,
        DType::F16 => ::safetensors::Dtype::F16,
        DType::BF16 => ::safetensors::Dtype::BF16,
        other => return Err(Error::Unsupported(format!("cannot write {other} tensors"))),
    })
}

/// The header of a safetensors file holding `entries` (name, dtype, shape,
/// bytes) in this order, with `__metadata__` = `{"format": "pt"}`: the JSON
/// the `safetensors` crate writes, padded with spaces to a multiple of 8.
pub fn header(entries: &[(&str, DType, &[u64], u64)]) -> Result<Vec<u8>> {
    use ::safetensors::tensor::{Metadata, TensorInfo};
    let mut infos = Vec::with_capacity(entries.len());
    let mut offset = 0usize;
    for (name, dtype, shape, bytes) in entries {
        let n = usize::try_from(*bytes).map_err(|_| Error::Other("tensor too large".into()))?;
        let shape = shape.iter().map(|&d| usize::try_from(d)).collect::<std::result::Result<Vec<_>, _>>();
        let shape = shape.map_err(|_| Error::Other("tensor too large".into()))?;
        infos.push((
            name.to_string(),
            TensorInfo { dtype: st_dtype(*dtype)?, shape, data_offsets: (offset, offset + n) },
        ));
        offset += n;
    }
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    let metadata = Metadata::new(Some(meta), infos).map_err(|e| Error::Other(format!("safetensors header: {e}")))?;
    let mut buf = serde_json::to_vec(&metadata).map_err(|e| Error::Other(format!("safetensors header: {e}")))?;
    buf.resize(buf.len().next_multiple_of(8), b' ');
    Ok(buf)
}

/// Options of [`write_weights`].
#[derive(Debug, Clone)]
pub struct WeightsOptions {
    /// The dtype every tensor is written in.
    pub dtype: DType,
    pub max_shard_size: u64,
    /// Worker threads (0: all cores).
    pub threads: usize,
    /// Target size of one chunk of f32 rows.
    pub chunk_bytes: usize,
}

/// What [`write_weights`] wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WeightsSummary {
    pub files: Vec<String>,
    pub n_tensors: usize,
    pub total_size: u64,
    /// Tensors whose stored bytes were copied unchanged.
    pub copied: usize,
}

/// The shard plan for writing `src`'s tensors in `dtype`.
pub fn plan_for(src: &dyn HfTensors, dtype: DType, max_shard_size: u64) -> Result<ShardPlan> {
    let elem = dtype.float_size().ok_or_else(|| Error::Unsupported(format!("cannot write {dtype} tensors")))? as u64;
    let tensors = src.tensors();
    let order = state_dict_order(tensors);
    Ok(plan_shards(&order, |i| tensors[i].n_elements() * elem, |i| tensors[i].name.clone(), max_shard_size))
}

/// Writes every tensor of `src` into `dir` (an existing, empty directory)
/// as safetensors files in `opts.dtype`, sharded as transformers does, with
/// the index file when there are several shards. The bytes go through the
/// one write engine ([`crate::pipeline::run`]) into a
/// [`crate::pipeline::SafetensorsSink`]: each file is committed only when
/// every file is complete.
pub fn write_weights(
    src: &dyn HfTensors,
    dir: &Path,
    opts: &WeightsOptions,
    progress: &dyn Progress,
) -> Result<WeightsSummary> {
    use crate::pipeline::{Job, Planned, SafetensorsFile, SafetensorsSink, WriteOptions};
    let plan = plan_for(src, opts.dtype, opts.max_shard_size)?;
    let tensors = src.tensors();
    let out_ty = ggml_type(opts.dtype)?;
    let source = super::source::HfSource::new(src)?;
    let mut planned = Vec::with_capacity(tensors.len());
    let mut files = Vec::with_capacity(plan.files.len());
    for file in &plan.files {
        let mut entries = Vec::with_capacity(file.tensors.len());
        for &i in &file.tensors {
            let t = &tensors[i];
            entries.push((t.name.clone(), opts.dtype, t.shape.clone(), t.n_elements() * out_ty.type_size()));
            planned.push(Planned::new(i, out_ty));
        }
        files.push(SafetensorsFile { name: file.name.clone(), tensors: entries });
    }
    let sink = SafetensorsSink::create(dir, &files, &src.inputs())?;
    let wopts = WriteOptions { threads: opts.threads, chunk_bytes: opts.chunk_bytes, ..Default::default() };
    let written = crate::pipeline::run(&source, vec![Job { plan: &planned, sink: Box::new(sink) }], &wopts, progress)?;
    let copied = written.first().map_or(0, |w| w.tensors.iter().filter(|t| t.copied).count());
    if plan.files.len() > 1 {
        let mut weight_map = BTreeMap::new();
        for f in &plan.files {
            for &i in &f.tensors {
                weight_map.insert(tensors[i].name.clone(), f.name.clone());
            }
        }
        let index = serde_json::json!({"metadata": {"total_size": plan.total_size}, "weight_map": weight_map});
        let path = dir.join(super::safetensors::INDEX_FILE);
        std::fs::write(&path, to_json_pretty_sorted(&index)).at(&path, "write")?;
    }
    Ok(WeightsSummary {
        files: plan.files.iter().map(|f| f.name.clone()).collect(),
        n_tensors: tensors.len(),
        total_size: plan.total_size,
        copied,
    })
}

/// `json.dumps(value, indent=2, sort_keys=True) + "\n"`, as transformers
/// writes its JSON files (ASCII-only output, non-ASCII escaped as `\uXXXX`).
pub fn to_json_pretty_sorted(v: &serde_json::Value) -> String {
    fn sorted(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                let mut out = serde_json::Map::new();
                for k in keys {
                    out.insert(k.clone(), sorted(&m[k]));
                }
                serde_json::Value::Object(out)
            }
            serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    let text = serde_json::to_string_pretty(&sorted(v)).unwrap_or_default();
    let mut out = String::with_capacity(text.len() + 1);
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut buf = [0u16; 2];
            for u in c.encode_utf16(&mut buf) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_transformers() {
        assert_eq!(parse_size("5GB"), Some(5_000_000_000));
        assert_eq!(parse_size("5GiB"), Some(5 << 30));
        assert_eq!(parse_size("200MB"), Some(200_000_000));
        assert_eq!(parse_size("10Mb"), Some(1_250_000));
        assert_eq!(parse_size("3KiB"), Some(3072));
        assert_eq!(parse_size("12345"), Some(12345));
        assert_eq!(parse_size("1.5GB"), None);
        assert_eq!(parse_size("GB"), None);
    }

    fn meta(name: &str, shape: &[u64]) -> HfTensor {
        HfTensor { name: name.into(), dtype: DType::BF16, shape: shape.to_vec() }
    }

    #[test]
    fn state_dict_order_is_module_order() {
        let ts = vec![
            meta("lm_head.weight", &[8, 4]),
            meta("model.layers.10.mlp.down_proj.weight", &[4, 8]),
            meta("model.layers.2.input_layernorm.weight", &[4]),
            meta("model.layers.2.self_attn.q_proj.bias", &[4]),
            meta("model.layers.2.self_attn.q_proj.weight", &[4, 4]),
            meta("model.norm.weight", &[4]),
            meta("model.embed_tokens.weight", &[8, 4]),
            meta("model.layers.3.post_feedforward_layernorm.weight", &[4]),
            meta("model.layers.3.pre_feedforward_layernorm.weight", &[4]),
            meta("model.layers.3.mlp.gate_up_proj.weight", &[8, 4]),
            meta("model.layers.3.mlp.down_proj.weight", &[4, 4]),
            meta("model.layers.3.self_attn.qkv_proj.weight", &[12, 4]),
            meta("model.layers.3.self_attn.o_proj.weight", &[4, 4]),
        ];
        let names: Vec<&str> = state_dict_order(&ts).into_iter().map(|i| ts[i].name.as_str()).collect();
        assert_eq!(
            names,
            [
                "model.embed_tokens.weight",
                "model.layers.2.self_attn.q_proj.weight",
                "model.layers.2.self_attn.q_proj.bias",
                "model.layers.2.input_layernorm.weight",
                "model.layers.3.self_attn.o_proj.weight",
                "model.layers.3.self_attn.qkv_proj.weight",
                "model.layers.3.mlp.gate_up_proj.weight",
                "model.layers.3.mlp.down_proj.weight",
                "model.layers.3.pre_feedforward_layernorm.weight",
                "model.layers.3.post_feedforward_layernorm.weight",
                "model.layers.10.mlp.down_proj.weight",
                "model.norm.weight",
                "lm_head.weight",
            ]
        );
    }

    #[test]
    fn shards_follow_huggingface_hub() {
        // sizes in order: 4, 4, 10 (> max), 3, 5 with max 8
        let sizes = [4u64, 4, 10, 3, 5];
        let names = ["e", "d", "c", "b", "a"];
        let p = plan_shards(&[0, 1, 2, 3, 4], |i| sizes[i], |i| names[i].to_string(), 8);
        let got: Vec<(String, Vec<usize>)> = p.files.iter().map(|f| (f.name.clone(), f.tensors.clone())).collect();
        assert_eq!(
            got,
            vec![
                ("model-00001-of-00003.safetensors".to_string(), vec![2]),
                ("model-00002-of-00003.safetensors".to_string(), vec![1, 0]),
                ("model-00003-of-00003.safetensors".to_string(), vec![4, 3]),
            ]
        );
        assert_eq!(p.total_size, 26);
        let one = plan_shards(&[0, 1], |i| sizes[i], |i| names[i].to_string(), 100);
        assert_eq!(one.files.len(), 1);
        assert_eq!(one.files[0].name, "model.safetensors");
    }

    /// Our header is byte for byte what the safetensors crate's own
    /// `serialize` writes for the same tensors.
    #[test]
    fn header_matches_safetensors_serialize() {
        let a = vec![0u8; 2 * 3 * 2];
        let b = vec![0u8; 4 * 2];
        let views = vec![
            ("b.weight", ::safetensors::tensor::TensorView::new(::safetensors::Dtype::BF16, vec![4], &b).unwrap()),
            ("a.weight", ::safetensors::tensor::TensorView::new(::safetensors::Dtype::BF16, vec![2, 3], &a).unwrap()),
        ];
        let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
        let bytes = ::safetensors::serialize(views, Some(meta)).unwrap();
        let ours = header(&[("a.weight", DType::BF16, &[2, 3], 12), ("b.weight", DType::BF16, &[4], 8)]).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!(&bytes[8..8 + n], ours.as_slice());
    }

    /// Through the engine and its SafetensorsSink: a copy (f32 → f32) is the
    /// file `safetensors.serialize` writes; a conversion (→ bf16) rounds to
    /// nearest even; a failure leaves no file.
    #[test]
    fn weights_through_the_engine() {
        let vals: Vec<f32> = (0..24).map(|i| i as f32 * 0.37 - 3.1).collect();
        let raw: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let views = vec![
            (
                "model.norm.weight",
                ::safetensors::tensor::TensorView::new(::safetensors::Dtype::F32, vec![4], &raw[..16]).unwrap(),
            ),
            (
                "lm_head.weight",
                ::safetensors::tensor::TensorView::new(::safetensors::Dtype::F32, vec![5, 4], &raw[16..]).unwrap(),
            ),
        ];
        let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
        let bytes = ::safetensors::serialize(views, Some(meta)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let src =
            super::super::SafetensorsModel::from_bytes(&dir.path().join("in.safetensors"), bytes.clone()).unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let opts =
            WeightsOptions { dtype: DType::F32, max_shard_size: DEFAULT_MAX_SHARD_SIZE, threads: 1, chunk_bytes: 64 };
        let w = write_weights(&src, &out, &opts, &crate::progress::NoProgress).unwrap();
        assert_eq!((w.files.len(), w.copied), (1, 2));
        assert_eq!(std::fs::read(out.join("model.safetensors")).unwrap(), bytes);
        // bf16, two shards of one tensor each.
        let out = dir.path().join("bf16");
        std::fs::create_dir(&out).unwrap();
        let opts = WeightsOptions { dtype: DType::BF16, max_shard_size: 40, ..opts };
        let w = write_weights(&src, &out, &opts, &crate::progress::NoProgress).unwrap();
        assert_eq!((w.files.len(), w.copied), (2, 0));
        let shard = std::fs::read(out.join("model-00002-of-00002.safetensors")).unwrap();
        let n = u64::from_le_bytes(shard[..8].try_into().unwrap()) as usize;
        let data = &shard[8 + n..];
        let want: Vec<u8> = vals[4..]
            .iter()
            .flat_map(|v| {
                let b = v.to_bits();
                (((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16).to_le_bytes()
            })
            .collect();
        assert_eq!(data, want.as_slice());
        assert!(out.join(super::super::safetensors::INDEX_FILE).is_file());
        // An output that cannot be written (f64) fails before creating anything.
        let out = dir.path().join("bad");
        std::fs::create_dir(&out).unwrap();
        assert!(write_weights(&src, &out, &WeightsOptions { dtype: DType::F64, ..opts }, &crate::progress::NoProgress)
            .is_err());
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
    }

    #[test]
    fn json_like_python() {
        let v = serde_json::json!({"b": 1, "a": {"d": [1, 2], "c": "é"}});
        assert_eq!(
            to_json_pretty_sorted(&v),
            "{\n  \"a\": {\n    \"c\": \"\\u00e9\",\n    \"d\": [\n      1,\n      2\n    ]\n  },\n  \"b\": 1\n}\n"
        );
    }
}
