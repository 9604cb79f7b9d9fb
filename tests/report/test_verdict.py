"""Every report opens with a verdict read off the result, and analyze's explanations come grouped, one note per kind
(large gains: per kind of norm) with the tensors listed, counted and limited by `top`."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import GEMMA_CONFIG, gemma_tensors, write_model
from normscope import analyze
from normscope.report import markdown_report, report_html, terminal_report
from normscope.report.findings import analyze_verdict, grouped_explanations
from normscope.report.text import verdict


@pytest.fixture(scope="module")
def gains(tmp_path_factory):
    """Four layers whose post-FFN norms hold large stored values, one pre-attention norm too, and a NaN-free model."""
    t = gemma_tensors(layers=4)
    for i, v in enumerate((1656.0, 900.0, 700.0, 300.0)):
        t[f"model.layers.{i}.post_feedforward_layernorm.weight"][5] = v
    t["model.layers.2.input_layernorm.weight"][3] = 250.0
    config = {**GEMMA_CONFIG, "num_hidden_layers": 4}
    return analyze(write_model(tmp_path_factory.mktemp("v") / "m", t, config, "F32"))


def test_explanations_are_grouped_by_kind_with_every_tensor_counted(gains):
    notes = grouped_explanations(gains, top=10)
    assert len(gains.explanations) == 5  # one per tensor in the JSON
    assert [sev for sev, _ in notes] == ["info", "info"]
    ffn, pre = (text for _, text in notes)
    assert ffn.startswith("4 post-FFN norms with |gain| above 100; the worst, "
                          "model.layers.0.post_feedforward_layernorm.weight: stored 1656 = gain 1657")
    assert ("also model.layers.1.post_feedforward_layernorm.weight (|gain| 901), "
            "model.layers.2.post_feedforward_layernorm.weight (|gain| 701), "
            "model.layers.3.post_feedforward_layernorm.weight (|gain| 301)") in ffn
    assert pre.startswith("model.layers.2.input_layernorm.weight: stored 250 = gain 251")


def test_top_limits_the_tensors_a_grouped_note_lists(gains):
    (_, ffn), _ = grouped_explanations(gains, top=2)
    assert "also model.layers.1.post_feedforward_layernorm.weight (|gain| 901) and 2 more (--top)" in ffn
    assert "layers.2.post_feedforward" not in ffn
    text = terminal_report(gains, top=2, width=400)
    assert text.count("[info]") == 2 and "more explanations" not in text
    md = markdown_report(gains, top=2)
    assert md.count("- **info**: ") == 2 and "### Explanations (5 tensors)" in md


def test_analyze_verdict_is_read_off_the_result(gains):
    lines = analyze_verdict(gains)
    assert lines[0] == f"no damage (no NaN or Inf in {len(gains.tensors)} tensors)"
    n_norms = sum(t.norm is not None for t in gains.tensors)
    assert lines[1].startswith(f"5 of {n_norms} norms have |gain| above 100 (up to 1657, "
                               "model.layers.0.post_feedforward_layernorm.weight), in the x̂ · (1 + w) convention of "
                               "Gemma's RMSNorm; the 4 post-FFN ones are how Gemma was trained")
    linear = [t for t in gains.tensors if t.weight is not None and t.role.is_linear]
    worst = max(linear, key=lambda t: t.weight.absmax_over_std)
    assert lines[2].startswith(f"largest weight outlier: {worst.name}, ")
    assert f"= {worst.weight.absmax_over_std:.1f}σ" in lines[2]


def test_every_output_opens_with_the_verdict(gains):
    lines = verdict(gains)
    assert lines == analyze_verdict(gains)
    text = terminal_report(gains, width=1000)
    assert text.splitlines()[:len(lines)] == lines
    md = markdown_report(gains)
    assert md.startswith(f"## normscope analyze\n\n> **{lines[0]}**  \n> {lines[1]}")
    page = report_html(gains)
    assert page.index('<section id="verdict">') < page.index('<section id="summary">')
    assert '<a href="#verdict">Verdict</a>' in page


def test_damage_leads_the_verdict(tmp_path):
    t = gemma_tensors()
    t["model.layers.0.mlp.up_proj.weight"][0, :3] = np.nan
    r = analyze(write_model(tmp_path / "m", t, GEMMA_CONFIG, "F32"))
    first = analyze_verdict(r)[0]
    assert first.startswith("DAMAGED: 1 of 28 tensors hold NaN or Inf values (model.layers.0.mlp.up_proj.weight)")
    assert grouped_explanations(r)[0] == ("error", "model.layers.0.mlp.up_proj.weight: 3 NaN and 0 Inf values: the "
                                          "checkpoint is damaged; no convention or quantizer explains that")


def test_real_gemma_verdict_and_notes(gemma_gguf):
    """The published Gemma 3 270M: 45 explanations become four notes; the verdict names what matters."""
    r = analyze(gemma_gguf)
    lines = analyze_verdict(r)
    assert lines[0] == "no damage (no NaN or Inf in 236 tensors)"
    assert lines[1].startswith("45 of 109 norms have |gain| above 100 (up to 1657, "
                               "model.layers.16.post_feedforward_layernorm.weight), in the x̂ · (1 + w) convention "
                               "of Gemma's RMSNorm; the 35 post-FFN and post-attention ones are how Gemma was trained")
    assert lines[2].startswith("largest weight outlier: model.layers.1.self_attn.q_proj.weight, |w| 1.594 = 40.3σ "
                               "(1,348 weights beyond 6σ)")
    notes = grouped_explanations(r, top=5)
    assert [t.split(";")[0] for _, t in notes] == [
        "18 post-FFN norms with |gain| above 100", "17 post-attention norms with |gain| above 100",
        "model.norm.weight: stored 300 = gain 301 (Gemma's RMSNorm computes x̂ · (1 + w))",
        "9 pre-attention norms with |gain| above 100"]
