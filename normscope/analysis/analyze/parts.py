"""A tensor too large for one worker, analysed in parts by several, with the result of one.

With more than one worker, a tensor too large for the work to balance without cutting it is cut into
consecutive ranges of chunks, one `TensorPart` each. A part returns its
`WeightAccumulator`, recording the sums of every sub-block; `WeightAccumulator.merge` replays them in
order, so the statistics are bit for bit those of one process reading every chunk. A part that does
not start at the first chunk reads that chunk once more to take the same shift K and threshold τ.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Sequence

from ...results import TensorInfo, TensorReport
from ..engine.model import Model
from ..metrics.stats import WeightAccumulator, count_beyond

__all__ = ["TensorPart", "split_large", "cut", "analyze_part", "merge_parts", "report_fields", "is_norm_read"]


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


# What a tensor costs besides its bytes (opening it, the statistics, the report), in bytes of reading:
# measured ~0.25 ms a tensor on the Gemma 3 270M export, ~0.7 MiB of BF16 at 0.35 ns a byte. It is
# also work that holds the GIL, so a thread doing many small tensors next to one on a large tensor
# overlaps better than both on halves of it (Gemma, --jobs 2: 0.147 s unsplit, 0.17 s split).
TENSOR_COST_BYTES = 1 << 20
BALANCE = 1.05  # cut tensors until the planned finish is within 5 % of an even share


def _makespan(costs: list[float], workers: int) -> float:
    """When the last of `workers` finishes, handing out `costs` largest first to the least loaded."""
    loads = [0.0] * workers
    for c in sorted(costs, reverse=True):
        heapq.heapreplace(loads, loads[0] + c)
    return max(loads)


def split_large(model: Model, infos: Sequence[TensorInfo], workers: int, chunk_elements: int) -> list[TensorInfo]:
    """`infos` with the tensors that keep `workers` from an even share replaced by up to `workers`
    parts each (consecutive, in order).

    A tensor costs its bytes plus TENSOR_COST_BYTES (a part costs its share plus that). While handing
    out the pieces largest first would finish more than BALANCE times after an even share, the
    tensor with the largest piece that has chunks to spare is cut once more, as long as that makes
    the finish earlier (when a piece that cannot be cut sets it, a cut would only add work).
    """
    if workers <= 1:
        return list(infos)
    chunks: dict[int, int] = {}
    parts = [1] * len(infos)
    even = sum(t.nbytes + TENSOR_COST_BYTES for t in infos) / workers

    def piece(i: int) -> float:
        return infos[i].nbytes / parts[i] + TENSOR_COST_BYTES

    def makespan() -> float:
        return _makespan([piece(i) for i in range(len(infos)) for _ in range(parts[i])], workers)

    finish = makespan()
    while finish > BALANCE * even:
        for i in sorted(range(len(infos)), key=piece, reverse=True):
            if i not in chunks:
                chunks[i] = 0 if is_norm_read(infos[i]) else (model.n_chunks(infos[i], chunk_elements) or 0)
            if parts[i] < min(chunks[i], workers):
                parts[i] += 1
                break
        else:
            break  # nothing left to cut
        after = makespan()
        if after >= finish:  # the finish is set by a piece that cannot be cut: a cut only adds work
            parts[i] -= 1
            break
        finish = after
    out: list[TensorInfo] = []
    for i, info in enumerate(infos):
        out += cut(info, parts[i], chunks.get(i, 1))
    return out


def cut(info: TensorInfo, parts: int, n_chunks: int) -> list[TensorInfo]:
    """`info` as `parts` consecutive ranges of its `n_chunks` chunks (itself when parts is 1)."""
    if parts <= 1:
        return [info]
    cuts = [n_chunks * k // parts for k in range(parts + 1)]
    fields = {f.name: getattr(info, f.name) for f in dataclasses.fields(TensorInfo)}
    return [TensorPart(**{**fields, "nbytes": info.nbytes * (cuts[k + 1] - cuts[k]) // n_chunks},
                       first=cuts[k], stop=cuts[k + 1], parts=parts) for k in range(parts)]


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
