"""Result objects every layer returns: frozen dataclasses and str Enums, no logic beyond to_dict().

User choices are `str` Enums so typer takes them as option types unchanged, and JSON gets their
plain values. Numbers are plain Python floats and ints; a non-finite float becomes the string
"nan", "inf" or "-inf" in `to_dict()` so that the JSON stays standard.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from enum import Enum
from typing import Any

__all__ = [
    "Role",
    "NormConvention",
    "Component",
    "ProgressFn",
    "ResultBase",
    "to_plain",
    "SourceInfo",
    "TensorInfo",
    "TopValue",
    "NormStats",
    "WeightStats",
    "TensorReport",
    "Explanation",
    "ModelSummary",
    "AnalyzeResult",
    "ANALYZE_SCHEMA_VERSION",
    "RuleOutcome",
    "Failure",
    "CheckResult",
    "CHECK_SCHEMA_VERSION",
    "ErrorStats",
    "NormAwareError",
    "BlockHealthStats",
    "SimTensor",
    "SchemeResult",
    "SimulateResult",
    "SIMULATE_SCHEMA_VERSION",
    "Variant",
    "TensorDiff",
    "Unmatched",
    "NormChange",
    "PairResult",
    "DepthProfile",
    "FailedVariant",
    "CompareResult",
    "COMPARE_SCHEMA_VERSION",
]

# Called as progress(description, done, total) with byte counts; total may be 0 when unknown.
ProgressFn = Callable[[str, int, int], None]


class Role(str, Enum):
    """What a tensor does in the model, by position (not by the name a family gives it)."""

    EMBEDDING = "embedding"
    POSITION_EMBEDDING = "position_embedding"
    LM_HEAD = "lm_head"
    ATTN_Q = "attn_q"
    ATTN_K = "attn_k"
    ATTN_V = "attn_v"
    ATTN_QKV = "attn_qkv"
    ATTN_O = "attn_o"
    MLP_GATE = "mlp_gate"
    MLP_UP = "mlp_up"
    MLP_GATE_UP = "mlp_gate_up"
    MLP_DOWN = "mlp_down"
    NORM_PRE_ATTN = "norm_pre_attn"
    NORM_POST_ATTN = "norm_post_attn"
    NORM_PRE_FFN = "norm_pre_ffn"
    NORM_POST_FFN = "norm_post_ffn"
    NORM_Q = "norm_q"
    NORM_K = "norm_k"
    NORM_FINAL = "norm_final"
    NORM_EMBED = "norm_embed"
    NORM_OTHER = "norm_other"
    PROJECTOR = "projector"
    VISION = "vision"
    OTHER = "other"

    @property
    def is_norm(self) -> bool:
        return self.value.startswith("norm_")

    @property
    def is_linear(self) -> bool:
        return self.value.startswith(("attn_", "mlp_")) or self in (Role.LM_HEAD, Role.PROJECTOR)


class NormConvention(str, Enum):
    """How a norm module turns its stored weight w into the gain that multiplies x̂."""

    ONE_PLUS_W = "1+w"  # Gemma 1/2/3 RMSNorm: x̂ · (1 + w), stored init 0
    W = "w"  # Llama/Mistral/Qwen RMSNorm, Gemma 3n: x̂ · w, stored init 1
    LAYERNORM = "layernorm"  # BERT, SigLIP: x̂ · w + b
    LAYERNORM1P = "layernorm1p"  # Nemotron: x̂ · (1 + w) + b


class Component(str, Enum):
    TEXT = "text"
    VISION = "vision"
    PROJECTOR = "projector"
    AUDIO = "audio"


def to_plain(value: Any) -> Any:
    """Turn results into JSON-ready builtins (Enums to values, non-finite floats to strings)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, dict):
        return {str(to_plain(k)): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


class ResultBase:
    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)


@dataclasses.dataclass(frozen=True)
class SourceInfo(ResultBase):
    """Where a checkpoint came from, as resolved."""

    spec: str  # what the user passed
    kind: str  # "directory", "safetensors", "gguf", "hub", "example"
    path: str  # local path read (file or directory)
    format: str  # "safetensors" or "gguf"
    files: tuple[str, ...]
    revision: str | None = None


@dataclasses.dataclass(frozen=True)
class TensorInfo(ResultBase):
    """One tensor of a model, with what the architecture registry says about it."""

    name: str  # HF-style name (GGUF names are mapped when the architecture is known)
    source_name: str  # the name in the file
    gguf_name: str | None
    shape: tuple[int, ...]  # numpy (row-major) order: (out_features, in_features) for a Linear
    dtype: str  # storage type as the file spells it: BF16, F32, Q4_K, …
    nbytes: int
    role: Role
    component: Component
    layer: int | None
    convention: NormConvention | None  # norms only
    param: str  # "weight", "bias", …

    @property
    def n_params(self) -> int:
        return math.prod(self.shape)


@dataclasses.dataclass(frozen=True)
class TopValue(ResultBase):
    value: float
    index: tuple[int, ...]


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


ANALYZE_SCHEMA_VERSION = "1.0"


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


# -- check -------------------------------------------------------------------------------------

CHECK_SCHEMA_VERSION = "1.0"


@dataclasses.dataclass(frozen=True)
class RuleOutcome(ResultBase):
    """One rule as it was applied: its threshold, where that came from, and how many tensors it saw."""

    rule: str
    threshold: Any
    source: str  # "default", "pyproject.toml", the config file, "flag"
    checked: int
    failed: int
    description: str
    checked_by_role: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Failure(ResultBase):
    rule: str
    tensor: str
    role: str
    value: float
    threshold: Any
    message: str
    scheme: str | None = None  # quantization rules: the scheme whose simulation failed


@dataclasses.dataclass(frozen=True)
class CheckResult(ResultBase):
    source: SourceInfo
    passed: bool
    rules: tuple[RuleOutcome, ...]
    failures: tuple[Failure, ...]
    overrides: dict[str, dict[str, Any]]
    baseline: str | None
    measurements: dict[str, Any]  # the analyze (and simulate) documents the rules read: usable as a baseline
    warnings: tuple[str, ...]
    schema: str = "normscope.check"
    schema_version: str = CHECK_SCHEMA_VERSION


# -- simulate ----------------------------------------------------------------------------------

SIMULATE_SCHEMA_VERSION = "1.0"


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
    schema: str = "normscope.simulate"
    schema_version: str = SIMULATE_SCHEMA_VERSION

    def scheme(self, name: str) -> SchemeResult:
        for s in self.schemes:
            if s.scheme == name:
                return s
        raise KeyError(name)


# -- compare -----------------------------------------------------------------------------------

COMPARE_SCHEMA_VERSION = "1.0"


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
    schema: str = "normscope.compare"
    schema_version: str = COMPARE_SCHEMA_VERSION

    def pair(self, variant: str) -> PairResult:
        for p in self.pairs:
            if p.variant == variant:
                return p
        raise KeyError(variant)


# -- clip --------------------------------------------------------------------------------------

CLIP_SCHEMA_VERSION = "1.0"

__all__ += ["ClipScope", "ClipGranularity", "SuperWeightCandidate", "ClippedTensor", "ClipFile", "ClipResult",
            "SweepPoint", "SweepTotal", "SweepTensor", "SweepBest", "ClipSweepResult", "CLIP_SCHEMA_VERSION"]


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


# -- forward -----------------------------------------------------------------------------------

FORWARD_SCHEMA_VERSION = "1.0"

__all__ += ["KLStats", "ForwardVariant", "EvalText", "MassiveChannel", "LayerActivations", "SuperWeightCheck",
            "OverflowSite", "ActivationProfile", "GroupSensitivity", "ForwardResult", "FORWARD_SCHEMA_VERSION"]


@dataclasses.dataclass(frozen=True)
class KLStats(ResultBase):
    """KL(P_base ‖ P_variant) per scored token, in nats (natural log, as llama.cpp's --kl-divergence)."""

    n: int
    mean: float
    median: float
    p90: float
    p99: float  # percentiles: numpy's linear interpolation
    p999: float
    max: float


@dataclasses.dataclass(frozen=True)
class ForwardVariant(ResultBase):
    """The base or one variant, run on the evaluation tokens."""

    label: str
    kind: str  # "base", "scheme" (fake-quantized in memory), "clip" (norm gains clipped in memory), "model" (loaded)
    description: str
    perplexity: float  # exp(mean NLL of the next token)
    nll_mean: float
    kl: KLStats | None  # None for the base
    top1_agreement: float | None  # share of positions whose argmax equals the base's
    rms_dp: float | None  # sqrt(mean (Q(next) − P(next))²): RMS change of the right token's probability
    mean_dp: float | None
    changed_tensors: int  # tensors a scheme or clip changed (0 for the base and loaded models)
    nbytes: int | None = None  # scheme variants: tensor data of the model the plan would produce
    bits_per_weight: float | None = None
    type_counts: dict[str, int] = dataclasses.field(default_factory=dict)
    source: str | None = None  # loaded models: what was asked
    scheme: str | None = None  # scheme variants: the scheme
    notes: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class EvalText(ResultBase):
    source: str  # the --text file, or "builtin:public-domain"
    n_tokens: int  # scored positions (each predicts the next token)
    n_windows: int
    window: int  # most ids per window (BOS included)
    bos: bool  # each window opened by the tokenizer's BOS
    tokenizer: str


@dataclasses.dataclass(frozen=True)
class MassiveChannel(ResultBase):
    """A residual-stream channel whose |activation| was massive at some tokens (Sun et al. 2024)."""

    channel: int
    tokens: int  # positions where it was massive
    max_abs: float
    positions: tuple[int, ...]  # the first few, as indices into the evaluation tokens
    token_texts: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class LayerActivations(ResultBase):
    """One decoder layer on the base pass: its output (the residual stream) and its MLP down projection."""

    layer: int
    module: str
    max_abs: float
    max_position: int
    max_channel: int
    max_token_text: str
    median_abs: float  # the median |h| of a window, median over windows
    massive: tuple[MassiveChannel, ...]
    down_in_max_abs: float | None = None
    down_in_channel: int | None = None
    down_in_position: int | None = None
    down_in_median_abs: float | None = None
    down_out_max_abs: float | None = None
    down_out_channel: int | None = None
    down_out_position: int | None = None
    down_out_median_abs: float | None = None


@dataclasses.dataclass(frozen=True)
class SuperWeightCheck(ResultBase):
    """A data-free super-weight candidate held against the down_proj activations of the base pass.

    At the token where the candidate's input channel `col` peaks: its input |x|, the output |y| of its row,
    and the share of that output the single weight produces (|w · x| / |y|).
    """

    tensor: str
    layer: int | None
    row: int
    col: int
    value: float
    z: float  # the data-free score
    position: int | None
    token_text: str
    input_abs: float
    input_ratio: float  # input |x| / median |x| of that down_proj input
    input_rank: int  # 1: col holds the largest down_proj input of the whole text
    output_abs: float
    output_ratio: float  # output |y| / median |y|
    output_rank: int  # 1: row is the largest output channel at that token
    share: float
    confirmed: bool


@dataclasses.dataclass(frozen=True)
class OverflowSite(ResultBase):
    """A module whose output (or a down_proj input) left the fp16 range on the base pass."""

    module: str
    max_abs: float
    count: int  # values with |x| > 65504
    values: int  # values seen


@dataclasses.dataclass(frozen=True)
class ActivationProfile(ResultBase):
    layers: tuple[LayerActivations, ...]
    super_weights: tuple[SuperWeightCheck, ...]
    fp16_overflow: tuple[OverflowSite, ...]  # largest first
    largest: OverflowSite | None  # the largest |activation| of any hooked module
    thresholds: dict[str, float]  # massive_abs, massive_ratio, spike_ratio, fp16_max


@dataclasses.dataclass(frozen=True)
class GroupSensitivity(ResultBase):
    """One tensor group quantized alone (everything else as in the base)."""

    group: str  # "layers.3.mlp_down", "embedding", …
    layer: int | None
    role: str
    tensors: tuple[str, ...]
    types: tuple[str, ...]
    params: int
    kl: KLStats
    top1_agreement: float


@dataclasses.dataclass(frozen=True)
class ForwardResult(ResultBase):
    source: SourceInfo
    architecture: str
    text: EvalText
    base: ForwardVariant
    variants: tuple[ForwardVariant, ...]
    activations: ActivationProfile | None
    sensitivity_scheme: str | None
    sensitivity: tuple[GroupSensitivity, ...]  # largest mean KL first
    notes: tuple[str, ...]  # plain-words readings
    warnings: tuple[str, ...]
    options: dict[str, Any]
    schema: str = "normscope.forward"
    schema_version: str = FORWARD_SCHEMA_VERSION

    def variant(self, label: str) -> ForwardVariant:
        for v in (self.base, *self.variants):
            if v.label == label:
                return v
        raise KeyError(label)


# -- recipe ------------------------------------------------------------------------------------

RECIPE_SCHEMA_VERSION = "1.0"

__all__ += ["RecipeTensor", "PlanSummary", "RecipeResult", "RECIPE_SCHEMA_VERSION"]


@dataclasses.dataclass(frozen=True)
class RecipeTensor(ResultBase):
    """One tensor llama.cpp would quantize: the type the recipe gives it and what every candidate costs."""

    name: str
    gguf_name: str | None
    role: Role
    layer: int | None
    shape: tuple[int, ...]
    type: str  # the recipe's choice (a type the row length can hold: fallbacks already applied)
    reference_type: str  # the reference file type's plan (e.g. Q4_K_M's)
    bits_per_weight: float
    nbytes: int
    error: float  # the objective of the chosen type (see RecipeResult.objective)
    reference_error: float
    candidates: dict[str, tuple[int, float]]  # type -> (bytes, objective)


@dataclasses.dataclass(frozen=True)
class PlanSummary(ResultBase):
    """A whole plan (the recipe, or a llama.cpp file type's) measured on the same tensors."""

    label: str
    nbytes: int  # tensor data of the model it produces
    bits_per_weight: float  # over all parameters, as simulate counts it
    total_error: float  # Σ objective over the quantized tensors
    sqnr_db: float  # plain, over the quantized tensors
    norm_aware_sqnr_db: float | None  # over the quantized tensors a norm weighs (simulate's figure)
    type_counts: dict[str, int]


@dataclasses.dataclass(frozen=True)
class RecipeResult(ResultBase):
    source: SourceInfo
    architecture: str
    objective: str  # "norm_aware" (Σ gain-weighted squared error) or "sensitivity" (KL-calibrated)
    budget_bytes: int
    budget_bits_per_weight: float
    reference: str  # the file type whose plan the recipe is measured against and llama-quantize is given
    recipe: PlanSummary
    plans: tuple[PlanSummary, ...]  # the llama.cpp file types compared (same measurements)
    tensors: tuple[RecipeTensor, ...]
    tensor_types: tuple[tuple[str, str], ...]  # (regex, type): llama-quantize --tensor-type, simulate tensor_types
    llama_quantize: tuple[str, ...]  # the arguments, one option per item
    llm_compressor_ignore: tuple[str, ...]  # Linear modules to keep in 16 bits under a 4-bit scheme
    quanto_exclude: tuple[str, ...]
    notes: tuple[str, ...]
    warnings: tuple[str, ...]
    options: dict[str, Any]
    schema: str = "normscope.recipe"
    schema_version: str = RECIPE_SCHEMA_VERSION

    def plan(self, label: str) -> PlanSummary:
        for p in (self.recipe, *self.plans):
            if p.label == label:
                return p
        raise KeyError(label)

    def tensor(self, name: str) -> RecipeTensor:
        for t in self.tensors:
            if name in (t.name, t.gguf_name):
                return t
        raise KeyError(name)
