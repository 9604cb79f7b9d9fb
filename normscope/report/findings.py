"""What an analyze report opens and closes with: the verdict (what matters in this checkpoint, what to do) and
the explanations grouped, one note per kind of finding with its tensors listed, instead of a paragraph per tensor.

Every claim is read off the result: the tensors, their statistics and the explanations analyze made.
"""

from __future__ import annotations

from collections.abc import Callable

from ..arch import FORMULA
from ..results import AnalyzeResult, Explanation, NormConvention, Role, TensorReport
from .fmt import count, num

__all__ = ["analyze_verdict", "grouped_explanations", "plural", "ROLE_WORDS"]

ROLE_WORDS = {Role.NORM_POST_FFN: "post-FFN", Role.NORM_POST_ATTN: "post-attention", Role.NORM_PRE_ATTN:
              "pre-attention", Role.NORM_PRE_FFN: "pre-FFN", Role.NORM_FINAL: "final", Role.NORM_Q: "q",
              Role.NORM_K: "k", Role.NORM_EMBED: "embedding"}
_FAMILY = {NormConvention.ONE_PLUS_W: "Gemma's RMSNorm", NormConvention.W: "RMSNorm",
           NormConvention.LAYERNORM: "LayerNorm", NormConvention.LAYERNORM1P: "LayerNorm1P"}
# Gemma's sandwich norms: large gains there are the trained model (the reading analyze's explanations give)
_TRAINED = (Role.NORM_POST_FFN, Role.NORM_POST_ATTN)
_SEVERITY_ORDER = {"error": 0, "warning": 1}
_KIND_WORDS = {"large_gain": "{n} {where} norms with |gain| above {above}",
               "outlier": "{n} weight matrices with a weight far beyond their spread",
               "non_finite": "{n} tensors with NaN or Inf values"}


def _damaged(r: AnalyzeResult) -> list[TensorReport]:
    return [t for t in r.tensors if any(st and (st.nan_count or st.inf_count) for st in (t.norm, t.weight))]


def plural(n: int, word: str, many: str | None = None) -> str:
    """`n word` with the word in the plural unless n is 1 ("1 norm has", "45 norms")."""
    return f"{count(n)} {word if n == 1 else many or word + 's'}"


def _names(names: list[str], shown: int = 3) -> str:
    more = f" and {count(len(names) - shown)} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _norm_line(r: AnalyzeResult) -> str | None:
    norms = sorted((t for t in r.tensors if t.norm is not None), key=lambda t: -t.norm.max_abs_gain)
    if not norms:
        return None
    above = float(r.options.get("explain_above", 100.0))
    peak = norms[0]
    big = [t for t in norms if t.norm.max_abs_gain > above]
    if not big:
        return (f"norm gains all within |gain| {num(above)} (largest {num(peak.norm.max_abs_gain)} in {peak.name}): "
                "nothing unusual")
    conventions = {t.norm.convention for t in big}
    how = (f", in the {FORMULA[c]} convention of {_FAMILY[c]}" if len(conventions) == 1 and
           (c := next(iter(conventions))) else "")
    line = (f"{count(len(big))} of {plural(len(norms), 'norm')} {'has' if len(big) == 1 else 'have'} |gain| above "
            f"{num(above)} (up to {num(peak.norm.max_abs_gain)}, {peak.name}){how}")
    trained = [t for t in big if t.norm.convention is NormConvention.ONE_PLUS_W and t.role in _TRAINED]
    if trained:
        where = " and ".join(ROLE_WORDS[role] for role in _TRAINED if any(t.role is role for t in trained))
        line += (f"; the {where} one is how Gemma was trained" if len(trained) == 1 else
                 f"; the {count(len(trained))} {where} ones are how Gemma was trained")
    return line + "; quantizers leave norms unquantized (llama.cpp keeps them F32): nothing to fix there"


def _outlier_line(r: AnalyzeResult) -> str | None:
    linear = [t for t in r.tensors if t.weight is not None and t.role.is_linear and t.weight.std == t.weight.std
              and t.weight.std > 0]
    if not linear:
        return None
    t = max(linear, key=lambda t: t.weight.absmax_over_std)
    w = t.weight
    return (f"largest weight outlier: {t.name}, |w| {num(w.absmax)} = {w.absmax_over_std:.1f}σ "
            f"({plural(w.outlier_count, 'weight')} beyond {num(w.outlier_sigma)}σ); normscope simulate measures "
            "what a quantization scheme does to it")


def analyze_verdict(r: AnalyzeResult) -> list[str]:
    """One to three lines: damage, the norm gains in their convention, the largest weight outlier.

    Example:
        >>> analyze_verdict(normscope.analyze("example:gemma3-270m"))[0]  # doctest: +SKIP
        'no damage (no NaN or Inf in 236 tensors)'
    """
    bad = _damaged(r)
    if bad:
        first = (f"DAMAGED: {count(len(bad))} of {count(len(r.tensors))} tensors hold NaN or Inf values "
                 f"({_names([t.name for t in bad])}); re-export or re-download the checkpoint before anything else")
    else:
        first = f"no damage (no NaN or Inf in {count(len(r.tensors))} tensors)"
    return [line for line in (first, _norm_line(r), _outlier_line(r)) if line]


def _value(kind: str) -> Callable[[TensorReport], str]:
    if kind == "large_gain":
        return lambda t: f"|gain| {num(t.norm.max_abs_gain)}" if t.norm else ""
    if kind == "outlier":
        return lambda t: f"{t.weight.absmax_over_std:.0f}σ" if t.weight else ""
    if kind == "non_finite":
        return lambda t: ", ".join(f"{st.nan_count} NaN, {st.inf_count} Inf" for st in (t.norm, t.weight)
                                   if st and (st.nan_count or st.inf_count))
    return lambda t: ""


def _group_key(e: Explanation, by_name: dict[str, TensorReport]) -> tuple[str, str, str]:
    t = by_name.get(e.tensor)
    # large gains are grouped by where the norm sits: a post-FFN gain and a pre-attention one read differently
    role = t.role.value if t is not None and e.kind == "large_gain" else ""
    return e.severity, e.kind or e.severity, role


def grouped_explanations(r: AnalyzeResult, top: int | None = 10) -> list[tuple[str, str]]:
    """(severity, text) notes: one per kind of finding (large gains: per kind of norm), errors first. Each
    gives the worst tensor's full reading, then the others of its kind with their value (`top` names in all;
    None: every one) and how many more there are.

    Example:
        >>> grouped_explanations(normscope.analyze("example:gemma3-270m"), top=3)[0][1][:44]  # doctest: +SKIP
        '18 post-FFN norms with |gain| above 100; the w'
    """
    by_name = {t.name: t for t in r.tensors}
    groups: dict[tuple[str, str, str], list[Explanation]] = {}
    for e in r.explanations:  # analyze lists them worst first within a kind
        groups.setdefault(_group_key(e, by_name), []).append(e)
    notes = []
    for (severity, kind, role), items in sorted(groups.items(), key=lambda g: _SEVERITY_ORDER.get(g[0][0], 2)):
        head = items[0]
        if len(items) == 1:
            notes.append((severity, f"{head.tensor}: {head.text}"))
            continue
        what = _KIND_WORDS.get(kind, "{n} tensors").format(
            n=count(len(items)), where=ROLE_WORDS.get(Role(role), role) if role else "",
            above=num(float(r.options.get("explain_above", 100.0))))
        value = _value(kind)
        limit = len(items) if top is None else max(top, 1)
        others = [f"{e.tensor} ({v})" if (v := value(by_name[e.tensor]) if e.tensor in by_name else "") else e.tensor
                  for e in items[1:limit]]
        rest = len(items) - 1 - len(others)
        text = f"{what}; the worst, {head.tensor}: {head.text}"
        if others:
            text += "; also " + ", ".join(others) + (f" and {count(rest)} more (--top)" if rest else "")
        elif rest:
            text += f"; and {count(rest)} more (--top)"
        notes.append((severity, text))
    return notes
