//! The importance matrix as `llama-imatrix` computes it
//! (`tools/imatrix/imatrix.cpp`, `IMatrixCollector::collect_imatrix`), and
//! its GGUF file.
//!
//! For every matrix product whose weight is named `blk.*` (and the output
//! matrix `output.weight` with `process_output`) and whose batch has at least
//! 16 tokens, the squares of the input activations are summed per input
//! column (in f32, token after token), and the tokens are counted. The
//! forward pass hands the inputs over through [`MatmulHook`]; this module
//! does not compute anything of the model itself.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use rayon::prelude::*;

use super::eval::{check_finite, model_bytes, nll_of, Chunks, EvalReport};
use super::forward::{MatmulHook, Model};
use crate::error::{Error, Result};
use crate::fileio::AtomicFile;
use crate::gguf::{GgmlType, GgufWriter, Metadata, TensorSpec, Value, ValueType};
use crate::progress::Progress;

/// llama-imatrix ignores batches of fewer tokens.
pub const MIN_TOKENS: usize = 16;

/// Sums for one weight: one matrix, or one per expert of a stacked expert
/// weight (`ffn_*_exps`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Σ x² per input column, matrix-major (expert-major).
    pub values: Vec<f32>,
    /// Tokens seen, per matrix (per expert).
    pub counts: Vec<i64>,
}

/// Collects the importance matrix while the forward pass runs.
#[derive(Debug, Clone, Default)]
pub struct Collector {
    pub process_output: bool,
    pub stats: BTreeMap<String, Stats>,
    /// First weight whose sums stopped being finite.
    non_finite: Option<String>,
}

impl Collector {
    pub fn new(process_output: bool) -> Self {
        Collector { process_output, ..Default::default() }
    }
}

impl MatmulHook for Collector {
    fn wants(&self, weight: &str) -> bool {
        weight.starts_with("blk.") || (self.process_output && weight == "output.weight")
    }

    fn observe(&mut self, weight: &str, x: &[f32], rows: usize) {
        if rows < MIN_TOKENS || rows == 0 {
            return;
        }
        let n = x.len() / rows;
        let e = self.stats.entry(weight.to_string()).or_default();
        if e.values.is_empty() {
            e.values = vec![0.0; n];
            e.counts = vec![0];
        }
        // Blocks of columns in parallel; each column sums its rows in token
        // order, as llama.cpp's sequential loop does, and a block walks the
        // rows contiguously (vectorized across its columns).
        const COLS: usize = 64;
        e.values.par_chunks_mut(COLS).enumerate().for_each(|(b, acc)| {
            let j0 = b * COLS;
            for r in 0..rows {
                let xs = &x[r * n + j0..][..acc.len()];
                for (a, &v) in acc.iter_mut().zip(xs) {
                    *a += v * v;
                }
            }
        });
        e.counts[0] += rows as i64;
        if self.non_finite.is_none() && !e.values.iter().all(|v| v.is_finite()) {
            self.non_finite = Some(weight.to_string());
        }
    }

    /// As llama-imatrix collects a `mul_mat_id`: every batch size counts, each
    /// expert has its own sums (`n_expert × n_in`) and count, the rows added
    /// in the order they come (slot by slot, token by token).
    fn observe_expert(&mut self, weight: &str, expert: usize, n_expert: usize, x: &[f32], rows: usize) {
        let e = self.stats.entry(weight.to_string()).or_default();
        if rows == 0 {
            // The entry exists (all experts, zero counts) once the product ran.
            if e.values.is_empty() {
                e.counts = vec![0; n_expert];
            }
            return;
        }
        let n = x.len() / rows;
        if e.values.is_empty() {
            e.values = vec![0.0; n * n_expert];
            e.counts = vec![0; n_expert];
        }
        let acc = &mut e.values[expert * n..(expert + 1) * n];
        acc.par_iter_mut().enumerate().for_each(|(j, acc)| {
            for r in 0..rows {
                let v = x[r * n + j];
                *acc += v * v;
            }
        });
        e.counts[expert] += rows as i64;
        if self.non_finite.is_none() && !acc.iter().all(|v| v.is_finite()) {
            self.non_finite = Some(weight.to_string());
        }
    }
}

/// What one `imatrix` run produced.
pub struct ImatrixRun {
    pub collector: Collector,
    /// Chunks evaluated (`imatrix.chunk_count`).
    pub chunk_count: u32,
    /// Tokens per chunk (`imatrix.chunk_size`).
    pub chunk_size: u32,
    /// Perplexity over the same chunks, as llama-imatrix prints it.
    pub ppl: EvalReport,
}

/// Evaluates `model` on the chunks with the collector attached.
pub fn collect(model: &Model, chunks: &Chunks, process_output: bool, progress: &dyn Progress) -> Result<ImatrixRun> {
    let mut col = Collector::new(process_output);
    let nv = model.config.n_vocab;
    let per = model_bytes(model);
    progress.begin("imatrix", per * chunks.n_chunks as u64);
    let (mut nll, mut nll2, mut count) = (0f64, 0f64, 0usize);
    for i in 0..chunks.n_chunks {
        progress.item(&format!("chunk {}/{}", i + 1, chunks.n_chunks));
        let first = chunks.first();
        let logits = model.forward(&chunks.chunk(i), first, Some(&mut col))?;
        if let Some(w) = &col.non_finite {
            return Err(Error::Other(format!(
                "{}: non-finite activations reached '{w}' in chunk {}",
                model.describe(),
                i + 1
            )));
        }
        for j in 0..chunks.scored_per_chunk() {
            let row = &logits[j * nv..(j + 1) * nv];
            check_finite(row, model, i, first + j)?;
            let v = nll_of(row, chunks.target(i, j) as usize);
            nll += v;
            nll2 += v * v;
        }
        count += chunks.scored_per_chunk();
        progress.advance(per);
    }
    progress.finish();
    let chunk_size = chunks.ctx as u32;
    let max_count = col.stats.values().flat_map(|s| s.counts.iter().copied()).max().unwrap_or(0);
    Ok(ImatrixRun {
        chunk_count: (max_count / chunk_size as i64) as u32,
        chunk_size,
        ppl: EvalReport::perplexity(nll, nll2, count, chunks),
        collector: col,
    })
}

/// The imatrix GGUF's metadata and tensors, as llama-imatrix's `save_imatrix`
/// lays them out: `general.type`, `imatrix.datasets`, `imatrix.chunk_count`,
/// `imatrix.chunk_size`; per entry (names sorted) `<name>.in_sum2`
/// `[n_in, n_mat]` then `<name>.counts` `[1, n_mat]`, both F32 (trailing 1s
/// dropped, as ggml writes dimensions).
pub fn gguf_layout(run: &ImatrixRun, datasets: &[String]) -> (Metadata, Vec<TensorSpec>, Vec<Vec<f32>>) {
    let mut md = Metadata::new();
    md.push("general.type", Value::string("imatrix"));
    md.push("imatrix.datasets", Value::array(ValueType::String, datasets.iter().map(Value::string).collect()));
    md.push("imatrix.chunk_count", Value::U32(run.chunk_count));
    md.push("imatrix.chunk_size", Value::U32(run.chunk_size));
    let mut specs = Vec::new();
    let mut data = Vec::new();
    for (name, s) in &run.collector.stats {
        let n_mat = s.counts.len();
        if s.values.is_empty() || n_mat == 0 {
            continue;
        }
        // ggml writes a tensor's dimensions without trailing 1s (ggml_n_dims).
        let dims = |mut d: Vec<u64>| {
            while d.len() > 1 && d.last() == Some(&1) {
                d.pop();
            }
            d
        };
        specs.push(TensorSpec::new(
            format!("{name}.in_sum2"),
            dims(vec![(s.values.len() / n_mat) as u64, n_mat as u64]),
            GgmlType::F32,
        ));
        data.push(s.values.clone());
        specs.push(TensorSpec::new(format!("{name}.counts"), dims(vec![1, n_mat as u64]), GgmlType::F32));
        data.push(s.counts.iter().map(|&c| c as f32).collect());
    }
    (md, specs, data)
}

/// Writes the imatrix GGUF atomically.
pub fn write_gguf(run: &ImatrixRun, datasets: &[String], dest: &Path, inputs: &[&Path]) -> Result<()> {
    let (md, specs, data) = gguf_layout(run, datasets);
    let out = AtomicFile::create(dest, inputs)?;
    let mut w = GgufWriter::new(out, dest, &md, specs)?;
    for d in &data {
        let bytes: Vec<u8> = d.iter().flat_map(|v| v.to_le_bytes()).collect();
        w.write_data(&bytes)?;
    }
    let mut f = w.finish()?;
    f.flush().map_err(|e| Error::io(dest, "write", e))?;
    f.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_blk_inputs_of_batches_of_16_or_more() {
        let mut c = Collector::new(false);
        assert!(c.wants("blk.0.attn_q.weight") && !c.wants("output.weight") && !c.wants("token_embd.weight"));
        assert!(Collector::new(true).wants("output.weight"));
        let x: Vec<f32> = (0..32).map(|i| i as f32).collect(); // 16 rows of 2
        c.observe("blk.0.ffn_up.weight", &x, 16);
        c.observe("blk.0.ffn_up.weight", &x[..30], 15); // ignored: 15 tokens
        let s = &c.stats["blk.0.ffn_up.weight"];
        assert_eq!(s.counts, vec![16]);
        let even: f32 = (0..16).map(|r| ((2 * r) as f32).powi(2)).sum();
        assert_eq!(s.values[0], even);
    }

    #[test]
    fn experts_get_their_own_sums_and_counts_whatever_the_batch() {
        let mut c = Collector::new(false);
        let w = "blk.0.ffn_down_exps.weight";
        // Expert 1 of 3 sees 2 rows of width 2 (fewer than 16: still collected).
        c.observe_expert(w, 0, 3, &[], 0);
        c.observe_expert(w, 1, 3, &[1.0, 2.0, 3.0, 4.0], 2);
        c.observe_expert(w, 2, 3, &[], 0);
        c.observe_expert(w, 1, 3, &[1.0, 1.0], 1);
        let s = &c.stats[w];
        assert_eq!(s.counts, vec![0, 3, 0]);
        assert_eq!(s.values, vec![0.0, 0.0, 11.0, 21.0, 0.0, 0.0]);
        let run = ImatrixRun { collector: c, chunk_count: 1, chunk_size: 16, ppl: EvalReport::default() };
        let (_, specs, data) = gguf_layout(&run, &[]);
        assert_eq!((specs[0].dims.clone(), specs[1].dims.clone()), (vec![2, 3], vec![1, 3]));
        assert_eq!(data[1], vec![0.0, 3.0, 0.0]);
    }

    #[test]
    fn gguf_layout_is_sorted_with_sums_then_counts() {
        let mut c = Collector::new(false);
        let x = vec![1.0f32; 32];
        c.observe("blk.1.attn_q.weight", &x, 16);
        c.observe("blk.0.attn_q.weight", &x, 16);
        let run = ImatrixRun { collector: c, chunk_count: 1, chunk_size: 16, ppl: EvalReport::default() };
        let (md, specs, data) = gguf_layout(&run, &["t.txt".into()]);
        assert_eq!(md.get_str("general.type"), Some("imatrix"));
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "blk.0.attn_q.weight.in_sum2",
                "blk.0.attn_q.weight.counts",
                "blk.1.attn_q.weight.in_sum2",
                "blk.1.attn_q.weight.counts"
            ]
        );
        assert_eq!((specs[0].dims.clone(), specs[1].dims.clone()), (vec![2], vec![1]));
        assert_eq!(data[1], vec![16.0]);
    }
}
