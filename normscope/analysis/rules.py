"""The rules `check` can gate on, as data: what each measures, on which tensors, and which way fails.

A rule reads one number per tensor from the reports analyze (and, for quantization rules, simulate)
already produce; `check.py` compares it with a threshold. Adding a rule is adding a `Rule` here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import UnknownNameError

__all__ = ["Rule", "RULES", "get_rule", "Measure"]

# measure(tensor entry of a report dict, baseline entry or None) -> value, or None when not applicable
Measure = Callable[[dict[str, Any], dict[str, Any] | None], float | None]


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    direction: str  # "max": value > threshold fails; "min": value < threshold fails; "flag": value > 0 fails
    measure: Measure
    needs: str = "analyze"  # "analyze", "baseline" (analyze + a baseline), "simulate", "simulate+baseline"
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


RULES: dict[str, Rule] = {r.name: r for r in (
    Rule("no_nan_inf", "no NaN or Inf value in any tensor", "flag", _non_finite, default=True),
    Rule("max_effective_gamma", "largest |gain| of a norm, in its own convention (Gemma: 1 + w)", "max",
         _norm("max_abs_gain")),
    Rule("max_abs_weight", "largest |w| of a non-norm tensor", "max", _weight("absmax")),
    Rule("max_kurtosis", "excess kurtosis of a weight matrix", "max", _weight("excess_kurtosis", True)),
    Rule("max_outlier_ratio", "largest |w| over its tensor's standard deviation", "max",
         _weight("absmax_over_std", True)),
    Rule("max_norm_drift", "relative change of a norm's largest |gain| against the baseline", "max", _norm_drift,
         needs="baseline"),
    Rule("max_std_drift", "relative change of a weight tensor's standard deviation against the baseline", "max",
         _std_drift, needs="baseline"),
)}


def get_rule(name: str) -> Rule:
    """The rule registered as `name` (dashes accepted for underscores).

    Raises:
        UnknownNameError: listing the rules.
    """
    key = name.replace("-", "_")
    if key in RULES:
        return RULES[key]
    raise UnknownNameError("rule", name, RULES)
