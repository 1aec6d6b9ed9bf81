"""Issue 2 parity: ggufkit's GGUF reader/writer against gguf-py and real llama.cpp."""
import json
import shutil
from pathlib import Path

import gguf
import llama_cpp
import numpy as np
import pytest

from conftest import run
from tinymodels import write_llama


def field_value(f: gguf.ReaderField):
    """A field's value, like ReaderField.contents() but fast on 150k-element arrays."""
    t = f.types[0]
    if t == gguf.GGUFValueType.ARRAY:
        et = f.types[1] if len(f.types) > 1 else None
        if et == gguf.GGUFValueType.STRING:
            return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
        if et == gguf.GGUFValueType.ARRAY:
            return f.contents()
        if not f.data:
            return []
        # Numeric elements are consecutive parts of one element each.
        vals = np.concatenate([f.parts[i] for i in f.data]) if len(f.data) < 16 else \
            np.array([f.parts[i][0] for i in f.data])
        return [bool(v) for v in vals] if et == gguf.GGUFValueType.BOOL else vals.tolist()
    return f.contents()


def reader_view(path: Path) -> dict:
    """What gguf-py's GGUFReader sees: keys in order with types and values, tensors."""
    r = gguf.GGUFReader(str(path))
    keys = []
    for name, f in r.fields.items():
        if name.startswith("GGUF."):
            continue  # the reader's pseudo-fields for the header
        t = f.types[0]
        entry = {"key": name, "type": t.name}
        if t == gguf.GGUFValueType.ARRAY:
            entry["element_type"] = f.types[1].name if len(f.types) > 1 else None
            entry["count"] = len(f.data)
        entry["value"] = field_value(f)
        keys.append(entry)
    tensors = [
        {
            "name": t.name,
            "type": t.tensor_type.name,
            "shape": [int(d) for d in t.shape],
            "n_elements": int(t.n_elements),
            "absolute_offset": int(t.data_offset),
            "size": int(t.n_bytes),
        }
        for t in r.tensors
    ]
    return {"keys": keys, "tensors": tensors, "alignment": r.alignment}


def values_equal(ours, theirs, value_type: str) -> bool:
    if isinstance(theirs, list):
        if value_type in ("FLOAT32", "FLOAT64") and all(not isinstance(x, str) for x in ours):
            dt = np.float32 if value_type == "FLOAT32" else np.float64
            a, b = np.array(ours, dtype=dt), np.array(theirs, dtype=dt)
            return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=True))
        if value_type not in ("FLOAT32", "FLOAT64"):
            return ours == theirs
        return len(ours) == len(theirs) and all(values_equal(a, b, value_type) for a, b in zip(ours, theirs))
    if isinstance(theirs, float) or value_type in ("FLOAT32", "FLOAT64"):
        if isinstance(ours, str):  # NaN / inf are strings in our JSON
            return str(float(ours)) == str(float(theirs))
        # f32 values: ours is the exact f32 printed as f64, theirs a numpy f32 converted to float.
        return np.float32(ours) == np.float32(theirs) if value_type == "FLOAT32" else ours == theirs
    return ours == theirs


def check_inspect_matches_reader(ggufkit: str, path: Path):
    ours = json.loads(run(ggufkit, "inspect", "--json", "--tensors", path).stdout)
    theirs = reader_view(path)
    assert ours["alignment"] == theirs["alignment"]
    assert [k["key"] for k in ours["metadata"]] == [k["key"] for k in theirs["keys"]]
    for a, b in zip(ours["metadata"], theirs["keys"]):
        assert a["type"] == b["type"], a["key"]
        if b["type"] == "ARRAY":
            assert a["element_type"] == b["element_type"], a["key"]
            assert a["count"] == b["count"], a["key"]
            et = b["element_type"]
        else:
            et = b["type"]
        assert values_equal(a["value"], b["value"], et), a["key"]
    assert len(ours["tensors"]) == len(theirs["tensors"])
    for a, b in zip(ours["tensors"], theirs["tensors"]):
        assert a["name"] == b["name"]
        assert a["type"] == b["type"], a["name"]
        # gguf-py's tensor shape is ne0 first, like ours.
        assert a["shape"] == b["shape"], a["name"]
        assert a["n_elements"] == b["n_elements"], a["name"]
        assert a["absolute_offset"] == b["absolute_offset"], a["name"]
        assert a["size"] == b["size"], a["name"]
    return ours


@pytest.fixture(scope="module")
def models(tmp_path_factory, vocab_ggufs) -> dict:
    """gguf-py-written F32/F16/BF16 llama models, and llama.cpp-written quantized ones."""
    d = tmp_path_factory.mktemp("models")
    spm = next(p for p in vocab_ggufs if p.name == "ggml-vocab-llama-spm.gguf")
    out = {
        "f32": write_llama(d / "f32.gguf", spm, dtype=np.float32),
        "f16": write_llama(d / "f16.gguf", spm, dtype=np.float16, tied=True),
        "bf16": write_llama(d / "bf16.gguf", spm, dtype="bf16", n_embd=256, n_ff=512),
    }
    for name, ftype in [("q4_k_m", 15), ("q8_0", 7)]:
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = ftype
        params.nthread = 1
        dst = d / f"{name}.gguf"
        rc = llama_cpp.llama_model_quantize(str(out["bf16"]).encode(), str(dst).encode(), params)
        assert rc == 0
        out[name] = dst
    return out


# gguf-py's reader needs ~5-40 s per vocab file (one Python object per array
# element), so the comparison covers one file of each tokenizer family; the
# round-trip test below covers all of them.
READER_CHECKED = ["ggml-vocab-llama-spm.gguf", "ggml-vocab-bert-bge.gguf", "ggml-vocab-deepseek-coder.gguf",
                  "ggml-vocab-phi-3.gguf"]


def test_inspect_matches_gguf_reader_on_llama_cpp_vocab_files(ggufkit, vocab_ggufs):
    checked = [p for p in vocab_ggufs if p.name in READER_CHECKED]
    assert len(checked) == len(READER_CHECKED)
    for path in checked:
        check_inspect_matches_reader(ggufkit, path)


def test_inspect_matches_gguf_reader_on_models(ggufkit, models):
    for name, path in models.items():
        ours = check_inspect_matches_reader(ggufkit, path)
        assert ours["tensor_count"] > 0, name
        assert ours["architecture"] == "llama"


def test_round_trip_is_byte_identical(ggufkit, vocab_ggufs, models, tmp_path):
    files = list(vocab_ggufs) + list(models.values())
    for path in files:
        out = tmp_path / ("rt-" + path.name)
        run(ggufkit, "edit", "--quiet", path, out)
        assert out.read_bytes() == Path(path).read_bytes(), path.name
        out.unlink()


def test_ggufkit_output_is_read_by_gguf_py_and_loads_in_llama_cpp(ggufkit, models, tmp_path):
    src = models["f32"]
    out = tmp_path / "edited.gguf"
    run(ggufkit, "edit", "--quiet", src, out, "--set", "general.name=str:written-by-ggufkit",
        "--set", "general.license=str:apache-2.0")
    a, b = gguf.GGUFReader(str(src)), gguf.GGUFReader(str(out))
    assert b.fields["general.name"].contents() == "written-by-ggufkit"
    assert list(b.fields)[-1] == "general.license"
    for ta, tb in zip(a.tensors, b.tensors):
        assert ta.name == tb.name and np.array_equal(ta.data, tb.data)
    llm = llama_cpp.Llama(model_path=str(out), n_ctx=64, n_threads=1, verbose=False)
    tokens = llm.tokenize(b"Hello world", add_bos=True)
    generated = []
    for i, tok in enumerate(llm.generate(tokens, top_k=1, temp=0.0)):
        generated.append(tok)
        if i == 7:
            break
    assert len(generated) == 8
    # Deterministic: the same file gives the same greedy tokens as the original.
    llm0 = llama_cpp.Llama(model_path=str(src), n_ctx=64, n_threads=1, verbose=False)
    again = []
    for i, tok in enumerate(llm0.generate(tokens, top_k=1, temp=0.0)):
        again.append(tok)
        if i == 7:
            break
    assert again == generated


def test_diff_exit_codes(ggufkit, models, tmp_path):
    same = tmp_path / "same.gguf"
    shutil.copy(models["f32"], same)
    assert run(ggufkit, "diff", models["f32"], same).returncode == 0
    p = run(ggufkit, "diff", "--json", models["bf16"], models["q8_0"], check=False)
    assert p.returncode == 1
    report = json.loads(p.stdout)
    assert not report["identical"]
    diffs = {t["name"]: t for t in report["tensors"]["differences"]}
    assert diffs["blk.0.attn_q.weight"]["b_type"] == "Q8_0"
    assert any(k["key"] == "general.file_type" for k in report["metadata"]["differences"])
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00")
    p = run(ggufkit, "diff", models["f32"], bad, check=False)
    assert p.returncode == 2 and "bad.gguf" in p.stderr
