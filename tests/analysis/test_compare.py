"""compare against its references: the published GGUF vs its HF export (bf16 rounding, computed independently),
llama.cpp's q/k permutation undone as transformers undoes it, fine-tunes, teachers and students of other sizes."""

from __future__ import annotations

import math
import warnings

import gguf
import ml_dtypes
import numpy as np
import pytest

from helpers import (GEMMA_CONFIG, LLAMA_CONFIG, gemma_tensors, llama_tensors, write_gguf, write_model)
from normscope import compare
from normscope.analysis import open_model
from normscope.analysis.compare import compare_models
from normscope.errors import CheckpointError, ConfigError
from normscope.io import GGUFCheckpoint


@pytest.fixture(scope="module")
def hf_vs_gguf(gemma_hf, gemma_gguf):
    return compare([gemma_hf, gemma_gguf], labels=["bf16", "q4_k_m"])


def test_hf_export_against_the_published_gguf_aligns_all_236_tensors(hf_vs_gguf):
    p = hf_vs_gguf.pair("q4_k_m")
    assert (p.matched, len(p.unmatched)) == (236, 0)
    norms = [t for t in p.tensors if t.role.is_norm]
    assert len(norms) == 109 and all(t.identical for t in norms)  # the GGUF's +1 reconciled
    assert p.identical == 109
    assert any("all 109 norm tensors are identical" in line for line in p.summary)


def test_quantized_tensors_differ_by_exactly_the_bf16_rounding(hf_vs_gguf, gemma_gguf):
    """The export is bf16(dequantized GGUF): the difference must be bf16 rounding and nothing else."""
    p = hf_vs_gguf.pair("q4_k_m")
    changed = [t for t in p.tensors if not t.identical]
    assert len(changed) == 127 and all(50 < t.error.sqnr_db < 62 for t in changed)
    ckpt = GGUFCheckpoint.open_file(gemma_gguf)
    for name in ("blk.3.attn_q.weight", "blk.5.ffn_down.weight", "blk.16.attn_output.weight"):
        e = ckpt.entries[name]
        raw = ckpt.read_raw_rows(e, 0, e.n_rows).reshape(e.n_rows, -1)
        g = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[e.dtype]).reshape(e.shape)  # gguf-py's reader
        b = g.astype(ml_dtypes.bfloat16).astype(np.float32)  # ml_dtypes rounds to nearest even, as torch does
        d = g.astype(np.float64) - b  # variant (GGUF) − base (bf16 export)
        t = next(t for t in changed if t.variant_name == name)
        assert t.error.rmse == pytest.approx(math.sqrt(np.mean(d ** 2)), rel=1e-9)
        assert t.error.max_abs == float(np.abs(g - b).max())
    ckpt.close()


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py LlamaModel.permute: the rotary layout GGML expects."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def test_llama_gguf_q_k_rows_are_unpermuted_like_transformers(tmp_path):
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    n_head, n_kv = 8, 4
    t = llama_tensors(hidden=256, ffn=512)  # k/v have 128 rows: 4 KV heads of 32
    hf = write_model(tmp_path / "hf", t, {**LLAMA_CONFIG, "num_attention_heads": n_head,
                                         "num_key_value_heads": n_kv}, "F32")
    names = {"model.embed_tokens.weight": "token_embd.weight", "lm_head.weight": "output.weight",
             "model.norm.weight": "output_norm.weight"}
    parts = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    for i in range(2):
        for hf_part, g in parts.items():
            names[f"model.layers.{i}.{hf_part}.weight"] = f"blk.{i}.{g}.weight"
    stored = {}
    for hf_name, g in names.items():
        w = t[hf_name].astype(np.float32)
        if ".attn_q." in g:
            w = _permute(w, n_head)
        elif ".attn_k." in g:
            w = _permute(w, n_kv)
        stored[g] = ("F32", w)
    path = write_gguf(tmp_path / "llama.gguf", stored, arch="llama",
                      kv={"llama.block_count": 2, "llama.attention.head_count": n_head,
                          "llama.attention.head_count_kv": n_kv})
    r = compare([hf, path], labels=["hf", "gguf"])
    p = r.pair("gguf")
    assert (p.matched, p.identical, len(p.unmatched)) == (len(names), len(names), 0)
    processor = LlamaTensorProcessor(config={"num_attention_heads": n_head, "num_key_value_heads": n_kv})
    with open_model(path) as m:
        for g in ("blk.1.attn_q.weight", "blk.0.attn_k.weight"):
            info = m.get(g)
            ours = np.concatenate([rows for _, rows in m.iter_rows(info, max_elements=3 * info.shape[1])])
            theirs = processor.process(stored[g][1], g).weights
            np.testing.assert_array_equal(ours, theirs)
            np.testing.assert_array_equal(m.read(info), theirs)


def test_fine_tune_moves_and_norm_growth(tmp_path):
    base_t = gemma_tensors()
    tuned = {k: v.copy() for k, v in base_t.items()}
    tuned["model.layers.1.mlp.down_proj.weight"] *= 1.5
    tuned["model.layers.0.self_attn.q_proj.weight"] += 1e-4
    tuned["model.layers.0.input_layernorm.weight"] *= 3.0  # stored w tripled: gain 1 + 3w
    base = write_model(tmp_path / "base", base_t, GEMMA_CONFIG, "F32")
    ft = write_model(tmp_path / "ft", tuned, GEMMA_CONFIG, "F32", shards=2)
    p = compare([base, ft], labels=["base", "ft"]).pair("ft")
    assert p.identical == p.matched - 3
    assert p.moved_most[:2] == ("model.layers.0.input_layernorm.weight",  # stored w ×3: relative L2 2
                                "model.layers.1.mlp.down_proj.weight")
    assert p.tensor("model.layers.1.mlp.down_proj.weight").error.rel_l2 == pytest.approx(0.5, rel=1e-6)
    grew = p.norm_changes[0]
    w = base_t["model.layers.0.input_layernorm.weight"].astype(np.float32).astype(np.float64)
    assert grew.name == "model.layers.0.input_layernorm.weight"
    assert grew.ratio == pytest.approx(np.abs(1 + 3 * w).max() / np.abs(1 + w).max(), rel=1e-6)
    assert any(line.startswith("norm gains: 1 grew") for line in p.summary)


def test_teacher_and_student_of_other_sizes_compare_by_depth(tmp_path):
    teacher = write_model(tmp_path / "t", gemma_tensors(layers=4, hidden=128, ffn=256, seed=1),
                          {**GEMMA_CONFIG, "num_hidden_layers": 4}, "BF16")
    student = write_model(tmp_path / "s", gemma_tensors(layers=2, hidden=64, ffn=128, seed=2), GEMMA_CONFIG, "BF16")
    r = compare([teacher, student], labels=["teacher", "student"])
    p = r.pair("student")
    assert {t.name for t in p.tensors} == {f"model.layers.{i}.self_attn.{n}_norm.weight" for i in (0, 1)
                                           for n in "qk"}  # head_dim 32 in both: the only shapes that agree
    reasons = {u.name: u.reason for u in p.unmatched if u.side == "base"}
    assert reasons["model.layers.0.mlp.up_proj.weight"] == "shape 256×128 vs 128×64"
    assert reasons["model.layers.3.mlp.up_proj.weight"] == "not in the variant"
    assert any("compare them by role and depth" in line for line in p.summary)
    prof = {(d.variant, d.role, d.metric): d.points for d in r.profiles}
    # both span relative depth 0..1; the planted 1656 sits in each model's last post-FFN norm (gain 1657)
    assert [x for x, _ in prof[("teacher", "norm_post_ffn", "gain_max")]] == [0.0, 1 / 3, 2 / 3, 1.0]
    assert [x for x, _ in prof[("student", "norm_post_ffn", "gain_max")]] == [0.0, 1.0]
    assert prof[("student", "norm_post_ffn", "gain_max")][-1][1] == 1657.0
    assert prof[("teacher", "norm_post_ffn", "gain_max")][-1][1] == 1657.0


def test_tied_head_is_compared_with_the_embedding(tmp_path):
    t = llama_tensors()
    untied = write_model(tmp_path / "untied", t, LLAMA_CONFIG, "F32")
    tied_t = {k: v for k, v in t.items() if k != "lm_head.weight"}
    tied = write_model(tmp_path / "tied", tied_t, {**LLAMA_CONFIG, "tie_word_embeddings": True}, "F32")
    p = compare([untied, tied], labels=["untied", "tied"]).pair("tied")
    head = p.tensor("lm_head.weight")
    assert head.variant_name == "model.embed_tokens.weight" and "ties its head" in head.note
    assert not p.unmatched


def test_multimodal_prefixes_align_with_text_names(tmp_path):
    t = gemma_tensors()
    mm = {k.replace("model.", "model.language_model.", 1) if k.startswith("model.") else k: v for k, v in t.items()}
    text = write_model(tmp_path / "text", t, GEMMA_CONFIG, "F32")
    multi = write_model(tmp_path / "mm", mm, {"architectures": ["Gemma3ForConditionalGeneration"],
                                              "model_type": "gemma3", "text_config": {"num_hidden_layers": 2}}, "F32")
    p = compare([text, multi]).pair("variant")
    assert p.matched == len(t) and p.identical == len(t) and not p.unmatched


def test_bad_arguments(tmp_path):
    d = write_model(tmp_path / "m", gemma_tensors(), GEMMA_CONFIG, "F32")
    with pytest.raises(ConfigError, match="at least two models"):
        compare([d])
    with pytest.raises(ConfigError, match="3 labels for 2 models"):
        compare([d, d], labels=["a", "b", "c"])
    with pytest.raises(ConfigError, match="distinct"):
        compare([d, d], labels=["a", "a"])


@pytest.fixture
def three(tmp_path):
    base_t = gemma_tensors()
    tuned = {k: v * (1.01 if "mlp" in k else 1.0) for k, v in base_t.items()}
    base = write_model(tmp_path / "base", base_t, GEMMA_CONFIG, "BF16")
    ft = write_model(tmp_path / "ft", tuned, GEMMA_CONFIG, "BF16")
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x10" + bytes(7) + b'{"a": 1}       ')  # a header length past the end of the file
    return base, ft, bad


def _without_failures(r):
    d = r.to_dict()
    del d["failed"], d["options"]
    return d


def test_a_variant_that_fails_to_open_is_named_and_the_others_are_compared(three):
    base, ft, bad = three
    r = compare([base, bad, ft], labels=["base", "broken", "ft"])
    assert [v.label for v in r.variants] == ["base", "ft"] and [p.variant for p in r.pairs] == ["ft"]
    (f,) = r.failed
    assert (f.label, f.source) == ("broken", str(bad)) and str(bad) in f.error and "\n" not in f.error
    assert _without_failures(r) == _without_failures(compare([base, ft], labels=["base", "ft"]))


def test_a_variant_truncated_while_it_is_read_is_left_out(three, tmp_path):
    """A file that opened but ends early (cut after opening): its analysis fails, the pair of the others stays."""
    base, ft, _ = three
    cut = write_model(tmp_path / "cut", gemma_tensors(seed=9), GEMMA_CONFIG, "BF16")
    models = [open_model(p) for p in (base, cut, ft)]
    shard = next(cut.glob("*.safetensors"))
    with open(shard, "r+b") as fh:
        fh.truncate(shard.stat().st_size // 2)
    try:
        r = compare_models(models, ["base", "cut", "ft"])
    finally:
        for m in models:
            m.close()
    assert [p.variant for p in r.pairs] == ["ft"] and [f.label for f in r.failed] == ["cut"]
    assert "is truncated" in r.failed[0].error and str(shard) in r.failed[0].error


def test_a_variant_that_fails_during_the_element_wise_diff_is_left_out(three, tmp_path):
    base, ft, _ = three
    cut = write_model(tmp_path / "cut", gemma_tensors(seed=9), GEMMA_CONFIG, "BF16")
    shard = next(cut.glob("*.safetensors"))

    def cut_after_its_analysis(what, done, total):
        if what == "analyzed cut":
            with open(shard, "r+b") as fh:
                fh.truncate(shard.stat().st_size // 2)

    r = compare([base, cut, ft], labels=["base", "cut", "ft"], progress=cut_after_its_analysis)
    assert [v.label for v in r.variants] == ["base", "ft"] and len(r.analyses) == 2
    assert [f.label for f in r.failed] == ["cut"] and "is truncated" in r.failed[0].error
    assert {p.variant for p in r.profiles} == {"base", "ft"}


def test_an_unreadable_base_or_too_few_readable_models_raise(three):
    base, ft, bad = three
    with pytest.raises(CheckpointError, match="header length"):
        compare([bad, base, ft])
    with pytest.raises(CheckpointError, match="at least two readable models; not readable: variant1: .*broken"):
        compare([base, bad, bad])


def test_nan_and_inf_are_error_findings_in_compare(tmp_path, capsys):
    """A model with a NaN weight compared with itself: once "max |diff| 0" and a numpy RuntimeWarning."""
    from helpers import GEMMA_CONFIG, gemma_tensors, run_cli, write_model

    t = gemma_tensors()
    t["model.layers.0.self_attn.q_proj.weight"][0, 0] = np.nan
    model = write_model(tmp_path / "m", t, GEMMA_CONFIG, "F32")
    r = compare([model, model], labels=["a", "b"])
    assert r.errors == ("a: model.layers.0.self_attn.q_proj.weight: 1 NaN values: that model is damaged; its "
                        "differences in this tensor mean nothing",
                        "b: model.layers.0.self_attn.q_proj.weight: 1 NaN values: that model is damaged; its "
                        "differences in this tensor mean nothing")
    q = next(d for d in r.pair("b").tensors if d.name == "model.layers.0.self_attn.q_proj.weight")
    assert q.error.non_finite == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning on the way
        code, out, _ = run_cli(["compare", model, model], capsys)
    assert code == 0 and "NON-FINITE VALUES in 2 tensors: a model is damaged" in out


def test_unrelated_models_say_nothing_aligned_instead_of_looking_identical(tmp_path):
    """Two models with no tensor in common once read "aligned 0 … SQNR inf, rel L2 0": identical."""
    a = write_model(tmp_path / "a", gemma_tensors(), GEMMA_CONFIG)
    b = write_model(tmp_path / "b", {"x.weight": np.ones((4, 4), np.float32)}, None)
    p = compare([a, b], labels=["a", "b"]).pair("b")
    assert p.matched == 0 and math.isnan(p.sqnr_db) and math.isnan(p.rel_l2)
    assert any(line.startswith("nothing aligned: no tensor of b pairs with one of a") for line in p.summary)
