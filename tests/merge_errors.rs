//! Bad input to `merge` and to `convert --base` (GGUF LoRA adapters): every
//! case exits with code 2, names the file and the tensor/key, and leaves
//! nothing at the output path (directory and .gguf outputs). The adapters are
//! scripts/gen_adapters.py's, copied and broken here.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use common::{adapters_dir, fixtures_dir, ggufkit};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde_json::Value;

type Tensors = BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>;

fn read_tensors(path: &Path) -> Tensors {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors().into_iter().map(|(k, v)| (k, (v.dtype(), v.shape().to_vec(), v.data().to_vec()))).collect()
}

fn write_tensors(path: &Path, t: &Tensors) {
    let views: Vec<(&str, TensorView)> =
        t.iter().map(|(k, (d, s, b))| (k.as_str(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    std::fs::write(path, safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
}

/// A copy of adapter `name` in a fresh directory, with its config and tensors edited.
fn broken(
    tmp: &Path,
    name: &str,
    tag: &str,
    edit_config: impl FnOnce(&mut Value),
    edit_tensors: impl FnOnce(&mut Tensors),
) -> PathBuf {
    let src = adapters_dir().join(name);
    let dir = tmp.join(tag);
    std::fs::create_dir_all(&dir).unwrap();
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("adapter_config.json")).unwrap()).unwrap();
    edit_config(&mut cfg);
    std::fs::write(dir.join("adapter_config.json"), serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    let mut t = read_tensors(&src.join("adapter_model.safetensors"));
    edit_tensors(&mut t);
    write_tensors(&dir.join("adapter_model.safetensors"), &t);
    dir
}

const Q: &str = "qwen2.5-coder-bf16-sharded";
const QA: &str = "base_model.model.model.layers.1.self_attn.q_proj";

fn os<S: AsRef<OsStr> + ?Sized>(s: &S) -> &OsStr {
    s.as_ref()
}

/// `merge` must fail with exit code 2, a message containing every `needle`,
/// and no output, for both output kinds.
fn merge_fails(base: &str, adapter: &Path, needles: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    for out in [tmp.path().join("out"), tmp.path().join("out.gguf")] {
        let r = ggufkit(&[
            os("merge"),
            fixtures_dir().join(base).as_os_str(),
            os("--lora"),
            adapter.as_os_str(),
            os("-o"),
            out.as_os_str(),
        ]);
        assert_eq!(r.code, 2, "expected exit 2 for {needles:?}, got {}:\n{}", r.code, r.stderr);
        for n in needles {
            assert!(r.stderr.contains(n), "message lacks '{n}':\n{}", r.stderr);
        }
        assert!(!out.exists(), "{} was written", out.display());
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert!(left.is_empty(), "temporary output left behind: {left:?}");
    }
}

fn adapter_fails(base: &str, adapter: &Path, needles: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("a.gguf");
    let r = ggufkit(&[
        os("convert"),
        adapter.as_os_str(),
        out.as_os_str(),
        os("--base"),
        fixtures_dir().join(base).as_os_str(),
    ]);
    assert_eq!(r.code, 2, "expected exit 2 for {needles:?}, got {}:\n{}", r.code, r.stderr);
    for n in needles {
        assert!(r.stderr.contains(n), "message lacks '{n}':\n{}", r.stderr);
    }
    assert!(!out.exists());
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[test]
fn bad_adapters_are_refused() {
    if !common::parity_enabled("merge_errors::bad_adapters_are_refused") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();

    // Pickled adapters are never loaded.
    let bin = t.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(adapters_dir().join("q-plain/adapter_config.json"), bin.join("adapter_config.json")).unwrap();
    std::fs::write(bin.join("adapter_model.bin"), b"PK\x03\x04 not really").unwrap();
    merge_fails(Q, &bin, &["adapter_model.bin", "pickled"]);

    let d = broken(t, "q-plain", "ia3", |c| c["peft_type"] = "IA3".into(), |_| {});
    merge_fails(Q, &d, &["adapter_config.json", "IA3", "only LoRA"]);

    let d = broken(
        t,
        "q-plain",
        "no-b",
        |_| {},
        |x| {
            x.remove(&format!("{QA}.lora_B.weight"));
        },
    );
    merge_fails(Q, &d, &["adapter_model.safetensors", "model.layers.1.self_attn.q_proj", "lora_B.weight is missing"]);

    // B of rank 4 against A of rank 8.
    let d = broken(
        t,
        "q-plain",
        "ab-rank",
        |_| {},
        |x| {
            let (dt, shape, bytes) = x.get_mut(&format!("{QA}.lora_B.weight")).unwrap();
            let rows = shape[0];
            *shape = vec![rows, 4];
            bytes.truncate(rows * 4 * dt.bitsize() / 8);
        },
    );
    merge_fails(Q, &d, &["rank mismatch", &format!("{QA}.lora_A.weight"), "rank 8", "rank 4"]);

    // Tensors of rank 8, config says 4.
    let d = broken(t, "q-plain", "cfg-rank", |c| c["r"] = 4.into(), |_| {});
    merge_fails(Q, &d, &["rank mismatch", "adapter_config.json gives r = 4"]);

    // A module the base does not have (layer 9 of a 3-layer model).
    let d = broken(
        t,
        "q-plain",
        "no-target",
        |_| {},
        |x| {
            for s in ["lora_A.weight", "lora_B.weight"] {
                let v = x.remove(&format!("{QA}.{s}")).unwrap();
                x.insert(format!("base_model.model.model.layers.9.self_attn.q_proj.{s}"), v);
            }
        },
    );
    merge_fails(Q, &d, &["model.layers.9.self_attn.q_proj", "not in the base model"]);

    // Adapter of another base: the llama adapter's MLP is 128 wide, this base's 160.
    let d = adapters_dir().join("l-plain");
    merge_fails(Q, &d, &["shape mismatch", "mlp", "is this the adapter's base model?"]);

    // NaN in A at row 3.
    let d = broken(
        t,
        "q-plain",
        "nan",
        |_| {},
        |x| {
            let (_, shape, bytes) = x.get_mut(&format!("{QA}.lora_A.weight")).unwrap();
            let at = (3 * shape[1] + 5) * 4;
            bytes[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        },
    );
    merge_fails(Q, &d, &[&format!("{QA}.lora_A.weight"), "row 3", "NaN"]);

    // target_modules selects o_proj, which has no tensors.
    let d = broken(
        t,
        "q-rslora",
        "missing-module",
        |c| c["target_modules"] = serde_json::json!(["q_proj", "v_proj", "down_proj", "o_proj"]),
        |_| {},
    );
    merge_fails(Q, &d, &["missing LoRA tensors", "model.layers.0.self_attn.o_proj"]);

    // lora_bias on a layer without a bias (o_proj).
    let d = broken(
        t,
        "q-bias",
        "bias-o",
        |c| c["target_modules"] = serde_json::json!(["q_proj", "k_proj", "v_proj", "o_proj"]),
        |x| {
            for l in 0..3 {
                let m = format!("base_model.model.model.layers.{l}.self_attn");
                let a = x[&format!("{m}.q_proj.lora_A.weight")].clone();
                let mut b = x[&format!("{m}.q_proj.lora_B.weight")].clone();
                let mut bias = x[&format!("{m}.q_proj.lora_B.bias")].clone();
                b.1 = vec![64, 8];
                bias.1 = vec![64];
                x.insert(format!("{m}.o_proj.lora_A.weight"), a);
                x.insert(format!("{m}.o_proj.lora_B.weight"), b);
                x.insert(format!("{m}.o_proj.lora_B.bias"), bias);
            }
        },
    );
    merge_fails(Q, &d, &["o_proj", "no bias", "lora_bias"]);

    // Unknown key forms.
    let d = broken(
        t,
        "q-plain",
        "odd-key",
        |_| {},
        |x| {
            let v = x.remove(&format!("{QA}.lora_A.weight")).unwrap();
            x.insert(format!("{QA}.lora_A.default.weight"), v);
        },
    );
    merge_fails(Q, &d, &["unexpected tensor", "lora_A.default.weight"]);
}

#[test]
fn gguf_adapter_refusals() {
    if !common::parity_enabled("merge_errors::gguf_adapter_refusals") {
        return;
    }
    // DoRA cannot be expressed; the message points at merge.
    adapter_fails(Q, &adapters_dir().join("q-dora"), &["DoRA", "ggufkit merge"]);
    adapter_fails(
        Q,
        &adapters_dir().join("q-mts"),
        &["base_model.model.lm_head.weight", "full tensor", "ggufkit merge"],
    );
    adapter_fails(Q, &adapters_dir().join("q-bias"), &["lora_bias", "ggufkit merge"]);
    adapter_fails("qwen2-bf16-tied", &adapters_dir().join("t-lmhead"), &["lm_head", "tied", "ggufkit merge"]);
    adapter_fails(Q, &adapters_dir().join("l-plain"), &["shape mismatch"]);
}

#[test]
fn output_onto_inputs_refused() {
    if !common::parity_enabled("merge_errors::output_onto_inputs_refused") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // Copy a small base so --force could not destroy the shared fixture.
    let base = tmp.path().join("base");
    std::fs::create_dir_all(&base).unwrap();
    for e in std::fs::read_dir(fixtures_dir().join("qwen2-f32")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), base.join(e.file_name())).unwrap();
    }
    let a = adapters_dir().join("f-plain");
    let r = ggufkit(&[
        os("merge"),
        base.as_os_str(),
        os("--lora"),
        a.as_os_str(),
        os("-o"),
        base.as_os_str(),
        os("--force"),
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("refusing"), "{}", r.stderr);
    assert!(base.join("model.safetensors").is_file(), "the base was destroyed");
    let r = ggufkit(&[
        os("merge"),
        base.as_os_str(),
        os("--lora"),
        a.as_os_str(),
        os("-o"),
        tmp.path().as_os_str(),
        os("--force"),
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(base.join("model.safetensors").is_file(), "the base was destroyed");
    // Bad option combinations are usage errors.
    let r = ggufkit(&[
        os("merge"),
        base.as_os_str(),
        os("--lora"),
        a.as_os_str(),
        os("-o"),
        tmp.path().join("x.gguf").as_os_str(),
        os("--dtype"),
        os("f16"),
    ]);
    assert_eq!(r.code, 2);
    let r = ggufkit(&[
        os("merge"),
        base.as_os_str(),
        os("--lora"),
        a.as_os_str(),
        os("-o"),
        tmp.path().join("d").as_os_str(),
        os("--max-shard-size"),
        os("lots"),
    ]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--max-shard-size"));
}
