"""Every type of the compiled kernel table (normscope._kernels.qtypes) against llama.cpp's own quantizer.

For each type: the bytes of `_kernels.quantize` equal `ggml_quantize_chunk`'s on adversarial rows, on real
Gemma rows and on hypothesis-drawn rows, without an importance matrix and, for types that take one, with
random and real-looking ones; `_kernels.dequantize` reads them back as gguf-py does.
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ggml_ref import adversarial, ggml_dequantize, ggml_quantize
from normscope import _kernels
from normscope.quant import FORMATS, LAYOUTS, GGMLFormat, get_format
from normscope.upstream import load_grid

TABLE = {name: (ggml_type, block, size, imatrix, offset)
         for name, ggml_type, block, size, imatrix, offset, _ in _kernels.qtypes()}
for _name in TABLE:
    load_grid(_name)
TYPES = sorted(TABLE)
WEIGHTED = [t for t in TYPES if TABLE[t][3] > 0]
OPTIONAL = [t for t in TYPES if TABLE[t][3] < 2]  # quantizable without an importance matrix


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


def importance(n: int, seed: int) -> np.ndarray:
    """Weights like an imatrix's sums of x²: positive, a few columns dominating, some exactly zero."""
    rng = np.random.default_rng(seed)
    w = rng.lognormal(0.0, 1.5, n).astype(np.float32)
    w[rng.integers(0, n, n // 50)] = 0.0
    return w


def test_table_matches_gguf():
    for name, (ggml_type, block, size, _, _) in TABLE.items():
        qtype = gguf.GGMLQuantizationType[name]
        assert int(qtype) == ggml_type, name
        assert gguf.GGML_QUANT_SIZES[qtype] == (block, size), name
        assert LAYOUTS[name] == (block, size), name  # the Python layout table says the same


def test_every_table_type_is_a_format_and_every_ggml_format_is_in_the_table():
    ggml = {n for n, f in FORMATS.items() if issubclass(f, GGMLFormat)}
    assert ggml - {"F32"} == set(TABLE)
    for name in TABLE:
        assert get_format(name).imatrix == ("ignored", "used", "required")[TABLE[name][3]]


@pytest.mark.parametrize("name", OPTIONAL)
def test_adversarial_rows_without_imatrix(name):
    x = adversarial()
    assert np.array_equal(ours(x, name), ggml_quantize(x, name))


@pytest.mark.parametrize("name", WEIGHTED)
@pytest.mark.parametrize("seed", [0, 1])
def test_adversarial_rows_with_imatrix(name, seed):
    x = adversarial(seed)
    w = importance(x.shape[1], seed)
    assert np.array_equal(ours(x, name, w), ggml_quantize(x, name, w))


@pytest.mark.parametrize("name", TYPES)
def test_real_gemma_and_minilm_rows(name, gemma_rows, minilm_rows):
    for tensor, x in {**gemma_rows, **minilm_rows}.items():
        w = importance(x.shape[1], 3) if TABLE[name][3] else None
        if TABLE[name][3] < 2:
            assert np.array_equal(ours(x, name), ggml_quantize(x, name)), tensor
        if w is not None:
            assert np.array_equal(ours(x, name, w), ggml_quantize(x, name, w)), tensor


@pytest.mark.parametrize("name", TYPES)
def test_dequantize_reads_as_gguf_py(name):
    x = adversarial(2)
    w = importance(x.shape[1], 2) if TABLE[name][3] else None
    raw = ggml_quantize(x, name, w)
    try:
        expected = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[name]).reshape(x.shape)
    except NotImplementedError:  # gguf-py has no reader for it (Q1_0): ggml's own dequantize_row
        expected = ggml_dequantize(raw, name, x.shape)
    got = read_back(raw, name, x.shape)
    assert np.array_equal(got.view(np.uint32), expected.astype(np.float32).view(np.uint32))


ROWS = hnp.arrays(np.float32, st.tuples(st.integers(1, 3), st.sampled_from([256, 512])),
                  elements=st.floats(-1e4, 1e4, width=32, allow_subnormal=True))


@settings(max_examples=40, deadline=None)
@given(x=ROWS, name=st.sampled_from(OPTIONAL))
def test_hypothesis_rows_without_imatrix(x, name):
    if x.shape[1] % TABLE[name][1]:
        return
    assert np.array_equal(ours(x, name), ggml_quantize(x, name))


@settings(max_examples=40, deadline=None)
@given(x=ROWS, name=st.sampled_from(WEIGHTED or ["Q8_0"]), seed=st.integers(0, 1000))
def test_hypothesis_rows_with_imatrix(x, name, seed):
    if not WEIGHTED or x.shape[1] % TABLE[name][1]:
        return
    w = importance(x.shape[1], seed)
    assert np.array_equal(ours(x, name, w), ggml_quantize(x, name, w))


def test_bad_buffers_are_refused():
    x = np.zeros((2, 64), np.float32)
    with pytest.raises(ValueError, match="rows of 48"):
        _kernels.quantize("Q8_0", x, np.zeros(200, np.uint8), 48)
    with pytest.raises(ValueError, match="need 136 bytes"):
        _kernels.quantize("Q8_0", x, np.zeros(10, np.uint8), 64)
    with pytest.raises(TypeError, match="float32"):
        _kernels.quantize("Q8_0", x.astype(np.float64), np.zeros(136, np.uint8), 64)
    with pytest.raises(ValueError, match="one per column"):
        _kernels.quantize("Q8_0", x, np.zeros(136, np.uint8), 64, np.ones(32, np.float32))
    with pytest.raises(KeyError, match="no ggml type Q9_9"):
        _kernels.quantize("Q9_9", x, np.zeros(136, np.uint8), 64)
