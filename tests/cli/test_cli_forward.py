"""`normscope forward` and `normscope recipe` end to end: reports valid against their schemas, the recipe's
llama-quantize arguments fed back to `simulate`, one line + exit 2 without torch, and torch never imported
by `import normscope` or by the other commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "report"))

from helpers import GEMMA_CONFIG, doc_console, gemma_tensors, run_cli, shell_split, write_model  # noqa: E402
from html_checks import assert_self_contained, assert_well_formed  # noqa: E402
from normscope.report.schemas import schema  # noqa: E402
NO_TORCH = "import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"


def run_without_torch(code: str) -> subprocess.CompletedProcess:
    """Python in a subprocess where `import torch` (and transformers) fails, as on a machine without the extra."""
    return subprocess.run([sys.executable, "-c", NO_TORCH + code], capture_output=True, text=True, timeout=600,
                          cwd=ROOT)


@pytest.fixture(scope="module")
def numpy_gemma(tmp_path_factory):
    """A Gemma layout written with numpy only (no torch needed to make or read it)."""
    tensors = gemma_tensors(layers=2, hidden=256, ffn=512, vocab=256, heads=2, head_dim=64)
    return write_model(tmp_path_factory.mktemp("cli") / "g", tensors, GEMMA_CONFIG, "BF16")


def test_forward_without_torch_is_one_line_and_exit_2(numpy_gemma):
    p = run_without_torch(f"from normscope.cli import main; main(['forward', {str(numpy_gemma)!r}, '-s', 'Q8_0'])")
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and p.stdout == ""
    assert lines[0].startswith("normscope: error: normscope forward needs the torch extra")
    assert "pip install torch==2.13.0 'normscope[torch]'" in lines[0]


def test_no_command_but_forward_imports_torch(numpy_gemma, tmp_path):
    code = (f"import normscope, normscope.cli\n"
            f"assert 'torch' not in sys.modules or sys.modules['torch'] is None\n"
            f"from normscope.cli import main\n"
            f"for args in (['analyze', {str(numpy_gemma)!r}, '-q'], ['simulate', {str(numpy_gemma)!r}, '-q'],\n"
            f"             ['check', {str(numpy_gemma)!r}, '-q'], ['clip', {str(numpy_gemma)!r}, '--dry-run', '-q'],\n"
            f"             ['compare', {str(numpy_gemma)!r}, {str(numpy_gemma)!r}, '-q'],\n"
            f"             ['recipe', {str(numpy_gemma)!r}, '--budget-bpw', '6', '--types', 'Q4_K,Q8_0', '-q']):\n"
            f"    try:\n"
            f"        main(args)\n"
            f"    except SystemExit as e:\n"
            f"        assert e.code == 0, (args, e.code)\n"
            f"print('ok')\n")
    p = run_without_torch(code)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr
    p = subprocess.run([sys.executable, "-c", "import sys, normscope, normscope.cli, normscope.report; "
                        "print('torch' in sys.modules, 'transformers' in sys.modules)"],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.stdout.strip() == "False False", p.stderr


def test_forward_writes_json_markdown_and_html(tmp_path, capsys):
    pytest.importorskip("torch", reason="forward needs the torch extra")
    from forward_helpers import tiny_gemma

    tiny = tiny_gemma(tmp_path / "tiny")
    code, out, err = run_cli(["forward", str(tiny), "-s", "Q8_0,Q2_K", "--clip", "95", "--tokens", "48",
                              "--sensitivity", "--sensitivity-scheme", "Q2_K", "--sensitivity-by", "layer",
                              "--json", str(tmp_path / "f.json"), "--md", str(tmp_path / "f.md"),
                              "--html", str(tmp_path / "f.html")], capsys)
    assert code == 0, err
    doc = json.loads((tmp_path / "f.json").read_text())
    jsonschema.validate(doc, schema("forward"))
    assert [v["label"] for v in doc["variants"]] == ["Q8_0", "Q2_K", "clip p95"]
    assert [g["group"] for g in doc["sensitivity"]] and {g["group"] for g in doc["sensitivity"]} <= {
        "layers.0", "layers.1", "embedding"}
    md = (tmp_path / "f.md").read_text()
    assert md.startswith("## normscope forward")
    assert ("| variant | kind | size | bpw | PPL | KL mean | KL weights | KL p99 | KL max | top-1 agree | RMS Δp |"
            in md)
    assert "runtime: llama.cpp (each quantized matmul's input quantized as ggml-cpu does" in md
    assert [v["runtime"] for v in doc["variants"]] == ["llama.cpp", "llama.cpp", "weights"]
    assert all(g["runtime"] == "llama.cpp" and g["weights_kl"]["n"] == 48 for g in doc["sensitivity"])
    html = (tmp_path / "f.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "Forward check" in html and "Sensitivity" in html
    assert_self_contained(html)
    assert_well_formed(html)
    assert "Variants against the base on the same tokens" in out and "Q2_K" in out


@pytest.mark.parametrize("args, message", [
    (["--clip", "101"], "percentile 101.0 is outside [0, 100]"),
    (["-s", "Q9_K"], "unknown scheme 'Q9_K'"),
    (["--sensitivity", "--sensitivity-by", "block"], "--sensitivity-by 'block'; valid: layer-role, layer, role"),
    (["--text", "/nonexistent/eval.txt"], "no such text file"),
    (["--runtime", "cuda"], "--runtime 'cuda'; valid: weights, llama.cpp"),
    (["--kld-base", "/nonexistent/base.kld"], "/nonexistent/base.kld: no such file"),
], ids=["clip", "scheme", "groups", "text", "runtime", "kld-base"])
def test_forward_bad_options_are_one_line_and_exit_2(numpy_gemma, capsys, args, message):
    pytest.importorskip("torch", reason="forward needs the torch extra")
    code, out, err = run_cli(["forward", str(numpy_gemma), *args], capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err, err


def test_recipe_args_reproduce_in_simulate(numpy_gemma, tmp_path, capsys):
    code, out, err = run_cli(["recipe", str(numpy_gemma), "--budget-bpw", "7.2", "--json", str(tmp_path / "r.json"),
                              "--args", str(tmp_path / "r.args"), "--md", str(tmp_path / "r.md"),
                              "--html", str(tmp_path / "r.html")], capsys)
    assert code == 0, err
    doc = json.loads((tmp_path / "r.json").read_text())
    jsonschema.validate(doc, schema("recipe"))
    args = (tmp_path / "r.args").read_text().split()  # as `$(cat r.args)` splits it
    assert args[0] == "--tensor-type" and len(args) >= 2 * len(doc["tensor_types"])
    pairs = [args[i + 1] for i, a in enumerate(args) if a == "--tensor-type"]
    code, out, err = run_cli(["simulate", str(numpy_gemma), "-s", doc["reference"], "--json", "-", "-q",
                              *(x for p in pairs for x in ("--tensor-type", p))], capsys)
    assert code == 0, err
    sim = json.loads(out)["schemes"][0]
    assert sim["nbytes"] == doc["recipe"]["nbytes"]
    chosen = {t["name"]: t["type"] for t in doc["tensors"]}
    assert {t["name"]: t["type"] for t in sim["tensors"] if t["type"]} == chosen
    md = (tmp_path / "r.md").read_text()
    assert "### llama-quantize" in md and "### quanto exclude" in md
    html = (tmp_path / "r.html").read_text()
    assert "Recipe" in html and "llama-quantize arguments" in html
    assert_self_contained(html)
    assert_well_formed(html)


def test_recipe_bad_budget_is_one_line_and_exit_2(numpy_gemma, capsys):
    code, out, err = run_cli(["recipe", str(numpy_gemma), "--budget-bpw", "0.5"], capsys)
    assert code == 2 and "below the smallest recipe" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("doc", ["forward.md", "recipe.md"])
def test_documented_commands_run(doc, tmp_path, capsys, monkeypatch, gemma_hf):
    """Every command of docs/forward.md and docs/recipe.md runs (on the HF export they are written for)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gemma-3-270m-hf").symlink_to(gemma_hf)
    commands = [cmd for cmd, _ in doc_console(ROOT / "docs" / doc)]
    assert commands
    for line in commands:
        code, out, err = run_cli(shell_split(line)[1:], capsys)
        assert code == 0, (line, err)
