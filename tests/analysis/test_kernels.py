"""The compiled statistics kernel against numpy: the sums in the documented lane order (bit for bit),
min/max and the outlier candidates (and their positions) exactly, every tail length, shifts, NaN/Inf
sub-blocks; each loop this CPU runs (AVX2 and portable), from float32 and from bfloat16 bits."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from normscope import _kernels
from normscope._kernels import block_stats, block_stats_bf16

PATHS = _kernels.paths()


@pytest.fixture(params=PATHS, autouse=True)
def loop(request):
    """Every test runs on each loop this CPU has (the AVX2 one on CI's x86-64, and the portable one)."""
    before = _kernels.use(request.param)
    yield request.param
    _kernels.use(before)


def outputs(n: int, block: int):
    nb = -(-n // block)
    return (np.empty((nb, 4)), np.empty(nb, np.float32), np.empty(nb, np.float32), np.empty(n, np.float32),
            np.empty(n, np.int64), np.empty(nb, np.int64))


def run(x: np.ndarray, shift: float, tau2: float, block: int, with_positions: bool = False):
    """The kernel on float32 values, or on bfloat16 values through their bits."""
    sums, mins, maxs, cand, pos, counts = outputs(x.size, block)
    kernel, buf = (block_stats_bf16, x.view(np.uint16)) if x.dtype == ml_dtypes.bfloat16 else (block_stats, x)
    total = kernel(buf, np.float32(shift), np.float32(tau2), block, sums, mins, maxs, cand, pos, counts)
    out = sums, mins, maxs, cand[:total], counts
    return (*out, pos[:total]) if with_positions else out


def reference_sums(x: np.ndarray, shift: float) -> np.ndarray:
    """Lane j sums values j, j + 8, … of the whole groups of 8 in float64; lanes are added 0..7, then the
    tail in order: written out with Python floats, one addition at a time."""
    d = (x - np.float32(shift)).astype(np.float64)
    whole = d.size // 8 * 8
    out = []
    for power in (1, 2, 3, 4):
        lanes = [0.0] * 8
        for i in range(whole):
            v = float(d[i])
            q = v * v
            lanes[i % 8] += (v, q, q * v, q * q)[power - 1]
        s = 0.0
        for lane in lanes:
            s += lane
        for i in range(whole, d.size):
            v = float(d[i])
            q = v * v
            s += (v, q, q * v, q * q)[power - 1]
        out.append(s)
    return np.array(out)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), shift=st.sampled_from([0.0, 0.37, -2.0]), seed=st.integers(0, 2 ** 16),
       tau=st.floats(0.0, 3.0))
def test_one_sub_block_matches_the_reference_bit_for_bit(n, shift, seed, tau):
    x = np.random.default_rng(seed).standard_t(3, n).astype(np.float32)
    sums, mins, maxs, cand, counts, pos = run(x, shift, tau * tau, 1 << 16, with_positions=True)
    assert sums[0].tolist() == reference_sums(x, shift).tolist()
    assert (mins[0], maxs[0]) == (x.min(), x.max())
    d = x - np.float32(shift)
    beyond = d * d > np.float32(tau * tau)  # numpy's float32 test, as analysis.stats did it
    assert np.array_equal(cand, x[beyond]) and counts.tolist() == [int(beyond.sum())]
    assert np.array_equal(pos, np.flatnonzero(beyond))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 700), shift=st.sampled_from([0.0, 0.37, -2.0]), seed=st.integers(0, 2 ** 16),
       block=st.sampled_from([8, 64, 100, 1 << 16]))
def test_bfloat16_gives_what_its_float32_widening_gives(n, shift, seed, block):
    """The bf16 entry point reads the bits directly: the same outputs, bit for bit, as float32."""
    x = np.random.default_rng(seed).standard_t(3, n).astype(ml_dtypes.bfloat16)
    got = run(x, shift, 1.5, block, with_positions=True)
    want = run(x.astype(np.float32), shift, 1.5, block, with_positions=True)
    for g, w in zip(got, want):
        assert np.array_equal(g, w)


def test_the_loops_agree_bit_for_bit():
    """The report must not depend on the CPU: every loop gives the same sums, min/max and candidates."""
    x = np.random.default_rng(7).standard_t(3, 300_001).astype(np.float32)
    x[::1001] *= 50
    results = []
    for name in PATHS:
        before = _kernels.use(name)
        try:
            results.append(run(x, 0.25, 4.0, 1 << 14, with_positions=True))
        finally:
            _kernels.use(before)
    for other in results[1:]:
        for g, w in zip(other, results[0]):
            assert np.array_equal(g, w)


@pytest.mark.parametrize("n, block", [(1 << 16, 1 << 16), (3 * 4096 + 5, 4096), (100_003, 1 << 14), (7, 4)])
def test_sub_blocks_are_independent_and_candidates_come_in_order(n, block):
    x = (np.random.default_rng(n).standard_normal(n) * 0.02).astype(np.float32)
    x[::997] *= 40  # some outliers in every sub-block
    tau2 = np.float32(0.1 ** 2)
    sums, mins, maxs, cand, counts, pos = run(x, 0.0, tau2, block, with_positions=True)
    assert np.array_equal(pos, np.flatnonzero(x * x > tau2))
    for b in range(sums.shape[0]):
        part = x[b * block:(b + 1) * block]
        one = run(part, 0.0, tau2, block)
        assert sums[b].tolist() == one[0][0].tolist() and (mins[b], maxs[b]) == (part.min(), part.max())
    assert np.array_equal(cand, x[x * x > tau2]) and counts.sum() == cand.size
    assert np.allclose(sums.sum(0)[:2], [x.astype(np.float64).sum(), (x.astype(np.float64) ** 2).sum()],
                       rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_value_makes_only_its_sub_block_non_finite(bad):
    x = np.ones(3 * 1024, np.float32)
    x[1500] = bad
    sums, *_ = run(x, 0.0, 4.0, 1024)
    assert np.isfinite(sums[0]).all() and np.isfinite(sums[2]).all()
    assert not np.isfinite(sums[1]).all()


def test_bad_buffers_are_refused():
    x = np.zeros(16, np.float32)
    with pytest.raises(TypeError, match="float32"):
        run(x.astype(np.float64), 0.0, 1.0, 8)
    with pytest.raises(TypeError, match="float32"):  # bfloat16 goes through block_stats_bf16, not here
        block_stats(x.view(np.uint16), 0.0, 1.0, 8, *outputs(32, 8))
    with pytest.raises(TypeError, match="uint16"):
        block_stats_bf16(x, 0.0, 1.0, 8, *outputs(16, 8))
    with pytest.raises(ValueError, match="block must be positive"):
        block_stats(x, 0.0, 1.0, 0, *outputs(16, 8))
    sums, mins, maxs, cand, pos, counts = outputs(16, 8)
    with pytest.raises(ValueError, match="sums: need 8 writable items of float64"):
        block_stats(x, 0.0, 1.0, 8, sums[:1], mins, maxs, cand, pos, counts)
    with pytest.raises(ValueError, match="positions: need 16 writable items of int64"):
        block_stats(x, 0.0, 1.0, 8, sums, mins, maxs, cand, pos.astype(np.int32), counts)
    with pytest.raises(ValueError, match="mins: need 2 writable items of float32"):  # right size, wrong type
        block_stats(x, 0.0, 1.0, 8, sums, mins.view(np.int32), maxs, cand, pos, counts)
    with pytest.raises(ValueError, match="counts: need 2 writable items of int64"):
        block_stats(x, 0.0, 1.0, 8, sums, mins, maxs, cand, pos, counts.view(np.float64))


def test_use_names_a_loop_this_cpu_runs():
    assert "portable" in PATHS
    with pytest.raises(ValueError, match="no loop 'avx9'"):
        _kernels.use("avx9")
