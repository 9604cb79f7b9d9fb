"""Which norm's gain reaches which linear layer: the pairing the norm-aware error needs.

A pre-norm (x̂ · g feeds q/k/v or gate/up) scales the linear's input columns; a Gemma sandwich
post-norm scales the output rows of the linear it follows. With tied embeddings the final norm
feeds the token embedding, which doubles as the output head.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..results import Role, TensorInfo
from .spec import ArchSpec

__all__ = ["NormFeed", "norm_feeds"]


@dataclass(frozen=True)
class NormFeed:
    norm: str  # the norm weight's tensor name
    axis: str  # "in" (columns) or "out" (rows)


def norm_feeds(spec: ArchSpec, tensors: Sequence[TensorInfo], tied_embeddings: bool = False
               ) -> dict[str, list[NormFeed]]:
    """{linear tensor name: the norms whose gains weigh it}, for 2-D weights whose axis length matches.

    Example:
        >>> feeds = norm_feeds(spec, model.tensors, model.tied_embeddings)  # doctest: +SKIP
        >>> feeds["model.layers.3.self_attn.q_proj.weight"]
        [NormFeed(norm='model.layers.3.input_layernorm.weight', axis='in')]
    """
    norms = {(t.role, t.layer, t.component): t for t in tensors
             if t.role.is_norm and t.param == "weight" and len(t.shape) == 1}
    out: dict[str, list[NormFeed]] = {}
    for t in tensors:
        if len(t.shape) != 2 or t.param != "weight":
            continue
        for feed in spec.feeds:
            roles = feed.linears + ((Role.EMBEDDING,) if tied_embeddings and Role.LM_HEAD in feed.linears else ())
            if t.role not in roles:
                continue
            if feed.layer_delta is None:
                if t.layer not in (None, 0):
                    continue
                norm = norms.get((feed.norm, None, t.component))
            else:
                if t.layer is None:
                    continue
                norm = norms.get((feed.norm, t.layer - feed.layer_delta, t.component))
            length = t.shape[1] if feed.axis == "in" else t.shape[0]
            if norm is not None and norm.shape[0] == length:
                out.setdefault(t.name, []).append(NormFeed(norm.name, feed.axis))
    return out
