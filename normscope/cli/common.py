"""What every command shares: the progress bar, output files, option types, the terminal."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from ..io import write_text_atomic

__all__ = ["stdout_console", "progress_bar", "write_outputs", "print_report", "JsonOpt", "MdOpt", "HtmlOpt",
           "ArchOpt", "QuietOpt", "TopOpt", "JobsOpt", "ExecutorOpt", "RayAddressOpt", "use_ray_address"]

JsonOpt = typer.Option(None, "--json", help="Write the JSON report here ('-' for stdout).", metavar="PATH")
MdOpt = typer.Option(None, "--md", help="Write the Markdown report here ('-' for stdout).", metavar="PATH")
HtmlOpt = typer.Option(None, "--html", help="Write a self-contained HTML report here ('-' for stdout).",
                       metavar="PATH")
ArchOpt = typer.Option(None, "--arch", help="Architecture to assume instead of detecting it (e.g. gemma3, llama).")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No terminal summary; only the files asked for.")
TopOpt = typer.Option(10, "--top", min=1, help="Rows per table in the terminal and Markdown summaries.")
JobsOpt = typer.Option(None, "--jobs", "-j", min=0, help="Workers (1: none; default and 0: the cores "
                       "available). Results are the same whatever the number.")
ExecutorOpt = typer.Option("thread", "--executor", help="Run the per-tensor work in threads of this process, in "
                           "worker processes, or as tasks on Ray (extra `ray`; the cluster at --ray-address or "
                           "RAY_ADDRESS, else a local one).")
RayAddressOpt = typer.Option(None, "--ray-address", metavar="ADDR", help="Ray cluster to connect to with "
                             "--executor ray (e.g. ray://head:10001); default: RAY_ADDRESS, else a local Ray.")


def use_ray_address(address: str | None) -> None:
    """--ray-address is handed to Ray the way Ray reads it, as RAY_ADDRESS, for ray.init in the library."""
    if address:
        os.environ["RAY_ADDRESS"] = address


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
                  TextColumn("{task.fields[item]}", style="dim"), console=console, transient=True) as bar:
        task = bar.add_task(description, total=None, item="")

        def update(item: str, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total or None, item=item[-60:])

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


def print_report(render: Callable[[int, bool], str], quiet: bool) -> None:
    """Print a terminal report rendered at the console's width, in colour on a terminal."""
    if quiet:
        return
    console = stdout_console()
    text = render(console.width, console.is_terminal)
    sys.stdout.write(text)


def listify(values: Any) -> list[str]:
    return [v for item in values or [] for v in str(item).split(",") if v]
