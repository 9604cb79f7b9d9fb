"""Block health: how a format's blocks cope with a tensor, beyond the error they leave. The compiled kernel
counts it in the pass that quantizes (normscope/kernels/qmeasure.c), under these definitions:

- dominated blocks: a single value is more than `DOMINANCE` times the mean |x| of the rest of its
  block, so the block's scale is spent on it and the others get few levels;
- the fp16 block scale d that ggml stores, read from the quantized bytes: *underflow* when a block with
  nonzero values stores d = 0 (it reads back flat), *subnormal* when 0 < |d| < 2^-14 (d keeps fewer than
  10 significant bits, so every level of the block is off by up to 2^-24/|d| relative), *overflow* when d
  is infinite or NaN;
- rounded to zero: nonzero weights that come back as exactly 0.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from .._kernels import measure
from ..upstream import load_grid

__all__ = ["BlockHealth", "block_health", "DOMINANCE", "FP16_MIN_NORMAL"]

N_BINS = 1 << 15  # the kernel's |d| histogram (unused here)

DOMINANCE = 10.0  # the kernel's DOMINANCE
FP16_MIN_NORMAL = 2.0 ** -14  # the kernel's FP16_MIN_NORMAL


@dataclass
class BlockHealth:
    """Counts, mergeable across chunks (add them)."""

    blocks: int = 0
    dominated: int = 0
    scale_underflow: int = 0
    scale_subnormal: int = 0
    scale_overflow: int = 0
    nonzero: int = 0
    rounded_to_zero: int = 0

    def add(self, other: BlockHealth) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


def block_health(x: np.ndarray, fmt: str, imatrix: np.ndarray | None = None) -> BlockHealth:
    """Health of `x` (rows along the last axis) stored in ggml type `fmt`, as the compiled kernel measures it
    while it quantizes (normscope/kernels/qmeasure.c; the stored fp16 scales are read from the bytes).

    Example:
        >>> x = np.zeros((1, 32), np.float32); x[0, 3] = 1.0
        >>> block_health(x, "Q8_0").dominated
        1
    """
    from .base import get_format

    cls = get_format(fmt)
    rows = np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(-1, np.shape(x)[-1] if np.ndim(x) else 1))
    n = rows.shape[1]
    cls.check_shape(rows.shape)
    weights = cls.importance(imatrix, n)
    load_grid(cls.name)
    counts = np.zeros(7, dtype=np.int64)
    if rows.size:
        measure(cls.name, rows, None, n, weights, None, None, np.zeros(N_BINS, np.uint8), np.empty(rows.size, np.float32),
                np.zeros(N_BINS, np.int64), np.zeros(10), counts, cls.group_length(n))
    return BlockHealth(*counts.tolist())
