"""simulate against its references: the published Q4_K_M file, llama.cpp's own quantizer, optimum-quanto, numpy."""

from __future__ import annotations

import math
import sys
from collections import Counter
from pathlib import Path

import gguf
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "quant"))

from ggml_ref import ggml_quantize  # noqa: E402
from helpers import (GEMMA_CONFIG, LLAMA_CONFIG, gemma_tensors, llama_tensors, unmapped_model,  # noqa: E402
                     write_model)
from normscope import simulate  # noqa: E402
from normscope.analysis import open_model  # noqa: E402
from normscope.analysis.simulate import simulate_model  # noqa: E402
from normscope.errors import ConfigError, UnknownNameError  # noqa: E402
from normscope.io.gguf_file import read_gguf_header  # noqa: E402
from normscope.quant import fake_quantize  # noqa: E402


@pytest.fixture(scope="module")
def gemma_q4_k_m(gemma_hf):
    return simulate(gemma_hf, schemes="Q4_K_M").scheme("Q4_K_M")


def test_q4_k_m_of_the_hf_export_reproduces_the_published_file(gemma_q4_k_m, gemma_gguf):
    """Every one of the 236 tensor types, and the tensor bytes to the byte."""
    _, entries = read_gguf_header(gemma_gguf)
    published = {e.name: e for e in entries}
    sims = {t.gguf_name: t for t in gemma_q4_k_m.tensors}
    assert set(sims) == set(published) and len(sims) == 236
    assert {n: t.stored_as for n, t in sims.items()} == {n: e.dtype for n, e in published.items()}
    assert gemma_q4_k_m.type_counts == dict(Counter(e.dtype for e in entries))
    assert gemma_q4_k_m.nbytes == sum(e.nbytes for e in entries)
    assert all(t.type is None and "1-D" in t.reason for t in gemma_q4_k_m.tensors if t.role.is_norm)
    assert any("fall back Q4_K → Q5_0" in n and "640" in n for n in gemma_q4_k_m.notes)


@pytest.mark.parametrize("name", ["model.layers.5.mlp.down_proj.weight", "model.layers.4.mlp.down_proj.weight",
                                  "model.layers.16.self_attn.o_proj.weight"], ids=["Q4_K", "Q6_K", "Q4_K-o_proj"])
def test_errors_equal_those_of_llama_cpp_bytes(gemma_q4_k_m, gemma_hf, name):
    """simulate's numbers = numpy on the bytes llama.cpp's ggml_quantize_chunk writes, read by gguf-py."""
    t = gemma_q4_k_m.tensor(name)
    with open_model(gemma_hf) as m:
        info = m.get(name)
        x = m.read(info)
        gain = m.read(m.get(t.norm_aware.norm)) + 1.0  # Gemma: 1 + w
    raw = ggml_quantize(x, t.type)
    y = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[t.type]).reshape(x.shape)
    d = y.astype(np.float64) - x
    x64 = x.astype(np.float64)
    assert t.error.sqnr_db == pytest.approx(10 * math.log10((x64 ** 2).sum() / (d ** 2).sum()), rel=1e-9)
    assert t.error.max_abs == float(np.abs(y - x).max())
    np.testing.assert_allclose([t.error.p50, t.error.p99, t.error.p999],
                               np.percentile(np.abs(y - x).astype(np.float64), [50, 99, 99.9]), rtol=1e-12)
    assert t.norm_aware.axis == "out"  # post_feedforward / post_attention norm weighs the output rows
    w = gain.astype(np.float64)[:, None] ** 2
    assert t.norm_aware.sqnr_db == pytest.approx(10 * math.log10((w * x64 ** 2).sum() / (w * d ** 2).sum()), rel=1e-9)
    # fp16 block scales read back from llama.cpp's own bytes
    offset = {"Q4_K": 0, "Q6_K": 208}[t.type]
    size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[t.type]][1]
    scales = raw.reshape(-1, size)[:, offset:offset + 2].copy().view(np.float16).astype(np.float32).ravel()
    assert t.health.scale_subnormal == int(((scales != 0) & (np.abs(scales) < 2 ** -14)).sum())
    assert t.health.blocks == scales.size


def test_requantizing_the_published_q5_0_tensors_is_exact(gemma_gguf):
    r = simulate(gemma_gguf, schemes="Q5_0", include=["*attn_q*", "*attn_k.*"]).scheme("Q5_0")
    q5 = [t for t in r.tensors if t.source_dtype == "Q5_0"]
    assert len(q5) == 36
    for t in q5:
        assert t.type == "Q5_0" and t.error.sqnr_db == math.inf and t.error.max_abs == 0.0 and t.error.p999 == 0.0


def test_tensors_a_simulated_scheme_leaves_alone_keep_the_gguf_sources_storage(gemma_gguf):
    """int4 on the published GGUF: its F32 norms stay F32 and its Q8_0 embedding Q8_0, and the sizes are those
    bytes (they were once reported as BF16, 16 bits a weight)."""
    _, entries = read_gguf_header(gemma_gguf)
    stored = {e.name: e for e in entries}
    r = simulate(gemma_gguf, schemes="int4", include=["*norm*", "*embed*"]).scheme("int4")
    alone = [t for t in r.tensors if t.type is None]
    assert {t.stored_as for t in alone} == {"F32", "Q8_0"}
    for t in alone:
        e = stored[t.gguf_name]
        assert t.stored_as == e.dtype == t.source_dtype and t.nbytes == e.nbytes
    embed = r.tensor("model.embed_tokens.weight")
    assert embed.nbytes == 262144 * 640 // 32 * 34 and embed.bits_per_weight == 8.5


def test_int4_and_int8_equal_optimum_quanto(tmp_path):
    torch = pytest.importorskip("torch")
    quanto = pytest.importorskip("optimum.quanto")
    tensors = llama_tensors(hidden=256, ffn=640)
    path = write_model(tmp_path / "llama", tensors, LLAMA_CONFIG, "F32")
    r = simulate(path, schemes="int4,int8")
    for scheme, qtype in (("int4", quanto.qint4), ("int8", quanto.qint8)):
        for name in ("model.layers.0.mlp.down_proj.weight", "model.layers.1.self_attn.k_proj.weight"):
            w = tensors[name].astype(np.float32)
            lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
            lin.weight.data = torch.from_numpy(w.copy())
            model = torch.nn.Sequential(lin)
            quanto.quantize(model, weights=qtype)
            quanto.freeze(model)
            y = model[0].weight.dequantize().float().detach().numpy()
            d = y.astype(np.float64) - w
            t = r.scheme(scheme).tensor(name)
            assert t.error.rmse == pytest.approx(math.sqrt(np.mean(d ** 2)), rel=1e-9), (scheme, name)
    # quanto, GPTQ and AWQ never touch norms or embeddings; lm_head only when asked
    s = r.scheme("int4")
    assert s.tensor("lm_head.weight").type is None and s.tensor("model.embed_tokens.weight").type is None
    assert simulate(path, schemes="int4", include_lm_head=True).scheme("int4").tensor("lm_head.weight").type == "int4"


@pytest.mark.parametrize("scheme", ["fp8", "int4_sym_tensor", "fp8_block", "Q4_K_M", "int4", "nf4", "fp4_g256"])
def test_chunked_equals_whole(tmp_path, scheme):
    """Per-tensor scales (fp8, *_sym_tensor) and 128-row tiles (fp8_block) survive row chunking."""
    tensors = llama_tensors(hidden=256, ffn=512, seed=3)
    d = write_model(tmp_path / "m", tensors, LLAMA_CONFIG, "F32")
    with open_model(d) as m:
        whole = simulate_model(m, [scheme], chunk_elements=1 << 30).schemes[0]
        chunked = simulate_model(m, [scheme], chunk_elements=700).schemes[0]
    assert _close(whole.to_dict(), chunked.to_dict())
    name = "model.layers.0.mlp.up_proj.weight"
    fmt = whole.tensor(name).type
    y = fake_quantize(tensors[name].astype(np.float32), fmt)
    dd = y.astype(np.float64) - tensors[name].astype(np.float32)
    assert whole.tensor(name).error.rmse == pytest.approx(math.sqrt(np.mean(dd ** 2)), rel=1e-9)


def _close(a, b) -> bool:
    """Equal, floats within 1e-10 relative or 1e-12 absolute (float64 sums over other chunk boundaries)."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return a == b or math.isclose(a, b, rel_tol=1e-10, abs_tol=1e-12)
    return a == b


def test_planted_post_ffn_gain_amplifies_the_error_of_its_row(tmp_path):
    """Gemma's 1657 post-FFN gain weighs down_proj's row 5: its norm-aware SQNR follows that row's error."""
    tensors = gemma_tensors(hidden=256, ffn=512)
    name = "model.layers.1.mlp.down_proj.weight"
    tensors[name][5, :] *= 30.0  # a loud row: its own block scales, its own error
    d = write_model(tmp_path / "g", tensors, GEMMA_CONFIG, "F32")
    t = simulate(d, schemes="int4_sym_channel").scheme("int4_sym_channel").tensor(name)
    assert t.norm_aware.norm == "model.layers.1.post_feedforward_layernorm.weight" and t.norm_aware.axis == "out"
    x = tensors[name].astype(np.float32)
    dd = fake_quantize(x, "int4_sym_channel").astype(np.float64) - x
    g = tensors["model.layers.1.post_feedforward_layernorm.weight"].astype(np.float32).astype(np.float64) + 1.0
    w = (g ** 2)[:, None]
    expect = 10 * math.log10((w * x.astype(np.float64) ** 2).sum() / (w * dd ** 2).sum())
    assert t.norm_aware.sqnr_db == pytest.approx(expect, rel=1e-9)
    row5 = 10 * math.log10((x[5].astype(np.float64) ** 2).sum() / (dd[5] ** 2).sum())
    assert abs(t.norm_aware.sqnr_db - row5) < 0.5  # the 1657 gain makes row 5 all that matters


def test_rows_no_format_fits_are_reported_not_crashed(tmp_path):
    tensors = llama_tensors(hidden=100, ffn=200)
    d = write_model(tmp_path / "odd", tensors, LLAMA_CONFIG, "F32")
    r = simulate(d, schemes="int4_sym_g128,Q4_K_M")
    t = r.scheme("int4_sym_g128").tensor("model.layers.0.self_attn.q_proj.weight")
    assert t.type is None and "not whole groups of 128" in t.reason
    assert any("int4_sym_g128" in w and "q_proj" in w for w in r.warnings)
    q = r.scheme("Q4_K_M").tensor("model.layers.0.self_attn.q_proj.weight")
    assert q.type == "F16" and "100 % 32 != 0" in q.reason


def test_unknown_scheme_lists_the_valid_ones(tmp_path):
    with pytest.raises(UnknownNameError, match=r"unknown scheme 'Q4_K_X'; valid: .*Q4_K_M.*int4"):
        simulate(tmp_path, schemes="Q4_K_M,Q4_K_X")
    with pytest.raises(ConfigError, match="no quantization scheme"):
        simulate(tmp_path, schemes="")


def test_two_worker_processes_give_the_same_result(gemma_q4_k_m, gemma_hf):
    """Each tensor is measured whole in one place: the JSON is identical whatever the number of workers."""
    parallel = simulate(gemma_hf, schemes="Q4_K_M", jobs=2).scheme("Q4_K_M")
    assert parallel.to_dict() == gemma_q4_k_m.to_dict()


def test_nan_and_inf_are_error_findings_in_simulate(tmp_path, capsys):
    """A NaN weight and an infinite norm gain: simulate says the checkpoint is damaged (it once showed only
    "nan" cells and exited 0 with no word)."""
    from helpers import run_cli

    t = gemma_tensors(hidden=256, ffn=512)
    t["model.layers.1.mlp.down_proj.weight"][3, 5] = np.nan  # a NaN weight
    t["model.layers.0.post_feedforward_layernorm.weight"][7] = np.inf  # an infinite norm gain
    model = write_model(tmp_path / "m", t, GEMMA_CONFIG, "F32")
    r = simulate(model, schemes="Q8_0,int4")
    assert [e.split(":")[0] for e in r.errors] == ["model.layers.0.post_feedforward_layernorm.weight",
                                                   "model.layers.1.mlp.down_proj.weight"]
    assert "1 NaN or infinite value: the checkpoint is damaged" in r.errors[1]
    down = next(x for x in r.scheme("Q8_0").tensors if x.name == "model.layers.1.mlp.down_proj.weight")
    assert down.error.non_finite == 1 and np.isfinite(down.error.max_abs)
    code, out, err = run_cli(["simulate", model, "--scheme", "Q8_0"], capsys)
    assert code == 0 and "NON-FINITE VALUES in 2 tensors: the checkpoint is damaged" in out
    assert "[error] model.layers.1.mlp.down_proj.weight: 1 NaN or infinite value" in " ".join(out.split())


def test_an_architecture_without_gguf_names_says_why_the_gguf_plan_is_empty(tmp_path):
    """simulate said 'Q4_K_M 0 of N tensors … inf' with no word (issue 21 item 5): a checkpoint whose names
    llama.cpp's converter has no mapping for gets a note, and the non-GGUF schemes still quantize it."""
    d = unmapped_model(tmp_path / "odd")
    r = simulate(d, schemes="Q4_K_M,int8")
    q = r.scheme("Q4_K_M")
    assert q.quantized_params == 0
    assert any("no tensor has a GGUF name" in n and "convert_hf_to_gguf.py" in n for n in q.notes)
    assert r.scheme("int8").quantized_params == 2 * 64 * 64
    assert not any("GGUF name" in n for n in r.scheme("int8").notes)
