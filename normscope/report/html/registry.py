"""Which sections a result becomes: one builder per result type, registered by the module that owns it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ...errors import UnknownNameError
from ..text import verdict
from .page import Section, Verdict, html_page

__all__ = ["register_sections", "sections_for", "report_html"]

SectionsFn = Callable[..., list[Section]]  # fn(result, top=None): top rows per table, None for all
F = TypeVar("F", bound=SectionsFn)
_BUILDERS: dict[type, SectionsFn] = {}


def register_sections(result_type: type) -> Callable[[F], F]:
    """Decorator: `fn(result, top=None) -> list[Section]` renders results of `result_type`."""
    def wrap(fn: F) -> F:
        _BUILDERS[result_type] = fn
        return fn
    return wrap


def sections_for(result: Any, top: int | None = None) -> list[Section]:
    """The sections of any registered result, opening with its verdict (`text.verdict`) when it has one; `top`
    limits the rows of ranked tables (None: all).

    Raises:
        UnknownNameError: no builder for this result type (the message lists the known ones).
    """
    for result_type, fn in _BUILDERS.items():
        if isinstance(result, result_type):
            lines = verdict(result)
            head = [Section("Verdict", (Verdict(tuple(lines)),), id="verdict")] if lines else []
            return head + fn(result, top=top)
    raise UnknownNameError("result type for HTML", type(result).__name__, [t.__name__ for t in _BUILDERS])


def report_html(*results: Any, title: str | None = None, top: int | None = None) -> str:
    """One page holding the sections of every result, in the order given (e.g. analyze, then simulate).

    Example:
        >>> report_html(analyze_result, simulate_result, title="gemma-3-270m")  # doctest: +SKIP
    """
    if not results:
        raise ValueError("report_html needs at least one result")
    first = results[0]
    source = getattr(first, "source", None)
    spec = (source.spec or source.path) if source is not None else ""
    kinds = " + ".join(str(getattr(r, "schema", type(r).__name__)).removeprefix("normscope.") for r in results)
    schemas = ", ".join(f"{r.schema} {r.schema_version}" for r in results if hasattr(r, "schema_version"))
    title = title or f"normscope {kinds}"
    return html_page(title, [s for r in results for s in sections_for(r, top)], subtitle=spec,
                     footer=f"Every number on this page is in the JSON documents ({schemas}) that --json writes.")
