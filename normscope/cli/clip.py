"""`normscope clip`: percentile clipping written as a verified checkpoint, a dry run, or a clip-vs-quantize sweep."""

from __future__ import annotations

from pathlib import Path

import typer

from ..analysis.clip import clip as run_clip
from ..analysis.clip_sweep import clip_sweep, parse_percentiles
from ..analysis.simulate import parse_schemes
from ..analysis.superweight import SUPER_WEIGHT_Z
from ..errors import ConfigError
from ..report import report_html, to_json
from ..report.clip import clip_markdown, clip_terminal, sweep_markdown, sweep_terminal
from ..results import ClipGranularity, ClipScope, NormConvention
from .common import (ArchOpt, HtmlOpt, JsonOpt, MdOpt, QuietOpt, TopOpt, listify, print_report, progress_bar,
                     write_outputs)


def clip(
    model: str = typer.Argument(None, help="HF safetensors directory or file, or hub id (org/name[@rev]). "
                                "GGUF and quantized packs are refused for writing; --sweep reads them all."),
    percentile: float = typer.Option(99.0, "--percentile", "-p", help="Clip each tensor (or row) at this "
                                     "percentile of |value|, in [0, 100]; 100 changes nothing."),
    out: Path = typer.Option(None, "--out", "-o", help="New directory for the clipped checkpoint (never inside "
                             "the input)."),
    scope: ClipScope = typer.Option(None, "--scope", help="norms (effective gains, in their convention), linear "
                                    "(|w|) or all. Default: norms; all with --sweep."),
    per: ClipGranularity = typer.Option(ClipGranularity.TENSOR, "--per", help="One threshold per tensor, or per "
                                        "output channel (row)."),
    include: list[str] = typer.Option(None, "--include", help="Only tensors matching these globs."),
    exclude: list[str] = typer.Option(None, "--exclude", help="Skip tensors matching these globs."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out (empty, or an earlier clip output) "
                               "once the new one is complete."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Report what would change; write nothing."),
    protect: bool = typer.Option(True, "--protect/--no-protect", help="Leave data-free super-weight candidates "
                                 "(mlp down_proj outliers) unclipped."),
    protect_z: float = typer.Option(SUPER_WEIGHT_Z, "--protect-z", min=0.0, help="Leave-one-out z-score of |w| "
                                    "in both its row and column that makes a super-weight candidate."),
    sweep: str = typer.Option(None, "--sweep", metavar="P1,P2,…", help="Measure instead of writing: clipping "
                              "error, quantization error after clipping and their total at each percentile."),
    scheme: list[str] = typer.Option(None, "--scheme", "-s", help="Schemes for --sweep (default Q4_K_M), "
                                     "comma-separated or repeated; `normscope schemes` lists them."),
    include_lm_head: bool = typer.Option(False, "--include-lm-head", help="--sweep: quantize an untied lm_head "
                                         "under simulated schemes."),
    arch: str = ArchOpt,
    norm_convention: NormConvention = typer.Option(
        None, "--norm-convention", help="Norm convention for every norm the architecture does not pin."),
    top: int = TopOpt,
    json_path: Path = JsonOpt,
    md_path: Path = MdOpt,
    html_path: Path = HtmlOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Clip norm gains (in their real convention) or Linear weights at a percentile, into a new verified checkpoint."""
    if sweep is None:
        if scheme or include_lm_head:
            raise ConfigError("--scheme and --include-lm-head go with --sweep (a clip writes no quantized model)")
        with progress_bar("clipping", not quiet) as progress:
            result = run_clip(model, percentile, out=out, scope=scope or ClipScope.NORMS, per=per,
                              include=listify(include), exclude=listify(exclude), force=force, dry_run=dry_run,
                              protect=protect, protect_z=protect_z, arch=arch, norm_convention=norm_convention,
                              progress=progress)
        to_stdout = write_outputs({json_path: lambda: to_json(result), md_path: lambda: clip_markdown(result, top),
                                   html_path: lambda: report_html(result)})
        print_report(lambda width, color: clip_terminal(result, top, width, color), quiet or to_stdout)
        return
    if out is not None or force or dry_run:
        raise ConfigError("--sweep measures and writes no checkpoint: drop --out/--force/--dry-run, or drop --sweep")
    percentiles, schemes = parse_percentiles(sweep), parse_schemes(listify(scheme) or ["Q4_K_M"])
    with progress_bar("sweeping", not quiet) as progress:
        result = clip_sweep(model, percentiles, schemes=schemes, scope=scope or ClipScope.ALL, per=per,
                            include=listify(include), exclude=listify(exclude), protect=protect, protect_z=protect_z,
                            include_lm_head=include_lm_head, arch=arch, norm_convention=norm_convention,
                            progress=progress)
    to_stdout = write_outputs({json_path: lambda: to_json(result), md_path: lambda: sweep_markdown(result, top),
                               html_path: lambda: report_html(result)})
    print_report(lambda width, color: sweep_terminal(result, top, width, color), quiet or to_stdout)
