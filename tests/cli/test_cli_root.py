"""The root of the command line: --version, and errors that speak in options rather than Python arguments."""

from __future__ import annotations

from importlib.metadata import version

from helpers import run_cli


def test_version_prints_and_exits_0(capsys):
    code, out, err = run_cli(["--version"], capsys)
    assert (code, out, err) == (0, f"normscope {version('normscope')}\n", "")


def test_clip_without_a_model_or_an_output_says_so_in_options(capsys, tmp_path):
    code, _, err = run_cli(["clip", "--percentile", "99"], capsys)
    assert code == 2 and err == ("normscope: error: clip needs a MODEL to clip: an HF safetensors directory or file, "
                                 "or a hub id (normscope clip MODEL --out DIR)\n")
    code, _, err = run_cli(["clip", str(tmp_path), "--percentile", "99"], capsys)
    assert code == 2 and err == ("normscope: error: clip writes a new checkpoint: give it --out DIR (a new directory), "
                                 "or --dry-run to only report what would change\n")


REPORT_COMMANDS = ("analyze", "check", "simulate", "clip", "compare", "forward", "recipe")


def test_every_report_command_writes_html_and_the_docs_say_which(capsys):
    """README said every report writes --html, docs/reports.md said only analyze, and check had none (issue 21
    item 9): every command that reports takes --html, and docs/reports.md names them all."""
    from pathlib import Path

    from normscope.cli import app

    names = {c.name or c.callback.__name__ for c in app.registered_commands}
    assert names - {"schemes"} == set(REPORT_COMMANDS)
    docs = (Path(__file__).parents[2] / "docs" / "reports.md").read_text()
    for name in REPORT_COMMANDS:
        code, out, _ = run_cli([name, "--help"], capsys)
        assert code == 0 and "--html" in out, name
        assert f"`{name}`" in docs.split("## HTML")[0], name


def test_help_shows_no_metavar_after_plain_flags(capsys):
    """typer printed `<bool>` after on/off flags such as --quiet (issue 21 item 13)."""
    for name in REPORT_COMMANDS:
        code, out, _ = run_cli([name, "--help"], capsys)
        assert code == 0 and "<bool>" not in out and "BOOLEAN" not in out, name
