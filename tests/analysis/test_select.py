"""Every command selects tensors the same way: `--include`/`--exclude` globs match a tensor's HF name, its
name in the file, or its GGUF name (analyze once matched only the first two, so `blk.1.*` selected tensors
of a safetensors model in simulate and compare but not in analyze)."""

from __future__ import annotations

import fnmatch

import pytest

from helpers import GEMMA_CONFIG, gemma_tensors, write_model
from normscope import analyze, check, clip, clip_sweep, compare, open_model, simulate

GLOBS = [(["blk.1.*"], []), (["*.mlp.*"], []), ([], ["blk.0.*", "*norm*"]), (["model.layers.1.*"], ["*attn_v*"])]


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    return write_model(tmp_path_factory.mktemp("select") / "m", gemma_tensors(hidden=256, ffn=512), GEMMA_CONFIG)


def _expected(model_dir, include, exclude) -> set[str]:
    with open_model(model_dir) as model:
        out = set()
        for t in model.tensors:
            names = [n for n in (t.name, t.source_name, t.gguf_name) if n]
            if include and not any(fnmatch.fnmatchcase(n, p) for n in names for p in include):
                continue
            if any(fnmatch.fnmatchcase(n, p) for n in names for p in exclude):
                continue
            out.add(t.name)
    return out


@pytest.mark.parametrize("include,exclude", GLOBS, ids=["gguf-name", "hf-glob", "exclude-gguf", "mixed"])
def test_every_command_selects_the_same_tensors(gemma, include, exclude):
    want = _expected(gemma, include, exclude)
    assert want, "the globs must select something"
    sel = dict(include=include, exclude=exclude)
    assert {t.name for t in analyze(gemma, **sel).tensors} == want
    assert {t.name for t in simulate(gemma, schemes="Q8_0", **sel).scheme("Q8_0").tensors} == want
    pair = compare([gemma, gemma], **sel).pairs[0]
    assert {d.name for d in pair.tensors} == want
    measured = check(gemma, use_pyproject=False, max_kurtosis=1e9, **sel).measurements["analyze"]
    assert {t["name"] for t in measured["tensors"]} == want
    in_clip = {t.name for t in clip(gemma, 99.0, dry_run=True, scope="all", **sel).tensors}
    assert in_clip <= want
    swept = {t.tensor for t in clip_sweep(gemma, "99", schemes="Q8_0", scope="all", **sel).tensors}
    assert swept <= want and swept
