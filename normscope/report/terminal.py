"""Terminal rendering with rich, to a string (fixed width and no colour in tests).

Every string shown (header lines, titles, column headers, cells, notes) goes through `fmt.visible` here, the
one place a result's text reaches a terminal, so a name holding escape sequences is shown, never obeyed.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from .fmt import visible
from .tables import Table

__all__ = ["render_tables"]

_SEVERITY = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def _console(width: int, color: bool) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=width, color_system="truecolor" if color else None,
                   force_terminal=color, highlight=False, emoji=False, soft_wrap=False), buf


def _rich_table(t: Table) -> RichTable:
    table = RichTable(title=Text(visible(t.title)), title_justify="left", title_style="bold", header_style="bold",
                      show_edge=False, pad_edge=False)
    for i, h in enumerate(t.headers):
        justify = (t.align[i] if i < len(t.align) else ("l" if i == 0 else "r"))
        # the tensor name is what users grep for: never wrap it, let the numbers shrink instead
        table.add_column(Text(visible(h)), justify="left" if justify == "l" else "right", overflow="fold",
                         no_wrap=(i == 0))
    for row in t.rows:
        table.add_row(*(Text(visible(cell)) for cell in row))  # cells are data (token text, names), never markup
    return table


def render_tables(header: list[str], tables: list[Table], notes: list[tuple[str, str]] = (),
                  width: int = 120, color: bool = False, verdict: Sequence[str] = ()) -> str:
    """The verdict lines, header lines, tables, then (severity, text) notes, as terminal text."""
    console, buf = _console(width, color)
    for line in verdict:
        console.print(visible(line), style="bold", markup=False)
    if verdict:
        console.print()
    for line in header:
        loud = line.isupper() or line.startswith("NON-FINITE")
        # paths and names are not markup
        console.print(visible(line), style="bold red" if loud else None, markup=False)
    for t in tables:
        if t.rows:
            console.print()
            console.print(_rich_table(t))
    for severity, text in notes:
        console.print(visible(f"[{severity}] {text}"), style=_SEVERITY.get(severity), markup=False)
    return buf.getvalue()
