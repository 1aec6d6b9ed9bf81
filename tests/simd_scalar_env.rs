//! `GGUFKIT_SCALAR=1` forces the scalar kernels. A test binary of its own,
//! because the variable is read once per process, at the first quantization.

use ggufkit::gguf::GgmlType;
use ggufkit::quant::{self, simd, Backend};

#[test]
fn env_var_forces_the_scalar_path() {
    std::env::set_var("GGUFKIT_SCALAR", "1");
    assert_eq!(simd::active(), Backend::Scalar);
    eprintln!("CPU SIMD backend: {}; active with GGUFKIT_SCALAR=1: {}", simd::detected().name(), simd::active().name());
    // the public entry points now give the scalar kernels' bytes (identical to SIMD ones anyway)
    let src: Vec<f32> = (0..2048).map(|i| ((i * 7919 % 1009) as f32 - 504.0) * 0.003).collect();
    for ty in [GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q8_0, GgmlType::BF16] {
        let size = ty.row_size(1024).unwrap() as usize * 2;
        let (mut a, mut b) = (vec![0u8; size], vec![0u8; size]);
        quant::quantize_rows(ty, &src, 1024, None, &mut a).unwrap();
        quant::quantize_rows_with(Backend::Scalar, ty, &src, 1024, None, &mut b).unwrap();
        assert_eq!(a, b, "{ty}");
        quant::quantize_rows_with(simd::detected(), ty, &src, 1024, None, &mut b).unwrap();
        assert_eq!(a, b, "{ty}: SIMD and scalar bytes");
    }
}
