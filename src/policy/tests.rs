//! Unit tests of the plan on hand-built headers. The parity tests
//! (`tests/policy_parity.rs`) compare against llama.cpp itself.

use super::*;
use crate::gguf::{Gguf, Metadata, TensorInfo, Value};

fn tensor(name: &str, dims: &[u64], ty: GgmlType) -> TensorInfo {
    let n: u64 = dims.iter().product();
    TensorInfo {
        name: name.into(),
        dims: dims.to_vec(),
        ty,
        offset: 0,
        size: ty.tensor_size(dims).unwrap(),
        n_elements: n,
    }
}

/// A llama-style header: `n_layer` blocks, row length `n_embd`.
fn llama(n_layer: u32, n_embd: u64, n_head: u32, n_head_kv: u32, tied: bool) -> Gguf {
    let mut md = Metadata::new();
    md.push("general.architecture", Value::string("llama"));
    md.push("llama.block_count", Value::U32(n_layer));
    md.push("llama.attention.head_count", Value::U32(n_head));
    md.push("llama.attention.head_count_kv", Value::U32(n_head_kv));
    md.push("general.file_type", Value::U32(1));
    let kv = n_embd / n_head as u64 * n_head_kv as u64;
    let mut tensors = vec![tensor("token_embd.weight", &[n_embd, 64], GgmlType::F16)];
    for i in 0..n_layer {
        for (n, d) in [
            ("attn_norm.weight", vec![n_embd]),
            ("attn_q.weight", vec![n_embd, n_embd]),
            ("attn_k.weight", vec![n_embd, kv]),
            ("attn_v.weight", vec![n_embd, kv]),
            ("attn_output.weight", vec![n_embd, n_embd]),
            ("ffn_gate.weight", vec![n_embd, 96]),
            ("ffn_up.weight", vec![n_embd, 96]),
            ("ffn_down.weight", vec![96, n_embd]),
        ] {
            let ty = if d.len() == 1 { GgmlType::F32 } else { GgmlType::F16 };
            tensors.push(tensor(&format!("blk.{i}.{n}"), &d, ty));
        }
    }
    tensors.push(tensor("output_norm.weight", &[n_embd], GgmlType::F32));
    if !tied {
        tensors.push(tensor("output.weight", &[n_embd, 64], GgmlType::F16));
    }
    Gguf { version: 3, metadata: md, tensors, alignment: 32, data_offset: 0 }
}

fn types_of(p: &Plan, suffix: &str) -> Vec<GgmlType> {
    p.tensors.iter().filter(|t| t.name.ends_with(suffix)).map(|t| t.output_type).collect()
}

#[test]
fn q4_k_m_mix() {
    let h = llama(8, 256, 8, 2, false);
    let p = plan(&h, &Options::new(FileType::Q4_K_M), None).unwrap();
    use GgmlType::*;
    // use_more_bits(i, 8): 0 (first eighth), 7 (last eighth), 3 and 6 ((i-1)%3 == 2)
    let more = [Q6_K, Q4_K, Q4_K, Q6_K, Q4_K, Q4_K, Q6_K, Q6_K];
    assert_eq!(types_of(&p, "attn_v.weight"), more);
    // 96 columns: Q6_K falls back to Q8_0, Q4_K to Q5_0
    assert_eq!(types_of(&p, "ffn_down.weight"), [Q8_0, Q5_0, Q5_0, Q8_0, Q5_0, Q5_0, Q8_0, Q8_0]);
    assert_eq!(types_of(&p, "attn_q.weight"), vec![Q4_K; 8]);
    assert_eq!(p.tensors.iter().find(|t| t.name == "output.weight").unwrap().output_type, Q6_K);
    assert_eq!(types_of(&p, "token_embd.weight"), vec![Q4_K]);
    assert_eq!(types_of(&p, "norm.weight"), vec![F32; 9]);
    assert!(p.n_fallback > 0);
    // order: non-blk first, then by layer, then by name
    assert_eq!(p.tensors[0].name, "output.weight");
    assert_eq!(p.tensors[1].name, "output_norm.weight");
    assert_eq!(p.tensors[2].name, "token_embd.weight");
    assert_eq!(p.tensors[3].name, "blk.0.attn_k.weight");
    let keys: Vec<&str> = p.metadata.keys().collect();
    assert_eq!(&keys[keys.len() - 2..], ["general.quantization_version", "general.file_type"]);
    assert_eq!(p.metadata.get("general.file_type"), Some(&Value::U32(15)));
}

#[test]
fn tied_embeddings_and_overrides() {
    let h = llama(4, 256, 4, 4, true);
    let mut o = Options::new(FileType::Q4_0);
    let p = plan(&h, &o, None).unwrap();
    assert_eq!(types_of(&p, "token_embd.weight"), vec![GgmlType::Q6_K]);
    o.output_tensor_type = Some(GgmlType::Q8_0);
    let p = plan(&h, &o, None).unwrap();
    assert_eq!(types_of(&p, "token_embd.weight"), vec![GgmlType::Q8_0]);
    o.token_embedding_type = Some(GgmlType::Q5_1);
    o.tensor_types = vec![TensorTypeRule::parse("ATTN_[qk]=q8_0").unwrap()];
    let p = plan(&h, &o, None).unwrap();
    assert_eq!(types_of(&p, "token_embd.weight"), vec![GgmlType::Q5_1]);
    assert_eq!(types_of(&p, "attn_q.weight"), vec![GgmlType::Q8_0; 4]);
    assert_eq!(types_of(&p, "attn_k.weight"), vec![GgmlType::Q8_0; 4]);
    assert_eq!(types_of(&p, "attn_v.weight"), vec![GgmlType::Q4_0; 4]);
}

#[test]
fn refusals() {
    let h = llama(4, 256, 4, 4, false);
    let e = plan(&h, &Options::new(FileType::Q2_K_S), None).unwrap_err();
    assert!(e.to_string().contains("importance matrix"), "{e}");
    let mut o = Options::new(FileType::Q2_K_S);
    o.dry_run = true;
    let p = plan(&h, &o, None).unwrap();
    assert!(p.warnings.iter().any(|w| w.contains("importance matrix")));

    let mut q = h.clone();
    q.tensors[2] = tensor(&q.tensors[2].name.clone(), &q.tensors[2].dims.clone(), GgmlType::Q8_0);
    let e = plan(&q, &Options::new(FileType::Q4_K_M), None).unwrap_err();
    assert!(e.to_string().contains("--allow-requantize"), "{e}");
    let mut o = Options::new(FileType::Q4_K_M);
    o.allow_requantize = true;
    assert!(plan(&q, &o, None).is_ok());

    let mut o = Options::new(FileType::Q4_K_M);
    o.no_fallback = true;
    let e = plan(&h, &o, None).unwrap_err();
    assert!(e.to_string().contains("blk.0.ffn_down.weight"), "{e}");
}

#[test]
fn copy_keeps_types_and_file_type() {
    let h = llama(2, 256, 4, 4, false);
    let p = plan(&h, &Options::for_target(Target::Copy), None).unwrap();
    assert!(p.tensors.iter().all(|t| !t.converts()));
    assert_eq!(p.file_type, 1);
    let mut h2 = h.clone();
    h2.metadata.remove("general.file_type");
    let p = plan(&h2, &Options::for_target(Target::Copy), None).unwrap();
    assert_eq!(p.file_type, 1 | FTYPE_GUESSED);
}

#[test]
fn tensor_type_specs() {
    let rules = parse_tensor_type_file("ATTN_V=q8_0\n  blk\\.1\\D=F16\tffn=iq4_nl ").unwrap();
    assert_eq!(rules.len(), 3);
    assert_eq!(rules[0].pattern, "attn_v");
    assert_eq!(rules[0].ty, GgmlType::Q8_0);
    // lower-casing turns \D into \d, as in llama-quantize
    assert!(rules[1].is_match("blk.12.attn_q.weight"));
    assert!(!rules[1].is_match("blk.1.attn_q.weight"));
    assert!(TensorTypeRule::parse("=q8_0").is_err());
    assert!(TensorTypeRule::parse("x=").is_err());
    assert!(TensorTypeRule::parse("x").is_err());
    assert!(TensorTypeRule::parse("x=q9_9").is_err());
    assert!(TensorTypeRule::parse("(?=x)=q8_0").is_err());
}
