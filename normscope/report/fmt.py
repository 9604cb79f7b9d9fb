"""Formatting shared by the renderers: numbers (terminal and Markdown), and `visible`, which every text
sink (terminal, Markdown, HTML, the CLI's error line) applies to what it shows."""

from __future__ import annotations

import math
import re

__all__ = ["num", "count", "size", "pct", "visible"]

# C0 controls, DEL and C1 controls: a tensor name, a file name or a path is data the checkpoint's author chose, and
# these characters would reach the terminal as commands (ESC starts the sequences that clear the screen, set the
# window title or write hyperlinks; C1's CSI, U+009B, does the same in one character; CR rewrites a printed line)
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def visible(text: str, keep: str = "") -> str:
    r"""`text` with every control character spelled out as Python writes it in a string (`\x1b`, `\n`),
    except those in `keep` (a whole document keeps its own line breaks: `keep="\n"`).

    Idempotent: the result holds no control character besides those kept. JSON output does not use it; JSON
    escapes controls itself and keeps names exact.

    Example:
        >>> print(visible("\x1b[2Jmodel.norm.weight\r"))
        \x1b[2Jmodel.norm.weight\r
    """
    return _CONTROLS.sub(lambda m: m[0] if m[0] in keep else repr(m[0])[1:-1], text)


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
