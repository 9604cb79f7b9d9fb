"""`normscope compare`: base, teacher, student and quantized variants side by side, across formats."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from ..analysis.compare import compare as run_compare
from ..analysis.parallel import Executor
from ..errors import ConfigError
from ..report import report_html, to_json
from ..report.compare import compare_markdown, compare_terminal
from .common import (ArchOpt, ExecutorOpt, HtmlOpt, JobsOpt, JsonOpt, MdOpt, QuietOpt, RayAddressOpt, TopOpt, listify,
                     print_report, progress_bar, use_ray_address, write_outputs)


def _adapters(values: list[str] | None, n: int) -> dict[int, str]:
    """`--adapter DIR` (the last model) or `--adapter N=DIR` (the N-th model, 1-based)."""
    out: dict[int, str] = {}
    for value in values or []:
        index, sep, path = value.partition("=")
        if sep and index.strip().isdigit():
            out[int(index) - 1] = path
        else:
            out[n - 1] = value
    return out


def compare(
    models: list[str] = typer.Argument(..., help="Two or more checkpoints (HF dir, .safetensors, .gguf, hub id, "
                                       "quantized pack); each is compared with the first."),
    labels: str = typer.Option(None, "--labels", help="One name per model, comma-separated "
                               "(e.g. base,teacher,student,q4)."),
    adapter: list[str] = typer.Option(None, "--adapter", metavar="[N=]DIR", help="A PEFT LoRA adapter merged into "
                                      "model N (1-based; default the last) on the fly."),
    include: list[str] = typer.Option(None, "--include", help="Only tensors matching these globs."),
    exclude: list[str] = typer.Option(None, "--exclude", help="Skip tensors matching these globs."),
    arch: str = ArchOpt,
    top: int = TopOpt,
    json_path: Path = JsonOpt,
    md_path: Path = MdOpt,
    html_path: Path = HtmlOpt,
    quiet: bool = QuietOpt,
    jobs: int = JobsOpt,
    executor: Executor = ExecutorOpt,
    ray_address: str = RayAddressOpt,
) -> None:
    """Compare checkpoints tensor by tensor (same shapes) and by role and depth (any shapes).

    A variant that cannot be read is named in one line on stderr and left out; the report of the others is
    still written, and the exit code is 2.
    """
    if len(models) < 2:
        raise ConfigError(f"compare needs at least two models, got {len(models)}")
    use_ray_address(ray_address)
    with progress_bar("comparing", not quiet) as progress:
        result = run_compare(models, labels=listify([labels]) if labels else None,
                             adapters=_adapters(adapter, len(models)), arch=arch, include=listify(include),
                             exclude=listify(exclude), progress=progress, jobs=jobs, executor=executor.value)
    to_stdout = write_outputs({json_path: lambda: to_json(result), md_path: lambda: compare_markdown(result, top),
                               html_path: lambda: report_html(result)})
    print_report(lambda width, color: compare_terminal(result, top, width, color), quiet or to_stdout)
    for f in result.failed:
        sys.stderr.write(f"normscope: error: {f.label}: {f.error}\n")
    if result.failed:
        raise typer.Exit(2)
