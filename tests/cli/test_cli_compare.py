"""`normscope compare` end to end: JSON valid against its schema, Markdown, a self-contained HTML page, errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jsonschema
import pytest

from helpers import GEMMA_CONFIG, gemma_tensors, run_cli, write_model
from normscope.report.schemas import schema

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "report"))
from html_checks import assert_self_contained, assert_well_formed  # noqa: E402


@pytest.fixture
def models(tmp_path):
    base = gemma_tensors()
    tuned = {k: v * (1.01 if "mlp" in k else 1.0) for k, v in base.items()}
    small = gemma_tensors(hidden=32, ffn=64, seed=5)
    return (write_model(tmp_path / "base", base, GEMMA_CONFIG, "BF16"),
            write_model(tmp_path / "ft", tuned, GEMMA_CONFIG, "BF16", shards=2),
            write_model(tmp_path / "small", small, GEMMA_CONFIG, "F16"))


def test_outputs(models, tmp_path, capsys):
    code, out, err = run_cli(["compare", *map(str, models), "--labels", "base,ft,student", "--json",
                              str(tmp_path / "c.json"), "--md", str(tmp_path / "c.md"), "--html",
                              str(tmp_path / "c.html"), "--top", "3"], capsys)
    assert code == 0, err
    doc = json.loads((tmp_path / "c.json").read_text())
    jsonschema.validate(doc, schema("compare"))
    for analysis in doc["analyses"]:
        jsonschema.validate(analysis, schema("analyze"))
    assert [p["variant"] for p in doc["pairs"]] == ["ft", "student"]
    ft = doc["pairs"][0]
    assert ft["matched"] == 28 and ft["identical"] == 28 - 6  # the six mlp matrices moved
    md = (tmp_path / "c.md").read_text()
    assert md.startswith("## normscope compare") and "| model | aligned | identical |" in md
    assert "ft vs base: largest relative change (top 3 of 6 changed)" in out
    html = (tmp_path / "c.html").read_text()
    assert_self_contained(html)
    assert_well_formed(html)
    assert "By depth" in html and "student vs base" in html


@pytest.mark.parametrize("args, message", [
    (["ONLY"], "at least two models"),
    (["A", "B", "--labels", "x"], "1 labels for 2 models"),
    (["A", "B", "--adapter", "5=/nonexistent"], "there are only 2 models"),
], ids=["one-model", "labels", "adapter-index"])
def test_bad_arguments_exit_2(models, capsys, args, message):
    args = [str(models[0]) if a in ("ONLY", "A") else str(models[1]) if a == "B" else a for a in args]
    code, _, err = run_cli(["compare", *args], capsys)
    assert code == 2 and message in err and err.count("\n") == 1


def test_a_variant_that_fails_to_read_names_itself_and_the_others_are_not_lost(models, tmp_path, capsys):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x10" + bytes(7) + b'{"a": 1}       ')
    out_json, out_md, out_html = tmp_path / "c.json", tmp_path / "c.md", tmp_path / "c.html"
    code, _, err = run_cli(["compare", str(models[0]), str(bad), str(models[1]), "--labels", "base,broken,ft",
                            "--json", str(out_json), "--md", str(out_md), "--html", str(out_html)], capsys)
    assert code == 2
    assert err.splitlines() == [f"normscope: error: broken: {bad}: header length 16 runs beyond the end of the "
                                "file (23 bytes); the file is truncated or not safetensors"]
    doc = json.loads(out_json.read_text())
    jsonschema.validate(doc, schema("compare"))
    assert [v["label"] for v in doc["variants"]] == ["base", "ft"]
    assert doc["failed"] == [{"label": "broken", "source": str(bad), "error": err.split("broken: ", 1)[1].strip()}]
    assert doc["pairs"][0]["matched"] == 28 and doc["pairs"][0]["identical"] == 22
    assert f"broken ({bad}) was not compared" in out_md.read_text()
    html = out_html.read_text()
    assert_well_formed(html)
    assert "broken" in html and "was not compared" in html


def test_an_unreadable_base_writes_nothing(models, tmp_path, capsys):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a checkpoint at all")
    code, _, err = run_cli(["compare", str(bad), *map(str, models[:2]), "--json", str(tmp_path / "c.json")], capsys)
    assert code == 2 and err.count("\n") == 1 and str(bad) in err
    assert not (tmp_path / "c.json").exists()
