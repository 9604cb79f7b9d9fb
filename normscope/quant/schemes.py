"""Schemes users name (`Q4_K_M`, `int4`, `fp8_block`, …) and the per-tensor format each one chooses.

A GGUF scheme is a llama.cpp file type and follows llama-quantize's plan (plan.py). Every other
scheme applies one simulated format to the 2-D Linear weights of the decoder blocks, as optimum-quanto,
GPTQ and AWQ do: norms, biases and embeddings are never quantized, and neither is lm_head (GPTQ/AWQ
leave it unquantized by default; pass `include_lm_head=True` to count it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ConfigError, UnknownNameError
from ..results import Role
from .base import FORMATS, GGMLFormat, get_format
from .plan import FILE_TYPES, ModelFacts, PlannedTensor, plan_types

__all__ = ["TensorSpec", "SCHEMES", "scheme_names", "plan_scheme", "is_gguf_scheme", "parse_schemes",
           "parse_tensor_types", "canonical_scheme"]

LINEAR_ROLES = {Role.ATTN_Q, Role.ATTN_K, Role.ATTN_V, Role.ATTN_QKV, Role.ATTN_O, Role.MLP_GATE, Role.MLP_UP,
                Role.MLP_GATE_UP, Role.MLP_DOWN}


@dataclass(frozen=True)
class TensorSpec:
    """What a plan needs to know of one tensor."""

    name: str
    gguf_name: str | None
    shape: tuple[int, ...]
    role: Role


def _sim_schemes() -> dict[str, str]:
    return {name: fmt.description for name, fmt in FORMATS.items() if not issubclass(fmt, GGMLFormat)}


SCHEMES: dict[str, str] = {**{ft: f"llama.cpp file type {ft} (llama-quantize's per-tensor plan)"
                              for ft in FILE_TYPES if ft not in ("F32",)}, **_sim_schemes()}


def scheme_names() -> list[str]:
    return list(SCHEMES)


def canonical_scheme(name: str) -> str:
    """`name` as upstream spells it, whatever its case (`q4_k_m` is Q4_K_M, `INT4` is int4).

    Raises:
        UnknownNameError: listing the valid scheme names.

    Example:
        >>> canonical_scheme("q4_k_m")
        'Q4_K_M'
    """
    if name in SCHEMES:
        return name
    found = {k.lower(): k for k in SCHEMES}.get(str(name).lower())
    if found is None:
        raise UnknownNameError("scheme", name, SCHEMES)
    return found


def is_gguf_scheme(scheme: str) -> bool:
    return scheme in FILE_TYPES


def plan_scheme(scheme: str, tensors: Sequence[TensorSpec], facts: ModelFacts | None = None, *,
                include_lm_head: bool = False, overrides: Sequence[tuple[str, str]] = ()
                ) -> dict[str, PlannedTensor]:
    """The format each tensor gets under `scheme` (None: not quantized, with the reason).

    Args:
        scheme: a name of SCHEMES.
        tensors: the model's tensors; GGUF schemes need `gguf_name` (tensors without one are not quantized).
        facts: architecture facts for GGUF plans (layer and head counts).
        include_lm_head: quantize an untied lm_head under simulated schemes.
        overrides: llama-quantize `--tensor-type` pairs (regex, type) for GGUF schemes.

    Raises:
        UnknownNameError: an unknown scheme, listing the valid ones.
    """
    scheme = canonical_scheme(scheme)
    if is_gguf_scheme(scheme):
        mapped = [t for t in tensors if t.gguf_name]
        facts = facts or ModelFacts("unknown", n_layer=1 + max((0, *(_block(t.gguf_name) for t in mapped))))
        by_gguf = plan_types([(t.gguf_name, t.shape) for t in mapped], scheme, facts, overrides=overrides)
        out = {t.name: by_gguf[t.gguf_name] for t in mapped}
        for t in tensors:
            if not t.gguf_name:
                out[t.name] = PlannedTensor(t.name, None, "no GGUF name: not part of a llama.cpp conversion")
        return out
    fmt = FORMATS[scheme]
    out = {}
    for t in tensors:
        if t.role in LINEAR_ROLES or (include_lm_head and t.role is Role.LM_HEAD):
            if len(t.shape) < 2:
                out[t.name] = PlannedTensor(t.name, None, "bias: never quantized")
            else:
                out[t.name] = PlannedTensor(t.name, fmt.name, f"{scheme}: Linear weight")
        else:
            kind = {Role.EMBEDDING: "embedding", Role.LM_HEAD: "lm_head"}.get(t.role)
            kind = kind or ("norm" if t.role.is_norm else "not a decoder Linear")
            out[t.name] = PlannedTensor(t.name, None, f"{kind}: not quantized by {scheme}")
    return out


def _block(gguf_name: str | None) -> int:
    m = re.match(r"blk\.(\d{1,9})\.", gguf_name or "")
    return int(m.group(1)) if m else 0


def parse_schemes(schemes: str | Sequence[str]) -> list[str]:
    """Scheme names from "Q4_K_M,int4" or a list, in any case; each checked against the registry and returned as
    upstream spells it.

    Raises:
        UnknownNameError: listing the valid scheme names.
        ConfigError: no scheme given.
    """
    items = [schemes] if isinstance(schemes, str) else list(schemes)
    names = [s.strip() for item in items for s in str(item).split(",") if s.strip()]
    if not names:
        raise ConfigError(f"no quantization scheme given; valid: {', '.join(SCHEMES)}")
    return list(dict.fromkeys(canonical_scheme(name) for name in names))


def parse_tensor_types(pairs: Sequence[str]) -> list[tuple[str, str]]:
    """llama-quantize `--tensor-type REGEX=TYPE` pairs.

    Raises:
        ConfigError: a pair without "=", or an invalid regex; UnknownNameError: a type that is not a ggml type.
    """
    out = []
    for pair in pairs:
        pattern, sep, type_name = pair.rpartition("=")
        if not sep or not pattern:
            raise ConfigError(f"--tensor-type {pair!r}: expected REGEX=TYPE, e.g. attn_v=Q8_0")
        try:
            re.compile(pattern)
        except re.error as e:
            raise ConfigError(f"--tensor-type {pair!r}: invalid regex ({e})") from None
        fmt = get_format(type_name.strip())
        if not issubclass(fmt, GGMLFormat):
            raise UnknownNameError("ggml type", type_name,
                                   [n for n, f in FORMATS.items() if issubclass(f, GGMLFormat)])
        out.append((pattern, fmt.name))
    return out
