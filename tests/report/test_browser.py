"""A 3-way compare of the real Gemma 3 270M (its HF export, a p99-clipped copy from `clip`, the published
GGUF), and its HTML report in a real headless Chromium (Debian `chromium`, installed by `.ci/run`); then the page
of every other report (analyze, simulate, check, clip, clip --sweep, recipe, forward) of tiny models, each opening
with its verdict.

Chromium renders a screenshot, dumps the DOM after the page's script ran, and writes its net log. The
page's own requests are the net log's URL requests made for the file:// page (network isolation key
`file://`); Chromium's background traffic has other keys. A control page with one remote image
proves the net-log check sees a request when there is one. All traffic goes to a dead proxy, so
nothing leaves the machine whatever a page asks for.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from html_checks import parse
from normscope import clip

LABELS = ("base", "clipped", "q4_k_m")
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("needs Debian's chromium (apt-get install chromium; .ci/run installs it)")
    return path


@pytest.fixture(scope="module")
def three_way(gemma_hf, gemma_gguf, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("three-way")
    clip(gemma_hf, 99, out=d / "gemma-p99")
    page = d / "compare.html"
    proc = subprocess.run([sys.executable, "-m", "normscope", "compare", str(gemma_hf), str(d / "gemma-p99"),
                           str(gemma_gguf), "--labels", ",".join(LABELS), "--html", str(page), "--quiet"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    return page


def _render(chromium: str, page: Path, work: Path, *args: str) -> tuple[str, list[str]]:
    """(stdout of Chromium, the URLs the page itself requested)."""
    work.mkdir(parents=True, exist_ok=True)
    netlog = work / "net.json"
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-default-apps", f"--user-data-dir={work / 'profile'}", "--proxy-server=http://127.0.0.1:9",
           f"--log-net-log={netlog}", "--net-log-capture-mode=Default", *args, page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = json.loads(netlog.read_text(encoding="utf-8"))
    kinds = {v: k for k, v in log["constants"]["logEventTypes"].items()}
    asked = [e["params"]["url"] for e in log["events"]
             if kinds.get(e["type"]) == "URL_REQUEST_START_JOB" and "url" in e.get("params", {})
             and str(e["params"].get("network_isolation_key", "")).startswith("file://")]
    return proc.stdout, [u for u in asked if not u.startswith(LOCAL_SCHEMES)]


def test_the_net_log_check_sees_a_remote_request(chromium, tmp_path):
    page = tmp_path / "remote.html"
    page.write_text('<!doctype html><html><body><img src="http://example.invalid/x.png"><p>x</p></body></html>')
    _, remote = _render(chromium, page, tmp_path / "run", "--dump-dom")
    assert remote == ["http://example.invalid/x.png"]


def test_three_way_compare_renders_in_chromium_with_three_series(chromium, three_way, tmp_path):
    dom, remote = _render(chromium, three_way, tmp_path / "dom", "--dump-dom")
    assert remote == []
    page = parse(dom)
    assert not page.errors, page.errors
    tables = [t for t in page.tables.values() if t["rows"]]
    assert len(tables) >= 5
    # the page's script ran: it makes every sortable header focusable
    sortable = re.findall(r'<table[^>]*class="[^"]*sortable[^"]*"[^>]*>.*?</thead>', dom, re.S)
    assert sortable and all('tabindex="0"' in head for head in sortable)
    assert all(len(re.findall(r"<th\b", head)) == head.count('tabindex="0"') for head in sortable)
    # the depth overlays: one line per model, each labelled in the legend
    figures = [svg for svg in re.findall(r"<svg\b.*?</svg>", dom, re.S) if 'id="depth-figure' in svg]
    assert len(figures) >= 5
    for svg in figures:
        legend = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
        assert all(label in legend for label in LABELS), legend[:20]

    shot = tmp_path / "page.png"
    _, remote = _render(chromium, three_way, tmp_path / "shot", "--window-size=1280,2400", f"--screenshot={shot}")
    assert remote == []
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[:2] == (2400, 1280)
    rgb = (pixels[..., :3] * 255).astype(np.uint8).reshape(-1, 3)
    background = np.all(rgb == rgb[0], axis=1).mean()
    colours = len(np.unique(rgb, axis=0))
    assert background < 0.97 and colours > 50, (background, colours)  # text, tables and plots, not a blank page


# every other report's page, made from tiny models ------------------------------------------------------------------

PAGES = ("analyze", "simulate", "check", "clip", "clip_sweep", "recipe", "forward")


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, Path]:
    from forward_helpers import tiny_gemma
    from helpers import LLAMA_CONFIG, llama_tensors, write_model
    from normscope import analyze, check, clip_sweep, forward, recipe, simulate
    from normscope.report import report_html

    d = tmp_path_factory.mktemp("pages")
    gemma = tiny_gemma(d / "gemma")
    llama = write_model(d / "llama", llama_tensors(hidden=256, ffn=512), LLAMA_CONFIG, "BF16")
    results = {"analyze": analyze(gemma), "simulate": simulate(llama, schemes="Q4_K_M,int4,Q8_0"),
               "check": check(gemma, max_effective_gamma=100, use_pyproject=False),
               "clip": clip(gemma, 99, dry_run=True),
               "clip_sweep": clip_sweep(llama, "90,99,99.9,100", schemes="Q4_K_M,int4", scope="linear"),
               "recipe": recipe(llama, budget_bpw=6.0), "forward": forward(gemma, schemes="Q8_0,Q2_K", tokens=64)}
    out = {}
    for name, result in results.items():
        out[name] = d / f"{name}.html"
        out[name].write_text(report_html(result), encoding="utf-8")
    return out


@pytest.mark.parametrize("name", PAGES)
def test_every_report_renders_in_chromium_with_its_verdict_first(chromium, pages, name, tmp_path):
    page_file = pages[name]
    dom, remote = _render(chromium, page_file, tmp_path / "dom", "--dump-dom")
    assert remote == []
    page = parse(dom)
    assert not page.errors, page.errors
    sections = re.findall(r'<section id="([^"]+)"', dom)
    assert sections[0] == "verdict", sections
    assert "`" not in dom.split("<main>", 1)[1].split("</main>", 1)[0]  # commands show as <code>, not backticks
    assert "mathdefault" not in dom
    # the script ran without an error: it makes every sortable header focusable
    heads = re.findall(r'<table[^>]*class="[^"]*sortable[^"]*"[^>]*>.*?</thead>', dom, re.S)
    assert all('tabindex="0"' in head for head in heads)

    shot = tmp_path / "page.png"
    _, remote = _render(chromium, page_file, tmp_path / "shot", "--window-size=1280,1600", f"--screenshot={shot}")
    assert remote == []
    from matplotlib.image import imread

    rgb = (imread(shot)[..., :3] * 255).astype(np.uint8).reshape(-1, 3)
    background = np.all(rgb == rgb[0], axis=1).mean()
    assert background < 0.98 and len(np.unique(rgb, axis=0)) > 50  # text, tables and plots, not a blank page
