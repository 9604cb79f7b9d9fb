"""Streaming statistics of one tensor, one chunk at a time, in a single pass.

Each chunk is processed in sub-blocks small enough to stay in cache; moments are summed about a
shift K taken from the first chunk (so a large mean cannot cancel the variance away), partial
sums are kept in float64, and the order of every sum depends only on the chunk boundaries, so a
tensor gives the same numbers wherever it is processed.

The outlier count |x - mean| > k·σ needs σ before it is known: values beyond a generous
threshold τ are kept as candidates, and the count is exact whenever τ ≤ k·σ − |mean − K|, which
`finish` checks; otherwise the caller recounts in a second pass (`needs_recount`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..results import TopValue, WeightStats

__all__ = ["WeightAccumulator", "SUB_BLOCK", "top_k_indices", "count_beyond"]

SUB_BLOCK = 1 << 16  # values per in-cache sub-block (256 KiB of float32)
MAX_CANDIDATES = 1 << 22  # outlier candidates kept before τ is raised (16 MiB of float32)


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


def count_beyond(values: np.ndarray, center: float, limit: float) -> int:
    """How many values have |x − center| > limit, in float64, a sub-block at a time."""
    flat, n = values.reshape(-1), 0
    for i in range(0, flat.size, SUB_BLOCK):
        n += int(np.count_nonzero(np.abs(flat[i:i + SUB_BLOCK].astype(np.float64) - center) > limit))
    return n


@dataclass
class WeightAccumulator:
    """Accumulates `WeightStats` of a tensor with `n` values, rows of `row_len`, fed in order."""

    shape: tuple[int, ...]
    top_k: int = 8
    outlier_sigma: float = 6.0
    n: int = 0  # finite values seen
    nan: int = 0
    inf: int = 0
    shift: float | None = None
    sums: np.ndarray = field(default_factory=lambda: np.zeros(4))  # Σd, Σd², Σd³, Σd⁴ with d = x − K
    vmin: float = math.inf
    vmax: float = -math.inf
    top_vals: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    top_idx: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    tau: float = 0.0
    candidates: list[np.ndarray] = field(default_factory=list)
    n_candidates: int = 0

    def update(self, flat_start: int, values: np.ndarray) -> None:
        """Add values (any shape, float32) whose first element has flat index `flat_start`."""
        flat = values.reshape(-1)
        if self.shift is None:
            self._start(flat)
        sq = np.empty(min(SUB_BLOCK, flat.size), np.float32)
        for i in range(0, flat.size, SUB_BLOCK):
            self._sub_block(flat_start + i, flat[i:i + SUB_BLOCK], sq)

    def _start(self, flat: np.ndarray) -> None:
        finite = flat[np.isfinite(flat)]
        mean = float(finite.mean(dtype=np.float64)) if finite.size else 0.0
        std = float(finite.std(dtype=np.float64)) if finite.size else 0.0
        # shifting costs a pass; only worth it when the mean is not small against the spread
        # float32, because the shift is applied in float32 and `moments` must add back the same value
        self.shift = float(np.float32(mean)) if abs(mean) > 0.1 * std else 0.0
        self.tau = 0.5 * self.outlier_sigma * std

    def _sub_block(self, start: int, x: np.ndarray, sq: np.ndarray) -> None:
        d = x - np.float32(self.shift) if self.shift else x
        q = sq[:d.size]
        np.multiply(d, d, out=q)
        s1, s2 = float(d.sum()), float(q.sum())
        if not (math.isfinite(s1) and math.isfinite(s2)):
            self._non_finite(start, x)
            return
        self.sums += (s1, s2, float(np.dot(q, d)), float(np.dot(q, q)))
        self.n += x.size
        lo, hi = float(x.min()), float(x.max())
        self.vmin, self.vmax = min(self.vmin, lo), max(self.vmax, hi)
        if self.top_k and (self.top_vals.size < self.top_k or max(hi, -lo) > abs(float(self.top_vals[-1]))):
            self._top(start, x)
        tau2 = np.float32(self.tau * self.tau)
        if float(q.max()) > tau2:
            self._keep_candidates(x[q > tau2])

    def _non_finite(self, start: int, x: np.ndarray) -> None:
        nan, inf = np.isnan(x), np.isinf(x)
        self.nan += int(nan.sum())
        self.inf += int(inf.sum())
        keep = ~(nan | inf)
        if keep.any():
            # finite values of this sub-block, with their flat indices for the top-k
            idx = np.flatnonzero(keep)
            finite = x[idx]
            d = finite - np.float32(self.shift) if self.shift else finite
            q = d * d
            self.sums += (float(d.sum()), float(q.sum()), float(np.dot(q, d)), float(np.dot(q, q)))
            self.n += finite.size
            self.vmin, self.vmax = min(self.vmin, float(finite.min())), max(self.vmax, float(finite.max()))
            self._merge_top(start + idx, finite)
            tau2 = np.float32(self.tau * self.tau)
            self._keep_candidates(finite[q > tau2])

    def _top(self, start: int, x: np.ndarray) -> None:
        if self.top_vals.size < self.top_k:
            idx = top_k_indices(x, self.top_k)
        else:
            idx = np.flatnonzero(np.abs(x) > abs(float(self.top_vals[-1])))
        self._merge_top(start + idx, x[idx])

    def _merge_top(self, flat_idx: np.ndarray, vals: np.ndarray) -> None:
        all_vals = np.concatenate([self.top_vals, vals.astype(np.float32)])
        all_idx = np.concatenate([self.top_idx, flat_idx.astype(np.int64)])
        order = np.lexsort((all_idx, -np.abs(all_vals)))[:self.top_k]
        self.top_vals, self.top_idx = all_vals[order], all_idx[order]

    def _keep_candidates(self, values: np.ndarray) -> None:
        if not values.size:
            return
        self.candidates.append(values.copy())
        self.n_candidates += values.size
        if self.n_candidates > MAX_CANDIDATES:
            # raise τ so that half the cap survives; exactness is re-checked in finish()
            pool = np.concatenate(self.candidates)
            dist = np.abs(pool - np.float32(self.shift))
            self.tau = float(np.partition(dist, dist.size - MAX_CANDIDATES // 2)[dist.size - MAX_CANDIDATES // 2])
            kept = pool[dist > self.tau]
            self.candidates, self.n_candidates = [kept], kept.size

    # -- results ---------------------------------------------------------------------------------
    def moments(self) -> tuple[float, float, float]:
        """(mean, std, excess kurtosis) of the finite values (population moments)."""
        if self.n == 0:
            return math.nan, math.nan, math.nan
        m1, m2r, m3r, m4r = (self.sums / self.n).tolist()
        var = max(m2r - m1 * m1, 0.0)
        m4 = m4r - 4 * m1 * m3r + 6 * m1 * m1 * m2r - 3 * m1 ** 4
        kurt = m4 / (var * var) - 3.0 if var > 0 else math.nan
        return self.shift + m1, math.sqrt(var), kurt

    def needs_recount(self) -> bool:
        """True when the candidates may miss outliers, so the count needs a second pass."""
        mean, std, _ = self.moments()
        if not math.isfinite(std) or std == 0:
            return False
        return self.tau > self.outlier_sigma * std - abs(mean - self.shift) * (1 + 1e-6)

    def outlier_threshold(self) -> tuple[float, float]:
        mean, std, _ = self.moments()
        return mean, self.outlier_sigma * std

    def finish(self, recount: int | None = None) -> WeightStats:
        """The statistics; `recount` is the second-pass outlier count when `needs_recount()`."""
        mean, std, kurt = self.moments()
        if recount is not None:
            outliers = recount
        elif std > 0 and self.candidates:
            outliers = count_beyond(np.concatenate(self.candidates), mean, self.outlier_sigma * std)
        else:
            outliers = 0
        absmax = max(abs(self.vmin), abs(self.vmax)) if self.n else math.nan
        top = tuple(TopValue(float(v), tuple(int(i) for i in np.unravel_index(int(j), self.shape)))
                    for v, j in zip(self.top_vals, self.top_idx))
        return WeightStats(
            min=self.vmin if self.n else math.nan, max=self.vmax if self.n else math.nan,
            mean=mean, std=std, absmax=absmax,
            absmax_over_std=absmax / std if std > 0 else math.nan,
            excess_kurtosis=kurt, top=top, outlier_sigma=self.outlier_sigma, outlier_count=outliers,
            nan_count=self.nan, inf_count=self.inf)
