"""Block health: how a format's blocks cope with a tensor, beyond the error they leave.

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

from .layouts import LAYOUTS, SCALE_OFFSET

__all__ = ["BlockHealth", "block_health", "block_scales", "DOMINANCE", "FP16_MIN_NORMAL"]

DOMINANCE = 10.0
FP16_MIN_NORMAL = 2.0 ** -14


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


def block_scales(raw: np.ndarray, fmt: str) -> np.ndarray | None:
    """The fp16 scale d of every block, as float32, from ggml bytes of type `fmt` (None: no such field)."""
    offset = SCALE_OFFSET.get(fmt)
    if offset is None:
        return None
    blocks = np.ascontiguousarray(raw).reshape(-1, LAYOUTS[fmt].type_size)
    return blocks[:, offset:offset + 2].copy().view(np.float16).reshape(-1).astype(np.float32)


def block_health(x: np.ndarray, y: np.ndarray, block_size: int, scales: np.ndarray | None = None) -> BlockHealth:
    """Health of one chunk: x the original rows, y their quantized values, same shape.

    Args:
        block_size: the format's block (or group) length along rows.
        scales: the stored fp16 scale of each block, in block order (ggml types; None: not checked).

    Example:
        >>> x = np.zeros((1, 32), np.float32); x[0, 3] = 1.0
        >>> block_health(x, x, 32).dominated
        1
    """
    rows = x.reshape(-1, x.shape[-1])
    if rows.shape[1] % block_size:
        block_size = rows.shape[1]
    blocks = np.abs(rows.reshape(-1, block_size))
    peak = blocks.max(axis=1)
    rest = (blocks.sum(axis=1, dtype=np.float64) - peak) / max(block_size - 1, 1)
    h = BlockHealth(blocks=blocks.shape[0])
    h.dominated = int(np.count_nonzero(peak > DOMINANCE * rest)) if block_size > 1 else 0
    if scales is not None and scales.size == blocks.shape[0]:
        d = np.abs(scales)
        h.scale_underflow = int(np.count_nonzero((peak > 0) & (d == 0)))
        h.scale_subnormal = int(np.count_nonzero((d > 0) & (d < FP16_MIN_NORMAL)))
        h.scale_overflow = int(np.count_nonzero(~np.isfinite(d)))
    nz = x != 0
    h.nonzero = int(np.count_nonzero(nz))
    h.rounded_to_zero = int(np.count_nonzero(nz & (y == 0)))
    return h
