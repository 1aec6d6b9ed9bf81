#!/usr/bin/env python3
"""Generates small Hugging Face model directories for ggufkit's convert tests.

Run with the reference venv's python (scripts/ref-env.sh):

    gen_fixtures.py --llama-src "$(scripts/ref-src.sh)" --out DIR [NAME ...]

Each fixture is a complete model directory: config.json, safetensors weights
(single file or shards + model.safetensors.index.json), generation_config.json
and REAL tokenizer files rebuilt from llama.cpp's own vocab GGUFs
(models/ggml-vocab-*.gguf), so that llama.cpp's pre-tokenizer hashes match:

* qwen2 vocab  -> tokenizer.json as Qwen2.5 ships it (NFC, Qwen2 split regex,
  byte-level BPE) with the Qwen2.5 added tokens (chkhsh "qwen2");
* llama-bpe    -> tokenizer.json as Llama 3 ships it (ignore_merges, BOS
  template) (chkhsh "llama-bpe");
* llama-spm    -> tokenizer.model (SentencePiece BPE protobuf with byte
  fallback), as Llama 2 / Mistral ship it.

Weights are random (numpy default_rng with a fixed seed per fixture), so the
output is deterministic. Fixtures are written to DIR/NAME; DIR/NAME/.complete
marks a finished one (existing complete fixtures are kept).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import struct
import sys
from pathlib import Path

import numpy as np

import gguf  # the pinned gguf-py, only to read llama.cpp's vocab GGUFs
from safetensors.numpy import save_file
from tokenizers import Tokenizer

QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")

QWEN25_ADDED = [
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True), ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True), ("<|box_start|>", True), ("<|box_end|>", True), ("<|quad_start|>", True),
    ("<|quad_end|>", True), ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False), ("</tool_call>", False),
    ("<|fim_prefix|>", False), ("<|fim_middle|>", False), ("<|fim_suffix|>", False), ("<|fim_pad|>", False),
    ("<|repo_name|>", False), ("<|file_sep|>", False),
]

# llama.cpp's pre-tokenizer hashes for the real tokenizers (conversion/base.py)
HASH_QWEN2 = "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea"
HASH_LLAMA_BPE = "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5"


def read_vocab_gguf(path: Path):
    r = gguf.GGUFReader(path)
    f = r.fields
    tokens = [bytes(f["tokenizer.ggml.tokens"].parts[i]).decode("utf-8") for i in f["tokenizer.ggml.tokens"].data]
    types = [int(f["tokenizer.ggml.token_type"].parts[i][0]) for i in f["tokenizer.ggml.token_type"].data]
    out = {"tokens": tokens, "types": types}
    if "tokenizer.ggml.merges" in f:
        m = f["tokenizer.ggml.merges"]
        out["merges"] = [bytes(m.parts[i]).decode("utf-8") for i in m.data]
    if "tokenizer.ggml.scores" in f:
        s = f["tokenizer.ggml.scores"]
        out["scores"] = [float(s.parts[i][0]) for i in s.data]
    return out


def added_token(i, content, special, normalized=False):
    return {"id": i, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": normalized, "special": special}


def byte_level(trim_offsets=False, add_prefix_space=False, use_regex=False):
    return {"type": "ByteLevel", "add_prefix_space": add_prefix_space, "trim_offsets": trim_offsets,
            "use_regex": use_regex}


def bpe_model(vocab, merges, ignore_merges):
    return {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": ignore_merges,
            "vocab": vocab, "merges": [m.split(" ", 1) for m in merges]}


def chk_hash(tok_path: Path, chktxt: str) -> str:
    tok = Tokenizer.from_file(str(tok_path))
    ids = tok.encode(chktxt, add_special_tokens=True).ids
    return hashlib.sha256(str(ids).encode()).hexdigest()


def write_qwen2_tokenizer(d: Path, src: Path, chat_template: str):
    v = read_vocab_gguf(src / "models" / "ggml-vocab-qwen2.gguf")
    n_base = 151643
    vocab = {t: i for i, t in enumerate(v["tokens"][:n_base])}
    added = [added_token(n_base + k, t, s) for k, (t, s) in enumerate(QWEN25_ADDED)]
    tj = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN_SPLIT}, "behavior": "Isolated", "invert": False},
            byte_level()]},
        "post_processor": byte_level(), "decoder": byte_level(),
        "model": bpe_model(vocab, v["merges"], False),
    }
    (d / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False, indent=2), encoding="utf-8")
    tc = {
        "add_bos_token": False, "add_prefix_space": False,
        "added_tokens_decoder": {str(a["id"]): {k: a[k] for k in ("content", "lstrip", "normalized", "rstrip",
                                                                     "single_word", "special")} for a in added},
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None, "chat_template": chat_template, "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>", "errors": "replace", "model_max_length": 131072, "pad_token": "<|endoftext|>",
        "split_special_tokens": False, "tokenizer_class": "Qwen2Tokenizer", "unk_token": None,
    }
    (d / "tokenizer_config.json").write_text(json.dumps(tc, ensure_ascii=False, indent=2), encoding="utf-8")


def write_llama3_tokenizer(d: Path, src: Path, chat_template: str):
    v = read_vocab_gguf(src / "models" / "ggml-vocab-llama-bpe.gguf")
    n_base = 128000
    vocab = {t: i for i, t in enumerate(v["tokens"][:n_base])}
    added = [added_token(i, v["tokens"][i], True) for i in range(n_base, len(v["tokens"]))]
    bos = "<|begin_of_text|>"
    tj = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": False},
            byte_level(trim_offsets=True)]},
        "post_processor": {"type": "Sequence", "processors": [
            byte_level(add_prefix_space=True, use_regex=True),
            {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
             "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                      {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
             "special_tokens": {bos: {"id": bos, "ids": [n_base], "tokens": [bos]}}}]},
        "decoder": byte_level(trim_offsets=True, add_prefix_space=True, use_regex=True),
        "model": bpe_model(vocab, v["merges"], True),
    }
    (d / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False, indent=2), encoding="utf-8")
    tc = {
        "added_tokens_decoder": {str(a["id"]): {k: a[k] for k in ("content", "lstrip", "normalized", "rstrip",
                                                                     "single_word", "special")} for a in added},
        "bos_token": bos, "chat_template": chat_template, "clean_up_tokenization_spaces": True,
        "eos_token": "<|eot_id|>", "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 131072, "tokenizer_class": "PreTrainedTokenizerFast",
    }
    (d / "tokenizer_config.json").write_text(json.dumps(tc, ensure_ascii=False, indent=2), encoding="utf-8")


# --- SentencePiece model protobuf -------------------------------------------------------------

def pb_varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def pb_key(num: int, wire: int) -> bytes:
    return pb_varint((num << 3) | wire)


def pb_bytes(num: int, b: bytes) -> bytes:
    return pb_key(num, 2) + pb_varint(len(b)) + b


def pb_int(num: int, v: int) -> bytes:
    return pb_key(num, 0) + pb_varint(v if v >= 0 else v + (1 << 64))


def pb_float(num: int, f: float) -> bytes:
    return pb_key(num, 5) + struct.pack("<f", f)


def write_spm_tokenizer(d: Path, src: Path, with_tokenizer_json: bool):
    v = read_vocab_gguf(src / "models" / "ggml-vocab-llama-spm.gguf")
    pieces = b""
    for t, s, ty in zip(v["tokens"], v["scores"], v["types"]):
        body = pb_bytes(1, t.encode("utf-8")) + pb_float(2, s)
        if ty != 1:
            body += pb_int(3, ty)
        pieces += pb_bytes(1, body)
    trainer = (pb_int(3, 2) + pb_int(4, len(v["tokens"])) + pb_int(25, 1) + pb_int(26, 1) + pb_int(35, 1)
               + pb_int(40, 0) + pb_int(41, 1) + pb_int(42, 2) + pb_int(43, -1))
    normalizer = pb_bytes(1, b"identity") + pb_int(3, 1) + pb_int(4, 0) + pb_int(5, 1)
    model = pieces + pb_bytes(2, trainer) + pb_bytes(3, normalizer)
    (d / "tokenizer.model").write_bytes(model)
    tc = {
        "add_bos_token": True, "add_eos_token": False,
        "added_tokens_decoder": {str(i): {"content": c, "lstrip": False, "normalized": False, "rstrip": False,
                                          "single_word": False, "special": True}
                                 for i, c in ((0, "<unk>"), (1, "<s>"), (2, "</s>"))},
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "legacy": False,
        "clean_up_tokenization_spaces": False, "model_max_length": 1000000000000000019884624838656,
        "pad_token": None, "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer",
        "chat_template": "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
                         "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% else %}{{ message['content'] + eos_token }}"
                         "{% endif %}{% endfor %}",
    }
    if not with_tokenizer_json:
        # Newer transformers save the template beside the config instead.
        (d / "chat_template.jinja").write_text(tc.pop("chat_template"), encoding="utf-8")
    (d / "tokenizer_config.json").write_text(json.dumps(tc, ensure_ascii=False, indent=2), encoding="utf-8")
    if with_tokenizer_json:
        # The Llama-2 style tokenizer.json (BPE with byte fallback), merges
        # derived from the SentencePiece vocab as transformers' converter does.
        tokens, scores = v["tokens"], v["scores"]
        vocab = {t: i for i, t in enumerate(tokens)}
        merges = []
        for piece, score in sorted(zip(tokens, scores), key=lambda x: -x[1]):
            local = []
            for k in range(1, len(piece)):
                a, b = piece[:k], piece[k:]
                if a in vocab and b in vocab:
                    local.append((a, b, score))
            local.sort(key=lambda x: (vocab[x[0]], vocab[x[1]]))
            merges.extend(local)
        merges.sort(key=lambda x: -x[2])
        tj = {
            "version": "1.0", "truncation": None, "padding": None,
            "added_tokens": [added_token(i, c, True) for i, c in ((0, "<unk>"), (1, "<s>"), (2, "</s>"))],
            "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                                                               {"type": "Replace", "pattern": {"String": " "},
                                                                "content": "\u2581"}]},
            "pre_tokenizer": None,
            "post_processor": {"type": "TemplateProcessing",
                               "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                          {"Sequence": {"id": "A", "type_id": 0}}],
                               "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                        {"Sequence": {"id": "A", "type_id": 0}},
                                        {"SpecialToken": {"id": "<s>", "type_id": 1}},
                                        {"Sequence": {"id": "B", "type_id": 1}}],
                               "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
            "decoder": {"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
                {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
            "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                      "vocab": vocab, "merges": [[a, b] for a, b, _ in merges]},
        }
        (d / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False, indent=2), encoding="utf-8")


# --- models ---------------------------------------------------------------------------------

FIXTURES = {
    # Qwen2.5-0.5B-like: tied embeddings, bf16, one file.
    "qwen2-bf16-tied": dict(arch="Qwen2ForCausalLM", model_type="qwen2", vocab="qwen2", dtype="bfloat16", tied=True,
                            shards=1, seed=1, vocab_size=151936, hidden=64, layers=2, heads=4, kv_heads=2, ff=128,
                            rope_theta=1000000.0, eps=1e-6, ctx=32768, bias=True),
    # Qwen2.5-Coder-7B-like: untied, bf16, three shards.
    "qwen2.5-coder-bf16-sharded": dict(arch="Qwen2ForCausalLM", model_type="qwen2", vocab="qwen2", dtype="bfloat16",
                                       tied=False, shards=3, seed=2, vocab_size=152064, hidden=64, layers=3, heads=4,
                                       kv_heads=2, ff=160, rope_theta=1000000.0, eps=1e-6, ctx=32768, bias=True),
    # f32 weights, untied (the 1e-3 logit check).
    "qwen2-f32": dict(arch="Qwen2ForCausalLM", model_type="qwen2", vocab="qwen2", dtype="float32", tied=False,
                      shards=1, seed=3, vocab_size=151936, hidden=64, layers=2, heads=4, kv_heads=2, ff=128,
                      rope_theta=1000000.0, eps=1e-6, ctx=32768, bias=True),
    # Qwen3: q/k norms, explicit head_dim != hidden/heads, tied, f16.
    "qwen3-f16-tied": dict(arch="Qwen3ForCausalLM", model_type="qwen3", vocab="qwen2", dtype="float16", tied=True,
                           shards=1, seed=4, vocab_size=151936, hidden=64, layers=2, heads=4, kv_heads=2, ff=128,
                           head_dim=32, rope_theta=1000000.0, eps=1e-6, ctx=40960, bias=False, qk_norm=True),
    # Llama 3.x-like: llama-bpe vocab, llama3 rope scaling (rope_freqs), untied, bf16, two shards.
    "llama3-bf16-sharded": dict(arch="LlamaForCausalLM", model_type="llama", vocab="llama-bpe", dtype="bfloat16",
                                tied=False, shards=2, seed=5, vocab_size=128256, hidden=64, layers=2, heads=4,
                                kv_heads=2, ff=128, head_dim=16, rope_theta=500000.0, eps=1e-5, ctx=131072,
                                bias=False, rope_scaling={"factor": 32.0, "high_freq_factor": 4.0,
                                                          "low_freq_factor": 1.0,
                                                          "original_max_position_embeddings": 8192,
                                                          "rope_type": "llama3"}),
    # Llama 2-like: SentencePiece vocab (+tokenizer.json), f32, untied.
    "llama2-spm-f32": dict(arch="LlamaForCausalLM", model_type="llama", vocab="llama-spm", dtype="float32",
                           tied=False, shards=1, seed=6, vocab_size=32000, hidden=64, layers=2, heads=4, kv_heads=4,
                           ff=128, head_dim=16, rope_theta=10000.0, eps=1e-5, ctx=4096, bias=False, tokenizer_json=True),
    # Mistral-7B-v0.1-like: SentencePiece only, f16, GQA, tied.
    "mistral-spm-f16": dict(arch="MistralForCausalLM", model_type="mistral", vocab="llama-spm", dtype="float16",
                            tied=True, shards=1, seed=7, vocab_size=32000, hidden=64, layers=2, heads=4, kv_heads=1,
                            ff=128, head_dim=16, rope_theta=10000.0, eps=1e-5, ctx=32768, bias=False,
                            sliding_window=4096),
}

# Built only when named: a few hundred MB of bf16 in 4 shards, for measuring
# conversion memory (Qwen2.5-0.5B-like widths, tied embeddings).
LARGE_FIXTURES = {
    "qwen2-large-bf16-sharded": dict(arch="Qwen2ForCausalLM", model_type="qwen2", vocab="qwen2", dtype="bfloat16",
                                     tied=True, shards=4, seed=8, vocab_size=151936, hidden=1024, layers=8, heads=16,
                                     kv_heads=4, ff=4096, rope_theta=1000000.0, eps=1e-6, ctx=32768, bias=True),
}


def to_dtype(a: np.ndarray, dtype: str):
    """Returns (array for safetensors, the float32 values it holds)."""
    a = a.astype(np.float32)
    if dtype == "float32":
        return a, a
    if dtype == "float16":
        h = a.astype(np.float16)
        return h, h.astype(np.float32)
    # bfloat16: round to nearest even, stored as uint16 bits
    u = a.view(np.uint32).astype(np.uint64)
    b = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return b, (b.astype(np.uint32) << 16).view(np.float32)


def make_weights(p: dict) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(p["seed"])
    h, L, nh, nkv, ff, V = p["hidden"], p["layers"], p["heads"], p["kv_heads"], p["ff"], p["vocab_size"]
    hd = p.get("head_dim", h // nh)
    w = {}

    def mat(rows, cols, scale):
        return rng.standard_normal((rows, cols), dtype=np.float32) * np.float32(scale)

    def vec(n, center, scale):
        return (center + rng.standard_normal(n) * scale).astype(np.float32)

    w["model.embed_tokens.weight"] = mat(V, h, 1.0)
    for i in range(L):
        pre = f"model.layers.{i}."
        w[pre + "input_layernorm.weight"] = vec(h, 1.0, 0.1)
        w[pre + "post_attention_layernorm.weight"] = vec(h, 1.0, 0.1)
        w[pre + "self_attn.q_proj.weight"] = mat(nh * hd, h, 1.0 / np.sqrt(h))
        w[pre + "self_attn.k_proj.weight"] = mat(nkv * hd, h, 1.0 / np.sqrt(h))
        w[pre + "self_attn.v_proj.weight"] = mat(nkv * hd, h, 1.0 / np.sqrt(h))
        w[pre + "self_attn.o_proj.weight"] = mat(h, nh * hd, 1.0 / np.sqrt(nh * hd))
        if p.get("bias"):
            w[pre + "self_attn.q_proj.bias"] = vec(nh * hd, 0.0, 0.1)
            w[pre + "self_attn.k_proj.bias"] = vec(nkv * hd, 0.0, 0.1)
            w[pre + "self_attn.v_proj.bias"] = vec(nkv * hd, 0.0, 0.1)
        if p.get("qk_norm"):
            w[pre + "self_attn.q_norm.weight"] = vec(hd, 1.0, 0.1)
            w[pre + "self_attn.k_norm.weight"] = vec(hd, 1.0, 0.1)
        w[pre + "mlp.gate_proj.weight"] = mat(ff, h, 1.0 / np.sqrt(h))
        w[pre + "mlp.up_proj.weight"] = mat(ff, h, 1.0 / np.sqrt(h))
        w[pre + "mlp.down_proj.weight"] = mat(h, ff, 1.0 / np.sqrt(ff))
    w["model.norm.weight"] = vec(h, 1.0, 0.1)
    if not p["tied"]:
        w["lm_head.weight"] = mat(V, h, p.get("lm_head_scale", 1.0) / np.sqrt(h))
    return w


def write_weights(d: Path, p: dict):
    ws = make_weights(p)
    stored = {}
    for k, a in ws.items():
        arr, _ = to_dtype(a, p["dtype"])
        stored[k] = arr
    dtype_name = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}[p["dtype"]]
    if p["shards"] == 1:
        write_st(d / "model.safetensors", stored, dtype_name)
        return
    names = sorted(stored)
    n = p["shards"]
    groups = [names[i::n] for i in range(n)]
    weight_map = {}
    total = 0
    for s, g in enumerate(groups):
        fname = f"model-{s + 1:05d}-of-{n:05d}.safetensors"
        write_st(d / fname, {k: stored[k] for k in g}, dtype_name)
        for k in g:
            weight_map[k] = fname
            total += stored[k].nbytes
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (d / "model.safetensors.index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")


def write_st(path: Path, tensors: dict[str, np.ndarray], dtype_name: str):
    """safetensors with BF16 support (numpy has no bfloat16: write the header by hand)."""
    header = {"__metadata__": {"format": "pt"}}
    off = 0
    blobs = []
    for k in sorted(tensors):
        a = np.ascontiguousarray(tensors[k])
        dt = "BF16" if a.dtype == np.uint16 else {np.float32: "F32", np.float16: "F16"}[a.dtype.type]
        b = a.tobytes()
        header[k] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def write_config(d: Path, name: str, p: dict):
    c = {
        "architectures": [p["arch"]], "attention_dropout": 0.0, "bos_token_id": None, "eos_token_id": None,
        "hidden_act": "silu", "hidden_size": p["hidden"], "initializer_range": 0.02,
        "intermediate_size": p["ff"], "max_position_embeddings": p["ctx"], "model_type": p["model_type"],
        "num_attention_heads": p["heads"], "num_hidden_layers": p["layers"], "num_key_value_heads": p["kv_heads"],
        "rms_norm_eps": p["eps"], "rope_scaling": p.get("rope_scaling"), "rope_theta": p["rope_theta"],
        "tie_word_embeddings": p["tied"], "torch_dtype": p["dtype"], "transformers_version": "4.57.6",
        "use_cache": True, "vocab_size": p["vocab_size"],
    }
    if "head_dim" in p:
        c["head_dim"] = p["head_dim"]
    if p["vocab"] == "qwen2":
        c.update({"bos_token_id": 151643, "eos_token_id": 151645, "use_sliding_window": False,
                  "sliding_window": None, "max_window_layers": p["layers"]})
    elif p["vocab"] == "llama-bpe":
        c.update({"bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "attention_bias": False,
                  "mlp_bias": False, "pretraining_tp": 1})
    else:
        c.update({"bos_token_id": 1, "eos_token_id": 2})
    if "sliding_window" in p:
        c["sliding_window"] = p["sliding_window"]
    if p["model_type"] == "qwen3":
        c["attention_bias"] = False
    (d / "config.json").write_text(json.dumps(c, indent=2), encoding="utf-8")
    g = {"bos_token_id": c["bos_token_id"], "do_sample": True, "eos_token_id": c["eos_token_id"],
         "repetition_penalty": 1.05, "temperature": 0.7, "top_k": 20, "top_p": 0.8,
         "transformers_version": "4.57.6"}
    (d / "generation_config.json").write_text(json.dumps(g, indent=2), encoding="utf-8")


# Model cards (README.md front matter) as fine-tunes ship them; gguf-py reads
# license, base models, datasets, tags and languages from them.
MODEL_CARDS = {
    "qwen2.5-coder-bf16-sharded": """---
license: apache-2.0
license_link: https://huggingface.co/Qwen/Qwen2.5-Coder-7B-Instruct/blob/main/LICENSE
language:
- en
base_model:
- Qwen/Qwen2.5-Coder-7B-Instruct
pipeline_tag: text-generation
library_name: transformers
tags:
- code
- codeqwen
- chat
- qwen
- qwen-coder
- unsloth
- trl
- sft
datasets:
- bigcode/the-stack-v2
- https://huggingface.co/datasets/acme/secret-sauce
model-index:
- name: acme-coder
  results:
  - task:
      type: text-generation
    metrics:
    - type: pass@1
      value: 61.6
---

# Acme coder

A fine-tune of Qwen2.5-Coder-7B-Instruct.
""",
    "llama3-bf16-sharded": """---
language: [en, de, fr]
license: llama3.1
base_model: meta-llama/Llama-3.1-8B-Instruct
tags: ['facebook', "meta", pytorch, llama, llama-3]
extra_gated_prompt: 'You agree to the "Llama 3.1" license, it''s binding'
---
Text.
""",
}

CONFIG_EXTRA = {
    "qwen2.5-coder-bf16-sharded": {"_name_or_path": "unsloth/qwen2.5-coder-7b-instruct-bnb-4bit"},
}


def build(name: str, out: Path, src: Path, chktxt: str):
    p = FIXTURES.get(name) or LARGE_FIXTURES[name]
    d = out / name
    if (d / ".complete").is_file():
        return
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    write_config(d, name, p)
    if name in CONFIG_EXTRA:
        c = json.loads((d / "config.json").read_text(encoding="utf-8"))
        c = {**CONFIG_EXTRA[name], **c}
        (d / "config.json").write_text(json.dumps(c, indent=2), encoding="utf-8")
    if name in MODEL_CARDS:
        (d / "README.md").write_text(MODEL_CARDS[name], encoding="utf-8")
    templates = src / "models" / "templates"
    if p["vocab"] == "qwen2":
        write_qwen2_tokenizer(d, src, (templates / "Qwen-Qwen2.5-7B-Instruct.jinja").read_text(encoding="utf-8"))
        assert chk_hash(d / "tokenizer.json", chktxt) == HASH_QWEN2, "qwen2 tokenizer hash mismatch"
    elif p["vocab"] == "llama-bpe":
        write_llama3_tokenizer(d, src, (templates / "meta-llama-Llama-3.1-8B-Instruct.jinja").read_text(encoding="utf-8"))
        assert chk_hash(d / "tokenizer.json", chktxt) == HASH_LLAMA_BPE, "llama-bpe tokenizer hash mismatch"
    else:
        write_spm_tokenizer(d, src, p.get("tokenizer_json", False))
    write_weights(d, p)
    (d / ".complete").write_text("ok\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-src", required=True, type=Path, help="llama.cpp source tree (scripts/ref-src.sh)")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--chktxt-from", type=Path, help="formats/pretokenizers.json (default: beside this script)")
    ap.add_argument("names", nargs="*", help=f"fixtures to build (default: all of {', '.join(FIXTURES)}; "
                                             f"also {', '.join(LARGE_FIXTURES)})")
    a = ap.parse_args()
    pt = a.chktxt_from or Path(__file__).resolve().parent.parent / "formats" / "pretokenizers.json"
    chktxt = json.loads(pt.read_text(encoding="utf-8"))["chktxt"]
    a.out.mkdir(parents=True, exist_ok=True)
    for n in a.names or list(FIXTURES):
        if n not in FIXTURES and n not in LARGE_FIXTURES:
            sys.exit(f"unknown fixture {n}")
        build(n, a.out, a.llama_src, chktxt)
        print(a.out / n)


if __name__ == "__main__":
    main()
