"""Small llama-architecture GGUFs written with gguf-py, loadable by llama.cpp.

Random weights, a real tokenizer copied from one of llama.cpp's vocab GGUFs.
"""
from pathlib import Path

import numpy as np
import gguf

TOKENIZER_KEYS_PREFIX = "tokenizer."


def _field_value(field: gguf.ReaderField):
    """A GGUFReader field as (python value, GGUFValueType, element type or None)."""
    t = field.types[0]
    if t == gguf.GGUFValueType.ARRAY:
        et = field.types[1] if len(field.types) > 1 else gguf.GGUFValueType.UINT8
        return field.contents(), t, et
    return field.contents(), t, None


def copy_tokenizer(writer: gguf.GGUFWriter, vocab_gguf: Path) -> int:
    """Copies tokenizer.* keys from a vocab GGUF; returns the vocabulary size."""
    r = gguf.GGUFReader(str(vocab_gguf))
    n_vocab = 0
    for name, field in r.fields.items():
        if not name.startswith(TOKENIZER_KEYS_PREFIX):
            continue
        value, t, et = _field_value(field)
        if name == "tokenizer.ggml.tokens":
            n_vocab = len(value)
        if t == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(name, value, t, sub_type=et)
        else:
            writer.add_key_value(name, value, t)
    return n_vocab


def write_llama(path: Path, vocab_gguf: Path, *, dtype=np.float32, n_embd=64, n_layer=2, n_head=4,
                n_head_kv=2, n_ff=128, tied=False, seed=0) -> Path:
    """Writes a tiny random llama model; `dtype` is np.float32, np.float16 or "bf16"."""
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-llama")
    w.add_context_length(256)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(0 if dtype is np.float32 else (1 if dtype is np.float16 else 32))
    n_vocab = copy_tokenizer(w, vocab_gguf)
    hd = n_embd // n_head

    def tensor(name, shape, scale=0.05):
        x = (rng.standard_normal(shape) * scale).astype(np.float32)
        if name.endswith("norm.weight"):
            x = (1.0 + x).astype(np.float32)
            w.add_tensor(name, x)
        elif dtype == "bf16":
            bits = (x.view(np.uint32) + 0x7FFF + ((x.view(np.uint32) >> 16) & 1)) >> 16
            w.add_tensor(name, bits.astype(np.uint16).view(np.uint8).reshape(shape[0], -1),
                         raw_dtype=gguf.GGMLQuantizationType.BF16)
        else:
            w.add_tensor(name, x.astype(dtype))

    tensor("token_embd.weight", (n_vocab, n_embd))
    for i in range(n_layer):
        tensor(f"blk.{i}.attn_norm.weight", (n_embd,))
        tensor(f"blk.{i}.attn_q.weight", (n_head * hd, n_embd))
        tensor(f"blk.{i}.attn_k.weight", (n_head_kv * hd, n_embd))
        tensor(f"blk.{i}.attn_v.weight", (n_head_kv * hd, n_embd))
        tensor(f"blk.{i}.attn_output.weight", (n_embd, n_head * hd))
        tensor(f"blk.{i}.ffn_norm.weight", (n_embd,))
        tensor(f"blk.{i}.ffn_gate.weight", (n_ff, n_embd))
        tensor(f"blk.{i}.ffn_up.weight", (n_ff, n_embd))
        tensor(f"blk.{i}.ffn_down.weight", (n_embd, n_ff))
    tensor("output_norm.weight", (n_embd,))
    if not tied:
        tensor("output.weight", (n_vocab, n_embd))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
