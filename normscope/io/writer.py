"""Writing checkpoints: safetensors files rewritten in place of their source's layout, copied and verified.

`rewrite_safetensors` copies a source file byte for byte (header, `__metadata__`, padding, every
tensor) except the tensors it is told to replace, whose bytes come from a producer of row chunks; so
an unchanged tensor is bit-for-bit the source's, and a file with nothing replaced is identical to it.
Memory is bounded by a chunk, not by a tensor. `encode` turns float values into a storage dtype the way
torch does (round to nearest, ties to even). Output directories are staged by `staging.StagedDirectory`.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CheckpointError, OutputError
from .checkpoint import TensorEntry
from .dtypes import numpy_dtype
from .safetensors_file import read_header

__all__ = ["FLOAT_DTYPES", "encode", "step_toward", "WrittenFile", "rewrite_safetensors", "copy_file",
           "hash_file", "verify_file", "CHUNK_BYTES"]

CHUNK_BYTES = 64 << 20  # raw bytes copied or hashed at once
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")  # what `encode` writes
_UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}

# A producer of one tensor's new bytes: arrays of its storage dtype, whole rows, in order.
Rows = Callable[[], Iterable[np.ndarray]]


def encode(values: np.ndarray, dtype: str) -> np.ndarray:
    """`values` in the storage dtype `dtype` (F64, F32, F16, BF16), rounded to nearest, ties to even.

    BF16 and F16 are rounded from float32, as torch rounds (a float64 input is first rounded to
    float32, as torch's double → bfloat16 cast does); the result equals torch's `.to(dtype)` bit for
    bit for every non-NaN float32. F32 and F64 are numpy casts (also round to nearest even).

    Raises:
        CheckpointError: `dtype` is not a float type normscope writes.

    Example:
        >>> encode(np.array([1.00390625], np.float32), "BF16").view(np.uint16)  # a tie: to even
        array([16256], dtype=uint16)
    """
    if dtype not in FLOAT_DTYPES:
        raise CheckpointError(f"cannot encode values as {dtype!r}; normscope writes {', '.join(FLOAT_DTYPES)}")
    values = np.asarray(values)
    if dtype in ("F16", "BF16"):
        values = values.astype(np.float32, copy=False)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow to ±inf and NaN are what torch gives too
        return values.astype(numpy_dtype(dtype))


def step_toward(stored: np.ndarray, up: np.ndarray | bool) -> np.ndarray:
    """The neighbouring representable value of each finite element of a float array (any of
    FLOAT_DTYPES): the next one toward +inf where `up`, toward -inf elsewhere (np.nextafter for bf16 too).

    Example:
        >>> step_toward(np.array([1.0], np.float32), False)[0] < 1.0
        True
    """
    stored = np.asarray(stored)
    udt = _UINT[stored.dtype.itemsize]
    bits = stored.view(udt)
    sign = udt(1 << (8 * stored.dtype.itemsize - 1))
    negative = (bits & sign) != 0
    zero = (bits & ~sign) == 0
    up = np.broadcast_to(np.asarray(up, bool), bits.shape)
    away = up != negative  # moving away from zero: magnitude + 1 ulp
    one = udt(1)
    out = np.where(away, bits + one, bits - one).astype(udt)
    out = np.where(zero, np.where(up, one, sign | one), out).astype(udt)  # ±0 → smallest subnormal of that side
    return out.view(stored.dtype)


@dataclass(frozen=True)
class WrittenFile:
    """One file as written: its size and sha256, and the sha256 of each tensor's bytes in it."""

    path: Path
    size: int
    sha256: str
    tensors: dict[str, str] = field(default_factory=dict)


def _header_end(file: Path) -> int:
    with open(file, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
    return 8 + n


class _Out:
    """An output file being written, hashed as a whole and per tensor."""

    def __init__(self, path: Path):
        self.f = open(path, "xb")  # never overwrite: the staging directory is new
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: memoryview | bytes, tensor_hash: hashlib._Hash | None = None) -> None:
        self.f.write(data)
        self.sha.update(data)
        if tensor_hash is not None:
            tensor_hash.update(data)
        self.size += len(data)

    def close(self) -> None:
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()


def _copy_range(src_fd: int, out: _Out, start: int, size: int, buf: bytearray,
                tensor_hash: hashlib._Hash | None = None) -> None:
    done = 0
    while done < size:
        n = min(len(buf), size - done)
        view = memoryview(buf)[:n]
        got = os.preadv(src_fd, [view], start + done)
        if got != n:
            raise CheckpointError(f"source ended early while copying bytes [{start + done}, {start + done + n})")
        out.write(view, tensor_hash)
        done += n


def rewrite_safetensors(source: Path, target: Path, entries: Sequence[TensorEntry], replace: Mapping[str, Rows],
                        chunk_bytes: int = CHUNK_BYTES) -> WrittenFile:
    """Write `target` as a copy of the safetensors file `source` whose tensors named in `replace` take
    the bytes their producers yield.

    Args:
        source: the safetensors file to copy (read only).
        target: the new file; must not exist.
        entries: the tensors of `source` (as `read_header` lists them).
        replace: tensor name -> producer of its new bytes: arrays of the tensor's storage dtype, whole
            rows in order, exactly its size in total.
        chunk_bytes: raw bytes copied at once.

    Returns:
        WrittenFile with the sha256 of the file and of every tensor's bytes as written.

    Raises:
        CheckpointError: a producer yields another dtype or another number of bytes than the tensor holds.

    Example:
        >>> rewrite_safetensors(src, dst, entries, {"w": lambda: [new_rows]})  # doctest: +SKIP
    """
    source, target = Path(source), Path(target)
    mine = sorted((e for e in entries if Path(e.file) == source), key=lambda e: e.offset)
    unknown = set(replace) - {e.name for e in mine}
    if unknown:
        raise CheckpointError(f"{source}: no tensor {sorted(unknown)[0]!r} to replace in this file")
    size = source.stat().st_size
    buf = bytearray(max(1, min(chunk_bytes, size)))
    fd = os.open(source, os.O_RDONLY)
    out = _Out(target)
    hashes: dict[str, str] = {}
    try:
        pos = _header_end(source)
        _copy_range(fd, out, 0, pos, buf)  # length, header JSON (with __metadata__) and its padding, verbatim
        for e in mine:
            _copy_range(fd, out, pos, e.offset - pos, buf)  # bytes between tensors, if any
            h = hashlib.sha256()
            if e.name in replace:
                _write_rows(out, e, replace[e.name](), h)
            else:
                _copy_range(fd, out, e.offset, e.nbytes, buf, h)
            hashes[e.name] = h.hexdigest()
            pos = e.offset + e.nbytes
        _copy_range(fd, out, pos, size - pos, buf)
    finally:
        os.close(fd)
        out.close()
    return WrittenFile(target, out.size, out.sha.hexdigest(), hashes)


def _write_rows(out: _Out, e: TensorEntry, chunks: Iterable[np.ndarray], h: hashlib._Hash) -> None:
    dt = numpy_dtype(e.dtype)
    written = 0
    for chunk in chunks:
        arr = np.ascontiguousarray(chunk)
        if arr.dtype != dt:
            raise CheckpointError(f"tensor {e.name!r}: producer gave {arr.dtype} values for a {e.dtype} tensor")
        if written + arr.nbytes > e.nbytes:
            raise CheckpointError(f"tensor {e.name!r}: producer gave more than its {e.nbytes} bytes")
        out.write(memoryview(arr.reshape(-1).view(np.uint8)), h)  # bf16 has no buffer protocol: its bytes
        written += arr.nbytes
    if written != e.nbytes:
        raise CheckpointError(f"tensor {e.name!r}: producer gave {written} of its {e.nbytes} bytes")


def copy_file(source: Path, target: Path, chunk_bytes: int = CHUNK_BYTES) -> WrittenFile:
    """Copy a regular file's contents (following symlinks) to a new file, fsynced; returns its size and sha256.

    Raises:
        OutputError: `source` is not a regular file (a FIFO, socket or device, whose read could block or never end).
    """
    # O_NONBLOCK: opening a FIFO waits for a writer; with it the open returns and fstat refuses the FIFO
    fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OutputError(f"{source}: not a regular file; only regular files are copied")
    except BaseException:
        os.close(fd)
        raise
    size = st.st_size
    buf = bytearray(max(1, min(chunk_bytes, size)))
    out = _Out(Path(target))
    try:
        _copy_range(fd, out, 0, size, buf)
    finally:
        os.close(fd)
        out.close()
    return WrittenFile(Path(target), out.size, out.sha.hexdigest())


def hash_file(path: Path, entries: Sequence[TensorEntry] = (), chunk_bytes: int = CHUNK_BYTES) -> WrittenFile:
    """sha256 of a file and of the byte ranges of `entries` in it, in one sequential read."""
    path = Path(path)
    ranges = sorted((e.offset, e.offset + e.nbytes, e.name) for e in entries)
    sha, tensors = hashlib.sha256(), {name: hashlib.sha256() for _, _, name in ranges}
    buf = bytearray(max(1, min(chunk_bytes, path.stat().st_size)))
    pos = 0
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            view = memoryview(buf)[:n]
            sha.update(view)
            for begin, end, name in ranges:
                lo, hi = max(begin, pos), min(end, pos + n)
                if lo < hi:
                    tensors[name].update(view[lo - pos:hi - pos])
            pos += n
    return WrittenFile(path, pos, sha.hexdigest(), {k: v.hexdigest() for k, v in tensors.items()})


def verify_file(written: WrittenFile, source_entries: Sequence[TensorEntry] | None = None,
                chunk_bytes: int = CHUNK_BYTES) -> None:
    """Re-read a written file and check it against what was written.

    Checks the size and sha256 of the file and of every tensor; with `source_entries` (a safetensors
    source) also that the new header lists the same tensors with the same dtypes, shapes and offsets.

    Raises:
        OutputError: the file does not read back as written.
    """
    path = written.path
    entries: Sequence[TensorEntry] = ()
    if source_entries is not None:
        try:
            entries, _ = read_header(path)
        except CheckpointError as e:
            raise OutputError(f"{path}: written file does not parse back ({e}); nothing was published") from None
        layout = sorted((e.name, e.dtype, e.shape, e.offset, e.nbytes) for e in entries)
        expected = sorted((e.name, e.dtype, e.shape, e.offset, e.nbytes) for e in source_entries)
        if layout != expected:
            raise OutputError(f"{path}: written header differs from the source's; nothing was published")
    got = hash_file(path, entries, chunk_bytes)
    if got.size != written.size or got.sha256 != written.sha256:
        raise OutputError(f"{path}: reads back {got.size} bytes with another sha256 than the {written.size} "
                          "written; the disk or filesystem lost data; nothing was published")
    for name, digest in written.tensors.items():
        if got.tensors.get(name) != digest:
            raise OutputError(f"{path}: tensor {name!r} reads back differently from what was written; "
                              "nothing was published")
