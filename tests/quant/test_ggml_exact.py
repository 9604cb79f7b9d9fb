"""Bit-exact blocks: against gguf-py's numpy quantizers and against llama.cpp's own C quantizer."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from ggml_ref import adversarial, ggml_quantize
from normscope.io import GGUFCheckpoint
from normscope.quant import LAYOUTS, dequantize_blocks, fake_quantize, quantize_blocks

GGML_TYPES = ["F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]
GGUF_PY_TYPES = ["BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"]  # gguf.quants quantizes only these in numpy


def _same_blocks(a: np.ndarray, b: np.ndarray, fmt: str) -> float:
    size = LAYOUTS[fmt].type_size
    return float((a.reshape(-1, size) == b.reshape(-1, size)).all(axis=1).mean())


@pytest.mark.parametrize("fmt", GGML_TYPES)
def test_identical_to_llama_cpp_on_adversarial_rows(fmt):
    x = adversarial()
    assert _same_blocks(quantize_blocks(x, fmt), ggml_quantize(x, fmt), fmt) == 1.0


@pytest.mark.parametrize("fmt", GGML_TYPES)
def test_identical_to_llama_cpp_on_real_gemma_tensors(fmt, gemma_rows):
    for name, x in gemma_rows.items():
        assert _same_blocks(quantize_blocks(x, fmt), ggml_quantize(x, fmt), fmt) == 1.0, name


@pytest.mark.parametrize("fmt", GGUF_PY_TYPES)
def test_identical_to_gguf_py(fmt, gemma_rows):
    for x in [adversarial(1), *gemma_rows.values()]:
        ref = gguf.quants.quantize(x, gguf.GGMLQuantizationType[fmt])
        assert np.array_equal(quantize_blocks(x, fmt), ref)


@pytest.mark.parametrize("fmt", GGML_TYPES)
def test_dequantization_equals_gguf_py(fmt):
    x = adversarial(2)
    blocks = ggml_quantize(x, fmt)
    ref = gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType[fmt]).reshape(x.shape)
    np.testing.assert_array_equal(dequantize_blocks(blocks, fmt, x.shape), ref)
    np.testing.assert_array_equal(fake_quantize(x, fmt), ref)


def test_requantizing_a_q5_0_tensor_of_the_published_file_is_exact(gemma_gguf):
    ckpt = GGUFCheckpoint.open_file(gemma_gguf)
    e = ckpt.entries["blk.0.attn_q.weight"]
    assert e.dtype == "Q5_0"
    stored = ckpt.read_raw_rows(e, 0, e.n_rows).reshape(e.n_rows, -1)
    values = ckpt.read(e)
    assert np.array_equal(quantize_blocks(values, "Q5_0"), stored)
    assert np.array_equal(fake_quantize(values, "Q5_0"), values)  # error 0
    ckpt.close()


def test_layout_table_matches_gguf():
    for name, layout in LAYOUTS.items():
        assert gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[name]] == tuple(layout), name
