"""The rules of llama_tensor_get_type_impl the Gemma oracle (test_plan_oracle.py) cannot reach, case by case as
src/llama-quant.cpp states them: Gemma has 4 query heads per KV head, no experts and 640-wide rows, so the
rules for GQA < 4, MoE expert counts, 3-D expert tensors, untied embeddings, falcon, 70B models and rows
without a fallback are checked here on made-up tensor lists."""

from __future__ import annotations

import pytest

from normscope.errors import ConfigError
from normscope.quant import ModelFacts, check_imatrix, plan_types

LLAMA = ModelFacts("llama", n_layer=16, n_head=8, n_head_kv=8)  # no GQA
GQA4 = ModelFacts("llama", n_layer=16, n_head=32, n_head_kv=8)


def dense(n_layer: int = 16, row: int = 512, untied: bool = True) -> list[tuple[str, tuple[int, ...]]]:
    out = [("token_embd.weight", (1000, row)), ("output_norm.weight", (row,))]
    if untied:
        out.append(("output.weight", (1000, row)))
    for i in range(n_layer):
        out += [(f"blk.{i}.attn_q.weight", (row, row)), (f"blk.{i}.attn_k.weight", (row, row)),
                (f"blk.{i}.attn_v.weight", (row, row)), (f"blk.{i}.attn_output.weight", (row, row)),
                (f"blk.{i}.ffn_gate.weight", (2 * row, row)), (f"blk.{i}.ffn_up.weight", (2 * row, row)),
                (f"blk.{i}.ffn_down.weight", (row, 2 * row)), (f"blk.{i}.attn_norm.weight", (row,))]
    return out


def types(plan, *names):
    return tuple(plan[n].type for n in names)


@pytest.mark.parametrize("ftype, facts, expect", [
    # IQ2/IQ1 mixes: attn_v Q4_K with GQA >= 4 or >= 4 experts, else IQ3_S (IQ2_S/M) or Q2_K
    ("IQ2_XXS", LLAMA, "Q2_K"), ("IQ2_M", LLAMA, "IQ3_S"), ("IQ1_M", GQA4, "Q4_K"),
    ("IQ2_XS", ModelFacts("llama", 16, 8, 8, n_expert=4), "Q4_K"),
    # IQ3_XXS without an imatrix: IQ3_S; IQ3_XS / IQ3_S / IQ4_*: bumped only with GQA >= 4
    ("IQ3_XXS", LLAMA, "IQ3_S"), ("IQ3_S", LLAMA, "IQ3_S"), ("IQ3_S", GQA4, "Q4_K"), ("IQ3_M", LLAMA, "Q4_K"),
    ("IQ4_XS", LLAMA, "IQ4_XS"), ("IQ4_NL", GQA4, "Q5_K"),
    # 8 experts: Q8_0 whatever the file type (but the IQ2/IQ1 mixes, whose branch comes first)
    ("Q4_K_M", ModelFacts("mixtral", 16, 32, 8, n_expert=8), "Q8_0"),
    ("IQ2_XXS", ModelFacts("mixtral", 16, 32, 8, n_expert=8), "Q4_K"),
    # a 70B Llama: Q3_K / Q4_K attn_v become Q5_K
    ("Q3_K_S", ModelFacts("llama", 80, 64, 8, is_70b=True), "Q5_K"), ("TQ1_0", LLAMA, "TQ1_0"),
])
def test_attn_v(ftype, facts, expect):
    plan = plan_types(dense(), ftype, facts, has_imatrix=True)
    got = plan["blk.5.attn_v.weight"].type
    if ftype == "IQ3_XXS":
        got = plan_types(dense(), ftype, facts)["blk.5.attn_v.weight"].type  # the no-imatrix rule
    assert got == expect


def test_iq_mixes_ffn_down_first_eighth_and_attn_output():
    plan = plan_types(dense(), "IQ1_S", LLAMA, has_imatrix=True)
    assert types(plan, "blk.0.ffn_down.weight", "blk.1.ffn_down.weight", "blk.2.ffn_down.weight") == \
        ("Q2_K", "Q2_K", "IQ1_S")  # i_ffn_down < 16 / 8
    assert plan["blk.3.attn_output.weight"].type == "IQ2_XXS"  # IQ1_S / IQ1_M
    plan = plan_types(dense(), "IQ2_S", LLAMA, has_imatrix=True)
    assert types(plan, "blk.0.ffn_down.weight", "blk.3.attn_output.weight", "blk.3.attn_q.weight") == \
        ("IQ3_S", "IQ3_S", "IQ2_XS")
    moe = ModelFacts("mixtral", 16, 32, 8, n_expert=8)
    plan = plan_types(dense(), "IQ2_XS", moe, has_imatrix=True)
    assert types(plan, "blk.3.attn_output.weight", "blk.3.attn_k.weight") == ("Q5_K", "Q4_K")


def test_output_and_untied_embedding():
    for ftype, out, embd in (("IQ2_XXS", "Q5_K", "Q2_K"), ("IQ1_M", "Q5_K", "Q2_K"), ("IQ2_M", "Q5_K", "IQ3_S"),
                             ("IQ3_XXS", "Q5_K", "IQ3_S"), ("TQ2_0", "Q6_K", "Q4_K"), ("IQ4_XS", "Q6_K", "IQ4_XS"),
                             ("MXFP4_MOE", "Q8_0", "Q8_0"), ("Q8_0", "Q8_0", "Q8_0")):
        plan = plan_types(dense(), ftype, LLAMA, has_imatrix=True)
        assert types(plan, "output.weight", "token_embd.weight") == (out, embd), ftype
    # tied: the embedding takes the output's rule, and --output-tensor-type too
    plan = plan_types(dense(untied=False), "IQ2_XXS", LLAMA, has_imatrix=True)
    assert plan["token_embd.weight"].type == "Q5_K"
    plan = plan_types(dense(untied=False), "Q4_K_M", LLAMA, output_type="Q8_0")
    assert plan["token_embd.weight"].type == "Q8_0" and "--output-tensor-type" in plan["token_embd.weight"].reason


def test_iq3_xs_middle_layers_and_q_k():
    plan = plan_types(dense(), "IQ3_XS", LLAMA, has_imatrix=True)
    # ffn_gate / ffn_up: IQ3_XXS for 16/8 <= i < 7*16/8, attn_q / attn_k always
    assert [plan[f"blk.{i}.ffn_up.weight"].type for i in (1, 2, 13, 14)] == ["IQ3_S", "IQ3_XXS", "IQ3_XXS", "IQ3_S"]
    assert types(plan, "blk.0.attn_q.weight", "blk.0.attn_k.weight") == ("IQ3_XXS", "IQ3_XXS")
    with pytest.raises(ConfigError, match="IQ3_XS: blk.0.attn_k.weight would be IQ3_XXS"):
        check_imatrix("IQ3_XS", plan_types(dense(), "IQ3_XS", LLAMA), has_imatrix=False)


def test_moe_expert_tensors_and_layer_numbers():
    """MXFP4_MOE: MXFP4 for 3-D expert tensors only; MoE ffn_down counts layers by the block number."""
    facts = ModelFacts("gpt-oss", n_layer=8, n_head=64, n_head_kv=8, n_expert=32)
    tensors = [("token_embd.weight", (1000, 512)), ("output.weight", (1000, 512))]
    for i in range(8):
        tensors += [(f"blk.{i}.ffn_down_exps.weight", (32, 512, 1024)), (f"blk.{i}.ffn_up_exps.weight", (32, 1024, 512)),
                    (f"blk.{i}.attn_q.weight", (512, 512)), (f"blk.{i}.ffn_down_shexp.weight", (512, 1024)),
                    (f"blk.{i}.ffn_gate_inp.weight", (32, 512))]
    plan = plan_types(tensors, "MXFP4_MOE", facts)
    assert types(plan, "blk.0.ffn_down_exps.weight", "blk.0.ffn_up_exps.weight", "blk.0.attn_q.weight",
                 "blk.0.ffn_down_shexp.weight", "blk.0.ffn_gate_inp.weight", "output.weight") == \
        ("MXFP4", "MXFP4", "Q8_0", "Q8_0", None, "Q8_0")
    bailing = plan_types([("blk.0.attn_kv_a.weight", (4, 512, 512)), ("blk.0.ffn_up_exps.weight", (4, 512, 512))],
                         "MXFP4_MOE", ModelFacts("bailingmoe3", 1, n_expert=4))
    assert types(bailing, "blk.0.attn_kv_a.weight", "blk.0.ffn_up_exps.weight") == ("Q8_0", "MXFP4")
    # two ffn_down per block (experts and shared expert): the block number, not the counter, is the layer
    plan = plan_types(tensors, "Q4_K_M", facts)
    assert [plan[f"blk.{i}.ffn_down_shexp.weight"].type for i in range(8)] == \
        ["Q6_K", "Q4_K", "Q4_K", "Q6_K", "Q4_K", "Q4_K", "Q6_K", "Q6_K"]  # use_more_bits(i, 8)


def test_imatrix_rules_of_legacy_types():
    plan = plan_types(dense(), "Q5_0", LLAMA, has_imatrix=True)
    assert types(plan, "blk.1.ffn_down.weight", "blk.2.ffn_down.weight") == ("Q5_1", "Q5_0")
    plan = plan_types(dense(), "Q5_0", LLAMA)
    assert types(plan, "blk.1.ffn_down.weight", "blk.2.ffn_down.weight") == ("Q5_0", "Q5_0")


def test_row_fallbacks():
    tensors = [("blk.0.attn_q.weight", (64, 320)), ("blk.0.attn_k.weight", (64, 96)), ("blk.0.attn_v.weight", (64, 100))]
    plan = plan_types(tensors, "IQ2_S", LLAMA, has_imatrix=True)  # IQ types fall back to IQ4_NL, then F16
    assert types(plan, "blk.0.attn_q.weight", "blk.0.attn_k.weight") == ("IQ4_NL", "IQ4_NL")
    plan = plan_types(tensors, "TQ2_0", LLAMA)
    assert types(plan, "blk.0.attn_q.weight", "blk.0.attn_v.weight") == ("Q4_0", "F16")
    # no fallback for Q1_0, NVFP4, MXFP4 or the legacy types: llama-quantize stops
    plan = plan_types(tensors, "Q1_0", LLAMA)
    q = plan["blk.0.attn_q.weight"]
    assert q.type is None and q.fails and "defines no fallback for Q1_0" in q.reason
    assert plan_types(tensors, "Q4_0", LLAMA)["blk.0.attn_v.weight"].fails


def test_requires_imatrix_spares_embedding_and_output():
    plan = plan_types(dense(untied=True), "IQ2_XXS", LLAMA, token_embedding_type="IQ2_XXS", has_imatrix=True)
    assert not plan["token_embd.weight"].requires_imatrix and plan["blk.3.attn_q.weight"].requires_imatrix
    plan = plan_types(dense(), "Q2_K_S", LLAMA)
    assert plan["blk.3.attn_q.weight"].requires_imatrix  # Q2_K in a Q2_K_S file
    assert not plan_types(dense(), "Q2_K", LLAMA)["blk.3.attn_q.weight"].requires_imatrix


def test_every_ggml_type_names_a_scheme():
    """Every ggml type is a scheme: its file type, llama-quantize's alias (Q3_K, Q4_K, Q5_K: the _M mixes), or
    MXFP4 (--pure MXFP4_MOE); the scheme IQ2_S is llama.cpp's file type, whose default type is IQ2_XS."""
    import gguf

    from normscope.quant import FILE_TYPES, canonical_scheme, is_gguf_scheme, plan_scheme
    from normscope.quant.schemes import TensorSpec
    from normscope.results import Role

    names = {t.name for t in gguf.GGMLQuantizationType} & set(_ggml_types()) - {"F32"}
    assert len(names) == 26
    for name in names:
        assert is_gguf_scheme(canonical_scheme(name.lower())), name
    assert canonical_scheme("Q4_K") == "Q4_K_M" and FILE_TYPES["IQ2_S"] == "IQ2_XS"
    spec = [TensorSpec("w", "blk.0.ffn_up.weight", (64, 512), Role.MLP_UP),
            TensorSpec("o", "output.weight", (64, 512), Role.LM_HEAD)]
    plan = plan_scheme("mxfp4", spec)
    assert (plan["w"].type, plan["o"].type) == ("MXFP4", "MXFP4")  # --pure: the output too


def _ggml_types():
    from normscope.quant import FORMATS, GGMLFormat

    return [n for n, f in FORMATS.items() if issubclass(f, GGMLFormat)]
