"""safetensors files and HF-layout directories: header parsing with every claim checked.

The header is parsed here rather than trusted to a library: its length must lie within the file,
every tensor's offsets inside the data area, no two tensors may overlap, and shape × item size
must equal the byte length, all before a single tensor byte is read.
"""

from __future__ import annotations

import functools
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CheckpointError, SourceNotFoundError
from .checkpoint import Checkpoint, TensorEntry
from .dtypes import numpy_dtype
from .jsonfile import parse_json, read_json, read_weight_map

__all__ = ["SafetensorsCheckpoint", "PlainDecoding", "read_header", "decode_plain_into", "INDEX_NAME", "SINGLE_NAME"]

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
MAX_HEADER_BYTES = 100 * 1024 * 1024  # ref: safetensors MAX_HEADER_SIZE
MAX_DIMS = 64  # ref: numpy NPY_MAXDIMS (numpy 2): no array of more dimensions can hold the tensor


def read_header(file: Path) -> tuple[list[TensorEntry], dict[str, str]]:
    """Parse and validate one safetensors file's header.

    Returns:
        The tensor entries in data order, and the `__metadata__` dict.

    Raises:
        CheckpointError: the header is malformed or claims bytes the file does not have.

    Example:
        >>> entries, meta = read_header(Path("model.safetensors"))
    """
    size = file.stat().st_size
    where = f"{file}: "
    if size < 8:
        raise CheckpointError(f"{where}file is {size} bytes, too short for a safetensors header "
                              "(8-byte length + JSON); the file is empty or truncated")
    with open(file, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > size - 8:
            raise CheckpointError(f"{where}header length {n} runs beyond the end of the file "
                                  f"({size} bytes); the file is truncated or not safetensors")
        if n > MAX_HEADER_BYTES:
            raise CheckpointError(f"{where}header length {n} exceeds {MAX_HEADER_BYTES} bytes; not a safetensors file")
        raw = f.read(n)
    header = parse_json(raw, where, "header")
    if not isinstance(header, dict):
        raise CheckpointError(f"{where}header is a JSON {type(header).__name__}, expected an object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{where}__metadata__ must map strings to strings")
    data_start, data_size = 8 + n, size - 8 - n
    entries = [_entry(file, name, info, data_start, data_size) for name, info in header.items()]
    entries.sort(key=lambda e: (e.offset, e.offset + e.nbytes))
    for a, b in zip(entries, entries[1:]):
        if b.offset < a.offset + a.nbytes:
            raise CheckpointError(f"{where}tensors {a.name!r} and {b.name!r} overlap in the data area")
    return entries, metadata


def _entry(file: Path, name: str, info: Any, data_start: int, data_size: int) -> TensorEntry:
    where = f"{file}: tensor {name!r}: "
    if not isinstance(info, dict):
        raise CheckpointError(f"{where}header entry is not an object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    item = numpy_dtype(dtype, where=where).itemsize
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise CheckpointError(f"{where}shape {shape!r} is not a list of non-negative integers")
    if len(shape) > MAX_DIMS:
        raise CheckpointError(f"{where}shape has {len(shape)} dimensions, more than {MAX_DIMS} (numpy's limit)")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(type(o) is int for o in offsets)):
        raise CheckpointError(f"{where}data_offsets {offsets!r} is not a [begin, end] pair of integers")
    begin, end = offsets
    if not 0 <= begin <= end <= data_size:
        raise CheckpointError(f"{where}data_offsets [{begin}, {end}] lie outside the data area of "
                              f"{data_size} bytes; the file is truncated or corrupt")
    expected = math.prod(shape) * item
    if end - begin != expected:
        raise CheckpointError(f"{where}shape {shape} × {dtype} ({item} B) needs {expected} bytes, "
                              f"data_offsets give {end - begin}")
    return TensorEntry(name, tuple(shape), dtype, file, data_start + begin, end - begin)


def load_config(directory: Path) -> dict[str, Any] | None:
    """config.json of an HF directory, or None when there is none."""
    cfg = directory / "config.json"
    if not cfg.is_file():
        return None
    data = read_json(cfg, "config.json")
    if not isinstance(data, dict):
        raise CheckpointError(f"{cfg}: malformed config.json (expected a JSON object)")
    _check_config(cfg, data, "")
    text = data.get("text_config")
    if text is not None:
        _check_config(cfg, text, "text_config.")
    return data


# the config.json keys normscope reads, and the JSON types they must have when present (null: absent)
_CONFIG_TYPES: dict[str, tuple[type, ...]] = {
    "architectures": (list,), "model_type": (str,), "text_config": (dict,), "quantization_config": (dict,),
    "num_hidden_layers": (int,), "tie_word_embeddings": (bool,)}


def _check_config(cfg: Path, data: dict[str, Any], prefix: str) -> None:
    for key, types in _CONFIG_TYPES.items():
        value = data.get(key)
        if value is None:
            continue
        ok = isinstance(value, types) and not (types == (int,) and (isinstance(value, bool) or value < 0))
        if key == "architectures" and ok:
            ok = all(isinstance(a, str) for a in value)
        if not ok:
            expected = {"architectures": "a list of strings", "num_hidden_layers": "a non-negative integer"}.get(
                key, f"a JSON {_json_type(types[0]())}")
            shown = repr(value) if isinstance(value, (int, float, bool, str)) and len(repr(value)) <= 40 \
                else f"a JSON {_json_type(value)}"
            raise CheckpointError(f"{cfg}: malformed config.json: '{prefix}{key}' is {shown}, expected {expected}")


def _json_type(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(value), type(value).__name__)


class PlainDecoding:
    """Decoding for checkpoints whose tensors are plain arrays of a safetensors dtype (safetensors, torch)."""

    def _raw_dtype(self, entry: TensorEntry) -> np.dtype:
        return numpy_dtype(entry.dtype)

    def _decode(self, entry: TensorEntry, raw: memoryview, n_rows: int) -> np.ndarray:
        values = np.frombuffer(raw, dtype=numpy_dtype(entry.dtype))
        return values.astype(np.float32).reshape(n_rows, entry.row_len)

    def _granule(self, entry: TensorEntry) -> tuple[int, int]:
        return 1, numpy_dtype(entry.dtype).itemsize

    def _decode_into(self, entry: TensorEntry, raw: memoryview, out: np.ndarray) -> np.ndarray:
        return decode_plain_into(entry.dtype, raw, out)

    def _stored_view(self, entry: TensorEntry, raw: memoryview) -> np.ndarray | None:
        return np.frombuffer(raw, dtype=numpy_dtype(entry.dtype)) if entry.dtype == "BF16" else None


class SafetensorsCheckpoint(PlainDecoding, Checkpoint):
    """One .safetensors file, or an HF directory with a single file or an index of shards."""

    format = "safetensors"

    @classmethod
    def open_file(cls, file: Path) -> SafetensorsCheckpoint:
        entries, meta = read_header(file)
        return cls(file, (file,), entries, load_config(file.parent), {"__metadata__": meta})

    @classmethod
    def open_dir(cls, directory: Path) -> SafetensorsCheckpoint:
        index = directory / INDEX_NAME
        if index.is_file():
            return cls._open_index(directory, index)
        single = directory / SINGLE_NAME
        files = [single] if single.is_file() else sorted(directory.glob("*.safetensors"))
        if not files:
            raise SourceNotFoundError(f"{directory}: no safetensors weights (expected {SINGLE_NAME} "
                                      f"or {INDEX_NAME})")
        entries, metas = [], {}
        for f in files:
            e, m = read_header(f)
            entries += e
            metas[f.name] = m
        _no_duplicates(entries, directory)
        return cls(directory, tuple(files), entries, load_config(directory), {"__metadata__": metas})

    @classmethod
    def _open_index(cls, directory: Path, index: Path) -> SafetensorsCheckpoint:
        weight_map = read_weight_map(index, INDEX_NAME)
        shard_names = list(dict.fromkeys(weight_map.values()))
        entries, metas, files = [], {}, []
        for shard in shard_names:
            file = directory / shard
            if Path(shard).name != shard or not file.is_file():
                raise CheckpointError(f"{index}: names shard {shard!r}, which is missing from {directory}")
            found, metas[shard] = read_header(file)
            by_name = {e.name: e for e in found}
            wanted = [n for n, s in weight_map.items() if s == shard]
            missing = [n for n in wanted if n not in by_name]
            if missing:
                raise CheckpointError(f"{file}: the index places {missing[0]!r} (and {len(missing) - 1} more) "
                                      "in this shard but the shard does not hold it")
            entries += found
            files.append(file)
        _no_duplicates(entries, directory)
        return cls(directory, tuple(files), entries, load_config(directory), {"__metadata__": metas})


def decode_plain_into(dtype: str, raw: memoryview, out: np.ndarray) -> np.ndarray:
    """float32 values of stored bytes of a plain dtype: F32 as a view of `raw`, others cast into `out`
    (the same cast as `astype`, without allocating)."""
    stored = np.frombuffer(raw, dtype=numpy_dtype(dtype))
    if stored.dtype == np.float32:
        return stored
    if dtype in _BYTE_FLOATS:  # 256 codes: a table look-up is ~3x ml_dtypes' cast, and the same values
        np.take(_byte_table(dtype), stored.view(np.uint8), out=out)
        return out
    np.copyto(out, stored, casting="unsafe")
    return out


_BYTE_FLOATS = ("F8_E4M3", "F8_E5M2")


@functools.cache
def _byte_table(dtype: str) -> np.ndarray:
    return np.arange(256, dtype=np.uint8).view(numpy_dtype(dtype)).astype(np.float32)


def _no_duplicates(entries: list[TensorEntry], where: Path) -> None:
    seen: dict[str, Path] = {}
    for e in entries:
        if e.name in seen:
            raise CheckpointError(f"{where}: tensor {e.name!r} appears in both {seen[e.name].name} and {e.file.name}")
        seen[e.name] = e.file
