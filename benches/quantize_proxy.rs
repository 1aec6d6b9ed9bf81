//! A stand-in for `ggufkit quantize` while that command is being integrated:
//! the same streaming pipeline (`pipeline::write_gguf` over a mmapped
//! `GgufSource`, rayon workers, writer thread) and the same kernels, with a
//! simplified per-tensor type policy. Its output is NOT byte-identical to
//! llama-quantize (the mix rules and metadata are approximations); it exists
//! to measure the pipeline + kernel cost against llama.cpp at equal threads.
//!
//! ```text
//! cargo bench --bench quantize_proxy -- IN.gguf OUT.gguf TYPE THREADS
//! ```
//! TYPE: Q8_0, Q4_0, Q4_K_M, Q6_K (and any plain quantizable type name).
//! Policy: ≥ 2-D `*.weight` tensors that are not norms are quantized; the
//! others copied. Q4_K_M: `output.weight` Q6_K, `attn_v`/`ffn_down` Q6_K in
//! llama.cpp's `use_more_bits` layers, else Q4_K; Q4_0: `output.weight` Q6_K.
//! Rows not a multiple of 256 fall back as llama.cpp does (Q4_K → Q5_0,
//! Q6_K → Q8_0, Q5_K → Q5_1, Q2_K/Q3_K → Q4_0).

use std::path::Path;

use ggufkit::gguf::{GgmlType, GgufFile, Value};
use ggufkit::pipeline::{self, GgufSource, Planned, TensorSource, WriteOptions};
use ggufkit::progress::NoProgress;

fn use_more_bits(i: u64, n: u64) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

fn fallback(ty: GgmlType, row: u64) -> GgmlType {
    if row.is_multiple_of(ty.block_size()) {
        return ty;
    }
    match ty {
        GgmlType::Q2_K | GgmlType::Q3_K => GgmlType::Q4_0,
        GgmlType::Q4_K => GgmlType::Q5_0,
        GgmlType::Q5_K => GgmlType::Q5_1,
        GgmlType::Q6_K => GgmlType::Q8_0,
        _ => GgmlType::F16,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    if args.len() != 4 {
        eprintln!("usage: quantize_proxy IN OUT TYPE THREADS");
        std::process::exit(2);
    }
    let (inp, out, ty_name) = (Path::new(&args[0]), Path::new(&args[1]), args[2].to_uppercase());
    let threads: usize = args[3].parse().expect("THREADS");
    let file = GgufFile::open(inp).expect("open input");
    let src = GgufSource::new(&file);
    let n_layer = file
        .header
        .metadata
        .get_u64(&format!("{}.block_count", file.header.metadata.architecture().unwrap_or("llama")));
    let base = match ty_name.as_str() {
        "Q4_K_M" => GgmlType::Q4_K,
        name => name.parse().expect("type"),
    };
    let plan: Vec<Planned> = src
        .tensors()
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let quantize = t.dims.len() >= 2 && t.name.ends_with("weight") && !t.name.contains("_norm");
            if !quantize {
                return Planned::new(i, t.ty);
            }
            let layer = t.name.strip_prefix("blk.").and_then(|r| r.split('.').next()).and_then(|n| n.parse().ok());
            let ty = match (ty_name.as_str(), t.name.as_str()) {
                ("Q4_K_M" | "Q4_0", "output.weight") => GgmlType::Q6_K,
                ("Q4_K_M", name) if name.ends_with("attn_v.weight") || name.ends_with("ffn_down.weight") => {
                    match (layer, n_layer) {
                        (Some(l), Some(n)) if use_more_bits(l, n) => GgmlType::Q6_K,
                        _ => GgmlType::Q4_K,
                    }
                }
                _ => base,
            };
            Planned::new(i, fallback(ty, t.row_len()))
        })
        .collect();
    let mut metadata = file.header.metadata.clone();
    metadata.set("general.file_type", Value::U32(7));
    let opts = WriteOptions { threads, ..Default::default() };
    let summary = pipeline::write_gguf(&src, &plan, &metadata, out, &[inp], &opts, &NoProgress).expect("quantize");
    eprintln!(
        "quantize_proxy: {} tensors, {} bytes, {:.2}s",
        summary.tensors.len(),
        summary.file_size,
        summary.seconds
    );
}
