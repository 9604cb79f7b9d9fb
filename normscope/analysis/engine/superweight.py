"""Data-free super-weight candidates: single weights of the MLP down projections that stand out of
both their row and their column.

Yu et al., "The Super Weight in Large Language Models" (2024, arXiv 2411.07191) find that a handful of
scalars in early `mlp.down_proj` layers (Llama-7B: layers.2.mlp.down_proj[3968, 7003]) carry the model:
pruning one destroys it. They locate them with one forward pass (the down_proj input and output spikes
meet at the super weight's column and row). Without activations, the weight itself is the evidence:
a super weight's |w| is extreme against the rest of its row and the rest of its column. This module
reports such weights as candidates; a forward check can confirm them later. `clip` never clips them.

The z-scores are leave-one-out (the weight against the *other* values of its row or column), so a
single outlier is not capped at sqrt(n - 1) as a plain z-score is.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import numpy as np

from ...io import DEFAULT_CHUNK_ELEMENTS
from ...results import Role, SuperWeightCandidate, TensorInfo
from .model import Model

__all__ = ["super_weight_candidates", "SUPER_WEIGHT_Z", "loo_z"]

SUPER_WEIGHT_Z = 25.0  # both leave-one-out z-scores at least this (Gemma 3 270M's strongest: ~30-45)
MAX_PER_TENSOR = 8
SUB_VALUES = 1 << 20  # values scored at once (float64 temporaries of ~8 MiB)


def loo_z(a: np.ndarray, s1: np.ndarray, s2: np.ndarray, n: int) -> np.ndarray:
    """Leave-one-out z-score of values `a` in lines of `n` values whose Σ and Σ² are `s1`, `s2` (float64).

    z = (a − mean of the others) / std of the others (population); inf when the others are all equal.
    """
    if n < 3:
        return np.zeros(np.shape(a))
    m = (s1 - a) / (n - 1)
    var = np.maximum((s2 - a * a) / (n - 1) - m * m, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (a - m) / np.sqrt(var)
    return np.where(var > 0, z, np.where(a > m, np.inf, 0.0))


def super_weight_candidates(model: Model, tensors: Sequence[TensorInfo] | None = None, *,
                            z_threshold: float = SUPER_WEIGHT_Z, max_per_tensor: int = MAX_PER_TENSOR,
                            chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> tuple[SuperWeightCandidate, ...]:
    """Weights of 2-D mlp down_proj tensors whose |w| has leave-one-out z ≥ `z_threshold` in both
    its row and its column.

    Args:
        model: an open model.
        tensors: where to look (default: every 2-D tensor with role mlp_down); other roles are ignored.
        z_threshold: the smaller of the two z-scores must reach this.
        max_per_tensor: keep at most this many per tensor, largest z first.
        chunk_elements: rows are streamed in chunks of at most this many values.

    Returns:
        Candidates as (tensor, row, col, value, z) records, by tensor then descending z.

    Example:
        >>> with open_model("gemma-3-270m-hf") as m:  # doctest: +SKIP
        ...     [(c.tensor, c.row, c.col) for c in super_weight_candidates(m)][:1]
        [('model.layers.0.mlp.down_proj.weight', 400, 1405)]
    """
    pool = model.tensors if tensors is None else tensors
    out: list[SuperWeightCandidate] = []
    for info in pool:
        if info.role is Role.MLP_DOWN and len(info.shape) == 2 and info.n_params:
            out += _tensor_candidates(model, info, z_threshold, max_per_tensor, chunk_elements)
    return tuple(out)


def _tensor_candidates(model: Model, info: TensorInfo, z_threshold: float, max_per_tensor: int,
                       chunk_elements: int) -> list[SuperWeightCandidate]:
    n_rows, n_cols = info.shape
    c1 = np.zeros(n_cols)  # Σ|w| per column
    c2 = np.zeros(n_cols)  # Σw² per column
    keep: list[tuple[float, int, int, float]] = []  # (row z, row, col, value): a bounded heap of the best
    limit = 4 * max_per_tensor
    step = max(1, SUB_VALUES // max(1, n_cols))
    for row0, rows in model.iter_rows(info, chunk_elements):
        for r in range(0, rows.shape[0], step):
            block = rows[r:r + step].astype(np.float64)  # (rows, n_cols)
            a = np.abs(block)
            c1 += a.sum(axis=0)
            c2 += (a * a).sum(axis=0)
            z = loo_z(a, a.sum(axis=1, keepdims=True), (a * a).sum(axis=1, keepdims=True), n_cols)
            hit = np.argwhere(z >= z_threshold)  # (k, 2)
            if len(hit) > limit:  # only the best `limit` of this block can matter
                hit = hit[np.argpartition(-z[hit[:, 0], hit[:, 1]], limit)[:limit]]
            for i, j in hit:
                item = (float(z[i, j]), row0 + r + int(i), int(j), float(block[i, j]))
                if len(keep) < limit:
                    heapq.heappush(keep, item)
                elif item > keep[0]:
                    heapq.heapreplace(keep, item)
    found = []
    for z_row, row, col, value in keep:
        z_col = float(loo_z(np.float64(abs(value)), c1[col], c2[col], n_rows))
        z = min(z_row, z_col)
        if z >= z_threshold:
            found.append(SuperWeightCandidate(info.name, row, col, value, z))
    found.sort(key=lambda c: (-c.z, c.row, c.col))
    return found[:max_per_tensor]
