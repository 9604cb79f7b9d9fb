"""Which terminal and Markdown renderers a result has: one pair per result type, registered by the module
that owns it (as the HTML sections are), so a caller renders any result through one call.

The terminal renderers show text through `terminal.render_tables`, which makes control characters visible;
a Markdown document is passed through `fmt.visible` here as a whole (its own line breaks kept), so no renderer
can forget it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import UnknownNameError
from .fmt import visible

__all__ = ["register_text", "register_verdict", "verdict", "terminal_report", "markdown_report"]

TerminalFn = Callable[..., str]  # fn(result, top, width, color) -> str
MarkdownFn = Callable[..., str]  # fn(result, top) -> str
VerdictFn = Callable[[Any], list[str]]  # fn(result) -> one to three lines


@dataclass(frozen=True)
class _Renderers:
    terminal: TerminalFn
    markdown: MarkdownFn


_RENDERERS: dict[type, _Renderers] = {}
_VERDICTS: dict[type, VerdictFn] = {}


def register_text(result_type: type, *, terminal: TerminalFn, markdown: MarkdownFn) -> None:
    """Render results of `result_type` with `terminal(result, top, width, color)` and `markdown(result, top)`."""
    _RENDERERS[result_type] = _Renderers(terminal, markdown)


def register_verdict(result_type: type, fn: VerdictFn) -> None:
    """`fn(result)` gives the one to three lines every report of `result_type` opens with: what matters in this
    checkpoint and what to do, each claim read off the result's own numbers."""
    _VERDICTS[result_type] = fn


def verdict(result: Any) -> list[str]:
    """The verdict lines of any result whose type registered one (else none).

    Example:
        >>> verdict(normscope.analyze("example:gemma3-270m"))[0]  # doctest: +SKIP
        'no damage (no NaN or Inf in 236 tensors)'
    """
    for result_type, fn in _VERDICTS.items():
        if isinstance(result, result_type):
            return fn(result)
    return []


def _renderers(result: Any) -> _Renderers:
    for result_type, fns in _RENDERERS.items():
        if isinstance(result, result_type):
            return fns
    raise UnknownNameError("result type for text reports", type(result).__name__, [t.__name__ for t in _RENDERERS])


def terminal_report(result: Any, top: int = 10, width: int = 120, color: bool = False) -> str:
    """The terminal summary of any registered result, at `width` columns, in colour when `color`.

    Example:
        >>> print(terminal_report(normscope.analyze("example:gemma3-270m"), top=5))  # doctest: +SKIP
    """
    return _renderers(result).terminal(result, top, width, color)


def markdown_report(result: Any, top: int = 10) -> str:
    """The GitHub-flavoured Markdown report of any registered result (`top` rows per ranked table)."""
    return visible(_renderers(result).markdown(result, top), keep="\n")
