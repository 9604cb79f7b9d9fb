"""Peak resident memory of `normscope analyze` stays under 512 MiB, whatever the model or its largest
tensor, measured in a separate process (benchmarks/bench_memory.py); the core path never imports torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import bench_memory  # noqa: E402

LIMIT_MIB = 512


def _measure(*args: str) -> dict:
    r = bench_memory._measure_fresh(bench_memory.cli("analyze", *args, "-q", "--json", os.devnull))
    assert r["returncode"] == 0, r["stderr"]
    return r


@pytest.mark.parametrize("jobs", [["1"], ["2"], ["2", "--executor", "process"]])
def test_gemma_export_stays_under_512_mib(gemma_hf, jobs):
    r = _measure(str(gemma_hf), "--jobs", *jobs)
    assert r["max_process_mib"] <= LIMIT_MIB, r


@pytest.mark.parametrize("row_len", [4096, 1 << 28], ids=["rows-4096", "rows-of-1GiB"])
def test_one_3_gib_tensor_stays_under_512_mib(tmp_path, row_len):
    path = bench_memory.make_big_checkpoint(tmp_path / "big.safetensors", 3.0, row_len)
    assert path.stat().st_size > 3 << 30
    r = _measure(str(path), "--jobs", "1")
    assert r["max_process_mib"] <= LIMIT_MIB, r


def test_the_core_path_does_not_import_torch(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from helpers import GEMMA_CONFIG, gemma_tensors, write_model

    model = write_model(tmp_path / "m", gemma_tensors(), GEMMA_CONFIG, "BF16")
    code = ("import sys; from normscope.cli import main\n"
            "try:\n    main(['analyze', sys.argv[1], '-q', '--jobs', '1'])\nexcept SystemExit as e:\n"
            "    assert e.code == 0, e.code\n"
            "heavy = [m for m in ('torch', 'transformers', 'ray') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code, str(model)], check=True, timeout=300)


def _measure_cli(*argv: str) -> dict:
    r = bench_memory._measure_fresh(bench_memory.cli(*argv))
    assert r["returncode"] in (0, 1), r["stderr"]  # check exits 1 when a rule fails
    return r


@pytest.mark.parametrize("command", ["simulate", "compare"])
def test_simulate_and_compare_of_the_gemma_gguf_stay_under_512_mib(gemma_gguf, tmp_path, command):
    """Requantizing a GGUF (or comparing it with itself) leaves errors that are mostly exact zeros: the exact
    percentiles once kept every one of them (4.0 GB)."""
    g = str(gemma_gguf)
    args = ["simulate", g, "--scheme", "Q4_K_M"] if command == "simulate" else ["compare", g, g]
    r = _measure_cli(*args, "-q", "--json", str(tmp_path / "out.json"))
    assert r["max_process_mib"] <= LIMIT_MIB, r


@pytest.mark.parametrize("command", ["analyze", "check", "compare", "clip-dry-run", "clip"])
def test_a_norm_of_2_26_values_stays_under_512_mib(tmp_path_factory, command):
    """A 1-D "norm" of 2^26 float32 values (256 MiB; read whole, as norms were, it cost several times that)."""
    norm = tmp_path_factory.getbasetemp() / "big-norm"
    if not (norm / "model.safetensors").exists():
        bench_memory.make_big_norm(norm, 1 << 26)
    out = tmp_path_factory.mktemp(command)
    m = str(norm)
    argv = {"analyze": ["analyze", m], "check": ["check", m, "--no-pyproject"], "compare": ["compare", m, m],
            "clip-dry-run": ["clip", m, "--dry-run"], "clip": ["clip", m, "--out", str(out / "clipped")]}[command]
    r = _measure_cli(*argv, "-q", "--json", str(out / "report.json"))
    assert r["max_process_mib"] <= LIMIT_MIB, r
