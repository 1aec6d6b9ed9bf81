#!/usr/bin/env python3
"""Whole-command benchmark: `ggufkit eval` against `llama-perplexity` and
`ggufkit imatrix` against `llama-imatrix`, same model, same text, same ctx,
same thread count; prints tokens/s, the ratio, and each command's peak RSS.

Run with the reference environment's python (gguf-py, numpy, llama-cpp-python):

    PY=$(scripts/ref-env.sh)
    cargo build --release
    "$PY" benches/eval_vs_llama.py [--threads 2] [--ctx 512] [--chunks 4] [--repeat 3]

The model is Qwen2.5-0.5B-shaped (hidden 896, 24 layers, 14/2 heads, ff 4864,
tied, vocab 151936 with llama.cpp's real Qwen2 vocabulary from
models/ggml-vocab-qwen2.gguf so llama-perplexity can tokenize), random
weights, written as F16 and quantized to Q4_K_M with ggufkit (byte-identical
to llama-quantize). The text is llama.cpp's README.md repeated; ggufkit gets
the token ids llama.cpp's tokenizer gives (`--tokens`), so both evaluate the
same tokens. Times are the minimum of `--repeat` runs, ours and llama.cpp's
interleaved, each command in its own process under /usr/bin/time -v (peak RSS
and CPU time its own); each run's figures go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import gguf

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benches"))
from quantize_vs_llama import QWEN05, model_tensors, timed  # noqa: E402


def copy_vocab(w: gguf.GGUFWriter, vocab_gguf: Path) -> None:
    r = gguf.GGUFReader(vocab_gguf)
    for name, field in r.fields.items():
        if not name.startswith("tokenizer."):
            continue
        v = field.contents()
        t = field.types[0]
        if t == gguf.GGUFValueType.ARRAY:
            w.add_array(name, v)
        elif t == gguf.GGUFValueType.STRING:
            w.add_string(name, v)
        elif t == gguf.GGUFValueType.BOOL:
            w.add_bool(name, v)
        else:
            w.add_uint32(name, int(v))


def build(path: Path, src: Path) -> None:
    s = QWEN05
    rng = np.random.default_rng(7)
    w = gguf.GGUFWriter(path, "qwen2")
    w.add_name("bench-qwen2.5-0.5b-shaped")
    w.add_context_length(s["ctx"])
    w.add_embedding_length(s["hidden"])
    w.add_block_count(s["layers"])
    w.add_feed_forward_length(s["ff"])
    w.add_head_count(s["heads"])
    w.add_head_count_kv(s["kv_heads"])
    w.add_rope_freq_base(s["rope"])
    w.add_layer_norm_rms_eps(1e-6)
    w.add_file_type(1)
    copy_vocab(w, src / "models" / "ggml-vocab-qwen2.gguf")
    tensors = model_tensors(s, False, 0)
    for name, shape, is_matrix in tensors:
        n = int(np.prod(shape))
        if is_matrix:
            w.add_tensor_info(name, shape, np.dtype(np.uint16), n * 2, raw_dtype=gguf.GGMLQuantizationType.F16)
        else:
            w.add_tensor_info(name, shape, np.dtype(np.float32), n * 4)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for name, shape, is_matrix in tensors:
        n = int(np.prod(shape))
        if not is_matrix:
            w.write_tensor_data((1.0 + 0.1 * rng.standard_normal(n).astype(np.float32)).reshape(shape))
            continue
        x = rng.standard_normal(n, dtype=np.float32) * np.float32(1.0 / np.sqrt(shape[1]))
        if name == "token_embd.weight":
            x *= np.float32(np.sqrt(shape[1]))
        w.write_tensor_data(x.astype(np.float16).view(np.uint16).reshape(shape))
    w.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "ggufkit-eval-bench")
    a = ap.parse_args()
    src = Path(subprocess.check_output(["bash", str(REPO / "scripts/ref-src.sh")], text=True).split()[-1])
    tools = Path(subprocess.check_output(["bash", str(REPO / "scripts/ref-tools.sh")], text=True).split()[-1])
    ggufkit = REPO / "target" / "release" / "ggufkit"
    a.work.mkdir(parents=True, exist_ok=True)
    f16 = a.work / "bench-f16.gguf"
    if not f16.exists():
        build(f16, src)
    q4 = a.work / "bench-Q4_K_M.gguf"
    if not q4.exists():
        subprocess.run([str(ggufkit), "quantize", str(f16), str(q4), "Q4_K_M", "--quiet"], check=True)
    text = a.work / "text.txt"
    text.write_text((src / "README.md").read_text(encoding="utf-8") * 4, encoding="utf-8")
    import llama_cpp
    llm = llama_cpp.Llama(model_path=str(f16), vocab_only=True, verbose=False)
    ids = llm.tokenize(text.read_bytes(), add_bos=True, special=False)
    ids_path = a.work / "ids.json"
    ids_path.write_text(json.dumps(ids))
    n_tokens = a.ctx * min(a.chunks, len(ids) // a.ctx)
    t, c, n = str(a.threads), str(a.ctx), str(a.chunks)
    imat = a.work / "imatrix.gguf"
    jobs = {
        "eval": (
            [str(ggufkit), "eval", "--tokens", str(ids_path), "--ctx", c, "--chunks", n, "--threads", t, "-q"],
            [str(tools / "llama-perplexity"), "-f", str(text), "-c", c, "-b", c, "--chunks", n, "-t", t],
        ),
        "imatrix": (
            [str(ggufkit), "imatrix", "--tokens", str(ids_path), "--ctx", c, "--chunks", n, "--threads", t, "-q",
             "-o", str(imat)],
            [str(tools / "llama-imatrix"), "-f", str(text), "-c", c, "-b", c, "--chunks", n, "-t", t,
             "-o", str(a.work / "imatrix-llama.gguf")],
        ),
    }
    print(f"threads {a.threads}, ctx {a.ctx}, {n_tokens} tokens evaluated per run, "
          f"load average at start {os.getloadavg()[0]:.2f}")
    print("| command | model | ggufkit tok/s | llama.cpp tok/s | ratio | ggufkit CPU s | llama.cpp CPU s "
          "| ggufkit RSS | llama.cpp RSS |")
    print("|---|---|---|---|---|---|---|---|---|")
    for job, (ours, theirs) in jobs.items():
        for model in [f16, q4]:
            if job == "imatrix" and model == q4:
                continue
            best_o, best_t, cpu_o, cpu_t, rss_o, rss_t = 1e9, 1e9, 1e9, 1e9, 0, 0
            for _ in range(a.repeat):
                # Interleaved, so that a change of the machine's load touches both.
                wo, ro, eo = timed(ours[:2] + [str(model)] + ours[2:])
                wt, rt, et = timed(theirs[:1] + ["-m", str(model)] + theirs[1:])
                print(f"  {job} {model.name}: ggufkit {wo:.2f} s ({cpu_seconds(eo):.2f} CPU s), "
                      f"llama.cpp {wt:.2f} s ({cpu_seconds(et):.2f} CPU s), load {os.getloadavg()[0]:.2f}",
                      file=sys.stderr)
                best_o, best_t, rss_o, rss_t = min(best_o, wo), min(best_t, wt), max(rss_o, ro), max(rss_t, rt)
                cpu_o, cpu_t = min(cpu_o, cpu_seconds(eo)), min(cpu_t, cpu_seconds(et))
            print(f"| {job} | {model.name} | {n_tokens / best_o:.1f} | {n_tokens / best_t:.1f} | "
                  f"{best_t / best_o:.2f} | {cpu_o:.1f} | {cpu_t:.1f} | {rss_o / 1024:.0f} MiB | {rss_t / 1024:.0f} MiB |",
                  flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


def cpu_seconds(time_v: str) -> float:
    """User + system CPU seconds from /usr/bin/time -v's report (llama.cpp's OpenMP
    workers spin while they wait, so its figure includes waiting)."""
    u = re.search(r"User time \(seconds\): ([\d.]+)", time_v)
    s = re.search(r"System time \(seconds\): ([\d.]+)", time_v)
    return float(u.group(1)) + float(s.group(1)) if u and s else float("nan")

if __name__ == "__main__":
    main()
