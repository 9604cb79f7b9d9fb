"""Error metrics of a tensor against its quantized copy, accumulated chunk by chunk.

Definitions (DOMAIN.md §5): d = x' − x; rmse = sqrt(mean d²); relative L2 = ‖d‖/‖x‖;
SQNR dB = 20·log10(‖x‖/‖d‖) (inf when d = 0); max |d|; cosine = x·x'/(‖x‖‖x'‖); exact percentiles of |d|.

Norm-aware: with c the effective gain of the norm that feeds this linear's input columns and r that of
a norm that normalises its output rows (Gemma's sandwich post-norms), the same ratios of the weighted
Σ r_i² c_j² d_ij² and Σ r_i² c_j² x_ij²: the error as the next layer sees it.

Sums are float64 dot products over sub-blocks of rows, so a tensor's numbers depend only on its
values and the chunk size, never on which process computed them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...results import ErrorStats, NormAwareError
from .quantiles import ExactQuantiles

__all__ = ["ErrorAccumulator", "ErrorSums", "sqnr_db", "rel_l2"]

SUB_VALUES = 1 << 16  # values per float64 sub-block (512 KiB per array: stays in cache)


def sqnr_db(signal2: float, noise2: float) -> float:
    """10·log10(Σx² / Σd²): inf for an exact copy, -inf for a zero signal with nonzero error."""
    if noise2 == 0:
        return math.inf
    if signal2 == 0:
        return -math.inf
    return 10.0 * math.log10(signal2 / noise2)


def rel_l2(signal2: float, noise2: float) -> float:
    if signal2 > 0:
        return math.sqrt(noise2 / signal2)
    return 0.0 if noise2 == 0 else math.inf


@dataclass(frozen=True)
class ErrorSums:
    """The sums a tensor's error reduces to; they add across tensors for model-level totals."""

    n: int
    d2: float  # Σd²
    x2: float  # Σx²
    wd2: float = 0.0  # Σ(gain-weighted d)²
    wx2: float = 0.0  # Σ(gain-weighted x)²


class ErrorAccumulator:
    """Feed (x, x') row chunks in order with `update`; read `finish()` and `finish_norm_aware()`.

    Args:
        n_total: values in the whole tensor (the exact percentiles need it up front).
        col_gains: effective gain per input column (length = row length), or None.
        row_gains: effective gain per output row (length = number of rows), or None.
    """

    def __init__(self, n_total: int, col_gains: np.ndarray | None = None, row_gains: np.ndarray | None = None):
        self.n = 0
        self.sums = np.zeros(4)  # Σd², Σx², Σx'², Σx·x'
        self.max_abs = 0.0
        self.quantiles = ExactQuantiles(n_total)
        self.c2 = None if col_gains is None else np.asarray(col_gains, np.float64) ** 2
        self.r2 = None if row_gains is None else np.asarray(row_gains, np.float64) ** 2
        self.weighted = np.zeros(2)  # Σ r²c²d², Σ r²c²x²

    @property
    def norm_aware(self) -> bool:
        return self.c2 is not None or self.r2 is not None

    def update(self, x: np.ndarray, y: np.ndarray, row0: int = 0) -> None:
        """x, y: float32 (rows, cols) chunks of the original and its quantized copy; row0 = first row."""
        cols = x.shape[-1]
        step = max(1, SUB_VALUES // max(1, cols))
        for r in range(0, x.shape[0], step):
            xs = x[r:r + step].astype(np.float64)
            ys = y[r:r + step].astype(np.float64)
            ds = ys - xs
            xf, yf, df = xs.reshape(-1), ys.reshape(-1), ds.reshape(-1)
            self.sums += (np.dot(df, df), np.dot(xf, xf), np.dot(yf, yf), np.dot(xf, yf))
            if self.norm_aware:
                dd, xx = ds * ds, xs * xs
                if self.c2 is not None:
                    dd, xx = dd @ self.c2, xx @ self.c2  # (rows,): Σ_j c_j² · (…)_ij
                else:
                    dd, xx = dd.sum(axis=1), xx.sum(axis=1)
                if self.r2 is not None:
                    rr = self.r2[row0 + r:row0 + r + xs.shape[0]]
                    dd, xx = dd * rr, xx * rr
                self.weighted += (dd.sum(), xx.sum())
        absd = np.abs(y - x)
        if absd.size:
            self.max_abs = max(self.max_abs, float(absd.max()))
        self.quantiles.update(absd)
        self.n += x.size

    # -- exact percentiles may need the |d| stream once more ---------------------------------------
    def second_pass_needed(self) -> bool:
        return self.quantiles.missing()

    def start_second_pass(self) -> None:
        self.quantiles.refine()

    def second_pass(self, x: np.ndarray, y: np.ndarray) -> None:
        self.quantiles.update(np.abs(y - x))

    # -- results -----------------------------------------------------------------------------------
    def error_sums(self) -> ErrorSums:
        d2, x2 = float(self.sums[0]), float(self.sums[1])
        return ErrorSums(self.n, d2, x2, float(self.weighted[0]), float(self.weighted[1]))

    def finish(self) -> ErrorStats:
        d2, x2, y2, xy = self.sums.tolist()
        q = self.quantiles.result()
        cos = xy / math.sqrt(x2 * y2) if x2 > 0 and y2 > 0 else (1.0 if d2 == 0 else math.nan)
        return ErrorStats(
            rmse=math.sqrt(d2 / self.n) if self.n else math.nan, rel_l2=rel_l2(x2, d2),
            sqnr_db=sqnr_db(x2, d2), max_abs=self.max_abs, cosine=cos,
            p50=q[50.0], p95=q[95.0], p99=q[99.0], p999=q[99.9])

    def finish_norm_aware(self, norm: str, axis: str, plain_db: float) -> NormAwareError | None:
        """The norm-aware error, or None when no norm feeds this tensor."""
        if not self.norm_aware:
            return None
        dw, xw = self.weighted.tolist()
        db = sqnr_db(xw, dw)
        delta = db - plain_db if math.isfinite(db) and math.isfinite(plain_db) else 0.0
        return NormAwareError(norm=norm, axis=axis, rel_l2=rel_l2(xw, dw), sqnr_db=db, delta_db=delta)
