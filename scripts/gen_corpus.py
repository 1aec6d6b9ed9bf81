#!/usr/bin/env python3
"""Generates the malformed-GGUF corpus in tests/corpus/gguf/ (standard library only).

Each case is a small file that ggufkit must reject with exit code 2 and a message
naming what is wrong; tests/cli.rs runs every case. `expected.json` maps each
file to its expected exit code and a substring of the error message.

Run: python3 scripts/gen_corpus.py   (rewrites the corpus deterministically)
"""
import json
import struct
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "tests" / "corpus" / "gguf"

T_U8, T_I8, T_U16, T_I16, T_U32, T_I32, T_F32, T_BOOL, T_STR, T_ARR, T_U64, T_I64, T_F64 = range(13)
F32, F16, Q4_0, Q8_0 = 0, 1, 2, 8


def s(b):
    b = b.encode() if isinstance(b, str) else b
    return struct.pack("<Q", len(b)) + b


def kv(key, t, payload):
    return s(key) + struct.pack("<I", t) + payload


def tinfo(name, dims, ty, offset):
    return s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims) + \
        struct.pack("<IQ", ty, offset)


def gguf(kvs=(), tinfos=(), data=b"", version=3, n_tensors=None, n_kv=None, align=32, pad=True):
    head = b"GGUF" + struct.pack("<IQQ", version, len(tinfos) if n_tensors is None else n_tensors,
                                 len(kvs) if n_kv is None else n_kv)
    body = head + b"".join(kvs) + b"".join(tinfos)
    if pad:
        body += b"\0" * (-len(body) % align)
    return body + data


ARCH = kv("general.architecture", T_STR, s("llama"))
GOOD_T = [tinfo("a", [8, 2], F32, 0), tinfo("b", [32], Q8_0, 64)]
GOOD_DATA = b"\x01" * 64 + b"\x02" * 34 + b"\0" * 30


def good():
    return gguf([ARCH, kv("x.arr", T_ARR, struct.pack("<IQ", T_I32, 2) + struct.pack("<ii", 1, 2))], GOOD_T, GOOD_DATA)


cases = {}


def case(name, data, msg, code=2):
    cases[name] = (data, msg, code)


# The whole file and its sections, truncated.
g = good()
case("empty", b"", "magic")
case("magic_only", b"GGUF", "version")
case("bad_magic", b"GGML" + g[4:], "not a GGUF file")
case("version_1", b"GGUF" + struct.pack("<I", 1) + g[8:], "version 1")
case("version_4", b"GGUF" + struct.pack("<I", 4) + g[8:], "unsupported GGUF version 4")
case("big_endian", b"GGUF" + struct.pack(">I", 3) + g[8:], "big-endian")
case("trunc_counts", g[:12], "tensor_count")
case("trunc_kv_key_len", g[:28], "metadata_kv_count (at byte 24): count 2 cannot fit")
case("trunc_kv_key", g[:40], "metadata_kv_count (at byte 24): count 2 cannot fit")
case("trunc_kv_key_bytes", g[:24 + 8 + 10] + b"\0" * 16, "metadata[1].key")
case("trunc_kv_type", g[:24 + 8 + 20 + 2], "metadata[\"general.architecture\"]")
case("trunc_kv_value", g[:24 + 8 + 20 + 4 + 10], "metadata[\"general.architecture\"]")
arr_start = 24 + len(ARCH) + 8 + 5 + 4
case("trunc_array_header", g[:arr_start + 6], "metadata[\"x.arr\"]")
case("trunc_array_elems", g[:arr_start + 12 + 5], "metadata[\"x.arr\"] (at byte 98): count 2 cannot fit")
ti_start = 24 + len(ARCH) + len(kv("x.arr", T_ARR, struct.pack("<IQ", T_I32, 2) + struct.pack("<ii", 1, 2)))
case("trunc_tensor_name", g[:ti_start + 8], "tensor_count (at byte 106): count 2 cannot fit")
case("trunc_tensor_ndims", g[:ti_start + 9 + 2], "tensor_count (at byte 106): count 2 cannot fit")
case("trunc_tensor_dims", g[:ti_start + 9 + 4 + 12], "tensor_count (at byte 106): count 2 cannot fit")
case("trunc_tensor_type", g[:ti_start + 9 + 4 + 16 + 2], "type")
case("trunc_tensor_offset", g[:ti_start + 9 + 4 + 16 + 4 + 4], "offset")
case("trunc_data", g[:len(g) - len(GOOD_DATA) + 70], "runs past the end of the file")

# Counts and lengths that cannot fit.
case("huge_tensor_count", gguf([ARCH], n_tensors=2**63), "tensor_count")
case("huge_kv_count", gguf([ARCH], n_kv=2**40), "metadata_kv_count")
case("huge_key_len", b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 2**62) + b"\0" * 16, "exceeds the limit")
case("huge_string", gguf([kv("k", T_STR, struct.pack("<Q", 2**60) + b"abc")]), "needs 1152921504606846976 bytes")
case("huge_array", gguf([kv("k", T_ARR, struct.pack("<IQ", T_U64, 2**61))]), "cannot fit")
case("huge_string_array", gguf([kv("k", T_ARR, struct.pack("<IQ", T_STR, 2**40))]), "cannot fit")
nest = struct.pack("<IQ", T_ARR, 1) * 9 + struct.pack("<IQ", T_U8, 0)
case("deep_nesting", gguf([kv("k", T_ARR, nest)]), "nested deeper")

# Bad type ids and values.
case("bad_value_type", gguf([kv("k", 13, b"\0" * 8)]), "unknown value type 13")
case("bad_array_elem_type", gguf([kv("k", T_ARR, struct.pack("<IQ", 99, 1))]), "unknown array element type 99")
case("bad_bool", gguf([kv("k", T_BOOL, b"\x02")]), "bool value must be 0 or 1")
case("empty_key", gguf([kv("", T_U8, b"\0")]), "empty key")
case("key_not_utf8", gguf([kv(b"\xff\xfe", T_U8, b"\0")]), "not valid UTF-8")
case("duplicate_key", gguf([ARCH, ARCH]), "duplicate key 'general.architecture'")
case("alignment_zero", gguf([kv("general.alignment", T_U32, struct.pack("<I", 0))]), "power of two")
case("alignment_not_pow2", gguf([kv("general.alignment", T_U32, struct.pack("<I", 48))]), "power of two")
case("alignment_wrong_type", gguf([kv("general.alignment", T_U64, struct.pack("<Q", 32))]), "UINT32")

# Tensor infos.
case("tensor_name_too_long", gguf([ARCH], [tinfo("x" * 64, [4], F32, 0)], b"\0" * 32), "limit is 63")
case("tensor_name_not_utf8", gguf([ARCH], [tinfo(b"\xc3\x28", [4], F32, 0)], b"\0" * 32), "not valid UTF-8")
case("duplicate_tensor", gguf([ARCH], [tinfo("a", [4], F32, 0), tinfo("a", [4], F32, 32)], b"\0" * 64),
     "duplicate tensor name 'a'")
case("too_many_dims", gguf([ARCH], [tinfo("a", [1, 1, 1, 1, 1], F32, 0)], b"\0" * 32), "at most 4 allowed")
case("dim_out_of_range", gguf([ARCH], [tinfo("a", [2**63], F32, 0)], b"\0" * 32), "out of range")
case("dims_overflow", gguf([ARCH], [tinfo("a", [2**40, 2**40], F32, 0)], b"\0" * 32), "overflows")
case("size_overflow", gguf([ARCH], [tinfo("a", [2**62], F32, 0)], b"\0" * 32), "overflows")
case("bad_tensor_type", gguf([ARCH], [tinfo("a", [4], 4, 0)], b"\0" * 32), "unknown tensor type id 4")
case("bad_tensor_type_big", gguf([ARCH], [tinfo("a", [4], 2**31, 0)], b"\0" * 32), "unknown tensor type id")
case("row_not_block_multiple", gguf([ARCH], [tinfo("a", [33, 2], Q4_0, 0)], b"\0" * 64), "not a multiple of the Q4_0 block size")
case("unaligned_offset", gguf([ARCH], [tinfo("a", [4], F32, 0), tinfo("b", [4], F32, 17)], b"\0" * 64),
     "not a multiple of the alignment")
case("offset_out_of_range", gguf([ARCH], [tinfo("a", [4], F32, 2**20)], b"\0" * 32), "runs past the end")
case("offset_wraps", gguf([ARCH], [tinfo("a", [8], F32, 2**64 - 32)], b"\0" * 32), "runs past the end")
case("overlapping_tensors", gguf([ARCH], [tinfo("a", [16], F32, 0), tinfo("b", [16], F32, 32)], b"\0" * 96),
     "overlaps")
case("data_missing", gguf([ARCH], [tinfo("a", [1024], F32, 0)], b"\0" * 32), "file truncated?")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.gguf"):
        old.unlink()
    expected = {}
    for name, (data, msg, code) in sorted(cases.items()):
        (OUT / f"{name}.gguf").write_bytes(data)
        expected[f"{name}.gguf"] = {"exit": code, "message": msg}
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    print(f"{len(cases)} cases written to {OUT}")


if __name__ == "__main__":
    main()
