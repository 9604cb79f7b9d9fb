"""The examples of the docs that no feature's own tests run: every ```python block and every `$ normscope`
line of a ```console block runs as written, in a directory holding the Gemma export as gemma-3-270m-hf;
pasted output lines must appear in the real output, and `print(...)  # expected` comments must match."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import doc_console

ROOT = Path(__file__).resolve().parent.parent
# docs whose examples their own feature's tests run (tests/analysis/test_clip.py, test_cli_forward.py,
# tests/io/test_packs.py, tests/report/test_html.py)
COVERED = {"clip.md", "forward.md", "recipe.md", "packs.md", "reports.md"}
DOCS = sorted(p for p in (ROOT / "docs").glob("*.md") if p.name not in COVERED)


def _python(doc: Path) -> list[str]:
    return re.findall(r"```python\n(.+?)```", doc.read_text(encoding="utf-8"), re.S)


PYTHON = [(d.name, i) for d in DOCS for i in range(len(_python(d)))]
CONSOLE = [(d.name, i) for d in DOCS for i in range(len(doc_console(d)))]


@pytest.fixture
def workdir(tmp_path, gemma_gguf, gemma_hf, monkeypatch):
    (tmp_path / "gemma-3-270m-hf").symlink_to(gemma_hf)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("doc, index", PYTHON, ids=[f"{d}[{i}]" for d, i in PYTHON])
def test_python_blocks_run(doc, index, workdir, capsys):
    code = _python(ROOT / "docs" / doc)[index]
    exec(compile(code, f"docs/{doc} python block {index}", "exec"), {"__name__": "__docs__"})
    printed = capsys.readouterr().out
    for line in code.splitlines():
        if line.startswith("print(") and "#" in line:
            assert line.split("#", 1)[1].strip() in printed, line


@pytest.mark.parametrize("doc, index", CONSOLE, ids=[f"{d}[{i}]" for d, i in CONSOLE])
def test_console_commands_run(doc, index, workdir):
    cmd, pasted = doc_console(ROOT / "docs" / doc)[index]
    proc = subprocess.run([sys.executable, "-m", "normscope", *shlex.split(cmd)[1:]], capture_output=True, text=True,
                          timeout=900, cwd=workdir, env={**os.environ, "COLUMNS": "130"})
    assert proc.returncode in (0, 1), proc.stderr
    real = " ".join(proc.stdout.split())
    for row in pasted.strip().splitlines():
        if row.strip() and row.strip() != "…":
            assert " ".join(row.split()) in real, f"docs/{doc}: pasted line not in the real output: {row!r}"


def test_every_doc_is_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [d.name for d in (ROOT / "docs").glob("*.md") if f"docs/{d.name}" not in readme]
    assert not missing, f"docs not linked from README.md: {missing}"
