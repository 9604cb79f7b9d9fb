"""What every pack reader shares: logical tensors computed from stored ones, and bounded reads.

A pack (GPTQ, AWQ, quanto, compressed-tensors, FP8 blocks, a LoRA merge) turns several stored
tensors into one logical weight under its HF name. `PackedCheckpoint` lists those logical tensors
next to the stored tensors that pass through unchanged (biases, norms, unquantized layers) and
hides the pack's bookkeeping (qzeros, scales, g_idx, …). `iter_rows` asks a logical tensor for
one row block at a time; `read_block` reads a rectangle of a stored tensor with `pread`, so a pack
whose logical rows are columns of a stored tensor (GPTQ's qweight) never loads the whole of it.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import CheckpointError
from ..checkpoint import DEFAULT_CHUNK_ELEMENTS, Checkpoint, TensorEntry
from ..jsonfile import read_json
from ..dtypes import numpy_dtype

__all__ = ["Logical", "PackedCheckpoint", "PackContext", "PackFormat", "read_block", "read_small", "round_to",
           "bad_shape", "logical_entry", "load_side_json", "read_rows"]

log = logging.getLogger(__name__)

_FLOATS = ("F32", "F16", "BF16", "F64")


def read_block(ckpt: Checkpoint, entry: TensorEntry, row0: int, n_rows: int, col0: int = 0,
               n_cols: int | None = None) -> np.ndarray:
    """Rows [row0, row0 + n_rows) × columns [col0, col0 + n_cols) of a stored tensor seen as 2-D.

    Rows are all dimensions but the last. Whole rows are one `pread`; a narrow column slab is one
    `pread` per row, a wide one (at least half a row) one `pread` of the covering span, so memory
    stays within twice the block.

    Args:
        ckpt: the checkpoint that stores `entry` (its file descriptors are reused).
        entry: a stored tensor of a numeric safetensors dtype.
        row0, n_rows, col0, n_cols: the rectangle (n_cols None: to the end of the row).

    Returns:
        A fresh (n_rows, n_cols) array of the storage dtype.

    Raises:
        CheckpointError: the rectangle lies outside the tensor, or the file ends early.

    Example:
        >>> cols = read_block(ckpt, ckpt.entries["m.qweight"], 0, 16, 32, 8)  # doctest: +SKIP
    """
    dt = numpy_dtype(entry.dtype)
    rows, cols = entry.n_rows, entry.row_len
    n_cols = cols - col0 if n_cols is None else n_cols
    if not (0 <= row0 and row0 + n_rows <= rows and 0 <= col0 and col0 + n_cols <= cols):
        raise CheckpointError(f"{entry.file}: tensor {entry.name!r}: block rows {row0}+{n_rows}, columns "
                              f"{col0}+{n_cols} lies outside its {rows}×{cols} values")
    item = dt.itemsize
    out = np.empty((n_rows, n_cols), dt)
    if n_rows == 0 or n_cols == 0:
        return out
    if n_cols == cols:
        ckpt.read_into(entry, row0 * cols * item, _bytes(out))
    elif 2 * n_cols >= cols:
        span = np.empty((n_rows - 1) * cols + n_cols, dt)  # from (row0, col0) to the block's last value
        ckpt.read_into(entry, (row0 * cols + col0) * item, _bytes(span))
        out[...] = np.lib.stride_tricks.as_strided(span, (n_rows, n_cols), (cols * item, item))
    else:
        for i in range(n_rows):
            ckpt.read_into(entry, ((row0 + i) * cols + col0) * item, _bytes(out[i]))
    return out


def read_small(ckpt: Checkpoint, entry: TensorEntry, limit: int = DEFAULT_CHUNK_ELEMENTS) -> np.ndarray:
    """A whole auxiliary tensor (g_idx, weight_shape, a LoRA factor) in its shape and storage dtype.

    Raises:
        CheckpointError: it holds more than `limit` values (a chunk), which no auxiliary tensor should.
    """
    if entry.n_elements > limit:
        raise CheckpointError(f"{entry.file}: tensor {entry.name!r} has {entry.n_elements} values, more than the "
                              f"{limit} an auxiliary tensor may have; the pack is malformed")
    return read_block(ckpt, entry, 0, entry.n_rows).reshape(entry.shape)


def _bytes(a: np.ndarray) -> memoryview:
    """A writable byte view of a contiguous array (memoryview refuses bfloat16 and fp8 formats)."""
    return memoryview(a.reshape(-1).view(np.uint8))


def round_to(values: np.ndarray, dtype: str) -> np.ndarray:
    """float32 `values` rounded through a float storage dtype, as the upstream dequantizer computes.

    Upstream dequantizers compute `scale * (q - z)` in the scale's dtype (fp16, bf16); the integer
    difference times the scale is exact in float32, so one rounding to that dtype reproduces them bit
    for bit.

    Example:
        >>> round_to(np.array([1.0 + 2 ** -9], np.float32), "BF16").tolist()
        [1.0]
    """
    if dtype in ("F32", "F64") or dtype not in _FLOATS:
        return values.astype(np.float32, copy=False)
    return values.astype(numpy_dtype(dtype)).astype(np.float32)


def bad_shape(entry: TensorEntry, expected: Any, why: str, found: Any = None) -> CheckpointError:
    """The one-line error for a pack tensor whose shape or dtype disagrees with the rest of the pack."""
    found = entry.shape if found is None else found
    return CheckpointError(f"{entry.file}: tensor {entry.name!r}: expected {expected} ({why}), found {found}; "
                           "the pack is corrupt or its quantization config does not match its tensors")


class Logical(ABC):
    """One logical weight computed from stored tensors; `entry` is what the checkpoint lists."""

    def __init__(self, entry: TensorEntry, anchor: str):
        self.entry = entry
        self.anchor = anchor  # the stored tensor whose place it takes in the listing

    @abstractmethod
    def rows(self, ckpt: Checkpoint, row0: int, n_rows: int) -> np.ndarray:
        """float32 (n_rows, row_len): rows [row0, row0 + n_rows) of the logical weight."""


def logical_entry(name: str, shape: Sequence[int], dtype: str, parts: Iterable[TensorEntry]) -> TensorEntry:
    """The listed entry of a logical tensor: its first part's file and offset, all parts' bytes."""
    parts = list(parts)
    return TensorEntry(name, tuple(int(d) for d in shape), dtype, parts[0].file, parts[0].offset,
                       sum(p.nbytes for p in parts))


@dataclass
class PackContext:
    """What a pack format looks at to claim and build a checkpoint."""

    ckpt: Checkpoint
    directory: Path
    qconfig: dict[str, Any]  # quantization_config of config.json, or the side file; {} if none
    side_files: dict[str, Any] = field(default_factory=dict)  # quanto_qmap.json, quantize_config.json, …

    @property
    def method(self) -> str:
        return str(self.qconfig.get("quant_method") or "").lower()

    def get(self, name: str) -> TensorEntry | None:
        return self.ckpt.entries.get(name)

    def module_parts(self, prefix: str, required: Sequence[str], optional: Sequence[str] = (), pack: str = "the pack"
                     ) -> dict[str, TensorEntry | None]:
        """{part: tensor `<prefix>.<part>`} of one module, required then optional parts (a missing
        optional one is None). The first required part must exist (the caller found it).

        Raises:
            CheckpointError: another required part is missing.
        """
        head = self.ckpt.entries[f"{prefix}.{required[0]}"]
        found = {k: self.get(f"{prefix}.{k}") for k in (*required, *optional)}
        for k in required:
            if found[k] is None:
                raise CheckpointError(f"{head.file}: tensor {head.name!r} has no {prefix}.{k}; {pack} needs "
                                      f"{', '.join(required[:-1])} and {required[-1]}")
        return found

    def prefixes(self, suffix: str) -> list[str]:
        """Module names that have a tensor `<module><suffix>`, in file order."""
        return [n[: -len(suffix)] for n in self.ckpt.entries if n.endswith(suffix)]

    def config_int(self, *keys: str) -> int | None:
        """An integer of config.json (or its text_config) under the first of `keys` present."""
        for cfg in (self.ckpt.config or {}, (self.ckpt.config or {}).get("text_config") or {}):
            for k in keys:
                v = cfg.get(k) if isinstance(cfg, dict) else None
                if isinstance(v, int) and not isinstance(v, bool):
                    return v
        return None


def load_side_json(directory: Path, name: str) -> Any:
    """A JSON file next to the weights, or None; malformed JSON is a CheckpointError."""
    path = directory / name
    if not path.is_file():
        return None
    return read_json(path, name)


@dataclass(frozen=True)
class PackFormat:
    """One pack format of the registry: how to recognise it and how to list its logical weights."""

    name: str  # as the checkpoint's `pack` attribute spells it
    methods: tuple[str, ...]  # quantization_config.quant_method values that name it
    claims: Callable[[PackContext], bool]  # recognises the pack from tensor names alone (no config)
    build: Callable[[PackContext], tuple[list[Logical], set[str]]]  # (logical weights, hidden tensor names)


class PackedCheckpoint(Checkpoint):
    """A checkpoint whose packed tensors read as their dequantized (or merged) logical weights."""

    def clone(self) -> None:
        return None  # logical tensors hold their own readers of the inner checkpoints: reopen instead

    def __init__(self, inner: Checkpoint, logical: Sequence[Logical], hidden: Iterable[str], pack: str,
                 others: Sequence[Checkpoint] = ()):
        self.inner = inner
        self.others = tuple(others)  # further checkpoints the logical weights read (a LoRA adapter)
        self.pack = pack
        self._logical = {lg.entry.name: lg for lg in logical}
        hidden = set(hidden) | set(self._logical)
        by_anchor: dict[str, list[TensorEntry]] = {}
        for lg in logical:
            by_anchor.setdefault(lg.anchor, []).append(lg.entry)
        entries: list[TensorEntry] = []
        for e in inner.entries.values():  # each logical weight takes the place of its first stored part
            entries += by_anchor.pop(e.name, [])
            if e.name not in hidden:
                entries.append(e)
        entries += [e for group in by_anchor.values() for e in group]
        files = tuple(dict.fromkeys(inner.files + tuple(f for o in self.others for f in o.files)))
        super().__init__(inner.path, files, entries, inner.config, {**inner.metadata, "pack": pack})
        self.format = inner.format

    def logical(self, name: str) -> Logical | None:
        return self._logical.get(name)

    def iter_rows(self, entry: TensorEntry, max_elements: int = DEFAULT_CHUNK_ELEMENTS
                  ) -> Iterator[tuple[int, np.ndarray]]:
        lg = self._logical.get(entry.name)
        if lg is None:
            yield from self.inner.iter_rows(entry, max_elements)
            return
        if not entry.n_elements:
            return
        step = self.rows_per_chunk(entry, max_elements)
        for row0 in range(0, entry.n_rows, step):
            n = min(step, entry.n_rows - row0)
            yield row0, lg.rows(self.inner, row0, n)

    def iter_chunks(self, entry: TensorEntry, max_elements: int = DEFAULT_CHUNK_ELEMENTS
                    ) -> Iterator[tuple[int, np.ndarray]]:
        """(flat_start, float32 1-D values): stored tensors stream from the inner checkpoint, logical
        ones as their row blocks (a logical row is one output's inputs, far below a chunk)."""
        if entry.name not in self._logical:
            yield from self.inner.iter_chunks(entry, max_elements)  # type: ignore[attr-defined]
            return
        for row0, block in self.iter_rows(entry, max_elements):
            yield row0 * entry.row_len, block.reshape(-1)

    def _decode(self, entry: TensorEntry, raw: memoryview, n_rows: int) -> np.ndarray:
        return self.inner._decode(entry, raw, n_rows)  # noqa: SLF001

    def read_raw_rows(self, entry: TensorEntry, row0: int, n_rows: int) -> np.ndarray:
        if entry.name in self._logical:
            raise CheckpointError(f"{entry.file}: tensor {entry.name!r} is a {self.pack} logical weight "
                                  "computed from several stored tensors; it has no raw rows")
        return self.inner.read_raw_rows(entry, row0, n_rows)

    def close(self) -> None:
        for c in (self.inner, *self.others):
            c.close()
        super().close()


def read_rows(ckpt: Checkpoint, entry: TensorEntry, row0: int, n_rows: int) -> np.ndarray:
    """float32 rows [row0, row0 + n_rows) of any listed tensor, stored or logical (random access).

    Example:
        >>> block = read_rows(ckpt, ckpt.entries["model.norm.weight"], 0, 1)  # doctest: +SKIP
    """
    if isinstance(ckpt, PackedCheckpoint):
        lg = ckpt.logical(entry.name)
        if lg is not None and lg.entry is entry:
            return lg.rows(ckpt.inner, row0, n_rows)
        return read_rows(ckpt.inner, entry, row0, n_rows)
    # a copy: the reader's buffer is reused by its next read
    return np.array(ckpt._decode(entry, ckpt._read(entry, row0, n_rows), n_rows), np.float32)  # noqa: SLF001


