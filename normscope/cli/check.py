"""`normscope check`: exit 0 when every rule holds, 1 when one fails, 2 on bad input or configuration."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from ..analysis import check as run_check
from ..analysis.check.config import parse_flags
from ..report import to_json
from ..report.check import check_annotations, check_junit
from .options import Arch, ModelArg, NormConventionOpt, Outputs, Selection, Workers, option_groups
from .output import emit, progress_bar


@option_groups
def check(
    model: ModelArg = None,
    max_effective_gamma: Annotated[float | None, typer.Option(
        help="Fail when a norm's largest |gain| (its own convention) exceeds this.")] = None,
    max_abs_weight: Annotated[float | None, typer.Option(
        help="Fail when a non-norm tensor's largest |w| exceeds this.")] = None,
    max_kurtosis: Annotated[float | None, typer.Option(
        help="Fail when a weight matrix's excess kurtosis exceeds this.")] = None,
    max_outlier_ratio: Annotated[float | None, typer.Option(
        help="Fail when |w|max/σ of a weight matrix exceeds this.")] = None,
    max_norm_drift: Annotated[float | None, typer.Option(
        help="Fail when a norm's max |gain| moved more than this fraction from the baseline.")] = None,
    max_std_drift: Annotated[float | None, typer.Option(
        help="Fail when a weight's σ moved more than this fraction.")] = None,
    nan_inf: Annotated[bool | None, typer.Option("--no-nan-inf/--allow-nan-inf",
                                                 help="Fail on NaN/Inf (on by default).")] = None,
    min_sqnr: Annotated[list[str] | None, typer.Option(
        "--min-sqnr", metavar="SCHEME=DB", help="Fail when a tensor the scheme quantizes has a lower SQNR "
                                                "(simulated), e.g. Q4_K_M=20 (repeatable).")] = None,
    min_norm_aware_sqnr: Annotated[list[str] | None, typer.Option(
        "--min-norm-aware-sqnr", metavar="SCHEME=DB", help="The same on the norm-aware SQNR.")] = None,
    max_error_regression_db: Annotated[list[str] | None, typer.Option(
        "--max-error-regression-db", metavar="SCHEME=DB",
        help="Fail when a tensor's simulated SQNR dropped by more than this many dB from the baseline.")] = None,
    rule: Annotated[list[str] | None, typer.Option("--rule", help="Any rule as NAME=VALUE (repeatable).")] = None,
    baseline: Annotated[Path | None, typer.Option(help="Earlier JSON from check/analyze for drift rules.")] = None,
    write_baseline: Annotated[Path | None, typer.Option(help="Record this run's measurements here.")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML rule settings (override pyproject.toml).")] = None,
    no_pyproject: Annotated[bool, typer.Option("--no-pyproject", help="Ignore [tool.normscope.check].")] = False,
    select: Selection = Selection(),
    arch: Arch = None,
    norm_convention: NormConventionOpt = None,
    junit: Annotated[Path | None, typer.Option(help="Write JUnit XML here.")] = None,
    out: Outputs = Outputs(),
    workers: Workers = Workers(),
) -> None:
    """Gate a checkpoint on rules (CI): exit 0 all hold, 1 a rule failed, 2 bad input or configuration."""
    rules = parse_flags({"max_effective_gamma": max_effective_gamma, "max_abs_weight": max_abs_weight,
                         "max_kurtosis": max_kurtosis, "max_outlier_ratio": max_outlier_ratio,
                         "max_norm_drift": max_norm_drift, "max_std_drift": max_std_drift, "no_nan_inf": nan_inf,
                         "min_sqnr": min_sqnr, "min_norm_aware_sqnr": min_norm_aware_sqnr,
                         "max_error_regression_db": max_error_regression_db}, rule or [])
    with progress_bar("checking", not out.quiet) as progress:
        result = run_check(model, baseline=baseline, config_file=config, use_pyproject=not no_pyproject, arch=arch,
                           norm_convention=norm_convention, progress=progress, **select.api(), **workers.api(),
                           **rules)
    github = os.environ.get("GITHUB_ACTIONS") == "true"
    emit(result, out, extra={junit: lambda: check_junit(result), write_baseline: lambda: to_json(result)},
         annotations=check_annotations(result) if github else "")
    raise typer.Exit(0 if result.passed else 1)
