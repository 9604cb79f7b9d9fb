"""What `forward` returns: KL and top-1 agreement per variant, the activation profile, group sensitivity."""

from __future__ import annotations

import dataclasses
from typing import Any

from .base import ResultBase
from .common import SourceInfo

__all__ = ["FORWARD_SCHEMA_VERSION", "KLStats", "ForwardVariant", "EvalText", "MassiveChannel", "LayerActivations",
           "SuperWeightCheck", "OverflowSite", "ActivationProfile", "GroupSensitivity", "ForwardResult"]

FORWARD_SCHEMA_VERSION = "1.1"  # 1.1: runtime, weights_kl, weights_top1_agreement, kld_file


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
    # "llama.cpp": each quantized matmul's input quantized as ggml-cpu does (kl is what llama.cpp shows);
    # "weights": the quantized weights times float32 inputs
    runtime: str = "weights"
    weights_kl: KLStats | None = None  # runtime llama.cpp: the weight-only KL (what the weights alone cost)
    weights_top1_agreement: float | None = None
    # --kld-base: llama-perplexity --kl-divergence's statistics against the base file (kld_mean, kld_mean_unc,
    # kld_median, kld_p99, …, same_top, same_top_unc, dp_rms, …), computed as llama.cpp computes them
    kld_file: dict[str, float] | None = None


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
    runtime: str = "weights"  # as ForwardVariant.runtime
    weights_kl: KLStats | None = None
    weights_top1_agreement: float | None = None


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
