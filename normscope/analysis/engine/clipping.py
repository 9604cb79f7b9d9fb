"""The arithmetic of percentile clipping, shared by `clip` (which writes) and its sweep (which measures).

A norm is clipped on its effective gain in its module's convention and stored back in that convention
(Gemma: clip 1 + w, store w); a Linear weight on |w|. The threshold is a percentile of |value| taken
as a value of the tensor, numpy's `method="lower"` (the order statistic at or below the rank, so never
above the interpolated percentile), computed exactly: of the whole tensor (streamed through
`ExactQuantiles` when it is large) or of each output row. A clipped value is stored as the
representable value nearest to ±threshold that does not exceed it, so the stored tensor honours its
threshold after rounding to bf16 / fp16; every other value keeps its stored bits.

Clipping is idempotent: clipping the output again at the same percentile finds the same threshold and
changes nothing. For |w| that holds because the threshold is a value of the data and -w is as
representable as w. A (1 + w) gain is not symmetric: a gain of -t stores w = -t - 1, which bf16 may not
hold when t - 1 was exact, so the clipped value rounds to a gain just under t; enough of those move the
percentile's rank below t, and a second clip would cut again. A norm's threshold is therefore the
largest one at or below the percentile that is the percentile of its own clipped output (a fixed point,
found in a step or two on the norm's few thousand values).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ...arch import effective_gain, stored_from_gain
from ...errors import CheckpointError, ConfigError
from ...io import DEFAULT_CHUNK_ELEMENTS, Checkpoint, TensorEntry
from ...io.writer import FLOAT_DTYPES, encode, step_toward
from ...results import ClipScope, NormConvention, SuperWeightCandidate, TensorInfo
from ..metrics.quantiles import ExactQuantiles
from .model import Model
from .select import selected

__all__ = ["check_percentile", "check_finite", "convention_of", "in_scope", "clip_rows", "tensor_thresholds",
           "row_thresholds", "keep_mask", "protected_cells", "raw_rows", "Tally", "SUB_VALUES"]

# values clipped at once: the float64 temporaries of a block stay near 8 MiB whatever the read chunk
SUB_VALUES = 1 << 20


# a value of the data, never above the interpolated percentile: clipping twice changes nothing the second time
PERCENTILE_METHOD = "lower"


def check_percentile(p: float) -> float:
    """`p` as a float in [0, 100].

    Raises:
        ConfigError: not a number in [0, 100].
    """
    try:
        value = float(p)
    except (TypeError, ValueError):
        raise ConfigError(f"percentile {p!r} is not a number; give one in [0, 100], e.g. 99") from None
    if not (math.isfinite(value) and 0.0 <= value <= 100.0):
        raise ConfigError(f"percentile {p!r} is outside [0, 100]; e.g. 99 clips each tensor at its 99th "
                          "percentile of |value|, 100 changes nothing")
    return value


def _is_norm(t: TensorInfo) -> bool:
    return t.role.is_norm and t.param != "bias" and t.convention is not None and len(t.shape) == 1


def _is_linear(t: TensorInfo) -> bool:
    return t.role.is_linear and t.param != "bias" and len(t.shape) >= 2


def in_scope(model: Model, scope: ClipScope, include: Sequence[str] = (), exclude: Sequence[str] = ()
             ) -> list[TensorInfo]:
    """The tensors `scope` covers, filtered by the globs: norm gains, Linear weights, or both.
    Embeddings, biases and everything else are never clipped."""
    want_norms = scope in (ClipScope.NORMS, ClipScope.ALL)
    want_linear = scope in (ClipScope.LINEAR, ClipScope.ALL)
    return [t for t in model.tensors
            if ((want_norms and _is_norm(t)) or (want_linear and _is_linear(t))) and selected(t, include, exclude)]


def convention_of(t: TensorInfo) -> NormConvention | None:
    """The convention a norm is clipped in; None for a weight (clipped on |w|)."""
    return t.convention if _is_norm(t) else None


def _values(stored: np.ndarray, conv: NormConvention | None) -> np.ndarray:
    """What is clipped: the effective gain of a norm, the weight itself otherwise (float64 in, float64 out)."""
    return effective_gain(stored, conv) if conv is not None else stored


def check_finite(values: np.ndarray, info: TensorInfo) -> None:
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise CheckpointError(f"tensor {info.name!r} holds NaN/Inf values ({bad} in the part read); its percentiles "
                              "mean nothing and clip refuses damaged tensors: run `normscope analyze` on it")


def tensor_thresholds(model: Model, info: TensorInfo, percentiles: Sequence[float],
                      chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> tuple[list[float], float]:
    """(threshold per percentile, max |value|) of a whole tensor: `np.percentile(|value|, p, method="lower")`,
    for a norm stepped down to the fixed point that keeps clipping idempotent (see the module docstring).

    Norms are read whole when they fit a chunk (every real one); weights, and norms too long for a chunk,
    are streamed through `ExactQuantiles` (exact; a second pass only when the first could not pin a rank;
    a long norm's |gain| in float32, and without the fixed-point step).

    Raises:
        CheckpointError: the tensor holds NaN or Inf.
    """
    conv = convention_of(info)
    if (conv is not None and info.n_params <= chunk_elements) or info.n_params <= min(chunk_elements, SUB_VALUES):
        stored = model.read(info).astype(np.float64).reshape(-1)
        mag = np.abs(_values(stored, conv))
        check_finite(mag, info)
        if not mag.size:
            return [0.0] * len(percentiles), 0.0
        found = [float(v) for v in np.percentile(mag, list(percentiles), method=PERCENTILE_METHOD)]
        if conv is not None and info.dtype in FLOAT_DTYPES:
            raw = encode(stored, info.dtype).reshape(1, -1)  # exact: the values were decoded from this dtype
            found = [_stable_threshold(raw, info.dtype, conv, p, t) for p, t in zip(percentiles, found)]
        return found, float(mag.max())
    q = ExactQuantiles(info.n_params, tuple(percentiles))
    top = 0.0

    def magnitudes() -> Iterator[np.ndarray]:  # |value| (a norm's |gain|) in float32, a chunk at a time
        for _, values in model.iter_values(info, chunk_elements):
            yield np.abs(_values(values.astype(np.float64), conv)).astype(np.float32) if conv else np.abs(values)

    for mag in magnitudes():
        check_finite(mag, info)
        top = max(top, float(mag.max()) if mag.size else 0.0)
        q.update(mag)
    if q.missing():
        q.refine()
        for mag in magnitudes():
            q.update(mag)
    values = q.result(PERCENTILE_METHOD)
    return [values[p] for p in percentiles], top


def _stable_threshold(raw: np.ndarray, dtype: str, conv: NormConvention, p: float, t: float) -> float:
    """The largest threshold ≤ `t` that is the `p`-th percentile of the gains clipping at it leaves.

    Each step clips at the current threshold and takes the percentile of the result; the sequence
    only falls, through values of a finite set, so it stops (usually at once: `t` itself).
    """
    while True:
        _, _, after = clip_rows(raw, dtype, t, conv)
        again = float(np.percentile(after, p, method=PERCENTILE_METHOD))
        if again >= t:
            return t
        t = again


def row_thresholds(values: np.ndarray, percentiles: Sequence[float]) -> np.ndarray:
    """(len(percentiles), rows) thresholds: each row's percentile of |value| (numpy, method "lower")."""
    return np.percentile(np.abs(values), list(percentiles), axis=1, method=PERCENTILE_METHOD
                         ).reshape(len(percentiles), values.shape[0])


def protected_cells(candidates: Sequence[SuperWeightCandidate]) -> dict[str, dict[int, list[int]]]:
    """{tensor: {row: [cols]}} of the super-weight candidates."""
    out: dict[str, dict[int, list[int]]] = {}
    for c in candidates:
        out.setdefault(c.tensor, {}).setdefault(c.row, []).append(c.col)
    return out


def keep_mask(cells: dict[int, list[int]] | None, row0: int, shape: tuple[int, int]) -> np.ndarray | None:
    """Boolean (rows, cols) mask of the protected cells inside rows [row0, row0 + rows), or None."""
    if not cells:
        return None
    mask = None
    for r, cols in cells.items():
        if row0 <= r < row0 + shape[0]:
            if mask is None:
                mask = np.zeros(shape, bool)
            mask[r - row0, cols] = True
    return mask


def clip_rows(raw: np.ndarray, dtype: str, thresholds: np.ndarray | float, conv: NormConvention | None,
              keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clip a chunk of stored rows.

    Args:
        raw: (rows, cols) values of the storage dtype (`dtype`, one of F64/F32/F16/BF16).
        thresholds: a scalar, or one per row (shape (rows,) or (rows, 1)); compared with |value|.
        conv: the norm convention (clip the effective gain, store back in it), or None for a weight.
        keep: cells never to change (super-weight candidates), or None.

    Returns:
        (new raw rows, mask of the cells changed, |value| of the new rows as float64). Unchanged cells
        keep their stored bits; a changed cell holds the representable value nearest ±threshold with
        |value| ≤ threshold.

    Example:
        >>> new, mask, _ = clip_rows(np.array([[0.0, 1656.0]], np.float32), "F32", 10.0, NormConvention.ONE_PLUS_W)
        >>> new.tolist(), mask.tolist()   # gain 1657 -> 10, stored back as w = 9
        ([[0.0, 9.0]], [[False, True]])
    """
    if dtype not in FLOAT_DTYPES:
        raise CheckpointError(f"cannot clip {dtype} values; clip rewrites {', '.join(FLOAT_DTYPES)} tensors")
    value = _values(raw.astype(np.float64), conv)
    limit = np.broadcast_to(np.asarray(thresholds, np.float64).reshape(-1, 1) if np.ndim(thresholds)
                            else np.float64(thresholds), value.shape)
    mask = np.abs(value) > limit
    if keep is not None:
        mask &= ~keep
    if not mask.any():
        return raw, mask, np.abs(value)
    bound = np.where(value[mask] > 0, limit[mask], -limit[mask])  # ±threshold, same sign as the value
    target = stored_from_gain(bound, conv) if conv is not None else bound
    stored = encode(target, dtype)
    for _ in range(4):  # rounding may land just beyond the bound: step back toward it
        got = _values(stored.astype(np.float64), conv)
        over = np.abs(got) > np.abs(bound)
        if not over.any():
            break
        stored[over] = step_toward(stored[over], got[over] < 0)
    else:
        raise AssertionError("clipped values do not fit under their threshold after rounding")
    new = raw.copy()
    new[mask] = stored
    value[mask] = got
    return new, mask, np.abs(value)


def raw_rows(ckpt: Checkpoint, entry: TensorEntry, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS
             ) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, stored rows as a fresh (rows, cols) array of the storage dtype), whole rows per chunk; the one
    row of a 1-D tensor longer than a chunk (a norm of an unusual checkpoint) comes in (1, k) pieces."""
    if entry.n_rows == 1 and entry.row_len > chunk_elements:
        for start in range(0, entry.row_len, chunk_elements):
            yield 0, ckpt.read_raw_values(entry, start, min(chunk_elements, entry.row_len - start)).reshape(1, -1)
        return
    step = ckpt.rows_per_chunk(entry, chunk_elements)
    for row0 in range(0, entry.n_rows, step):
        n = min(step, entry.n_rows - row0)
        yield row0, ckpt.read_raw_rows(entry, row0, n).reshape(n, entry.row_len)


@dataclass
class Tally:
    """What clipping one tensor did, accumulated chunk by chunk."""

    clipped: int = 0
    protected: int = 0
    max_before: float = 0.0
    max_after: float = 0.0
    t_min: float = math.inf
    t_max: float = -math.inf

    def add(self, before: np.ndarray, after: np.ndarray, mask: np.ndarray, limit: np.ndarray,
            keep: np.ndarray | None) -> None:
        """before/after: |value| (rows, cols); limit: thresholds broadcastable to them."""
        self.clipped += int(mask.sum())
        if keep is not None:
            self.protected += int((keep & (before > limit)).sum())
        if before.size:
            self.max_before = max(self.max_before, float(before.max()))
            self.max_after = max(self.max_after, float(after.max()))
        lim = np.asarray(limit)
        if lim.size:
            self.t_min = min(self.t_min, float(lim.min()))
            self.t_max = max(self.t_max, float(lim.max()))
