"""gpt-oss MXFP4 expert weights read as transformers dequantizes them (`convert_moe_packed_tensors`)."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the transformers reference needs the torch extra (test extra)")
pytest.importorskip("transformers")

from safetensors.numpy import save_file  # noqa: E402

from helpers import run_cli  # noqa: E402
from normscope.errors import CheckpointError  # noqa: E402
from normscope.io import open_path  # noqa: E402

E, HIDDEN, INTER = 4, 96, 64


def _write(tmp_path, seed=0, flat_scales=False):
    """A gpt-oss-layout layer: gate_up and down experts in MXFP4, their biases, a norm (random codes; exponents
    around 2^-6 with a few extremes)."""
    rng = np.random.default_rng(seed)
    t = {}
    for proj, out, inp in (("gate_up_proj", 2 * INTER, HIDDEN), ("down_proj", HIDDEN, INTER)):
        p = f"model.layers.0.mlp.experts.{proj}"
        t[p + "_blocks"] = rng.integers(0, 256, (E, out, inp // 32, 16), dtype=np.uint8)
        scales = rng.integers(115, 128, (E, out, inp // 32), dtype=np.uint8)
        scales[0, 0, 0], scales[1, 1, 0] = 0, 140  # 2^-127 (subnormal in bf16) and 2^13
        t[p + "_scales"] = scales.reshape(-1) if flat_scales else scales
        t[p + "_bias"] = np.zeros((E, out), np.float32)
    t["model.layers.0.input_layernorm.weight"] = np.ones(HIDDEN, np.float32)
    d = tmp_path / "gpt-oss-tiny"
    d.mkdir()
    save_file(t, d / "model.safetensors", metadata={"format": "pt"})
    (d / "config.json").write_text(json.dumps({
        "architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss", "torch_dtype": "bfloat16",
        "num_hidden_layers": 1, "hidden_size": HIDDEN, "intermediate_size": INTER, "num_local_experts": E,
        "quantization_config": {"quant_method": "mxfp4", "modules_to_not_convert": ["model.layers.*.self_attn"]}}))
    return d, t


def test_experts_equal_transformers_convert_moe_packed_tensors(tmp_path, capsys):
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors

    d, t = _write(tmp_path)
    with open_path(d) as ckpt:
        assert ckpt.metadata.get("pack") == "mxfp4"
        for proj, shape in (("gate_up_proj", (E, HIDDEN, 2 * INTER)), ("down_proj", (E, INTER, HIDDEN))):
            p = f"model.layers.0.mlp.experts.{proj}"
            entry = ckpt.entries[p]
            assert entry.shape == shape and entry.dtype == "MXFP4_e8m0_g32"
            ref = convert_moe_packed_tensors(torch.from_numpy(t[p + "_blocks"]), torch.from_numpy(t[p + "_scales"]),
                                             dtype=torch.bfloat16).float().numpy()
            np.testing.assert_array_equal(ckpt.read(entry), ref, err_msg=proj)
            # chunks that cut experts and 32-value blocks anywhere read the same values
            rows = np.concatenate([b for _, b in ckpt.iter_rows(entry, max_elements=37 * entry.row_len)])
            np.testing.assert_array_equal(rows.reshape(shape), ref)
        assert not any(n.endswith(("_blocks", "_scales")) for n in ckpt.entries)
        assert ckpt.entries["model.layers.0.mlp.experts.gate_up_proj_bias"].dtype == "F32"
    code, out, _ = run_cli(["analyze", str(d), "--top", "2"], capsys)
    assert code == 0 and "MXFP4_e8m0_g32" in out


def test_mismatched_scales_are_one_line(tmp_path, capsys):
    d, _ = _write(tmp_path, flat_scales=True)
    with pytest.raises(CheckpointError, match=r"_scales': expected U8 \[4, (96, 2|128, 3)\] .*found U8 \[(768|1536)\]"):
        open_path(d)
    code, _, err = run_cli(["analyze", str(d)], capsys)
    assert code == 2 and err.count("\n") == 1
