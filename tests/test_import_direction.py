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
