"""Norm statistics: the stored weight and the gain it means in its module's convention."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np

from ...arch import effective_gain
from ...results import NormConvention, NormStats, TopValue
from .chunks import top_k_indices
from .quantiles import ExactQuantiles

__all__ = ["norm_stats", "stream_norm_stats", "percentiles"]


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


def stream_norm_stats(chunks: Callable[[], Iterable[tuple[int, np.ndarray]]], convention: NormConvention,
                      top_k: int = 8) -> NormStats:
    """`norm_stats` of a norm too long to hold whole (an unusual or hostile checkpoint's "norm" of 2^28
    values), in memory bounded by a chunk: `chunks()` yields (flat start, stored values) in order, and is
    called once for the statistics, once more for the |gain| percentiles (whose rank needs the count of
    finite values), and a third time only when the first estimate of their bins missed.

    Counts, extremes, negative gains and the top-k channels are exact; the mean and standard deviation are
    float64 sums over the chunks in order (numpy's pairwise sum of the whole array may differ in the last
    bits); the percentiles are exact order statistics of |gain| rounded to float32 (a norm read whole takes
    |gain| in float64).
    """
    acc = _NormSums(convention, top_k)
    for start, values in chunks():
        acc.update(start, values)
    if not acc.n:
        return acc.finish({99.0: math.nan, 99.9: math.nan})
    q = ExactQuantiles(acc.n, (99.0, 99.9))
    for _ in range(2):
        for _, values in chunks():
            v = values.astype(np.float64).ravel()
            q.update(np.abs(effective_gain(v[np.isfinite(v)], convention)).astype(np.float32))
        if not q.missing():
            break
        q.refine()
    return acc.finish(q.result())


class _NormSums:
    """What one pass over a norm's chunks gathers for `stream_norm_stats`."""

    def __init__(self, convention: NormConvention, top_k: int):
        self.convention, self.top_k = convention, top_k
        self.n = self.nan = self.inf = self.negative = 0
        self.lo = self.hi = self.glo = self.ghi = math.nan
        self.sums = np.zeros(3)  # Σ(stored − shift), Σ(stored − shift)², Σ gain, in float64
        self.shift = 0.0
        self.top_vals = np.zeros(0)
        self.top_idx = np.zeros(0, np.int64)

    def update(self, start: int, stored: np.ndarray) -> None:
        values = stored.astype(np.float64).ravel()
        finite_mask = np.isfinite(values)
        self.nan += int(np.isnan(values).sum())
        self.inf += int(np.isinf(values).sum())
        finite = values[finite_mask]
        if not finite.size:
            return
        if not self.n:
            self.shift = float(finite[0])  # moments about a value of the data: no cancellation
        gain = effective_gain(finite, self.convention)
        d = finite - self.shift
        self.sums += (float(d.sum()), float((d * d).sum()), float(gain.sum()))
        self.n += finite.size
        self.lo, self.hi = _fmin(self.lo, finite.min()), _fmax(self.hi, finite.max())
        self.glo, self.ghi = _fmin(self.glo, gain.min()), _fmax(self.ghi, gain.max())
        self.negative += int((gain < 0).sum())
        best = top_k_indices(gain, self.top_k)
        vals = np.concatenate([self.top_vals, gain[best]])
        where = np.concatenate([self.top_idx, np.flatnonzero(finite_mask)[best] + start])
        order = np.lexsort((where, -np.abs(vals)))[:self.top_k]  # largest |gain| first, ties to the lower index
        self.top_vals, self.top_idx = vals[order], where[order]

    def finish(self, pct: dict[float, float]) -> NormStats:
        nan_ = math.nan
        if not self.n:
            return NormStats(self.convention, nan_, nan_, nan_, nan_, nan_, nan_, nan_, nan_, nan_, nan_, (), 0,
                             self.nan, self.inf)
        s1, s2, sg = self.sums.tolist()
        mean_d = s1 / self.n
        return NormStats(
            convention=self.convention, stored_min=self.lo, stored_max=self.hi, stored_mean=self.shift + mean_d,
            stored_std=math.sqrt(max(s2 / self.n - mean_d * mean_d, 0.0)), gain_min=self.glo, gain_max=self.ghi,
            gain_mean=sg / self.n, max_abs_gain=max(abs(self.glo), abs(self.ghi)), gain_p99=pct[99.0],
            gain_p999=pct[99.9],
            top_channels=tuple(TopValue(float(v), (int(i),)) for v, i in zip(self.top_vals, self.top_idx)),
            negative_gain_count=self.negative, nan_count=self.nan, inf_count=self.inf)


def _fmin(a: float, b: float) -> float:
    return float(b) if math.isnan(a) else min(a, float(b))


def _fmax(a: float, b: float) -> float:
    return float(b) if math.isnan(a) else max(a, float(b))
