"""Codes times block scales: the dequantization FP8 and compressed-tensors checkpoints share.

weight[o, i] = (code[o, i] − zero[o // bh, i // bw]) · scale[o // bh, i // bw], computed in the
scale's dtype, where (bh, bw) is the scale's block: (1, in) per channel, (1, group) per group,
(out, in) per tensor, (128, 128) for DeepSeek-V3's FP8 (ref: transformers
integrations/finegrained_fp8.py `Fp8Dequantize._dequantize_one`; compressed-tensors
quantization/lifecycle/forward_helpers.py `_dequantize`, `_process_group`, `_process_block`).
A per-group scale may also be indexed by a `g_idx` (activation order) instead of i // bw.
The codes come from a callable, so int8, fp8 and bit-packed codes share this class.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..checkpoint import Checkpoint, TensorEntry
from .base import Logical, bad_shape, logical_entry, read_block, read_small, round_to

__all__ = ["ScaledWeight", "block_dims"]

# (ckpt, row0, n_rows) -> float32 codes (n_rows, in) and the same for zero points (rows of the scale grid)
CodeReader = Callable[[Checkpoint, int, int], np.ndarray]


def block_dims(scale: TensorEntry, out: int, inp: int, block: tuple[int, int] | None = None,
               group: int | None = None) -> tuple[int, int]:
    """(bh, bw): the rows and columns of the weight that one scale covers.

    Args:
        scale: the scale tensor; its shape is the grid (a scalar or (1,) is one block).
        out, inp: the weight's shape.
        block: the block the config names (weight_block_size, block_structure), if any.
        group: the group size the config names (a per-group scale), if any.

    Raises:
        CheckpointError: the grid does not tile the weight with the named (or any) block.

    Example:
        >>> block_dims(TensorEntry("s", (2, 3), "F32", Path("f"), 0, 24), 256, 300)  # doctest: +SKIP
        (128, 128)
    """
    shape = scale.shape
    rows, cols = (1, 1) if len(shape) == 0 or shape == (1,) else (shape[0], 1) if len(shape) == 1 else shape[-2:]
    if block is None and group:
        block = (1, group)
    if block is None:  # infer: each scale covers ceil(size / grid) of a dimension
        block = (-(-out // rows) if rows else 0, -(-inp // cols) if cols else 0)
    bh, bw = int(block[0]), int(block[1])
    if len(shape) > 2 or bh <= 0 or bw <= 0 or (-(-out // bh), -(-inp // bw)) != (rows, cols):
        raise bad_shape(scale, f"a {-(-out // max(bh, 1))}×{-(-inp // max(bw, 1))} grid",
                        f"{bh}×{bw} blocks over a {out}×{inp} weight")
    return bh, bw


class ScaledWeight(Logical):
    """(codes − zero) · scale, the scale (and zero) broadcast over (bh, bw) blocks or gathered by g_idx."""

    def __init__(self, name: str, shape: tuple[int, int], label: str, parts: list[TensorEntry], anchor: str,
                 codes: CodeReader, scale: TensorEntry, block: tuple[int, int], *,
                 zeros: CodeReader | None = None, g_idx: TensorEntry | None = None):
        super().__init__(logical_entry(name, shape, label, parts), anchor)
        self.out, self.inp = shape
        self.codes, self.scale, self.block, self.zeros, self.g_idx = codes, scale, block, zeros, g_idx
        self._g: np.ndarray | None = None

    def _expand(self, grid: np.ndarray, row0: int, n_rows: int, first_grid_row: int, ckpt: Checkpoint) -> np.ndarray:
        bh, bw = self.block
        rows = grid[(np.arange(row0, row0 + n_rows) // bh) - first_grid_row]  # (n, grid cols)
        if self.g_idx is not None:
            if self._g is None:
                g = read_small(ckpt, self.g_idx).astype(np.int64).reshape(-1)
                if g.shape != (self.inp,) or (g.size and (g.min() < 0 or g.max() >= grid.shape[1])):
                    raise bad_shape(self.g_idx, f"{self.inp} group indices in [0, {grid.shape[1]})", "activation order",
                                    f"{g.size} indices in [{g.min() if g.size else 0}, {g.max() if g.size else 0}]")
                self._g = g
            return rows[:, self._g]
        if bw == 1:
            return rows
        if rows.shape[1] == 1:
            return rows  # broadcasts over the row
        return np.repeat(rows, bw, axis=1)[:, : self.inp]

    def rows(self, ckpt: Checkpoint, row0: int, n_rows: int) -> np.ndarray:
        bh = self.block[0]
        s0, s1 = row0 // bh, -(-(row0 + n_rows) // bh)
        s = self.scale
        if len(s.shape) == 0 or s.shape == (1,):  # one scale for the tensor
            s0, grid = 0, read_small(ckpt, s).reshape(1, 1)
        elif len(s.shape) == 1:  # one per row, stored 1-D
            grid = read_block(ckpt, s, 0, 1, s0, s1 - s0).reshape(-1, 1)
        else:
            grid = read_block(ckpt, s, s0, s1 - s0)
        w = self.codes(ckpt, row0, n_rows)
        if self.zeros is not None:
            w -= self._expand(self.zeros(ckpt, s0, s1 - s0), row0, n_rows, s0, ckpt)
        w *= self._expand(grid.astype(np.float32), row0, n_rows, s0, ckpt)
        return round_to(w, s.dtype)
