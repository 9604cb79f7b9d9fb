"""HF <-> GGUF tensor names, through gguf-py's `TensorNameMap` (the converter's own table).

The forward map is built from each spec's HF templates exactly as llama.cpp's converter maps
them, so the reverse direction (GGUF -> HF) is its inverse, not a guess.
"""

from __future__ import annotations

import functools

import gguf

from .spec import ArchSpec

__all__ = ["hf_to_gguf", "gguf_to_hf", "name_pairs"]

_SUFFIXES = (".weight", ".bias")


@functools.lru_cache(maxsize=64)
def name_pairs(spec: ArchSpec, n_blocks: int) -> tuple[dict[str, str], dict[str, str]]:
    """({hf_name: gguf_name}, {gguf_name: hf_name}) for every templated tensor of `spec`."""
    arch = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}.get(spec.gguf_arch or "")
    if arch is None:
        return {}, {}
    tmap = gguf.get_tensor_name_map(arch, n_blocks)
    forward: dict[str, str] = {}
    for template in spec.hf_templates:
        for bid in range(n_blocks) if "{bid}" in template else (None,):
            base = template.format(bid=bid) if bid is not None else template
            mapped = tmap.get_name(base)
            if mapped is not None:
                for suffix in _SUFFIXES:
                    forward[base + suffix] = mapped + suffix
    return forward, {g: h for h, g in forward.items()}


def hf_to_gguf(spec: ArchSpec, hf_name: str, n_blocks: int) -> str | None:
    """The GGUF name llama.cpp's converter gives `hf_name`, or None.

    Example:
        >>> from normscope.arch.registry import SPECS
        >>> hf_to_gguf(SPECS["gemma3"], "model.layers.16.post_feedforward_layernorm.weight", 18)
        'blk.16.post_ffw_norm.weight'
    """
    return name_pairs(spec, n_blocks)[0].get(spec.canonical(hf_name))


def gguf_to_hf(spec: ArchSpec, gguf_name: str, n_blocks: int) -> str | None:
    """The canonical HF name of a GGUF tensor, or None when the spec has no template for it."""
    if gguf_name == "output.weight":
        return "lm_head.weight"
    return name_pairs(spec, n_blocks)[1].get(gguf_name)
