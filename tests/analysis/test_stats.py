"""Streaming statistics equal numpy on the whole tensor, whatever the chunking."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from normscope.analysis.metrics import stats as stats_mod
from normscope.analysis.metrics.norms import percentiles
from normscope.analysis.metrics.stats import WeightAccumulator


def reference(x: np.ndarray, k: int, sigma: float):
    flat = x.astype(np.float64).ravel()
    finite = flat[np.isfinite(flat)]
    mean, std = finite.mean(), finite.std()
    kurt = ((finite - mean) ** 4).mean() / std ** 4 - 3 if std > 0 else np.nan
    mags = np.where(np.isfinite(flat), np.abs(flat), -1)
    order = np.lexsort((np.arange(flat.size), -mags))[:k]
    outliers = int((np.abs(finite - mean) > sigma * std).sum()) if std > 0 else 0
    return mean, std, kurt, order, outliers


def run(x: np.ndarray, rows_per_chunk: int, k: int = 5, sigma: float = 3.0):
    acc = WeightAccumulator(x.shape, top_k=k, outlier_sigma=sigma)
    x2 = x.reshape(-1, x.shape[-1])
    for r0 in range(0, x2.shape[0], rows_per_chunk):
        acc.update(r0 * x2.shape[1], x2[r0:r0 + rows_per_chunk])
    recount = None
    if acc.needs_recount():
        mean, limit = acc.outlier_threshold()
        recount = stats_mod.count_beyond(x, mean, limit)
    return acc.finish(recount)


def check(x: np.ndarray, rows_per_chunk: int, k: int = 5, sigma: float = 3.0):
    got = run(x, rows_per_chunk, k, sigma)
    mean, std, kurt, order, outliers = reference(x, k, sigma)
    finite = x[np.isfinite(x)]
    assert got.nan_count == int(np.isnan(x).sum()) and got.inf_count == int(np.isinf(x).sum())
    assert got.min == float(finite.min()) and got.max == float(finite.max())
    np.testing.assert_allclose(got.mean, mean, rtol=1e-5, atol=1e-6 * (std + abs(mean)))
    np.testing.assert_allclose(got.std, std, rtol=1e-4)
    if np.isfinite(kurt):
        np.testing.assert_allclose(got.excess_kurtosis, kurt, rtol=1e-3, atol=1e-3)
    assert [np.ravel_multi_index(t.index, x.shape) for t in got.top] == order.tolist()
    # exact for the reported mean and std (a value on the boundary may flip with the last bit of σ)
    exact = int((np.abs(finite.astype(np.float64) - got.mean) > sigma * got.std).sum()) if got.std > 0 else 0
    assert got.outlier_count == exact and abs(exact - outliers) <= max(1, outliers // 100)


floats = st.floats(-1e3, 1e3, allow_nan=False, width=32)


@settings(max_examples=150, deadline=None)
@given(rows=st.integers(1, 40), cols=st.integers(1, 37), chunk=st.integers(1, 50), shift=floats,
       scale=st.floats(1e-3, 10), seed=st.integers(0, 2**31), heavy=st.booleans())
def test_matches_numpy_whatever_the_chunking(rows, cols, chunk, shift, scale, seed, heavy):
    rng = np.random.default_rng(seed)
    x = (rng.standard_t(2, (rows, cols)) if heavy else rng.normal(size=(rows, cols))) * scale + shift
    check(x.astype(np.float32), chunk)


def test_large_tensor_across_sub_blocks():
    rng = np.random.default_rng(3)
    x = rng.normal(0, 0.02, (300, 1000)).astype(np.float32)
    x[123, 456] = 3.0  # a super-weight-like outlier
    for chunk in (1, 7, 300):
        check(x, chunk, k=8, sigma=6.0)
    assert run(x, 50, 8, 6.0).top[0].index == (123, 456)


def test_nan_and_inf_are_counted_and_excluded():
    x = np.linspace(-1, 1, 200, dtype=np.float32).reshape(10, 20)
    x[2, 3], x[7, 1], x[9, 19] = np.nan, np.inf, -np.inf
    check(x, 3)


def test_recount_when_later_chunks_shrink_the_spread():
    """First chunk wide, the rest narrow: the candidate threshold was too high, a second pass counts."""
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.normal(0, 10, (10, 100)), rng.normal(0, 0.1, (990, 100))]).astype(np.float32)
    acc = WeightAccumulator(x.shape, top_k=3, outlier_sigma=3.0)
    for r0 in range(0, 1000, 10):
        acc.update(r0 * 100, x[r0:r0 + 10])
    assert acc.needs_recount()
    check(x, 10)


def test_candidate_cap_keeps_counts_exact(monkeypatch):
    monkeypatch.setattr(stats_mod, "MAX_CANDIDATES", 64)
    rng = np.random.default_rng(5)
    x = rng.standard_t(1.5, (200, 50)).astype(np.float32)
    check(x, 13)


def test_constant_and_zero_tensors():
    z = np.zeros((4, 8), np.float32)
    s = run(z, 2)
    assert s.std == 0 and s.outlier_count == 0 and np.isnan(s.absmax_over_std)
    c = np.full((4, 8), 2.5, np.float32)
    assert run(c, 3).mean == pytest.approx(2.5)


def test_count_beyond_is_exact_at_the_boundary():
    rng = np.random.default_rng(1)
    for _ in range(200):
        x = (rng.standard_t(3, 5000) * rng.uniform(0.01, 100)).astype(np.float32)
        x[rng.integers(0, 5000, 5)] = np.nan
        x[0] = np.inf
        center = float(rng.normal(0, 1))
        limit = float(np.abs(x[np.isfinite(x)].astype(np.float64) - center)[rng.integers(0, 100)])  # on a value
        want = int(np.count_nonzero(np.abs(x.astype(np.float64) - center) > limit))
        assert stats_mod.count_beyond(x, center, limit) == want


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=300),
       q=st.floats(0, 100))
def test_norm_percentiles_are_numpys_bit_for_bit(values, q):
    a = np.abs(np.array(values, np.float64))
    assert percentiles(a, (q, 99, 99.9)) == [float(np.percentile(a, x)) for x in (q, 99, 99.9)]


@settings(max_examples=80, deadline=None)
@given(rows=st.integers(1, 30), cols=st.integers(1, 300), chunk=st.integers(1, 40), seed=st.integers(0, 2**31),
       levels=st.integers(2, 9), shift=st.sampled_from([0.0, 3.0]))
def test_bfloat16_chunks_give_the_float32_numbers_and_ties_go_to_the_lower_index(rows, cols, chunk, seed, levels,
                                                                                   shift):
    """Stored bfloat16 (read without widening) gives exactly the report of its float32 widening, and
    the top-k (from the kernel's candidates) is numpy's, ties to the lower index: few distinct values,
    so many ties at the k-th."""
    import ml_dtypes

    rng = np.random.default_rng(seed)
    x = (rng.integers(-levels, levels + 1, (rows, cols)) * 0.37 + shift).astype(ml_dtypes.bfloat16)
    x[rng.random((rows, cols)) < 0.01] = 40.0  # a few outliers, all equal
    wide = x.astype(np.float32)
    assert run(x, chunk, k=6) == run(wide, chunk, k=6)
    check(wide, chunk, k=6)


def test_values_whose_squares_overflow_float32_stay_candidates():
    """σ ~ 1e19: τ² is beyond float32. The candidate test must still catch every |d| > τ, or the top-k
    (taken from the candidates) and the outlier count would miss the largest values."""
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1e19, 2 << 17).astype(np.float32)
    x[:8], x[131077] = 1e20, 1e21
    got = run(x.reshape(2, -1), 1, k=8, sigma=6.0)
    assert got.top[0].index == (1, 131077 - (1 << 17)) and got.absmax == float(np.float32(1e21))
    check(x.reshape(2, -1), 1, k=8, sigma=6.0)
