#!/usr/bin/env python3
"""Checks for `ggufkit convert` output, run by tests/convert_parity.rs with the
reference venv's python. Each subcommand prints one JSON object on stdout.

  logits   FIXTURE GGUF     llama.cpp (llama_cpp.Llama, logits_all) on the GGUF
                            vs an independent float64 numpy forward pass written
                            from the HF weights and config.json
  tokenize FIXTURE GGUF SRC llama.cpp (vocab_only) vs the `tokenizers` package on
                            tokenizer.json (and `sentencepiece` on tokenizer.model)
  dump     GGUF             metadata (key, type, value) and tensor infos via gguf-py
"""
from __future__ import annotations

import json
import struct
import sys
import unicodedata
from pathlib import Path

import numpy as np

# ---------------------------------------------------------------- HF weights + reference forward


def load_safetensors(d: Path) -> dict[str, np.ndarray]:
    files = sorted(d.glob("model*.safetensors"))
    out = {}
    for f in files:
        raw = f.read_bytes()
        n = struct.unpack("<Q", raw[:8])[0]
        header = json.loads(raw[8:8 + n])
        base = 8 + n
        for name, info in header.items():
            if name == "__metadata__" or name.startswith(("vision_tower.", "multi_modal_projector.")):
                continue
            b, e = info["data_offsets"]
            buf = raw[base + b:base + e]
            dt = info["dtype"]
            if dt == "F32":
                a = np.frombuffer(buf, dtype="<f4")
            elif dt == "F16":
                a = np.frombuffer(buf, dtype="<f2").astype(np.float32)
            elif dt == "BF16":
                a = (np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
            else:
                raise ValueError(f"{f}: {name}: dtype {dt}")
            out[name.replace("language_model.", "")] = a.reshape(info["shape"]).astype(np.float64)
    return out


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope_inv_freq(cfg, head_dim):
    theta = cfg.get("rope_theta", 10000.0)
    inv = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    rs = cfg.get("rope_scaling") or {}
    if rs.get("rope_type", rs.get("type")) == "llama3":
        factor = rs["factor"]
        low, high = rs["low_freq_factor"], rs["high_freq_factor"]
        old = rs["original_max_position_embeddings"]
        low_wl, high_wl = old / low, old / high
        wl = 2 * np.pi / inv
        scaled = np.where(wl > low_wl, inv / factor, inv)
        smooth = (old / wl - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wl >= high_wl) & (wl <= low_wl)
        inv = np.where(medium, smoothed, scaled)
    if rs.get("rope_type", rs.get("type")) == "longrope":
        # Phi-3 LongRoPE (transformers' _compute_longrope_parameters): per-frequency factors, the short ones
        # for contexts within original_max_position_embeddings (the prompts here; llama.cpp picks
        # rope_factors_short when n_ctx <= n_ctx_orig).
        inv = inv / np.asarray(rs["short_factor"], dtype=np.float64)
    return inv


def rope_mscale(cfg):
    """LongRoPE's attention factor: sqrt(1 + ln(s) / ln(original)) on cos and sin, s = max / original positions."""
    rs = cfg.get("rope_scaling") or {}
    if rs.get("rope_type", rs.get("type")) != "longrope":
        return 1.0
    orig = cfg["original_max_position_embeddings"]
    factor = cfg["max_position_embeddings"] / orig
    if rs.get("attention_factor") is not None:
        return rs["attention_factor"]
    return 1.0 if factor <= 1.0 else float(np.sqrt(1 + np.log(factor) / np.log(orig)))


def apply_rope(x, pos, inv, mscale=1.0):
    # x: (n_head, T, hd); HF rotate_half convention (first half / second half).
    ang = pos[:, None] * inv[None, :]  # (T, hd/2)
    cos = np.concatenate([np.cos(ang), np.cos(ang)], axis=-1) * mscale
    sin = np.concatenate([np.sin(ang), np.sin(ang)], axis=-1) * mscale
    half = x.shape[-1] // 2
    rot = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rot * sin


def gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def moe(m, W, p, cfg):
    """Qwen3-MoE sparse block: softmax router, top-k experts, renormalized when norm_topk_prob."""
    r = m @ W[p + "mlp.gate.weight"].T
    r = np.exp(r - r.max(axis=-1, keepdims=True))
    r = r / r.sum(axis=-1, keepdims=True)
    k = cfg["num_experts_per_tok"]
    out = np.zeros_like(m)
    for t in range(m.shape[0]):
        top = np.argsort(-r[t], kind="stable")[:k]
        w = r[t, top]
        if cfg.get("norm_topk_prob"):
            w = w / w.sum()
        for e, we in zip(top, w):
            q = f"{p}mlp.experts.{e}."
            g = m[t] @ W[q + "gate_proj.weight"].T
            u = m[t] @ W[q + "up_proj.weight"].T
            out[t] += we * (((g / (1 + np.exp(-g))) * u) @ W[q + "down_proj.weight"].T)
    return out


def gemma_logits(cfg, W, ids):
    """Gemma 2 / 3: embeddings scaled by sqrt(hidden), norms scale by 1 + w, sandwich norms, GELU-tanh MLP,
    query_pre_attn_scalar, sliding-window layers (with their own rope base on Gemma 3), logit softcaps."""
    gemma3 = "Gemma3" in cfg["architectures"][0]
    h, nh, nkv, hd = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    eps = cfg["rms_norm_eps"]
    T = len(ids)
    pos = np.arange(T, dtype=np.float64)
    norm = lambda x, w: rms_norm(x, 1.0 + w, eps)  # noqa: E731
    x = W["model.embed_tokens.weight"][ids] * np.float64(np.float32(np.sqrt(h)))
    causal = np.triu(np.full((T, T), -np.inf), 1)
    i_, j_ = np.arange(T)[:, None], np.arange(T)[None, :]
    swa = np.where(i_ - j_ >= cfg["sliding_window"], -np.inf, 0.0) + causal
    pattern = cfg.get("sliding_window_pattern", 6) if gemma3 else 2
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        sliding = (i % pattern) < pattern - 1
        a = norm(x, W[p + "input_layernorm.weight"])
        q = (a @ W[p + "self_attn.q_proj.weight"].T).reshape(T, nh, hd).transpose(1, 0, 2)
        k = (a @ W[p + "self_attn.k_proj.weight"].T).reshape(T, nkv, hd).transpose(1, 0, 2)
        v = (a @ W[p + "self_attn.v_proj.weight"].T).reshape(T, nkv, hd).transpose(1, 0, 2)
        if gemma3:
            q = norm(q, W[p + "self_attn.q_norm.weight"])
            k = norm(k, W[p + "self_attn.k_norm.weight"])
            theta = cfg["rope_local_base_freq"] if sliding else cfg["rope_theta"]
            rs = cfg.get("rope_scaling") or {}
            ppos = pos if sliding or rs.get("rope_type") != "linear" else pos / rs["factor"]
        else:
            theta, ppos = cfg["rope_theta"], pos
        inv = 1.0 / (theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
        q, k = apply_rope(q, ppos, inv), apply_rope(k, ppos, inv)
        rep = nh // nkv
        k, v = np.repeat(k, rep, axis=0), np.repeat(v, rep, axis=0)
        s = q @ k.transpose(0, 2, 1) * cfg["query_pre_attn_scalar"] ** -0.5
        if cfg.get("attn_logit_softcapping"):
            c = cfg["attn_logit_softcapping"]
            s = np.tanh(s / c) * c
        s = s + (swa if sliding else causal)
        s = np.exp(s - s.max(axis=-1, keepdims=True))
        s = s / s.sum(axis=-1, keepdims=True)
        o = (s @ v).transpose(1, 0, 2).reshape(T, nh * hd) @ W[p + "self_attn.o_proj.weight"].T
        x = x + norm(o, W[p + "post_attention_layernorm.weight"])
        m = norm(x, W[p + "pre_feedforward_layernorm.weight"])
        g = m @ W[p + "mlp.gate_proj.weight"].T
        u = m @ W[p + "mlp.up_proj.weight"].T
        f = (gelu_tanh(g) * u) @ W[p + "mlp.down_proj.weight"].T
        x = x + norm(f, W[p + "post_feedforward_layernorm.weight"])
    x = norm(x, W["model.norm.weight"])
    logits = x @ W["model.embed_tokens.weight"].T
    if cfg.get("final_logit_softcapping"):
        c = cfg["final_logit_softcapping"]
        logits = np.tanh(logits / c) * c
    return logits


def reference_logits(d: Path, ids: list[int]) -> np.ndarray:
    cfg = json.loads((d / "config.json").read_text())
    cfg = {**cfg, **cfg.get("text_config", {})}
    W = load_safetensors(d)
    if cfg["architectures"][0].startswith("Gemma"):
        return gemma_logits(cfg, W, ids)
    h, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads") or nh
    hd = cfg.get("head_dim") or h // nh
    eps = cfg["rms_norm_eps"]
    T = len(ids)
    pos = np.arange(T, dtype=np.float64)
    inv = rope_inv_freq(cfg, hd)
    mscale = rope_mscale(cfg)
    x = W["model.embed_tokens.weight"][ids]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        a = rms_norm(x, W[p + "input_layernorm.weight"], eps)

        def proj(name):
            y = a @ W[p + f"self_attn.{name}.weight"].T
            if p + f"self_attn.{name}.bias" in W:
                y = y + W[p + f"self_attn.{name}.bias"]
            return y

        if p + "self_attn.qkv_proj.weight" in W:
            # Phi-3: fused q, k, v rows.
            qkv = proj("qkv_proj")
            q, k, v = np.split(qkv, [nh * hd, (nh + nkv) * hd], axis=-1)
        else:
            q, k, v = proj("q_proj"), proj("k_proj"), proj("v_proj")
        q = q.reshape(T, nh, hd).transpose(1, 0, 2)
        k = k.reshape(T, nkv, hd).transpose(1, 0, 2)
        v = v.reshape(T, nkv, hd).transpose(1, 0, 2)
        if p + "self_attn.q_norm.weight" in W:
            q = rms_norm(q, W[p + "self_attn.q_norm.weight"], eps)
            k = rms_norm(k, W[p + "self_attn.k_norm.weight"], eps)
        q = apply_rope(q, pos, inv, mscale)
        k = apply_rope(k, pos, inv, mscale)
        rep = nh // nkv
        k = np.repeat(k, rep, axis=0)
        v = np.repeat(v, rep, axis=0)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(hd) + mask
        s = np.exp(s - s.max(axis=-1, keepdims=True))
        s = s / s.sum(axis=-1, keepdims=True)
        o = (s @ v).transpose(1, 0, 2).reshape(T, nh * hd)
        o = o @ W[p + "self_attn.o_proj.weight"].T
        if p + "self_attn.o_proj.bias" in W:
            o = o + W[p + "self_attn.o_proj.bias"]
        x = x + o
        m = rms_norm(x, W[p + "post_attention_layernorm.weight"], eps)
        if p + "mlp.gate.weight" in W:
            x = x + moe(m, W, p, cfg)
            continue
        if p + "mlp.gate_up_proj.weight" in W:
            # Phi-3: fused gate (first half) and up (second half) rows, SwiGLU.
            g, u = np.split(m @ W[p + "mlp.gate_up_proj.weight"].T, 2, axis=-1)
        else:
            g = m @ W[p + "mlp.gate_proj.weight"].T
            u = m @ W[p + "mlp.up_proj.weight"].T
        x = x + ((g / (1 + np.exp(-g))) * u) @ W[p + "mlp.down_proj.weight"].T
    x = rms_norm(x, W["model.norm.weight"], eps)
    head = W.get("lm_head.weight", W["model.embed_tokens.weight"])
    return x @ head.T


def prompt_ids(d: Path) -> list[list[int]]:
    texts = [
        "def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)\n",
        "The quick brown fox jumps over the lazy dog. 12345",
        "Привет, мир! 你好，世界 🦙",
    ]
    if (d / "tokenizer.json").is_file():
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(str(d / "tokenizer.json"))
        return [tok.encode(t, add_special_tokens=True).ids for t in texts]
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=str(d / "tokenizer.model"))
    bos = sp.bos_id() if sp.bos_id() >= 0 else 1
    return [[bos] + sp.encode(t) for t in texts]


def cmd_logits(fixture: str, gguf_path: str):
    import llama_cpp
    d = Path(fixture)
    llm = llama_cpp.Llama(model_path=gguf_path, n_ctx=128, n_batch=128, n_ubatch=128, logits_all=True,
                          n_threads=2, verbose=False, seed=1, type_k=0, type_v=0, flash_attn=False)
    results = []
    for ids in prompt_ids(d):
        ref = reference_logits(d, ids)
        llm.reset()
        llm.eval(ids)
        got = np.array(llm.scores[:len(ids)], dtype=np.float64)
        diff = np.abs(got - ref)
        results.append({"n_tokens": len(ids), "max_abs_diff": float(diff.max()),
                        "max_abs_logit": float(np.abs(ref).max()),
                        "argmax_agree": float(np.mean(got.argmax(-1) == ref.argmax(-1)))})
    print(json.dumps({"prompts": results, "max_abs_diff": max(r["max_abs_diff"] for r in results)}))


# ---------------------------------------------------------------- tokenization

CORPUS = [
    "", " ", "  ", "\t", "\n", "\n\n\n", " \n \t\t\n  x",
    "Hello world", " Hello world", "Hello  world", "hello\tworld\r\nnext",
    "def add(a, b):\n    return a + b\n\n\nclass Foo:\n\tpass\n",
    "fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * x).collect();\n    println!(\"{:?}\", v);\n}\n",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }  // dot\n",
    "{\"key\": [1, 2.5, -3e10, null], \"s\": \"a\\\"b\"}",
    "    indented    with     runs of      spaces     ",
    "3 33 333 3333 33333 333333 3.14159 1,000,000 0x1F 1e-9 2024-01-31",
    "I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL",
    "Привет, мир! Ünïcödé façade naïve Ελληνικά עברית العربية हिन्दी ไทย 한국어 日本語のテキスト 中文测试",
    "កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= нещо на Български",
    "🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 👨‍👩‍👧‍👦 🇫🇷 👍🏽",
    "'''''```````\"\"\"\"......!!!!!!??????",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWrite code<|im_end|>\n<|im_start|>assistant\n",
    "<|fim_prefix|>def f(x):\n    <|fim_suffix|>\n    return y<|fim_middle|>",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>",
    "<s>[INST] hello [/INST] world</s>",
    "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>",
    "\u00a0non-breaking\u2009thin\u3000ideographic space\u200b",
    "ＦＵＬＬＷＩＤＴＨ ｶﾀｶﾅ ﬁ ligature Å (A + ring) e\u0301",
]


def vocab_corpus(src: Path, gguf_name: str) -> list[str]:
    p = src / "models" / f"ggml-vocab-{gguf_name}.gguf.inp"
    if not p.is_file():
        return []
    return [t for t in p.read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n") if t]


def cmd_tokenize(fixture: str, gguf_path: str, src: str, vocab_name: str):
    import llama_cpp
    d = Path(fixture)
    llm = llama_cpp.Llama(model_path=gguf_path, vocab_only=True, verbose=False)
    texts = CORPUS + vocab_corpus(Path(src), vocab_name)
    mism = []
    n = 0
    refs = []
    if (d / "tokenizer.json").is_file():
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(str(d / "tokenizer.json"))
        refs.append(("tokenizers", lambda t: tok.encode(t, add_special_tokens=True).ids, True))
    if (d / "tokenizer.model").is_file():
        import sentencepiece as spm
        sp = spm.SentencePieceProcessor(model_file=str(d / "tokenizer.model"))
        refs.append(("sentencepiece", lambda t: [sp.bos_id()] + sp.encode(t), False))
    tj = json.loads((d / "tokenizer.json").read_text(encoding="utf-8")) if (d / "tokenizer.json").is_file() else {}
    nfc = "NFC" in json.dumps(tj.get("normalizer"))
    known = []
    for ref_name, ref, special in refs:
        for t in texts:
            want = ref(t)
            got = llm.tokenize(t.encode("utf-8"), add_bos=True, special=special)
            n += 1
            if list(got) != list(want):
                case = {"ref": ref_name, "text": t[:80], "want": want[:40], "got": list(got)[:40]}
                # Differences that are llama.cpp's, whatever converted the GGUF:
                # it has no NFC normalizer, and it promotes a list of texts
                # ("</s>", ...) to EOG control tokens (src/llama-vocab.cpp), which
                # special=True then parses out of plain text.
                if nfc and unicodedata.normalize("NFC", t) != t:
                    case["why"] = "llama.cpp does not apply the NFC normalizer"
                    known.append(case)
                elif special and any(e in t for e in LLAMA_CPP_EOG_TEXTS if e in tj.get("model", {}).get("vocab", {})):
                    case["why"] = "llama.cpp turns this normal token into an EOG control token"
                    known.append(case)
                else:
                    mism.append(case)
    print(json.dumps({"cases": n, "mismatches": mism, "known_llama_cpp_differences": known,
                      "references": [r[0] for r in refs]}, ensure_ascii=False))


# Token texts llama.cpp marks as end-of-generation (and so control) whatever
# their GGUF token type says (src/llama-vocab.cpp, special_eog_ids).
LLAMA_CPP_EOG_TEXTS = ["<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "</s>",
                       "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>", "<eos>"]


# ---------------------------------------------------------------- dump


def cmd_dump(gguf_path: str):
    import gguf
    r = gguf.GGUFReader(gguf_path)
    kv = []
    for k, f in r.fields.items():
        if k.startswith("GGUF."):
            continue
        t = f.types[0]
        if t == gguf.GGUFValueType.ARRAY:
            et = f.types[1]
            if et == gguf.GGUFValueType.STRING:
                vals = [bytes(f.parts[i]).decode("utf-8", "replace") for i in f.data]
            else:
                vals = [f.parts[i].tolist()[0] for i in f.data]
            kv.append([k, f"ARRAY[{et.name}]", vals])
        elif t == gguf.GGUFValueType.STRING:
            kv.append([k, t.name, bytes(f.parts[-1]).decode("utf-8", "replace")])
        else:
            kv.append([k, t.name, f.parts[-1].tolist()[0]])
    tensors = [[t.name, [int(x) for x in t.shape], t.tensor_type.name] for t in r.tensors]
    print(json.dumps({"kv": kv, "tensors": tensors}, ensure_ascii=False))


# ---------------------------------------------------------------- pre-tokenizer table


def cmd_pretok(src: str, table_json: str):
    """Re-extracts chktxt and the hash table from conversion/base.py and compares with ours."""
    import ast
    import re
    text = (Path(src) / "conversion" / "base.py").read_text(encoding="utf-8")
    body = text[text.index("# Marker: Start get_vocab_base_pre"):text.index("# Marker: End get_vocab_base_pre")]
    chktxt = ast.literal_eval(re.search(r"chktxt = ('.*?')\n", body).group(1))
    table = [{"hash": h, "name": n} for h, n in
             re.findall(r'if chkhsh == "([0-9a-f]{64})":\n(?:\s+#[^\n]*\n)*\s+res = "([^"]+)"', body)]
    ours = json.loads(Path(table_json).read_text(encoding="utf-8"))
    mine = [{"hash": e["hash"], "name": e["name"]} for e in ours["table"]]
    print(json.dumps({"chktxt_equal": chktxt == ours["chktxt"], "table_equal": table == mine,
                      "n_reference": len(table), "n_ours": len(mine), "n_if": body.count("if chkhsh ==")}))


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"logits": cmd_logits, "tokenize": cmd_tokenize, "dump": cmd_dump, "pretok": cmd_pretok}[cmd](*args)
