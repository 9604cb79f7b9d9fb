"""PyTorch state dicts (`.bin`, `.pt`, `.pth`): read with `torch.load(weights_only=True)` only, and only
when the torch extra is installed.

A file written by `torch.save` since torch 1.6 is a zip archive whose storages are stored uncompressed,
one record each. `torch.load(map_location="meta", weights_only=True)` unpickles the state dict without
reading a byte of weights and tells each storage's offset in the file (`_checkpoint_offset`); such
tensors (contiguous, little-endian, in a stored record: nearly all) are then read with the same bounded
`pread` chunks as safetensors, so memory stays bounded by a chunk.

What cannot be located that way is loaded with `torch.load(mmap=True, weights_only=True)` and kept:
a non-contiguous tensor is copied whole, and a legacy (non-zip) file, from torch < 1.6 or saved with
`_use_new_zipfile_serialization=False`, is a single pickle stream that cannot be mapped or streamed and
is loaded whole into memory. Convert such files to safetensors for bounded memory.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CheckpointError, MissingExtraError, SourceNotFoundError
from .checkpoint import Checkpoint, TensorEntry
from .jsonfile import MAX_DEPTH, read_weight_map
from .safetensors_file import PlainDecoding, load_config

__all__ = ["TorchCheckpoint", "TORCH_SUFFIXES", "TORCH_INDEX_NAME"]

TORCH_SUFFIXES = (".bin", ".pt", ".pth")
TORCH_INDEX_NAME = "pytorch_model.bin.index.json"
TORCH_EXTRA = "pip install 'normscope[torch]'"
# keys under which training scripts nest the weights (seed 004: torch.save(model.state_dict(), …))
_NESTED_KEYS = ("state_dict", "model_state_dict", "model", "module", "model_state")


def _import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise MissingExtraError(f"reading PyTorch .bin/.pt weights needs torch: {TORCH_EXTRA} (or convert "
                                "them to safetensors with safetensors.torch.save_file)") from None
    return torch


def _dtype_names(torch: Any) -> dict[Any, str]:
    # torch dtype -> safetensors spelling (ref: safetensors/torch.py _TYPES)
    names = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
             torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
             torch.bool: "BOOL"}
    for attr, name in (("float8_e4m3fn", "F8_E4M3"), ("float8_e5m2", "F8_E5M2")):
        if hasattr(torch, attr):
            names[getattr(torch, attr)] = name
    return names


def _load(torch: Any, file: Path, **kw: Any) -> Any:
    try:
        return torch.load(file, weights_only=True, **kw)
    except pickle.UnpicklingError as e:
        raise CheckpointError(_refusal(file, e)) from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{file}: not a readable PyTorch checkpoint ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}); the file is truncated or not torch.save "
                              "output") from None


def _refusal(file: Path, error: BaseException) -> str:
    """Why a file that torch.load(weights_only=True) refuses is not read, and what to do instead.

    torch's own message advises loading with weights_only=False, which runs whatever code the pickle names: it is
    not repeated. Only the object it names (`Unsupported global: GLOBAL module.Name`) is kept, so that the user
    sees what the file holds besides tensors.
    """
    found = re.search(r"GLOBAL ([\w.]+)", str(error))
    holds = f"it pickles {found[1]}, which weights_only does not allow" if found else "it pickles more than tensors"
    return (f"{file}: not a plain state dict that loads with torch.load(weights_only=True) ({holds}); normscope "
            "never unpickles other objects, since unpickling can run code. Convert it with a tool you trust: where "
            "you trust the file, load it yourself and save its tensors with safetensors.torch.save_file, then give "
            "normscope the .safetensors file")


def _state_dict(obj: Any, file: Path, torch: Any) -> dict[str, Any]:
    """name -> tensor: the state dict itself, one nested under a usual key, or every tensor found."""
    found = _find_state_dict(obj, file, torch)
    for name in found:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: pickle stores it, no report can print or store it
            raise CheckpointError(f"{file}: tensor name {ascii(name)[:80]} holds a lone surrogate "
                                  "(\\ud800-\\udfff), which is not valid Unicode") from None
    return found


def _find_state_dict(obj: Any, file: Path, torch: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return {str(k): v for k, v in obj.items()}
        for key in _NESTED_KEYS:
            if isinstance(obj.get(key), dict):
                found = _find_state_dict(obj[key], file, torch)
                if found:
                    return found
    flat: dict[str, Any] = {}

    def walk(x: Any, prefix: str, depth: int) -> None:
        if isinstance(x, torch.Tensor):
            flat[prefix] = x
        elif isinstance(x, dict):
            if depth > MAX_DEPTH:  # pickles nest without recursing; walking them would
                raise CheckpointError(f"{file}: dicts nested more than {MAX_DEPTH} levels deep; not a state dict")
            for k, v in x.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k), depth + 1)

    walk(obj, "", 1)
    if not flat:
        raise CheckpointError(f"{file}: holds no tensors (a {type(obj).__name__}); expected a state dict")
    return flat


def _streamable_zip(file: Path) -> bool:
    """A zip checkpoint, little-endian, whose storage records are stored uncompressed."""
    try:
        with zipfile.ZipFile(file) as z:
            infos = z.infolist()
            order = [i for i in infos if i.filename.endswith("/byteorder")]
            if order and z.read(order[0]).strip() != b"little":
                return False
            return all(i.compress_type == zipfile.ZIP_STORED for i in infos if "/data/" in i.filename)
    except (zipfile.BadZipFile, OSError):
        return False


def scan_torch_file(file: Path) -> tuple[list[TensorEntry], dict[str, np.ndarray]]:
    """Entries of one torch file: located ones read from the file, the rest as bytes kept in memory.

    Returns:
        (entries in file order, {name: uint8 bytes} for the tensors that are held in memory).

    Raises:
        MissingExtraError: torch is not installed. CheckpointError: not a weights-only state dict.
    """
    torch = _import_torch()
    names = _dtype_names(torch)
    streamable = _streamable_zip(file)
    meta = _state_dict(_load(torch, file, map_location="meta"), file, torch) if streamable else {}
    entries, resident_names = [], []
    for name, t in meta.items():
        if t.dtype not in names:
            raise CheckpointError(f"{file}: tensor {name!r} has dtype {t.dtype}, which normscope cannot read")
        offset = getattr(t.untyped_storage(), "_checkpoint_offset", None)
        if offset is None or not t.is_contiguous():
            resident_names.append(name)
            continue
        nbytes = t.numel() * t.element_size()
        entries.append(TensorEntry(name, tuple(t.shape), names[t.dtype], file,
                                   int(offset) + t.storage_offset() * t.element_size(), nbytes))
    resident: dict[str, np.ndarray] = {}
    if resident_names or not streamable:
        kw = {"mmap": True} if streamable else {}
        loaded = _state_dict(_load(torch, file, map_location="cpu", **kw), file, torch)
        for name in resident_names or list(loaded):
            t = loaded[name]
            if t.dtype not in names:
                raise CheckpointError(f"{file}: tensor {name!r} has dtype {t.dtype}, which normscope cannot read")
            raw = t.detach().contiguous().reshape(-1).view(torch.uint8).numpy()
            resident[name] = raw
            entries.append(TensorEntry(name, tuple(t.shape), names[t.dtype], file, 0, raw.size))
    entries.sort(key=lambda e: (e.name in resident, e.offset))
    return entries, resident


class TorchCheckpoint(PlainDecoding, Checkpoint):
    """A PyTorch state dict file, or an HF directory of them (`pytorch_model.bin` or an index of shards)."""

    def clone(self) -> None:
        return None  # tensors loaded whole live in this reader: reopen instead

    format = "torch"

    def __init__(self, path: Path, files: tuple[Path, ...], entries: list[TensorEntry],
                 config: dict[str, Any] | None, metadata: dict[str, Any], resident: dict[str, np.ndarray]):
        super().__init__(path, files, entries, config, metadata)
        self._resident = resident

    @classmethod
    def open_file(cls, file: Path) -> TorchCheckpoint:
        entries, resident = scan_torch_file(file)
        return cls(file, (file,), entries, load_config(file.parent), {}, resident)

    @classmethod
    def open_dir(cls, directory: Path) -> TorchCheckpoint:
        index = directory / TORCH_INDEX_NAME
        if index.is_file():
            weight_map = read_weight_map(index, TORCH_INDEX_NAME)
            shards = list(dict.fromkeys(weight_map.values()))
            files = []
            for shard in shards:
                if Path(shard).name != shard or not (directory / shard).is_file():
                    raise CheckpointError(f"{index}: names shard {shard!r}, which is missing from {directory}")
                files.append(directory / shard)
        else:
            files = [torch_weights_file(directory)]
        entries, resident = [], {}
        for f in files:
            e, r = scan_torch_file(f)
            entries += e
            resident.update(r)
        seen: dict[str, Path] = {}
        for e in entries:
            if e.name in seen:
                raise CheckpointError(f"{directory}: tensor {e.name!r} appears in both {seen[e.name].name} "
                                      f"and {e.file.name}")
            seen[e.name] = e.file
        return cls(directory, tuple(files), entries, load_config(directory), {}, resident)

    def _read_bytes(self, entry: TensorEntry, byte0: int, size: int) -> memoryview:
        held = self._resident.get(entry.name)
        if held is None:
            return super()._read_bytes(entry, byte0, size)
        return memoryview(held).toreadonly()[byte0:byte0 + size]

    def close(self) -> None:
        super().close()
        self._resident = {}


def torch_weights_file(directory: Path) -> Path:
    """The one state dict file of a directory without an index (pytorch_model.bin first)."""
    for name in ("pytorch_model.bin", "model.bin", "model.pt", "model.pth"):
        if (directory / name).is_file():
            return directory / name
    found = sorted(p for s in TORCH_SUFFIXES for p in directory.glob("*" + s)
                   if p.name not in ("training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise SourceNotFoundError(f"{directory}: no PyTorch weights (*.bin, *.pt, *.pth) in this directory")
    names = ", ".join(p.name for p in found[:4])
    raise SourceNotFoundError(f"{directory}: holds {len(found)} PyTorch files ({names}); name the one to read")
