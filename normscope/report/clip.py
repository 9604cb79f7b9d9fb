"""clip and clip-sweep results as tables (terminal and Markdown share them) and plain-words notes.
Every number shown is a field of the result; nothing is computed here."""

from __future__ import annotations

import math

from ..results import ClipResult, ClipSweepResult
from .fmt import count, num, size
from .markdown import md_report
from .tables import Table
from .terminal import render_tables
from .text import register_text, register_verdict

__all__ = ["clip_header", "clip_tables", "clip_terminal", "clip_markdown", "sweep_header", "sweep_tables",
           "sweep_terminal", "sweep_markdown", "clip_verdict", "sweep_verdict"]


def _rel(x: float) -> str:
    return num(x, 4)


def _db(x: float) -> str:
    return num(x) if not math.isfinite(x) else f"{x:.2f}"


def _signed_pct(x: float) -> str:
    return f"{100 * x:+.2f}%"


def clip_header(r: ClipResult) -> list[str]:
    lines = [f"source: {r.source.spec or r.source.path} ({r.source.format}) · architecture {r.architecture}",
             f"clip: p{r.percentile:g} of |value| per {r.per.value} · scope {r.scope.value} · "
             f"{r.considered} tensors in scope, {r.changed} changed, {count(r.values_clipped)} values clipped"]
    if r.dry_run:
        lines.append("dry run: nothing written" + (f" (would write {r.out})" if r.out else ""))
    else:
        check = "every byte re-read and checked" if r.verified else "NOT verified"
        lines.append(f"output: {r.out} ({len(r.files)} files and normscope-clip.json; {check})")
    return lines


def clip_tables(r: ClipResult, top: int = 10) -> list[Table]:
    """The changed tensors (largest |value| first), the super-weight candidates, the files written."""
    ranked = sorted(r.tensors, key=lambda t: -t.max_before)[:top]
    changed = Table(f"Changed tensors (top {len(ranked)} of {len(r.tensors)} by max |value| before)",
                    ("tensor", "clipped on", "dtype", "threshold", "clipped", "max before", "max after"),
                    tuple((t.name, f"gain ({t.convention.value})" if t.convention else "|w|", t.dtype,
                           num(t.threshold) if t.threshold == t.threshold_min else
                           f"{num(t.threshold_min)}…{num(t.threshold)}",
                           count(t.clipped) + (f" (+{t.protected} kept)" if t.protected else ""),
                           num(t.max_before), num(t.max_after)) for t in ranked), "lllrrrr")
    strongest = sorted(r.super_weights, key=lambda s: -s.z)[:top]
    supers = Table(f"Super-weight candidates, data-free ({'protected' if r.protect else 'NOT protected'}; top "
                   f"{len(strongest)} of {len(r.super_weights)} by z)", ("tensor", "row", "col", "value", "z"),
                   tuple((s.tensor, str(s.row), str(s.col), num(s.value), f"{s.z:.1f}") for s in strongest), "lrrrr")
    files = Table("Files written", ("file", "action", "size", "sha256"),
                  tuple((f.name, f.action, size(f.size), f.sha256[:16]) for f in r.files), "llrl")
    return [changed, supers, files]


def _clip_notes(r: ClipResult) -> list[tuple[str, str]]:
    notes = [("warning", w) for w in r.warnings]
    notes += [("info", n) for n in r.notes]
    notes += [("info", f"left alone: {s}") for s in r.skipped]
    return notes


def clip_verdict(r: ClipResult) -> list[str]:
    """What was clipped (and where it went), the largest cut, and what clipping norms costs.

    Example:
        >>> clip_verdict(normscope.clip("gemma-3-270m-hf", 99, dry_run=True))[0]  # doctest: +SKIP
        'dry run: would clip 606 values in 109 of 109 tensors at p99 per tensor; nothing written'
    """
    where = ("nothing written" if r.dry_run else
             f"written to {r.out}" + (", every byte re-read and checked" if r.verified else ", NOT verified"))
    verb = "would clip" if r.dry_run else "clipped"
    lines = [f"{'dry run: ' if r.dry_run else ''}{verb} {count(r.values_clipped)} values in {r.changed} of "
             f"{r.considered} tensors at p{r.percentile:g} per {r.per.value}; {where}"]
    if r.tensors:
        t = max(r.tensors, key=lambda t: t.max_before)
        what = "|gain|" if t.domain == "gain" else "|w|"
        lines.append(f"largest cut: {t.name}, {what} {num(t.max_before)} → {num(t.max_after)}"
                     + (f"; {len(r.super_weights)} super-weight candidates left alone" if r.protect and r.super_weights
                        else ""))
    if any(t.domain == "gain" for t in r.tensors):
        lines.append("no weight quantizer touches norms (llama.cpp keeps them F32): clipped gains are error added to "
                     "the model as trained; clip --sweep and forward measure what it costs")
    return lines


def clip_terminal(r: ClipResult, top: int = 10, width: int = 120, color: bool = False) -> str:
    """The clip summary as shown by `normscope clip`."""
    return render_tables(clip_header(r), clip_tables(r, top), _clip_notes(r), width, color, verdict=clip_verdict(r))


def clip_markdown(r: ClipResult, top: int = 10) -> str:
    """The clip report as GitHub-flavoured Markdown."""
    return md_report("normscope clip", clip_header(r), clip_tables(r, top), _clip_notes(r), verdict=clip_verdict(r))


# -- sweep ---------------------------------------------------------------------------------------

def sweep_header(r: ClipSweepResult) -> list[str]:
    return [f"source: {r.source.spec or r.source.path} ({r.source.format}) · architecture {r.architecture}",
            f"clip sweep: p{', p'.join(f'{p:g}' for p in r.percentiles)} per {r.per.value} · scope {r.scope.value} · "
            f"schemes {', '.join(r.schemes)}",
            "errors are ‖d‖/‖x‖ against the original tensor: clip = c − x, quant = q − c, total = q − x"]


def sweep_tables(r: ClipSweepResult, top: int = 10) -> list[Table]:
    """Per scheme the pooled errors by percentile, the best percentile, and the tensors clipping helps most."""
    tables = [Table("Best percentile per scheme (pooled over the tensors each quantizes)",
                    ("scheme", "best", "total", "unclipped", "helped", "hurt", "not quantized"),
                    tuple((b.scheme, f"p{b.percentile:g}", _rel(b.total_rel_l2), _rel(b.no_clip_total_rel_l2),
                           str(len(b.helped)), str(len(b.hurt)), str(len(b.unquantized))) for b in r.best),
                    "lrrrrrr")]
    for s in r.schemes:
        rows = [t for t in r.totals if t.scheme == s]
        n = rows[0].tensors if rows else 0
        tables.append(Table(f"{s}: pooled over the {n} tensors it quantizes",
                            ("percentile", "clipped", "clip", "quant", "total", "SQNR dB", "vs unclipped"),
                            tuple((f"p{t.percentile:g}", count(t.clipped), _rel(t.clip_rel_l2), _rel(t.quant_rel_l2),
                                   _rel(t.total_rel_l2), _db(t.total_sqnr_db), _signed_pct(t.vs_no_clip))
                                  for t in rows), "lrrrrrr"))
        helped = sorted((t for t in r.tensors if t.scheme == s and t.change < 0), key=lambda t: t.change)[:top]
        tables.append(Table(f"{s}: where clipping helps most (top {len(helped)})",
                            ("tensor", "type", "best", "total", "unclipped", "change"),
                            tuple((t.tensor, t.type or "—", f"p{t.best_percentile:g}", _rel(t.best_total_rel_l2),
                                   _rel(t.no_clip_total_rel_l2), _signed_pct(t.change)) for t in helped), "llrrrr"))
    return tables


def _sweep_notes(r: ClipSweepResult) -> list[tuple[str, str]]:
    return [("warning", w) for w in r.warnings] + [("info", n) for n in r.notes]


def sweep_verdict(r: ClipSweepResult) -> list[str]:
    """Per scheme (at most three lines): the percentile that minimises its total error, against no clipping."""
    lines = []
    for b in r.best[:3]:
        if b.percentile >= 100 or b.total_rel_l2 >= b.no_clip_total_rel_l2:
            lines.append(f"{b.scheme}: clipping does not help; no percentile below 100 lowers its total error "
                         f"({_rel(b.no_clip_total_rel_l2)} unclipped)")
        else:
            at = next((t for t in r.totals if t.scheme == b.scheme and t.percentile == b.percentile), None)
            change = f" ({_signed_pct(at.vs_no_clip)})" if at is not None else ""
            lines.append(f"{b.scheme}: best at p{b.percentile:g}, total error {_rel(b.total_rel_l2)} against "
                         f"{_rel(b.no_clip_total_rel_l2)} unclipped{change}; it helps "
                         f"{len(b.helped)} tensors, hurts {len(b.hurt)}")
    if len(r.best) > 3:
        lines[-1] += f"; {len(r.best) - 3} more schemes in the tables"
    return lines


def sweep_terminal(r: ClipSweepResult, top: int = 10, width: int = 120, color: bool = False) -> str:
    """The sweep summary as shown by `normscope clip --sweep`."""
    return render_tables(sweep_header(r), sweep_tables(r, top), _sweep_notes(r), width, color,
                         verdict=sweep_verdict(r))


def sweep_markdown(r: ClipSweepResult, top: int = 10) -> str:
    """The sweep report as GitHub-flavoured Markdown."""
    return md_report("normscope clip --sweep", sweep_header(r), sweep_tables(r, top), _sweep_notes(r),
                     verdict=sweep_verdict(r))


register_text(ClipResult, terminal=clip_terminal, markdown=clip_markdown)
register_text(ClipSweepResult, terminal=sweep_terminal, markdown=sweep_markdown)
register_verdict(ClipResult, clip_verdict)
register_verdict(ClipSweepResult, sweep_verdict)
