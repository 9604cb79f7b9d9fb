"""The check report as HTML sections: the verdict, each rule as applied, the failures. Tables are those of
`report.check`."""

from __future__ import annotations

from ...results import CheckResult
from ..check import check_header, check_tables
from .page import Note, Notes, Section, Text
from .registry import register_sections

__all__ = ["check_sections"]


@register_sections(CheckResult)
def check_sections(r: CheckResult, top: int | None = None) -> list[Section]:
    """Sections of a check report; `top` limits the failures table (None: all)."""
    rules, failures = check_tables(r, top if top is not None else len(r.failures))
    blocks = [Text(" · ".join(check_header(r))), rules]
    if r.failures:
        blocks.append(failures)
    sections = [Section("Check", tuple(blocks), id="check")]
    if r.warnings:
        notes = tuple(Note("warning", w) for w in r.warnings)
        sections.append(Section("What to read", (Notes("Notes", notes),), id="check-notes"))
    return sections
