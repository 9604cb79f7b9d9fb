"""recipe: the knapsack against brute force, the recipe against llama.cpp's plans, and `simulate` of the
recipe (through --tensor-type overrides) against the recipe's own figures."""

from __future__ import annotations

import itertools
import json

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import GEMMA_CONFIG, doc_console, gemma_tensors, shell_split, write_model
from normscope import recipe, simulate
from normscope.analysis.recipe.solve import solve
from normscope.quant import parse_tensor_types
from normscope.errors import ConfigError
from normscope.quant import LAYOUTS
from normscope.report.schemas import schema

options_st = st.lists(st.lists(st.tuples(st.integers(1, 9), st.floats(0, 100, allow_nan=False)), min_size=1,
                               max_size=4), min_size=1, max_size=4)


@settings(max_examples=300, deadline=None)
@given(options=options_st, extra=st.integers(0, 20))
def test_solver_is_optimal_on_small_problems(options, extra):
    capacity = sum(min(b for b, _ in o) for o in options) + extra
    best = min(sum(options[i][k][1] for i, k in enumerate(c))
               for c in itertools.product(*(range(len(o)) for o in options))
               if sum(options[i][k][0] for i, k in enumerate(c)) <= capacity)
    pick = solve(options, capacity)
    assert sum(options[i][k][0] for i, k in enumerate(pick)) <= capacity
    assert sum(options[i][k][1] for i, k in enumerate(pick)) <= best + 1e-9


def test_solver_never_worse_than_a_feasible_seed():
    options = [[(1, 10.0), (3, 0.0)], [(1, 10.0), (3, 0.0)], [(2, 1.0), (3, 0.5)]]
    assert solve(options, 8, seeds=[[1, 1, 0]]) == [1, 1, 0]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A Gemma 3 layout of random (off-grid) weights: 256-wide rows take K-quants, the 320-wide rows of
    down_proj and the 128-wide rows of o_proj fall back (Q4_K -> Q5_0, Q6_K -> Q8_0), a post-FFN gain of 1657."""
    tensors = gemma_tensors(layers=4, hidden=256, ffn=320, vocab=512, heads=2, head_dim=64, seed=3)
    config = dict(GEMMA_CONFIG, num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=1)
    return write_model(tmp_path_factory.mktemp("recipe") / "g", tensors, config, "BF16")


@pytest.fixture(scope="module")
def plans(synthetic):
    return simulate(synthetic, schemes="Q4_K_M,Q5_K_M")


@pytest.fixture(scope="module")
def mid(synthetic, plans):
    q4, q5 = plans.scheme("Q4_K_M"), plans.scheme("Q5_K_M")
    assert q4.nbytes < q5.nbytes
    return recipe(synthetic, budget_bytes=(q4.nbytes + q5.nbytes) // 2)


def test_recipe_between_q4_k_m_and_q5_k_m_beats_q4_k_m(mid, plans):
    q4 = mid.plan("Q4_K_M")
    assert mid.recipe.nbytes <= mid.budget_bytes < plans.scheme("Q5_K_M").nbytes
    assert mid.recipe.total_error < q4.total_error
    assert mid.recipe.norm_aware_sqnr_db > q4.norm_aware_sqnr_db
    # the plans summarised from the recipe's measurements are simulate's own figures
    for label in ("Q4_K_M", "Q5_K_M"):
        assert mid.plan(label).nbytes == plans.scheme(label).nbytes
        assert mid.plan(label).norm_aware_sqnr_db == pytest.approx(plans.scheme(label).norm_aware_sqnr_db, abs=1e-9)
        assert mid.plan(label).sqnr_db == pytest.approx(plans.scheme(label).sqnr_db, abs=1e-9)
    jsonschema.validate(mid.to_dict(), schema("recipe"))


def test_simulate_of_the_recipe_shows_its_size_and_error(synthetic, mid):
    """The --tensor-type pairs reproduce the recipe type for type in llama.cpp's plan (as simulate runs it)."""
    sim = simulate(synthetic, schemes=mid.reference, tensor_types=mid.tensor_types).scheme(mid.reference)
    chosen = {t.name: t.type for t in mid.tensors}
    assert {t.name: t.type for t in sim.tensors if t.type is not None} == chosen
    assert sim.nbytes == mid.recipe.nbytes
    assert sim.norm_aware_sqnr_db == pytest.approx(mid.recipe.norm_aware_sqnr_db, abs=1e-9)
    assert sim.sqnr_db == pytest.approx(mid.recipe.sqnr_db, abs=1e-9)
    # and the same pairs as llama-quantize arguments
    pairs = [a.split(" ", 1)[1] for a in mid.llama_quantize if a.startswith("--tensor-type ")]
    assert parse_tensor_types(pairs) == list(mid.tensor_types)


def test_recipe_respects_fallbacks_and_never_quantizes_norms(mid):
    assert all(t.shape[-1] % LAYOUTS[t.type].block_size == 0 for t in mid.tensors)
    assert not any(t.role.is_norm for t in mid.tensors)
    assert mid.recipe.type_counts["F32"] == 4 * 6 + 1  # 6 norms per block and the final norm, all F32
    down = [t for t in mid.tensors if t.name.endswith("o_proj.weight") or t.name.endswith("down_proj.weight")]
    assert {t.type for t in down} <= {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "F16"}  # no K-quant on 320/128-wide rows
    for t in mid.tensors:  # every candidate is a type the row can hold
        assert all(t.shape[-1] % LAYOUTS[k].block_size == 0 for k in t.candidates)


def test_lists_for_llm_compressor_and_quanto(mid):
    keep = [t.name.rsplit(".", 1)[0] for t in mid.tensors if t.bits_per_weight >= 6.0 and t.role.is_linear]
    assert list(mid.llm_compressor_ignore) == ["lm_head", *keep] == list(mid.quanto_exclude)
    assert all(not name.endswith(".weight") for name in mid.quanto_exclude)


def test_budget_errors(synthetic):
    with pytest.raises(ConfigError, match="exactly one budget"):
        recipe(synthetic)
    with pytest.raises(ConfigError, match="below the smallest recipe"):
        recipe(synthetic, budget_bpw=1.0)
    with pytest.raises(ConfigError, match="not a quantized llama.cpp file type"):
        recipe(synthetic, budget_bpw=6.0, reference="int4")


def test_sensitivity_objective_from_a_forward_report(synthetic, mid, tmp_path):
    """A forward --sensitivity report turns the objective into KL; groups the report ranks higher get more bits."""
    groups = []
    for t in mid.tensors:
        kl = 5.0 if t.name.endswith("layers.0.mlp.up_proj.weight") else 1e-6
        groups.append({"group": t.name, "tensors": [t.name], "kl": {"mean": kl}})
    doc = {"schema": "normscope.forward", "sensitivity_scheme": "Q4_K_M", "sensitivity": groups}
    path = tmp_path / "forward.json"
    path.write_text(json.dumps(doc))
    r = recipe(synthetic, budget_bytes=mid.budget_bytes, sensitivity=path)
    assert r.objective == "sensitivity"
    up = r.tensor("model.layers.0.mlp.up_proj.weight")
    assert up.type == max(up.candidates, key=lambda k: up.candidates[k][0])  # the largest type it can hold
    assert r.recipe.total_error <= r.plan("Q4_K_M").total_error


def test_gemma_recipe_against_q4_k_m(gemma_hf):
    """On the HF export the Q4_K_M plan is the grid the weights came from: the recipe cannot beat it by much,
    never does worse, and says why (docs/recipe.md)."""
    r = recipe(gemma_hf, budget_bpw=7.46, types=("Q4_K", "Q8_0"))
    q4, q5 = r.plan("Q4_K_M"), r.plan("Q5_K_M")
    assert q4.bits_per_weight < r.budget_bits_per_weight < q5.bits_per_weight
    assert r.recipe.total_error <= q4.total_error < q5.total_error
    assert r.recipe.nbytes <= r.budget_bytes
    assert any("already lie on Q4_K_M's grid" in n for n in r.notes)


def test_docs_console_pastes_are_the_real_output(gemma_hf, tmp_path, monkeypatch):
    """docs/recipe.md's commands run in order in one directory (simulate reads the recipe.args the recipe wrote,
    `$(cat FILE)` expanded as the shell would) and every pasted line is in the real output: the page pasted
    "100.0% of params" where simulate prints "127 of 236 tensors" (issue 21 item 10)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "gemma-3-270m-hf").symlink_to(gemma_hf)
    monkeypatch.chdir(tmp_path)
    commands = doc_console(Path(__file__).parents[2] / "docs" / "recipe.md")
    assert len(commands) == 2
    for cmd, pasted in commands:
        proc = subprocess.run([sys.executable, "-m", "normscope", *shell_split(cmd)[1:]], capture_output=True,
                              text=True, timeout=900, cwd=tmp_path, env={**os.environ, "COLUMNS": "130"})
        assert proc.returncode == 0, proc.stderr
        real = " ".join(proc.stdout.split())
        for row in pasted.strip().splitlines():
            row = row.strip().removesuffix(" …")  # a line cut short on the page: what it shows must be real
            if row and row != "…":
                assert " ".join(row.split()) in real, f"docs/recipe.md: pasted line not in the real output: {row!r}"


def test_iq_and_fp4_candidates(synthetic, plans):
    """Every ggml type llama-quantize makes without an imatrix is a candidate: IQ4_XS falls back to IQ4_NL on
    320-wide rows, Q1_0 (128-value blocks, no fallback in llama.cpp) is no candidate there at all."""
    types = ("IQ4_XS", "IQ3_S", "TQ2_0", "Q1_0", "MXFP4", "NVFP4", "Q8_0")
    r = recipe(synthetic, budget_bytes=plans.scheme("Q4_K_M").nbytes, types=types, reference="iq4_xs",
               compare=("IQ4_XS", "Q4_K"))  # any case, and llama-quantize's alias Q4_K (Q4_K_M)
    assert (r.reference, [p.label for p in r.plans]) == ("IQ4_XS", ["IQ4_XS", "Q4_K_M"])
    jsonschema.validate(r.to_dict(), schema("recipe"))
    for t in r.tensors:
        assert all(t.shape[-1] % LAYOUTS[k].block_size == 0 for k in t.candidates)
        if t.shape[-1] == 320:
            assert "IQ4_NL" in t.candidates and "IQ4_XS" not in t.candidates and "Q1_0" not in t.candidates
        if t.shape[-1] == 256:
            assert {"IQ4_XS", "IQ3_S", "TQ2_0", "Q1_0", "MXFP4", "NVFP4"} <= set(t.candidates)
    assert r.recipe.nbytes <= r.budget_bytes and r.recipe.total_error <= r.plan("IQ4_XS").total_error
    sim = simulate(synthetic, schemes="IQ4_XS", tensor_types=r.tensor_types).scheme("IQ4_XS")
    assert {t.name: t.type for t in sim.tensors if t.type is not None} == {t.name: t.type for t in r.tensors}


def test_types_that_need_an_imatrix_are_no_candidates_without_one(synthetic):
    with pytest.raises(ConfigError, match=r"--types IQ2_XS: llama-quantize makes IQ2_XS only with an importance "
                                          r"matrix; collect one with `normscope imatrix collect`"):
        recipe(synthetic, budget_bpw=4.0, types=("IQ2_XS", "Q4_K"))
    with pytest.raises(ConfigError, match="normscope imatrix collect"):
        recipe(synthetic, budget_bpw=4.0, reference="IQ2_M")
    with pytest.raises(ConfigError, match="'MXFP4' is not a quantized llama.cpp file type"):
        recipe(synthetic, budget_bpw=4.0, reference="MXFP4")
