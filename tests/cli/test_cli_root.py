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
