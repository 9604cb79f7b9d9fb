"""What every command does around the library call: a progress bar while it runs, then its reports.

`emit` writes the files asked for (JSON, Markdown, HTML and any extra renderers, atomically) and prints
the terminal summary unless a report went to stdout or --quiet; every result type renders through the
report registries, so no command formats anything itself.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from ..io import write_text_atomic
from ..report import markdown_report, report_html, terminal_report, to_json
from ..report.fmt import visible
from .options import Outputs

__all__ = ["emit", "progress_bar", "stdout_console", "write_outputs"]


def stdout_console() -> Console:
    """The report console: the terminal's width, $COLUMNS, or 140 columns when writing to a file or pipe."""
    console = Console(highlight=False, soft_wrap=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(highlight=False, soft_wrap=False, width=140)
    return console


@contextlib.contextmanager
def progress_bar(description: str, enabled: bool = True) -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress bar on stderr (shown only on a terminal), as a `progress(desc, done, total)` callback."""
    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield lambda *_: None
        return
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                  # the item is a tensor or file name: shown (controls made visible), never read as markup
                  TextColumn("{task.fields[item]}", style="dim", markup=False), console=console,
                  transient=True) as bar:
        task = bar.add_task(description, total=None, item="")

        def update(item: str, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total or None, item=visible(item)[-60:])

        yield update


def write_outputs(outputs: dict[Path | None, Callable[[], str]]) -> bool:
    """Write each requested output (path -> renderer); returns True when one went to stdout."""
    to_stdout = False
    for path, render in outputs.items():
        if path is None:
            continue
        if str(path) == "-":
            sys.stdout.write(render())
            to_stdout = True
        else:
            write_text_atomic(path, render())
    return to_stdout


def emit(result: Any, out: Outputs, extra: dict[Path | None, Callable[[], str]] | None = None,
         annotations: str = "") -> None:
    """Write the reports `out` asks for, then print the terminal summary (unless quiet or a report went to stdout).

    `extra` maps more paths to renderers (check's JUnit XML and baseline, recipe's llama-quantize arguments);
    `annotations` (GitHub's `::error` lines) go to stdout between the files and the summary.
    """
    outputs: dict[Path | None, Callable[[], str]] = {
        out.json_path: lambda: to_json(result), out.md_path: lambda: markdown_report(result, out.top),
        out.html_path: lambda: report_html(result)}
    for path, render in (extra or {}).items():
        if path is not None:
            outputs[path] = render
    to_stdout = write_outputs(outputs)
    sys.stdout.write(annotations)
    if to_stdout or out.quiet:
        return
    console = stdout_console()
    sys.stdout.write(terminal_report(result, out.top, console.width, console.is_terminal))
