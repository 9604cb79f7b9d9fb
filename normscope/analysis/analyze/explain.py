"""Plain-words readings of analyze's numbers: what a gain means in its convention, and what is damage.

The sentences are the tool's answer to the mistake that started it: a Gemma norm stored as 1656
is a gain of 1657, trained that way, and no mainstream weight quantizer touches it.
"""

from __future__ import annotations

from ...arch import FORMULA, GAIN_OFFSET
from ...results import Explanation, NormConvention, Role, TensorReport, name_order

__all__ = ["explain", "QUANTIZERS_SKIP_NORMS"]

QUANTIZERS_SKIP_NORMS = "llama.cpp, GPTQ, AWQ and quanto leave norms unquantized"

_FAMILY = {
    NormConvention.ONE_PLUS_W: "Gemma's RMSNorm",
    NormConvention.W: "RMSNorm",
    NormConvention.LAYERNORM: "LayerNorm",
    NormConvention.LAYERNORM1P: "LayerNorm1P",
}
_WHERE = {Role.NORM_POST_FFN: "post-FFN", Role.NORM_POST_ATTN: "post-attention"}


def _num(x: float) -> str:
    return f"{x:.0f}" if x == int(x) else f"{x:.1f}" if abs(x) >= 100 else f"{x:.4g}"


def explain(reports: tuple[TensorReport, ...], explain_above: float, outlier_ratio: float = 50.0
            ) -> tuple[Explanation, ...]:
    """Explanations for norms whose |gain| exceeds `explain_above`, non-finite values, and linear
    tensors whose largest |w| is more than `outlier_ratio` standard deviations."""
    out: list[Explanation] = []
    by_gain = sorted(reports, key=lambda r: (-(r.norm.max_abs_gain if r.norm else 0.0), name_order(r.name)))
    for r in by_gain:
        for stats in (r.norm, r.weight):
            if stats is not None and (stats.nan_count or stats.inf_count):
                out.append(Explanation(r.name, "error", f"{stats.nan_count} NaN and {stats.inf_count} Inf values: "
                                       "the checkpoint is damaged; no convention or quantizer explains that",
                                       "non_finite"))
        n = r.norm
        if n is not None and n.max_abs_gain > explain_above:
            peak = max(n.top_channels, key=lambda t: abs(t.value)) if n.top_channels else None
            stored = peak.value - GAIN_OFFSET[n.convention] if peak else n.stored_max
            text = (f"stored {_num(stored)} = gain {_num(peak.value if peak else n.gain_max)} "
                    f"({_FAMILY[n.convention]} computes {FORMULA[n.convention]})")
            if n.convention is NormConvention.ONE_PLUS_W and r.role in _WHERE:
                text += f"; a large {_WHERE[r.role]} gain is how Gemma was trained, not damage"
            if n.negative_gain_count:
                plural = "s" if n.negative_gain_count > 1 else ""
                text += f"; {n.negative_gain_count} channel{plural} with negative gain (sign-flipping x̂)"
            out.append(Explanation(r.name, "info", text + "; " + QUANTIZERS_SKIP_NORMS, "large_gain"))
        w = r.weight
        if w is not None and r.role.is_linear and w.absmax_over_std > outlier_ratio:
            at = f" at {list(w.top[0].index)}" if w.top else ""
            out.append(Explanation(r.name, "warning",
                                   f"largest |w| {w.absmax:.4g}{at} is {w.absmax_over_std:.0f}σ from zero; a few "
                                   "such weights set the scale of their quantization block or group "
                                   "(see `normscope simulate`)", "outlier"))
    return tuple(out)
