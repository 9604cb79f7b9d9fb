"""The base of every result: `to_dict()` through `to_plain`, and the progress callback type."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from enum import Enum
from typing import Any

__all__ = ["ProgressFn", "to_plain", "ResultBase"]

# Called as progress(description, done, total) with byte counts; total may be 0 when unknown.
ProgressFn = Callable[[str, int, int], None]


def to_plain(value: Any) -> Any:
    """Turn results into JSON-ready builtins (Enums to values, non-finite floats to strings)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, dict):
        return {str(to_plain(k)): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


class ResultBase:
    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)
