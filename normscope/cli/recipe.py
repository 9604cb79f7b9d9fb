"""`normscope recipe`: per-tensor ggml types under a size budget, as llama-quantize / llm-compressor / quanto lists."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..analysis import recipe as run_recipe
from ..analysis.recipe.command import DEFAULT_TYPES, KEEP_BPW
from ..report.recipe import recipe_args
from .options import Arch, ImatrixOpt, ModelArg, NormConventionOpt, Outputs, Workers, listify, option_groups
from .output import emit, progress_bar


@option_groups
def recipe(
    model: ModelArg = None,
    budget_bpw: Annotated[float | None, typer.Option("--budget-bpw", help="Bits per weight over all parameters "
                                                     "(as simulate reports a plan's bpw).")] = None,
    budget_bytes: Annotated[int | None, typer.Option("--budget-bytes", help="Tensor bytes of the produced "
                                                     "model.")] = None,
    types: Annotated[list[str], typer.Option("--types", help="Candidate ggml types, comma-separated (each "
                     "replaced by llama.cpp's fallback where a row needs one).")] = list(DEFAULT_TYPES),
    reference: Annotated[str, typer.Option("--reference", help="The llama.cpp file type to beat (and to give "
                                           "llama-quantize).")] = "Q4_K_M",
    compare_with: Annotated[list[str], typer.Option("--compare", help="File types summarised from the same "
                                                    "measurements.")] = ["Q4_K_M", "Q5_K_M"],
    sensitivity: Annotated[Path | None, typer.Option("--sensitivity", help="A `normscope forward --sensitivity "
                           "--json` report: minimise the measured KL instead of the norm-aware error.")] = None,
    keep_bpw: Annotated[float, typer.Option("--keep-bpw", help="Linear tensors at this many bits or more go to the "
                                            "llm-compressor ignore / quanto exclude lists.")] = KEEP_BPW,
    args_path: Annotated[Path | None, typer.Option("--args", metavar="PATH", help="Write the llama-quantize "
                         "arguments here, one per line ('-' for stdout).")] = None,
    imatrix: ImatrixOpt = None,
    arch: Arch = None,
    norm_convention: NormConventionOpt = None,
    out: Outputs = Outputs(),
    workers: Workers = Workers(),
) -> None:
    """Choose a ggml type per tensor that minimises the norm-aware error under a size budget."""
    with progress_bar("measuring", not out.quiet) as progress:
        result = run_recipe(model, budget_bpw=budget_bpw, budget_bytes=budget_bytes, types=listify(types),
                            reference=reference, compare=listify(compare_with), sensitivity=sensitivity,
                            keep_bpw=keep_bpw, imatrix=imatrix, arch=arch, norm_convention=norm_convention, progress=progress,
                            **workers.api())
    emit(result, out, extra={args_path: lambda: recipe_args(result)})
