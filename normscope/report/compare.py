"""compare results as tables (terminal and Markdown share them) and plain-words summaries."""

from __future__ import annotations

import math

from ..results import CompareResult, PairResult
from .fmt import count, num
from .markdown import md_report
from .tables import Table
from .terminal import render_tables
from .text import register_text, register_verdict

__all__ = ["compare_header", "failure_notes", "compare_tables", "pair_tables", "compare_terminal", "compare_markdown",
           "compare_verdict"]


def _db(x: float) -> str:
    return num(x) if not math.isfinite(x) else f"{x:.2f}"


def compare_header(r: CompareResult) -> list[str]:
    base = r.variants[0].label
    lines = [f"{len(r.variants)} models, each compared with {base!r}"]
    if r.failed:
        lines.append(f"not compared (could not be read): {', '.join(f.label for f in r.failed)}")
    if r.errors:
        lines.append(f"NON-FINITE VALUES in {len(r.errors)} tensors: a model is damaged")
    return lines


def failure_notes(r: CompareResult) -> list[tuple[str, str]]:
    """One error line per variant that could not be read."""
    return [("error", f"{f.label} ({f.source}) was not compared: {f.error}") for f in r.failed]


def variants_table(r: CompareResult) -> Table:
    return Table("Models", ("label", "source", "format", "architecture", "layers", "tensors", "parameters", "adapter"),
                 tuple((v.label, v.source.spec or v.source.path, v.source.format, v.architecture,
                        "?" if v.n_layers is None else str(v.n_layers), count(v.n_tensors), count(v.n_params),
                        v.adapter or "") for v in r.variants), "lllllrrl")


def pair_tables(p: PairResult, top: int = 10) -> list[Table]:
    """The tables of one variant against the base: what moved most, norm gains, unmatched tensors."""
    by_name = {t.name: t for t in p.tensors}
    moved = [by_name[n] for n in p.moved_most[:top]]
    tables = [Table(f"{p.variant} vs {p.base}: largest relative change (top {len(moved)} of "
                    f"{p.matched - p.identical} changed)",
                    ("tensor", "role", "dtypes", "rel L2", "SQNR dB", "max |diff|", "cosine"),
                    tuple((t.name, t.role.value, f"{t.base_dtype} → {t.variant_dtype}", num(t.error.rel_l2, 3),
                           _db(t.error.sqnr_db), num(t.error.max_abs, 3), f"{t.error.cosine:.6f}") for t in moved),
                    "lllrrrr")]
    changed = [c for c in p.norm_changes if c.ratio != 1.0][:top]
    tables.append(Table(f"{p.variant} vs {p.base}: norm gains that moved most (top {len(changed)})",
                        ("norm", f"{p.base} max |gain|", f"{p.variant} max |gain|", "ratio"),
                        tuple((c.name, num(c.base_max_abs_gain), num(c.variant_max_abs_gain), num(c.ratio, 4))
                              for c in changed), "lrrr"))
    tables.append(Table(f"{p.variant} vs {p.base}: unmatched tensors ({len(p.unmatched)})",
                        ("tensor", "side", "shape", "why"),
                        tuple((u.name, p.base if u.side == "base" else p.variant, "×".join(map(str, u.shape)),
                               u.reason) for u in p.unmatched[:top * 3]), "llll"))
    return tables


def compare_tables(r: CompareResult, top: int = 10) -> list[Table]:
    overview = Table("Each model against the base",
                     ("model", "aligned", "identical", "unmatched", "SQNR dB", "rel L2", "top-5 share",
                      "tensors for half"),
                     tuple((p.variant, count(p.matched), count(p.identical), count(len(p.unmatched)), _db(p.sqnr_db),
                            num(p.rel_l2, 3), f"{p.top5_error_share:.0%}", str(p.tensors_for_half))
                           for p in r.pairs), "lrrrrrrr")
    tables = [variants_table(r), overview]
    for p in r.pairs:
        tables += pair_tables(p, top)
    return tables


def _notes(r: CompareResult) -> list[tuple[str, str]]:
    return (failure_notes(r) + [("error", e) for e in r.errors] + [("warning", w) for w in r.warnings]
            + [("info", line) for p in r.pairs for line in p.summary])


def _where(p: PairResult) -> str:
    """Where a variant's difference lies: its largest change, and how concentrated the difference is."""
    changed = p.matched - p.identical
    top = p.tensor(p.moved_most[0]) if p.moved_most else None
    text = f"largest change {top.name} (rel L2 {num(top.error.rel_l2, 3)})" if top else ""
    if changed > 1:
        text += (f"; half the difference lies in {p.tensors_for_half} of {count(changed)} changed tensors"
                 if p.tensors_for_half < changed else f"; spread over all {count(changed)} changed tensors")
    return text


def _pair_line(p: PairResult, most: bool) -> str:
    if not p.matched:
        return (f"nothing of {p.variant} aligns with {p.base} (no tensor shares a name and shape): no difference "
                "measured, compare them by depth")
    if p.identical == p.matched:
        return f"{p.variant} is identical to {p.base} in all {count(p.matched)} aligned tensors"
    verb = "moved most from" if most else "moved from"
    return (f"{p.variant} {verb} {p.base}: SQNR {_db(p.sqnr_db)} dB over {count(p.matched)} aligned tensors "
            f"({count(p.identical)} identical); {_where(p)}")


def compare_verdict(r: CompareResult) -> list[str]:
    """One to three lines: which variant moved most from the base and where, then the others; a model that could
    not be read or is damaged first.

    Example:
        >>> compare_verdict(normscope.compare(["gemma-3-270m-hf", "example:gemma3-270m"]))[0]  # doctest: +SKIP
        'example:gemma3-270m moved from gemma-3-270m-hf: SQNR 87.95 dB over 236 aligned tensors (109 identical); ...'
    """
    lines = []
    if r.errors:
        lines.append(f"DAMAGED: {len(r.errors)} tensors hold NaN or Inf values; the differences they touch mean "
                     "nothing")
    if r.failed:
        lines.append(f"not compared (could not be read): {', '.join(f.label for f in r.failed)}")
    # most moved first: the lowest pooled SQNR among the pairs that aligned and differ
    differs = sorted((p for p in r.pairs if p.matched and p.identical < p.matched), key=lambda p: p.sqnr_db)
    rest = [p for p in r.pairs if p not in differs]
    pairs = differs + rest
    room = max(3 - len(lines), 1)
    shown = pairs[:room] if len(pairs) <= room else pairs[:room - 1]
    lines += [_pair_line(p, most=(i == 0 and len(differs) > 1)) for i, p in enumerate(shown)]
    left = pairs[len(shown):]
    if left:
        lines.append(f"{len(left)} more: " + ", ".join(f"{p.variant} {_db(p.sqnr_db)} dB" for p in left))
    return lines


def compare_terminal(r: CompareResult, top: int = 10, width: int = 120, color: bool = False) -> str:
    """The compare summary as shown by `normscope compare`, its verdict first."""
    return render_tables(compare_header(r), compare_tables(r, top), _notes(r), width, color, verdict=compare_verdict(r))


def compare_markdown(r: CompareResult, top: int = 10) -> str:
    """The compare report as GitHub-flavoured Markdown (verdict, top tables, every summary line)."""
    return md_report("normscope compare", compare_header(r), compare_tables(r, top), _notes(r), notes_title="Summary",
                     label_info=False, verdict=compare_verdict(r))


register_text(CompareResult, terminal=compare_terminal, markdown=compare_markdown)
register_verdict(CompareResult, compare_verdict)
