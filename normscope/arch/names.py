"""HF <-> GGUF tensor names, through gguf-py's `TensorNameMap` (the converter's own table).

The forward map is built from each spec's HF templates exactly as llama.cpp's converter maps
them, so the reverse direction (GGUF -> HF) is its inverse, not a guess. Block tensors are mapped
with their block index taken out of the name (`model.layers.{bid}.…` <-> `blk.{bid}.…`), so the table
is built once for block 0 and a name maps whatever its index: no table is built per block, and a
header claiming a billion blocks costs nothing (gguf-py's map for n blocks holds n copies).
"""

from __future__ import annotations

import functools

import gguf

from .spec import LAYER_INDEX, ArchSpec

__all__ = ["hf_to_gguf", "gguf_to_hf"]

_SUFFIXES = (".weight", ".bias")
_BID = "{bid}"
_GGUF_BLOCK = "blk.0."


@functools.lru_cache(maxsize=64)
def _tables(spec: ArchSpec) -> tuple[dict[str, str], dict[str, str]]:
    """({hf key: gguf key}, {gguf key: hf key}) for every templated tensor of `spec`; block tensors keyed
    with "{bid}" in place of their block index."""
    arch = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}.get(spec.gguf_arch or "")
    if arch is None:
        return {}, {}
    tmap = gguf.get_tensor_name_map(arch, 1)
    forward: dict[str, str] = {}
    for template in spec.hf_templates:
        mapped = tmap.get_name(template.replace(_BID, "0"))
        if mapped is None:
            continue
        if _BID in template:
            if not mapped.startswith(_GGUF_BLOCK):  # gguf-py names every block tensor blk.{bid}.…
                continue
            mapped = "blk." + _BID + "." + mapped[len(_GGUF_BLOCK):]
        for suffix in _SUFFIXES:
            forward[template + suffix] = mapped + suffix
    return forward, {g: h for h, g in forward.items()}


def _lookup(table: dict[str, str], name: str) -> str | None:
    """`name` through `table`: a block tensor by its name with the block index replaced by {bid}."""
    m = LAYER_INDEX.search(name)
    if m is None:
        return None if _BID in name else table.get(name)
    digits = m.group(1)
    if digits != str(int(digits)):  # "layers.007.": not a name the converter writes or reads
        return None
    key = table.get(name[:m.start(1)] + _BID + name[m.end(1):])
    return None if key is None or _BID not in key else key.replace(_BID, digits)


def hf_to_gguf(spec: ArchSpec, hf_name: str) -> str | None:
    """The GGUF name llama.cpp's converter gives `hf_name`, or None.

    Example:
        >>> from normscope.arch.registry import SPECS
        >>> hf_to_gguf(SPECS["gemma3"], "model.layers.16.post_feedforward_layernorm.weight")
        'blk.16.post_ffw_norm.weight'
    """
    return _lookup(_tables(spec)[0], spec.canonical(hf_name))


def gguf_to_hf(spec: ArchSpec, gguf_name: str) -> str | None:
    """The canonical HF name of a GGUF tensor, or None when the spec has no template for it."""
    if gguf_name == "output.weight":
        return "lm_head.weight"
    return _lookup(_tables(spec)[1], gguf_name)
