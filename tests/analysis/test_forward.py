"""forward against its references: torch's own KL, normscope's ggml kernels bit for bit, `normscope clip`'s
written checkpoint, and the real Gemma 3 270M (HF export of the published Q4_K_M GGUF)."""

from __future__ import annotations

import math

import jsonschema
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="forward needs the torch extra (installed by the test extra)")
pytest.importorskip("transformers", reason="forward needs the torch extra (installed by the test extra)")

from forward_helpers import tiny_gemma  # noqa: E402
from normscope import clip, forward  # noqa: E402
from normscope.analysis import open_model  # noqa: E402
from normscope.analysis.forward.load import load_causal_lm  # noqa: E402
from normscope.analysis.forward.metrics import Scores, score_base, score_variant  # noqa: E402
from normscope.analysis.forward.variants import plan_quantized  # noqa: E402
from normscope.analysis.forward.text import BUILTIN_TEXT, load_text, windows  # noqa: E402
from normscope.analysis.forward.weights import WeightEditor, quantize_in_place  # noqa: E402
from normscope.errors import ConfigError  # noqa: E402
from normscope.quant import dequantize_blocks, fake_quantize, quantize_blocks  # noqa: E402
from normscope.report.schemas import schema  # noqa: E402

POST_FFN = "*post_feedforward_layernorm*"


# -- units ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bos, n, ctx, expected", [
    (2, 5, 4, [[2, 10, 11, 12], [2, 13, 14]]),
    (2, 3, 10, [[2, 10, 11, 12]]),
    (None, 4, 3, [[10, 11, 12], [12, 13, 14]]),
], ids=["bos-two-windows", "bos-one-window", "no-bos-overlap"])
def test_windows_score_each_text_token_once(bos, n, ctx, expected):
    got = windows(range(10, 20), n, ctx, bos)
    assert got == expected
    assert sum(len(w) - 1 for w in got) == n  # one prediction per token taken


def test_windows_refuse_too_little_text():
    with pytest.raises(ConfigError, match="fewer than 2 tokens"):
        windows([5], 10, 8, None)


def test_builtin_text_is_package_data():
    label, text = load_text()
    assert label == BUILTIN_TEXT and "Call me Ishmael" in text and len(text) > 4000


def test_kl_agrees_with_torch_kl_div_and_is_zero_for_the_base_itself():
    g = torch.Generator().manual_seed(0)
    base, var = torch.randn(40, 1000, generator=g) * 3, torch.randn(40, 1000, generator=g) * 3
    targets = torch.randint(0, 1000, (40,), generator=g)
    s = Scores()
    score_variant(base, var, targets, s)
    lp, lq = torch.log_softmax(base.double(), -1), torch.log_softmax(var.double(), -1)
    ref = torch.nn.functional.kl_div(lq, lp, log_target=True, reduction="none").sum(-1)  # KL(P || Q)
    np.testing.assert_allclose(s.cat("kl"), ref.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(s.cat("agree"), (base.argmax(-1) == var.argmax(-1)).numpy())
    np.testing.assert_allclose(s.cat("nll"), -lq.gather(1, targets[:, None])[:, 0].numpy())
    same = Scores()
    score_variant(base, base.clone(), targets, same)
    assert (same.cat("kl") == 0).all() and same.cat("agree").all()
    b = Scores()
    score_base(base, targets, b)
    np.testing.assert_array_equal(b.cat("nll"), -lp.gather(1, targets[:, None])[:, 0].numpy())


# -- a tiny Gemma (random weights, off every quantization grid) ---------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_gemma(tmp_path_factory.mktemp("fwd") / "tiny")


@pytest.fixture(scope="module")
def tiny_result(tiny):
    return forward(tiny, schemes="Q8_0,Q4_K_M,Q2_K", clip=[100, 90], tokens=64)


def test_tiny_orders_the_schemes_by_bits(tiny_result):
    kl = {v.label: v.kl.mean for v in tiny_result.variants}
    top1 = {v.label: v.top1_agreement for v in tiny_result.variants}
    assert kl["Q8_0"] < kl["Q4_K_M"] < kl["Q2_K"]
    assert top1["Q8_0"] > top1["Q4_K_M"] > top1["Q2_K"]
    jsonschema.validate(tiny_result.to_dict(), schema("forward"))


def test_clip_at_100_is_the_base_exactly(tiny_result):
    v = tiny_result.variant("clip p100")
    assert v.changed_tensors == 0 and v.kl.max == 0.0 and v.top1_agreement == 1.0
    assert v.perplexity == tiny_result.base.perplexity


def test_in_memory_clip_equals_the_checkpoint_clip_writes(tiny, tiny_result, tmp_path):
    """A clip variant is what `normscope clip` writes: the written directory, loaded, gives the same logits."""
    out = tmp_path / "clipped"
    clip(tiny, 90, out=out)
    r = forward(tiny, [out], clip=90, tokens=64, activations=False)
    in_memory, loaded = r.variant("clip p90"), r.variant(str(out))
    assert loaded.kind == "model" and in_memory.kl.mean > 0.1
    assert loaded.kl == in_memory.kl and loaded.perplexity == in_memory.perplexity
    assert in_memory.kl == tiny_result.variant("clip p90").kl


def test_editor_restores_every_original_bit(tiny):
    with open_model(tiny) as m:
        tm = load_causal_lm(m.source)
        before = {k: v.detach().clone() for k, v in tm.state_dict().items()}
        editor = WeightEditor(tm)
        pv = plan_quantized(m, "Q2_K", editor)
        for info, fmt in pv.tensors:
            quantize_in_place(editor, info, fmt)
        assert any(not torch.equal(before[k], v) for k, v in tm.state_dict().items())
        editor.restore()
        assert all(torch.equal(before[k], v) for k, v in tm.state_dict().items())


def test_bad_options_say_what_is_wrong(tiny):
    with pytest.raises(ConfigError, match="outside"):
        forward(tiny, clip=101, tokens=8)
    with pytest.raises(ConfigError, match="sensitivity-by"):
        forward(tiny, sensitivity=True, sensitivity_by="tensor", tokens=8)
    with pytest.raises(ConfigError, match="no norm weights match"):
        forward(tiny, clip=99, clip_include=["nothing*"], tokens=8, activations=False)


# -- the real Gemma 3 270M ----------------------------------------------------------------------------

def test_fake_quantized_weights_are_the_ggml_kernels_bit_for_bit(gemma_hf):
    """What forward runs is exactly dequantize_blocks(quantize_blocks(w)) of the tensor simulate reads."""
    with open_model(gemma_hf) as m:
        tm = load_causal_lm(m.source)
        editor = WeightEditor(tm)
        pv = plan_quantized(m, "Q4_K_M", editor)
        picked: dict[str, tuple] = {}
        for info, fmt in pv.tensors:  # one tensor of each type of the plan, the tied embedding (Q8_0) among them
            picked.setdefault(fmt, (info, fmt))
        assert set(picked) == {"Q4_K", "Q5_0", "Q6_K", "Q8_0"}
        for info, fmt in picked.values():
            w = m.read(info).reshape(info.shape)
            np.testing.assert_array_equal(editor.values(info.name), w)  # torch holds what simulate reads
            quantize_in_place(editor, info, fmt)
            expected = dequantize_blocks(quantize_blocks(w, fmt), fmt, w.shape)
            assert np.array_equal(editor.values(info.name), expected), f"{info.name} {fmt}"
        down = m.get("model.layers.5.mlp.down_proj.weight")
        w = m.read(down).reshape(down.shape)
        quantize_in_place(editor, down, "int4")
        assert np.array_equal(editor.values(down.name), fake_quantize(w, "int4"))
        editor.restore()
        assert all(np.array_equal(editor.values(i.name), m.read(i).reshape(i.shape)) for i, _ in picked.values())


@pytest.fixture(scope="module")
def gemma_forward(gemma_hf):
    return forward(gemma_hf, schemes="Q8_0,Q4_K_M,Q2_K,int8,int4", clip=99, clip_include=[POST_FFN], tokens=256)


def test_gemma_kl_and_top1_per_scheme(gemma_forward):
    """Measured on the HF export, which was dequantized from the Q4_K_M GGUF (docs/forward.md)."""
    r = gemma_forward
    kl = {v.label: v.kl.mean for v in r.variants}
    top1 = {v.label: v.top1_agreement for v in r.variants}
    assert r.text.n_tokens == 256 and r.base.perplexity == pytest.approx(21.95, abs=0.05)
    # Q2_K is far worse than both 8-bit and 4-bit plans; top-1 agreement falls in the order of the bits
    assert kl["Q2_K"] > 100 * max(kl["Q8_0"], kl["Q4_K_M"])
    assert top1["Q8_0"] > top1["Q4_K_M"] > top1["Q2_K"]
    # ... but Q4_K_M's KL is *below* Q8_0's: this export already lies on Q4_K_M's grid (its weights are the
    # GGUF's, rounded to bf16), so re-quantizing to Q4_K_M is nearly lossless and Q8_0 rounds onto another
    # grid. The report says so.
    assert kl["Q4_K_M"] < kl["Q8_0"] < 1e-3
    assert any(n.startswith("Q4_K_M (7.36 bpw) changes the outputs less than Q8_0") for n in r.notes)
    # schemes off that grid keep the expected order: quanto int8 per channel, int4 group-wise
    assert kl["int8"] < kl["int4"] and top1["int8"] > top1["int4"]
    jsonschema.validate(r.to_dict(), schema("forward"))


def test_gemma_clipping_post_ffn_norms_costs_more_than_any_quantization(gemma_forward):
    """The seed's accuracy loss, explained: clipping norms that no quantizer touches is pure error."""
    r = gemma_forward
    clipped = r.variant("clip p99")
    assert clipped.changed_tensors == 18
    assert clipped.kl.mean > r.variant("Q8_0").kl.mean * 100
    assert all(clipped.kl.mean > v.kl.mean for v in r.variants if v.kind == "scheme")
    assert clipped.top1_agreement < 0.5
    assert any("model.layers.16.post_feedforward_layernorm.weight: |gain| 1657" in n for n in clipped.notes)
    assert any("is larger than that of every quantization variant" in n for n in r.notes)


def test_gemma_activation_profile(gemma_forward):
    p = gemma_forward.activations
    assert [la.layer for la in p.layers] == list(range(18))
    # the residual stream at the BOS token leaves the fp16 range in the middle layers (channel 163)
    assert p.largest.max_abs > 65504 and p.fp16_overflow
    assert {la.max_channel for la in p.layers if la.max_abs > 65504} == {163}
    assert all(la.max_token_text == "<bos>" for la in p.layers)
    # channel 400 is massive at many tokens in the early layers; 163 only at <bos>
    early = {m.channel: m.tokens for m in p.layers[1].massive}
    assert early.get(400, 0) > 100
    # the data-free candidate of layer 0's down_proj is confirmed: the <bos> input spike in column 1405
    # becomes the largest output, in row 400, and this one weight makes ~99% of it
    sw = {(s.tensor, s.row, s.col): s for s in p.super_weights}
    first = sw[("model.layers.0.mlp.down_proj.weight", 400, 1405)]
    assert first.confirmed and first.token_text == "<bos>" and first.input_rank == 1 and first.share > 0.9
    assert sum(s.confirmed for s in p.super_weights) < len(p.super_weights)


def test_gemma_sensitivity_ranks_groups(gemma_hf):
    r = forward(gemma_hf, sensitivity=True, sensitivity_scheme="Q2_K", tokens=32, activations=False,
                sensitivity_include=["*layers.17.*", "*layers.3.mlp.*"])
    groups = [g.group for g in r.sensitivity]
    assert sorted(groups) == sorted(["layers.17.attn_q", "layers.17.attn_k", "layers.17.attn_v", "layers.17.attn_o",
                                     "layers.17.mlp_gate", "layers.17.mlp_up", "layers.17.mlp_down",
                                     "layers.3.mlp_gate", "layers.3.mlp_up", "layers.3.mlp_down"])
    kls = [g.kl.mean for g in r.sensitivity]
    assert kls == sorted(kls, reverse=True) and all(math.isfinite(k) and k > 0 for k in kls)
    assert groups[0] == "layers.17.mlp_down"  # the block whose post-FFN gain reaches 1649
    assert r.variants == ()


def test_a_recipe_runs_as_a_variant(tiny):
    """`forward --recipe` quantizes with the recipe's types: the same tensors, sizes and types as the recipe."""
    from normscope import recipe

    r = recipe(tiny, budget_bpw=8.0)
    f = forward(tiny, schemes="Q4_K_M", recipes=[r], tokens=32, activations=False)
    v = f.variant(f"recipe {r.budget_bits_per_weight:.3g} bpw")
    assert v.nbytes == r.recipe.nbytes and v.type_counts == r.recipe.type_counts
    assert v.changed_tensors == len(r.tensors) and math.isfinite(v.kl.mean)


def test_gguf_base_through_transformers_gguf_loader(gemma_gguf):
    """A GGUF base loads with transformers' GGUF loader (model and tokenizer); its Q4_K_M plan re-quantizes the
    file's own values, so that variant is close to exact."""
    r = forward(gemma_gguf, schemes="Q4_K_M", tokens=32, activations=False)
    assert r.source.format == "gguf" and r.text.bos and r.text.n_tokens == 32
    assert math.isfinite(r.base.perplexity)
    q = r.variant("Q4_K_M")
    assert q.type_counts == {"F32": 109, "Q5_0": 81, "Q4_K": 27, "Q8_0": 10, "Q6_K": 9}
    assert q.kl.mean < 1e-4 and q.top1_agreement == 1.0


# -- tokenizers (issue 21 item 8) -------------------------------------------------------------------

def _weights_only_copy(src, dst):
    """The export's weights and config linked into `dst`, without its tokenizer files."""
    dst.mkdir()
    for f in src.iterdir():
        if f.suffix in (".safetensors", ".json") and not f.name.startswith(("tokenizer", "special_tokens")):
            (dst / f.name).symlink_to(f)
    return dst


def test_missing_or_empty_tokenizer_files_are_named_not_an_empty_text(gemma_hf, gemma_gguf, tmp_path):
    """transformers builds an empty tokenizer from a directory whose tokenizer files are missing or empty; forward
    said 'the evaluation text has fewer than 2 tokens'. It names the directory and the option instead."""
    from normscope.analysis.forward.load import load_tokenizer

    bare = _weights_only_copy(gemma_hf, tmp_path / "bare")
    empty = _weights_only_copy(gemma_hf, tmp_path / "empty")
    (empty / "tokenizer.json").write_text("")
    (empty / "tokenizer_config.json").write_text("{}")
    for d in (bare, empty):
        with pytest.raises(ConfigError, match=r"(no usable tokenizer in|no tokenizer found for) .*pass --tokenizer"):
            load_tokenizer(open_model(d).source)
    # a GGUF file is a tokenizer transformers reads: --tokenizer model.gguf
    tok = load_tokenizer(open_model(bare).source, gemma_gguf)
    assert tok("Call me Ishmael.")["input_ids"] == load_tokenizer(open_model(gemma_hf).source)(
        "Call me Ishmael.")["input_ids"]
