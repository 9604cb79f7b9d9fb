"""What `clip` and `clip --sweep` return: the clipped tensors and files, or the error at each percentile."""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Any

from .base import ResultBase
from .common import NormConvention, Role, SourceInfo

__all__ = ["CLIP_SCHEMA_VERSION", "ClipScope", "ClipGranularity", "SuperWeightCandidate", "ClippedTensor", "ClipFile",
           "ClipResult", "SweepPoint", "SweepTotal", "SweepTensor", "SweepBest", "ClipSweepResult"]

CLIP_SCHEMA_VERSION = "1.0"


class ClipScope(str, Enum):
    """Which tensors `clip` may change: norm gains, Linear weights, or both (never embeddings or biases)."""

    NORMS = "norms"
    LINEAR = "linear"
    ALL = "all"


class ClipGranularity(str, Enum):
    """Where a clipping threshold comes from: the tensor's own percentile, or each output row's."""

    TENSOR = "tensor"
    CHANNEL = "channel"


@dataclasses.dataclass(frozen=True)
class SuperWeightCandidate(ResultBase):
    """A weight of an mlp down_proj whose |w| stands out of both its row and its column (data-free).

    z is the smaller of the two leave-one-out z-scores of |w| (against the other values of its row,
    and of its column). A candidate, not a confirmed super weight: confirming needs activations.
    """

    tensor: str
    row: int  # output channel (the hidden dimension a super activation would appear in)
    col: int  # input channel (the FFN neuron)
    value: float  # signed, as stored
    z: float


@dataclasses.dataclass(frozen=True)
class ClippedTensor(ResultBase):
    """One tensor `clip` changed. Values are effective gains for norms (their convention), weights otherwise."""

    name: str
    file: str | None  # the shard that holds it
    role: Role
    layer: int | None
    shape: tuple[int, ...]
    dtype: str
    domain: str  # "gain" (a norm, clipped in its convention and stored back in it) or "weight"
    convention: NormConvention | None
    threshold: float  # per tensor: the percentile of |value|; per channel: the largest row threshold
    threshold_min: float  # per channel: the smallest row threshold; per tensor: = threshold
    n_values: int
    clipped: int  # values changed
    protected: int  # super-weight candidates above the threshold left as they were
    max_before: float  # largest |value| before
    max_after: float  # and after, measured on the written file (dry run: on the values that would be written)
    sha256: str | None  # of the tensor's bytes as written; None in a dry run


@dataclasses.dataclass(frozen=True)
class ClipFile(ResultBase):
    name: str  # relative to the output directory
    size: int
    sha256: str
    action: str  # "rewritten" (a safetensors file written tensor by tensor) or "copied"


@dataclasses.dataclass(frozen=True)
class ClipResult(ResultBase):
    """What `clip` changed (or would change, in a dry run); the same document is the output's manifest."""

    source: SourceInfo
    architecture: str
    out: str | None
    dry_run: bool
    percentile: float
    scope: ClipScope
    per: ClipGranularity
    protect: bool
    considered: int  # tensors in scope
    changed: int
    values_clipped: int
    tensors: tuple[ClippedTensor, ...]  # the changed ones
    skipped: tuple[str, ...]  # "name: why" for tensors in scope that were left alone
    super_weights: tuple[SuperWeightCandidate, ...]
    files: tuple[ClipFile, ...]  # every file of the output but the manifest
    verified: bool  # every written byte re-read and checked before the output was put in place
    notes: tuple[str, ...]
    warnings: tuple[str, ...]
    options: dict[str, Any]
    schema: str = "normscope.clip"
    schema_version: str = CLIP_SCHEMA_VERSION

    def tensor(self, name: str) -> ClippedTensor:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)


@dataclasses.dataclass(frozen=True)
class SweepPoint(ResultBase):
    """One tensor, one scheme, one percentile. Errors are relative to the original tensor: ‖d‖ / ‖x‖,
    with x the effective gain for norms and the weight otherwise; c the clipped tensor, q its quantized copy."""

    tensor: str
    scheme: str
    type: str | None  # the format the scheme gives this tensor; None: not quantized
    percentile: float
    threshold: float  # per channel: the largest row threshold
    clipped: int
    clip_rel_l2: float  # ‖c − x‖ / ‖x‖
    quant_rel_l2: float  # ‖q − c‖ / ‖x‖ (0 when not quantized)
    total_rel_l2: float  # ‖q − x‖ / ‖x‖: what the model ends up with (clip + quant + their cross term)


@dataclasses.dataclass(frozen=True)
class SweepTotal(ResultBase):
    """One scheme at one percentile, pooled over the tensors in scope the scheme quantizes (Σd² / Σx²)."""

    scheme: str
    percentile: float
    tensors: int
    clipped: int
    clip_rel_l2: float
    quant_rel_l2: float
    total_rel_l2: float
    total_sqnr_db: float
    vs_no_clip: float  # total_rel_l2 / total at percentile 100 − 1 (negative: clipping helps)


@dataclasses.dataclass(frozen=True)
class SweepTensor(ResultBase):
    """One tensor under one scheme: the percentile that minimises its total error."""

    tensor: str
    scheme: str
    type: str | None
    best_percentile: float
    best_total_rel_l2: float
    no_clip_total_rel_l2: float
    change: float  # best / no clip − 1 (0 when no clipping is best)


@dataclasses.dataclass(frozen=True)
class SweepBest(ResultBase):
    scheme: str
    percentile: float  # minimises the pooled total error of the quantized tensors (ties: less clipping)
    total_rel_l2: float
    no_clip_total_rel_l2: float
    helped: tuple[str, ...]  # quantized tensors whose own best percentile is below 100
    hurt: tuple[str, ...]  # quantized tensors that every percentile below 100 makes worse
    unquantized: tuple[str, ...]  # tensors in scope this scheme never quantizes: clipping them is pure error


@dataclasses.dataclass(frozen=True)
class ClipSweepResult(ResultBase):
    source: SourceInfo
    architecture: str
    percentiles: tuple[float, ...]
    schemes: tuple[str, ...]
    scope: ClipScope
    per: ClipGranularity
    protect: bool
    points: tuple[SweepPoint, ...]
    totals: tuple[SweepTotal, ...]
    tensors: tuple[SweepTensor, ...]
    best: tuple[SweepBest, ...]
    super_weights: tuple[SuperWeightCandidate, ...]
    notes: tuple[str, ...]
    warnings: tuple[str, ...]
    options: dict[str, Any]
    schema: str = "normscope.clip_sweep"
    schema_version: str = CLIP_SCHEMA_VERSION

    def scheme_best(self, scheme: str) -> SweepBest:
        for b in self.best:
            if b.scheme == scheme:
                return b
        raise KeyError(scheme)

    def point(self, tensor: str, scheme: str, percentile: float) -> SweepPoint:
        for p in self.points:
            if (p.tensor, p.scheme, p.percentile) == (tensor, scheme, percentile):
                return p
        raise KeyError((tensor, scheme, percentile))
