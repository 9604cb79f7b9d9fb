"""simulate --imatrix: the weighted quantizers llama-quantize runs with an importance matrix, on real Gemma
tensors, against the bytes ggml_quantize_chunk writes with the same weights (llama-cpp-python's libggml)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import gguf
import jsonschema
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "quant"))

from ggml_ref import ggml_quantize  # noqa: E402
from helpers import GEMMA_CONFIG, gemma_tensors, run_cli, write_model  # noqa: E402
from imatrix_files import collector_stats, write_dat_imatrix, write_gguf_imatrix  # noqa: E402

import normscope  # noqa: E402
from normscope import simulate  # noqa: E402
from normscope.analysis import open_model  # noqa: E402
from normscope.errors import ConfigError  # noqa: E402
from normscope.report.schemas import schema  # noqa: E402

# GGUF name -> HF name, and the type Q4_K_M gives each (Gemma 3 270M)
PICKED = {"blk.5.ffn_down.weight": "model.layers.5.mlp.down_proj.weight",  # Q4_K
          "blk.4.ffn_down.weight": "model.layers.4.mlp.down_proj.weight",  # Q6_K (use_more_bits)
          "blk.0.attn_q.weight": "model.layers.0.self_attn.q_proj.weight",  # Q5_0 (640-wide rows fall back)
          "blk.16.attn_output.weight": "model.layers.16.self_attn.o_proj.weight"}  # Q4_K, 1024-wide rows
NO_ENTRY = "model.layers.3.mlp.up_proj.weight"


def _weights(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """quantize.cpp's load_imatrix for a dense tensor: sums / count in float32."""
    return (sums[0] / np.float32(counts[0])).astype(np.float32)


@pytest.fixture(scope="module")
def gemma_imatrix(gemma_hf, tmp_path_factory):
    with open_model(gemma_hf) as m:
        shapes = {g: (1, m.get(h).shape[-1]) for g, h in PICKED.items()}
    stats = collector_stats(shapes, seed=7, tokens=4096)
    path = write_gguf_imatrix(tmp_path_factory.mktemp("imx") / "gemma.imatrix.gguf", stats, chunk_count=8,
                              datasets=("wiki.train.raw",))
    return path, stats


@pytest.fixture(scope="module")
def weighted(gemma_hf, gemma_imatrix):
    return simulate(gemma_hf, schemes="Q4_K_M,Q8_0", include=[*PICKED.values(), NO_ENTRY],
                    imatrix=gemma_imatrix[0])


@pytest.mark.parametrize("gguf_name", list(PICKED))
def test_errors_equal_those_of_ggml_bytes_with_the_same_importance_weights(weighted, gemma_hf, gemma_imatrix,
                                                                           gguf_name):
    t = weighted.scheme("Q4_K_M").tensor(PICKED[gguf_name])
    assert t.imatrix == "used"
    w = _weights(*gemma_imatrix[1][gguf_name])
    with open_model(gemma_hf) as m:
        x = m.read(m.get(t.name))
    raw = ggml_quantize(x, t.type, imatrix=w)
    np.testing.assert_array_equal(normscope.quantize_blocks(x, t.type, imatrix=w), raw)  # the bytes themselves
    assert not np.array_equal(raw, ggml_quantize(x, t.type))  # the weighted path is another algorithm
    y = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[t.type]).reshape(x.shape)
    d = y.astype(np.float64) - x
    assert t.error.sqnr_db == pytest.approx(10 * math.log10((x.astype(np.float64) ** 2).sum() / (d ** 2).sum()),
                                            rel=1e-9)
    assert t.error.max_abs == float(np.abs(y - x).max())
    np.testing.assert_allclose([t.error.p50, t.error.p99, t.error.p999],
                               np.percentile(np.abs(y - x).astype(np.float64), [50, 99, 99.9]), rtol=1e-12)


def test_the_report_names_the_imatrix_and_the_tensors_without_an_entry(weighted, gemma_imatrix):
    u = weighted.imatrix
    assert u.path == str(gemma_imatrix[0]) and u.format == "gguf" and u.datasets == ("wiki.train.raw",)
    assert (u.chunk_count, u.chunk_size, u.entries, u.used) == (8, 512, 4, 4)
    assert u.missing == ("blk.3.ffn_up.weight",) and u.unused == ()
    q8 = weighted.scheme("Q8_0")
    assert {t.imatrix for t in q8.tensors if t.type} == {"ignored", "no entry"}
    assert any("Q8_0 ignore importance weights" in n for n in q8.notes)
    q4 = weighted.scheme("Q4_K_M")
    assert q4.tensor(NO_ENTRY).imatrix == "no entry"
    assert any("1 quantized tensors have no entry" in n and "blk.3.ffn_up.weight" in n for n in q4.notes)
    from normscope.report import terminal_report

    text = " ".join(terminal_report(weighted).split())  # long lines wrap
    assert f"imatrix: {gemma_imatrix[0]} (gguf; wiki.train.raw; 8 chunks of 512 tokens): 4 entries, used by 4 " \
           "tensors; 1 quantized tensors without an entry" in text
    assert weighted.to_dict()["imatrix"]["missing"] == ["blk.3.ffn_up.weight"]
    from normscope.report import report_html

    assert f"imatrix: {gemma_imatrix[0]} (gguf; wiki.train.raw;" in report_html(weighted)


def test_the_dat_file_of_the_same_collection_simulates_the_same(gemma_hf, gemma_imatrix, weighted, tmp_path):
    dat = write_dat_imatrix(tmp_path / "gemma.imatrix.dat", gemma_imatrix[1], chunk_size=4096, chunk_count=8)
    r = simulate(gemma_hf, schemes="Q4_K_M", include=list(PICKED.values()), imatrix=dat)
    for name in PICKED.values():  # ncall is 1: the weights, and so the bytes, are the same
        assert r.scheme("Q4_K_M").tensor(name).error == weighted.scheme("Q4_K_M").tensor(name).error
    assert r.imatrix.format == "dat" and r.imatrix.chunk_size is None


def _tiny(tmp_path):
    return write_model(tmp_path / "m", gemma_tensors(layers=2, hidden=256, ffn=512, vocab=256, heads=2,
                                                      head_dim=128), GEMMA_CONFIG)


def test_q2_k_s_is_refused_without_importance_weights_as_llama_quantize_refuses(tmp_path, capsys):
    model = _tiny(tmp_path)
    with pytest.raises(ConfigError, match="Q2_K_S: .* llama-quantize makes only with an importance matrix"):
        simulate(model, schemes="Q2_K_S")
    with open_model(model) as m:
        names = [t.gguf_name for t in m.tensors if t.gguf_name and len(t.shape) == 2]
        shapes = {n: (1, m.get(h.name).shape[-1]) for n in names for h in m.tensors if h.gguf_name == n}
    full = write_gguf_imatrix(tmp_path / "full.gguf", collector_stats(shapes))
    r = simulate(model, schemes="Q2_K_S", imatrix=full)
    assert all(t.imatrix in ("used", None) for t in r.scheme("Q2_K_S").tensors)
    code, out, err = run_cli(["simulate", str(model), "-s", "Q2_K_S,Q8_0", "--imatrix", str(full), "--json", "-",
                              "-q"], capsys)
    doc = json.loads(out)
    jsonschema.validate(doc, schema("simulate"))
    assert code == 0 and doc["schema_version"] == "1.2" and doc["imatrix"]["used"] == len(shapes)
    part = write_gguf_imatrix(tmp_path / "part.gguf", collector_stats({n: s for n, s in shapes.items()
                                                                      if "attn_k" not in n}))
    with pytest.raises(ConfigError, match="has no entry for blk.0.attn_k.weight"):
        simulate(model, schemes="Q2_K_S", imatrix=part)


def test_refused_importance_matrices_are_one_line_and_exit_2(tmp_path, capsys):
    model = _tiny(tmp_path)
    with open_model(model) as m:
        q = m.get("model.layers.0.self_attn.q_proj.weight")
    sums, counts = collector_stats({q.gguf_name: (1, q.shape[-1])})[q.gguf_name]
    sums[0, 3] = np.nan
    write_gguf_imatrix(tmp_path / "nan.gguf", {q.gguf_name: (sums, counts)})
    wrong = write_gguf_imatrix(tmp_path / "wrong.gguf", collector_stats({q.gguf_name: (1, 64)}))
    (tmp_path / "junk.dat").write_bytes(b"\xff\xff\xff\x7f" + b"\0" * 40)
    for bad, says in (("nan.gguf", "holds 1 non-finite values; llama-quantize refuses it"),
                      ("wrong.gguf", "collected on another model"), ("junk.dat", "claims 2147483647 entries"),
                      ("absent.gguf", "no such importance-matrix file")):
        code, out, err = run_cli(["simulate", str(model), "--scheme", "Q4_K_M", "--imatrix", str(tmp_path / bad)],
                                 capsys)
        assert code == 2 and says in err and len(err.strip().splitlines()) == 1, err
    assert wrong.exists()


@pytest.mark.parametrize("chunk_elements", [40 * 256, 1 << 20])
def test_a_moe_tensor_takes_each_experts_weights(tmp_path, chunk_elements):
    """llama-quantize quantizes expert i03 of a (n_expert, rows, n_per_row) tensor with imatrix + i03 * n_per_row;
    an expert no token reached weighs 1. Chunks never straddle two experts (here 32 rows of 96 per expert)."""
    from helpers import write_gguf

    rng = np.random.default_rng(0)
    experts = rng.normal(0, 0.02, (4, 96, 256)).astype(np.float32)
    model = write_gguf(tmp_path / "moe.gguf", {
        "token_embd.weight": ("F32", rng.normal(0, 0.02, (64, 256))), "blk.0.attn_norm.weight": ("F32", np.ones(256)),
        "blk.0.ffn_up_exps.weight": ("F32", experts), "output_norm.weight": ("F32", np.ones(256))},
        arch="qwen2moe", kv={"qwen2moe.block_count": 1, "qwen2moe.expert_count": 4})
    stats = collector_stats({"blk.0.ffn_up_exps.weight": (4, 256)}, idle={"blk.0.ffn_up_exps.weight": [2]})
    imx = write_gguf_imatrix(tmp_path / "moe.imatrix.gguf", stats)
    from normscope.analysis.simulate import simulate_model

    with open_model(model) as m:
        r = simulate_model(m, ["Q4_K_M"], include=["blk.0.ffn_up_exps.weight"], chunk_elements=chunk_elements,
                           imatrix=normscope.read_imatrix(imx))
    t = r.scheme("Q4_K_M").tensor("blk.0.ffn_up_exps.weight")
    assert t.type == "Q4_K" and t.imatrix == "used"
    sums, counts = stats["blk.0.ffn_up_exps.weight"]
    y = np.empty_like(experts)
    for e in range(4):
        w = np.ones(256, np.float32) if counts[e] == 0 else (sums[e] / np.float32(counts[e])).astype(np.float32)
        raw = ggml_quantize(experts[e], "Q4_K", imatrix=w)
        y[e] = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType.Q4_K).reshape(96, 256)
    d = y.astype(np.float64) - experts
    assert t.error.sqnr_db == pytest.approx(10 * math.log10((experts.astype(np.float64) ** 2).sum() / (d ** 2).sum()),
                                            rel=1e-9)
    assert t.error.max_abs == float(np.abs(y - experts).max())


def test_recipe_measures_with_the_importance_matrix_as_simulate_does(tmp_path, capsys):
    model = _tiny(tmp_path)
    with open_model(model) as m:
        shapes = {t.gguf_name: (1, t.shape[-1]) for t in m.tensors if t.gguf_name and len(t.shape) == 2}
    imx = write_gguf_imatrix(tmp_path / "i.gguf", collector_stats(shapes, seed=11))
    r = normscope.recipe(model, budget_bpw=6.0, imatrix=imx)
    s = simulate(model, schemes="Q4_K_M,Q5_K_M", imatrix=imx)
    plain = simulate(model, schemes="Q4_K_M")
    for ft in ("Q4_K_M", "Q5_K_M"):
        assert r.plan(ft).sqnr_db == pytest.approx(s.scheme(ft).sqnr_db, rel=1e-12)
    assert r.plan("Q4_K_M").sqnr_db != pytest.approx(plain.scheme("Q4_K_M").sqnr_db, rel=1e-6)
    assert r.llama_quantize[0] == f"--imatrix {imx}" and r.options["imatrix"] == str(imx)
    code, out, err = run_cli(["recipe", model, "--budget-bpw", "6", "--imatrix", tmp_path / "absent.gguf"], capsys)
    assert code == 2 and "no such importance-matrix file" in err
