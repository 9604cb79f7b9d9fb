"""nvfp4_ct against compressed-tensors itself: its global scale, FP8 group scales and E2M1 rounding
(`generate_gparam`, `calculate_qparams`, `fake_quantize` with strategy tensor_group) on float32 weights, value for
value, on real Gemma and MiniLM rows and on drawn arrays."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

torch = pytest.importorskip("torch", reason="the compressed-tensors reference needs the torch extra (test extra)")
ct = pytest.importorskip("compressed_tensors", reason="compressed-tensors is the NVFP4 reference (test extra)")

from normscope.errors import ConfigError  # noqa: E402
from normscope.quant import fake_quantize, get_format  # noqa: E402


def _reference(x: np.ndarray) -> np.ndarray:
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.lifecycle.forward import fake_quantize as ct_fake_quantize
    from compressed_tensors.quantization.utils.helpers import calculate_qparams, generate_gparam

    args = QuantizationArgs(num_bits=4, type="float", strategy="tensor_group", group_size=16, symmetric=True,
                            dynamic=False, scale_dtype=torch.float8_e4m3fn, zp_dtype=torch.float8_e4m3fn)
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    gs = generate_gparam(t.min(), t.max())
    groups = t.reshape(t.shape[0], -1, 16)
    scale, zp = calculate_qparams(groups.amin(-1), groups.amax(-1), args, global_scale=gs)
    return ct_fake_quantize(t, scale, zp, args, global_scale=gs).numpy()


def test_real_weights_equal_compressed_tensors(gemma_rows, minilm_rows):
    for name, rows in {**gemma_rows, **minilm_rows}.items():
        x = np.ascontiguousarray(rows[:32])
        np.testing.assert_array_equal(fake_quantize(x, "nvfp4_ct"), _reference(x), err_msg=name)


@settings(max_examples=80, deadline=None)
@given(x=hnp.arrays(np.float32, st.tuples(st.integers(1, 4), st.sampled_from([16, 32, 64])),
                    elements=st.one_of(st.floats(-8, 8, width=32), st.sampled_from([0.0, -0.0, 0.25, 0.75, 2.5, 6.0,
                                                                                    -5.0, 1e-30]))))
def test_drawn_arrays_equal_compressed_tensors(x):
    """Zero groups (fp8's eps as their scale), values on E2M1's thresholds, tiny and signed-zero values."""
    np.testing.assert_array_equal(fake_quantize(x, "nvfp4_ct"), _reference(x))


def test_chunks_use_the_tensors_global_scale_and_bits_per_weight():
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((64, 256)) * 0.02).astype(np.float32)
    x[40, 7] = 0.9  # the tensor's max lies in a later chunk
    amax = float(np.abs(x).max())
    chunked = np.concatenate([fake_quantize(x[i:i + 16], "nvfp4_ct", tensor_absmax=amax) for i in range(0, 64, 16)])
    np.testing.assert_array_equal(chunked, _reference(x))
    assert get_format("nvfp4_ct").bits_per_weight(x.shape) == 4.5 + 32 / x.size
    with pytest.raises(ConfigError, match="groups of 16"):
        fake_quantize(np.zeros((2, 40), np.float32), "nvfp4_ct")
    # ggml's NVFP4 is another format: no global scale, another scale encoding
    assert not np.array_equal(fake_quantize(x, "NVFP4"), fake_quantize(x, "nvfp4_ct"))


def test_simulate_measures_the_compressed_tensors_error(gemma_hf):
    import math

    from normscope import simulate
    from normscope.analysis import open_model

    r = simulate(gemma_hf, schemes="nvfp4_ct", include=["*layers.7.*"])
    with open_model(gemma_hf) as m:
        for name in ("model.layers.7.mlp.down_proj.weight", "model.layers.7.self_attn.q_proj.weight"):
            w = m.read(m.get(name)).astype(np.float32)
            d = _reference(w).astype(np.float64) - w
            t = r.scheme("nvfp4_ct").tensor(name)
            assert t.type == "nvfp4_ct" and t.error.rmse == pytest.approx(math.sqrt(np.mean(d ** 2)), rel=1e-9)
