//! Fuzzes the safetensors header parser: any bytes give Ok or an error, never
//! a panic, and every tensor of a successful parse lies inside the input.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = ggufkit::hf::safetensors::parse_header(data) {
        for t in &h.tensors {
            assert!(t.start.checked_add(t.len).is_some_and(|end| end <= data.len()));
            assert!(t.shape.len() <= 8);
        }
    }
});
