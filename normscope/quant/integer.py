"""Integer weight schemes simulated in float32: optimum-quanto's int8/int4/int2 and GPTQ-style RTN.

- `int8` (quanto qint8): symmetric absmax per output channel: s = max|w_row|/127, q = round(w/s) in
  [-128, 127]. ref: optimum/quanto AbsmaxOptimizer, quantize_symmetric.
- `int4`, `int2` (quanto qint4/qint2): affine per group along the input dimension, group 128
  shrinking by 32 until it divides the row (no group when the row is ≤ 128 or nothing divides):
  s = (max − min)/(2^b − 1), shift = −min, q = clamp(round((w + shift)/s), 0, 2^b − 1), w' = s·q − shift.
  ref: optimum/quanto nn/qmodule.py (group size rule), MaxOptimizer, quantize_affine, QBitsDequantizer.
- `int{4,8}_sym_g{32,64,128}`, `…_sym_channel`, `…_sym_tensor`: GPTQ's quantizer without the Hessian
  update (round-to-nearest): xmax = max|w| of the group, s = 2·xmax/maxq, zero = (maxq+1)/2,
  q = clamp(round(w/s) + zero, 0, maxq), w' = s·(q − zero). ref: GPTQ quant.py Quantizer (sym=True).

Rounding is half to even (torch.round, np.rint). Scales, shifts and zeros are counted in the bits per
weight: 16 bits per scale or float shift (stored in the weight dtype), 4 bits per packed GPTQ zero.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ..upstream import quanto_group_size
from .base import SimFormat

__all__ = ["quanto_group_size", "QuantoInt8", "QuantoAffine", "QuantoInt4", "QuantoInt2", "SymmetricRTN"]

F = np.float32
SCALE_BITS = 16


def _rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x.reshape(-1, x.shape[-1]) if x.ndim > 1 else x.reshape(1, -1)


def _safe(d: np.ndarray) -> np.ndarray:
    return np.where(d != 0, d, F(1))


class QuantoInt8(SimFormat, name="int8"):
    description = "optimum-quanto qint8: symmetric absmax per output channel"

    @classmethod
    def fake_quantize(cls, x, tensor_absmax=None, imatrix=None):
        rows = _rows(x)
        scale = np.abs(rows).max(axis=1, keepdims=True) / F(127)
        q = np.clip(np.rint(rows / _safe(scale)), -128, 127)
        return (scale * q.astype(F)).reshape(np.shape(x))

    @classmethod
    def bits_per_weight(cls, shape):
        return 8 + SCALE_BITS / (shape[-1] if shape else 1)


class QuantoAffine(SimFormat):
    bits: int = 4

    @classmethod
    def group(cls, row_len: int) -> int:
        return quanto_group_size(row_len) or row_len

    @classmethod
    def group_length(cls, row_len: int) -> int:
        return cls.group(row_len)

    @classmethod
    def fake_quantize(cls, x, tensor_absmax=None, imatrix=None):
        rows = _rows(x)
        g = cls.group(rows.shape[1])
        groups = rows.reshape(-1, g)  # quanto groups along the input dim of each output row
        lo, hi = groups.min(axis=1, keepdims=True), groups.max(axis=1, keepdims=True)
        scale = (hi - lo) / F(2 ** cls.bits - 1)
        shift = -lo
        q = np.clip(np.rint((groups + shift) / _safe(scale)), 0, 2 ** cls.bits - 1)
        q = np.where(scale != 0, q, F(0))  # a constant group: quanto's NaN casts to 0, w' = −shift
        return (scale * q.astype(F) - shift).reshape(np.shape(x))

    @classmethod
    def bits_per_weight(cls, shape):
        return cls.bits + 2 * SCALE_BITS / cls.group(shape[-1] if shape else 1)


class QuantoInt4(QuantoAffine, name="int4"):
    description = "optimum-quanto qint4: affine per group of up to 128 along the input dim"
    bits = 4


class QuantoInt2(QuantoAffine, name="int2"):
    description = "optimum-quanto qint2: affine per group of up to 128 along the input dim"
    bits = 2


class SymmetricRTN(SimFormat):
    bits: int = 4
    group_size: int | None = 128  # None with per_tensor False: one group per output channel
    per_tensor: bool = False

    @classmethod
    def check_shape(cls, shape):
        row = shape[-1] if shape else 1
        if cls.group_size and row % cls.group_size:
            raise ConfigError(f"{cls.name}: rows of {row} values are not whole groups of {cls.group_size}")

    @classmethod
    def group_length(cls, row_len: int) -> int:
        return row_len if cls.per_tensor else (cls.group_size or row_len)

    @classmethod
    def fake_quantize(cls, x, tensor_absmax=None, imatrix=None):
        rows = _rows(x)
        cls.check_shape(rows.shape)
        maxq = 2 ** cls.bits - 1
        if cls.per_tensor:
            groups = rows.reshape(1, -1)
            xmax = np.abs(groups).max(axis=1, keepdims=True) if tensor_absmax is None \
                else np.full((1, 1), tensor_absmax, F)
        else:
            groups = rows.reshape(-1, cls.group_size or rows.shape[1])
            xmax = np.abs(groups).max(axis=1, keepdims=True)
        scale = F(2) * xmax / F(maxq)
        zero = F((maxq + 1) // 2)
        q = np.clip(np.rint(groups / _safe(scale)) + zero, 0, maxq)
        return np.where(scale != 0, scale * (q - zero), F(0)).astype(F).reshape(np.shape(x))

    @classmethod
    def bits_per_weight(cls, shape):
        n = int(np.prod(shape)) if shape else 1
        per_group = n if cls.per_tensor else (cls.group_size or (shape[-1] if shape else 1))
        return cls.bits + (SCALE_BITS + cls.bits) / per_group


def _rtn(bits: int, group: int | None, per_tensor: bool = False) -> None:
    suffix = "tensor" if per_tensor else (f"g{group}" if group else "channel")
    name = f"int{bits}_sym_{suffix}"
    scope = "per tensor" if per_tensor else (f"per group of {group}" if group else "per output channel")
    type(name, (SymmetricRTN,), {"bits": bits, "group_size": group, "per_tensor": per_tensor,
                                 "description": f"GPTQ-style symmetric round-to-nearest, {bits}-bit, {scope}",
                                 "__module__": __name__}, name=name)


for _bits in (4, 8):
    for _group in (32, 64, 128):
        _rtn(_bits, _group)
    _rtn(_bits, None)
    _rtn(_bits, None, per_tensor=True)
