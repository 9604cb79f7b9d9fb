"""What every chunk of a tensor goes through on its way into the statistics: bfloat16 widened exactly, the
compiled kernel's reusable outputs, the shift K of the moments, the top-k indices and the exact count of
values beyond a bound.
"""

from __future__ import annotations

import math
import threading

import numpy as np

__all__ = ["SUB_BLOCK", "SHIFT_RATIO", "as_f32", "top_k_indices", "exact_shift", "count_beyond", "unravel",
           "Scratch", "SCRATCH"]

SUB_BLOCK = 1 << 16  # values per in-cache sub-block (256 KiB of float32)
SHIFT_RATIO = 0.1  # K = mean when |mean| > SHIFT_RATIO · σ of the first chunk


def as_f32(values: np.ndarray) -> np.ndarray:
    """float32 values: float32 as is, bfloat16 widened exactly (its bits are a float32's top half;
    shifting them is several times faster than ml_dtypes' cast, and the same values)."""
    if values.dtype == np.float32:
        return values
    return (values.view(np.uint16).astype(np.uint32) << 16).view(np.float32)


def top_k_indices(values: np.ndarray, k: int) -> np.ndarray:
    """Flat indices of the k largest |values|, largest first, ties broken by lower index."""
    a = np.abs(values.ravel())
    k = min(k, a.size)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    kth = np.partition(a, a.size - k)[a.size - k]
    part = np.flatnonzero(a >= kth)  # every tie at the k-th value, so the lowest indices can win
    order = np.lexsort((part, -a[part]))[:k]
    return part[order]


def exact_shift(flat: np.ndarray) -> float:
    """K for a first chunk: its float64 mean rounded to float32 when |mean| > 0.1 σ, else 0.

    The mean is numpy's float64 mean of the finite values; σ is summed in float64 sub-blocks (no
    chunk-sized float64 temporary).
    """
    mean = float(flat.mean(dtype=np.float64)) if flat.size else 0.0
    finite = flat
    if not math.isfinite(mean):  # a NaN or an Inf in the chunk: only then copy out the finite values
        finite = flat[np.isfinite(flat)]
        mean = float(finite.mean(dtype=np.float64)) if finite.size else 0.0
    if not finite.size:
        return 0.0
    ss = 0.0
    for i in range(0, finite.size, SUB_BLOCK):
        d = finite[i:i + SUB_BLOCK].astype(np.float64) - mean
        ss += float((d * d).sum())  # numpy's pairwise sum: the same on every machine, unlike BLAS
    std = math.sqrt(ss / finite.size)
    # float32, because the shift is applied in float32 and `moments` must add back the same value
    return float(np.float32(mean)) if abs(mean) > SHIFT_RATIO * std else 0.0


def count_beyond(values: np.ndarray, center: float, limit: float) -> int:
    """How many values have |x − center| > limit, decided in float64, a sub-block at a time.

    A float32 comparison against bounds pulled in by a relative 1e-6 first picks a superset of the
    values beyond (NaN never passes it); only those are then tested exactly in float64.
    """
    flat, n = values.reshape(-1), 0
    delta = 1e-6 * (abs(center) + limit)
    with np.errstate(over="ignore"):
        hi, lo = np.float32(center + limit - delta), np.float32(center - limit + delta)
    if not (math.isfinite(hi) and math.isfinite(lo)):  # bounds beyond float32: test every value exactly
        for i in range(0, flat.size, SUB_BLOCK):
            n += int(np.count_nonzero(np.abs(flat[i:i + SUB_BLOCK].astype(np.float64) - center) > limit))
        return n
    for i in range(0, flat.size, SUB_BLOCK):
        x = flat[i:i + SUB_BLOCK]
        near = x[(x > hi) | (x < lo)]
        if near.size:
            n += int(np.count_nonzero(np.abs(near.astype(np.float64) - center) > limit))
    return n


def unravel(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """`np.unravel_index` of one index, in plain ints (a tenth of its cost)."""
    out = []
    for dim in reversed(shape):
        flat, i = divmod(flat, dim) if dim else (flat, 0)
        out.append(i)
    return tuple(reversed(out))


class Scratch(threading.local):
    """The kernel's outputs for chunks of up to `size` values, reused from chunk to chunk and from
    tensor to tensor (one set per thread: fresh arrays for every small tensor cost more in page
    faults than the kernel's work). `_pass` copies out what it keeps before the next call."""

    size = -1  # values the arrays hold room for (per thread; -1: none yet)

    def views(self, n: int) -> tuple[np.ndarray, ...]:
        """(sums, mins, maxs, counts, cand, pos) for a chunk of `n` values."""
        nb = -(-n // SUB_BLOCK)
        if n > self.size:
            self.size = n
            self.sums, self.counts = np.empty((nb, 4)), np.empty(nb, np.int64)
            self.mins, self.maxs = np.empty(nb, np.float32), np.empty(nb, np.float32)
            self.cand, self.pos = np.empty(n, np.float32), np.empty(n, np.int64)  # touched as candidates are written
        return self.sums[:nb], self.mins[:nb], self.maxs[:nb], self.counts[:nb], self.cand, self.pos


SCRATCH = Scratch()
