"""int8/int4/int2 equal optimum-quanto's own quantizer on the same float32 tensors."""

from __future__ import annotations

import numpy as np
import pytest

from normscope.quant import fake_quantize
from normscope.quant.integer import quanto_group_size

torch = pytest.importorskip("torch")
quanto = pytest.importorskip("optimum.quanto")


def quanto_weights(w: np.ndarray, qtype) -> np.ndarray:
    lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
    lin.weight.data = torch.from_numpy(w.copy())
    model = torch.nn.Sequential(lin)
    quanto.quantize(model, weights=qtype)
    quanto.freeze(model)
    return model[0].weight.dequantize().float().detach().numpy()


@pytest.mark.parametrize("shape", [(64, 640), (32, 2048), (48, 100), (16, 1024), (8, 160)],
                         ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", ["int8", "int4", "int2"])
def test_equal_to_quanto(shape, name):
    rng = np.random.default_rng(0)
    w = (rng.standard_t(3, shape) * 0.02).astype(np.float32)
    w[0] = 0.5  # a constant row
    qtype = {"int8": quanto.qint8, "int4": quanto.qint4, "int2": quanto.qint2}[name]
    np.testing.assert_array_equal(fake_quantize(w, name), quanto_weights(w, qtype))


def test_real_gemma_tensor(gemma_hf):
    from safetensors.numpy import load_file  # noqa: F401  (bf16 needs torch's loader)
    from safetensors.torch import load_file as load_torch

    shard = sorted(gemma_hf.glob("model-00002-*.safetensors"))[0]
    w = load_torch(str(shard))["model.layers.3.mlp.down_proj.weight"].float().numpy()
    for name, qtype in (("int8", quanto.qint8), ("int4", quanto.qint4)):
        np.testing.assert_array_equal(fake_quantize(w, name), quanto_weights(w, qtype))


@pytest.mark.parametrize("row, group", [(640, 128), (2048, 128), (1000, None), (96, None), (160, 32), (192, 96),
                                        (320, 64), (1120, 32)])
def test_group_size_rule(row, group):
    assert quanto_group_size(row) == group
