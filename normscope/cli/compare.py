"""`normscope compare`: base, teacher, student and quantized variants side by side, across formats."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ..analysis import compare as run_compare
from ..errors import ConfigError
from ..report.fmt import visible
from .options import Arch, NormConventionOpt, Outputs, Selection, Workers, listify, option_groups
from .output import emit, progress_bar


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


@option_groups
def compare(
    models: Annotated[list[str], typer.Argument(help="Two or more checkpoints (HF dir, .safetensors, .gguf, hub id, "
                                                "quantized pack); each is compared with the first.")],
    labels: Annotated[str | None, typer.Option("--labels", help="One name per model, comma-separated "
                                               "(e.g. base,teacher,student,q4).")] = None,
    adapter: Annotated[list[str] | None, typer.Option("--adapter", metavar="[N=]DIR", help="A PEFT LoRA adapter "
                       "merged into model N (1-based; default the last) on the fly.")] = None,
    select: Selection = Selection(),
    arch: Arch = None,
    norm_convention: NormConventionOpt = None,
    out: Outputs = Outputs(),
    workers: Workers = Workers(),
) -> None:
    """Compare checkpoints tensor by tensor (same shapes) and by role and depth (any shapes).

    A variant that cannot be read is named in one line on stderr and left out; the report of the others is
    still written, and the exit code is 2.
    """
    if len(models) < 2:
        raise ConfigError(f"compare needs at least two models, got {len(models)}")
    with progress_bar("comparing", not out.quiet) as progress:
        result = run_compare(models, labels=listify([labels]) if labels else None,
                             adapters=_adapters(adapter, len(models)), arch=arch, norm_convention=norm_convention,
                             progress=progress, **select.api(), **workers.api())
    emit(result, out)
    for f in result.failed:
        sys.stderr.write(f"normscope: error: {visible(f'{f.label}: {f.error}')}\n")
    if result.failed:
        raise typer.Exit(2)
