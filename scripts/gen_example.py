#!/usr/bin/env python3
"""Generates the tiny model bundled in examples/ and a LoRA adapter for it.

Run with the reference venv's python (scripts/ref-env.sh):

    gen_example.py --llama-src "$(scripts/ref-src.sh)" [--out examples]

Writes two directories, deterministically (same bytes on every run):

* OUT/tiny-mistral: a Hugging Face `MistralForCausalLM` directory: 2 layers,
  hidden size 64, 4 attention heads sharing 1 KV head, FFN 256 (so ffn_down
  rows are k-quant blocks), tied embeddings, random bf16 weights in one
  model.safetensors; the REAL Llama-2 / Mistral SentencePiece tokenizer.model,
  rebuilt from llama.cpp's models/ggml-vocab-llama-spm.gguf by
  scripts/gen_fixtures.py; the Mistral-7B-Instruct-v0.3 chat template in
  tokenizer_config.json, with its [INST] / [/INST] control tokens declared
  there as added special tokens (ids 32000 and 32001, as a fine-tune that adds
  chat tokens declares them); config.json, generation_config.json and a model
  card (license) as transformers writes them.
* OUT/tiny-mistral-lora: a PEFT LoRA adapter for it (r=4, lora_alpha=8,
  q_proj and v_proj of both layers): adapter_config.json and
  adapter_model.safetensors laid out exactly as PEFT's save_pretrained writes
  them (sorted, indented config; fp32 lora_A/lora_B tensors under
  base_model.model.<module>; safetensors metadata {"format": "pt"}). The
  weights are random, B included (a trained adapter, not a fresh one).

The model code is scripts/gen_fixtures.py's (imported, not copied): weights,
bf16 rounding, safetensors writer, tokenizer and config writers.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_fixtures as gf  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
MODEL = "tiny-mistral"
ADAPTER = "tiny-mistral-lora"

PARAMS = dict(arch="MistralForCausalLM", model_type="mistral", vocab="llama-spm", dtype="bfloat16", tied=True,
              shards=1, seed=2024, vocab_size=32002, hidden=64, layers=2, heads=4, kv_heads=1, ff=256,
              head_dim=16, rope_theta=1000000.0, eps=1e-5, ctx=32768, bias=False)

# Mistral v0.3 has [INST] and [/INST] as control tokens; the Llama-2 vocabulary
# lacks them, so they are added after it, as special tokens.
ADDED = [(32000, "[INST]"), (32001, "[/INST]")]

MODEL_CARD = """---
license: apache-2.0
language:
- en
pipeline_tag: text-generation
library_name: transformers
tags:
- ggufkit
- example
---

# tiny-mistral

A 2-layer, 64-wide Mistral-architecture model with random weights and the real
Llama-2 / Mistral SentencePiece tokenizer, bundled with ggufkit to demonstrate
`ggufkit pack`. It generates noise. Made by scripts/gen_example.py.
"""

LORA = dict(r=4, alpha=8, dropout=0.05, targets=("q_proj", "v_proj"), seed=7)


def write_model(d: Path, src: Path):
    p = PARAMS
    gf.write_config(d, MODEL, p)
    gf.write_spm_tokenizer(d, src, False)
    # The generic template gen_fixtures writes beside the config is replaced by
    # Mistral's own, in tokenizer_config.json.
    (d / "chat_template.jinja").unlink()
    tc = json.loads((d / "tokenizer_config.json").read_text(encoding="utf-8"))
    for i, content in ADDED:
        tc["added_tokens_decoder"][str(i)] = {"content": content, "lstrip": False, "normalized": False,
                                              "rstrip": False, "single_word": False, "special": True}
    tc["additional_special_tokens"] = [c for _, c in ADDED]
    tc["chat_template"] = (REPO / "formats" / "templates" / "mistral-7b-instruct-v0.3.jinja").read_text(
        encoding="utf-8")
    tc = dict(sorted(tc.items()))
    (d / "tokenizer_config.json").write_text(json.dumps(tc, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    (d / "README.md").write_text(MODEL_CARD, encoding="utf-8")
    gf.write_weights(d, p)


def lora_modules():
    p = PARAMS
    out_dims = {"q_proj": p["heads"] * p["head_dim"], "v_proj": p["kv_heads"] * p["head_dim"]}
    for layer in range(p["layers"]):
        for m in LORA["targets"]:
            yield f"model.layers.{layer}.self_attn.{m}", p["hidden"], out_dims[m]


def write_adapter(d: Path):
    rng = np.random.default_rng(LORA["seed"])
    r = LORA["r"]
    tensors = {}
    for module, fan_in, fan_out in lora_modules():
        # lora_A as PEFT initialises it (kaiming-uniform bound 1/sqrt(fan_in));
        # lora_B as training leaves it (non-zero).
        bound = 1.0 / np.sqrt(fan_in)
        tensors[f"base_model.model.{module}.lora_A.weight"] = rng.uniform(-bound, bound, (r, fan_in)).astype(np.float32)
        tensors[f"base_model.model.{module}.lora_B.weight"] = (rng.standard_normal((fan_out, r)) * 0.05).astype(
            np.float32)
    save_file(tensors, str(d / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = {
        "alpha_pattern": {}, "auto_mapping": None, "base_model_name_or_path": MODEL, "bias": "none",
        "corda_config": None, "eva_config": None, "exclude_modules": None, "fan_in_fan_out": False,
        "inference_mode": True, "init_lora_weights": True, "layer_replication": None, "layers_pattern": None,
        "layers_to_transform": None, "loftq_config": {}, "lora_alpha": LORA["alpha"], "lora_bias": False,
        "lora_dropout": LORA["dropout"], "megatron_config": None, "megatron_core": "megatron.core",
        "modules_to_save": None, "peft_type": "LORA", "r": r, "rank_pattern": {}, "revision": None,
        "target_modules": list(LORA["targets"]), "task_type": "CAUSAL_LM", "trainable_token_indices": None,
        "use_dora": False, "use_rslora": False,
    }
    # PEFT: json.dumps(output_dict, indent=2, sort_keys=True), no trailing newline.
    (d / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-src", required=True, type=Path, help="llama.cpp source tree (scripts/ref-src.sh)")
    ap.add_argument("--out", type=Path, default=REPO / "examples")
    a = ap.parse_args()
    for name, write in ((MODEL, lambda d: write_model(d, a.llama_src)), (ADAPTER, write_adapter)):
        d = a.out / name
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        write(d)
        print(d)


if __name__ == "__main__":
    main()
