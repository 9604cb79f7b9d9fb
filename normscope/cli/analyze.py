"""`normscope analyze`: norm gains in their convention, outliers, plain-words explanations."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..analysis import analyze as run_analyze
from .options import Arch, ModelArg, NormConventionOpt, Outputs, Selection, Workers, option_groups
from .output import emit, progress_bar


@option_groups
def analyze(
    model: ModelArg = None,
    arch: Arch = None,
    adapter: Annotated[Path | None, typer.Option("--adapter", metavar="DIR", help="A PEFT LoRA adapter directory: "
                       "analyze the base MODEL with the adapter merged (chunk by chunk, nothing written).")] = None,
    norm_convention: NormConventionOpt = None,
    select: Selection = Selection(),
    outlier_sigma: Annotated[float, typer.Option("--outlier-sigma", min=0.0,
                                                 help="k in the count |w - mean| > k·std.")] = 6.0,
    explain_above: Annotated[float, typer.Option("--explain-above",
                                                 help="Explain norms whose max |gain| exceeds this.")] = 100.0,
    out: Outputs = Outputs(),
    workers: Workers = Workers(),
) -> None:
    """Profile every tensor: norm gains as the model computes them, weight outliers, NaN/Inf."""
    with progress_bar("analyzing", not out.quiet) as progress:
        result = run_analyze(model, arch=arch, norm_convention=norm_convention, adapter=adapter,
                             outlier_sigma=outlier_sigma, explain_above=explain_above, progress=progress,
                             **select.api(), **workers.api())
    emit(result, out)
