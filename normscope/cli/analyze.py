"""`normscope analyze`: norm gains in their convention, outliers, plain-words explanations."""

from __future__ import annotations

from pathlib import Path

import typer

from ..analysis import analyze as run_analyze
from ..analysis import analyze_model, open_model
from ..analysis.parallel import Executor
from ..report import analyze_html, analyze_markdown, analyze_terminal, to_json
from ..results import NormConvention
from .common import (ArchOpt, ExecutorOpt, HtmlOpt, JobsOpt, JsonOpt, MdOpt, QuietOpt, RayAddressOpt, TopOpt, listify,
                     print_report, progress_bar, use_ray_address, write_outputs)


def analyze(
    model: str = typer.Argument(None, help="HF directory, .safetensors, .gguf, hub id (org/name[@rev]), or "
                                "example:gemma3-270m. Default: the embedded Gemma 3 270M (examples extra)."),
    arch: str = ArchOpt,
    adapter: Path = typer.Option(None, "--adapter", metavar="DIR", help="A PEFT LoRA adapter directory: analyze the "
                                 "base MODEL with the adapter merged (chunk by chunk, nothing written)."),
    norm_convention: NormConvention = typer.Option(
        None, "--norm-convention", help="Norm convention for every norm the architecture does not pin."),
    include: list[str] = typer.Option(None, "--include", help="Only tensors matching these globs."),
    exclude: list[str] = typer.Option(None, "--exclude", help="Skip tensors matching these globs."),
    outlier_sigma: float = typer.Option(6.0, "--outlier-sigma", min=0.0, help="k in the count |w - mean| > k·std."),
    explain_above: float = typer.Option(100.0, "--explain-above", help="Explain norms whose max |gain| exceeds this."),
    top: int = TopOpt,
    json_path: Path = JsonOpt,
    md_path: Path = MdOpt,
    html_path: Path = HtmlOpt,
    quiet: bool = QuietOpt,
    jobs: int = JobsOpt,
    executor: Executor = ExecutorOpt,
    ray_address: str = RayAddressOpt,
) -> None:
    """Profile every tensor: norm gains as the model computes them, weight outliers, NaN/Inf."""
    use_ray_address(ray_address)
    with progress_bar("analyzing", not quiet) as progress:
        options = dict(include=listify(include), exclude=listify(exclude), outlier_sigma=outlier_sigma,
                       explain_above=explain_above, progress=progress, jobs=jobs, executor=executor.value)
        if adapter is None:
            result = run_analyze(model, arch=arch, norm_convention=norm_convention, **options)
        else:
            with open_model(model, arch=arch, norm_convention=norm_convention, adapter=adapter) as opened:
                result = analyze_model(opened, **options)
    to_stdout = write_outputs({json_path: lambda: to_json(result), md_path: lambda: analyze_markdown(result, top),
                               html_path: lambda: analyze_html(result)})
    print_report(lambda width, color: analyze_terminal(result, top, width, color), quiet or to_stdout)
