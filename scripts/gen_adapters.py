#!/usr/bin/env python3
"""Writes PEFT LoRA adapters for ggufkit's merge tests, for the fixture bases
made by scripts/gen_fixtures.py. Run with the reference venv's python:

    gen_adapters.py --fixtures FIXTURES_DIR --out DIR [NAME ...]

PEFT itself needs PyTorch, which the reference environment does not have, so
this script writes the files PEFT writes, byte for byte in layout:

* adapter_config.json: the fields of PEFT 0.18's LoraConfig.to_dict(),
  written as PEFT's save_pretrained does (json.dumps(indent=2,
  sort_keys=True)), so rank_pattern / alpha_pattern keys are sorted;
* adapter_model.safetensors: get_peft_model_state_dict() names with the
  adapter name removed (base_model.model.<module>.lora_A.weight,
  .lora_B.weight, .lora_B.bias, .lora_embedding_A/B,
  .lora_magnitude_vector, <module>.base_layer.weight for saved embedding
  layers, <module>.weight for modules_to_save), written as
  safetensors.torch.save_file does (metadata {"format": "pt"}, data sorted
  by dtype then name);
* README.md: the model card PEFT writes (base_model, library_name: peft).

LoRA weights are random (numpy default_rng, fixed seed per adapter) and
scaled so that scaling·B@A is about a third of the base weights, which makes
every adapter change the model's outputs clearly. DoRA magnitudes are the row
(or, for embeddings, column) norms of W + ΔW times a factor in [0.8, 1.2].
Adapters are written to DIR/NAME; DIR/NAME/.complete marks a finished one.
"""
from __future__ import annotations

import argparse
import json
import shutil
import struct
import sys
from pathlib import Path

import numpy as np

PREFIX = "base_model.model."
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# name: base fixture, seed, LoraConfig fields, adapter dtype, extras
ADAPTERS = {
    # Unsloth-style QLoRA adapter on every linear layer; names the 4-bit base.
    "q-plain": dict(base="qwen2.5-coder-bf16-sharded", seed=11, dtype="float32",
                    cfg=dict(r=8, lora_alpha=16, target_modules=ALL_LINEAR,
                             base_model_name_or_path="unsloth/qwen2.5-coder-7b-instruct-bnb-4bit")),
    # rsLoRA, bf16 adapter weights.
    "q-rslora": dict(base="qwen2.5-coder-bf16-sharded", seed=12, dtype="bfloat16",
                     cfg=dict(r=16, lora_alpha=8, use_rslora=True, target_modules=["q_proj", "v_proj", "down_proj"],
                              base_model_name_or_path="Qwen/Qwen2.5-Coder-7B-Instruct")),
    # Per-module ranks and alphas (PEFT regex keys; the first matching key wins).
    "q-patterns": dict(base="qwen2.5-coder-bf16-sharded", seed=13, dtype="float32",
                       cfg=dict(r=8, lora_alpha=16, target_modules=ALL_LINEAR,
                                rank_pattern={"q_proj": 4, "model.layers.1.mlp.down_proj": 2,
                                              "layers\\.[02]\\.mlp\\.up_proj": 6},
                                alpha_pattern={"v_proj": 32, "model.layers.2.self_attn.o_proj": 4,
                                               "self_attn.o_proj": 12})),
    # fan_in_fan_out = true on nn.Linear layers: PEFT forces it off.
    "q-fifo": dict(base="qwen2.5-coder-bf16-sharded", seed=14, dtype="float32",
                   cfg=dict(r=4, lora_alpha=4, fan_in_fan_out=True, target_modules=["q_proj", "o_proj"])),
    # DoRA on every linear layer.
    "q-dora": dict(base="qwen2.5-coder-bf16-sharded", seed=15, dtype="float32",
                   cfg=dict(r=8, lora_alpha=16, use_dora=True, target_modules=ALL_LINEAR)),
    # LoRA on the embeddings and lm_head (PEFT then also saves both layers' base weights).
    "q-embed": dict(base="qwen2.5-coder-bf16-sharded", seed=16, dtype="float32",
                    cfg=dict(r=8, lora_alpha=16, target_modules=["embed_tokens", "lm_head", "q_proj"])),
    # DoRA on the embeddings (norms over the vocabulary) and lm_head.
    "q-embed-dora": dict(base="qwen2.5-coder-bf16-sharded", seed=17, dtype="float32",
                         cfg=dict(r=4, lora_alpha=8, use_dora=True, target_modules=["embed_tokens", "lm_head", "v_proj"])),
    # modules_to_save: a trained full lm_head and final norm next to LoRA.
    "q-mts": dict(base="qwen2.5-coder-bf16-sharded", seed=18, dtype="float32",
                  cfg=dict(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], modules_to_save=["lm_head", "model.norm"])),
    # lora_bias: B's bias added to the q/k/v biases.
    "q-bias": dict(base="qwen2.5-coder-bf16-sharded", seed=19, dtype="float32",
                   cfg=dict(r=8, lora_alpha=16, lora_bias=True, target_modules=["q_proj", "k_proj", "v_proj"])),
    # Tied-embedding base: LoRA on lm_head (merged into the shared weight: the embeddings change too, as PEFT).
    "t-lmhead": dict(base="qwen2-bf16-tied", seed=21, dtype="float32",
                     cfg=dict(r=8, lora_alpha=16, target_modules=["lm_head", "q_proj"],
                              base_model_name_or_path="Qwen/Qwen2.5-0.5B")),
    # Tied-embedding base: LoRA on the embeddings (the tied output changes too, as PEFT).
    "t-embed": dict(base="qwen2-bf16-tied", seed=22, dtype="float32",
                    cfg=dict(r=8, lora_alpha=16, target_modules=["embed_tokens", "o_proj"])),
    # Tied-embedding base: modules_to_save replaces the embeddings only (the merge unties lm_head).
    "t-mts": dict(base="qwen2-bf16-tied", seed=23, dtype="float32",
                  cfg=dict(r=8, lora_alpha=16, target_modules=["q_proj"], modules_to_save=["embed_tokens"])),
    # Llama (Q/K permutation in GGUF).
    "l-plain": dict(base="llama3-bf16-sharded", seed=31, dtype="float32",
                    cfg=dict(r=8, lora_alpha=16, target_modules=ALL_LINEAR,
                             base_model_name_or_path="meta-llama/Llama-3.1-8B-Instruct")),
    # f32 and f16 bases.
    "f-plain": dict(base="qwen2-f32", seed=41, dtype="float32",
                    cfg=dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj", "up_proj"])),
    "h-plain": dict(base="qwen3-f16-tied", seed=51, dtype="float16",
                    cfg=dict(r=8, lora_alpha=32, target_modules=ALL_LINEAR)),
}


def peft_config(base: str, cfg: dict) -> dict:
    """LoraConfig.to_dict() of PEFT 0.18 with these fields set."""
    c = {
        "alora_invocation_tokens": None, "alpha_pattern": {}, "arrow_config": None, "auto_mapping": None,
        "base_model_name_or_path": base, "bias": "none", "corda_config": None, "ensure_weight_tying": False,
        "eva_config": None, "exclude_modules": None, "fan_in_fan_out": False, "inference_mode": True,
        "init_lora_weights": True, "layer_replication": None, "layers_pattern": None, "layers_to_transform": None,
        "loftq_config": {}, "lora_alpha": 8, "lora_bias": False, "lora_dropout": 0.05, "megatron_config": None,
        "megatron_core": "megatron.core", "modules_to_save": None, "peft_type": "LORA", "peft_version": "0.18.1",
        "qalora_group_size": 16, "r": 8, "rank_pattern": {}, "revision": None, "target_modules": None,
        "target_parameters": None, "task_type": "CAUSAL_LM", "trainable_token_indices": None, "use_dora": False,
        "use_qalora": False, "use_rslora": False,
    }
    c.update(cfg)
    return c


def read_safetensors(d: Path) -> dict[str, tuple[str, np.ndarray]]:
    """name -> (dtype, array as stored: bf16 as uint16 bits)."""
    out = {}
    for f in sorted(d.glob("model*.safetensors")):
        raw = f.read_bytes()
        n = struct.unpack("<Q", raw[:8])[0]
        header = json.loads(raw[8:8 + n])
        for name, info in header.items():
            if name == "__metadata__":
                continue
            b, e = info["data_offsets"]
            np_dt = {"F32": "<f4", "F16": "<f2", "BF16": "<u2"}[info["dtype"]]
            a = np.frombuffer(raw[8 + n + b:8 + n + e], dtype=np_dt).reshape(info["shape"])
            out[name] = (info["dtype"], a)
    return out


def to_f64(dt: str, a: np.ndarray) -> np.ndarray:
    if dt == "BF16":
        return (a.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return a.astype(np.float64)


def encode(a: np.ndarray, dtype: str) -> tuple[str, np.ndarray]:
    a = np.asarray(a, dtype=np.float64).astype(np.float32)
    if dtype == "float32":
        return "F32", a
    if dtype == "float16":
        return "F16", a.astype(np.float16)
    u = a.view(np.uint32).astype(np.uint64)
    return "BF16", ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


# safetensors' Dtype order (0.6): data is sorted by dtype, descending, then by name.
DTYPE_RANK = {"F16": 11, "BF16": 12, "F32": 15}


def write_safetensors(path: Path, tensors: dict[str, tuple[str, np.ndarray]]):
    order = sorted(tensors, key=lambda k: (-DTYPE_RANK[tensors[k][0]], k))
    header = {"__metadata__": {"format": "pt"}}
    off, blobs = 0, []
    for k in order:
        dt, a = tensors[k]
        b = np.ascontiguousarray(a).tobytes()
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


def pattern_value(patterns: dict, module: str, default):
    import re
    for k in sorted(patterns):  # as loaded back from the sorted JSON file
        if re.match(rf"(.*\.)?({k})$", module):
            return patterns[k]
    return default


def model_card(base: str) -> str:
    return f"""---
base_model: {base}
library_name: peft
pipeline_tag: text-generation
tags:
- base_model:adapter:{base}
- lora
- transformers
---

# Model Card for Model ID

<!-- Provide a quick summary of what the model is/does. -->

### Framework versions

- PEFT 0.18.1
"""


def build(name: str, fixtures: Path, out: Path):
    spec = ADAPTERS[name]
    d = out / name
    if (d / ".complete").is_file():
        return
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    base_dir = fixtures / spec["base"]
    base = read_safetensors(base_dir)
    tied = "lm_head.weight" not in base
    rng = np.random.default_rng(spec["seed"])
    cfg = peft_config(spec["cfg"].get("base_model_name_or_path", str(base_dir)), spec["cfg"])
    targets = cfg["target_modules"]
    dtype = spec["dtype"]
    tensors: dict[str, tuple[str, np.ndarray]] = {}

    def weight(module: str) -> np.ndarray:
        if module == "lm_head" and tied:
            module = "model.embed_tokens"
        dt, a = base[module + ".weight"]
        return to_f64(dt, a)

    modules = []
    for key in sorted(base):
        if not key.endswith(".weight") or base[key][1].ndim != 2:
            continue
        modules.append(key[:-len(".weight")])
    if tied:
        modules.append("lm_head")
    mts = cfg["modules_to_save"] or []
    for m in modules:
        if not any(m == t or m.endswith("." + t) for t in targets):
            continue
        r = pattern_value(cfg["rank_pattern"], m, cfg["r"])
        alpha = pattern_value(cfg["alpha_pattern"], m, cfg["lora_alpha"])
        s = alpha / np.sqrt(r) if cfg["use_rslora"] else alpha / r
        w = weight(m)
        out_f, in_f = w.shape
        is_embed = m.endswith("embed_tokens")
        # ΔW entries about a third of the base weights' spread.
        if is_embed:
            sd_b = 0.3 * w.std() / (s * np.sqrt(r))
            A = rng.standard_normal((r, out_f))                   # (r, vocab)
            B = rng.standard_normal((in_f, r)) * sd_b             # (hidden, r)
            tensors[f"{PREFIX}{m}.lora_embedding_A"] = encode(A, dtype)
            tensors[f"{PREFIX}{m}.lora_embedding_B"] = encode(B, dtype)
            a64, b64 = to_f64(*tensors[f"{PREFIX}{m}.lora_embedding_A"]), to_f64(*tensors[f"{PREFIX}{m}.lora_embedding_B"])
            v = w + s * (b64 @ a64).T
            norm = np.linalg.norm(v, axis=0)                      # per embedding dimension
        else:
            sd_b = 0.3 * w.std() * np.sqrt(in_f) / (s * np.sqrt(r))
            A = rng.standard_normal((r, in_f)) / np.sqrt(in_f)
            B = rng.standard_normal((out_f, r)) * sd_b
            tensors[f"{PREFIX}{m}.lora_A.weight"] = encode(A, dtype)
            tensors[f"{PREFIX}{m}.lora_B.weight"] = encode(B, dtype)
            a64, b64 = to_f64(*tensors[f"{PREFIX}{m}.lora_A.weight"]), to_f64(*tensors[f"{PREFIX}{m}.lora_B.weight"])
            v = w + s * (b64 @ a64)
            norm = np.linalg.norm(v, axis=1)                      # per output row
            if cfg["lora_bias"]:
                tensors[f"{PREFIX}{m}.lora_B.bias"] = encode(rng.standard_normal(out_f) * 0.05 / s, dtype)
        if cfg["use_dora"]:
            mag = norm * rng.uniform(0.8, 1.2, size=norm.shape)
            tensors[f"{PREFIX}{m}.lora_magnitude_vector"] = encode(mag, dtype)
        if m.split(".")[-1] in ("embed_tokens", "lm_head"):
            # save_embedding_layers="auto": embedding layers in target_modules -> their base weights are saved too.
            src = "model.embed_tokens" if (m == "lm_head" and tied) else m
            tensors[f"{PREFIX}{m}.base_layer.weight"] = base[src + ".weight"]
    for t in mts:
        # PEFT's _set_trainable: module names ending with the entry.
        for m in modules + ["model.norm"]:
            if m.endswith(t):
                key = m + ".weight"
                if key not in base:
                    continue
                dt, a = base[key]
                w = to_f64(dt, a)
                new = w + rng.standard_normal(w.shape) * 0.05 * (np.abs(w).mean() + 1e-3)
                tensors[f"{PREFIX}{key}"] = encode(new, {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}[dt])
    write_safetensors(d / "adapter_model.safetensors", tensors)
    if isinstance(cfg["target_modules"], list):
        cfg["target_modules"] = sorted(cfg["target_modules"])  # a set in PEFT; json order is arbitrary
    if cfg["modules_to_save"] is not None:
        cfg["modules_to_save"] = list(cfg["modules_to_save"])
    (d / "adapter_config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True), encoding="utf-8")
    (d / "README.md").write_text(model_card(cfg["base_model_name_or_path"]), encoding="utf-8")
    (d / ".complete").write_text("ok\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixtures", required=True, type=Path, help="directory of scripts/gen_fixtures.py outputs")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("names", nargs="*", help=f"adapters to build (default: all of {', '.join(ADAPTERS)})")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    for n in a.names or list(ADAPTERS):
        if n not in ADAPTERS:
            sys.exit(f"unknown adapter {n}")
        build(n, a.fixtures, a.out)
        print(a.out / n)


if __name__ == "__main__":
    main()
