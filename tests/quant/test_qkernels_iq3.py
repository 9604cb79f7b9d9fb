"""IQ3_XXS and IQ3_S: the search tables built from gguf-py's grid equal ggml's, and the corners of the
quantizers that the shared kernel tests reach only by chance.

ggml's tables (iq3xs_init_impl's grid, map and neighbour lists) are static in libggml-base, so they are
read from the oracle's memory after ggml_quantize_init: the two {grid, map, neighbours} pointer triples
of its iq3_data array are found in the library's writable segment by the grid bytes they point to.
Ours are dumped by a small program that includes q_iq3.c and runs its init on the same published points.
"""

from __future__ import annotations

import ctypes
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from ggml_ref import _lib, ggml_quantize
from normscope import _kernels
from normscope.upstream import grid_points, load_grid

KERNELS = Path(__file__).resolve().parents[2] / "normscope" / "kernels"
TYPES = {"IQ3_XXS": (18, 256, [4, 12, 20, 28, 36, 44, 52, 62]), "IQ3_S": (21, 512, list(range(1, 16, 2)))}

HARNESS = r"""
#include <stdio.h>
#include "q_iq3.c"
/* argv[1]: 0 (IQ3_XXS) or 1 (IQ3_S); stdin: the grid bytes. Prints init's result, then (on success)
 * writes to stdout: the grid as ggml packs it (int8 2l+1 per coordinate), map, neighbours. */
int main(int argc, char **argv) {
    static uint8_t data[1 << 16];
    const int which = argv[1][0] - '0';
    const size_t n = fread(data, 1, sizeof data, stdin);
    const int rc = (which ? NS_QTYPE_IQ3_S : NS_QTYPE_IQ3_XXS).init(data, (int64_t)n);
    fwrite(&rc, sizeof rc, 1, stdout);
    if (rc == 0) {
        const iq3_grid *g = &grids[which];
        for (int i = 0; i < 4 * g->n_points; i++) {
            const int8_t v = (int8_t)g->q[i];
            fwrite(&v, 1, 1, stdout);
        }
        fwrite(g->map, sizeof(int32_t), 4096, stdout);
        fwrite(g->neighbours, sizeof(uint16_t), (size_t)g->n_neighbours, stdout);
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("iq3")
    (d / "h.c").write_text(HARNESS)
    cc = (sysconfig.get_config_var("CC") or "cc").split()
    subprocess.run([*cc, "-O1", "-I", str(KERNELS), str(d / "h.c"), "-o", str(d / "h"), "-lm"], check=True)
    return d / "h"


def run_init(harness: Path, which: int, data: bytes) -> tuple[int, bytes]:
    out = subprocess.run([str(harness), str(which)], input=data, capture_output=True, check=True).stdout
    return int(np.frombuffer(out[:4], np.int32)[0]), out[4:]


def split_tables(raw: bytes, n_points: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    grid = np.frombuffer(raw[:4 * n_points], np.int8).reshape(n_points, 4)
    kmap = np.frombuffer(raw[4 * n_points:4 * n_points + 4 * 4096], np.int32)
    neighbours = np.frombuffer(raw[4 * n_points + 4 * 4096:], np.uint16)
    return grid, kmap, neighbours


def packed_grid(name: str) -> np.ndarray:
    """gguf-py's points as iq3xs_init_impl's the_grid holds them: 2l+1 for level l."""
    values = TYPES[name][2]
    return (2 * np.vectorize(values.index)(grid_points(name).astype(int)) + 1).astype(np.int8)


def _mappings() -> list[tuple[int, int, str, str]]:
    rows = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split()
        start, end = (int(v, 16) for v in parts[0].split("-"))
        rows.append((start, end, parts[1], parts[5] if len(parts) > 5 else ""))
    return rows


def ggml_tables() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """iq3xs_init_impl's (grid, map, neighbours) for both sizes, read from llama.cpp's memory."""
    lib = _lib()
    for ggml_type, _, _ in TYPES.values():
        lib.ggml_quantize_init(ggml_type)
    maps = _mappings()
    readable = [(s, e) for s, e, perms, _ in maps if perms.startswith("r")]

    def ok(p: int, size: int) -> bool:
        return any(s <= p and p + size <= e for s, e in readable)

    # the library's writable segments and the anonymous .bss mapping right after them
    regions = []
    for i, (s, e, perms, path) in enumerate(maps):
        if "libggml-base" in path and "w" in perms:
            regions.append((s, e))
            if i + 1 < len(maps) and maps[i + 1][3] == "" and maps[i + 1][0] == e:
                regions.append(maps[i + 1][:2])
    want = [packed_grid("IQ3_XXS").tobytes(), packed_grid("IQ3_S").tobytes()]
    for s, e in regions:
        words = np.frombuffer(ctypes.string_at(s, e - s), np.uint64)
        for i in np.flatnonzero(words[:-5]):
            p = [int(v) for v in words[i:i + 6]]
            if all(ok(v, 8) for v in p) and ok(p[0], len(want[0])) and ok(p[3], len(want[1])) \
                    and ctypes.string_at(p[0], len(want[0])) == want[0] \
                    and ctypes.string_at(p[3], len(want[1])) == want[1]:
                out = {}
                for name, (grid_p, map_p, nb_p) in zip(TYPES, (p[0:3], p[3:6])):
                    kmap = np.frombuffer(ctypes.string_at(map_p, 4 * 4096), np.int32)
                    last = int(-kmap.min() - 1)  # the last list's offset
                    count = np.frombuffer(ctypes.string_at(nb_p + 2 * last, 2), np.uint16)[0]
                    neighbours = np.frombuffer(ctypes.string_at(nb_p, 2 * (last + 1 + count)), np.uint16)
                    n_points = TYPES[name][1]
                    grid = np.frombuffer(ctypes.string_at(grid_p, 4 * n_points), np.int8).reshape(n_points, 4)
                    out[name] = (grid, kmap.copy(), neighbours.copy())
                return out
    pytest.fail("iq3_data not found in libggml-base's memory")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads ggml's tables through /proc/self/maps")
def test_tables_equal_ggmls(harness):
    theirs = ggml_tables()
    for which, name in enumerate(TYPES):
        rc, raw = run_init(harness, which, grid_points(name).tobytes())
        assert rc == 0
        grid, kmap, neighbours = split_tables(raw, TYPES[name][1])
        assert np.array_equal(grid, theirs[name][0]), name
        assert np.array_equal(kmap, theirs[name][1]), name
        assert np.array_equal(neighbours, theirs[name][2]), name


def test_init_refuses_other_grids(harness):
    for which, name in enumerate(TYPES):
        points = grid_points(name)
        assert run_init(harness, which, points.tobytes())[0] == 0
        assert run_init(harness, which, points.tobytes()[:-4])[0] == -1        # a point short
        assert run_init(harness, which, points.tobytes() + b"\4\4\4\4")[0] == -1  # a point more
        bad = points.copy()
        bad[7, 2] = 2                                                           # not a level's value
        assert run_init(harness, which, bad.tobytes())[0] == -1
        bad = points.copy()
        bad[7] = bad[8]                                                         # a point twice
        assert run_init(harness, which, bad.tobytes())[0] == -1
    other = grid_points("IQ3_S").tobytes()
    assert run_init(harness, 0, other)[0] == -1  # IQ3_S's points (twice as many, other values) for IQ3_XXS


def ours(x: np.ndarray, name: str, w: np.ndarray | None = None) -> np.ndarray:
    load_grid(name)
    size = {"IQ3_XXS": 98, "IQ3_S": 110}[name]
    out = np.zeros((x.shape[0], x.shape[1] // 256 * size), np.uint8)
    _kernels.quantize(name, np.ascontiguousarray(x, np.float32), out, x.shape[1], w)
    return out


@pytest.mark.parametrize("name", TYPES)
def test_quiet_groups(name):
    """32-value groups of zeros or tiny values between normal ones: IQ3_XXS skips a group below 1e-8,
    IQ3_S only an all-zero one, and then writes the next group's indices and signs in its place."""
    rng = np.random.default_rng(5)
    x = rng.normal(0, 0.05, (6, 1024)).astype(np.float32)
    x[0, 32:64] = 0
    x[1, 0:32] = 0
    x[1, 224:256] = 0
    x[2, 64:96] = 1e-9
    x[3, 96:128] = -0.0
    x[4, 256:512] = 0
    x[4, 512:544] = 1e-30
    x[5, ::2] = 0
    for w in (None, rng.lognormal(0, 1, 1024).astype(np.float32)):
        assert np.array_equal(ours(x, name, w), ggml_quantize(x, name, w))


@pytest.mark.parametrize("name", TYPES)
def test_odd_importance(name):
    """Importance weights that are all zero (no scale is ever accepted), or zero on a whole group."""
    rng = np.random.default_rng(6)
    x = rng.normal(0, 0.05, (3, 512)).astype(np.float32)
    w = rng.lognormal(0, 1, 512).astype(np.float32)
    w[:64] = 0
    for weights in (np.zeros(512, np.float32), w):
        assert np.array_equal(ours(x, name, weights), ggml_quantize(x, name, weights))
