"""Importance-matrix files written as llama.cpp's tools/imatrix/imatrix.cpp writes them.

`write_gguf_imatrix` follows IMatrixCollector::save_imatrix (gguf-py's writer: general.type = imatrix,
imatrix.datasets / chunk_count / chunk_size, per weight `<name>.in_sum2` F32 [n_per_row, n_mat] and
`<name>.counts` F32 [1, n_mat]); `write_dat_imatrix` follows save_imatrix_legacy byte for byte (entries in
sorted order, ncall = ceil(max count / chunk_size), values (sum / count) * ncall, 1 for an expert without
tokens, entries without any token skipped; then the chunk count and the dataset name).
"""

from __future__ import annotations

import struct
from pathlib import Path

import gguf
import numpy as np


def collector_stats(shapes: dict[str, tuple[int, int]], seed: int = 0, tokens: int = 512,
                    idle: dict[str, list[int]] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{name: (sums (n_mat, n_per_row) float32, counts (n_mat,) int64)} as the collector accumulates them:
    sums of x^2 over the tokens each expert saw. `idle`: experts no token reached, per name."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, (n_mat, n_per_row) in shapes.items():
        counts = rng.integers(tokens // 2, tokens, n_mat).astype(np.int64) if n_mat > 1 else np.array([tokens])
        for j in (idle or {}).get(name, []):
            counts[j] = 0
        scale = rng.lognormal(0, 1.5, n_per_row).astype(np.float32)
        sums = np.stack([((rng.standard_normal((max(int(c), 1), n_per_row)).astype(np.float32) * scale) ** 2)
                         .sum(axis=0) * (c > 0) for c in counts]).astype(np.float32)
        out[name] = (sums, counts)
    return out


def write_gguf_imatrix(path: Path, stats: dict[str, tuple[np.ndarray, np.ndarray]], *, chunk_count: int = 1,
                       chunk_size: int = 512, datasets: tuple[str, ...] = ("calibration.txt",)) -> Path:
    w = gguf.GGUFWriter(str(path), arch=None) if _arch_optional() else gguf.GGUFWriter(str(path), "imatrix")
    w.add_string("general.type", "imatrix")
    w.add_array("imatrix.datasets", list(datasets))
    w.add_uint32("imatrix.chunk_count", chunk_count)
    w.add_uint32("imatrix.chunk_size", chunk_size)
    for name in sorted(stats):
        sums, counts = stats[name]
        w.add_tensor(f"{name}.in_sum2", np.ascontiguousarray(sums, dtype=np.float32))
        w.add_tensor(f"{name}.counts", np.asarray(counts, dtype=np.float32).reshape(-1, 1))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _arch_optional() -> bool:
    import inspect

    p = inspect.signature(gguf.GGUFWriter.__init__).parameters.get("arch")
    return p is not None and p.default is not inspect.Parameter.empty


def write_dat_imatrix(path: Path, stats: dict[str, tuple[np.ndarray, np.ndarray]], *, chunk_count: int = 1,
                      chunk_size: int = 512, dataset: str = "calibration.txt") -> Path:
    stored = [n for n in sorted(stats) if np.any(np.asarray(stats[n][1]) != 0)]
    out = [struct.pack("<i", len(stored))]
    for name in stored:
        sums, counts = stats[name]
        counts = np.asarray(counts, dtype=np.int64)
        ncall = int((counts.max() + chunk_size - 1) // chunk_size)
        flat = np.asarray(sums, dtype=np.float32).reshape(-1)
        nval, nmat = flat.size, counts.size
        per = nval // nmat
        count = counts[np.arange(nval) // per].astype(np.float32)
        value = np.where(count == 0, np.float32(1), flat).astype(np.float32)
        count = np.where(count == 0, np.float32(1), count).astype(np.float32)
        tmp = (value / count * np.float32(ncall)).astype(np.float32)
        raw = name.encode()
        out += [struct.pack("<i", len(raw)), raw, struct.pack("<ii", ncall, nval), tmp.astype("<f4").tobytes()]
    out += [struct.pack("<i", chunk_count), struct.pack("<i", len(dataset.encode())), dataset.encode()]
    path.write_bytes(b"".join(out))
    return path


def dat_entry(name: bytes, ncall: int, values: np.ndarray) -> bytes:
    values = np.asarray(values, dtype="<f4")
    return struct.pack("<i", len(name)) + name + struct.pack("<ii", ncall, values.size) + values.tobytes()
