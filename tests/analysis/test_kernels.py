"""The compiled statistics kernel against numpy: the sums in the documented lane order (bit for bit),
min/max and the outlier candidates exactly, every tail length, shifts, and NaN/Inf sub-blocks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from normscope._kernels import block_stats


def run(x: np.ndarray, shift: float, tau2: float, block: int):
    nb = -(-x.size // block)
    sums, mins, maxs = np.empty((nb, 4)), np.empty(nb, np.float32), np.empty(nb, np.float32)
    cand, counts = np.empty(x.size, np.float32), np.empty(nb, np.int64)
    total = block_stats(x, np.float32(shift), np.float32(tau2), block, sums, mins, maxs, cand, counts)
    return sums, mins, maxs, cand[:total], counts


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
    sums, mins, maxs, cand, counts = run(x, shift, tau * tau, 1 << 16)
    assert sums[0].tolist() == reference_sums(x, shift).tolist()
    assert (mins[0], maxs[0]) == (x.min(), x.max())
    d = x - np.float32(shift)
    expected = x[d * d > np.float32(tau * tau)]  # numpy's float32 test, as analysis.stats did it
    assert np.array_equal(cand, expected) and counts.tolist() == [expected.size]


@pytest.mark.parametrize("n, block", [(1 << 16, 1 << 16), (3 * 4096 + 5, 4096), (100_003, 1 << 14), (7, 4)])
def test_sub_blocks_are_independent_and_candidates_come_in_order(n, block):
    x = (np.random.default_rng(n).standard_normal(n) * 0.02).astype(np.float32)
    x[::997] *= 40  # some outliers in every sub-block
    tau2 = np.float32(0.1 ** 2)
    sums, mins, maxs, cand, counts = run(x, 0.0, tau2, block)
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
    with pytest.raises(ValueError, match="block must be positive"):
        block_stats(x, 0.0, 1.0, 0, np.empty((2, 4)), np.empty(2, np.float32), np.empty(2, np.float32),
                    np.empty(16, np.float32), np.empty(2, np.int64))
    with pytest.raises(ValueError, match="sums: need 8 writable items"):
        block_stats(x, 0.0, 1.0, 8, np.empty((1, 4)), np.empty(2, np.float32), np.empty(2, np.float32),
                    np.empty(16, np.float32), np.empty(2, np.int64))
