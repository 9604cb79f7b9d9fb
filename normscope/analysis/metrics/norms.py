"""Norm statistics: the stored weight and the gain it means in its module's convention."""

from __future__ import annotations

import math

import numpy as np

from ...arch import effective_gain
from ...results import NormConvention, NormStats, TopValue
from .stats import top_k_indices

__all__ = ["norm_stats", "percentiles"]


def percentiles(values: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """numpy's default (linear) percentiles of a non-empty float64 array without NaN, bit for bit:
    the same virtual index (n − 1)·q/100 and the same two-sided interpolation as `np.percentile`,
    without its per-call overhead (which outweighed the work on a norm of a few thousand values).

    Example:
        >>> percentiles(np.array([1.0, 2.0, 4.0]), (50, 75))
        [2.0, 3.0]
    """
    ordered, last = np.sort(values), values.size - 1
    out = []
    for q in qs:
        v = last * (q / 100)
        if v >= last:
            out.append(float(ordered[-1]))
            continue
        lo = math.floor(v)
        g, a, b = v - lo, float(ordered[lo]), float(ordered[lo + 1])
        out.append(b - (b - a) * (1 - g) if g >= 0.5 else a + (b - a) * g)
    return out


def norm_stats(stored: np.ndarray, convention: NormConvention, top_k: int = 8) -> NormStats:
    """Statistics of a 1-D norm weight, whole in memory (norms are small), in float64.

    Percentiles are of |gain|, with numpy's default linear interpolation.

    Example:
        >>> s = norm_stats(np.array([0.0, 1656.0], np.float32), NormConvention.ONE_PLUS_W)
        >>> s.stored_max, s.gain_max
        (1656.0, 1657.0)
    """
    values = stored.astype(np.float64).ravel()
    nan, inf = int(np.isnan(values).sum()), int(np.isinf(values).sum())
    finite = values[np.isfinite(values)]
    if not finite.size:
        nan_ = math.nan
        return NormStats(convention, nan_, nan_, nan_, nan_, nan_, nan_, nan_, nan_, nan_, nan_, (), 0, nan, inf)
    gain = effective_gain(finite, convention)
    mag = np.abs(gain)
    top = top_k_indices(gain, top_k)
    idx = np.flatnonzero(np.isfinite(values))[top]
    p99, p999 = percentiles(mag, (99, 99.9))
    n = finite.size
    mean = float(finite.sum()) / n  # np.mean and np.std, bit for bit, without their overhead
    dev = finite - mean
    return NormStats(
        convention=convention,
        stored_min=float(finite.min()), stored_max=float(finite.max()),
        stored_mean=mean, stored_std=math.sqrt(float((dev * dev).sum()) / n),
        gain_min=float(gain.min()), gain_max=float(gain.max()), gain_mean=float(gain.mean()),
        max_abs_gain=float(mag.max()),
        gain_p99=p99, gain_p999=p999,
        top_channels=tuple(TopValue(float(gain[t]), (int(i),)) for t, i in zip(top, idx)),
        negative_gain_count=int((gain < 0).sum()),
        nan_count=nan, inf_count=inf,
    )
