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

import multiprocessing
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from typing import Any, TypeVar

from threadpoolctl import threadpool_limits

from ...errors import UnknownNameError
from ...results import ProgressFn, TensorInfo
from . import workers
from .model import Model
from .ray_tasks import map_ray
from .workers import EXECUTORS, Executor, ModelOpener, group_tensors, planned_workers

__all__ = ["map_tensors", "map_pairs"]

R = TypeVar("R")


def map_tensors(opener: ModelOpener, model: Model, infos: Sequence[TensorInfo],
                work: Callable[[Model, TensorInfo], R], *, jobs: int | None = 1,
                executor: Executor | str = "thread", progress: ProgressFn | None = None,
                ray_address: str | None = None) -> list[R]:
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
            (tasks on the Ray cluster at `ray_address`, else the one RAY_ADDRESS names, else a local one
            started with `jobs` CPUs).
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
    executor = executor.value if isinstance(executor, Executor) else executor
    if executor not in EXECUTORS:
        raise UnknownNameError("executor", str(executor), EXECUTORS)
    if executor == Executor.RAY:
        return map_ray(opener, model, infos, work, jobs, progress, ray_address)
    n = planned_workers(infos, jobs, executor)
    if n <= 1 or len(infos) <= 1:
        return _map_serial(model, infos, work, progress)
    groups = group_tensors(model, infos, n)
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


def _init_worker(opener: ModelOpener, local: str | None) -> None:
    try:
        threadpool_limits(1, user_api="blas")
        _WORKER["model"] = workers.open_for_worker(opener, local)
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
                m = workers.open_for_worker(opener, model.source.path)
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


# -- pairs of tensors of two models (compare's differences) -------------------------------------------
def map_pairs(base: Model, variant: Model, pairs: Sequence[tuple[TensorInfo, TensorInfo]],
              work: Callable[[Model, TensorInfo, Model, TensorInfo], R], *, threads: int = 1,
              progress: Callable[[int], None] | None = None) -> list[R]:
    """`[work(base, a, variant, b) for a, b in pairs]` on up to `threads` threads, results in the order of `pairs`.

    Each thread reads through its own clones of the two models (`Model.clone`: the parsed headers shared, the
    file descriptors and buffers its own); when a model cannot be cloned (packs, PyTorch files) the pairs run in
    this thread. `progress(i)` is called in this thread as pair i completes, in order.
    """
    pairs = list(pairs)
    clones = [] if threads <= 1 or len(pairs) <= 1 else [(base.clone(), variant.clone()) for _ in range(threads - 1)]
    if not clones or any(a is None or b is None for a, b in clones):
        out = []
        for i, (a, b) in enumerate(pairs):
            out.append(work(base, a, variant, b))
            if progress:
                progress(i)
        return out
    readers = [(base, variant), *clones]
    free, lock = list(readers), threading.Lock()

    def run(i: int) -> R:
        with lock:
            bm, vm = free.pop()
        try:
            a, b = pairs[i]
            return work(bm, a, vm, b)
        finally:
            with lock:
                free.append((bm, vm))

    pool = ThreadPoolExecutor(max_workers=len(readers), thread_name_prefix="normscope-pairs")
    try:
        futures = [pool.submit(run, i) for i in range(len(pairs))]
        out = []
        for i, fut in enumerate(futures):
            out.append(fut.result())
            if progress:
                progress(i)
        return out
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for bm, vm in clones:
            bm.checkpoint.close()
            vm.checkpoint.close()
