"""ggml's float and 32-value block types: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.

Each kernel follows quantize_row_*_ref in ggml/src/ggml-quants.c in float32, so the bytes match
llama.cpp's (the reciprocal scale comes from the unrounded d, the stored d is its fp16).
"""

from __future__ import annotations

import numpy as np

from .base import GGMLFormat
from .halfs import bf16_bits_to_fp32, fp16_bits_to_fp32, fp32_to_bf16_bits, fp32_to_fp16_bits

__all__ = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]

F32_ = np.float32


def _signed_absmax(blocks: np.ndarray) -> np.ndarray:
    """The value of largest |x| per block, first one on ties (`if (amax < fabsf(v))`)."""
    idx = np.argmax(np.abs(blocks), axis=1)
    return blocks[np.arange(blocks.shape[0]), idx]


def _round_half_away(a: np.ndarray) -> np.ndarray:
    """C's roundf for a >= 0, exactly (floor(a + 0.5) would round 0.49999997 up)."""
    whole = np.floor(a)
    return whole + (a - whole >= F32_(0.5))


def _inverse(d: np.ndarray) -> np.ndarray:
    return np.where(d != 0, F32_(1) / np.where(d != 0, d, F32_(1)), F32_(0)).astype(np.float32)


def _half(v: np.ndarray) -> np.ndarray:
    """(n,) float32 -> (n, 2) uint8: little-endian fp16 as ggml stores d and m."""
    return fp32_to_fp16_bits(v).view(np.uint8).reshape(-1, 2)


def _unhalf(raw: np.ndarray) -> np.ndarray:
    """(n, 2) uint8 -> (n, 1) float32."""
    return fp16_bits_to_fp32(np.ascontiguousarray(raw).view(np.uint16))


def _pack_nibbles(q: np.ndarray) -> np.ndarray:
    """(n, 32) 0..15 -> (n, 16): value j in the low nibble, value j + 16 in the high one."""
    return (q[:, :16] | (q[:, 16:] << 4)).astype(np.uint8)


def _unpack_nibbles(qs: np.ndarray) -> np.ndarray:
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1)


def _pack_high_bits(q: np.ndarray) -> np.ndarray:
    """(n, 32) 5-bit values -> (n, 4) bytes of the little-endian uint32 `qh` (bit j = bit 4 of value j)."""
    bits = ((q >> 4) & 1).astype(np.uint32) << np.arange(32, dtype=np.uint32)
    return np.bitwise_or.reduce(bits, axis=1).astype("<u4").view(np.uint8).reshape(-1, 4)


def _unpack_high_bits(qh: np.ndarray) -> np.ndarray:
    word = np.ascontiguousarray(qh).view("<u4")  # (n, 1)
    return ((word >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8)


class F32(GGMLFormat, name="F32"):
    description = "float32, unquantized"

    @classmethod
    def _quantize(cls, blocks):
        return blocks.astype("<f4").view(np.uint8)

    @classmethod
    def _dequantize(cls, raw):
        return raw.view("<f4").astype(np.float32)


class F16(GGMLFormat, name="F16"):
    description = "IEEE half precision"

    @classmethod
    def _quantize(cls, blocks):
        return fp32_to_fp16_bits(blocks).view(np.uint8)

    @classmethod
    def _dequantize(cls, raw):
        return fp16_bits_to_fp32(raw.view(np.uint16))


class BF16(GGMLFormat, name="BF16"):
    description = "bfloat16, round to nearest even"

    @classmethod
    def _quantize(cls, blocks):
        return fp32_to_bf16_bits(blocks).view(np.uint8)

    @classmethod
    def _dequantize(cls, raw):
        return bf16_bits_to_fp32(raw.view(np.uint16))


class Q8_0(GGMLFormat, name="Q8_0"):
    description = "8-bit symmetric, fp16 scale per 32 values"

    @classmethod
    def _quantize(cls, blocks):
        # ref: quantize_row_q8_0_ref: d = amax/127, qs = roundf(x * (1/d)) (half away from zero)
        amax = np.abs(blocks).max(axis=1)
        d = amax / F32_(127)
        x = blocks * _inverse(d)[:, None]
        q = (np.sign(x) * _round_half_away(np.abs(x))).astype(np.int8)
        return np.concatenate([_half(d), q.view(np.uint8)], axis=1)

    @classmethod
    def _dequantize(cls, raw):
        return _unhalf(raw[:, :2]) * raw[:, 2:].view(np.int8).astype(np.float32)


class Q4_0(GGMLFormat, name="Q4_0"):
    description = "4-bit symmetric, fp16 scale per 32 values"

    @classmethod
    def _quantize(cls, blocks):
        # ref: quantize_row_q4_0_ref: d = max / -8; q = MIN(15, (int8_t)(x*id + 8.5f))
        d = _signed_absmax(blocks) / F32_(-8)
        q = np.minimum(15, np.trunc(blocks * _inverse(d)[:, None] + F32_(8.5))).astype(np.uint8)
        return np.concatenate([_half(d), _pack_nibbles(q)], axis=1)

    @classmethod
    def _dequantize(cls, raw):
        q = _unpack_nibbles(raw[:, 2:]).astype(np.int8) - np.int8(8)
        return _unhalf(raw[:, :2]) * q.astype(np.float32)


class Q4_1(GGMLFormat, name="Q4_1"):
    description = "4-bit affine, fp16 scale and minimum per 32 values"

    @classmethod
    def _quantize(cls, blocks):
        # ref: quantize_row_q4_1_ref: d = (max - min)/15; q = MIN(15, (int8_t)((x - min)*id + 0.5f))
        lo, hi = blocks.min(axis=1), blocks.max(axis=1)
        d = (hi - lo) / F32_(15)
        q = np.minimum(15, np.trunc((blocks - lo[:, None]) * _inverse(d)[:, None] + F32_(0.5))).astype(np.uint8)
        return np.concatenate([_half(d), _half(lo), _pack_nibbles(q)], axis=1)

    @classmethod
    def _dequantize(cls, raw):
        q = _unpack_nibbles(raw[:, 4:]).astype(np.float32)
        return _unhalf(raw[:, :2]) * q + _unhalf(raw[:, 2:4])


class Q5_0(GGMLFormat, name="Q5_0"):
    description = "5-bit symmetric, fp16 scale per 32 values"

    @classmethod
    def _quantize(cls, blocks):
        # ref: quantize_row_q5_0_ref: d = max / -16; q = MIN(31, (int8_t)(x*id + 16.5f))
        d = _signed_absmax(blocks) / F32_(-16)
        q = np.minimum(31, np.trunc(blocks * _inverse(d)[:, None] + F32_(16.5))).astype(np.uint8)
        return np.concatenate([_half(d), _pack_high_bits(q), _pack_nibbles(q & 0x0F)], axis=1)

    @classmethod
    def _dequantize(cls, raw):
        q = (_unpack_nibbles(raw[:, 6:]) | (_unpack_high_bits(raw[:, 2:6]) << 4)).astype(np.int8) - np.int8(16)
        return _unhalf(raw[:, :2]) * q.astype(np.float32)


class Q5_1(GGMLFormat, name="Q5_1"):
    description = "5-bit affine, fp16 scale and minimum per 32 values"

    @classmethod
    def _quantize(cls, blocks):
        # ref: quantize_row_q5_1_ref: d = (max - min)/31; q = (uint8_t)((x - min)*id + 0.5f)
        lo, hi = blocks.min(axis=1), blocks.max(axis=1)
        d = (hi - lo) / F32_(31)
        q = np.trunc((blocks - lo[:, None]) * _inverse(d)[:, None] + F32_(0.5)).astype(np.uint8)
        return np.concatenate([_half(d), _half(lo), _pack_high_bits(q), _pack_nibbles(q & 0x0F)], axis=1)

    @classmethod
    def _dequantize(cls, raw):
        q = (_unpack_nibbles(raw[:, 8:]) | (_unpack_high_bits(raw[:, 4:8]) << 4)).astype(np.float32)
        return _unhalf(raw[:, :2]) * q + _unhalf(raw[:, 2:4])
