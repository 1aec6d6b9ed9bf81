//! `convert` on tiny models of the issue-15 architectures (qwen3moe, gemma2,
//! gemma3, phi3) built here: the shape of the output, and bad input (an expert
//! count that disagrees with the tensors, a missing expert, Gemma without
//! tokenizer.model, Phi-3 rope factors of the wrong length), each failing with
//! an error naming the file and the field, leaving no output.

use std::fs;
use std::path::{Path, PathBuf};

mod common;

use ggufkit::convert::{convert_dir, ConvertOptions, OutType};
use ggufkit::gguf::{GgmlType, GgufFile};
use ggufkit::progress::CollectWarnings;

const H: usize = 8;
const V: usize = 8;

/// The SentencePiece vocabulary of the tiny models (V pieces).
const SPM_PIECES: [(&str, u64); V] =
    [("<pad>", 3), ("<eos>", 3), ("<bos>", 3), ("<unk>", 2), ("▁a", 1), ("a", 1), ("b", 1), ("<0x0A>", 6)];

/// A byte-level BPE tokenizer.json of V tokens (converted with `--vocab-pre gpt-2`).
fn bpe_tokenizer() -> serde_json::Value {
    let vocab: serde_json::Map<String, serde_json::Value> = ["a", "b", "c", "Ġ", "ab", "<|end|>", "d", "e"]
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), i.into()))
        .collect();
    serde_json::json!({
        "version": "1.0", "added_tokens": [{"id": 5, "content": "<|end|>", "special": true, "normalized": false,
                                            "single_word": false, "lstrip": false, "rstrip": false}],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null, "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "vocab": vocab, "merges": ["a b"]}
    })
}

type Tensors = Vec<(String, Vec<usize>)>;

/// The tensors as F32 in one safetensors file.
fn write_st(path: &Path, tensors: &Tensors) {
    let typed: Vec<_> = tensors.iter().map(|(n, s)| (n.clone(), "F32", s.clone())).collect();
    common::tiny::write_safetensors(path, &typed);
}

fn attention(t: &mut Tensors, p: &str, qk_norm: bool) {
    t.push((format!("{p}self_attn.q_proj.weight"), vec![H, H]));
    t.push((format!("{p}self_attn.k_proj.weight"), vec![H / 2, H]));
    t.push((format!("{p}self_attn.v_proj.weight"), vec![H / 2, H]));
    t.push((format!("{p}self_attn.o_proj.weight"), vec![H, H]));
    if qk_norm {
        t.push((format!("{p}self_attn.q_norm.weight"), vec![H / 2]));
        t.push((format!("{p}self_attn.k_norm.weight"), vec![H / 2]));
    }
}

const FFE: usize = 4;

fn qwen3moe_tensors(n_expert: usize) -> Tensors {
    let mut t = vec![
        ("model.embed_tokens.weight".to_string(), vec![V, H]),
        ("model.norm.weight".to_string(), vec![H]),
        ("lm_head.weight".to_string(), vec![V, H]),
    ];
    for b in 0..2 {
        let p = format!("model.layers.{b}.");
        t.push((p.clone() + "input_layernorm.weight", vec![H]));
        t.push((p.clone() + "post_attention_layernorm.weight", vec![H]));
        attention(&mut t, &p, true);
        t.push((p.clone() + "mlp.gate.weight", vec![n_expert, H]));
        for x in 0..n_expert {
            t.push((format!("{p}mlp.experts.{x}.gate_proj.weight"), vec![FFE, H]));
            t.push((format!("{p}mlp.experts.{x}.up_proj.weight"), vec![FFE, H]));
            t.push((format!("{p}mlp.experts.{x}.down_proj.weight"), vec![H, FFE]));
        }
    }
    t
}

fn qwen3moe_config(n_expert: usize) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["Qwen3MoeForCausalLM"], "hidden_size": H, "intermediate_size": 16,
        "moe_intermediate_size": FFE, "num_experts": n_expert, "num_experts_per_tok": 2, "norm_topk_prob": true,
        "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": H / 2, "num_hidden_layers": 2,
        "vocab_size": V, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "max_position_embeddings": 64,
        "mlp_only_layers": [], "tie_word_embeddings": false
    })
}

fn qwen3moe(dir: &Path, n_expert_config: usize, tensors: &Tensors) -> PathBuf {
    let d = dir.join("Tiny-Qwen3-MoE");
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join("config.json"), qwen3moe_config(n_expert_config).to_string()).unwrap();
    fs::write(d.join("tokenizer.json"), bpe_tokenizer().to_string()).unwrap();
    write_st(&d.join("model.safetensors"), tensors);
    d
}

fn gemma_tensors(qk_norm: bool, prefix: &str) -> Tensors {
    let mut t = vec![
        (format!("{prefix}model.embed_tokens.weight"), vec![V, H]),
        (format!("{prefix}model.norm.weight"), vec![H]),
    ];
    for b in 0..2 {
        let p = format!("{prefix}model.layers.{b}.");
        for n in
            ["input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm"]
        {
            t.push((format!("{p}{n}.weight"), vec![H]));
        }
        attention(&mut t, &p, qk_norm);
        t.push((p.clone() + "mlp.gate_proj.weight", vec![16, H]));
        t.push((p.clone() + "mlp.up_proj.weight", vec![16, H]));
        t.push((p + "mlp.down_proj.weight", vec![H, 16]));
    }
    t
}

fn gemma(dir: &Path, arch: &str) -> PathBuf {
    let d = dir.join(format!("Tiny-{arch}"));
    fs::create_dir_all(&d).unwrap();
    let mut c = serde_json::json!({
        "architectures": [arch], "hidden_size": H, "intermediate_size": 16, "num_attention_heads": 2,
        "num_key_value_heads": 1, "head_dim": H / 2, "num_hidden_layers": 2, "vocab_size": V, "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0, "max_position_embeddings": 64, "sliding_window": 4,
        "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0, "query_pre_attn_scalar": 4
    });
    let multimodal = arch == "Gemma3ForConditionalGeneration";
    if arch.starts_with("Gemma3") {
        c["attn_logit_softcapping"] = serde_json::Value::Null;
        c["sliding_window_pattern"] = 2.into();
        c["rope_local_base_freq"] = 10000.0.into();
    }
    if multimodal {
        c = serde_json::json!({"architectures": [arch], "text_config": c, "vision_config": {"hidden_size": 4}});
    }
    fs::write(d.join("config.json"), c.to_string()).unwrap();
    fs::write(d.join("tokenizer.model"), common::tiny::spm_model(&SPM_PIECES)).unwrap();
    let mut t = gemma_tensors(arch.starts_with("Gemma3"), if multimodal { "language_model." } else { "" });
    if multimodal {
        t.push(("vision_tower.vision_model.post_layernorm.weight".into(), vec![4]));
        t.push(("multi_modal_projector.mm_input_projection_weight".into(), vec![4, H]));
    } else {
        // Gemma 2's converter drops lm_head (tied).
        t.push(("lm_head.weight".into(), vec![V, H]));
    }
    if arch.starts_with("Gemma3") && !multimodal {
        t.pop();
    }
    write_st(&d.join("model.safetensors"), &t);
    d
}

fn phi3(dir: &Path, n_factors: usize) -> PathBuf {
    let d = dir.join("Tiny-Phi-3.5");
    fs::create_dir_all(&d).unwrap();
    let f: Vec<f64> = (0..n_factors).map(|i| 1.0 + i as f64 * 0.25).collect();
    let c = serde_json::json!({
        "architectures": ["Phi3ForCausalLM"], "hidden_size": H, "intermediate_size": 16, "num_attention_heads": 2,
        "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": V, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "max_position_embeddings": 1024, "original_max_position_embeddings": 64, "sliding_window": 256,
        "rope_scaling": {"type": "longrope", "long_factor": f, "short_factor": f}
    });
    fs::write(d.join("config.json"), c.to_string()).unwrap();
    fs::write(d.join("tokenizer.model"), common::tiny::spm_model(&SPM_PIECES)).unwrap();
    let mut t = vec![
        ("model.embed_tokens.weight".to_string(), vec![V, H]),
        ("model.norm.weight".to_string(), vec![H]),
        ("lm_head.weight".to_string(), vec![V, H]),
    ];
    for b in 0..2 {
        let p = format!("model.layers.{b}.");
        t.push((p.clone() + "input_layernorm.weight", vec![H]));
        t.push((p.clone() + "post_attention_layernorm.weight", vec![H]));
        t.push((p.clone() + "self_attn.qkv_proj.weight", vec![3 * H, H]));
        t.push((p.clone() + "self_attn.o_proj.weight", vec![H, H]));
        t.push((p.clone() + "mlp.gate_up_proj.weight", vec![32, H]));
        t.push((p + "mlp.down_proj.weight", vec![H, 16]));
    }
    write_st(&d.join("model.safetensors"), &t);
    d
}

fn opts() -> ConvertOptions {
    ConvertOptions { outtype: OutType::F32, vocab_pre: Some("gpt-2".into()), ..Default::default() }
}

fn convert(d: &Path, out: &Path) -> Result<ggufkit::convert::ConvertSummary, String> {
    convert_dir(d, out, &opts(), &CollectWarnings::default()).map_err(|e| e.to_string())
}

/// Asserts conversion fails with a message containing all `needles`, and leaves no output.
fn fails(d: &Path, needles: &[&str]) {
    let out = d.parent().unwrap().join("out.gguf");
    let e = convert(d, &out).expect_err("conversion should fail");
    for n in needles {
        assert!(e.contains(n), "error {e:?} should mention {n:?}");
    }
    assert!(!out.exists(), "partial output left behind");
}

/// An F32 tensor's values.
fn tensor_f32(g: &GgufFile, name: &str) -> Option<Vec<f32>> {
    let t = g.header.tensor(name)?;
    assert_eq!(t.ty, GgmlType::F32, "{name}");
    Some(g.data(t).chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

fn u64_key(g: &GgufFile, k: &str) -> Option<u64> {
    g.header.metadata.get_u64(k)
}

#[test]
fn qwen3moe_experts_are_stacked() {
    let t = tempfile::tempdir().unwrap();
    let d = qwen3moe(t.path(), 3, &qwen3moe_tensors(3));
    let out = t.path().join("moe.gguf");
    let s = convert(&d, &out).unwrap();
    assert_eq!(s.gguf_architecture, "qwen3moe");
    let g = GgufFile::open(&out).unwrap();
    assert_eq!(u64_key(&g, "qwen3moe.expert_count"), Some(3));
    assert_eq!(u64_key(&g, "qwen3moe.expert_used_count"), Some(2));
    assert_eq!(u64_key(&g, "qwen3moe.expert_feed_forward_length"), Some(FFE as u64));
    // gguf-py's size_label: 3 experts x (616 shared + 2 blocks x 96 of one expert) = "3x0.8K"
    assert_eq!(g.header.metadata.get_str("general.size_label"), Some("3x0.8K"));
    let gate = g.header.tensor("blk.1.ffn_gate_exps.weight").unwrap();
    assert_eq!(gate.dims, vec![H as u64, FFE as u64, 3]);
    let down = g.header.tensor("blk.1.ffn_down_exps.weight").unwrap();
    assert_eq!(down.dims, vec![FFE as u64, H as u64, 3]);
    assert_eq!(g.header.tensor("blk.0.ffn_gate_inp.weight").unwrap().ty, GgmlType::F32);
    assert!(g.header.tensor("blk.0.ffn_gate.weight").is_none());

    // Expert 2's rows of the stacked gate come from experts.2.gate_proj, in order.
    let ours = tensor_f32(&g, "blk.1.ffn_gate_exps.weight").unwrap();
    let src = ggufkit::hf::SafetensorsModel::open_dir(&d).unwrap();
    use ggufkit::hf::HfTensors;
    let i = src.index_of("model.layers.1.mlp.experts.2.gate_proj.weight").unwrap();
    let mut want = vec![0f32; FFE * H];
    HfTensors::read_rows_f32(&src, i, 0, &mut want).unwrap();
    assert_eq!(&ours[2 * FFE * H..], &want[..]);

    // F16 output: the experts as F16, the router still F32.
    let out16 = t.path().join("moe16.gguf");
    convert_dir(&d, &out16, &ConvertOptions { outtype: OutType::F16, ..opts() }, &CollectWarnings::default()).unwrap();
    let g = GgufFile::open(&out16).unwrap();
    assert_eq!(g.header.tensor("blk.0.ffn_up_exps.weight").unwrap().ty, GgmlType::F16);
    assert_eq!(g.header.tensor("blk.0.ffn_gate_inp.weight").unwrap().ty, GgmlType::F32);
}

#[test]
fn qwen3moe_expert_count_disagrees_with_tensors() {
    let t = tempfile::tempdir().unwrap();
    // config says 2, the checkpoint has 3 experts per block
    let d = qwen3moe(t.path(), 2, &qwen3moe_tensors(3));
    fails(&d, &["config.json", "\"num_experts\" is 2", "experts.2.", "model.safetensors"]);
    // config says 4, the checkpoint has 3 (the router has 3 rows too)
    let t = tempfile::tempdir().unwrap();
    let d = qwen3moe(t.path(), 4, &qwen3moe_tensors(3));
    fails(&d, &["config.json", "num_experts"]);
}

#[test]
fn qwen3moe_missing_expert() {
    let t = tempfile::tempdir().unwrap();
    let mut ts = qwen3moe_tensors(3);
    ts.retain(|(n, _)| n != "model.layers.1.mlp.experts.1.up_proj.weight");
    let d = qwen3moe(t.path(), 3, &ts);
    fails(&d, &["config.json", "num_experts", "model.layers.1.mlp.experts.1.up_proj.weight", "model.safetensors"]);
    // a missing router
    let t = tempfile::tempdir().unwrap();
    let mut ts = qwen3moe_tensors(3);
    ts.retain(|(n, _)| n != "model.layers.0.mlp.gate.weight");
    let d = qwen3moe(t.path(), 3, &ts);
    fails(&d, &["blk.0.ffn_gate_inp.weight", "model.safetensors"]);
    // an expert of the wrong shape
    let t = tempfile::tempdir().unwrap();
    let mut ts = qwen3moe_tensors(3);
    ts.iter_mut().find(|(n, _)| n == "model.layers.0.mlp.experts.0.down_proj.weight").unwrap().1 = vec![FFE, H];
    let d = qwen3moe(t.path(), 3, &ts);
    fails(&d, &["model.layers.0.mlp.experts.0.down_proj.weight", "shape", "model.safetensors"]);
}

#[test]
fn gemma_norms_vocab_and_keys() {
    for arch in ["Gemma2ForCausalLM", "Gemma3ForCausalLM", "Gemma3ForConditionalGeneration"] {
        let t = tempfile::tempdir().unwrap();
        let d = gemma(t.path(), arch);
        let out = t.path().join("g.gguf");
        let s = convert(&d, &out).unwrap_or_else(|e| panic!("{arch}: {e}"));
        let g = GgufFile::open(&out).unwrap();
        let md = &g.header.metadata;
        let a = s.gguf_architecture.as_str();
        assert_eq!(a, if arch.starts_with("Gemma2") { "gemma2" } else { "gemma3" });
        assert_eq!(md.get("tokenizer.ggml.add_space_prefix").and_then(|v| v.as_bool()), Some(false), "{arch}");
        assert_eq!(md.keys().last(), Some("tokenizer.ggml.add_space_prefix"), "{arch}: written last");
        assert_eq!(md.get_u64(&format!("{a}.attention.sliding_window")), Some(4), "{arch}");
        assert_eq!(md.get_f64(&format!("{a}.final_logit_softcapping")), Some(30.0), "{arch}");
        assert!(g.header.tensor("output.weight").is_none(), "{arch}: lm_head dropped / absent");
        assert!(g.header.tensor("blk.1.post_ffw_norm.weight").is_some());
        // norms are stored as w + 1
        let src = ggufkit::hf::SafetensorsModel::open_dir(&d).unwrap();
        use ggufkit::hf::HfTensors;
        let prefix = if arch.ends_with("ConditionalGeneration") { "language_model." } else { "" };
        let i = src.index_of(&format!("{prefix}model.layers.1.post_attention_layernorm.weight")).unwrap();
        let mut w = vec![0f32; H];
        HfTensors::read_rows_f32(&src, i, 0, &mut w).unwrap();
        let ours = tensor_f32(&g, "blk.1.post_attention_norm.weight").unwrap();
        assert_eq!(ours, w.iter().map(|x| x + 1.0).collect::<Vec<_>>(), "{arch}");
        if a == "gemma2" {
            assert_eq!(md.get_f64("gemma2.attn_logit_softcapping"), Some(50.0));
            let keys: Vec<&str> = md.keys().filter(|k| k.starts_with("gemma2.")).collect();
            assert_eq!(keys[0], "gemma2.context_length", "Gemma2Model's own key order");
        } else {
            assert!(g.header.tensor("blk.0.attn_q_norm.weight").is_some());
        }
    }
}

#[test]
fn gemma_without_tokenizer_model() {
    let t = tempfile::tempdir().unwrap();
    let d = gemma(t.path(), "Gemma2ForCausalLM");
    fs::remove_file(d.join("tokenizer.model")).unwrap();
    fails(&d, &["tokenizer.model", "missing", "SentencePiece"]);
    // Gemma 3 falls back to tokenizer.json; with neither, the error names tokenizer.json's absence
    let t = tempfile::tempdir().unwrap();
    let d = gemma(t.path(), "Gemma3ForCausalLM");
    fs::remove_file(d.join("tokenizer.model")).unwrap();
    fails(&d, &["tokenizer.json"]);
}

#[test]
fn phi3_rope_factors() {
    let t = tempfile::tempdir().unwrap();
    let d = phi3(t.path(), H / 2 / 2);
    let out = t.path().join("p.gguf");
    convert(&d, &out).unwrap();
    let g = GgufFile::open(&out).unwrap();
    let names: Vec<&str> = g.header.tensors.iter().map(|t| t.name.as_str()).take(2).collect();
    assert_eq!(names, ["rope_factors_long.weight", "rope_factors_short.weight"]);
    let keys: Vec<&str> = g.header.metadata.keys().take(2).collect();
    assert_eq!(keys, ["general.architecture", "phi3.rope.scaling.attn_factor"]);
    let want = (1.0 + (16f64).ln() / (64f64).ln()).sqrt() as f32;
    assert_eq!(g.header.metadata.get_f64("phi3.rope.scaling.attn_factor"), Some(want as f64));
    assert_eq!(g.header.metadata.get_u64("phi3.rope.dimension_count"), Some(4));
    assert_eq!(tensor_f32(&g, "rope_factors_long.weight").unwrap(), vec![1.0, 1.25]);

    let t = tempfile::tempdir().unwrap();
    let d = phi3(t.path(), 3);
    fails(&d, &["config.json", "rope_scaling.long_factor", "3 values"]);
    let t = tempfile::tempdir().unwrap();
    let d = phi3(t.path(), 2);
    fs::remove_file(d.join("tokenizer.model")).unwrap();
    fails(&d, &["tokenizer.model", "missing"]);
}
