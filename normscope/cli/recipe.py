"""`normscope recipe`: per-tensor ggml types under a size budget, as llama-quantize / llm-compressor / quanto lists."""

from __future__ import annotations

from pathlib import Path

import typer

from ..analysis.parallel import Executor
from ..analysis.recipe import DEFAULT_TYPES, KEEP_BPW, recipe as run_recipe
from ..report import report_html, to_json
from ..report.recipe import recipe_args, recipe_markdown, recipe_terminal
from .common import (ArchOpt, ExecutorOpt, HtmlOpt, JobsOpt, JsonOpt, MdOpt, QuietOpt, RayAddressOpt, TopOpt, listify,
                     print_report, progress_bar, use_ray_address, write_outputs)


def recipe(
    model: str = typer.Argument(None, help="What analyze accepts; default: the embedded Gemma 3 270M."),
    budget_bpw: float = typer.Option(None, "--budget-bpw", help="Bits per weight over all parameters (as simulate "
                                     "reports a plan's bpw)."),
    budget_bytes: int = typer.Option(None, "--budget-bytes", help="Tensor bytes of the produced model."),
    types: list[str] = typer.Option(list(DEFAULT_TYPES), "--types", help="Candidate ggml types, comma-separated "
                                    "(each replaced by llama.cpp's fallback where a row needs one)."),
    reference: str = typer.Option("Q4_K_M", "--reference", help="The llama.cpp file type to beat (and to give "
                                  "llama-quantize)."),
    compare_with: list[str] = typer.Option(["Q4_K_M", "Q5_K_M"], "--compare", help="File types summarised from the "
                                           "same measurements."),
    sensitivity: Path = typer.Option(None, "--sensitivity", help="A `normscope forward --sensitivity --json` report: "
                                     "minimise the measured KL instead of the norm-aware error."),
    keep_bpw: float = typer.Option(KEEP_BPW, "--keep-bpw", help="Linear tensors at this many bits or more go to the "
                                   "llm-compressor ignore / quanto exclude lists."),
    args_path: Path = typer.Option(None, "--args", help="Write the llama-quantize arguments here, one per line "
                                   "('-' for stdout).", metavar="PATH"),
    arch: str = ArchOpt,
    top: int = TopOpt,
    json_path: Path = JsonOpt,
    md_path: Path = MdOpt,
    html_path: Path = HtmlOpt,
    quiet: bool = QuietOpt,
    jobs: int = JobsOpt,
    executor: Executor = ExecutorOpt,
    ray_address: str = RayAddressOpt,
) -> None:
    """Choose a ggml type per tensor that minimises the norm-aware error under a size budget."""
    use_ray_address(ray_address)
    with progress_bar("measuring", not quiet) as progress:
        result = run_recipe(model, budget_bpw=budget_bpw, budget_bytes=budget_bytes, types=listify(types),
                            reference=reference, compare=listify(compare_with), sensitivity=sensitivity,
                            keep_bpw=keep_bpw, arch=arch, progress=progress, jobs=jobs, executor=executor.value)
    to_stdout = write_outputs({json_path: lambda: to_json(result), md_path: lambda: recipe_markdown(result, top),
                               html_path: lambda: report_html(result), args_path: lambda: recipe_args(result)})
    print_report(lambda width, color: recipe_terminal(result, top, width, color), quiet or to_stdout)
