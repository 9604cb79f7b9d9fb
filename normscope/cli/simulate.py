"""`normscope simulate`: what Q4_K_M / int4 / int8 … would do to each tensor, without running them."""

from __future__ import annotations

from pathlib import Path

import typer

from ..analysis.parallel import Executor
from ..analysis.simulate import parse_schemes, parse_tensor_types, simulate as run_simulate
from ..report import report_html, to_json
from ..report.simulate import simulate_markdown, simulate_terminal
from ..results import NormConvention
from .common import (ArchOpt, ExecutorOpt, HtmlOpt, JobsOpt, JsonOpt, MdOpt, QuietOpt, RayAddressOpt, TopOpt, listify,
                     print_report, progress_bar, use_ray_address, write_outputs)


def simulate(
    model: str = typer.Argument(None, help="What analyze accepts; default: the embedded Gemma 3 270M."),
    scheme: list[str] = typer.Option(["Q4_K_M"], "--scheme", "-s",
                                     help="llama.cpp file types (Q4_K_M, Q8_0, Q2_K, …) and simulated schemes "
                                          "(int4, int8, int4_sym_g128, fp8_block, …), comma-separated or repeated. "
                                          "`normscope schemes` lists them."),
    tensor_type: list[str] = typer.Option(None, "--tensor-type", help="llama-quantize override REGEX=TYPE for "
                                          "GGUF schemes (repeatable), e.g. attn_v=Q8_0."),
    include_lm_head: bool = typer.Option(False, "--include-lm-head", help="Quantize an untied lm_head under "
                                         "simulated schemes (GPTQ/AWQ leave it by default)."),
    include: list[str] = typer.Option(None, "--include", help="Only tensors matching these globs."),
    exclude: list[str] = typer.Option(None, "--exclude", help="Skip tensors matching these globs."),
    arch: str = ArchOpt,
    norm_convention: NormConvention = typer.Option(
        None, "--norm-convention", help="Norm convention for every norm the architecture does not pin."),
    top: int = TopOpt,
    json_path: Path = JsonOpt,
    md_path: Path = MdOpt,
    html_path: Path = HtmlOpt,
    quiet: bool = QuietOpt,
    jobs: int = JobsOpt,
    executor: Executor = ExecutorOpt,
    ray_address: str = RayAddressOpt,
) -> None:
    """Simulate quantization schemes tensor by tensor: type plan, size, error, norm-aware error, block health."""
    schemes = parse_schemes(listify(scheme))
    overrides = parse_tensor_types(tensor_type or [])
    use_ray_address(ray_address)
    with progress_bar("simulating", not quiet) as progress:
        result = run_simulate(model, schemes=schemes, arch=arch, norm_convention=norm_convention,
                              include=listify(include), exclude=listify(exclude), include_lm_head=include_lm_head,
                              tensor_types=overrides, progress=progress, jobs=jobs, executor=executor.value)
    to_stdout = write_outputs({json_path: lambda: to_json(result), md_path: lambda: simulate_markdown(result, top),
                               html_path: lambda: report_html(result)})
    print_report(lambda width, color: simulate_terminal(result, top, width, color), quiet or to_stdout)


def schemes() -> None:
    """List the quantization schemes simulate, check and clip accept."""
    from ..quant import SCHEMES

    width = max(map(len, SCHEMES))
    for name, description in SCHEMES.items():
        typer.echo(f"{name:<{width}}  {description}")
