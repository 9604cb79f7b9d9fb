"""BERT (the real all-MiniLM-L6-v2): llama.cpp converts and quantizes it, so GGUF schemes plan it like any other
model. It once planned nothing ("Q4_K_M 0 of 104 tensors ... inf") because normscope had no GGUF names for it."""

from __future__ import annotations

from collections import Counter

import gguf

from normscope import analyze, simulate
from normscope.report.analyze import analyze_header


def test_bert_tensors_get_the_converters_gguf_names(minilm_dir):
    r = simulate(minilm_dir, schemes="Q8_0").scheme("Q8_0")
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, 6)
    for t in r.tensors:
        base, _, suffix = t.name.rpartition(".")
        expected = tmap.get_name(base)  # gguf-py's own table, as convert_hf_to_gguf.py's BertModel uses it
        assert t.gguf_name == (expected + "." + suffix if expected else None), t.name
    # the converter does not write the pooler; everything else is in the GGUF
    assert {t.name for t in r.tensors if t.gguf_name is None} <= {"pooler.dense.weight", "pooler.dense.bias",
                                                                  "embeddings.position_ids"}


def test_q4_k_m_of_bert_follows_llama_quantizes_rules(minilm_dir):
    r = simulate(minilm_dir, schemes="Q4_K_M").scheme("Q4_K_M")
    by = {t.gguf_name: t for t in r.tensors if t.gguf_name}
    # no output tensor: the token embedding takes the output's Q6_K, which rows of 384 cannot hold -> Q8_0
    assert by["token_embd.weight"].type == "Q8_0"
    # llama-quantize never quantizes BERT's position and token-type embeddings (F16 from the converter)
    assert by["position_embd.weight"].type is None and by["position_embd.weight"].stored_as == "F16"
    assert by["token_types.weight"].type is None and by["token_types.weight"].stored_as == "F16"
    # 6 layers x 6 linears + the embedding are quantized; rows of 384 give Q4_K's place to Q5_0
    quantized = Counter(t.type for t in r.tensors if t.type)
    assert sum(quantized.values()) == 37
    # use_more_bits(i, 6): i < 0, i >= 5 or i % 3 == 2; ffn_down's rows of 1536 hold the K-quants
    assert [by[f"blk.{i}.ffn_down.weight"].type for i in range(6)] == ["Q4_K", "Q4_K", "Q6_K", "Q4_K", "Q4_K", "Q6_K"]
    assert by["blk.0.attn_q.weight"].type == "Q5_0"


def test_bert_has_no_output_head_rather_than_untied_embeddings(minilm_dir):
    header = "\n".join(analyze_header(analyze(minilm_dir)))
    assert "no output head" in header and "untied" not in header
