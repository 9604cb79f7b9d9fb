"""`normscope clip` end to end: JSON valid against its schema (report and manifest), exact Markdown, the sweep,
one-line refusals with exit 2, and a process killed mid-write that leaves no output."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
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
    assert md.startswith("## normscope clip\n\n> **clipped 13 values in 13 of 13 tensors at p99 per tensor; written to ")
    assert "\n- source: " in md
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

> **dry run: would clip 1,457 values in 3 of 3 tensors at p95 per channel; nothing written**  
> largest cut: model.layers.1.mlp.up_proj.weight, |w| 0.08301 → 0.04419

- source: {gemma} (safetensors) · architecture gemma3
- clip: p95 of |value| per channel · scope linear · 3 tensors in scope, 3 changed, 1,457 values clipped
- dry run: nothing written

### Changed tensors (top 2 of 3 by max |value| before)

| tensor | clipped on | dtype | threshold | clipped | max before | max after |
|:---|:---|:---|---:|---:|---:|---:|
| model.layers.1.mlp.up_proj.weight | \\|w\\| | BF16 | 0.02686…0.04419 | 507 | 0.08301 | 0.04419 |
| model.layers.1.mlp.down_proj.weight | \\|w\\| | BF16 | 0.03198…0.04541 | 444 | 0.0791 | 0.04541 |

### Notes

- **info**: 3 Linear weight tensors would change: 1,457 of 24,576 values (5.93%) clipped to their output channel's (row's) p95 of |w|; `normscope clip --sweep` shows whether that lowers the error of a quantized model or only adds to it
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


# -- what clip copies beside the weights: the input's own regular files, nothing else -----------------------------

def _outputs(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_links_out_of_the_input_are_not_copied(tmp_path, capsys):
    src = write_model(tmp_path / "shared" / "model", gemma_tensors(), GEMMA_CONFIG, "BF16")
    (tmp_path / "shared" / "private").mkdir()
    (tmp_path / "shared" / "private" / "secret.txt").write_text("SECRET")
    (src / "tokenizer.json").write_text('{"tokens": []}')
    (src / "extra").mkdir()
    (src / "extra" / "readme.txt").write_text("inside")
    # what is wrong: `up` links to the directory above the input, which holds private/secret.txt; notes.txt links
    # to that file directly. tokenizer_config.json links to a file of the input itself (fine: copied as its content)
    (src / "up").symlink_to("..")
    (src / "notes.txt").symlink_to(Path("..") / "private" / "secret.txt")
    (src / "tokenizer_config.json").symlink_to("tokenizer.json")
    out = tmp_path / "clipped"
    code, stdout, err = run_cli(["clip", src, "--out", out, "--json", tmp_path / "r.json"], capsys)
    assert code == 0, err
    files = _outputs(out)
    assert sorted(files) == ["config.json", "extra/readme.txt", "model.safetensors", MANIFEST, "tokenizer.json",
                             "tokenizer_config.json"]
    assert not (out / "tokenizer_config.json").is_symlink() and files["tokenizer_config.json"] == b'{"tokens": []}'
    assert not any(b"SECRET" in data for data in files.values())
    secret = (tmp_path / "shared" / "private" / "secret.txt").resolve()
    assert json.loads((tmp_path / "r.json").read_text())["warnings"] == [
        f"up: not copied: a symbolic link to a directory ({(tmp_path / 'shared').resolve()}); clip copies only the "
        "input's own files and enters no linked directory: copy what the model needs yourself",
        f"notes.txt: not copied: a symbolic link to {secret}, outside the input directory; clip copies only files "
        "inside its input: copy it yourself if the model needs it"]
    assert "[warning] notes.txt: not copied: a symbolic link to" in stdout


class Hung(BaseException):
    """Raised by the deadline: not an Exception, so that the CLI's error handling cannot swallow it."""


@contextlib.contextmanager
def deadline(seconds: float):
    def fire(signum, frame):
        raise Hung(f"still running after {seconds} s: a read blocked")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _fifo(path: Path) -> None:
    os.mkfifo(path)  # nobody writes to it: opening it to read waits forever


def _socket(path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX)  # a socket file cannot be opened at all (ENXIO)
    sock.bind(str(path))
    sock.close()  # the file stays


def _broken_link(path: Path) -> None:
    path.symlink_to("nowhere.json")


@pytest.mark.parametrize("make, what", [
    (_fifo, "a named pipe (FIFO), not a regular file; clip copies only regular files (reading this one could block)"),
    (_socket, "a socket, not a regular file; clip copies only regular files (reading this one could block)"),
    (_broken_link, "a broken symbolic link"),
], ids=["fifo", "socket", "broken-link"])
def test_side_files_that_are_not_regular_files_are_skipped_never_read(tmp_path, capsys, make, what):
    src = write_model(tmp_path / "m", gemma_tensors(), GEMMA_CONFIG, "BF16")
    make(src / "tokenizer.json")  # what is wrong: the tokenizer is not a regular file
    out = tmp_path / "clipped"
    with deadline(120):
        code, stdout, err = run_cli(["clip", src, "--out", out, "--json", tmp_path / "r.json"], capsys)
    assert code == 0, err
    assert sorted(_outputs(out)) == ["config.json", "model.safetensors", MANIFEST]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clipped", "m", "r.json"]  # no partial directory
    assert json.loads((tmp_path / "r.json").read_text())["warnings"] == [f"tokenizer.json: not copied: {what}"]


def _hf_cache(cache: Path, repo: str, sha: str, directory: Path) -> Path:
    """A Hugging Face cache as huggingface_hub writes it: each file a blob named by its hash, linked from the
    snapshot (`snapshots/<sha>/config.json -> ../../blobs/<sha256>`); returns the snapshot directory."""
    root = cache / ("models--" + repo.replace("/", "--"))
    snapshot = root / "snapshots" / sha
    (root / "blobs").mkdir(parents=True)
    for f in sorted(p for p in directory.rglob("*") if p.is_file()):
        blob = root / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
        blob.write_bytes(f.read_bytes())
        link = snapshot / f.relative_to(directory)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(sha)
    return snapshot


def test_a_hub_snapshot_is_clipped_with_its_files(tmp_path, capsys):
    src = write_model(tmp_path / "m", gemma_tensors(), GEMMA_CONFIG, "BF16", shards=2)
    (src / "tokenizer.json").write_text('{"tokens": []}')
    (src / "onnx").mkdir()
    (src / "onnx" / "README.md").write_text("side file in a folder")
    cache = tmp_path / "hub"
    snapshot = _hf_cache(cache, "org/tiny-gemma", "c" * 40, src)
    expected = {name: data for name, data in _outputs(src).items() if not name.endswith(".safetensors")}
    # the snapshot directory given as a path, in this process
    code, _, err = run_cli(["clip", snapshot, "--out", tmp_path / "from-path", "--json", tmp_path / "p.json", "-q"],
                           capsys)
    assert code == 0, err
    # the hub id, resolved offline from the cache (huggingface_hub reads its variables when imported: a subprocess)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_HOME=str(tmp_path / "hf-home"))
    run = subprocess.run([sys.executable, "-m", "normscope", "clip", "org/tiny-gemma", "--out", tmp_path / "from-id",
                          "--json", tmp_path / "i.json", "-q"], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    for out, report in (("from-path", "p.json"), ("from-id", "i.json")):
        files = _outputs(tmp_path / out)
        assert {k: v for k, v in files.items() if not k.endswith(".safetensors") and k != MANIFEST} == expected
        assert json.loads((tmp_path / report).read_text())["warnings"] == []
