"""The legacy and k-quant kernels (q_legacy.c, q_k.c, qsearch.c) against llama.cpp on the inputs their
shortcuts must get right.

The C finds extremes in lanes (exact in any order, except the sign of a zero or of a tied |max|, which
it takes from the first such value as ggml's running loop does), runs make_qkx2/3's candidates 8 at a
time (restarting after a winner that moves the min), Q3_K's 16 sub-blocks side by side with masked
updates, and rounds Q8_0 without roundf: these tests feed the cases where a shortcut would show,
with and without importance matrices, at several row lengths, and check dequantization on arbitrary
bytes.
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ggml_ref import ggml_quantize
from normscope import _kernels

TABLE = {name: (block, size, imatrix, offset) for name, _, block, size, imatrix, offset, _ in _kernels.qtypes()}
LEGACY = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]
KQUANTS = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]
TYPES = LEGACY + KQUANTS
USED, IGNORED = 1, 0


def ours(x: np.ndarray, name: str, imatrix: np.ndarray | None = None) -> np.ndarray:
    block, size, _, _ = TABLE[name]
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.zeros((x.shape[0], x.shape[1] // block * size), np.uint8)
    _kernels.quantize(name, x, out, x.shape[1], imatrix)
    return out


def check(x: np.ndarray, name: str, imatrix: np.ndarray | None = None) -> None:
    x = np.ascontiguousarray(x, dtype=np.float32)
    got, want = ours(x, name, imatrix), ggml_quantize(x, name, imatrix)
    bad = np.nonzero((got != want).any(axis=1))[0]
    assert bad.size == 0, f"{name}: rows {bad[:8].tolist()} differ from ggml"


def test_table_entries():
    """Policies and fp16 scale offsets as ggml_quantize_chunk and ggml-common.h have them."""
    offsets = {"Q4_0": 0, "Q4_1": 0, "Q5_0": 0, "Q5_1": 0, "Q8_0": 0, "Q2_K": 80, "Q3_K": 108, "Q4_K": 0,
               "Q5_K": 0, "Q6_K": 208}
    for name in TYPES:
        block, size, policy, offset = TABLE[name]
        assert policy == (IGNORED if name == "Q8_0" else USED), name
        assert offset == offsets[name], name
        assert (block, size) == gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[name]], name


def special_rows(n: int, seed: int) -> np.ndarray:
    """Rows where an order-dependent shortcut would differ from ggml's sequential loops."""
    rng = np.random.default_rng(seed)
    g = lambda: rng.normal(0, 1, n)  # noqa: E731
    rows = []
    r = g(); r[5] = np.inf; rows.append(r)                                     # an infinity
    r = g(); r[n - 1] = -np.inf; rows.append(r)
    r = g(); r[31] = np.nan; rows.append(r)                                    # NaN ending a 32-block
    r = g(); r[::3] = np.nan; rows.append(r)
    rows.append(np.full(n, np.nan))
    r = g(); r[n // 4:n // 4 + 40] = 3e38; r[n // 2:n // 2 + 10] = -3e38; rows.append(r)  # range overflows
    r = np.zeros(n); r[1::2] = -0.0; rows.append(r)                            # signed zeros only
    r = np.where(rng.random(n) < 0.5, 0.0, -0.0); r[::7] = g()[::7]; rows.append(r)
    r = np.abs(g()); r[rng.random(n) < 0.3] = -0.0; r[rng.random(n) < 0.1] = 0.0; rows.append(r)  # min is a zero
    r = -np.abs(g()); r[rng.random(n) < 0.3] = 0.0; r[rng.random(n) < 0.1] = -0.0; rows.append(r)  # max is a zero
    rows.append(rng.choice([-2.0, 2.0, 1.0, -1.0, 0.5], n))                     # +-max ties in every block
    r = rng.choice([-3.0, 3.0], n); r[::2] = g()[::2]; rows.append(r)
    rows.append(rng.choice([0.5, -0.5, 1.5, -2.5, 2.5, 126.5], n))              # rounding ties
    rows.append(rng.normal(0, 1e-39, n))                                       # subnormals
    rows.append(rng.normal(0, 1e-30, n))
    rows.append(g() * (rng.random(n) < 0.1))                                   # mostly zero sub-blocks
    r = g(); r[: n // 2] = 0.0; rows.append(r)
    rows.append(np.round(rng.normal(0, 3, n)) * 0.25)                           # values on a grid
    rows.append(np.full(n, -7.25))
    rows.append(rng.standard_t(1.2, n) * 1e3)
    return np.stack(rows).astype(np.float32)


def imatrices(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    w = rng.lognormal(0, 2, n)
    w[rng.random(n) < 0.2] = 0.0
    w[:32] = 0.0           # whole zero-weight sub-blocks
    w[256:272] = 0.0
    return [w.astype(np.float32), np.full(n, 1e-30, np.float32), np.full(n, 1e30, np.float32),
            rng.uniform(0, 1, n).astype(np.float32)]


@pytest.mark.parametrize("name", TYPES)
@pytest.mark.parametrize("n", [256, 512])
def test_special_rows(name, n):
    with np.errstate(all="ignore"):
        x = special_rows(n, n)
        for row in x:  # one row at a time: a legacy weighted row's sigma2 is its own
            check(row[None], name)
            if TABLE[name][2] == USED:
                for w in imatrices(n, 1):
                    check(row[None], name, w)


def random_rows(rng: np.random.Generator, rows: int, n: int) -> list[np.ndarray]:
    return [rng.normal(0, 1, (rows, n)), rng.standard_t(2, (rows, n)), rng.uniform(-1, 1, (rows, n)),
            rng.normal(0, 1, (rows, n)) * 10.0 ** rng.integers(-8, 8, (rows, n)), rng.exponential(1, (rows, n)),
            np.round(rng.normal(0, 3, (rows, n))) * 0.25, rng.normal(0, 1, (rows, n)) * (rng.random((rows, n)) < 0.1)]


@pytest.mark.parametrize("name", TYPES)
def test_random_rows_several_lengths(name):
    """Several rows per call with one imatrix, rows of 256 to 2048 (and short legacy rows, whose weighted
    sigma2 spans the row)."""
    rng = np.random.default_rng(7)
    lengths = [256, 768, 2048] + ([32, 96] if name in LEGACY else [])
    for n in lengths:
        w = rng.lognormal(0, 1.5, n).astype(np.float32) * (rng.random(n) > 0.05)
        for x in random_rows(rng, 8, n):
            check(x, name)
            if TABLE[name][2] == USED:
                check(x, name, w.astype(np.float32))


def test_q8_0_nan_resets_the_running_max():
    """ggml's MAX(amax, |v|) forgets the max before a NaN and is NaN when the NaN is last (fmaxf would not)."""
    x = np.random.default_rng(0).normal(0, 1, (4, 64)).astype(np.float32)
    x[0, 31] = np.nan
    x[1, 5] = np.nan
    x[2, 40] = np.nan
    x[2, 41] = 50.0
    x[3, 0] = np.nan
    check(x, "Q8_0")


SPECIAL = st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.5, 1e-40, -1e-40, 3e38, -3e38, 65504.0, 1e-8])


@settings(max_examples=30, deadline=None)
@given(x=hnp.arrays(np.float32, (2, 256), elements=st.one_of(SPECIAL, st.floats(-100, 100, width=32))),
       name=st.sampled_from(TYPES), weighted=st.booleans(), seed=st.integers(0, 100))
def test_hypothesis_special_values(x, name, weighted, seed):
    w = imatrices(256, seed)[0] if weighted and TABLE[name][2] == USED else None
    with np.errstate(all="ignore"):
        check(x, name, w)


@pytest.mark.parametrize("name", TYPES)
def test_dequantize_arbitrary_bytes(name):
    """Every bit pattern a block can hold (NaN and infinite fp16 scales included) reads as gguf-py reads it."""
    block, size, _, _ = TABLE[name]
    raw = np.random.default_rng(3).integers(0, 256, (64, 8 * size), dtype=np.uint8)
    y = np.zeros((64, 8 * block), np.float32)
    _kernels.dequantize(name, raw, y, 8 * block)
    with np.errstate(all="ignore"):
        want = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[name]).reshape(y.shape).astype(np.float32)
    nan = np.isnan(want)
    assert np.array_equal(nan, np.isnan(y))
    assert np.array_equal(y[~nan].view(np.uint32), want[~nan].view(np.uint32))
