#!/usr/bin/env python3
"""Checks for `ggufkit merge` and GGUF LoRA adapters, run by tests/merge_parity.rs
with the reference venv's python. Each subcommand prints one JSON object.

  merged BASE_DIR OUT_DIR ADAPTER[=W] ...
        Our merged Hugging Face directory vs PEFT's merge formulas evaluated
        in float64 with numpy (written here from PEFT's code, independently of
        ggufkit): LoRA W + s·B@A, embeddings W + s·(B@A)ᵀ, rsLoRA, PEFT's
        rank_pattern/alpha_pattern matching (Python `re`, as PEFT), DoRA
        (row norms; column norms for embeddings), lora_bias, modules_to_save,
        saved embedding layers, fan_in_fan_out forced off on nn.Linear,
        sequential adapters with weights, untied lm_head on tied bases.
        Reports, per changed tensor, the largest error in units of
        2^-24·M (M: the magnitude of the terms summed, see `bound_scale`)
        and, for 16-bit outputs, how many elements equal the correctly
        rounded float64 result and whether every other one is explained by
        a rounding midpoint within the f32 error bound.
  llama BASE_GGUF ADAPTER_GGUF MERGED_GGUF
        llama.cpp (llama-cpp-python) running the base with our GGUF LoRA
        adapter (lora_path) vs our merged GGUF: greedy tokens and logits.
  script ADAPTER_DIR BASE_DIR OUT LLAMA_SRC
        llama.cpp's convert_lora_to_gguf.py (with the numpy stand-ins for
        torch in tests/parity/convert_ref_stubs) writing OUT.
"""
from __future__ import annotations

import json
import re
import struct
import sys
from pathlib import Path

import numpy as np

PREFIX = "base_model.model."
EPS32 = 2.0 ** -24

# ------------------------------------------------------------------ safetensors


def read_dir(d: Path) -> dict[str, tuple[str, np.ndarray]]:
    """name -> (dtype, stored array; BF16 as uint16 bits)."""
    out = {}
    for f in sorted(d.glob("*.safetensors")):
        out.update(read_file(f))
    return out


def read_file(f: Path) -> dict[str, tuple[str, np.ndarray]]:
    raw = f.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        np_dt = {"F32": "<f4", "F16": "<f2", "BF16": "<u2"}[info["dtype"]]
        out[name] = (info["dtype"], np.frombuffer(raw[8 + n + b:8 + n + e], dtype=np_dt).reshape(info["shape"]))
    return out


def f64(t: tuple[str, np.ndarray]) -> np.ndarray:
    dt, a = t
    if dt == "BF16":
        return (a.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return a.astype(np.float64)


def round_bf16(x: np.ndarray) -> np.ndarray:
    """float64 -> bf16 bits, round to nearest even, directly from float64."""
    x = np.asarray(x, dtype=np.float64)
    f = x.astype(np.float32)  # nearest f32; then pick the nearest bf16 neighbour of x itself
    u = f.view(np.uint32)
    lo = (u & 0xFFFF0000).astype(np.uint32)
    hi = lo + np.uint32(0x10000)
    lo_v = lo.view(np.float32).astype(np.float64)
    hi_v = hi.view(np.float32).astype(np.float64)
    dlo, dhi = np.abs(x - lo_v), np.abs(hi_v - x)
    take_hi = (dhi < dlo) | ((dhi == dlo) & ((lo >> 16) & 1 == 1))
    return np.where(take_hi, hi, lo).astype(np.uint32).__rshift__(16).astype(np.uint16)


def stored(x: np.ndarray, dt: str) -> np.ndarray:
    """float64 values correctly rounded to safetensors dtype `dt`, as stored (BF16 as uint16 bits)."""
    if dt == "BF16":
        return round_bf16(x)
    return np.asarray(x, dtype=np.float64).astype({"F32": np.float32, "F16": np.float16}[dt])


def bits_of(dt: str, a: np.ndarray) -> np.ndarray:
    """The stored bits of an array of dtype `dt` (so -0.0 and NaN payloads count)."""
    return a.view(np.uint32) if dt == "F32" else a.view(np.uint16)


def bf16_value(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


# ------------------------------------------------------------------ PEFT's merge, in float64


def get_pattern_key(pattern_keys, key_to_match):
    """peft.utils.other.get_pattern_key"""
    for key in pattern_keys:
        if re.match(rf"(.*\.)?({key})$", key_to_match):
            return key
    return key_to_match


def load_adapter(d: Path):
    cfg = json.loads((d / "adapter_config.json").read_text(encoding="utf-8"))
    tensors = read_file(d / "adapter_model.safetensors")
    modules, full = {}, []
    for k in tensors:
        rest = k[len(PREFIX):]
        for suffix, slot in ((".lora_A.weight", "A"), (".lora_B.weight", "B"), (".lora_B.bias", "bias"),
                             (".lora_embedding_A", "EA"), (".lora_embedding_B", "EB"),
                             (".lora_magnitude_vector", "m")):
            if rest.endswith(suffix):
                modules.setdefault(rest[:-len(suffix)], {})[slot] = f64(tensors[k])
                break
        else:
            if rest.endswith(".base_layer.weight") or rest.endswith(".base_layer.bias"):
                full.append((rest.replace(".base_layer.", "."), f64(tensors[k]), True))
            else:
                full.append((rest, f64(tensors[k]), False))
    return cfg, modules, full


def scaling(cfg, module):
    r_key = get_pattern_key(cfg.get("rank_pattern") or {}, module)
    a_key = get_pattern_key(cfg.get("alpha_pattern") or {}, module)
    r = (cfg.get("rank_pattern") or {}).get(r_key, cfg["r"])
    alpha = (cfg.get("alpha_pattern") or {}).get(a_key, cfg["lora_alpha"])
    return alpha / np.sqrt(r) if cfg.get("use_rslora") else alpha / r


def reference(base: dict, adapters: list[tuple[Path, float]], embed="model.embed_tokens.weight",
              head="lm_head.weight", rename=lambda name: name):
    """Expected tensors (float64), the magnitude M per element for the error
    bound, whether DoRA touched each tensor, and the set of changed names.

    A tied base (no `head` tensor) is PEFT's model after merge_and_unload: the
    embeddings and the output layer share one Parameter, so LoRA merged into
    either (and a saved base layer loaded into either) changes both and the
    model stays tied; a modules_to_save replacement is a new module on its
    side only, after which the two are separate (tie_word_embeddings false).
    `rename` maps an adapter's module names to the base's."""
    W = {k: f64(v) for k, v in base.items()}
    M = {k: np.abs(v) for k, v in W.items()}
    dora = {k: False for k in W}
    changed = set()
    tied = head not in W
    shared = [tied]
    loaded = [(load_adapter(d), w) for d, w in adapters]

    def key(name):
        """The tensor `name` lives in (the embeddings, while tied)."""
        return embed if (shared[0] and name == head) else name

    def detach():
        if shared[0]:
            shared[0] = False
            W[head], M[head], dora[head] = W[embed].copy(), M[embed].copy(), dora[embed]
            if embed in changed:
                changed.add(head)

    def touch(name):
        changed.add(key(name))
        return key(name)

    # PEFT loads every adapter's state dict (saved base layers included) before merging.
    for (cfg, modules, full), w in loaded:
        for name, R, is_base_layer in full:
            name = rename(name)
            if is_base_layer:
                if np.array_equal(R, W[key(name)]):
                    continue
                name = touch(name)
                W[name], M[name] = R.copy(), np.abs(R)
    for (cfg, modules, full), w in loaded:
        for mod, p in modules.items():
            name = touch(rename(mod) + ".weight")
            s = w * scaling(cfg, mod)
            if "A" in p:  # nn.Linear; PEFT forces fan_in_fan_out off for nn.Linear
                delta = s * (p["B"] @ p["A"])
                V = W[name] + delta
                if "m" in p:
                    norm = np.linalg.norm(V, axis=1)
                    f = (p["m"] / norm)[:, None]
                    W[name], M[name] = f * V, np.abs(f) * (M[name] + np.abs(delta))
                    dora[name] = True
                else:
                    W[name], M[name] = V, M[name] + np.abs(delta)
                if "bias" in p:
                    b = touch(rename(mod) + ".bias")
                    db = s * p["bias"]
                    W[b], M[b] = W[b] + db, M[b] + np.abs(db)
            else:  # nn.Embedding: ΔW = (B @ A)ᵀ, DoRA norms per embedding dimension
                delta = s * (p["EB"] @ p["EA"]).T
                V = W[name] + delta
                if "m" in p:
                    norm = np.linalg.norm(V, axis=0)
                    f = (p["m"] / norm)[None, :]
                    W[name], M[name] = f * V, np.abs(f) * (M[name] + np.abs(delta))
                    dora[name] = True
                else:
                    W[name], M[name] = V, M[name] + np.abs(delta)
        for name, R, is_base_layer in full:
            name = rename(name)
            if is_base_layer:
                continue
            if tied and name in (embed, head):
                detach()
            touch(name)
            if w == 1.0:
                W[name], M[name] = R.copy(), np.abs(R)
            else:
                W[name] = W[name] + w * (R - W[name])
                M[name] = M[name] + abs(w) * (np.abs(R) + M[name])
    untied = tied and not shared[0]
    return W, M, dora, changed, untied


def cmd_merged(base_dir: Path, out_dir: Path, specs: list[str]):
    adapters = []
    for s in specs:
        d, _, w = s.rpartition("=") if re.search(r"=[-+0-9.eE]+$", s) else (s, "", "1")
        adapters.append((Path(d), float(w)))
    base = read_dir(base_dir)
    ours = read_dir(out_dir)
    W, M, dora, changed, untied = reference(base, adapters)
    cfg = json.loads((out_dir / "config.json").read_text(encoding="utf-8"))
    report = {"tensors": len(ours), "changed": sorted(changed), "untied": untied, "problems": [],
              "config_torch_dtype": cfg.get("torch_dtype", cfg.get("dtype")),
              "config_tie_word_embeddings": cfg.get("tie_word_embeddings"), "cases": []}
    if set(ours) != set(W):
        report["problems"].append(f"tensor names differ: only ours {sorted(set(ours) - set(W))}, "
                                  f"only expected {sorted(set(W) - set(ours))}")
    n_exact = n_elems = n_tie = bytes_compared = 0
    worst = {"lora": 0.0, "dora": 0.0}
    worst_abs = 0.0
    for name in sorted(set(ours) & set(W)):
        dt, a = ours[name]
        bytes_compared += a.nbytes
        if name not in changed:
            bdt, b = base.get(name, base.get("model.embed_tokens.weight"))
            # Byte-identical in the base's dtype, else the base value correctly rounded to ours.
            want = b if bdt == dt else stored(f64((bdt, b)), dt)
            if not np.array_equal(bits_of(dt, a), bits_of(dt, want)):
                report["problems"].append(f"{name}: unchanged tensor differs from the base")
            continue
        ref, mag = W[name], M[name]
        got = f64(ours[name])
        ratio = float(np.max(np.abs(got - ref) / (EPS32 * mag + 1e-300)))
        kind = "dora" if dora[name] else "lora"
        c = 8.0 if dora[name] else 4.0
        n_elems += ref.size
        abs_err = float(np.max(np.abs(got - ref)))
        case = {"tensor": name, "elements": int(ref.size), "max_err_in_eps32_M": ratio, "max_abs_err": abs_err}
        worst_abs = max(worst_abs, abs_err)
        if dt == "F32":
            worst[kind] = max(worst[kind], ratio)
            if ratio > c:
                report["problems"].append(f"{name}: error {ratio:.2f}·2^-24·M exceeds {c}")
            n_exact += int(np.sum(got == ref.astype(np.float32).astype(np.float64)))
        else:
            # 16-bit: compare with the correctly rounded float64 result.
            if dt == "BF16":
                want, val = round_bf16(ref), bf16_value
            else:
                want = ref.astype(np.float16).view(np.uint16)
                val = lambda bits: bits.view(np.float16).astype(np.float64)  # noqa: E731
            bits = a.view(np.uint16) if dt == "F16" else a
            diff = bits != want
            n_exact += int(ref.size - np.sum(diff))
            if np.any(diff):
                # A mismatch is explained when our 16-bit value is the rounding of some value
                # within the f32 error bound of the float64 result (a rounding boundary lies
                # within the bound): the rounding interval of our value meets [ref - B, ref + B].
                b = bits[diff]
                order = np.where(b < 0x8000, b.astype(np.int64), -(b.astype(np.int64) & 0x7FFF))
                unorder = lambda o: np.where(o >= 0, o, 0x8000 | (-o)).astype(np.uint16)  # noqa: E731
                x, lo, hi = val(b), val(unorder(order - 1)), val(unorder(order + 1))
                bound = c * EPS32 * mag[diff]
                r = ref[diff]
                explained = ((x + lo) / 2 <= r + bound) & ((x + hi) / 2 >= r - bound)
                n_tie += int(np.sum(explained))
                if not np.all(explained):
                    report["problems"].append(f"{name}: {int(np.sum(~explained))} elements differ from the "
                                              f"rounded float64 result by more than the f32 error bound allows")
            worst[kind] = max(worst[kind], ratio if dt == "F32" else 0.0)
        report["cases"].append(case)
    report.update({"changed_elements": n_elems, "exact": n_exact, "bound_explained": n_tie,
                   "bytes_compared": bytes_compared, "worst_f32_lora": worst["lora"], "worst_f32_dora": worst["dora"],
                   "max_abs_err": worst_abs})
    print(json.dumps(report))


# ------------------------------------------------------------------ llama.cpp with the GGUF adapter


def cmd_llama(base: str, adapter: str, merged: str):
    from llama_cpp import Llama

    prompts = [b"def fibonacci(n):\n    ", b"The quick brown fox", b"<|im_start|>user\nhello<|im_end|>\n"]
    common = dict(n_ctx=256, logits_all=True, verbose=False, seed=1, n_threads=2, n_threads_batch=2, n_batch=256)

    def run(**kw):
        llm = Llama(**common, **kw)
        out = []
        for p in prompts:
            toks = llm.tokenize(p, add_bos=True, special=True)
            llm.reset()
            llm.eval(toks)
            gen = []
            for _ in range(12):
                nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
                gen.append(nxt)
                llm.eval([nxt])
            out.append((toks, gen, np.array(llm.scores[:llm.n_tokens], dtype=np.float64)))
        del llm
        return out

    with_lora = run(model_path=base, lora_path=adapter)
    merged_run = run(model_path=merged)
    base_run = run(model_path=base)
    res = []
    for (t1, g1, l1), (t2, g2, l2), (_, g0, l0) in zip(with_lora, merged_run, base_run):
        n = min(len(l1), len(l2))
        res.append({"n_tokens": len(t1), "generated_lora": g1, "generated_merged": g2, "generated_base": g0,
                    "same_tokens": g1 == g2, "max_abs_diff": float(np.max(np.abs(l1[:n] - l2[:n]))),
                    "max_abs_logit": float(np.max(np.abs(l2[:n]))),
                    "adapter_effect": float(np.max(np.abs(l2[:len(t1)] - l0[:len(t1)])))})
    print(json.dumps({"prompts": res}))


# ------------------------------------------------------------------ convert_lora_to_gguf.py


def cmd_script(adapter: str, base: str, out: str, llama_src: str):
    import runpy
    import types

    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here / "convert_ref_stubs"))
    import torch  # the numpy stand-in

    # What convert_lora_to_gguf.py needs beyond what convert_hf_to_gguf.py does.
    torch.Tensor.T = property(lambda s: torch.Tensor(np.ascontiguousarray(s._a.T), s.dtype))
    torch.Tensor.permute = lambda s, *d: torch.Tensor(np.transpose(s._a, d), s.dtype)
    torch.equal = lambda a, b: bool(np.array_equal(a._a, b._a))

    def load_file(path, device="cpu"):
        res = {}
        for k, (dt, a) in read_file(Path(path)).items():
            res[k] = torch.Tensor(np.array(a), {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[dt])
        return res

    st = types.ModuleType("safetensors.torch")
    st.load_file = load_file
    import safetensors
    sys.modules["safetensors.torch"] = st
    safetensors.torch = st
    script = Path(llama_src) / "convert_lora_to_gguf.py"
    sys.path.insert(1, str(Path(llama_src)))
    sys.argv = [str(script), adapter, "--base", base, "--outfile", out, "--outtype", "f32", "--no-lazy"]
    runpy.run_path(str(script), run_name="__main__")
    print(json.dumps({"written": out}))


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "merged":
        cmd_merged(Path(args[0]), Path(args[1]), args[2:])
    elif cmd == "llama":
        cmd_llama(*args)
    elif cmd == "script":
        cmd_script(*args)
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
