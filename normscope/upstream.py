"""Rules and tables of the upstream toolchains that more than one layer must apply alike: `io` reads what
those tools wrote and `quant` simulates them, and the two layers never import each other.

- optimum-quanto's group size;
- the published lattice grids of ggml's IQ types (gguf-py's quants.py: `grid_hex`, `grid_map`, `grid_shape`
  of IQ2_XXS … IQ1_M, the grids of ggml-common.h as llama.cpp publishes them for dequantization), handed
  to the compiled quantizers once per type; the kernels build their own search tables (the inverse maps and
  neighbour lists of ggml-quants.c's iq2xs_init_impl / iq3xs_init_impl) from these points.
"""

from __future__ import annotations

from functools import cache

import numpy as np

__all__ = ["quanto_group_size", "grid_points", "load_grid"]


def quanto_group_size(in_features: int) -> int | None:
    """The group size optimum-quanto picks for a qint4/qint2 Linear with `in_features` inputs
    (None: one group per row): 128, shrinking by 32 until it divides the row.

    ref: optimum/quanto/nn/qmodule.py `QModuleMixin.__init__`.

    Example:
        >>> quanto_group_size(640), quanto_group_size(2048), quanto_group_size(64)
        (128, 128, None)
    """
    group_size = 128
    if in_features > group_size:
        while in_features % group_size != 0 and group_size > 32:
            group_size -= 32
        if in_features % group_size == 0:
            return group_size
    return None


@cache
def grid_points(name: str) -> np.ndarray | None:
    """int8 (n_points, dim): the grid of IQ type `name` as coordinate values (IQ2: 8, 25, 43; IQ3: 4 … 62;
    IQ1: -1, 0, 1), or None for a type without a grid."""
    import gguf.quants

    cls = getattr(gguf.quants, name, None)
    if cls is None or not getattr(cls, "grid_shape", (0, 0))[0]:
        return None
    cls.init_grid()
    points = np.asarray(cls.grid, dtype=np.float32).reshape(cls.grid_shape)
    return points.astype(np.int8)


@cache
def load_grid(name: str) -> None:
    """Set up the compiled quantizer of `name` from its grid, once (a no-op for types without one)."""
    from ._kernels import init_type, qtypes

    needs = {row[0]: row[6] for row in qtypes()}
    if needs.get(name):
        points = grid_points(name)
        if points is None:
            raise ValueError(f"{name}: gguf-py has no grid for it")
        init_type(name, points.tobytes())
