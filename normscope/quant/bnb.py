"""bitsandbytes 4-bit: NF4 and FP4 in blocks of 64 (QLoRA's `load_in_4bit`), as `quantize_4bit` makes them.

ref: bitsandbytes 0.50 `functional.quantize_4bit` and its default kernel (backends/default/ops.py), which is what
runs on CPU: the tensor is flattened and cut into blocks of `blocksize` values (across rows when a row is not a
multiple; the last block may be partial); absmax = max |x| of the block; scaled = clamp(x · (1 / absmax), −1, 1)
(a partial last block divides instead); the code index is the count of midpoints between the sorted code values
that lie below `scaled` (torch.bucketize: a value on a midpoint takes the lower code); FP4's sorted positions map
back to its code order (+0 before −0, as a stable sort leaves them). Two codes pack into a byte, the first in
the high nibble. Dequantized: code[q] · absmax in float32. The codes are the published tables (QLoRA's NF4;
bitsandbytes' FP4 E2M1 variant scaled by 1/12); tests/quant/test_bnb.py holds codes, absmax and dequantized
values equal to bitsandbytes' own on real weights.

Not simulated here: double quantization of the absmax (`bnb_4bit_use_double_quant`), whose offset is a float32
mean over the whole tensor in torch's reduction order.
"""

from __future__ import annotations

import numpy as np

from .base import SimFormat

__all__ = ["NF4_CODE", "FP4_CODE", "BNB_BLOCK_SIZES", "bnb_quantize", "bnb_dequantize"]

F = np.float32
# QLoRA's NormalFloat4 (Dettmers et al. 2023), as bitsandbytes stores it (float32)
NF4_CODE = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
], dtype=F)
# bitsandbytes' FP4 (sign, 2 exponent bits, 1 mantissa bit; exponent 0 is 0 or the subnormal 0.0625), / 12
FP4_CODE = (np.array([0, 0.0625, 8, 12, 4, 6, 2, 3, -0.0, -0.0625, -8, -12, -4, -6, -2, -3], dtype=F) / F(12))
CODES = {"nf4": NF4_CODE, "fp4": FP4_CODE}
BNB_BLOCK_SIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)


def _bounds(kind: str) -> tuple[np.ndarray, np.ndarray]:
    code = CODES[kind]
    order = np.argsort(code, kind="stable")
    return ((code[order[:-1]] + code[order[1:]]) / F(2)).astype(F), order


def bnb_quantize(x: np.ndarray, kind: str, blocksize: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(codes: uint8 per value, absmax: float32 per block) of the flattened `x`, as bitsandbytes computes them."""
    flat = np.asarray(x, dtype=F).reshape(-1)
    n = flat.size
    full = n - n % blocksize
    blocks = flat[:full].reshape(-1, blocksize)
    absmax = np.abs(blocks).max(axis=1) if blocks.size else np.zeros(0, F)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        inv = F(1.0) / np.maximum(absmax, F(1e-38))
        scaled = np.clip(blocks * inv[:, None], F(-1), F(1)).reshape(-1)
        if n > full:
            am = np.maximum(np.abs(flat[full:]).max(), F(1e-38))
            absmax = np.append(absmax, F(am))
            scaled = np.concatenate([scaled, np.clip(flat[full:] / am, F(-1), F(1))])
    bounds, order = _bounds(kind)
    q = np.searchsorted(bounds, scaled, side="left")
    return order[q].astype(np.uint8), absmax.astype(F)


def bnb_dequantize(codes: np.ndarray, absmax: np.ndarray, kind: str, blocksize: int = 64) -> np.ndarray:
    """float32 values of `codes` (one per value, flattened) and their blocks' absmax."""
    values = CODES[kind][np.asarray(codes, dtype=np.intp)]
    scale = np.repeat(np.asarray(absmax, dtype=F), blocksize)[:values.size]
    return (values * scale).astype(F)


class _BnB4(SimFormat):
    kind = "nf4"
    blocksize = 64

    @classmethod
    def fake_quantize(cls, x, tensor_absmax=None, imatrix=None):
        x = np.asarray(x, dtype=F)
        codes, absmax = bnb_quantize(x, cls.kind, cls.blocksize)
        return bnb_dequantize(codes, absmax, cls.kind, cls.blocksize).reshape(x.shape)

    @classmethod
    def group_length(cls, row_len: int) -> int:
        return cls.blocksize

    @classmethod
    def bits_per_weight(cls, shape):
        n = max(1, int(np.prod(shape)))
        return 4 + 32 * -(-n // cls.blocksize) / n


def _register() -> None:
    label = {"nf4": "NormalFloat4 (QLoRA)", "fp4": "FP4"}
    for kind in ("nf4", "fp4"):
        for bs in (64, 32, 128, 256):
            name = kind if bs == 64 else f"{kind}_g{bs}"
            type(f"BnB_{name}", (_BnB4,), {
                "kind": kind, "blocksize": bs,
                # whole blocks per chunk: a chunk of `bs` rows holds a multiple of `bs` values for any row length
                "row_multiple": bs,
                "description": f"bitsandbytes {label[kind]}: 4-bit codes in blocks of {bs} values of the flattened "
                               "tensor, one float32 absmax each (quantize_4bit, no double quantization)",
            }, name=name)


_register()
