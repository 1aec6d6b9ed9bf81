//! Mixture-of-experts conversion: the per-expert projections of a block
//! (`model.layers.B.mlp.experts.X.{gate,up,down}_proj.weight`) become one
//! 3-D tensor each (`blk.B.ffn_{gate,up,down}_exps.weight`, experts as the
//! outermost dimension), as convert_hf_to_gguf.py's Qwen2MoeModel /
//! Qwen3MoeModel stack them.
//!
//! Nothing is copied at planning time: a stacked tensor is the list of its
//! experts' checkpoint tensors, read row range by row range when written
//! (see [`super::Origin::Stacked`]), so memory does not grow with the number
//! of experts.
//!
//! Order: convert_hf_to_gguf.py buffers a block's expert tensors and writes
//! its stacks (in the table's `stack` order) when the last of them arrives in
//! checkpoint order; [`ExpertStacker::offer`] returns them at the same point.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::arch::{ExpertSpec, Hparams};
use super::{Origin, PlannedHf};
use crate::error::{Error, Result};
use crate::shape::Shape;

/// The expert tensors seen so far, per block.
pub struct ExpertStacker<'a> {
    spec: &'a ExpertSpec,
    /// The number of experts the config declares, and the key it came from.
    n_expert: u64,
    count_key: String,
    config_path: PathBuf,
    dense: BTreeSet<u64>,
    /// Per block: per stack rule, per expert, the checkpoint tensor name.
    blocks: BTreeMap<u64, Vec<Vec<Option<String>>>>,
    /// Blocks whose stacks were emitted.
    done: BTreeSet<u64>,
}

impl<'a> ExpertStacker<'a> {
    /// Reads the expert count (and the dense blocks) from the config.
    pub fn new(spec: &'a ExpertSpec, config: &Map<String, Value>, config_path: &Path) -> Result<Self> {
        let (count_key, v) =
            spec.count.iter().find_map(|k| config.get(k).filter(|v| !v.is_null()).map(|v| (k.clone(), v))).ok_or_else(
                || Error::input(config_path, format!("missing the number of experts (one of {:?})", spec.count)),
            )?;
        let n_expert = v.as_u64().filter(|n| (1..=1 << 16).contains(n)).ok_or_else(|| {
            Error::input(config_path, format!("\"{count_key}\" must be an integer in 1..=65536, not {v}"))
        })?;
        let mut dense = BTreeSet::new();
        if let Some(key) = &spec.dense_layers {
            match config.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::Array(a)) => {
                    for x in a {
                        dense.insert(x.as_u64().ok_or_else(|| {
                            Error::input(config_path, format!("\"{key}\" must list block numbers, not {x}"))
                        })?);
                    }
                }
                Some(v) => return Err(Error::input(config_path, format!("\"{key}\" must be a list, not {v}"))),
            }
        }
        Ok(ExpertStacker {
            spec,
            n_expert,
            count_key,
            config_path: config_path.to_path_buf(),
            dense,
            blocks: BTreeMap::new(),
            done: BTreeSet::new(),
        })
    }

    pub fn n_expert(&self) -> u64 {
        self.n_expert
    }

    /// True when block `bid` has experts (not a dense MLP).
    pub fn is_expert_block(&self, bid: u64) -> bool {
        !self.dense.contains(&bid)
    }

    /// The GGUF tensors block `bid` must have besides the common ones.
    pub fn required(&self, bid: u64) -> Vec<String> {
        let b = bid.to_string();
        if self.is_expert_block(bid) {
            let mut v = vec![self.spec.router.replace("{bid}", &b)];
            v.extend(self.spec.stack.iter().map(|r| r.gguf.replace("{bid}", &b)));
            v
        } else {
            self.spec.dense.iter().map(|n| n.replace("{bid}", &b)).collect()
        }
    }

    /// Offers a checkpoint tensor (`name` as the converter sees it, `stored`
    /// as the checkpoint has it; `shape` in checkpoint order, from `file`).
    /// `Ok(None)`: not a per-expert tensor. `Ok(Some(v))`: taken; `v` holds
    /// the block's stacked tensors when this was its last expert tensor.
    #[allow(clippy::too_many_arguments)]
    pub fn offer(
        &mut self,
        name: &str,
        stored: &str,
        shape: &[u64],
        file: &Path,
        hp: &Hparams,
        block_count: u64,
    ) -> Result<Option<Vec<PlannedHf>>> {
        let Some(m) = self.spec.match_tensor(name) else { return Ok(None) };
        let config = self.config_path.display();
        if m.bid >= block_count {
            return Err(Error::input(
                file,
                format!("tensor '{name}' is for block {}, but {config} has {block_count} layers", m.bid),
            ));
        }
        if !self.is_expert_block(m.bid) {
            return Err(Error::input(
                file,
                format!(
                    "tensor '{name}' is an expert of block {}, which {config} lists in \"{}\" (a dense block)",
                    m.bid,
                    self.spec.dense_layers.as_deref().unwrap_or_default()
                ),
            ));
        }
        if m.xid >= self.n_expert {
            return Err(Error::input(
                &self.config_path,
                format!(
                    "\"{}\" is {}, but {} has tensor '{name}' (expert {}): the expert count disagrees with the weights",
                    self.count_key,
                    self.n_expert,
                    file.display(),
                    m.xid
                ),
            ));
        }
        let rule = &self.spec.stack[m.rule];
        let mut expect = Vec::with_capacity(rule.shape.len());
        for d in &rule.shape {
            expect.push(hp.dim(d).ok_or_else(|| Error::Other(format!("formats/arch: unknown dimension name '{d}'")))?);
        }
        if shape != expect {
            return Err(Error::input(
                file,
                format!(
                    "tensor '{name}' has shape {shape:?}, but {config} implies {expect:?} ({})",
                    rule.shape.join(", ")
                ),
            ));
        }
        let (n_rules, n_expert) = (self.spec.stack.len(), self.n_expert as usize);
        let block = self.blocks.entry(m.bid).or_insert_with(|| vec![vec![None; n_expert]; n_rules]);
        block[m.rule][m.xid as usize] = Some(stored.to_string());
        if block.iter().flatten().any(Option::is_none) {
            return Ok(Some(Vec::new()));
        }
        let block = self.blocks.remove(&m.bid).unwrap_or_default();
        self.done.insert(m.bid);
        let mut out = Vec::with_capacity(n_rules);
        for (rule, names) in self.spec.stack.iter().zip(block) {
            let names: Vec<String> = names.into_iter().flatten().collect();
            let expert = expect_dims(rule, hp)?;
            let rows_each = Shape::RowMajor(&expert).n_rows();
            let mut dims = Shape::RowMajor(&expert).ggml_dims();
            dims.push(self.n_expert);
            let gguf = rule.gguf.replace("{bid}", &m.bid.to_string());
            out.push((gguf, dims, 3, Origin::Stacked { names, rows_each }));
        }
        Ok(Some(out))
    }

    /// After the last tensor: every block's experts must be complete.
    pub fn finish(&self, files: &[String]) -> Result<()> {
        if let Some((bid, block)) = self.blocks.iter().next() {
            let mut missing = Vec::new();
            for (rule, names) in self.spec.stack.iter().zip(block) {
                for (xid, n) in names.iter().enumerate() {
                    if n.is_none() {
                        missing.push(rule.hf.replace("{bid}", &bid.to_string()).replace("{xid}", &xid.to_string()));
                    }
                }
            }
            let n = missing.len();
            missing.truncate(6);
            return Err(Error::input(
                &self.config_path,
                format!(
                    "block {bid} is missing {n} expert tensor(s) of the {} that \"{}\" declares, in {}: {}{}",
                    self.n_expert,
                    self.count_key,
                    files.join(", "),
                    missing.join(", "),
                    if n > missing.len() { ", ..." } else { "" }
                ),
            ));
        }
        Ok(())
    }
}

fn expect_dims(rule: &super::arch::TensorRule, hp: &Hparams) -> Result<Vec<u64>> {
    rule.shape
        .iter()
        .map(|d| hp.dim(d).ok_or_else(|| Error::Other(format!("formats/arch: unknown dimension name '{d}'"))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::arch::spec_for;

    fn hp() -> Hparams {
        let mut extra = BTreeMap::new();
        extra.insert("moe_intermediate_size".to_string(), 8);
        extra.insert("num_experts".to_string(), 2);
        Hparams {
            block_count: 2,
            hidden_size: 4,
            intermediate_size: 16,
            vocab_size: 10,
            n_head: 1,
            n_head_kv: 1,
            head_dim_cfg: None,
            head_dim: 4,
            extra,
        }
    }

    #[test]
    fn stacks_when_the_block_is_complete() {
        let spec = spec_for("Qwen3MoeForCausalLM").unwrap().unwrap();
        let ex = spec.experts.as_ref().unwrap();
        let cfg: Map<String, Value> = serde_json::from_str(r#"{"num_experts": 2}"#).unwrap();
        let mut s = ExpertStacker::new(ex, &cfg, Path::new("config.json")).unwrap();
        let f = Path::new("model.safetensors");
        let hp = hp();
        let mut emitted = Vec::new();
        for x in [1, 0] {
            for (p, shape) in [("down_proj", [4u64, 8]), ("gate_proj", [8, 4]), ("up_proj", [8, 4])] {
                let name = format!("model.layers.1.mlp.experts.{x}.{p}.weight");
                emitted.push(s.offer(&name, &name, &shape, f, &hp, 2).unwrap().unwrap());
            }
        }
        assert!(emitted[..5].iter().all(Vec::is_empty));
        let last = &emitted[5];
        let names: Vec<&str> = last.iter().map(|t| t.0.as_str()).collect();
        assert_eq!(names, ["blk.1.ffn_down_exps.weight", "blk.1.ffn_gate_exps.weight", "blk.1.ffn_up_exps.weight"]);
        assert_eq!(last[0].1, vec![8, 4, 2]);
        match &last[1].3 {
            Origin::Stacked { names, rows_each } => {
                assert_eq!(*rows_each, 8);
                assert_eq!(names[0], "model.layers.1.mlp.experts.0.gate_proj.weight");
            }
            _ => panic!(),
        }
        assert!(s
            .offer("model.layers.1.mlp.gate.weight", "model.layers.1.mlp.gate.weight", &[2, 4], f, &hp, 2)
            .unwrap()
            .is_none());
        s.finish(&[]).unwrap();
    }

    #[test]
    fn count_disagreement_and_missing_experts() {
        let spec = spec_for("Qwen3MoeForCausalLM").unwrap().unwrap();
        let ex = spec.experts.as_ref().unwrap();
        let cfg: Map<String, Value> = serde_json::from_str(r#"{"num_experts": 2}"#).unwrap();
        let mut s = ExpertStacker::new(ex, &cfg, Path::new("config.json")).unwrap();
        let f = Path::new("model.safetensors");
        let e = s
            .offer(
                "model.layers.0.mlp.experts.2.up_proj.weight",
                "model.layers.0.mlp.experts.2.up_proj.weight",
                &[8, 4],
                f,
                &hp(),
                2,
            )
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("config.json") && msg.contains("num_experts") && msg.contains("expert 2"), "{msg}");
        s.offer(
            "model.layers.0.mlp.experts.0.up_proj.weight",
            "model.layers.0.mlp.experts.0.up_proj.weight",
            &[8, 4],
            f,
            &hp(),
            2,
        )
        .unwrap();
        let msg = s.finish(&["model.safetensors".into()]).unwrap_err().to_string();
        assert!(msg.contains("model.layers.0.mlp.experts.1.up_proj.weight") && msg.contains("num_experts"), "{msg}");
        let e = s
            .offer(
                "model.layers.0.mlp.experts.1.up_proj.weight",
                "model.layers.0.mlp.experts.1.up_proj.weight",
                &[4, 8],
                f,
                &hp(),
                2,
            )
            .unwrap_err();
        assert!(e.to_string().contains("shape"));
        let bad: Map<String, Value> = serde_json::from_str(r#"{"num_experts": 0}"#).unwrap();
        assert!(ExpertStacker::new(ex, &bad, Path::new("config.json")).is_err());
        assert!(ExpertStacker::new(ex, &Map::new(), Path::new("config.json")).is_err());
    }
}
