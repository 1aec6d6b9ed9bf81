#!/usr/bin/env python3
"""Generates the malformed-input corpus in tests/corpus/inputs/ (standard library only).

The GGUF container has its own corpus (scripts/gen_corpus.py). This one covers
every other parser a user's files reach: safetensors headers, the shard index,
config.json, tokenizer.json / tokenizer_config.json / tokenizer.model,
Modelfiles, importance matrices (legacy .dat and GGUF) and PEFT adapters.

Each case is a directory tests/corpus/inputs/<case>/ holding the input files
(a valid tiny model with one thing broken), and cases.json maps the case to
the command line to run, the expected exit code and a substring of the error
message. In the command lines `{case}` is the case directory, `{shared}` the
directory _shared/ (valid inputs several cases use) and `{out}` an output
path in a fresh temporary directory, which must stay empty. tests/cli.rs runs
every case with a time limit; none may panic.

Run: python3 scripts/gen_input_corpus.py   (rewrites the corpus deterministically)
"""
import json
import math
import shutil
import struct
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "tests" / "corpus" / "inputs"

H, FF, V = 8, 16, 8

# --- safetensors ---------------------------------------------------------------------------------


def st_bytes(tensors, header_extra=None, metadata=None, raw_header=None, trailing=b""):
    """tensors: list of (name, dtype, shape, data bytes or None for a pattern)."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    data = b""
    for i, (name, dtype, shape, payload) in enumerate(tensors):
        n = math.prod(shape)
        size = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "F8_E4M3": 1}[dtype]
        if payload is None:
            if dtype == "F32":
                payload = b"".join(struct.pack("<f", ((k + i) % 7) * 0.1 - 0.3) for k in range(n))
            else:
                payload = b"\x3c" * (n * size)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(payload)]}
        data += payload
    if header_extra:
        for k, v in header_extra.items():
            if v is None:
                header.pop(k, None)
            else:
                header[k] = v
    h = raw_header if raw_header is not None else json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(h)) + h + data + trailing


def llama_tensors(dtype="F32"):
    t = [
        ("model.embed_tokens.weight", dtype, [V, H], None),
        ("model.norm.weight", dtype, [H], None),
        ("lm_head.weight", dtype, [V, H], None),
    ]
    for b in range(2):
        p = f"model.layers.{b}."
        t += [
            (p + "input_layernorm.weight", dtype, [H], None),
            (p + "post_attention_layernorm.weight", dtype, [H], None),
            (p + "self_attn.q_proj.weight", dtype, [H, H], None),
            (p + "self_attn.k_proj.weight", dtype, [H // 2, H], None),
            (p + "self_attn.v_proj.weight", dtype, [H // 2, H], None),
            (p + "self_attn.o_proj.weight", dtype, [H, H], None),
            (p + "mlp.gate_proj.weight", dtype, [FF, H], None),
            (p + "mlp.up_proj.weight", dtype, [FF, H], None),
            (p + "mlp.down_proj.weight", dtype, [H, FF], None),
        ]
    return t


def replace(tensors, name, **kw):
    out = []
    for (n, d, s, p) in tensors:
        if n == name:
            d, s, p = kw.get("dtype", d), kw.get("shape", s), kw.get("data", p)
        out.append((n, d, s, p))
    return out


# --- tokenizers ------------------------------------------------------------------------------------


def varint(v):
    out = b""
    while True:
        b = v & 0x7F
        v >>= 7
        if v == 0:
            return out + bytes([b])
        out += bytes([b | 0x80])


def spm_model():
    pieces = [("<unk>", 2), ("<s>", 3), ("</s>", 3), ("\u2581a", 1), ("\u2581b", 1), ("a", 1), ("b", 1),
              ("<0x0A>", 6)]
    out = b""
    for i, (p, t) in enumerate(pieces):
        pb = p.encode()
        m = b"\x0a" + varint(len(pb)) + pb + b"\x15" + struct.pack("<f", -float(i)) + b"\x18" + varint(t)
        out += b"\x0a" + varint(len(m)) + m
    return out


def bpe_tokenizer():
    vocab = {t: i for i, t in enumerate(["a", "b", "c", "\u0120", "ab", "<|end|>", "d", "e"])}
    return {
        "version": "1.0",
        "added_tokens": [{"id": 5, "content": "<|end|>", "special": True, "normalized": False,
                          "single_word": False, "lstrip": False, "rstrip": False}],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "vocab": vocab,
                  "merges": ["a b"]},
    }


def config(**kw):
    c = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": H, "intermediate_size": FF,
        "num_attention_heads": 2, "num_key_value_heads": 1, "num_hidden_layers": 2, "vocab_size": V,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 64,
        "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32",
    }
    for k, v in kw.items():
        if v is None:
            c.pop(k, None)
        else:
            c[k] = v
    return c


# --- GGUF and imatrix --------------------------------------------------------------------------------

T_U32, T_F32, T_STR, T_ARR = 4, 6, 8, 9


def s(b):
    b = b.encode() if isinstance(b, str) else b
    return struct.pack("<Q", len(b)) + b


def kv(key, t, payload):
    return s(key) + struct.pack("<I", t) + payload


def gguf(kvs, tensors):
    """tensors: list of (name, dims, ggml type, data bytes)."""
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    infos, data = b"", b""
    for name, dims, ty, payload in tensors:
        data += b"\0" * (-len(data) % 32)
        infos += s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims) + \
            struct.pack("<IQ", ty, len(data))
        data += payload
    body = head + b"".join(kvs) + infos
    body += b"\0" * (-len(body) % 32)
    return body + data


def f32s(vals):
    return b"".join(struct.pack("<f", v) for v in vals)


def small_model_gguf():
    """A 2-layer llama GGUF in F32 with rows of 256, for the imatrix cases."""
    n = 256
    kvs = [
        kv("general.architecture", T_STR, s("llama")),
        kv("llama.block_count", T_U32, struct.pack("<I", 1)),
        kv("llama.embedding_length", T_U32, struct.pack("<I", n)),
        kv("llama.attention.head_count", T_U32, struct.pack("<I", 2)),
        kv("llama.attention.head_count_kv", T_U32, struct.pack("<I", 2)),
    ]
    row = f32s([((k * 37) % 101) / 101.0 - 0.5 for k in range(n)])
    tensors = [
        ("token_embd.weight", [n, 4], 0, row * 4),
        ("blk.0.attn_q.weight", [n, 2], 0, row * 2),
        ("blk.0.ffn_up.weight", [n, 2], 0, row * 2),
        ("output_norm.weight", [n], 0, row),
    ]
    return gguf(kvs, tensors)


def legacy_imatrix(entries, chunks=1, dataset=b"data.txt", tail=True):
    """entries: list of (name, ncall, values)."""
    out = struct.pack("<i", len(entries))
    for name, ncall, vals in entries:
        nb = name.encode()
        out += struct.pack("<i", len(nb)) + nb + struct.pack("<ii", ncall, len(vals)) + f32s(vals)
    if tail:
        out += struct.pack("<i", chunks) + struct.pack("<i", len(dataset)) + dataset
    return out


def gguf_imatrix(entries, meta=True, chunk_count_type=T_U32):
    """entries: list of (name, sums, counts)."""
    kvs = [kv("general.type", T_STR, s("imatrix"))]
    if meta:
        kvs += [
            kv("imatrix.datasets", T_ARR, struct.pack("<IQ", T_STR, 1) + s("data.txt")),
            kv("imatrix.chunk_count", chunk_count_type,
               struct.pack("<I", 4) if chunk_count_type == T_U32 else struct.pack("<f", 4.0)),
            kv("imatrix.chunk_size", T_U32, struct.pack("<I", 512)),
        ]
    tensors = []
    for name, sums, counts in entries:
        if sums is not None:
            tensors.append((name + ".in_sum2", [len(sums), 1], 0, f32s(sums)))
        if counts is not None:
            tensors.append((name + ".counts", [1, 1], 0, f32s(counts)))
    return gguf(kvs, tensors)


# --- PEFT adapters -------------------------------------------------------------------------------------


def adapter_config(**kw):
    c = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": "tiny-llama",
        "r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj"], "fan_in_fan_out": False,
        "use_rslora": False, "use_dora": False, "rank_pattern": {}, "alpha_pattern": {},
        "modules_to_save": None, "bias": "none", "lora_dropout": 0.0, "inference_mode": True,
    }
    for k, v in kw.items():
        if v is None:
            c.pop(k, None)
        else:
            c[k] = v
    return c


def adapter_tensors(r=2):
    t = []
    for b in range(2):
        for proj, out in (("q_proj", H), ("v_proj", H // 2)):
            p = f"base_model.model.model.layers.{b}.self_attn.{proj}."
            t.append((p + "lora_A.weight", "F32", [r, H], None))
            t.append((p + "lora_B.weight", "F32", [out, r], None))
    return t


# --- the cases -------------------------------------------------------------------------------------------

cases = {}


def case(name, files, args, msg, code=2):
    """files: {relative path: bytes | str | dict (JSON)}."""
    assert name not in cases, name
    cases[name] = (files, args, msg, code)


def model_files(**overrides):
    files = {
        "config.json": config(),
        "tokenizer.model": spm_model(),
        "model.safetensors": st_bytes(llama_tensors()),
    }
    for k, v in overrides.items():
        k = k.replace("__", ".")
        if v is None:
            files.pop(k, None)
        else:
            files[k] = v
    return files


CONVERT = ["convert", "{case}", "{out}/out.gguf"]
CONVERT_BPE = CONVERT + ["--vocab-pre", "gpt-2"]

# A valid model, as the control case: it must convert.
case("control_model", model_files(), CONVERT, "", code=0)

# safetensors headers
T = llama_tensors()
case("st_too_small", model_files(model__safetensors=b"\x05\0\0"), CONVERT, "too small")
case("st_header_len_past_end", model_files(model__safetensors=struct.pack("<Q", 4096) + b"{}"), CONVERT,
     "past the end of the file")
case("st_header_len_huge", model_files(model__safetensors=struct.pack("<Q", 2**62) + b"{}"), CONVERT,
     "100 MB limit")
case("st_header_not_json", model_files(model__safetensors=st_bytes([], raw_header=b"{not json")), CONVERT,
     "model.safetensors")
case("st_header_not_utf8", model_files(model__safetensors=st_bytes([], raw_header=b"{\"\xff\xfe\": 1}")),
     CONVERT, "model.safetensors")
case("st_header_array", model_files(model__safetensors=st_bytes([], raw_header=b"[1,2,3]")), CONVERT,
     "model.safetensors")
case("st_unknown_dtype", model_files(model__safetensors=st_bytes(T, header_extra={
    "model.norm.weight": {"dtype": "Q9", "shape": [H], "data_offsets": [256, 288]}})), CONVERT, "model.safetensors")
case("st_shape_bytes_mismatch", model_files(model__safetensors=st_bytes(replace(T, "model.norm.weight",
                                                                                   data=b"\0" * 12))),
     CONVERT, "byte range does not match")
case("st_offsets_overlap", model_files(model__safetensors=st_bytes(T, header_extra={
    "model.norm.weight": {"dtype": "F32", "shape": [H], "data_offsets": [0, 32]}})), CONVERT,
     "hole or overlap")
case("st_data_truncated", model_files(model__safetensors=st_bytes(T)[:-100]), CONVERT, "truncated")
case("st_trailing_bytes", model_files(model__safetensors=st_bytes(T, trailing=b"\0" * 64)), CONVERT,
     "trailing bytes")
case("st_offsets_huge", model_files(model__safetensors=st_bytes(T, header_extra={
    "model.norm.weight": {"dtype": "F32", "shape": [H], "data_offsets": [2**63, 2**63 + 32]}})), CONVERT,
     "model.safetensors")
case("st_shape_overflow", model_files(model__safetensors=st_bytes(T, header_extra={
    "model.norm.weight": {"dtype": "F32", "shape": [2**40, 2**40, 2**40], "data_offsets": [0, 32]}})),
     CONVERT, "model.safetensors")
case("st_metadata_not_strings", model_files(model__safetensors=st_bytes(T, metadata={"format": 5})), CONVERT,
     "model.safetensors")
case("st_dtype_unsupported", model_files(model__safetensors=st_bytes(replace(T, "model.norm.weight",
                                                                                dtype="I64"))),
     CONVERT, "I64")
case("st_shape_vs_config", model_files(model__safetensors=st_bytes(replace(T, "model.layers.1.mlp.up_proj.weight",
                                                                              shape=[FF + 1, H], data=None))),
     CONVERT, "model.layers.1.mlp.up_proj.weight")
case("st_missing_tensor", model_files(model__safetensors=st_bytes([t for t in T if "layers.1.mlp.down" not in t[0]])),
     CONVERT, "model.layers.1.mlp.down_proj.weight")
case("st_unknown_tensor", model_files(model__safetensors=st_bytes(T + [("model.layers.0.extra.weight", "F32",
                                                                       [H], None)])),
     CONVERT, "model.layers.0.extra.weight")
nan_row = f32s([float("nan")] + [0.0] * (H - 1))
case("st_nan_weight", model_files(model__safetensors=st_bytes(replace(
    T, "model.layers.0.self_attn.o_proj.weight", data=f32s([0.0] * H * 3) + nan_row + f32s([0.0] * H * 4)))),
     CONVERT, "blk.0.attn_output.weight")
case("st_inf_weight_quantized", model_files(model__safetensors=st_bytes(replace(
    T, "model.layers.0.mlp.up_proj.weight", data=f32s([0.0] * H * 5 + [float("inf")] + [0.0] * (H * 11 - 1))))),
     CONVERT + ["--outtype", "q8_0"], "blk.0.ffn_up.weight")
case("st_no_weights", {"config.json": config(), "tokenizer.model": spm_model()}, CONVERT, "no model.safetensors")
case("st_pytorch_bin", {"config.json": config(), "tokenizer.model": spm_model(), "pytorch_model.bin": b"PK\3\4"},
     CONVERT, "not supported")

# the shard index
half = len(T) // 2
SHARDS = {
    "model-00001-of-00002.safetensors": st_bytes(T[:half]),
    "model-00002-of-00002.safetensors": st_bytes(T[half:]),
}


def index(weight_map=None, raw=None):
    if raw is not None:
        return raw
    if weight_map is None:
        weight_map = {n: ("model-00001-of-00002.safetensors" if i < half else "model-00002-of-00002.safetensors")
                      for i, (n, _, _, _) in enumerate(T)}
    return {"metadata": {"total_size": 0}, "weight_map": weight_map}


def sharded(**kw):
    files = {"config.json": config(), "tokenizer.model": spm_model(), **SHARDS,
             "model.safetensors.index.json": index(**kw)}
    return files


case("control_sharded", sharded(), CONVERT, "", code=0)
case("index_not_json", sharded(raw=b"{\"weight_map\": "), CONVERT, "model.safetensors.index.json")
case("index_no_weight_map", sharded(raw={"metadata": {}}), CONVERT, "weight_map")
case("index_value_not_string", sharded(weight_map={T[0][0]: 3}), CONVERT, "not a file name string")
case("index_path_traversal", sharded(weight_map={T[0][0]: "../../etc/passwd"}), CONVERT, "not a plain file name")
wm = index()["weight_map"]
case("index_missing_shard", sharded(weight_map={**wm, T[0][0]: "model-00003-of-00003.safetensors"}), CONVERT,
     "missing shard")
case("index_tensor_not_listed", sharded(weight_map={k: v for k, v in wm.items() if k != T[-1][0]}), CONVERT,
     "not named by")
case("index_wrong_shard", sharded(weight_map={**wm, T[0][0]: "model-00002-of-00002.safetensors"}), CONVERT,
     "places it in")
case("index_extra_tensor", sharded(weight_map={**wm, "model.layers.9.x.weight": "model-00001-of-00002.safetensors"}),
     CONVERT, "does not contain it")
dup = dict(SHARDS)
dup["model-00002-of-00002.safetensors"] = st_bytes(T[half:] + [T[0]])
case("shards_duplicate_tensor", {"config.json": config(), "tokenizer.model": spm_model(), **dup}, CONVERT,
     "model.embed_tokens.weight")

# config.json
case("config_missing", model_files(config__json=None), CONVERT, "config.json")
case("config_not_json", model_files(config__json=b"{\"architectures\": [\"Llama"), CONVERT, "config.json")
case("config_not_object", model_files(config__json=[1, 2]), CONVERT, "config.json")
case("config_unknown_arch", model_files(config__json=config(architectures=["BertModel"], model_type="bert")),
     CONVERT, "Qwen2ForCausalLM")
case("config_no_arch", model_files(config__json=config(architectures=None, model_type=None)), CONVERT,
     "architectures")
case("config_hidden_size_string", model_files(config__json=config(hidden_size="eight")), CONVERT, "hidden_size")
case("config_hidden_size_missing", model_files(config__json=config(hidden_size=None)), CONVERT, "hidden_size")
case("config_zero_heads", model_files(config__json=config(num_attention_heads=0)), CONVERT,
     "\"num_attention_heads\" must be positive")
case("config_heads_not_dividing", model_files(config__json=config(num_attention_heads=3)), CONVERT,
     "implies [2, 8] (kv_dim, hidden_size)")  # head_dim = hidden_size // heads, as transformers
case("config_kv_heads_not_dividing", model_files(config__json=config(num_key_value_heads=3)), CONVERT,
     "num_key_value_heads")
case("config_negative_layers", model_files(config__json=config(num_hidden_layers=-1)), CONVERT,
     "num_hidden_layers")
case("config_huge_layers", model_files(config__json=config(num_hidden_layers=2**40)), CONVERT,
     "implausible \"num_hidden_layers\"")
case("config_vocab_too_small", model_files(config__json=config(vocab_size=4)), CONVERT, "vocab_size")
case("config_rope_scaling_bad", model_files(config__json=config(rope_scaling={"rope_type": "llama3",
                                                                              "factor": "x"})),
     CONVERT, "\"rope_scaling.factor\" must be a finite number")

# tokenizers
case("spm_garbage", model_files(tokenizer__model=b"not a sentencepiece model at all"), CONVERT, "tokenizer.model")
case("spm_truncated", model_files(tokenizer__model=spm_model()[:-7]), CONVERT, "tokenizer.model")
case("tokenizer_missing", model_files(tokenizer__model=None), CONVERT, "tokenizer.json")
BPE = dict(tokenizer__model=None)
case("control_bpe", model_files(**BPE, tokenizer__json=bpe_tokenizer()), CONVERT_BPE, "", code=0)
case("tokjson_not_json", model_files(**BPE, tokenizer__json=b"{\"model\": {"), CONVERT_BPE, "tokenizer.json")
bad = bpe_tokenizer()
del bad["model"]
case("tokjson_no_model", model_files(**BPE, tokenizer__json=bad), CONVERT_BPE, "tokenizer.json")
bad = bpe_tokenizer()
bad["model"]["vocab"] = ["a", "b"]
case("tokjson_vocab_not_object", model_files(**BPE, tokenizer__json=bad), CONVERT_BPE, "vocab")
bad = bpe_tokenizer()
bad["model"]["vocab"]["zz"] = 1000000
case("tokjson_vocab_id_out_of_range", model_files(**BPE, tokenizer__json=bad), CONVERT_BPE, "tokenizer.json")
bad = bpe_tokenizer()
bad["model"]["vocab"]["a"] = -1
case("tokjson_vocab_id_negative", model_files(**BPE, tokenizer__json=bad), CONVERT_BPE, "tokenizer.json")
bad = bpe_tokenizer()
bad["added_tokens"][0]["id"] = 4000000000
case("tokjson_added_id_huge", model_files(**BPE, tokenizer__json=bad), CONVERT_BPE, "tokenizer.json")
bad = bpe_tokenizer()
bad["model"]["merges"] = [5, 6]
case("tokjson_merges_not_strings", model_files(**BPE, tokenizer__json=bad), CONVERT_BPE, "merges")
bad = bpe_tokenizer()
bad["model"]["type"] = "Unigram9"
case("tokjson_unknown_model_type", model_files(**BPE, tokenizer__json=bad), CONVERT_BPE, "Unigram9")
case("tokjson_unknown_pretokenizer", model_files(**BPE, tokenizer__json=bpe_tokenizer()), CONVERT, "--vocab-pre")
case("tokconfig_not_json", model_files(tokenizer_config__json=b"{\"chat_template\": "), CONVERT,
     "tokenizer_config.json")
case("tokconfig_template_number", model_files(tokenizer_config__json={"chat_template": 5}), CONVERT,
     "chat_template")
case("tokconfig_template_list_bad", model_files(tokenizer_config__json={"chat_template": [{"name": 1}]}), CONVERT,
     "chat_template")
case("tokconfig_bos_wrong_type", model_files(tokenizer_config__json={"add_bos_token": "yes"}), CONVERT,
     "add_bos_token")

# Modelfiles (`modelfile --check` exits 1 on a Modelfile with errors)
CHECK = ["modelfile", "--check", "{case}/Modelfile"]
for name, text, msg in [
    ("mf_no_from", "PARAMETER temperature 0.2\n", "FROM"),
    ("mf_unknown_command", "FROM ./m.gguf\nFROBNICATE yes\n", "line 2"),
    ("mf_unterminated_block", "FROM ./m.gguf\nTEMPLATE \"\"\"{{ .Prompt }}\n", "line 2"),
    ("mf_unterminated_quote", "FROM ./m.gguf\nSYSTEM \"hello\n", "line 2"),
    ("mf_unknown_parameter", "FROM ./m.gguf\nPARAMETER bogus_name 3\n", "bogus_name"),
    ("mf_parameter_not_int", "FROM ./m.gguf\nPARAMETER num_ctx lots\n", "invalid int value [lots]"),
    ("mf_parameter_not_float", "FROM ./m.gguf\nPARAMETER temperature hot\n", "invalid float value [hot]"),
    ("mf_parameter_no_value", "FROM ./m.gguf\nPARAMETER stop\n", "line 2"),
    ("mf_bad_message_role", "FROM ./m.gguf\nMESSAGE wizard hello\n", "message role must be one of"),
    ("mf_empty", "", "FROM"),
    ("mf_binary", "FROM \0\0\xff", "line 1"),
]:
    data = text.encode("latin-1") if name == "mf_binary" else text.encode()
    case(name, {"Modelfile": data}, CHECK, msg, code=1)
case("mf_missing", {}, CHECK, "Modelfile")

# importance matrices (legacy .dat and GGUF) given to quantize
QUANT = ["quantize", "{shared}/model-f32.gguf", "{out}/out.gguf", "Q4_K_M", "--imatrix", "{case}/imatrix"]
Q_NAMES = ["blk.0.attn_q.weight", "blk.0.ffn_up.weight"]
good_dat = [(n, 1, [1.0] * 256) for n in Q_NAMES]
case("control_imatrix_dat", {"imatrix": legacy_imatrix(good_dat)}, QUANT, "", code=0)
case("imatrix_empty_file", {"imatrix": b""}, QUANT, "imatrix")
case("imatrix_negative_count", {"imatrix": struct.pack("<i", -5)}, QUANT, "imatrix")
case("imatrix_huge_count", {"imatrix": struct.pack("<i", 2**31 - 1) + b"\0" * 16}, QUANT, "imatrix")
case("imatrix_name_len_past_end", {"imatrix": struct.pack("<ii", 1, 10000) + b"abc"}, QUANT, "name")
case("imatrix_values_past_end", {"imatrix": legacy_imatrix(good_dat)[:300]}, QUANT, "values")
case("imatrix_zero_values", {"imatrix": legacy_imatrix([(Q_NAMES[0], 1, [])])}, QUANT, "value count")
case("imatrix_wrong_size", {"imatrix": legacy_imatrix([(Q_NAMES[0], 1, [1.0] * 100), (Q_NAMES[1], 1, [1.0] * 256)])},
     QUANT, "blk.0.attn_q.weight")
case("imatrix_nan", {"imatrix": legacy_imatrix([(Q_NAMES[0], 1, [float("nan")] * 256), good_dat[1]])}, QUANT,
     "blk.0.attn_q.weight")
good_g = [(n, [1.0] * 256, [1.0]) for n in Q_NAMES]
case("control_imatrix_gguf", {"imatrix": gguf_imatrix(good_g)}, QUANT, "", code=0)
case("imatrix_gguf_no_counts", {"imatrix": gguf_imatrix([(Q_NAMES[0], [1.0] * 256, None)])}, QUANT,
     "mismatched sums and counts")
case("imatrix_gguf_missing_meta", {"imatrix": gguf_imatrix(good_g, meta=False)}, QUANT, "imatrix.chunk_count")
case("imatrix_gguf_chunk_count_f32", {"imatrix": gguf_imatrix(good_g, chunk_count_type=T_F32)}, QUANT, "UINT32")
case("imatrix_gguf_truncated", {"imatrix": gguf_imatrix(good_g)[:-40]}, QUANT, "imatrix")

# PEFT adapters (merge into the tiny model; convert to a GGUF adapter)
MERGE = ["merge", "{shared}/model", "--lora", "{case}/adapter", "-o", "{out}/merged"]
ADAPTER_GGUF = ["convert", "{case}/adapter", "{out}/adapter.gguf", "--base", "{shared}/model"]


def adapter(cfg=None, tensors=None, raw_cfg=None, st=None, extra=None):
    files = {
        "adapter/adapter_config.json": raw_cfg if raw_cfg is not None else (cfg or adapter_config()),
        "adapter/adapter_model.safetensors": st if st is not None else st_bytes(tensors or adapter_tensors()),
    }
    if extra:
        files.update(extra)
    return {k: v for k, v in files.items() if v is not None}


case("control_merge", adapter(), MERGE, "", code=0)
case("control_adapter_gguf", adapter(), ADAPTER_GGUF, "", code=0)
case("adapter_config_missing", {"adapter/adapter_model.safetensors": st_bytes(adapter_tensors())}, MERGE,
     "adapter_config.json")
case("adapter_config_not_json", adapter(raw_cfg=b"{\"r\": "), MERGE, "adapter_config.json")
case("adapter_peft_type", adapter(adapter_config(peft_type="IA3")), MERGE, "IA3")
case("adapter_rank_zero", adapter(adapter_config(r=0)), MERGE, "r")
case("adapter_rank_string", adapter(adapter_config(r="two")), MERGE, "r")
case("adapter_alpha_string", adapter(adapter_config(lora_alpha="x")), MERGE, "lora_alpha")
case("adapter_bin_only", {"adapter/adapter_config.json": adapter_config(), "adapter/adapter_model.bin": b"PK\3\4"},
     MERGE, "adapter_model.bin")
case("adapter_weights_corrupt", adapter(st=b"\x10\0\0\0\0\0\0\0{\"a\":"), MERGE, "adapter_model.safetensors")
at = adapter_tensors()
at_bad_rank = [(n, d, ([3, H] if n.endswith("layers.0.self_attn.q_proj.lora_A.weight") else s_), p)
               for (n, d, s_, p) in at]
case("adapter_rank_mismatch", adapter(tensors=at_bad_rank), MERGE, "model.layers.0.self_attn.q_proj")
case("adapter_missing_b", adapter(tensors=[t for t in at if "layers.1.self_attn.v_proj.lora_B" not in t[0]]), MERGE,
     "model.layers.1.self_attn.v_proj")
case("adapter_target_not_in_base", adapter(tensors=at + [
    ("base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight", "F32", [2, H], None),
    ("base_model.model.model.layers.7.self_attn.q_proj.lora_B.weight", "F32", [H, 2], None)]), MERGE,
     "model.layers.7.self_attn.q_proj")
case("adapter_shape_vs_base", adapter(tensors=[
    (n, d, ([H + 3, 2] if n.endswith("layers.0.self_attn.q_proj.lora_B.weight") else s_), None)
    for (n, d, s_, _) in at]), MERGE, "model.layers.0.self_attn.q_proj")
at_nan = [(n, d, s_, (f32s([float("nan")] * math.prod(s_)) if "layers.1.self_attn.q_proj.lora_A" in n else p))
          for (n, d, s_, p) in at]
case("adapter_nan", adapter(tensors=at_nan), MERGE, "model.layers.1.self_attn.q_proj.lora_A")
case("adapter_unknown_key", adapter(tensors=at + [("base_model.model.model.layers.0.self_attn.q_proj.weird", "F32",
                                                   [2], None)]), MERGE, "weird")
case("adapter_dora_to_gguf", adapter(adapter_config(use_dora=True), tensors=at + [
    (f"base_model.model.model.layers.{b}.self_attn.{p}.lora_magnitude_vector", "F32", [o], None)
    for b in range(2) for p, o in (("q_proj", H), ("v_proj", H // 2))]), ADAPTER_GGUF, "merge")
case("adapter_base_missing", adapter(), ["merge", "{case}/no-such-base", "--lora", "{case}/adapter", "-o",
                                         "{out}/merged"], "no-such-base")


# Tighter message expectations, and inputs that are tolerated on purpose
# (exit 0): what convert_hf_to_gguf.py / Ollama also accept.
REFINE = {
    "st_header_not_json": "invalid JSON in header",
    "st_header_not_utf8": "invalid UTF-8 in header",
    "st_header_array": "invalid JSON in header",
    "st_unknown_dtype": "unknown variant `Q9`",
    "st_offsets_huge": "data_offsets",
    "st_shape_overflow": "overflow",
    "st_metadata_not_strings": "expected a string",
    "imatrix_empty_file": "entry count",
    "imatrix_negative_count": "entry count",
    "imatrix_huge_count": "value count",
    "imatrix_gguf_truncated": "runs past the end",
    "tokjson_no_model": "Model missing",
    "tokjson_not_json": "EOF while parsing",
    "tokjson_vocab_id_negative": "expected u32",
    "tokjson_vocab_id_out_of_range": "not below the model's vocab_size",
    "tokjson_unknown_model_type": "cannot load the tokenizer",
    "spm_garbage": "invalid SentencePiece model",
    "spm_truncated": "runs past the end",
    "tokconfig_not_json": "invalid JSON",
    "config_not_json": "invalid JSON",
    "config_not_object": "not a JSON object",
    "index_not_json": "invalid JSON",
    "mf_missing": "No such file",
    # convert_hf_to_gguf.py ignores a non-bool add_bos_token and a chat_template
    # of the wrong type (with a warning); a list entry without name/template is skipped.
    "tokconfig_bos_wrong_type": ("", 0),
    "tokconfig_template_number": ("Bad type for chat_template", 0),
    "tokconfig_template_list_bad": ("", 0),
    # An added token far beyond vocab_size is dropped as the Python converter
    # drops it, without allocating anything for the ids in between.
    "tokjson_added_id_huge": ("", 0),
    # Ollama reads Modelfiles as UTF-8 with replacement characters; the FROM
    # argument is only resolved by `ollama create`.
    "mf_binary": ("", 0),
}
for _name, _want in REFINE.items():
    _files, _args, _msg, _code = cases[_name]
    if isinstance(_want, tuple):
        cases[_name] = (_files, _args, _want[0], _want[1])
    else:
        cases[_name] = (_files, _args, _want, _code)


def encode(v):
    if isinstance(v, (bytes, bytearray)):
        return bytes(v)
    if isinstance(v, str):
        return v.encode()
    return json.dumps(v, indent=1).encode()


def main():
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    shared = OUT / "_shared"
    (shared / "model").mkdir(parents=True)
    (shared / "model-f32.gguf").write_bytes(small_model_gguf())
    for name, data in model_files().items():
        (shared / "model" / name).write_bytes(encode(data))
    expected = {}
    for name, (files, args, msg, code) in sorted(cases.items()):
        d = OUT / name
        d.mkdir()
        for rel, data in files.items():
            p = d / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(encode(data))
        expected[name] = {"args": args, "exit": code, "message": msg}
    (OUT / "cases.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    print(f"{len(cases)} cases written to {OUT}")


if __name__ == "__main__":
    main()
