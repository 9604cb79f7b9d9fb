"""`analyze`: every tensor profiled in one streaming pass, norms read in their own convention."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from ...io import DEFAULT_CHUNK_ELEMENTS
from ...results import AnalyzeResult, ModelSummary, NormConvention, ProgressFn, TensorInfo, TensorReport
from ..engine.model import Model, open_model
from ..engine.parallel import map_tensors
from ..engine.select import select_tensors
from ..engine.workers import Executor, ModelOpener, planned_workers
from ..metrics.norms import norm_stats, stream_norm_stats
from ..metrics.stats import WeightAccumulator, count_beyond
from .explain import explain
from .parts import TensorPart, analyze_part, is_norm_read, merge_parts, report_fields, split_large

__all__ = ["analyze", "analyze_model", "analyze_tensor"]


def analyze(source: str | Path | None = None, *, arch: str | None = None,
            norm_convention: NormConvention | str | None = None, token: str | None = None,
            cache_dir: Path | None = None, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
            progress: ProgressFn | None = None, jobs: int | None = 1, executor: Executor | str = "thread",
            ray_address: str | None = None, adapter: str | Path | None = None, top_k: int = 8,
            outlier_sigma: float = 6.0, explain_above: float = 100.0, include: Sequence[str] = (),
            exclude: Sequence[str] = ()) -> AnalyzeResult:
    """Profile every tensor of a checkpoint.

    Args:
        source: local directory or file, hub id, `example:NAME`, or None for the embedded Gemma 3 270M.
        arch: architecture override (default: detected from config.json, GGUF metadata or names).
        norm_convention: norm convention override ("1+w", "w", "layernorm", "layernorm1p").
        token, cache_dir: for hub ids: the HF token and cache directory (default: huggingface_hub's).
        adapter: a PEFT LoRA adapter directory merged into the weights as they are read.
        top_k: how many largest |values| (and norm channels) to keep per tensor.
        outlier_sigma: k in the outlier count |w − mean| > k·std.
        explain_above: norms whose max |gain| exceeds this get a plain-words explanation.
        include, exclude: glob patterns on tensor names (HF or file names) to restrict the work.
        chunk_elements: largest block of values read at once (bounds memory).
        progress: called as progress(description, bytes_done, bytes_total).
        jobs: workers (1: none, this thread; None or 0: the cores available). Results are the same
            whatever the number.
        executor: "thread" (threads of this process: the reads and the statistics kernel run outside
            the GIL), "process" (worker processes; a script using them needs the
            `if __name__ == "__main__":` guard, as with multiprocessing) or "ray" (the `ray` extra);
            see `analysis.engine.parallel.map_tensors`.
        ray_address: the Ray cluster for executor="ray" (default: RAY_ADDRESS, else a local Ray).

    Returns:
        AnalyzeResult; `.to_dict()` is the JSON document (schema `normscope.analyze`).

    Raises:
        SourceNotFoundError, CheckpointError, UnknownNameError, MissingExtraError.

    Example:
        >>> r = analyze("example:gemma3-270m")  # doctest: +SKIP
        >>> r.tensor("model.layers.16.post_feedforward_layernorm.weight").norm.gain_max
        1657.0
    """
    with open_model(source, arch=arch, norm_convention=norm_convention, token=token, cache_dir=cache_dir,
                    progress=progress, adapter=adapter) as model:
        return analyze_model(model, top_k=top_k, outlier_sigma=outlier_sigma, explain_above=explain_above,
                             include=include, exclude=exclude, chunk_elements=chunk_elements, progress=progress,
                             jobs=jobs, executor=executor, ray_address=ray_address)


def analyze_model(model: Model, *, top_k: int = 8, outlier_sigma: float = 6.0, explain_above: float = 100.0,
                  include: Sequence[str] = (), exclude: Sequence[str] = (),
                  chunk_elements: int = DEFAULT_CHUNK_ELEMENTS, progress: ProgressFn | None = None,
                  jobs: int | None = 1, executor: Executor | str = "thread", ray_address: str | None = None,
                  opener: ModelOpener | None = None
                  ) -> AnalyzeResult:
    """`analyze` on an already open model (`opener`: how workers open it; default: as it was opened)."""
    selected = select_tensors(model.tensors, include, exclude)
    # with several workers, a tensor above its share is analysed in parts (the same numbers, see parts.py)
    items = split_large(model, selected, planned_workers(selected, jobs, executor), chunk_elements)
    work = partial(analyze_item, top_k=top_k, outlier_sigma=outlier_sigma, chunk_elements=chunk_elements)
    results = map_tensors(opener or ModelOpener.of(model), model, items, work, jobs=jobs, executor=executor,
                          progress=progress, ray_address=ray_address)
    reports: list[TensorReport] = []
    parts: list = []
    for item, result in zip(items, results):
        if not isinstance(item, TensorPart):
            reports.append(result)
            continue
        parts.append(result)
        if len(parts) == item.parts:
            reports.append(merge_parts(model, selected[len(reports)], parts, chunk_elements))
            parts = []
    reports_t = tuple(reports)
    options = {"arch": model.detected.spec.name, "top_k": top_k, "outlier_sigma": outlier_sigma,
               "explain_above": explain_above, "include": list(include), "exclude": list(exclude)}
    return AnalyzeResult(source=model.source, summary=_summary(model), tensors=reports_t,
                         explanations=explain(reports_t, explain_above), warnings=tuple(model.warnings),
                         options=options)


def analyze_item(model: Model, info: TensorInfo, *, top_k: int, outlier_sigma: float, chunk_elements: int
                 ) -> TensorReport | WeightAccumulator:
    """The work analyze maps over workers: a tensor's report, or a part's accumulator."""
    if isinstance(info, TensorPart):
        return analyze_part(model, info, top_k=top_k, outlier_sigma=outlier_sigma, chunk_elements=chunk_elements)
    return analyze_tensor(model, info, top_k=top_k, outlier_sigma=outlier_sigma, chunk_elements=chunk_elements)


def analyze_tensor(model: Model, info: TensorInfo, *, top_k: int = 8, outlier_sigma: float = 6.0,
                   chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> TensorReport:
    """The report of one tensor: norm statistics for norm weights, value statistics otherwise."""
    base = report_fields(info)
    if not info.n_params:  # a zero-size dimension ([4, 0]): listed as empty, no statistics (open_model warns)
        return TensorReport(**base)
    if is_norm_read(info):
        if info.n_params <= chunk_elements:  # every real norm: read whole, numpy's sums and percentiles
            return TensorReport(**base, norm=norm_stats(model.read(info), info.convention, top_k))
        return TensorReport(**base, norm=stream_norm_stats(lambda: model.iter_values(info, chunk_elements),
                                                           info.convention, top_k))
    acc = WeightAccumulator(info.shape, top_k=top_k, outlier_sigma=outlier_sigma)
    for start, values in model.iter_values(info, chunk_elements, stored=True):
        acc.update(start, values)
    recount = None
    if acc.needs_recount():
        mean, limit = acc.outlier_threshold()
        recount = sum(count_beyond(values, mean, limit) for _, values in model.iter_values(info, chunk_elements))
    return TensorReport(**base, weight=acc.finish(recount))


def _summary(model: Model) -> ModelSummary:
    by_role: Counter[str] = Counter()
    by_dtype: Counter[str] = Counter()
    for t in model.tensors:
        by_role[t.role.value] += t.n_params
        by_dtype[t.dtype] += t.n_params
    largest = max(model.tensors, key=lambda t: t.n_params, default=None)
    return ModelSummary(
        architecture=model.detected.spec.name, architecture_source=model.detected.source,
        n_layers=model.n_layers, n_tensors=len(model.tensors),
        n_params=sum(t.n_params for t in model.tensors),
        params_by_role=dict(by_role.most_common()), params_by_dtype=dict(by_dtype.most_common()),
        bytes_on_disk=model.checkpoint.bytes_on_disk, tied_embeddings=model.tied_embeddings,
        largest_tensor=largest.name if largest else None)

