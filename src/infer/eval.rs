//! `llama-perplexity` and `llama-perplexity --kl-divergence` statistics.
//!
//! The text's tokens are cut into chunks of `ctx` tokens (BOS replaces the
//! first token of each chunk when the vocabulary adds one); each chunk is
//! evaluated from an empty context and the tokens of its second half are
//! scored: the logits at position `i` (`ctx/2 ≤ i < ctx-1`) predict token
//! `i+1`. Every formula follows `tools/perplexity/perplexity.cpp`; see
//! `formats/eval.md`.
//!
//! For KL divergence the reference model runs first ([`Reference::compute`]):
//! per scored token it keeps the log-probabilities of the whole vocabulary
//! as llama.cpp's `--kl-divergence-base` file does (a scale and minimum per
//! token, then one `u16` per entry), in an anonymous temporary file, so one
//! reference serves several models ([`score`]) and memory stays bounded by
//! one chunk of logits.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};

use rayon::prelude::*;
use serde::Serialize;

use super::forward::Model;
use crate::error::{Error, Result};
use crate::progress::Progress;

/// How the text is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalOptions {
    /// Tokens per chunk (`-c`).
    pub ctx: usize,
    /// At most this many chunks (`--chunks`); `None`: all.
    pub max_chunks: Option<usize>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions { ctx: 512, max_chunks: None }
    }
}

/// The tokens of the text and how they are cut into chunks.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunks {
    pub tokens: Vec<u32>,
    pub ctx: usize,
    pub n_chunks: usize,
    /// Token written over the first token of every chunk (the vocabulary's BOS when it adds one).
    pub bos: Option<u32>,
}

impl Chunks {
    /// Checks there are at least two chunks of text, as llama-perplexity does.
    pub fn new(tokens: Vec<u32>, bos: Option<u32>, opts: &EvalOptions) -> Result<Chunks> {
        if opts.ctx < 4 {
            return Err(Error::Usage(format!("--ctx {} is too small (at least 4)", opts.ctx)));
        }
        if tokens.len() < 2 * opts.ctx {
            return Err(Error::Usage(format!(
                "the text tokenizes to {} tokens; a context of {} needs at least {} (two chunks)",
                tokens.len(),
                opts.ctx,
                2 * opts.ctx
            )));
        }
        let max = tokens.len() / opts.ctx;
        let n_chunks = opts.max_chunks.map_or(max, |m| m.min(max));
        if n_chunks == 0 {
            return Err(Error::Usage("--chunks must be at least 1".into()));
        }
        Ok(Chunks { tokens, ctx: opts.ctx, n_chunks, bos })
    }

    /// The tokens evaluated for chunk `i`.
    pub fn chunk(&self, i: usize) -> Vec<u32> {
        let mut t = self.tokens[i * self.ctx..(i + 1) * self.ctx].to_vec();
        if let Some(b) = self.bos {
            t[0] = b;
        }
        t
    }

    /// First scored position.
    pub fn first(&self) -> usize {
        self.ctx / 2
    }

    /// Scored tokens per chunk.
    pub fn scored_per_chunk(&self) -> usize {
        self.ctx - 1 - self.first()
    }

    /// The token predicted at position `first + j` of chunk `i` (never the BOS).
    pub fn target(&self, i: usize, j: usize) -> u32 {
        self.tokens[i * self.ctx + self.first() + j + 1]
    }
}

/// Mean KL divergence and its distribution.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KldStats {
    pub mean: f64,
    pub stderr: f64,
    pub median: f64,
    pub p99: f64,
    pub max: f64,
}

/// Statistics printed alongside, not part of the `--json` keys.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Details {
    pub ppl_base: Option<f64>,
    pub ppl_base_stderr: Option<f64>,
    pub ln_ppl_ratio: Option<f64>,
    pub ln_ppl_ratio_stderr: Option<f64>,
    pub ppl_ratio_stderr: Option<f64>,
    pub same_top_stderr: Option<f64>,
    pub rms_dp_stderr: Option<f64>,
    pub kld_p90: Option<f64>,
    pub kld_p999: Option<f64>,
    pub kld_min: Option<f64>,
    pub mean_dp: Option<f64>,
    pub mean_dp_stderr: Option<f64>,
}

/// The result of an evaluation; serializes to exactly the keys of `ggufkit eval --json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EvalReport {
    /// Tokens scored: chunks × (ctx − 1 − ctx/2).
    pub tokens: usize,
    pub chunks: usize,
    pub ctx: usize,
    pub ppl: f64,
    pub ppl_stderr: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kld: Option<KldStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub same_top: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rms_dp: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ppl_ratio: Option<f64>,
    #[serde(skip)]
    pub details: Details,
}

/// Logits of one scored position, checked finite.
pub(super) fn check_finite(logits: &[f32], model: &Model, chunk: usize, pos: usize) -> Result<()> {
    if let Some(v) = logits.iter().find(|v| !v.is_finite()) {
        return Err(Error::Other(format!(
            "{}: non-finite logit ({v}) in chunk {} at token position {pos}",
            model.describe(),
            chunk + 1
        )));
    }
    Ok(())
}

/// Runs chunk `i` and returns the logits of its scored positions plus the
/// extra last position (`ctx - first` rows), checked finite.
fn chunk_logits(model: &Model, chunks: &Chunks, i: usize) -> Result<Vec<f32>> {
    let first = chunks.first();
    let logits = model.forward(&chunks.chunk(i), first, None)?;
    let nv = model.config.n_vocab;
    for (j, row) in logits.chunks(nv).enumerate().take(chunks.scored_per_chunk()) {
        check_finite(row, model, i, first + j)?;
    }
    Ok(logits)
}

/// `-log p(tok)` as llama-perplexity's first `log_softmax` computes it.
pub(super) fn nll_of(logits: &[f32], tok: usize) -> f64 {
    let max = logits.iter().copied().fold(logits[0], f32::max);
    let sum: f64 = logits.iter().map(|&l| (l - max).exp() as f64).sum();
    -((logits[tok] - max) as f64 - sum.ln())
}

fn mean_and_uncertainty(sum: f64, sum2: f64, count: usize) -> (f64, f64) {
    if count < 1 {
        return (0.0, 0.0);
    }
    let f = sum / count as f64;
    let df = sum2 / count as f64 - f * f;
    let df = if df > 0.0 && count > 10 { (df / (count - 1) as f64).sqrt() } else { 0.0 };
    (f, df)
}

pub(super) fn model_bytes(model: &Model) -> u64 {
    model.weights.source.tensors().iter().map(|t| t.ty.row_size(t.row_len()).unwrap_or(0) * t.n_rows()).sum()
}

/// Perplexity of `model` on the chunks (llama-perplexity without `--kl-divergence`).
pub fn perplexity(model: &Model, chunks: &Chunks, progress: &dyn Progress) -> Result<EvalReport> {
    let nv = model.config.n_vocab;
    let per = model_bytes(model);
    progress.begin("eval", per * chunks.n_chunks as u64);
    let (mut nll, mut nll2, mut count) = (0f64, 0f64, 0usize);
    for i in 0..chunks.n_chunks {
        progress.item(&format!("chunk {}/{}", i + 1, chunks.n_chunks));
        let logits = chunk_logits(model, chunks, i)?;
        let v: Vec<f64> = (0..chunks.scored_per_chunk())
            .into_par_iter()
            .map(|j| nll_of(&logits[j * nv..(j + 1) * nv], chunks.target(i, j) as usize))
            .collect();
        for x in v {
            nll += x;
            nll2 += x * x;
        }
        count += chunks.scored_per_chunk();
        progress.advance(per);
    }
    progress.finish();
    Ok(EvalReport::perplexity(nll, nll2, count, chunks))
}

impl EvalReport {
    /// PPL and its error from the sum and the sum of squares of `count`
    /// per-token negative log-likelihoods (llama-perplexity without a reference).
    pub(super) fn perplexity(nll: f64, nll2: f64, count: usize, chunks: &Chunks) -> EvalReport {
        let mean = nll / count as f64;
        let ppl = mean.exp();
        let var = nll2 / count as f64 - mean * mean;
        let stderr = if var > 0.0 { (var / (count - 1) as f64).sqrt() * ppl } else { 0.0 };
        EvalReport {
            tokens: count,
            chunks: chunks.n_chunks,
            ctx: chunks.ctx,
            ppl,
            ppl_stderr: stderr,
            ..Default::default()
        }
    }
}

/// u16 words of one token's record: scale, minimum log-prob, then the vocabulary.
fn record_len(n_vocab: usize) -> usize {
    2 * n_vocab.div_ceil(2) + 4
}

/// Encodes the log-probabilities of one position as llama-perplexity's
/// `log_softmax(..., uint16_t * log_prob, ...)`; returns `-log p(tok)`.
fn encode_log_probs(logits: &[f32], out: &mut [u16], tok: usize) -> f64 {
    let mut max = logits[0];
    let mut min = logits[0];
    for &l in &logits[1..] {
        max = max.max(l);
        min = min.min(l);
    }
    let min = min.max(max - 16.0);
    let sum_exp: f64 = logits.iter().map(|&l| (l - max).exp() as f64).sum();
    let log_sum_exp = sum_exp.ln() as f32;
    let min_log_prob = min - max - log_sum_exp;
    let scale = (max - min) / 65535.0;
    let (head, body) = out.split_at_mut(4);
    let sb = scale.to_le_bytes();
    let mb = min_log_prob.to_le_bytes();
    head[0] = u16::from_le_bytes([sb[0], sb[1]]);
    head[1] = u16::from_le_bytes([sb[2], sb[3]]);
    head[2] = u16::from_le_bytes([mb[0], mb[1]]);
    head[3] = u16::from_le_bytes([mb[2], mb[3]]);
    body.fill(0);
    if scale != 0.0 {
        let inv = 1.0 / scale;
        for (o, &l) in body.iter_mut().zip(logits) {
            *o = if l > min { super::ops::round_half_even(inv * (l - min)) as i64 as u16 } else { 0 };
        }
    }
    (max + log_sum_exp - logits[tok]) as f64
}

/// The reference model's per-token log-probabilities for a text.
pub struct Reference {
    pub chunks: Chunks,
    pub n_vocab: usize,
    /// Where it came from (for messages).
    pub source: String,
    file: File,
    /// PPL of the reference itself, as [`perplexity`] would report it.
    pub ppl: f64,
}

impl Reference {
    /// Evaluates the reference model on the chunks.
    pub fn compute(model: &Model, chunks: &Chunks, progress: &dyn Progress) -> Result<Reference> {
        let nv = model.config.n_vocab;
        let rl = record_len(nv);
        let tmp = tempfile::tempfile().map_err(|e| Error::io(std::env::temp_dir(), "create temporary file", e))?;
        let mut w = BufWriter::new(tmp);
        let per = model_bytes(model);
        progress.begin("reference", per * chunks.n_chunks as u64);
        let (mut nll, mut count) = (0f64, 0usize);
        for i in 0..chunks.n_chunks {
            progress.item(&format!("chunk {}/{}", i + 1, chunks.n_chunks));
            let logits = chunk_logits(model, chunks, i)?;
            let n = chunks.scored_per_chunk();
            let mut rec = vec![0u16; n * rl];
            let v: Vec<f64> = rec
                .par_chunks_mut(rl)
                .enumerate()
                .map(|(j, out)| encode_log_probs(&logits[j * nv..(j + 1) * nv], out, chunks.target(i, j) as usize))
                .collect();
            nll += v.iter().sum::<f64>();
            count += n;
            w.write_all(bytemuck::cast_slice(&rec)).map_err(|e| Error::io(std::env::temp_dir(), "write", e))?;
            progress.advance(per);
        }
        progress.finish();
        let file = w.into_inner().map_err(|e| Error::io(std::env::temp_dir(), "write", e.into_error()))?;
        Ok(Reference {
            chunks: chunks.clone(),
            n_vocab: nv,
            source: model.describe(),
            file,
            ppl: (nll / count as f64).exp(),
        })
    }

    fn read_chunk(&self, i: usize, buf: &mut [u16]) -> Result<()> {
        let bytes = (buf.len() * 2) as u64;
        let mut f = &self.file;
        f.seek(SeekFrom::Start(i as u64 * bytes)).map_err(|e| Error::io(std::env::temp_dir(), "seek", e))?;
        f.read_exact(bytemuck::cast_slice_mut(buf)).map_err(|e| Error::io(std::env::temp_dir(), "read", e))?;
        Ok(())
    }
}

/// Per-token sums of llama-perplexity's `kl_divergence_result`.
#[derive(Default, Clone, Copy)]
struct KldSums {
    nll: f64,
    nll2: f64,
    nll_base: f64,
    nll_base2: f64,
    nll_nll_base: f64,
    kld: f64,
    kld2: f64,
    p_diff: f64,
    p_diff2: f64,
    p_diff4: f64,
    same_top: usize,
    count: usize,
}

/// One token against its reference record: (sums, KLD, Δp).
fn kld_token(logits: &[f32], base: &[u16], tok: usize) -> (KldSums, f32, f32) {
    let mut max = logits[0];
    let mut imax = 0;
    for (i, &l) in logits.iter().enumerate().skip(1) {
        if l > max {
            max = l;
            imax = i;
        }
    }
    let sum_exp: f64 = logits.iter().map(|&l| (l - max).exp() as f64).sum();
    let log_sum_exp = sum_exp.ln() as f32;
    let scale = f32::from_le_bytes({
        let (a, b) = (base[0].to_le_bytes(), base[1].to_le_bytes());
        [a[0], a[1], b[0], b[1]]
    });
    let min_log_prob = f32::from_le_bytes({
        let (a, b) = (base[2].to_le_bytes(), base[3].to_le_bytes());
        [a[0], a[1], b[0], b[1]]
    });
    let base = &base[4..];
    let mut s = KldSums::default();
    let nll = max + log_sum_exp - logits[tok];
    s.nll = nll as f64;
    s.nll2 = (nll * nll) as f64;
    let nll_base = -(scale * base[tok] as f32 + min_log_prob);
    s.nll_base = nll_base as f64;
    s.nll_base2 = (nll_base * nll_base) as f64;
    s.nll_nll_base = (nll * nll_base) as f64;
    let max_l = max + log_sum_exp;
    let mut sum = 0f64;
    let mut imax_base = 0;
    let mut p_max = 0f32;
    for (i, &l) in logits.iter().enumerate() {
        let p_log_base = scale * base[i] as f32 + min_log_prob;
        if i == 0 || p_log_base > p_max {
            p_max = p_log_base;
            imax_base = i;
        }
        if p_log_base > -16.0 {
            let p_base = p_log_base.exp();
            sum += (p_base * (p_log_base - l + max_l)) as f64;
        }
    }
    s.kld = sum;
    s.kld2 = sum * sum;
    s.count = 1;
    s.same_top = usize::from(imax == imax_base);
    let p_diff = (-nll).exp() - (-nll_base).exp();
    s.p_diff = p_diff as f64;
    let d2 = (p_diff * p_diff) as f64;
    s.p_diff2 = d2;
    s.p_diff4 = d2 * d2;
    (s, sum as f32, p_diff)
}

fn percentile(sorted: &[f32], fraction: f32) -> f32 {
    if fraction <= 0.0 {
        return sorted[0];
    }
    if fraction >= 1.0 {
        return sorted[sorted.len() - 1];
    }
    let p = fraction * (sorted.len() - 1) as f32;
    let ip = p as usize;
    let p = p - ip as f32;
    (1.0 - p) * sorted[ip] + p * sorted[(ip + 1).min(sorted.len() - 1)]
}

/// Scores `model` against a [`Reference`] (llama-perplexity `--kl-divergence`).
pub fn score(model: &Model, reference: &Reference, progress: &dyn Progress) -> Result<EvalReport> {
    let nv = model.config.n_vocab;
    if nv != reference.n_vocab {
        return Err(Error::Usage(format!(
            "{} has a vocabulary of {nv} tokens but the reference {} has {}: they cannot be compared",
            model.describe(),
            reference.source,
            reference.n_vocab
        )));
    }
    let chunks = &reference.chunks;
    let rl = record_len(nv);
    let n = chunks.scored_per_chunk();
    let mut base = vec![0u16; n * rl];
    let mut t = KldSums::default();
    let mut klds = Vec::with_capacity(n * chunks.n_chunks);
    let mut dps = Vec::with_capacity(n * chunks.n_chunks);
    let per = model_bytes(model);
    progress.begin("eval", per * chunks.n_chunks as u64);
    for i in 0..chunks.n_chunks {
        progress.item(&format!("chunk {}/{}", i + 1, chunks.n_chunks));
        let logits = chunk_logits(model, chunks, i)?;
        reference.read_chunk(i, &mut base)?;
        let per_tok: Vec<(KldSums, f32, f32)> = (0..n)
            .into_par_iter()
            .map(|j| {
                kld_token(&logits[j * nv..(j + 1) * nv], &base[j * rl..(j + 1) * rl], chunks.target(i, j) as usize)
            })
            .collect();
        for (s, k, d) in per_tok {
            t.nll += s.nll;
            t.nll2 += s.nll2;
            t.nll_base += s.nll_base;
            t.nll_base2 += s.nll_base2;
            t.nll_nll_base += s.nll_nll_base;
            t.kld += s.kld;
            t.kld2 += s.kld2;
            t.p_diff += s.p_diff;
            t.p_diff2 += s.p_diff2;
            t.p_diff4 += s.p_diff4;
            t.same_top += s.same_top;
            t.count += 1;
            klds.push(k);
            dps.push(d);
        }
        progress.advance(per);
    }
    progress.finish();
    let c = t.count;
    let log_ppl = mean_and_uncertainty(t.nll, t.nll2, c);
    let ppl = log_ppl.0.exp();
    let log_ppl_base = mean_and_uncertainty(t.nll_base, t.nll_base2, c);
    let cov = if c < 10 {
        0.0
    } else {
        (t.nll_nll_base / c as f64 - (t.nll / c as f64) * (t.nll_base / c as f64)) / (c - 1) as f64
    };
    let ln_ratio = log_ppl.0 - log_ppl_base.0;
    let ln_ratio_unc = (log_ppl.1 * log_ppl.1 + log_ppl_base.1 * log_ppl_base.1 - 2.0 * cov).sqrt();
    let ratio = ln_ratio.exp();
    let kl = mean_and_uncertainty(t.kld, t.kld2, c);
    klds.sort_by(f32::total_cmp);
    let median = if klds.len() % 2 == 0 {
        0.5 * (klds[klds.len() / 2] + klds[klds.len() / 2 - 1])
    } else {
        klds[klds.len() / 2]
    };
    let mse = mean_and_uncertainty(t.p_diff2, t.p_diff4, c);
    let rms = mse.0.sqrt();
    let same = t.same_top as f64 / c as f64;
    let dp = mean_and_uncertainty(t.p_diff, t.p_diff2, c);
    Ok(EvalReport {
        tokens: c,
        chunks: chunks.n_chunks,
        ctx: chunks.ctx,
        ppl,
        ppl_stderr: ppl * log_ppl.1,
        kld: Some(KldStats {
            mean: kl.0,
            stderr: kl.1,
            median: median as f64,
            p99: percentile(&klds, 0.99) as f64,
            max: klds[klds.len() - 1] as f64,
        }),
        same_top: Some(same),
        rms_dp: Some(rms),
        ppl_ratio: Some(ratio),
        details: Details {
            ppl_base: Some(log_ppl_base.0.exp()),
            ppl_base_stderr: Some(log_ppl_base.0.exp() * log_ppl_base.1),
            ln_ppl_ratio: Some(ln_ratio),
            ln_ppl_ratio_stderr: Some(ln_ratio_unc),
            ppl_ratio_stderr: Some(ratio * ln_ratio_unc),
            same_top_stderr: Some((same * (1.0 - same) / (c as f64 - 1.0)).sqrt()),
            rms_dp_stderr: Some(if rms > 0.0 { 0.5 / rms * mse.1 } else { 0.0 }),
            kld_p90: Some(percentile(&klds, 0.90) as f64),
            kld_p999: Some(percentile(&klds, 0.999) as f64),
            kld_min: Some(klds[0] as f64),
            mean_dp: Some(dp.0),
            mean_dp_stderr: Some(dp.1),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_need_two_contexts_and_put_bos_first() {
        let e = Chunks::new((0..15).collect(), Some(99), &EvalOptions { ctx: 8, max_chunks: None }).unwrap_err();
        assert!(e.to_string().contains("needs at least 16"), "{e}");
        let c = Chunks::new((0..20).collect(), Some(99), &EvalOptions { ctx: 8, max_chunks: None }).unwrap();
        assert_eq!(c.n_chunks, 2);
        assert_eq!(c.chunk(1), vec![99, 9, 10, 11, 12, 13, 14, 15]);
        assert_eq!((c.first(), c.scored_per_chunk()), (4, 3));
        assert_eq!(c.target(1, 0), 13);
        let c = Chunks::new((0..40).collect(), None, &EvalOptions { ctx: 8, max_chunks: Some(3) }).unwrap();
        assert_eq!((c.n_chunks, c.chunk(0)[0]), (3, 0));
        assert!(Chunks::new(vec![], None, &EvalOptions::default()).is_err());
    }

    #[test]
    fn kld_of_a_distribution_with_itself_is_zero_and_positive_otherwise() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 37 % 11) as f32) * 0.3).collect();
        let mut rec = vec![0u16; record_len(50)];
        let nll = encode_log_probs(&logits, &mut rec, 7);
        assert!((nll - nll_of(&logits, 7)).abs() < 1e-5);
        let (s, kld, dp) = kld_token(&logits, &rec, 7);
        assert!(kld.abs() < 1e-4, "{kld}");
        assert!(dp.abs() < 1e-4);
        assert_eq!(s.same_top, 1);
        let other: Vec<f32> = logits.iter().enumerate().map(|(i, &l)| if i == 3 { l + 5.0 } else { l }).collect();
        let (s, kld, _) = kld_token(&other, &rec, 7);
        assert!(kld > 0.01, "{kld}");
        assert_eq!(s.same_top, 0);
    }

    #[test]
    fn percentiles_interpolate_like_llama_perplexity() {
        let v = [0.0f32, 1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 0.5), 2.0);
        assert_eq!(percentile(&v, 0.99), 3.96);
        assert_eq!(percentile(&v, 1.0), 4.0);
    }
}
