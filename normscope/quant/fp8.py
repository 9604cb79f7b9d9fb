"""FP8 E4M3 weights (DeepSeek-V3 style), through ml_dtypes' float8_e4m3fn.

scale = amax/448 (448 is E4M3's largest finite value), q = fp8(w/scale), w' = fp32(q)·scale; the
checkpoint stores `weight_scale_inv` = scale. `fp8` uses one scale per tensor, `fp8_block` one per
128×128 tile (rows and columns; edge tiles are partial).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from .base import SimFormat

__all__ = ["FP8Tensor", "FP8Block", "E4M3_MAX", "BLOCK"]

F = np.float32
E4M3_MAX = F(448.0)
BLOCK = 128


def _cast(x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    safe = np.where(scale != 0, scale, F(1))
    q = (x / safe).astype(ml_dtypes.float8_e4m3fn)
    return np.where(scale != 0, q.astype(F) * scale, F(0)).astype(F)


class FP8Tensor(SimFormat, name="fp8"):
    description = "FP8 E4M3, one float32 scale per tensor"
    per_tensor = True

    @classmethod
    def fake_quantize(cls, x, tensor_absmax=None, imatrix=None):
        x = np.asarray(x, dtype=F)
        amax = np.abs(x).max() if tensor_absmax is None else F(tensor_absmax)
        return _cast(x, amax / E4M3_MAX)

    @classmethod
    def bits_per_weight(cls, shape):
        return 8 + 32 / max(1, int(np.prod(shape)))


class FP8Block(SimFormat, name="fp8_block"):
    description = "FP8 E4M3, one float32 scale per 128×128 tile (DeepSeek-V3 weight_scale_inv)"
    row_multiple = BLOCK  # callers must hand over whole 128-row tiles

    @classmethod
    def group_length(cls, row_len: int) -> int:
        return min(BLOCK, row_len)

    @classmethod
    def fake_quantize(cls, x, tensor_absmax=None, imatrix=None):
        x = np.asarray(x, dtype=F)
        rows = x.reshape(-1, x.shape[-1]) if x.ndim > 1 else x.reshape(1, -1)
        r, c = rows.shape
        pr, pc = -r % BLOCK, -c % BLOCK
        padded = np.pad(rows, ((0, pr), (0, pc)))  # zeros never raise a tile's amax
        tiles = padded.reshape((r + pr) // BLOCK, BLOCK, (c + pc) // BLOCK, BLOCK)
        scale = np.abs(tiles).max(axis=(1, 3), keepdims=True) / E4M3_MAX
        out = _cast(tiles, scale).reshape(r + pr, c + pc)[:r, :c]
        return out.reshape(x.shape)

    @classmethod
    def bits_per_weight(cls, shape):
        r = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
        c = shape[-1] if shape else 1
        tiles = -(-r // BLOCK) * -(-c // BLOCK)
        return 8 + 32 * tiles / max(1, r * c)
