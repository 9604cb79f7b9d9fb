"""Installing needs a C compiler: without one, the build says so in one line and what to install."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_missing_compiler_is_one_line_that_says_what_to_install(tmp_path):
    shutil.copy(ROOT / "setup.py", tmp_path)
    (tmp_path / "normscope").mkdir()
    shutil.copy(ROOT / "normscope" / "_kernels.c", tmp_path / "normscope")
    shutil.copytree(ROOT / "normscope" / "kernels", tmp_path / "normscope" / "kernels")
    env = {**os.environ, "CC": str(tmp_path / "no-such-cc")}
    run = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("normscope: building its C kernels needs a C compiler and the Python headers")
    assert "apt-get install gcc python3-dev" in last
