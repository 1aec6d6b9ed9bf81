//! Kernel throughput, scalar oracle vs SIMD, in MB/s of f32 input
//! (`cargo bench --bench kernels`; see BENCHMARKS.md).
//!
//! One input of 64 rows × 4096 values (1 MiB of f32, model-like N(0, 0.02²)
//! weights with outliers), quantized by `quant::quantize_rows_with` on one
//! thread; decoding benches convert the same amount of f16/bf16 to f32.

use divan::counter::BytesCount;
use divan::Bencher;
use ggufkit::gguf::GgmlType::{self, *};
use ggufkit::quant::{self, simd, Backend};

const N_PER_ROW: usize = 4096;
const ROWS: usize = 64;

const TYPES: &[GgmlType] = &[F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS];
/// Types whose imatrix path differs from the reference one.
const IMATRIX_TYPES: &[GgmlType] = &[Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K];

fn main() {
    eprintln!("kernels: SIMD backend on this CPU = {}", simd::detected().name());
    divan::main();
}

fn input() -> Vec<f32> {
    let mut s = 0x1234_5678_9ABC_DEF0u64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..ROWS * N_PER_ROW)
        .map(|i| {
            // sum of 4 uniforms: a cheap bell curve
            let v = (next() + next() + next() + next() - 2.0) * 0.035;
            if i % 251 == 0 {
                v * 30.0
            } else {
                v
            }
        })
        .collect()
}

fn imatrix() -> Vec<f32> {
    (0..N_PER_ROW).map(|i| 0.2 + ((i * 7919) % 101) as f32 * 0.05).collect()
}

fn run(bencher: Bencher, ty: GgmlType, backend: Backend, with_imatrix: bool) {
    let src = input();
    let im = imatrix();
    let im = with_imatrix.then_some(&im[..]);
    let mut dst = vec![0u8; ty.row_size(N_PER_ROW as u64).unwrap() as usize * ROWS];
    bencher.counter(BytesCount::of_slice(&src)).bench_local(|| {
        quant::quantize_rows_with(backend, ty, divan::black_box(&src), N_PER_ROW, im, &mut dst).unwrap()
    });
}

#[divan::bench(args = TYPES, sample_count = 15)]
fn quantize_scalar(bencher: Bencher, ty: GgmlType) {
    run(bencher, ty, Backend::Scalar, false);
}

#[divan::bench(args = TYPES, sample_count = 15)]
fn quantize_simd(bencher: Bencher, ty: GgmlType) {
    run(bencher, ty, simd::detected(), false);
}

#[divan::bench(args = IMATRIX_TYPES, sample_count = 10)]
fn imatrix_scalar(bencher: Bencher, ty: GgmlType) {
    run(bencher, ty, Backend::Scalar, true);
}

#[divan::bench(args = IMATRIX_TYPES, sample_count = 10)]
fn imatrix_simd(bencher: Bencher, ty: GgmlType) {
    run(bencher, ty, simd::detected(), true);
}

fn decode(bencher: Bencher, ty: GgmlType, backend: Backend) {
    let src = input();
    let mut bytes = vec![0u8; src.len() * 2];
    quant::quantize_rows_with(Backend::Scalar, ty, &src, N_PER_ROW, None, &mut bytes).unwrap();
    let mut out = vec![0f32; src.len()];
    bencher
        .counter(BytesCount::of_slice(&out))
        .bench_local(|| quant::dequantize_rows_with(backend, ty, divan::black_box(&bytes), &mut out).unwrap());
}

#[divan::bench(args = [F16, BF16], sample_count = 30)]
fn decode_scalar(bencher: Bencher, ty: GgmlType) {
    decode(bencher, ty, Backend::Scalar);
}

#[divan::bench(args = [F16, BF16], sample_count = 30)]
fn decode_simd(bencher: Bencher, ty: GgmlType) {
    decode(bencher, ty, simd::detected());
}
