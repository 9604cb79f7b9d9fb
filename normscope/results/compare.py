"""What `compare` returns: each variant against the base, tensor by tensor and by role and depth."""

from __future__ import annotations

import dataclasses
from typing import Any

from .analyze import AnalyzeResult
from .base import ResultBase
from .common import Role, SourceInfo
from .simulate import ErrorStats

__all__ = ["COMPARE_SCHEMA_VERSION", "Variant", "TensorDiff", "Unmatched", "NormChange", "PairResult", "DepthProfile",
           "FailedVariant", "CompareResult"]

COMPARE_SCHEMA_VERSION = "1.1"  # 1.1: errors, error.non_finite


@dataclasses.dataclass(frozen=True)
class Variant(ResultBase):
    """One checkpoint of a comparison."""

    label: str
    source: SourceInfo
    architecture: str
    n_layers: int | None
    n_tensors: int
    n_params: int
    adapter: str | None = None


@dataclasses.dataclass(frozen=True)
class TensorDiff(ResultBase):
    """One tensor present with the same shape in the base and a variant: variant − base."""

    name: str  # HF name in the base
    variant_name: str  # the name the variant's file gives it
    role: Role
    layer: int | None
    shape: tuple[int, ...]
    base_dtype: str
    variant_dtype: str
    identical: bool  # every value equal, in HF convention (GGUF norms with the converter's +1 removed)
    error: ErrorStats
    note: str = ""


@dataclasses.dataclass(frozen=True)
class Unmatched(ResultBase):
    name: str
    side: str  # "base" or "variant"
    shape: tuple[int, ...]
    reason: str


@dataclasses.dataclass(frozen=True)
class NormChange(ResultBase):
    name: str
    base_max_abs_gain: float
    variant_max_abs_gain: float
    ratio: float  # variant / base


@dataclasses.dataclass(frozen=True)
class PairResult(ResultBase):
    """A variant against the base, tensor by tensor."""

    base: str  # labels
    variant: str
    matched: int
    identical: int
    tensors: tuple[TensorDiff, ...]
    unmatched: tuple[Unmatched, ...]
    rel_l2: float  # pooled over matched tensors: ‖all differences‖ / ‖all base values‖
    sqnr_db: float
    moved_most: tuple[str, ...]  # largest relative L2 first
    top5_error_share: float  # share of the pooled squared difference held by the 5 largest tensors
    tensors_for_half: int  # fewest tensors holding half of the pooled squared difference
    norm_changes: tuple[NormChange, ...]  # every norm weight, largest |log ratio| first
    summary: tuple[str, ...]  # plain-words readings

    def tensor(self, name: str) -> TensorDiff:
        for t in self.tensors:
            if name in (t.name, t.variant_name):
                return t
        raise KeyError(name)


@dataclasses.dataclass(frozen=True)
class DepthProfile(ResultBase):
    """A statistic of one tensor role against relative depth (layer / (layers − 1)), for one variant."""

    variant: str
    role: str
    metric: str  # "gain_max", "gain_mean", "gain_p99", "outlier_ratio", "kurtosis"
    points: tuple[tuple[float, float], ...]  # (depth 0..1, value)


@dataclasses.dataclass(frozen=True)
class FailedVariant(ResultBase):
    """A variant that could not be read: it is left out, the others are still compared."""

    label: str
    source: str  # as the user gave it
    error: str  # one line, naming the file


@dataclasses.dataclass(frozen=True)
class CompareResult(ResultBase):
    variants: tuple[Variant, ...]
    pairs: tuple[PairResult, ...]  # each variant against the first
    profiles: tuple[DepthProfile, ...]
    analyses: tuple[AnalyzeResult, ...]  # one per variant: every number a profile shows
    warnings: tuple[str, ...]
    options: dict[str, Any]
    failed: tuple[FailedVariant, ...] = ()  # variants left out because they could not be read
    errors: tuple[str, ...] = ()  # damage found (NaN or Inf weights in a model)
    schema: str = "normscope.compare"
    schema_version: str = COMPARE_SCHEMA_VERSION

    def pair(self, variant: str) -> PairResult:
        for p in self.pairs:
            if p.variant == variant:
                return p
        raise KeyError(variant)
