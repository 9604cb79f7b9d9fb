"""`normscope clip`: percentile clipping written as a verified checkpoint, a dry run, or a clip-vs-quantize sweep."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..analysis import clip as run_clip
from ..analysis import clip_sweep
from ..analysis.clip.sweep import parse_percentiles
from ..analysis.engine.superweight import SUPER_WEIGHT_Z
from ..errors import ConfigError
from ..quant import parse_schemes
from ..results import ClipGranularity, ClipScope
from .options import (Arch, IncludeLmHead, NormConventionOpt, Outputs, Schemes, Selection, Workers, listify,
                      option_groups)
from .output import emit, progress_bar


@option_groups
def clip(
    model: Annotated[str | None, typer.Argument(
        help="HF safetensors directory or file, or hub id (org/name[@rev]). GGUF and quantized packs are refused "
             "for writing; --sweep reads them all.", show_default=False)] = None,
    percentile: Annotated[float, typer.Option("--percentile", "-p", help="Clip each tensor (or row) at this "
                                              "percentile of |value|, in [0, 100]; 100 changes nothing.")] = 99.0,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="New directory for the clipped checkpoint (never "
                                             "inside the input).")] = None,
    scope: Annotated[ClipScope | None, typer.Option("--scope", help="norms (effective gains, in their convention), "
                     "linear (|w|) or all. Default: norms; all with --sweep.")] = None,
    per: Annotated[ClipGranularity, typer.Option("--per", help="One threshold per tensor, or per output channel "
                                                 "(row).")] = ClipGranularity.TENSOR,
    select: Selection = Selection(),
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out (empty, or an earlier clip "
                                        "output) once the new one is complete.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would change; write nothing.")] = False,
    protect: Annotated[bool, typer.Option("--protect/--no-protect", help="Leave data-free super-weight candidates "
                                          "(mlp down_proj outliers) unclipped.")] = True,
    protect_z: Annotated[float, typer.Option("--protect-z", min=0.0, help="Leave-one-out z-score of |w| in both its "
                                             "row and column that makes a super-weight candidate.")] = SUPER_WEIGHT_Z,
    sweep: Annotated[str | None, typer.Option("--sweep", metavar="P1,P2,…", help="Measure instead of writing: "
                     "clipping error, quantization error after clipping and their total at each percentile.")] = None,
    scheme: Schemes = None,
    include_lm_head: IncludeLmHead = False,
    arch: Arch = None,
    norm_convention: NormConventionOpt = None,
    out_: Outputs = Outputs(),
    workers: Workers = Workers(),
) -> None:
    """Clip norm gains (in their real convention) or Linear weights at a percentile, into a new verified checkpoint."""
    common = dict(per=per, protect=protect, protect_z=protect_z, arch=arch, norm_convention=norm_convention,
                  **select.api(), **workers.api())
    if sweep is None:
        if model is None:  # the embedded example is a GGUF, which clip cannot write: say what to give it
            raise ConfigError("clip needs a MODEL to clip: an HF safetensors directory or file, or a hub id "
                              "(normscope clip MODEL --out DIR)")
        if out is None and not dry_run:
            raise ConfigError("clip writes a new checkpoint: give it --out DIR (a new directory), or --dry-run to "
                              "only report what would change")
        if scheme or include_lm_head:
            raise ConfigError("--scheme and --include-lm-head go with --sweep (a clip writes no quantized model)")
        with progress_bar("clipping", not out_.quiet) as progress:
            result = run_clip(model, percentile, out=out, force=force, dry_run=dry_run, progress=progress,
                              scope=scope or ClipScope.NORMS, **common)
    else:
        if out is not None or force or dry_run:
            raise ConfigError("--sweep measures and writes no checkpoint: drop --out/--force/--dry-run, or drop "
                              "--sweep")
        percentiles, schemes = parse_percentiles(sweep), parse_schemes(listify(scheme) or ["Q4_K_M"])
        with progress_bar("sweeping", not out_.quiet) as progress:
            result = clip_sweep(model, percentiles, schemes=schemes, include_lm_head=include_lm_head,
                                progress=progress, scope=scope or ClipScope.ALL, **common)
    emit(result, out_)
