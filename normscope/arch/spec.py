"""The shape of an architecture spec and the rule that classifies one tensor name.

A spec is data: which config / GGUF names select it, its default norm convention, an ordered
list of role rules (first match wins), the HF name templates its GGUF converter maps, and which
norm feeds which linear layers. The specs themselves live in `registry.py`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..results import Component, NormConvention, Role

__all__ = ["RoleRule", "Feed", "ArchSpec", "Classified", "LAYER_INDEX", "rule"]

# block index in the names families use: layers.N, layer.N, h.N, blocks.N, trf_blocks.N, blk.N; at most 9
# digits (a longer "index" in a crafted name is not a block: no count or table is ever sized by it)
LAYER_INDEX = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|trf_blocks|block|blk)\.(\d{1,9})\.")


@dataclass(frozen=True)
class RoleRule:
    """A regex searched in the tensor name, and what a match means."""

    pattern: re.Pattern[str]
    role: Role
    component: Component = Component.TEXT
    convention: NormConvention | None = None  # a norm whose convention is fixed whatever the spec default


def rule(pattern: str, role: Role, component: Component = Component.TEXT,
         convention: NormConvention | None = None) -> RoleRule:
    return RoleRule(re.compile(pattern), role, component, convention)


@dataclass(frozen=True)
class Feed:
    """`norm` (in block L) scales the input columns of `linears` in block L + layer_delta.

    With axis "out" the norm comes right *after* the linear (Gemma's sandwich post-norms): the
    linear's output rows are normalised and then scaled by the gain, so the gain weighs its rows.
    """

    norm: Role
    linears: tuple[Role, ...]
    layer_delta: int | None = 0  # None: a norm outside the blocks (final -> lm_head, BERT embeddings -> block 0)
    axis: str = "in"  # "in": gain per input column; "out": gain per output row


@dataclass(frozen=True)
class Classified:
    role: Role
    component: Component
    layer: int | None
    convention: NormConvention | None
    param: str


@dataclass(frozen=True)
class ArchSpec:
    name: str
    description: str
    norm_convention: NormConvention  # for every norm its rules do not pin
    rules: tuple[RoleRule, ...] = field(repr=False)
    hf_architectures: tuple[str, ...] = ()  # config.json "architectures"
    model_types: tuple[str, ...] = ()  # config.json "model_type"
    gguf_arch: str | None = None  # GGUF general.architecture
    signature: tuple[str, ...] = ()  # regexes all present in a checkpoint's names: a guess without config
    feeds: tuple[Feed, ...] = field(default=(), repr=False)
    # canonical HF module names ({bid} = block) for the GGUF name map
    hf_templates: tuple[str, ...] = field(default=(), repr=False)
    prefix_rewrites: tuple[tuple[str, str], ...] = ()  # multimodal prefixes -> canonical text names
    gguf_norm_offset: float = 0.0  # what the HF->GGUF converter adds to every norm weight of this family
    gguf_qk_permuted: bool = False  # the converter permutes attn_q/attn_k rows for GGML's rotary layout
    tied_embeddings: bool = False  # default when the config does not say
    refs: tuple[str, ...] = field(default=(), repr=False)

    def canonical(self, name: str) -> str:
        """The text-model spelling of `name` (multimodal prefixes rewritten)."""
        for old, new in self.prefix_rewrites:
            if name.startswith(old):
                return new + name[len(old):]
        return name

    def classify(self, name: str, convention: NormConvention | None = None) -> Classified:
        """Role, component, block index, norm convention and parameter kind of one tensor.

        Args:
            name: the HF tensor name.
            convention: overrides the spec's default norm convention (rules that pin one keep it).
        """
        m = LAYER_INDEX.search(name)
        layer = int(m.group(1)) if m else None
        param = name.rsplit(".", 1)[-1] if "." in name else "weight"
        for r in self.rules:
            if r.pattern.search(name):
                conv = None
                if r.role.is_norm:
                    conv = r.convention or convention or self.norm_convention
                return Classified(r.role, r.component, layer, conv, param)
        return Classified(Role.OTHER, Component.TEXT, layer, None, param)
