"""llama.cpp importance matrices: both files `llama-imatrix` writes, read as `llama-quantize` reads them.

ref: common/imatrix-loader.cpp (common_imatrix_load, common_imatrix_load_legacy), tools/quantize/quantize.cpp
(load_imatrix: the division), tools/imatrix/imatrix.cpp (save_imatrix, save_imatrix_legacy: the layouts).

- GGUF (`--output-format gguf`, the default): metadata `imatrix.datasets` (strings), `imatrix.chunk_count`,
  `imatrix.chunk_size` (u32; all three required), per weight `<name>.in_sum2` (F32, n_expert rows of n_per_row:
  the raw sums of x^2 per input column) and `<name>.counts` (F32, one per expert: tokens seen). The weights are
  in_sum2 / count per expert in float32, and 1 for an expert no token reached.
- legacy `.dat`: i32 entry count; per entry i32 name length, the name (read up to its first NUL), i32 ncall,
  i32 nval, f32[nval] holding (sum / count) * ncall; then optionally i32 chunk count, i32 length and the
  dataset name. The weights are the values / ncall in float32 (as stored when ncall <= 0).

Both name weights by their GGUF tensor name (`blk.0.attn_q.weight`). A MoE tensor (n_expert, rows, n_per_row)
has n_expert * n_per_row weights, expert by expert. Entries are read on demand, each size checked against
the file before anything is allocated.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CheckpointError, ConfigError, SourceNotFoundError
from .atomic import write_bytes_atomic
from .gguf_file import GGUF_MAGIC, read_gguf_header

__all__ = ["Imatrix", "ImatrixEntry", "read_imatrix", "write_imatrix", "IMATRIX_KEYS"]

# ref: llama-imatrix's GGUF keys (LLM_KV_IMATRIX_*)
IMATRIX_KEYS = ("imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size")
_SUMS, _COUNTS = ".in_sum2", ".counts"


@dataclass(frozen=True)
class ImatrixEntry:
    """One weight's importance data, as stored and as llama-quantize derives it."""

    name: str  # GGUF tensor name
    n_expert: int  # rows of in_sum2 (GGUF); 1 for a .dat entry (its experts are not marked)
    n_per_row: int  # values per expert (a .dat MoE entry: n_expert * n_per_row, split by the tensor's shape)
    counts: np.ndarray  # float64, one per expert: tokens (GGUF) or the ncall of a .dat entry
    sums: np.ndarray  # float32 (n_expert, n_per_row) as stored: sums of x^2 (GGUF), (sum / count) * ncall (.dat)
    weights: np.ndarray  # float32 (n_expert * n_per_row,): what llama-quantize hands ggml_quantize_chunk


@dataclass(frozen=True)
class _Where:
    sums: tuple[int, int, int]  # offset, rows, columns
    counts: tuple[int, int] | None  # offset, count (GGUF)
    ncall: int = 0  # .dat


class Imatrix(Mapping[str, np.ndarray]):
    """An importance-matrix file: `imx[name]` is the weights llama-quantize derives for that GGUF tensor name
    (float32, n_expert * n_per_row); `entry(name)` has the stored sums and counts too."""

    def __init__(self, path: Path, fmt: str, where: dict[str, _Where], datasets: tuple[str, ...],
                 chunk_count: int, chunk_size: int | None):
        self.path, self.format, self._where = path, fmt, where
        self.datasets, self.chunk_count, self.chunk_size = datasets, chunk_count, chunk_size

    def __len__(self) -> int:
        return len(self._where)

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.entry(name).weights

    def __repr__(self) -> str:
        return (f"Imatrix({str(self.path)!r}, format={self.format!r}, entries={len(self)}, "
                f"chunk_count={self.chunk_count}, datasets={list(self.datasets)!r})")

    def entry(self, name: str) -> ImatrixEntry:
        w = self._where[name]
        off, rows, cols = w.sums
        with open(self.path, "rb") as f:
            f.seek(off)
            sums = np.frombuffer(f.read(4 * rows * cols), dtype="<f4").astype(np.float32).reshape(rows, cols)
            if w.counts is not None:
                f.seek(w.counts[0])
                raw = np.frombuffer(f.read(4 * w.counts[1]), dtype="<f4")
        if w.counts is None:  # .dat: quantize.cpp divides by ncall, or keeps the values when ncall <= 0
            counts = np.array([w.ncall], dtype=np.float64)
            weights = sums.reshape(-1) / np.float32(w.ncall) if w.ncall > 0 else sums.reshape(-1).copy()
            return ImatrixEntry(name, 1, cols, counts, sums, weights.astype(np.float32))
        if not np.all(np.isfinite(raw)):
            raise CheckpointError(f"{self.path}: {name}{_COUNTS} holds non-finite counts")
        c = raw.astype(np.float64)  # common_imatrix_load rounds the counts, halves away from zero (std::lround)
        counts = np.sign(c) * np.floor(np.abs(c) + 0.5)
        weights = np.ones((rows, cols), dtype=np.float32)  # an expert no token reached weighs 1
        seen = counts > 0
        weights[seen] = sums[seen] / counts[seen].astype(np.float32)[:, None]
        return ImatrixEntry(name, rows, cols, counts, sums, weights.reshape(-1))

    def weights_for(self, name: str, shape: tuple[int, ...]) -> np.ndarray | None:
        """(n_expert, n_per_row) weights for a GGUF tensor of numpy-order `shape` (None: no entry).

        Raises:
            ConfigError: an entry whose size is not the tensor's n_per_row x n_expert (llama-quantize refuses).
        """
        if name not in self._where:
            return None
        n_per_row = shape[-1]
        n_expert = shape[0] if len(shape) >= 3 else 1
        w = self[name]
        if w.size != n_per_row * n_expert:
            raise ConfigError(f"{self.path}: the importance matrix of {name} has {w.size} values, the tensor "
                              f"needs {n_per_row * n_expert} (n_per_row {n_per_row} x {n_expert} experts); "
                              "it was collected on another model")
        return w.reshape(n_expert, n_per_row)


def read_imatrix(path: str | Path) -> Imatrix:
    """Open an importance matrix (`llama-imatrix`'s GGUF or legacy .dat file).

    Returns:
        Imatrix: a mapping {GGUF tensor name: float32 weights exactly as llama-quantize derives them},
        with `datasets`, `chunk_count`, `chunk_size` and `format` ("gguf" or "dat").

    Raises:
        SourceNotFoundError: no such file.
        CheckpointError: a file that is neither, or whose counts, lengths or sizes it cannot hold.

    Example:
        >>> imx = read_imatrix("imatrix.gguf")  # doctest: +SKIP
        >>> imx["blk.0.attn_q.weight"].shape
        (640,)
    """
    path = Path(path)
    if not path.is_file():
        raise SourceNotFoundError(f"{path}: no such importance-matrix file")
    with open(path, "rb") as f:
        magic = f.read(4)
    return _read_gguf(path) if magic == GGUF_MAGIC else _read_dat(path)


def _read_gguf(path: Path) -> Imatrix:
    metadata, entries = read_gguf_header(path)
    missing = [k for k in IMATRIX_KEYS if k not in metadata]
    if missing:
        kind = metadata.get("general.type")
        raise CheckpointError(f"{path}: not an importance matrix: missing imatrix metadata {', '.join(missing)}"
                              + (f" (general.type is {kind!r})" if kind and kind != "imatrix" else ""))
    datasets = metadata["imatrix.datasets"]
    if isinstance(datasets, dict):  # a list too long to keep in the header parse
        datasets = [f"({datasets['array_length']} datasets)"]
    if not isinstance(datasets, list) or not all(isinstance(d, str) for d in datasets):
        raise CheckpointError(f"{path}: imatrix.datasets is not a list of strings")
    for key in IMATRIX_KEYS[1:]:
        v = metadata[key]
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 2 ** 32:
            raise CheckpointError(f"{path}: {key} is {v!r}, not an unsigned 32-bit count")
    if not entries:
        raise CheckpointError(f"{path}: no data (the importance matrix holds no tensors)")
    pairs: dict[str, dict[str, object]] = {}
    for e in entries:
        for suffix in (_SUMS, _COUNTS):
            if e.name.endswith(suffix) and len(e.name) > len(suffix):
                pairs.setdefault(e.name[:-len(suffix)], {})[suffix] = e
    where: dict[str, _Where] = {}
    for name in sorted(pairs):  # ref: std::map order
        sums, counts = pairs[name].get(_SUMS), pairs[name].get(_COUNTS)
        if sums is None or counts is None:
            raise CheckpointError(f"{path}: mismatched sums and counts for {name} (needs {name}{_SUMS} and "
                                  f"{name}{_COUNTS})")
        if sums.dtype != "F32" or counts.dtype != "F32":
            raise CheckpointError(f"{path}: sums and counts for {name} must be F32 (found {sums.dtype}, "
                                  f"{counts.dtype})")
        nval, ncounts = int(np.prod(sums.shape)), int(np.prod(counts.shape))
        if ncounts == 0 or nval == 0 or nval % ncounts:
            raise CheckpointError(f"{path}: {name}{_SUMS} holds {nval} values for {ncounts} counts; it needs "
                                  "a whole row of sums per count")
        where[name] = _Where((sums.offset, ncounts, nval // ncounts), (counts.offset, ncounts))
    if not where:
        raise CheckpointError(f"{path}: no {_SUMS}/{_COUNTS} pairs (not an importance matrix)")
    return Imatrix(path, "gguf", where, tuple(datasets), metadata["imatrix.chunk_count"],
                   metadata["imatrix.chunk_size"])


def _read_dat(path: Path) -> Imatrix:
    size = path.stat().st_size
    pos = 0
    with open(path, "rb") as f:
        def take(n: int, what: str) -> bytes:
            nonlocal pos
            if n < 0 or pos + n > size:
                raise CheckpointError(f"{path}: {what} at byte {pos} needs {n} bytes, past the end of the file "
                                      f"({size} bytes); the file is truncated or not an importance matrix")
            data = f.read(n)
            pos += n
            return data

        def i32(what: str) -> int:
            return struct.unpack("<i", take(4, what))[0]

        n_entries = i32("the entry count") if size >= 4 else 0
        if n_entries < 1:
            raise CheckpointError(f"{path}: no data (an importance matrix starts with a positive entry count, "
                                  f"this file with {n_entries})")
        if n_entries * 12 > size:  # an entry needs at least its three i32
            raise CheckpointError(f"{path}: claims {n_entries} entries, more than {size} bytes can hold; "
                                  "the file is corrupt or not an importance matrix")
        where: dict[str, _Where] = {}
        for i in range(n_entries):
            length = i32(f"entry {i + 1}'s name length")
            raw = take(length, f"entry {i + 1}'s name").split(b"\0", 1)[0]  # read as a C string
            try:
                name = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise CheckpointError(f"{path}: entry {i + 1}'s name is not UTF-8") from None
            ncall, nval = i32(f"{name}: ncall"), i32(f"{name}: nval")
            if nval < 1:
                raise CheckpointError(f"{path}: {name}: {nval} values (at least one is needed)")
            offset = pos
            if pos + 4 * nval > size:
                take(4 * nval, f"{name}: {nval} values")  # raises
            f.seek(4 * nval, 1)
            pos += 4 * nval
            where[name] = _Where((offset, 1, nval), None, ncall)  # a repeated name: the last one wins
        chunk_count, datasets = 0, ()
        if pos + 4 <= size:  # the optional trailer: chunk count, then the dataset's name
            chunk_count = i32("the chunk count")
            if pos + 4 <= size:
                length = i32("the dataset name length")
                if 0 < length <= size - pos:
                    datasets = (take(length, "the dataset name").split(b"\0", 1)[0].decode("utf-8", "replace"),)
    return Imatrix(path, "dat", where, datasets, chunk_count, None)


_ALIGN = 32  # ref: GGUF_DEFAULT_ALIGNMENT


def _gguf_string(s: str) -> bytes:
    raw = s.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def write_imatrix(path: str | Path, entries: Mapping[str, tuple[np.ndarray, np.ndarray]], *,
                  datasets: tuple[str, ...] | list[str] = (), chunk_count: int = 0, chunk_size: int = 512,
                  legacy: bool = False) -> Path:
    """Write an importance matrix as llama-imatrix does, atomically.

    Args:
        entries: {GGUF tensor name: (sums, counts)}: sums of x^2 per input column, float32 (n_expert, n_per_row)
            (or (n_per_row,)), and the tokens each expert saw (n_expert,).
        datasets, chunk_count, chunk_size: the calibration text(s), the chunks seen, tokens per chunk.
        legacy: the .dat file (save_imatrix_legacy: entries no token reached are left out, values stored as
            (sum / count) x ncall with ncall = ceil(max count / chunk_size), the last dataset in the trailer);
            else the GGUF file (save_imatrix: raw sums and counts, every entry).

    Example:
        >>> write_imatrix("imatrix.gguf", {"blk.0.attn_q.weight": (sums, counts)}, datasets=["wiki.txt"])  # doctest: +SKIP
    """
    rows = {}
    for name in sorted(entries):  # ref: the collector sorts the names
        sums, counts = entries[name]
        counts = np.asarray(counts, dtype=np.int64).reshape(-1)
        sums = np.asarray(sums, dtype=np.float32).reshape(counts.size, -1)
        rows[name] = (sums, counts)
    data = _dat_bytes(rows, datasets, chunk_count, chunk_size) if legacy else \
        _gguf_bytes(rows, datasets, chunk_count, chunk_size)
    return write_bytes_atomic(path, data)


def _gguf_bytes(rows: dict[str, tuple[np.ndarray, np.ndarray]], datasets, chunk_count: int, chunk_size: int) -> bytes:
    kv = [_gguf_string("general.type") + struct.pack("<I", 8) + _gguf_string("imatrix"),
          _gguf_string("imatrix.datasets") + struct.pack("<IIQ", 9, 8, len(datasets))
          + b"".join(_gguf_string(d) for d in datasets),
          _gguf_string("imatrix.chunk_count") + struct.pack("<II", 4, chunk_count),
          _gguf_string("imatrix.chunk_size") + struct.pack("<II", 4, chunk_size)]
    infos, blobs, offset = [], [], 0
    for name, (sums, counts) in rows.items():
        for suffix, arr in ((_SUMS, sums), (_COUNTS, counts.astype(np.float32).reshape(-1, 1))):
            ne = tuple(reversed(arr.shape))  # ggml order: ne[0] is the row
            infos.append(_gguf_string(name + suffix) + struct.pack("<I", 2) + struct.pack("<2Q", *ne)
                         + struct.pack("<IQ", 0, offset))  # type 0: F32
            raw = np.ascontiguousarray(arr, dtype="<f4").tobytes()
            pad = -len(raw) % _ALIGN
            blobs.append(raw + b"\0" * pad)
            offset += len(raw) + pad
    head = b"GGUF" + struct.pack("<IQQ", 3, len(infos), len(kv)) + b"".join(kv) + b"".join(infos)
    return head + b"\0" * (-len(head) % _ALIGN) + b"".join(blobs)


def _dat_bytes(rows: dict[str, tuple[np.ndarray, np.ndarray]], datasets, chunk_count: int, chunk_size: int) -> bytes:
    stored = {n: r for n, r in rows.items() if np.any(r[1] != 0)}  # an entry without any token is skipped
    out = [struct.pack("<i", len(stored))]
    for name, (sums, counts) in stored.items():
        ncall = int((counts.max() + chunk_size - 1) // chunk_size)  # ceiling division: no accidental zeros
        count = np.repeat(counts.astype(np.float32), sums.shape[1])
        flat = sums.reshape(-1)
        idle = count == 0  # store 1 for partial data
        value = np.where(idle, np.float32(1), flat).astype(np.float32)
        count = np.where(idle, np.float32(1), count).astype(np.float32)
        raw = name.encode("utf-8")
        out += [struct.pack("<i", len(raw)), raw, struct.pack("<ii", ncall, flat.size),
                (value / count * np.float32(ncall)).astype("<f4").tobytes()]
    last = datasets[-1].encode("utf-8") if datasets else b""
    out += [struct.pack("<i", chunk_count), struct.pack("<i", len(last)), last]
    return b"".join(out)
