//! Fuzzes the validation of `model.safetensors.index.json`: shard names that
//! pass are plain file names (no path traversal).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    if let Ok(map) = ggufkit::hf::safetensors::parse_index_map(&v) {
        for file in map.values() {
            assert!(!file.is_empty() && !file.contains('/') && !file.contains('\\') && file != "..");
        }
    }
});
