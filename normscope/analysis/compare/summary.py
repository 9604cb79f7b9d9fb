"""What a comparison says: per variant its summary against the base, the norms that moved, and per role its
statistics laid against relative depth (so models of different sizes compare by distribution)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ...results import AnalyzeResult, DepthProfile, NormChange, PairResult, TensorDiff, Unmatched
from ..metrics.quant_error import ErrorSums, rel_l2, sqnr_db

__all__ = ["pair_result", "depth_profiles", "MOVED_MOST", "NORM_CHANGE"]

MOVED_MOST = 20
NORM_CHANGE = 0.10  # a norm "grew" when its max |gain| rose by more than this fraction


def pair_result(base_label: str, label: str, measured: list[tuple[TensorDiff, ErrorSums]], unmatched: list[Unmatched],
          base_analysis: AnalyzeResult, analysis: AnalyzeResult) -> PairResult:
    diffs = [t for t, _ in measured]
    d2 = np.array([s.d2 for _, s in measured], dtype=np.float64)
    total_d2, total_x2 = float(d2.sum()), float(sum(s.x2 for _, s in measured))
    order = np.argsort(-d2, kind="stable")
    share = float(d2[order[:5]].sum() / total_d2) if total_d2 > 0 else 0.0
    half = int(np.searchsorted(np.cumsum(d2[order]), total_d2 / 2) + 1) if total_d2 > 0 else 0
    moved = sorted((t for t in diffs if not t.identical), key=lambda t: -_finite(t.error.rel_l2))
    changes = _norm_changes(base_analysis, analysis)
    identical = sum(t.identical for t in diffs)
    summary = _summary(base_label, label, diffs, unmatched, identical, moved, share, half, changes)
    aligned = bool(diffs)  # nothing aligned measures nothing: no "inf dB", which would read as identical
    return PairResult(base=base_label, variant=label, matched=len(diffs), identical=identical, tensors=tuple(diffs),
                      unmatched=tuple(unmatched), rel_l2=rel_l2(total_x2, total_d2) if aligned else math.nan,
                      sqnr_db=sqnr_db(total_x2, total_d2) if aligned else math.nan,
                      moved_most=tuple(t.name for t in moved[:MOVED_MOST]), top5_error_share=share,
                      tensors_for_half=half, norm_changes=changes, summary=summary)


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 1e300


def _norm_changes(base: AnalyzeResult, variant: AnalyzeResult) -> tuple[NormChange, ...]:
    other = {}
    for t in variant.tensors:
        if t.norm is not None:
            other[t.name] = t
    out = []
    for t in base.tensors:
        v = other.get(t.name)
        if t.norm is None or v is None:
            continue
        b, n = t.norm.max_abs_gain, v.norm.max_abs_gain
        ratio = n / b if b else (1.0 if n == b else math.inf)
        out.append(NormChange(t.name, b, n, ratio))
    out.sort(key=lambda c: -abs(math.log(c.ratio)) if 0 < c.ratio < math.inf else -math.inf)
    return tuple(out)


def _summary(base: str, label: str, diffs: list[TensorDiff], unmatched: list[Unmatched], identical: int,
             moved: list[TensorDiff], share: float, half: int, changes: tuple[NormChange, ...]) -> tuple[str, ...]:
    lines = [f"{label} vs {base}: {len(diffs)} tensors aligned, {identical} identical, "
             f"{sum(u.side == 'base' for u in unmatched)} only in {base}, "
             f"{sum(u.side == 'variant' for u in unmatched)} only in {label}"]
    if not diffs:
        lines.append(f"nothing aligned: no tensor of {label} pairs with one of {base} by name and shape, so there is "
                     "no element-by-element difference to measure (the models are unrelated, or named apart); "
                     "the depth profiles still compare them by role")
    shapes = [u for u in unmatched if u.side == "base" and u.reason.startswith("shape")]
    if shapes:
        lines.append(f"{len(shapes)} tensors differ in shape (e.g. {shapes[0].name}: {shapes[0].reason}); "
                     "compare them by role and depth (the depth profiles), not element by element")
    norms = [t for t in diffs if t.role.is_norm]
    if norms and all(t.identical for t in norms):
        lines.append(f"all {len(norms)} norm tensors are identical in their HF convention (a GGUF's +1 removed): "
                     "whatever changed, the norms did not")
    if moved:
        top = moved[0]
        lines.append(f"largest relative change: {top.name} (relative L2 {top.error.rel_l2:.3g}, "
                     f"SQNR {top.error.sqnr_db:.1f} dB)")
        n = len([t for t in diffs if not t.identical])
        if n >= 10:
            spread = "concentrated" if share >= 0.5 else "spread"
            lines.append(f"the difference is {spread}: the 5 largest tensors hold {share:.0%} of it, half of it "
                         f"lies in {half} of {n} changed tensors")
    grew = [c for c in changes if c.ratio > 1 + NORM_CHANGE]
    shrank = [c for c in changes if c.ratio < 1 - NORM_CHANGE]
    if grew or shrank:
        text = f"norm gains: {len(grew)} grew by more than {NORM_CHANGE:.0%}, {len(shrank)} shrank"
        if grew:
            g = max(grew, key=lambda c: c.ratio)
            text += f"; most: {g.name} {g.base_max_abs_gain:.4g} → {g.variant_max_abs_gain:.4g}"
        lines.append(text)
    return tuple(lines)


_NORM_METRICS = ("gain_max", "gain_mean", "gain_p99")
_WEIGHT_METRICS = ("outlier_ratio", "kurtosis")


def depth_profiles(labels: Sequence[str], analyses: Sequence[AnalyzeResult]) -> tuple[DepthProfile, ...]:
    """Per variant and role, each statistic against relative depth layer / (layers − 1)."""
    out = []
    for label, a in zip(labels, analyses):
        n = a.summary.n_layers or 1 + max((t.layer for t in a.tensors if t.layer is not None), default=0)
        series: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for t in a.tensors:
            if t.layer is None or t.component.value != "text":
                continue
            depth = t.layer / (n - 1) if n > 1 else 0.0
            if t.norm is not None:
                values = (t.norm.max_abs_gain, abs(t.norm.gain_mean), t.norm.gain_p99)
                for metric, v in zip(_NORM_METRICS, values):
                    series.setdefault((t.role.value, metric), []).append((depth, v))
            elif t.weight is not None and t.role.is_linear and len(t.shape) == 2:
                for metric, v in zip(_WEIGHT_METRICS, (t.weight.absmax_over_std, t.weight.excess_kurtosis)):
                    series.setdefault((t.role.value, metric), []).append((depth, v))
        for (role, metric), points in sorted(series.items()):
            out.append(DepthProfile(label, role, metric, tuple(sorted(points))))
    return tuple(out)
