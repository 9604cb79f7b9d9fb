"""Number formatting shared by the text renderers (terminal and Markdown)."""

from __future__ import annotations

import math

__all__ = ["num", "count", "size", "pct"]


def num(x: float | None, digits: int = 4) -> str:
    """Compact: integers as integers, large values with one decimal, small with `digits` significant."""
    if x is None:
        return "—"
    if isinstance(x, str):
        return x
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == int(x) and abs(x) < 1e15:
        return f"{int(x)}"
    if abs(x) >= 100:
        return f"{x:.1f}"
    return f"{x:.{digits}g}"


def count(n: int) -> str:
    return f"{n:,}"


def size(n_bytes: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes} B"


def pct(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "—"
