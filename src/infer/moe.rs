//! The mixture-of-experts feed-forward of a block (qwen3moe), computed as
//! llama.cpp's `build_moe_ffn` builds it and its CPU backend runs it:
//!
//! 1. router logits `ffn_gate_inp · n` (an ordinary matrix product);
//! 2. probabilities: softmax over the experts (`ggml_soft_max`: max, `exp`,
//!    sum in f64, times the f32 reciprocal);
//! 3. the `n_used` most probable experts per token, in descending order
//!    (`ggml_argsort_top_k`: `std::sort`, not stable; equal probabilities come
//!    out in libstdc++'s order, see `infer::argsort`: the lower index first
//!    up to 16 experts);
//! 4. their probabilities, divided by their sum (summed in f64, clamped to at
//!    least 6.103515625e-5) when the architecture normalizes them;
//! 5. per selected expert `e`: `down_e · (silu(gate_e · n) ⊙ up_e · n)`,
//!    times the token's weight for `e` (`ggml_mul_mat_id`: each activation
//!    row is rounded/quantized as for a dense product with the expert's
//!    type, so grouping rows per expert computes the same thing);
//! 6. the weighted outputs summed in slot order, `((s0 + s1) + s2) + …`.
//!
//! The tokens routed to an expert are gathered and multiplied in one product
//! per expert; the expert's three matrices are built just before and dropped
//! after, so memory holds one expert's weights at a time. Rows are gathered
//! slot by slot, token by token within a slot: the order in which
//! llama-imatrix accumulates an expert's inputs, which the hook sees.

use super::arch::{Experts, Gating};
use super::argsort::argsort_desc;
use super::forward::{MatmulHook, Model};
use super::ops;
use crate::error::Result;

/// Which experts each token uses and with what weight: `n_used` per token,
/// slot by slot.
#[derive(Debug, Clone, PartialEq)]
pub struct Routing {
    pub n_used: usize,
    /// Expert index per (token, slot).
    pub experts: Vec<usize>,
    /// Weight per (token, slot).
    pub weights: Vec<f32>,
}

/// Softmax of one row as ggml's CPU `soft_max` computes it (scale 1, no mask).
pub fn softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f64;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// Indices of the `k` largest values, largest first, equal values in the
/// order ggml's argsort (libstdc++'s `std::sort`) leaves them: index order
/// up to 16 values.
pub fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let mut idx = argsort_desc(values);
    idx.truncate(k);
    idx
}

/// 2⁻¹⁴ = 6.103515625e-5, the smallest normal f16: llama.cpp's floor for the sum of weights.
const MIN_WEIGHT_SUM: f32 = 1.0 / 16384.0;

/// The top-k weights divided by their sum (`ggml_sum_rows` in f64, clamped
/// below at the smallest normal f16, then `ggml_div`).
pub fn normalize(weights: &mut [f32]) {
    let sum = weights.iter().map(|&w| w as f64).sum::<f64>() as f32;
    let sum = sum.max(MIN_WEIGHT_SUM);
    for w in weights {
        *w /= sum;
    }
}

/// Routes `n` tokens given the router's logits (`n_expert` per token).
pub fn route(logits: &[f32], x: &Experts) -> Routing {
    let k = x.n_used;
    let n = logits.len() / x.n_expert;
    let mut experts = Vec::with_capacity(n * k);
    let mut weights = Vec::with_capacity(n * k);
    for row in logits.chunks(x.n_expert) {
        let mut p = row.to_vec();
        match x.gating {
            Gating::Softmax => softmax(&mut p),
        }
        let sel = top_k(&p, k);
        let mut w: Vec<f32> = sel.iter().map(|&e| p[e]).collect();
        if x.norm_weights {
            normalize(&mut w);
        }
        experts.extend(sel);
        weights.extend(w);
    }
    Routing { n_used: k, experts, weights }
}

/// The (token, slot) pairs routed to `expert`, slot-major then token order.
pub fn assigned(r: &Routing, expert: usize) -> Vec<(usize, usize)> {
    let k = r.n_used;
    let n = r.experts.len() / k.max(1);
    let mut out = Vec::new();
    for slot in 0..k {
        for t in 0..n {
            if r.experts[t * k + slot] == expert {
                out.push((t, slot));
            }
        }
    }
    out
}

/// Sums the weighted expert outputs of each token (`slots`: `n × n_used`
/// rows of `width`) in slot order.
pub fn sum_slots(slots: &[f32], n_used: usize, width: usize) -> Vec<f32> {
    let mut out = vec![0f32; slots.len() / n_used.max(1)];
    for (o, s) in out.chunks_mut(width).zip(slots.chunks(n_used * width)) {
        o.copy_from_slice(&s[..width]);
        for slot in 1..n_used {
            for (a, &b) in o.iter_mut().zip(&s[slot * width..(slot + 1) * width]) {
                *a += b;
            }
        }
    }
    out
}

/// The MoE feed-forward of block `b` on the normalized input `h` (`n` rows
/// of `n_embd`); returns `n` rows of `n_embd` (the residual is not added).
pub fn ffn(
    model: &Model,
    x: &Experts,
    b: usize,
    h: &[f32],
    n: usize,
    hook: &mut Option<&mut dyn MatmulHook>,
) -> Result<Vec<f32>> {
    let w = &model.weights;
    let e = model.config.n_embd;
    let name = |s: &str| format!("blk.{b}.{s}");
    let logits = model.matmul(&w.linear(&name("ffn_gate_inp.weight"))?, h, n, hook)?;
    let routing = route(&logits, x);
    drop(logits);
    let (gate_n, up_n, down_n) =
        (name("ffn_gate_exps.weight"), name("ffn_up_exps.weight"), name("ffn_down_exps.weight"));
    let k = x.n_used;
    let mut slots = vec![0f32; n * k * e];
    for expert in 0..x.n_expert {
        let pairs = assigned(&routing, expert);
        let m = pairs.len();
        let mut xs = Vec::with_capacity(m * e);
        for &(t, _) in &pairs {
            xs.extend_from_slice(&h[t * e..(t + 1) * e]);
        }
        if let Some(hk) = hook.as_deref_mut() {
            for wn in [&up_n, &gate_n] {
                if hk.wants(wn) {
                    hk.observe_expert(wn, expert, x.n_expert, &xs, m);
                }
            }
        }
        if m == 0 {
            if let Some(hk) = hook.as_deref_mut() {
                if hk.wants(&down_n) {
                    hk.observe_expert(&down_n, expert, x.n_expert, &[], 0);
                }
            }
            continue;
        }
        let mut act = w.expert_linear(&gate_n, expert)?.forward(&xs, m)?;
        let up = w.expert_linear(&up_n, expert)?.forward(&xs, m)?;
        drop(xs);
        ops::swiglu(&mut act, &up);
        drop(up);
        if let Some(hk) = hook.as_deref_mut() {
            if hk.wants(&down_n) {
                hk.observe_expert(&down_n, expert, x.n_expert, &act, m);
            }
        }
        let down = w.expert_linear(&down_n, expert)?.forward(&act, m)?;
        for (row, &(t, slot)) in down.chunks(e).zip(&pairs) {
            let wt = routing.weights[t * k + slot];
            let dst = &mut slots[(t * k + slot) * e..(t * k + slot + 1) * e];
            for (d, &v) in dst.iter_mut().zip(row) {
                *d = v * wt;
            }
        }
    }
    Ok(sum_slots(&slots, k, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{GgmlType, Metadata, Value};
    use crate::infer::forward::ForwardOptions;
    use crate::infer::weights::Precision;
    use crate::pipeline::{SourceTensor, TensorSource};

    /// F32 tensors in memory.
    struct Mem(Vec<SourceTensor>, Vec<Vec<f32>>);

    impl TensorSource for Mem {
        fn describe(&self) -> String {
            "memory".into()
        }
        fn tensors(&self) -> &[SourceTensor] {
            &self.0
        }
        fn read_rows(&self, index: usize, row0: u64, out: &mut [f32]) -> crate::error::Result<()> {
            let start = row0 as usize * self.0[index].row_len() as usize;
            out.copy_from_slice(&self.1[index][start..start + out.len()]);
            Ok(())
        }
    }

    const E: usize = 8; // n_embd
    const F: usize = 6; // expert width
    const X: usize = 5; // experts
    const K: usize = 3; // used

    fn values(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 + 1.0) * seed).sin()).collect()
    }

    /// A one-block qwen3moe with deterministic pseudo-random F32 weights.
    fn tiny_model() -> (Metadata, Mem) {
        let mut md = Metadata::new();
        md.push("general.architecture", Value::string("qwen3moe"));
        for (k, v) in [
            ("embedding_length", E),
            ("block_count", 1),
            ("attention.head_count", 2),
            ("attention.head_count_kv", 1),
            ("expert_count", X),
            ("expert_used_count", K),
            ("expert_feed_forward_length", F),
        ] {
            md.push(format!("qwen3moe.{k}"), Value::U32(v as u32));
        }
        md.push("qwen3moe.attention.layer_norm_rms_epsilon", Value::F32(1e-6));
        let shapes: [(&str, Vec<u64>); 12] = [
            ("token_embd.weight", vec![E as u64, 10]),
            ("output_norm.weight", vec![E as u64]),
            ("blk.0.attn_norm.weight", vec![E as u64]),
            ("blk.0.attn_q.weight", vec![E as u64, 8]),
            ("blk.0.attn_k.weight", vec![E as u64, 4]),
            ("blk.0.attn_v.weight", vec![E as u64, 4]),
            ("blk.0.attn_output.weight", vec![8, E as u64]),
            ("blk.0.ffn_norm.weight", vec![E as u64]),
            ("blk.0.ffn_gate_inp.weight", vec![E as u64, X as u64]),
            ("blk.0.ffn_gate_exps.weight", vec![E as u64, F as u64, X as u64]),
            ("blk.0.ffn_up_exps.weight", vec![E as u64, F as u64, X as u64]),
            ("blk.0.ffn_down_exps.weight", vec![F as u64, E as u64, X as u64]),
        ];
        let mut ts = vec![];
        let mut data = vec![];
        for (i, (name, dims)) in shapes.into_iter().enumerate() {
            let n = dims.iter().product::<u64>() as usize;
            data.push(values(n, 0.7 + i as f32 * 0.31));
            ts.push(SourceTensor { name: name.into(), dims, ty: GgmlType::F32 });
        }
        (md, Mem(ts, data))
    }

    /// Records what the hook sees.
    #[derive(Default)]
    struct Record(Vec<(String, usize, usize, Vec<f32>)>, Vec<String>);

    impl MatmulHook for Record {
        fn wants(&self, _: &str) -> bool {
            true
        }
        fn observe(&mut self, weight: &str, _: &[f32], _: usize) {
            self.1.push(weight.to_string());
        }
        fn observe_expert(&mut self, weight: &str, expert: usize, n_expert: usize, x: &[f32], rows: usize) {
            assert_eq!(n_expert, X);
            self.0.push((weight.to_string(), expert, rows, x.to_vec()));
        }
    }

    #[test]
    fn ffn_matches_a_token_by_token_reference_and_shows_rows_in_slot_order() {
        let (md, src) = tiny_model();
        let model = Model::new(&md, &src, Precision::AsStored, ForwardOptions::default()).unwrap();
        let x = model.config.experts.unwrap();
        let n = 7;
        let h = values(n * E, 1.3);
        let mut rec = Record::default();
        let out = {
            let mut hook: Option<&mut dyn MatmulHook> = Some(&mut rec);
            ffn(&model, &x, 0, &h, n, &mut hook).unwrap()
        };
        let w = |name: &str| src.1[src.0.iter().position(|t| t.name == name).unwrap()].clone();
        let (router, gate, up, down) = (
            w("blk.0.ffn_gate_inp.weight"),
            w("blk.0.ffn_gate_exps.weight"),
            w("blk.0.ffn_up_exps.weight"),
            w("blk.0.ffn_down_exps.weight"),
        );
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(&p, &q)| p as f64 * q as f64).sum::<f64>();
        let mut routes = vec![];
        for t in 0..n {
            let ht = &h[t * E..(t + 1) * E];
            let logits: Vec<f64> = (0..X).map(|e| dot(&router[e * E..(e + 1) * E], ht)).collect();
            let mut order: Vec<usize> = (0..X).collect();
            order.sort_by(|&a, &b| logits[b].partial_cmp(&logits[a]).unwrap());
            let sel = &order[..K];
            let z: f64 = sel.iter().map(|&e| logits[e].exp()).sum();
            let mut want = [0f64; E];
            for &e in sel {
                let act: Vec<f64> = (0..F)
                    .map(|j| {
                        let g = dot(&gate[(e * F + j) * E..(e * F + j + 1) * E], ht);
                        let u = dot(&up[(e * F + j) * E..(e * F + j + 1) * E], ht);
                        g / (1.0 + (-g).exp()) * u
                    })
                    .collect();
                for (i, o) in want.iter_mut().enumerate() {
                    let row = &down[(e * E + i) * F..(e * E + i + 1) * F];
                    *o += logits[e].exp() / z * row.iter().zip(&act).map(|(&a, &b)| a as f64 * b).sum::<f64>();
                }
            }
            for (i, &v) in want.iter().enumerate() {
                let got = out[t * E + i] as f64;
                assert!((got - v).abs() < 1e-5 * (1.0 + v.abs()), "token {t} dim {i}: {got} vs {v}");
            }
            routes.push(sel.to_vec());
        }
        // The router is an ordinary product; every expert of the three stacked
        // weights is shown, its rows slot by slot, tokens in order within a slot.
        assert_eq!(rec.1, vec!["blk.0.ffn_gate_inp.weight".to_string()]);
        assert_eq!(rec.0.len(), 3 * X);
        for (name, e, rows, xs) in &rec.0 {
            let mut expect = vec![];
            for slot in 0..K {
                for (t, r) in routes.iter().enumerate() {
                    if r[slot] == *e {
                        expect.push(t);
                    }
                }
            }
            assert_eq!(*rows, expect.len(), "{name} expert {e}");
            if !name.contains("down") {
                let want: Vec<f32> = expect.iter().flat_map(|&t| h[t * E..(t + 1) * E].to_vec()).collect();
                assert_eq!(xs, &want, "{name} expert {e}");
            } else {
                assert_eq!(xs.len(), rows * F);
            }
        }
        let total: usize = rec.0.iter().filter(|r| r.0.contains("up")).map(|r| r.2).sum();
        assert_eq!(total, n * K);
    }

    fn cfg(n_expert: usize, n_used: usize, norm: bool) -> Experts {
        Experts { n_expert, n_used, n_ff: 4, gating: Gating::Softmax, norm_weights: norm }
    }

    #[test]
    fn top_k_is_descending_with_ties_to_the_lower_index() {
        assert_eq!(top_k(&[0.1, 0.4, 0.2, 0.3], 2), vec![1, 3]);
        assert_eq!(top_k(&[0.25, 0.25, 0.5, 0.25, 0.0], 3), vec![2, 0, 1]);
        assert_eq!(top_k(&[1.0, 1.0, 1.0], 3), vec![0, 1, 2]);
        // 128 equal probabilities (a zero input row): libstdc++'s introsort order.
        assert_eq!(top_k(&[1.0 / 128.0; 128], 4), vec![80, 95, 94, 93]);
        assert_eq!(top_k(&[-3.0, -1.0, -2.0], 1), vec![1]);
    }

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let mut p = vec![1.0f32, 2.0, 3.0];
        softmax(&mut p);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        let e: f32 = 1.0 + 1f32.exp() + 2f32.exp();
        assert!((p[2] - 2f32.exp() / e).abs() < 1e-7, "{p:?}");
    }

    #[test]
    fn normalized_weights_sum_to_one_and_tiny_sums_are_clamped() {
        let mut w = vec![0.2f32, 0.3];
        normalize(&mut w);
        assert_eq!(w, vec![0.2f32 / 0.5, 0.3f32 / 0.5]);
        let mut tiny = vec![1e-6f32, 1e-6];
        normalize(&mut tiny);
        assert_eq!(MIN_WEIGHT_SUM as f64, 6.103515625e-5);
        assert_eq!(tiny, vec![1e-6f32 / MIN_WEIGHT_SUM; 2]);
    }

    #[test]
    fn routes_by_softmax_top_k_with_or_without_normalization() {
        // Two tokens, four experts.
        let logits = [0.0f32, 2.0, 1.0, -1.0, 3.0, 3.0, 0.0, 0.0];
        let r = route(&logits, &cfg(4, 2, true));
        assert_eq!(r.experts, vec![1, 2, 0, 1]);
        assert!((r.weights[0] - 1f32.exp() / (1.0 + 1f32.exp())).abs() < 1e-6);
        assert!((r.weights[2] - 0.5).abs() < 1e-7 && (r.weights[3] - 0.5).abs() < 1e-7);
        let raw = route(&logits, &cfg(4, 2, false));
        assert_eq!(raw.experts, r.experts);
        let mut p = logits[..4].to_vec();
        softmax(&mut p);
        assert_eq!(raw.weights[..2], [p[1], p[2]]);
    }

    #[test]
    fn assigned_rows_are_slot_major_and_slots_sum_in_order() {
        let r = Routing { n_used: 2, experts: vec![0, 1, 1, 0, 0, 2], weights: vec![0.5; 6] };
        assert_eq!(assigned(&r, 0), vec![(0, 0), (2, 0), (1, 1)]);
        assert_eq!(assigned(&r, 1), vec![(1, 0), (0, 1)]);
        assert_eq!(assigned(&r, 3), vec![]);
        // token 0: slots [1, 2] and [10, 20]; token 1: [3, 4] and [30, 40]
        let slots = [1.0f32, 2.0, 10.0, 20.0, 3.0, 4.0, 30.0, 40.0];
        assert_eq!(sum_slots(&slots, 2, 2), vec![11.0, 22.0, 33.0, 44.0]);
    }
}
