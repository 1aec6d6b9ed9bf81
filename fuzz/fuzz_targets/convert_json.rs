//! Fuzzes what `convert` makes of a model directory's JSON files: the input
//! is split at 0xFF bytes into config.json, tokenizer.json and
//! tokenizer_config.json, written beside a fixed tiny safetensors file, and
//! the directory is opened for conversion (every check, no output). Any
//! content must give Ok or an error, never a panic.
#![no_main]
use std::path::PathBuf;
use std::sync::OnceLock;

use ggufkit::convert::{ConvertOptions, HfToGguf, OutType};
use libfuzzer_sys::fuzz_target;

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" };
        let d = PathBuf::from(base).join(format!("ggufkit-fuzz-convert-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        // One F32 tensor; the fuzzed config decides what else is expected.
        let header = br#"{"model.embed_tokens.weight":{"dtype":"F32","shape":[8,8],"data_offsets":[0,256]}}"#;
        let mut st = (header.len() as u64).to_le_bytes().to_vec();
        st.extend_from_slice(header);
        st.extend(std::iter::repeat(0u8).take(256));
        std::fs::write(d.join("model.safetensors"), st).unwrap();
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let d = dir();
    let mut parts = data.split(|&b| b == 0xFF);
    for name in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        let p = d.join(name);
        match parts.next() {
            Some(bytes) if !bytes.is_empty() => std::fs::write(&p, bytes).unwrap(),
            _ => {
                let _ = std::fs::remove_file(&p);
            }
        }
    }
    let opts = ConvertOptions { outtype: OutType::F32, threads: Some(1), vocab_pre: Some("gpt-2".into()) };
    let _ = HfToGguf::open(d, &opts, &ggufkit::progress::NoProgress);
});
