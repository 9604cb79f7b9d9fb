"""JSON Schemas of the reports, one per command, shipped with the package (documented in docs/json.md)."""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

__all__ = ["schema"]


def schema(command: str) -> dict[str, Any]:
    """The JSON Schema of `command`'s report, e.g. schema("analyze")."""
    return json.loads(files(__package__).joinpath(f"{command}.schema.json").read_text(encoding="utf-8"))
