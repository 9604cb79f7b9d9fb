"""normscope imatrix FILE / A B: the summary and the comparison against numpy and scipy on the weights
llama-quantize derives, the coverage of a model, and the CLI (JSON schema, one line and exit 2 on bad input)."""

from __future__ import annotations

import json
import math

import jsonschema
import numpy as np
import pytest
import scipy.stats
from helpers import GEMMA_CONFIG, gemma_tensors, run_cli, write_model
from imatrix_files import collector_stats, write_dat_imatrix, write_gguf_imatrix

import normscope
from normscope.analysis import open_model
from normscope.analysis.metrics.ranks import ranks, spearman
from normscope.report.schemas import schema


def test_a_tensors_concentration_figures(tmp_path):
    n = 300
    sums = np.full((1, n), 2.0, np.float32)
    sums[0, 7], sums[0, 123], sums[0, 5] = 600.0, 300.0, 100.0
    counts = np.array([4])
    moe = collector_stats({"blk.0.ffn_up_exps.weight": (3, 64)}, idle={"blk.0.ffn_up_exps.weight": [1]})
    path = write_gguf_imatrix(tmp_path / "i.gguf", {"blk.0.attn_q.weight": (sums, counts), **moe})
    r = normscope.summarize_imatrix(path)
    t = next(t for t in r.tensors if t.name == "blk.0.attn_q.weight")
    w = sums[0].astype(np.float64) / 4
    k = math.ceil(n / 100)  # 3 columns
    assert t.top1_share == pytest.approx(np.sort(w)[::-1][:k].sum() / w.sum(), rel=1e-12)
    p = w / w.sum()
    assert t.entropy == pytest.approx(-(p * np.log2(p)).sum() / np.log2(n), rel=1e-12)
    assert t.dominant[:3] == (7, 123, 5) and t.dominant_share[0] == pytest.approx(150 / w.sum())
    assert (t.tokens, t.idle_experts, t.non_finite, t.n_expert) == (4, 0, 0, 1)
    assert t.mean == pytest.approx(w.mean())
    m = next(t for t in r.tensors if t.name == "blk.0.ffn_up_exps.weight")
    s, c = moe["blk.0.ffn_up_exps.weight"]
    profile = np.stack([s[0] / np.float32(c[0]), s[2] / np.float32(c[2])]).astype(np.float64).mean(axis=0)
    assert m.idle_experts == 1 and m.n_expert == 3 and m.mean == pytest.approx(profile.mean(), rel=1e-12)
    assert r.unreached == () and any("1 experts in 1 MoE tensors saw no token" in x for x in r.notes)
    assert r.file.entries == 2 and r.file.format == "gguf"


def test_ranks_and_spearman_equal_scipys():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 20, 500).astype(float)  # many ties
    b = a + rng.normal(0, 5, 500)
    np.testing.assert_array_equal(ranks(a), scipy.stats.rankdata(a))
    assert spearman(a, b) == pytest.approx(scipy.stats.spearmanr(a, b).statistic, rel=1e-12)
    assert math.isnan(spearman(np.ones(5), b[:5]))


def test_two_collections_compared(tmp_path):
    names = {"blk.0.attn_q.weight": (1, 256), "blk.0.ffn_down.weight": (1, 512), "blk.1.attn_q.weight": (1, 256)}
    a = write_gguf_imatrix(tmp_path / "a.gguf", collector_stats(names, seed=1))
    b_stats = collector_stats(dict(list(names.items())[:2]), seed=2)
    b_stats["blk.2.attn_k.weight"] = collector_stats({"x": (1, 64)})["x"]
    b_stats["blk.0.attn_q.weight"] = (collector_stats({"x": (1, 128)})["x"])  # another size
    b = write_dat_imatrix(tmp_path / "b.dat", b_stats, chunk_size=512)
    r = normscope.compare_imatrices(a, b)
    assert [p.name for p in r.pairs] == ["blk.0.ffn_down.weight"]
    assert r.only_a == ("blk.1.attn_q.weight",) and r.only_b == ("blk.2.attn_k.weight",)
    assert r.mismatched == ("blk.0.attn_q.weight",)
    wa, wb = normscope.read_imatrix(a)["blk.0.ffn_down.weight"], normscope.read_imatrix(b)["blk.0.ffn_down.weight"]
    p = r.pairs[0]
    assert p.cosine == pytest.approx(float(wa.astype(np.float64) @ wb / np.linalg.norm(wa) / np.linalg.norm(wb)))
    assert p.spearman == pytest.approx(scipy.stats.spearmanr(wa, wb).statistic, rel=1e-12)
    same = normscope.compare_imatrices(a, a)
    assert all(q.cosine == pytest.approx(1) and q.spearman == pytest.approx(1) and q.top1_overlap == 1
               for q in same.pairs)
    assert same.median_spearman == pytest.approx(1)


def _tiny(tmp_path):
    return write_model(tmp_path / "m", gemma_tensors(layers=2, hidden=256, ffn=512, vocab=256, heads=2,
                                                      head_dim=128), GEMMA_CONFIG)


def test_coverage_of_a_model(tmp_path):
    model = _tiny(tmp_path)
    with open_model(model) as m:
        shapes = {t.gguf_name: (1, t.shape[-1]) for t in m.tensors if t.gguf_name and len(t.shape) == 2}
        params = {t.gguf_name: t.n_params for t in m.tensors if t.gguf_name in shapes}
    assert len(shapes) == 15  # token_embd and 7 linears per layer
    stats = collector_stats({n: s for n, s in shapes.items() if not n.startswith("blk.1.ffn")})
    stats["blk.0.attn_q.weight"] = collector_stats({"x": (1, 64)})["x"]
    stats["blk.9.attn_q.weight"] = collector_stats({"x": (1, 256)})["x"]
    r = normscope.summarize_imatrix(write_gguf_imatrix(tmp_path / "i.gguf", stats), model)
    c = r.coverage
    missing = ("blk.1.ffn_down.weight", "blk.1.ffn_gate.weight", "blk.1.ffn_up.weight")
    assert (c.quantized, c.covered, c.missing, c.mismatched, c.extra) == (
        15, 11, missing, ("blk.0.attn_q.weight",), ("blk.9.attn_q.weight",))
    covered = sum(v for n, v in params.items() if n not in missing and n != "blk.0.attn_q.weight")
    assert c.covered_params == pytest.approx(covered / sum(params.values()))
    assert any("another model" in n for n in r.notes)


def test_cli_summary_compare_json_and_bad_input(tmp_path, capsys):
    model = _tiny(tmp_path)
    stats = collector_stats({"blk.0.attn_q.weight": (1, 256), "blk.0.ffn_up_exps.weight": (2, 64)},
                            idle={"blk.0.attn_q.weight": [0]})
    a = write_gguf_imatrix(tmp_path / "a.gguf", stats, chunk_count=3)
    code, out, err = run_cli(["imatrix", a, "--model", model, "--json", "-", "-q"], capsys)
    doc = json.loads(out)
    jsonschema.validate(doc, schema("imatrix"))
    assert code == 0 and doc["unreached"] == ["blk.0.attn_q.weight"] and doc["coverage"]["covered"] == 1
    code, out, _ = run_cli(["imatrix", a, "--html", tmp_path / "r.html"], capsys)
    assert code == 0 and "blk.0.ffn_up_exps.weight" in out and "imatrix: " in out
    assert "blk.0.ffn_up_exps.weight" in (tmp_path / "r.html").read_text()
    b = write_dat_imatrix(tmp_path / "b.dat", stats)
    code, out, _ = run_cli(["imatrix", a, b, "--json", "-", "-q"], capsys)
    doc = json.loads(out)
    jsonschema.validate(doc, schema("imatrix_compare"))
    assert code == 0 and doc["b"]["format"] == "dat" and doc["only_a"] == ["blk.0.attn_q.weight"]
    (tmp_path / "bad.dat").write_bytes(b"\x01\0\0\0\x50\0\0\0" + b"abc" * 4)
    for args, says in (([tmp_path / "bad.dat"], "past the end of the file"),
                       ([a, a, a], "one file to summarise or two to compare"),
                       ([a, b, "--model", model], "--model goes with one file")):
        code, out, err = run_cli(["imatrix", *args], capsys)
        assert code == 2 and says in err and len(err.strip().splitlines()) == 1, err
