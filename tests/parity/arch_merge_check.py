#!/usr/bin/env python3
"""PEFT LoRA merge on Qwen3-MoE experts, for tests/arch_parity.rs.

  make  BASE ADAPTER_DIR          writes a PEFT adapter (r=4, alpha=8) on every expert's
                                  gate_proj/up_proj/down_proj and on q_proj
  check BASE ADAPTER_DIR LLAMA_SRC MERGED_GGUF
                                  PEFT's formula W + alpha/r * B @ A in float64, per expert,
                                  against the stacked ffn_*_exps tensors (and attn_q) of the
                                  merged F32 GGUF; prints {"max_abs_diff": ..., "n_experts": ...}
"""
import json
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

R, ALPHA = 4, 8
PROJ = {"gate_proj": "ffn_gate_exps", "up_proj": "ffn_up_exps", "down_proj": "ffn_down_exps"}


def make(base: Path, out: Path):
    out.mkdir(parents=True, exist_ok=True)
    cfg = json.loads((base / "config.json").read_text())
    h, ffe, E = cfg["hidden_size"], cfg["moe_intermediate_size"], cfg["num_experts"]
    rng = np.random.default_rng(7)
    t = {}
    for i in range(cfg["num_hidden_layers"]):
        for x in range(E):
            for n, (o, inn) in {"gate_proj": (ffe, h), "up_proj": (ffe, h), "down_proj": (h, ffe)}.items():
                p = f"base_model.model.model.layers.{i}.mlp.experts.{x}.{n}"
                t[p + ".lora_A.weight"] = rng.standard_normal((R, inn)).astype(np.float32) * 0.1
                t[p + ".lora_B.weight"] = rng.standard_normal((o, R)).astype(np.float32) * 0.1
        p = f"base_model.model.model.layers.{i}.self_attn.q_proj"
        t[p + ".lora_A.weight"] = rng.standard_normal((R, h)).astype(np.float32) * 0.1
        t[p + ".lora_B.weight"] = rng.standard_normal((cfg["num_attention_heads"] * cfg["head_dim"], R)).astype(
            np.float32) * 0.1
    save_file(t, str(out / "adapter_model.safetensors"))
    (out / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": R, "lora_alpha": ALPHA, "lora_dropout": 0.0,
        "target_modules": ["gate_proj", "up_proj", "down_proj", "q_proj"], "base_model_name_or_path": base.name,
        "task_type": "CAUSAL_LM", "fan_in_fan_out": False, "use_rslora": False, "use_dora": False, "bias": "none"}))


def check(base: Path, adapter: Path, src: Path, merged: Path):
    sys.path.insert(0, str(src / "gguf-py"))
    import gguf
    w = load_file(str(base / "model.safetensors"))
    ad = load_file(str(adapter / "adapter_model.safetensors"))
    g = gguf.GGUFReader(merged)
    T = {t.name: np.asarray(t.data).astype(np.float64) for t in g.tensors}
    cfg = json.loads((base / "config.json").read_text())
    worst, n = 0.0, 0

    def delta(p):
        return (ALPHA / R) * (ad[p + ".lora_B.weight"].astype(np.float64) @ ad[p + ".lora_A.weight"].astype(np.float64))

    for i in range(cfg["num_hidden_layers"]):
        for hf, gn in PROJ.items():
            stacked = T[f"blk.{i}.{gn}.weight"]
            assert stacked.shape[0] == cfg["num_experts"], stacked.shape
            for x in range(stacked.shape[0]):
                want = w[f"model.layers.{i}.mlp.experts.{x}.{hf}.weight"].astype(np.float64) + delta(
                    f"base_model.model.model.layers.{i}.mlp.experts.{x}.{hf}")
                worst = max(worst, float(np.abs(stacked[x] - want).max()))
                n += 1
        want = w[f"model.layers.{i}.self_attn.q_proj.weight"].astype(np.float64) + delta(
            f"base_model.model.model.layers.{i}.self_attn.q_proj")
        worst = max(worst, float(np.abs(T[f"blk.{i}.attn_q.weight"] - want).max()))
    print(json.dumps({"max_abs_diff": worst, "n_experts": n}))


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        check(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5]))
