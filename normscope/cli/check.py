"""`normscope check`: exit 0 when every rule holds, 1 when one fails, 2 on bad input or configuration."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from ..analysis.check import check as run_check
from ..analysis.parallel import Executor
from ..errors import ConfigError
from ..report import to_json
from ..report.check import check_annotations, check_junit, check_markdown, check_terminal
from .common import (ArchOpt, ExecutorOpt, JobsOpt, JsonOpt, MdOpt, QuietOpt, RayAddressOpt, TopOpt, print_report,
                     progress_bar, use_ray_address, write_outputs)


def _number(text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{where}: {text!r} is not a number") from None


def _scheme_values(option: str, pairs: list[str] | None) -> dict[str, float] | None:
    """`--min-sqnr Q4_K_M=20 --min-sqnr int4=12` as {"Q4_K_M": 20.0, "int4": 12.0}."""
    if not pairs:
        return None
    out: dict[str, float] = {}
    for pair in pairs:
        scheme, sep, value = pair.partition("=")
        if not sep or not scheme.strip():
            raise ConfigError(f"{option} {pair!r}: expected SCHEME=VALUE, e.g. {option} Q4_K_M=20")
        out[scheme.strip()] = _number(value, f"{option} {pair!r}")
    return out


def _rule_pairs(pairs: list[str] | None) -> dict[str, float | bool | dict[str, float]]:
    out: dict[str, float | bool | dict[str, float]] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--rule {pair!r}: expected NAME=VALUE, e.g. --rule max_kurtosis=50 "
                              "(quantization rules: --rule min_sqnr=Q4_K_M:20)")
        scheme, colon, per_scheme = value.partition(":")
        if colon:
            table = out.setdefault(name.strip(), {})
            if isinstance(table, dict):
                table[scheme.strip()] = _number(per_scheme, f"--rule {pair!r}")
            continue
        low = value.strip().lower()
        if low in ("true", "false", "off"):
            out[name.strip()] = low == "true"
            continue
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"--rule {pair!r}: {value!r} is not a number, true or false") from None
    return out


def check(
    model: str = typer.Argument(None, help="What analyze accepts; default: the embedded Gemma 3 270M."),
    max_effective_gamma: float = typer.Option(None, help="Fail when a norm's largest |gain| (its own "
                                              "convention) exceeds this."),
    max_abs_weight: float = typer.Option(None, help="Fail when a non-norm tensor's largest |w| exceeds this."),
    max_kurtosis: float = typer.Option(None, help="Fail when a weight matrix's excess kurtosis exceeds this."),
    max_outlier_ratio: float = typer.Option(None, help="Fail when |w|max/σ of a weight matrix exceeds this."),
    max_norm_drift: float = typer.Option(None, help="Fail when a norm's max |gain| moved more than this "
                                         "fraction from the baseline."),
    max_std_drift: float = typer.Option(None, help="Fail when a weight's σ moved more than this fraction."),
    nan_inf: bool = typer.Option(None, "--no-nan-inf/--allow-nan-inf", help="Fail on NaN/Inf (on by default)."),
    min_sqnr: list[str] = typer.Option(None, "--min-sqnr", metavar="SCHEME=DB",
                                       help="Fail when a tensor the scheme quantizes has a lower SQNR (simulated), "
                                            "e.g. Q4_K_M=20 (repeatable)."),
    min_norm_aware_sqnr: list[str] = typer.Option(None, "--min-norm-aware-sqnr", metavar="SCHEME=DB",
                                                  help="The same on the norm-aware SQNR."),
    max_error_regression_db: list[str] = typer.Option(
        None, "--max-error-regression-db", metavar="SCHEME=DB",
        help="Fail when a tensor's simulated SQNR dropped by more than this many dB from the baseline."),
    rule: list[str] = typer.Option(None, "--rule", help="Any rule as NAME=VALUE (repeatable)."),
    baseline: Path = typer.Option(None, "--baseline", help="Earlier JSON from check/analyze for drift rules."),
    write_baseline: Path = typer.Option(None, "--write-baseline", help="Record this run's measurements here."),
    config: Path = typer.Option(None, "--config", help="TOML rule settings (override pyproject.toml)."),
    no_pyproject: bool = typer.Option(False, "--no-pyproject", help="Ignore [tool.normscope.check]."),
    arch: str = ArchOpt,
    junit: Path = typer.Option(None, "--junit", help="Write JUnit XML here."),
    json_path: Path = JsonOpt,
    md_path: Path = MdOpt,
    top: int = TopOpt,
    quiet: bool = QuietOpt,
    jobs: int = JobsOpt,
    executor: Executor = ExecutorOpt,
    ray_address: str = RayAddressOpt,
) -> None:
    """Gate a checkpoint on rules (CI): exit 0 all hold, 1 a rule failed, 2 bad input or configuration."""
    use_ray_address(ray_address)
    rules = {"max_effective_gamma": max_effective_gamma, "max_abs_weight": max_abs_weight,
             "max_kurtosis": max_kurtosis, "max_outlier_ratio": max_outlier_ratio, "max_norm_drift": max_norm_drift,
             "max_std_drift": max_std_drift, "no_nan_inf": nan_inf,
             "min_sqnr": _scheme_values("--min-sqnr", min_sqnr),
             "min_norm_aware_sqnr": _scheme_values("--min-norm-aware-sqnr", min_norm_aware_sqnr),
             "max_error_regression_db": _scheme_values("--max-error-regression-db", max_error_regression_db),
             **_rule_pairs(rule)}
    with progress_bar("checking", not quiet) as progress:
        result = run_check(model, baseline=baseline, config_file=config, use_pyproject=not no_pyproject,
                           arch=arch, progress=progress, jobs=jobs, executor=executor.value, **rules)
    to_stdout = write_outputs({json_path: lambda: to_json(result), md_path: lambda: check_markdown(result, top),
                               junit: lambda: check_junit(result), write_baseline: lambda: to_json(result)})
    if os.environ.get("GITHUB_ACTIONS") == "true":
        sys.stdout.write(check_annotations(result))
    print_report(lambda width, color: check_terminal(result, top, width, color), quiet or to_stdout)
    raise typer.Exit(0 if result.passed else 1)

