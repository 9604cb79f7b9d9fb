"""GGUF files: a validating header parser, tensor bytes through bounded reads, any type dequantized
with gguf-py.

The header is parsed here rather than with `gguf.GGUFReader`, which builds a numpy view per
metadata item and takes ~12 s on Gemma's 262,144-token vocabulary; this parser skips large arrays
and checks every count and length against the bytes left before it trusts it. Values come out
exactly as stored (a Gemma GGUF norm holds 1 + w); undoing converter conventions is the
architecture registry's job, not this module's.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize

from .._kernels import dequantize as kernel_dequantize
from .._kernels import qtypes
from ..errors import CheckpointError
from ..upstream import load_grid
from .checkpoint import Checkpoint, TensorEntry

__all__ = ["GGUFCheckpoint", "GGUF_MAGIC", "read_gguf_header"]

GGUF_MAGIC = b"GGUF"
_MAX_ARRAY_IN_METADATA = 64  # token lists and merges are large and not needed here
_MAX_DIMS = 4  # ref: ggml.h GGML_MAX_DIMS
# ref: gguf-py constants.py GGUFValueType -> struct format (None: string, array)
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
DEQUANT_PIECE = 1 << 20  # values dequantized at once by iter_chunks (types gguf-py dequantizes)
# the types the compiled kernels dequantize (every quantized ggml type but the F32 copy)
KERNEL_TYPES = frozenset(row[0] for row in qtypes())


class _Cursor:
    """Sequential little-endian reads that refuse to run past the end of the file."""

    def __init__(self, f: BinaryIO, size: int, file: Path):
        self.f, self.size, self.file, self.pos = f, size, file, 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > self.size:
            raise CheckpointError(f"{self.file}: {what} at byte {self.pos} claims {n} bytes, past the end of "
                                  f"the file ({self.size} bytes); the file is truncated or corrupt")
        data = self.f.read(n)
        self.pos += n
        return data

    def unpack(self, fmt: str, what: str) -> Any:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        raw = self.take(self.unpack("Q", what + " length"), what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise CheckpointError(f"{self.file}: {what} at byte {self.pos - len(raw)} is not UTF-8") from None

    def skip(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            self.take(n, what)  # raises with the message
        self.f.seek(n, 1)
        self.pos += n


def _value(c: _Cursor, vtype: int, key: str) -> Any:
    if vtype in _SCALARS:
        return c.unpack(_SCALARS[vtype], f"metadata {key!r}")
    if vtype == _STRING:
        return c.string(f"metadata {key!r}")
    if vtype == _ARRAY:
        etype, count = c.unpack("I", f"metadata {key!r} type"), c.unpack("Q", f"metadata {key!r} count")
        if etype not in _SCALARS and etype != _STRING:
            raise CheckpointError(f"{c.file}: metadata {key!r} is an array of unknown type {etype}")
        item = struct.calcsize(_SCALARS[etype]) if etype in _SCALARS else 8
        if count * item > c.size - c.pos:  # every element needs at least `item` bytes
            c.take(count * item, f"metadata {key!r} array of {count}")
        if count > _MAX_ARRAY_IN_METADATA:
            if etype in _SCALARS:
                c.skip(count * item, f"metadata {key!r}")
            else:
                for _ in range(count):
                    c.skip(c.unpack("Q", f"metadata {key!r} string length"), f"metadata {key!r} string")
            return {"array_length": count}
        return [_value(c, etype, key) for _ in range(count)]
    raise CheckpointError(f"{c.file}: metadata {key!r} has unknown value type {vtype}")


def read_gguf_header(file: Path) -> tuple[dict[str, Any], list[TensorEntry]]:
    """Parse and validate a GGUF header.

    Returns:
        (metadata, tensor entries with absolute offsets, in file order).

    Raises:
        CheckpointError: bad magic, unsupported version, or any count, length or offset that the
            file cannot hold.
    """
    size = file.stat().st_size
    with open(file, "rb") as f:
        c = _Cursor(f, size, file)
        magic = c.take(4, "magic") if size >= 4 else b""
        if magic != GGUF_MAGIC:
            raise CheckpointError(f"{file}: not a GGUF file (magic {magic!r}, expected {GGUF_MAGIC!r})")
        version = c.unpack("I", "version")
        if version not in (2, 3):
            raise CheckpointError(f"{file}: GGUF version {version} is not supported (2 and 3 are; a big-endian "
                                  "file also reads as an odd version)")
        n_tensors, n_kv = c.unpack("Q", "tensor count"), c.unpack("Q", "metadata count")
        # a key needs >= 12 bytes, a tensor info >= 24: counts the file cannot hold are rejected up front
        if n_kv * 12 + n_tensors * 24 > size:
            raise CheckpointError(f"{file}: header claims {n_kv} metadata items and {n_tensors} tensors, more "
                                  f"than {size} bytes can hold; the file is corrupt")
        metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = c.string("metadata key")
            metadata[key] = _value(c, c.unpack("I", f"metadata {key!r} type"), key)
        infos = []
        for _ in range(n_tensors):
            name = c.string("tensor name")
            n_dims = c.unpack("I", f"tensor {name!r} dims")
            if not 1 <= n_dims <= _MAX_DIMS:
                raise CheckpointError(f"{file}: tensor {name!r} has {n_dims} dimensions (1..{_MAX_DIMS} allowed)")
            ne = [c.unpack("Q", f"tensor {name!r} shape") for _ in range(n_dims)]
            raw_type, offset = c.unpack("I", f"tensor {name!r} type"), c.unpack("Q", f"tensor {name!r} offset")
            try:
                qtype = GGMLQuantizationType(raw_type)
            except ValueError:
                raise CheckpointError(f"{file}: tensor {name!r} has unknown ggml type {raw_type}") from None
            infos.append((name, qtype, tuple(reversed(ne)), offset))
        arch = metadata.get("general.architecture")
        if arch is not None and not isinstance(arch, str):
            raise CheckpointError(f"{file}: general.architecture {arch!r} is not a string")
        align = metadata.get("general.alignment", 32)
        if not isinstance(align, int) or align <= 0 or align & (align - 1):
            raise CheckpointError(f"{file}: general.alignment {align!r} is not a power of two")
        data_start = -(-c.pos // align) * align
    entries, seen = [], set()
    for name, qtype, shape, offset in infos:
        if name in seen:
            raise CheckpointError(f"{file}: tensor {name!r} appears twice")
        seen.add(name)
        block, type_size = GGML_QUANT_SIZES[qtype]
        if shape[-1] % block:
            raise CheckpointError(f"{file}: tensor {name!r} rows of {shape[-1]} values are not whole "
                                  f"{qtype.name} blocks of {block}")
        n_elements = int(np.prod(shape, dtype=np.float64))
        nbytes = n_elements // block * type_size
        start = data_start + offset
        if start + nbytes > size:
            raise CheckpointError(f"{file}: tensor {name!r} needs bytes up to {start + nbytes} but the file has "
                                  f"{size}; the file is truncated")
        entries.append(TensorEntry(name, shape, qtype.name, file, start, nbytes))
    return metadata, entries


class GGUFCheckpoint(Checkpoint):
    """One .gguf file."""

    format = "gguf"

    @classmethod
    def open_file(cls, file: Path) -> GGUFCheckpoint:
        metadata, entries = read_gguf_header(file)
        return cls(file, (file,), entries, None, metadata)

    @property
    def architecture(self) -> str | None:
        return self.metadata.get("general.architecture")

    def _decode(self, entry: TensorEntry, raw: memoryview, n_rows: int) -> np.ndarray:
        if entry.dtype in KERNEL_TYPES:  # the compiled dequantizer: no temporaries, outside the GIL
            out = np.empty((n_rows, entry.row_len), dtype=np.float32)
            load_grid(entry.dtype)
            if out.size:
                kernel_dequantize(entry.dtype, raw, out, entry.row_len)
            return out
        qtype = GGMLQuantizationType[entry.dtype]
        blocks = np.frombuffer(raw, dtype=np.uint8).reshape(n_rows, entry.row_bytes)
        try:
            values = dequantize(blocks, qtype)
        except NotImplementedError:
            raise CheckpointError(f"{entry.file}: tensor {entry.name!r} has type {entry.dtype}, "
                                  "which gguf-py cannot dequantize") from None
        return np.asarray(values, dtype=np.float32).reshape(n_rows, entry.row_len)

    def _granule(self, entry: TensorEntry) -> tuple[int, int]:
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType[entry.dtype]]
        return block, type_size

    def _decode_into(self, entry: TensorEntry, raw: memoryview, out: np.ndarray) -> np.ndarray:
        block, type_size = self._granule(entry)
        if entry.dtype in KERNEL_TYPES:  # whole blocks (iter_chunks reads granules), dequantized in C
            load_grid(entry.dtype)
            if out.size:
                kernel_dequantize(entry.dtype, raw, out, out.size)
            return out
        # gguf-py's dequantizers make several temporaries the size of their input: feed them
        # pieces of DEQUANT_PIECE values so a 64 MiB chunk does not cost 64 MiB × k of scratch.
        blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, type_size)  # (n_blocks, type_size)
        per = max(1, DEQUANT_PIECE // block)
        for b in range(0, blocks.shape[0], per):
            piece = blocks[b:b + per].reshape(1, -1)
            try:
                values = dequantize(piece, GGMLQuantizationType[entry.dtype])
            except NotImplementedError:
                raise CheckpointError(f"{entry.file}: tensor {entry.name!r} has type {entry.dtype}, "
                                      "which gguf-py cannot dequantize") from None
            out[b * block:b * block + values.size] = values.reshape(-1)
        return out
