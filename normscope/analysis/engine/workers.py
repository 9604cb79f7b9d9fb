"""Who runs per-tensor work: the executors, how many workers, how tensors are grouped for them, and how a
worker opens the model (`ModelOpener`, picklable so a process or a Ray task can open the same model)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path

from ...errors import ConfigError
from ...results import TensorInfo
from .model import Model, open_model

__all__ = ["Executor", "EXECUTORS", "ModelOpener", "available_cores", "resolve_jobs", "planned_workers", "chunk_threads",
           "group_tensors", "open_for_worker", "GROUPS_PER_JOB", "MIN_PARALLEL_BYTES"]


class Executor(str, Enum):
    """Where map_tensors runs the work: threads of this process, local worker processes, or tasks on a
    Ray cluster."""

    THREAD = "thread"
    PROCESS = "process"
    RAY = "ray"


EXECUTORS = tuple(e.value for e in Executor)
GROUPS_PER_JOB = 4  # groups per worker: enough to even out unequal tensors, few enough to stay cheap
MIN_PARALLEL_BYTES = 32 << 20  # below this, starting workers costs more than the work: run in-process


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


def chunk_threads(jobs: int | None, executor: Executor | str = "thread") -> int:
    """Threads that measure the chunks of one tensor at once: the workers asked for when they are threads
    of this process (a large tensor then keeps every core busy), else one per worker."""
    return resolve_jobs(jobs) if Executor(executor) is Executor.THREAD else 1


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


def group_tensors(model: Model, infos: Sequence[TensorInfo], jobs: int) -> list[list[int]]:
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


def open_for_worker(opener: ModelOpener, local: str | None) -> Model:
    """Open the model in a worker: by the path the parent resolved when this machine has it (no second
    hub round trip), else through the opener (a Ray node without the parent's files)."""
    if local and Path(local).exists():
        return replace(opener, source=local).open()
    return opener.open()
