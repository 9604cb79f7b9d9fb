"""The clip report as HTML sections: what was clipped (thresholds, values, files, super-weight
candidates), and for a sweep the error curves against the clipping percentile, one per scheme."""

from __future__ import annotations

import math

from ...results import ClipResult, ClipSweepResult
from .. import plots
from ..clip import clip_header, clip_tables, sweep_header, sweep_tables
from ..fmt import num
from ..tables import Table
from .page import Figure, Note, Notes, Section, Text
from .registry import register_sections

__all__ = ["clip_sections", "sweep_sections"]

SWEEP_TEXT = ("Each tensor in scope is clipped at each percentile exactly as `normscope clip` would write it, then "
              "quantized exactly as `normscope simulate` does. Errors are ‖d‖/‖x‖ against the original tensor: "
              "clip (c − x), quant after clipping (q − c) and total (q − x), pooled over the tensors each scheme "
              "quantizes. Percentile 100 is no clipping; a total below it means clipping helps that scheme.")


def _notes(title: str, warnings: tuple[str, ...], notes: tuple[str, ...]) -> Notes:
    return Notes(title, tuple(Note("warning", w) for w in warnings) + tuple(Note("info", n) for n in notes))


@register_sections(ClipResult)
def clip_sections(r: ClipResult, top: int | None = None) -> list[Section]:
    """Sections of a clip report; `top` limits the ranked tables (None: every changed tensor)."""
    n = top if top is not None else max(len(r.tensors), len(r.super_weights), 1)
    tables = clip_tables(r, n)
    blocks: list = [Text(" · ".join(clip_header(r))), _notes("What to read", r.warnings, r.notes)]
    ranked = sorted(r.tensors, key=lambda t: -t.max_before)[:30]
    if ranked:
        svg = plots.bars([t.name for t in ranked], {"max |value| before": [t.max_before for t in ranked],
                                                    "threshold": [t.threshold for t in ranked]},
                         xlabel="|value| (log scale; norms: effective gain)", log=True, fmt=lambda v: num(v, 4))
        blocks.append(Figure(svg, "Largest |value| of each changed tensor before clipping, against its threshold."))
    return [Section("Clip", (*blocks, *tables), id="clip")]


@register_sections(ClipSweepResult)
def sweep_sections(r: ClipSweepResult, top: int | None = None) -> list[Section]:
    """Sections of a clip sweep: the curves per scheme, the best percentile, where clipping helps."""
    n = top if top is not None else max(len(r.tensors), 1)
    blocks: list = [Text(" · ".join(sweep_header(r))), Text(SWEEP_TEXT)]
    x = list(r.percentiles)
    for scheme in r.schemes:
        totals = {t.percentile: t for t in r.totals if t.scheme == scheme}
        if not totals:
            continue
        series = {k: [getattr(totals[p], f) if p in totals and math.isfinite(getattr(totals[p], f)) else None
                      for p in x] for k, f in (("clip", "clip_rel_l2"), ("quant", "quant_rel_l2"),
                                               ("total", "total_rel_l2"))}
        best = next((b.percentile for b in r.best if b.scheme == scheme), None)
        data = Table(f"{scheme}: pooled relative L2 by percentile", ("percentile", *series),
                     tuple((num(p), *(num(v, 4) if v is not None else "—" for v in vals))
                           for p, *vals in zip(x, *series.values())), "r" * 4)
        svg = plots.curves([float(p) for p in x], series, xlabel="clipping percentile (log distance to 100)",
                           ylabel="‖d‖ / ‖x‖", title=scheme,
                           marks={f"best: p{num(best)}": best} if best is not None else None,
                           toward=100.0 if max(x) <= 100 else None)
        blocks.append(Figure(svg, f"{scheme}: clipping error, quantization error after clipping, and their total.",
                             data))
    blocks.append(_notes("What to read", r.warnings, r.notes))
    return [Section("Clip sweep", (*blocks, *sweep_tables(r, n)), id="clip-sweep")]
