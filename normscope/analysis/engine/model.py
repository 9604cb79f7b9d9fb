"""A checkpoint seen through its architecture: HF names, roles, norm conventions, HF-convention values.

`open_model` is where io meets arch: it resolves the source, picks the spec, maps GGUF names to
HF names, and undoes the converter's norm offset (Gemma GGUF norms hold 1 + w), so every command
sees the same numbers whatever format the model came in.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ...arch import ArchSpec, Classified, Detected, config_value, detect, gguf_to_hf, hf_to_gguf
from ...arch.registry import GGUF_RULES
from ...arch.spec import LAYER_INDEX
from ...io import DEFAULT_CHUNK_ELEMENTS, Checkpoint, GGUFCheckpoint, TensorEntry, open_source
from ...results import Component, NormConvention, ProgressFn, Role, SourceInfo, TensorInfo

__all__ = ["Model", "open_model"]

log = logging.getLogger(__name__)


@dataclass
class Model:
    """An open checkpoint with its architecture. Close it (or use `with`) when done."""

    source: SourceInfo
    checkpoint: Checkpoint
    detected: Detected
    tensors: tuple[TensorInfo, ...]
    n_layers: int | None
    tied_embeddings: bool
    warnings: list[str] = field(default_factory=list)
    _entries: dict[str, TensorEntry] = field(default_factory=dict, repr=False)
    _offsets: dict[str, float] = field(default_factory=dict, repr=False)
    # open_model's arguments, so worker processes can open the same model (analysis.engine.workers)
    open_args: dict[str, Any] = field(default_factory=dict, repr=False)
    # tensors whose stored rows are permuted (llama GGUF q/k): rows per head group, undone on read
    _row_groups: dict[str, int] = field(default_factory=dict, repr=False)

    def entry(self, info: TensorInfo) -> TensorEntry:
        return self._entries[info.name]

    def stored_offset(self, info: TensorInfo) -> float:
        """What the file adds to the HF value of this tensor (1 for Gemma norms in a GGUF, else 0)."""
        return self._offsets.get(info.name, 0.0)

    def iter_rows(self, info: TensorInfo, max_elements: int = DEFAULT_CHUNK_ELEMENTS
                  ) -> Iterator[tuple[int, np.ndarray]]:
        """(first_row, float32 rows) of a tensor, in HF convention, at most `max_elements` at a time."""
        offset = self._offsets.get(info.name, 0.0)
        group = self._row_groups.get(info.name)
        if group:  # whole head groups per chunk, so each chunk un-permutes on its own
            row_len = info.shape[-1]
            rows = max(group, max_elements // row_len // group * group)
            max_elements = rows * row_len
        for row0, rows in self.checkpoint.iter_rows(self._entries[info.name], max_elements):
            if offset:
                rows -= np.float32(offset)
            if group:
                rows = unpermute_rows(rows, group)
            yield row0, rows

    def iter_values(self, info: TensorInfo, max_elements: int = DEFAULT_CHUNK_ELEMENTS, first: int = 0,
                    stop: int | None = None, *, stored: bool = False) -> Iterator[tuple[int, np.ndarray]]:
        """(flat_start, float32 1-D values) of a tensor in HF convention: one pass in bounded memory.

        The arrays are reused buffers, valid until the next read from this model (see
        `Checkpoint.iter_chunks`); rows longer than `max_elements` are split. `first`/`stop` select
        chunks [first, stop) (only where `chunk_ranges` says the tensor supports it). With `stored`,
        values stored as bfloat16 in HF convention may come as bfloat16 (`Checkpoint.iter_chunks`).
        """
        offset = self._offsets.get(info.name, 0.0)
        if info.name in self._row_groups:
            for row0, rows in self.iter_rows(info, max_elements):
                yield row0 * info.shape[-1], rows.reshape(-1)
            return
        ranged = {} if (first, stop) == (0, None) else {"first": first, "stop": stop}
        if stored and not offset and type(self.checkpoint).iter_chunks is Checkpoint.iter_chunks:
            ranged["stored"] = True
        for start, values in self.checkpoint.iter_chunks(self._entries[info.name], max_elements, **ranged):
            if offset:
                values -= np.float32(offset)
            yield start, values

    def n_chunks(self, info: TensorInfo, max_elements: int = DEFAULT_CHUNK_ELEMENTS) -> int | None:
        """How many chunks `iter_values` yields, when chunks can be read by index (else None)."""
        ckpt = self.checkpoint
        if info.name in self._row_groups or type(ckpt).iter_chunks is not Checkpoint.iter_chunks:
            return None
        return ckpt.n_chunks(self._entries[info.name], max_elements)

    def read(self, info: TensorInfo) -> np.ndarray:
        """The whole tensor as float32 in HF convention. Only for small tensors (norms, biases)."""
        values = self.checkpoint.read(self._entries[info.name])
        offset = self._offsets.get(info.name, 0.0)
        if info.name in self._row_groups:
            values = unpermute_rows(values.reshape(-1, info.shape[-1]), self._row_groups[info.name]).reshape(info.shape)
        return values - np.float32(offset) if offset else values

    def clone(self) -> Model | None:
        """The same model with its own reader (`Checkpoint.clone`), for another thread; None when the
        checkpoint cannot be cloned."""
        ckpt = self.checkpoint.clone()
        return None if ckpt is None else replace(self, checkpoint=ckpt)

    def get(self, name: str) -> TensorInfo:
        for t in self.tensors:
            if name in (t.name, t.source_name, t.gguf_name):
                return t
        raise KeyError(f"{self.source.spec}: no tensor named {name!r}")

    def close(self) -> None:
        self.checkpoint.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def unpermute_rows(rows: np.ndarray, group: int) -> np.ndarray:
    """Undo llama.cpp's q/k permutation on whole head groups of `group` rows.

    The converter writes w.reshape(n_head, 2, group // 2, n).swapaxes(1, 2); this is its inverse.
    ref: transformers modeling_gguf_pytorch_utils.LlamaTensorProcessor._reverse_permute_weights
    """
    n = rows.shape[-1]
    heads = rows.shape[0] // group
    return np.ascontiguousarray(rows.reshape(heads, group // 2, 2, n).swapaxes(1, 2)).reshape(rows.shape)


def open_model(source: str | Path | None = None, *, arch: str | None = None,
               norm_convention: NormConvention | str | None = None, token: str | None = None,
               cache_dir: Path | None = None, adapter: str | Path | None = None,
               progress: ProgressFn | None = None) -> Model:
    """Open a checkpoint and classify its tensors.

    Args:
        source: path, hub id, `example:NAME`, or None for the embedded example.
        arch: architecture name to use instead of detecting one (see `normscope.arch.SPECS`).
        norm_convention: convention for every norm the spec does not pin ("1+w", "w", …).
        token: hub token.
        cache_dir: where embedded examples are assembled.
        adapter: a PEFT LoRA adapter directory merged into the model's weights (chunk by chunk).
        progress: called as progress(what, bytes_done, bytes_total) while a hub id downloads.

    Raises:
        SourceNotFoundError, CheckpointError, UnknownNameError, MissingExtraError.

    Example:
        >>> with open_model("example:gemma3-270m") as m:  # doctest: +SKIP
        ...     print(m.detected.spec.name, len(m.tensors))
        gemma3 236
    """
    conv = NormConvention(norm_convention) if norm_convention else None
    info, ckpt = open_source(source, token=token, cache_dir=cache_dir, adapter=adapter, progress=progress)
    try:
        model = _build(info, ckpt, arch, conv)
        model.open_args = {"source": None if source is None else str(source), "arch": arch,
                           "norm_convention": conv.value if conv else None, "token": token,
                           "cache_dir": None if cache_dir is None else str(cache_dir),
                           "adapter": None if adapter is None else str(adapter)}
        return model
    except BaseException:
        ckpt.close()
        raise


def _build(info: SourceInfo, ckpt: Checkpoint, arch: str | None, conv: NormConvention | None) -> Model:
    is_gguf = isinstance(ckpt, GGUFCheckpoint)
    gguf_arch = ckpt.architecture if is_gguf else None
    detected = detect(ckpt.entries, ckpt.config, gguf_arch, arch)
    spec = detected.spec
    warnings: list[str] = []
    n_layers = _n_layers(ckpt, gguf_arch, warnings)
    if detected.source == "unknown":
        warnings.append(f"unknown architecture ({detected.detail}): roles come from name heuristics and norms "
                        f"are read as {(conv or spec.norm_convention).value}; pass --arch or --norm-convention")
    elif detected.source == "names":
        warnings.append(f"no config.json: architecture {spec.name!r} guessed from the tensor names; "
                        "pass --arch to be sure")
    tensors, entries, offsets = [], {}, {}
    for entry in ckpt.entries.values():
        if is_gguf:
            hf = gguf_to_hf(spec, entry.name)
            name, gguf_name = hf or entry.name, entry.name
        else:
            name, gguf_name = entry.name, hf_to_gguf(spec, entry.name)
        c = spec.classify(name, conv)
        if c.role is Role.OTHER and is_gguf and name == entry.name:
            c = _classify_gguf(entry.name, spec, conv) or c
        role, convention = c.role, c.convention
        if role.is_norm and len(entry.shape) != 1:
            role, convention = Role.OTHER, None  # a 2-D "norm" by name is not a norm gain
        t = TensorInfo(name=name, source_name=entry.name, gguf_name=gguf_name, shape=entry.shape,
                       dtype=entry.dtype, nbytes=entry.nbytes, role=role, component=c.component,
                       layer=c.layer, convention=convention, param=c.param)
        if t.name in entries:
            warnings.append(f"{info.path}: tensor name {t.name!r} appears twice; the second is kept")
        tensors.append(t)
        entries[t.name] = entry
        # ref: llama.cpp conversion/gemma.py norm_shift: "norm.weight" tensors get + 1 in GGUF
        if is_gguf and role.is_norm and c.param == "weight" and spec.gguf_norm_offset \
                and c.component is not Component.VISION:
            offsets[t.name] = spec.gguf_norm_offset
    empty = [t for t in tensors if not t.n_params]
    if empty:  # legal (pruned heads, empty adapters): every command lists them and measures nothing in them
        shown = ", ".join(f"{t.source_name} {list(t.shape)}" for t in empty[:3])
        what = f"{len(empty)} tensors with a zero-size dimension hold" if len(empty) > 1 else \
            "1 tensor with a zero-size dimension holds"
        warnings.append(f"{what} no values ({shown}{', …' if len(empty) > 3 else ''}): listed as empty, not measured")
    names = {t.name for t in tensors}
    tied = _tied(ckpt, spec.tied_embeddings, names, is_gguf)
    model = Model(info, ckpt, detected, tuple(tensors), n_layers, tied, warnings, entries, offsets)
    if is_gguf and spec.gguf_qk_permuted:
        model._row_groups.update(_permuted_groups(ckpt, gguf_arch, tensors, warnings))
    return model


def _permuted_groups(ckpt: Checkpoint, gguf_arch: str | None, tensors: list[TensorInfo], warnings: list[str]
                     ) -> dict[str, int]:
    """Rows per head group of the q/k weights the converter permuted (q: n_head groups, k: n_head_kv)."""
    n_head = ckpt.metadata.get(f"{gguf_arch}.attention.head_count")
    n_kv = ckpt.metadata.get(f"{gguf_arch}.attention.head_count_kv", n_head)
    out = {}
    for t in tensors:
        if t.role not in (Role.ATTN_Q, Role.ATTN_K) or len(t.shape) != 2:
            continue
        heads = n_head if t.role is Role.ATTN_Q else n_kv
        if not isinstance(heads, int) or heads <= 0 or t.shape[0] % (2 * heads):
            warnings.append(f"{t.source_name}: cannot undo llama.cpp's q/k row permutation (head count {heads!r}, "
                            f"{t.shape[0]} rows); its rows are reported in GGUF order")
            continue
        out[t.name] = t.shape[0] // heads
    return out


def _classify_gguf(name: str, spec: ArchSpec, conv: NormConvention | None) -> Classified | None:
    """Roles from GGUF names, for tensors the spec's HF templates do not cover."""
    for r in GGUF_RULES:
        if r.pattern.search(name):
            m = LAYER_INDEX.search(name)
            c = (r.convention or conv or spec.norm_convention) if r.role.is_norm else None
            return Classified(r.role, r.component, int(m.group(1)) if m else None, c, name.rsplit(".", 1)[-1])
    return None


def _n_layers(ckpt: Checkpoint, gguf_arch: str | None, warnings: list[str]) -> int | None:
    """The block count: derived from the tensors present (1 + the largest block index in their names); the
    header's claim (GGUF `block_count`, config.json `num_hidden_layers`) is a hint checked against them.

    A claim up to the derived count is kept (a vision tower may index more blocks than the text model the
    config counts); a claim of blocks no tensor holds is reported and the derived count used, so no claim
    sizes anything (a block_count of 2^32 - 1 once built a name table per claimed block).
    """
    layers = [int(m.group(1)) for name in ckpt.entries if (m := LAYER_INDEX.search(name))]
    derived = max(layers) + 1 if layers else None
    where, claim = f"{ckpt.path}: ", None
    if gguf_arch:
        where, claim = f"{ckpt.path}: {gguf_arch}.block_count", ckpt.metadata.get(f"{gguf_arch}.block_count")
    if claim is None:
        where, claim = f"{ckpt.path}: config.json num_hidden_layers", config_value(ckpt.config, "num_hidden_layers")
    if not isinstance(claim, int) or isinstance(claim, bool) or claim <= 0:
        return derived
    if derived is not None and claim <= derived:
        return claim
    held = "no block" if not derived else "block 0" if derived == 1 else f"blocks 0..{derived - 1}"
    warnings.append(f"{where} claims {claim:,} blocks but the tensors hold {held}; "
                    f"counting {derived or 'no'} block{'s' if derived != 1 else ''}")
    return derived


def _tied(ckpt: Checkpoint, default: bool, names: set[str], is_gguf: bool) -> bool:
    has_head = "lm_head.weight" in names or "output.weight" in names
    if is_gguf:
        return not has_head
    value = config_value(ckpt.config, "tie_word_embeddings")
    if value is None:
        return default and not has_head
    return bool(value) and not has_head
