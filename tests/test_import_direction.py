"""The arrows of STYLE.md: errors/results <- io, quant <- arch <- analysis <- report <- cli (`upstream`,
the toolchains' rules that io and quant both apply, sits beside results).

Every `normscope.X` import is checked: a module may import its own subpackage and anything of a
strictly lower layer, never a sibling of the same layer (io and quant stay independent) or a
higher one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import normscope

ROOT = Path(normscope.__file__).parent
LAYER = {"errors": 0, "_kernels": 0, "results": 1, "upstream": 1, "io": 2, "quant": 2, "arch": 3, "analysis": 4, "report": 5, "cli": 6,
         "__init__": 7, "__main__": 7, "testing": 7}


def _layer_of(parts: tuple[str, ...]) -> str:
    return parts[0].removesuffix(".py") if parts else "__init__"


def _imports(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = path.relative_to(ROOT.parent).with_suffix("").parts
    package = package[:-1] if package[-1] != "__init__" else package[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = (*base, *(node.module.split(".") if node.module else ()))
                if not node.module:  # from . import x
                    found += [((*target, a.name), node.lineno) for a in node.names]
                    continue
            elif node.module and node.module.split(".")[0] == "normscope":
                target = tuple(node.module.split("."))
            else:
                continue
            found.append((target, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(tuple(a.name.split(".")), node.lineno) for a in node.names if a.name.startswith("normscope")]
    return [(".".join(t), line) for t, line in found]


def test_every_module_has_a_layer():
    for path in ROOT.rglob("*.py"):
        assert _layer_of(path.relative_to(ROOT).parts) in LAYER, f"{path}: add its layer to LAYER"


def test_imports_point_down():
    bad = []
    for path in ROOT.rglob("*.py"):
        here = _layer_of(path.relative_to(ROOT).parts)
        for target, line in _imports(path):
            parts = target.split(".")[1:]
            there = parts[0] if parts else "__init__"
            if there == here:
                continue
            if there not in LAYER or LAYER[there] >= LAYER[here]:
                bad.append(f"{path.relative_to(ROOT.parent)}:{line} ({here}) imports {target} ({there})")
    assert not bad, "imports against the arrows:\n" + "\n".join(bad)


# Inside analysis: metrics <- engine <- the commands. A command may use another command only through that
# command's package (its public API: check runs analyze and simulate), never its modules, and never the
# `normscope.analysis` package itself (which imports every command).
ANALYSIS = ROOT / "analysis"
INNER = {"metrics": 0, "engine": 1}
COMMANDS = {"analyze", "simulate", "compare", "clip", "check", "recipe", "forward", "imatrix"}


def _inner(parts: list[str]) -> str | None:
    """The analysis part a dotted name (after `normscope.analysis`) belongs to."""
    if not parts:
        return None
    return parts[0].removesuffix(".py")


def test_every_analysis_module_has_a_place():
    for path in ANALYSIS.rglob("*.py"):
        rel = path.relative_to(ANALYSIS).parts
        if rel == ("__init__.py",):
            continue
        assert _inner(list(rel)) in INNER or _inner(list(rel)) in COMMANDS, f"{path}: not in metrics, engine or a command"


def test_analysis_imports_point_down():
    bad = []
    for path in ANALYSIS.rglob("*.py"):
        rel = path.relative_to(ANALYSIS).parts
        if rel == ("__init__.py",):
            continue
        here = _inner(list(rel))
        for target, line in _imports(path):
            parts = target.split(".")
            if parts[:2] != ["normscope", "analysis"]:
                continue
            rest = parts[2:]
            there = _inner(rest)
            where = f"{path.relative_to(ROOT.parent)}:{line} imports {target}"
            if there is None:
                bad.append(f"{where} (the analysis package imports every command)")
            elif there == here:
                continue
            elif here in INNER:
                if there not in INNER or INNER[there] >= INNER[here]:
                    bad.append(f"{where} ({here} may import only lower layers)")
            elif there in COMMANDS and len(rest) > 1:
                bad.append(f"{where} (another command's module: use its package)")
    assert not bad, "imports against the arrows inside analysis:\n" + "\n".join(bad)


def test_commands_use_each_other_without_cycles():
    uses: dict[str, set[str]] = {c: set() for c in COMMANDS}
    for path in ANALYSIS.rglob("*.py"):
        here = _inner(list(path.relative_to(ANALYSIS).parts))
        if here not in COMMANDS:
            continue
        for target, _ in _imports(path):
            parts = target.split(".")
            if parts[:2] == ["normscope", "analysis"] and _inner(parts[2:]) in COMMANDS - {here}:
                uses[here].add(_inner(parts[2:]))
    seen: list[str] = []

    def visit(c: str, path: tuple[str, ...]) -> None:
        assert c not in path, f"commands import each other in a cycle: {' -> '.join((*path, c))}"
        for d in sorted(uses[c]):
            visit(d, (*path, c))
        seen.append(c)

    for c in sorted(COMMANDS):
        visit(c, ())
