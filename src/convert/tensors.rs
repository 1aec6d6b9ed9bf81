//! The output tensors of a conversion: where each one's data comes from, and the mapped,
//! checked and ordered list convert_hf_to_gguf.py would write.

use std::path::Path;

use serde_json::{Map, Value};

use super::arch::{self, ArchSpec, Hparams, Transform};
use super::rope::{full_attention_rope, llama3_rope_freqs};
use super::vocab::Vocab;
use super::{experts, rope_factors};
use crate::error::{Error, Result};
use crate::gguf::GgmlType;
use crate::hf::{HfModelDir, HfTensors};

/// Where an output tensor's data comes from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// A tensor of the checkpoint, with an optional row permutation
    /// (llama.cpp's Q/K reordering, over `heads` heads).
    /// `add_one`: Gemma's norm convention (stored `w + 1`, see [`Transform::AddOne`]).
    Hf { name: String, permute: Option<u64>, add_one: bool },
    /// Values computed during conversion (`rope_freqs`).
    Generated(Vec<f32>),
    /// Checkpoint tensors of `rows_each` rows each, stacked in order (the
    /// experts of a mixture-of-experts block).
    Stacked { names: Vec<String>, rows_each: u64 },
}

/// One output tensor.
#[derive(Debug, Clone)]
pub struct OutTensor {
    pub name: String,
    /// ggml dimensions, row length (ne0) first.
    pub dims: Vec<u64>,
    /// The type convert_hf_to_gguf.py gives it for the chosen output type.
    pub ty: GgmlType,
    pub origin: Origin,
}

crate::shape::shape_accessors!(OutTensor, Ggml, dims);

/// The stored type of an output tensor's source data.
pub(super) fn stored_type<W: HfTensors>(weights: &W, t: &OutTensor) -> GgmlType {
    let name = match &t.origin {
        Origin::Generated(_) => return GgmlType::F32,
        Origin::Hf { name, .. } => name,
        Origin::Stacked { names, .. } => match names.first() {
            Some(n) => n,
            None => return GgmlType::F32,
        },
    };
    match weights.get(name).map(|(_, e)| e.dtype) {
        Some(crate::hf::DType::F16) => GgmlType::F16,
        Some(crate::hf::DType::BF16) => GgmlType::BF16,
        _ => GgmlType::F32,
    }
}

/// llama.cpp's Q/K permutation: output row `r` of a `rows`-row weight with
/// `heads` heads comes from this input row. It is
/// `w.reshape(heads, 2, rows/heads/2, ...).swapaxes(1, 2)` of convert_hf_to_gguf.py:
/// within a head, the two halves of the rotary dimensions are interleaved.
pub fn permuted_source_row(r: u64, rows: u64, heads: u64) -> u64 {
    let hd = rows / heads;
    let half = hd / 2;
    let (h, rem) = (r / hd, r % hd);
    let (i, j) = (rem / 2, rem % 2);
    h * hd + j * half + i
}

pub(crate) type PlannedHf = (String, Vec<u64>, usize, Origin);

/// Maps, checks and orders the tensors.
pub(super) fn plan_tensors<W: HfTensors>(
    model: &HfModelDir<W>,
    spec: &ArchSpec,
    hp: &Hparams,
    config: &Map<String, Value>,
    config_path: &Path,
    n_vocab_real: Option<u64>,
    warnings: &mut Vec<String>,
) -> Result<Vec<PlannedHf>> {
    let mut out: Vec<PlannedHf> = Vec::new();
    if spec.llama3_rope_freqs {
        if let Some(freqs) = llama3_rope_freqs(config, hp, config_path)? {
            out.push(("rope_freqs.weight".into(), vec![freqs.len() as u64], 1, Origin::Generated(freqs)));
        }
    }
    if spec.rope_factor_tensors {
        if let Some(f) = rope_factors::RopeFactors::from_config(&full_attention_rope(config), config, hp, config_path)?
        {
            let n = f.long.len() as u64;
            out.push(("rope_factors_long.weight".into(), vec![n], 1, Origin::Generated(f.long)));
            out.push(("rope_factors_short.weight".into(), vec![n], 1, Origin::Generated(f.short)));
        }
    }
    let weights = &model.weights;
    let mut seen = std::collections::HashSet::new();
    let mut stacker = match &spec.experts {
        Some(ex) => Some(experts::ExpertStacker::new(ex, config, config_path)?),
        None => None,
    };
    for (index, e) in weights.tensors().iter().enumerate() {
        if spec.skip_names.contains(&e.name) {
            continue;
        }
        let Some(name) = arch::text_model_name(&e.name) else { continue };
        if spec.skipped(&name) {
            continue;
        }
        let path = weights.file_of(index);
        if let Some(stacker) = stacker.as_mut() {
            if let Some(stacked) = stacker.offer(&name, &e.name, &e.shape, path, hp, hp.block_count)? {
                if !e.dtype.is_readable_float() {
                    return Err(Error::input(
                        path,
                        format!(
                            "tensor '{}' has dtype {}; only F32, F16 and BF16 weights are supported",
                            e.name, e.dtype
                        ),
                    ));
                }
                for t in stacked {
                    seen.insert(t.0.clone());
                    out.push(t);
                }
                continue;
            }
        }
        let m = spec.match_tensor(&name).ok_or_else(|| {
            Error::input(
                path,
                format!("cannot map tensor '{}' to a GGUF name for architecture {}", e.name, spec.gguf_arch),
            )
        })?;
        if let Some(bid) = m.bid {
            if bid >= hp.block_count {
                return Err(Error::input(
                    path,
                    format!("tensor '{}' is for block {bid}, but num_hidden_layers is {}", e.name, hp.block_count),
                ));
            }
        }
        if !e.dtype.is_readable_float() {
            return Err(Error::input(
                path,
                format!("tensor '{}' has dtype {}; only F32, F16 and BF16 weights are supported", e.name, e.dtype),
            ));
        }
        let mut expect = Vec::with_capacity(m.rule.shape.len());
        for d in &m.rule.shape {
            expect.push(hp.dim(d).ok_or_else(|| Error::Other(format!("formats/arch: unknown dimension name '{d}'")))?);
        }
        if e.shape != expect {
            return Err(Error::input(
                path,
                format!(
                    "tensor '{}' has shape {:?}, but {} implies {:?} ({})",
                    e.name,
                    e.shape,
                    config_path.display(),
                    expect,
                    m.rule.shape.join(", ")
                ),
            ));
        }
        let permute = match m.rule.transform {
            Some(t @ (Transform::PermuteQ | Transform::PermuteK)) if spec.permute_qk => {
                let heads = if t == Transform::PermuteQ { hp.n_head } else { hp.n_head_kv };
                let rows = e.shape[0];
                if rows % (heads * 2) != 0 {
                    return Err(Error::input(
                        path,
                        format!("tensor '{}': {rows} rows cannot be split into {heads} heads of pairs", e.name),
                    ));
                }
                Some(heads)
            }
            _ => None,
        };
        let add_one = m.rule.transform == Some(Transform::AddOne);
        seen.insert(m.gguf_name());
        let mut dims = e.shape().ggml_dims();
        if m.rule.transform == Some(Transform::TruncateToVocab) {
            if let (Some(n), Some(rows)) = (n_vocab_real, dims.last_mut()) {
                *rows = (*rows).min(n);
            }
        }
        let dims = if dims.is_empty() { vec![1] } else { dims };
        out.push((m.gguf_name(), dims, e.shape.len(), Origin::Hf { name: e.name.clone(), permute, add_one }));
    }

    let mut files: Vec<String> =
        (0..weights.tensors().len()).map(|i| weights.file_of(i).display().to_string()).collect();
    files.sort();
    files.dedup();
    // Required tensors.
    let mut missing = Vec::new();
    if let Some(stacker) = &stacker {
        stacker.finish(&files)?;
        for b in 0..hp.block_count {
            missing.extend(stacker.required(b).into_iter().filter(|n| !seen.contains(n)));
        }
    }
    for rule in spec.tensors.iter().filter(|r| r.required) {
        if rule.gguf.contains("{bid}") {
            for b in 0..hp.block_count {
                if !seen.contains(&rule.gguf.replace("{bid}", &b.to_string())) {
                    missing.push(rule.hf.replace("{bid}", &b.to_string()));
                }
            }
        } else if !seen.contains(&rule.gguf) {
            missing.push(rule.hf.clone());
        }
    }
    if !missing.is_empty() {
        let n = missing.len();
        missing.truncate(8);
        return Err(Error::input(
            model.path(),
            format!(
                "{n} tensor(s) required by {} are missing from {}: {}{}",
                spec.gguf_arch,
                files.join(", "),
                missing.join(", "),
                if n > missing.len() { ", ..." } else { "" }
            ),
        ));
    }
    if !seen.contains("output.weight") && config.get("tie_word_embeddings").and_then(Value::as_bool) == Some(false) {
        warnings.push(
            "config.json says tie_word_embeddings = false but there is no lm_head.weight; llama.cpp will use the token embeddings as the output layer".into(),
        );
    }
    Ok(out)
}

/// The number of token-embedding rows Gemma 3 keeps: the SentencePiece
/// vocabulary's size (padded to the config's vocab_size), or without
/// tokenizer.model, tokenizer.json's vocab plus its added tokens.
pub(super) fn gemma3_vocab_rows<W>(model: &HfModelDir<W>, vocab: &Vocab) -> Result<u64> {
    if model.path().join("tokenizer.model").is_file() {
        return Ok(vocab.tokens.len() as u64);
    }
    let tj = model
        .read_json("tokenizer.json")?
        .ok_or_else(|| Error::input(model.file("tokenizer.json"), "missing (and there is no tokenizer.model)"))?;
    let n_vocab = tj.get("model").and_then(|m| m.get("vocab")).and_then(Value::as_object).map_or(0, Map::len);
    let n_added = tj.get("added_tokens").and_then(Value::as_array).map_or(0, Vec::len);
    Ok((n_vocab + n_added) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_matches_reshape_swapaxes() {
        // rows = heads * hd; numpy: w.reshape(heads, 2, hd/2).swapaxes(1, 2).reshape(rows)
        let (heads, hd) = (2u64, 8u64);
        let rows = heads * hd;
        let mut expect = Vec::new();
        for h in 0..heads {
            for i in 0..hd / 2 {
                for j in 0..2 {
                    expect.push(h * hd + j * (hd / 2) + i);
                }
            }
        }
        let got: Vec<u64> = (0..rows).map(|r| permuted_source_row(r, rows, heads)).collect();
        assert_eq!(got, expect);
        assert_eq!(&got[..8], &[0, 4, 1, 5, 2, 6, 3, 7]);
    }
}
