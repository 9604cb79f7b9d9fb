"""map_tensors: results in input order and identical whatever the workers (threads, processes, Ray);
groups by shard and bytes; errors and progress come back; `--jobs` and every `--executor` give the
JSON of `--jobs 1`."""

from __future__ import annotations

import functools
import json
import pickle
import sys

import numpy as np
import pytest

from helpers import GEMMA_CONFIG, gemma_tensors, write_model
from normscope import analyze
from normscope.analysis.engine import workers
from normscope.analysis.analyze.command import analyze_tensor
from normscope.analysis.engine.model import open_model
from normscope.analysis.engine.parallel import map_tensors
from normscope.analysis.engine.workers import ModelOpener, group_tensors, resolve_jobs
from normscope.cli import main
from normscope.errors import CheckpointError, ConfigError, MissingExtraError, UnknownNameError


EXECUTORS = ("thread", "process")  # the local ones; Ray has its own tests below


def checksum(model, info, scale=1.0):
    """A picklable work function: a float64 sum of the tensor, and which process and thread computed it."""
    import os
    import threading

    total = sum(float(v.sum(dtype=np.float64)) for _, v in model.iter_values(info, 1000))
    return info.name, total * scale, (os.getpid(), threading.current_thread().name)


def slow_checksum(model, info):
    import time

    time.sleep(0.02)
    return checksum(model, info)


def fail_on_embedding(model, info):
    if "embed" in info.name:
        raise CheckpointError(f"{info.name}: refused on purpose")
    return info.name


@pytest.fixture
def sharded(tmp_path):
    return write_model(tmp_path / "m", gemma_tensors(layers=4), GEMMA_CONFIG, "BF16", shards=3)


@pytest.fixture
def always_parallel(monkeypatch):
    monkeypatch.setattr(workers, "MIN_PARALLEL_BYTES", 0)  # tiny models too go to the workers


@pytest.mark.parametrize("executor", EXECUTORS)
def test_results_in_input_order_and_identical_whatever_the_jobs(sharded, always_parallel, executor):
    with open_model(sharded) as model:
        infos = list(reversed(model.tensors))
        work = functools.partial(checksum, scale=2.0)
        one = map_tensors(ModelOpener.of(model), model, infos, work, jobs=1, executor=executor)
        two = map_tensors(ModelOpener.of(model), model, infos, work, jobs=2, executor=executor)
    assert [r[:2] for r in one] == [r[:2] for r in two]
    assert [r[0] for r in two] == [t.name for t in infos]
    assert len({r[2] for r in two}) == 2 and not {r[2] for r in one} & {r[2] for r in two}  # really elsewhere
    pids = {pid for _, _, (pid, _) in two}
    if executor == "thread":  # two threads of this process, each with its own open model
        assert pids == {one[0][2][0]} and all(name.startswith("normscope") for _, _, (_, name) in two)
    else:
        assert len(pids) == 2


def test_analyze_json_is_identical_for_jobs_1_2_and_0(sharded, always_parallel):
    docs = []
    for jobs, executor in ((1, "thread"), (2, "thread"), (0, "thread"), (None, "thread"), (2, "process")):
        d = analyze(sharded, jobs=jobs, chunk_elements=300, executor=executor).to_dict()
        docs.append(json.dumps(d, sort_keys=True))
    assert len(set(docs)) == 1


def test_groups_stay_in_one_shard_and_balance_bytes(sharded):
    with open_model(sharded) as model:
        infos = list(model.tensors)
        groups = group_tensors(model, infos, 2)
        assert sorted(i for g in groups for i in g) == list(range(len(infos)))
        for g in groups:
            assert len({model.entry(infos[i]).file for i in g}) == 1
            offsets = [model.entry(infos[i]).offset for i in g]
            assert offsets == sorted(offsets)  # file order inside a group
        sizes = [sum(infos[i].nbytes for i in g) for g in groups]
        assert sizes == sorted(sizes, reverse=True)  # largest first
        target = sum(t.nbytes for t in infos) / (2 * workers.GROUPS_PER_JOB)
        assert all(s <= target or len(g) == 1 for s, g in zip(sizes, groups))


@pytest.mark.parametrize("executor", EXECUTORS)
def test_progress_reaches_the_total(sharded, always_parallel, executor):
    with open_model(sharded) as model:
        total = sum(t.nbytes for t in model.tensors)
        for jobs in (1, 2):
            seen = []
            map_tensors(ModelOpener.of(model), model, model.tensors, checksum, jobs=jobs, executor=executor,
                        progress=lambda name, done, tot: seen.append((done, tot)))
            dones = [d for d, _ in seen]
            assert dones == sorted(dones) and seen[-1] == (total, total) and {t for _, t in seen} == {total}


@pytest.mark.parametrize("executor", EXECUTORS)
def test_worker_errors_come_back_as_themselves(sharded, always_parallel, executor):
    with open_model(sharded) as model:
        with pytest.raises(CheckpointError, match="model.embed_tokens.weight: refused on purpose"):
            map_tensors(ModelOpener.of(model), model, model.tensors, fail_on_embedding, jobs=2, executor=executor)


def test_opener_is_picklable_and_carries_the_overrides(sharded):
    with open_model(sharded, arch="llama", norm_convention="w") as model:
        opener = ModelOpener.of(model)
    assert opener == ModelOpener(str(sharded), arch="llama", norm_convention="w")
    again = pickle.loads(pickle.dumps(opener))
    with again.open() as m:
        assert m.detected.spec.name == "llama" and m.detected.source == "override"


def test_jobs_and_executor_are_checked(sharded):
    assert resolve_jobs(None) == resolve_jobs(0) == workers.available_cores() >= 1
    with pytest.raises(ConfigError, match="jobs=-1"):
        resolve_jobs(-1)
    with open_model(sharded) as model:
        with pytest.raises(UnknownNameError, match="unknown executor 'dask'; valid: process, ray, thread"):
            map_tensors(ModelOpener.of(model), model, model.tensors, checksum, executor="dask")


def test_missing_ray_names_the_extra(sharded, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(SystemExit) as exc:
        main(["analyze", str(sharded), "--executor", "ray", "-q"])
    assert exc.value.code == 2
    assert capsys.readouterr().err == ("normscope: error: executor 'ray' needs Ray, which is not installed: "
                                       "pip install 'normscope[ray]'\n")
    with open_model(sharded) as model, pytest.raises(MissingExtraError):
        map_tensors(ModelOpener.of(model), model, model.tensors, checksum, executor="ray")


def test_check_jobs_give_the_same_result(sharded, always_parallel):
    from normscope import check

    one = check(sharded, jobs=1, use_pyproject=False, max_effective_gamma=100).to_dict()
    two = check(sharded, jobs=2, use_pyproject=False, max_effective_gamma=100).to_dict()
    assert json.dumps(one, sort_keys=True) == json.dumps(two, sort_keys=True) and not one["passed"]


# -- the real Gemma 3 270M export, through the CLI ---------------------------------------------------
def _cli_json(args, tmp_path, capsys, name):
    out = tmp_path / name
    with pytest.raises(SystemExit) as exc:
        main(["analyze", *args, "--json", str(out), "-q"])
    assert exc.value.code == 0, capsys.readouterr().err
    return out.read_text()


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason="the ray extra (installed by the test extra)")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_gemma_jobs_and_ray_give_the_same_json(gemma_hf, tmp_path, capsys, local_ray):
    one = _cli_json([str(gemma_hf), "--jobs", "1"], tmp_path, capsys, "one.json")
    two = _cli_json([str(gemma_hf), "--jobs", "2"], tmp_path, capsys, "two.json")
    procs = _cli_json([str(gemma_hf), "--jobs", "2", "--executor", "process"], tmp_path, capsys, "procs.json")
    ray = _cli_json([str(gemma_hf), "--executor", "ray"], tmp_path, capsys, "ray.json")
    assert one == two == procs == ray
    assert json.loads(one)["summary"]["n_tensors"] == 236


def test_work_runs_as_ray_tasks(sharded, local_ray):
    with open_model(sharded) as model:
        got = map_tensors(ModelOpener.of(model), model, model.tensors, functools.partial(analyze_tensor, top_k=3),
                          executor="ray", jobs=2)
        want = [analyze_tensor(model, t, top_k=3) for t in model.tensors]
    assert got == want


def test_a_tensor_split_across_workers_gives_the_numbers_of_one(tmp_path, always_parallel, monkeypatch):
    from normscope.analysis.analyze.parts import TensorPart, cut, is_norm_read

    def split_large(model, infos, workers, chunk_elements):  # every weight in two parts, to test the parts
        return [p for t in infos for p in (cut(t, 2, model.n_chunks(t, chunk_elements)) if not is_norm_read(t)
                                           else [t])]

    monkeypatch.setattr(sys.modules["normscope.analysis.analyze.command"], "split_large", split_large)

    rng = np.random.default_rng(3)
    heavy = rng.standard_t(2.5, (600, 64)).astype(np.float32)
    heavy[7, 3], heavy[300, 5], heavy[450, 0] = np.nan, np.inf, -np.inf
    shifted = rng.normal(0.5, 0.02, (600, 64))  # mean far above σ: the shift K is taken
    drifting = np.concatenate([rng.normal(0, 1, (10, 64)), rng.normal(0, 0.01, (590, 64))])  # τ too high: recount
    tensors = {"model.layers.0.mlp.down_proj.weight": heavy, "model.layers.0.mlp.up_proj.weight": shifted,
               "model.layers.0.mlp.gate_proj.weight": drifting}
    model_dir = write_model(tmp_path / "m", tensors, dict(GEMMA_CONFIG, num_hidden_layers=1), "F32")
    with open_model(model_dir) as model:
        items = split_large(model, list(model.tensors), 2, 640)
    assert sum(isinstance(i, TensorPart) for i in items) == 6  # each tensor in two parts
    for sigma in (6.0, 2.0):
        one = analyze(model_dir, jobs=1, chunk_elements=640, outlier_sigma=sigma).to_dict()
        for executor in EXECUTORS:
            two = analyze(model_dir, jobs=2, chunk_elements=640, outlier_sigma=sigma, executor=executor).to_dict()
            assert json.dumps(one, sort_keys=True) == json.dumps(two, sort_keys=True)
    w = {t["name"]: t["weight"] for t in one["tensors"]}
    assert w["model.layers.0.mlp.down_proj.weight"]["nan_count"] == 1
    assert w["model.layers.0.mlp.down_proj.weight"]["inf_count"] == 2


def test_tensors_are_cut_only_when_the_work_cannot_balance_without(tmp_path):
    """One tensor three times the rest together is cut; a tensor next to as much other work is not (its
    worker does it while the other does the rest); every part is a range of chunks, in order."""
    from normscope.analysis.analyze.parts import TENSOR_COST_BYTES, TensorPart, split_large

    rng = np.random.default_rng(0)
    small = {f"model.layers.{i}.mlp.up_proj.weight": rng.normal(0, 0.02, (64, 64)).astype(np.float32)
             for i in range(4)}
    mib = TENSOR_COST_BYTES // 1024  # rows of 256 float32 in one tensor's fixed cost
    # 48 MiB against four small tensors (~4 units of work): cut in two; 3 MiB (4 units with its own): not cut
    for rows, want in ((48 * mib, 2), (3 * mib, 1)):
        tensors = {**small, "model.embed_tokens.weight": rng.normal(0, 0.02, (rows, 256)).astype(np.float32)}
        d = write_model(tmp_path / f"m{rows}", tensors, dict(GEMMA_CONFIG, num_hidden_layers=4), "F32")
        with open_model(d) as model:
            items = split_large(model, list(model.tensors), 2, 256 * 64)
            embed = next(t for t in model.tensors if t.name == "model.embed_tokens.weight")
            n_chunks = model.n_chunks(embed, 256 * 64)
        cut = [i for i in items if isinstance(i, TensorPart)]
        assert len(cut) == (want if want > 1 else 0)
        if cut:
            assert [(p.first, p.stop) for p in cut] == [(0, n_chunks // 2), (n_chunks // 2, n_chunks)]
        assert len(items) == len(tensors) - 1 + max(want, 1)


def test_a_thread_that_cannot_open_the_model_reports_why(sharded, always_parallel, monkeypatch):
    """The first thread works on the caller's model; the second opens its own. When that open fails, the
    error raised is the open's (not a later one from a thread without a model), and no model leaks."""
    def refuse(opener, local):
        raise CheckpointError(f"{local}: cannot open (on purpose)")

    monkeypatch.setattr(workers, "open_for_worker", refuse)
    switch = sys.getswitchinterval()
    with open_model(sharded) as model:
        with pytest.raises(CheckpointError, match="cannot open"):
            # slow work, so the first thread cannot take every group before the second starts
            map_tensors(ModelOpener.of(model), model, model.tensors, slow_checksum, jobs=2, executor="thread")
        assert map_tensors(ModelOpener.of(model), model, model.tensors[:3], checksum, jobs=1)  # still usable
    assert sys.getswitchinterval() == switch
