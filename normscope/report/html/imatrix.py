"""HTML sections of the imatrix reports: the same tables and notes as the terminal."""

from __future__ import annotations

from ...results import ImatrixCompareResult, ImatrixResult
from ..imatrix import (imatrix_compare_header, imatrix_compare_tables, imatrix_header, imatrix_tables)
from .page import Note, Notes, Section, Text
from .registry import register_sections

__all__ = ["imatrix_sections", "imatrix_compare_sections"]


def _notes(notes: tuple[str, ...]) -> tuple[Notes, ...]:
    return (Notes("What to read", tuple(Note("info", n) for n in notes)),) if notes else ()


@register_sections(ImatrixResult)
def imatrix_sections(r: ImatrixResult, top: int | None = None) -> list[Section]:
    """Sections of an imatrix summary; `top` limits the tables (None: every entry)."""
    n = top if top is not None else max(len(r.tensors), 1)
    blocks = (Text(" · ".join(imatrix_header(r))), *_notes(r.notes), *imatrix_tables(r, n))
    return [Section("Importance matrix", blocks, id="imatrix")]


@register_sections(ImatrixCompareResult)
def imatrix_compare_sections(r: ImatrixCompareResult, top: int | None = None) -> list[Section]:
    """Sections of two importance matrices compared; `top` limits the table (None: every tensor)."""
    n = top if top is not None else max(len(r.pairs), 1)
    blocks = (Text(" · ".join(imatrix_compare_header(r))), *_notes(r.notes), *imatrix_compare_tables(r, n))
    return [Section("Two importance matrices", blocks, id="imatrix-compare")]
