"""One-line checkpoint gates for a test suite.

    from normscope.testing import assert_checkpoint

    def test_release_checkpoint():
        assert_checkpoint("out/final", max_effective_gamma=2000, max_kurtosis=200)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .analysis.check.command import check
from .results import CheckResult

__all__ = ["assert_checkpoint"]


def assert_checkpoint(source: str | Path | None, *, show: int = 10, **kwargs: Any) -> CheckResult:
    """Run `normscope.check(source, **kwargs)` and raise AssertionError listing the failures.

    Args:
        source: what `normscope.check` accepts.
        show: how many failures the assertion message lists.
        **kwargs: rule thresholds and check options (baseline=, config_file=, use_pyproject=, …).

    Returns:
        The CheckResult, when every rule holds.

    Example:
        >>> assert_checkpoint("example:gemma3-270m", max_effective_gamma=2000)  # doctest: +SKIP
    """
    result = check(source, **kwargs)
    if not result.passed:
        lines = [f"{f.rule}: {f.tensor}: {f.message}" for f in result.failures[:show]]
        more = len(result.failures) - show
        if more > 0:
            lines.append(f"… and {more} more")
        raise AssertionError(f"checkpoint {result.source.spec or result.source.path} fails "
                             f"{len(result.failures)} check(s):\n  " + "\n  ".join(lines))
    return result
