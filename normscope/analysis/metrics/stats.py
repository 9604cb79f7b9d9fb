"""Streaming statistics of one tensor, one chunk at a time, in a single pass.

Each chunk is processed in sub-blocks small enough to stay in cache; moments are summed about a
shift K taken from the first chunk (so a large mean cannot cancel the variance away), partial
sums are kept in float64, and the order of every sum depends only on the chunk boundaries, so a
tensor gives the same numbers wherever it is processed.

The outlier count |x - mean| > k·σ needs σ before it is known: values beyond a generous
threshold τ are kept as candidates, and the count is exact whenever τ ≤ k·σ − |mean − K|, which
`finish` checks; otherwise the caller recounts in a second pass (`needs_recount`).

Speed: the shift K is decided without an extra pass over the data in the common case. A strided
sample of the first chunk estimates mean and σ (for τ); when the sample says the mean is small,
the first chunk is summed with K = 0 and the decision is confirmed from those sums; only a tensor
whose mean may reach 0.1 σ gets the exact float64 mean of its first chunk (and, when K ≠ 0 after
all, a second pass over that chunk). Each chunk, float32 or bfloat16 as stored, goes through the
compiled kernel (`normscope._kernels`) in one read: per sub-block the float64 sums, min, max and the
outlier candidates with their positions. The top-k comes from the candidates whenever they decide it
(every value that is not a candidate lies below the k-th); otherwise, and in sub-blocks holding a
NaN/Inf, the sub-blocks that may hold a new top value are looked at again in numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..._kernels import block_stats, block_stats_bf16
from ...io.dtypes import numpy_dtype
from ...results import TopValue, WeightStats
from .chunks import (SCRATCH, SHIFT_RATIO, SUB_BLOCK, as_f32, count_beyond, exact_shift, top_k_indices, unravel)  # noqa: F401

__all__ = ["WeightAccumulator", "SUB_BLOCK", "top_k_indices", "count_beyond"]

MAX_CANDIDATES = 1 << 22  # outlier candidates kept before τ is raised (16 MiB of float32)
SAMPLE = 1 << 14  # values of the first chunk sampled (strided) to estimate mean and σ up front
TOP_FILL = 1 << 12  # values whose top-k seeds the running top-k of a tensor
# τ = TAU_FACTOR · k · σ̂ (σ̂ from the sample): values beyond τ are kept as outlier candidates. Higher
# means fewer sub-blocks to sift (at 0.75 · 6σ a Gaussian sub-block rarely has one); the count stays
# exact unless σ̂ overestimates σ by a third (then `needs_recount` asks for a second pass).
TAU_FACTOR = 0.75
BF16 = numpy_dtype("BF16")  # chunks may come as stored bfloat16: the kernel reads them without widening


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
    # when a list: every sub-block's (Σd, Σd², Σd³, Σd⁴), in order, so that `merge` can replay the
    # float64 additions of one accumulator fed every chunk (a tensor split across workers)
    partials: list[tuple[float, float, float, float]] | None = field(default=None, repr=False)

    def update(self, flat_start: int, values: np.ndarray) -> None:
        """Add values (any shape, float32 or bfloat16) whose first element has flat index `flat_start`.

        `values` is only read during the call (a reused buffer is fine). bfloat16 gives the same
        numbers as the same values widened to float32.
        """
        flat = values.reshape(-1)
        if self.shift is not None:
            self._pass(flat_start, flat)
            return
        if self._start(flat):  # K decided exactly from this chunk
            self._pass(flat_start, flat)
            return
        self.shift = 0.0  # provisional: confirm from this chunk's own sums
        self._pass(flat_start, flat)
        mean, std, _ = self.moments()
        if self.n and abs(mean) > SHIFT_RATIO * std * (1 - 1e-3):  # may need K after all
            shift = exact_shift(as_f32(flat))
            if shift:
                self._reset(shift)
                self._pass(flat_start, flat)

    def _start(self, flat: np.ndarray) -> bool:
        """Estimate τ from a sample; decide K now (True) when the sample says it may be needed."""
        sample = as_f32(flat[::max(1, flat.size // SAMPLE)]).astype(np.float64)
        total = float(sample.sum())
        if not math.isfinite(total):
            sample = sample[np.isfinite(sample)]
            total = float(sample.sum())
        mean = total / sample.size if sample.size else 0.0
        dev = sample - mean
        std = math.sqrt(float((dev * dev).sum()) / sample.size) if sample.size else 0.0
        self.tau = TAU_FACTOR * self.outlier_sigma * std
        if sample.size and abs(mean) > 0.5 * SHIFT_RATIO * std:
            self.shift = exact_shift(as_f32(flat))
            return True
        return False

    def _reset(self, shift: float) -> None:
        self.shift, self.n, self.nan, self.inf = shift, 0, 0, 0
        self.sums = np.zeros(4)
        self.vmin, self.vmax = math.inf, -math.inf
        self.top_vals, self.top_idx = np.zeros(0, np.float32), np.zeros(0, np.int64)
        self.candidates, self.n_candidates = [], 0
        if self.partials is not None:
            self.partials.clear()

    def _add(self, sums: tuple[float, float, float, float]) -> None:
        self._add_rows(np.array([sums], dtype=np.float64))

    def _pass(self, flat_start: int, flat: np.ndarray) -> None:
        """Every sub-block of one chunk. The compiled kernel reads each value once (float32, or
        bfloat16 without widening): it sums d, d², d³, d⁴ (d = x − K) in float64, finds each
        sub-block's min and max, and copies out the outlier candidates (float32 d² > τ²) with their
        positions; the float64 running sums take the sub-blocks in order. The top-k comes from the
        candidates when they decide it; otherwise, and for sub-blocks with a NaN/Inf, the sub-blocks
        that may hold a new top value are looked at again here."""
        nb = -(-flat.size // SUB_BLOCK)
        sums, mins, maxs, counts, cand, pos = SCRATCH.views(flat.size)
        shift = np.float32(self.shift or 0.0)
        kernel, buf = (block_stats_bf16, flat.view(np.uint16)) if flat.dtype == BF16 else (block_stats, flat)
        total = kernel(buf, shift, self._tau2(), SUB_BLOCK, sums, mins, maxs, cand, pos, counts)
        # a NaN or an Inf makes its sub-block's sums, and so their total, non-finite; finite sums are
        # far below float64's range (|d| < 3.4e38, d⁴ < 1.4e154), so their total cannot overflow
        with np.errstate(invalid="ignore"):  # inf + -inf
            all_finite = math.isfinite(float(sums.sum()))
        finite = True if all_finite else np.isfinite(sums).all(axis=1)
        if all_finite:
            self._add_rows(sums)
            self.n += flat.size
            self.vmin, self.vmax = min(self.vmin, float(mins.min())), max(self.vmax, float(maxs.max()))
            if total:
                self._keep_candidates(cand[:total].copy())
            if not self.top_k or self._top_from_candidates(flat_start, cand[:total], pos[:total]):
                return
        else:
            ends = np.cumsum(counts).tolist()
            for b in range(nb):
                if finite[b]:
                    self._add_rows(sums[b:b + 1])
                    self.n += min(SUB_BLOCK, flat.size - b * SUB_BLOCK)
                    self.vmin, self.vmax = min(self.vmin, float(mins[b])), max(self.vmax, float(maxs[b]))
                    if counts[b]:
                        self._keep_candidates(cand[ends[b] - counts[b]:ends[b]].copy())
                else:
                    self._non_finite(flat_start + b * SUB_BLOCK, as_f32(flat[b * SUB_BLOCK:(b + 1) * SUB_BLOCK]))
        if self.top_k:
            with np.errstate(invalid="ignore"):  # NaN sub-blocks are not looked at here: _non_finite took them
                look = (np.maximum(maxs, -mins) > self._top_floor()) & finite
            for b in np.flatnonzero(look).tolist():
                if max(float(maxs[b]), -float(mins[b])) > self._top_floor():
                    self._top(flat_start + b * SUB_BLOCK, as_f32(flat[b * SUB_BLOCK:(b + 1) * SUB_BLOCK]))

    def _top_from_candidates(self, flat_start: int, cand: np.ndarray, pos: np.ndarray) -> bool:
        """Take this chunk's top-k from its outlier candidates when that is exact, and say so.

        A value that is not a candidate has float32 (x − K)² ≤ τ², so |x| ≤ (|K| + τ)(1 + 1e-5) + 1e-18
        (the margins cover float32 rounding, and squares of |d| < 1e-19 that underflow to zero). When
        the top-k with the candidates merged in is full and its k-th |value| lies beyond that bound, no
        other value of the chunk can enter it (or tie). Once the top-k so far is beyond the bound, only
        the candidates that reach its k-th |value| are looked at.
        """
        bound = (abs(float(np.float32(self.shift or 0.0))) + self.tau) * (1 + 1e-5) + 1e-18
        floor = self._top_floor()
        if floor > bound:
            hits = np.flatnonzero(np.abs(cand) >= floor) if cand.size else ()
            if len(hits):
                self.top_vals, self.top_idx = self._merged_top(flat_start + pos[hits], cand[hits])
            return True
        if not cand.size:
            return False
        best = top_k_indices(cand, self.top_k)
        vals, idx = self._merged_top(flat_start + pos[best], cand[best])
        if vals.size < self.top_k or not abs(float(vals[-1])) > bound:
            return False
        self.top_vals, self.top_idx = vals, idx
        return True

    def _tau2(self) -> np.float32:
        """τ² for the float32 candidate test, at most the largest float32: were it inf, a value whose
        square overflows would not be a candidate, and candidates must hold every |d| > τ."""
        return np.float32(min(self.tau * self.tau, float(np.finfo(np.float32).max)))

    def _top_floor(self) -> float:
        """|k-th largest value| so far: a sub-block can add to the top-k only beyond it (-1 until k are known)."""
        return abs(float(self.top_vals[-1])) if self.top_vals.size >= self.top_k > 0 else -1.0

    def _add_rows(self, rows: np.ndarray) -> None:
        """Add sub-blocks' (Σd, Σd², Σd³, Σd⁴) to the running sums one after another (cumsum is
        sequential: the same float64 additions as `merge`'s replay)."""
        self.sums = np.cumsum(np.vstack([self.sums, rows]), axis=0)[-1]
        if self.partials is not None:
            self.partials.extend(map(tuple, rows.tolist()))

    def _non_finite(self, start: int, x: np.ndarray) -> None:
        nan, inf = np.isnan(x), np.isinf(x)
        self.nan += int(nan.sum())
        self.inf += int(inf.sum())
        keep = ~(nan | inf)
        if keep.any():
            # finite values of this sub-block, with their flat indices for the top-k
            idx = np.flatnonzero(keep)
            finite = x[idx]
            d = finite - np.float32(self.shift) if self.shift else finite  # float32, as in the kernel
            d64 = d.astype(np.float64)
            q = d64 * d64
            self._add((float(d64.sum()), float(q.sum()), float((q * d64).sum()), float((q * q).sum())))
            self.n += finite.size
            self.vmin, self.vmax = min(self.vmin, float(finite.min())), max(self.vmax, float(finite.max()))
            self._merge_top(start + idx, finite)
            with np.errstate(over="ignore"):  # a square beyond float32 is inf: a candidate, as in the kernel
                self._keep_candidates(finite[d * d > self._tau2()])

    def _top(self, start: int, x: np.ndarray) -> None:
        if self.top_vals.size < self.top_k:
            # fill from a prefix (a partition of 64 Ki values costs more than the rest of the
            # sub-block); the rest is then sifted against the k-th value like any later sub-block
            head = max(TOP_FILL, self.top_k)
            idx = top_k_indices(x[:head], self.top_k)
            self._merge_top(start + idx, x[idx])
            if x.size <= head:
                return
            start, x = start + head, x[head:]
            if self.top_vals.size < self.top_k:
                idx = top_k_indices(x, self.top_k)
                self._merge_top(start + idx, x[idx])
                return
        idx = np.flatnonzero(np.abs(x) > abs(float(self.top_vals[-1])))
        self._merge_top(start + idx, x[idx])

    def _merge_top(self, flat_idx: np.ndarray, vals: np.ndarray) -> None:
        self.top_vals, self.top_idx = self._merged_top(flat_idx, vals)

    def _merged_top(self, flat_idx: np.ndarray, vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The top-k so far with these values (none already in it) added: largest |value| first,
        ties to the lower flat index."""
        all_vals = np.concatenate([self.top_vals, vals.astype(np.float32)])
        all_idx = np.concatenate([self.top_idx, flat_idx.astype(np.int64)])
        order = np.lexsort((all_idx, -np.abs(all_vals)))[:self.top_k]
        return all_vals[order], all_idx[order]

    def _keep_candidates(self, values: np.ndarray) -> None:
        if not values.size:
            return
        self.candidates.append(values)  # callers pass fresh arrays (boolean indexing copies)
        self.n_candidates += values.size
        if self.n_candidates > MAX_CANDIDATES:
            self._shrink_candidates()

    def _shrink_candidates(self) -> None:
        # raise τ so that half the cap survives; exactness is re-checked in finish()
        pool = np.concatenate(self.candidates)
        dist = np.abs(pool - np.float32(self.shift))
        half = dist.size - MAX_CANDIDATES // 2
        # never below the τ some candidates were gathered at (merged parts may differ)
        self.tau = max(self.tau, float(np.partition(dist, half)[half]))
        kept = pool[dist > self.tau]
        self.candidates, self.n_candidates = [kept], kept.size

    # -- a tensor split across workers ------------------------------------------------------------
    def primed(self, first_chunk: np.ndarray, first_start: int = 0) -> WeightAccumulator:
        """A fresh recording accumulator for chunks after the first: K and τ as this tensor's first
        chunk sets them (found by feeding it to a throwaway accumulator: the same decision)."""
        probe = WeightAccumulator(self.shape, self.top_k, self.outlier_sigma)
        probe.update(first_start, first_chunk)
        out = WeightAccumulator(self.shape, self.top_k, self.outlier_sigma, partials=[])
        out.shift, out.tau = probe.shift, probe.tau
        return out

    @classmethod
    def merge(cls, parts: list[WeightAccumulator]) -> WeightAccumulator:
        """One accumulator from recording accumulators of consecutive chunk ranges of one tensor,
        equal to one fed every chunk: the float64 sums are replayed sub-block by sub-block in order;
        counts add; min, max, top-k and candidates combine exactly (τ: the largest, which the
        exactness check in `needs_recount` then uses)."""
        first = parts[0]
        out = cls(first.shape, first.top_k, first.outlier_sigma)
        out.shift = first.shift
        for p in parts:
            if p.partials is None or p.shift != first.shift:
                raise ValueError("merge needs recording accumulators with the same shift K")
            for sums in p.partials:
                out.sums += sums
            out.n, out.nan, out.inf = out.n + p.n, out.nan + p.nan, out.inf + p.inf
            out.vmin, out.vmax = min(out.vmin, p.vmin), max(out.vmax, p.vmax)
            if p.top_vals.size:
                out._merge_top(p.top_idx, p.top_vals)
            out.candidates += p.candidates
            out.n_candidates += p.n_candidates
            out.tau = max(out.tau, p.tau)
        if out.n_candidates > MAX_CANDIDATES:
            out._shrink_candidates()
        return out

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
        top = tuple(TopValue(v, unravel(j, self.shape))
                    for v, j in zip(self.top_vals.tolist(), self.top_idx.tolist()))
        return WeightStats(
            min=self.vmin if self.n else math.nan, max=self.vmax if self.n else math.nan,
            mean=mean, std=std, absmax=absmax,
            absmax_over_std=absmax / std if std > 0 else math.nan,
            excess_kurtosis=kurt, top=top, outlier_sigma=self.outlier_sigma, outlier_count=outliers,
            nan_count=self.nan, inf_count=self.inf)
