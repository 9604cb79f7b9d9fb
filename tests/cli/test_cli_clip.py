"""`normscope clip` end to end: JSON valid against its schema (report and manifest), exact Markdown, the sweep,
one-line refusals with exit 2, and a process killed mid-write that leaves no output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest

from helpers import GEMMA_CONFIG, gemma_tensors, LLAMA_CONFIG, llama_tensors, run_cli, write_model
from normscope.report.schemas import schema

MANIFEST = "normscope-clip.json"


@pytest.fixture
def gemma(tmp_path):
    return write_model(tmp_path / "gemma", gemma_tensors(), GEMMA_CONFIG, "BF16", shards=2)


def test_clip_writes_a_checkpoint_and_reports_it(gemma, tmp_path, capsys):
    out = tmp_path / "clipped"
    code, stdout, err = run_cli(["clip", gemma, "--percentile", "99", "--out", out, "--json", tmp_path / "r.json",
                                 "--md", tmp_path / "r.md", "--top", "3"], capsys)
    assert code == 0, err
    doc = json.loads((tmp_path / "r.json").read_text())
    jsonschema.validate(doc, schema("clip"))
    manifest = json.loads((out / MANIFEST).read_text())
    jsonschema.validate(manifest, schema("clip"))
    assert manifest == doc and doc["schema"] == "normscope.clip" and doc["verified"] is True
    assert doc["out"] == str(out.resolve()) and doc["changed"] == 13
    md = (tmp_path / "r.md").read_text()
    assert md.startswith("## normscope clip\n\n- source: ")
    assert "- clip: p99 of |value| per tensor · scope norms · 13 tensors in scope, 13 changed, 13 values " \
        "clipped\n" in md
    # p99 of 64 gains is the second largest (numpy's "lower"): only the planted 1657 is clipped
    assert ("| model.layers.1.post_feedforward_layernorm.weight | gain (1+w) | BF16 | 4.688 | 1 | 1657 | 4.688 |"
            in md)
    assert "Changed tensors (top 3 of 13 by max |value| before)" in stdout
    assert "No mainstream quantizer touches norm weights" in " ".join(stdout.split())  # the terminal wraps


def test_dry_run_markdown_is_exact_and_writes_nothing(gemma, tmp_path, capsys):
    code, stdout, err = run_cli(["clip", gemma, "-p", "95", "--scope", "linear", "--per", "channel", "--dry-run",
                                 "--include", "*layers.1.mlp.*", "--md", "-", "--top", "2"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gemma"]
    assert stdout == f"""## normscope clip

- source: {gemma} (safetensors) · architecture gemma3
- clip: p95 of |value| per channel · scope linear · 3 tensors in scope, 3 changed, 1,457 values clipped
- dry run: nothing written

### Changed tensors (top 2 of 3 by max |value| before)

| tensor | clipped on | dtype | threshold | clipped | max before | max after |
|:---|:---|:---|---:|---:|---:|---:|
| model.layers.1.mlp.up_proj.weight | \\|w\\| | BF16 | 0.02686…0.04419 | 507 | 0.08301 | 0.04419 |
| model.layers.1.mlp.down_proj.weight | \\|w\\| | BF16 | 0.03198…0.04541 | 444 | 0.0791 | 0.04541 |

### Notes

- **info**: 3 Linear weight tensors would change: 1,457 of 24,576 values (5.93%) clipped to their tensor's p95 of |w|; `normscope clip --sweep` shows whether that lowers the error of a quantized model or only adds to it
"""


def test_sweep_reports_the_best_percentile_and_where_clipping_is_pure_error(tmp_path, capsys):
    src = write_model(tmp_path / "llama", llama_tensors(hidden=256, ffn=512), LLAMA_CONFIG, "BF16", shards=2)
    code, stdout, err = run_cli(["clip", src, "--sweep", "90,99.9", "-s", "Q4_K_M,int4", "--json", "-"], capsys)
    assert code == 0, err
    doc = json.loads(stdout)
    jsonschema.validate(doc, schema("clip"))
    assert doc["schema"] == "normscope.clip_sweep" and doc["percentiles"] == [90.0, 99.9, 100.0]
    assert [(b["scheme"], b["percentile"]) for b in doc["best"]] == [("Q4_K_M", 100.0), ("int4", 99.9)]
    assert len(doc["points"]) == 20 * 2 * 3  # tensors in scope × schemes × percentiles
    assert any("clipping a norm is pure error" in n for n in doc["notes"])
    totals = {(t["scheme"], t["percentile"]): t for t in doc["totals"]}
    assert totals[("Q4_K_M", 100.0)]["clip_rel_l2"] == 0.0 and totals[("Q4_K_M", 100.0)]["vs_no_clip"] == 0.0
    code, stdout, err = run_cli(["clip", src, "--sweep", "99", "--scope", "norms"], capsys)
    assert code == 0, err
    assert "Q4_K_M quantizes none of the 5 tensors in scope: nothing to trade, any clipping is pure error" in stdout


@pytest.mark.parametrize("args, message", [
    (["--out", "{src}"], "{src}: is the input itself; clip never writes into its input"),
    (["--out", "{src}/sub"], "is inside the input"),
    (["--out", "{tmp}", "--force"], "contains the input"),
    (["--out", "{tmp}/taken"], "already exists; pass --force (force=True) to replace it"),
    (["--out", "{tmp}/taken", "--force"], "exists and is not an earlier normscope output (no normscope-clip.json)"),
    (["--out", "{tmp}/no/such"], "parent directory {tmp}/no does not exist"),
    ([], "clip writes a new checkpoint: give it --out DIR (a new directory), or --dry-run to only report"),
    (["-p", "101", "--dry-run"], "percentile 101.0 is outside [0, 100]"),
    (["--sweep", "99", "--out", "{tmp}/x"], "--sweep measures and writes no checkpoint"),
    (["--scheme", "int4", "--dry-run"], "--scheme and --include-lm-head go with --sweep"),
    (["--sweep", "99", "-s", "Q4_K_X"], "unknown scheme 'Q4_K_X'; valid: "),
    (["--sweep", "99,abc"], "percentile 'abc' is not a number"),
], ids=["equal", "inside", "contains", "exists", "foreign", "no-parent", "no-out", "percentile", "sweep-out",
        "scheme-alone", "scheme", "sweep-value"])
def test_refusals_are_one_line_and_exit_2(gemma, tmp_path, capsys, args, message):
    (gemma / "sub").mkdir()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("keep")
    fill = {"src": str(gemma), "tmp": str(tmp_path)}
    code, out, err = run_cli(["clip", gemma, *[a.format(**fill) for a in args]], capsys)
    assert code == 2
    assert err.startswith("normscope: error: ") and err.count("\n") == 1
    assert message.format(**fill) in err
    assert (tmp_path / "taken" / "mine.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gemma", "taken"]


def test_gguf_input_is_refused(gemma_gguf, tmp_path, capsys):
    code, out, err = run_cli(["clip", gemma_gguf, "--out", tmp_path / "out"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "a GGUF file; clip writes HF safetensors checkpoints only and refuses GGUF input" in err
    assert not (tmp_path / "out").exists()


def test_a_process_killed_mid_write_leaves_no_output_and_the_next_run_cleans_up(tmp_path, capsys):
    src = write_model(tmp_path / "gemma", gemma_tensors(), GEMMA_CONFIG, "BF16", shards=2)
    out, flag = tmp_path / "out", tmp_path / "written-one"
    # the child writes one tensor, says so, and waits to be killed: mid-write for certain
    script = f"""
import time
import normscope.io.writer as writer
real = writer._write_rows
def slow(out, entry, chunks, h):
    real(out, entry, chunks, h)
    open({str(flag)!r}, "w").close()
    time.sleep(120)
writer._write_rows = slow
from normscope.cli import main
main(["clip", {str(src)!r}, "--out", {str(out)!r}, "--quiet"])
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.monotonic() + 120
        while not flag.exists():
            assert child.poll() is None, "the child ended before writing"
            assert time.monotonic() < deadline, "the child never wrote a tensor"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert not out.exists()
    partial = [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert [p.name.startswith(f".out.normscope-partial-{child.pid}-") for p in partial] == [True]
    assert any(partial[0].glob("*.safetensors"))  # it really was killed mid-write
    code, _, err = run_cli(["clip", src, "--out", out, "--quiet"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gemma", "out", "written-one"]


def test_html_pages_for_clip_and_sweep(tmp_path, capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "report"))
    from html_checks import assert_self_contained, assert_well_formed

    src = write_model(tmp_path / "llama", llama_tensors(hidden=256, ffn=512), LLAMA_CONFIG, "BF16")
    code, _, err = run_cli(["clip", src, "-p", "99", "--scope", "all", "--dry-run", "--html", tmp_path / "c.html",
                            "-q"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["clip", src, "--sweep", "99,99.9", "-s", "Q4_K_M,int4", "--html", tmp_path / "s.html",
                            "-q"], capsys)
    assert code == 0, err
    for page in ("c.html", "s.html"):
        html = (tmp_path / page).read_text()
        assert_self_contained(html)
        assert_well_formed(html)
    sweep = assert_well_formed((tmp_path / "s.html").read_text())
    curve = next(t for t in sweep.tables.values() if t["headers"] == ["percentile", "clip", "quant", "total"])
    assert [row[0] for row in curve["rows"]] == ["99", "99.9", "100"]
