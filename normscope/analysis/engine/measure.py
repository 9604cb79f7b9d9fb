"""The measuring engine of `simulate`, `recipe` and `clip --sweep`: one tensor streamed once in row chunks,
every format applied to the same chunk, errors, norm-aware errors and block health accumulated per format;
exact error percentiles take a second pass only when the first could not pin them. A ggml type is quantized,
read back and measured by one compiled kernel call per chunk (`metrics.quant_error.measure_chunk`); other
formats quantize in numpy and are measured by the same kernel.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ...io import DEFAULT_CHUNK_ELEMENTS
from ...quant import GGMLFormat, QuantFormat, get_format
from ...quant.health import BlockHealth
from ...results import BlockHealthStats, ErrorStats, NormAwareError, TensorInfo
from ..metrics.quant_error import ChunkStats, ErrorAccumulator, ErrorSums, measure_chunk
from .model import Model

__all__ = ["TensorFormats", "Measured", "measure_tensor", "measure_planned", "health_stats"]


@dataclass(frozen=True)
class TensorFormats:
    """The formats one tensor gets, one entry per scheme (None: not quantized by that scheme), and the gains
    of the norms around it that weigh the norm-aware error."""

    formats: tuple[str | None, ...]
    col_gains: np.ndarray | None = None
    row_gains: np.ndarray | None = None
    norm: str = ""
    axis: str = ""
    # per-column importance weights for the ggml types that use them: (n_per_row,), or (n_expert, n_per_row) for a
    # MoE tensor (n_expert, rows, n_per_row), whose experts each take their own (llama-quantize's imatrix_03)
    imatrix: np.ndarray | None = None


@dataclass(frozen=True)
class Measured:
    """What streaming one tensor through one format measured."""

    error: ErrorStats
    norm_aware: NormAwareError | None
    health: BlockHealthStats
    sums: ErrorSums
    counts: BlockHealth  # the raw block counts behind `health`, summed for scheme totals
    damaged: int = 0  # NaN or infinite values in the tensor itself (a damaged checkpoint)


def measure_planned(model: Model, info: TensorInfo, *, formats: dict[str, TensorFormats], chunk_elements: int,
                    threads: int = 1) -> list[Measured | None]:
    """`measure_tensor` with the formats looked up by name: the picklable work of map_tensors."""
    return measure_tensor(model, info, formats[info.name], chunk_elements, threads=threads)


def _chunk_elements(info: TensorInfo, formats: Sequence[str], chunk_elements: int, per_expert: int = 0) -> int:
    """A chunk size holding a whole multiple of every format's row multiple (fp8_block: 128 rows); with
    `per_expert` rows per expert, chunks that never straddle two experts (a divisor of it)."""
    row_len = info.shape[-1] if info.shape else 1
    multiple = math.lcm(*(get_format(f).row_multiple for f in formats))
    rows = max(1, chunk_elements // row_len)
    rows = max(multiple, rows // multiple * multiple)
    if per_expert:
        fits = [d for d in range(min(rows, per_expert), 0, -1) if per_expert % d == 0 and d % multiple == 0]
        rows = fits[0] if fits else per_expert
    return rows * row_len


def measure_tensor(model: Model, info: TensorInfo, plan: TensorFormats,
                   chunk_elements: int = DEFAULT_CHUNK_ELEMENTS, *,
                   transform: Callable[[int, np.ndarray], np.ndarray] | None = None,
                   observe: Callable[[int, np.ndarray, np.ndarray, list[np.ndarray | None]], None] | None = None,
                   threads: int = 1) -> list[Measured | None]:
    """Stream one tensor once and measure every format of `plan` on the same chunks.

    The first chunk is measured in this thread (it fixes the windows of the exact percentiles); the others,
    read here in order, are measured on up to `threads` threads at once (the kernel runs outside the GIL) and
    added back in chunk order, so the result does not depend on `threads`.

    Args:
        transform: (first row, float32 rows) -> the rows the formats quantize instead (e.g. clipped ones,
            a new array); the errors are then those of the transformed tensor. None: the rows as stored.
        observe: called on every chunk of the first pass as observe(first row, rows, transformed rows,
            read-backs), read-backs[i] being scheme i's (None where it leaves the tensor alone).
        threads: chunks measured at once (with `observe`, one: it sees the chunks in order).

    Returns:
        One Measured per scheme (None where the scheme leaves the tensor unquantized).
    """
    active = [(i, get_format(f)) for i, f in enumerate(plan.formats) if f is not None]
    if not active:
        return [None] * len(plan.formats)
    imatrix = plan.imatrix
    per_expert = 0
    if imatrix is not None and imatrix.ndim == 2:
        if imatrix.shape[0] == 1:
            imatrix = imatrix[0]
        else:
            per_expert = int(np.prod(info.shape[1:-1]))  # rows of one expert
    chunk = _chunk_elements(info, [f.name for _, f in active], chunk_elements, per_expert)
    row_len = info.shape[-1] if info.shape else 1

    def chunks():  # (first row, rows as stored, rows to quantize)
        for row0, rows in model.iter_rows(info, chunk):
            rows = rows.reshape(-1, row_len)
            yield row0, rows, (transform(row0, rows) if transform else rows)

    absmax = None
    if any(f.per_tensor for _, f in active):  # one scale for the whole tensor: find it first
        absmax = 0.0
        for _, _, rows in chunks():
            absmax = max(absmax, float(np.nanmax(np.abs(rows))) if rows.size else 0.0)
    accs = {i: ErrorAccumulator(info.n_params, plan.col_gains, plan.row_gains) for i, _ in active}
    work = _ChunkWork(active, accs, row_len, absmax, imatrix, per_expert, want_y=observe is not None)
    for row0, stored, rows, measured in _in_order(chunks(), work, 1 if observe else threads, first_alone=True):
        for i, m in measured.items():  # in chunk order: the float64 sums are added in that order
            accs[i].add(m)
        if observe:
            observe(row0, stored, rows, [measured[i].y if i in measured else None for i in range(len(plan.formats))])
    again = [(i, fmt) for i, fmt in active if accs[i].second_pass_needed()]
    if again:
        for i, _ in again:
            accs[i].start_second_pass()
        redo = _ChunkWork(again, accs, row_len, absmax, imatrix, per_expert, health=False)
        for _, _, _, measured in _in_order(chunks(), redo, threads):
            for i, m in measured.items():
                accs[i].add_second(m)
    out: list[Measured | None] = [None] * len(plan.formats)
    for i, _ in active:
        err = accs[i].finish()
        counts = work.health[i]
        out[i] = Measured(error=err, norm_aware=accs[i].finish_norm_aware(plan.norm, plan.axis, err.sqnr_db),
                          health=health_stats(counts), sums=accs[i].error_sums(), counts=counts,
                          damaged=accs[i].x_non_finite)
    return out


def health_stats(h: BlockHealth) -> BlockHealthStats:
    return BlockHealthStats(blocks=h.blocks, dominated_share=h.dominated / h.blocks if h.blocks else 0.0,
                            scale_underflow=h.scale_underflow, scale_subnormal=h.scale_subnormal,
                            scale_overflow=h.scale_overflow,
                            zeroed_share=h.rounded_to_zero / h.nonzero if h.nonzero else 0.0)


class _ChunkWork:
    """Measure one chunk under every active format (callable from any thread), and sum the block health."""

    def __init__(self, active: list[tuple[int, type[QuantFormat]]], accs: dict[int, ErrorAccumulator], row_len: int,
                 absmax: float | None, imatrix: np.ndarray | None, per_expert: int = 0, *, want_y: bool = False,
                 health: bool = True):
        self.active, self.accs, self.row_len, self.absmax = active, accs, row_len, absmax
        self.imatrix, self.per_expert, self.want_y, self.with_health = imatrix, per_expert, want_y, health
        self.health = {i: BlockHealth() for i, _ in active}
        self.lock = threading.Lock()

    def __call__(self, row0: int, rows: np.ndarray) -> dict[int, ChunkStats]:
        out = {}
        imatrix = self.imatrix[row0 // self.per_expert] if self.per_expert else self.imatrix
        for i, fmt in self.active:
            acc = self.accs[i]
            group = fmt.group_length(self.row_len) if self.with_health else None
            args = dict(keep=acc.keep(), group=group, **acc.gains(row0, rows.shape[0]))
            if issubclass(fmt, GGMLFormat):  # quantized, read back and measured in one kernel pass
                weights = fmt.importance(imatrix, self.row_len)
                m = measure_chunk(rows, fmt=fmt.name, imatrix=weights, want_y=self.want_y, **args)
            else:
                m = measure_chunk(rows, y=fmt.fake_quantize(rows, self.absmax).reshape(rows.shape), **args)
            if m.health is not None:
                with self.lock:
                    self.health[i].add(BlockHealth(*m.health.tolist()))
            out[i] = m
        return out


_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _pool(threads: int) -> ThreadPoolExecutor:
    with _POOLS_LOCK:
        if threads not in _POOLS:
            _POOLS[threads] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="normscope-chunks")
        return _POOLS[threads]


def _in_order(chunks: Iterator[tuple[int, np.ndarray, np.ndarray]], work: _ChunkWork, threads: int,
              first_alone: bool = False) -> Iterator[tuple[int, np.ndarray, np.ndarray, dict[int, ChunkStats]]]:
    """(row0, stored rows, rows, measurements) of every chunk, in order; with threads > 1 the chunks after
    the first (or all of them, unless `first_alone`) are measured `threads` at a time while the next is read."""
    if threads <= 1:
        for row0, stored, rows in chunks:
            yield row0, stored, rows, work(row0, rows)
        return
    it = iter(chunks)
    if first_alone:
        head = next(it, None)
        if head is None:
            return
        yield (*head, work(head[0], head[2]))
    pending: deque[tuple[int, np.ndarray, np.ndarray, Future]] = deque()
    pool = _pool(threads)
    try:
        for row0, stored, rows in it:
            rows = rows.copy()  # the reader reuses its buffers
            pending.append((row0, stored if stored is rows else stored.copy(), rows, pool.submit(work, row0, rows)))
            while len(pending) > threads:
                row0_, stored_, rows_, fut = pending.popleft()
                yield row0_, stored_, rows_, fut.result()
        while pending:
            row0_, stored_, rows_, fut = pending.popleft()
            yield row0_, stored_, rows_, fut.result()
    finally:
        for *_, fut in pending:
            fut.cancel()
