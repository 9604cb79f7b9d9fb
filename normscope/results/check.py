"""What `check` returns: each rule as applied, the failures, the measurements a baseline keeps."""

from __future__ import annotations

import dataclasses
from typing import Any

from .base import ResultBase
from .common import SourceInfo

__all__ = ["CHECK_SCHEMA_VERSION", "RuleOutcome", "Failure", "CheckResult"]

CHECK_SCHEMA_VERSION = "1.0"


@dataclasses.dataclass(frozen=True)
class RuleOutcome(ResultBase):
    """One rule as it was applied: its threshold, where that came from, and how many tensors it saw."""

    rule: str
    threshold: Any
    source: str  # "default", "pyproject.toml", the config file, "flag"
    checked: int
    failed: int
    description: str
    checked_by_role: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Failure(ResultBase):
    rule: str
    tensor: str
    role: str
    value: float
    threshold: Any
    message: str
    scheme: str | None = None  # quantization rules: the scheme whose simulation failed


@dataclasses.dataclass(frozen=True)
class CheckResult(ResultBase):
    source: SourceInfo
    passed: bool
    rules: tuple[RuleOutcome, ...]
    failures: tuple[Failure, ...]
    overrides: dict[str, dict[str, Any]]
    baseline: str | None
    measurements: dict[str, Any]  # the analyze (and simulate) documents the rules read: usable as a baseline
    warnings: tuple[str, ...]
    schema: str = "normscope.check"
    schema_version: str = CHECK_SCHEMA_VERSION
