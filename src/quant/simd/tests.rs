//! SIMD kernels against the scalar oracle: identical bytes on random,
//! adversarial and non-finite inputs, for every type, with and without an
//! importance matrix.
//!
//! The SIMD-specific cases are skipped (with a message on stderr) when the CPU
//! lacks the features; the scalar-path cases always run.

use super::*;
use crate::gguf::GgmlType;
use crate::quant::testutil::{adversarial_blocks, Rng};
use crate::quant::{dequantize_rows_with, quantize_rows_with, QUANTIZABLE};

/// The SIMD backend to test, or `None` (after saying so) when the CPU has none.
fn simd_backend(test: &str) -> Option<Backend> {
    match detected() {
        Backend::Scalar => {
            eprintln!("{test}: SKIPPED, this CPU lacks AVX2+F16C (only the scalar path exists here)");
            None
        }
        b => Some(b),
    }
}

/// Named row sets of `n` values per row.
fn row_sets(n: usize, seed: u64) -> Vec<(String, Vec<f32>)> {
    let mut r = Rng::new(seed);
    let mut sets = Vec::new();
    // whole rows of one adversarial pattern (blocks of 256 tiled)
    let blocks = adversarial_blocks::<256>(seed ^ 0xA5);
    let mut tiled = Vec::new();
    for (_, b) in &blocks {
        for k in 0..n {
            tiled.push(b[k % 256]);
        }
    }
    sets.push(("adversarial".to_string(), tiled));
    // every 16 values from a different pattern and scale, so that the lanes of
    // a search take different branches
    let small = adversarial_blocks::<16>(seed ^ 0x5A);
    let mut mixed = Vec::new();
    for _ in 0..48 * n / 16 {
        let (_, b) = &small[r.below(small.len() as u64) as usize];
        let scale = [1.0f32, 1e-3, 1e3, 0.02, -1.0][r.below(5) as usize];
        mixed.extend(b.iter().map(|v| v * scale));
    }
    sets.push(("mixed16".to_string(), mixed));
    // plain model-like weights with outliers
    let normal: Vec<f32> = (0..64 * n)
        .map(|i| {
            let v = r.normal() * 0.02;
            if i % 97 == 0 {
                v * 40.0
            } else {
                v
            }
        })
        .collect();
    sets.push(("normal".to_string(), normal));
    // arbitrary finite bit patterns (huge, tiny, subnormal)
    let bits: Vec<f32> = (0..16 * n)
        .map(|_| loop {
            let v = f32::from_bits(r.next_u64() as u32);
            if v.is_finite() {
                break v;
            }
        })
        .collect();
    sets.push(("finite_bits".to_string(), bits));
    // sparse infinities among normal values (NaNs: see `nan_inputs_do_not_panic`)
    let infinite: Vec<f32> = (0..16 * n)
        .map(|_| match r.below(40) {
            0 => f32::INFINITY,
            1 => f32::NEG_INFINITY,
            2 => f32::MAX,
            3 => -f32::MIN_POSITIVE,
            _ => r.normal(),
        })
        .collect();
    sets.push(("infinite".to_string(), infinite));
    // exact ties: half-integers on power-of-two grids, zeros of both signs
    let ties: Vec<f32> = (0..16 * n)
        .map(|_| match r.below(6) {
            0 => 0.0,
            1 => -0.0,
            _ => (r.below(33) as f32 - 16.0) * 0.5 * 2f32.powi(r.below(5) as i32 - 2),
        })
        .collect();
    sets.push(("ties_zeros".to_string(), ties));
    sets
}

fn imatrices(n: usize, seed: u64) -> Vec<(&'static str, Vec<f32>)> {
    let mut r = Rng::new(seed);
    vec![
        ("random", (0..n).map(|_| r.uniform() * 10.0 + 0.01).collect()),
        ("with_zeros", (0..n).map(|i| if i % 5 == 0 { 0.0 } else { r.uniform() }).collect()),
        ("heavy", (0..n).map(|_| r.normal().abs().powi(4) * 100.0).collect()),
    ]
}

/// Quantizes with both backends and requires identical bytes; returns the bytes compared.
fn compare(b: Backend, ty: GgmlType, src: &[f32], n: usize, im: Option<&[f32]>, what: &str) -> usize {
    let size = ty.row_size(n as u64).unwrap() as usize * (src.len() / n);
    let mut want = vec![0u8; size];
    let mut got = vec![0xEEu8; size];
    quantize_rows_with(Backend::Scalar, ty, src, n, im, &mut want).unwrap();
    quantize_rows_with(b, ty, src, n, im, &mut got).unwrap();
    if want != got {
        let row = ty.row_size(n as u64).unwrap() as usize;
        let first = want.iter().zip(&got).position(|(a, b)| a != b).unwrap();
        panic!("{ty} {what}: {} differs from scalar first at byte {first} (row {})", b.name(), first / row);
    }
    size
}

#[test]
fn every_type_matches_scalar() {
    let Some(b) = simd_backend("every_type_matches_scalar") else { return };
    let mut total = 0usize;
    let mut cases = 0usize;
    for &ty in QUANTIZABLE {
        let block = ty.block_size() as usize;
        // 512 is a multiple of every block size; 96 is not of 256
        for n in [512usize, 96] {
            if n % block != 0 {
                continue;
            }
            for (name, src) in row_sets(n, 0x51D + n as u64) {
                let rows = src.len() / n;
                let src = &src[..rows * n];
                total += compare(b, ty, src, n, None, &format!("{name} n={n}"));
                cases += 1;
                for (iname, im) in imatrices(n, 0x1A7 + n as u64) {
                    total += compare(b, ty, src, n, Some(&im), &format!("{name} n={n} imatrix={iname}"));
                    cases += 1;
                }
            }
        }
    }
    eprintln!("every_type_matches_scalar: {cases} cases, {total} bytes identical");
}

/// NaN inputs: which NaN a float operation returns when both operands are
/// NaN (and so the payload bits that `nearest_int` and the fp16 conversion
/// then read) is not fixed by Rust, nor by C: compilers may swap the operands
/// of `+` and `*`. Bytes for NaN inputs are therefore not compared; both
/// paths must only run without panicking and fill the output.
#[test]
fn nan_inputs_do_not_panic() {
    let mut r = Rng::new(0x7A7);
    let n = 512;
    let src: Vec<f32> = (0..8 * n)
        .map(|_| match r.below(30) {
            0 => f32::NAN,
            1 => f32::from_bits(0xFFC1_2345),
            2 => f32::from_bits(0x7F80_0001),
            3 => f32::INFINITY,
            _ => r.normal(),
        })
        .collect();
    let im: Vec<f32> = (0..n).map(|i| if i % 7 == 0 { f32::NAN } else { 1.0 }).collect();
    let mut differing = 0;
    for &ty in QUANTIZABLE {
        for imatrix in [None, Some(&im[..])] {
            let size = ty.row_size(n as u64).unwrap() as usize * 8;
            let mut a = vec![0u8; size];
            let mut b = vec![0u8; size];
            quantize_rows_with(Backend::Scalar, ty, &src, n, imatrix, &mut a).unwrap();
            quantize_rows_with(detected(), ty, &src, n, imatrix, &mut b).unwrap();
            differing += (a != b) as usize;
        }
    }
    eprintln!(
        "nan_inputs_do_not_panic: {differing} of {} type/imatrix cases differ in NaN-derived bytes",
        2 * QUANTIZABLE.len()
    );
}

#[test]
fn searches_match_scalar_on_adversarial_groups() {
    let Some(_) = simd_backend("searches_match_scalar_on_adversarial_groups") else { return };
    let Some(k) = Avx2::new() else { return };
    let g16 = adversarial_blocks::<16>(77);
    let g32 = adversarial_blocks::<32>(78);
    let mut r = Rng::new(79);
    let mut checked = 0;
    for round in 0..200 {
        // 16 groups, each a random adversarial pattern
        let mut x16 = [[0f32; 16]; 16];
        let mut x32 = [[0f32; 32]; 8];
        for g in x16.iter_mut() {
            *g = g16[r.below(g16.len() as u64) as usize].1;
        }
        for g in x32.iter_mut() {
            *g = g32[r.below(g32.len() as u64) as usize].1;
        }
        let w16 = x16.map(|g| g.map(|v| if round % 2 == 0 { v.abs() } else { v * v + 0.5 }));
        let w32 = x32.map(|g| g.map(|v| v.abs() + 0.25));
        let params = [
            QkxSearch { nmax: 3, rmin: -0.5, rdelta: 0.1, nstep: 15, use_mad: true },
            QkxSearch { nmax: 15, rmin: -1.0, rdelta: 0.1, nstep: 20, use_mad: false },
            QkxSearch { nmax: 31, rmin: -0.9, rdelta: 0.05, nstep: 36, use_mad: false },
        ];
        for p in &params {
            for v3 in [false, true] {
                same_qkx(k, p, v3, &x16, &w16, &format!("qkx round {round}"));
                same_qkx(k, p, v3, &x32, &w32, &format!("qkx32 round {round}"));
                checked += 2;
            }
        }
        for nmax in [4, 8, 16, 32] {
            same_qx(k, nmax, &x16, &w16, &format!("qx nmax={nmax} round {round}"));
            same_qx(k, nmax, &x32, &w32, &format!("qx32 nmax={nmax} round {round}"));
            checked += 2;
        }
        let (mut la, mut sa) = ([[0u8; 16]; 16], [0f32; 16]);
        let (mut lb, mut sb) = ([[0u8; 16]; 16], [0f32; 16]);
        Scalar.q3(4, &x16, &mut la, &mut sa);
        k.q3(4, &x16, &mut lb, &mut sb);
        assert_eq!(la, lb, "q3 levels round {round}");
        assert_eq!(sa.map(f32::to_bits), sb.map(f32::to_bits), "q3 scales");
        checked += 1;
    }
    eprintln!("searches_match_scalar_on_adversarial_groups: {checked} batches identical");
}

#[test]
fn half_conversions_match_scalar() {
    let Some(b) = simd_backend("half_conversions_match_scalar") else { return };
    // every fp16 / bf16 value, decoded
    let all: Vec<u8> = (0..=u16::MAX).flat_map(|h| h.to_le_bytes()).collect();
    for ty in [GgmlType::F16, GgmlType::BF16] {
        let mut want = vec![0f32; 65536];
        let mut got = vec![0f32; 65536];
        dequantize_rows_with(Backend::Scalar, ty, &all, &mut want).unwrap();
        dequantize_rows_with(b, ty, &all, &mut got).unwrap();
        for h in 0..65536 {
            assert_eq!(want[h].to_bits(), got[h].to_bits(), "{ty} decode {h:04x}");
        }
    }
    // encoding: random bit patterns (NaNs with payloads, subnormals, overflow), a dense
    // sweep of the fp16 range, and odd lengths for the scalar tails
    let mut r = Rng::new(0xF16);
    let mut src: Vec<f32> = (0..1 << 20).map(|_| f32::from_bits(r.next_u64() as u32)).collect();
    let mut bits = 0x3000_0000u32;
    while bits < 0x4800_0000 {
        src.push(f32::from_bits(bits));
        src.push(-f32::from_bits(bits + 0x1F));
        bits += 0x3FF;
    }
    src.extend([0.0, -0.0, 65504.0, 65520.0, 65519.99, f32::INFINITY, f32::NEG_INFINITY, f32::NAN]);
    src.extend((0..64).map(|i| 2f32.powi(-24) * (i as f32 * 0.25)));
    for len in [src.len(), 13, 7, 1] {
        let src = &src[..len];
        for ty in [GgmlType::F16, GgmlType::BF16] {
            compare(b, ty, src, 1, None, &format!("encode len {len}"));
        }
    }
}

#[test]
fn env_var_selects_scalar() {
    assert_eq!(backend_for_env(Some("1"), Backend::Avx2), Backend::Scalar);
    assert_eq!(backend_for_env(Some("yes"), Backend::Avx2), Backend::Scalar);
    assert_eq!(backend_for_env(Some("0"), Backend::Avx2), Backend::Avx2);
    assert_eq!(backend_for_env(Some(""), Backend::Avx2), Backend::Avx2);
    assert_eq!(backend_for_env(None, Backend::Avx2), Backend::Avx2);
    assert_eq!(backend_for_env(None, Backend::Scalar), Backend::Scalar);
}

#[test]
fn scalar_backend_is_always_available() {
    // the forced scalar path gives the same bytes as the default entry point
    let src: Vec<f32> = (0..1024).map(|i| ((i * 7919 % 1009) as f32 - 504.0) * 0.003).collect();
    for ty in [GgmlType::Q4_K, GgmlType::Q8_0, GgmlType::F16] {
        let size = ty.row_size(512).unwrap() as usize * 2;
        let mut a = vec![0u8; size];
        let mut c = vec![0u8; size];
        quantize_rows_with(Backend::Scalar, ty, &src, 512, None, &mut a).unwrap();
        crate::quant::quantize_rows(ty, &src, 512, None, &mut c).unwrap();
        assert_eq!(a, c, "{ty}");
    }
}

#[test]
fn iq4_indices_match_scalar_at_every_midpoint() {
    let Some(_) = simd_backend("iq4_indices_match_scalar_at_every_midpoint") else { return };
    let Some(k) = Avx2::new() else { return };
    let kv = crate::quant::iq4::KVALUES_IQ4NL.map(|v| v as f32);
    // table values, exact midpoints and their float neighbours, out of range, non-finite
    let mut ys = vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -200.0, 200.0, 0.0, -0.0];
    for i in 0..16 {
        ys.push(kv[i]);
        if i < 15 {
            let m = (kv[i] + kv[i + 1]) * 0.5;
            ys.extend([m, f32::from_bits(m.to_bits() + 1), f32::from_bits(m.to_bits() - 1)]);
        }
    }
    let mut r = Rng::new(5);
    ys.extend((0..4096).map(|_| (r.uniform() - 0.5) * 300.0));
    while ys.len() % 32 != 0 {
        ys.push(r.normal() * 50.0);
    }
    for chunk in ys.chunks_exact(32) {
        let x: [f32; 32] = chunk.try_into().unwrap();
        for id in [1.0f32, -1.0, 0.5, 3.0] {
            let (mut a, mut b) = ([0u8; 16], [0u8; 16]);
            Scalar.iq4_indices(&x, id, &mut a);
            k.iq4_indices(&x, id, &mut b);
            assert_eq!(a, b, "x = {x:?} id = {id}");
        }
    }
}

#[test]
fn first_non_finite_matches_scalar() {
    let Some(_) = simd_backend("first_non_finite_matches_scalar") else { return };
    let Some(k) = Avx2::new() else { return };
    let mut x: Vec<f32> = (0..1000).map(|i| i as f32 * 1e30).collect(); // overflows to inf from i = 341
    assert_eq!(k.first_non_finite(&x), Scalar.first_non_finite(&x));
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::from_bits(0x7F80_0001)] {
        for pos in [0usize, 5, 31, 32, 63, 64, 500, 998, 999] {
            x = vec![f32::MAX; 1000];
            x[pos] = bad;
            x[999] = if pos == 999 { bad } else { -0.0 };
            for len in [1000, 999, 33, 32, 7] {
                assert_eq!(
                    k.first_non_finite(&x[..len]),
                    Scalar.first_non_finite(&x[..len]),
                    "{bad} at {pos} len {len}"
                );
            }
        }
    }
    assert_eq!(k.first_non_finite(&[]), None);
}

/// Blocks made for the Q8_0 / Q4_0 kernels that work across 8 blocks: the
/// largest magnitude reached by both signs in either order, by one sign
/// several times, zero blocks of both signs, subnormal blocks, exact `.5`
/// ties of `x·id`, infinities; shuffled so that every group of 8 mixes them.
fn legacy_group_blocks(seed: u64, count: usize) -> Vec<f32> {
    let mut r = Rng::new(seed);
    let mut out = Vec::with_capacity(count * 32);
    for _ in 0..count {
        let scale = [1.0f32, 2f32.powi(-3), 2f32.powi(7), 1e-3, 3.0e-40][r.below(5) as usize];
        let a = (r.below(16) + 1) as f32;
        let mut b: Vec<f32> = (0..32).map(|_| (r.below(2 * a as u64 + 1) as f32 - a) * 0.5 * scale).collect();
        let (i, j) = (r.below(32) as usize, r.below(32) as usize);
        match r.below(9) {
            0 => {
                b[i] = a * scale; // +amax first or second, -amax elsewhere
                b[j] = -a * scale;
            }
            1 => b.iter_mut().for_each(|v| *v = 0.0),
            2 => b.iter_mut().for_each(|v| *v = -0.0),
            3 => {
                b.iter_mut().for_each(|v| *v = if r.below(2) == 0 { 0.0 } else { -0.0 });
                b[i] = -f32::from_bits(1);
            }
            4 => b[i] = if r.below(2) == 0 { f32::INFINITY } else { f32::NEG_INFINITY },
            5 => {
                b[i] = f32::INFINITY;
                b[j] = f32::NEG_INFINITY;
            }
            6 => b.iter_mut().for_each(|v| *v = a * scale * if r.below(2) == 0 { 1.0 } else { -1.0 }),
            7 => b.iter_mut().for_each(|v| {
                *v = f32::from_bits(r.below(0x007F_FFFF) as u32) * if r.below(2) == 0 { 1.0 } else { -1.0 }
            }),
            _ => {}
        }
        out.extend(b);
    }
    out
}

#[test]
fn q8_0_q4_0_across_blocks_match_scalar() {
    let Some(b) = simd_backend("q8_0_q4_0_across_blocks_match_scalar") else { return };
    for seed in 0..40 {
        // 8 groups of 8 blocks and a tail of 5 blocks, as one row
        let x = legacy_group_blocks(seed, 69);
        for ty in [GgmlType::Q8_0, GgmlType::Q4_0] {
            compare(b, ty, &x, x.len(), None, &format!("group blocks seed {seed}"));
            compare(b, ty, &x, 32, None, &format!("group blocks (rows of one block) seed {seed}"));
        }
        // one NaN in a group: that group goes block by block
        let mut y = x.clone();
        let at = (seed as usize * 37) % y.len();
        y[at] = f32::NAN;
        for ty in [GgmlType::Q8_0, GgmlType::Q4_0] {
            compare(b, ty, &y, y.len(), None, &format!("group blocks with a NaN, seed {seed}"));
        }
    }
}

/// The fused F16 / BF16 → Q8_0 / Q4_0 / F16 kernels against decoding to f32
/// then the scalar oracle, on both backends; `Some(false)` exactly when a
/// value is not finite.
#[test]
fn fused_half_kernels_match_decode_then_quantize() {
    let backends: Vec<Backend> = [Some(Backend::Scalar), simd_backend("fused_half_kernels_match_decode_then_quantize")]
        .into_iter()
        .flatten()
        .collect();
    let mut r = Rng::new(7);
    let mut inputs: Vec<(String, Vec<f32>)> = row_sets(256, 11);
    inputs.push(("group blocks".into(), legacy_group_blocks(3, 77)));
    for (name, x) in inputs {
        for src_ty in [GgmlType::F16, GgmlType::BF16] {
            // the stored values: x rounded to the source type (NaN and inf kept)
            let mut stored = vec![0u8; 2 * x.len()];
            quantize_rows_with(Backend::Scalar, src_ty, &x, x.len(), None, &mut stored).unwrap();
            let mut decoded = vec![0f32; x.len()];
            dequantize_rows_with(Backend::Scalar, src_ty, &stored, &mut decoded).unwrap();
            let finite = decoded.iter().all(|v| v.is_finite());
            for ty in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::F16] {
                if !fuses(src_ty, ty) {
                    assert_eq!(encode_stored_half(Backend::Scalar, src_ty, &stored, ty, &mut [0u8; 4]), None);
                    continue;
                }
                let size = ty.row_size(x.len() as u64).unwrap() as usize;
                let mut want = vec![0u8; size];
                quantize_rows_with(Backend::Scalar, ty, &decoded, x.len(), None, &mut want).unwrap();
                for &b in &backends {
                    let mut got = vec![0xEEu8; size];
                    let res = encode_stored_half(b, src_ty, &stored, ty, &mut got);
                    assert_eq!(res, Some(finite), "{name} {src_ty} → {ty} ({})", b.name());
                    if finite {
                        assert!(want == got, "{name} {src_ty} → {ty} ({}): differs from decode + scalar", b.name());
                    }
                }
            }
        }
        // a single non-finite value anywhere is found
        let mut bits: Vec<u8> = (0..2 * 32 * 9).map(|_| r.below(256) as u8).collect();
        for h in bits.chunks_exact_mut(2) {
            h[1] &= 0x3F; // finite in both F16 and BF16
        }
        for &b in &backends {
            let at = 2 * r.below(32 * 9) as usize;
            let mut y = bits.clone();
            y[at + 1] = 0x7F;
            y[at] = 0xC0; // F16: 0x7FC0 is NaN; BF16: NaN
            let mut out = vec![0u8; GgmlType::Q8_0.row_size(32 * 9).unwrap() as usize];
            assert_eq!(encode_stored_half(b, GgmlType::BF16, &y, GgmlType::Q8_0, &mut out), Some(false));
            assert_eq!(encode_stored_half(b, GgmlType::F16, &y, GgmlType::Q8_0, &mut out), Some(false));
            assert_eq!(encode_stored_half(b, GgmlType::BF16, &bits, GgmlType::Q8_0, &mut out), Some(true));
            let mut out16 = vec![0u8; y.len()];
            assert_eq!(encode_stored_half(b, GgmlType::BF16, &y, GgmlType::F16, &mut out16), Some(false));
            assert_eq!(encode_stored_half(b, GgmlType::BF16, &bits, GgmlType::F16, &mut out16), Some(true));
        }
    }
}

/// Groups that push the AVX-512 searches off their float-domain shortcut:
/// ranges so narrow (or subnormal) that the inverse scale overflows, all
/// negative groups whose largest value is almost zero (the fitted minimum
/// then lies above it), and two-valued groups one ulp apart.
fn wide_search_groups<const N: usize>(seed: u64) -> Vec<[f32; N]> {
    let mut r = Rng::new(seed);
    let mut out: Vec<[f32; N]> = adversarial_blocks::<N>(seed).into_iter().map(|(_, b)| b).collect();
    for _ in 0..4 {
        let a = r.normal();
        out.push(std::array::from_fn(|i| if i % 3 == 0 { f32::from_bits(a.to_bits() + 1) } else { a }));
        out.push(std::array::from_fn(|i| if i == 7 { -1e-30 } else { -r.normal().abs() - 1.0 }));
        out.push(std::array::from_fn(|i| if i == 2 { -f32::MIN_POSITIVE * 1e-3 } else { -r.uniform() * 1e-3 }));
        out.push(std::array::from_fn(|_| f32::from_bits(r.below(4) as u32)));
        out.push(std::array::from_fn(|i| if i % 2 == 0 { 1e-45 } else { 0.0 }));
        out.push(std::array::from_fn(|_| (r.uniform() - 0.5) * 2.0 * 3e38));
        out.push(std::array::from_fn(|i| if i == 0 { 3e38 } else { -3e38 * r.uniform() }));
        // an outlier with zero weight (index 0, see `weight`) below a tight
        // cluster: the fitted minimum lands just under the cluster's top, so
        // the next trial's inverse scale is huge and the outlier's level leaves
        // nearest_int's exact range
        let c = r.normal();
        let eps = c.abs().max(1.0) * 1e-6 * (1 + r.below(8)) as f32;
        out.push(std::array::from_fn(|i| match i {
            0 => -1000.0 * (1.0 + r.uniform()),
            _ if i % 2 == 0 => c + eps,
            _ => c,
        }));
    }
    out
}

/// The 16-lane (AVX-512) searches against the scalar oracle, on batches of 16
/// groups as Q6_K / Q2_K (16 × 16) and four Q4_K / Q5_K super-blocks
/// (32 × 32, two batches side by side) present them, with every k-quant's search parameters and
/// weights of both kinds (|x|-like and imatrix-like, zeros included).
#[test]
fn wide_searches_match_scalar() {
    let Some(_) = simd_backend("wide_searches_match_scalar") else { return };
    let Some(k) = Avx2::new().filter(|k| k.uses_avx512()) else {
        eprintln!("wide_searches_match_scalar: SKIPPED, this CPU lacks AVX-512 (or GGUFKIT_NO_AVX512 is set)");
        return;
    };
    let g16 = wide_search_groups::<16>(0x16);
    let g32 = wide_search_groups::<32>(0x32);
    let mut r = Rng::new(0x512);
    let params = [
        QkxSearch { nmax: 3, rmin: -0.5, rdelta: 0.1, nstep: 15, use_mad: true },
        QkxSearch { nmax: 3, rmin: -0.9, rdelta: 0.05, nstep: 36, use_mad: false },
        QkxSearch { nmax: 15, rmin: -1.0, rdelta: 0.1, nstep: 20, use_mad: false },
        QkxSearch { nmax: 31, rmin: -0.5, rdelta: 0.1, nstep: 15, use_mad: false },
        QkxSearch { nmax: 31, rmin: -0.9, rdelta: 0.05, nstep: 36, use_mad: false },
    ];
    let mut checked = 0;
    for round in 0..300 {
        let x16: [[f32; 16]; 16] = std::array::from_fn(|_| g16[r.below(g16.len() as u64) as usize]);
        // 32 groups of 32: two batches of 16 searched side by side (qkx)
        let x32: [[f32; 32]; 32] = std::array::from_fn(|_| g32[r.below(g32.len() as u64) as usize]);
        let weight = |v: f32, i: usize| match round % 4 {
            0 => v.abs(),
            1 => v * v,
            2 => (i % 5) as f32 * 0.7 * (0.01 + v * v).sqrt(),
            _ => v.abs() + 0.25,
        };
        let w16 = x16.map(|g| std::array::from_fn(|i| weight(g[i], i)));
        let w32 = x32.map(|g| std::array::from_fn(|i| weight(g[i], i)));
        for p in &params {
            for v3 in [false, true] {
                same_qkx(k, p, v3, &x16, &w16, &format!("qkx16 round {round}"));
                same_qkx(k, p, v3, &x32, &w32, &format!("qkx32 round {round}"));
                checked += 2;
            }
        }
        for nmax in [4, 8, 16, 32] {
            same_qx(k, nmax, &x16, &w16, &format!("qx16 nmax={nmax} round {round}"));
            same_qx(k, nmax, &x32, &w32, &format!("qx32 nmax={nmax} round {round}"));
            checked += 2;
        }
    }
    eprintln!("wide_searches_match_scalar: {checked} batches of 16 groups identical");
}

/// `k.qkx` against the scalar oracle on one batch of groups: levels, scales
/// and mins bit for bit.
fn same_qkx<K: Kernels, const N: usize, const M: usize>(
    k: K,
    p: &QkxSearch,
    v3: bool,
    x: &[[f32; N]; M],
    w: &[[f32; N]; M],
    what: &str,
) {
    let (mut la, mut sa, mut ma) = ([[0u8; N]; M], [0f32; M], [0f32; M]);
    let (mut lb, mut sb, mut mb) = ([[0u8; N]; M], [0f32; M], [0f32; M]);
    Scalar.qkx(p, v3, x, w, &mut la, &mut sa, &mut ma);
    k.qkx(p, v3, x, w, &mut lb, &mut sb, &mut mb);
    assert_eq!(la, lb, "{what} levels {p:?} v3={v3}");
    assert_eq!(sa.map(f32::to_bits), sb.map(f32::to_bits), "{what} scales {p:?} v3={v3}");
    assert_eq!(ma.map(f32::to_bits), mb.map(f32::to_bits), "{what} mins {p:?} v3={v3}");
}

/// `k.qx` against the scalar oracle on one batch of groups: levels and
/// scales bit for bit.
fn same_qx<K: Kernels, const N: usize, const M: usize>(
    k: K,
    nmax: i32,
    x: &[[f32; N]; M],
    w: &[[f32; N]; M],
    what: &str,
) {
    let (mut la, mut sa) = ([[0u8; N]; M], [0f32; M]);
    let (mut lb, mut sb) = ([[0u8; N]; M], [0f32; M]);
    Scalar.qx(nmax, x, w, &mut la, &mut sa);
    k.qx(nmax, x, w, &mut lb, &mut sb);
    assert_eq!(la, lb, "{what} levels");
    assert_eq!(sa.map(f32::to_bits), sb.map(f32::to_bits), "{what} scales");
}

/// Dequantization (every type, random and adversarial blocks) and the error
/// sums (random rows of every remainder length, subnormals, ±0) give the same
/// bits on the SIMD backend as on the scalar one.
#[test]
fn dequantize_and_error_sums_match_scalar() {
    let Some(b) = simd_backend("dequantize_and_error_sums_match_scalar") else { return };
    for &ty in QUANTIZABLE {
        let n = 512usize;
        if !n.is_multiple_of(ty.block_size() as usize) {
            continue;
        }
        for (name, src) in row_sets(n, 0xDE0 + ty as u64) {
            let rows = src.len() / n;
            let src = &src[..rows * n];
            if src.iter().any(|v| !v.is_finite()) {
                continue;
            }
            let mut q = vec![0u8; rows * ty.row_size(n as u64).unwrap() as usize];
            quantize_rows_with(Backend::Scalar, ty, src, n, None, &mut q).unwrap();
            let (mut a, mut c) = (vec![0f32; src.len()], vec![0f32; src.len()]);
            dequantize_rows_with(Backend::Scalar, ty, &q, &mut a).unwrap();
            dequantize_rows_with(b, ty, &q, &mut c).unwrap();
            assert!(a.iter().zip(&c).all(|(x, y)| x.to_bits() == y.to_bits()), "{ty} {name}: dequantize differs");
            let scalar = Scalar.error_sums(src, &a);
            let simd = crate::quant::error_sums(src, &c);
            assert_eq!(scalar.map(f64::to_bits), simd.map(f64::to_bits), "{ty} {name}: error sums differ");
        }
    }
    let mut r = Rng::new(0xE55);
    for len in 0..40 {
        let x: Vec<f32> = (0..len).map(|i| if i % 7 == 3 { 1e-40 } else { r.normal() }).collect();
        let y: Vec<f32> = x.iter().enumerate().map(|(i, v)| if i % 5 == 0 { -0.0 } else { v * 0.99 }).collect();
        let s = Scalar.error_sums(&x, &y);
        assert_eq!(s.map(f64::to_bits), crate::quant::error_sums(&x, &y).map(f64::to_bits), "len {len}");
        // The figures themselves: a plain f64 loop agrees to rounding.
        let (mut e, mut rr, mut m) = (0f64, 0f64, 0f64);
        for (&a, &b) in x.iter().zip(&y) {
            let d = a as f64 - b as f64;
            e += d * d;
            rr += a as f64 * a as f64;
            m = m.max(d.abs());
        }
        assert!((s[0] - e).abs() <= 1e-12 * e.max(1e-300) && (s[1] - rr).abs() <= 1e-12 * rr.max(1e-300) && s[2] == m);
    }
}
