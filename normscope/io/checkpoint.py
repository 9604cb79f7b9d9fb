"""The checkpoint abstraction: a list of tensor entries and a bounded, row-chunked reader.

A `Checkpoint` never holds a whole tensor unless asked to: `iter_rows` yields float32 row
blocks of at most `max_elements` values (at least one row), reading the bytes with `pread`
into one reusable buffer, so memory is bounded by a chunk, not by a tensor or a model.
`iter_chunks` is the streaming path for one pass over every value: flat float32 pieces decoded
into a second reusable buffer (no allocation, so no page faults, per chunk), with rows longer
than a chunk split at element or quantization-block boundaries, so memory stays bounded even for
a single multi-GB row. Nothing is memory-mapped: `pread` fills only the buffers, and the page
cache it goes through is not counted against the process.
"""

from __future__ import annotations

import copy
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

# 1 Mi values (4 MiB as float32) per read: the bytes read and the values decoded stay in the CPU's
# caches until they are used. Measured on the Gemma 3 270M export: reading every tensor to float32
# takes 0.09 s at 1 Mi, 0.12 s at 4 Mi and 0.13-0.15 s at 16 Mi values (benchmarks/bench_analyze.py).
DEFAULT_CHUNK_ELEMENTS = 1 << 20


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
        self._out = np.empty(0, np.float32)  # iter_chunks' reusable decode buffer

    def clone(self) -> Checkpoint | None:
        """A reader of the same checkpoint with its own file descriptors and buffers, sharing the parsed
        header, for another thread (a Checkpoint's reads are not shared between threads); None when this
        kind of checkpoint cannot be cloned (open it again instead)."""
        twin = copy.copy(self)
        twin._fds, twin._buf, twin._out = {}, bytearray(), np.empty(0, np.float32)
        return twin

    # -- decoding, one method per format ---------------------------------------------------
    @abstractmethod
    def _decode(self, entry: TensorEntry, raw: memoryview, n_rows: int) -> np.ndarray:
        """float32 (n_rows, row_len) from the raw bytes of `n_rows` whole rows."""

    def _raw_dtype(self, entry: TensorEntry) -> np.dtype:
        """The numpy dtype that views stored bytes (uint8 for block-quantized types)."""
        return np.dtype(np.uint8)

    def _granule(self, entry: TensorEntry) -> tuple[int, int] | None:
        """(values, bytes) of the smallest independently decodable piece of a row (1 value, or one
        quantization block), or None when rows cannot be split (then a chunk holds whole rows)."""
        return None

    def _decode_into(self, entry: TensorEntry, raw: memoryview, out: np.ndarray) -> np.ndarray:
        """float32 values of `raw` (whole granules), written into `out` (1-D, the right size) or
        returned as a view of `raw` when the stored bytes already are float32."""
        n_rows = max(1, out.size // max(1, entry.row_len))
        out[:] = self._decode(entry, raw, n_rows).reshape(-1)
        return out

    def _stored_view(self, entry: TensorEntry, raw: memoryview) -> np.ndarray | None:
        """The stored values of `raw` as they are, when `iter_chunks(stored=True)` hands them over
        undecoded (bfloat16, which the statistics kernel reads directly); None: decode to float32."""
        return None

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
        if not entry.n_elements:  # a zero-size dimension: nothing to read, however many rows it claims
            return
        step = self.rows_per_chunk(entry, max_elements)
        for row0 in range(0, entry.n_rows, step):
            n = min(step, entry.n_rows - row0)
            yield row0, self._decode(entry, self._read(entry, row0, n), n)

    def iter_chunks(self, entry: TensorEntry, max_elements: int = DEFAULT_CHUNK_ELEMENTS, first: int = 0,
                    stop: int | None = None, *, stored: bool = False) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (flat_start, float32 1-D values) covering the tensor in order; one pass, bounded memory.

        Chunks are the same as `iter_rows`' (whole rows, at most `max_elements` values) when a row
        fits; a longer row is split into pieces of at most `max_elements` values (rounded to whole
        quantization blocks). `first`/`stop` select chunks [first, stop) of `n_chunks` (a worker's
        share of one large tensor). The arrays are views of buffers this checkpoint reuses: they are
        valid until the next read from it, so copy what you keep. With `stored`, a tensor stored as
        bfloat16 comes as ml_dtypes bfloat16 views of the bytes read (the same values, no float32 copy).

        Example:
            >>> for start, values in ckpt.iter_chunks(ckpt.entries["w"]):
            ...     total += float(values.sum(dtype=np.float64))
        """
        for start, byte0, n in self._pieces(entry, max_elements)[first:stop]:
            raw = self._read_bytes(entry, byte0, n * entry.nbytes // max(1, entry.n_elements))
            view = self._stored_view(entry, raw) if stored else None
            if view is not None:
                yield start, view
                continue
            if self._out.size < n:
                self._out = np.empty(n, np.float32)
            yield start, self._decode_into(entry, raw, self._out[:n])

    def n_chunks(self, entry: TensorEntry, max_elements: int = DEFAULT_CHUNK_ELEMENTS) -> int:
        """How many chunks `iter_chunks` yields for this tensor."""
        return len(self._pieces(entry, max_elements))

    def _pieces(self, entry: TensorEntry, max_elements: int) -> list[tuple[int, int, int]]:
        """(first value, first byte, values) of every chunk of a tensor (none when it holds no values)."""
        if not entry.n_elements:  # [2**62, 0] holds nothing: no chunk per (empty) row
            return []
        if entry.nbytes % max(entry.n_rows, 1):
            self._read(entry, 0, 0)  # raises the whole-rows error
        granule = self._granule(entry)
        if entry.row_len <= max_elements or granule is None:
            step = self.rows_per_chunk(entry, max_elements)
            return [(r * entry.row_len, r * entry.row_bytes, min(step, entry.n_rows - r) * entry.row_len)
                    for r in range(0, entry.n_rows, step)]
        g_values, g_bytes = granule
        per = max(1, max_elements // g_values)  # granules per piece
        n_granules = entry.n_elements // g_values
        return [(g * g_values, g * g_bytes, min(per, n_granules - g) * g_values) for g in range(0, n_granules, per)]

    def read(self, entry: TensorEntry) -> np.ndarray:
        """The whole tensor as float32 in its shape. Only for tensors known to be small."""
        if not entry.n_elements:
            return np.zeros(entry.shape, np.float32)
        parts = [block for _, block in self.iter_rows(entry, max(entry.n_elements, 1))]
        return np.concatenate(parts).reshape(entry.shape)

    def read_raw_rows(self, entry: TensorEntry, row0: int, n_rows: int) -> np.ndarray:
        """Stored bytes of rows [row0, row0 + n_rows) as a fresh array of the storage dtype."""
        raw = bytes(self._read(entry, row0, n_rows))
        return np.frombuffer(raw, dtype=self._raw_dtype(entry)).copy()

    def read_raw_values(self, entry: TensorEntry, start: int, count: int) -> np.ndarray:
        """Stored values [start, start + count) of a tensor of a plain dtype (one value per item: F32, BF16, …)
        as a fresh array of that dtype: a piece of a row, for rows too long to read whole."""
        dtype = np.dtype(self._raw_dtype(entry))
        out = np.empty(count, dtype)
        if count:
            self.read_into(entry, start * dtype.itemsize, memoryview(out.view(np.uint8)))
        return out

    def _read(self, entry: TensorEntry, row0: int, n_rows: int) -> memoryview:
        if entry.nbytes % max(entry.n_rows, 1):
            raise CheckpointError(f"{entry.file}: tensor {entry.name!r} has {entry.nbytes} bytes, "
                                  f"not a whole number of its {entry.n_rows} rows")
        return self._read_bytes(entry, row0 * entry.row_bytes, n_rows * entry.row_bytes)

    def _read_bytes(self, entry: TensorEntry, byte0: int, size: int) -> memoryview:
        """Bytes [byte0, byte0 + size) of a tensor, in the reusable buffer."""
        if len(self._buf) < size:
            self._buf = bytearray(size)
        view = memoryview(self._buf)[:size]
        self.read_into(entry, byte0, view)
        return view

    def read_into(self, entry: TensorEntry, byte0: int, view: memoryview) -> None:
        """Fill the writable `view` with bytes [byte0, byte0 + len(view)) of a tensor's data in its file.

        Raises:
            CheckpointError: the file ends before those bytes.
        """
        fd = self._fd(entry.file)
        offset, done, size = entry.offset + byte0, 0, len(view)
        while done < size:
            got = os.preadv(fd, [view[done:]], offset + done)
            if got <= 0:
                raise CheckpointError(
                    f"{entry.file}: tensor {entry.name!r} is truncated: expected {size} bytes at offset "
                    f"{offset}, the file ended after {done}; re-download or re-save the checkpoint")
            done += got

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
        self._out = np.empty(0, np.float32)

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
