"""llama.cpp's runtime activation types: which one each weight type's dot product takes, and Q8_1/Q8_K's bytes.

`normscope.quant.runtime.VEC_DOT_TYPE` is held against the `vec_dot_type` of libggml-cpu's own type traits for
every weight type of the kernel table; the compiled Q8_1 and Q8_K quantizers against ggml's
quantize_row_q8_1_ref / quantize_row_q8_K_ref byte for byte (adversarial, real Gemma and hypothesis rows), and
`runtime_activations` against the quantizers ggml's CPU matmul itself calls (quantize_row_q8_0/q8_1/q8_K of
libggml-cpu) value for value on activation-like rows.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ggml_ref import _lib, adversarial, ggml_quantize_row, ggml_vec_dot_type
from normscope import _kernels
from normscope.errors import ConfigError
from normscope.quant.runtime import VEC_DOT_TYPE, activation_type, runtime_activations

ACT = {row[0]: (row[2], row[3]) for row in _kernels.act_qtypes()}
REF = {"Q8_0": "quantize_row_q8_0", "Q8_1": "quantize_row_q8_1", "Q8_K": "quantize_row_q8_K"}
SIZES = {"Q8_0": (32, 34), "Q8_1": (32, 36), "Q8_K": (256, 292)}


def ours(x: np.ndarray, name: str) -> np.ndarray:
    block, size = SIZES[name]
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.zeros((x.shape[0], x.shape[1] // block * size), np.uint8)
    _kernels.quantize(name, x, out, x.shape[1])
    return out


def test_vec_dot_types_are_ggml_cpus():
    weight_types = {row[0] for row in _kernels.qtypes()} | {"F32"}
    assert set(VEC_DOT_TYPE) == weight_types
    for name, act in VEC_DOT_TYPE.items():
        assert (act or "F32") == ggml_vec_dot_type(name), name
    assert activation_type("Q4_K") == "Q8_K" and activation_type("Q4_1") == "Q8_1"
    with pytest.raises(ConfigError, match="Q8_K"):
        activation_type("Q8_K")


def test_activation_table():
    assert ACT == {"Q8_1": SIZES["Q8_1"], "Q8_K": SIZES["Q8_K"]}
    assert "Q8_K" not in {row[0] for row in _kernels.qtypes()}  # not a weight type: simulate never offers it


@pytest.mark.parametrize("name", ["Q8_0", "Q8_1", "Q8_K"])
def test_bytes_equal_ggml_ref(name, gemma_rows):
    block, size = SIZES[name]
    rows = [adversarial(s) for s in range(3)] + [r for r in gemma_rows.values()]
    for x in rows:
        np.testing.assert_array_equal(ours(x, name), ggml_quantize_row(x, REF[name] + "_ref", block, size))


@pytest.mark.parametrize("name", ["Q8_1", "Q8_K"])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_bytes_equal_ggml_ref_hypothesis(name, data):
    block, size = SIZES[name]
    x = data.draw(hnp.arrays(np.float32, (2, 2 * 256), elements=st.floats(-1e6, 1e6, width=32)))
    np.testing.assert_array_equal(ours(x, name), ggml_quantize_row(x, REF[name] + "_ref", block, size))


def test_read_back():
    x = adversarial(7)
    raw = ours(x, "Q8_K")
    y = np.zeros_like(x)
    _kernels.dequantize("Q8_K", raw, y, x.shape[1])
    fn = _lib().dequantize_row_q8_K  # exported by libggml-base (Q8_K's type traits have no to_float)
    fn.restype, fn.argtypes = None, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    theirs = np.zeros_like(x)
    fn(raw.ctypes.data, theirs.ctypes.data, x.size)
    np.testing.assert_array_equal(y, theirs)
    raw = ours(x, "Q8_1").reshape(-1, 36)
    d = raw[:, :2].copy().view(np.float16).astype(np.float32)
    want = (raw[:, 4:].view(np.int8).astype(np.float32) * d).reshape(x.shape)  # d * qs, as ggml reads Q8_1
    _kernels.dequantize("Q8_1", raw, y, x.shape[1])
    np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("name", ["Q8_0", "Q8_1", "Q8_K"])
def test_runtime_activations_equal_ggml_cpu(name):
    """What ggml-cpu's matmul feeds its dot products (its arch quantizer: SIMD on x86), read back, against
    runtime_activations (the reference algorithm) on rows like a model's activations. Q8_K's x86 path is the
    reference: equal. The SIMD Q8_0/Q8_1 multiply by 127 / amax and round half to even where the reference
    multiplies by 1 / (amax / 127) and rounds half away: a value within float rounding of a tie between two
    levels may land on the other one (measured: 2 of 409,600 values), never further."""
    block, size = SIZES[name]
    rng = np.random.default_rng(3)
    x = (rng.standard_t(3, (400, 1024)) * rng.lognormal(0, 2, (400, 1))).astype(np.float32)
    x[5, 100] = 800.0  # a massive activation
    raw = ggml_quantize_row(x, REF[name], block, size, runtime=True)
    theirs = np.zeros_like(x)
    _kernels.dequantize(name, raw, theirs, x.shape[1])
    mine = runtime_activations(x, name)
    if name == "Q8_K":
        np.testing.assert_array_equal(mine, theirs)
        return
    differ = mine != theirs
    assert differ.sum() <= 1e-5 * x.size
    step = np.abs(x).reshape(-1, block).max(axis=1).repeat(block).reshape(x.shape) / 127  # one level
    assert np.all(np.abs(mine - theirs)[differ] <= 1.01 * step[differ])
    scaled = (x * (127 / np.abs(x).reshape(-1, block).max(axis=1).repeat(block).reshape(x.shape)))[differ]
    assert np.all(np.abs(np.abs(scaled - np.trunc(scaled)) - 0.5) < 1e-4)  # each one a tie, within float rounding


def test_runtime_activations_shapes():
    x = np.random.default_rng(0).normal(size=(2, 3, 512)).astype(np.float32)
    assert runtime_activations(x, "Q8_K").shape == x.shape
    assert runtime_activations(x, None) is not None and np.array_equal(runtime_activations(x, None), x)
    np.testing.assert_array_equal(runtime_activations(x, "F16"), x.astype(np.float16).astype(np.float32))
    with pytest.raises(ConfigError, match="640 values"):
        runtime_activations(np.zeros((1, 640), np.float32), "Q8_K")
