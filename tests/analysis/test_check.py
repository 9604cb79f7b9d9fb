"""check: rules, their sources and precedence, baselines, on synthetic and real checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import GEMMA_CONFIG, gemma_tensors, write_model
from normscope import check
from normscope.analysis.check_config import load_check_config
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
    with pytest.raises(ConfigError, match="not a normscope analyze or check JSON"):
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
