"""`check`: gate a checkpoint on rules, for CI. Passes when every rule holds on every tensor it covers.

The rules read the analyze document (and a baseline's, for drift rules), so a baseline is simply an
earlier JSON from analyze or check, and `--write-baseline` records the measurements of this run.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...errors import ConfigError
from ...io import DEFAULT_CHUNK_ELEMENTS
from ...quant import canonical_scheme
from ...results import CheckResult, Failure, NormConvention, ProgressFn, RuleOutcome, name_order
from ..analyze import analyze_model
from ..engine.model import Model, open_model
from ..engine.workers import Executor
from ..simulate import simulate_model
from .config import CheckConfig, load_check_config
from .rules import RULES

__all__ = ["check", "check_model", "evaluate", "load_baseline", "baseline_measurements", "simulate_schemes"]


def _matches(name: str, glob: str) -> bool:
    return fnmatch.fnmatchcase(name, glob)


def load_baseline(path: Path | str) -> dict[str, Any]:
    """The measurements of a baseline JSON: {"analyze": doc or None, "simulate": doc or None}.

    A baseline is an earlier `check` JSON (its `measurements`), an `analyze` JSON, or a `simulate` JSON.

    Raises:
        ConfigError: unreadable file, not JSON, or not a normscope analyze/simulate/check document.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: baseline not found") from None
    except (OSError, ValueError) as e:  # ValueError: bad UTF-8 or JSON, an integer of more than 4300 digits
        raise ConfigError(f"{path}: baseline is not readable JSON ({e})") from None
    except RecursionError:
        raise ConfigError(f"{path}: baseline is not readable JSON (nested too deeply)") from None
    return baseline_measurements(doc, str(path))


def baseline_measurements(doc: Any, where: str = "baseline") -> dict[str, Any]:
    """{"analyze": …, "simulate": …} from a check, analyze or simulate document (dict form)."""
    kind = doc.get("schema") if isinstance(doc, dict) else None
    found: dict[str, Any] = {"analyze": None, "simulate": None}
    if kind == "normscope.check":
        found.update({k: v for k, v in (doc.get("measurements") or {}).items() if k in found})
    elif kind in ("normscope.analyze", "normscope.simulate"):
        found[kind.split(".")[1]] = doc
    ok = (isinstance(found["analyze"], dict) and isinstance(found["analyze"].get("tensors"), list)) or \
        (isinstance(found["simulate"], dict) and isinstance(found["simulate"].get("schemes"), list))
    if not ok:
        raise ConfigError(f"{where}: not a normscope analyze, simulate or check JSON (schema {kind!r}); write one with "
                          "`normscope check MODEL --write-baseline PATH` or `normscope analyze MODEL --json PATH`")
    return found


def simulate_schemes(config: CheckConfig) -> list[str]:
    """The schemes the configured quantization rules need simulated."""
    names: list[str] = []
    tables = [{k: v for k, (v, _) in config.rules.items()}, *config.overrides.values()]
    for table in tables:
        for rule, value in table.items():
            if RULES[rule].per_scheme and isinstance(value, dict):
                names += [s for s in value if s not in names]
    return names


def evaluate(measured: dict[str, Any], config: CheckConfig, baseline: dict[str, Any] | None = None
             ) -> tuple[list[RuleOutcome], list[Failure], list[str]]:
    """Apply the configured rules to the measurements ({"analyze": doc, "simulate": doc or None})."""
    if "tensors" in measured:  # an analyze document alone
        measured = {"analyze": measured}
    baseline = baseline or {}
    outcomes: list[RuleOutcome] = []
    failures: list[Failure] = []
    warnings: list[str] = []
    for name, rule in RULES.items():
        threshold, source = config.rules.get(name, (None, ""))
        overridden = any(name in table for table in config.overrides.values())
        if (threshold in (None, False)) and not overridden:
            continue
        needs_base = rule.needs.endswith("baseline")
        base_doc = baseline.get("simulate" if rule.per_scheme else "analyze")
        if needs_base and base_doc is None:
            what = "a simulate or check JSON with the same schemes" if rule.per_scheme else \
                "a JSON from `normscope check --write-baseline` or `normscope analyze --json`"
            raise ConfigError(f"rule {name} compares against a baseline: pass --baseline PATH ({what})")
        checked = failed = 0
        by_role: dict[str, int] = {}
        for scheme, entries, base in _entries(rule, measured, base_doc, warnings):
            for t in entries:
                limit = config.threshold_for(name, t["name"], _matches)
                if rule.per_scheme:
                    limit = limit.get(scheme) if isinstance(limit, dict) else None
                if limit in (None, False):
                    continue
                value = rule.measure(t, base.get(t["name"]))
                if value is None:
                    continue
                checked += 1
                by_role[t["role"]] = by_role.get(t["role"], 0) + 1
                if rule.fails(value, limit):
                    failed += 1
                    message = _message(rule, value, limit)
                    failures.append(Failure(name, t["name"], t["role"], value, limit,
                                            f"{scheme}: {message}" if scheme else message, scheme))
        outcomes.append(RuleOutcome(name, threshold, source or "tensors override", checked, failed,
                                    rule.description, by_role))
    order = list(RULES)
    failures.sort(key=lambda f: (order.index(f.rule), -_excess(f), name_order(f.tensor)))  # worst offender first
    return outcomes, failures, warnings


def _entries(rule, measured: dict[str, Any], base_doc: dict[str, Any] | None, warnings: list[str]):
    """(scheme, tensor entries, baseline entries by name) to apply `rule` to."""
    if not rule.per_scheme:
        base = {t["name"]: t for t in base_doc["tensors"]} if base_doc else {}
        yield None, measured["analyze"]["tensors"], base
        return
    sim = measured.get("simulate") or {"schemes": []}
    base_schemes = {s["scheme"]: s for s in (base_doc or {}).get("schemes", [])}
    for s in sim["schemes"]:
        base_scheme = base_schemes.get(s["scheme"])
        if base_doc is not None and rule.needs.endswith("baseline") and base_scheme is None:
            warnings.append(f"{rule.name}: the baseline has no {s['scheme']} simulation; nothing to compare")
        base = {t["name"]: t for t in base_scheme["tensors"]} if base_scheme else {}
        yield s["scheme"], [t for t in s["tensors"] if t.get("error")], base


def _excess(f: Failure) -> float:
    limit = f.threshold if isinstance(f.threshold, (int, float)) and not isinstance(f.threshold, bool) else 0.0
    return abs(f.value - limit) / (abs(limit) or 1.0)


def _message(rule, value: float, limit: Any) -> str:
    if rule.direction == "flag":
        return f"{value:g} non-finite values"
    op = ">" if rule.direction == "max" else "<"
    return f"{value:.6g} {op} {limit:g}"


def check(source: str | Path | None = None, *, arch: str | None = None,
          norm_convention: NormConvention | str | None = None, token: str | None = None,
          cache_dir: Path | None = None, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
          progress: ProgressFn | None = None, jobs: int | None = 1, executor: Executor | str = "thread",
          ray_address: str | None = None, include: Sequence[str] = (), exclude: Sequence[str] = (),
          baseline: str | Path | dict | None = None, config_file: str | Path | None = None,
          use_pyproject: bool = True, cwd: Path | None = None, **rules: Any) -> CheckResult:
    """Check a checkpoint against rules.

    Args:
        source: what analyze accepts (path, hub id, example:NAME, None for the embedded model).
        arch, norm_convention, token, cache_dir, chunk_elements: as for `analyze`.
        include, exclude: globs on tensor names (HF, file or GGUF names): only these tensors are checked.
        baseline: an earlier analyze/check JSON (path or dict) for the drift rules.
        config_file: TOML with rule settings (overrides pyproject.toml).
        use_pyproject: read `[tool.normscope.check]` from the nearest pyproject.toml (from `cwd`).
        jobs, executor, ray_address: workers (1: none; None or 0: the cores available), "thread",
            "process" or "ray", and the Ray cluster, for the analysis (see `analyze`); results do not depend
            on them.
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
    settings = _settings(baseline, config_file, use_pyproject, cwd, rules)  # bad settings fail before any read
    with open_model(source, arch=arch, norm_convention=norm_convention, token=token, cache_dir=cache_dir,
                    progress=progress) as model:
        return _check(model, settings, dict(chunk_elements=chunk_elements, progress=progress, jobs=jobs,
                                            executor=executor, ray_address=ray_address, include=include,
                                            exclude=exclude))


def check_model(model: Model, *, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS, progress: ProgressFn | None = None,
                jobs: int | None = 1, executor: Executor | str = "thread", ray_address: str | None = None,
                include: Sequence[str] = (), exclude: Sequence[str] = (), baseline: str | Path | dict | None = None,
                config_file: str | Path | None = None, use_pyproject: bool = True, cwd: Path | None = None,
                **rules: Any) -> CheckResult:
    """`check` on an already open model."""
    return _check(model, _settings(baseline, config_file, use_pyproject, cwd, rules),
                  dict(chunk_elements=chunk_elements, progress=progress, jobs=jobs, executor=executor,
                       ray_address=ray_address, include=include, exclude=exclude))


def _settings(baseline: str | Path | dict | None, config_file: str | Path | None, use_pyproject: bool,
              cwd: Path | None, rules: dict[str, Any]) -> tuple[CheckConfig, dict | None, Any, list[str]]:
    """(config, baseline document, baseline path, schemes to simulate), every setting validated."""
    config = load_check_config(cwd=cwd, config_file=Path(config_file) if config_file else None,
                               use_pyproject=use_pyproject, overrides=rules)
    base_doc = baseline_measurements(baseline) if isinstance(baseline, dict) else None
    base_path = baseline if baseline is not None and not isinstance(baseline, dict) else config.baseline
    if base_path is not None:
        base_doc = load_baseline(base_path)
    schemes = [canonical_scheme(scheme) for scheme in simulate_schemes(config)]
    return config, base_doc, base_path, schemes


def _check(model: Model, settings: tuple[CheckConfig, dict | None, Any, list[str]], work: dict[str, Any]
           ) -> CheckResult:
    config, base_doc, base_path, schemes = settings
    measured: dict[str, Any] = {"analyze": analyze_model(model, **work).to_dict()}
    if schemes:
        measured["simulate"] = simulate_model(model, schemes, **work).to_dict()
    outcomes, failures, warnings = evaluate(measured, config, base_doc)
    model_warnings = list(measured["analyze"]["warnings"])
    model_warnings += [w for w in measured.get("simulate", {}).get("warnings", []) if w not in model_warnings]
    return CheckResult(source=model.source, passed=not failures, rules=tuple(outcomes), failures=tuple(failures),
                       overrides=config.overrides, baseline=str(base_path) if base_path else None,
                       measurements=measured, warnings=tuple(model_warnings) + tuple(warnings))
