"""bitsandbytes NF4/FP4 against bitsandbytes itself (quantize_4bit on CPU): the packed codes and the absmax of
every block equal bitsandbytes', and so do the dequantized values, on real Gemma and MiniLM weights and on
hypothesis-drawn arrays."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

torch = pytest.importorskip("torch", reason="the bitsandbytes reference needs the torch extra (test extra)")
bnbf = pytest.importorskip("bitsandbytes.functional", reason="bitsandbytes is the NF4/FP4 reference (test extra)")

from normscope.quant import fake_quantize, get_format  # noqa: E402
from normscope.quant.bnb import FP4_CODE, NF4_CODE, bnb_dequantize, bnb_quantize  # noqa: E402


def _reference(x: np.ndarray, kind: str, blocksize: int):
    """bitsandbytes' packed bytes, absmax and dequantized values (its generic dequantizer: the flattened blocks
    its quantizer made; see test_cpu_dequantizer_indexes_blocks_per_row)."""
    from bitsandbytes.backends.default.ops import _dequantize_4bit_compute
    from bitsandbytes.backends.utils import _get_4bit_code

    packed, state = bnbf.quantize_4bit(torch.from_numpy(np.ascontiguousarray(x)), blocksize=blocksize,
                                       quant_type=kind)
    code = _get_4bit_code(kind, torch.device("cpu"))
    values = _dequantize_4bit_compute(packed.reshape(-1), state.absmax, code, blocksize, x.shape, torch.float32)
    return packed.numpy().reshape(-1), state.absmax.numpy(), values.numpy()


def _packed(codes: np.ndarray, kind: str) -> np.ndarray:
    """Two codes a byte, the first in the high nibble; an odd count padded with the code of 0 (bitsandbytes pads
    the scaled values with 0)."""
    c = codes if codes.size % 2 == 0 else np.append(codes, bnb_quantize(np.zeros(1, np.float32), kind)[0])
    return ((c[::2] << 4) | c[1::2]).astype(np.uint8)


def _check(x: np.ndarray, kind: str, blocksize: int) -> None:
    packed, absmax, values = _reference(x, kind, blocksize)
    codes, ours_absmax = bnb_quantize(x, kind, blocksize)
    np.testing.assert_array_equal(_packed(codes, kind), packed)
    np.testing.assert_array_equal(ours_absmax, absmax)
    np.testing.assert_array_equal(bnb_dequantize(codes, ours_absmax, kind, blocksize).reshape(x.shape), values)


def test_codes_are_bitsandbytes_tables():
    for kind, code in (("nf4", NF4_CODE), ("fp4", FP4_CODE)):
        np.testing.assert_array_equal(bnbf.get_4bit_type(kind, device="cpu").numpy(), code)


@pytest.mark.parametrize("kind", ["nf4", "fp4"])
@pytest.mark.parametrize("blocksize", [32, 64, 128, 256])
def test_real_weights_equal_bitsandbytes(gemma_rows, minilm_rows, kind, blocksize):
    for name, rows in {**gemma_rows, **minilm_rows}.items():
        _check(np.ascontiguousarray(rows[:16]), kind, blocksize)


@pytest.mark.parametrize("kind", ["nf4", "fp4"])
def test_rows_that_are_not_whole_blocks_and_a_partial_last_block(kind):
    """Blocks run over the flattened tensor (across rows of 640 for blocks of 256); a tensor that is not whole
    blocks ends in a shorter one, divided rather than multiplied by the reciprocal."""
    rng = np.random.default_rng(1)
    for shape in ((8, 640), (7, 100), (3, 33), (1, 1)):
        _check((rng.standard_normal(shape) * 0.02).astype(np.float32), kind, 256)


@settings(max_examples=60, deadline=None)
@given(x=hnp.arrays(np.float32, st.tuples(st.integers(1, 6), st.sampled_from([64, 128, 96])),
                    elements=st.one_of(st.floats(-4, 4, width=32), st.sampled_from([0.0, -0.0, 1e-30, -3.0, 3.0]))),
       kind=st.sampled_from(["nf4", "fp4"]), blocksize=st.sampled_from([32, 64, 128]))
def test_drawn_arrays_equal_bitsandbytes(x, kind, blocksize):
    """Zeros, all-zero blocks, ties at midpoints (values equal to the block's absmax and its fractions), signed
    zeros, subnormal-adjacent magnitudes."""
    _check(x, kind, blocksize)


def test_fake_quantize_and_bits_per_weight():
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((128, 640)) * 0.02).astype(np.float32)
    for name, kind, bs in (("nf4", "nf4", 64), ("fp4", "fp4", 64), ("nf4_g128", "nf4", 128), ("fp4_g32", "fp4", 32)):
        np.testing.assert_array_equal(fake_quantize(x, name), _reference(x, kind, bs)[2])
        # chunks of `row_multiple` rows hold whole blocks, so a tensor quantized chunk by chunk is the same
        m = get_format(name).row_multiple
        chunked = np.concatenate([fake_quantize(x[i:i + m], name) for i in range(0, x.shape[0], m)])
        np.testing.assert_array_equal(chunked, fake_quantize(x, name))
        assert get_format(name).bits_per_weight(x.shape) == 4 + 32 / bs


def test_cpu_dequantizer_indexes_blocks_per_row():
    """bitsandbytes' compiled CPU dequantizer reads a block index per row, so where rows are not whole blocks it
    disagrees with its own quantizer (and with its generic and CUDA paths, which read the flattened blocks the
    quantizer made). normscope follows the quantizer; this test notices when bitsandbytes changes."""
    rng = np.random.default_rng(3)
    whole = (rng.standard_normal((8, 512)) * 0.02).astype(np.float32)
    split = (rng.standard_normal((8, 640)) * 0.02).astype(np.float32)
    for x, agrees in ((whole, True), (split, False)):
        packed, state = bnbf.quantize_4bit(torch.from_numpy(x), blocksize=256, quant_type="nf4")
        cpu = bnbf.dequantize_4bit(packed, state).numpy()
        assert np.array_equal(cpu, fake_quantize(x, "nf4_g256")) is agrees


def test_simulate_nf4_of_the_real_gemma_measures_bitsandbytes_error(gemma_hf):
    """simulate's per-tensor error under nf4/fp4 is the error of bitsandbytes' own dequantized weights; embeddings,
    norms and lm_head stay as stored (bitsandbytes replaces nn.Linear modules only)."""
    import math

    from normscope import simulate
    from normscope.analysis import open_model

    r = simulate(gemma_hf, schemes="nf4,fp4_g128", include=["*layers.3.*"])
    with open_model(gemma_hf) as m:
        for name in ("model.layers.3.mlp.down_proj.weight", "model.layers.3.self_attn.k_proj.weight"):
            w = m.read(m.get(name)).astype(np.float32)
            for scheme, kind, bs in (("nf4", "nf4", 64), ("fp4_g128", "fp4", 128)):
                d = _reference(w, kind, bs)[2].astype(np.float64) - w
                t = r.scheme(scheme).tensor(name)
                assert t.type == scheme
                assert t.error.rmse == pytest.approx(math.sqrt(np.mean(d ** 2)), rel=1e-9)
                assert t.error.max_abs == pytest.approx(np.abs(d).max(), rel=1e-9)
    s = r.scheme("nf4")
    assert all(t.type is None for t in s.tensors if t.role.is_norm)
