"""Rules of the upstream toolchains that more than one layer must apply alike: `io` reads what those
tools wrote and `quant` simulates them, and the two layers never import each other.
"""

from __future__ import annotations

__all__ = ["quanto_group_size"]


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
