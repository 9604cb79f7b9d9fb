"""normscope imatrix collect on the real Gemma 3 270M: the sums of x^2 and token counts llama-imatrix's collector
defines, against the inputs of the Linear layers recomputed from transformers' hidden states; the file it
writes drives simulate --imatrix byte-identically to ggml_quantize_chunk."""

from __future__ import annotations

import sys
from pathlib import Path

import gguf
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "quant"))

from ggml_ref import ggml_quantize  # noqa: E402
from helpers import run_cli  # noqa: E402

import normscope  # noqa: E402
from normscope.analysis import open_model  # noqa: E402

torch = pytest.importorskip("torch", reason="needs the torch extra")
transformers = pytest.importorskip("transformers", reason="needs the torch extra")


@pytest.fixture(scope="module")
def collected(gemma_hf, tmp_path_factory):
    out = tmp_path_factory.mktemp("collect") / "gemma.imatrix.gguf"
    r = normscope.collect_imatrix(gemma_hf, out, tokens=1024)
    return r, normscope.read_imatrix(out)


def test_what_was_collected(collected):
    r, imx = collected
    assert (r.chunk_count, r.chunk_size, r.tokens, r.dataset) == (2, 512, 1024, "builtin:public-domain")
    assert r.skipped == ("lm_head.weight",)  # tied to the embedding: not a block weight
    assert len(imx) == r.entries == 18 * 7 and all(n.startswith("blk.") for n in imx)
    assert (imx.format, imx.chunk_count, imx.chunk_size, imx.datasets) == ("gguf", 2, 512, ("builtin:public-domain",))
    assert all(imx.entry(n).counts.tolist() == [1024.0] for n in imx)


LAYERS = (0, 5, 17)


@pytest.fixture(scope="module")
def attention_inputs(gemma_hf):
    """q_proj's input is input_layernorm(hidden state entering the layer): recomputed from the hidden states
    transformers returns, on the chunks compute_imatrix builds (512 tokens, the first one BOS)."""
    tok = transformers.AutoTokenizer.from_pretrained(str(gemma_hf))
    lm = transformers.AutoModelForCausalLM.from_pretrained(str(gemma_hf), dtype=torch.float32)
    text = (Path(normscope.__file__).parent / "data" / "eval_sample.txt").read_text(encoding="utf-8")
    ids = tok(text, add_special_tokens=False)["input_ids"]
    want = {layer: np.zeros(640) for layer in LAYERS}
    with torch.inference_mode():
        for i in range(2):
            chunk = [tok.bos_token_id, *ids[i * 512 + 1:(i + 1) * 512]]
            hidden = lm(torch.tensor([chunk]), output_hidden_states=True).hidden_states
            for layer in LAYERS:
                x = lm.model.layers[layer].input_layernorm(hidden[layer])
                want[layer] += (x.double() ** 2).sum(dim=(0, 1)).numpy()
    return want


@pytest.mark.parametrize("layer", LAYERS)
def test_sums_are_those_of_the_attention_inputs(collected, attention_inputs, layer):
    _, imx = collected
    e = imx.entry(f"blk.{layer}.attn_q.weight")
    np.testing.assert_allclose(e.sums[0], attention_inputs[layer], rtol=1e-5)
    np.testing.assert_array_equal(e.sums[0], imx.entry(f"blk.{layer}.attn_k.weight").sums[0])  # the same input


def test_the_collected_imatrix_simulates_as_ggml_quantizes(collected, gemma_hf):
    _, imx = collected
    names = {"blk.5.ffn_down.weight": "model.layers.5.mlp.down_proj.weight",
             "blk.2.attn_q.weight": "model.layers.2.self_attn.q_proj.weight"}
    r = normscope.simulate(gemma_hf, schemes="Q4_K_M", include=list(names.values()), imatrix=imx)
    with open_model(gemma_hf) as m:
        for gguf_name, hf in names.items():
            t = r.scheme("Q4_K_M").tensor(hf)
            x = m.read(m.get(hf))
            raw = ggml_quantize(x, t.type, imatrix=imx[gguf_name])
            np.testing.assert_array_equal(normscope.quantize_blocks(x, t.type, imatrix=imx[gguf_name]), raw)
            y = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[t.type]).reshape(x.shape)
            assert t.imatrix == "used" and t.error.max_abs == float(np.abs(y - x).max())


def test_cli(gemma_hf, tmp_path, capsys):
    out = tmp_path / "i.gguf"
    code, stdout, err = run_cli(["imatrix", "collect", gemma_hf, "--tokens", "600", "-c", "256", "--out", out],
                                capsys)
    assert code == 0, err
    assert f"{out}: 126 entries from 2 chunks of 256 tokens of builtin:public-domain" in " ".join(stdout.split())
    assert normscope.read_imatrix(out).entry("blk.0.attn_q.weight").counts.tolist() == [512.0]
    short = tmp_path / "short.txt"
    short.write_text("Call me Ishmael.", encoding="utf-8")
    code, _, err = run_cli(["imatrix", "collect", gemma_hf, "--text", short, "--out", tmp_path / "x.gguf"], capsys)
    assert code == 2 and "make no whole chunk of 512" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.gguf").exists()
