"""NVFP4 as compressed-tensors / llm-compressor make it: FP4 E2M1 values in groups of 16 along a row, one FP8 E4M3
scale per group, one float32 global scale per tensor.

ref: compressed-tensors 0.20 `generate_gparam`, `calculate_qparams` (strategy tensor_group, scale_dtype
float8_e4m3fn) and `fake_quantize` (`_quantize_dequantize`), on float32 weights:
global = 2688 · (1 / amax)  (448 · 6; torch computes `scalar / t` as `t.reciprocal() · scalar`),
s = fp8(global · max|group| / 6) (clamped to ±448; a zero scale becomes fp8's eps), scale = s / global,
q = E2M1(clamp(x / scale, ±6)) with compressed-tensors' thresholds (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5: a value on
0.25, 1.25, 2.5 or 5 takes the level below, on 0.75, 1.75 or 3.5 the level above), weight = q · scale.

Not simulated: llm-compressor gives q/k/v (and gate/up) one shared global scale, the smallest of theirs; on a
bf16 model it computes the global scale and max/6 in bf16. ggml's own NVFP4 (`NVFP4`, a llama.cpp type) is a
different format: E2M1 in blocks of 16 with a UE4M3 scale per block and no global scale.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from ..errors import ConfigError
from .base import SimFormat

__all__ = ["NVFP4CT", "GROUP"]

F = np.float32
GROUP = 16
E4M3_EPS = F(np.finfo(ml_dtypes.float8_e4m3fn).eps)
# compressed-tensors' cast_to_fp4: |x| in (lo, hi] or [lo, hi) -> level
_LEVELS = (F(0.0), F(0.5), F(1.0), F(1.5), F(2.0), F(3.0), F(4.0))


def _e2m1(v: np.ndarray) -> np.ndarray:
    a = np.abs(v)
    levels = np.select([a <= 0.25, a < 0.75, a <= 1.25, a < 1.75, a <= 2.5, a < 3.5, a <= 5.0], _LEVELS, F(6.0))
    return (levels.astype(F) * np.sign(v)).astype(F)


def global_scale(amax: float) -> np.float32:
    """compressed-tensors' generate_gparam for a tensor whose max |x| is `amax` (1 where it is not finite)."""
    amax = np.maximum(F(amax), np.finfo(F).tiny)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        g = F(448.0 * 6.0) * (F(1) / amax)
    return g if np.isfinite(g) else F(1)


class NVFP4CT(SimFormat, name="nvfp4_ct"):
    description = ("NVFP4 as compressed-tensors / llm-compressor store it: FP4 E2M1 in groups of 16, an FP8 E4M3 "
                   "scale per group and a float32 global scale per tensor")
    per_tensor = True

    @classmethod
    def check_shape(cls, shape):
        if not shape or shape[-1] % GROUP:
            raise ConfigError(f"{cls.name} quantizes rows in groups of {GROUP} values; a row of "
                              f"{shape[-1] if shape else 1} is not a multiple (compressed-tensors refuses it)")

    @classmethod
    def fake_quantize(cls, x, tensor_absmax=None, imatrix=None):
        x = np.asarray(x, dtype=F)
        cls.check_shape(x.shape)
        amax = np.abs(x).max(initial=F(0)) if tensor_absmax is None else F(tensor_absmax)
        g = global_scale(amax)
        groups = x.reshape(-1, x.shape[-1] // GROUP, GROUP)
        gmax = np.abs(groups).max(axis=-1)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            s = np.clip(g * (gmax / F(6)), F(-448), F(448)).astype(ml_dtypes.float8_e4m3fn).astype(F)
            s = np.where(s == 0, E4M3_EPS, s)
            scale = (s / g)[..., None]
            q = _e2m1(np.clip(groups / scale, F(-6), F(6)))
        return (q * scale).astype(F).reshape(x.shape)

    @classmethod
    def group_length(cls, row_len: int) -> int:
        return GROUP

    @classmethod
    def bits_per_weight(cls, shape):
        return 4 + 8 / GROUP + 32 / max(1, int(np.prod(shape)))
