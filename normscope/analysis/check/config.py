"""Rule settings from their sources, later overriding earlier: defaults, `[tool.normscope.check]` in the
nearest pyproject.toml, `--config FILE`, then command-line flags / keyword arguments.

A settings table maps rule names to thresholds (`false` turns a rule off); its `tensors` sub-table maps
globs to tables of the same kind, applied to the tensors they match (the last matching glob wins).
`baseline = "path.json"` may name a baseline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import ConfigError, UnknownNameError
from ...io.config import find_pyproject, load_toml, tool_section
from .rules import RULES, CheckRule, get_rule

__all__ = ["CheckConfig", "load_check_config", "parse_flags"]


@dataclass
class CheckConfig:
    """Effective settings: rule -> (threshold, source); glob -> {rule: threshold}."""

    rules: dict[str, tuple[Any, str]] = field(default_factory=dict)
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    baseline: str | None = None

    def apply(self, table: dict[str, Any], source: str) -> None:
        for key, value in table.items():
            if key == "tensors":
                if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
                    raise ConfigError(f"{source}: 'tensors' must map globs to tables of rule thresholds")
                for glob, rules in value.items():
                    self.overrides.setdefault(glob, {}).update(
                        {get_rule(k).name: _validate(k, v, f"{source} [tensors.{glob!r}]") for k, v in rules.items()})
            elif key == "baseline":
                if not isinstance(value, str):
                    raise ConfigError(f"{source}: baseline must be a path string")
                self.baseline = value
            else:
                rule = _rule(key, source)
                self.rules[rule.name] = (_validate(key, value, source), source)

    def threshold_for(self, rule: str, tensor: str, matches) -> Any:
        """The threshold of `rule` for `tensor`: the last matching glob override, else the global one."""
        value = self.rules.get(rule, (None, ""))[0]
        for glob, table in self.overrides.items():
            if rule in table and matches(tensor, glob):
                value = table[rule]
        return value


def _rule(key: str, source: str) -> CheckRule:
    try:
        return get_rule(key)
    except UnknownNameError:  # say where the bad name was found
        raise UnknownNameError(f"rule (in {source})", key, RULES) from None


def _validate(key: str, value: Any, source: str) -> Any:
    rule = get_rule(key)
    if value is False or value is None:
        return False
    if rule.direction == "flag":
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {rule.name} takes true or false, got {value!r}")
        return value
    if rule.per_scheme:
        if not isinstance(value, dict) or not all(_is_number(v) for v in value.values()):
            raise ConfigError(f"{source}: {rule.name} takes a table of scheme = number, e.g. "
                              f"{{ Q4_K_M = 20 }}, got {value!r}")
        return {str(k): float(v) for k, v in value.items()}
    if not _is_number(value):
        raise ConfigError(f"{source}: {rule.name} takes a number (or false), got {value!r}")
    return float(value)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def load_check_config(*, cwd: Path | None = None, config_file: Path | None = None,
                      use_pyproject: bool = True, overrides: dict[str, Any] | None = None) -> CheckConfig:
    """Merge the rule sources in order.

    Args:
        cwd: where to look for pyproject.toml (and its parents); None: the current directory.
        config_file: a TOML file with the same keys (top level, or under [tool.normscope.check]).
        use_pyproject: False to ignore pyproject.toml.
        overrides: rule -> threshold from flags or keyword arguments (None values are ignored).

    Raises:
        ConfigError, UnknownNameError: naming the source of the bad setting.
    """
    config = CheckConfig()
    config.apply({name: rule.default for name, rule in RULES.items() if rule.default is not None}, "default")
    if use_pyproject:
        pyproject = find_pyproject(cwd or Path.cwd())
        if pyproject is not None:
            config.apply(tool_section(load_toml(pyproject), "check", where=pyproject), str(pyproject))
    if config_file is not None:
        data = load_toml(Path(config_file))
        section = tool_section(data, "check", where=Path(config_file)) if "tool" in data else data
        config.apply(section, str(config_file))
    if overrides:
        config.apply({k: v for k, v in overrides.items() if v is not None}, "flag")
    return config


def _number(text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{where}: {text!r} is not a number") from None


def _scheme_values(option: str, pairs: Sequence[str]) -> dict[str, float]:
    """`--min-sqnr Q4_K_M=20 --min-sqnr int4=12` as {"Q4_K_M": 20.0, "int4": 12.0}."""
    out: dict[str, float] = {}
    for pair in pairs:
        scheme, sep, value = pair.partition("=")
        if not sep or not scheme.strip():
            raise ConfigError(f"{option} {pair!r}: expected SCHEME=VALUE, e.g. {option} Q4_K_M=20")
        out[scheme.strip()] = _number(value, f"{option} {pair!r}")
    return out


def _rule_pairs(pairs: Sequence[str]) -> dict[str, float | bool | dict[str, float]]:
    out: dict[str, float | bool | dict[str, float]] = {}
    for pair in pairs:
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


def parse_flags(flags: Mapping[str, Any], rule_pairs: Sequence[str] = ()) -> dict[str, Any]:
    """Rule settings from command-line flags, as the TOML sources give them (then validated alike).

    Args:
        flags: rule name -> the flag's value: a number, a bool, None (not given), or for the per-scheme
            rules a list of "SCHEME=VALUE" strings (`--min-sqnr Q4_K_M=20`).
        rule_pairs: `--rule NAME=VALUE` strings; VALUE is a number, true/false/off, or SCHEME:NUMBER.

    Raises:
        ConfigError: a malformed value, naming the flag.
    """
    out: dict[str, Any] = {}
    for name, value in flags.items():
        if value is None or value == []:
            continue
        if get_rule(name).per_scheme and isinstance(value, (list, tuple)):
            value = _scheme_values("--" + name.replace("_", "-"), [str(v) for v in value])
        out[name] = value
    out.update(_rule_pairs(rule_pairs))
    return out
