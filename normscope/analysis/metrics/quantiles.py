"""Exact percentiles of a stream of non-negative float32 values, in bounded memory.

Values are binned by the top 16 bits of their float32 pattern (for non-negative floats the bit
pattern orders like the value, so a bin is a contiguous value range of relative width 2^-7). The
first chunk, which the caller hands over whole, fixes a window of bins around each wanted rank; from
then on only values inside the windows are kept. At the end, each percentile's two order statistics
are read from the kept values of its bin: exact, numpy's linear interpolation. If a wanted rank ends up
outside its window (the distribution drifted between chunks), `missing()` says so and the caller makes
a second pass with `refine()`, which keeps exactly the values of the bins needed.

Zeros are counted, never kept: they are the smallest values of bin 0, so its order statistics are that
many zeros followed by its kept nonzero values. (An exact copy, whose every difference is zero, would
otherwise keep all of them.)
"""

from __future__ import annotations

import numpy as np

__all__ = ["ExactQuantiles", "PERCENTILES", "N_BINS"]

PERCENTILES = (50.0, 95.0, 99.0, 99.9)
N_BINS = 1 << 15  # non-negative float32: the sign bit is 0
WINDOW = 1  # bins kept on each side of a rank's bin estimated from the first chunk (3 kept ~5% of a
# 525M-value tensor's errors around each rank: 511 MiB for Llama-3-8B's lm_head; a miss costs a second pass)
SUB = 1 << 20  # values binned per bincount call (its intp copy stays ~8 MiB)


def _bins(values: np.ndarray) -> np.ndarray:
    return (values.view(np.uint32) >> 16).astype(np.int64)


class ExactQuantiles:
    """Feed float32 values ≥ 0 (NaN excluded by the caller) with `update`, then read `result()`."""

    def __init__(self, n_total: int, percentiles: tuple[float, ...] = PERCENTILES):
        self.n = n_total
        self.percentiles = percentiles
        positions = [p / 100.0 * (n_total - 1) for p in percentiles]
        self.ranks = sorted({int(np.floor(x)) for x in positions} | {int(np.ceil(x)) for x in positions})
        self.hist = np.zeros(N_BINS, dtype=np.int64)
        self.keep: np.ndarray | None = None  # bool (N_BINS,): bins whose values are kept
        self.kept: list[np.ndarray] = []  # nonzero values of the kept bins
        self.zeros = 0
        self.seen = 0

    def update(self, values: np.ndarray) -> None:
        flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
        if self.keep is None:
            if flat.size == self.n:  # the whole stream at once: no windows needed
                self.keep = np.ones(N_BINS, dtype=bool)
            else:
                self.keep = self._windows(np.bincount(_bins(flat), minlength=N_BINS), flat.size)
        for i in range(0, flat.size, SUB):
            part = flat[i:i + SUB]
            bins = _bins(part)
            counts = np.bincount(bins, minlength=N_BINS)
            self.hist += counts
            inside = self.keep[bins]
            if counts[0]:
                zero = part == 0
                self.zeros += int(np.count_nonzero(zero))
                inside &= ~zero
            if inside.any():
                self.kept.append(part[inside])
        self.seen += flat.size

    def update_binned(self, counts: np.ndarray, nonzero: np.ndarray, zeros: int) -> None:
        """The first chunk, binned elsewhere (the compiled kernel): `counts` per bin of every value, `nonzero`
        every nonzero value, `zeros` how many were zero. It fixes the windows, as `update` does."""
        size = int(counts.sum())
        self.keep = np.ones(N_BINS, dtype=bool) if size == self.n else self._windows(counts, size)
        self.add_binned(counts, nonzero[self.keep[_bins(nonzero)]] if nonzero.size else nonzero, zeros)

    def add_binned(self, counts: np.ndarray, kept: np.ndarray, zeros: int = 0) -> None:
        """Take a chunk that was binned elsewhere (the compiled kernel): `counts` per bin of every value,
        `kept` the nonzero values of the bins `self.keep` marks, `zeros` how many values were zero."""
        self.hist += counts
        if kept.size:
            self.kept.append(kept)
        self.zeros += zeros
        self.seen += int(counts.sum())

    def _windows(self, counts: np.ndarray, size: int) -> np.ndarray:
        """Bins around each wanted rank, estimated from the first chunk's distribution (its bin counts)."""
        keep = np.zeros(N_BINS, dtype=bool)
        cum = np.cumsum(counts)
        for r in self.ranks:
            b = int(np.searchsorted(cum, r * size / self.n, side="right"))
            keep[max(0, b - WINDOW):min(N_BINS, b + WINDOW + 1)] = True
        return keep

    def _rank_bins(self) -> dict[int, int]:
        cum = np.cumsum(self.hist)
        return {r: int(np.searchsorted(cum, r, side="right")) for r in self.ranks}

    def missing(self) -> bool:
        """True when a wanted order statistic lies in a bin whose values were not kept."""
        return any(not self.keep[b] for b in self._rank_bins().values()) if self.keep is not None else False

    def refine(self) -> None:
        """Start a second pass: keep exactly the bins of the wanted ranks; feed every value again."""
        self.keep = np.zeros(N_BINS, dtype=bool)
        self.keep[list(self._rank_bins().values())] = True
        self.kept, self.hist, self.seen, self.zeros = [], np.zeros(N_BINS, dtype=np.int64), 0, 0

    def result(self, method: str = "linear") -> dict[float, float]:
        """{percentile: value} as numpy's `np.percentile(…, method=method)`: "linear" interpolates between
        the two order statistics around the rank, "lower" takes the one below (a value of the data)."""
        if method not in ("linear", "lower"):
            raise ValueError(f"method {method!r}: 'linear' or 'lower'")
        if self.n == 0:
            return {p: float("nan") for p in self.percentiles}
        starts = np.concatenate([[0], np.cumsum(self.hist)[:-1]])
        value = {}
        by_bin: dict[int, list[int]] = {}
        for r, b in self._rank_bins().items():
            by_bin.setdefault(b, []).append(r)
        for b, ranks in by_bin.items():
            # the kept nonzero values of bin b, its order statistics unsorted (gathered chunk by chunk: one copy of
            # all kept values, and their int64 bins, would triple the memory the windows hold)
            parts = [k[(k.view(np.uint32) >> 16) == b] for k in self.kept]
            inside = np.concatenate(parts) if parts else np.zeros(0, np.float32)
            skip = self.zeros if b == 0 else 0  # bin 0 starts with the zeros, which are only counted
            at = [r - int(starts[b]) for r in ranks]
            wanted = [k - skip for k in at if k >= skip]
            part = np.partition(inside, wanted) if wanted else inside  # linear time, where a sort was n log n
            for r, k in zip(ranks, at):
                value[r] = 0.0 if k < skip else float(part[k - skip])
        out = {}
        for p in self.percentiles:
            x = p / 100.0 * (self.n - 1)
            lo, hi = int(np.floor(x)), int(np.ceil(x))
            a, b, t = value[lo], value[hi], x - lo
            if method == "lower":
                out[p] = a
                continue
            # numpy's _lerp to the bit: interpolate from the nearer order statistic
            out[p] = b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t
        return out
