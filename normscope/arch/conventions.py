"""Norm conventions: the one place where a stored norm weight becomes the gain that multiplies x̂.

Gemma's RMSNorm computes x̂ · (1 + w): a stored 1656 is a gain of 1657 and a stored 0 a gain of 1.
Every other module asks this one for the offset instead of writing its own `+ 1`.
"""

from __future__ import annotations

import numpy as np

from ..results import NormConvention

__all__ = ["GAIN_OFFSET", "FORMULA", "HAS_BIAS", "effective_gain", "stored_from_gain", "identity_stored"]

# ref: transformers Gemma3RMSNorm.forward `output * (1.0 + self.weight.float())`;
#      LlamaRMSNorm `self.weight * hidden_states`; NemotronLayerNorm1P `weight + 1`
GAIN_OFFSET: dict[NormConvention, float] = {
    NormConvention.ONE_PLUS_W: 1.0,
    NormConvention.W: 0.0,
    NormConvention.LAYERNORM: 0.0,
    NormConvention.LAYERNORM1P: 1.0,
}

FORMULA: dict[NormConvention, str] = {
    NormConvention.ONE_PLUS_W: "x̂ · (1 + w)",
    NormConvention.W: "x̂ · w",
    NormConvention.LAYERNORM: "x̂ · w + b",
    NormConvention.LAYERNORM1P: "x̂ · (1 + w) + b",
}

HAS_BIAS: dict[NormConvention, bool] = {
    NormConvention.ONE_PLUS_W: False,
    NormConvention.W: False,
    NormConvention.LAYERNORM: True,
    NormConvention.LAYERNORM1P: True,
}


def effective_gain(stored: np.ndarray | float, convention: NormConvention) -> np.ndarray | float:
    """The gain that multiplies x̂, from the stored weight.

    Example:
        >>> effective_gain(1656.0, NormConvention.ONE_PLUS_W)
        1657.0
    """
    return stored + np.float32(GAIN_OFFSET[convention]) if isinstance(stored, np.ndarray) \
        else stored + GAIN_OFFSET[convention]


def stored_from_gain(gain: np.ndarray | float, convention: NormConvention) -> np.ndarray | float:
    """The stored weight that gives `gain` (inverse of `effective_gain`)."""
    return gain - np.float32(GAIN_OFFSET[convention]) if isinstance(gain, np.ndarray) \
        else gain - GAIN_OFFSET[convention]


def identity_stored(convention: NormConvention) -> float:
    """The stored value that makes the norm a plain x̂ (gain 1): 0 for (1 + w), 1 for w."""
    return 1.0 - GAIN_OFFSET[convention]
