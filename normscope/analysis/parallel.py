"""Per-tensor work mapped over threads, worker processes or Ray tasks, results back in input order.

`map_tensors(opener, model, infos, work)` runs `work(model, info)` for every tensor and returns the
results in the order of `infos`, identical whatever the number of workers: the work on one tensor
never depends on where or next to what it runs. jobs=1 runs in this thread on the model already
open; otherwise tensors are cut into groups balanced by bytes (never across a shard, so a worker
reads one file front to back) and handed, largest first, to workers that each open the model once:
threads of this process (the default: reads, the statistics kernel and numpy's large operations run
outside the GIL, and a thread starts in microseconds where a process costs a start and its own
model), worker processes (`executor="process"`: Python-heavy work scales with cores), or Ray tasks
(`executor="ray"`) that each open it for their group. Every worker runs its BLAS calls on one thread.

For processes and Ray, `work` must be picklable: a top-level function or a `functools.partial` of
one. Worker processes start from a forkserver (spawn outside Linux), which imports the caller's
`__main__` module: a script that calls this with executor="process" needs the usual
`if __name__ == "__main__":` guard.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from threadpoolctl import threadpool_limits

from ..errors import ConfigError, MissingExtraError, UnknownNameError
from ..results import ProgressFn, TensorInfo
from .model import Model, open_model

__all__ = ["Executor", "ModelOpener", "map_tensors", "plan_groups", "planned_workers", "available_cores",
           "resolve_jobs", "EXECUTORS", "GROUPS_PER_JOB"]

log = logging.getLogger(__name__)

R = TypeVar("R")


class Executor(str, Enum):
    """Where map_tensors runs the work: threads of this process, local worker processes, or tasks on a
    Ray cluster."""

    THREAD = "thread"
    PROCESS = "process"
    RAY = "ray"


EXECUTORS = tuple(e.value for e in Executor)
GROUPS_PER_JOB = 4  # groups per worker: enough to even out unequal tensors, few enough to stay cheap
MIN_PARALLEL_BYTES = 32 << 20  # below this, starting workers costs more than the work: run in-process
RAY_EXTRA = "pip install 'normscope[ray]'"


@dataclass(frozen=True)
class ModelOpener:
    """What `open_model` needs, picklable, so a worker process or a Ray task can open the same model.

    Example:
        >>> opener = ModelOpener("gemma-3-270m-hf")
        >>> with opener.open() as model:  # doctest: +SKIP
        ...     print(len(model.tensors))
    """

    source: str | None
    arch: str | None = None
    norm_convention: str | None = None
    token: str | None = None
    cache_dir: str | None = None
    adapter: str | None = None  # a PEFT LoRA adapter directory merged on read (see open_model)

    def open(self) -> Model:
        return open_model(self.source, arch=self.arch, norm_convention=self.norm_convention, token=self.token,
                          cache_dir=Path(self.cache_dir) if self.cache_dir else None, adapter=self.adapter)

    @classmethod
    def of(cls, model: Model) -> ModelOpener:
        """The opener of a model opened with `open_model` (its recorded arguments)."""
        args = dict(model.open_args) or {"source": model.source.path}
        unknown = {k for k, v in args.items() if k not in cls.__dataclass_fields__ and v is not None}
        if unknown:  # an open_model argument workers would not see: fail rather than analyse another model
            raise TypeError(f"ModelOpener has no field for open_model argument(s) {sorted(unknown)}")
        return cls(**{k: v for k, v in args.items() if k in cls.__dataclass_fields__})


def available_cores() -> int:
    """CPUs this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_jobs(jobs: int | None) -> int:
    """None or 0: the cores available; otherwise `jobs` itself.

    Raises:
        ConfigError: jobs is negative.
    """
    if jobs is None or jobs == 0:
        return available_cores()
    if jobs < 0:
        raise ConfigError(f"jobs={jobs}: give a positive number of workers, or 0 for the "
                          f"{available_cores()} cores available")
    return int(jobs)


def planned_workers(infos: Sequence[TensorInfo], jobs: int | None, executor: str = "thread") -> int:
    """How many workers `map_tensors` will use for these tensors (1: it runs them in this process).

    With Ray and jobs None/0, the cores of this machine stand in for the cluster's (a planning hint).
    """
    n = resolve_jobs(jobs)
    if executor == Executor.RAY:
        return n
    if n <= 1 or sum(t.nbytes for t in infos) < MIN_PARALLEL_BYTES:
        return 1
    return n


def plan_groups(model: Model, infos: Sequence[TensorInfo], jobs: int) -> list[list[int]]:
    """Indices of `infos` cut into groups of about total / (jobs × GROUPS_PER_JOB) bytes.

    A group holds tensors of one file, in file order; a tensor larger than the target is a group of
    its own. Groups are returned largest first (longest-processing-time-first scheduling).
    """
    files = {f: i for i, f in enumerate(model.checkpoint.files)}

    def where(i: int) -> tuple[int, int]:
        entry = model.entry(infos[i])
        return files.get(entry.file, len(files)), entry.offset

    order = sorted(range(len(infos)), key=where)
    total = sum(t.nbytes for t in infos)
    target = max(1, total // max(1, jobs * GROUPS_PER_JOB))
    groups: list[list[int]] = []
    size, file = 0, None
    for i in order:
        f = where(i)[0]
        if not groups or f != file or (size > 0 and size + infos[i].nbytes > target):
            groups.append([])
            size, file = 0, f
        groups[-1].append(i)
        size += infos[i].nbytes
    groups.sort(key=lambda g: (-sum(infos[i].nbytes for i in g), g[0]))
    return groups


def map_tensors(opener: ModelOpener, model: Model, infos: Sequence[TensorInfo],
                work: Callable[[Model, TensorInfo], R], *, jobs: int | None = 1, executor: str = "thread",
                progress: ProgressFn | None = None) -> list[R]:
    """`[work(model, info) for info in infos]`, possibly in parallel; the same list whatever `jobs`.

    Args:
        opener: how workers open the model (`ModelOpener.of(model)` for one from `open_model`).
        model: the model, open in this process (used as is when jobs=1; its resolved path is what
            workers open, so a hub id is not resolved again).
        infos: the tensors, in the order the results come back.
        work: a picklable top-level function (or functools.partial of one) of (model, info).
        jobs: workers; 1 runs in this thread; None or 0 means the cores available.
            With Ray, the number of groups is planned for this many workers (None/0: the cluster's CPUs).
        executor: "thread" (threads of this process), "process" (local worker processes) or "ray"
            (tasks on the Ray cluster that RAY_ADDRESS names, or a local one started with `jobs` CPUs).
        progress: called as progress(tensor name, bytes done, bytes total) as tensors (one at a time
            in-process, a group at a time in workers) complete.

    Returns:
        The results, in the order of `infos`.

    Raises:
        UnknownNameError: an executor other than "thread", "process" or "ray".
        MissingExtraError: executor="ray" without Ray installed.
        ConfigError: a negative `jobs`.
        Whatever `work` raises, re-raised here (the first one, by completion time).

    Example:
        >>> from functools import partial
        >>> with open_model("gemma-3-270m-hf") as m:  # doctest: +SKIP
        ...     reports = map_tensors(ModelOpener.of(m), m, m.tensors, partial(analyze_tensor, top_k=4), jobs=2)
    """
    infos = list(infos)
    if executor not in EXECUTORS:
        raise UnknownNameError("executor", str(executor), EXECUTORS)
    if executor == Executor.RAY:
        return _map_ray(opener, model, infos, work, jobs, progress)
    n = planned_workers(infos, jobs, executor)
    if n <= 1 or len(infos) <= 1:
        return _map_serial(model, infos, work, progress)
    groups = plan_groups(model, infos, n)
    if executor == Executor.THREAD:
        return _map_threads(opener, model, infos, groups, work, min(n, len(groups)), progress)
    return _map_processes(opener, model, infos, groups, work, min(n, len(groups)), progress)


# -- in this process ---------------------------------------------------------------------------------
def _map_serial(model: Model, infos: list[TensorInfo], work: Callable[[Model, TensorInfo], R],
                progress: ProgressFn | None) -> list[R]:
    total, done, out = sum(t.nbytes for t in infos), 0, []
    with threadpool_limits(1, user_api="blas"):  # numpy's dots are on small blocks: threads only cost
        for info in infos:
            out.append(work(model, info))
            done += info.nbytes
            if progress:
                progress(info.name, done, total)
    return out


# -- worker processes --------------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _open_for_worker(opener: ModelOpener, local: str | None) -> Model:
    """Open the model in a worker: by the path the parent resolved when this machine has it (no second
    hub round trip), else through the opener (a Ray node without the parent's files)."""
    if local and Path(local).exists():
        return replace(opener, source=local).open()
    return opener.open()


def _init_worker(opener: ModelOpener, local: str | None) -> None:
    try:
        threadpool_limits(1, user_api="blas")
        _WORKER["model"] = _open_for_worker(opener, local)
    except BaseException as e:  # reported by the first task rather than as a broken pool
        _WORKER["error"] = e


def _run_group(work: Callable[[Model, TensorInfo], R], infos: list[TensorInfo]) -> list[R]:
    if "error" in _WORKER:
        raise _WORKER["error"]
    model = _WORKER["model"]
    return [work(model, info) for info in infos]


def _context() -> multiprocessing.context.BaseContext:
    # forkserver: workers fork from a clean server process (no threads of the caller, e.g. a progress
    # bar's, are copied), with normscope already imported there, so each starts in milliseconds
    if sys.platform.startswith("linux"):
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
        return ctx
    return multiprocessing.get_context("spawn")


def _gather(pending: dict[Future, list[int]], infos: list[TensorInfo], progress: ProgressFn | None) -> list[Any]:
    """The results of groups submitted to a local pool, in the order of `infos`, reporting progress as
    groups complete; the first failure is raised as it comes."""
    results: list[Any] = [None] * len(infos)
    total, done = sum(t.nbytes for t in infos), 0
    while pending:
        finished, _ = wait(pending, return_when=FIRST_COMPLETED)
        for fut in finished:
            group = pending.pop(fut)
            for i, r in zip(group, fut.result()):
                results[i] = r
            done += sum(infos[i].nbytes for i in group)
            if progress:
                progress(infos[group[-1]].name, done, total)
    return results


def _map_processes(opener: ModelOpener, model: Model, infos: list[TensorInfo], groups: list[list[int]],
                   work: Callable[[Model, TensorInfo], R], n: int, progress: ProgressFn | None) -> list[R]:
    pool = ProcessPoolExecutor(max_workers=n, mp_context=_context(), initializer=_init_worker,
                               initargs=(opener, model.source.path))
    try:
        results = _gather({pool.submit(_run_group, work, [infos[i] for i in g]): g for g in groups}, infos, progress)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return results


# -- threads -------------------------------------------------------------------------------------------
THREAD_SWITCH_INTERVAL = 0.001  # seconds; Python's 5 ms default makes a thread back from a short GIL-free
# call (a read, the statistics kernel) wait for the other thread's slice: measured 0.22 s -> 0.19 s
_switch = {"users": 0, "saved": 0.0}
_switch_lock = threading.Lock()


class _Stopped(Exception):
    """A worker thread's group given up because another group failed (never seen by callers)."""


def _short_switch_interval(on: bool) -> None:
    """Shorten the GIL switch interval while any map_tensors runs threads; put it back after the last."""
    with _switch_lock:
        if on:
            if not _switch["users"]:
                _switch["saved"] = sys.getswitchinterval()
                sys.setswitchinterval(min(_switch["saved"], THREAD_SWITCH_INTERVAL))
            _switch["users"] += 1
        else:
            _switch["users"] -= 1
            if not _switch["users"]:
                sys.setswitchinterval(_switch["saved"])


def _map_threads(opener: ModelOpener, model: Model, infos: list[TensorInfo], groups: list[list[int]],
                 work: Callable[[Model, TensorInfo], R], n: int, progress: ProgressFn | None) -> list[R]:
    """Groups on `n` threads of this process, each with its own open model (its own file handles and
    read buffers): the first thread takes the caller's, which waits here unused, the others open one.
    The reads and the statistics kernel release the GIL; the Python around them does not. When a group
    fails, the others stop at their next tensor and the failure is raised."""
    local = threading.local()
    spare: list[Model] = [model]
    opened: list[Model] = []
    lock, stop = threading.Lock(), threading.Event()

    def run(group: list[int]) -> list[R]:
        if not hasattr(local, "model"):
            with lock:
                m = spare.pop() if spare else None
            if m is None:
                m = _open_for_worker(opener, model.source.path)
                with lock:
                    opened.append(m)
            local.model = m
        out = []
        for i in group:
            if stop.is_set():
                raise _Stopped
            out.append(work(local.model, infos[i]))
        return out

    _short_switch_interval(True)
    pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="normscope")
    try:
        with threadpool_limits(1, user_api="blas"):
            results = _gather({pool.submit(run, g): g for g in groups}, infos, progress)
    finally:
        stop.set()  # after a failure: running groups stop at their next tensor, queued ones never start
        pool.shutdown(wait=True, cancel_futures=True)
        _short_switch_interval(False)
        for m in opened:
            m.close()
    return results


# -- Ray ---------------------------------------------------------------------------------------------
def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingExtraError(f"executor 'ray' needs Ray, which is not installed: {RAY_EXTRA}") from None
    return ray


def _ray_group(opener: ModelOpener, local: str | None, work: Callable[[Model, TensorInfo], R],
               infos: list[TensorInfo]) -> list[R]:
    """One Ray task: open the model (from shared storage, or through the hub on that node), run a group."""
    with threadpool_limits(1, user_api="blas"), _open_for_worker(opener, local) as model:
        return [work(model, info) for info in infos]


def _map_ray(opener: ModelOpener, model: Model, infos: list[TensorInfo], work: Callable[[Model, TensorInfo], R],
             jobs: int | None, progress: ProgressFn | None) -> list[R]:
    ray = _import_ray()
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):  # an existing cluster: ray.init reads the address itself
            ray.init(logging_level=logging.WARNING)
        else:  # a local Ray with the CPUs asked for
            ray.init(num_cpus=resolve_jobs(jobs), include_dashboard=False, logging_level=logging.WARNING)
    n = resolve_jobs(jobs) if jobs else max(1, int(ray.cluster_resources().get("CPU", 1)))
    groups = plan_groups(model, infos, n)
    task = ray.remote(num_cpus=1, max_retries=2)(_ray_group)
    results: list[Any] = [None] * len(infos)
    total, done = sum(t.nbytes for t in infos), 0
    pending = {task.remote(opener, model.source.path, work, [infos[i] for i in g]): g for g in groups}
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                group = pending.pop(ref)
                try:
                    out = ray.get(ref)
                except ray.exceptions.RayTaskError as e:
                    cause = getattr(e, "cause", None)
                    raise (cause if isinstance(cause, BaseException) else e) from None
                for i, r in zip(group, out):
                    results[i] = r
                done += sum(infos[i].nbytes for i in group)
                if progress:
                    progress(infos[group[-1]].name, done, total)
    except BaseException:
        for ref in pending:
            ray.cancel(ref)
        raise
    return results
