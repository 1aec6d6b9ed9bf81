"""A numpy-backed stand-in for the parts of torch that convert_hf_to_gguf.py uses (see README.md)."""
from __future__ import annotations

import builtins
import contextlib

import numpy as np


class dtype:
    def __init__(self, name, np_dtype, itemsize):
        self.name = name
        self.np = np_dtype
        self.itemsize = itemsize

    def __repr__(self):
        return f"torch.{self.name}"


float64 = dtype("float64", np.float64, 8)
float32 = dtype("float32", np.float32, 4)
float16 = dtype("float16", np.float16, 2)
bfloat16 = dtype("bfloat16", np.uint16, 2)
int64 = dtype("int64", np.int64, 8)
int32 = dtype("int32", np.int32, 4)
int16 = dtype("int16", np.int16, 2)
int8 = dtype("int8", np.int8, 1)
uint8 = dtype("uint8", np.uint8, 1)
bool = dtype("bool", np.bool_, 1)  # noqa: A001
float8_e4m3fn = dtype("float8_e4m3fn", np.uint8, 1)
float8_e5m2 = dtype("float8_e5m2", np.uint8, 1)

_FROM_NP = {np.dtype(d.np): d for d in (float64, float32, float16, int64, int32, int16, int8, uint8, bool)}


def _bf16_to_f32(a):
    return (a.astype(np.uint32) << 16).view(np.float32)


def _f32_to_bf16(a):
    u = a.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


class Tensor:
    def __init__(self, a, dt=None):
        a = np.asarray(a)
        self._a = a
        self.dtype = dt if dt is not None else _FROM_NP[a.dtype]

    @property
    def shape(self):
        return tuple(self._a.shape)

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    def dim(self):
        return self._a.ndim

    def numel(self):
        return int(self._a.size)

    def view(self, dt):
        return Tensor(self._a.view(dt.np), dt)

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return Tensor(self._a.reshape(shape), self.dtype)

    def swapaxes(self, a, b):
        return Tensor(np.swapaxes(self._a, a, b), self.dtype)

    transpose = swapaxes

    def contiguous(self):
        return Tensor(np.ascontiguousarray(self._a), self.dtype)

    def _f32(self):
        return _bf16_to_f32(self._a) if self.dtype is bfloat16 else self._a

    def to(self, dt, *args, **kwargs):
        if not isinstance(dt, dtype):
            return self
        if dt is bfloat16:
            return Tensor(_f32_to_bf16(self._f32()), bfloat16)
        return Tensor(self._f32().astype(dt.np), dt)

    def float(self):
        return self.to(float32)

    def numpy(self):
        if self.dtype is bfloat16:
            raise TypeError("Got unsupported ScalarType BFloat16")
        return self._a

    def item(self):
        return self._f32().item()

    def __float__(self):
        return float(self._f32())

    def __bool__(self):
        return builtins.bool(self._a)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        for x in self._a:
            yield Tensor(np.asarray(x), self.dtype)

    def __getitem__(self, i):
        return Tensor(np.asarray(self._a[i]), self.dtype)

    def _bin(self, other, op, rev=False):
        a = self._f32()
        b = other._f32() if isinstance(other, Tensor) else other
        r = op(b, a) if rev else op(a, b)
        return Tensor(np.asarray(r))

    __add__ = lambda s, o: s._bin(o, np.add)
    __radd__ = lambda s, o: s._bin(o, np.add, True)
    __sub__ = lambda s, o: s._bin(o, np.subtract)
    __rsub__ = lambda s, o: s._bin(o, np.subtract, True)
    __mul__ = lambda s, o: s._bin(o, np.multiply)
    __rmul__ = lambda s, o: s._bin(o, np.multiply, True)
    __truediv__ = lambda s, o: s._bin(o, np.divide)
    __rtruediv__ = lambda s, o: s._bin(o, np.divide, True)
    __pow__ = lambda s, o: s._bin(o, np.power)
    __rpow__ = lambda s, o: s._bin(o, np.power, True)
    __lt__ = lambda s, o: s._bin(o, np.less)
    __le__ = lambda s, o: s._bin(o, np.less_equal)
    __gt__ = lambda s, o: s._bin(o, np.greater)
    __ge__ = lambda s, o: s._bin(o, np.greater_equal)
    __neg__ = lambda s: Tensor(-s._f32())


def from_numpy(a):
    return Tensor(a)


def arange(start, end=None, step=1, dtype=None, **kwargs):
    if end is None:
        start, end = 0, start
    return Tensor(np.arange(start, end, step, dtype=(dtype or int64).np))


def tensor(data, dtype=None, **kwargs):
    vals = [float(x) if isinstance(x, Tensor) else x for x in data] if isinstance(data, list) else data
    dt = dtype or float32
    return Tensor(np.array(vals, dtype=dt.np), dt)


def empty(*args, **kwargs):
    raise NotImplementedError("torch stub: lazy mode is not supported, run with --no-lazy")


def inference_mode():
    return contextlib.nullcontext()


def stack(tensors, dim=0):
    return Tensor(np.stack([t._a for t in tensors], axis=dim), tensors[0].dtype)


def cat(tensors, dim=0):
    return Tensor(np.concatenate([t._a for t in tensors], axis=dim), tensors[0].dtype)
