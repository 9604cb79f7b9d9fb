"""`normscope simulate` end to end: JSON valid against its schema, Markdown, overrides, one line + exit 2."""

from __future__ import annotations

import json

import jsonschema
import pytest

from helpers import LLAMA_CONFIG, llama_tensors, run_cli, write_model
from normscope.report.schemas import schema


@pytest.fixture
def tiny(tmp_path):
    return write_model(tmp_path / "tiny", llama_tensors(hidden=256, ffn=512), LLAMA_CONFIG, "BF16", shards=2)


def test_json_is_valid_and_markdown_has_the_tables(tiny, tmp_path, capsys):
    code, out, err = run_cli(["simulate", str(tiny), "-s", "Q4_K_M,int4", "--scheme", "fp8_block", "--json",
                              str(tmp_path / "s.json"), "--md", str(tmp_path / "s.md"), "--top", "3"], capsys)
    assert code == 0, err
    doc = json.loads((tmp_path / "s.json").read_text())
    jsonschema.validate(doc, schema("simulate"))
    assert [s["scheme"] for s in doc["schemes"]] == ["Q4_K_M", "int4", "fp8_block"]
    by_name = {t["name"]: t for t in doc["schemes"][0]["tensors"]}
    # llama.cpp's use_more_bits(i, n=2): layer 1 >= 7n/8 gets Q6_K, layer 0 keeps Q4_K
    assert [(by_name[f"model.layers.{i}.mlp.down_proj.weight"]["gguf_name"],
             by_name[f"model.layers.{i}.mlp.down_proj.weight"]["type"]) for i in (0, 1)] == \
        [("blk.0.ffn_down.weight", "Q4_K"), ("blk.1.ffn_down.weight", "Q6_K")]
    md = (tmp_path / "s.md").read_text()
    assert md.startswith("## normscope simulate") and "| scheme | quantized | size |" in md
    assert "### Q4_K_M: lowest SQNR (top 3 of 16 quantized tensors)" in md
    assert "Schemes" in out and "int4: lowest SQNR" in out


def test_tensor_type_override(tiny, capsys):
    code, out, err = run_cli(["simulate", str(tiny), "--tensor-type", "ffn_down=Q8_0", "--json", "-"], capsys)
    assert code == 0, err
    tensors = json.loads(out)["schemes"][0]["tensors"]
    down = [t for t in tensors if t["name"].endswith("down_proj.weight")]
    assert {t["type"] for t in down} == {"Q8_0"} and all("--tensor-type override" in t["reason"] for t in down)


def test_scheme_names_in_any_case_print_upstreams_spelling(tiny, capsys):
    """`q4_k_m` once was "unknown scheme": any case is accepted, and the report spells it as llama.cpp does."""
    code, out, err = run_cli(["simulate", str(tiny), "-s", "q4_k_m,INT4", "--tensor-type", "ffn_down=q8_0",
                              "--json", "-"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert [s["scheme"] for s in doc["schemes"]] == ["Q4_K_M", "int4"]
    down = [t for t in doc["schemes"][0]["tensors"] if t["name"].endswith("down_proj.weight")]
    assert {t["type"] for t in down} == {"Q8_0"}


@pytest.mark.parametrize("args, message", [
    (["-s", "Q4_K_X"], "unknown scheme 'Q4_K_X'; valid: BF16, F16, Q2_K"),
    (["--tensor-type", "ffn_down"], "expected REGEX=TYPE"),
    (["--tensor-type", "ffn_down=Q9_K"], "unknown quantization format 'Q9_K'"),
    (["--tensor-type", "ffn_down=int4"], "unknown ggml type 'int4'"),
], ids=["scheme", "pair", "type", "not-ggml"])
def test_bad_options_are_one_line_and_exit_2(tiny, capsys, args, message):
    code, out, err = run_cli(["simulate", str(tiny), *args], capsys)
    assert code == 2 and err.count("\n") == 1 and message in err and "Traceback" not in err


def test_schemes_lists_file_types_and_simulated_schemes(capsys):
    code, out, _ = run_cli(["schemes"], capsys)
    assert code == 0
    assert "Q4_K_M" in out and "int4" in out and "optimum-quanto qint4" in out


def test_html_page_is_self_contained(tiny, tmp_path, capsys):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "report"))
    from html_checks import assert_self_contained, assert_well_formed

    code, _, err = run_cli(["simulate", str(tiny), "-s", "Q4_K_M,int4", "--html", str(tmp_path / "s.html"), "-q"],
                           capsys)
    assert code == 0, err
    html = (tmp_path / "s.html").read_text()
    assert_self_contained(html)
    page = assert_well_formed(html)
    bars = next(t for t in page.tables.values() if t["headers"] == ["tensor", "Q4_K_M", "int4"])
    assert len(bars["rows"]) == 16  # every quantized tensor of this model, under both schemes
