"""The analyze report as HTML sections: summary, norm gains (heatmap + table), outliers, parameters,
explanations. Tables are the ones the terminal and Markdown show (`report.tables`), so they never
disagree; figures draw numbers of `result.to_dict()` and nothing else."""

from __future__ import annotations

import re
from pathlib import PurePath

from ...results import AnalyzeResult
from .. import plots
from ..analyze import analyze_tables, embeddings_kind
from ..findings import grouped_explanations, plural
from ..fmt import count, num, pct, size
from ..tables import Table
from .grid import Grid, layer_grid
from .page import Card, Figure, Note, Notes, Section, Text
from .registry import register_sections, report_html

__all__ = ["analyze_html", "analyze_sections", "norm_gain_grid", "outlier_grid"]

NORM_TEXT = ("Each norm is read in the convention its module computes: Gemma's RMSNorm multiplies x̂ by (1 + w), "
             "so a stored w = 0 is a gain of 1 and a stored 1656 a gain of 1657; Llama-style RMSNorm and LayerNorm "
             "multiply by w. The heatmap shows each norm tensor's largest |gain| (max_abs_gain) on a logarithmic "
             "colour scale, the largest cells labelled; grey cells have no tensor. Norms outside the blocks (such "
             "as the final norm) are in the table only. Quantizers leave norms alone: llama.cpp keeps 1-D tensors "
             "in F32, and GPTQ, AWQ and quanto quantize Linear layers only.")
OUTLIER_TEXT = ("|w|max/σ is a tensor's largest |weight| over its standard deviation: how far the extreme weight "
                "sits from the bulk, which is what a per-block or per-channel quantization scale has to cover. "
                "Kurtosis is excess kurtosis (0 for a Gaussian); the last column counts weights with "
                "|w − mean| > k·σ.")


def norm_gain_grid(r: AnalyzeResult) -> Grid:
    """Layers × norm kind, each cell a norm tensor's largest |gain| in its own convention."""
    return layer_grid((t for t in r.tensors if t.norm is not None), lambda t: t.norm.max_abs_gain)


def outlier_grid(r: AnalyzeResult) -> Grid:
    """Layers × linear role, each cell a weight matrix's |w|max/σ."""
    return layer_grid((t for t in r.tensors if t.weight is not None and t.role.is_linear),
                      lambda t: t.weight.absmax_over_std)


def _all_rows(t: Table) -> Table:
    # "top 109 of 109" reads oddly when every row is shown
    title = re.sub(r"\(top (\d+) of \1 (by .*)\)$", r"(all \1, \2)", t.title)
    return Table(title, t.headers, t.rows, t.align)


def _summary(r: AnalyzeResult, nonfinite: list[Table]) -> Section:
    s, src = r.summary, r.source
    files = [PurePath(f).name for f in src.files]
    shown = ", ".join(files[:4]) + (f", … ({count(len(files))} files)" if len(files) > 4 else "")
    checkpoint = Card("Checkpoint", tuple(fact for fact in (
        ("source", src.spec or src.path), ("kind", f"{src.kind} ({src.format})"), ("path", src.path),
        ("files", shown), ("revision", src.revision)) if fact[1]))
    model = Card("Model", (
        ("architecture", f"{s.architecture} (from {s.architecture_source})"),
        ("layers", "?" if s.n_layers is None else str(s.n_layers)),
        ("tensors", count(s.n_tensors)),
        ("parameters", count(s.n_params)),
        ("on disk", f"{size(s.bytes_on_disk)} ({count(s.bytes_on_disk)} bytes)"),
        ("embeddings", {"tied": "tied (the output reuses the embedding)"}.get(embeddings_kind(r), embeddings_kind(r))),
        ("dtype mix", ", ".join(f"{k} {pct(v, s.n_params)}" for k, v in s.params_by_dtype.items())),
        ("largest tensor", s.largest_tensor or "—"),
    ))
    notes = [Note("warning", w) for w in r.warnings]
    notes += [Note("error", f"NaN or Inf values in {count(len(t.rows))} tensors (listed below): the checkpoint is "
                            "damaged") for t in nonfinite]
    return Section("Summary", (checkpoint, model, Notes("Warnings", tuple(notes)), *nonfinite), id="summary")


def _norms(r: AnalyzeResult, table: Table) -> Section:
    grid = norm_gain_grid(r)
    blocks: list = [Text(NORM_TEXT)]
    if grid.rows:
        svg = plots.heatmap(grid.by_column(), rows=grid.cols, cols=[str(layer) for layer in grid.rows],
                            xlabel="layer", colorbar="max |gain| (effective, log scale)", log=True)
        caption = ("Largest |gain| of every norm tensor in its own convention (the effective gain), by layer (x) "
                   "and norm kind (y).")
        blocks.append(Figure(svg, caption, grid.table("Max |gain| by layer and norm kind")))
    return Section("Norm gains", (*blocks, _all_rows(table)), id="norms")


def _outliers(r: AnalyzeResult, table: Table) -> Section:
    grid = outlier_grid(r)
    blocks: list = [Text(OUTLIER_TEXT)]
    if grid.rows:
        svg = plots.heatmap(grid.by_column(), rows=grid.cols, cols=[str(layer) for layer in grid.rows],
                            xlabel="layer", colorbar="|w|max / σ", log=False, fmt=lambda v: num(v, 3))
        blocks.append(Figure(svg, "|w|max/σ of every weight matrix in the blocks, by layer (x) and role (y).",
                             grid.table("|w|max/σ by layer and role", lambda v: num(v, 3))))
    return Section("Outliers", (*blocks, _all_rows(table)), id="outliers")


def _parameters(r: AnalyzeResult, table: Table) -> Section:
    roles = r.summary.params_by_role
    # linear: the shares are the point (the embedding's 62.6% of Gemma 3 270M), and a log axis hides them
    total = r.summary.n_params
    svg = plots.bars(list(roles), {"parameters": list(roles.values())}, xlabel="parameters",
                     fmt=lambda v: f"{count(int(v))} ({pct(v, total)})")
    return Section("Parameters", (Figure(svg, "Parameters by tensor role."), table), id="parameters")


def _explanations(r: AnalyzeResult, top: int | None) -> Section:
    grouped = grouped_explanations(r, top)
    title = f"What the numbers mean ({plural(len(r.explanations), 'tensor')} in {plural(len(grouped), 'note')})"
    return Section("Explanations", (Notes(title, tuple(Note(sev, text) for sev, text in grouped)),),
                   id="explanations")


@register_sections(AnalyzeResult)
def analyze_sections(r: AnalyzeResult, top: int | None = None) -> list[Section]:
    """The analyze report's sections; `top` limits the ranked tables (None: every tensor, sortable)."""
    tables = analyze_tables(r, len(r.tensors) if top is None else top)
    nonfinite = [t for t in tables if "NaN" in t.headers]
    norm_table, weight_table, role_table = [t for t in tables if "NaN" not in t.headers]
    return [_summary(r, nonfinite), _norms(r, norm_table), _outliers(r, weight_table), _parameters(r, role_table),
            _explanations(r, top)]


def analyze_html(r: AnalyzeResult, top: int | None = None) -> str:
    """The analyze report as one self-contained HTML page (inline CSS, SVG and JS; no network).

    Args:
        r: what `normscope.analyze` returned.
        top: rows of the ranked tables (None: all of them, sortable and filterable).

    Returns:
        The HTML document.

    Example:
        >>> import normscope
        >>> from normscope.report import analyze_html
        >>> html = analyze_html(normscope.analyze("example:gemma3-270m"))  # doctest: +SKIP
    """
    return report_html(r, top=top)
