"""Terminal (fixed width, no colour) and Markdown renderings of simulate and compare, against golden files.

Regenerate with NORMSCOPE_UPDATE_GOLDEN=1 after an intended change, and review the diff.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import pytest

from helpers import GEMMA_CONFIG, LLAMA_CONFIG, gemma_tensors, llama_tensors, write_model
from normscope import compare, simulate
from normscope.report.compare import compare_markdown, compare_terminal
from normscope.report.simulate import simulate_markdown, simulate_terminal

GOLDEN = Path(__file__).parent / "golden"


def check_golden(name: str, text: str) -> None:
    golden = GOLDEN / name
    if os.environ.get("NORMSCOPE_UPDATE_GOLDEN") == "1":
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8")


@contextmanager
def inside(directory: Path):
    """Run in `directory`, so sources are short relative paths and the tables keep their widths."""
    old = os.getcwd()
    os.chdir(directory)
    try:
        yield
    finally:
        os.chdir(old)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    root = tmp_path_factory.mktemp("g")
    write_model(root / "llama", llama_tensors(hidden=256, ffn=512), LLAMA_CONFIG, "BF16")
    with inside(root):
        return simulate("llama", schemes="Q4_K_M,int4")


@pytest.fixture(scope="module")
def cmp(tmp_path_factory):
    root = tmp_path_factory.mktemp("c")
    base = gemma_tensors()
    tuned = {k: v * (1.02 if "mlp" in k else 1.0) for k, v in base.items()}
    tuned["model.layers.0.input_layernorm.weight"] = base["model.layers.0.input_layernorm.weight"] * 2
    write_model(root / "base", base, GEMMA_CONFIG, "F32")
    write_model(root / "ft", tuned, GEMMA_CONFIG, "F32")
    with inside(root):
        return compare(["base", "ft"], labels=["base", "ft"])


def test_simulate_terminal(sim):
    check_golden("simulate_terminal.txt", simulate_terminal(sim, top=4, width=120, color=False))


def test_simulate_markdown(sim):
    check_golden("simulate.md", simulate_markdown(sim, top=4))


def test_compare_terminal(cmp):
    check_golden("compare_terminal.txt", compare_terminal(cmp, top=4, width=120, color=False))


def test_compare_markdown(cmp):
    check_golden("compare.md", compare_markdown(cmp, top=4))
