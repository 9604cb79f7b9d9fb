"""simulate results as tables (terminal and Markdown share them) and plain-words notes."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from ..results import ImatrixUse, SchemeResult, SimTensor, SimulateResult
from .fmt import count, num, pct, size
from .markdown import md_report
from .tables import Table
from .terminal import render_tables
from .text import register_text, register_verdict

__all__ = ["imatrix_line", "simulate_header", "simulate_tables", "simulate_terminal", "simulate_markdown",
           "simulate_verdict", "scheme_label", "quantized_source", "best_at_each_size"]

_FLOAT_STORAGE = ("F64", "F32", "F16", "BF16")


def _db(x: float | None) -> str:
    if x is None:
        return "—"
    return num(x) if not math.isfinite(x) else f"{x:.2f}"


def _types(s: SchemeResult) -> str:
    return ", ".join(f"{k} {v}" for k, v in s.type_counts.items())


def scheme_label(r: SimulateResult, s: SchemeResult) -> str:
    """The scheme's name, with the llama-quantize `--tensor-type` overrides its plan applied (GGUF schemes only)."""
    overrides = r.options.get("tensor_types") or []
    if s.kind != "gguf" or not overrides:
        return s.scheme
    spelled = f"{s.scheme} --tensor-type {','.join(overrides)}"
    # a recipe's dozen regexes would make the label a paragraph (and crush every table it heads): the header
    # lists them once
    return spelled if len(spelled) <= LABEL_MAX else f"{s.scheme} + {len(overrides)} --tensor-type overrides"


LABEL_MAX = 48


def quantized_source(r: SimulateResult) -> dict[str, int]:
    """Parameters per storage type of the source's tensors that are already quantized (a GGUF's Q8_0, a GPTQ pack's
    GPTQ_4bit_g128): empty when every tensor is stored as floats."""
    if not r.schemes:
        return {}
    found: Counter[str] = Counter()
    for t in r.schemes[0].tensors:
        dtype = t.source_dtype.removeprefix("LoRA(").removesuffix(")")  # a LoRA over a pack: the pack's type
        if dtype not in _FLOAT_STORAGE and not dtype.startswith(("I", "U", "BOOL")):
            found[t.source_dtype] += math.prod(t.shape)
    return dict(found.most_common())


def _requant(r: SimulateResult) -> str:
    return " requantization" if quantized_source(r) else ""


def simulate_header(r: SimulateResult) -> list[str]:
    first = r.schemes[0] if r.schemes else None
    lines = [f"source: {r.source.spec or r.source.path} ({r.source.format})",
             f"architecture: {r.architecture}"
             + (f" · {count(first.n_params)} parameters in {len(first.tensors)} tensors" if first else "")]
    if r.imatrix is not None:
        lines.append(imatrix_line(r.imatrix))
    overrides = r.options.get("tensor_types") or []
    if any(s.kind == "gguf" for s in r.schemes) and overrides:
        lines.append(f"--tensor-type overrides of the GGUF schemes: {', '.join(overrides)}")
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


def _worst(s: SchemeResult, top: int, label: str = "", requant: str = "") -> Table:
    quantized = [t for t in s.tensors if t.error is not None]
    ranked = sorted(quantized, key=lambda t: t.error.sqnr_db)[:top]
    rows = tuple((t.name, t.type, num(t.bits_per_weight, 4), _db(t.error.sqnr_db), num(t.error.rel_l2, 3),
                  num(t.error.max_abs, 3), num(t.error.p99, 3), f"{t.error.cosine:.6f}",
                  _db(t.norm_aware.delta_db) if t.norm_aware else "—",
                  pct(t.health.dominated_share, 1.0) if t.health else "—")
                 for t in ranked)
    return Table(f"{label or s.scheme}: lowest{requant} SQNR (top {len(rows)} of {len(quantized)} quantized tensors)",
                 ("tensor", "type", "bpw", "SQNR dB", "rel L2", "max |err|", "|err| p99", "cosine", "norm Δ dB",
                  "dominated"), rows, "llrrrrrrrr")


def _norm_aware(s: SchemeResult, top: int, label: str = "") -> Table:
    by_name = {t.name: t for t in s.tensors}
    picked: list[SimTensor] = [by_name[n] for n in s.norm_aware_ranking[:top]]
    rows = tuple((t.name, t.norm_aware.norm.split(",")[0].rsplit(".", 2)[-2], t.norm_aware.axis, t.type,
                  _db(t.error.sqnr_db), _db(t.norm_aware.sqnr_db), _db(t.norm_aware.delta_db)) for t in picked)
    return Table(f"{label or s.scheme}: where the norm gains move the error most (top {len(rows)})",
                 ("tensor", "norm", "axis", "type", "SQNR dB", "norm-aware dB", "Δ dB"), rows, "llllrrr")


def simulate_tables(r: SimulateResult, top: int = 10) -> list[Table]:
    """A summary row per scheme, then per scheme its worst tensors and its norm-aware ranking."""
    title = "Schemes" + (" requantizing an already quantized source" if _requant(r) else "")
    summary = Table(title, ("scheme", "quantized", "size", "bpw", "SQNR dB", "rel L2", "norm-aware dB",
                            "tensor types"),
                    tuple((scheme_label(r, s), f"{sum(t.type is not None for t in s.tensors)} of {len(s.tensors)} "
                           "tensors",
                           size(s.nbytes),
                           num(s.bits_per_weight, 4), _db(s.sqnr_db), num(s.rel_l2, 3), _db(s.norm_aware_sqnr_db),
                           _types(s)) for s in r.schemes), "lrrrrrrl")
    tables = [summary]
    for s in r.schemes:
        tables.append(_worst(s, top, scheme_label(r, s), _requant(r)))
        tables.append(_norm_aware(s, top, scheme_label(r, s)))
    return tables


def _notes(r: SimulateResult) -> list[tuple[str, str]]:
    notes = [("error", e) for e in r.errors] + [("warning", w) for w in r.warnings]
    for s in r.schemes:
        notes += [("info", n) for n in s.notes]
    return notes


def _requant_line(r: SimulateResult) -> str | None:
    found = quantized_source(r)
    if not found:
        return None
    total = r.schemes[0].n_params
    kinds = ", ".join(f"{k} {pct(v, total)}" for k, v in found.items())
    return (f"the source is already quantized ({kinds} of its parameters): every error below is requantization, "
            "measured against its dequantized values, not against the weights it was made from")


def best_at_each_size(schemes: Sequence[SchemeResult]) -> list[SchemeResult]:
    """The Pareto front of size against pooled SQNR, smallest first: a scheme wins at its size unless another is no
    larger and at least as accurate (and differs in one). Schemes that quantize nothing are left out."""
    done = sorted((s for s in schemes if s.quantized_params), key=lambda s: (s.nbytes, -s.sqnr_db))
    return [s for s in done if not any(o is not s and o.nbytes <= s.nbytes and o.sqnr_db >= s.sqnr_db
                                       and (o.nbytes, -o.sqnr_db) < (s.nbytes, -s.sqnr_db) for o in done)]


def _size_line(r: SimulateResult) -> str | None:
    done = [s for s in r.schemes if s.quantized_params]
    if not done:
        return None
    by_size = sorted(done, key=lambda s: (s.nbytes, -s.sqnr_db))

    def fact(s: SchemeResult) -> str:
        return f"{scheme_label(r, s)} ({size(s.nbytes)}, {_db(s.sqnr_db)} dB)"

    if len(done) == 1:
        s = done[0]
        return (f"{fact(s)}: {num(s.bits_per_weight, 4)} bits per weight over the model, SQNR pooled over its "
                f"{count(sum(t.type is not None for t in s.tensors))} quantized tensors")
    front = best_at_each_size(done)
    line = "best at each size: " + ", ".join(fact(s) for s in front)
    beaten = [s for s in by_size if s not in front]
    for s in beaten[:2]:
        by = next(o for o in front if o.nbytes <= s.nbytes and o.sqnr_db >= s.sqnr_db)
        smaller = "smaller" if by.nbytes < s.nbytes else "as small"
        better = "more accurate" if by.sqnr_db > s.sqnr_db else "as accurate"
        line += f"; {fact(s)} is beaten by {scheme_label(r, by)}, {smaller} and {better}"
    if len(beaten) > 2:
        line += f"; {len(beaten) - 2} more schemes beaten"
    return line


def _worst_line(r: SimulateResult) -> str | None:
    worst = {}
    for s in r.schemes:
        quantized = [t for t in s.tensors if t.error is not None]
        if quantized:
            worst[s.scheme] = min(quantized, key=lambda t: t.error.sqnr_db)
    if not worst:
        return None
    names = {t.name for t in worst.values()}
    if len(names) == 1 and len(worst) > 1:
        name = next(iter(names))
        line = (f"worst tensor under every scheme: {name} ("
                + ", ".join(f"{k} {_db(t.error.sqnr_db)} dB" for k, t in worst.items()) + ")")
    else:
        line = "worst tensor: " + ", ".join(f"{k} {t.name} ({_db(t.error.sqnr_db)} dB)" for k, t in worst.items())
    return line + "; normscope recipe finds per-tensor types that lower the error for the bits they cost"


def simulate_verdict(r: SimulateResult) -> list[str]:
    """One to three lines: damage or a requantized source first, the scheme that wins at each size, the worst
    tensors. A scheme that quantizes nothing says so.

    Example:
        >>> simulate_verdict(normscope.simulate("gemma-3-270m-hf", schemes="Q4_K_M,int4"))[0]  # doctest: +SKIP
        'best at each size: Q4_K_M (235.2 MiB, 56.53 dB); int4 (370.9 MiB, 19.41 dB) is beaten by Q4_K_M, ...'
    """
    lines = []
    if r.errors:
        lines.append(f"DAMAGED: {len(r.errors)} tensors hold NaN or Inf values; their errors mean nothing: re-export "
                     "or re-download the checkpoint first")
    idle = [s.scheme for s in r.schemes if not s.quantized_params]
    idle_line = (f"{', '.join(idle)} quantize{'s' if len(idle) == 1 else ''} no tensor of this model (see the notes)"
                 if idle else None)
    lines += [line for line in (_requant_line(r), _size_line(r), idle_line, _worst_line(r)) if line]
    return lines[:3]


def simulate_terminal(r: SimulateResult, top: int = 10, width: int = 120, color: bool = False) -> str:
    """The simulate summary as shown by `normscope simulate`, its verdict first."""
    return render_tables(simulate_header(r), simulate_tables(r, top), _notes(r), width, color,
                         verdict=simulate_verdict(r))


def simulate_markdown(r: SimulateResult, top: int = 10) -> str:
    """The simulate report as GitHub-flavoured Markdown (verdict, top tables, every note)."""
    return md_report("normscope simulate", simulate_header(r), simulate_tables(r, top), _notes(r),
                     verdict=simulate_verdict(r))


register_text(SimulateResult, terminal=simulate_terminal, markdown=simulate_markdown)
register_verdict(SimulateResult, simulate_verdict)
