"""bitsandbytes 4-bit checkpoints, built by transformers + bitsandbytes themselves on CPU, read as the weights
bitsandbytes dequantizes them to (nf4/fp4, with and without double quantization)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the bitsandbytes reference needs the torch extra (test extra)")
bnb = pytest.importorskip("bitsandbytes", reason="bitsandbytes is the 4-bit pack reference (test extra)")
transformers = pytest.importorskip("transformers")

from helpers import LLAMA_CONFIG, llama_tensors, run_cli, write_model  # noqa: E402
from normscope.errors import CheckpointError  # noqa: E402
from normscope.io import open_path  # noqa: E402

CONFIG = {**LLAMA_CONFIG, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
          "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": 256, "head_dim": 64,
          "tie_word_embeddings": False}


def _pack(tmp_path: Path, quant_type: str, double: bool):
    """A tiny Llama quantized to 4 bits by transformers' own bitsandbytes integration, saved, and the loaded
    quantized model (whose modules dequantize as bitsandbytes does)."""
    src = write_model(tmp_path / "src", llama_tensors(hidden=128, ffn=256), CONFIG, "BF16")
    q = transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_type,
                                        bnb_4bit_use_double_quant=double, bnb_4bit_compute_dtype=torch.bfloat16)
    model = transformers.AutoModelForCausalLM.from_pretrained(src, quantization_config=q, device_map="cpu",
                                                              dtype=torch.bfloat16)
    out = tmp_path / f"{quant_type}-{int(double)}"
    model.save_pretrained(out)
    return out, model


def _reference(module) -> np.ndarray:
    """bitsandbytes' dequantized weight (its generic dequantizer: the flattened blocks the quantizer made)."""
    from bitsandbytes.backends.default.ops import _dequantize_4bit_compute
    from bitsandbytes.functional import dequantize_blockwise

    w, st = module.weight, module.weight.quant_state
    absmax = st.absmax
    if st.nested:
        absmax = dequantize_blockwise(st.absmax, st.state2) + st.offset
    return _dequantize_4bit_compute(w.data.reshape(-1), absmax.float(), st.code, st.blocksize, st.shape,
                                    st.dtype).float().numpy()


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("double", [False, True], ids=["plain", "double-quant"])
def test_bnb_4bit_equals_bitsandbytes_dequantize(tmp_path, quant_type, double):
    out, model = _pack(tmp_path, quant_type, double)
    with open_path(out) as ckpt:
        assert ckpt.metadata.get("pack") == "bitsandbytes"
        for name, module in model.named_modules():
            if isinstance(module, bnb.nn.Linear4bit):
                entry = ckpt.entries[f"{name}.weight"]
                assert entry.shape == tuple(module.weight.quant_state.shape)
                assert entry.dtype == f"{quant_type.upper()}_b64" + ("_dq" if double else "")
                np.testing.assert_array_equal(ckpt.read(entry), _reference(module), err_msg=name)
                # a row block reads only its codes and absmax, and equals the whole read
                rows = next(ckpt.iter_rows(entry, max_elements=3 * entry.row_len))[1]
                np.testing.assert_array_equal(rows, _reference(module)[:3])
        assert not any(".absmax" in n or "quant_state" in n or "quant_map" in n for n in ckpt.entries)
        assert ckpt.entries["model.norm.weight"].dtype == "BF16"


def test_analyze_reads_a_bnb_pack_and_a_corrupt_state_is_one_line(tmp_path, capsys):
    out, _ = _pack(tmp_path, "nf4", True)
    code, text, _ = run_cli(["analyze", str(out), "--top", "2"], capsys)
    assert code == 0 and "NF4_b64_dq" in text
    # a quant state that says another shape than the codes hold
    from safetensors.numpy import load_file, save_file

    tensors = load_file(out / "model.safetensors")
    key = "model.layers.0.mlp.up_proj.weight.quant_state.bitsandbytes__nf4"
    state = json.loads(bytes(tensors[key]).decode())
    state["shape"] = [512, 128]
    tensors[key] = np.frombuffer(json.dumps(state).encode(), np.uint8).copy()
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="model.layers.0.mlp.up_proj.weight.*expected U8 with 32768 values"):
        open_path(out)
    code, _, err = run_cli(["analyze", str(out)], capsys)
    assert code == 2 and err.count("\n") == 1
