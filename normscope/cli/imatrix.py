"""`normscope imatrix FILE` (what an importance matrix holds) and `normscope imatrix A B` (two compared)."""

from __future__ import annotations

import typer

from ..analysis import compare_imatrices, summarize_imatrix
from .options import Arch, ImatrixFiles, ImatrixModel, Outputs, option_groups
from .output import emit


@option_groups
def imatrix(
    files: ImatrixFiles,
    model: ImatrixModel = None,
    arch: Arch = None,
    out: Outputs = Outputs(),
) -> None:
    """Summarise an importance matrix tensor by tensor (coverage of --model, concentration), or compare two."""
    if len(files) > 2:
        raise typer.BadParameter(f"one file to summarise or two to compare, not {len(files)}", param_hint="FILES")
    if len(files) == 2:
        if model is not None:
            raise typer.BadParameter("--model goes with one file (its coverage), not with two", param_hint="--model")
        result = compare_imatrices(files[0], files[1])
    else:
        result = summarize_imatrix(files[0], model, arch=arch)
    emit(result, out)
