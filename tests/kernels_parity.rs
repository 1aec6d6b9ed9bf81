//! Parity of the quantization kernels with llama.cpp's own ggml.
//!
//! Generates many row sets per type (adversarial patterns, random data at
//! several scales, row lengths that are and are not multiples of 256), with
//! and without an importance matrix (random positive, and one with zeros),
//! runs them through `ggml_quantize_chunk` from the reference venv's
//! libggml-base (tests/parity/oracle.py) and through `quant::quantize_rows`,
//! and requires identical bytes. Dequantization is compared bit for bit on
//! the quantized rows and on random block bytes (every fp16/bf16 value for
//! F16/BF16).

mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ggufkit::gguf::GgmlType;
use ggufkit::quant;

// ------------------------------------------------------------------ data

struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }
    fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn normal(&mut self) -> f32 {
        let u1 = ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }
    fn sign(&mut self) -> f32 {
        if self.below(2) == 0 {
            1.0
        } else {
            -1.0
        }
    }
}

/// Value patterns for a segment of a row.
const PATTERNS: &[&str] = &[
    "zeros",
    "const",
    "tiny1e-7",
    "huge1e3",
    "huge1e4",
    "positive",
    "negative",
    "cauchy",
    "ties",
    "ties127",
    "subnormal",
    "f16max",
    "normal",
    "uniform",
    "spike",
    "sparse",
    "ints",
    "alt_extremes",
    "f16overflow",
    "f16subnormal",
];

fn fill(pattern: &str, r: &mut Rng, out: &mut [f32]) {
    let n = out.len();
    match pattern {
        "zeros" => out.fill(0.0),
        "const" => {
            let c = [1.0f32, -3.0, 1e-3, 0.1, -7.5, 1e-6][r.below(6) as usize];
            out.fill(c);
        }
        "tiny1e-7" => out.iter_mut().for_each(|v| *v = r.normal() * 1e-7),
        "huge1e3" => out.iter_mut().for_each(|v| *v = r.normal() * 1e3),
        "huge1e4" => out.iter_mut().for_each(|v| *v = r.normal() * 1e4),
        "positive" => {
            let s = [0.01f32, 1.0, 30.0][r.below(3) as usize];
            out.iter_mut().for_each(|v| *v = r.normal().abs() * s)
        }
        "negative" => {
            let off = [0.0f32, 0.5, 2.0][r.below(3) as usize];
            out.iter_mut().for_each(|v| *v = -r.normal().abs() - off)
        }
        "cauchy" => out.iter_mut().for_each(|v| *v = (std::f32::consts::PI * (r.uniform() - 0.5)).tan() * 0.05),
        "ties" => {
            // half-integer multiples of a power of two with an extreme that
            // makes the scale that power of two: roundings land on ties
            let e = r.range(-8, 4) as i32;
            let m = [3i64, 4, 8, 15, 16, 31, 32, 63, 127][r.below(9) as usize];
            let unit = 2f32.powi(e);
            out.iter_mut().for_each(|v| *v = r.range(-2 * m, 2 * m) as f32 * 0.5 * unit);
            let k = r.below(n as u64) as usize;
            out[k] = r.sign() * m as f32 * unit;
        }
        "ties127" => {
            let unit = 2f32.powi(r.range(-6, 2) as i32);
            out.iter_mut().for_each(|v| *v = r.range(-254, 254) as f32 * 0.5 * unit);
            let k = r.below(n as u64) as usize;
            out[k] = r.sign() * 127.0 * unit;
        }
        "subnormal" => out.iter_mut().for_each(|v| *v = r.sign() * f32::from_bits(r.below(0x0080_0000) as u32)),
        "f16max" => {
            out.iter_mut().for_each(|v| *v = (r.uniform() * 2.0 - 1.0) * 65504.0);
            let k = r.below(n as u64) as usize;
            out[k] = r.sign() * 65504.0;
        }
        "normal" => {
            let s = [1e-3f32, 0.02, 0.1, 1.0, 10.0][r.below(5) as usize];
            out.iter_mut().for_each(|v| *v = r.normal() * s)
        }
        "uniform" => {
            let s = [1e-2f32, 1.0, 100.0][r.below(3) as usize];
            let off = [0.0f32, 0.5][r.below(2) as usize];
            out.iter_mut().for_each(|v| *v = (r.uniform() * 2.0 - 1.0 + off) * s)
        }
        "spike" => {
            out.iter_mut().for_each(|v| *v = r.normal() * 0.01);
            let k = r.below(n as u64) as usize;
            out[k] = r.sign() * [1.0f32, 100.0, 1e4][r.below(3) as usize];
        }
        "sparse" => out.iter_mut().for_each(|v| *v = if r.below(8) == 0 { r.normal() } else { 0.0 }),
        "ints" => out.iter_mut().for_each(|v| *v = r.range(-8, 8) as f32),
        "alt_extremes" => {
            let m = r.uniform() + 0.5;
            out.iter_mut().for_each(|v| *v = r.normal() * m * 0.3);
            let a = r.below(n as u64) as usize;
            let b = r.below(n as u64) as usize;
            out[a] = m;
            out[b] = -m;
        }
        "f16overflow" => out.iter_mut().for_each(|v| *v = r.normal() * 1e5),
        "f16subnormal" => out.iter_mut().for_each(|v| *v = r.normal() * 3e-6),
        "nonfinite" => {
            out.iter_mut().for_each(|v| *v = r.normal());
            let k = r.below(n as u64) as usize;
            out[k] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::from_bits(0x7F80_0001)][r.below(4) as usize];
        }
        _ => unreachable!("{pattern}"),
    }
}

/// One set of rows of one type, quantized by both implementations (and the
/// result dequantized by both).
struct QuantJob {
    ty: GgmlType,
    label: String,
    n_per_row: usize,
    /// Index into the shared source row sets (the imatrix variants of a set share it).
    src: usize,
    imatrix: Option<Vec<f32>>,
    id: usize,
}

impl QuantJob {
    fn im_path(&self, dir: &Path) -> PathBuf {
        dir.join(format!("q{}.imatrix", self.id))
    }
    fn dst_path(&self, dir: &Path) -> PathBuf {
        dir.join(format!("q{}.ref", self.id))
    }
    fn deq_path(&self, dir: &Path) -> PathBuf {
        dir.join(format!("q{}.deq", self.id))
    }
}

fn src_path(dir: &Path, src: usize) -> PathBuf {
    dir.join(format!("src{src}.f32"))
}

/// Raw blocks dequantized by both implementations.
struct DequantJob {
    ty: GgmlType,
    label: String,
    bytes: Vec<u8>,
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn bytes_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// Rows of one length, each labelled with its pattern.
struct RowSet {
    label: String,
    n_per_row: usize,
    data: Vec<f32>,
    row_labels: Vec<&'static str>,
}

/// Row sets for one type.
fn row_sets(ty: GgmlType, r: &mut Rng) -> Vec<RowSet> {
    let bs = ty.block_size() as usize;
    let (lengths, target): (&[usize], usize) = match bs {
        1 => (&[1, 7, 32, 1000], 65536),
        32 => (&[32, 96, 160, 416, 896, 2048], 262144),
        64 => (&[64, 192, 896, 2048], 131072),
        128 => (&[128, 384, 896, 2048], 131072),
        _ => (&[256, 512, 1536, 4864], 524288),
    };
    let mut sets = Vec::new();
    // rows of a single pattern, 3 of every pattern, at the two shortest lengths
    for &len in &lengths[..2] {
        let len = len.max(32).max(bs);
        let mut set = RowSet { label: format!("uniform:{len}"), n_per_row: len, data: vec![], row_labels: vec![] };
        for p in PATTERNS.iter().chain(["nonfinite"].iter()) {
            for _ in 0..3 {
                let mut row = vec![0f32; len];
                fill(p, r, &mut row);
                set.data.extend_from_slice(&row);
                set.row_labels.push(p);
            }
        }
        sets.push(set);
    }
    // rows mixing patterns per segment (segments of 16..256 values)
    for &len in lengths {
        let nrows = (target / lengths.len() / len).max(2);
        let mut data = vec![0f32; len * nrows];
        for row in data.chunks_exact_mut(len) {
            let seg = [16usize, 32, 64, 256][r.below(4) as usize].min(len);
            for s in row.chunks_mut(seg) {
                let p = PATTERNS[r.below(PATTERNS.len() as u64) as usize];
                fill(p, r, s);
            }
        }
        sets.push(RowSet { label: format!("mixed:{len}"), n_per_row: len, data, row_labels: vec!["mixed"; nrows] });
    }
    if bs == 1 {
        // every kind of f32 bit pattern: NaN payloads, infinities, subnormals, ties
        let mut data: Vec<f32> = (0..65536).map(|_| f32::from_bits(r.next_u64() as u32)).collect();
        for (i, x) in data.iter_mut().enumerate().take(4096) {
            // values exactly halfway between two fp16 / bf16 numbers
            let base = (r.next_u64() as u32) & 0xFFFF_E000;
            *x = f32::from_bits(if i % 2 == 0 { base | 0x1000 } else { (base & 0xFFFF_0000) | 0x8000 });
        }
        sets.push(RowSet { label: "random_bits".into(), n_per_row: 1024, data, row_labels: vec!["random_bits"; 64] });
    }
    sets
}

fn imatrix_variants(n: usize, r: &mut Rng) -> Vec<(&'static str, Vec<f32>)> {
    let random: Vec<f32> = (0..n).map(|_| (r.uniform() * 12.0 - 6.0).exp()).collect();
    let mut zeros: Vec<f32> = (0..n).map(|_| if r.below(3) == 0 { 0.0 } else { r.uniform() * 4.0 }).collect();
    // a whole leading block (and sub-blocks) of zero weights
    zeros.iter_mut().take(40.min(n)).for_each(|v| *v = 0.0);
    vec![("imatrix:random", random), ("imatrix:with_zeros", zeros)]
}

// ------------------------------------------------------------------ test

const QUANT_TYPES: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
    GgmlType::MXFP4,
    GgmlType::NVFP4,
    GgmlType::Q1_0,
    GgmlType::Q2_0,
    GgmlType::TQ1_0,
    GgmlType::TQ2_0,
];

const DEQUANT_ONLY: &[GgmlType] = &[GgmlType::Q8_1, GgmlType::Q8_K];

/// Per-type tallies for the report.
#[derive(Default)]
struct Tally {
    rows: [usize; 2],
    blocks: [usize; 2],
    bytes: [usize; 2],
    bad_blocks: [usize; 2],
    deq_values: usize,
    deq_bad: usize,
}

#[test]
fn kernels_match_ggml() {
    if !common::parity_enabled("kernels_parity::kernels_match_ggml") {
        return;
    }
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut r = Rng(0x6767_7566_6B69_7401);
    let mut sources: Vec<RowSet> = Vec::new();
    let mut qjobs: Vec<QuantJob> = Vec::new();
    let mut djobs: Vec<DequantJob> = Vec::new();

    for &ty in QUANT_TYPES {
        for set in row_sets(ty, &mut r) {
            let (label, n_per_row) = (set.label.clone(), set.n_per_row);
            let mut variants: Vec<(String, Option<Vec<f32>>)> = vec![(label.clone(), None)];
            // an imatrix changes nothing for the float types and the `_ref`-only types,
            // but ggml accepts one: check that too, on the mixed rows
            if !ty.is_float() || label.starts_with("mixed") {
                for (name, im) in imatrix_variants(n_per_row, &mut r) {
                    variants.push((format!("{label} {name}"), Some(im)));
                }
            }
            for (label, imatrix) in variants {
                let id = qjobs.len();
                qjobs.push(QuantJob { ty, label, n_per_row, src: sources.len(), imatrix, id });
            }
            sources.push(set);
        }
    }

    // dequantization of raw bytes: every fp16/bf16 value, random bytes for every block type
    let all16: Vec<u8> = (0..=u16::MAX).flat_map(|h| h.to_le_bytes()).collect();
    for ty in [GgmlType::F16, GgmlType::BF16] {
        djobs.push(DequantJob { ty, label: "all 65536 values".into(), bytes: all16.clone() });
    }
    for &ty in QUANT_TYPES.iter().chain(DEQUANT_ONLY) {
        let ts = ty.type_size() as usize;
        let nblocks = if ty.is_float() { 4096 } else { 2048 * 32 / ty.block_size() as usize };
        let bytes: Vec<u8> = (0..nblocks * ts).map(|_| r.next_u64() as u8).collect();
        djobs.push(DequantJob { ty, label: "random bytes".into(), bytes });
    }

    // ours
    let mut ours: Vec<Vec<u8>> = Vec::with_capacity(qjobs.len());
    for job in &qjobs {
        let src = &sources[job.src].data;
        let size = job.ty.row_size(job.n_per_row as u64).unwrap() as usize * (src.len() / job.n_per_row);
        let mut out = vec![0u8; size];
        let n = quant::quantize_rows(job.ty, src, job.n_per_row, job.imatrix.as_deref(), &mut out)
            .unwrap_or_else(|e| panic!("{} {}: {e}", job.ty, job.label));
        assert_eq!(n, size);
        ours.push(out);
    }
    let t_ours = t0.elapsed();

    // the oracle, one process for all jobs
    let mut manifest = String::new();
    for (i, set) in sources.iter().enumerate() {
        std::fs::write(src_path(dir, i), f32_bytes(&set.data)).unwrap();
    }
    for job in &qjobs {
        let im = match &job.imatrix {
            Some(im) => {
                std::fs::write(job.im_path(dir), f32_bytes(im)).unwrap();
                job.im_path(dir).display().to_string()
            }
            None => "-".into(),
        };
        writeln!(
            manifest,
            "quantize {} {} {} {} {} {}",
            job.ty.id(),
            job.n_per_row,
            src_path(dir, job.src).display(),
            im,
            job.dst_path(dir).display(),
            job.deq_path(dir).display(),
        )
        .unwrap();
    }
    for (i, job) in djobs.iter().enumerate() {
        let (src, dst) = (dir.join(format!("d{i}.bin")), dir.join(format!("d{i}.ref")));
        std::fs::write(&src, &job.bytes).unwrap();
        writeln!(manifest, "dequantize {} {} {}", job.ty.id(), src.display(), dst.display()).unwrap();
    }
    let manifest_path = dir.join("manifest.txt");
    std::fs::write(&manifest_path, manifest).unwrap();
    let oracle = common::repo_root().join("tests/parity/oracle.py");
    let t1 = Instant::now();
    common::run_ref_python(&oracle, &[manifest_path.as_os_str()]);
    let t_oracle = t1.elapsed();

    // compare
    let mut tallies: std::collections::BTreeMap<String, Tally> = Default::default();
    let mut failures = String::new();
    let mut nfail = 0usize;
    for (job, out) in qjobs.iter().zip(&ours) {
        let set = &sources[job.src];
        let src = &set.data;
        let theirs = std::fs::read(job.dst_path(dir)).unwrap();
        let t = tallies.entry(job.ty.name().to_string()).or_default();
        let v = job.imatrix.is_some() as usize;
        t.rows[v] += src.len() / job.n_per_row;
        t.bytes[v] += out.len();
        let ts = job.ty.type_size() as usize;
        let bs = job.ty.block_size() as usize;
        assert_eq!(out.len(), theirs.len(), "{} {}", job.ty, job.label);
        // compare per block (per value for the float types)
        for (b, (o, e)) in out.chunks(ts).zip(theirs.chunks(ts)).enumerate() {
            t.blocks[v] += 1;
            if o != e {
                t.bad_blocks[v] += 1;
                nfail += 1;
                if nfail <= 12 {
                    let x = &src[b * bs..(b + 1) * bs];
                    let row = b * bs / job.n_per_row;
                    let _ = writeln!(
                        failures,
                        "{} [{}] row {} ({}) block {}:\n  ours   {:02x?}\n  ggml   {:02x?}\n  input  {:?}{}",
                        job.ty,
                        job.label,
                        row,
                        set.row_labels[row],
                        (b * bs % job.n_per_row) / bs,
                        o,
                        e,
                        &x[..x.len().min(16)],
                        if x.len() > 16 { " …" } else { "" }
                    );
                }
            }
        }
        // ggml's bytes, dequantized by both
        let deq = bytes_f32(&std::fs::read(job.deq_path(dir)).unwrap());
        compare_dequant(job.ty, &format!("quantized {}", job.label), &theirs, &deq, t, &mut nfail, &mut failures);
    }
    for (i, job) in djobs.iter().enumerate() {
        let theirs = bytes_f32(&std::fs::read(dir.join(format!("d{i}.ref"))).unwrap());
        let t = tallies.entry(job.ty.name().to_string()).or_default();
        compare_dequant(job.ty, &job.label, &job.bytes, &theirs, t, &mut nfail, &mut failures);
    }

    let mut report = String::from(
        "type     | quantize rows/blocks (no imatrix)  | with imatrix          | bytes compared | dequant values | differing\n",
    );
    for (name, t) in &tallies {
        let _ = writeln!(
            report,
            "{name:<8} | {:>6} rows {:>7} blocks | {:>5} rows {:>7} blocks | {:>14} | {:>14} | {} blocks, {} values",
            t.rows[0],
            t.blocks[0],
            t.rows[1],
            t.blocks[1],
            t.bytes[0] + t.bytes[1],
            t.deq_values,
            t.bad_blocks[0] + t.bad_blocks[1],
            t.deq_bad
        );
    }
    let _ = writeln!(
        report,
        "{} quantize jobs, {} dequantize jobs; ours {:.1?}, oracle {:.1?}, total {:.1?}",
        qjobs.len(),
        djobs.len(),
        t_ours,
        t_oracle,
        t0.elapsed()
    );
    println!("{report}");
    assert!(nfail == 0, "{nfail} differences from ggml:\n{failures}\n{report}");
}

/// Dequantizes `bytes` with ours and compares bit for bit with ggml's `theirs`.
fn compare_dequant(
    ty: GgmlType,
    label: &str,
    bytes: &[u8],
    theirs: &[f32],
    t: &mut Tally,
    nfail: &mut usize,
    failures: &mut String,
) {
    let (bs, ts) = (ty.block_size() as usize, ty.type_size() as usize);
    let mut mine = vec![0f32; bytes.len() / ts * bs];
    quant::dequantize_rows(ty, bytes, &mut mine).unwrap();
    assert_eq!(mine.len(), theirs.len(), "{ty} {label}");
    t.deq_values += mine.len();
    for (i, (a, b)) in mine.iter().zip(theirs).enumerate() {
        if a.to_bits() != b.to_bits() {
            t.deq_bad += 1;
            *nfail += 1;
            if *nfail <= 24 {
                let blk = i / bs;
                let _ = writeln!(
                    failures,
                    "{ty} dequantize [{label}] value {i}: ours {a:e} ({:08x}), ggml {b:e} ({:08x}); block {:02x?}",
                    a.to_bits(),
                    b.to_bits(),
                    &bytes[blk * ts..(blk + 1) * ts]
                );
            }
        }
    }
}
