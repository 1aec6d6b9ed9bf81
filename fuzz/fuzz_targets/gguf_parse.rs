//! Fuzzes the GGUF parser: any bytes must give Ok or an error, never a panic,
//! and a successful parse must describe tensors that lie inside the input.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(g) = ggufkit::gguf::parse(data) {
        for t in &g.tensors {
            let end = g.data_offset + t.offset + t.size;
            assert!(end <= data.len() as u64 || t.size == 0);
            assert_eq!(t.ty.tensor_size(&t.dims), Some(t.size));
        }
        // Summaries of every value must not panic either.
        for (_, v) in g.metadata.iter() {
            let _ = v.summary(4);
        }
    }
});
