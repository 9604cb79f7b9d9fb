"""recipe results as tables (terminal and Markdown share them), the llama-quantize arguments and the lists."""

from __future__ import annotations

import math

from ..results import PlanSummary, RecipeResult
from .fmt import count, num, size, visible
from .markdown import md_report
from .tables import Table
from .terminal import render_tables
from .text import register_text, register_verdict

__all__ = ["recipe_header", "recipe_tables", "recipe_terminal", "recipe_markdown", "recipe_args", "recipe_verdict"]


def _db(x: float | None) -> str:
    if x is None:
        return "—"
    return num(x) if not math.isfinite(x) else f"{x:.2f}"


def recipe_header(r: RecipeResult) -> list[str]:
    what = ("Σ gain-weighted squared error (simulate's norm-aware error)" if r.objective == "norm_aware"
            else "Σ error calibrated to the KL each group caused (forward --sensitivity)")
    return [f"source: {r.source.spec or r.source.path} ({r.source.format})",
            f"architecture: {r.architecture} · budget {size(r.budget_bytes)} ({r.budget_bits_per_weight:.4f} bpw) · "
            f"reference {r.reference}",
            f"objective: {what}"]


def _plan_row(p: PlanSummary) -> tuple[str, ...]:
    types = ", ".join(f"{k} {v}" for k, v in p.type_counts.items())
    return (p.label, size(p.nbytes), count(p.nbytes), num(p.bits_per_weight, 5), f"{p.total_error:.5g}",
            _db(p.sqnr_db), _db(p.norm_aware_sqnr_db), types)


def recipe_tables(r: RecipeResult, top: int = 10) -> list[Table]:
    plans = Table("The recipe and llama.cpp's plans, measured on the same tensors",
                  ("plan", "size", "bytes", "bpw", "total error", "SQNR dB", "norm-aware dB", "tensor types"),
                  tuple(_plan_row(p) for p in (r.recipe, *r.plans)), "lrrrrrrl")
    moved = [t for t in r.tensors if t.type != t.reference_type]
    moved.sort(key=lambda t: -(t.reference_error - t.error))
    changes = Table(f"Tensors whose type differs from {r.reference} (top {min(top, len(moved))} of {len(moved)} by "
                    "error saved)",
                    ("tensor", "gguf", f"{r.reference}", "recipe", "bytes", "error", f"{r.reference} error"),
                    tuple((t.name, t.gguf_name or "", t.reference_type, t.type, count(t.nbytes), f"{t.error:.4g}",
                           f"{t.reference_error:.4g}") for t in moved[:top]), "lllllrr")
    return [plans, changes]


def recipe_args(r: RecipeResult) -> str:
    """The llama-quantize arguments, one per line (for `$(cat FILE)` or a response file)."""
    return "\n".join(r.llama_quantize) + "\n"


def _notes(r: RecipeResult) -> list[tuple[str, str]]:
    return [("warning", w) for w in r.warnings] + [("info", n) for n in r.notes]


def recipe_verdict(r: RecipeResult) -> list[str]:
    """The recipe's size against the budget, its error against the reference plan's, and how to use it.

    Example:
        >>> recipe_verdict(normscope.recipe("gemma-3-270m-hf", bits_per_weight=7.4))[0]  # doctest: +SKIP
        'recipe: 235.2 MiB (7.358 bpw) within 236.5 MiB; total error 1× that of Q4_K_M's plan (7.358 bpw)'
    """
    ref = next((p for p in r.plans if p.label == r.reference), None)
    line = (f"recipe: {size(r.recipe.nbytes)} ({num(r.recipe.bits_per_weight, 4)} bpw) within {size(r.budget_bytes)}")
    if ref is not None and ref.total_error > 0:
        line += (f"; total error {r.recipe.total_error / ref.total_error:.3g}× that of {r.reference}'s plan "
                 f"({num(ref.bits_per_weight, 4)} bpw)")
    moved = sum(t.type != t.reference_type for t in r.tensors)
    use = (f"{moved} of {len(r.tensors)} tensors take another type than {r.reference}'s plan gives them; "
           "the llama-quantize arguments apply it" if moved else
           f"no tensor changes type: {r.reference}'s own plan is the recipe")
    return [line, use]


def recipe_terminal(r: RecipeResult, top: int = 10, width: int = 120, color: bool = False) -> str:
    """The recipe summary as shown by `normscope recipe`, the llama-quantize arguments last."""
    text = render_tables(recipe_header(r), recipe_tables(r, top), _notes(r), width, color, verdict=recipe_verdict(r))
    return text + "\nllama-quantize arguments:\n" + "".join(visible(a) + "\n" for a in r.llama_quantize)


def recipe_markdown(r: RecipeResult, top: int = 10) -> str:
    """The recipe report as GitHub-flavoured Markdown, with the arguments and the lists as code blocks."""
    code = ["### llama-quantize", "", "```", *r.llama_quantize, "```", "",
            "### llm-compressor ignore", "", "```", *r.llm_compressor_ignore, "```", "",
            "### quanto exclude", "", "```", *r.quanto_exclude, "```", ""]
    return md_report("normscope recipe", recipe_header(r), recipe_tables(r, top), _notes(r), sections=code,
                     verdict=recipe_verdict(r))


register_text(RecipeResult, terminal=recipe_terminal, markdown=recipe_markdown)
register_verdict(RecipeResult, recipe_verdict)
