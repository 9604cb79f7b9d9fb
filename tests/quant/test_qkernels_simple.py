"""Type-specific checks of the IQ4, ternary, FP4 and Q1_0 kernels (test_qkernels.py covers the common ones).

Against llama.cpp's ggml_quantize_chunk: rows at the edges of each type's scale encoding (E8M0 exponents
that wrap, UE4M3 rounding boundaries, E2M1 ties, inf/NaN, the largest floats), the whole float32 range
from hypothesis; that IQ4_NL's chunk path is not its _ref row function; that the imatrix policy in the
table is what ggml does; that the fp16 at `scale_offset` is the scale every value is a multiple of.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ggml_ref import _lib, _TypeTraits, adversarial, ggml_quantize
from normscope import _kernels

SIMPLE = ["IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0", "MXFP4", "NVFP4", "Q1_0"]
TABLE = {row[0]: row[1:6] for row in _kernels.qtypes()}
POLICY = {"IQ4_NL": 1, "IQ4_XS": 1, "TQ1_0": 0, "TQ2_0": 0, "MXFP4": 0, "NVFP4": 0, "Q1_0": 0}
OFFSET = {"IQ4_NL": 0, "IQ4_XS": 0, "TQ1_0": 52, "TQ2_0": 64, "MXFP4": -1, "NVFP4": -1, "Q1_0": 0}


def ours(x: np.ndarray, name: str, imatrix: np.ndarray | None = None) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    _, block, size, _, _ = TABLE[name]
    out = np.zeros((x.shape[0], x.shape[1] // block * size), np.uint8)
    _kernels.quantize(name, x, out, x.shape[1], imatrix)
    return out


def read_back(raw: np.ndarray, name: str, shape: tuple[int, int]) -> np.ndarray:
    y = np.zeros(shape, np.float32)
    _kernels.dequantize(name, raw, y, shape[1])
    return y


def ggml_row_ref(x: np.ndarray, name: str) -> np.ndarray:
    """ggml's quantize_row_<type>_ref (the type traits' from_float_ref) over the rows of x."""
    import gguf

    lib = _lib()
    lib.ggml_get_type_traits.restype = ctypes.POINTER(_TypeTraits)
    lib.ggml_get_type_traits.argtypes = [ctypes.c_int]
    fn = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)(
        lib.ggml_get_type_traits(int(gguf.GGMLQuantizationType[name])).contents.from_float_ref)
    x = np.ascontiguousarray(x, dtype=np.float32)
    _, block, size, _, _ = TABLE[name]
    out = np.zeros((x.shape[0], x.shape[1] // block * size), np.uint8)
    fn(x.ctypes.data, out.ctypes.data, x.size)
    return out


def fp4_near_midpoints(rng) -> np.ndarray:
    """256 values: in each 16 the block maximum 6 * 2^k, then E2M1 level midpoints * 2^k (either sign),
    each exact or one float away, where the level scans must break ties as ggml does."""
    mids = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0], np.float32)
    out = []
    for _ in range(16):
        scale = np.float32(2.0 ** rng.integers(-20, 20))
        v = mids[rng.integers(0, 7, 15)] * scale * rng.choice([-1, 1], 15).astype(np.float32)
        v = np.where(rng.random(15) < 0.5, v, np.nextafter(v, rng.choice([-np.inf, np.inf], 15).astype(np.float32)))
        out.append(np.concatenate([[6 * scale], v]))
    return np.concatenate(out)


def edge_rows() -> np.ndarray:
    """Rows of 256 values at the edges of the scale encodings."""
    rng = np.random.default_rng(7)
    f32 = np.finfo(np.float32)
    tiny = float(f32.tiny)  # 2^-126
    g = rng.normal(0, 1, 256)
    unit = (g.reshape(-1, 32) / np.abs(g.reshape(-1, 32)).max(axis=1, keepdims=True)).ravel()  # block max 1
    rows = [
        unit * tiny * np.repeat([1.5, 0.75, 1.0, 0.5, 1.99, 0.3, 0.01, 2.5], 32),  # MXFP4 exponents -1, -2, ... wrap
        g * 1e-42,                          # subnormal maxima
        g * float(f32.max) / 8,             # near the largest floats
        np.where(np.arange(256) % 32 == 5, float(f32.max), g),   # FLT_MAX in every block
        np.where(np.arange(256) % 64 == 9, np.inf, g),            # +inf in some blocks
        np.where(np.arange(256) % 64 == 9, -np.inf, g),
        np.where(np.arange(256) % 96 == 3, np.nan, g),            # NaN in some blocks
        np.tile([-0.0, 0.0, -0.0, 0.0], 64),                      # signed zeros
        np.tile([6.0, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0], 32),  # E2M1 midpoints at scale 1
        fp4_near_midpoints(rng),
        (np.arange(256) % 16 + 1) * 2.0 ** np.repeat(rng.integers(-16, 6, 16), 16),  # UE4M3 rounding of max/6
        np.linspace(-448 * 6 * 1.01, 448 * 6 * 1.01, 256),        # max/6 past UE4M3's 448
        np.linspace(-1, 1, 256) * 2.0 ** -9 * 6 * rng.uniform(0.5, 8, 256),  # UE4M3 subnormal scales
        np.tile([1.0, -1.0, 0.5, -0.5, 0.4999999, 1.5000001, -1.5], 37)[:256],  # TQ rounding ties
        rng.normal(0, 1, 256) * 10.0 ** rng.integers(-30, 30, 256),
    ]
    return np.stack(rows).astype(np.float32)


def test_table_policy_and_offsets():
    for name in SIMPLE:
        assert TABLE[name][3] == POLICY[name], name
        assert TABLE[name][4] == OFFSET[name], name


@pytest.mark.parametrize("name", SIMPLE)
def test_edge_rows(name):
    x = edge_rows()
    with np.errstate(all="ignore"):
        assert np.array_equal(ours(x, name), ggml_quantize(x, name))
        if POLICY[name]:
            w = np.random.default_rng(1).lognormal(0, 2, 256).astype(np.float32)
            assert np.array_equal(ours(x, name, w), ggml_quantize(x, name, w))


@pytest.mark.parametrize("name", SIMPLE)
def test_dequantize_edge_rows(name):
    """Dequantize of ggml's bytes for edge rows equals ggml's own to_float, bit for bit (NaN for NaN)."""
    from ggml_ref import ggml_dequantize

    x = edge_rows()
    with np.errstate(all="ignore"):
        raw = ggml_quantize(x, name)
    assert np.array_equal(read_back(raw, name, x.shape).view(np.uint32),
                          ggml_dequantize(raw, name, x.shape).view(np.uint32))


def test_iq4_level_choice_flips_at_the_midpoints():
    """q_iq4.c picks a level by counting midpoints <= x; ggml's best_index_int8 by bisection, then
    fl(x - v[i]) < fl(v[i+1] - x). That test is monotone in x, so it is enough that it flips at the
    midpoint: checked on the 4096 floats either side of each, and on random floats of every interval."""
    v = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], np.float32)
    mids = (v[:-1] + v[1:]) / np.float32(2)

    def ggml_best_index(x):
        i = np.clip(np.searchsorted(v, x, side="right") - 1, 0, 14)
        up = ~((x - v[i]) < (v[i + 1] - x))
        return np.where(x <= v[0], 0, np.where(x >= v[15], 15, i + up))

    rng = np.random.default_rng(0)
    for m in mids:
        bits = m.view(np.int32) + np.arange(-4096, 4097, dtype=np.int32) * (1 if m > 0 else -1)
        x = bits.view(np.float32)
        assert np.array_equal(ggml_best_index(x), (x[:, None] >= mids).sum(axis=1))
    x = rng.uniform(-130, 116, 1_000_000).astype(np.float32)
    assert np.array_equal(ggml_best_index(x), (x[:, None] >= mids).sum(axis=1))


def test_iq4_nl_chunk_path_is_not_the_ref_row_function():
    """quantize_iq4_nl (ggml_quantize_chunk, llama-quantize) searches 15 scales; quantize_row_iq4_nl_ref
    does not. The kernel writes the chunk path's bytes."""
    x = adversarial(0)
    chunk, row_ref = ggml_quantize(x, "IQ4_NL"), ggml_row_ref(x, "IQ4_NL")
    assert np.array_equal(ours(x, "IQ4_NL"), chunk)
    assert not np.array_equal(chunk, row_ref)
    # IQ4_XS's _ref is its chunk path without weights
    assert np.array_equal(ggml_row_ref(x, "IQ4_XS"), ggml_quantize(x, "IQ4_XS"))


@pytest.mark.parametrize("name", SIMPLE)
def test_policy_is_what_ggml_does(name):
    """IGNORED types: ggml writes the same bytes with and without an imatrix; USED: different ones."""
    x = adversarial(3)
    w = np.random.default_rng(3).lognormal(0, 1.5, x.shape[1]).astype(np.float32)
    same = np.array_equal(ggml_quantize(x, name, w), ggml_quantize(x, name))
    assert same == (POLICY[name] == 0)


@pytest.mark.parametrize("name", [n for n in SIMPLE if OFFSET[n] >= 0])
def test_scale_offset_is_the_block_scale(name):
    """Doubling the fp16 at scale_offset (exponent + 1) doubles every dequantized value of its block."""
    x = adversarial(4)[[0, 5, 6, 9]]
    _, block, size, _, off = TABLE[name]
    raw = ours(x, name)
    blocks = raw.reshape(-1, size).copy()
    d = blocks[:, off:off + 2].copy().view(np.uint16)[:, 0]
    exponent = (d >> 10) & 0x1F
    ok = (exponent > 0) & (exponent < 30)
    assert ok.any()
    d2 = np.where(ok, d + (1 << 10), d).astype(np.uint16)
    blocks[:, off:off + 2] = d2.view(np.uint8).reshape(-1, 2)
    y = read_back(raw, name, x.shape).reshape(-1, block)
    y2 = read_back(blocks.reshape(raw.shape), name, x.shape).reshape(-1, block)
    assert np.array_equal(y2[ok], 2 * y[ok])
    assert np.array_equal(y2[~ok], y[~ok])


FULL_RANGE = hnp.arrays(np.float32, st.tuples(st.integers(1, 2), st.sampled_from([256, 512])),
                        elements=st.floats(width=32, allow_nan=False, allow_infinity=False, allow_subnormal=True))


@settings(max_examples=60, deadline=None)
@given(x=FULL_RANGE, name=st.sampled_from(SIMPLE), seed=st.integers(0, 1000))
def test_hypothesis_full_float32_range(x, name, seed):
    with np.errstate(all="ignore"):
        assert np.array_equal(ours(x, name), ggml_quantize(x, name))
        if POLICY[name]:
            w = np.random.default_rng(seed).lognormal(0, 2, x.shape[1]).astype(np.float32)
            assert np.array_equal(ours(x, name, w), ggml_quantize(x, name, w))
