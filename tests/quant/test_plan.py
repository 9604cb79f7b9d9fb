"""llama.cpp's type plan: the published Gemma 3 270M Q4_K_M file is the oracle."""

from __future__ import annotations

from collections import Counter

import pytest

from normscope.errors import UnknownNameError
from normscope.io.gguf_file import read_gguf_header
from normscope.quant import ModelFacts, plan_types

GEMMA = ModelFacts("gemma3", n_layer=18, n_head=4, n_head_kv=1)


@pytest.fixture(scope="module")
def gemma_tensors(gemma_gguf):
    _, entries = read_gguf_header(gemma_gguf)
    return entries


def test_q4_k_m_plan_equals_the_published_file(gemma_tensors):
    plan = plan_types([(e.name, e.shape) for e in gemma_tensors], "Q4_K_M", GEMMA)
    assert len(plan) == 236
    mismatches = [(e.name, e.dtype, plan[e.name].type) for e in gemma_tensors
                  if (plan[e.name].type or "F32") != e.dtype]
    assert mismatches == []
    assert Counter(p.type or "F32" for p in plan.values()) == {"F32": 109, "Q5_0": 81, "Q4_K": 27, "Q8_0": 10,
                                                               "Q6_K": 9}
    assert plan["token_embd.weight"].reason == "tied token embedding (used as output): Q8_0 (640 % 256 != 0)"
    assert plan["blk.4.attn_v.weight"].reason == ("use_more_bits (attn_v 4 of 18); fallback Q6_K->Q8_0: "
                                                  "640 % 256 != 0")
    assert plan["blk.16.post_ffw_norm.weight"].type is None


@pytest.mark.parametrize("file_type, expect", [
    ("Q8_0", {"blk.0.attn_q.weight": "Q8_0", "blk.0.ffn_down.weight": "Q8_0", "token_embd.weight": "Q8_0"}),
    ("Q4_0", {"blk.0.attn_q.weight": "Q4_0", "token_embd.weight": "Q8_0"}),  # output rule: Q6_K -> falls back
    ("Q2_K", {"blk.0.attn_v.weight": "Q5_0", "blk.0.ffn_down.weight": "Q3_K", "blk.0.attn_output.weight": "Q3_K",
              "blk.0.attn_q.weight": "Q4_0"}),  # attn_v Q4_K (n_gqa 4) -> Q5_0; Q2_K rows of 640 -> Q4_0
    ("Q3_K_M", {"blk.0.attn_v.weight": "Q5_1", "blk.2.attn_v.weight": "Q5_0", "blk.0.ffn_down.weight": "Q5_K",
                "blk.5.ffn_down.weight": "Q4_K", "blk.0.attn_output.weight": "Q4_K"}),
    ("Q5_K_M", {"blk.0.attn_v.weight": "Q8_0", "blk.3.attn_v.weight": "Q5_1", "blk.0.ffn_down.weight": "Q6_K",
                "blk.3.ffn_down.weight": "Q5_K"}),
    ("Q6_K", {"blk.0.attn_q.weight": "Q8_0", "blk.0.ffn_down.weight": "Q6_K"}),
], ids=["Q8_0", "Q4_0", "Q2_K", "Q3_K_M", "Q5_K_M", "Q6_K"])
def test_other_file_types_follow_llama_quant(gemma_tensors, file_type, expect):
    plan = plan_types([(e.name, e.shape) for e in gemma_tensors], file_type, GEMMA)
    assert {k: plan[k].type for k in expect} == expect


def test_untied_output_and_overrides():
    tensors = [("token_embd.weight", (1000, 512)), ("output.weight", (1000, 512)),
               ("blk.0.attn_q.weight", (512, 512)), ("blk.0.attn_norm.weight", (512,))]
    facts = ModelFacts("llama", n_layer=1, n_head=8, n_head_kv=8)
    plan = plan_types(tensors, "Q4_K_M", facts)
    assert (plan["output.weight"].type, plan["token_embd.weight"].type) == ("Q6_K", "Q4_K")
    plan = plan_types(tensors, "Q4_K_M", facts, overrides=[(r"attn_q", "Q8_0")])
    assert plan["blk.0.attn_q.weight"].type == "Q8_0" and "override" in plan["blk.0.attn_q.weight"].reason
    assert plan_types(tensors, "Q4_K_M", facts, quantize_output=False)["output.weight"].type is None


def test_rows_no_type_fits_fall_back_to_f16():
    plan = plan_types([("blk.0.ffn_up.weight", (64, 100))], "Q4_K_M", ModelFacts("llama", 1))
    assert plan["blk.0.ffn_up.weight"].type == "F16" and "100 % 32" in plan["blk.0.ffn_up.weight"].reason


def test_unknown_file_type():
    with pytest.raises(UnknownNameError, match="unknown file type 'Q4_K_X'; valid: .*Q4_K_M"):
        plan_types([], "Q4_K_X", GEMMA)
