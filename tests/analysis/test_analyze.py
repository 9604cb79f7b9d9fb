"""analyze on tiny seeded checkpoints of several layouts and dtypes, and on the real models."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import (BERT_CONFIG, GEMMA_CONFIG, LLAMA_CONFIG, ST_DTYPES, bert_tensors, gemma_tensors,
                     llama_tensors, write_gguf, write_model)
from normscope import analyze
from normscope.results import NormConvention, Role


@pytest.mark.parametrize("dtype", ["F32", "BF16", "F16", "F8_E4M3"])
@pytest.mark.parametrize("shards", [1, 3], ids=["single", "sharded"])
@pytest.mark.parametrize("chunk", [64, 1 << 24], ids=["small-chunks", "whole"])
def test_gemma_layout_statistics_equal_numpy(tmp_path, dtype, shards, chunk):
    tensors = gemma_tensors()
    if dtype == "F8_E4M3":
        tensors = {k: np.clip(v, -400, 400) for k, v in tensors.items()}  # e4m3 tops out at 448
    write_model(tmp_path / "m", tensors, GEMMA_CONFIG, dtype, shards)
    r = analyze(tmp_path / "m", chunk_elements=chunk, top_k=4)
    assert r.summary.architecture == "gemma3" and r.summary.n_tensors == len(tensors)
    for t in r.tensors:
        stored = tensors[t.name].astype(ST_DTYPES[dtype]).astype(np.float64)
        if t.norm:
            assert t.norm.convention is NormConvention.ONE_PLUS_W
            gain = stored + 1.0
            assert t.norm.stored_max == stored.max() and t.norm.gain_max == gain.max()
            assert t.norm.gain_p99 == pytest.approx(np.percentile(np.abs(gain), 99))
            assert t.norm.negative_gain_count == int((gain < 0).sum())
        else:
            w = t.weight
            assert (w.min, w.max) == (stored.min(), stored.max())
            np.testing.assert_allclose(w.std, stored.std(), rtol=1e-4)
            np.testing.assert_allclose(w.mean, stored.mean(), rtol=1e-4, atol=1e-6 * stored.std())
            assert abs(w.top[0].value) == np.abs(stored).max()


def test_gemma_last_block_norm_reads_as_gain_1657(tmp_path):
    write_model(tmp_path / "m", gemma_tensors(), GEMMA_CONFIG, "BF16")
    r = analyze(tmp_path / "m")
    n = r.tensor("model.layers.1.post_feedforward_layernorm.weight").norm
    assert (n.stored_max, n.gain_max, n.top_channels[0].index) == (1656.0, 1657.0, (5,))
    assert any("stored 1656 = gain 1657" in e.text for e in r.explanations)


def test_llama_norms_are_plain_w(tmp_path):
    tensors = llama_tensors()
    write_model(tmp_path / "m", tensors, LLAMA_CONFIG, "F32")
    r = analyze(tmp_path / "m")
    n = r.tensor("model.layers.0.post_attention_layernorm.weight")
    assert n.role is Role.NORM_PRE_FFN and n.norm.convention is NormConvention.W
    assert n.norm.gain_max == pytest.approx(float(tensors["model.layers.0.post_attention_layernorm.weight"].astype(
        np.float32).max()))
    assert not r.summary.tied_embeddings


def test_bert_layernorm_weight_and_bias(tmp_path):
    write_model(tmp_path / "m", bert_tensors(), BERT_CONFIG, "F32")
    r = analyze(tmp_path / "m")
    w, b = r.tensor("embeddings.LayerNorm.weight"), r.tensor("embeddings.LayerNorm.bias")
    assert w.norm.convention is NormConvention.LAYERNORM and w.role is Role.NORM_EMBED
    assert b.weight is not None and b.role is Role.NORM_EMBED


def test_unknown_architecture_warns_and_override_applies(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {"trf_blocks.0.norm1.scale": rng.normal(0, 1, 16) + 50, "trf_blocks.0.att.W_query.weight":
               rng.normal(0, 0.02, (16, 16)), "out_head.weight": rng.normal(0, 0.02, (32, 16))}
    write_model(tmp_path / "m", tensors, {"model_type": "scratch"}, "F32")
    r = analyze(tmp_path / "m")
    assert r.summary.architecture == "unknown" and "unknown architecture" in r.warnings[0]
    assert r.tensor("trf_blocks.0.norm1.scale").norm.convention is NormConvention.W
    r2 = analyze(tmp_path / "m", norm_convention="1+w")
    assert r2.tensor("trf_blocks.0.norm1.scale").norm.gain_max == pytest.approx(
        r.tensor("trf_blocks.0.norm1.scale").norm.gain_max + 1)
    r3 = analyze(tmp_path / "m", arch="gemma3")
    assert r3.summary.architecture_source == "override"


def test_include_exclude(tmp_path):
    write_model(tmp_path / "m", gemma_tensors(), GEMMA_CONFIG, "BF16")
    r = analyze(tmp_path / "m", include=["*layernorm*"], exclude=["*layers.0.*"])
    assert r.tensors and all("layernorm" in t.name and ".layers.0." not in t.name for t in r.tensors)


def test_small_gguf_gemma_norms_lose_the_converter_plus_one(tmp_path):
    rng = np.random.default_rng(0)
    path = write_gguf(tmp_path / "g.gguf", {
        "blk.0.post_ffw_norm.weight": ("F32", np.array([1657.0, 1.0, 0.5, 2.0])),
        "blk.0.ffn_down.weight": ("Q8_0", rng.normal(0, 0.02, (4, 64))),
        "token_embd.weight": ("Q8_0", rng.normal(0, 0.02, (8, 64))),
    }, kv={"gemma3.block_count": 1})
    r = analyze(path)
    n = r.tensor("model.layers.0.post_feedforward_layernorm.weight")
    assert n.source_name == "blk.0.post_ffw_norm.weight"
    assert (n.norm.stored_max, n.norm.gain_max, n.norm.stored_min) == (1656.0, 1657.0, -0.5)
    assert r.tensor("model.layers.0.mlp.down_proj.weight").role is Role.MLP_DOWN


# -- the real models --------------------------------------------------------------------------

def test_real_gemma_gguf(gemma_gguf):
    r = analyze(gemma_gguf)
    assert r.summary.architecture == "gemma3" and r.summary.n_tensors == 236
    assert r.summary.params_by_dtype == {"Q8_0": 169246720, "Q5_0": 63406080, "Q4_K": 23592960,
                                         "Q6_K": 11796480, "F32": 55936}
    n = r.tensor("model.layers.16.post_feedforward_layernorm.weight").norm
    assert (n.stored_max, n.gain_max) == (1656.0, 1657.0)
    post_ffn = sorted((t for t in r.tensors if t.role is Role.NORM_POST_FFN), key=lambda t: -t.norm.max_abs_gain)
    assert [t.layer for t in post_ffn[:3]] == [16, 17, 15]
    norms = sorted((t for t in r.tensors if t.norm), key=lambda t: -t.norm.max_abs_gain)
    assert {t.layer for t in norms[:3]} == {15, 16, 17}
    assert r.tensor("model.layers.15.post_attention_layernorm.weight").norm.gain_max == 713.0
    assert r.tensor("model.layers.7.post_feedforward_layernorm.weight").norm.stored_min == -133.0  # GGUF -132 - 1
    assert r.summary.tied_embeddings


def test_real_gemma_hf_export_agrees_with_the_gguf_for_every_norm(gemma_gguf, gemma_hf):
    a, b = analyze(gemma_gguf), analyze(gemma_hf)
    assert b.summary.n_tensors == 236 and b.summary.params_by_dtype == {"BF16": 268098176}
    norms_a = {t.name: t.norm for t in a.tensors if t.norm}
    norms_b = {t.name: t.norm for t in b.tensors if t.norm}
    assert len(norms_a) == 109 and norms_a.keys() == norms_b.keys()
    for name, na in norms_a.items():
        assert na == norms_b[name], name  # every figure, exactly
    n = b.tensor("model.layers.16.post_feedforward_layernorm.weight").norm
    assert (n.stored_max, n.gain_max) == (1656.0, 1657.0)


def test_real_minilm_layernorms_use_the_plain_convention(minilm_dir):
    r = analyze(minilm_dir)
    assert r.summary.architecture == "bert"
    lns = [t for t in r.tensors if "LayerNorm" in t.name]
    assert len(lns) == 2 + 6 * 4  # embeddings + 6 layers × (2 LayerNorms × weight, bias)
    for t in lns:
        if t.name.endswith(".weight"):
            assert t.norm.convention is NormConvention.LAYERNORM
            assert t.norm.gain_max == t.norm.stored_max  # no offset
        else:
            assert t.weight is not None
    assert not r.explanations or all(e.severity != "error" for e in r.explanations)
