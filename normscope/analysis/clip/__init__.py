"""`clip`: percentile clipping written as a new verified checkpoint; `clip_sweep`: what clipping does to the
error of a quantized model at each percentile."""

from .command import clip, clip_model
from .sweep import clip_sweep, clip_sweep_model

__all__ = ["clip", "clip_model", "clip_sweep", "clip_sweep_model"]
