"""`normscope analyze`: norm gains in their convention, outliers, plain-words explanations."""

from __future__ import annotations

from pathlib import Path

import typer

from ..analysis import analyze as run_analyze
from ..report import analyze_html, analyze_markdown, analyze_terminal, to_json
from ..results import NormConvention
from .common import (ArchOpt, HtmlOpt, JsonOpt, MdOpt, QuietOpt, TopOpt, listify, print_report, progress_bar,
                     write_outputs)


def analyze(
    model: str = typer.Argument(None, help="HF directory, .safetensors, .gguf, hub id (org/name[@rev]), or "
                                "example:gemma3-270m. Default: the embedded Gemma 3 270M (examples extra)."),
    arch: str = ArchOpt,
    norm_convention: NormConvention = typer.Option(None, "--norm-convention",
                                                   help="Norm convention for every norm the architecture does not pin."),
    include: list[str] = typer.Option(None, "--include", help="Only tensors matching these globs."),
    exclude: list[str] = typer.Option(None, "--exclude", help="Skip tensors matching these globs."),
    outlier_sigma: float = typer.Option(6.0, "--outlier-sigma", min=0.0, help="k in the count |w - mean| > k·std."),
    explain_above: float = typer.Option(100.0, "--explain-above", help="Explain norms whose max |gain| exceeds this."),
    top: int = TopOpt,
    json_path: Path = JsonOpt,
    md_path: Path = MdOpt,
    html_path: Path = HtmlOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Profile every tensor: norm gains as the model computes them, weight outliers, NaN/Inf."""
    with progress_bar("analyzing", not quiet) as progress:
        result = run_analyze(model, arch=arch, norm_convention=norm_convention, include=listify(include),
                             exclude=listify(exclude), outlier_sigma=outlier_sigma, explain_above=explain_above,
                             progress=progress)
    to_stdout = write_outputs({json_path: lambda: to_json(result), md_path: lambda: analyze_markdown(result, top),
                               html_path: lambda: analyze_html(result)})
    print_report(lambda width, color: analyze_terminal(result, top, width, color), quiet or to_stdout)
