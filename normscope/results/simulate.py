"""What `simulate` returns: per scheme, every tensor's type, size, error, norm-aware error and block health."""

from __future__ import annotations

import dataclasses
from typing import Any

from .base import ResultBase
from .common import Role, SourceInfo

__all__ = ["SIMULATE_SCHEMA_VERSION", "ErrorStats", "NormAwareError", "BlockHealthStats", "SimTensor", "SchemeResult",
           "ImatrixUse", "SimulateResult"]

SIMULATE_SCHEMA_VERSION = "1.2"  # 1.1: errors, error.non_finite; 1.2: imatrix, tensors[].imatrix


@dataclasses.dataclass(frozen=True)
class ErrorStats(ResultBase):
    rmse: float
    rel_l2: float
    sqnr_db: float  # inf when the copy is exact
    max_abs: float
    cosine: float
    p50: float  # exact percentiles of |error|
    p95: float
    p99: float
    p999: float
    non_finite: int = 0  # values whose error is NaN or infinite (left out of max_abs; the sums are NaN)


@dataclasses.dataclass(frozen=True)
class NormAwareError(ResultBase):
    """The error weighted by the effective gains of the norms around this linear (DOMAIN.md §5).

    axis "in": the norm feeds the input columns (pre-norm); "out": it normalises the output rows
    (Gemma's sandwich post-norms); "in+out": both.
    """

    norm: str  # the norm tensor(s), comma-separated when two
    axis: str
    rel_l2: float
    sqnr_db: float
    delta_db: float  # norm-aware SQNR minus plain SQNR (negative: the norm amplifies the error)


@dataclasses.dataclass(frozen=True)
class BlockHealthStats(ResultBase):
    blocks: int
    dominated_share: float  # blocks whose largest |x| is > 10x the mean |x| of the rest
    scale_underflow: int  # ggml blocks with nonzero values whose stored fp16 scale is 0
    scale_subnormal: int  # ggml blocks whose fp16 scale is subnormal (< 2^-14: fewer significant bits)
    scale_overflow: int  # ggml blocks whose fp16 scale is inf or NaN
    zeroed_share: float  # nonzero weights that came back as 0


@dataclasses.dataclass(frozen=True)
class SimTensor(ResultBase):
    name: str
    gguf_name: str | None
    role: Role
    layer: int | None
    shape: tuple[int, ...]
    source_dtype: str
    type: str | None  # the format this scheme quantizes it to; None: not quantized
    stored_as: str  # what the produced model holds: the quantized type, or F32/F16/the source dtype
    reason: str
    bits_per_weight: float
    nbytes: int
    error: ErrorStats | None = None
    norm_aware: NormAwareError | None = None
    health: BlockHealthStats | None = None
    # with an importance matrix, for a quantized tensor: "used" (its type's quantizer took the tensor's weights),
    # "ignored" (its type quantizes the same without them: Q8_0, F16, …) or "no entry" (the file has none for it)
    imatrix: str | None = None


@dataclasses.dataclass(frozen=True)
class ImatrixUse(ResultBase):
    """The importance matrix a simulation used."""

    path: str
    format: str  # "gguf" or "dat" (llama-imatrix's legacy file)
    datasets: tuple[str, ...]  # the calibration text(s) it was collected on, as the file names them
    chunk_count: int  # chunks of calibration text it saw (0: the file does not say)
    chunk_size: int | None  # tokens per chunk (GGUF files only)
    entries: int  # tensors the file has weights for
    used: int  # quantized tensors whose type's quantizer took their weights
    missing: tuple[str, ...]  # GGUF names of quantized tensors without an entry (quantized without weights)
    unused: tuple[str, ...]  # entries no tensor of the model took (another model, or tensors left out)


@dataclasses.dataclass(frozen=True)
class SchemeResult(ResultBase):
    scheme: str
    kind: str  # "gguf" (a llama.cpp file type and its plan) or "simulated" (Linear weights only)
    description: str
    n_params: int
    quantized_params: int
    nbytes: int  # tensor data of the model this scheme would produce
    bits_per_weight: float  # over all parameters
    quantized_bits_per_weight: float  # over the quantized ones
    rel_l2: float  # parameter-weighted: ‖all errors‖ / ‖all quantized weights‖
    sqnr_db: float
    norm_aware_sqnr_db: float | None  # over the quantized tensors a norm weighs
    type_counts: dict[str, int]  # tensors per stored_as
    tensors: tuple[SimTensor, ...]
    norm_aware_ranking: tuple[str, ...]  # tensors whose SQNR the norm weighting moves most, largest |Δ| first
    health: BlockHealthStats | None  # summed over the quantized tensors
    notes: tuple[str, ...]  # plain-words readings of the plan (fallbacks, what stays unquantized)

    def tensor(self, name: str) -> SimTensor:
        for t in self.tensors:
            if name in (t.name, t.gguf_name):
                return t
        raise KeyError(name)


@dataclasses.dataclass(frozen=True)
class SimulateResult(ResultBase):
    source: SourceInfo
    architecture: str
    schemes: tuple[SchemeResult, ...]
    warnings: tuple[str, ...]
    options: dict[str, Any]
    errors: tuple[str, ...] = ()  # damage found (NaN or Inf weights): these tensors' numbers mean nothing
    imatrix: ImatrixUse | None = None  # the importance matrix used (None: the plain, unweighted quantizers)
    schema: str = "normscope.simulate"
    schema_version: str = SIMULATE_SCHEMA_VERSION

    def scheme(self, name: str) -> SchemeResult:
        for s in self.schemes:
            if s.scheme == name:
                return s
        raise KeyError(name)
