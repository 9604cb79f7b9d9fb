"""Per-tensor work as Ray tasks: each task opens the model (from shared storage, or through the hub on its
node) and runs one group of tensors; results come back in input order."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

from threadpoolctl import threadpool_limits

from ...errors import MissingExtraError
from ...results import ProgressFn, TensorInfo
from .model import Model
from .workers import ModelOpener, group_tensors, open_for_worker, resolve_jobs

__all__ = ["map_ray", "RAY_EXTRA"]

R = TypeVar("R")
RAY_EXTRA = "pip install 'normscope[ray]'"


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingExtraError(f"executor 'ray' needs Ray, which is not installed: {RAY_EXTRA}") from None
    return ray


def _ray_group(opener: ModelOpener, local: str | None, work: Callable[[Model, TensorInfo], R],
               infos: list[TensorInfo]) -> list[R]:
    """One Ray task: open the model (from shared storage, or through the hub on that node), run a group."""
    with threadpool_limits(1, user_api="blas"), open_for_worker(opener, local) as model:
        return [work(model, info) for info in infos]


def map_ray(opener: ModelOpener, model: Model, infos: list[TensorInfo], work: Callable[[Model, TensorInfo], R],
            jobs: int | None, progress: ProgressFn | None, address: str | None = None) -> list[R]:
    """Groups of `infos` as Ray tasks on the cluster at `address` (None: RAY_ADDRESS as Ray reads it, else a local
    Ray started with `jobs` CPUs); results in the order of `infos`."""
    ray = _import_ray()
    if not ray.is_initialized():
        if address:
            ray.init(address=address, logging_level=logging.WARNING)
        elif os.environ.get("RAY_ADDRESS"):  # an existing cluster: ray.init reads the address itself
            ray.init(logging_level=logging.WARNING)
        else:  # a local Ray with the CPUs asked for
            ray.init(num_cpus=resolve_jobs(jobs), include_dashboard=False, logging_level=logging.WARNING)
    n = resolve_jobs(jobs) if jobs else max(1, int(ray.cluster_resources().get("CPU", 1)))
    groups = group_tensors(model, infos, n)
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
