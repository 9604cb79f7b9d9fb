"""Everything in examples/ runs: the pytest gate file, and the GitHub Actions workflow's steps."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def test_pytest_gate_example(gemma_gguf):
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(EXAMPLES / "test_checkpoint_gate.py")], capture_output=True, text=True, timeout=900,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout


def test_github_actions_workflow_steps_run(gemma_gguf, tmp_path, junit_schema):
    yaml = pytest.importorskip("yaml")
    workflow = yaml.safe_load((EXAMPLES / "github-actions" / "normscope-gate.yml").read_text())
    steps = [s["run"] for s in workflow["jobs"]["normscope"]["steps"] if "run" in s]
    assert steps[0].startswith("pip install"), "the first step installs normscope"
    summary = tmp_path / "summary.md"
    env = {**os.environ, "GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for script in steps[1:]:  # normscope is installed already (this test runs inside its environment)
        proc = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=900)
        assert proc.returncode == 0, f"{script}\n{proc.stdout}\n{proc.stderr}"
    assert summary.read_text().startswith("## ✅ normscope check")
    junit_schema.validate(str(tmp_path / "normscope-junit.xml"))
