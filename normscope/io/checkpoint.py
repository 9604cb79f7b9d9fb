"""The checkpoint abstraction: a list of tensor entries and a bounded, row-chunked reader.

A `Checkpoint` never holds a whole tensor unless asked to: `iter_rows` yields float32 row
blocks of at most `max_elements` values (at least one row), reading the bytes with `pread`
into one reusable buffer, so memory is bounded by a chunk, not by a tensor or a model.
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CheckpointError

__all__ = ["DEFAULT_CHUNK_ELEMENTS", "TensorEntry", "Checkpoint"]

# 16 Mi values: 64 MiB as float32, the largest array a reader hands out at once.
DEFAULT_CHUNK_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor's bytes are and what they are."""

    name: str  # as spelled in the file
    shape: tuple[int, ...]  # numpy (row-major) order
    dtype: str  # safetensors dtype name (BF16) or GGUF type name (Q4_K)
    file: Path
    offset: int  # absolute byte offset of the first byte in `file`
    nbytes: int

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def row_len(self) -> int:
        """Values per row: the last dimension (1 for a scalar)."""
        return self.shape[-1] if self.shape else 1

    @property
    def n_rows(self) -> int:
        return math.prod(self.shape[:-1]) if len(self.shape) > 1 else 1

    @property
    def row_bytes(self) -> int:
        return self.nbytes // self.n_rows if self.n_rows else 0


class Checkpoint(ABC):
    """A checkpoint on local disk: one file or a set of shards of one format."""

    format: str = ""

    def __init__(self, path: Path, files: tuple[Path, ...], entries: list[TensorEntry],
                 config: dict[str, Any] | None, metadata: dict[str, Any]):
        self.path = path
        self.files = files
        self.entries: dict[str, TensorEntry] = {e.name: e for e in entries}
        self.config = config
        self.metadata = metadata
        self._fds: dict[Path, int] = {}
        self._buf = bytearray()

    # -- decoding, one method per format ---------------------------------------------------
    @abstractmethod
    def _decode(self, entry: TensorEntry, raw: memoryview, n_rows: int) -> np.ndarray:
        """float32 (n_rows, row_len) from the raw bytes of `n_rows` whole rows."""

    def _raw_dtype(self, entry: TensorEntry) -> np.dtype:
        """The numpy dtype that views stored bytes (uint8 for block-quantized types)."""
        return np.dtype(np.uint8)

    # -- reading ---------------------------------------------------------------------------
    def rows_per_chunk(self, entry: TensorEntry, max_elements: int = DEFAULT_CHUNK_ELEMENTS) -> int:
        return max(1, min(entry.n_rows, max_elements // max(1, entry.row_len)))

    def iter_rows(self, entry: TensorEntry, max_elements: int = DEFAULT_CHUNK_ELEMENTS
                  ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (first_row, float32 array of shape (n, row_len)) covering the tensor in order.

        Example:
            >>> for row0, block in ckpt.iter_rows(ckpt.entries["w"], max_elements=1 << 20):
            ...     print(row0, block.shape)
        """
        step = self.rows_per_chunk(entry, max_elements)
        for row0 in range(0, entry.n_rows, step):
            n = min(step, entry.n_rows - row0)
            yield row0, self._decode(entry, self._read(entry, row0, n), n)

    def read(self, entry: TensorEntry) -> np.ndarray:
        """The whole tensor as float32 in its shape. Only for tensors known to be small."""
        parts = [block for _, block in self.iter_rows(entry, max(entry.n_elements, 1))]
        return np.concatenate(parts).reshape(entry.shape)

    def read_raw_rows(self, entry: TensorEntry, row0: int, n_rows: int) -> np.ndarray:
        """Stored bytes of rows [row0, row0 + n_rows) as a fresh array of the storage dtype."""
        raw = bytes(self._read(entry, row0, n_rows))
        return np.frombuffer(raw, dtype=self._raw_dtype(entry)).copy()

    def _read(self, entry: TensorEntry, row0: int, n_rows: int) -> memoryview:
        if entry.nbytes % max(entry.n_rows, 1):
            raise CheckpointError(f"{entry.file}: tensor {entry.name!r} has {entry.nbytes} bytes, "
                                  f"not a whole number of its {entry.n_rows} rows")
        size = n_rows * entry.row_bytes
        if len(self._buf) < size:
            self._buf = bytearray(size)
        view = memoryview(self._buf)[:size]
        fd = self._fd(entry.file)
        offset, done = entry.offset + row0 * entry.row_bytes, 0
        while done < size:
            got = os.preadv(fd, [view[done:]], offset + done)
            if got <= 0:
                raise CheckpointError(
                    f"{entry.file}: tensor {entry.name!r} is truncated: expected {size} bytes at offset "
                    f"{offset}, the file ended after {done}; re-download or re-save the checkpoint")
            done += got
        return view

    def _fd(self, file: Path) -> int:
        fd = self._fds.get(file)
        if fd is None:
            fd = self._fds[file] = os.open(file, os.O_RDONLY)
        return fd

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        self._buf = bytearray()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    @property
    def bytes_on_disk(self) -> int:
        return sum(f.stat().st_size for f in self.files)
