//! `merge` and GGUF LoRA adapters against the references, on the fixture
//! models of scripts/gen_fixtures.py with the PEFT adapters of
//! scripts/gen_adapters.py:
//!
//! * merged tensors vs PEFT's merge formulas in float64 (numpy, in
//!   tests/parity/merge_check.py): f32 outputs within 4·2⁻²⁴·M (8 with DoRA;
//!   M = the magnitude of the summed terms), 16-bit outputs equal to the
//!   correctly rounded float64 result except where that bound straddles a
//!   rounding boundary; unchanged tensors byte-identical to the base;
//! * our GGUF LoRA adapter byte-identical to llama.cpp's convert_lora_to_gguf.py;
//! * llama.cpp running base + our GGUF adapter vs our merged GGUF: same
//!   greedy tokens, logits within 2e-3;
//! * one-pass `merge -o x.gguf --outtype Q4_K_M` byte-identical to merging to
//!   an f32 directory, `convert --outtype f32`, then `quantize Q4_K_M`.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use common::{adapters_dir, fixtures_dir, ggufkit_ok, ref_src, run_ref_python};
use serde_json::Value;

fn base(name: &str) -> PathBuf {
    fixtures_dir().join(name)
}

fn adapter(spec: &str) -> String {
    adapters_dir().join(spec).display().to_string()
}

fn check(args: &[&OsStr]) -> Value {
    let script = common::repo_root().join("tests/parity/merge_check.py");
    let out = run_ref_python(&script, args);
    serde_json::from_str(out.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("bad JSON {e}: {out}"))
}

fn os<S: AsRef<OsStr> + ?Sized>(s: &S) -> &OsStr {
    s.as_ref()
}

const Q: &str = "qwen2.5-coder-bf16-sharded";

/// (base fixture, adapters with weights, --dtype)
const CASES: &[(&str, &[&str], Option<&str>)] = &[
    (Q, &["q-plain"], None),
    (Q, &["q-plain"], Some("f32")),
    (Q, &["q-rslora"], None),
    (Q, &["q-patterns"], Some("f32")),
    (Q, &["q-patterns"], None),
    (Q, &["q-fifo"], None),
    (Q, &["q-dora"], None),
    (Q, &["q-dora"], Some("f32")),
    (Q, &["q-embed"], None),
    (Q, &["q-embed-dora"], Some("f32")),
    (Q, &["q-embed-dora"], None),
    (Q, &["q-mts"], None),
    (Q, &["q-bias"], Some("f32")),
    (Q, &["q-bias"], None),
    (Q, &["q-plain=0.5", "q-rslora=1.5"], None),
    (Q, &["q-plain=0.7", "q-dora"], Some("f32")),
    (Q, &["q-plain=0.7", "q-dora"], Some("f16")),
    ("qwen2-bf16-tied", &["t-lmhead"], None),
    ("qwen2-bf16-tied", &["t-embed"], None),
    ("qwen2-bf16-tied", &["t-mts"], None),
    ("llama3-bf16-sharded", &["l-plain"], None),
    ("qwen2-f32", &["f-plain"], None),
    ("qwen3-f16-tied", &["h-plain"], None),
];

#[test]
fn merged_tensors_match_peft_formulas() {
    if !common::parity_enabled("merge_parity::merged_tensors_match_peft_formulas") {
        return;
    }
    let scratch = common::Scratch::new("merge-merged_tensors_match_peft_formulas");
    let mut report = Vec::new();
    let mut totals = (0u64, 0u64, 0u64, 0u64);
    for (i, (b, adapters, dtype)) in CASES.iter().enumerate() {
        let out = scratch.join(format!("case{i}"));
        let mut args: Vec<String> = vec!["merge".into(), base(b).display().to_string(), "--json".into()];
        for a in *adapters {
            args.push("--lora".into());
            args.push(adapter(a));
        }
        args.push("-o".into());
        args.push(out.display().to_string());
        if let Some(d) = dtype {
            args.push("--dtype".into());
            args.push(d.to_string());
        }
        let osargs: Vec<&OsStr> = args.iter().map(os).collect();
        let run = ggufkit_ok(&osargs);
        let summary: Value = serde_json::from_str(&run.stdout).expect("--json summary");
        let mut check_args: Vec<String> =
            vec!["merged".into(), base(b).display().to_string(), out.display().to_string()];
        check_args.extend(adapters.iter().map(|a| adapter(a)));
        let r = check(&check_args.iter().map(os).collect::<Vec<_>>());
        let label = format!("{b} + {} ({})", adapters.join(" + "), dtype.unwrap_or("base dtype"));
        assert!(r["problems"].as_array().unwrap().is_empty(), "{label}: {:#}", r["problems"]);
        let want_dtype = match dtype {
            Some("f32") => "float32",
            Some("f16") => "float16",
            _ => match *b {
                "qwen2-f32" => "float32",
                "qwen3-f16-tied" => "float16",
                _ => "bfloat16",
            },
        };
        assert_eq!(r["config_torch_dtype"], want_dtype, "{label}");
        // A tied base stays tied unless a side was replaced (modules_to_save): then
        // lm_head is its own tensor and config.json says so.
        assert_eq!(summary["untied"], r["untied"], "{label}");
        if r["untied"] == true {
            assert_eq!(r["config_tie_word_embeddings"], false, "{label}");
        }
        let changed = summary["changed_tensors"].as_array().unwrap().len();
        assert_eq!(changed, r["changed"].as_array().unwrap().len(), "{label}: changed tensors");
        let (ce, ex, be, by) = (
            r["changed_elements"].as_u64().unwrap(),
            r["exact"].as_u64().unwrap(),
            r["bound_explained"].as_u64().unwrap(),
            r["bytes_compared"].as_u64().unwrap(),
        );
        totals = (totals.0 + ce, totals.1 + ex, totals.2 + be, totals.3 + by);
        report.push(format!(
            "{label}: {changed} tensors changed, {ce} elements: {ex} exact, {be} within the f32 bound of a rounding \
             boundary; worst f32 error {:.2} (LoRA) / {:.2} (DoRA) x 2^-24*M; max |ours - float64| {:.2e}; {by} bytes \
             compared",
            r["worst_f32_lora"].as_f64().unwrap(),
            r["worst_f32_dora"].as_f64().unwrap(),
            r["max_abs_err"].as_f64().unwrap()
        ));
        if adapters.contains(&"q-fifo") {
            let w = summary["warnings"].as_array().unwrap();
            assert!(w.iter().any(|w| w.as_str().unwrap().contains("fan_in_fan_out")), "{label}: {w:?}");
        }
        let _ = std::fs::remove_dir_all(&out);
    }
    eprintln!("{}", report.join("\n"));
    eprintln!(
        "total: {} changed elements, {} exact, {} bound-explained, {} bytes compared",
        totals.0, totals.1, totals.2, totals.3
    );
}

/// A sharded output: transformers' file names, index and rule.
#[test]
fn shards_like_transformers() {
    if !common::parity_enabled("merge_parity::shards_like_transformers") {
        return;
    }
    let scratch = common::Scratch::new("merge-shards_like_transformers");
    let out = scratch.join("sharded");
    ggufkit_ok(&[
        os("merge"),
        base(Q).as_os_str(),
        os("--lora"),
        os(&adapter("q-plain")),
        os("-o"),
        out.as_os_str(),
        os("--max-shard-size"),
        os("10MB"),
        os("-q"),
    ]);
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("model.safetensors.index.json")).unwrap()).unwrap();
    let map = index["weight_map"].as_object().unwrap();
    let mut files: Vec<&str> = map.values().map(|v| v.as_str().unwrap()).collect();
    files.sort();
    files.dedup();
    // embed (19.5 MB) and lm_head (19.5 MB) each exceed 10 MB: huggingface_hub's
    // split_torch_state_dict_into_shards appends such a tensor as its own shard
    // when it meets it, before the shard being filled; the rest fits in one,
    // appended last.
    assert_eq!(
        files,
        ["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"]
    );
    assert_eq!(map["model.embed_tokens.weight"], "model-00001-of-00003.safetensors");
    assert_eq!(map["lm_head.weight"], "model-00002-of-00003.safetensors");
    assert_eq!(map["model.layers.0.self_attn.q_proj.weight"], "model-00003-of-00003.safetensors");
    assert_eq!(map["model.norm.weight"], "model-00003-of-00003.safetensors");
    let total: u64 = files.iter().map(|f| std::fs::metadata(out.join(f)).unwrap().len()).sum();
    assert!(index["metadata"]["total_size"].as_u64().unwrap() < total);
    // Each shard is a valid safetensors file with the "pt" format metadata.
    let m = ggufkit::hf::SafetensorsModel::open_dir(&out).unwrap();
    for i in 0..m.files().len() {
        assert_eq!(m.file_metadata(i).unwrap().get("format").map(String::as_str), Some("pt"));
    }
    assert_eq!(m.tensors().len(), map.len());
    // Same values as the single-file output.
    let r = check(&[os("merged"), base(Q).as_os_str(), out.as_os_str(), os(&adapter("q-plain"))]);
    assert!(r["problems"].as_array().unwrap().is_empty(), "{:#}", r["problems"]);
}

fn script_adapter(adapter_name: &str, base_name: &str, out: &Path) {
    check(&[
        os("script"),
        os(&adapter(adapter_name)),
        base(base_name).as_os_str(),
        out.as_os_str(),
        ref_src().as_os_str(),
    ]);
}

fn our_adapter(adapter_name: &str, base_name: &str, out: &Path) {
    ggufkit_ok(&[
        os("convert"),
        os(&adapter(adapter_name)),
        out.as_os_str(),
        os("--base"),
        base(base_name).as_os_str(),
        os("-q"),
    ]);
}

/// Byte for byte what llama.cpp's convert_lora_to_gguf.py writes (metadata,
/// tensor names, order, Q/K permutation of lora_b, transposed token_embd
/// lora_a), for adapters whose scaling the script represents.
#[test]
fn gguf_adapter_identical_to_convert_lora_to_gguf() {
    if !common::parity_enabled("merge_parity::gguf_adapter_identical_to_convert_lora_to_gguf") {
        return;
    }
    let scratch = common::Scratch::new("merge-gguf_adapter_identical_to_convert_lora_to_gguf");
    for (a, b) in [("q-plain", Q), ("l-plain", "llama3-bf16-sharded"), ("q-embed", Q)] {
        let ours = scratch.join(format!("{a}.ours.gguf"));
        let theirs = scratch.join(format!("{a}.script.gguf"));
        our_adapter(a, b, &ours);
        script_adapter(a, b, &theirs);
        let (x, y) = (std::fs::read(&ours).unwrap(), std::fs::read(&theirs).unwrap());
        eprintln!("{a}: {} bytes, {}", x.len(), if x == y { "identical" } else { "DIFFERENT" });
        assert!(x == y, "{a}: our GGUF adapter differs from convert_lora_to_gguf.py's");
    }
}

/// llama.cpp applies our GGUF adapter to the base GGUF at load time; the
/// result must behave like our merged GGUF (F32 everywhere).
#[test]
fn gguf_adapter_in_llama_cpp_matches_merged() {
    if !common::parity_enabled("merge_parity::gguf_adapter_in_llama_cpp_matches_merged") {
        return;
    }
    let scratch = common::Scratch::new("merge-gguf_adapter_in_llama_cpp_matches_merged");
    let mut report = Vec::new();
    let cases =
        [("q-plain", Q), ("q-rslora", Q), ("q-patterns", Q), ("q-embed", Q), ("l-plain", "llama3-bf16-sharded")];
    for (a, b) in cases {
        let base_gguf = scratch.join(format!("{b}.base-f32.gguf"));
        ggufkit_ok(&[os("convert"), base(b).as_os_str(), base_gguf.as_os_str(), os("--outtype"), os("f32"), os("-q")]);
        let ad = scratch.join(format!("{a}.adapter.gguf"));
        our_adapter(a, b, &ad);
        let merged = scratch.join(format!("{a}.merged-f32.gguf"));
        ggufkit_ok(&[
            os("merge"),
            base(b).as_os_str(),
            os("--lora"),
            os(&adapter(a)),
            os("-o"),
            merged.as_os_str(),
            os("--outtype"),
            os("f32"),
            os("-q"),
        ]);
        let r = check(&[os("llama"), base_gguf.as_os_str(), ad.as_os_str(), merged.as_os_str()]);
        for p in r["prompts"].as_array().unwrap() {
            let diff = p["max_abs_diff"].as_f64().unwrap();
            let effect = p["adapter_effect"].as_f64().unwrap();
            report.push(format!(
                "{a}: {} prompt tokens + 12 generated: same greedy tokens {}, max |logit diff| {diff:.2e} (max |logit| \
                 {:.2}; the adapter moves logits by up to {effect:.2})",
                p["n_tokens"], p["same_tokens"], p["max_abs_logit"]
            ));
            assert_eq!(p["same_tokens"], true, "{a}: greedy tokens differ: {p}");
            assert!(diff < 2e-3, "{a}: logits differ by {diff}");
            assert!(effect > 0.5, "{a}: the adapter hardly changes the model ({effect}); the check would be weak");
        }
        if a == "q-rslora" {
            // The script ignores use_rslora: its adapter applies alpha/r instead of alpha/sqrt(r).
            let theirs = scratch.join("q-rslora.script.gguf");
            script_adapter(a, b, &theirs);
            let r = check(&[os("llama"), base_gguf.as_os_str(), theirs.as_os_str(), merged.as_os_str()]);
            let worst = r["prompts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["max_abs_diff"].as_f64().unwrap())
                .fold(0.0, f64::max);
            report
                .push(format!("q-rslora via convert_lora_to_gguf.py (no rsLoRA scaling): max |logit diff| {worst:.2}"));
            assert!(worst > 0.1, "the rsLoRA control should differ");
        }
    }
    eprintln!("{}", report.join("\n"));
}

/// `merge -o x.gguf --outtype Q4_K_M` in one pass equals merge to an f32
/// directory (named like the output) + `convert --outtype f32` + `quantize Q4_K_M`.
#[test]
fn one_pass_quantized_equals_three_steps() {
    if !common::parity_enabled("merge_parity::one_pass_quantized_equals_three_steps") {
        return;
    }
    let scratch = common::Scratch::new("merge-one_pass_quantized_equals_three_steps");
    let cases: [(&str, &[&str]); 2] = [(Q, &["q-plain", "q-dora=0.5"]), ("qwen2-bf16-tied", &["t-lmhead"])];
    for (b, adapters) in cases {
        let lora: Vec<String> = adapters.iter().flat_map(|a| ["--lora".to_string(), adapter(a)]).collect();
        let base_dir = base(b);
        let one = scratch.join(format!("onepass-{b}"));
        std::fs::create_dir_all(&one).unwrap();
        let one_file = one.join("acme-coder.gguf");
        let mut args = vec![os("merge"), base_dir.as_os_str()];
        args.extend(lora.iter().map(os));
        args.extend([os("-o"), one_file.as_os_str(), os("--outtype"), os("Q4_K_M"), os("-q")]);
        ggufkit_ok(&args);

        let three = scratch.join(format!("threestep-{b}"));
        std::fs::create_dir_all(&three).unwrap();
        let dir = three.join("acme-coder");
        let mut args = vec![os("merge"), base_dir.as_os_str()];
        args.extend(lora.iter().map(os));
        args.extend([os("-o"), dir.as_os_str(), os("--dtype"), os("f32"), os("-q")]);
        ggufkit_ok(&args);
        let f32_file = three.join("f32.gguf");
        ggufkit_ok(&[os("convert"), dir.as_os_str(), f32_file.as_os_str(), os("--outtype"), os("f32"), os("-q")]);
        let q = three.join("acme-coder.gguf");
        ggufkit_ok(&[os("quantize"), f32_file.as_os_str(), q.as_os_str(), os("Q4_K_M"), os("-q")]);
        let (x, y) = (std::fs::read(&one_file).unwrap(), std::fs::read(&q).unwrap());
        eprintln!(
            "{b} + {adapters:?}: one pass {} bytes, three steps {} bytes: {}",
            x.len(),
            y.len(),
            if x == y { "identical" } else { "DIFFERENT" }
        );
        assert!(x == y, "{b}: one-pass Q4_K_M differs from merge + convert + quantize");
        let _ = (std::fs::remove_dir_all(&one), std::fs::remove_dir_all(&three));
    }
}

/// The merged GGUF of a tied base: LoRA on the embeddings changes the shared
/// weight and the output stays tied (no output.weight, as converting PEFT's
/// merged model gives); a modules_to_save embedding unties it.
#[test]
fn tied_base_output() {
    if !common::parity_enabled("merge_parity::tied_base_output") {
        return;
    }
    let scratch = common::Scratch::new("merge-tied_base_output");
    for (a, own_output) in [("t-embed", false), ("t-mts", true)] {
        let out = scratch.join(format!("tied-{a}-f16.gguf"));
        ggufkit_ok(&[
            os("merge"),
            base("qwen2-bf16-tied").as_os_str(),
            os("--lora"),
            os(&adapter(a)),
            os("-o"),
            out.as_os_str(),
            os("--outtype"),
            os("f16"),
            os("-q"),
        ]);
        let g = ggufkit::gguf::GgufFile::open(&out).unwrap();
        assert_eq!(g.header.tensor("output.weight").is_some(), own_output, "{a}");
        assert!(g.header.tensor("token_embd.weight").is_some());
    }
}
