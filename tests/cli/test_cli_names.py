"""Names from the input are data: a tensor name holding terminal escape sequences reaches the terminal, the
Markdown, the HTML, the JUnit XML, the GitHub annotations and the one-line errors made visible (`\\x1b`), never as
the raw bytes a terminal would obey; the JSON keeps the exact name (JSON escapes controls itself)."""

from __future__ import annotations

import json
import re

import pytest

from helpers import GEMMA_CONFIG, gemma_tensors, run_cli, write_model

# what is wrong: the name clears the screen (ESC [2J), sets the window title (OSC 0;owned ST), then reads as
# the final norm; the second uses C1's one-character CSI (U+009B) and a carriage return that rewrites its line
HOSTILE = "\x1b[2J\x1b]0;owned\x1b\\model.norm.weight"
HOSTILE_C1 = "\x9b2J\rmodel.layers.1.mlp.down_proj.weight"
SHOWN = "\\x1b[2J\\x1b]0;owned\\x1b\\model.norm.weight"
SHOWN_C1 = "\\x9b2J\\rmodel.layers.1.mlp.down_proj.weight"
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")  # any control character but the line break


def _hostile(directory, seed):
    t = gemma_tensors(seed=seed)
    t[HOSTILE] = t.pop("model.norm.weight")
    t[HOSTILE_C1] = t.pop("model.layers.1.mlp.down_proj.weight")
    return write_model(directory, t, GEMMA_CONFIG, "BF16")


def _strings(doc):
    if isinstance(doc, str):
        yield doc
    elif isinstance(doc, dict):
        for k, v in doc.items():
            yield k
            yield from _strings(v)
    elif isinstance(doc, list):
        for v in doc:
            yield from _strings(v)


@pytest.fixture
def models(tmp_path):
    return _hostile(tmp_path / "a", 0), _hostile(tmp_path / "b", 3)


COMMANDS = {
    "analyze": lambda a, b, out: ["analyze", a],
    "simulate": lambda a, b, out: ["simulate", a, "--scheme", "int8"],  # quanto's int8 quantizes every matrix
    "compare": lambda a, b, out: ["compare", a, b],
    "check": lambda a, b, out: ["check", a, "--max-abs-weight", "0.01", "--junit", out / "r.xml"],
    "clip": lambda a, b, out: ["clip", a, "--scope", "all", "--out", out / "clipped"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_hostile_tensor_name_is_shown_never_emitted(command, models, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GITHUB_ACTIONS", "true")  # check's ::error annotations on stdout too
    a, b = models
    args = COMMANDS[command](a, b, tmp_path) + ["--top", "100", "--md", tmp_path / "r.md", "--html",
                                                   tmp_path / "r.html", "--json", tmp_path / "r.json"]
    code, out, err = run_cli(args, capsys)
    assert code == (1 if command == "check" else 0), err
    texts = {"terminal": out, "stderr": err, "markdown": (tmp_path / "r.md").read_text(encoding="utf-8"),
             "html": (tmp_path / "r.html").read_text(encoding="utf-8")}
    if command == "check":
        texts["junit"] = (tmp_path / "r.xml").read_text(encoding="utf-8")
    for kind, text in texts.items():
        assert not RAW.search(text), f"{kind}: raw control character {RAW.search(text)[0]!r}"
    for kind in ("terminal", "markdown", "html"):
        assert SHOWN in texts[kind] or SHOWN_C1 in texts[kind], f"{kind}: the name is not shown"
    doc = (tmp_path / "r.json").read_text(encoding="utf-8")
    assert not RAW.search(doc)  # JSON escapes controls (\u001b; DEL and C1 too, as \u009b) …
    assert {HOSTILE, HOSTILE_C1} & set(_strings(json.loads(doc)))  # … and keeps the exact names


def test_error_lines_show_control_characters(tmp_path, capsys):
    # what is wrong: a path that does not exist, named to clear the screen when the error quotes it
    code, out, err = run_cli(["analyze", tmp_path / "\x1b[2Jmissing"], capsys)
    assert code == 2 and err.startswith(f"normscope: error: {tmp_path}/\\x1b[2Jmissing") and "\x1b" not in err
    assert err.count("\n") == 1
    # a usage error quotes what it could not parse
    code, out, err = run_cli(["analyze", "--\x1b[2Jtop"], capsys)
    assert (code, err) == (2, "normscope: error: No such option: --\\x1b[2Jtop (Possible options: --top) "
                         "(see `normscope analyze --help`)\n")


def test_compare_names_an_unreadable_variant_visibly(models, tmp_path, capsys):
    a, _ = models
    # what is wrong: the second variant does not exist, and its name holds an escape sequence
    code, out, err = run_cli(["compare", a, a, tmp_path / "\x1b]0;owned\x07gone", "-q"], capsys)
    assert "\\x1b]0;owned\\x07gone" in err and not RAW.search(err)
