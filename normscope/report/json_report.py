"""JSON: the result's `to_dict()`, stable key order, standard JSON (no NaN literals)."""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["to_json"]

# JSON escapes C0 controls itself; DEL and the C1 controls (U+009B is a one-character CSI) it writes as they are,
# and `--json -` goes to a terminal: they are written as \u escapes, which decode to the same exact names
_UNESCAPED_CONTROLS = re.compile("[\x7f-\x9f]")


def to_json(result: Any) -> str:
    """The JSON document of any result object (`schema` and `schema_version` name its format)."""
    text = json.dumps(result.to_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    return _UNESCAPED_CONTROLS.sub(lambda m: f"\\u{ord(m[0]):04x}", text)
