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
