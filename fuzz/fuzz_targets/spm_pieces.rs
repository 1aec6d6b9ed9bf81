//! Fuzzes the SentencePiece `tokenizer.model` (protobuf) reader.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ggufkit::convert::spm::parse_pieces(data);
});
