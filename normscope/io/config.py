"""Reading TOML configuration: `[tool.normscope.<section>]` of the nearest pyproject.toml, or a file."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["find_pyproject", "load_toml", "tool_section"]


def find_pyproject(start: Path) -> Path | None:
    """The nearest pyproject.toml in `start` or its parents, or None."""
    for d in (start.resolve(), *start.resolve().parents):
        candidate = d / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def load_toml(path: Path) -> dict[str, Any]:
    """A TOML file as a dict.

    Raises:
        ConfigError: missing file or invalid TOML, naming the file and the position.
    """
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: malformed TOML ({e})") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None


def tool_section(data: dict[str, Any], *keys: str, where: Path) -> dict[str, Any]:
    """`data["tool"]["normscope"][keys…]`, or {} when absent; a non-table there is an error."""
    node: Any = data.get("tool", {}).get("normscope", {})
    for key in keys:
        if not isinstance(node, dict):
            break
        node = node.get(key, {})
    if not isinstance(node, dict):
        raise ConfigError(f"{where}: [tool.normscope.{'.'.join(keys)}] must be a table")
    return node
