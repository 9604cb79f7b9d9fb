"""normscope's plans against llama.cpp itself: `llama_model_quantize` (llama-cpp-python) run on an F32 GGUF of the
real Gemma 3 270M, for every file type llama.cpp has.

- every file type, as llama-quantize --dry-run plans it (no data quantized: each takes ~2 s), without an
  importance matrix and, for the file types whose rules read `has_imatrix` (and two that have none), with one
  passed through the C API (llama_model_imatrix_data of ones): types and bytes equal tensor for tensor, and
  whether llama.cpp would refuse the file without an imatrix;
- a set of file types written for real (each quantization of the 1 GB F32 file costs ~20-60 s on two cores),
  one per family of rules the dry runs do not already share with the published Q4_K_M file: the file
  llama.cpp wrote, read back by gguf-py, equals the plan tensor for tensor, and in total bytes.

Each oracle answer is cached in the test cache (one small JSON per run, keyed by llama-cpp-python's version).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import real_models
from normscope.io.gguf_file import read_gguf_header
from normscope.quant import FILE_TYPES, ModelFacts, check_imatrix, plan_types
from normscope.quant.schemes import IMATRIX_RULES

GEMMA = ModelFacts("gemma3", n_layer=18, n_head=4, n_head_kv=1)
ROOT = Path(__file__).resolve().parents[2]
ORACLE = Path(__file__).with_name("llama_oracle.py")
# written for real: one per family of new rules (IQ4 and IQ3_XXS without an imatrix, ternary, MXFP4_MOE)
WRITTEN = ("IQ4_XS", "IQ3_XXS", "TQ1_0", "MXFP4_MOE")
# file types this llama.cpp (llama-cpp-python 0.3.36) does not make: its llama_ftype_get_default_type has no
# case for them ("invalid output file type"); their plans follow the current source (docs/quantization.md)
NOT_MADE = ("NVFP4",)
WITH_IMATRIX = (*IMATRIX_RULES, "IQ2_XXS", "Q4_K_M")


@pytest.fixture(scope="module")
def f32_gguf(gemma_gguf) -> Path:
    pytest.importorskip("llama_cpp", reason="needs llama-cpp-python (the test extra)")
    return real_models.gemma_f32_gguf()


@pytest.fixture(scope="module")
def tensors(f32_gguf):
    return [(e.name, e.shape) for e in read_gguf_header(f32_gguf)[1]]


def oracle(f32: Path, ftype: str, *, imatrix: bool = False, dry_run: bool = True, pure: bool = False) -> dict:
    """llama.cpp's plan ({"status", "log", "tensors": {name: [type, bytes]}}), cached in the test cache."""
    import llama_cpp

    flags = [f for f, on in (("--imatrix", imatrix), ("--dry-run", dry_run), ("--pure", pure)) if on]
    key = "-".join([ftype, *(f.strip("-") for f in flags)])
    target = real_models.cache_dir() / f"llama-plans-{llama_cpp.__version__}-{f32.stem}" / f"{key}.json"
    if target.is_file():
        return json.loads(target.read_text())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{key}.{os.getpid()}.json")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(ORACLE), str(f32), str(tmp), ftype, *flags], capture_output=True,
                          text=True, env=env, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-2000:]
    os.replace(tmp, target)
    return json.loads(target.read_text())


def _ours(tensors, ftype: str, **kw) -> dict[str, list]:
    from normscope.quant import get_format

    plan = plan_types(tensors, ftype, GEMMA, **kw)
    shapes = dict(tensors)
    return {name: [p.type or "F32", get_format(p.type or "F32").nbytes(shapes[name])] for name, p in plan.items()}


def _diff(ours: dict, theirs: dict) -> list:
    return [(n, ours.get(n), theirs.get(n)) for n in sorted(set(ours) | set(theirs)) if ours.get(n) != theirs.get(n)]


ALL = [ft for ft in FILE_TYPES if ft != "F32"]


@pytest.mark.parametrize("ftype", ALL)
def test_every_file_type_plans_as_llama_cpp_without_an_imatrix(f32_gguf, tensors, ftype):
    theirs = oracle(f32_gguf, ftype)
    if ftype in NOT_MADE:
        assert theirs["status"] != 0 and any("invalid output file type" in line for line in theirs["log"])
        return
    assert theirs["status"] == 0, theirs["log"]
    assert _diff(_ours(tensors, ftype), theirs["tensors"]) == []
    # llama.cpp's dry run warns when the real run would stop for want of an imatrix; normscope refuses the same
    plan = plan_types(tensors, ftype, GEMMA)
    needs = any("will require an imatrix" in line for line in theirs["log"])
    assert any(p.requires_imatrix for p in plan.values()) == needs
    if needs:
        with pytest.raises(Exception, match="normscope imatrix collect"):
            check_imatrix(ftype, plan, has_imatrix=False)


@pytest.mark.parametrize("ftype", WITH_IMATRIX)
def test_file_types_plan_as_llama_cpp_with_an_imatrix(f32_gguf, tensors, ftype):
    theirs = oracle(f32_gguf, ftype, imatrix=True)
    assert theirs["status"] == 0, theirs["log"]
    assert _diff(_ours(tensors, ftype, has_imatrix=True), theirs["tensors"]) == []


def test_the_imatrix_changes_these_plans_on_gemma(f32_gguf, tensors):
    """The has_imatrix rules fire on this model: the two plans differ where llama.cpp's source says."""
    for ftype, changed in (("IQ4_XS", {"blk.0.ffn_down.weight": ("Q5_K", "IQ4_XS")}),
                           ("Q4_0", {"blk.0.ffn_down.weight": ("Q4_0", "Q4_1")}),
                           ("IQ3_XXS", {"blk.0.ffn_down.weight": ("Q4_K", "IQ3_XXS"),
                                        "blk.5.ffn_down.weight": ("Q3_K", "IQ3_XXS")})):
        without, with_ = _ours(tensors, ftype), _ours(tensors, ftype, has_imatrix=True)
        assert {n: (without[n][0], with_[n][0]) for n in changed} == changed


def test_mxfp4_scheme_is_llama_quantize_pure(f32_gguf, tensors):
    theirs = oracle(f32_gguf, "MXFP4_MOE", pure=True)
    assert theirs["status"] == 0, theirs["log"]
    ours = _ours(tensors, "MXFP4_MOE", pure=True)
    assert _diff(ours, theirs["tensors"]) == []
    assert Counter(t for t, _ in ours.values()) == {"F32": 109, "MXFP4": 127}


@pytest.mark.parametrize("ftype", WRITTEN)
def test_written_files_equal_the_plan(f32_gguf, tensors, ftype):
    theirs = oracle(f32_gguf, ftype, dry_run=False)
    assert theirs["status"] == 0, theirs["log"]
    ours = _ours(tensors, ftype)
    assert _diff(ours, theirs["tensors"]) == []
    assert sum(b for _, b in ours.values()) == sum(b for _, b in theirs["tensors"].values())


def test_file_types_llama_cpp_refuses_without_an_imatrix_are_refused(f32_gguf, tensors):
    """A real run of IQ2_M stops for want of an imatrix, as normscope's plan says it would."""
    theirs = oracle(f32_gguf, "IQ2_M", dry_run=False)
    assert theirs["status"] != 0 and any("imatrix" in line for line in theirs["log"])
    plan = plan_types(tensors, "IQ2_M", GEMMA)
    assert any(p.requires_imatrix for p in plan.values())
