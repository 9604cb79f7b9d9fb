"""Every report opens with a verdict read off the result; analyze's explanations come grouped, one note per kind
(large gains: per kind of norm) with the tensors listed, counted and limited by `top`; a quantized source is
simulated as requantization; the charts: simulate's size against error, worst tensors of every scheme on an axis
near the data and a heatmap per scheme, compare's flat chart as a sentence, analyze's linear parameters chart,
integer layer ticks."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from helpers import GEMMA_CONFIG, LLAMA_CONFIG, gemma_tensors, llama_tensors, unmapped_model, write_model
from normscope import analyze, check, clip, clip_sweep, compare, forward, recipe, simulate
from normscope.report import markdown_report, plots, report_html, terminal_report
from normscope.report.check import check_verdict
from normscope.report.clip import clip_verdict, sweep_verdict
from normscope.report.forward import forward_verdict
from normscope.report.html import Figure, Note, Notes, Section, Text, html_page, sections_for
from normscope.report.recipe import recipe_verdict
from normscope.report.compare import compare_verdict
from normscope.report.findings import analyze_verdict, grouped_explanations
from normscope.report.fmt import num, size
from normscope.report.simulate import simulate_verdict
from normscope.report.text import verdict


@pytest.fixture(scope="module")
def gains(tmp_path_factory):
    """Four layers whose post-FFN norms hold large stored values, one pre-attention norm too, and a NaN-free model."""
    t = gemma_tensors(layers=4)
    for i, v in enumerate((1656.0, 900.0, 700.0, 300.0)):
        t[f"model.layers.{i}.post_feedforward_layernorm.weight"][5] = v
    t["model.layers.2.input_layernorm.weight"][3] = 250.0
    config = {**GEMMA_CONFIG, "num_hidden_layers": 4}
    return analyze(write_model(tmp_path_factory.mktemp("v") / "m", t, config, "F32"))


def test_explanations_are_grouped_by_kind_with_every_tensor_counted(gains):
    notes = grouped_explanations(gains, top=10)
    assert len(gains.explanations) == 5  # one per tensor in the JSON
    assert [sev for sev, _ in notes] == ["info", "info"]
    ffn, pre = (text for _, text in notes)
    assert ffn.startswith("4 post-FFN norms with |gain| above 100; the worst, "
                          "model.layers.0.post_feedforward_layernorm.weight: stored 1656 = gain 1657")
    assert ("also model.layers.1.post_feedforward_layernorm.weight (|gain| 901), "
            "model.layers.2.post_feedforward_layernorm.weight (|gain| 701), "
            "model.layers.3.post_feedforward_layernorm.weight (|gain| 301)") in ffn
    assert pre.startswith("model.layers.2.input_layernorm.weight: stored 250 = gain 251")


def test_top_limits_the_tensors_a_grouped_note_lists(gains):
    (_, ffn), _ = grouped_explanations(gains, top=2)
    assert "also model.layers.1.post_feedforward_layernorm.weight (|gain| 901) and 2 more (--top)" in ffn
    assert "layers.2.post_feedforward" not in ffn
    text = terminal_report(gains, top=2, width=400)
    assert text.count("[info]") == 2 and "more explanations" not in text
    md = markdown_report(gains, top=2)
    assert md.count("- **info**: ") == 2 and "### Explanations (5 tensors)" in md


def test_analyze_verdict_is_read_off_the_result(gains):
    lines = analyze_verdict(gains)
    assert lines[0] == f"no damage (no NaN or Inf in {len(gains.tensors)} tensors)"
    n_norms = sum(t.norm is not None for t in gains.tensors)
    assert lines[1].startswith(f"5 of {n_norms} norms have |gain| above 100 (up to 1657, "
                               "model.layers.0.post_feedforward_layernorm.weight), in the x̂ · (1 + w) convention of "
                               "Gemma's RMSNorm; the 4 post-FFN ones are how Gemma was trained")
    linear = [t for t in gains.tensors if t.weight is not None and t.role.is_linear]
    worst = max(linear, key=lambda t: t.weight.absmax_over_std)
    assert lines[2].startswith(f"largest weight outlier: {worst.name}, ")
    assert f"= {worst.weight.absmax_over_std:.1f}σ" in lines[2]


def test_every_output_opens_with_the_verdict(gains):
    lines = verdict(gains)
    assert lines == analyze_verdict(gains)
    text = terminal_report(gains, width=1000)
    assert text.splitlines()[:len(lines)] == lines
    md = markdown_report(gains)
    assert md.startswith(f"## normscope analyze\n\n> **{lines[0]}**  \n> {lines[1]}")
    page = report_html(gains)
    assert page.index('<section id="verdict">') < page.index('<section id="summary">')
    assert '<a href="#verdict">Verdict</a>' in page


def test_damage_leads_the_verdict(tmp_path):
    t = gemma_tensors()
    t["model.layers.0.mlp.up_proj.weight"][0, :3] = np.nan
    r = analyze(write_model(tmp_path / "m", t, GEMMA_CONFIG, "F32"))
    first = analyze_verdict(r)[0]
    assert first.startswith("DAMAGED: 1 of 28 tensors hold NaN or Inf values (model.layers.0.mlp.up_proj.weight)")
    assert grouped_explanations(r)[0] == ("error", "model.layers.0.mlp.up_proj.weight: 3 NaN and 0 Inf values: the "
                                          "checkpoint is damaged; no convention or quantizer explains that")


def test_real_gemma_verdict_and_notes(gemma_gguf):
    """The published Gemma 3 270M: 45 explanations become four notes; the verdict names what matters."""
    r = analyze(gemma_gguf)
    lines = analyze_verdict(r)
    assert lines[0] == "no damage (no NaN or Inf in 236 tensors)"
    assert lines[1].startswith("45 of 109 norms have |gain| above 100 (up to 1657, "
                               "model.layers.16.post_feedforward_layernorm.weight), in the x̂ · (1 + w) convention "
                               "of Gemma's RMSNorm; the 35 post-FFN and post-attention ones are how Gemma was trained")
    assert lines[2].startswith("largest weight outlier: model.layers.1.self_attn.q_proj.weight, |w| 1.594 = 40.3σ "
                               "(1,348 weights beyond 6σ)")
    notes = grouped_explanations(r, top=5)
    assert [t.split(";")[0] for _, t in notes] == [
        "18 post-FFN norms with |gain| above 100", "17 post-attention norms with |gain| above 100",
        "model.norm.weight: stored 300 = gain 301 (Gemma's RMSNorm computes x̂ · (1 + w))",
        "9 pre-attention norms with |gain| above 100"]


# simulate ---------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    d = write_model(tmp_path_factory.mktemp("s") / "llama", llama_tensors(hidden=256, ffn=512), LLAMA_CONFIG, "BF16")
    return simulate(d, schemes="Q4_K_M,int4,Q8_0,Q2_K")


def _front(schemes):
    """The schemes no other beats: none is at most as large and at least as accurate (and different in one)."""
    return [s.scheme for s in schemes if not any(
        (o.nbytes, o.sqnr_db) != (s.nbytes, s.sqnr_db) and o.nbytes <= s.nbytes and o.sqnr_db >= s.sqnr_db
        for o in schemes)]


def test_simulate_verdict_names_the_scheme_that_wins_at_each_size(sim):
    lines = simulate_verdict(sim)
    front = sorted((sim.scheme(n) for n in _front(sim.schemes)), key=lambda s: s.nbytes)
    assert len(front) >= 2  # the sizes differ enough for a real front
    assert lines[0].startswith("best at each size: " + ", ".join(
        f"{s.scheme} ({size(s.nbytes)}, {s.sqnr_db:.2f} dB)" for s in front))
    for s in sim.schemes:
        if s.scheme not in _front(sim.schemes):
            assert f"{s.scheme} ({size(s.nbytes)}, {s.sqnr_db:.2f} dB) is beaten by " in lines[0]


def test_simulate_verdict_names_the_worst_tensor_of_each_scheme(sim):
    line = simulate_verdict(sim)[1]
    for s in sim.schemes:
        worst = min((t for t in s.tensors if t.error is not None), key=lambda t: t.error.sqnr_db)
        assert f"{s.scheme} {worst.name} ({worst.error.sqnr_db:.2f} dB)" in line
    assert terminal_report(sim, width=1000).splitlines()[:2] == simulate_verdict(sim)[:2]


def test_a_quantized_source_is_simulated_as_requantization_with_overrides_in_the_label(gemma_gguf):
    r = simulate(gemma_gguf, schemes="Q4_K_M", include=["model.layers.0.*"], tensor_types=[("attn_v", "Q8_0")])
    stored = {t.source_dtype for t in r.schemes[0].tensors} - {"F32", "F16", "BF16"}
    assert stored and all(d.startswith("Q") for d in stored)  # the published file: Q8_0, Q5_0, Q4_K, Q6_K
    first = simulate_verdict(r)[0]
    assert first.startswith("the source is already quantized (") and "every error below is requantization" in first
    text = terminal_report(r, width=1000)
    assert "Schemes requantizing an already quantized source" in text
    assert "Q4_K_M --tensor-type attn_v=Q8_0: lowest requantization SQNR (top" in text
    assert r.schemes[0].tensor("model.layers.0.self_attn.v_proj.weight").type == "Q8_0"
    assert "Q4_K_M --tensor-type attn_v=Q8_0" in report_html(r)


def test_a_float_source_is_not_called_requantized(sim):
    assert not any("already quantized" in line for line in simulate_verdict(sim))
    assert "requantiz" not in terminal_report(sim, width=1000)


def test_a_scheme_that_quantizes_nothing_says_so(tmp_path):
    """Names llama.cpp's converter has no mapping for: the GGUF plan is empty, and the verdict says so."""
    d = unmapped_model(tmp_path / "odd")
    r = simulate(d, schemes="Q4_K_M,int8")
    assert r.scheme("Q4_K_M").quantized_params == 0 and r.scheme("int8").quantized_params > 0
    lines = simulate_verdict(r)
    assert "Q4_K_M quantizes no tensor of this model (see the notes)" in lines
    assert lines[0].startswith("int8 (")  # the one scheme that quantizes: its size and SQNR


# compare ----------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cmp(tmp_path_factory):
    root = tmp_path_factory.mktemp("c")
    base = gemma_tensors()
    little = {k: v * (1.001 if "mlp.up" in k else 1.0) for k, v in base.items()}
    much = {k: v * (1.2 if "self_attn.o_proj" in k else 1.0) for k, v in base.items()}
    for name, t in (("base", base), ("little", little), ("much", much), ("same", base)):
        write_model(root / name, t, GEMMA_CONFIG, "F32")
    return compare([root / n for n in ("base", "little", "same", "much")], labels=["base", "little", "same", "much"])


def test_compare_verdict_leads_with_the_variant_that_moved_most(cmp):
    lines = compare_verdict(cmp)
    much, little = cmp.pair("much"), cmp.pair("little")
    assert much.sqnr_db < little.sqnr_db
    top = much.tensor(much.moved_most[0])
    assert "o_proj" in top.name
    assert lines[0] == (f"much moved most from base: SQNR {much.sqnr_db:.2f} dB over {much.matched} aligned tensors "
                        f"({much.identical} identical); largest change {top.name} (rel L2 {num(top.error.rel_l2, 3)}); "
                        f"half the difference lies in {much.tensors_for_half} of {much.matched - much.identical} "
                        "changed tensors")
    assert lines[1].startswith("little moved from base: SQNR ")
    assert lines[2] == f"same is identical to base in all {cmp.pair('same').matched} aligned tensors"
    assert markdown_report(cmp).startswith(f"## normscope compare\n\n> **{lines[0]}**")
    assert report_html(cmp).index('id="verdict"') < report_html(cmp).index('id="models"')


# check, clip, clip --sweep, recipe, forward ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return write_model(tmp_path_factory.mktemp("t") / "gemma", gemma_tensors(hidden=256, ffn=512), GEMMA_CONFIG, "F32")


def test_check_verdict_names_each_failing_rule_and_its_worst_tensor(tiny_dir):
    r = check(tiny_dir, max_effective_gamma=100, use_pyproject=False)
    rule = next(o for o in r.rules if o.rule == "max_effective_gamma")
    lines = check_verdict(r)
    assert lines[0] == (f"FAILED max_effective_gamma on {rule.failed} of {rule.checked} tensors; worst "
                        f"{r.failures[0].tensor}: {num(r.failures[0].value)} against 100")
    assert r.failures[0].tensor == "model.layers.1.post_feedforward_layernorm.weight"
    assert terminal_report(r, width=1000).splitlines()[0] == lines[0]
    assert markdown_report(r).startswith(f"## ❌ normscope check\n\n> **{lines[0]}**")
    passed = check(tiny_dir, max_effective_gamma=5000, use_pyproject=False)
    assert check_verdict(passed) == ["PASSED: every rule holds (" + ", ".join(
        f"{o.rule} on {o.checked} tensors" for o in passed.rules) + ")"]


def test_clip_verdict_says_what_was_cut_and_what_it_costs(tiny_dir):
    r = clip(tiny_dir, 99, dry_run=True)
    lines = clip_verdict(r)
    assert lines[0] == (f"dry run: would clip {r.values_clipped} values in {r.changed} of {r.considered} tensors at "
                        "p99 per tensor; nothing written")
    top = max(r.tensors, key=lambda t: t.max_before)
    assert top.name == "model.layers.1.post_feedforward_layernorm.weight"
    assert lines[1].startswith(f"largest cut: {top.name}, |gain| 1657 → {num(top.max_after)}")
    assert lines[2].startswith("no weight quantizer touches norms")


def test_sweep_verdict_gives_each_schemes_best_percentile(tiny_dir):
    r = clip_sweep(tiny_dir, "90,99,100", schemes="Q4_K_M,int4", scope="linear")
    lines = sweep_verdict(r)
    assert len(lines) == 2
    for b, line in zip(r.best, lines):
        if b.percentile == 100:
            assert line.startswith(f"{b.scheme}: clipping does not help")
        else:
            at = next(t for t in r.totals if t.scheme == b.scheme and t.percentile == b.percentile)
            assert line.startswith(f"{b.scheme}: best at p{b.percentile:g}, total error ")
            assert f"({100 * at.vs_no_clip:+.2f}%)" in line


def test_recipe_verdict_compares_with_the_reference_plan(tiny_dir):
    r = recipe(tiny_dir, budget_bpw=6.0)
    lines = recipe_verdict(r)
    ref = r.plan(r.reference)
    assert lines[0].startswith(f"recipe: {size(r.recipe.nbytes)} ({num(r.recipe.bits_per_weight, 4)} bpw) within "
                               f"{size(r.budget_bytes)}; total error {r.recipe.total_error / ref.total_error:.3g}× "
                               f"that of Q4_K_M's plan")
    moved = sum(t.type != t.reference_type for t in r.tensors)
    assert lines[1].startswith(f"{moved} of {len(r.tensors)} tensors" if moved else "no tensor changes type")


@pytest.fixture(scope="module")
def fwd(tmp_path_factory):
    from forward_helpers import tiny_gemma

    return forward(tiny_gemma(tmp_path_factory.mktemp("f") / "tiny"), schemes="Q8_0,Q2_K", tokens=64)


def test_forward_verdict_ranks_the_variants_by_kl(fwd):
    r = fwd
    lines = forward_verdict(r)
    q8, q2 = r.variant("Q8_0"), r.variant("Q2_K")
    assert q8.kl.mean < q2.kl.mean
    overflow = r.activations is not None and bool(r.activations.fp16_overflow)
    line = lines[1 if overflow else 0]
    assert line.startswith("closest to the base: Q8_0 (KL ") and "; furthest: Q2_K (KL " in line
    if overflow:
        assert lines[0].startswith("WARNING fp16 overflow: ")


# charts -----------------------------------------------------------------------------------------------------------

def _svg_numbers(svg: str) -> list[float]:
    """The numbers an SVG's text elements show (tick labels among them)."""
    out = []
    for text in re.findall(r"<text[^>]*>([^<]*)</text>", svg):
        try:
            out.append(float(text.strip().replace("−", "-")))
        except ValueError:
            pass
    return out


def test_simulate_page_draws_size_against_error_the_worst_of_every_scheme_and_a_heatmap_per_scheme(sim):
    sections = sections_for(sim)
    figures = [b for s in sections for b in s.blocks if isinstance(b, Figure)]
    tradeoff = next(f for f in figures if f.data is not None and f.data.title == "Size against error")
    front = set(_front(sim.schemes))
    assert {row[0]: row[4] for row in tradeoff.data.rows} == {s.scheme: "yes" if s.scheme in front else "no"
                                                               for s in sim.schemes}
    worst = next(f for f in figures if f.data is not None and f.data.title == "SQNR dB per tensor and scheme")
    listed = [row[0] for row in worst.data.rows]
    for s in sim.schemes:  # every scheme's worst tensor is on the chart
        assert min((t for t in s.tensors if t.error is not None), key=lambda t: t.error.sqnr_db).name in listed
    lowest = min(float(v) for row in worst.data.rows for v in row[1:] if v != "—")
    assert min(_svg_numbers(worst.svg)) > 0.5 * lowest  # the axis starts near the data, not at 0 dB
    heat = [f for f in figures if f.data is not None and f.data.title.endswith(": SQNR dB by layer and role")]
    assert [f.data.title.split(":")[0] for f in heat] == [s.scheme for s in sim.schemes]
    q4 = sim.scheme("Q4_K_M")
    cell = heat[0].data.rows[0][heat[0].data.headers.index("mlp_down")]
    assert cell == f"{q4.tensor('model.layers.0.mlp.down_proj.weight').error.sqnr_db:.2f}"


def test_a_flat_moved_most_chart_becomes_one_sentence(tmp_path):
    base = gemma_tensors()
    write_model(tmp_path / "a", base, GEMMA_CONFIG, "F32")
    write_model(tmp_path / "b", {k: v * (1.02 if "mlp" in k else 1.0) for k, v in base.items()}, GEMMA_CONFIG, "F32")
    r = compare([tmp_path / "a", tmp_path / "b"], labels=["a", "b"])
    pair = next(s for s in sections_for(r) if s.heading == "b vs a")
    assert not any(isinstance(b, Figure) for b in pair.blocks)
    text = next(b.text for b in pair.blocks if isinstance(b, Text))
    assert text.startswith("The 6 tensors that moved most from a to b all moved by the same relative L2, 0.02")


def test_the_parameters_chart_is_linear_and_shows_the_shares(gains):
    section = next(s for s in sections_for(gains) if s.id == "parameters")
    fig = next(b for b in section.blocks if isinstance(b, Figure))
    roles = gains.summary.params_by_role
    share = f"{100 * roles['embedding'] / gains.summary.n_params:.1f}%"
    assert share in fig.svg and "log scale" not in fig.svg
    assert min(_svg_numbers(fig.svg)) == 0  # a linear axis from 0


def test_layer_curves_have_integer_ticks():
    svg = plots.curves([0, 1, 2], {"max |h|": [1.0, 10.0, 100.0]}, xlabel="layer", log=True, integer_x=True)
    xs = [float(t) for t in re.findall(r"<text[^>]*>([\d.]+)</text>", svg)]
    assert xs and all(x == int(x) for x in xs)
    loose = plots.curves([0, 1, 2], {"max |h|": [1.0, 10.0, 100.0]}, xlabel="layer", log=True)
    assert any(x != int(x) for x in (float(t) for t in re.findall(r"<text[^>]*>([\d.]+)</text>", loose)))


def test_the_forward_layer_chart_draws_the_fp16_limit_when_activations_approach_it(fwd):
    def figure(r):
        section = next(s for s in sections_for(r) if s.id == "activations")
        return next(b for b in section.blocks if isinstance(b, Figure))

    p = fwd.activations
    assert max(la.max_abs for la in p.layers) < 6550.4  # the tiny model stays far from it: no line
    assert "fp16 max" not in figure(fwd).svg
    # the renderer on the same result with one layer at 10,000 (as Gemma 3 270M's residual stream, which passes 1e5)
    layers = (dataclasses.replace(p.layers[0], max_abs=10_000.0), *p.layers[1:])
    near = dataclasses.replace(fwd, activations=dataclasses.replace(p, layers=layers))
    assert "fp16 max ±65504" in figure(near).svg


def test_log_axes_label_their_ticks_as_plain_numbers():
    """matplotlib's log ticks are TeX (`$\\mathdefault{10^{3}}$`); with TeX parsing off they reached every page (the
    analyze heatmap's colour bar, forward's layer chart, the KL bars) as that literal text."""
    figures = (plots.heatmap([[1.0, 1657.0]], rows=["post_ffn"], cols=["0", "1"], log=True),
               plots.bars(["a", "b"], {"x": [1.0, 1e4]}, log=True),
               plots.curves([0, 1, 2], {"max |h|": [1.0, 1e3, 1e5]}, log=True),
               plots.depth_lines({"a": [1.0, 1e3, 1e5]}, log=True))
    for svg in figures:
        labels = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
        assert not [t for t in labels if "$" in t or "mathdefault" in t], labels
    assert {"10", "100", "1000", "10000"} <= set(re.findall(r"<text[^>]*>([^<]*)</text>", figures[1]))


def test_depth_overlays_show_every_promised_metric_and_say_identical(tmp_path):
    base = gemma_tensors()
    write_model(tmp_path / "a", base, GEMMA_CONFIG, "F32")
    write_model(tmp_path / "b", base, GEMMA_CONFIG, "F32")
    tuned = {k: v * (1.5 if "post_feedforward" in k else 1.0) for k, v in base.items()}
    write_model(tmp_path / "c", tuned, GEMMA_CONFIG, "F32")
    same = compare([tmp_path / "a", tmp_path / "b"], labels=["a", "b"])
    depth = next(s for s in sections_for(same) if s.id == "depth")
    figures = [b for b in depth.blocks if isinstance(b, Figure)]
    metrics = {f.data.title.split(": ", 1)[1].removesuffix(" by relative depth") for f in figures}
    assert metrics == {"max |gain| (effective)", "|mean gain| (effective)", "|gain| p99 (effective)", "|w|max / σ",
                       "excess kurtosis"}
    assert all("The 2 lines coincide: a, b are identical here." in f.caption for f in figures)
    assert all("identical in every model" in f.svg for f in figures)
    moved = compare([tmp_path / "a", tmp_path / "c"], labels=["a", "c"])
    figures = [b for s in sections_for(moved) if s.id == "depth" for b in s.blocks if isinstance(b, Figure)]
    post = [f for f in figures if f.data.title.startswith("norm_post_ffn:")]
    assert len(post) == 3 and not any("coincide" in f.caption for f in post)
    pre = [f for f in figures if f.data.title.startswith("norm_pre_attn:")]
    assert len(pre) == 3 and all("coincide" in f.caption for f in pre)


def test_html_text_shows_no_literal_backticks(tmp_path):
    """Notes and paragraphs written for terminals and Markdown quote commands in backticks; the page shows them as
    code, and a name holding markup stays text."""
    page = html_page("t", [Section("S", (Text("run `normscope clip --sweep` on <b>x</b>"),
                                         Notes("n", (Note("info", "see `normscope simulate`"),))))])
    body = page.split("<main>", 1)[1].split("</main>", 1)[0]
    assert "`" not in body
    assert "run <code>normscope clip --sweep</code> on &lt;b&gt;x&lt;/b&gt;" in body
    assert "see <code>normscope simulate</code>" in body


def test_the_clip_sweep_axis_spreads_the_percentiles_toward_100():
    """90, 99, 99.9, 99.99 and 100 as equally spaced ticks (a linear axis crowds the last four into one pixel column)."""
    svg = plots.curves([90, 99, 99.9, 99.99, 100], {"total": [0.5, 0.2, 0.1, 0.09, 0.1]}, toward=100.0)
    at = [float(v) for v in re.findall(r'<g id="xtick_\d+">.*?<use[^>]*x="([\d.]+)"', svg, re.S)]
    labels = re.findall(r"<text[^>]*>([^<]*)</text>", svg)[:5]
    assert labels == ["90", "99", "99.9", "99.99", "100"] and len(at) == 5
    gaps = [b - a for a, b in zip(at, at[1:])]
    assert min(gaps) > 0.9 * max(gaps), gaps
    linear = plots.curves([90, 99, 99.9, 99.99, 100], {"total": [0.5, 0.2, 0.1, 0.09, 0.1]})
    assert "99.99" not in re.findall(r"<text[^>]*>([^<]*)</text>", linear)


def test_heatmap_labels_every_cell_tied_with_the_last_labelled_one():
    """Gemma 3 270M's layers 6 and 14 post-FFN norms both peak at 789: with five labels, the fifth's tie is labelled
    too, whichever comes first."""
    values = [[1657.0, 1649.0, 1193.0, 893.0, 789.0, 789.0, 741.0]]
    svg = plots.heatmap(values, rows=["post_ffn"], cols=[str(i) for i in range(7)], annotate=5)
    labels = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
    assert labels.count("789") == 2 and "741" not in labels


def test_forward_page_draws_size_against_kl(fwd):
    section = next(s for s in sections_for(fwd) if s.id == "forward")
    fig = next(b for b in section.blocks if isinstance(b, Figure) and b.data is not None
               and b.data.title == "Size against KL")
    q8, q2 = fwd.variant("Q8_0"), fwd.variant("Q2_K")
    rows = {row[0]: row for row in fig.data.rows}
    assert rows["Q8_0"][1:3] == (num(q8.bits_per_weight, 4), num(q8.kl.mean, 4))
    # Q2_K is smaller, Q8_0 closer to the base: neither beats the other
    assert q2.bits_per_weight < q8.bits_per_weight and q8.kl.mean < q2.kl.mean
    assert rows["Q8_0"][3] == rows["Q2_K"][3] == "yes"
