"""The compare report as HTML sections: the models, each variant against the base (what moved, norm
gains, unmatched tensors), and statistics by relative depth overlaid across models of any size."""

from __future__ import annotations

from ...results import CompareResult, DepthProfile
from .. import plots
from ..compare import failure_notes, pair_tables, variants_table
from ..fmt import num
from ..tables import Table
from .page import Figure, Note, Notes, Section, Text
from .registry import register_sections

__all__ = ["compare_sections"]

FLAT = 1e-3  # relative spread under which the moved-most bars would all look equal
# (metric, label, log scale) drawn per role; the JSON holds every profile
# every statistic docs/compare.md promises: max, mean and p99 gain per norm role, |w|max/σ and kurtosis per linear role
DEPTH_FIGURES = (("gain_max", "max |gain| (effective)", True), ("gain_mean", "|mean gain| (effective)", False),
                 ("gain_p99", "|gain| p99 (effective)", True), ("outlier_ratio", "|w|max / σ", False),
                 ("kurtosis", "excess kurtosis", False))
DEPTH_TEXT = ("Each point is one layer's tensor of that role, placed at its relative depth layer / (layers − 1), so "
              "models with different numbers of layers (a teacher and its student) overlay. Norm gains are in each "
              "module's own convention.")


def _depth_figure(profiles: list[DepthProfile], role: str, metric: str, label: str, log: bool) -> Figure:
    series = {p.variant: [v for _, v in p.points] for p in profiles}
    depths = sorted({round(d, 4) for p in profiles for d, _ in p.points})
    rows = []
    for d in depths:
        row = [f"{d:.3f}"]
        for p in profiles:
            hit = [v for x, v in p.points if round(x, 4) == d]
            row.append(num(hit[0]) if hit else "—")
        rows.append(tuple(row))
    data = Table(f"{role}: {label} by relative depth", ("depth", *series), tuple(rows), "r" * (1 + len(series)))
    # lines that coincide draw as one: say so, on the chart and under it
    same = len(profiles) > 1 and all(p.points == profiles[0].points for p in profiles[1:])
    title = f"{role} (identical in every model)" if same else role
    svg = plots.depth_lines(series, ylabel=label, title=title, log=log)
    caption = f"{label} of {role} tensors against relative depth, one line per model."
    if same:
        caption += f" The {len(profiles)} lines coincide: {', '.join(series)} are identical here."
    return Figure(svg, caption, data)


@register_sections(CompareResult)
def compare_sections(r: CompareResult, top: int | None = None) -> list[Section]:
    """Sections of a compare report; `top` limits the ranked tables (None: all rows)."""
    n = top if top is not None else max((p.matched + len(p.unmatched) for p in r.pairs), default=0)
    overview = Table("Each model against the base",
                     ("model", "aligned", "identical", "unmatched", "SQNR dB", "rel L2"),
                     tuple((p.variant, str(p.matched), str(p.identical), str(len(p.unmatched)), num(p.sqnr_db),
                            num(p.rel_l2, 3)) for p in r.pairs), "lrrrrr")
    notes = ([Note(kind, text) for kind, text in failure_notes(r)] + [Note("error", e) for e in r.errors]
             + [Note("warning", w) for w in r.warnings])
    sections = [Section("Models", (variants_table(r), overview, Notes("Warnings", tuple(notes))), id="models")]
    for p in r.pairs:
        blocks: list = [Notes("Summary", tuple(Note("info", line) for line in p.summary))]
        moved = [t for t in p.tensors if t.name in set(p.moved_most)]
        values = sorted((t.error.rel_l2 for t in moved), reverse=True)
        if len(moved) > 1 and values[0] <= values[-1] * (1 + FLAT):
            # a chart of equal bars ranks nothing: one sentence says the same
            blocks.append(Text(f"The {len(moved)} tensors that moved most from {p.base} to {p.variant} all moved by the "
                               f"same relative L2, {num(values[-1], 3)} to {num(values[0], 3)}: no tensor stands out."))
        elif moved:
            moved.sort(key=lambda t: -t.error.rel_l2)
            values = [t.error.rel_l2 for t in moved]
            # a log axis only where the values span decades: over a narrow range it makes bars lie
            log = min(values) > 0 and max(values) / min(values) > 20
            svg = plots.bars([t.name for t in moved], {p.variant: values},
                             xlabel="relative L2 of the difference" + (" (log scale)" if log else ""), log=log,
                             fmt=lambda v: num(v, 3))
            blocks.append(Figure(svg, f"The tensors that moved most from {p.base} to {p.variant}."))
        blocks += pair_tables(p, n)
        sections.append(Section(f"{p.variant} vs {p.base}", tuple(blocks), id=f"pair-{p.variant}"))
    figures: list = [Text(DEPTH_TEXT)]
    roles = sorted({(p.role, p.metric) for p in r.profiles})
    for metric, label, log in DEPTH_FIGURES:
        for role, m in roles:
            if m == metric:
                figures.append(_depth_figure([p for p in r.profiles if p.role == role and p.metric == metric],
                                             role, metric, label, log))
    sections.append(Section("By depth", tuple(figures), id="depth"))
    return sections
