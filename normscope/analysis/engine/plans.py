"""The per-tensor plans of a scheme over one model, and what `simulate`, `recipe` and `forward` derive from
them: llama-quantize's type for every tensor (`plan_model`), what an unquantized tensor is stored as, and the
norm gains around each linear that the norm-aware error weighs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ...arch import effective_gain, norm_feeds
from ...errors import ConfigError
from ...quant import PlannedTensor, TensorSpec, check_imatrix, get_format, is_gguf_scheme, plan_scheme
from ...results import TensorInfo
from .facts import model_facts
from .measure import TensorFormats
from .model import Model

__all__ = ["plan_model", "unquantized_storage", "NormGains", "norm_gains", "tensor_formats"]


def plan_model(model: Model, scheme: str, tensors: Sequence[TensorInfo] | None = None, *,
               include_lm_head: bool = False, tensor_types: Sequence[tuple[str, str]] = (),
               warnings: list[str] | None = None, has_imatrix: bool = False) -> dict[str, PlannedTensor]:
    """{HF tensor name: PlannedTensor} for one scheme over the model's (or the given) tensors.

    A format whose blocks or groups the tensor's rows cannot hold (int4_sym_g128 on rows of 100) leaves
    the tensor unquantized, with the reason; so does a GGUF plan on which llama-quantize would stop (rows
    that are not whole blocks of a type llama.cpp has no fallback for). Each such case is appended to
    `warnings` when given.

    Raises:
        ConfigError: a plan with a type llama-quantize makes only with an importance matrix, without one
            (`has_imatrix`).
    """
    tensors = model.tensors if tensors is None else tensors
    specs = [TensorSpec(t.name, t.gguf_name, t.shape, t.role) for t in tensors]
    plan = plan_scheme(scheme, specs, model_facts(model), include_lm_head=include_lm_head, overrides=tensor_types,
                       has_imatrix=has_imatrix)
    check_imatrix(scheme, plan, has_imatrix)
    for t in tensors:
        planned = plan[t.name]
        if planned.fails and warnings is not None:
            warnings.append(f"{scheme}: {t.name}: {planned.reason.rsplit('; ', 1)[-1]} (llama-quantize would stop; "
                            "simulated as not quantized)")
        if planned.type is None:
            continue
        try:
            get_format(planned.type).check_shape(t.shape)
        except ConfigError as e:  # a row length the format cannot store: reported, not crashed
            plan[t.name] = PlannedTensor(planned.name, None, f"not quantized: {e}")
            if warnings is not None:
                warnings.append(f"{scheme}: {t.name}: {e}")
    return plan


def unquantized_storage(model: Model, info: TensorInfo, scheme: str) -> tuple[str, int]:
    """(stored_as, bytes) of a tensor the scheme leaves alone."""
    n = info.n_params
    if is_gguf_scheme(scheme):
        if info.gguf_name is None:
            return "absent", 0  # not written to the GGUF (e.g. a vision tower goes to the mmproj file)
        # ref: convert_hf_to_gguf.py writes 1-D tensors as F32; llama-quantize copies unquantized ones
        return ("F32", 4 * n) if sum(d > 1 for d in info.shape) <= 1 else ("F16", 2 * n)
    # a tensor the scheme leaves alone keeps the source's storage: a GGUF's F32 norm stays F32 and its Q8_0
    # embedding Q8_0 (they were once counted as BF16, the dtype of an HF model loaded from the GGUF)
    return info.dtype, info.nbytes


@dataclass(frozen=True)
class NormGains:
    """The effective gains of the norms around one linear, as the norm-aware error weighs it."""

    col: np.ndarray | None  # per input column (a pre-norm)
    row: np.ndarray | None  # per output row (a Gemma sandwich post-norm)
    norm: str  # the norm tensors, comma-separated
    axis: str  # "in", "out" or "in+out"


def norm_gains(model: Model, damaged: dict[str, int] | None = None) -> dict[str, NormGains]:
    """{linear tensor name: NormGains} for every 2-D weight a norm feeds (arch.norm_feeds), gains in their
    convention (Gemma: 1 + w). `damaged`, when given, receives {norm name: NaN/Inf values} of the norms read."""
    feeds = norm_feeds(model.detected.spec, model.tensors, model.tied_embeddings)
    cache: dict[str, np.ndarray] = {}

    def gain(name: str) -> np.ndarray:
        if name not in cache:
            info = model.get(name)
            cache[name] = np.asarray(effective_gain(model.read(info), info.convention), np.float32)
            bad = int(np.count_nonzero(~np.isfinite(cache[name])))
            if bad and damaged is not None:
                damaged[name] = bad
        return cache[name]

    out = {}
    for linear, fs in feeds.items():
        col = row = None
        names, axes = [], []
        for feed in fs:
            if feed.axis == "in" and col is None:
                col = gain(feed.norm)
            elif feed.axis == "out" and row is None:
                row = gain(feed.norm)
            else:
                continue
            names.append(feed.norm)
            axes.append(feed.axis)
        out[linear] = NormGains(col, row, ",".join(names), "+".join(axes))
    return out


def tensor_formats(formats: Sequence[str | None], gains: NormGains | None,
                   imatrix: np.ndarray | None = None) -> TensorFormats:
    """A TensorFormats of these formats, weighed by these gains (None: no norm around the tensor), quantized with
    these importance weights (None: without)."""
    if gains is None:
        return TensorFormats(tuple(formats), imatrix=imatrix)
    return TensorFormats(tuple(formats), gains.col, gains.row, gains.norm, gains.axis, imatrix)
