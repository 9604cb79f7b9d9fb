"""imatrix results as tables (terminal and Markdown share them) and plain-words notes."""

from __future__ import annotations

import math

from ..results import ImatrixCompareResult, ImatrixFileInfo, ImatrixResult
from .fmt import count, num, pct
from .markdown import md_report
from .tables import Table
from .terminal import render_tables
from .text import register_text

__all__ = ["imatrix_header", "imatrix_tables", "imatrix_terminal", "imatrix_markdown", "imatrix_compare_header",
           "imatrix_compare_tables", "imatrix_compare_terminal", "imatrix_compare_markdown"]


def _file(label: str, f: ImatrixFileInfo) -> str:
    chunks = f"{count(f.chunk_count)} chunks" + (f" of {count(f.chunk_size)} tokens" if f.chunk_size else "")
    return (f"{label}{f.path} ({f.format}; {', '.join(f.datasets) or 'dataset not recorded'}; {chunks}; "
            f"{count(f.entries)} entries)")


def _share(x: float) -> str:
    return pct(x, 1.0) if math.isfinite(x) else "—"


def imatrix_header(r: ImatrixResult) -> list[str]:
    lines = [_file("imatrix: ", r.file)]
    c = r.coverage
    if c is not None:
        lines.append(f"model: {c.model} · {c.covered} of {c.quantized} quantized tensors covered "
                     f"({_share(c.covered_params)} of their parameters) · {len(c.missing)} missing · "
                     f"{len(c.mismatched)} of another size · {len(c.extra)} extra entries")
    return lines


def imatrix_tables(r: ImatrixResult, top: int = 10) -> list[Table]:
    rows = tuple((t.name, count(t.n_per_row) + (f" x {t.n_expert}" if t.n_expert > 1 else ""), count(t.tokens),
                  str(t.idle_experts) if t.n_expert > 1 else "—", count(t.non_finite), num(t.mean, 4),
                  _share(t.top1_share), num(t.entropy, 3),
                  ", ".join(f"{c} ({_share(s)})" for c, s in zip(t.dominant[:3], t.dominant_share)))
                 for t in r.tensors[:top])
    tables = [Table(f"Most concentrated entries (top {len(rows)} of {len(r.tensors)})",
                    ("tensor", "columns", "tokens", "idle experts", "non-finite", "mean weight", "top 1% share",
                     "entropy", "dominant columns"), rows, "lrrrrrrrl")]
    c = r.coverage
    if c is not None and (c.missing or c.mismatched or c.extra):
        listed = [(n, "no entry: quantized without weights") for n in c.missing] + \
                 [(n, "entry of another size") for n in c.mismatched] + [(n, "no such tensor in the model")
                                                                        for n in c.extra]
        tables.append(Table(f"Coverage gaps (top {min(top, len(listed))} of {len(listed)})", ("tensor", "what"),
                            tuple(listed[:top]), "ll"))
    if r.unreached:
        tables.append(Table(f"Entries no token reached ({len(r.unreached)})", ("tensor",),
                            tuple((n,) for n in r.unreached[:top]), "l"))
    return tables


def _notes(notes: tuple[str, ...]) -> list[tuple[str, str]]:
    return [("warning" if "refuse" in n or "another model" in n else "info", n) for n in notes]


def imatrix_terminal(r: ImatrixResult, top: int = 10, width: int = 120, color: bool = False) -> str:
    """The imatrix summary as shown by `normscope imatrix FILE`."""
    return render_tables(imatrix_header(r), imatrix_tables(r, top), _notes(r.notes), width, color)


def imatrix_markdown(r: ImatrixResult, top: int = 10) -> str:
    return md_report("normscope imatrix", imatrix_header(r), imatrix_tables(r, top), _notes(r.notes))


def imatrix_compare_header(r: ImatrixCompareResult) -> list[str]:
    return [_file("A: ", r.a), _file("B: ", r.b),
            f"{len(r.pairs)} tensors in both · median cosine {num(r.median_cosine, 4)} · median Spearman "
            f"{num(r.median_spearman, 4)} · {len(r.only_a)} only in A · {len(r.only_b)} only in B"]


def imatrix_compare_tables(r: ImatrixCompareResult, top: int = 10) -> list[Table]:
    rows = tuple((p.name, count(p.values), num(p.cosine, 4), num(p.spearman, 4), _share(p.top1_overlap))
                 for p in r.pairs[:top])
    return [Table(f"Least agreement (top {len(rows)} of {len(r.pairs)}): where the calibration text matters",
                  ("tensor", "weights", "cosine", "Spearman", "top 1% overlap"), rows, "lrrrr")]


def imatrix_compare_terminal(r: ImatrixCompareResult, top: int = 10, width: int = 120, color: bool = False) -> str:
    """The comparison as shown by `normscope imatrix A B`."""
    return render_tables(imatrix_compare_header(r), imatrix_compare_tables(r, top), _notes(r.notes), width, color)


def imatrix_compare_markdown(r: ImatrixCompareResult, top: int = 10) -> str:
    return md_report("normscope imatrix A B", imatrix_compare_header(r), imatrix_compare_tables(r, top),
                     _notes(r.notes))


register_text(ImatrixResult, terminal=imatrix_terminal, markdown=imatrix_markdown)
register_text(ImatrixCompareResult, terminal=imatrix_compare_terminal, markdown=imatrix_compare_markdown)
