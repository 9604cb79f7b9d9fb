"""Which tensors a scheme variant of `forward` fake-quantizes, and to what: `simulate`'s own plan.

The plan is `plan_model` over the whole checkpoint (llama.cpp's counters see every tensor), with the
same shape check `simulate` applies; each planned tensor is then matched with the torch parameter of
the same HF name. The size of the variant is counted as `simulate` counts it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ...quant import PlannedTensor, get_format, is_gguf_scheme
from ...results import TensorInfo
from ..engine.model import Model
from ..engine.plans import plan_model, unquantized_storage

__all__ = ["PlannedVariant", "plan_quantized", "variant_size"]


@dataclass(frozen=True)
class PlannedVariant:
    scheme: str
    label: str
    description: str
    tensors: tuple[tuple[TensorInfo, str], ...]  # (tensor, format) to fake-quantize
    plan: dict[str, PlannedTensor] = field(default_factory=dict, compare=False, hash=False)


def plan_quantized(model: Model, scheme: str, editor: Any, *, tensor_types: Sequence[tuple[str, str]] = (),
                   include_lm_head: bool = False, warnings: list[str] | None = None) -> PlannedVariant:
    """The (tensor, format) pairs `scheme` quantizes that the torch model holds."""
    overrides = tuple(tensor_types) if is_gguf_scheme(scheme) else ()
    plan = plan_model(model, scheme, include_lm_head=include_lm_head, tensor_types=overrides, warnings=warnings)
    pairs = []
    for t in model.tensors:
        fmt = plan[t.name].type
        if fmt is None:
            continue
        if editor.find(t.name) is None:
            if warnings is not None:
                warnings.append(f"{scheme}: {t.name} has no parameter of that name in the transformers model; "
                                "left unquantized")
            continue
        pairs.append((t, fmt))
    label = scheme + (" +tensor-types" if overrides else "")
    what = "llama-quantize's plan" if is_gguf_scheme(scheme) else "the decoder Linear weights"
    description = f"{scheme}: {what}, fake-quantized with normscope's kernels"
    if overrides:
        description += " with " + ", ".join(f"{p}={t}" for p, t in overrides)
    return PlannedVariant(scheme, label, description, tuple(pairs), plan)


def variant_size(model: Model, pv: PlannedVariant) -> dict[str, Any]:
    """nbytes, bits_per_weight and type_counts of the model the plan produces (as simulate counts them)."""
    quantized = {t.name: fmt for t, fmt in pv.tensors}
    counts: Counter[str] = Counter()
    nbytes = n_params = 0
    for t in model.tensors:
        fmt = quantized.get(t.name)
        if fmt is not None:
            size, stored = get_format(fmt).nbytes(t.shape), fmt
        else:
            stored, size = unquantized_storage(model, t, pv.scheme)
        counts[stored] += 1
        nbytes += size
        n_params += t.n_params
    return {"nbytes": nbytes, "bits_per_weight": 8.0 * nbytes / n_params if n_params else 0.0,
            "type_counts": dict(counts.most_common())}
