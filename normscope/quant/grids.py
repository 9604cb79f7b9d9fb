"""The published lattice grids of ggml's IQ types, handed to the compiled quantizers once per type.

ref: gguf-py's quants.py (`grid_hex`, `grid_map`, `grid_shape` of IQ2_XXS … IQ1_M), the grids of
ggml-common.h in the form llama.cpp publishes them for dequantization. The kernels build their own
search tables (the inverse maps and neighbour lists of ggml-quants.c's iq2xs_init_impl /
iq3xs_init_impl) from these points.
"""

from __future__ import annotations

from functools import cache

import numpy as np

__all__ = ["grid_points", "load_grid"]


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


def load_grid(name: str) -> None:
    """Set up the compiled quantizer of `name` from its grid (a no-op for other types or when done)."""
    from .._kernels import init_type, qtypes

    needs = {row[0]: row[6] for row in qtypes()}
    if needs.get(name):
        points = grid_points(name)
        if points is None:
            raise ValueError(f"{name}: gguf-py has no grid for it")
        init_type(name, points.tobytes())
