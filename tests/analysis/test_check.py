"""check: rules, their sources and precedence, baselines, on synthetic and real checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import GEMMA_CONFIG, gemma_tensors, write_model
from normscope import check
from normscope.analysis.check.config import load_check_config
from normscope.errors import ConfigError, UnknownNameError
from normscope.testing import assert_checkpoint


@pytest.fixture
def tiny(tmp_path):
    return write_model(tmp_path / "tiny", gemma_tensors(), GEMMA_CONFIG, "F32")


def test_gamma_rule_fails_on_the_effective_gain(tiny):
    r = check(tiny, max_effective_gamma=1656.5, use_pyproject=False)  # stored 1656 -> gain 1657 fails
    assert not r.passed
    assert [(f.tensor, f.value) for f in r.failures] == [("model.layers.1.post_feedforward_layernorm.weight", 1657.0)]
    assert check(tiny, max_effective_gamma=1657, use_pyproject=False).passed


def test_nan_rule_is_on_by_default_and_can_be_turned_off(tmp_path):
    t = gemma_tensors()
    t["model.layers.0.mlp.up_proj.weight"][3, 4] = np.nan
    d = write_model(tmp_path / "nan", t, GEMMA_CONFIG, "F32")
    r = check(d, use_pyproject=False)
    assert not r.passed and r.failures[0].rule == "no_nan_inf"
    assert r.failures[0].tensor == "model.layers.0.mlp.up_proj.weight"
    assert check(d, no_nan_inf=False, use_pyproject=False).passed


def test_sources_later_override_earlier(tmp_path, tiny):
    (tmp_path / "pyproject.toml").write_text(
        "[tool.normscope.check]\nmax_effective_gamma = 3\nmax_kurtosis = 1000\n"
        "[tool.normscope.check.tensors.'*post_feedforward*']\nmax_effective_gamma = 5000\n")
    (tmp_path / "gate.toml").write_text("max_kurtosis = 500\n")
    cfg = load_check_config(cwd=tmp_path, config_file=tmp_path / "gate.toml", overrides={"max_kurtosis": 99})
    assert cfg.rules["max_effective_gamma"] == (3.0, str(tmp_path / "pyproject.toml"))
    assert cfg.rules["max_kurtosis"] == (99.0, "flag")
    assert cfg.rules["no_nan_inf"] == (True, "default")
    r = check(tiny, cwd=tmp_path)
    failing = {f.tensor for f in r.failures}
    assert "model.layers.1.post_feedforward_layernorm.weight" not in failing  # the glob table lifts it to 5000
    assert "model.layers.0.input_layernorm.weight" in failing


@pytest.mark.parametrize("text, error, message", [
    ("[tool.normscope.check]\nmax_gama = 1\n", UnknownNameError, "unknown rule .*'max_gama'; valid: "),
    ("[tool.normscope.check]\nmax_kurtosis = 'high'\n", ConfigError, "takes a number"),
    ("[tool.normscope.check]\nno_nan_inf = 3\n", ConfigError, "true or false"),
    ("[tool.normscope.check\n", ConfigError, "malformed TOML"),
    ("[tool.normscope]\ncheck = 3\n", ConfigError, "must be a table"),
], ids=["unknown-rule", "not-a-number", "flag-not-bool", "bad-toml", "not-a-table"])
def test_bad_configuration(tmp_path, text, error, message):
    (tmp_path / "pyproject.toml").write_text(text)
    with pytest.raises(error, match=message):
        load_check_config(cwd=tmp_path)


def test_baseline_drift(tmp_path, tiny):
    base = check(tiny, use_pyproject=False)
    (tmp_path / "base.json").write_text(json.dumps(base.to_dict()))
    t = gemma_tensors()
    t["model.layers.0.input_layernorm.weight"] *= 2.0  # a fine-tune that doubled one norm
    moved = write_model(tmp_path / "moved", t, GEMMA_CONFIG, "F32")
    r = check(moved, baseline=tmp_path / "base.json", max_norm_drift=0.05, use_pyproject=False)
    assert not r.passed
    assert [f.tensor for f in r.failures] == ["model.layers.0.input_layernorm.weight"]
    w = gemma_tensors()["model.layers.0.input_layernorm.weight"].astype(np.float32).astype(np.float64)
    old, new = np.abs(1 + w).max(), np.abs(1 + 2 * w).max()  # gains in Gemma's convention
    assert r.failures[0].value == pytest.approx((new - old) / old, rel=1e-6)
    with pytest.raises(ConfigError, match="needs|baseline"):
        check(moved, max_norm_drift=0.05, use_pyproject=False)


def test_baseline_must_be_a_normscope_document(tmp_path, tiny):
    (tmp_path / "x.json").write_text('{"hello": 1}')
    with pytest.raises(ConfigError, match="not a normscope analyze, simulate or check JSON"):
        check(tiny, baseline=tmp_path / "x.json", use_pyproject=False)


def test_assert_checkpoint_lists_failures(tiny):
    with pytest.raises(AssertionError, match="max_effective_gamma: model.layers.1.post_feedforward"):
        assert_checkpoint(tiny, max_effective_gamma=100, use_pyproject=False)
    assert assert_checkpoint(tiny, max_effective_gamma=2000, use_pyproject=False).passed


def test_real_gemma(gemma_hf):
    r = check(gemma_hf, max_effective_gamma=100, use_pyproject=False)
    assert not r.passed and r.failures[0].tensor == "model.layers.16.post_feedforward_layernorm.weight"
    offenders = {f.tensor for f in r.failures}
    assert {"model.layers.17.post_feedforward_layernorm.weight",
            "model.layers.15.post_feedforward_layernorm.weight"} <= offenders
    assert check(gemma_hf, max_effective_gamma=2000, use_pyproject=False).passed


# -- quantization rules (simulate) -------------------------------------------------------------------

@pytest.fixture
def llama(tmp_path):
    from helpers import LLAMA_CONFIG, llama_tensors

    return write_model(tmp_path / "llama", llama_tensors(hidden=256, ffn=512), LLAMA_CONFIG, "F32")


def test_min_sqnr_gates_each_quantized_tensor_of_each_scheme(llama):
    from normscope import simulate

    sim = simulate(llama, schemes="Q4_K_M,int4")
    sqnr = {(s.scheme, t.name): t.error.sqnr_db for s in sim.schemes for t in s.tensors if t.error}
    limit = sorted(v for (s, _), v in sqnr.items() if s == "int4")[3]  # the 3 worst int4 tensors fail
    r = check(llama, min_sqnr={"Q4_K_M": 10.0, "int4": limit}, use_pyproject=False)
    assert not r.passed
    assert sorted(f.tensor for f in r.failures) == sorted(n for (s, n), v in sqnr.items() if s == "int4" and v < limit)
    assert {f.scheme for f in r.failures} == {"int4"} and r.failures[0].message.startswith("int4: ")
    outcome = next(o for o in r.rules if o.rule == "min_sqnr")
    assert outcome.checked == sum(1 for s, _ in sqnr if s in ("Q4_K_M", "int4"))  # norms are never checked
    assert r.measurements["simulate"]["schema"] == "normscope.simulate"
    # the same rule from pyproject.toml, with a per-glob table turning it off for down_proj
    (llama.parent / "pyproject.toml").write_text(
        f"[tool.normscope.check]\nmin_sqnr = {{ int4 = {limit} }}\n"
        "[tool.normscope.check.tensors.'*down_proj*']\nmin_sqnr = false\n")
    r2 = check(llama, cwd=llama.parent)
    assert {f.tensor for f in r2.failures} == {f.tensor for f in r.failures if "down_proj" not in f.tensor}


def test_error_regression_against_a_baseline(tmp_path, llama):
    from helpers import LLAMA_CONFIG, llama_tensors

    base = check(llama, min_sqnr={"int4": 0.0}, use_pyproject=False)
    (tmp_path / "base.json").write_text(json.dumps(base.to_dict()))
    t = llama_tensors(hidden=256, ffn=512)
    t["model.layers.1.self_attn.q_proj.weight"][7, 11] = 2.0  # one outlier ruins its int4 group
    worse = write_model(tmp_path / "worse", t, LLAMA_CONFIG, "F32")
    r = check(worse, baseline=tmp_path / "base.json", max_error_regression_db={"int4": 1.0}, use_pyproject=False)
    assert [(f.tensor, f.scheme) for f in r.failures] == [("model.layers.1.self_attn.q_proj.weight", "int4")]
    assert r.failures[0].value > 1.0
    with pytest.raises(ConfigError, match="simulate or check JSON"):
        check(worse, max_error_regression_db={"int4": 1.0}, use_pyproject=False)


def test_unknown_scheme_in_a_rule(llama):
    with pytest.raises(UnknownNameError, match="unknown scheme 'Q4_K_X'"):
        check(llama, min_sqnr={"Q4_K_X": 20}, use_pyproject=False)


def test_baseline_against_a_clipped_variant_reports_the_drift_per_tensor(tmp_path, tiny):
    """The story of seed 002 as a CI gate: a baseline of the trained model, then the p99-clipped copy."""
    from normscope import clip

    base = check(tiny, use_pyproject=False)
    (tmp_path / "base.json").write_text(json.dumps(base.to_dict()))
    clipped = clip(tiny, 99, out=tmp_path / "clipped")
    r = check(tmp_path / "clipped", baseline=tmp_path / "base.json", max_norm_drift=0.05, use_pyproject=False)
    assert not r.passed
    drift = {f.tensor: f.value for f in r.failures}
    # every norm whose max |gain| the clip moved by more than 5% is named, with its own relative drift
    moved = {t.name: abs(t.max_after - t.max_before) / t.max_before for t in clipped.tensors}
    assert drift == pytest.approx({n: v for n, v in moved.items() if v > 0.05}, rel=1e-6)
    assert "model.layers.1.post_feedforward_layernorm.weight" in drift  # 1657 → its p99


def test_ties_rank_the_same_in_analyze_and_check(tmp_path):
    """Tensors that tie are listed in one order everywhere: by name, numbers as numbers (issue 21 item 13)."""
    from normscope import analyze
    from normscope.report.analyze import analyze_tables

    t = gemma_tensors(layers=12)
    for i in (10, 2, 7):  # equal gains; the file stores layers.10 before layers.2
        t[f"model.layers.{i}.post_feedforward_layernorm.weight"] = np.full(64, 99.0)
    t = {k: t[k] for k in sorted(t)}
    d = write_model(tmp_path / "ties", t, {**GEMMA_CONFIG, "num_hidden_layers": 12}, "F32")
    expected = [f"model.layers.{i}.post_feedforward_layernorm.weight" for i in (2, 7, 10)]
    r = check(d, max_effective_gamma=50, use_pyproject=False)
    assert [f.tensor for f in r.failures if f.value == 100.0] == expected
    table = analyze_tables(analyze(d), top=20)[0]
    assert [row[0] for row in table.rows if row[3] == "100"][:3] == expected
