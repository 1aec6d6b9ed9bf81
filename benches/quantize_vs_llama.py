#!/usr/bin/env python3
"""Whole-command benchmark: `ggufkit quantize` against llama.cpp's
`llama_model_quantize` (the library behind llama-quantize), same input, same
thread count, in the same run; checks that the outputs are byte-identical.

Run it with the reference environment's python (it has gguf-py, numpy and
llama-cpp-python = real llama.cpp):

    PY=$(scripts/ref-env.sh)
    cargo build --release
    "$PY" benches/quantize_vs_llama.py                 # Qwen2.5-0.5B-shaped model, 1.26 GB BF16
    "$PY" benches/quantize_vs_llama.py --qwen7-layers 2  # plus two Qwen2.5-7B-shaped layers

Each command runs in its own subprocess under `/usr/bin/time -v`, so its peak
RSS is its own (llama.cpp's includes the Python interpreter that calls it; the
interpreter's own RSS after `import llama_cpp` is reported beside it). Wall
times are the minimum over `--repeat` runs (the least disturbed), alternating which tool goes first.
The machine's load average is printed before each pair: on a shared machine
the numbers are only as good as the load was low.

`--types F16` times BF16 → F16 (`llama_model_quantize` to MOSTLY_F16), and
`--dtype f16 --types Q8_0` F16 → Q8_0.

Also optional (`--convert`): `ggufkit convert --outtype f16` of a BF16
safetensors directory (scripts/gen_fixtures.py qwen2-large-bf16-sharded, or
`--convert-fixture qwen2.5-7b-blocks-bf16-sharded`: two Qwen2.5-7B blocks
with the untied 152064-token embedding and output, 3.1 GB, or
`--convert-fixture qwen2.5-0.5b-bf16`: the Qwen2.5-0.5B shape, 0.99 GB),
against a plain copy of its shards, the memory floor (with `--outdir`: the
shards read from page cache, then a file of the output's size copied) and
llama.cpp's nearest equivalent, `llama_model_quantize` of the same weights as
a BF16 GGUF to F16.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

import gguf

REPO = Path(__file__).resolve().parent.parent

# llama_ftype values (llama.h) and the ggufkit type names
FTYPES = {"F16": 1, "Q8_0": 7, "Q4_0": 2, "Q4_K_M": 15, "Q6_K": 18, "Q4_K_S": 14, "Q5_K_M": 17, "Q3_K_M": 12, "Q2_K": 10,
          "Q5_0": 8, "Q4_1": 3, "Q5_1": 9, "IQ4_NL": 25, "IQ4_XS": 30}

QWEN05 = dict(vocab=151936, hidden=896, layers=24, heads=14, kv_heads=2, ff=4864, ctx=32768, rope=1e6)
QWEN7 = dict(vocab=152064, hidden=3584, layers=28, heads=28, kv_heads=4, ff=18944, ctx=32768, rope=1e6)

LLAMA_RUNNER = r"""
import sys, ctypes, llama_cpp
p = llama_cpp.llama_model_quantize_default_params()
p.nthread = int(sys.argv[4])
p.ftype = int(sys.argv[3])
rc = llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p))
sys.exit(rc)
"""


# ---------------------------------------------------------------- model


def layer_tensors(prefix: str, s: dict) -> list[tuple[str, tuple[int, ...], bool]]:
    """(name, numpy shape (rows, cols), is_matrix) of one Qwen2 block."""
    h, kv = s["hidden"], s["hidden"] // s["heads"] * s["kv_heads"]
    return [
        (f"{prefix}.attn_norm.weight", (h,), False),
        (f"{prefix}.attn_q.weight", (h, h), True),
        (f"{prefix}.attn_q.bias", (h,), False),
        (f"{prefix}.attn_k.weight", (kv, h), True),
        (f"{prefix}.attn_k.bias", (kv,), False),
        (f"{prefix}.attn_v.weight", (kv, h), True),
        (f"{prefix}.attn_v.bias", (kv,), False),
        (f"{prefix}.attn_output.weight", (h, h), True),
        (f"{prefix}.ffn_norm.weight", (h,), False),
        (f"{prefix}.ffn_gate.weight", (s["ff"], h), True),
        (f"{prefix}.ffn_up.weight", (s["ff"], h), True),
        (f"{prefix}.ffn_down.weight", (h, s["ff"]), True),
    ]


def model_tensors(s: dict, untied: bool, qwen7_layers: int) -> list[tuple[str, tuple[int, ...], bool]]:
    t = [("token_embd.weight", (s["vocab"], s["hidden"]), True)]
    for i in range(s["layers"]):
        t += layer_tensors(f"blk.{i}", s)
    t.append(("output_norm.weight", (s["hidden"],), False))
    if untied:
        t.append(("output.weight", (s["vocab"], s["hidden"]), True))
    # extra blocks with 7B shapes (rows that are multiples of 256, so the
    # k-quants are used as such instead of their fallbacks)
    for i in range(qwen7_layers):
        t += layer_tensors(f"blk.{s['layers'] + i}", QWEN7)
    return t


def build_model(path: Path, s: dict, untied: bool, qwen7_layers: int, dtype: str, seed: int) -> int:
    """Writes a Qwen2-shaped GGUF with random N(0, σ²) weights (σ varies per
    tensor, with sparse outliers), streaming tensor by tensor. Returns its size."""
    rng = np.random.default_rng(seed)
    pool = (rng.standard_normal(1 << 22, dtype=np.float32))
    outliers = rng.integers(0, pool.size, pool.size // 500)
    pool[outliers] *= 20.0
    raw = gguf.GGMLQuantizationType.BF16 if dtype == "bf16" else gguf.GGMLQuantizationType.F16
    tensors = model_tensors(s, untied, qwen7_layers)
    n_layers = s["layers"] + qwen7_layers
    w = gguf.GGUFWriter(path, "qwen2")
    w.add_name("bench-qwen2.5-shaped")
    w.add_context_length(s["ctx"])
    w.add_embedding_length(s["hidden"])
    w.add_block_count(n_layers)
    w.add_feed_forward_length(s["ff"])
    w.add_head_count(s["heads"])
    w.add_head_count_kv(s["kv_heads"])
    w.add_rope_freq_base(s["rope"])
    w.add_layer_norm_rms_eps(1e-6)
    w.add_file_type(32 if dtype == "bf16" else 1)
    for name, shape, is_matrix in tensors:
        n = int(np.prod(shape))
        if is_matrix:
            w.add_tensor_info(name, shape, np.dtype(np.uint16), n * 2, raw_dtype=raw)
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
        sigma = np.float32(0.02 * (1 + (zlib.crc32(name.encode()) % 7) / 7))
        start = int(rng.integers(0, pool.size))
        x = np.resize(np.roll(pool, -start), n) * sigma
        if raw == gguf.GGMLQuantizationType.BF16:
            bits = (x.view(np.uint32) >> 16).astype(np.uint16)
        else:
            bits = x.astype(np.float16).view(np.uint16)
        w.write_tensor_data(bits.reshape(shape))
        del x, bits
    w.close()
    return path.stat().st_size


# ---------------------------------------------------------------- running


def load_avg() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, int, str]:
    """Runs `cmd` under /usr/bin/time -v: (wall seconds, peak RSS KiB, stderr)."""
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    return wall, int(m.group(1)) if m else -1, p.stderr


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def first_difference(a: Path, b: Path) -> int | None:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        off = 0
        while True:
            ca, cb = fa.read(1 << 24), fb.read(1 << 24)
            if ca != cb:
                n = min(len(ca), len(cb))
                for i in range(n):
                    if ca[i] != cb[i]:
                        return off + i
                return off + n
            if not ca:
                return None
            off += len(ca)


def has_command(binary: Path, command: str) -> bool:
    try:
        return subprocess.run([str(binary), command, "--help"], capture_output=True).returncode == 0
    except OSError:
        return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", type=Path, default=REPO / "target/release/ggufkit")
    ap.add_argument("--types", default="Q8_0,Q4_0,Q4_K_M,Q6_K")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--qwen7-layers", type=int, default=0, help="add this many Qwen2.5-7B-shaped blocks")
    ap.add_argument("--tied", action="store_true", help="no output.weight (as the real 0.5B); default untied (≥ 1 GiB)")
    ap.add_argument("--dtype", choices=["bf16", "f16"], default="bf16")
    ap.add_argument("--workdir", type=Path, default=None, help="where the model and outputs go (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--scalar", action="store_true", help="also time ggufkit with GGUFKIT_SCALAR=1")
    ap.add_argument("--convert", action="store_true", help="also time `ggufkit convert` bf16 → f16 against cp")
    ap.add_argument("--convert-fixture", default="qwen2-large-bf16-sharded",
                    help="the BF16 directory to convert: qwen2-large-bf16-sharded (scripts/gen_fixtures.py, 0.28B, "
                         "554 MB), qwen2.5-7b-blocks-bf16-sharded (two Qwen2.5-7B blocks, 3.1 GB) or "
                         "qwen2.5-0.5b-bf16 (the Qwen2.5-0.5B shape, 0.99 GB)")
    ap.add_argument("--outdir", type=Path, default=None,
                    help="write the outputs here (e.g. /dev/shm: only CPU and memory count) and time the memory "
                         "floor in the same run: read the input from page cache, then copy a file of the output's size")
    ap.add_argument("--pack", action="store_true",
                    help="also time `ggufkit pack --types Q4_K_M,Q8_0` of a BF16 HF directory against the two "
                         "`ggufkit quantize` runs of its BF16 conversion, one after the other")
    ap.add_argument("--proxy", type=Path, default=None,
                    help="time this stand-in (target/release/deps/quantize_proxy-*) instead of `ggufkit quantize`: "
                         "same pipeline and kernels, approximate type policy, output not comparable byte for byte")
    args = ap.parse_args()

    types = [t.strip().upper() for t in args.types.split(",") if t.strip()]
    threads = [int(t) for t in args.threads.split(",")]
    for t in types:
        if t not in FTYPES:
            ap.error(f"unknown type {t} (known: {', '.join(FTYPES)})")
    have_quantize = args.proxy is not None or has_command(args.bin, "quantize")
    if not have_quantize:
        print(f"NOTE: {args.bin} has no working `quantize` command: timing llama.cpp only", file=sys.stderr)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="ggufkit-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    model = work / f"qwen2.5-0.5b-shaped-{args.dtype}{'-tied' if args.tied else ''}-{args.qwen7_layers}x7b.gguf"
    if not model.exists():
        t0 = time.perf_counter()
        size = build_model(model, QWEN05, not args.tied, args.qwen7_layers, args.dtype, seed=1)
        print(f"built {model.name}: {size / 2**30:.2f} GiB in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    in_size = model.stat().st_size
    # warm the page cache for both tools alike
    with open(model, "rb") as f:
        while f.read(1 << 26):
            pass

    py_rss = timed([sys.executable, "-c", "import llama_cpp"])[1]
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), "?")
    results = {"proxy": args.proxy is not None, "cpu": cpu, "nproc": os.cpu_count(), "model": model.name, "input_bytes": in_size,
               "python_import_llama_cpp_rss_kib": py_rss, "runs": []}
    print(f"input {model.name} ({in_size / 2**30:.2f} GiB), CPU {cpu} × {os.cpu_count()}, "
          f"python+llama_cpp baseline RSS {py_rss / 1024:.0f} MiB", file=sys.stderr)

    outdir = args.outdir or work
    outdir.mkdir(parents=True, exist_ok=True)
    for ty in types:
        for nt in threads:
            out_ours, out_llama = outdir / f"ours-{ty}-{nt}.gguf", outdir / f"llama-{ty}-{nt}.gguf"
            ours_cmd = [str(args.bin), "quantize", str(model), str(out_ours), ty, "--threads", str(nt), "-q"]
            if args.proxy is not None:
                ours_cmd = [str(args.proxy), str(model), str(out_ours), ty, str(nt)]
            llama_cmd = [sys.executable, "-c", LLAMA_RUNNER, str(model), str(out_llama), str(FTYPES[ty]), str(nt)]
            rec = {"type": ty, "threads": nt, "ours_s": [], "llama_s": [], "scalar_s": [], "ours_rss_kib": [],
                   "llama_rss_kib": [], "scalar_rss_kib": [], "floor_s": [], "load": [], "identical": None}
            for rep in range(args.repeat):
                rec["load"].append(load_avg())
                order = ["llama", "ours"] if rep % 2 == 0 else ["ours", "llama"]
                for who in order:
                    if who == "ours" and have_quantize:
                        wall, rss, _ = timed(ours_cmd)
                        rec["ours_s"].append(wall)
                        rec["ours_rss_kib"].append(rss)
                    elif who == "llama":
                        wall, rss, _ = timed(llama_cmd)
                        rec["llama_s"].append(wall)
                        rec["llama_rss_kib"].append(rss)
                if args.outdir is not None and out_llama.exists():
                    # The memory floor: the input read from page cache, a file of the output's size copied.
                    floor_out = outdir / "floor.copy"
                    wall, _, _ = timed(["sh", "-c", f"cat {shlex.quote(str(model))} > /dev/null && "
                                                    f"cp {shlex.quote(str(out_llama))} {shlex.quote(str(floor_out))}"])
                    rec["floor_s"].append(wall)
                    floor_out.unlink(missing_ok=True)
                if args.scalar and have_quantize:
                    wall, rss, _ = timed(ours_cmd, env={**os.environ, "GGUFKIT_SCALAR": "1"})
                    rec["scalar_s"].append(wall)
                    rec["scalar_rss_kib"].append(rss)
                if rep == 0 and have_quantize and args.proxy is None:
                    diff = first_difference(out_ours, out_llama)
                    rec["identical"] = diff is None
                    if diff is not None:
                        rec["first_difference"] = diff
                        print(f"!! {ty} threads={nt}: outputs differ at byte {diff}", file=sys.stderr)
                    rec["output_bytes"] = out_llama.stat().st_size
                print(f"{ty} t={nt} rep {rep}: load {rec['load'][-1]}  llama {rec['llama_s'][-1]:.2f}s"
                      + (f"  ggufkit {rec['ours_s'][-1]:.2f}s" if rec["ours_s"] else ""), file=sys.stderr)
            for f in (out_ours, out_llama):
                f.unlink(missing_ok=True)
            results["runs"].append(rec)

    if args.convert:
        results["convert"] = bench_convert(args, work, model, args.outdir)
    if args.pack:
        results["pack"] = bench_pack(args, work, outdir)

    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if not args.keep and args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(r["identical"] in (True, None) for r in results["runs"]) else 1


# BF16 HF directories made here from the qwen2-large fixture's config and tokenizer
# (the real Qwen2 tokenizer), at a real model's widths: name → (hidden, ffn, heads,
# kv heads, layers, vocab, tied, shards).
QWEN_SHAPES = {
    "qwen2.5-7b-blocks-bf16-sharded": (3584, 18944, 28, 4, 2, 152064, False, 2),
    "qwen2.5-0.5b-bf16": (896, 4864, 14, 2, 24, 151936, True, 1),
}


def write_qwen_shape(base: Path, hf: Path, shape: tuple, seed: int = 9) -> None:
    """A Qwen2 model at the widths of `shape` (QWEN_SHAPES), BF16 N(0, 0.02²) weights in
    safetensors shards, written tensor by tensor in row slabs so memory stays small; config and
    tokenizer files are `base`'s (scripts/gen_fixtures.py qwen2-large-bf16-sharded) with the
    widths replaced. Two Qwen2.5-7B blocks with the untied embedding and output are 3.1 GB;
    the Qwen2.5-0.5B shape 0.99 GB."""
    h, ff, nh, nkv, layers, vocab, tied, n_shards = shape
    kv = h // nh * nkv
    tmp = hf.with_name(hf.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(base / f, tmp / f)
    cfg = json.loads((base / "config.json").read_text())
    cfg.update(hidden_size=h, intermediate_size=ff, num_attention_heads=nh, num_key_value_heads=nkv,
               num_hidden_layers=layers, max_window_layers=layers, vocab_size=vocab, tie_word_embeddings=tied)
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
    tensors: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (vocab, h))]
    for i in range(layers):
        p = f"model.layers.{i}."
        tensors += [
            (p + "input_layernorm.weight", (h,)), (p + "post_attention_layernorm.weight", (h,)),
            (p + "self_attn.q_proj.weight", (h, h)), (p + "self_attn.q_proj.bias", (h,)),
            (p + "self_attn.k_proj.weight", (kv, h)), (p + "self_attn.k_proj.bias", (kv,)),
            (p + "self_attn.v_proj.weight", (kv, h)), (p + "self_attn.v_proj.bias", (kv,)),
            (p + "self_attn.o_proj.weight", (h, h)), (p + "mlp.gate_proj.weight", (ff, h)),
            (p + "mlp.up_proj.weight", (ff, h)), (p + "mlp.down_proj.weight", (h, ff))]
    tensors.append(("model.norm.weight", (h,)))
    if not tied:
        tensors.append(("lm_head.weight", (vocab, h)))
    # Shards of about equal size, tensors in order.
    sizes = [int(np.prod(s)) * 2 for _, s in tensors]
    per = sum(sizes) / n_shards
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[] for _ in range(n_shards)]
    acc = 0
    for t, n in zip(tensors, sizes):
        shards[min(int(acc // per), n_shards - 1)].append(t)
        acc += n
    rng = np.random.default_rng(seed)
    weight_map, total = {}, 0
    for k, part in enumerate(shards):
        fname = "model.safetensors" if n_shards == 1 else f"model-{k + 1:05d}-of-{n_shards:05d}.safetensors"
        header, off = {}, 0
        for name, shape_ in part:
            n = int(np.prod(shape_)) * 2
            header[name] = {"dtype": "BF16", "shape": list(shape_), "data_offsets": [off, off + n]}
            off += n
            weight_map[name] = fname
        total += off
        hb = json.dumps(header, separators=(",", ":")).encode()
        hb += b" " * (-len(hb) % 8)
        with open(tmp / fname, "wb") as f:
            f.write(len(hb).to_bytes(8, "little") + hb)
            for name, shape_ in part:
                rows = shape_[0] if len(shape_) == 2 else 1
                for r0 in range(0, rows, 4096):
                    a = rng.standard_normal((min(4096, rows - r0), shape_[-1]), dtype=np.float32) * np.float32(0.02)
                    if name.endswith("norm.weight"):
                        a += np.float32(1.0)
                    u = a.view(np.uint32)
                    f.write(((u + np.uint32(0x7FFF) + ((u >> 16) & 1)) >> 16).astype("<u2").tobytes())
    if n_shards > 1:
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    tmp.rename(hf)


def hf_fixture(args, work: Path, name: str = "qwen2-large-bf16-sharded") -> tuple[Path, Path]:
    """A BF16 HF directory `name` (real Qwen2 tokenizer) in `work`: scripts/gen_fixtures.py's
    qwen2-large-bf16-sharded, or one of QWEN_SHAPES; and its BF16 GGUF (`ggufkit convert --outtype
    bf16`), each made once."""
    src = subprocess.run([str(REPO / "scripts/ref-src.sh")], capture_output=True, text=True, check=True).stdout.strip()
    hf = work / name
    if name in QWEN_SHAPES:
        if not hf.exists():
            write_qwen_shape(hf_fixture(args, work)[0], hf, QWEN_SHAPES[name])
    elif not hf.exists():
        subprocess.run([sys.executable, str(REPO / "scripts/gen_fixtures.py"), "--llama-src", src, "--out", str(work),
                        name], check=True, capture_output=True)
    gguf = work / ("pack-source-bf16.gguf" if name == "qwen2-large-bf16-sharded" else f"{name}.gguf")
    if not gguf.exists():
        subprocess.run([str(args.bin), "convert", str(hf), str(gguf), "--outtype", "bf16", "-q"], check=True)
    return hf, gguf


def bench_convert(args, work: Path, model: Path, outdir: Path | None) -> dict:
    """`ggufkit convert --outtype f16` of a BF16 safetensors model (scripts/gen_fixtures.py's
    `--convert-fixture`, real Qwen2 tokenizer) against `cp` of its shards,
    the memory floor in the same run (with `--outdir`) and llama.cpp's BF16 GGUF → F16
    (`llama_model_quantize`, the nearest thing it has: it has no safetensors reader)."""
    if not has_command(args.bin, "convert"):
        print("NOTE: no `convert` command: convert benchmark skipped", file=sys.stderr)
        return {"skipped": "no convert command"}
    hf, bf16_gguf = hf_fixture(args, work, args.convert_fixture)
    shards = sorted(hf.glob("*.safetensors"))
    size = sum(f.stat().st_size for f in shards)
    for f in [*shards, bf16_gguf]:  # warm the page cache
        f.read_bytes()
    dest = outdir or work
    nt = str(max(int(t) for t in args.threads.split(",")))
    rec = {"model": hf.name, "safetensors_bytes": size, "threads": int(nt), "convert_s": [], "cp_s": [],
           "cp_sync_s": [], "floor_s": [], "llama_f16_s": [], "convert_rss_kib": [], "load": []}
    for rep in range(args.repeat):
        rec["load"].append(load_avg())
        copy_dir = dest / "copy"
        copy_dir.mkdir(exist_ok=True)
        wall, _, _ = timed(["cp", *map(str, shards), str(copy_dir)])
        rec["cp_s"].append(wall)
        shutil.rmtree(copy_dir)
        if outdir is None:
            # A durable copy, as ggufkit's output is (it is fsynced before the rename).
            copy_dir.mkdir(exist_ok=True)
            copies = " ".join(shlex.quote(str(copy_dir / f.name)) for f in shards)
            wall, _, _ = timed(["sh", "-c", f"cp {' '.join(shlex.quote(str(f)) for f in shards)} "
                                            f"{shlex.quote(str(copy_dir))} && sync {copies}"])
            rec["cp_sync_s"].append(wall)
            shutil.rmtree(copy_dir)
        out = dest / "converted-f16.gguf"
        wall, rss, _ = timed([str(args.bin), "convert", str(hf), str(out), "--outtype", "f16", "--threads", nt, "-q"])
        rec["convert_s"].append(wall)
        rec["convert_rss_kib"].append(rss)
        rec["output_bytes"] = out.stat().st_size
        if outdir is not None:
            floor_out = dest / "floor.copy"
            cat = " ".join(shlex.quote(str(f)) for f in shards)
            wall, _, _ = timed(["sh", "-c", f"cat {cat} > /dev/null && cp {shlex.quote(str(out))} "
                                            f"{shlex.quote(str(floor_out))}"])
            rec["floor_s"].append(wall)
            floor_out.unlink(missing_ok=True)
        out.unlink()
        llama_out = dest / "llama-f16-from-bf16.gguf"
        wall, _, _ = timed([sys.executable, "-c", LLAMA_RUNNER, str(bf16_gguf), str(llama_out), str(FTYPES["F16"]), nt])
        rec["llama_f16_s"].append(wall)
        llama_out.unlink(missing_ok=True)
        print(f"convert rep {rep}: load {rec['load'][-1]}  convert {rec['convert_s'][-1]:.2f}s"
              + (f"  floor {rec['floor_s'][-1]:.2f}s" if rec["floor_s"] else "")
              + f"  llama BF16 GGUF→F16 {rec['llama_f16_s'][-1]:.2f}s", file=sys.stderr)
    return rec


def bench_pack(args, work: Path, outdir: Path) -> dict:
    """`ggufkit pack HF --types Q4_K_M,Q8_0` (one read of the source, every output, Modelfiles, hashes)
    against `ggufkit quantize` of the same model's BF16 GGUF to Q4_K_M then to Q8_0 (scripts/gen_fixtures.py
    qwen2-large-bf16-sharded, real Qwen2 tokenizer). Both write into `outdir`."""
    hf, gguf = hf_fixture(args, work)
    for f in [*hf.glob("*.safetensors"), gguf]:  # warm the page cache
        f.read_bytes()
    nt = str(max(int(t) for t in args.threads.split(",")))
    rec = {"model": hf.name, "threads": int(nt), "pack_s": [], "pack_rss_kib": [], "quantize2_s": [],
           "quantize_rss_kib": [], "load": []}
    for rep in range(args.repeat):
        rec["load"].append(load_avg())
        rel = outdir / "pack-release"
        shutil.rmtree(rel, ignore_errors=True)
        wall, rss, _ = timed([str(args.bin), "pack", str(hf), "--types", "Q4_K_M,Q8_0", "-o", str(rel),
                              "--threads", nt, "-q"])
        rec["pack_s"].append(wall)
        rec["pack_rss_kib"].append(rss)
        shutil.rmtree(rel, ignore_errors=True)
        total, peak = 0.0, 0
        for ty in ("Q4_K_M", "Q8_0"):
            out = outdir / f"pack-cmp-{ty}.gguf"
            wall, rss, _ = timed([str(args.bin), "quantize", str(gguf), str(out), ty, "--threads", nt, "-q"])
            total += wall
            peak = max(peak, rss)
            out.unlink(missing_ok=True)
        rec["quantize2_s"].append(total)
        rec["quantize_rss_kib"].append(peak)
        print(f"pack rep {rep}: load {rec['load'][-1]}  pack {rec['pack_s'][-1]:.2f}s  2×quantize {total:.2f}s",
              file=sys.stderr)
    return rec


def med(v: list[float]) -> float | None:
    return statistics.median(v) if v else None


def print_table(res: dict) -> None:
    print(f"\nCPU: {res['cpu']} × {res['nproc']}; input {res['model']} ({res['input_bytes'] / 2**30:.2f} GiB)")
    print("| type | threads | llama.cpp s | ggufkit s | speedup | memory floor s | ggufkit / floor "
          "| llama.cpp peak RSS MiB | ggufkit peak RSS MiB | identical | load avg | runs (llama / ggufkit / floor) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in res["runs"]:
        # Minimum of the runs: on a shared machine the least disturbed run is the closest to the truth.
        lm, om, fm = (min(v) if v else None for v in (r["llama_s"], r["ours_s"], r.get("floor_s", [])))
        sp = f"{lm / om:.2f}×" if lm and om else "–"
        fl = f"{fm:.2f}" if fm else "–"
        fr = f"{om / fm:.2f}×" if om and fm else "–"
        lr = max(r["llama_rss_kib"]) / 1024 if r["llama_rss_kib"] else 0
        orss = f"{max(r['ours_rss_kib']) / 1024:.0f}" if r["ours_rss_kib"] else "–"
        runs = " / ".join(" ".join(f"{a:.2f}" for a in r.get(k, [])) for k in ("llama_s", "ours_s", "floor_s"))
        print(f"| {r['type']} | {r['threads']} | {lm:.2f} | {om if om is None else f'{om:.2f}'} | {sp} | {fl} | {fr} "
              f"| {lr:.0f} | {orss} | {r['identical']} | {','.join(r['load'])} | {runs} |")
    if res.get("proxy"):
        print("(ggufkit column: the quantize_proxy stand-in; identical = None: its type policy only approximates "
              "llama.cpp's, so outputs are not compared)")
    print(f"(llama.cpp's RSS includes its Python host: {res['python_import_llama_cpp_rss_kib'] / 1024:.0f} MiB "
          f"after `import llama_cpp`)")
    c = res.get("convert")
    if c and "convert_s" in c:
        cm, lm = min(c["convert_s"]), min(c["llama_f16_s"])
        line = (f"\nconvert --outtype f16 of {c['model']} ({c['safetensors_bytes'] / 2**20:.0f} MiB bf16 safetensors), "
                f"{c['threads']} threads, min of runs: ggufkit {cm:.2f}s (peak RSS "
                f"{max(c['convert_rss_kib']) / 1024:.0f} MiB); llama.cpp BF16 GGUF → F16 {lm:.2f}s ({lm / cm:.2f}× ours); "
                f"cp of the shards {min(c['cp_s']):.2f}s")
        if c["floor_s"]:
            line += f"; memory floor {min(c['floor_s']):.2f}s (ggufkit / floor {cm / min(c['floor_s']):.2f}×)"
        if c["cp_sync_s"]:
            line += f"; cp + sync {min(c['cp_sync_s']):.2f}s"
        print(line + f"; runs ggufkit {c['convert_s']} / floor {c['floor_s']} / llama {c['llama_f16_s']}; load {c['load']}")
    elif c:
        print(f"convert: {c}")
    pk = res.get("pack")
    if pk:
        print(f"\npack {pk['model']} --types Q4_K_M,Q8_0 at {pk['threads']} threads: min {min(pk['pack_s']):.2f}s "
              f"(peak RSS {max(pk['pack_rss_kib']) / 1024:.0f} MiB) vs quantize Q4_K_M + quantize Q8_0 of its BF16 "
              f"GGUF: min {min(pk['quantize2_s']):.2f}s (peak RSS {max(pk['quantize_rss_kib']) / 1024:.0f} MiB); "
              f"pack / two quantizes {min(pk['pack_s']) / min(pk['quantize2_s']):.2f}; runs {pk['pack_s']} / "
              f"{pk['quantize2_s']}; load {pk['load']}")


if __name__ == "__main__":
    sys.exit(main())
