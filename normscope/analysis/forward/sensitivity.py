"""Per-group sensitivity: quantize one tensor group with a scheme's plan, everything else as in the base,
and measure the KL it alone causes. Groups are ranked by mean KL, the most sensitive first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ...results import GroupSensitivity, Role, TensorInfo
from ..engine.select import selected
from .metrics import kl_stats
from .variants import PlannedVariant
from .weights import QuantCache, WeightEditor, quantize_in_place

__all__ = ["SENSITIVITY_BY", "group_key", "run_sensitivity"]

SENSITIVITY_BY = ("layer-role", "layer", "role")


def group_key(info: TensorInfo, by: str) -> tuple[str, int | None, str]:
    """(group label, layer, role) of a tensor: `layers.3.mlp_down`, `layers.3`, `mlp_down`, `embedding`."""
    role = info.role.value
    if info.layer is None or info.role in (Role.EMBEDDING, Role.LM_HEAD):
        return role, None, role
    if by == "layer":
        return f"layers.{info.layer}", info.layer, "*"
    if by == "role":
        return role, None, role
    return f"layers.{info.layer}.{role}", info.layer, role


def run_sensitivity(run: Any, editor: WeightEditor, plan: PlannedVariant, cache: QuantCache | None, by: str,
                    step: Callable[[str], None], include: Sequence[str] = (),
                    hooks: Any | None = None) -> tuple[GroupSensitivity, ...]:
    """One forward pass per group of `plan`'s tensors (those matching `include`, if given); largest mean KL first.

    With `hooks` (a RuntimeHooks: the llama.cpp runtime) a second pass per group quantizes the inputs of the
    group's matmuls as ggml-cpu does; its KL is the group's `kl`, the first pass's its `weights_kl`.
    """
    groups: dict[str, tuple[int | None, str, list[tuple[TensorInfo, str]]]] = {}
    for info, fmt in plan.tensors:
        if not selected(info, include):
            continue
        label, layer, role = group_key(info, by)
        groups.setdefault(label, (layer, role, []))[2].append((info, fmt))
    out = []
    for label, (layer, role, members) in groups.items():
        step(f"sensitivity {plan.scheme}: {label}")
        for info, fmt in members:
            quantize_in_place(editor, info, fmt, cache)
        s = run.score(run.logits())
        extra = {}
        if hooks is not None:
            extra = dict(runtime="llama.cpp", weights_kl=kl_stats(s.cat("kl")),
                         weights_top1_agreement=float(np.mean(s.cat("agree"))))
            hooks.attach(members)
            try:
                s = run.score(run.logits())
            finally:
                hooks.detach()
        editor.restore()
        out.append(GroupSensitivity(label, layer, role, tuple(i.name for i, _ in members),
                                    tuple(sorted({f for _, f in members})), sum(i.n_params for i, _ in members),
                                    kl_stats(s.cat("kl")), float(np.mean(s.cat("agree"))), **extra))
    out.sort(key=lambda g: (-g.kl.mean, g.group))
    return tuple(out)
