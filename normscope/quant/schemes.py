"""Schemes users name (`Q4_K_M`, `int4`, `fp8_block`, …) and the per-tensor format each one chooses.

A GGUF scheme is a llama.cpp file type and follows llama-quantize's plan (plan.py); `Q3_K`, `Q4_K` and `Q5_K`
are llama-quantize's aliases of the _M file types, and `MXFP4`, the one ggml type that names no file type, is
`llama-quantize --pure MXFP4_MOE` (MXFP4 on every tensor it quantizes). A plan with a tensor whose type
llama-quantize makes only with an importance matrix is refused without one (`check_imatrix`). Every other
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
from .layouts import LAYOUTS
from .plan import FILE_TYPES, IMATRIX_TYPES, ModelFacts, PlannedTensor, plan_types, tensor_order

__all__ = ["TensorSpec", "SCHEMES", "ALIASES", "PURE_SCHEMES", "scheme_names", "plan_scheme", "is_gguf_scheme",
           "parse_schemes", "parse_tensor_types", "canonical_scheme", "check_imatrix", "type_imatrix", "file_type_imatrix",
           "scheme_catalog"]

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


# ref: tools/quantize/quantize.cpp QUANT_OPTIONS — names llama-quantize takes for another file type
ALIASES: dict[str, str] = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}
# ggml types that name no file type: the type on every tensor llama-quantize quantizes, as
# `llama-quantize --pure` with the file type whose default it is
PURE_SCHEMES: dict[str, str] = {"MXFP4": "MXFP4_MOE"}

SCHEMES: dict[str, str] = {
    **{ft: f"llama.cpp file type {ft} (llama-quantize's per-tensor plan)" for ft in FILE_TYPES if ft not in ("F32",)},
    **{t: f"{t} on every tensor llama-quantize quantizes (llama-quantize --pure {ft})" for t, ft in PURE_SCHEMES.items()},
    **_sim_schemes()}


def scheme_names() -> list[str]:
    return list(SCHEMES)


def canonical_scheme(name: str) -> str:
    """`name` as upstream spells it, whatever its case (`q4_k_m` is Q4_K_M, `INT4` is int4); llama-quantize's
    aliases resolve to their file type (`Q4_K` is Q4_K_M).

    Raises:
        UnknownNameError: listing the valid scheme names.

    Example:
        >>> canonical_scheme("q4_k_m"), canonical_scheme("q4_k")
        ('Q4_K_M', 'Q4_K_M')
    """
    if name in SCHEMES:
        return name
    found = {k.lower(): k for k in SCHEMES}.get(str(name).lower())
    if found is None:
        alias = {k.lower(): v for k, v in ALIASES.items()}.get(str(name).lower())
        if alias is None:
            raise UnknownNameError("scheme", name, [*SCHEMES, *ALIASES])
        return alias
    return found


def is_gguf_scheme(scheme: str) -> bool:
    return scheme in FILE_TYPES or scheme in PURE_SCHEMES


def plan_scheme(scheme: str, tensors: Sequence[TensorSpec], facts: ModelFacts | None = None, *,
                include_lm_head: bool = False, overrides: Sequence[tuple[str, str]] = (),
                has_imatrix: bool = False) -> dict[str, PlannedTensor]:
    """The format each tensor gets under `scheme` (None: not quantized, with the reason).

    Args:
        scheme: a name of SCHEMES.
        tensors: the model's tensors; GGUF schemes need `gguf_name` (tensors without one are not quantized).
        facts: architecture facts for GGUF plans (layer, head and expert counts).
        include_lm_head: quantize an untied lm_head under simulated schemes.
        overrides: llama-quantize `--tensor-type` pairs (regex, type) for GGUF schemes.
        has_imatrix: whether an importance matrix is given (llama-quantize's plan depends on it).

    Raises:
        UnknownNameError: an unknown scheme, listing the valid ones.
    """
    scheme = canonical_scheme(scheme)
    if is_gguf_scheme(scheme):
        mapped = [t for t in tensors if t.gguf_name]
        facts = facts or ModelFacts("unknown", n_layer=1 + max((0, *(_block(t.gguf_name) for t in mapped))))
        by_gguf = plan_types([(t.gguf_name, t.shape) for t in mapped], PURE_SCHEMES.get(scheme, scheme), facts,
                             overrides=overrides, has_imatrix=has_imatrix, pure=scheme in PURE_SCHEMES)
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


def check_imatrix(scheme: str, plan: dict[str, PlannedTensor], has_imatrix: bool) -> None:
    """Refuse a plan llama-quantize would refuse: a tensor whose type needs an importance matrix, without one.

    Raises:
        ConfigError: one line naming the scheme, the first such tensor, its type, and `normscope imatrix collect`.
    """
    if has_imatrix:
        return
    needs = sorted((p for p in plan.values() if p.requires_imatrix), key=lambda p: tensor_order(p.name))
    if needs:  # the first in llama.cpp's order, the tensor llama-quantize names
        first = needs[0]
        more = f" (and {len(needs) - 1} more tensors)" if len(needs) > 1 else ""
        raise ConfigError(f"{scheme}: {first.name} would be {first.type}{more}, which llama-quantize makes only with "
                          "an importance matrix; collect one with `normscope imatrix collect` and pass it")


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


# file types some of whose rules read whether an imatrix is given (llama_tensor_get_type_impl's has_imatrix)
IMATRIX_RULES = ("IQ3_XXS", "IQ4_NL", "IQ4_XS", "Q4_0", "Q5_0")


def type_imatrix(type_name: str) -> str:
    """What an importance matrix is to a ggml type: "required" (ggml's quantizer refuses to run without one),
    "required by llama-quantize" (ggml runs, llama-quantize refuses: tensor_requires_imatrix), "used" or "ignored".

    Example:
        >>> type_imatrix("IQ2_XS"), type_imatrix("IQ3_XXS"), type_imatrix("Q4_K"), type_imatrix("Q8_0")
        ('required', 'required by llama-quantize', 'used', 'ignored')
    """
    policy = get_format(type_name).imatrix
    if policy != "required" and type_name in IMATRIX_TYPES:
        return "required by llama-quantize"
    return policy


def file_type_imatrix(file_type: str) -> str:
    """What an importance matrix is to a file type's plan: "required" (llama-quantize refuses the file without
    one wherever a tensor keeps a type that needs it), "changes the plan" (rules that read has_imatrix), "used"
    (its default type's quantizer weighs by it) or "ignored"."""
    default = FILE_TYPES[file_type]
    if default in IMATRIX_TYPES or file_type in ("IQ3_XS", "Q2_K_S"):
        return "required"
    if file_type in IMATRIX_RULES:
        return "changes the plan"
    return "used" if get_format(default).imatrix != "ignored" else "ignored"


def scheme_catalog() -> dict[str, list[tuple[str, ...]]]:
    """What `normscope schemes` lists: {section: rows}, each row a tuple of strings under the section's header
    row (the first). File types give their default type's block, bpw and what an imatrix is to them."""
    def bpw(t: str) -> str:
        return f"{LAYOUTS[t].bits_per_weight:g}"

    files = [("name", "default type", "bpw", "imatrix", "")]
    for ft, default in FILE_TYPES.items():
        if ft != "F32":
            files.append((ft, default, bpw(default), file_type_imatrix(ft), ""))
    for alias, ft in ALIASES.items():
        files.append((alias, FILE_TYPES[ft], bpw(FILE_TYPES[ft]), file_type_imatrix(ft),
                      f"llama-quantize's alias for {ft}"))
    for t, ft in PURE_SCHEMES.items():
        files.append((t, t, bpw(t), type_imatrix(t), f"llama-quantize --pure {ft}: {t} on every tensor it quantizes"))
    types = [("name", "block", "bytes", "bpw", "imatrix", "description")]
    for name, fmt in FORMATS.items():
        if issubclass(fmt, GGMLFormat):
            layout = LAYOUTS[name]
            types.append((name, str(layout.block_size), str(layout.type_size), bpw(name), type_imatrix(name),
                          fmt.description))
    sims = [("name", "description")] + [(name, text) for name, text in _sim_schemes().items()]
    return {"llama.cpp file types (schemes: llama-quantize's per-tensor plan)": files,
            "ggml types (--tensor-type overrides, recipe --types)": types,
            "simulated schemes (decoder Linear weights only)": sims}
