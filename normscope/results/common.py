"""The shared vocabulary io, arch and every command speak: tensor roles, norm conventions, components,
where a checkpoint came from and what one tensor is."""

from __future__ import annotations

import dataclasses
import math
import re
from enum import Enum

from .base import ResultBase

__all__ = ["Role", "NormConvention", "Component", "SourceInfo", "TensorInfo", "TopValue", "name_order"]


def name_order(name: str) -> tuple:
    """The order of tensors that tie in a ranking, the same in every report: by name, with numbers compared as
    numbers (layers.2 before layers.10), whatever order the file stores them in."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name) if p)


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
