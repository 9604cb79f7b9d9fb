"""ggml's K-quants Q2_K, Q3_K, Q4_K, Q5_K, Q6_K: 256-value super-blocks, bit-exact with llama.cpp.

Each `_quantize` follows quantize_row_*_ref in ggml/src/ggml-quants.c: a scale search per
sub-block (kmath.py), 4/6/8-bit quantized sub-block scales under fp16 super-block scales, a final
requantization against the stored scales, then ggml's bit packing.
"""

from __future__ import annotations

import numpy as np

from .base import GGMLFormat
from .halfs import fp16_bits_to_fp32, fp32_to_fp16_bits
from .kmath import GROUP_MAX_EPS, make_q3_quants, make_qkx2_quants, make_qx_quants, nearest_int, seqsum

__all__ = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]

F = np.float32


def _sub_blocks(blocks: np.ndarray, size: int) -> np.ndarray:
    """(nb, 256) -> (size, nb·256/size): one sub-block per column, in block order."""
    return np.ascontiguousarray(blocks.reshape(-1, size).T)


def _per_block(v: np.ndarray, nb: int) -> np.ndarray:
    """(nb·k,) sub-block values -> (nb, k)."""
    return v.reshape(nb, -1)


def _first_max(v: np.ndarray) -> np.ndarray:
    """Largest per row with `if (v > max) max = v` from 0 (so never below 0)."""
    return np.maximum(v.max(axis=1), F(0))


def _half(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bytes (n, 2), the float32 value read back) of fp16 `v`."""
    bits = fp32_to_fp16_bits(v.astype(np.float32))
    return bits.view(np.uint8).reshape(-1, 2), fp16_bits_to_fp32(bits)


def _unhalf(raw: np.ndarray) -> np.ndarray:
    return fp16_bits_to_fp32(np.ascontiguousarray(raw).view(np.uint16).reshape(-1))


def _requantize(x: np.ndarray, d: np.ndarray, dm: np.ndarray | None, lo: int, hi: int, L: np.ndarray) -> np.ndarray:
    """Levels against the stored scales; sub-blocks whose scale reads 0 keep the search's levels.

    x, L: (nb, k, n); d, dm: (nb, k). Affine (dm given): nearest_int((x + dm)/d); else nearest_int(x/d).
    """
    dd = np.where(d != 0, d, F(1))[..., None]
    v = (x + dm[..., None]) / dd if dm is not None else x / dd
    new = np.clip(nearest_int(v), lo, hi)
    return np.where((d != 0)[..., None], new, L)


def _pack_2bit(L: np.ndarray) -> np.ndarray:
    """(nb, 256) 0..3 -> (nb, 64): per 128 values, byte l holds l, l+32, l+64, l+96 in bits 0,2,4,6."""
    q = L.reshape(-1, 2, 4, 32).astype(np.uint8)
    return (q[:, :, 0] | (q[:, :, 1] << 2) | (q[:, :, 2] << 4) | (q[:, :, 3] << 6)).reshape(-1, 64)


def _unpack_2bit(qs: np.ndarray) -> np.ndarray:
    q = qs.reshape(-1, 2, 1, 32)
    return ((q >> np.array([0, 2, 4, 6], np.uint8)[None, None, :, None]) & 3).reshape(-1, 256)


def _pack_scales_k4(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Eight 6-bit scales and mins -> the 12 bytes of ref get_scale_min_k4. ls, lm: (nb, 8)."""
    out = np.zeros((ls.shape[0], 12), dtype=np.uint8)
    out[:, 0:4] = ls[:, :4] | ((ls[:, 4:] >> 4) << 6)
    out[:, 4:8] = lm[:, :4] | ((lm[:, 4:] >> 4) << 6)
    out[:, 8:12] = (ls[:, 4:] & 0xF) | ((lm[:, 4:] & 0xF) << 4)
    return out


def _unpack_scales_k4(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sc = np.concatenate([q[:, 0:4] & 63, (q[:, 8:12] & 0xF) | ((q[:, 0:4] >> 6) << 4)], axis=1)
    mn = np.concatenate([q[:, 4:8] & 63, (q[:, 8:12] >> 4) | ((q[:, 4:8] >> 6) << 4)], axis=1)
    return sc, mn


def _k4_quantize(blocks: np.ndarray, nmax: int, rmin: float, nstep: int):
    """Shared by Q4_K and Q5_K: returns (d bytes, dmin bytes, scales (nb, 12), L (nb, 256))."""
    nb = blocks.shape[0]
    x = _sub_blocks(blocks, 32)  # (32, nb·8)
    av_x = np.sqrt(seqsum(x * x) / F(32))
    weights = av_x + np.abs(x)
    scales, mins, L = make_qkx2_quants(x, weights, nmax, rmin, 0.1, nstep, False)
    scales, mins = _per_block(scales, nb), _per_block(mins, nb)  # (nb, 8)
    max_scale, max_min = _first_max(scales), _first_max(mins)
    inv_scale = np.where(max_scale > 0, F(63) / np.where(max_scale > 0, max_scale, F(1)), F(0))
    inv_min = np.where(max_min > 0, F(63) / np.where(max_min > 0, max_min, F(1)), F(0))
    ls = np.minimum(63, nearest_int(inv_scale[:, None] * scales) & 0xFF).astype(np.uint8)
    lm = np.minimum(63, nearest_int(inv_min[:, None] * mins) & 0xFF).astype(np.uint8)
    d_raw, d = _half(max_scale / F(63))
    m_raw, dmin = _half(max_min / F(63))
    L = L.T.reshape(nb, 8, 32).astype(np.int32)
    L = _requantize(blocks.reshape(nb, 8, 32), d[:, None] * ls.astype(F), dmin[:, None] * lm.astype(F),
                    0, nmax, L)
    return d_raw, m_raw, _pack_scales_k4(ls, lm), L.reshape(nb, 256)


def _k4_dequantize(raw: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """d·sc·q − dmin·m for Q4_K/Q5_K. raw: (nb, ≥16); levels (nb, 256) in value order."""
    d, dmin = _unhalf(raw[:, 0:2]), _unhalf(raw[:, 2:4])
    sc, mn = _unpack_scales_k4(raw[:, 4:16])
    d1 = (d[:, None] * sc.astype(F))[..., None]
    m1 = (dmin[:, None] * mn.astype(F))[..., None]
    return (d1 * levels.reshape(-1, 8, 32).astype(F) - m1).reshape(-1, 256)


def _nibbles_64(L: np.ndarray) -> np.ndarray:
    """(nb, 256) -> (nb, 128): per 64 values, byte l = value l | value l+32 << 4."""
    q = L.reshape(-1, 4, 2, 32).astype(np.uint8)
    return (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(-1, 128)


def _unnibbles_64(qs: np.ndarray) -> np.ndarray:
    q = qs.reshape(-1, 4, 1, 32)
    return np.concatenate([q & 0xF, q >> 4], axis=2).reshape(-1, 256)


class Q4_K(GGMLFormat, name="Q4_K"):
    description = "4-bit affine in 32-value sub-blocks, 6-bit scales and mins under fp16 (4.5 bpw)"

    @classmethod
    def _quantize(cls, blocks):
        # ref: quantize_row_q4_K_ref (make_qkx2_quants(32, 15, …, -1.f, 0.1f, 20, false))
        d, dmin, scales, L = _k4_quantize(blocks, 15, -1.0, 20)
        return np.concatenate([d, dmin, scales, _nibbles_64(L)], axis=1)

    @classmethod
    def _dequantize(cls, raw):
        return _k4_dequantize(raw, _unnibbles_64(raw[:, 16:144]))


class Q5_K(GGMLFormat, name="Q5_K"):
    description = "5-bit affine in 32-value sub-blocks, 6-bit scales and mins under fp16 (5.5 bpw)"

    @classmethod
    def _quantize(cls, blocks):
        # ref: quantize_row_q5_K_ref (make_qkx2_quants(32, 31, …, -0.5f, 0.1f, 15, false))
        d, dmin, scales, L = _k4_quantize(blocks, 31, -0.5, 15)
        high = (L >> 4).reshape(-1, 4, 2, 32).astype(np.uint8)  # bit 2k: values 64k+l, bit 2k+1: 64k+32+l
        shifts = (2 * np.arange(4, dtype=np.uint8))[None, :, None]
        qh = np.bitwise_or.reduce((high[:, :, 0] << shifts) | (high[:, :, 1] << (shifts + 1)), axis=1)
        return np.concatenate([d, dmin, scales, qh.astype(np.uint8), _nibbles_64(L & 0xF)], axis=1)

    @classmethod
    def _dequantize(cls, raw):
        low = _unnibbles_64(raw[:, 48:176]).reshape(-1, 4, 2, 32)
        qh = raw[:, 16:48][:, None, None, :]
        bits = (qh >> (2 * np.arange(4, dtype=np.uint8)[None, :, None, None]
                       + np.arange(2, dtype=np.uint8)[None, None, :, None])) & 1
        return _k4_dequantize(raw, (low | (bits << 4)).reshape(-1, 256))


class Q6_K(GGMLFormat, name="Q6_K"):
    description = "6-bit symmetric in 16-value sub-blocks, 8-bit scales under fp16 (6.5625 bpw)"

    @classmethod
    def _quantize(cls, blocks):
        # ref: quantize_row_q6_K_ref (make_qx_quants(16, 32, …, rmse_type 1))
        nb = blocks.shape[0]
        scales, L = make_qx_quants(_sub_blocks(blocks, 16), 32)
        scales = _per_block(scales, nb)  # (nb, 16)
        L = L.T.reshape(nb, 16, 16)
        idx = np.argmax(np.abs(scales), axis=1)
        max_scale = scales[np.arange(nb), idx]
        zero = np.abs(max_scale) < GROUP_MAX_EPS
        iscale = F(-128) / np.where(zero, F(1), max_scale)
        d_raw, d = _half(F(1) / iscale)
        sc = np.minimum(127, nearest_int(iscale[:, None] * scales)).astype(np.int8)
        L = _requantize(blocks.reshape(nb, 16, 16), d[:, None] * sc.astype(F), None, -32, 31, L - 32) + 32
        L = np.where(zero[:, None, None], 0, L).reshape(nb, 256).astype(np.uint8)
        sc = np.where(zero[:, None], 0, sc).astype(np.int8)
        d_raw = np.where(zero[:, None], 0, d_raw).astype(np.uint8)
        q = L.reshape(nb, 2, 4, 32)  # per 128 values: four runs of 32
        ql = np.concatenate([(q[:, :, 0] & 0xF) | ((q[:, :, 2] & 0xF) << 4),
                             (q[:, :, 1] & 0xF) | ((q[:, :, 3] & 0xF) << 4)], axis=2).reshape(nb, 128)
        qh = ((q[:, :, 0] >> 4) | ((q[:, :, 1] >> 4) << 2) | ((q[:, :, 2] >> 4) << 4)
              | ((q[:, :, 3] >> 4) << 6)).reshape(nb, 64)
        return np.concatenate([ql, qh, sc.view(np.uint8), d_raw], axis=1)

    @classmethod
    def _dequantize(cls, raw):
        nb = raw.shape[0]
        ql = raw[:, 0:128].reshape(nb, 2, 2, 32)
        qh = raw[:, 128:192].reshape(nb, 2, 1, 32)
        low = np.stack([ql[:, :, 0] & 0xF, ql[:, :, 1] & 0xF, ql[:, :, 0] >> 4, ql[:, :, 1] >> 4], axis=2)
        high = (qh >> (2 * np.arange(4, dtype=np.uint8))[None, None, :, None]) & 3
        q = (low | (high << 4)).astype(np.int16).reshape(nb, 16, 16) - 32
        sc = raw[:, 192:208].view(np.int8).astype(F)
        d = _unhalf(raw[:, 208:210])
        return ((d[:, None] * sc)[..., None] * q.astype(F)).reshape(nb, 256)


class Q3_K(GGMLFormat, name="Q3_K"):
    description = "3-bit symmetric in 16-value sub-blocks, 6-bit scales under fp16 (3.4375 bpw)"

    @classmethod
    def _quantize(cls, blocks):
        # ref: quantize_row_q3_K_ref (make_q3_quants(16, 4, …, true))
        nb = blocks.shape[0]
        scales, L = make_q3_quants(_sub_blocks(blocks, 16), 4)
        scales = _per_block(scales, nb)
        L = L.T.reshape(nb, 16, 16)
        idx = np.argmax(np.abs(scales), axis=1)
        max_scale = scales[np.arange(nb), idx]
        has = max_scale != 0
        iscale = F(-32) / np.where(has, max_scale, F(1))
        l6 = (np.clip(nearest_int(iscale[:, None] * scales).astype(np.int8), -32, 31) + 32).astype(np.uint8)
        l6 = np.where(has[:, None], l6, 0).astype(np.uint8)
        packed = np.zeros((nb, 12), dtype=np.uint8)
        packed[:, 0:8] = (l6[:, 0:8] & 0xF) | ((l6[:, 8:16] & 0xF) << 4)
        high = (l6 >> 4).reshape(nb, 4, 4)  # [j // 4, j % 4]
        packed[:, 8:12] = high[:, 0] | (high[:, 1] << 2) | (high[:, 2] << 4) | (high[:, 3] << 6)
        d_raw, d = _half(np.where(has, F(1) / iscale, F(0)))
        sc = l6.astype(np.int32) - 32
        sc = np.where(has[:, None], sc, 0)
        L = _requantize(blocks.reshape(nb, 16, 16), d[:, None] * sc.astype(F), None, -4, 3, L - 4) + 4
        L = L.reshape(nb, 256)
        hmask = np.zeros((nb, 32), dtype=np.uint8)
        top = (L > 3).reshape(nb, 8, 32)  # value j: byte j % 32, bit j // 32
        for bit in range(8):
            hmask |= (top[:, bit].astype(np.uint8) << bit)
        L = np.where(L > 3, L - 4, L)
        return np.concatenate([hmask, _pack_2bit(L), packed, d_raw], axis=1)

    @classmethod
    def _dequantize(cls, raw):
        nb = raw.shape[0]
        hmask, qs, packed = raw[:, 0:32], raw[:, 32:96], raw[:, 96:108]
        low = np.concatenate([packed[:, 0:8] & 0xF, packed[:, 0:8] >> 4], axis=1)  # (nb, 16)
        high = np.stack([(packed[:, 8:12] >> (2 * k)) & 3 for k in range(4)], axis=1).reshape(nb, 16)
        sc = (low | (high << 4)).astype(np.int16) - 32
        top = np.stack([(hmask >> bit) & 1 for bit in range(8)], axis=1).reshape(nb, 256)
        q = _unpack_2bit(qs).astype(np.int16) + 4 * top.astype(np.int16) - 4
        d = _unhalf(raw[:, 108:110])
        return ((d[:, None] * sc.astype(F))[..., None] * q.reshape(nb, 16, 16).astype(F)).reshape(nb, 256)


class Q2_K(GGMLFormat, name="Q2_K"):
    description = "2-bit affine in 16-value sub-blocks, 4-bit scales and mins under fp16 (2.625 bpw)"

    @classmethod
    def _quantize(cls, blocks):
        # ref: quantize_row_q2_K_ref (make_qkx2_quants(16, 3, …, weights |x|, -0.5f, 0.1f, 15, true))
        nb = blocks.shape[0]
        x = _sub_blocks(blocks, 16)
        scales, mins, L = make_qkx2_quants(x, np.abs(x), 3, -0.5, 0.1, 15, True)
        scales, mins = _per_block(scales, nb), _per_block(mins, nb)
        max_scale, max_min = _first_max(scales), _first_max(mins)
        q4 = F(15)
        has_s, has_m = max_scale > 0, max_min > 0
        ls = np.where(has_s[:, None], nearest_int((q4 / np.where(has_s, max_scale, F(1)))[:, None] * scales), 0)
        lm = np.where(has_m[:, None], nearest_int((q4 / np.where(has_m, max_min, F(1)))[:, None] * mins), 0)
        packed = ((ls & 0xFF) | ((lm << 4) & 0xFF)).astype(np.uint8)
        d_raw, d = _half(np.where(has_s, max_scale / q4, F(0)))
        m_raw, dmin = _half(np.where(has_m, max_min / q4, F(0)))
        L = L.T.reshape(nb, 16, 16).astype(np.int32)
        L = _requantize(blocks.reshape(nb, 16, 16), d[:, None] * (packed & 0xF).astype(F),
                        dmin[:, None] * (packed >> 4).astype(F), 0, 3, L)
        return np.concatenate([packed, _pack_2bit(L.reshape(nb, 256)), d_raw, m_raw], axis=1)

    @classmethod
    def _dequantize(cls, raw):
        nb = raw.shape[0]
        packed, q = raw[:, 0:16], _unpack_2bit(raw[:, 16:80]).reshape(nb, 16, 16).astype(F)
        d, dmin = _unhalf(raw[:, 80:82]), _unhalf(raw[:, 82:84])
        dl = (d[:, None] * (packed & 0xF).astype(F))[..., None]
        ml = (dmin[:, None] * (packed >> 4).astype(F))[..., None]
        return (dl * q - ml).reshape(nb, 256)
