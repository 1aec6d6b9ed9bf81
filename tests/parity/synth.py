#!/usr/bin/env python3
"""Synthetic models, importance matrices and llama.cpp runs for the policy parity tests.

Run with the reference venv's python (scripts/ref-env.sh). Subcommands:

  models OUTDIR                 write the synthetic GGUF models + OUTDIR/manifest.json
  data-models OUTDIR            write the models of the whole-file quantize parity tests (adversarial rows)
  quantize JOBS.json OUT.json   run llama.cpp's llama_model_quantize (ctypes) for each job
  sweep CONFIGS.json OUT.json   run llama.cpp's llama_quant_compute_types (ctypes) for each config
  imatrix MODEL OUT ...         write an importance matrix for MODEL in llama-imatrix's GGUF or .dat layout
  ftypes SRC OUT.json           llama.cpp's file-type table (quantize.cpp's QUANT_OPTIONS, llama_ftype_name, default types)
  build-tool SRC                build the real llama-quantize (tools/quantize/quantize.cpp + common/) from the
                                llama.cpp tree SRC against the venv's libllama; print the binary's path

Everything is deterministic (fixed seeds), so a failing comparison can be reproduced.
"""
import ctypes
import hashlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as QT

HERE = Path(__file__).resolve().parent
# llama.cpp's abort handler would otherwise run gdb for a backtrace on every refused case
os.environ.setdefault("GGML_NO_BACKTRACE", "1")


# --------------------------------------------------------------------------------------------
# synthetic models

def _tokenizer_keys(w, vocab):
    tokens = ["<unk>", "<s>", "</s>"] + [f"t{i}" for i in range(3, vocab)]
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([float(-i) for i in range(vocab)])
    w.add_token_types([2, 3, 3] + [1] * (vocab - 3))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_chat_template("{% for m in messages %}{{ m['content'] }}{% endfor %}")


def _rand(rng, shape):
    return (rng.standard_normal(shape) * 0.05).astype(np.float32)


def _store(w, name, arr, dtype):
    """Adds a tensor (numpy shape = reversed ggml ne) in the model's storage type."""
    if arr.ndim == 1 or dtype == "F32":
        w.add_tensor(name, arr.astype(np.float32))
    elif dtype == "F16":
        w.add_tensor(name, arr.astype(np.float16))
    elif dtype == "BF16":
        u = arr.astype(np.float32).view(np.uint32)
        bf = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
        w.add_tensor(name, bf, raw_dtype=QT.BF16)
    elif dtype == "Q8_0":
        w.add_tensor(name, gguf.quants.quantize(arr.astype(np.float32), QT.Q8_0), raw_dtype=QT.Q8_0)
    else:
        raise ValueError(dtype)


MODELS = [
    # small enough to quantize in well under a second each, with enough layers for the layer rules
    dict(name="llama8", arch="llama", n_layer=8, n_embd=256, n_head=8, n_head_kv=2, n_ff=256, vocab=256,
         tied=False, dtype="F32"),
    dict(name="llama12_tied", arch="llama", n_layer=12, n_embd=256, n_head=4, n_head_kv=4, n_ff=96, vocab=256,
         tied=True, dtype="F16", odd_keys=True),
    dict(name="llama3_896", arch="llama", n_layer=3, n_embd=896, n_head=14, n_head_kv=2, n_ff=40, vocab=128,
         tied=False, dtype="BF16"),
    dict(name="llama9_extras", arch="llama", n_layer=9, n_embd=256, n_head=8, n_head_kv=1, n_ff=288, vocab=256,
         tied=False, dtype="F16", extras=True),
    dict(name="qwen2_10", arch="qwen2", n_layer=10, n_embd=384, n_head=6, n_head_kv=2, n_ff=128, vocab=256,
         tied=True, dtype="F16"),
    dict(name="qwen2_5_untied", arch="qwen2", n_layer=5, n_embd=256, n_head=4, n_head_kv=1, n_ff=256, vocab=256,
         tied=False, dtype="F32"),
    dict(name="moe8", arch="llama", n_layer=4, n_embd=256, n_head=4, n_head_kv=2, n_ff=256, vocab=256,
         tied=False, dtype="F16", n_expert=8),
    dict(name="moe4", arch="llama", n_layer=3, n_embd=256, n_head=4, n_head_kv=4, n_ff=128, vocab=256,
         tied=True, dtype="F16", n_expert=4),
    dict(name="llama8_q8", arch="llama", n_layer=8, n_embd=256, n_head=8, n_head_kv=2, n_ff=256, vocab=256,
         tied=False, dtype="Q8_0"),
    dict(name="llama80", arch="llama", n_layer=80, n_embd=256, n_head=4, n_head_kv=1, n_ff=32, vocab=64,
         tied=False, dtype="F16"),
]


# Models for the byte-for-byte quantize parity tests: every storage type, row
# lengths that are and are not multiples of 256, tied and untied output, a MoE
# model (per-expert importance weights), and adversarial rows in every matrix.
DATA_MODELS = [
    dict(name="data_f32_512", arch="llama", n_layer=2, n_embd=512, n_head=8, n_head_kv=2, n_ff=512, vocab=160,
         tied=False, dtype="F32", patterns=True),
    dict(name="data_f16_384_tied", arch="llama", n_layer=2, n_embd=384, n_head=6, n_head_kv=2, n_ff=256, vocab=160,
         tied=True, dtype="F16", patterns=True),
    dict(name="data_bf16_896", arch="qwen2", n_layer=2, n_embd=896, n_head=14, n_head_kv=2, n_ff=256, vocab=96,
         tied=False, dtype="BF16", patterns=True),
    dict(name="data_moe_f16", arch="llama", n_layer=2, n_embd=256, n_head=4, n_head_kv=2, n_ff=256, vocab=96,
         tied=False, dtype="F16", n_expert=4, patterns=True),
]

N_PATTERNS = 12


def _pattern_row(rng, k, n):
    """Row pattern k of length n: values that stress the quantizers' corner cases."""
    if k == 0:
        return np.zeros(n, np.float32)                                    # all zero
    if k == 1:
        return np.full(n, 0.37, np.float32)                               # constant
    if k == 2:
        return (rng.standard_normal(n) * 1e-7).astype(np.float32)         # tiny
    if k == 3:
        return (rng.standard_normal(n) * 1e3).astype(np.float32)          # huge
    if k == 4:
        return (np.abs(rng.standard_normal(n)) * 0.05).astype(np.float32)  # one-signed, positive
    if k == 5:
        return (-np.abs(rng.standard_normal(n)) * 0.05).astype(np.float32)  # one-signed, negative
    if k == 6:
        return np.clip(rng.standard_cauchy(n) * 0.01, -1e4, 1e4).astype(np.float32)  # heavy-tailed
    if k == 7:
        return (rng.integers(-8, 9, n) * 0.5).astype(np.float32)           # exact ties at rounding points
    if k == 8:
        r = np.zeros(n, np.float32)
        r[rng.integers(0, n)] = 100.0                                      # a single spike
        return r
    if k == 9:
        return (rng.standard_normal(n) * 1e-38).astype(np.float32)        # subnormal-scale (f32)
    if k == 10:
        return np.where(np.arange(n) % 2 == 0, 1.0, -1.0).astype(np.float32)  # alternating
    return np.linspace(-1.0, 1.0, n, dtype=np.float32)                    # ramp


def _patterned(rng, shape):
    """Random normal weights whose first rows (of every matrix) are the adversarial patterns."""
    x = _rand(rng, shape)
    rows = x.reshape(-1, shape[-1])
    for k in range(min(N_PATTERNS, rows.shape[0])):
        rows[k] = _pattern_row(rng, k, shape[-1])
    return rows.reshape(shape)


def cmd_data_models(outdir):
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = []
    for spec in DATA_MODELS:
        path = out / f"{spec['name']}.gguf"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            write_model(spec, tmp)
            tmp.rename(path)
        manifest.append(dict(spec, path=str(path)))
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))


def write_model(spec, path):
    rng = np.random.default_rng(int(hashlib.sha256(spec["name"].encode()).hexdigest()[:8], 16))
    arch = spec["arch"]
    L, E, H, HKV, FF, V = (spec[k] for k in ("n_layer", "n_embd", "n_head", "n_head_kv", "n_ff", "vocab"))
    n_expert = spec.get("n_expert", 0)
    head_dim = E // H
    dtype = spec["dtype"]
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(spec["name"])
    w.add_type("model")
    ftype_id = {"F32": 0, "F16": 1, "BF16": 32, "Q8_0": 7}[dtype]
    w.add_file_type(ftype_id)
    w.add_context_length(4096)
    w.add_embedding_length(E)
    w.add_block_count(L)
    w.add_feed_forward_length(FF)
    w.add_head_count(H)
    w.add_head_count_kv(HKV)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(10000.0 if arch == "llama" else 1000000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(V)
    if n_expert:
        w.add_expert_count(n_expert)
        w.add_expert_used_count(2)
    if spec.get("odd_keys"):
        # values llama-quantize copies with quirks (embedded NUL) or rarely sees
        w.add_string("ggufkit.test.nul_string", "before\0after")
        w.add_array("ggufkit.test.nul_strings", ["a\0b", "cd"])
        w.add_float64("ggufkit.test.f64", 1.25)
        w.add_int64("ggufkit.test.i64", -5)
        w.add_uint64("ggufkit.test.u64", 2**40)
        w.add_int8("ggufkit.test.i8", -3)
        w.add_uint8("ggufkit.test.u8", 200)
        w.add_int16("ggufkit.test.i16", -300)
        w.add_uint16("ggufkit.test.u16", 60000)
        w.add_bool("ggufkit.test.bool", True)
        w.add_array("ggufkit.test.f32s", [1.5, -2.0])
        w.add_quantization_version(2)
        w.add_uint16("split.no", 0)
        w.add_uint16("split.count", 1)
        w.add_int32("split.tensors.count", 0)
    _tokenizer_keys(w, V)

    make = _patterned if spec.get("patterns") else _rand
    t = lambda name, shape: _store(w, name, make(rng, shape), dtype)  # noqa: E731 (numpy shape order)
    t("token_embd.weight", (V, E))
    for i in range(L):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(E, dtype=np.float32))
        t(p + "attn_q.weight", (E, E))
        t(p + "attn_k.weight", (HKV * head_dim, E))
        t(p + "attn_v.weight", (HKV * head_dim, E))
        t(p + "attn_output.weight", (E, E))
        if arch == "qwen2":
            w.add_tensor(p + "attn_q.bias", _rand(rng, (E,)))
            w.add_tensor(p + "attn_k.bias", _rand(rng, (HKV * head_dim,)))
            w.add_tensor(p + "attn_v.bias", _rand(rng, (HKV * head_dim,)))
        w.add_tensor(p + "ffn_norm.weight", np.ones(E, dtype=np.float32))
        if n_expert:
            t(p + "ffn_gate_inp.weight", (n_expert, E))
            t(p + "ffn_gate_exps.weight", (n_expert, FF, E))
            t(p + "ffn_up_exps.weight", (n_expert, FF, E))
            t(p + "ffn_down_exps.weight", (n_expert, E, FF))
        else:
            t(p + "ffn_gate.weight", (FF, E))
            t(p + "ffn_up.weight", (FF, E))
            t(p + "ffn_down.weight", (E, FF))
    w.add_tensor("output_norm.weight", np.ones(E, dtype=np.float32))
    if not spec["tied"]:
        t("output.weight", (V, E))
    if spec.get("extras"):
        # names and shapes that exercise tensor_allows_quantization and the categories
        t("abcde", (64, 256))                        # 5-byte names count as "...weight" in llama.cpp
        t("abcdef", (64, 256))
        t("position_embd.weight", (64, E))
        t("token_types.weight", (4, E))
        t("blk.0.ssm_conv1d.weight", (8, 256))
        t("blk.1.attn_rel_b.weight", (8, 256))
        t("blk.2.extra_proj.weight", (32, 256))     # category "other"
        t("blk.3.ffn_up_shexp.weight", (96, 256))   # shared expert: ffn_up category
        w.add_tensor("blk.4.row.weight", _rand(rng, (1, 256)))       # ne [256, 1]: 1-D for ggml_n_dims
        t("blk.5.bias_like.bias", (16, 256))        # 2-D but not ...weight
        t("blk.6.v_norm_extra_norm.weight", (16, 256))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def cmd_models(outdir):
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = []
    for spec in MODELS:
        path = out / f"{spec['name']}.gguf"
        if not path.exists():
            write_model(spec, path)
        manifest.append(dict(spec, path=str(path)))
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))


# --------------------------------------------------------------------------------------------
# llama.cpp through ctypes

def _lib_dir():
    import llama_cpp
    return Path(llama_cpp.__file__).parent / "lib"


class KvOverride(ctypes.Structure):
    class _Val(ctypes.Union):
        _fields_ = [("val_i64", ctypes.c_int64), ("val_f64", ctypes.c_double), ("val_bool", ctypes.c_bool),
                    ("val_str", ctypes.c_char * 128)]
    _anonymous_ = ("u",)
    _fields_ = [("tag", ctypes.c_int), ("key", ctypes.c_char * 128), ("u", _Val)]


class TensorOverride(ctypes.Structure):
    _fields_ = [("pattern", ctypes.c_char_p), ("type", ctypes.c_int)]


class ImatrixData(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("data", ctypes.POINTER(ctypes.c_float)), ("size", ctypes.c_size_t)]


class QuantizeParams(ctypes.Structure):
    _fields_ = [
        ("nthread", ctypes.c_int32), ("ftype", ctypes.c_int), ("output_tensor_type", ctypes.c_int),
        ("token_embedding_type", ctypes.c_int), ("allow_requantize", ctypes.c_bool),
        ("quantize_output_tensor", ctypes.c_bool), ("only_copy", ctypes.c_bool), ("pure", ctypes.c_bool),
        ("keep_split", ctypes.c_bool), ("dry_run", ctypes.c_bool),
        ("imatrix", ctypes.POINTER(ImatrixData)), ("kv_overrides", ctypes.POINTER(KvOverride)),
        ("tt_overrides", ctypes.POINTER(TensorOverride)), ("prune_layers", ctypes.POINTER(ctypes.c_int32)),
        ("max_buf_size", ctypes.c_size_t),
    ]


class ModelDesc(ctypes.Structure):
    _fields_ = [("architecture", ctypes.c_char_p)] + [
        (n, ctypes.c_uint32) for n in
        ("n_embd", "n_ff", "n_layer", "n_head", "n_head_kv", "n_expert", "n_embd_head_k", "n_embd_head_v")]


class GgmlInitParams(ctypes.Structure):
    _fields_ = [("mem_size", ctypes.c_size_t), ("mem_buffer", ctypes.c_void_p), ("no_alloc", ctypes.c_bool)]


_LIBS = {}


def libs():
    if not _LIBS:
        d = _lib_dir()
        base = ctypes.CDLL(str(d / "libggml-base.so"), mode=ctypes.RTLD_GLOBAL)
        llama = ctypes.CDLL(str(d / "libllama.so"), mode=ctypes.RTLD_GLOBAL)
        llama.llama_model_quantize_default_params.restype = QuantizeParams
        llama.llama_model_quantize.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(QuantizeParams)]
        llama.llama_model_quantize.restype = ctypes.c_uint32
        llama.llama_backend_init()
        _LIBS.update(base=base, llama=llama)
    return _LIBS["base"], _LIBS["llama"]


KV_TAGS = {"int": 0, "float": 1, "bool": 2, "str": 3}


def make_params(job, keep):
    """llama_model_quantize_params from a job dict; `keep` holds the buffers alive."""
    _, llama = libs()
    p = llama.llama_model_quantize_default_params()
    p.nthread = 1
    p.ftype = job["ftype"]
    if job.get("output_tensor_type") is not None:
        p.output_tensor_type = job["output_tensor_type"]
    if job.get("token_embedding_type") is not None:
        p.token_embedding_type = job["token_embedding_type"]
    p.allow_requantize = bool(job.get("allow_requantize"))
    p.quantize_output_tensor = not job.get("leave_output")
    p.only_copy = bool(job.get("only_copy"))
    p.pure = bool(job.get("pure"))
    p.dry_run = bool(job.get("dry_run"))
    tts = job.get("tensor_types") or []
    if tts:
        arr = (TensorOverride * (len(tts) + 1))()
        for i, (pat, ty) in enumerate(tts):
            b = ctypes.create_string_buffer(pat.encode())
            keep.append(b)
            arr[i].pattern = ctypes.cast(b, ctypes.c_char_p)
            arr[i].type = ty
        arr[len(tts)].pattern = None
        arr[len(tts)].type = 0
        keep.append(arr)
        p.tt_overrides = arr
    kvs = job.get("kv_overrides") or []
    if kvs:
        arr = (KvOverride * (len(kvs) + 1))()
        for i, (key, tag, val) in enumerate(kvs):
            arr[i].key = key.encode()
            arr[i].tag = KV_TAGS[tag]
            if tag == "int":
                arr[i].val_i64 = int(val)
            elif tag == "float":
                arr[i].val_f64 = float(val)
            elif tag == "bool":
                arr[i].val_bool = bool(val)
            else:
                arr[i].val_str = val.encode()
        arr[len(kvs)].key = b""
        keep.append(arr)
        p.kv_overrides = arr
    im = job.get("imatrix")
    if im:
        arr = (ImatrixData * (len(im) + 1))()
        for i, (name, vals) in enumerate(im):
            nb = ctypes.create_string_buffer(name.encode())
            fb = (ctypes.c_float * len(vals))(*vals)
            keep += [nb, fb]
            arr[i].name = ctypes.cast(nb, ctypes.c_char_p)
            arr[i].data = fb
            arr[i].size = len(vals)
        arr[len(im)].name = None
        keep.append(arr)
        p.imatrix = arr
    return p


def _in_child(fn):
    """Runs fn() in a forked child (llama.cpp aborts on some inputs); returns its exit status or -signal."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            code = fn()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def cmd_quantize(jobs_path, out_path):
    jobs = json.loads(Path(jobs_path).read_text())
    libs()
    results = []
    for job in jobs:
        log = Path(job["output"] + ".log")

        def run():
            fd = os.open(str(log), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            keep = []
            p = make_params(job, keep)
            _, llama = libs()
            return int(llama.llama_model_quantize(job["input"].encode(), job["output"].encode(), ctypes.byref(p)))

        rc = _in_child(run)
        results.append({"id": job["id"], "rc": rc})
    Path(out_path).write_text(json.dumps(results))


def cmd_sweep(configs_path, out_path):
    """llama.cpp's own type assignment (llama_quant_compute_types) on mock models, without files."""
    configs = json.loads(Path(configs_path).read_text())
    base, llama = libs()
    llama._Z31llama_quant_model_from_metadataPK22llama_quant_model_desc.restype = ctypes.c_void_p
    llama._Z31llama_quant_model_from_metadataPK22llama_quant_model_desc.argtypes = [ctypes.POINTER(ModelDesc)]
    init = llama._Z16llama_quant_initPK11llama_modelPK27llama_model_quantize_params
    init.restype = ctypes.c_void_p
    init.argtypes = [ctypes.c_void_p, ctypes.POINTER(QuantizeParams)]
    compute = llama._Z25llama_quant_compute_typesP19quantize_state_impl11llama_ftypePP11ggml_tensorP9ggml_typem
    compute.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_void_p),
                        ctypes.POINTER(ctypes.c_int), ctypes.c_size_t]
    qfree = llama._Z16llama_quant_freeP19quantize_state_impl
    qfree.argtypes = [ctypes.c_void_p]
    llama.llama_model_free.argtypes = [ctypes.c_void_p]
    base.ggml_init.restype = ctypes.c_void_p
    base.ggml_init.argtypes = [GgmlInitParams]
    base.ggml_new_tensor.restype = ctypes.c_void_p
    base.ggml_new_tensor.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int64)]
    base.ggml_set_name.restype = ctypes.c_void_p
    base.ggml_set_name.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    base.ggml_free.argtypes = [ctypes.c_void_p]
    base.ggml_tensor_overhead.restype = ctypes.c_size_t

    def one(cfg):
        keep = []
        desc = ModelDesc(cfg["arch"].encode(), cfg["n_embd"], cfg["n_ff"], cfg["n_layer"], cfg["n_head"],
                         cfg["n_head_kv"], cfg["n_expert"], cfg["n_embd"] // max(cfg["n_head"], 1),
                         cfg["n_embd"] // max(cfg["n_head"], 1))
        model = llama._Z31llama_quant_model_from_metadataPK22llama_quant_model_desc(ctypes.byref(desc))
        params = make_params(cfg, keep)
        qs = init(model, ctypes.byref(params))
        tensors = cfg["tensors"]
        ctx = base.ggml_init(GgmlInitParams((len(tensors) + 8) * base.ggml_tensor_overhead(), None, True))
        ptrs = (ctypes.c_void_p * len(tensors))()
        for i, (name, ne, ty) in enumerate(tensors):
            arr = (ctypes.c_int64 * len(ne))(*ne)
            t = base.ggml_new_tensor(ctx, ty, len(ne), arr)
            base.ggml_set_name(t, name.encode())
            ptrs[i] = t
        result = (ctypes.c_int * len(tensors))()
        compute(qs, cfg["ftype"], ptrs, result, len(tensors))
        qfree(qs)
        base.ggml_free(ctx)
        llama.llama_model_free(model)
        return list(result)

    saved_stderr = os.dup(2)  # llama.cpp logs every fallback: keep the sweep quiet
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    results = []
    scratch = Path(out_path).with_suffix(".child.json")
    for cfg in configs:
        if not cfg.get("isolate"):
            results.append({"id": cfg["id"], "rc": 0, "types": one(cfg)})
            continue

        # a child for a config llama.cpp may refuse: its exceptions cannot cross the C API and abort
        def run():
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            scratch.write_text(json.dumps(one(cfg)))
            return 0

        rc = _in_child(run)
        results.append({"id": cfg["id"], "rc": rc, "types": json.loads(scratch.read_text()) if rc == 0 else None})
    os.dup2(saved_stderr, 2)
    Path(out_path).write_text(json.dumps(results))


# --------------------------------------------------------------------------------------------
# importance matrices in llama-imatrix's layouts (tools/imatrix/imatrix.cpp)

def _imatrix_stats(model_path, skip, zero_expert, seed, bad_embd=False):
    """Per weight: (sums of squared activations [n_mat * n_per_row], token counts [n_mat])."""
    r = gguf.GGUFReader(model_path)
    rng = np.random.default_rng(seed)
    stats = {}
    for t in r.tensors:
        name = t.name
        ne = [int(x) for x in t.shape]
        if len(ne) < 2 or not name.endswith(".weight") or "norm" in name or name in skip:
            continue
        if name == "token_embd.weight" and not bad_embd:
            continue  # llama-imatrix only sees matrix multiplications (tied models: as the output)
        if name == "token_embd.weight":
            ne = [ne[0] + 32] + ne[1:]  # a size that does not fit, which llama-quantize tolerates here only
        n_mat = ne[2] if len(ne) > 2 else 1
        counts = rng.integers(1, 4, size=n_mat) * 512
        if n_mat > 1 and zero_expert:
            counts[1] = 0  # an expert the data never reached
        sums = (rng.random(n_mat * ne[0]) * 3.0 + 0.01).astype(np.float32)
        sums *= np.repeat(counts, ne[0]).astype(np.float32)
        stats[name] = (sums.astype(np.float32), counts)
    return stats


def cmd_imatrix(args):
    import argparse
    ap = argparse.ArgumentParser(prog="synth.py imatrix")
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--format", choices=["gguf", "dat"], default="gguf")
    ap.add_argument("--dataset", default="calibration.txt")
    ap.add_argument("--chunks", type=int, default=12)
    ap.add_argument("--chunk-size", type=int, default=512)
    ap.add_argument("--skip", action="append", default=[])
    ap.add_argument("--zero-expert", action="store_true")
    ap.add_argument("--no-metadata", action="store_true")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--bad-embd", action="store_true", help="add a token_embd.weight entry of the wrong size")
    ap.add_argument("--drop-counts", action="store_true", help="GGUF: leave out the first entry's counts tensor")
    ap.add_argument("--f16-counts", action="store_true", help="GGUF: store the first entry's counts as F16")
    ap.add_argument("--chunk-count-i32", action="store_true", help="GGUF: imatrix.chunk_count as INT32")
    a = ap.parse_args(args)
    stats = _imatrix_stats(a.model, set(a.skip), a.zero_expert, a.seed, a.bad_embd)
    names = sorted(stats)
    if a.format == "gguf":
        w = gguf.GGUFWriter(a.out, arch="")
        w.kv_data[0].pop("general.architecture", None)  # llama-imatrix writes no architecture
        if not a.no_metadata:
            w.add_string("general.type", "imatrix")
            w.add_array("imatrix.datasets", [a.dataset])
            if a.chunk_count_i32:
                w.add_int32("imatrix.chunk_count", a.chunks)
            else:
                w.add_uint32("imatrix.chunk_count", a.chunks)
            w.add_uint32("imatrix.chunk_size", a.chunk_size)
        for i, n in enumerate(names):
            sums, counts = stats[n]
            n_mat = len(counts)
            w.add_tensor(n + ".in_sum2", sums.reshape(n_mat, -1))
            if i == 0 and a.drop_counts:
                continue
            dt = np.float16 if i == 0 and a.f16_counts else np.float32
            w.add_tensor(n + ".counts", counts.astype(dt).reshape(n_mat, 1))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    else:
        chunk = a.chunk_size
        out = bytearray(struct.pack("<i", len(names)))
        for n in names:
            sums, counts = stats[n]
            nval, nmat = len(sums), len(counts)
            ncall = int((int(counts.max()) + chunk - 1) // chunk)
            out += struct.pack("<i", len(n)) + n.encode() + struct.pack("<ii", ncall, nval)
            # tmp[i] = (value / count) * ncall in f32, with 1/1 for an expert without data
            c = np.repeat(counts.astype(np.float32), nval // nmat)
            v = np.where(c == 0, np.float32(1.0), sums).astype(np.float32)
            c = np.where(c == 0, np.float32(1.0), c).astype(np.float32)
            tmp = ((v / c).astype(np.float32) * np.float32(ncall)).astype(np.float32)
            out += tmp.tobytes()
        out += struct.pack("<i", a.chunks)
        out += struct.pack("<i", len(a.dataset.encode())) + a.dataset.encode()
        Path(a.out).write_bytes(bytes(out))


# --------------------------------------------------------------------------------------------
# the real llama-quantize, built from the pinned source against the venv's libllama

DRIVER = "quantize_driver.cpp"


def cmd_build_tool(src):
    src = Path(src)
    lib = _lib_dir()
    sources = [HERE / DRIVER, src / "tools/quantize/quantize.cpp", src / "common/imatrix-loader.cpp",
               src / "common/common.cpp", src / "common/log.cpp", src / "common/json.cpp"]
    h = hashlib.sha256()
    for s in sources:
        h.update(s.read_bytes())
    h.update(str(lib).encode())
    cache = Path(os.environ.get("GGUFKIT_CACHE", Path.home() / ".cache/ggufkit")) / f"llama-quantize-{h.hexdigest()[:16]}"
    exe = cache / "llama-quantize"
    if exe.exists():
        print(exe)
        return
    tmp = cache.with_name(cache.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    info = (src / "common/build-info.cpp.in").read_text()
    for k, v in {"@LLAMA_BUILD_NUMBER@": "0", "@LLAMA_BUILD_COMMIT@": "pinned", "@BUILD_COMPILER@": "g++",
                 "@BUILD_TARGET@": "x86_64"}.items():
        info = info.replace(k, v)
    (tmp / "build-info.cpp").write_text(info)
    inc = [f"-I{src / d}" for d in ("include", "ggml/include", "common", "vendor", "src", "tools/quantize")]
    objs = []
    for s in sources[:1] + sources[2:] + [tmp / "build-info.cpp"]:
        o = tmp / (s.stem + ".o")
        subprocess.run(["g++", "-std=c++17", "-O1", "-w", "-ffunction-sections", "-fdata-sections", *inc, "-c",
                        str(s), "-o", str(o)], check=True)
        objs.append(str(o))
    subprocess.run(["g++", "-o", str(tmp / "llama-quantize"), *objs, "-Wl,--gc-sections", f"-L{lib}", "-lllama",
                    "-lggml-base", "-lggml", f"-Wl,-rpath,{lib}", "-lpthread"], check=True)
    if cache.exists():
        import shutil
        shutil.rmtree(tmp)
    else:
        tmp.rename(cache)
    print(exe)


def cmd_ftypes(src, out_path):
    """llama.cpp's file-type facts: QUANT_OPTIONS (parsed from quantize.cpp), llama_ftype_name and
    llama_ftype_get_default_type (called in libllama) for every llama_ftype id."""
    import re
    src = Path(src)
    enum = dict((m.group(1), int(m.group(2))) for m in
                re.finditer(r"^\s*LLAMA_FTYPE_(\w+)\s*=\s*(\d+)", (src / "include/llama.h").read_text(), re.M))
    qsrc = (src / "tools/quantize/quantize.cpp").read_text()
    block = qsrc[qsrc.index("QUANT_OPTIONS"):]
    block = block[:block.index("};")]
    options = [dict(name=m.group(1), id=enum[m.group(2)], desc=m.group(3)) for m in
               re.finditer(r'\{\s*"(\w+)",\s*LLAMA_FTYPE_(\w+),\s*"([^"]*)"', block)]
    count = int(re.search(r"GGML_TYPE_COUNT\s*=\s*(\d+)", (src / "ggml/include/ggml.h").read_text()).group(1))
    _, llama = libs()
    llama.llama_ftype_name.restype = ctypes.c_char_p
    llama.llama_ftype_name.argtypes = [ctypes.c_int]
    dflt = llama._Z28llama_ftype_get_default_type11llama_ftype
    dflt.restype = ctypes.c_int
    dflt.argtypes = [ctypes.c_int]
    ftypes = []
    for name, i in sorted(enum.items(), key=lambda kv: kv[1]):
        if name == "GUESSED":
            continue
        d = dflt(i)
        ftypes.append(dict(enum=name, id=i, label=llama.llama_ftype_name(i).decode(),
                           default_type=None if d == count else d))
    Path(out_path).write_text(json.dumps(dict(options=options, ftypes=ftypes), indent=1))


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        sys.exit(2)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "models":
        cmd_models(*args)
    elif cmd == "data-models":
        cmd_data_models(*args)
    elif cmd == "quantize":
        cmd_quantize(*args)
    elif cmd == "sweep":
        cmd_sweep(*args)
    elif cmd == "imatrix":
        cmd_imatrix(args)
    elif cmd == "ftypes":
        cmd_ftypes(*args)
    elif cmd == "build-tool":
        cmd_build_tool(*args)
    else:
        print(__doc__)
        sys.exit(2)


if __name__ == "__main__":
    main()
