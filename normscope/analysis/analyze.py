"""`analyze`: every tensor profiled in one streaming pass, norms read in their own convention."""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from ..io import DEFAULT_CHUNK_ELEMENTS
from ..results import (AnalyzeResult, ModelSummary, NormConvention, ProgressFn, TensorInfo, TensorReport)
from .explain import explain
from .model import Model, open_model
from .norms import norm_stats
from .stats import WeightAccumulator, count_beyond

__all__ = ["analyze", "analyze_model", "analyze_tensor"]


def analyze(source: str | Path | None = None, *, arch: str | None = None,
            norm_convention: NormConvention | str | None = None, top_k: int = 8, outlier_sigma: float = 6.0,
            explain_above: float = 100.0, include: Sequence[str] = (), exclude: Sequence[str] = (),
            chunk_elements: int = DEFAULT_CHUNK_ELEMENTS, progress: ProgressFn | None = None,
            token: str | None = None, cache_dir: Path | None = None) -> AnalyzeResult:
    """Profile every tensor of a checkpoint.

    Args:
        source: local directory or file, hub id, `example:NAME`, or None for the embedded Gemma 3 270M.
        arch: architecture override (default: detected from config.json, GGUF metadata or names).
        norm_convention: norm convention override ("1+w", "w", "layernorm", "layernorm1p").
        top_k: how many largest |values| (and norm channels) to keep per tensor.
        outlier_sigma: k in the outlier count |w − mean| > k·std.
        explain_above: norms whose max |gain| exceeds this get a plain-words explanation.
        include, exclude: glob patterns on tensor names (HF or file names) to restrict the work.
        chunk_elements: largest block of values read at once (bounds memory).
        progress: called as progress(description, bytes_done, bytes_total).

    Returns:
        AnalyzeResult; `.to_dict()` is the JSON document (schema `normscope.analyze`).

    Raises:
        SourceNotFoundError, CheckpointError, UnknownNameError, MissingExtraError.

    Example:
        >>> r = analyze("example:gemma3-270m")  # doctest: +SKIP
        >>> r.tensor("model.layers.16.post_feedforward_layernorm.weight").norm.gain_max
        1657.0
    """
    with open_model(source, arch=arch, norm_convention=norm_convention, token=token, cache_dir=cache_dir) as model:
        return analyze_model(model, top_k=top_k, outlier_sigma=outlier_sigma, explain_above=explain_above,
                             include=include, exclude=exclude, chunk_elements=chunk_elements, progress=progress)


def analyze_model(model: Model, *, top_k: int = 8, outlier_sigma: float = 6.0, explain_above: float = 100.0,
                  include: Sequence[str] = (), exclude: Sequence[str] = (),
                  chunk_elements: int = DEFAULT_CHUNK_ELEMENTS, progress: ProgressFn | None = None
                  ) -> AnalyzeResult:
    """`analyze` on an already open model."""
    selected = [t for t in model.tensors if _selected(t, include, exclude)]
    total, done = sum(t.nbytes for t in selected), 0
    reports = []
    for info in selected:
        reports.append(analyze_tensor(model, info, top_k=top_k, outlier_sigma=outlier_sigma,
                                      chunk_elements=chunk_elements))
        done += info.nbytes
        if progress:
            progress(info.name, done, total)
    reports_t = tuple(reports)
    options = {"arch": model.detected.spec.name, "top_k": top_k, "outlier_sigma": outlier_sigma,
               "explain_above": explain_above, "include": list(include), "exclude": list(exclude)}
    return AnalyzeResult(source=model.source, summary=_summary(model), tensors=reports_t,
                         explanations=explain(reports_t, explain_above), warnings=tuple(model.warnings),
                         options=options)


def analyze_tensor(model: Model, info: TensorInfo, *, top_k: int = 8, outlier_sigma: float = 6.0,
                   chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> TensorReport:
    """The report of one tensor: norm statistics for norm weights, value statistics otherwise."""
    base = dict(name=info.name, source_name=info.source_name, gguf_name=info.gguf_name, role=info.role,
                component=info.component, layer=info.layer, shape=info.shape, dtype=info.dtype,
                n_params=info.n_params, nbytes=info.nbytes)
    if info.role.is_norm and info.param != "bias" and info.convention is not None:
        return TensorReport(**base, norm=norm_stats(model.read(info), info.convention, top_k))
    acc = WeightAccumulator(info.shape, top_k=top_k, outlier_sigma=outlier_sigma)
    row_len = info.shape[-1] if info.shape else 1
    for row0, rows in model.iter_rows(info, chunk_elements):
        acc.update(row0 * row_len, rows)
    recount = None
    if acc.needs_recount():
        mean, limit = acc.outlier_threshold()
        recount = sum(count_beyond(rows, mean, limit) for _, rows in model.iter_rows(info, chunk_elements))
    return TensorReport(**base, weight=acc.finish(recount))


def _selected(info: TensorInfo, include: Sequence[str], exclude: Sequence[str]) -> bool:
    names = (info.name, info.source_name)
    if include and not any(fnmatch.fnmatchcase(n, p) for n in names for p in include):
        return False
    return not any(fnmatch.fnmatchcase(n, p) for n in names for p in exclude)


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

