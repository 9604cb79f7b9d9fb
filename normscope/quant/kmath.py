"""The scale searches of ggml's K-quants, vectorized across sub-blocks and exact in float32.

Arrays are laid out (n, N): the n values of a sub-block down axis 0, N sub-blocks across. C sums a
sub-block's terms one after the other in float; `seqsum` adds row by row in the same order, so every
rounding matches (numpy's np.sum would sum pairwise and differ in the last bit).

ref: ggml/src/ggml-quants.c nearest_int, make_qkx2_quants, make_qx_quants, make_q3_quants.
"""

from __future__ import annotations

import numpy as np

__all__ = ["seqsum", "nearest_int", "make_qkx2_quants", "make_qx_quants", "make_q3_quants", "GROUP_MAX_EPS"]

F = np.float32
GROUP_MAX_EPS = F(1e-15)


def seqsum(a: np.ndarray) -> np.ndarray:
    """Sum over axis 0 in index order, in float32: `float s = 0; for (i…) s += a[i];`.

    numpy reduces a C-contiguous (n, N) array over axis 0 row by row (pairwise summation applies only
    along the contiguous axis); tests/quant check the bytes against ggml, which would catch a change.
    """
    return np.add.reduce(a, axis=0)


def nearest_int(v: np.ndarray) -> np.ndarray:
    """ggml's nearest_int, bit for bit: add 1.5·2^23 in float32 and read the low mantissa bits.

    Round half to even for |v| < 2^22; for larger, infinite or NaN input it returns what the C code
    returns (the assert is compiled out in release builds), not an arbitrary cast.
    """
    bits = (np.asarray(v, dtype=np.float32) + F(12582912.0)).view(np.int32)
    return (bits & np.int32(0x007FFFFF)) - np.int32(0x00400000)


def _first_absmax(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(amax, the signed value) per column; the first on ties, as `if (ax > amax)`."""
    idx = np.argmax(np.abs(x), axis=0)
    value = x[idx, np.arange(x.shape[1])]
    return np.abs(value), value


def _safe(d: np.ndarray) -> np.ndarray:
    return np.where(d != 0, d, F(1)).astype(np.float32)


def make_qkx2_quants(x: np.ndarray, w: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int,
                     use_mad: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Affine scale/min search with weights (Q2_K, Q4_K, Q5_K). x, w: (n, N) float32.

    Returns:
        (scale (N,), the_min (N,) = -min >= 0, L (n, N) uint8 in 0..nmax)
    """
    fmax = F(nmax)
    mn = np.minimum(x.min(axis=0), F(0))  # `if (min > 0) min = 0`
    mx = x.max(axis=0)
    sum_w, sum_x = seqsum(w), seqsum(w * x)
    flat = mx == mn
    levels, wl, tmp = np.empty_like(x), np.empty_like(x), np.empty_like(x)  # reused in place

    def error(scale, low, lv):
        np.multiply(lv, scale, out=tmp)
        np.add(tmp, low, out=tmp)
        np.subtract(tmp, x, out=tmp)
        np.abs(tmp, out=tmp) if use_mad else np.multiply(tmp, tmp, out=tmp)
        return seqsum(np.multiply(tmp, w, out=tmp))

    def quantize(iscale, out):
        np.multiply(xm, iscale, out=out)
        np.add(out, F(12582912.0), out=out)  # nearest_int, in place (see nearest_int)
        bits = out.view(np.int32)
        np.bitwise_and(bits, np.int32(0x007FFFFF), out=bits)
        np.subtract(bits, np.int32(0x00400000), out=bits)
        np.clip(bits, 0, nmax, out=bits)
        out[...] = bits
        return out

    xm = x - mn
    span = _safe(mx - mn)
    iscale = fmax / span
    scale = F(1) / iscale
    L = quantize(iscale, np.empty_like(x))
    best = error(scale, mn, L)
    for step in range(nstep + 1):
        # `min` moves when a step wins, and later steps use the new one (as the C loop does)
        La = quantize((F(rmin) + F(rdelta) * F(step) + fmax) / span, levels)
        np.multiply(w, La, out=wl)
        sum_l = seqsum(wl)
        sum_l2 = seqsum(np.multiply(wl, La, out=tmp))
        sum_xl = seqsum(np.multiply(wl, x, out=tmp))
        D = sum_w * sum_l2 - sum_l * sum_l
        Ds = _safe(D)
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / Ds
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / Ds
        positive = this_min > 0
        this_min = np.where(positive, F(0), this_min)
        this_scale = np.where(positive, sum_xl / _safe(sum_l2), this_scale)
        cur = error(this_scale, this_min, La)
        win = np.flatnonzero((D > 0) & (cur < best) & ~flat)
        if win.size:
            L[:, win] = La[:, win]
            best[win], scale[win], mn[win] = cur[win], this_scale[win], this_min[win]
            xm[:, win] = x[:, win] - mn[win]
            span[win] = _safe(mx[win] - mn[win])
    scale = np.where(flat, F(0), scale).astype(np.float32)
    L = np.where(flat, F(0), L)
    return scale, (-mn).astype(np.float32), L.astype(np.uint8)


def make_qx_quants(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric scale search weighted by x² (rmse_type 1, no importance matrix; Q6_K). x: (n, N).

    Returns:
        (scale (N,), L (n, N) int in 0..2·nmax-1)
    """
    fmax = F(nmax)
    amax, peak = _first_absmax(x)
    zero = amax < GROUP_MAX_EPS
    peak = _safe(peak)
    w = x * x
    wx = w * x

    def levels(iscale):
        return np.clip(nearest_int(iscale * x), -nmax, nmax - 1).astype(np.float32)

    l = levels(F(-nmax) / peak)
    L = l + fmax
    sumlx, suml2 = seqsum(wx * l), seqsum((w * l) * l)
    scale = np.where(suml2 != 0, sumlx / _safe(suml2), F(0)).astype(np.float32)
    best = scale * sumlx
    for step in range(-9, 10):
        if step == 0:
            continue
        l = levels(-(fmax + F(0.1) * F(step)) / peak)
        sumlx, suml2 = seqsum(wx * l), seqsum((w * l) * l)
        win = (suml2 > 0) & (sumlx * sumlx > best * suml2)
        L = np.where(win, l + fmax, L)
        scale = np.where(win, sumlx / _safe(suml2), scale)
        best = np.where(win, scale * sumlx, best)
    return np.where(zero, F(0), scale).astype(np.float32), np.where(zero, F(0), L).astype(np.int32)


def make_q3_quants(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric search with coordinate-descent refinement (do_rmse; Q3_K). x: (n, N).

    Returns:
        (scale (N,), L (n, N) int in 0..2·nmax-1)
    """
    amax, peak = _first_absmax(x)
    zero = amax < GROUP_MAX_EPS
    L = np.clip(nearest_int((F(-nmax) / _safe(peak)) * x), -nmax, nmax - 1).astype(np.float32)
    w = x * x
    wx = w * x
    sumlx, suml2 = seqsum(wx * L), seqsum((w * L) * L)
    for _ in range(5):
        # a sub-block that changed nothing stays unchanged in later tries, like C's early break
        for i in range(x.shape[0]):
            li = L[i]
            slx = sumlx - wx[i] * li
            sl2 = suml2 - (w[i] * li) * li
            ok = slx > 0
            new = np.clip(nearest_int((x[i] * sl2) / np.where(ok, slx, F(1))), -nmax, nmax - 1).astype(np.float32)
            slx_n = slx + wx[i] * new
            sl2_n = sl2 + (w[i] * new) * new
            take = ok & (new != li) & (sl2_n > 0) & ((slx_n * slx_n) * suml2 > (sumlx * sumlx) * sl2_n)
            L[i] = np.where(take, new, li)
            sumlx = np.where(take, slx_n, sumlx)
            suml2 = np.where(take, sl2_n, suml2)
    scale = np.where(suml2 > 0, sumlx / _safe(suml2), F(0))
    L = L + F(nmax)
    return np.where(zero, F(0), scale).astype(np.float32), np.where(zero, F(0), L).astype(np.int32)
