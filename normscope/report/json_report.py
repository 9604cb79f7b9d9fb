"""JSON: the result's `to_dict()`, stable key order, standard JSON (no NaN literals)."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["to_json"]


def to_json(result: Any) -> str:
    """The JSON document of any result object (`schema` and `schema_version` name its format)."""
    return json.dumps(result.to_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
