"""Writes llama.cpp's CPU GELU table (`ggml_table_gelu_f16`, 65536 f16 values
indexed by the bits of an f16 input) as raw little-endian u16, read from the
reference venv's libggml-cpu after `ggml_cpu_init()` fills it. For
tests/arch_forward.rs.

    ggml_gelu_table.py OUT.bin
"""
import ctypes
import pathlib
import sys

import llama_cpp

lib = pathlib.Path(llama_cpp.__file__).parent / "lib"
ctypes.CDLL(str(lib / "libggml-base.so"), mode=ctypes.RTLD_GLOBAL)
cpu = ctypes.CDLL(str(lib / "libggml-cpu.so"), mode=ctypes.RTLD_GLOBAL)
cpu.ggml_cpu_init()
table = (ctypes.c_uint16 * 65536).in_dll(cpu, "ggml_table_gelu_f16")
pathlib.Path(sys.argv[1]).write_bytes(bytes(table))
print(len(table))
