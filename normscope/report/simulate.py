"""simulate results as tables (terminal and Markdown share them) and plain-words notes."""

from __future__ import annotations

import math

from ..results import ImatrixUse, SchemeResult, SimTensor, SimulateResult
from .fmt import count, num, pct, size
from .markdown import md_report
from .tables import Table
from .terminal import render_tables
from .text import register_text

__all__ = ["imatrix_line", "simulate_header", "simulate_tables", "simulate_terminal", "simulate_markdown"]


def _db(x: float | None) -> str:
    if x is None:
        return "—"
    return num(x) if not math.isfinite(x) else f"{x:.2f}"


def _types(s: SchemeResult) -> str:
    return ", ".join(f"{k} {v}" for k, v in s.type_counts.items())


def simulate_header(r: SimulateResult) -> list[str]:
    first = r.schemes[0] if r.schemes else None
    lines = [f"source: {r.source.spec or r.source.path} ({r.source.format})",
             f"architecture: {r.architecture}"
             + (f" · {count(first.n_params)} parameters in {len(first.tensors)} tensors" if first else "")]
    if r.imatrix is not None:
        lines.append(imatrix_line(r.imatrix))
    if r.errors:
        lines.append(f"NON-FINITE VALUES in {len(r.errors)} tensors: the checkpoint is damaged")
    return lines


def imatrix_line(u: ImatrixUse) -> str:
    """Which importance matrix, collected on what, and how much of the model it covered."""
    data = ", ".join(u.datasets) or "dataset not recorded"
    chunks = f"{u.chunk_count:,} chunks" + (f" of {u.chunk_size:,} tokens" if u.chunk_size else "")
    missing = f"; {len(u.missing)} quantized tensors without an entry" if u.missing else ""
    return (f"imatrix: {u.path} ({u.format}; {data}; {chunks}): {u.entries:,} entries, used by {u.used:,} "
            f"tensors{missing}")


def _worst(s: SchemeResult, top: int) -> Table:
    quantized = [t for t in s.tensors if t.error is not None]
    ranked = sorted(quantized, key=lambda t: t.error.sqnr_db)[:top]
    rows = tuple((t.name, t.type, num(t.bits_per_weight, 4), _db(t.error.sqnr_db), num(t.error.rel_l2, 3),
                  num(t.error.max_abs, 3), num(t.error.p99, 3), f"{t.error.cosine:.6f}",
                  _db(t.norm_aware.delta_db) if t.norm_aware else "—",
                  pct(t.health.dominated_share, 1.0) if t.health else "—")
                 for t in ranked)
    return Table(f"{s.scheme}: lowest SQNR (top {len(rows)} of {len(quantized)} quantized tensors)",
                 ("tensor", "type", "bpw", "SQNR dB", "rel L2", "max |err|", "|err| p99", "cosine", "norm Δ dB",
                  "dominated"), rows, "llrrrrrrrr")


def _norm_aware(s: SchemeResult, top: int) -> Table:
    by_name = {t.name: t for t in s.tensors}
    picked: list[SimTensor] = [by_name[n] for n in s.norm_aware_ranking[:top]]
    rows = tuple((t.name, t.norm_aware.norm.split(",")[0].rsplit(".", 2)[-2], t.norm_aware.axis, t.type,
                  _db(t.error.sqnr_db), _db(t.norm_aware.sqnr_db), _db(t.norm_aware.delta_db)) for t in picked)
    return Table(f"{s.scheme}: where the norm gains move the error most (top {len(rows)})",
                 ("tensor", "norm", "axis", "type", "SQNR dB", "norm-aware dB", "Δ dB"), rows, "llllrrr")


def simulate_tables(r: SimulateResult, top: int = 10) -> list[Table]:
    """A summary row per scheme, then per scheme its worst tensors and its norm-aware ranking."""
    summary = Table("Schemes", ("scheme", "quantized", "size", "bpw", "SQNR dB", "rel L2", "norm-aware dB",
                                "tensor types"),
                    tuple((s.scheme, f"{sum(t.type is not None for t in s.tensors)} of {len(s.tensors)} tensors",
                           size(s.nbytes),
                           num(s.bits_per_weight, 4), _db(s.sqnr_db), num(s.rel_l2, 3), _db(s.norm_aware_sqnr_db),
                           _types(s)) for s in r.schemes), "lrrrrrrl")
    tables = [summary]
    for s in r.schemes:
        tables.append(_worst(s, top))
        tables.append(_norm_aware(s, top))
    return tables


def _notes(r: SimulateResult) -> list[tuple[str, str]]:
    notes = [("error", e) for e in r.errors] + [("warning", w) for w in r.warnings]
    for s in r.schemes:
        notes += [("info", n) for n in s.notes]
    return notes


def simulate_terminal(r: SimulateResult, top: int = 10, width: int = 120, color: bool = False) -> str:
    """The simulate summary as shown by `normscope simulate`."""
    return render_tables(simulate_header(r), simulate_tables(r, top), _notes(r), width, color)


def simulate_markdown(r: SimulateResult, top: int = 10) -> str:
    """The simulate report as GitHub-flavoured Markdown (top tables, every note)."""
    return md_report("normscope simulate", simulate_header(r), simulate_tables(r, top), _notes(r))


register_text(SimulateResult, terminal=simulate_terminal, markdown=simulate_markdown)
