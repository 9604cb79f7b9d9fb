"""The measuring engine of `simulate`, `recipe` and `clip --sweep`: one tensor streamed once in row chunks,
every format applied to the same chunk, errors, norm-aware errors and block health accumulated per format;
exact error percentiles take a second pass only when the first could not pin them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ...io import DEFAULT_CHUNK_ELEMENTS
from ...quant import GGMLFormat, QuantFormat, block_health, block_scales, get_format
from ...quant.health import BlockHealth
from ...results import BlockHealthStats, ErrorStats, NormAwareError, TensorInfo
from ..metrics.quant_error import ErrorAccumulator, ErrorSums
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


@dataclass(frozen=True)
class Measured:
    """What streaming one tensor through one format measured."""

    error: ErrorStats
    norm_aware: NormAwareError | None
    health: BlockHealthStats
    sums: ErrorSums
    counts: BlockHealth  # the raw block counts behind `health`, summed for scheme totals


def measure_planned(model: Model, info: TensorInfo, *, formats: dict[str, TensorFormats], chunk_elements: int
                    ) -> list[Measured | None]:
    """`measure_tensor` with the formats looked up by name: the picklable work of map_tensors."""
    return measure_tensor(model, info, formats[info.name], chunk_elements)


def _chunk_elements(info: TensorInfo, formats: Sequence[str], chunk_elements: int) -> int:
    """A chunk size holding a whole multiple of every format's row multiple (fp8_block: 128 rows)."""
    row_len = info.shape[-1] if info.shape else 1
    multiple = math.lcm(*(get_format(f).row_multiple for f in formats))
    rows = max(1, chunk_elements // row_len)
    rows = max(multiple, rows // multiple * multiple)
    return rows * row_len


def measure_tensor(model: Model, info: TensorInfo, plan: TensorFormats,
                   chunk_elements: int = DEFAULT_CHUNK_ELEMENTS, *,
                   transform: Callable[[int, np.ndarray], np.ndarray] | None = None,
                   observe: Callable[[int, np.ndarray, np.ndarray, list[np.ndarray | None]], None] | None = None
                   ) -> list[Measured | None]:
    """Stream one tensor once and measure every format of `plan` on the same chunks.

    Args:
        transform: (first row, float32 rows) -> the rows the formats quantize instead (e.g. clipped ones,
            a new array); the errors are then those of the transformed tensor. None: the rows as stored.
        observe: called on every chunk of the first pass as observe(first row, rows, transformed rows,
            read-backs), read-backs[i] being scheme i's (None where it leaves the tensor alone).

    Returns:
        One Measured per scheme (None where the scheme leaves the tensor unquantized).
    """
    active = [(i, get_format(f)) for i, f in enumerate(plan.formats) if f is not None]
    if not active:
        return [None] * len(plan.formats)
    chunk = _chunk_elements(info, [f.name for _, f in active], chunk_elements)
    row_len = info.shape[-1] if info.shape else 1

    def chunks():  # (first row, rows as stored, rows to quantize)
        for row0, rows in model.iter_rows(info, chunk):
            rows = rows.reshape(-1, row_len)
            yield row0, rows, (transform(row0, rows) if transform else rows)

    absmax = None
    if any(f.per_tensor for _, f in active):  # one scale for the whole tensor: find it first
        absmax = 0.0
        for _, _, rows in chunks():
            absmax = max(absmax, float(np.abs(rows).max()) if rows.size else 0.0)
    n = info.n_params
    accs = {i: ErrorAccumulator(n, plan.col_gains, plan.row_gains) for i, _ in active}
    health = {i: BlockHealth() for i, _ in active}
    for row0, stored, rows in chunks():
        ys: list[np.ndarray | None] = [None] * len(plan.formats)
        for i, fmt in active:
            y, scales = _quantize(fmt, rows, absmax)
            accs[i].update(rows, y, row0)
            health[i].add(block_health(rows, y, fmt.group_length(row_len), scales))
            if observe:
                ys[i] = y
        if observe:
            observe(row0, stored, rows, ys)
    again = [(i, fmt) for i, fmt in active if accs[i].second_pass_needed()]
    if again:
        for i, _ in again:
            accs[i].start_second_pass()
        for _, _, rows in chunks():
            for i, fmt in again:
                accs[i].second_pass(rows, _quantize(fmt, rows, absmax)[0])
    out: list[Measured | None] = [None] * len(plan.formats)
    for i, _ in active:
        err = accs[i].finish()
        out[i] = Measured(error=err, norm_aware=accs[i].finish_norm_aware(plan.norm, plan.axis, err.sqnr_db),
                          health=health_stats(health[i]), sums=accs[i].error_sums(), counts=health[i])
    return out


def health_stats(h: BlockHealth) -> BlockHealthStats:
    return BlockHealthStats(blocks=h.blocks, dominated_share=h.dominated / h.blocks if h.blocks else 0.0,
                            scale_underflow=h.scale_underflow, scale_subnormal=h.scale_subnormal,
                            scale_overflow=h.scale_overflow,
                            zeroed_share=h.rounded_to_zero / h.nonzero if h.nonzero else 0.0)


def _quantize(fmt: type[QuantFormat], rows: np.ndarray, absmax: float | None) -> tuple[np.ndarray, np.ndarray | None]:
    """(rows as stored and read back, the fp16 block scales for ggml types)."""
    if issubclass(fmt, GGMLFormat):
        raw = fmt.quantize_blocks(rows)  # the bytes llama.cpp would write; y is exactly what it reads back
        return fmt.dequantize_blocks(raw, rows.shape), block_scales(raw, fmt.name)
    return fmt.fake_quantize(rows, absmax).reshape(rows.shape), None
