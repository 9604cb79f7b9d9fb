"""ggml's float16 and bfloat16 conversions, bit for bit, vectorized.

ref: ggml/src/ggml-impl.h ggml_compute_fp32_to_fp16 / ggml_compute_fp16_to_fp32 /
ggml_compute_fp32_to_bf16. Round to nearest even; NaN becomes a quiet NaN with the sign kept.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fp32_to_fp16_bits", "fp16_bits_to_fp32", "fp32_to_bf16_bits", "bf16_bits_to_fp32", "round_fp16"]


def fp32_to_fp16_bits(x: np.ndarray) -> np.ndarray:
    """uint16 bits of ggml's fp16 of float32 `x` (numpy's cast agrees except for NaN payloads)."""
    x = np.asarray(x, dtype=np.float32)
    bits = x.astype(np.float16).view(np.uint16)
    nan = np.isnan(x)
    if nan.any():  # ggml writes 0x7E00 with the sign of the input for every NaN
        sign = (x.view(np.uint32) >> 16).astype(np.uint16) & np.uint16(0x8000)
        bits = np.where(nan, sign | np.uint16(0x7E00), bits)
    return bits


def fp16_bits_to_fp32(bits: np.ndarray) -> np.ndarray:
    return np.asarray(bits, dtype=np.uint16).view(np.float16).astype(np.float32)


def round_fp16(x: np.ndarray) -> np.ndarray:
    """float32 -> fp16 -> float32, as ggml stores a block scale and reads it back."""
    return fp16_bits_to_fp32(fp32_to_fp16_bits(x))


def fp32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    u = np.asarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((u + (np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1)))) >> 16).astype(np.uint16)
    nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    return np.where(nan, ((u >> 16) | np.uint32(64)).astype(np.uint16), rounded)


def bf16_bits_to_fp32(bits: np.ndarray) -> np.ndarray:
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
