"""The README's commands: the set-up pair that CI runs verbatim, and every `normscope` line of the tour."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / ".ci"))
from readme_command import command  # noqa: E402

README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_ci_runs_exactly_the_readme_commands():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "readme_command.py analyze" in ci and "readme_command.py test" in ci
    assert 'eval "$analyze_cmd"' in ci and 'eval "$test_cmd"' in ci


def test_setup_commands_name_real_extras_and_the_test_runner():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    analyze, test = command("analyze"), command("test")
    assert "'.[examples]'" in analyze and "examples" in extras
    assert analyze.endswith("&& normscope analyze")
    assert "'.[test]'" in test and "test" in extras and "torch==2.13.0" in test
    assert "NORMSCOPE_NO_SKIP=1 python -m pytest" in test


def test_the_analyze_setup_command_runs(gemma_gguf):
    """The part after the install: `normscope analyze` on the embedded default."""
    argv = shlex.split(command("analyze").split("&&", 1)[1])
    out = subprocess.run([sys.executable, "-m", "normscope", *argv[1:]], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    assert "stored 1656 = gain 1657" in " ".join(out.stdout.split())


def tour_commands() -> list[str]:
    return [line[2:] for line in re.findall(r"^\$ normscope .*$", README, re.M)]


@pytest.mark.parametrize("line", tour_commands())
def test_tour_commands_run_and_match_the_pasted_output(line, gemma_gguf, gemma_hf, tmp_path):
    argv = shlex.split(line)[1:]
    out = subprocess.run([sys.executable, "-m", "normscope", *argv], capture_output=True, text=True, timeout=900,
                         cwd=tmp_path, env=_env(gemma_hf, tmp_path))
    assert out.returncode in (0, 1), out.stderr
    pasted = README.split("$ " + line, 1)[1].split("```", 1)[0]
    real = " ".join(out.stdout.split())  # wrapping depends on the width; the words must not
    for row in pasted.strip().splitlines():
        if row.strip() and row.strip() != "…":
            assert " ".join(row.split()) in real, f"README line not in the real output: {row!r}"


def _env(gemma_hf: Path, tmp_path: Path) -> dict[str, str]:
    import os

    (tmp_path / "gemma-3-270m-hf").symlink_to(gemma_hf)  # the tour names the HF export by this path
    return {**os.environ, "COLUMNS": "130"}


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.+?)```", README, re.S)


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_python_blocks_run(index, gemma_gguf, gemma_hf, tmp_path, monkeypatch, capsys):
    """Every ```python block of the README runs as written (in a directory holding gemma-3-270m-hf)."""
    (tmp_path / "gemma-3-270m-hf").symlink_to(gemma_hf)
    monkeypatch.chdir(tmp_path)
    code = python_blocks()[index]
    exec(compile(code, f"README.md python block {index}", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    for line in code.splitlines():  # `print(...)  # expected` comments must match what was printed
        if line.startswith("print(") and "#" in line:
            assert line.split("#", 1)[1].strip() in out
