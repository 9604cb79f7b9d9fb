"""The rules `check` can gate on, as data: what each measures, on which tensors, and which way fails.

A rule reads one number per tensor from the reports analyze (and, for quantization rules, simulate)
already produce; `check.py` compares it with a threshold. Adding a rule is adding a `CheckRule` here.
Quantization rules (`per_scheme`) take one threshold per scheme and read that scheme's simulate
entry of the tensor (only the tensors the scheme quantizes).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...errors import UnknownNameError

__all__ = ["CheckRule", "RULES", "get_rule", "Measure"]

# measure(tensor entry of a report dict, baseline entry or None) -> value, or None when not applicable
Measure = Callable[[dict[str, Any], dict[str, Any] | None], float | None]


@dataclass(frozen=True)
class CheckRule:
    name: str
    description: str
    direction: str  # "max": value > threshold fails; "min": value < threshold fails; "flag": value > 0 fails
    measure: Measure
    needs: str = "analyze"  # "analyze", "baseline" (analyze + a baseline), "simulate", "simulate+baseline"
    # (per_scheme rules read simulate entries: t is the tensor's entry in one scheme)
    default: Any = None  # None: off unless configured
    per_scheme: bool = False  # threshold is {scheme: value}

    def fails(self, value: float, threshold: float) -> bool:
        if isinstance(value, float) and math.isnan(value):
            return True  # an undefined statistic never passes a gate
        if self.direction == "max":
            return value > threshold
        if self.direction == "min":
            return value < threshold
        return value > 0


def _num(x: Any) -> float:
    return float(x)  # JSON writes non-finite values as "nan"/"inf"/"-inf", which float() reads


def _norm(field: str) -> Measure:
    return lambda t, _b: _num(t["norm"][field]) if t.get("norm") else None


def _weight(field: str, linear_only: bool = False) -> Measure:
    def measure(t: dict[str, Any], _b: dict[str, Any] | None) -> float | None:
        w = t.get("weight")
        if not w or (linear_only and not _is_matrix(t)):
            return None
        return _num(w[field])
    return measure


def _is_matrix(t: dict[str, Any]) -> bool:
    return len(t.get("shape", ())) >= 2


def _non_finite(t: dict[str, Any], _b: dict[str, Any] | None) -> float:
    stats = t.get("norm") or t.get("weight") or {}
    return float(stats.get("nan_count", 0) + stats.get("inf_count", 0))


def _relative(new: float, old: float) -> float:
    return abs(new - old) / abs(old) if old else (0.0 if new == old else math.inf)


def _norm_drift(t: dict[str, Any], b: dict[str, Any] | None) -> float | None:
    if not t.get("norm") or not b or not b.get("norm"):
        return None
    return _relative(_num(t["norm"]["max_abs_gain"]), _num(b["norm"]["max_abs_gain"]))


def _std_drift(t: dict[str, Any], b: dict[str, Any] | None) -> float | None:
    if not t.get("weight") or not b or not b.get("weight"):
        return None
    return _relative(_num(t["weight"]["std"]), _num(b["weight"]["std"]))


def _sim(section: str, field: str) -> Measure:
    def measure(t: dict[str, Any], _b: dict[str, Any] | None) -> float | None:
        block = t.get(section)
        return _num(block[field]) if block else None
    return measure


def _regression(t: dict[str, Any], b: dict[str, Any] | None) -> float | None:
    """dB lost against the baseline: baseline SQNR − current SQNR (positive: worse now)."""
    if not t.get("error") or not b or not b.get("error"):
        return None
    new, old = _num(t["error"]["sqnr_db"]), _num(b["error"]["sqnr_db"])
    if math.isinf(old) and math.isinf(new):
        return 0.0
    return old - new


RULES: dict[str, CheckRule] = {r.name: r for r in (
    CheckRule("no_nan_inf", "no NaN or Inf value in any tensor", "flag", _non_finite, default=True),
    CheckRule("max_effective_gamma", "largest |gain| of a norm, in its own convention (Gemma: 1 + w)", "max",
         _norm("max_abs_gain")),
    CheckRule("max_abs_weight", "largest |w| of a non-norm tensor", "max", _weight("absmax")),
    CheckRule("max_kurtosis", "excess kurtosis of a weight matrix", "max", _weight("excess_kurtosis", True)),
    CheckRule("max_outlier_ratio", "largest |w| over its tensor's standard deviation", "max",
         _weight("absmax_over_std", True)),
    CheckRule("max_norm_drift", "relative change of a norm's largest |gain| against the baseline", "max", _norm_drift,
         needs="baseline"),
    CheckRule("max_std_drift", "relative change of a weight tensor's standard deviation against the baseline", "max",
         _std_drift, needs="baseline"),
    CheckRule("min_sqnr", "SQNR in dB of every tensor a scheme quantizes (simulate)", "min", _sim("error", "sqnr_db"),
         needs="simulate", per_scheme=True),
    CheckRule("min_norm_aware_sqnr", "SQNR in dB weighted by the gains of the norms around the tensor (simulate)",
         "min", _sim("norm_aware", "sqnr_db"), needs="simulate", per_scheme=True),
    CheckRule("min_cosine", "cosine similarity of a quantized tensor with the original (simulate)", "min",
         _sim("error", "cosine"), needs="simulate", per_scheme=True),
    CheckRule("max_zeroed_share", "share of nonzero weights a scheme rounds to exactly zero (simulate)", "max",
         _sim("health", "zeroed_share"), needs="simulate", per_scheme=True),
    CheckRule("max_error_regression_db", "dB of SQNR lost against the baseline's simulation of the same scheme", "max",
         _regression, needs="simulate+baseline", per_scheme=True),
)}


def get_rule(name: str) -> CheckRule:
    """The rule registered as `name` (dashes accepted for underscores).

    Raises:
        UnknownNameError: listing the rules.
    """
    key = name.replace("-", "_")
    if key in RULES:
        return RULES[key]
    raise UnknownNameError("rule", name, RULES)
