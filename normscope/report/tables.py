"""A table of strings: what every command's terminal and Markdown renderers share, so they never disagree."""

from __future__ import annotations

from dataclasses import dataclass


__all__ = ["Table"]


@dataclass(frozen=True)
class Table:
    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    align: str = ""  # one char per column: "l" or "r"; default left for the first, right after
