"""The benchmarks in benchmarks/ run (on tiny models, in seconds); their timings are not checked here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _run(*args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return r


def test_bench_analyze_runs_on_a_tiny_model(tmp_path):
    out = tmp_path / "analyze.json"
    r = _run(str(BENCH / "bench_analyze.py"), "--tiny", "--json", str(out))
    assert "ratio to floor" in r.stdout and "Q4_0 GGUF" in r.stdout
    report = json.loads(out.read_text())
    assert set(report["floor_vs_analyze"]["analyze"]) == {"1", "2", "2 --executor process"}
    assert len(report["floor_vs_analyze"]["floor_by_chunk_s"]) == 4
    assert set(report["formats"]) == {"BF16", "F16", "F32", "F8_E4M3", "Q8_0 GGUF", "Q4_0 GGUF"}


def test_bench_memory_runs_on_a_tiny_model(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from helpers import GEMMA_CONFIG, gemma_tensors, write_model

    model = write_model(tmp_path / "m", gemma_tensors(), GEMMA_CONFIG, "BF16", shards=2)
    out = tmp_path / "memory.json"
    r = _run(str(BENCH / "bench_memory.py"), str(model), "--big-gib", "0.01", "--no-gguf", "--big-norm", "100000",
             "--json", str(out))
    cases = json.loads(out.read_text())
    # analyze at jobs 1, 2, 2 processes; simulate, compare, check; 5 on the long norm; 2 big tensors
    assert [c["returncode"] for c in cases] == [0] * 13 and "largest process" in r.stdout
    assert all(c["max_process_mib"] > 0 for c in cases)


def test_bench_quant_runs_and_checks_the_bytes(tmp_path):
    out = tmp_path / "quant.json"
    r = _run(str(BENCH / "bench_quant.py"), "--types", "Q4_0,Q4_K,IQ2_XXS", "--rows", "4", "--repeat", "1",
             "--threads", "2", "--synthetic", "--json", str(out))
    rows = json.loads(out.read_text())["rows"]
    assert [(x["type"], x["imatrix"]) for x in rows] == [("Q4_0", False), ("Q4_0", True), ("Q4_K", False),
                                                          ("Q4_K", True), ("IQ2_XXS", True)]
    assert all(x["identical"] for x in rows) and "2 threads" in r.stdout


def test_bench_8b_runs_on_a_tiny_model_of_its_shapes(tmp_path, monkeypatch):
    out = tmp_path / "8b.json"
    monkeypatch.setenv("NORMSCOPE_TEST_CACHE", str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, str(BENCH / "bench_8b.py"), "--tiny", "--jobs", "2", "--json", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    assert report["analyze"]["returncode"] == report["simulate Q4_K_M"]["returncode"] == 0
    assert report["floor_s"] > 0 and "M weights/s" in r.stdout
