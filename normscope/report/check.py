"""check results as terminal/Markdown tables, JUnit XML, and GitHub Actions annotations."""

from __future__ import annotations

from collections import defaultdict
from xml.etree import ElementTree as ET

from ..results import CheckResult
from .fmt import count, num, visible
from .markdown import md_table, md_verdict
from .tables import Table
from .terminal import render_tables
from .text import register_text, register_verdict

__all__ = ["check_tables", "check_terminal", "check_markdown", "check_junit", "check_annotations", "check_verdict"]


def _threshold(t) -> str:
    if isinstance(t, bool):
        return "on" if t else "off"
    if isinstance(t, dict):
        return ", ".join(f"{k} {num(v)}" for k, v in t.items())
    return num(t) if isinstance(t, (int, float)) else str(t)


def check_header(r: CheckResult) -> list[str]:
    verdict = "PASSED" if r.passed else f"FAILED: {len(r.failures)} failure(s)"
    lines = [f"normscope check {r.source.spec or r.source.path}: {verdict}"]
    if r.baseline:
        lines.append(f"baseline: {r.baseline}")
    return lines


def check_tables(r: CheckResult, top: int = 20) -> list[Table]:
    rules = Table("Rules", ("rule", "threshold", "from", "tensors checked", "failed"),
                  tuple((o.rule, _threshold(o.threshold), o.source, count(o.checked), count(o.failed))
                        for o in r.rules), "lllrr")
    shown = r.failures[:top]
    title = f"Failures (top {len(shown)} of {len(r.failures)})"
    if any(f.scheme for f in r.failures):  # quantization rules: say which simulated scheme failed
        fails = Table(title, ("rule", "scheme", "tensor", "value", "threshold"),
                      tuple((f.rule, f.scheme or "", f.tensor, num(f.value), _threshold(f.threshold)) for f in shown),
                      "lllrr")
    else:
        fails = Table(title, ("rule", "tensor", "value", "threshold"),
                      tuple((f.rule, f.tensor, num(f.value), _threshold(f.threshold)) for f in shown), "llrr")
    return [rules, fails]


def check_verdict(r: CheckResult) -> list[str]:
    """PASSED with what was checked, or one line per failing rule (most failures first, at most three) naming its
    worst offender against the threshold.

    Example:
        >>> check_verdict(normscope.check("gemma-3-270m-hf", max_effective_gamma=100))[0]  # doctest: +SKIP
        'FAILED max_effective_gamma on 45 of 109 tensors; worst model.layers.16.post_feedforward_layernorm.weight: ...'
    """
    if r.passed:
        return ["PASSED: every rule holds (" + ", ".join(f"{o.rule} on {count(o.checked)} tensors" for o in r.rules)
                + ")"]
    failing = sorted((o for o in r.rules if o.failed), key=lambda o: -o.failed)
    lines = []
    for o in failing[:3]:
        worst = next((f for f in r.failures if f.rule == o.rule), None)
        line = f"FAILED {o.rule} on {count(o.failed)} of {count(o.checked)} tensors"
        if worst is not None:
            under = f" under {worst.scheme}" if worst.scheme else ""
            line += f"; worst {worst.tensor}{under}: {num(worst.value)} against {_threshold(worst.threshold)}"
        lines.append(line)
    if len(failing) > 3:
        lines[-1] += f"; {len(failing) - 3} more rules failed"
    elif len(lines) < 3:
        lines.append("fix the checkpoint, or accept what is expected with a per-glob table in "
                     "[tool.normscope.check] (docs/check.md)")
    return lines


def check_terminal(r: CheckResult, top: int = 20, width: int = 120, color: bool = False) -> str:
    notes = [("warning", w) for w in r.warnings]
    return render_tables(check_header(r), check_tables(r, top), notes, width, color, verdict=check_verdict(r))


def check_markdown(r: CheckResult, top: int = 20) -> str:
    icon = "✅" if r.passed else "❌"
    parts = [f"## {icon} normscope check", ""] + md_verdict(check_verdict(r))
    parts += [f"- {visible(line)}" for line in check_header(r)]
    parts += [f"- **warning**: {visible(w)}" for w in r.warnings] + [""]
    parts += [md for t in check_tables(r, top) if (md := md_table(t))]
    return "\n".join(parts).rstrip() + "\n"


def check_junit(r: CheckResult) -> str:
    """JUnit XML: one test case per rule and tensor role (group), failures listing each tensor."""
    by_case: dict[tuple[str, str], list] = defaultdict(list)
    for f in r.failures:
        by_case[(f.rule, f.role)].append(f)
    cases = [(o.rule, role) for o in r.rules for role in sorted(o.checked_by_role)]
    suites = ET.Element("testsuites")
    suite = ET.SubElement(suites, "testsuite", name="normscope check", tests=str(len(cases)),
                          failures=str(sum(1 for c in cases if by_case.get(c))), errors="0", skipped="0",
                          time="0")
    props = ET.SubElement(suite, "properties")
    # XML 1.0 cannot hold most control characters (ElementTree writes them anyway, and CI parsers then reject the
    # whole file): names are shown as `visible` spells them
    ET.SubElement(props, "property", name="source", value=visible(r.source.spec or r.source.path))
    for rule, role in cases:
        case = ET.SubElement(suite, "testcase", classname=f"normscope.{rule}", name=f"{rule}[{role}]", time="0")
        bad = by_case.get((rule, role))
        if bad:
            first = f"{len(bad)} tensor(s) fail {rule}: {bad[0].tensor} {bad[0].message}"
            failure = ET.SubElement(case, "failure", type=rule, message=visible(first))
            failure.text = "\n".join(visible(f"{f.tensor}: {f.message}") for f in bad)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def _escape(text: str) -> str:
    # ref: GitHub Actions workflow commands: '%', CR and LF are escaped in messages
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def check_annotations(r: CheckResult, limit: int = 50) -> str:
    """GitHub Actions workflow commands: one ::error line per failure (first `limit`)."""
    lines = []
    for f in r.failures[:limit]:
        # stdout is a terminal (or a CI log that renders ANSI): the name is shown, never obeyed
        lines.append(f"::error title=normscope {f.rule}::{_escape(visible(f'{f.tensor}: {f.rule} {f.message}'))}")
    if len(r.failures) > limit:
        lines.append(f"::error title=normscope::{len(r.failures) - limit} more failures in the report")
    return "\n".join(lines) + ("\n" if lines else "")


register_text(CheckResult, terminal=check_terminal, markdown=check_markdown)
register_verdict(CheckResult, check_verdict)
