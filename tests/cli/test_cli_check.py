"""`normscope check` exit codes, outputs (JSON, Markdown, JUnit XML valid against junit-10.xsd,
GitHub annotations) and configuration from pyproject.toml."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from helpers import GEMMA_CONFIG, gemma_tensors, run_cli, write_model


@pytest.fixture
def tiny(tmp_path):
    return write_model(tmp_path / "tiny", gemma_tensors(), GEMMA_CONFIG, "BF16")


def test_exit_codes(tiny, capsys):
    assert run_cli(["check", str(tiny), "--max-effective-gamma", "2000", "--no-pyproject"], capsys)[0] == 0
    code, out, _ = run_cli(["check", str(tiny), "--max-effective-gamma", "100", "--no-pyproject"], capsys)
    assert code == 1 and "model.layers.1.post_feedforward_layernorm.weight" in out and "FAILED" in out


def test_markdown_is_a_table(tiny, tmp_path, capsys):
    run_cli(["check", str(tiny), "--max-effective-gamma", "100", "--no-pyproject", "--md", str(tmp_path / "s.md")],
            capsys)
    md = (tmp_path / "s.md").read_text()
    assert md.startswith("## ❌ normscope check")
    assert "| rule | tensor | value | threshold |\n|:---|:---|---:|---:|\n" in md
    assert "| max_effective_gamma | model.layers.1.post_feedforward_layernorm.weight | 1657 | 100 |" in md


def test_junit_validates_against_the_common_schema(tiny, tmp_path, capsys, junit_schema):
    run_cli(["check", str(tiny), "--max-effective-gamma", "100", "--no-pyproject", "--junit",
             str(tmp_path / "j.xml")], capsys)
    junit_schema.validate(str(tmp_path / "j.xml"))
    root = ET.parse(tmp_path / "j.xml").getroot()
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert cases["max_effective_gamma[norm_post_ffn]"].find("failure") is not None
    assert cases["no_nan_inf[mlp_down]"].find("failure") is None
    suite = root.find("testsuite")
    assert int(suite.get("failures")) == sum(1 for c in cases.values() if c.find("failure") is not None)


def test_github_annotations(tiny, capsys, monkeypatch):
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    code, out, _ = run_cli(["check", str(tiny), "--max-effective-gamma", "100", "--no-pyproject", "-q"], capsys)
    assert code == 1
    assert out.splitlines()[0] == ("::error title=normscope max_effective_gamma::model.layers.1.post_feedforward_"
                                   "layernorm.weight: max_effective_gamma 1657 > 100")


def test_pyproject_in_the_working_directory(tiny, tmp_path, capsys, monkeypatch):
    (tmp_path / "pyproject.toml").write_text("[tool.normscope.check]\nmax_effective_gamma = 100\n")
    code, out, _ = run_cli(["check", str(tiny)], capsys, monkeypatch, cwd=tmp_path)
    assert code == 1 and "pyproject.toml" in out


def test_baseline_round_trip(tiny, tmp_path, capsys):
    base = tmp_path / "base.json"
    assert run_cli(["check", str(tiny), "--no-pyproject", "--write-baseline", str(base), "-q"], capsys)[0] == 0
    assert json.loads(base.read_text())["schema"] == "normscope.check"
    t = gemma_tensors()
    t["model.layers.0.post_attention_layernorm.weight"] += 3.0
    moved = write_model(tmp_path / "moved", t, GEMMA_CONFIG, "BF16")
    code, out, _ = run_cli(["check", str(moved), "--baseline", str(base), "--max-norm-drift", "0.1",
                            "--no-pyproject"], capsys)
    assert code == 1 and "model.layers.0.post_attention_layernorm.weight" in out


def _truncated(tmp_path):
    d = write_model(tmp_path / "tr", {"a": np.ones((64, 64)), "b": np.ones(4)}, {}, "F32", shards=2)
    f = d / "model-00001-of-00002.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    return d


@pytest.mark.parametrize("case", ["missing", "truncated", "bad-config", "unknown-rule", "bad-rule-value",
                                  "drift-without-baseline"])
def test_bad_input_exit_2(case, tiny, tmp_path, capsys, monkeypatch):
    args = {"missing": ["check", str(tmp_path / "nope")],
            "truncated": ["check", str(_truncated(tmp_path))],
            "bad-config": ["check", str(tiny), "--config", str(tmp_path / "gate.toml")],
            "unknown-rule": ["check", str(tiny), "--rule", "max_gama=1"],
            "bad-rule-value": ["check", str(tiny), "--rule", "max_kurtosis=lots"],
            "drift-without-baseline": ["check", str(tiny), "--max-norm-drift", "0.1"]}[case]
    (tmp_path / "gate.toml").write_text("max_kurtosis = [1, 2\n")
    code, _, err = run_cli(args + ["--no-pyproject", "--junit", str(tmp_path / "j.xml")], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("normscope: error: ") and "Traceback" not in err
    assert not (tmp_path / "j.xml").exists()


def test_real_gemma_from_pyproject(gemma_hf, tmp_path, capsys, monkeypatch):
    (tmp_path / "pyproject.toml").write_text("[tool.normscope.check]\nmax_effective_gamma = 100\n")
    code, out, _ = run_cli(["check", str(gemma_hf)], capsys, monkeypatch, cwd=tmp_path)
    assert code == 1 and "model.layers.16.post_feedforward_layernorm.weight" in out
    assert run_cli(["check", str(gemma_hf), "--max-effective-gamma", "2000"], capsys)[0] == 0


def test_json_validates_against_the_schemas(tiny, tmp_path, capsys):
    import jsonschema

    from normscope.report.schemas import schema

    run_cli(["check", str(tiny), "--max-effective-gamma", "100", "--no-pyproject", "--json", str(tmp_path / "c.json")],
            capsys)
    doc = json.loads((tmp_path / "c.json").read_text())
    jsonschema.validate(doc, schema("check"))
    jsonschema.validate(doc["measurements"]["analyze"], schema("analyze"))


def test_real_gemma_quantization_gate(gemma_hf, tmp_path, capsys):
    """Q4_K_M keeps every Gemma tensor far above 20 dB; int4 (quanto) puts attention k/v projections below 18."""
    code, out, err = run_cli(["check", str(gemma_hf), "--no-pyproject", "--min-sqnr", "Q4_K_M=20", "--min-sqnr",
                              "int4=18", "--json", str(tmp_path / "c.json"), "--md", str(tmp_path / "c.md")], capsys)
    assert code == 1, err
    doc = json.loads((tmp_path / "c.json").read_text())
    import jsonschema

    from normscope.report.schemas import schema

    jsonschema.validate(doc, schema("check"))
    jsonschema.validate(doc["measurements"]["simulate"], schema("simulate"))
    failing = {(f["scheme"], f["tensor"]) for f in doc["failures"]}
    assert failing and {s for s, _ in failing} == {"int4"}
    assert all(("k_proj" in t or "v_proj" in t or "q_proj" in t) for _, t in failing)
    rule = next(r for r in doc["rules"] if r["rule"] == "min_sqnr")
    assert rule["threshold"] == {"Q4_K_M": 20.0, "int4": 18.0} and rule["checked"] == 127 + 126
    assert "| rule | scheme | tensor | value | threshold |" in (tmp_path / "c.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--min-sqnr", "Q4_K_M"], "expected SCHEME=VALUE"),
    (["--min-sqnr", "Q4_K_M=high"], "'high' is not a number"),
    (["--min-sqnr", "Q9=20"], "unknown scheme 'Q9'"),
    (["--rule", "min_sqnr=Q4_K_M:x"], "'x' is not a number"),
], ids=["no-value", "not-number", "unknown-scheme", "rule-form"])
def test_bad_quantization_rules_exit_2(tiny, capsys, args, message):
    code, _, err = run_cli(["check", str(tiny), "--no-pyproject", *args], capsys)
    assert code == 2 and message in err and err.count("\n") == 1
