"""Result objects every layer returns: frozen dataclasses and str Enums, no logic beyond to_dict().

User choices are `str` Enums so typer takes them as option types unchanged, and JSON gets their
plain values. Numbers are plain Python floats and ints; a non-finite float becomes the string
"nan", "inf" or "-inf" in `to_dict()` so that the JSON stays standard.

`base` and `common` are the shared vocabulary (io and arch use it); each command's result has its own
module. Every name is importable from `normscope.results` itself.
"""

from __future__ import annotations

from .analyze import (NormStats, WeightStats, TensorReport, Explanation, ModelSummary, ANALYZE_SCHEMA_VERSION,
                      AnalyzeResult)
from .base import ProgressFn, to_plain, ResultBase
from .check import CHECK_SCHEMA_VERSION, RuleOutcome, Failure, CheckResult
from .clip import (CLIP_SCHEMA_VERSION, ClipScope, ClipGranularity, SuperWeightCandidate, ClippedTensor, ClipFile,
                   ClipResult, SweepPoint, SweepTotal, SweepTensor, SweepBest, ClipSweepResult)
from .common import Role, NormConvention, Component, SourceInfo, TensorInfo, TopValue, name_order
from .compare import (COMPARE_SCHEMA_VERSION, Variant, TensorDiff, Unmatched, NormChange, PairResult, DepthProfile,
                      FailedVariant, CompareResult)
from .forward import (FORWARD_SCHEMA_VERSION, KLStats, ForwardVariant, EvalText, MassiveChannel, LayerActivations,
                      SuperWeightCheck, OverflowSite, ActivationProfile, GroupSensitivity, ForwardResult)
from .recipe import RECIPE_SCHEMA_VERSION, RecipeTensor, PlanSummary, RecipeResult
from .simulate import (SIMULATE_SCHEMA_VERSION, ErrorStats, NormAwareError, BlockHealthStats, SimTensor, SchemeResult,
                       SimulateResult)

__all__ = [
    "ProgressFn", "to_plain", "ResultBase", "Role", "NormConvention", "Component", "SourceInfo", "TensorInfo",
    "TopValue", "name_order", "NormStats", "WeightStats", "TensorReport", "Explanation", "ModelSummary", "ANALYZE_SCHEMA_VERSION",
    "AnalyzeResult", "CHECK_SCHEMA_VERSION", "RuleOutcome", "Failure", "CheckResult", "SIMULATE_SCHEMA_VERSION",
    "ErrorStats", "NormAwareError", "BlockHealthStats", "SimTensor", "SchemeResult", "SimulateResult",
    "COMPARE_SCHEMA_VERSION", "Variant", "TensorDiff", "Unmatched", "NormChange", "PairResult", "DepthProfile",
    "FailedVariant", "CompareResult", "CLIP_SCHEMA_VERSION", "ClipScope", "ClipGranularity", "SuperWeightCandidate",
    "ClippedTensor", "ClipFile", "ClipResult", "SweepPoint", "SweepTotal", "SweepTensor", "SweepBest",
    "ClipSweepResult", "FORWARD_SCHEMA_VERSION", "KLStats", "ForwardVariant", "EvalText", "MassiveChannel",
    "LayerActivations", "SuperWeightCheck", "OverflowSite", "ActivationProfile", "GroupSensitivity", "ForwardResult",
    "RECIPE_SCHEMA_VERSION", "RecipeTensor", "PlanSummary", "RecipeResult",
]
