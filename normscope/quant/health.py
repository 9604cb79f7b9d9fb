"""Block health: how a format's blocks cope with a tensor, beyond the error they leave.

- dominated blocks: a single value is more than `DOMINANCE` times the mean |x| of the rest of its
  block, so the block's scale is spent on it and the others get few levels;
- scale underflow: a block with nonzero values whose fp16 scale is 0 or subnormal (below 2^-14);
  scale overflow: a block whose fp16 scale would be infinite;
- rounded to zero: nonzero weights that come back as exactly 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BlockHealth", "block_health", "DOMINANCE", "FP16_MIN_NORMAL", "FP16_MAX"]

DOMINANCE = 10.0
FP16_MIN_NORMAL = 2.0 ** -14
FP16_MAX = 65504.0
# largest quantized magnitude the block scale divides by, per ggml type (d = amax / QMAX)
QMAX = {"Q4_0": 8, "Q4_1": 15, "Q5_0": 16, "Q5_1": 31, "Q8_0": 127, "Q2_K": 3 * 15, "Q3_K": 4 * 32,
        "Q4_K": 15 * 63, "Q5_K": 31 * 63, "Q6_K": 32 * 128}


@dataclass
class BlockHealth:
    """Counts, mergeable across chunks (add them)."""

    blocks: int = 0
    dominated: int = 0
    scale_underflow: int = 0
    scale_overflow: int = 0
    nonzero: int = 0
    rounded_to_zero: int = 0

    def add(self, other: BlockHealth) -> None:
        for k in vars(self):
            setattr(self, k, getattr(self, k) + getattr(other, k))


def block_health(x: np.ndarray, y: np.ndarray, block_size: int, fmt: str | None = None) -> BlockHealth:
    """Health of one chunk: x the original rows, y their fake-quantized values, same shape.

    `block_size` is the format's block (or group) length along rows; `fmt` a ggml type name for the
    fp16 scale checks (None: skipped).
    """
    rows = x.reshape(-1, x.shape[-1])
    if rows.shape[1] % block_size:
        block_size = rows.shape[1]
    blocks = np.abs(rows.reshape(-1, block_size)).astype(np.float32)
    peak = blocks.max(axis=1)
    rest = (blocks.sum(axis=1, dtype=np.float64) - peak) / max(block_size - 1, 1)
    h = BlockHealth(blocks=blocks.shape[0])
    h.dominated = int(np.count_nonzero(peak > DOMINANCE * rest)) if block_size > 1 else 0
    if fmt in QMAX:
        d = peak.astype(np.float64) / QMAX[fmt]
        nonzero = peak > 0
        h.scale_underflow = int(np.count_nonzero(nonzero & (d < FP16_MIN_NORMAL)))
        h.scale_overflow = int(np.count_nonzero(d > FP16_MAX))
    nz = x != 0
    h.nonzero = int(np.count_nonzero(nz))
    h.rounded_to_zero = int(np.count_nonzero(nz & (y == 0)))
    return h
