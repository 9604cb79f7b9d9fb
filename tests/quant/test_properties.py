"""Invariants of the formats (hypothesis), unknown names, bad row lengths."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from normscope.errors import ConfigError, UnknownNameError
from normscope.quant import LAYOUTS, fake_quantize, get_format, quantize_blocks

BLOCKED = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]
SIM = ["int8", "int4", "int2", "int4_sym_g32", "int4_sym_g128", "int8_sym_channel", "int4_sym_tensor", "fp8",
       "fp8_block"]
floats = st.floats(-100, 100, allow_nan=False, width=32)
# magnitudes whose block scales are normal fp16 numbers (tinier blocks underflow: see test_scale_underflow)
normal = st.one_of(st.just(0.0), st.floats(0.0625, 100, width=32), st.floats(-100, -0.0625, width=32))


@settings(max_examples=40, deadline=None)
@given(fmt=st.sampled_from(BLOCKED + SIM), rows=st.integers(1, 3))
def test_zero_blocks_stay_zero(fmt, rows):
    x = np.zeros((rows, 256), np.float32)
    assert not fake_quantize(x, fmt).any()


@settings(max_examples=60, deadline=None)
@given(fmt=st.just("Q8_0"), x=arrays(np.float32, (2, 64), elements=normal))
def test_symmetric_ggml_error_within_half_a_step(fmt, x):
    """|x − x'| ≤ d/2 per block, d the stored fp16 scale (plus the fp16 rounding of d itself).

    Only Q8_0's grid (±127·d) is symmetric; Q4_0/Q5_0 put the block's largest |x| at −8·d / −16·d, so a
    value of the opposite sign and the same size lands a whole step away (llama.cpp does the same).
    """
    qmax = {"Q8_0": 127}[fmt]
    y = fake_quantize(x, fmt)
    blocks, out = x.reshape(-1, 32), y.reshape(-1, 32)
    amax = np.abs(blocks).max(axis=1, keepdims=True)
    d = amax / qmax
    # a value rounds to within d/2 of its level, and the fp16 scale moves each level by ≤ |q|·d·2^-11
    bound = d / 2 * (1 + 1e-3) + amax * 2.0 ** -10 + 1e-30
    assert (np.abs(blocks - out) <= bound).all()


@settings(max_examples=60, deadline=None)
@given(fmt=st.sampled_from(["int8", "int4_sym_g32", "int8_sym_g64"]),
       x=arrays(np.float32, (3, 128), elements=floats))
def test_symmetric_integer_error_within_half_a_step(fmt, x):
    y = fake_quantize(x, fmt)
    group = {"int8": 128, "int4_sym_g32": 32, "int8_sym_g64": 64}[fmt]
    steps = {"int8": lambda a: a / 127, "int4_sym_g32": lambda a: 2 * a / 15, "int8_sym_g64": lambda a: 2 * a / 255}
    blocks, out = x.reshape(-1, group), y.reshape(-1, group)
    step = steps[fmt](np.abs(blocks).max(axis=1, keepdims=True))
    # half a step, plus float32 rounding of the level and of the difference
    assert (np.abs(blocks - out) <= step / 2 + np.abs(blocks) * 2.0 ** -21 + 1e-30).all()


# (format, smallest level, largest level) of grids anchored at the block's largest |x|
GRIDS = [("Q8_0", -127, 127), ("Q4_0", -8, 7), ("Q5_0", -16, 15), ("int8", -127, 127)]


@settings(max_examples=80, deadline=None)
@given(grid=st.sampled_from(GRIDS), exp=st.integers(-10, 4), seed=st.integers(0, 2**31))
def test_int_grid_values_survive_exactly(grid, exp, seed):
    """x = d·q with integer q on the format's grid, d a power of two: stored and read back unchanged."""
    fmt, lo, hi = grid
    rng = np.random.default_rng(seed)
    q = rng.integers(lo, hi + 1, (4, 32))
    anchor = lo if fmt in ("Q4_0", "Q5_0") else hi  # the level the block's largest |x| maps to
    q[:, 0] = anchor
    q = np.where(np.abs(q) > abs(anchor), np.sign(q) * abs(anchor), q)
    x = (q * 2.0 ** exp).astype(np.float32)
    np.testing.assert_array_equal(fake_quantize(x, fmt), x)


@settings(max_examples=60, deadline=None)
@given(fmt=st.sampled_from(["Q8_0", "Q4_0", "Q5_0", "Q6_K", "Q4_K"]), seed=st.integers(0, 2**31))
def test_requantization_is_idempotent(fmt, seed):
    """What llama.cpp wrote re-quantizes to itself (re-quantizing a GGUF tensor costs nothing).

    Not true of every format: Q3_K's and Q5_K's searches and GPTQ's asymmetric int grid can pick another
    scale the second time (measured: Q3_K 19/30, Q5_K 3/30, int4_sym_g128 30/30 random rows).
    """
    x = np.random.default_rng(seed).normal(0, 0.05, (2, 256)).astype(np.float32)
    once = fake_quantize(x, fmt)
    np.testing.assert_array_equal(fake_quantize(once, fmt), once)


def test_unknown_format_lists_the_valid_ones():
    with pytest.raises(UnknownNameError, match="unknown quantization format 'Q9_K'; valid: .*Q4_K"):
        quantize_blocks(np.zeros((1, 256), np.float32), "Q9_K")


@pytest.mark.parametrize("fmt, row", [("Q4_K", 640), ("Q8_0", 40), ("Q6_K", 100)])
def test_rows_that_are_not_whole_blocks(fmt, row):
    with pytest.raises(ConfigError, match=f"row of {row} is not a multiple"):
        quantize_blocks(np.zeros((2, row), np.float32), fmt)


def test_simulated_schemes_have_no_byte_layout():
    with pytest.raises(ConfigError, match="without a ggml byte layout"):
        quantize_blocks(np.zeros((1, 128), np.float32), "int4")


@pytest.mark.parametrize("fmt", BLOCKED)
def test_bits_per_weight_is_the_layout(fmt):
    layout = LAYOUTS[fmt]
    assert get_format(fmt).bits_per_weight() == 8 * layout.type_size / layout.block_size
    assert get_format(fmt).nbytes((640, 2048)) == 640 * 2048 // layout.block_size * layout.type_size


def test_scale_underflow_zeroes_a_block_and_health_reports_it():
    from normscope.quant import block_health, dequantize_blocks

    x = np.full((1, 32), 1e-27, np.float32)  # d = amax/127 is below fp16's smallest subnormal
    raw = quantize_blocks(x, "Q8_0")
    y = dequantize_blocks(raw, "Q8_0", x.shape)
    assert not y.any()
    h = block_health(x, "Q8_0")
    assert (h.blocks, h.scale_underflow, h.scale_subnormal, h.rounded_to_zero) == (1, 1, 0, 32)
    tiny = np.full((1, 32), 1e-4, np.float32)  # d ≈ 7.9e-7: a subnormal fp16 scale, the block survives
    h = block_health(tiny, "Q8_0")
    assert (h.scale_underflow, h.scale_subnormal, h.rounded_to_zero) == (0, 1, 0)
