#!/usr/bin/env python3
"""PEFT LoRA merges on the issue-15 architectures, for tests/arch_parity.rs.

  make  BASE ADAPTER_DIR          writes a PEFT adapter (r=4, alpha=8) on every expert's
                                  gate_proj/up_proj/down_proj and on q_proj (Qwen3-MoE)
  check BASE ADAPTER_DIR LLAMA_SRC MERGED_GGUF
                                  PEFT's formula W + alpha/r * B @ A in float64, per expert,
                                  against the stacked ffn_*_exps tensors (and attn_q) of the
                                  merged F32 GGUF; prints {"max_abs_diff": ..., "n_experts": ...}
  make-case CASE BASE ADAPTER_DIR an adapter of one of CASES below (Gemma 2, Gemma 3 CausalLM
                                  and ConditionalGeneration in both module namings, Phi-3.5, Phi-4)
  check-dir CASE BASE ADAPTER_DIR MERGED_DIR
                                  the merged HF directory (written as f32) against PEFT's
                                  merge in float64 (tests/parity/merge_check.py's reference,
                                  tied embeddings as PEFT leaves them); prints
                                  {"max_abs_diff", "changed", "untied", "tensors", "problems"}
"""
import json
import re
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import merge_check as mc  # noqa: E402  (PEFT's merge in float64)

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


# ------------------------------------------------------------------ Gemma / Phi-3 adapters

# transformers >= 4.52 names Gemma3ForConditionalGeneration's modules differently from
# its checkpoint (_checkpoint_conversion_mapping); PEFT saves the live names.
NEW_TO_OLD = [("model.language_model", "language_model.model"), ("model.vision_tower", "vision_tower"),
              ("model.multi_modal_projector", "multi_modal_projector"), ("lm_head", "language_model.lm_head")]


def new_to_old(name: str) -> str:
    for new, old in NEW_TO_OLD:
        if name == new or name.startswith(new + "."):
            return old + name[len(new):]
    return name


# case -> (module naming, adapter config, modules_to_save names (live), base embed / head names)
PLAIN = ("model.embed_tokens.weight", "lm_head.weight")
OLD = ("language_model.model.embed_tokens.weight", "language_model.lm_head.weight")
CASES = {
    # Gemma 2 (tied): LoRA on the embeddings -> the tied output changes too (PEFT's merge).
    "gemma2": dict(naming="plain", names=PLAIN, cfg=dict(
        target_modules=["q_proj", "v_proj", "down_proj", "embed_tokens"])),
    # Gemma 3 1B (tied): LoRA on both the embeddings and lm_head, both merged into the shared weight; rsLoRA.
    "gemma3": dict(naming="plain", names=PLAIN, cfg=dict(
        target_modules=["k_proj", "o_proj", "gate_proj", "up_proj", "embed_tokens", "lm_head"], use_rslora=True)),
    # Gemma 3 4B (ConditionalGeneration), transformers >= 4.52 names; regex target_modules.
    "gemma3-mm-new": dict(naming="new", names=OLD, cfg=dict(
        target_modules=r"model\.language_model\.(embed_tokens|layers\.\d+\.(self_attn\.(q_proj|v_proj)|mlp\.gate_proj))")),
    # Gemma 3 4B, transformers 4.50 names; modules_to_save lm_head unties the output.
    "gemma3-mm-old": dict(naming="old", names=OLD, cfg=dict(
        target_modules=["q_proj", "up_proj"], modules_to_save=["lm_head"])),
    # Gemma 2, modules_to_save embed_tokens: the output keeps the base embeddings (untied), which
    # llama.cpp's gemma2 (always the token embeddings as output) cannot hold: merge to GGUF refuses.
    "gemma2-mts": dict(naming="plain", names=PLAIN, cfg=dict(target_modules=["q_proj"],
                                                             modules_to_save=["embed_tokens"])),
    # Phi-3.5-mini: the fused qkv_proj and gate_up_proj.
    "phi3": dict(naming="plain", names=PLAIN, cfg=dict(
        target_modules=["qkv_proj", "o_proj", "gate_up_proj", "down_proj"])),
    # Phi-4 (GQA, bf16, sharded): all-linear (every Linear but lm_head).
    "phi4": dict(naming="plain", names=PLAIN, cfg=dict(target_modules="all-linear", lora_alpha=16)),
}


def read_base(base: Path) -> dict:
    return mc.read_dir(base)


def make_case(case: str, base: Path, out: Path):
    spec = CASES[case]
    out.mkdir(parents=True, exist_ok=True)
    W = read_base(base)
    embed, head = spec["names"]
    tied = head not in W
    cfg = {"peft_type": "LORA", "r": R, "lora_alpha": ALPHA, "lora_dropout": 0.0, "fan_in_fan_out": False,
           "use_rslora": False, "use_dora": False, "bias": "none", "task_type": "CAUSAL_LM",
           "base_model_name_or_path": base.name, "modules_to_save": None, **spec["cfg"]}
    live = (lambda n: n) if spec["naming"] != "new" else old_to_new
    targets = cfg["target_modules"]
    # The modules of the live model: each 2-D base weight (live names), and the tied lm_head.
    modules = [live(k[:-len(".weight")]) for k in sorted(W) if k.endswith(".weight") and W[k][1].ndim == 2]
    if tied:
        modules.append(live(head[:-len(".weight")]))
    rng = np.random.default_rng(sum(map(ord, case)))
    t = {}
    mts = cfg["modules_to_save"] or []
    for m in modules:
        if m.startswith(("vision_tower", "model.vision_tower", "multi_modal_projector", "model.multi_modal_projector")):
            continue
        leaf = m.split(".")[-1]
        if targets == "all-linear":
            hit = leaf != "lm_head" and leaf != "embed_tokens"
        elif isinstance(targets, str):
            hit = re.fullmatch(targets, m) is not None
        else:
            hit = any(m == x or m.endswith("." + x) for x in targets)
        if not hit or leaf in mts:
            continue
        base_name = (new_to_old(m) if spec["naming"] == "new" else m) + ".weight"
        src = embed if (tied and base_name == head) else base_name
        out_f, in_f = W[src][1].shape
        p = mc.PREFIX + m
        if leaf == "embed_tokens":
            t[p + ".lora_embedding_A"] = (rng.standard_normal((R, out_f)) * 0.5).astype(np.float32)
            t[p + ".lora_embedding_B"] = (rng.standard_normal((in_f, R)) * 0.1).astype(np.float32)
        else:
            t[p + ".lora_A.weight"] = (rng.standard_normal((R, in_f)) / np.sqrt(in_f)).astype(np.float32)
            t[p + ".lora_B.weight"] = (rng.standard_normal((out_f, R)) * 0.05).astype(np.float32)
        if leaf in ("embed_tokens", "lm_head"):
            # save_embedding_layers="auto": the embedding layers' base weights are saved too.
            dt, a = W[src]
            t[p + ".base_layer.weight"] = mc.f64((dt, a)).astype(np.float32)
    for x in mts:
        # modules_to_save: the trained copy of the module, saved under its own name.
        name = [m for m in modules if m == x or m.endswith("." + x)][0]
        base_name = (new_to_old(name) if spec["naming"] == "new" else name) + ".weight"
        src = embed if (tied and base_name == head) else base_name
        w = mc.f64(W[src])
        t[mc.PREFIX + name + ".weight"] = (w + rng.standard_normal(w.shape) * 0.05).astype(np.float32)
    save_file(t, str(out / "adapter_model.safetensors"))
    (out / "adapter_config.json").write_text(json.dumps(cfg, indent=2))


def old_to_new(name: str) -> str:
    for new, old in NEW_TO_OLD:
        if name == old or name.startswith(old + "."):
            return new + name[len(old):]
    return name


def check_dir(case: str, base: Path, adapter: Path, merged: Path):
    spec = CASES[case]
    embed, head = spec["names"]
    base_t = read_base(base)
    rename = new_to_old if spec["naming"] == "new" else (lambda n: n)
    W, M, dora, changed, untied = mc.reference(base_t, [(adapter, 1.0)], embed=embed, head=head, rename=rename)
    ours = mc.read_dir(merged)
    problems = []
    if set(ours) != set(W):
        problems.append(f"tensor names differ: only ours {sorted(set(ours) - set(W))}, "
                        f"only expected {sorted(set(W) - set(ours))}")
    worst = 0.0
    for name in sorted(set(ours) & set(W)):
        got = mc.f64(ours[name])
        d = float(np.max(np.abs(got - W[name]))) if got.size else 0.0
        # f32 output: PEFT's f32 merge is within a few f32 ulps of the float64 result.
        bound = 8 * mc.EPS32 * float(np.max(M[name])) + 1e-30
        if d > bound:
            problems.append(f"{name}: max |diff| {d:.3e} exceeds {bound:.3e}")
        worst = max(worst, d)
    cfg = json.loads((merged / "config.json").read_text())
    print(json.dumps({"max_abs_diff": worst, "changed": sorted(changed), "untied": untied, "tensors": len(ours),
                      "config_tie_word_embeddings": cfg.get("tie_word_embeddings"), "problems": problems}))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "make":
        make(Path(sys.argv[2]), Path(sys.argv[3]))
    elif cmd == "check":
        check(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5]))
    elif cmd == "make-case":
        make_case(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))
    elif cmd == "check-dir":
        check_dir(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5]))
    else:
        sys.exit(f"unknown command {cmd}")
