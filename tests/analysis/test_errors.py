"""Streaming error metrics equal numpy on the whole tensor, whatever the chunking; percentiles are exact."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from normscope.analysis.metrics.quant_error import ErrorAccumulator
from normscope.analysis.metrics.quantiles import ExactQuantiles


def reference(x, y, col=None, row=None):
    """DOMAIN.md §5, in float64 on whole arrays."""
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    d = y64 - x64
    nd, nx = np.linalg.norm(d), np.linalg.norm(x64)
    w = np.ones_like(d)
    if col is not None:
        w = w * col.astype(np.float64)[None, :] ** 2
    if row is not None:
        w = w * row.astype(np.float64)[:, None] ** 2
    return {
        "rmse": math.sqrt(np.mean(d * d)), "rel_l2": nd / nx, "sqnr_db": 20 * math.log10(nx / nd),
        "max_abs": float(np.abs(y - x).max()), "cosine": float(x64.ravel() @ y64.ravel() / (nx * np.linalg.norm(y64))),
        "pct": np.percentile(np.abs(y - x).astype(np.float64), [50, 95, 99, 99.9]),
        "aware_db": 10 * math.log10((w * x64 * x64).sum() / (w * d * d).sum()),
    }


def stream(x, y, rows_per_chunk, col=None, row=None):
    acc = ErrorAccumulator(x.size, col, row)
    for r in range(0, x.shape[0], rows_per_chunk):
        acc.update(x[r:r + rows_per_chunk], y[r:r + rows_per_chunk], r)
    if acc.second_pass_needed():
        acc.start_second_pass()
        for r in range(0, x.shape[0], rows_per_chunk):
            acc.second_pass(x[r:r + rows_per_chunk], y[r:r + rows_per_chunk])
    return acc


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 40), cols=st.integers(1, 300), chunk=st.integers(1, 40), seed=st.integers(0, 10**6),
       gains=st.sampled_from(["none", "col", "row", "both"]))
def test_streaming_metrics_equal_numpy_on_the_whole_tensor(rows, cols, chunk, seed, gains):
    rng = np.random.default_rng(seed)
    x = rng.standard_t(3, (rows, cols)).astype(np.float32)
    y = (x + rng.normal(0, 0.01, x.shape)).astype(np.float32)
    col = rng.uniform(0.1, 2000, cols).astype(np.float32) if gains in ("col", "both") else None
    row = rng.uniform(-5, 1700, rows).astype(np.float32) if gains in ("row", "both") else None
    acc = stream(x, y, chunk, col, row)
    got, ref = acc.finish(), reference(x, y, col, row)
    for key in ("rmse", "rel_l2", "sqnr_db", "max_abs", "cosine"):
        assert getattr(got, key) == pytest.approx(ref[key], rel=1e-9, abs=1e-12), key
    # exact order statistics, numpy's linear interpolation (float64 arithmetic on the float32 values)
    np.testing.assert_allclose([got.p50, got.p95, got.p99, got.p999], ref["pct"], rtol=1e-12)
    aware = acc.finish_norm_aware("n", "in", got.sqnr_db)
    if gains == "none":
        assert aware is None
    else:
        assert aware.sqnr_db == pytest.approx(ref["aware_db"], rel=1e-9)
        assert aware.delta_db == pytest.approx(ref["aware_db"] - ref["sqnr_db"], abs=1e-9)


def test_exact_copy_has_infinite_sqnr_and_zero_percentiles():
    x = np.random.default_rng(0).normal(size=(8, 64)).astype(np.float32)
    got = stream(x, x.copy(), 3).finish()
    assert (got.sqnr_db, got.rel_l2, got.max_abs, got.p999, got.cosine) == (math.inf, 0.0, 0.0, 0.0, 1.0)


def test_percentiles_stay_exact_when_the_distribution_drifts_between_chunks():
    """The first chunk's windows miss the later ranks: the second pass must find them exactly."""
    rng = np.random.default_rng(1)
    parts = [rng.uniform(0, 1e-6, 1000), rng.uniform(1, 2, 30000), rng.uniform(1e3, 2e3, 30000)]
    q = ExactQuantiles(sum(p.size for p in parts))
    for p in parts:
        q.update(p.astype(np.float32))
    assert q.missing()
    q.refine()
    for p in parts:
        q.update(p.astype(np.float32))
    assert not q.missing()
    whole = np.concatenate(parts).astype(np.float32).astype(np.float64)
    got = q.result()
    np.testing.assert_allclose([got[p] for p in (50.0, 95.0, 99.0, 99.9)],
                               np.percentile(whole, [50, 95, 99, 99.9]), rtol=1e-12)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 3000), zero_share=st.floats(0, 1), tiny_share=st.floats(0, 0.5), chunk=st.integers(1, 800),
       seed=st.integers(0, 10**6))
def test_zeros_are_counted_not_kept_and_bin_zero_stays_exact(n, zero_share, tiny_share, chunk, seed):
    """Zeros (an exact copy's every difference) are only counted; bin 0 also holds tiny subnormals, which
    must still come out in order after the zeros, whether fed by `update` or by the kernel's bins."""
    rng = np.random.default_rng(seed)
    values = rng.lognormal(-3, 2, n).astype(np.float32)
    kind = rng.uniform(size=n)
    values[kind < zero_share] = 0.0
    tiny = (kind >= zero_share) & (kind < zero_share + tiny_share)
    values[tiny] = (rng.integers(1, 1 << 16, int(tiny.sum())).astype(np.uint32)).view(np.float32)  # bin 0
    want = np.percentile(values.astype(np.float64), [50, 95, 99, 99.9])
    by_update = ExactQuantiles(n)
    acc = ErrorAccumulator(n)
    for i in range(0, n, chunk):
        by_update.update(values[i:i + chunk])
        part = values[i:i + chunk].reshape(1, -1)
        acc.update(np.zeros_like(part), part)  # |y - 0| = the values, through the compiled kernel
    for q in (by_update, acc.quantiles):
        if q.missing():
            q.refine()
            for i in range(0, n, chunk):
                q.update(values[i:i + chunk])
        got = q.result()
        np.testing.assert_allclose([got[p] for p in (50.0, 95.0, 99.0, 99.9)], want, rtol=1e-12, atol=0)
        assert sum(v.size for v in q.kept) <= int(np.count_nonzero(values))  # no zero is ever kept
