"""PEFT LoRA adapters merged into their base checkpoint, chunk by chunk, nothing written.

An adapter directory holds `adapter_config.json` and `adapter_model.safetensors` with keys
`base_model.model.<module>.lora_A.weight` (r, in), `…lora_B.weight` (out, r), optionally
`…lora_B.bias`, `…lora_embedding_A` (r, n_embeddings) / `…lora_embedding_B` (dim, r) for
embeddings, `<module>.base_layer.weight` (a saved copy of the base weight) and full weights of
`modules_to_save` (ref: peft 0.21 utils/save_and_load.py `get_peft_model_state_dict`).

The merged weight is what `merge_and_unload()` produces (ref: peft tuners/lora/layer.py
`Linear.get_delta_weight`, `Linear.merge`, `Embedding.get_delta_weight`):
delta = transpose(B @ A, fan_in_fan_out) · scale, scale = alpha / r (alpha / √r with
`use_rslora`), r and alpha from `rank_pattern` / `alpha_pattern` when a pattern matches the module
(ref: peft utils/other.py `get_pattern_key`); delta is rounded to the adapter's dtype when that is
16-bit, and W + delta to the base weight's dtype. Rows of delta are computed only for the rows a
chunk asks for, so memory stays bounded by a chunk (A and B themselves are small).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import CheckpointError, SourceNotFoundError
from ..checkpoint import Checkpoint, TensorEntry
from ..jsonfile import read_json
from ..safetensors_file import SafetensorsCheckpoint
from .base import Logical, PackedCheckpoint, logical_entry, read_rows, read_small, round_to

__all__ = ["apply_adapter", "ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "is_adapter_dir", "lora_scale", "MergedWeight",
           "MergedBias", "SavedWeight"]

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PREFIX = "base_model.model."
_KEY = re.compile(r"^(?P<mod>.+?)\.(?P<kind>lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_magnitude_vector)"
                  r"(?:\.(?!(?:weight|bias)$)(?P<adapter>[^.]+))?(?:\.(?P<param>weight|bias))?$")
_WEIGHT_DTYPES = ("F32", "F16", "BF16", "F64")


def is_adapter_dir(path: Path) -> bool:
    return path.is_dir() and (path / ADAPTER_CONFIG).is_file()


def _pattern(patterns: dict[str, Any], module: str, default: Any) -> Any:
    # ref: peft utils/other.py get_pattern_key: the first key k with re.match(rf"(.*\.)?({k})$", module)
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def lora_scale(config: dict[str, Any], module: str) -> tuple[int, float]:
    """(r, scale) of one module: alpha / r, or alpha / sqrt(r) with use_rslora.

    ref: peft tuners/lora/layer.py `LoraLayer.update_layer` (`self.scaling[adapter_name]`).

    Example:
        >>> lora_scale({"r": 8, "lora_alpha": 16, "rank_pattern": {"down_proj": 4}}, "model.layers.0.mlp.down_proj")
        (4, 4.0)
    """
    r = int(_pattern(config.get("rank_pattern") or {}, module, config.get("r", 8)))
    alpha = float(_pattern(config.get("alpha_pattern") or {}, module, config.get("lora_alpha", 8)))
    return r, (alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r)


class MergedWeight(Logical):
    """W + scale · transpose(B @ A) for the rows a chunk asks for."""

    def __init__(self, base: Checkpoint, base_entry: TensorEntry, adapter: Checkpoint, a: TensorEntry, b: TensorEntry,
                 scale: float, transposed: bool, source: TensorEntry | None = None):
        self.base, self.base_entry, self.adapter = base, base_entry, adapter
        self.a, self.b, self.scale, self.transposed = a, b, np.float32(scale), transposed
        self.source = source  # a saved copy of the base weight in the adapter (base_layer.weight)
        self._ab: tuple[np.ndarray, np.ndarray] | None = None
        super().__init__(logical_entry(base_entry.name, base_entry.shape, f"LoRA({base_entry.dtype})",
                                       [base_entry, a, b]), base_entry.name)

    def _factors(self) -> tuple[np.ndarray, np.ndarray]:
        if self._ab is None:
            self._ab = (read_small(self.adapter, self.a).astype(np.float32),
                        read_small(self.adapter, self.b).astype(np.float32))
        return self._ab

    def rows(self, ckpt: Checkpoint, row0: int, n_rows: int) -> np.ndarray:
        a, b = self._factors()  # (r, in), (out, r)
        if self.transposed:  # rows of (B @ A)^T: fan_in_fan_out Conv1D, or an embedding
            delta = (b @ a[:, row0:row0 + n_rows]).T * self.scale
        else:
            delta = (b[row0:row0 + n_rows] @ a) * self.scale
        if self.a.dtype in ("F16", "BF16"):  # peft computes in fp32 on CPU and casts back
            delta = round_to(delta, self.a.dtype)
        if self.source is not None:
            w = read_rows(self.adapter, self.source, row0, n_rows)
        else:
            w = read_rows(self.base, self.base_entry, row0, n_rows)
        return round_to(w + delta, self.base_entry.dtype)


class MergedBias(Logical):
    """bias + scale · lora_B.bias (peft's `lora_bias=True`)."""

    def __init__(self, base: Checkpoint, base_entry: TensorEntry, adapter: Checkpoint, bias: TensorEntry, scale: float):
        self.base, self.base_entry, self.adapter, self.bias, self.scale = base, base_entry, adapter, bias, scale
        super().__init__(logical_entry(base_entry.name, base_entry.shape, f"LoRA({base_entry.dtype})",
                                       [base_entry, bias]), base_entry.name)

    def rows(self, ckpt: Checkpoint, row0: int, n_rows: int) -> np.ndarray:
        extra = read_small(self.adapter, self.bias).astype(np.float32).reshape(1, -1) * np.float32(self.scale)
        return round_to(read_rows(self.base, self.base_entry, 0, 1) + extra, self.base_entry.dtype)


class SavedWeight(Logical):
    """A module the adapter saved whole (modules_to_save): its weight replaces the base's."""

    def __init__(self, name: str, adapter: Checkpoint, entry: TensorEntry):
        self.adapter, self.stored = adapter, entry
        super().__init__(TensorEntry(name, entry.shape, entry.dtype, entry.file, entry.offset, entry.nbytes), name)

    def rows(self, ckpt: Checkpoint, row0: int, n_rows: int) -> np.ndarray:
        return read_rows(self.adapter, self.stored, row0, n_rows)


def _config(directory: Path) -> dict[str, Any]:
    path = directory / ADAPTER_CONFIG
    config = read_json(path, ADAPTER_CONFIG)
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: malformed {ADAPTER_CONFIG} (expected a JSON object)")
    kind = str(config.get("peft_type", "LORA")).upper()
    if kind != "LORA":
        raise CheckpointError(f"{path}: peft_type {kind!r}; normscope merges LORA adapters only")
    if config.get("use_dora"):
        raise CheckpointError(f"{path}: a DoRA adapter (use_dora); normscope merges plain LoRA only; merge it with "
                              "peft's merge_and_unload() and save the result")
    return config


def _base_name(base: Checkpoint, module: str, param: str = "weight") -> str | None:
    for cand in (module, module.removeprefix("model."), "model." + module):
        if f"{cand}.{param}" in base.entries:
            return f"{cand}.{param}"
    return None


def apply_adapter(base: Checkpoint, adapter_dir: Path) -> PackedCheckpoint:
    """The base checkpoint with a PEFT LoRA adapter merged into every weight it targets.

    Args:
        base: an open safetensors checkpoint (plain or a quantized pack).
        adapter_dir: a directory with adapter_config.json and adapter_model.safetensors.

    Returns:
        A checkpoint listing the base's tensors, the targeted ones as LoRA(<base dtype>) merges.

    Raises:
        SourceNotFoundError: the directory is not a PEFT adapter.
        CheckpointError: an adapter that is not LoRA, is DoRA, targets tensors the base lacks, or whose
            factor shapes disagree with the base weight or the configured rank.

    Example:
        >>> merged = apply_adapter(open_path(Path("base")), Path("adapter"))  # doctest: +SKIP
        >>> merged.entries["model.layers.0.self_attn.q_proj.weight"].dtype
        'LoRA(BF16)'
    """
    adapter_dir = Path(adapter_dir)
    if not is_adapter_dir(adapter_dir):
        raise SourceNotFoundError(f"{adapter_dir}: not a PEFT adapter directory (no {ADAPTER_CONFIG})")
    if base.format != "safetensors":
        raise CheckpointError(f"{base.path}: a LoRA adapter applies to a safetensors base with HF names, "
                              f"not to a {base.format} file")
    config = _config(adapter_dir)
    file = adapter_dir / ADAPTER_WEIGHTS
    if not file.is_file():
        raise SourceNotFoundError(f"{adapter_dir}: no {ADAPTER_WEIGHTS} (PyTorch adapter_model.bin is not read; "
                                  "re-save the adapter with safe_serialization=True)")
    adapter = SafetensorsCheckpoint.open_file(file)
    try:
        logical = _merges(base, adapter, config, file)
    except BaseException:
        adapter.close()
        raise
    return PackedCheckpoint(base, logical, (), "lora", others=(adapter,))


def _merges(base: Checkpoint, adapter: Checkpoint, config: dict[str, Any], file: Path) -> list[Logical]:
    factors: dict[str, dict[str, TensorEntry]] = {}
    saved: list[tuple[str, TensorEntry]] = []
    for name, entry in adapter.entries.items():
        key = name.removeprefix(_PREFIX)
        m = _KEY.match(key)
        if m and m["kind"] == "lora_magnitude_vector":
            raise CheckpointError(f"{file}: tensor {name!r} is a DoRA magnitude; normscope merges plain LoRA only")
        if m:
            factors.setdefault(m["mod"], {})[m["kind"] + ("_bias" if m["param"] == "bias" else "")] = entry
        else:
            saved.append((key, entry))
    logical: list[Logical] = []
    sources: dict[str, TensorEntry] = {}
    for key, entry in saved:
        if key.endswith(".base_layer.weight"):
            sources[key[: -len(".base_layer.weight")]] = entry
            continue
        target = _base_name(base, key.rsplit(".", 1)[0], key.rsplit(".", 1)[-1]) if "." in key else None
        logical.append(SavedWeight(target or key, adapter, entry))
    fif = bool(config.get("fan_in_fan_out"))
    for module, parts in factors.items():
        embedding = "lora_embedding_A" in parts
        a = parts.get("lora_embedding_A" if embedding else "lora_A")
        b = parts.get("lora_embedding_B" if embedding else "lora_B")
        if a is None or b is None:
            raise CheckpointError(f"{file}: module {module!r} has only one of lora_A / lora_B")
        target = _base_name(base, module)
        if target is None:
            raise CheckpointError(f"{file}: the adapter targets {module}.weight, which the base checkpoint "
                                  f"{base.path} does not hold; is this the adapter of another model?")
        w = base.entries[target]
        r, scale = lora_scale(config, module)
        for e in (a, b):
            if e.dtype not in _WEIGHT_DTYPES or len(e.shape) != 2:
                raise CheckpointError(f"{file}: tensor {e.name!r}: expected a 2-D float tensor, found "
                                      f"{e.dtype} {list(e.shape)}")
        transposed = embedding or fif
        out, inp = (b.shape[0], a.shape[1])
        expect = (inp, out) if transposed else (out, inp)
        if a.shape[0] != r or b.shape[1] != r or w.shape != expect:
            raise CheckpointError(f"{file}: module {module!r}: expected lora_A [{r}, in] and lora_B [out, {r}] "
                                  f"matching base {target} {list(w.shape)}, found A {list(a.shape)}, B {list(b.shape)}")
        logical.append(MergedWeight(base, w, adapter, a, b, scale, transposed, sources.get(module)))
        if "lora_B_bias" in parts:
            bias = _base_name(base, module, "bias")
            if bias is None:
                raise CheckpointError(f"{file}: module {module!r} has a lora_B bias but the base has no {module}.bias")
            logical.append(MergedBias(base, base.entries[bias], adapter, parts["lora_B_bias"], scale))
    return logical
