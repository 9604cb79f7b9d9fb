"""`normscope simulate` and `normscope schemes`: what Q4_K_M / int4 / int8 … would do to each tensor."""

from __future__ import annotations

import typer

from ..analysis import simulate as run_simulate
from ..quant import parse_schemes, parse_tensor_types, scheme_catalog
from .options import (Arch, ImatrixOpt, IncludeLmHead, ModelArg, NormConventionOpt, Outputs, Schemes, Selection,
                      TensorTypes, Workers, listify, option_groups)
from .output import emit, progress_bar


@option_groups
def simulate(
    model: ModelArg = None,
    scheme: Schemes = None,
    tensor_type: TensorTypes = None,
    imatrix: ImatrixOpt = None,
    include_lm_head: IncludeLmHead = False,
    select: Selection = Selection(),
    arch: Arch = None,
    norm_convention: NormConventionOpt = None,
    out: Outputs = Outputs(),
    workers: Workers = Workers(),
) -> None:
    """Simulate quantization schemes tensor by tensor: type plan, size, error, norm-aware error, block health."""
    schemes = parse_schemes(listify(scheme) or ["Q4_K_M"])
    overrides = parse_tensor_types(tensor_type or [])
    with progress_bar("simulating", not out.quiet) as progress:
        result = run_simulate(model, schemes=schemes, arch=arch, norm_convention=norm_convention,
                              include_lm_head=include_lm_head, tensor_types=overrides, imatrix=imatrix,
                              progress=progress,
                              **select.api(), **workers.api())
    emit(result, out)


def schemes() -> None:
    """List the quantization schemes simulate, check, clip and forward accept, and every ggml type."""
    for i, (section, rows) in enumerate(scheme_catalog().items()):
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        typer.echo(("\n" if i else "") + section)
        for row in rows:
            typer.echo("  " + "  ".join(f"{v:<{w}}" for v, w in zip(row, widths)).rstrip())
