//! Fuzzes the model card (README.md YAML front matter) reader used by convert.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ggufkit::convert::modelcard::parse_model_card(text);
    }
});
