"""The lattice types of normscope/kernels/q_iq2.c and q_iq1.c beyond test_qkernels.py's checks.

The search tables the kernels derive from gguf-py's published grid points (iqgrid.c) equal, array for
array, the ones ggml's iq2xs_init_impl builds inside llama.cpp's libggml-base: read from that library's
memory after ggml_quantize_init. The sign table rule equals ggml's ksigns_iq2xs. Rows full of ties (the
IQ1 types sort values with qsort, and ties then depend on its order) quantize to ggml's bytes. init
refuses what is not its grid.
"""

from __future__ import annotations

import ctypes
import os
import struct
from functools import cache
from pathlib import Path

import gguf
import numpy as np
import pytest

from ggml_ref import _lib, ggml_quantize
from normscope import _kernels
from normscope.upstream import grid_points, load_grid

MAP_SIZE = 43692
GRIDS = {256: "IQ2_XXS", 512: "IQ2_XS", 2048: "IQ1_S", 1024: "IQ2_S"}  # ggml's iq2_data[0..3], in order
LATTICE = ["IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ1_S", "IQ1_M"]
TABLE = {row[0]: row for row in _kernels.qtypes()}
for _name in LATTICE:
    load_grid(_name)


def ours(x: np.ndarray, name: str, imatrix: np.ndarray | None = None) -> np.ndarray:
    _, _, block, size, *_ = TABLE[name]
    out = np.zeros((x.shape[0], x.shape[1] // block * size), np.uint8)
    _kernels.quantize(name, np.ascontiguousarray(x, np.float32), out, x.shape[1], imatrix)
    return out


# ---- our tables, through the extension's exported ns_iqgrid_tables ---------------------------------------

@cache
def _ext() -> ctypes.CDLL:
    lib = ctypes.CDLL(_kernels.__file__)  # the loaded module itself: dlopen hands back the same handle
    p = ctypes.POINTER(ctypes.c_void_p)
    lib.ns_iqgrid_tables.argtypes = [ctypes.c_int, p, p, p, ctypes.POINTER(ctypes.c_int64)]
    lib.ns_iqgrid_init.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int64, ctypes.c_int, ctypes.c_int,
                                   ctypes.c_char_p]
    return lib


def our_tables(n: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    grid, map_, nb, count = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_int64()
    assert _ext().ns_iqgrid_tables(n, ctypes.byref(grid), ctypes.byref(map_), ctypes.byref(nb),
                                   ctypes.byref(count)) == 0
    return (ctypes.string_at(grid.value, 8 * n),
            np.frombuffer(ctypes.string_at(map_.value, 4 * MAP_SIZE), np.int32),
            np.frombuffer(ctypes.string_at(nb.value, 2 * count.value), np.uint16))


# ---- ggml's tables, found in libggml-base's memory -------------------------------------------------------

def _read(addr: int, n: int) -> bytes | None:
    """n bytes at addr, or None when they are not all mapped readable: read through /proc/self/mem, which
    answers an unmapped address with an error instead of a crash (no wild reads, and no reliance on how the
    kernel happens to split the heap into mappings)."""
    try:
        with open("/proc/self/mem", "rb", buffering=0) as mem:
            data = os.pread(mem.fileno(), n, addr)
    except (OSError, OverflowError, ValueError):
        return None
    return data if len(data) == n else None


def _data_segment(path: str) -> tuple[int, int]:
    """Load address and size of libggml-base's writable PT_LOAD segment (.data and .bss)."""
    raw = Path(path).read_bytes()
    assert raw[:4] == b"\x7fELF" and raw[4] == 2, "64-bit ELF expected"
    phoff, = struct.unpack_from("<Q", raw, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", raw, 0x36)
    real = str(Path(path).resolve())
    base = min(int(line.split("-")[0], 16) for line in Path("/proc/self/maps").read_text().splitlines()
               if line.endswith(real) and int(line.split()[2], 16) == 0)
    for i in range(phnum):
        p_type, p_flags, _, p_vaddr, _, _, p_memsz, _ = struct.unpack_from("<IIQQQQQQ", raw, phoff + i * phentsize)
        if p_type == 1 and p_flags & 2:
            return base + p_vaddr, p_memsz
    raise AssertionError("no writable segment")


@cache
def ggml_tables() -> dict[int, tuple[bytes, np.ndarray, np.ndarray]]:
    """ggml's iq2_data[4] after ggml_quantize_init of every lattice type: for each grid size, (grid, map,
    neighbours). Found as 12 words in libggml-base's data segment whose first pointer holds our 256-point
    grid; everything is compared, so a wrong find fails rather than passes."""
    lib = _lib()
    for name in LATTICE:
        lib.ggml_quantize_init(int(gguf.GGMLQuantizationType[name]))
    path = next(p for p in (Path(lib._name).parent).glob("libggml-base.so*"))
    start, size = _data_segment(str(path))
    start8 = (start + 7) & ~7
    words = np.frombuffer(ctypes.string_at(start8, (start + size - start8) // 8 * 8), np.uint64)
    ours256 = our_tables(256)[0]
    for i in range(len(words) - 12):
        if not all(words[i:i + 12]):
            continue
        if _read(int(words[i]), 8 * 256) != ours256:
            continue
        found = {}
        for k, n in enumerate(GRIDS):
            grid_p, map_p, nb_p = (int(w) for w in words[i + 3 * k:i + 3 * k + 3])
            grid = _read(grid_p, 8 * n)
            map_ = _read(map_p, 4 * MAP_SIZE)
            length = len(our_tables(n)[2])
            nb = _read(nb_p, 2 * length)
            found[n] = (grid, None if map_ is None else np.frombuffer(map_, np.int32),
                        None if nb is None else np.frombuffer(nb, np.uint16))
        return found
    raise AssertionError("ggml's iq2_data not found in libggml-base's data segment")


@pytest.mark.parametrize("n", list(GRIDS))
def test_tables_equal_ggml(n):
    grid, map_, nb = our_tables(n)
    ref_grid, ref_map, ref_nb = ggml_tables()[n]
    assert grid == ref_grid, "packed grid"
    assert ref_map is not None and np.array_equal(map_, ref_map), "map (grid index, or -(offset + 1) of the neighbour list)"
    assert ref_nb is not None and np.array_equal(nb, ref_nb), "neighbour lists"


def test_sign_rule_is_ggmls_table():
    """ggml's ksigns_iq2xs (128 bytes in libggml-base's read-only data) is s | parity(s) << 7."""
    table = bytes(s | (bin(s).count("1") & 1) << 7 for s in range(128))
    path = next(Path(_lib()._name).parent.glob("libggml-base.so*"))
    assert table in path.read_bytes()


# ---- init refuses what is not its grid -------------------------------------------------------------------

def test_init_refuses_other_grids():
    lib = _ext()
    levels = bytes([8, 25, 43])
    good = grid_points("IQ2_XXS").tobytes()

    def fresh(data: bytes, n: int = 256) -> int:
        g = ctypes.create_string_buffer(256)  # a zeroed ns_iqgrid, larger than the struct
        return lib.ns_iqgrid_init(g, data, len(data), n, 2, levels)

    assert fresh(good[:-8]) == -1                                   # size
    assert fresh(bytes([9]) + good[1:]) == -1                       # a value off the levels
    assert fresh(good[8:16] + good[8:]) == -1                       # a repeated point
    assert fresh(grid_points("IQ2_XS").tobytes(), 256) == -1        # another grid's size

    class QType(ctypes.Structure):
        _fields_ = [("name", ctypes.c_char_p), ("ints", ctypes.c_int * 5), ("quantize", ctypes.c_void_p),
                    ("dequantize", ctypes.c_void_p), ("init", ctypes.c_void_p)]

    init_fn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_char_p, ctypes.c_int64)
    for name, other in (("IQ1_M", "IQ2_S"), ("IQ2_S", "IQ1_M"), ("IQ2_XXS", "IQ2_XS")):
        init = init_fn(QType.in_dll(lib, f"NS_QTYPE_{name}").init)
        right = grid_points(name).tobytes()
        assert init(right, len(right)) == 0                          # already built from these points
        wrong = grid_points(other).tobytes()
        assert init(wrong, len(wrong)) == -1
        flipped = bytes(reversed(right))
        assert init(flipped, len(flipped)) == -1                     # same size, other points


# ---- ties: the IQ1 types sort each sub-block's values ----------------------------------------------------

def tie_rows(seed: int) -> np.ndarray:
    """Rows of 1024 values from few distinct values per block, so sorted runs of equal values straddle
    the best splits; some blocks of +-0.0."""
    rng = np.random.default_rng(seed)
    rows = []
    for levels in ([-1.0, 0.0, 1.0], [-0.5, 0.25, 0.5, 2.0], [0.1, 0.1000001, -0.1], [3.0, -3.0], [0.0, -0.0, 1e-3]):
        rows.append(rng.choice(levels, 1024) * rng.choice([1.0, 1e-3, 7.5], 1024 // 16).repeat(16))
    rows.append(np.repeat(rng.normal(0, 1, 128), 8))        # runs of 8 equal values
    rows.append(np.tile(rng.normal(0, 1, 4), 256))          # one pattern of 4
    return np.stack(rows).astype(np.float32)


@pytest.mark.parametrize("name", LATTICE)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tied_rows(name, seed):
    x = tie_rows(seed)
    w = np.random.default_rng(seed).lognormal(0, 1.0, x.shape[1]).astype(np.float32)
    w_tied = np.repeat(w[::16], 16)  # equal weights within blocks too
    for imatrix in (w, w_tied, np.ones_like(w)):
        assert np.array_equal(ours(x, name, imatrix), ggml_quantize(x, name, imatrix))
    if TABLE[name][4] < 2:
        assert np.array_equal(ours(x, name), ggml_quantize(x, name))


# ---- non-finite values ----------------------------------------------------------------------------------

def nonfinite_rows(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (6, 512)).astype(np.float32)
    for r, (value, col) in enumerate([(np.nan, 0), (np.inf, 5), (-np.inf, 100), (np.nan, 255), (np.inf, 300),
                                      (-np.inf, 511)]):
        x[r, col] = value
    return x


@pytest.mark.parametrize("name", ["IQ2_XXS", "IQ1_S"])
def test_nonfinite_rows_as_ggml(name):
    """NaN and inf where ggml quantizes them (IQ2_XS, IQ2_S and IQ1_M abort on some: GGML_ASSERT)."""
    x = nonfinite_rows(0)
    for w in (np.ones(512, np.float32), np.random.default_rng(1).lognormal(0, 1, 512).astype(np.float32)):
        assert np.array_equal(ours(x, name, w), ggml_quantize(x, name, w))


@pytest.mark.parametrize("name", LATTICE)
def test_nonfinite_rows_do_not_crash(name):
    x = nonfinite_rows(1)
    w = np.ones(512, np.float32)
    first = ours(x, name, w)
    assert np.array_equal(ours(x, name, w), first)
    if TABLE[name][4] < 2:
        ours(x, name)
