"""The recipe report as HTML sections: the plans side by side, the tensors the recipe moves, the
llama-quantize arguments and the ignore / exclude lists. Tables are those of `report.recipe`."""

from __future__ import annotations

from ...results import RecipeResult
from .. import plots
from ..fmt import num
from ..recipe import recipe_header, recipe_tables
from ..tables import Table
from .page import Card, Figure, Note, Notes, Section, Text
from .registry import register_sections

__all__ = ["recipe_sections"]


def _bars(r: RecipeResult) -> Figure:
    plans = (r.recipe, *r.plans)
    labels = [p.label for p in plans]
    data = Table("Plans", ("plan", "bpw", "total error"),
                 tuple((p.label, num(p.bits_per_weight, 5), f"{p.total_error:.5g}") for p in plans), "lrr")
    svg = plots.bars(labels, {"total error": [p.total_error for p in plans]}, xlabel="total error (log scale)",
                     log=True, fmt=lambda x: f"{x:.3g}")
    return Figure(svg, "Total error of the recipe and of each llama.cpp plan, measured on the same tensors.", data)


@register_sections(RecipeResult)
def recipe_sections(r: RecipeResult, top: int | None = None) -> list[Section]:
    """Sections of a recipe report; `top` limits the table of moved tensors (None: all)."""
    n = top if top is not None else len(r.tensors)
    plans, moved = recipe_tables(r, n)
    blocks = (Text(" · ".join(recipe_header(r))), plans, _bars(r), moved)
    lists = (Card("llama-quantize arguments", tuple((str(i + 1), a) for i, a in enumerate(r.llama_quantize))),
             Card("llm-compressor ignore", tuple(("ignore", m) for m in r.llm_compressor_ignore)),
             Card("quanto exclude", tuple(("exclude", m) for m in r.quanto_exclude)))
    sections = [Section("Recipe", blocks, id="recipe"), Section("Use it", lists, id="recipe-use")]
    notes = [Note("warning", w) for w in r.warnings] + [Note("info", t) for t in r.notes]
    if notes:
        sections.append(Section("What to read", (Notes("Notes", tuple(notes)),), id="recipe-notes"))
    return sections
