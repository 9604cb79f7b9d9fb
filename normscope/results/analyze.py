"""What `analyze` returns: per tensor, norm statistics in their convention or weight statistics."""

from __future__ import annotations

import dataclasses
from typing import Any

from .base import ResultBase
from .common import Component, NormConvention, Role, SourceInfo, TopValue

__all__ = ["NormStats", "WeightStats", "TensorReport", "Explanation", "ModelSummary", "ANALYZE_SCHEMA_VERSION",
           "AnalyzeResult"]


@dataclasses.dataclass(frozen=True)
class NormStats(ResultBase):
    """A norm tensor in its convention: what is stored and the gain that multiplies x̂."""

    convention: NormConvention
    stored_min: float
    stored_max: float
    stored_mean: float
    stored_std: float
    gain_min: float
    gain_max: float
    gain_mean: float
    max_abs_gain: float
    gain_p99: float  # percentiles of |gain|, numpy's linear interpolation
    gain_p999: float
    top_channels: tuple[TopValue, ...]  # largest |gain|, value is the signed gain
    negative_gain_count: int
    nan_count: int
    inf_count: int


@dataclasses.dataclass(frozen=True)
class WeightStats(ResultBase):
    """A linear, embedding or other tensor's value distribution."""

    min: float
    max: float
    mean: float
    std: float
    absmax: float
    absmax_over_std: float
    excess_kurtosis: float
    top: tuple[TopValue, ...]  # largest |w|, value is signed
    outlier_sigma: float
    outlier_count: int  # |w - mean| > outlier_sigma · std
    nan_count: int
    inf_count: int


@dataclasses.dataclass(frozen=True)
class TensorReport(ResultBase):
    name: str
    source_name: str
    gguf_name: str | None
    role: Role
    component: Component
    layer: int | None
    shape: tuple[int, ...]
    dtype: str
    n_params: int
    nbytes: int
    norm: NormStats | None = None
    weight: WeightStats | None = None


@dataclasses.dataclass(frozen=True)
class Explanation(ResultBase):
    """A plain-words reading of one finding."""

    tensor: str
    severity: str  # "info", "warning", "error"
    text: str
    kind: str = ""  # what was found, the key reports group by: "non_finite", "large_gain", "outlier"


@dataclasses.dataclass(frozen=True)
class ModelSummary(ResultBase):
    architecture: str
    architecture_source: str  # "override", "config", "gguf", "names", "unknown"
    n_layers: int | None
    n_tensors: int
    n_params: int
    params_by_role: dict[str, int]
    params_by_dtype: dict[str, int]
    bytes_on_disk: int
    tied_embeddings: bool
    largest_tensor: str | None


ANALYZE_SCHEMA_VERSION = "1.1"  # 1.1: explanations[].kind


@dataclasses.dataclass(frozen=True)
class AnalyzeResult(ResultBase):
    source: SourceInfo
    summary: ModelSummary
    tensors: tuple[TensorReport, ...]
    explanations: tuple[Explanation, ...]
    warnings: tuple[str, ...]
    options: dict[str, Any]
    schema: str = "normscope.analyze"
    schema_version: str = ANALYZE_SCHEMA_VERSION

    def tensor(self, name: str) -> TensorReport:
        """The report of one tensor by HF or file name."""
        for t in self.tensors:
            if name in (t.name, t.source_name, t.gguf_name):
                return t
        raise KeyError(name)
