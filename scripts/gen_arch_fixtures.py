#!/usr/bin/env python3
"""Generates tiny random-weight Hugging Face models of the architectures of
issue 15 (qwen3moe, gemma3, gemma2, phi3) for ggufkit's parity tests.

Run with the reference venv's python (scripts/ref-env.sh):

    gen_arch_fixtures.py --llama-src "$(scripts/ref-src.sh)" --out DIR [NAME ...]

Each config is the real config.json of the named model with its sizes shrunk
(hidden size, layers, heads, experts, ...); everything else (rope, norms,
softcapping, sliding windows, expert routing keys, tie_word_embeddings) is
kept. Tokenizers are real ones rebuilt from llama.cpp's vocab GGUFs
(scripts/gen_fixtures.py) or, for Gemma, a SentencePiece model trained here
with the `sentencepiece` package on a small fixed corpus, with Gemma's special
tokens as user-defined pieces.

Weights come from numpy's default_rng with a fixed seed per fixture: the output
is deterministic. DIR/NAME/.complete marks a finished fixture.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_fixtures as gf  # noqa: E402  (shared tokenizer writers and safetensors writer)

# Qwen3's tokenizer: Qwen2.5's plus the tool-response and thinking tokens.
QWEN3_EXTRA_ADDED = [("<tool_response>", False), ("</tool_response>", False), ("<think>", False),
                     ("</think>", False)]

# --- configs: the real config.json of each model, sizes shrunk ------------------------------

QWEN3_30B_A3B = {
    "architectures": ["Qwen3MoeForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 151643, "decoder_sparse_step": 1, "eos_token_id": 151645, "head_dim": 128,
    "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 6144,
    "max_position_embeddings": 40960, "max_window_layers": 48, "mlp_only_layers": [], "model_type": "qwen3_moe",
    "moe_intermediate_size": 768, "norm_topk_prob": True, "num_attention_heads": 32, "num_experts": 128,
    "num_experts_per_tok": 8, "num_hidden_layers": 48, "num_key_value_heads": 4, "output_router_logits": False,
    "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000.0, "router_aux_loss_coef": 0.001,
    "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.51.0", "use_cache": True, "use_sliding_window": False, "vocab_size": 151936,
}

QWEN3_CODER_30B_A3B = {
    **QWEN3_30B_A3B, "max_position_embeddings": 262144, "rope_theta": 10000000.0, "max_window_layers": 28,
    "transformers_version": "4.51.0",
}

SHRINK_QWEN3MOE = {"head_dim": 32, "hidden_size": 64, "intermediate_size": 96, "moe_intermediate_size": 32,
                   "num_attention_heads": 4, "num_key_value_heads": 2, "num_experts": 8,
                   "num_experts_per_tok": 2, "num_hidden_layers": 2, "max_window_layers": 2}

FIXTURES = {
    # Qwen3-30B-A3B, shrunk: bf16, one file.
    "qwen3moe-30b-a3b-bf16": dict(config={**QWEN3_30B_A3B, **SHRINK_QWEN3MOE}, dtype="bfloat16", shards=1, seed=31,
                                  vocab="qwen3", template="Qwen-Qwen3-0.6B.jinja"),
    # Qwen3-Coder-30B-A3B-Instruct, shrunk: bf16, three shards (experts of a block split across files).
    "qwen3moe-coder-bf16-sharded": dict(config={**QWEN3_CODER_30B_A3B, **SHRINK_QWEN3MOE, "num_hidden_layers": 3,
                                                "num_experts": 6, "num_experts_per_tok": 3},
                                        dtype="bfloat16", shards=3, seed=32, vocab="qwen3",
                                        template="Qwen3-Coder.jinja"),
    # f32 weights (the 1e-3 logit check), 128 experts of width 32.
    "qwen3moe-f32": dict(config={**QWEN3_30B_A3B, **SHRINK_QWEN3MOE, "num_experts": 16, "num_experts_per_tok": 4,
                                 "torch_dtype": "float32"},
                         dtype="float32", shards=1, seed=33, vocab="qwen3", template="Qwen-Qwen3-0.6B.jinja"),
}

# Built only when named: the Qwen3-30B-A3B expert layout (128 experts of
# 768 x 2048) in a few blocks, for measuring conversion memory and time.
LARGE_FIXTURES = {
    "qwen3moe-128x-large-bf16": dict(config={**QWEN3_30B_A3B, "num_hidden_layers": 4}, dtype="bfloat16", shards=4,
                                     seed=34, vocab="qwen3", template="Qwen-Qwen3-0.6B.jinja"),
}


# --- weights ---------------------------------------------------------------------------------

class Rng:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def mat(self, rows, cols, scale):
        return self.rng.standard_normal((rows, cols), dtype=np.float32) * np.float32(scale)

    def vec(self, n, center, scale):
        return (center + self.rng.standard_normal(n) * scale).astype(np.float32)


def attention(w, r: Rng, pre, c, qk_norm):
    h, nh, nkv = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    hd = c.get("head_dim") or h // nh
    w[pre + "self_attn.q_proj.weight"] = r.mat(nh * hd, h, 1.0 / np.sqrt(h))
    w[pre + "self_attn.k_proj.weight"] = r.mat(nkv * hd, h, 1.0 / np.sqrt(h))
    w[pre + "self_attn.v_proj.weight"] = r.mat(nkv * hd, h, 1.0 / np.sqrt(h))
    w[pre + "self_attn.o_proj.weight"] = r.mat(h, nh * hd, 1.0 / np.sqrt(nh * hd))
    if qk_norm:
        w[pre + "self_attn.q_norm.weight"] = r.vec(hd, 1.0, 0.1)
        w[pre + "self_attn.k_norm.weight"] = r.vec(hd, 1.0, 0.1)


def qwen3moe_weights(c: dict, seed: int) -> dict[str, np.ndarray]:
    r = Rng(seed)
    h, V, E, ffe = c["hidden_size"], c["vocab_size"], c["num_experts"], c["moe_intermediate_size"]
    w = {"model.embed_tokens.weight": r.mat(V, h, 1.0)}
    for i in range(c["num_hidden_layers"]):
        pre = f"model.layers.{i}."
        w[pre + "input_layernorm.weight"] = r.vec(h, 1.0, 0.1)
        w[pre + "post_attention_layernorm.weight"] = r.vec(h, 1.0, 0.1)
        attention(w, r, pre, c, True)
        w[pre + "mlp.gate.weight"] = r.mat(E, h, 1.0 / np.sqrt(h))
        for x in range(E):
            w[pre + f"mlp.experts.{x}.gate_proj.weight"] = r.mat(ffe, h, 1.0 / np.sqrt(h))
            w[pre + f"mlp.experts.{x}.up_proj.weight"] = r.mat(ffe, h, 1.0 / np.sqrt(h))
            w[pre + f"mlp.experts.{x}.down_proj.weight"] = r.mat(h, ffe, 1.0 / np.sqrt(ffe))
    w["model.norm.weight"] = r.vec(h, 1.0, 0.1)
    if not c.get("tie_word_embeddings", False):
        w["lm_head.weight"] = r.mat(V, h, 1.0 / np.sqrt(h))
    return w


def write_weights(d: Path, weights: dict[str, np.ndarray], dtype: str, shards: int):
    stored = {k: gf.to_dtype(a, dtype)[0] for k, a in weights.items()}
    dtype_name = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}[dtype]
    if shards == 1:
        gf.write_st(d / "model.safetensors", stored, dtype_name)
        return
    names = sorted(stored)
    groups = [names[i::shards] for i in range(shards)]
    weight_map, total = {}, 0
    for s, g in enumerate(groups):
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        gf.write_st(d / fname, {k: stored[k] for k in g}, dtype_name)
        for k in g:
            weight_map[k] = fname
            total += stored[k].nbytes
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (d / "model.safetensors.index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")


def write_large_weights(d: Path, c: dict, seed: int, shards: int):
    """Like write_weights for a model too big to hold: one block per shard
    group, written tensor group by tensor group (bf16 only)."""
    r = Rng(seed)
    h, V, E, ffe = c["hidden_size"], c["vocab_size"], c["num_experts"], c["moe_intermediate_size"]
    L = c["num_hidden_layers"]
    weight_map, total = {}, 0
    files = [{} for _ in range(shards)]
    files[0]["model.embed_tokens.weight"] = None
    files[0]["model.norm.weight"] = None
    files[-1]["lm_head.weight"] = None
    for i in range(L):
        files[i * shards // L][f"model.layers.{i}"] = None
    for s, group in enumerate(files):
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        t = {}
        for key in group:
            if key == "model.embed_tokens.weight":
                t[key] = r.mat(V, h, 1.0)
            elif key == "model.norm.weight":
                t[key] = r.vec(h, 1.0, 0.1)
            elif key == "lm_head.weight":
                t[key] = r.mat(V, h, 1.0 / np.sqrt(h))
            else:
                pre = key + "."
                t[pre + "input_layernorm.weight"] = r.vec(h, 1.0, 0.1)
                t[pre + "post_attention_layernorm.weight"] = r.vec(h, 1.0, 0.1)
                attention(t, r, pre, c, True)
                t[pre + "mlp.gate.weight"] = r.mat(E, h, 1.0 / np.sqrt(h))
                for x in range(E):
                    t[pre + f"mlp.experts.{x}.gate_proj.weight"] = r.mat(ffe, h, 1.0 / np.sqrt(h))
                    t[pre + f"mlp.experts.{x}.up_proj.weight"] = r.mat(ffe, h, 1.0 / np.sqrt(h))
                    t[pre + f"mlp.experts.{x}.down_proj.weight"] = r.mat(h, ffe, 1.0 / np.sqrt(ffe))
        stored = {k: gf.to_dtype(a, "bfloat16")[0] for k, a in t.items()}
        del t
        gf.write_st(d / fname, stored, "BF16")
        for k, a in stored.items():
            weight_map[k] = fname
            total += a.nbytes
        del stored
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (d / "model.safetensors.index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")


# --- tokenizers ------------------------------------------------------------------------------

def write_qwen3_tokenizer(d: Path, src: Path, template: str, chktxt: str):
    gf.write_qwen2_tokenizer(d, src, template)
    assert gf.chk_hash(d / "tokenizer.json", chktxt) == gf.HASH_QWEN2, "qwen2 tokenizer hash mismatch"
    tj = json.loads((d / "tokenizer.json").read_text(encoding="utf-8"))
    tc = json.loads((d / "tokenizer_config.json").read_text(encoding="utf-8"))
    n = max(a["id"] for a in tj["added_tokens"]) + 1
    for k, (content, special) in enumerate(QWEN3_EXTRA_ADDED):
        a = gf.added_token(n + k, content, special)
        tj["added_tokens"].append(a)
        tc["added_tokens_decoder"][str(a["id"])] = {k2: a[k2] for k2 in ("content", "lstrip", "normalized", "rstrip",
                                                                          "single_word", "special")}
    tc["model_max_length"] = 131072
    (d / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False, indent=2), encoding="utf-8")
    (d / "tokenizer_config.json").write_text(json.dumps(tc, ensure_ascii=False, indent=2), encoding="utf-8")


# --- driver ----------------------------------------------------------------------------------

def build(name: str, out: Path, src: Path, chktxt: str):
    p = FIXTURES.get(name) or LARGE_FIXTURES[name]
    d = out / name
    if (d / ".complete").is_file():
        return
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    c = p["config"]
    (d / "config.json").write_text(json.dumps(c, indent=2), encoding="utf-8")
    g = {"bos_token_id": c.get("bos_token_id"), "do_sample": True, "eos_token_id": c.get("eos_token_id"),
         "temperature": 0.6, "top_k": 20, "top_p": 0.95, "transformers_version": c.get("transformers_version")}
    (d / "generation_config.json").write_text(json.dumps(g, indent=2), encoding="utf-8")
    template = (src / "models" / "templates" / p["template"]).read_text(encoding="utf-8")
    if p["vocab"] == "qwen3":
        write_qwen3_tokenizer(d, src, template, chktxt)
    else:
        raise ValueError(p["vocab"])
    arch = c["architectures"][0]
    if name in LARGE_FIXTURES:
        write_large_weights(d, c, p["seed"], p["shards"])
    elif arch == "Qwen3MoeForCausalLM":
        write_weights(d, qwen3moe_weights(c, p["seed"]), p["dtype"], p["shards"])
    else:
        raise ValueError(arch)
    (d / ".complete").write_text("ok\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-src", required=True, type=Path, help="llama.cpp source tree (scripts/ref-src.sh)")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("names", nargs="*", help=f"fixtures to build (default: all of {', '.join(FIXTURES)}; "
                                             f"also {', '.join(LARGE_FIXTURES)})")
    a = ap.parse_args()
    pt = Path(__file__).resolve().parent.parent / "formats" / "pretokenizers.json"
    chktxt = json.loads(pt.read_text(encoding="utf-8"))["chktxt"]
    a.out.mkdir(parents=True, exist_ok=True)
    for n in a.names or list(FIXTURES):
        if n not in FIXTURES and n not in LARGE_FIXTURES:
            sys.exit(f"unknown fixture {n}")
        build(n, a.out, a.llama_src, chktxt)
        print(a.out / n)


if __name__ == "__main__":
    main()
