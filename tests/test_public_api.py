"""The public names: every module says what it exports (`__all__`, complete for its public classes), the
result types are all importable from `normscope.results`, and every command has one opening shape."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

import normscope
import normscope.results

ROOT = Path(normscope.__file__).parent
MODULES = sorted(p for p in ROOT.rglob("*.py") if p.name != "__main__.py")
COMMANDS = ["analyze", "simulate", "compare", "clip", "clip_sweep", "check", "recipe", "forward"]
OPENING = ["arch", "norm_convention", "token", "cache_dir", "chunk_elements", "progress", "jobs", "executor",
           "ray_address"]


def _dotted(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_public_class_is_in_its_modules_all(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef) and not n.name.startswith("_")]
    if not classes:
        return
    module = importlib.import_module(_dotted(path))
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{path}: defines {classes} but has no __all__"
    missing = [c for c in classes if c not in exported]
    assert not missing, f"{path}: public classes missing from __all__: {missing}"


def test_all_names_exist():
    for path in MODULES:
        module = importlib.import_module(_dotted(path))
        for name in getattr(module, "__all__", ()):
            assert hasattr(module, name), f"{_dotted(path)}.__all__ names {name!r}, which it does not define"


def test_every_result_type_is_importable_from_normscope_results():
    for path in sorted((ROOT / "results").glob("*.py")):
        module = importlib.import_module(_dotted(path))
        for name in getattr(module, "__all__", ()):
            assert name in normscope.results.__all__, f"normscope.results does not export {name} ({path.name})"
            assert getattr(normscope.results, name) is getattr(module, name)


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_the_opening_signature_and_a_model_form(name):
    fn = getattr(normscope, name)
    params = inspect.signature(fn).parameters
    first = next(iter(params.values()))
    assert first.name in ("source", "base", "sources") and first.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    missing = [p for p in OPENING if p not in params]
    assert not missing, f"normscope.{name} lacks {missing}"
    model_form = getattr(normscope, f"{name}_model", None) or getattr(normscope, f"{name}_models", None)
    assert model_form is not None, f"normscope.{name} has no exported form taking an open model"
    assert name in normscope.__all__ and model_form.__name__ in normscope.__all__
