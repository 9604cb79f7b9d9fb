"""`forward` (torch extra): base and variants run on the same tokens; KL, top-1 agreement, perplexity,
activation profile and per-group sensitivity."""

from .command import forward, forward_model
from .load import load_causal_lm, load_tokenizer, require_torch
from .options import DEFAULT_TOKENS, Evaluation, Sensitivity
from .text import BUILTIN_TEXT, load_text

__all__ = ["BUILTIN_TEXT", "DEFAULT_TOKENS", "Evaluation", "Sensitivity", "forward", "forward_model", "load_causal_lm",
           "load_text", "load_tokenizer", "require_torch"]
