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


def test_tensor_type_override_with_every_kind_of_ggml_type(tiny, capsys):
    code, out, err = run_cli(["simulate", str(tiny), "-s", "IQ4_XS", "--tensor-type", "ffn_down=iq4_nl",
                              "--tensor-type", "attn_q=TQ2_0", "--tensor-type", "attn_k=mxfp4", "--json", "-"], capsys)
    assert code == 0, err
    got = {t["gguf_name"].split(".", 2)[2]: t["type"] for t in json.loads(out)["schemes"][0]["tensors"]
           if t["gguf_name"] and t["gguf_name"].startswith("blk.0.")}
    assert (got["ffn_down.weight"], got["attn_q.weight"], got["attn_k.weight"], got["ffn_up.weight"]) == \
        ("IQ4_NL", "TQ2_0", "MXFP4", "IQ4_XS")


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
    (["-s", "Q4_K_X"], "unknown scheme 'Q4_K_X'; valid: BF16, F16, IQ1_M"),
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


def test_schemes_lists_every_ggml_type_and_file_type(capsys):
    import gguf

    code, out, _ = run_cli(["schemes"], capsys)
    assert code == 0
    files, types, _ = out.split("\n\n")
    listed = {line.split()[0] for line in files.splitlines()[2:]}
    assert listed >= {f.name.removeprefix("MOSTLY_") for f in gguf.LlamaFileType} - {"ALL_F32", "GUESSED"}
    rows = {line.split()[0]: line.split()[1:5] for line in types.splitlines()[2:]}
    for name, row in rows.items():  # block, bytes, bpw as gguf-py has them
        block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[name]]
        assert row[:3] == [str(block), str(size), f"{8 * size / block:g}"]
    assert set(rows) == {t.name for t in gguf.GGMLQuantizationType} & set(rows) and len(rows) == 27
    assert rows["IQ4_XS"][3] == "used" and rows["IQ2_XS"][3] == "required" and rows["Q8_0"][3] == "ignored"
    assert "IQ3_XXS  256    98     3.0625  required by llama-quantize" in types
    assert "Q4_K       Q4_K          4.5     used              llama-quantize's alias for Q4_K_M" in files


@pytest.mark.parametrize("scheme", ["IQ4_XS", "iq4_nl", "TQ2_0", "Q1_0", "NVFP4", "MXFP4", "IQ3_S", "Q4_K"])
def test_every_ggml_type_simulates(tiny, capsys, scheme):
    """Rows of 256 (attention) and 512 (down_proj): each type's own plan, measured by the kernels."""
    code, out, err = run_cli(["simulate", str(tiny), "-s", scheme, "--json", "-"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    jsonschema.validate(doc, schema("simulate"))
    result = doc["schemes"][0]
    quantized = [t for t in result["tensors"] if t["type"]]
    assert quantized and all(t["error"]["sqnr_db"] > 0 for t in quantized)
    expect = {"iq4_nl": "IQ4_NL", "Q4_K": "Q4_K_M"}.get(scheme, scheme)
    assert result["scheme"] == expect
    down = next(t for t in quantized if t["name"].endswith("layers.0.mlp.down_proj.weight"))
    default = {"MXFP4": "MXFP4", "Q4_K": "Q4_K"}.get(scheme, expect.upper())
    if scheme == "MXFP4":
        assert {t["type"] for t in quantized} == {"MXFP4"} and "--pure" in down["reason"]
    elif scheme in ("IQ4_XS",):  # llama.cpp: ffn_down of the first 1/8 of the layers Q5_K without an imatrix
        assert down["type"] == "IQ4_XS"  # 2 layers: 2 // 8 = 0, no layer is in the first eighth
    else:
        assert default in {t["type"] for t in quantized}


@pytest.mark.parametrize("args, needle", [
    (["-s", "IQ2_XS"], "IQ2_XS: blk.0.attn_k.weight would be IQ2_XS (and 11 more tensors)"),
    (["-s", "iq1_s"], "IQ1_S: blk.0.attn_k.weight would be IQ1_S"),  # llama.cpp's order: by block, then name
    (["-s", "Q2_K_S"], "which llama-quantize makes only with an importance matrix"),
    (["-s", "Q4_K_M", "--tensor-type", "attn_q=iq3_xxs"], "Q4_K_M: blk.0.attn_q.weight would be IQ3_XXS"),
], ids=["IQ2_XS", "IQ1_S", "Q2_K_S", "override"])
def test_types_that_need_an_imatrix_are_refused_without_one(tiny, capsys, args, needle):
    code, out, err = run_cli(["simulate", str(tiny), *args], capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert needle in err and "normscope imatrix collect" in err


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
