"""`forward`'s option families as small frozen records: what text is evaluated, and how sensitivity groups."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import ConfigError
from .sensitivity import SENSITIVITY_BY

__all__ = ["Evaluation", "Sensitivity", "DEFAULT_TOKENS"]

DEFAULT_TOKENS = 256


@dataclass(frozen=True)
class Evaluation:
    """The tokens every variant is scored on.

    Args:
        text: a UTF-8 text file (None: the public-domain sample shipped with normscope).
        tokens: scored tokens (each predicts the next one).
        ctx: tokens per window (None: all in one window, capped by the model's context).
        tokenizer: a tokenizer directory or hub id (None: the base's own).
    """

    text: str | Path | None = None
    tokens: int = DEFAULT_TOKENS
    ctx: int | None = None
    tokenizer: str | Path | None = None

    def __post_init__(self) -> None:
        if self.tokens < 1:
            raise ConfigError(f"--tokens {self.tokens}: need at least 1 token")


@dataclass(frozen=True)
class Sensitivity:
    """Quantize one tensor group at a time and rank the groups by KL.

    Args:
        scheme: the scheme each group is quantized with (None: the first of `schemes`, else Q4_K_M).
        by: "layer-role" (one group per layer and role), "layer" or "role".
        include: globs on tensor names: only these tensors form groups.
    """

    scheme: str | None = None
    by: str = "layer-role"
    include: Sequence[str] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.by not in SENSITIVITY_BY:
            raise ConfigError(f"--sensitivity-by {self.by!r}; valid: {', '.join(SENSITIVITY_BY)}")
        object.__setattr__(self, "include", tuple(self.include))
