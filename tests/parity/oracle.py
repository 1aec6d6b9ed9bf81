#!/usr/bin/env python3
"""Reference quantizer for ggufkit's kernel parity tests.

Calls llama.cpp's own libggml-base (from the pinned llama-cpp-python in the
reference venv) through ctypes, so the bytes compared are the real ones:

    ggml_quantize_chunk(type, src, dst, 0, nrows, n_per_row, imatrix)
    ggml_get_type_traits(type)->to_float(src, dst, n)   (dequantize_row_q8_K for Q8_K)

Usage: python oracle.py MANIFEST

Each line of MANIFEST is one job on raw little-endian files:

    quantize   TYPE_ID N_PER_ROW SRC.f32 IMATRIX.f32|- DST.bin [DEQUANT.f32]
    dequantize TYPE_ID SRC.bin DST.f32

A quantize job with a fifth path also dequantizes its own output into it.

Q8_1 has no dequantizer in ggml (it only feeds dot products); its values are
d * q exactly like Q8_0, so it is dequantized by converting each block to
Q8_0 (dropping the `s` field) and calling Q8_0's to_float.

Prints one line per job ("ok N") and exits non-zero on any error.
"""

import ctypes
import importlib.util
import os
import sys

GGML_TYPE_Q8_0 = 8
GGML_TYPE_Q8_1 = 9
GGML_TYPE_Q8_K = 15
GGML_TYPE_F32 = 0


def load_ggml():
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("oracle: llama_cpp is not installed in this interpreter")
    libdir = os.path.join(list(spec.submodule_search_locations)[0], "lib")
    lib = ctypes.CDLL(os.path.join(libdir, "libggml-base.so"))

    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [
        ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
        ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
    ]
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    lib.ggml_blck_size.restype = ctypes.c_int64
    lib.ggml_blck_size.argtypes = [ctypes.c_int]
    lib.ggml_type_size.restype = ctypes.c_size_t
    lib.ggml_type_size.argtypes = [ctypes.c_int]
    lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
    lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
    lib.ggml_get_type_traits.restype = ctypes.POINTER(TypeTraits)
    lib.ggml_get_type_traits.argtypes = [ctypes.c_int]
    lib.dequantize_row_q8_K.restype = None
    lib.dequantize_row_q8_K.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    return lib


TO_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


class TypeTraits(ctypes.Structure):
    # struct ggml_type_traits (ggml.h)
    _fields_ = [
        ("type_name", ctypes.c_char_p),
        ("blck_size", ctypes.c_int64),
        ("blck_size_interleave", ctypes.c_int64),
        ("type_size", ctypes.c_size_t),
        ("is_quantized", ctypes.c_bool),
        ("to_float", ctypes.c_void_p),
        ("from_float_ref", ctypes.c_void_p),
    ]


def addr(buf):
    return ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf)) if len(buf) else None


def read(path):
    with open(path, "rb") as f:
        return bytearray(f.read())


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def quantize(lib, ty, n_per_row, src_path, imatrix_path, dst_path):
    src = read(src_path)
    if len(src) % (4 * n_per_row):
        raise ValueError(f"{src_path}: {len(src)} bytes is not a whole number of rows")
    nrows = len(src) // (4 * n_per_row)
    if n_per_row % lib.ggml_blck_size(ty):
        raise ValueError(f"row length {n_per_row} is not a multiple of the block size")
    imatrix = None
    if imatrix_path != "-":
        imatrix = read(imatrix_path)
        if len(imatrix) != 4 * n_per_row:
            raise ValueError(f"{imatrix_path}: imatrix needs {n_per_row} floats")
    elif lib.ggml_quantize_requires_imatrix(ty):
        raise ValueError(f"type {ty} requires an imatrix")
    size = lib.ggml_row_size(ty, n_per_row) * nrows
    dst = bytearray(size)
    got = lib.ggml_quantize_chunk(ty, addr(src), addr(dst), 0, nrows, n_per_row,
                                  addr(imatrix) if imatrix is not None else None)
    if got != size:
        raise ValueError(f"ggml_quantize_chunk wrote {got} bytes, expected {size}")
    write(dst_path, dst)
    return nrows


def dequantize(lib, ty, src_path, dst_path):
    src = read(src_path)
    bs, ts = lib.ggml_blck_size(ty), lib.ggml_type_size(ty)
    if len(src) % ts:
        raise ValueError(f"{src_path}: not a whole number of blocks")
    nblocks = len(src) // ts
    n = nblocks * bs
    if ty == GGML_TYPE_F32:
        write(dst_path, src)
        return nblocks
    if ty == GGML_TYPE_Q8_1:
        # block_q8_1 = {fp16 d, fp16 s, int8 qs[32]} -> block_q8_0 = {fp16 d, int8 qs[32]}
        q80 = bytearray()
        for i in range(nblocks):
            b = src[i * ts:(i + 1) * ts]
            q80 += b[0:2] + b[4:]
        src, ty = q80, GGML_TYPE_Q8_0
    dst = bytearray(4 * n)
    if ty == GGML_TYPE_Q8_K:
        lib.dequantize_row_q8_K(addr(src), addr(dst), n)
    else:
        fn = lib.ggml_get_type_traits(ty).contents.to_float
        if not fn:
            raise ValueError(f"type {ty} has no to_float")
        TO_FLOAT(fn)(addr(src), addr(dst), n)
    write(dst_path, dst)
    return nblocks


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    lib = load_ggml()
    failed = False
    with open(sys.argv[1]) as manifest:
        for lineno, line in enumerate(manifest, 1):
            parts = line.split()
            if not parts:
                continue
            try:
                if parts[0] == "quantize" and len(parts) in (6, 7):
                    n = quantize(lib, int(parts[1]), int(parts[2]), parts[3], parts[4], parts[5])
                    if len(parts) == 7:
                        dequantize(lib, int(parts[1]), parts[5], parts[6])
                elif parts[0] == "dequantize" and len(parts) == 4:
                    n = dequantize(lib, int(parts[1]), parts[2], parts[3])
                else:
                    raise ValueError("bad job line")
                print(f"ok {n}")
            except Exception as e:  # report every bad job, then fail
                print(f"error line {lineno}: {e}: {line.strip()}", file=sys.stderr)
                failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
