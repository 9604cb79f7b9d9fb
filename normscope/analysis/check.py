"""`check`: gate a checkpoint on rules, for CI. Passes when every rule holds on every tensor it covers.

The rules read the analyze document (and a baseline's, for drift rules), so a baseline is simply an
earlier JSON from analyze or check, and `--write-baseline` records the measurements of this run.
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..results import CheckResult, Failure, ProgressFn, RuleOutcome
from .analyze import analyze_model
from .check_config import CheckConfig, load_check_config
from .model import open_model
from .rules import RULES

__all__ = ["check", "evaluate", "load_baseline"]


def _matches(name: str, glob: str) -> bool:
    return fnmatch.fnmatchcase(name, glob)


def load_baseline(path: Path | str) -> dict[str, Any]:
    """The analyze document of a baseline JSON (from analyze, or from check's measurements).

    Raises:
        ConfigError: unreadable file, not JSON, or not a normscope analyze/check document.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: baseline not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: baseline is not readable JSON ({e})") from None
    kind = doc.get("schema") if isinstance(doc, dict) else None
    if kind == "normscope.check":
        doc = doc.get("measurements", {}).get("analyze")
        kind = doc.get("schema") if isinstance(doc, dict) else None
    if kind != "normscope.analyze" or not isinstance(doc.get("tensors"), list):
        raise ConfigError(f"{path}: not a normscope analyze or check JSON (schema {kind!r}); write one with "
                          "`normscope check MODEL --write-baseline PATH` or `normscope analyze MODEL --json PATH`")
    return doc


def evaluate(analyzed: dict[str, Any], config: CheckConfig, baseline: dict[str, Any] | None = None
             ) -> tuple[list[RuleOutcome], list[Failure], list[str]]:
    """Apply the configured rules to an analyze document (dict form)."""
    base = {t["name"]: t for t in baseline["tensors"]} if baseline else {}
    outcomes: list[RuleOutcome] = []
    failures: list[Failure] = []
    warnings: list[str] = []
    for name, rule in RULES.items():
        threshold, source = config.rules.get(name, (None, ""))
        overridden = any(name in table for table in config.overrides.values())
        if (threshold in (None, False)) and not overridden:
            continue
        if rule.needs == "baseline" and baseline is None:
            raise ConfigError(f"rule {name} compares against a baseline: pass --baseline PATH (a JSON from "
                              "`normscope check --write-baseline` or `normscope analyze --json`)")
        checked = failed = 0
        by_role: dict[str, int] = {}
        for t in analyzed["tensors"]:
            limit = config.threshold_for(name, t["name"], _matches)
            if limit in (None, False):
                continue
            value = rule.measure(t, base.get(t["name"]))
            if value is None:
                continue
            checked += 1
            by_role[t["role"]] = by_role.get(t["role"], 0) + 1
            if rule.fails(value, limit):
                failed += 1
                failures.append(Failure(name, t["name"], t["role"], value, limit, _message(rule, value, limit)))
        outcomes.append(RuleOutcome(name, threshold, source or "tensors override", checked, failed,
                                    rule.description, by_role))
    order = list(RULES)
    failures.sort(key=lambda f: (order.index(f.rule), -_excess(f)))  # worst offender first
    return outcomes, failures, warnings


def _excess(f: Failure) -> float:
    limit = f.threshold if isinstance(f.threshold, (int, float)) and not isinstance(f.threshold, bool) else 0.0
    return abs(f.value - limit) / (abs(limit) or 1.0)


def _message(rule, value: float, limit: Any) -> str:
    if rule.direction == "flag":
        return f"{value:g} non-finite values"
    op = ">" if rule.direction == "max" else "<"
    return f"{value:.6g} {op} {limit:g}"


def check(source: str | Path | None = None, *, baseline: str | Path | dict | None = None,
          config_file: str | Path | None = None, use_pyproject: bool = True, cwd: Path | None = None,
          arch: str | None = None, norm_convention: str | None = None, progress: ProgressFn | None = None,
          **rules: Any) -> CheckResult:
    """Check a checkpoint against rules.

    Args:
        source: what analyze accepts (path, hub id, example:NAME, None for the embedded model).
        baseline: an earlier analyze/check JSON (path or dict) for the drift rules.
        config_file: TOML with rule settings (overrides pyproject.toml).
        use_pyproject: read `[tool.normscope.check]` from the nearest pyproject.toml (from `cwd`).
        **rules: thresholds by rule name, e.g. `max_effective_gamma=100`; these override every file.

    Returns:
        CheckResult: `passed`, `failures` (rule, tensor, value, threshold), `to_dict()`.

    Raises:
        ConfigError, UnknownNameError (bad rule settings); SourceNotFoundError, CheckpointError.

    Example:
        >>> r = check("example:gemma3-270m", max_effective_gamma=100)  # doctest: +SKIP
        >>> r.passed, r.failures[0].tensor
        (False, 'model.layers.16.post_feedforward_layernorm.weight')
    """
    config = load_check_config(cwd=cwd, config_file=Path(config_file) if config_file else None,
                               use_pyproject=use_pyproject, overrides=rules)
    base_doc = baseline if isinstance(baseline, dict) else None
    base_path = baseline if baseline is not None and not isinstance(baseline, dict) else config.baseline
    if base_path is not None:
        base_doc = load_baseline(base_path)
    with open_model(source, arch=arch, norm_convention=norm_convention) as model:
        analyzed = analyze_model(model, progress=progress).to_dict()
    outcomes, failures, warnings = evaluate(analyzed, config, base_doc)
    return CheckResult(source=model.source, passed=not failures, rules=tuple(outcomes), failures=tuple(failures),
                       overrides=config.overrides, baseline=str(base_path) if base_path else None,
                       measurements={"analyze": analyzed}, warnings=tuple(analyzed["warnings"]) + tuple(warnings))
