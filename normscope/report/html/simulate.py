"""The simulate report as HTML sections: schemes side by side (size against SQNR, the Pareto front drawn), the
worst tensors of every scheme, and per scheme a layer × role heatmap of SQNR, its worst tensors, norm-aware ranking
and notes. Tables are those of `report.simulate`, so the terminal, Markdown and HTML never disagree; the figures
draw values of `result.to_dict()`."""

from __future__ import annotations

import math

from ...results import SchemeResult, SimTensor, SimulateResult
from .. import plots
from ..fmt import num, size
from ..simulate import best_at_each_size, imatrix_line, scheme_label, simulate_tables
from ..tables import Table
from .grid import layer_grid
from .page import Figure, Note, Notes, Section, Text
from .registry import register_sections

__all__ = ["simulate_sections"]

BARS = 30  # tensors in the error bar chart

SQNR_TEXT = ("SQNR = 20·log10(‖w‖/‖w − w'‖) of each tensor against its quantized copy: 6 dB per bit, higher is "
             "better, inf for an exact copy. The norm-aware SQNR weighs each input column (pre-norms) or output row "
             "(Gemma's post-norms) by the effective gain of the norm around the linear, i.e. the error as the next "
             "layer sees it; Δ is norm-aware minus plain.")


def _finite_sqnr(t: SimTensor) -> float | None:
    return t.error.sqnr_db if t.error is not None and math.isfinite(t.error.sqnr_db) else None


def _worst_figure(r: SimulateResult) -> Figure | None:
    """The worst tensors of every scheme (each scheme's lowest SQNR, in turn, until BARS rows), each row showing
    what every scheme leaves of that tensor."""
    ranked = {s.scheme: sorted((t for t in s.tensors if _finite_sqnr(t) is not None), key=_finite_sqnr)
              for s in r.schemes}
    names: list[str] = []
    for depth in range(max((len(v) for v in ranked.values()), default=0)):
        for ts in ranked.values():
            if depth < len(ts) and ts[depth].name not in names and len(names) < BARS:
                names.append(ts[depth].name)
    if not names:
        return None
    series = {}
    for s in r.schemes:
        by = {t.name: t for t in s.tensors}
        series[scheme_label(r, s)] = [_finite_sqnr(by[n]) if n in by else None for n in names]
    # worst first: by the lowest SQNR any scheme leaves
    order = sorted(range(len(names)), key=lambda i: min((v[i] for v in series.values() if v[i] is not None),
                                                          default=math.inf))
    names = [names[i] for i in order]
    series = {k: [v[i] for i in order] for k, v in series.items()}
    data = Table("SQNR dB per tensor and scheme", ("tensor", *series),
                 tuple((n, *(num(v, 4) if v is not None else "—" for v in vals))
                       for n, *vals in zip(names, *series.values())), "l" + "r" * len(series))
    svg = plots.dots(names, series, xlabel="SQNR dB (higher is better)")
    caption = (f"The {len(names)} worst tensors of every scheme (each scheme's lowest SQNR in turn), worst first, and "
               "what each scheme leaves of them; the axis starts near the data.")
    return Figure(svg, caption, data)


def _tradeoff_figure(r: SimulateResult) -> Figure | None:
    done = [s for s in r.schemes if s.quantized_params and math.isfinite(s.sqnr_db)]
    if len(done) < 2:
        return None
    labels = {s.scheme: scheme_label(r, s) for s in done}
    front = [labels[s.scheme] for s in best_at_each_size(done)]
    points = {labels[s.scheme]: (s.bits_per_weight, s.sqnr_db) for s in done}
    data = Table("Size against error", ("scheme", "bpw", "size", "SQNR dB", "best at its size"),
                 tuple((labels[s.scheme], num(s.bits_per_weight, 4), size(s.nbytes), f"{s.sqnr_db:.2f}",
                        "yes" if labels[s.scheme] in front else "no") for s in done), "lrrrl")
    svg = plots.tradeoff(points, front, xlabel="bits per weight over the whole model (smaller is better)",
                         ylabel="SQNR dB (higher is better)")
    return Figure(svg, "Each scheme's size against its pooled SQNR; filled points joined by the dashed line are the "
                       "schemes no other beats (no larger and at least as accurate).", data)


def _heatmap(r: SimulateResult, s: SchemeResult) -> Figure | None:
    grid = layer_grid((t for t in s.tensors if _finite_sqnr(t) is not None), _finite_sqnr,
                      kind=lambda t: t.role.value)
    if not grid.rows:
        return None
    svg = plots.heatmap(grid.by_column(), rows=grid.cols, cols=[str(layer) for layer in grid.rows], xlabel="layer",
                        colorbar="SQNR dB (dark: worse)", log=False, fmt=lambda v: f"{v:.1f}", lowest=True)
    return Figure(svg, f"SQNR of every quantized tensor in the blocks under {scheme_label(r, s)}, by layer (x) and "
                       "role (y); the five worst cells labelled.",
                  grid.table(f"{scheme_label(r, s)}: SQNR dB by layer and role", lambda v: f"{v:.2f}"))


@register_sections(SimulateResult)
def simulate_sections(r: SimulateResult, top: int | None = None) -> list[Section]:
    """Sections of a simulate report; `top` limits the ranked tables (None: every quantized tensor)."""
    n = top if top is not None else max((len(s.tensors) for s in r.schemes), default=0)
    tables = simulate_tables(r, n)
    summary, per_scheme = tables[0], tables[1:]
    blocks: list = [Text(SQNR_TEXT), summary]
    if r.imatrix is not None:  # which importance matrix the GGUF schemes were quantized with
        blocks.insert(1, Text(imatrix_line(r.imatrix)))
    blocks += [fig for fig in (_tradeoff_figure(r), _worst_figure(r)) if fig is not None]
    sections = [Section("Schemes", tuple(blocks), id="schemes")]
    for i, s in enumerate(r.schemes):
        label = scheme_label(r, s)
        notes = Notes(f"{label}: what to read", tuple(Note("info", line) for line in s.notes))
        heat = _heatmap(r, s)
        sections.append(Section(label, (notes, *((heat,) if heat else ()), *per_scheme[2 * i:2 * i + 2]),
                                id=f"scheme-{s.scheme}"))
    if r.errors or r.warnings:
        found = tuple(Note("error", e) for e in r.errors) + tuple(Note("warning", w) for w in r.warnings)
        sections.append(Section("Warnings", (Notes("Warnings", found),), id="simulate-warnings"))
    return sections
