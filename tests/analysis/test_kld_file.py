"""llama-perplexity's KL-divergence base file and statistics (normscope.analysis.forward.kld).

The file round-trips (header, tokens, rows); its rows decode to the float64 log-softmax within the uint16
quantization (half a step of (max - min) / 65535, min clamped to max - 16); the statistics scored against it
equal a float64 computation within what that quantization allows.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest

from normscope.analysis.forward.kld import (KLDScores, decode_log_probs, encode_log_probs, kld_chunks, kld_statistics,
                                            read_kld_base, row_width, score_chunk, write_kld_base)
from normscope.errors import ConfigError


def _logits(rng, rows, vocab, spread=4.0):
    return (rng.standard_normal((rows, vocab)) * spread).astype(np.float32)


def _log_softmax64(x):
    x = x.astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))


def test_rows_decode_to_the_log_softmax_within_a_step():
    rng = np.random.default_rng(0)
    x = _logits(rng, 6, 1001)
    x[1, 7] = 60.0  # one dominant token: everything below max - 16 clamps to the minimum
    x[2] = 3.0  # a constant row: scale 0
    rows, _ = encode_log_probs(x)
    assert rows.shape == (6, row_width(1001)) == (6, 1006)
    got = decode_log_probs(rows, 1001).astype(np.float64)
    want = _log_softmax64(x)
    step = np.ascontiguousarray(rows[:, :4]).view(np.float32)[:, 0].astype(np.float64)
    floor = want.max(axis=1, keepdims=True) - 16
    inside = want > floor + 1e-5
    err = np.abs(got - want)
    assert np.all(err[inside] <= (0.5 * step[:, None] + 2e-6 * np.abs(want))[inside])
    assert np.all(got[~inside] <= floor[np.nonzero(~inside)[0], 0] + 1e-4)  # clamped values sit at the floor
    np.testing.assert_allclose(got[2], np.full(1001, -math.log(1001)), rtol=1e-6)


def test_file_round_trips(tmp_path):
    rng = np.random.default_rng(1)
    n_ctx, vocab = 16, 301
    tokens, chunks = kld_chunks(list(rng.integers(5, vocab, 50)), n_ctx, bos=2)
    assert len(chunks) == 3 and tokens[0] == 2 and all(c[0] == 2 and len(c) == n_ctx for c in chunks)
    logits = [_logits(rng, n_ctx - 1 - n_ctx // 2, vocab) for _ in chunks]
    buf = io.BytesIO()
    write_kld_base(buf, tokens, n_ctx, vocab, iter(logits))
    path = tmp_path / "base.kld"
    path.write_bytes(buf.getvalue())
    base = read_kld_base(path)
    assert (base.n_ctx, base.n_vocab, base.n_chunk, base.scored) == (16, 301, 3, 7)
    assert base.tokens.tolist() == tokens and base.chunks(2) == chunks
    for want, rows in zip(logits, base.rows()):
        np.testing.assert_array_equal(rows, encode_log_probs(want)[0])
    assert path.stat().st_size == 20 + 4 * 48 + 3 * 7 * 306 * 2


def test_statistics_equal_float64_within_the_quantization():
    rng = np.random.default_rng(2)
    vocab, n = 2000, 300
    base = _logits(rng, n, vocab)
    var = base + (rng.standard_normal((n, vocab)) * 0.3).astype(np.float32)
    nxt = np.argsort(-base, axis=1)[np.arange(n), rng.integers(0, 20, n)]  # a likely next token (above the floor)
    rows, _ = encode_log_probs(base)
    s = KLDScores.empty()
    score_chunk(rows, var, nxt, vocab, s)
    st = kld_statistics(s)
    lp, lq = _log_softmax64(base), _log_softmax64(var)
    kl = (np.exp(lp) * (lp - lq)).sum(axis=1)
    dp = np.exp(lq[np.arange(n), nxt]) - np.exp(lp[np.arange(n), nxt])
    assert st["count"] == n
    assert st["kld_mean"] == pytest.approx(kl.mean(), rel=2e-3)
    assert st["kld_mean_unc"] == pytest.approx(kl.std() / math.sqrt(n - 1), rel=2e-2)
    assert st["kld_median"] == pytest.approx(np.median(kl), rel=2e-3)
    assert st["kld_p99"] == pytest.approx(np.percentile(kl, 99), rel=2e-3)
    assert st["kld_max"] == pytest.approx(kl.max(), rel=2e-3)
    assert st["same_top"] == np.mean(lp.argmax(1) == lq.argmax(1))
    assert st["dp_mean"] == pytest.approx(dp.mean(), abs=1e-5)
    assert st["dp_rms"] == pytest.approx(math.sqrt((dp ** 2).mean()), rel=1e-3)
    assert st["ppl_base"] == pytest.approx(math.exp(-lp[np.arange(n), nxt].mean()), rel=1e-4)


def test_bad_files_are_one_clear_error(tmp_path):
    p = tmp_path / "x.kld"
    p.write_bytes(b"GGUF" + b"\0" * 40)
    with pytest.raises(ConfigError, match="not a llama-perplexity KL-divergence base file"):
        read_kld_base(p)
    p.write_bytes(b"_logits_" + np.array([16, 301, 3], "<i4").tobytes() + b"\0" * 10)
    with pytest.raises(ConfigError, match="makes"):
        read_kld_base(p)
    with pytest.raises(ConfigError, match="no such file"):
        read_kld_base(tmp_path / "missing.kld")
    with pytest.raises(ConfigError, match="at least"):
        kld_chunks([5] * 10, 16, 2)
