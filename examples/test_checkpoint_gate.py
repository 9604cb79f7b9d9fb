"""A checkpoint gate as a pytest test: `pytest examples/test_checkpoint_gate.py`."""

import pytest

from normscope.testing import assert_checkpoint

MODEL = "example:gemma3-270m"  # your checkpoint: a directory, .safetensors, .gguf or hub id


def test_norm_gains_stay_in_the_trained_range():
    # Gemma 3 270M's largest post-FFN gain is 1657 (stored 1656, RMSNorm scales by 1 + w): that is the
    # trained model, so the gate sits above it and catches a fine-tune that blows it up further.
    assert_checkpoint(MODEL, max_effective_gamma=2000, max_kurtosis=200, use_pyproject=False)


def test_the_gate_names_the_offending_tensor():
    with pytest.raises(AssertionError, match="model.layers.16.post_feedforward_layernorm.weight"):
        assert_checkpoint(MODEL, max_effective_gamma=100, use_pyproject=False)
