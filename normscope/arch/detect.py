"""Choosing a spec for a checkpoint: an explicit override, then config.json, then GGUF metadata,
then the tensor names; an unknown family falls back to name heuristics, and says so.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import UnknownNameError
from .registry import HEURISTIC, SPECS
from .spec import ArchSpec

__all__ = ["Detected", "detect", "get_spec", "config_value"]


@dataclass(frozen=True)
class Detected:
    spec: ArchSpec
    source: str  # "override", "config", "gguf", "names", "unknown"
    detail: str  # what was seen, for messages


def get_spec(name: str) -> ArchSpec:
    """The spec registered as `name`.

    Raises:
        UnknownNameError: listing the registered names.
    """
    if name in SPECS:
        return SPECS[name]
    raise UnknownNameError("architecture", name, SPECS)


def config_value(config: dict[str, Any] | None, key: str) -> Any:
    """`key` from a config, looking inside `text_config` for multimodal models."""
    if not config:
        return None
    if config.get(key) is not None:
        return config[key]
    text = config.get("text_config")
    return text.get(key) if isinstance(text, dict) else None


def detect(names: Iterable[str], config: dict[str, Any] | None = None, gguf_arch: str | None = None,
           override: str | None = None) -> Detected:
    """The architecture spec for a checkpoint.

    Example:
        >>> detect([], {"model_type": "gemma3_text"}).spec.name
        'gemma3'
    """
    if override:
        return Detected(get_spec(override), "override", override)
    if config:
        archs = config.get("architectures") or []
        for spec in SPECS.values():
            if any(a in spec.hf_architectures for a in archs if isinstance(a, str)):
                return Detected(spec, "config", f"architectures {archs}")
        mtype = config.get("model_type")
        for spec in SPECS.values():
            if mtype in spec.model_types:
                return Detected(spec, "config", f"model_type {mtype!r}")
    if gguf_arch:
        matches = [s for s in SPECS.values() if s.gguf_arch == gguf_arch]
        matches.sort(key=lambda s: s.name != gguf_arch)  # llama before mistral for "llama"
        if matches:
            return Detected(matches[0], "gguf", f"general.architecture {gguf_arch!r}")
    names = list(names)
    # most specific signature first: gemma3 (q_norm + sandwich) before gemma2 (sandwich)
    for spec in sorted(SPECS.values(), key=lambda s: -len(s.signature)):
        if spec.signature and all(any(re.search(p, n) for n in names) for p in spec.signature):
            return Detected(spec, "names", "tensor names match " + ", ".join(spec.signature))
    seen = (config or {}).get("model_type") or gguf_arch or "no config.json"
    return Detected(HEURISTIC, "unknown", str(seen))
