"""HTML reports: golden page of a tiny seeded Gemma, self-containment, well-formedness, numbers taken from the
JSON, deterministic SVG, the real Gemma heatmap, the CLI flag, the section API, and docs/reports.md."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import matplotlib
import pytest

from helpers import GEMMA_CONFIG, gemma_tensors, run_cli, write_model
from html_checks import assert_self_contained, assert_well_formed, parse
from normscope import analyze
from normscope.errors import UnknownNameError
from normscope.report import analyze_html, plots
from normscope.report.fmt import count, num
from normscope.report.html import Card, Figure, Note, Notes, Section, Text, html_page, norm_gain_grid, sections_for
from normscope.report.tables import Table

GOLDEN = Path(__file__).parent / "golden"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = write_model(tmp_path_factory.mktemp("html") / "tiny", gemma_tensors(), GEMMA_CONFIG, "BF16")
    result = analyze(d)
    return d, result, analyze_html(result)


def normalise(html: str, model_dir: Path) -> str:
    """The page without what is not ours to pin: the temporary path, matplotlib's SVG, the CSS and JS files."""
    html = html.replace(str(model_dir), "<MODEL>")
    html = re.sub(r"<svg\b.*?</svg>", "<svg><!-- matplotlib output: see test_svg_* --></svg>", html, flags=re.S)
    html = re.sub(r"<style>.*?</style>", "<style>/* static/report.css */</style>", html, flags=re.S)
    return re.sub(r"<script>.*?</script>", "<script>/* static/report.js */</script>", html, flags=re.S)


def test_analyze_page_matches_the_golden_file(tiny):
    """Regenerate with NORMSCOPE_UPDATE_GOLDEN=1 after an intended change, and review the diff."""
    model_dir, _, html = tiny
    golden = GOLDEN / "analyze_tiny.html"
    got = normalise(html, model_dir)
    if os.environ.get("NORMSCOPE_UPDATE_GOLDEN") == "1":
        golden.write_text(got, encoding="utf-8")
    assert got == golden.read_text(encoding="utf-8")


def test_page_loads_nothing_from_the_network(tiny):
    assert_self_contained(tiny[2])


def test_page_is_well_formed(tiny):
    page = assert_well_formed(tiny[2])
    refs = [v for _, a in page.tags for k, v in a.items() if k == "href" and v and v.startswith("#")]
    assert refs  # the table of contents links to the sections
    assert len(re.findall(r"<svg\b.*?</svg>", tiny[2], flags=re.S)) == 3


def _numbers(value) -> list[float]:
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in _numbers(v)]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value]
    if value in ("nan", "inf", "-inf"):
        return [float(value)]
    return []


def _renderings(values) -> set[str]:
    return {s for v in values for s in (num(v), num(v, 3), count(v) if float(v).is_integer() else num(v))}


def test_every_number_in_the_top_tables_is_in_the_json(tiny):
    _, result, html = tiny
    doc = json.loads(json.dumps(result.to_dict()))
    entries = {t["name"]: t for t in doc["tensors"]}
    page = parse(html)
    checked = 0
    for table_id in ("norms-table", "outliers-table"):
        t = page.tables[table_id]
        assert t["rows"], table_id
        for row in t["rows"]:
            entry = entries[row[0]]
            allowed = _renderings(_numbers(entry))
            for cell, numeric in zip(row, t["num"]):
                if numeric:
                    assert cell in allowed, (table_id, row[0], cell)
                    checked += 1
            if "shape" in t["headers"]:
                assert row[t["headers"].index("shape")] == "×".join(map(str, entry["shape"]))
    assert checked > 50
    heat = page.tables["norms-figure-data"]
    for row in heat["rows"]:
        layer_gains = _renderings(e["norm"]["max_abs_gain"] for e in entries.values()
                                  if e["norm"] and e["layer"] == int(row[0]))
        assert all(cell in layer_gains for cell in row[1:] if cell != "—"), row
    card = html.split('id="summary-card-2"', 1)[1].split("</div>", 1)[0]
    for key in ("n_params", "n_tensors", "bytes_on_disk"):
        assert count(doc["summary"][key]) in card


def test_top_limits_the_ranked_tables(tiny):
    page = parse(analyze_html(tiny[1], top=3))
    assert len(page.tables["norms-table"]["rows"]) == 3 and len(page.tables["outliers-table"]["rows"]) == 3


def test_same_page_in_a_fresh_process_and_pyplot_never_imported(tiny, tmp_path):
    """The SVG is byte-identical across processes (hash seed, import order) and pyplot is never loaded."""
    model_dir, _, html = tiny
    out = tmp_path / "r.html"
    code = ("import sys; from normscope import analyze; from normscope.report import analyze_html; "
            f"open({str(out)!r}, 'w', encoding='utf-8').write(analyze_html(analyze({str(model_dir)!r}))); "
            "print('matplotlib.pyplot' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONHASHSEED": "12345", "MPLBACKEND": "svg"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
    assert out.read_text(encoding="utf-8") == html


def test_svg_is_deterministic_and_leaves_matplotlib_settings_alone():
    before = dict(matplotlib.rcParams)
    values = [[1.0, 1657.0, None], [0.0, 20.0, 3.5]]
    a = plots.heatmap(values, rows=["post_ffn", "q"], cols=["0", "1", "2"], colorbar="max |gain|")
    assert a == plots.heatmap(values, rows=["post_ffn", "q"], cols=["0", "1", "2"], colorbar="max |gain|")
    assert dict(matplotlib.rcParams) == before
    assert a.startswith("<svg ") and "<image" not in a and "://" not in a and "Matplotlib v" not in a
    assert ">1657</text>" in a and ">20</text>" in a  # the largest cells are labelled
    assert "<metadata" not in a and "<dc:date" not in a


def test_svg_helpers_for_later_reports():
    svgs = {
        "bars": plots.bars(["blk.0.ffn_down", "blk.1.attn_q"], {"Q4_K": [0.031, 0.02], "Q8_0": [0.002, None]},
                           xlabel="relative L2"),
        "depth": plots.depth_lines({"gemma (18 layers)": [float(i) for i in range(18)], "llama (4)": [1, None, 3, 4]},
                                   ylabel="max |gain|", log=True),
        "curves": plots.curves([99.0, 99.9, 99.99, 100.0], {"rmse": [3.0, 2.0, 1.0, 1.5], "sqnr": [1, 2, 3, 2]},
                               xlabel="clip percentile", marks={"chosen": 99.99}),
        "empty heatmap": plots.heatmap([[None]], rows=["a"], cols=["0"]),
    }
    for name, svg in svgs.items():
        root = ET.fromstring(svg)
        assert root.tag == "svg" and "://" not in svg, name
    assert ">Q8_0</text>" in svgs["bars"] and ">llama (4)</text>" in svgs["depth"] and ">chosen</text>" in svgs["curves"]


def test_real_gemma_heatmap_peaks_at_layer_16_post_ffn(gemma_hf):
    result = analyze(gemma_hf)
    grid = norm_gain_grid(result)
    cells = [(v, layer, kind) for layer, row in zip(grid.rows, grid.values) for kind, v in zip(grid.cols, row)
             if v is not None]
    assert max(cells) == (1657.0, 16, "post_ffn")
    assert grid.cols == ("pre_attn", "post_attn", "pre_ffn", "post_ffn", "q", "k") and grid.rows == tuple(range(18))
    start = time.perf_counter()
    html = analyze_html(result)
    assert time.perf_counter() - start < 5.0
    assert len(html.encode()) < 2_000_000
    table = parse(html).tables["norms-figure-data"]
    col = table["headers"].index("post_ffn")
    best = max(table["rows"], key=lambda row: float(row[col]))
    assert (best[0], best[col]) == ("16", "1657")
    heat = re.search(r'<figure class="block" id="norms-figure">.*?</svg>', html, flags=re.S).group(0)
    assert ">1657</text>" in heat and ">1649</text>" in heat


def test_cli_writes_the_html_file(tiny, tmp_path, capsys):
    target = tmp_path / "report.html"
    code, out, err = run_cli(["analyze", str(tiny[0]), "--html", str(target), "--quiet"], capsys)
    assert code == 0, err
    assert out == "" and target.read_text(encoding="utf-8") == tiny[2]
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temporary file left behind


def test_cli_html_into_a_missing_directory_is_one_line_and_exit_2(tiny, tmp_path, capsys):
    code, out, err = run_cli(["analyze", str(tiny[0]), "--html", str(tmp_path / "nope" / "r.html")], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("normscope: error: ")
    assert "does not exist" in err and "Traceback" not in err


def test_sections_api_escapes_text_and_keeps_ids_unique():
    svg = plots.heatmap([[1.0, 2.0]], rows=["k"], cols=["0", "1"])
    table = Table("Scheme <b>errors</b>", ("tensor", "rel L2"), (("<script>alert(1)</script>", "0.031"),), "lr")
    section = Section("Simulate", (Card("Scheme", (("bits/weight", "4.5"),)), Text("a < b & c"),
                                   Figure(svg, "two cells", table), table,
                                   Notes("Notes", (Note("warning", "too <many> bits", "blk.0"),))))
    page = html_page("demo", [section, section])
    parsed = parse(page)
    assert not parsed.errors and len(parsed.ids) == len(set(parsed.ids))
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "a &lt; b &amp; c" in page and "too &lt;many&gt; bits" in page
    assert 'id="simulate"' in page and 'id="simulate-2"' in page
    assert page.count("<svg") == 2 and not re.findall(r'\bid="(figure_1|axes_1)"', page)
    with pytest.raises(ValueError, match="must be an SVG"):
        html_page("demo", [Section("x", (Figure("<script>alert(1)</script>", "not a plot"),))])


def test_names_with_controls_or_tex_are_text_in_the_page_and_its_plots(recwarn):
    # what is wrong: one name carries an escape sequence (clear screen), another a `$…$` pair that matplotlib would
    # parse as TeX (and fail to: `\\frac` without its arguments)
    names = ["\x1b[2Jblk.0.ffn_down", "blk.1.attn_q$\\frac$"]
    svgs = [plots.bars(names, {"Q4_K": [0.031, 0.02]}, title=names[0]),
            plots.heatmap([[1.0, 2.0]], rows=names[:1], cols=["0", "1"], colorbar=names[0]),
            plots.depth_lines({names[0]: [1.0, 2.0]}), plots.curves([1.0, 2.0], {names[0]: [1.0, 2.0]},
                                                                  marks={names[1]: 1.5})]
    table = Table(names[0], (names[0], "v"), ((names[0], "1"),))
    page = html_page(names[0], [Section(names[0], (Figure(svgs[0], names[0], table),
                                                   Notes("n", (Note("warning", names[0], names[0]),))))])
    for text in [page, *svgs]:
        assert "\x1b" not in text and ">\\x1b[2Jblk.0.ffn_down</text>" in "".join(svgs)
    assert ">blk.1.attn_q$\\frac$</text>" in svgs[0]  # the name as written, not TeX
    assert not [w for w in recwarn if "\x1b" in str(w.message)]  # matplotlib's "Glyph 27 missing" quoted ESC raw


def test_unknown_result_type_lists_the_known_ones():
    with pytest.raises(UnknownNameError, match="AnalyzeResult"):
        sections_for(object())


def _doc_blocks() -> list[str]:
    return re.findall(r"```python\n(.+?)```", (ROOT / "docs" / "reports.md").read_text(encoding="utf-8"), re.S)


@pytest.mark.parametrize("index", range(len(_doc_blocks())))
def test_docs_python_blocks_run(index, gemma_gguf, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(_doc_blocks()[index], f"docs/reports.md block {index}", "exec"), {"__name__": "__docs__"})


def test_docs_command_runs(gemma_gguf, tmp_path):
    doc = (ROOT / "docs" / "reports.md").read_text(encoding="utf-8")
    line = re.search(r"^\$ (normscope analyze .*--html .*)$", doc, re.M).group(1)
    proc = subprocess.run([sys.executable, "-m", "normscope", *line.split()[1:]], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "gemma.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
