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
    """The workflow's steps run in a checkout: it installs normscope from the repository (it is not on a package
    index), gates the checkpoint, and compares it with a committed baseline that no step writes (the drift step
    read the JSON the gate step had just written: the checkpoint compared with itself; issue 21 item 12)."""
    import re
    import shlex

    yaml = pytest.importorskip("yaml")
    workflow = yaml.safe_load((EXAMPLES / "github-actions" / "normscope-gate.yml").read_text())
    steps = [s for s in workflow["jobs"]["normscope"]["steps"] if "run" in s]
    install = shlex.split(steps[0]["run"])
    assert install[:2] == ["pip", "install"] and install[2].startswith(".["), "installs normscope from the checkout"
    assert "examples" in install[2] and "examples = [" in (ROOT / "pyproject.toml").read_text()
    (baseline,) = {m for s in steps for m in re.findall(r"--baseline (\S+)", s["run"])}
    assert not any(baseline in s["run"] for s in steps if "--baseline" not in s["run"]), "no step writes it"
    (record,) = [line.lstrip("# ") for line in (EXAMPLES / "github-actions" / "normscope-gate.yml").read_text()
                 .splitlines() if line.startswith("#") and f"--write-baseline {baseline}" in line]
    summary = tmp_path / "summary.md"
    env = {**os.environ, "GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

    def run(script):
        proc = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=900)
        assert proc.returncode == 0, f"{script}\n{proc.stdout}\n{proc.stderr}"
        return proc

    # the baseline as the workflow's comment says to record it, once, before the workflow runs
    run(record)
    recorded = (tmp_path / baseline).read_bytes()
    for step in steps[1:]:  # normscope is installed already (this test runs inside its environment)
        run(step["run"])
    assert (tmp_path / baseline).read_bytes() == recorded
    assert summary.read_text().startswith("## ✅ normscope check")
    junit_schema.validate(str(tmp_path / "normscope-junit.xml"))
