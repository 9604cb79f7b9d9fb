"""Declarative architecture specs: tensor roles, norm conventions, HF <-> GGUF names."""

from .conventions import FORMULA, GAIN_OFFSET, effective_gain, identity_stored, stored_from_gain
from .feeds import NormFeed, norm_feeds
from .detect import Detected, config_value, detect, get_spec
from .names import gguf_to_hf, hf_to_gguf
from .registry import HEURISTIC, SPECS
from .spec import ArchSpec, Classified, Feed

__all__ = [
    "ArchSpec", "Classified", "Detected", "Feed", "NormFeed", "norm_feeds", "FORMULA", "GAIN_OFFSET", "HEURISTIC",
    "SPECS",
    "config_value", "detect", "effective_gain", "get_spec", "gguf_to_hf", "hf_to_gguf",
    "identity_stored", "stored_from_gain",
]
