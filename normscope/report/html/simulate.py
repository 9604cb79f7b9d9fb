"""The simulate report as HTML sections: schemes side by side, per-tensor error bars, each scheme's
worst tensors, norm-aware ranking and notes. Tables are those of `report.simulate`, so the terminal,
Markdown and HTML never disagree; the bars draw SQNR values of `result.to_dict()`."""

from __future__ import annotations

import math

from ...results import SimulateResult
from .. import plots
from ..fmt import num
from ..simulate import scheme_label, simulate_tables
from ..tables import Table
from .page import Figure, Note, Notes, Section, Text
from .registry import register_sections

__all__ = ["simulate_sections"]

BARS = 30  # tensors in the error bar chart

SQNR_TEXT = ("SQNR = 20·log10(‖w‖/‖w − w'‖) of each tensor against its quantized copy: 6 dB per bit, higher is "
             "better, inf for an exact copy. The norm-aware SQNR weighs each input column (pre-norms) or output row "
             "(Gemma's post-norms) by the effective gain of the norm around the linear, i.e. the error as the next "
             "layer sees it; Δ is norm-aware minus plain.")


def _bars(r: SimulateResult) -> Figure | None:
    first = r.schemes[0]
    quantized = [t for t in first.tensors if t.error is not None and math.isfinite(t.error.sqnr_db)]
    worst = sorted(quantized, key=lambda t: t.error.sqnr_db)[:BARS]
    if not worst:
        return None
    names = [t.name for t in worst]
    series = {}
    for s in r.schemes:
        by = {t.name: t for t in s.tensors}
        series[s.scheme] = [by[n].error.sqnr_db if n in by and by[n].error is not None
                            and math.isfinite(by[n].error.sqnr_db) else None for n in names]
    data = Table("SQNR dB per tensor and scheme", ("tensor", *series),
                 tuple((n, *(num(v, 4) if v is not None else "—" for v in vals))
                       for n, *vals in zip(names, *series.values())), "l" + "r" * len(series))
    svg = plots.bars(names, series, xlabel="SQNR dB (higher is better)", fmt=lambda v: f"{v:.1f}")
    caption = (f"The {len(names)} tensors with the lowest SQNR under {first.scheme}, and what every other scheme "
               "leaves of them.")
    return Figure(svg, caption, data)


@register_sections(SimulateResult)
def simulate_sections(r: SimulateResult, top: int | None = None) -> list[Section]:
    """Sections of a simulate report; `top` limits the ranked tables (None: every quantized tensor)."""
    n = top if top is not None else max((len(s.tensors) for s in r.schemes), default=0)
    tables = simulate_tables(r, n)
    summary, per_scheme = tables[0], tables[1:]
    blocks: list = [Text(SQNR_TEXT), summary]
    bars = _bars(r)
    if bars is not None:
        blocks.append(bars)
    sections = [Section("Schemes", tuple(blocks), id="schemes")]
    for i, s in enumerate(r.schemes):
        label = scheme_label(r, s)
        notes = Notes(f"{label}: what to read", tuple(Note("info", line) for line in s.notes))
        sections.append(Section(label, (notes, *per_scheme[2 * i:2 * i + 2]), id=f"scheme-{s.scheme}"))
    if r.errors or r.warnings:
        found = tuple(Note("error", e) for e in r.errors) + tuple(Note("warning", w) for w in r.warnings)
        sections.append(Section("Warnings", (Notes("Warnings", found),), id="simulate-warnings"))
    return sections
