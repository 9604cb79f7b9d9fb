"""Error metrics of a tensor against its quantized copy, accumulated chunk by chunk.

Definitions (DOMAIN.md §5): d = x' − x; rmse = sqrt(mean d²); relative L2 = ‖d‖/‖x‖;
SQNR dB = 20·log10(‖x‖/‖d‖) (inf when d = 0); max |d|; cosine = x·x'/(‖x‖‖x'‖); exact percentiles of |d|.

Norm-aware: with c the effective gain of the norm that feeds this linear's input columns and r that of
a norm that normalises its output rows (Gemma's sandwich post-norms), the same ratios of the weighted
Σ r_i² c_j² d_ij² and Σ r_i² c_j² x_ij²: the error as the next layer sees it.

Each chunk goes through the compiled kernel once (`_kernels.measure`, normscope/kernels/qmeasure.c): for a
ggml type it quantizes the rows, reads them back and measures in the same pass; for another format it
measures rows the format already read back. Its float64 sums run over each row in order and over the rows in
order, and chunks are added in order, so a tensor's numbers depend only on its values and the chunk size,
never on which thread or process computed them. `measure_chunk` is the part that may run on any thread;
`ErrorAccumulator.add` takes its results in chunk order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..._kernels import measure
from ...upstream import load_grid
from ...results import ErrorStats, NormAwareError
from .quantiles import N_BINS, ExactQuantiles

__all__ = ["ErrorAccumulator", "ErrorSums", "ChunkStats", "measure_chunk", "sqnr_db", "rel_l2", "HEALTH_FIELDS"]

# the block health counts the kernel adds up, in its order (quant.health.BlockHealth's fields)
HEALTH_FIELDS = ("blocks", "dominated", "scale_underflow", "scale_subnormal", "scale_overflow", "nonzero",
                 "rounded_to_zero")


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


@dataclass(frozen=True)
class ChunkStats:
    """What the kernel measured on one chunk of rows."""

    n: int  # values
    # float64 (10,): Σd², Σx², Σx'², Σx·x', weighted Σd², weighted Σx², max |d|, non-finite |d|, |d| == 0,
    # non-finite x
    stats: np.ndarray
    hist: np.ndarray  # int64 (N_BINS,): |d| per bin, zeros included
    kept: np.ndarray  # float32: the nonzero |d| of the bins asked for (all of them when no mask was given)
    health: np.ndarray | None  # int64 (7,): HEALTH_FIELDS
    y: np.ndarray | None = None  # the rows read back, when asked for


def measure_chunk(rows: np.ndarray, *, fmt: str | None = None, y: np.ndarray | None = None,
                  imatrix: np.ndarray | None = None, col2: np.ndarray | None = None,
                  row2: np.ndarray | None = None, keep: np.ndarray | None = None, group: int | None = None,
                  want_y: bool = False) -> ChunkStats:
    """Measure one chunk of rows (float32, (rows, n)) against what a format stores and reads back.

    Args:
        fmt: a ggml type: quantize the rows with the compiled kernels in the same pass; None: `y` holds
            what the format read back.
        imatrix: per-column importance weights for the ggml types that use them.
        col2, row2: squared gains per column and per row of this chunk (float64), or None.
        keep: bool (N_BINS,): which bins of |d| to copy out (None: all of them).
        group: values per block for the block health (None: no block health).
        want_y: return the rows read back too.
    """
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    n_per_row = rows.shape[-1] if rows.ndim else 1
    if fmt is not None:
        load_grid(fmt)  # the lattice types (IQ2_*, IQ3_*, IQ1_*) search tables built from their grids, once
    if y is not None:
        y = np.ascontiguousarray(y, dtype=np.float32)
    stats = np.zeros(10)
    hist = np.zeros(N_BINS, dtype=np.int64)
    health = np.zeros(len(HEALTH_FIELDS), dtype=np.int64) if group else None
    if group and n_per_row % group:
        group = n_per_row
    kept = np.empty(rows.size, dtype=np.float32)
    y_out = np.empty_like(rows) if want_y and fmt is not None else None
    if rows.size:
        m = measure(fmt, rows, y, n_per_row, imatrix, col2, row2, keep, kept, hist, stats, health, group or 1,
                    y_out)
        kept = kept[:m].copy()
    else:
        kept = kept[:0]
    return ChunkStats(rows.size, stats, hist, kept, health, y_out if fmt is not None else y)


class ErrorAccumulator:
    """Add chunk measurements in order with `add` (or measure (x, x') chunks with `update`); read `finish()`
    and `finish_norm_aware()`.

    Args:
        n_total: values in the whole tensor (the exact percentiles need it up front).
        col_gains: effective gain per input column (length = row length), or None.
        row_gains: effective gain per output row (length = number of rows), or None.
    """

    def __init__(self, n_total: int, col_gains: np.ndarray | None = None, row_gains: np.ndarray | None = None):
        self.n = 0
        self.sums = np.zeros(4)  # Σd², Σx², Σx'², Σx·x'
        self.max_abs = 0.0
        self.non_finite = 0  # values whose error is NaN or infinite
        self.x_non_finite = 0  # of them, those already NaN or infinite in the original
        self.quantiles = ExactQuantiles(n_total)
        self.c2 = None if col_gains is None else np.ascontiguousarray(col_gains, np.float64) ** 2
        self.r2 = None if row_gains is None else np.ascontiguousarray(row_gains, np.float64) ** 2
        self.weighted = np.zeros(2)  # Σ r²c²d², Σ r²c²x²

    @property
    def norm_aware(self) -> bool:
        return self.c2 is not None or self.r2 is not None

    # -- what a chunk's kernel call needs --------------------------------------------------------------
    def keep(self) -> np.ndarray | None:
        """The bins of |d| to copy out of the next chunk (None: all, for the first chunk)."""
        return self.quantiles.keep

    def row_gains2(self, row0: int, rows: int) -> np.ndarray | None:
        """Squared row gains of rows [row0, row0 + rows), or None."""
        return None if self.r2 is None else np.ascontiguousarray(self.r2[row0:row0 + rows])

    def gains(self, row0: int, rows: int) -> dict[str, np.ndarray | None]:
        """`measure_chunk`'s gain arguments for rows [row0, row0 + rows)."""
        return {"col2": self.c2, "row2": self.row_gains2(row0, rows)}

    # -- chunks, in order --------------------------------------------------------------------------------
    def add(self, chunk: ChunkStats) -> None:
        """Take one chunk's measurement (chunks in order: the float64 sums are added in that order)."""
        s = chunk.stats
        self.sums += s[:4]
        if self.norm_aware:
            self.weighted += s[4:6]
        self.max_abs = max(self.max_abs, float(s[6]))
        self.non_finite += int(s[7])
        self.x_non_finite += int(s[9])
        if self.quantiles.keep is None:  # the first chunk: every nonzero |d| came back, and fixes the windows
            self.quantiles.update_binned(chunk.hist, chunk.kept, int(s[8]))
        else:
            self.quantiles.add_binned(chunk.hist, chunk.kept, int(s[8]))
        self.n += chunk.n

    def update(self, x: np.ndarray, y: np.ndarray, row0: int = 0) -> None:
        """x, y: float32 (rows, cols) chunks of the original and its quantized copy; row0 = first row."""
        rows = x.reshape(-1, x.shape[-1]) if x.ndim else x.reshape(1, 1)
        self.add(measure_chunk(rows, y=y.reshape(rows.shape), keep=self.keep(), **self.gains(row0, rows.shape[0])))

    # -- exact percentiles may need the |d| stream once more ---------------------------------------
    def second_pass_needed(self) -> bool:
        return self.quantiles.missing()

    def start_second_pass(self) -> None:
        self.quantiles.refine()

    def add_second(self, chunk: ChunkStats) -> None:
        """A chunk of the second pass: only its |d| bins and kept values count."""
        self.quantiles.add_binned(chunk.hist, chunk.kept, int(chunk.stats[8]))

    def second_pass(self, x: np.ndarray, y: np.ndarray) -> None:
        rows = x.reshape(-1, x.shape[-1]) if x.ndim else x.reshape(1, 1)
        self.add_second(measure_chunk(rows, y=y.reshape(rows.shape), keep=self.keep()))

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
            p50=q[50.0], p95=q[95.0], p99=q[99.0], p999=q[99.9], non_finite=self.non_finite)

    def finish_norm_aware(self, norm: str, axis: str, plain_db: float) -> NormAwareError | None:
        """The norm-aware error, or None when no norm feeds this tensor."""
        if not self.norm_aware:
            return None
        dw, xw = self.weighted.tolist()
        db = sqnr_db(xw, dw)
        delta = db - plain_db if math.isfinite(db) and math.isfinite(plain_db) else 0.0
        return NormAwareError(norm=norm, axis=axis, rel_l2=rel_l2(xw, dw), sqnr_db=db, delta_db=delta)
