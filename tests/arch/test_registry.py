"""Architecture registry: conventions, roles by position, detection, and the GGUF name map."""

from __future__ import annotations

import gguf
import pytest

from normscope.arch import (GAIN_OFFSET, HEURISTIC, SPECS, detect, effective_gain, get_spec, gguf_to_hf,
                            hf_to_gguf, identity_stored, stored_from_gain)
from normscope.errors import UnknownNameError
from normscope.io.gguf_file import read_gguf_header
from normscope.results import Component, NormConvention, Role

N = NormConvention


def test_the_one_plus_w_lives_in_one_table():
    assert effective_gain(1656.0, N.ONE_PLUS_W) == 1657.0
    assert effective_gain(1656.0, N.W) == 1656.0
    assert stored_from_gain(1657.0, N.ONE_PLUS_W) == 1656.0
    assert identity_stored(N.ONE_PLUS_W) == 0.0 and identity_stored(N.W) == 1.0
    assert set(GAIN_OFFSET) == set(NormConvention)


@pytest.mark.parametrize("arch, name, role, component, convention", [
    ("gemma3", "model.layers.16.post_feedforward_layernorm.weight", Role.NORM_POST_FFN, Component.TEXT, N.ONE_PLUS_W),
    ("gemma3", "model.layers.2.post_attention_layernorm.weight", Role.NORM_POST_ATTN, Component.TEXT, N.ONE_PLUS_W),
    ("gemma3", "model.language_model.layers.2.pre_feedforward_layernorm.weight", Role.NORM_PRE_FFN, Component.TEXT,
     N.ONE_PLUS_W),
    ("gemma3", "language_model.model.layers.2.self_attn.q_norm.weight", Role.NORM_Q, Component.TEXT, N.ONE_PLUS_W),
    ("gemma3", "vision_tower.vision_model.encoder.layers.0.layer_norm1.weight", Role.NORM_PRE_ATTN,
     Component.VISION, N.LAYERNORM),
    ("gemma3", "vision_tower.vision_model.encoder.layers.3.layer_norm2.bias", Role.NORM_PRE_FFN, Component.VISION,
     N.LAYERNORM),
    ("gemma3", "multi_modal_projector.mm_soft_emb_norm.weight", Role.NORM_OTHER, Component.PROJECTOR, N.ONE_PLUS_W),
    ("gemma3", "model.norm.weight", Role.NORM_FINAL, Component.TEXT, N.ONE_PLUS_W),
    ("gemma3n", "model.language_model.layers.0.post_feedforward_layernorm.weight", Role.NORM_POST_FFN,
     Component.TEXT, N.W),
    # Llama's post_attention_layernorm is the norm *before* the MLP
    ("llama", "model.layers.0.post_attention_layernorm.weight", Role.NORM_PRE_FFN, Component.TEXT, N.W),
    ("qwen3", "model.layers.0.self_attn.k_norm.weight", Role.NORM_K, Component.TEXT, N.W),
    ("nemotron", "model.layers.0.input_layernorm.bias", Role.NORM_PRE_ATTN, Component.TEXT, N.LAYERNORM1P),
    ("bert", "encoder.layer.0.attention.output.LayerNorm.weight", Role.NORM_POST_ATTN, Component.TEXT, N.LAYERNORM),
    ("bert", "encoder.layer.0.output.LayerNorm.bias", Role.NORM_POST_FFN, Component.TEXT, N.LAYERNORM),
    ("bert", "embeddings.LayerNorm.weight", Role.NORM_EMBED, Component.TEXT, N.LAYERNORM),
])
def test_norm_roles_and_conventions(arch, name, role, component, convention):
    c = SPECS[arch].classify(name)
    assert (c.role, c.component, c.convention) == (role, component, convention)


@pytest.mark.parametrize("arch, name, role", [
    ("gemma3", "model.layers.3.mlp.down_proj.weight", Role.MLP_DOWN),
    ("gemma3", "model.embed_tokens.weight", Role.EMBEDDING),
    ("gemma3", "vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.weight", Role.VISION),
    ("gemma3", "multi_modal_projector.mm_input_projection_weight", Role.PROJECTOR),
    ("llama", "lm_head.weight", Role.LM_HEAD),
    ("bert", "encoder.layer.1.intermediate.dense.weight", Role.MLP_UP),
    ("bert", "encoder.layer.1.output.dense.weight", Role.MLP_DOWN),
    ("bert", "encoder.layer.1.attention.output.dense.weight", Role.ATTN_O),
])
def test_linear_roles(arch, name, role):
    assert SPECS[arch].classify(name).role == role


def test_override_changes_only_unpinned_norms():
    spec = SPECS["gemma3"]
    assert spec.classify("model.layers.0.input_layernorm.weight", N.W).convention == N.W
    assert spec.classify("vision_tower.vision_model.encoder.layers.0.layer_norm1.weight", N.W).convention \
        == N.LAYERNORM


def test_detection_order():
    assert detect([], {"architectures": ["Gemma3ForConditionalGeneration"]}).spec.name == "gemma3"
    assert detect([], {"model_type": "gemma3_text"}).source == "config"
    assert detect([], None, "gemma3").source == "gguf"
    assert detect([], None, "llama").spec.name == "llama"
    assert detect([], {"model_type": "llama"}, override="gemma2").spec.name == "gemma2"
    names = ["model.layers.0.pre_feedforward_layernorm.weight", "model.layers.0.post_feedforward_layernorm.weight",
             "model.layers.0.self_attn.q_norm.weight"]
    assert detect(names).spec.name == "gemma3" and detect(names).source == "names"
    assert detect(names + ["model.layers.0.altup.router.weight", "model.layers.0.laurel.linear_left.weight"]
                  ).spec.name == "gemma3n"
    unknown = detect(["trf_blocks.3.norm1.scale"], {"model_type": "mine"})
    assert unknown.spec is HEURISTIC and unknown.source == "unknown"


def test_heuristics_for_from_scratch_names():
    c = HEURISTIC.classify("trf_blocks.3.norm1.scale")
    assert c.role == Role.NORM_OTHER and c.layer == 3 and c.convention == N.W
    assert HEURISTIC.classify("trf_blocks.3.norm1.scale", N.ONE_PLUS_W).convention == N.ONE_PLUS_W
    assert HEURISTIC.classify("trf_blocks.0.att.W_query.weight").role == Role.ATTN_Q
    assert HEURISTIC.classify("out_head.weight").role == Role.LM_HEAD


def test_unknown_arch_lists_the_valid_ones():
    with pytest.raises(UnknownNameError, match="valid: .*gemma3.*llama"):
        get_spec("gemma9")


def test_gguf_names_match_the_real_gemma_file(gemma_gguf):
    """Every tensor of the published GGUF maps to an HF name and back."""
    _, entries = read_gguf_header(gemma_gguf)  # agrees with gguf.GGUFReader (tests/io)
    spec = SPECS["gemma3"]
    for t in entries:
        hf = gguf_to_hf(spec, t.name)
        assert hf is not None, t.name
        assert hf_to_gguf(spec, hf) == t.name
    assert gguf_to_hf(spec, "blk.16.post_ffw_norm.weight") == "model.layers.16.post_feedforward_layernorm.weight"
    assert hf_to_gguf(spec, "model.language_model.layers.3.mlp.down_proj.weight") == "blk.3.ffn_down.weight"
    assert hf_to_gguf(SPECS["llama"], "model.layers.2.post_attention_layernorm.weight") == "blk.2.ffn_norm.weight"


@pytest.mark.parametrize("name", [n for n, s in SPECS.items() if s.hf_templates])
def test_name_maps_agree_with_gguf_py_for_every_block(name):
    """The per-name mapping (block index taken out of the name) gives exactly what gguf-py's
    TensorNameMap built for n blocks gives, for every templated tensor of every block: the map no longer
    needs a table per block (a GGUF claiming 2^32 - 1 blocks built one per claimed block)."""
    spec = SPECS[name]
    arch = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}[spec.gguf_arch]
    n_blocks = 40
    tmap = gguf.get_tensor_name_map(arch, n_blocks)
    checked = 0
    for template in spec.hf_templates:
        for bid in range(n_blocks) if "{bid}" in template else (None,):
            base = template.format(bid=bid) if bid is not None else template
            expected = tmap.get_name(base)
            for suffix in (".weight", ".bias"):
                got = hf_to_gguf(spec, base + suffix)
                assert got == (expected + suffix if expected else None), base
                if expected:
                    assert gguf_to_hf(spec, got) == base + suffix or base + suffix == "lm_head.weight"
                    checked += 1
    assert checked >= 2 * n_blocks
    # a block index far past any table is still a name, and no table is built for it (the last templated tensor
    # of the family: mlp.down_proj, BERT's output.dense, ...)
    block = [t for t in spec.hf_templates if "{bid}" in t and tmap.get_name(t.format(bid=0))][-1]
    hf_big = block.format(bid=999999999) + ".weight"
    gguf_big = tmap.get_name(block.format(bid=0)).replace("blk.0.", "blk.999999999.", 1) + ".weight"
    assert hf_to_gguf(spec, hf_big) == gguf_big and gguf_to_hf(spec, gguf_big) == hf_big
    # leading zeros, ten-digit indices and a literal {bid} are not names the converter writes
    for bid in ("07", "1234567890", "{bid}"):
        assert hf_to_gguf(spec, block.replace("{bid}", bid) + ".weight") is None, bid
