"""`forward` (torch extra): base and variants run on the same tokens; KL, top-1 agreement, perplexity,
activation profile and per-group sensitivity."""

from .command import forward, forward_model
from .options import DEFAULT_TOKENS, Evaluation, Sensitivity

__all__ = ["DEFAULT_TOKENS", "Evaluation", "Sensitivity", "forward", "forward_model"]
