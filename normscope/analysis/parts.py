"""A tensor too large for one worker, analysed in parts by several, with the result of one.

With more than one worker, a tensor larger than its share of the work (Gemma 3 270M's embedding is
62% of the model) is cut into consecutive ranges of chunks, one `TensorPart` each. A part returns its
`WeightAccumulator`, recording the sums of every sub-block; `WeightAccumulator.merge` replays them in
order, so the statistics are bit for bit those of one process reading every chunk. A part that does
not start at the first chunk reads that chunk once more to take the same shift K and threshold τ.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from ..results import TensorInfo, TensorReport
from .model import Model
from .stats import WeightAccumulator, count_beyond

__all__ = ["TensorPart", "split_large", "analyze_part", "merge_parts", "report_fields", "is_norm_read"]


@dataclasses.dataclass(frozen=True)
class TensorPart(TensorInfo):
    """Chunks [first, stop) of a tensor (nbytes: this part's share, for balancing)."""

    first: int = 0
    stop: int = 0
    parts: int = 1


def is_norm_read(info: TensorInfo) -> bool:
    """Norm gains are read whole (they are small) and get norm statistics, never split."""
    return info.role.is_norm and info.param != "bias" and info.convention is not None


def report_fields(info: TensorInfo) -> dict:
    return dict(name=info.name, source_name=info.source_name, gguf_name=info.gguf_name, role=info.role,
                component=info.component, layer=info.layer, shape=info.shape, dtype=info.dtype,
                n_params=info.n_params, nbytes=info.nbytes)


def split_large(model: Model, infos: Sequence[TensorInfo], workers: int, groups_per_worker: int,
                chunk_elements: int) -> list[TensorInfo]:
    """`infos` with every tensor above total / (workers × groups_per_worker) bytes that has several
    chunks replaced by up to `workers` parts (consecutive, in order)."""
    if workers <= 1:
        return list(infos)
    target = sum(t.nbytes for t in infos) / (workers * groups_per_worker)
    out: list[TensorInfo] = []
    for info in infos:
        n = None if is_norm_read(info) or info.nbytes <= target else model.n_chunks(info, chunk_elements)
        if not n or n < 2:
            out.append(info)
            continue
        parts = min(n, workers, math.ceil(info.nbytes / target))
        cuts = [n * k // parts for k in range(parts + 1)]
        fields = {f.name: getattr(info, f.name) for f in dataclasses.fields(TensorInfo)}
        for k in range(parts):
            share = info.nbytes * (cuts[k + 1] - cuts[k]) // n
            out.append(TensorPart(**{**fields, "nbytes": share}, first=cuts[k], stop=cuts[k + 1], parts=parts))
    return out


def analyze_part(model: Model, part: TensorPart, *, top_k: int, outlier_sigma: float,
                 chunk_elements: int) -> WeightAccumulator:
    """The recording accumulator of one part (to be merged with the others, in order)."""
    if part.first == 0:
        acc = WeightAccumulator(part.shape, top_k=top_k, outlier_sigma=outlier_sigma, partials=[])
    else:
        start, values = next(model.iter_values(part, chunk_elements, 0, 1, stored=True))
        acc = WeightAccumulator(part.shape, top_k=top_k, outlier_sigma=outlier_sigma).primed(values, start)
    for start, values in model.iter_values(part, chunk_elements, part.first, part.stop, stored=True):
        acc.update(start, values)
    return acc


def merge_parts(model: Model, info: TensorInfo, accs: list[WeightAccumulator], chunk_elements: int
                ) -> TensorReport:
    """The report of tensor `info` from its parts' accumulators, in order (a recount pass here if needed)."""
    acc = WeightAccumulator.merge(accs)
    recount = None
    if acc.needs_recount():
        mean, limit = acc.outlier_threshold()
        recount = sum(count_beyond(values, mean, limit) for _, values in model.iter_values(info, chunk_elements))
    return TensorReport(**report_fields(info), weight=acc.finish(recount))
