"""Token-level comparison of a variant with the base on the same windows, as llama.cpp's
`llama-perplexity --kl-divergence` reports it.

Per scored position i (the prediction of token t_{i+1} from the tokens up to i):
- KL_i = Σ_v P(v) (ln P(v) − ln Q(v)), P the base's and Q the variant's softmax (natural log, nats);
- top-1 agreement: argmax P = argmax Q;
- NLL_i = −ln Q(t_{i+1}) (perplexity = exp(mean NLL));
- Δp_i = Q(t_{i+1}) − P(t_{i+1}), the change in the probability of the right token (llama.cpp's "RMS Δp").
The base's raw float32 logits are kept and both log-softmaxes are taken in float64 a few positions at a
time, so a variant equal to the base gives KL exactly 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...results import KLStats

__all__ = ["ROWS", "Scores", "score_base", "score_variant", "kl_stats"]

ROWS = 16  # positions per float64 log-softmax (16 × 262,144 × 8 bytes = 32 MiB per array for Gemma)


@dataclass
class Scores:
    """Per-position arrays, concatenated over windows."""

    kl: list[np.ndarray] = field(default_factory=list)
    agree: list[np.ndarray] = field(default_factory=list)
    nll: list[np.ndarray] = field(default_factory=list)
    p_target: list[np.ndarray] = field(default_factory=list)
    top1: list[np.ndarray] = field(default_factory=list)

    def cat(self, name: str) -> np.ndarray:
        parts = getattr(self, name)
        return np.concatenate(parts) if parts else np.zeros(0)


def score_base(logits: Any, targets: Any, scores: Scores) -> None:
    """Add the base's NLL, P(target) and top-1 of one window (`logits`: (n, vocab) float32)."""
    import torch

    for r in range(0, logits.shape[0], ROWS):
        lp = torch.log_softmax(logits[r:r + ROWS].double(), dim=-1)
        t = targets[r:r + ROWS]
        lpt = lp.gather(1, t[:, None])[:, 0]
        scores.nll.append((-lpt).numpy())
        scores.p_target.append(lpt.exp().numpy())
        scores.top1.append(lp.argmax(dim=-1).numpy())


def score_variant(base_logits: Any, logits: Any, targets: Any, scores: Scores) -> None:
    """Add KL(P_base ‖ P_variant), top-1 agreement, NLL and P(target) of one window."""
    import torch

    if logits.shape != base_logits.shape:
        raise ValueError(f"variant logits {tuple(logits.shape)} do not match the base's {tuple(base_logits.shape)}: "
                         "the variant has another vocabulary")
    for r in range(0, logits.shape[0], ROWS):
        lp = torch.log_softmax(base_logits[r:r + ROWS].double(), dim=-1)
        lq = torch.log_softmax(logits[r:r + ROWS].double(), dim=-1)
        kl = (lp.exp() * (lp - lq)).sum(dim=-1)
        t = targets[r:r + ROWS]
        lqt = lq.gather(1, t[:, None])[:, 0]
        scores.kl.append(kl.numpy())
        scores.agree.append((lp.argmax(dim=-1) == lq.argmax(dim=-1)).numpy())
        scores.nll.append((-lqt).numpy())
        scores.p_target.append(lqt.exp().numpy())


def kl_stats(kl: np.ndarray) -> KLStats:
    """Mean, median, p90, p99, p99.9 (numpy's linear interpolation) and max of per-position KL."""
    if not kl.size:
        nan = math.nan
        return KLStats(0, nan, nan, nan, nan, nan, nan)
    q = np.percentile(kl, [50.0, 90.0, 99.0, 99.9])
    return KLStats(n=int(kl.size), mean=float(kl.mean()), median=float(q[0]), p90=float(q[1]), p99=float(q[2]),
                   p999=float(q[3]), max=float(kl.max()))
