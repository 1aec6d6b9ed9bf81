//! Fuzzes the importance-matrix loader (GGUF and legacy .dat formats).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = ggufkit::imatrix::parse(data) {
        let _ = file.vectors();
    }
});
