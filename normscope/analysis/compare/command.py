"""`compare`: base, teacher, student and quantized variants side by side, across formats.

Every variant is opened as a Model, so GGUF names are already HF names, Gemma's GGUF norms already
have the converter's +1 removed and llama's permuted q/k rows are already in HF order. Tensors are
paired by canonical HF name (multimodal prefixes rewritten), then by GGUF name; a tied head is paired
with the other side's embedding. Pairs of the same shape are streamed together in row chunks and
measured as variant − base; everything else is listed as unmatched, never dropped. Each variant is
also analyzed, and per role its statistics are laid against relative depth, so models of different
sizes (a 1B teacher, a 270M student) compare by distribution.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ...errors import CheckpointError, ConfigError, NormscopeError, message
from ...io import DEFAULT_CHUNK_ELEMENTS
from ...results import (AnalyzeResult, CompareResult, FailedVariant, NormConvention, PairResult, ProgressFn, TensorDiff,
                        TensorInfo, Variant)
from ..analyze import analyze_model
from ..engine.model import Model, open_model
from ..engine.parallel import map_pairs
from ..engine.workers import Executor, chunk_threads
from ..metrics.quant_error import ErrorSums
from .align import align, diff_tensors
from .summary import depth_profiles, pair_result

__all__ = ["compare", "compare_models"]

# what a variant that cannot be read raises (as the CLI sees bad input): it is left out, the others compared
READ_ERRORS = (NormscopeError, OSError, ValueError)


def _labels(n: int, labels: Sequence[str] | None) -> list[str]:
    if not labels:
        return ["base"] + [f"variant{i}" for i in range(1, n)] if n > 2 else ["base", "variant"][:n]
    labels = [str(x).strip() for x in labels]
    if len(labels) != n:
        raise ConfigError(f"--labels gives {len(labels)} labels for {n} models; give one per model")
    if len(set(labels)) != n or not all(labels):
        raise ConfigError(f"--labels must be distinct and non-empty, got {', '.join(labels)}")
    return labels


def compare(sources: Sequence[str | Path], *, arch: str | None = None,
            norm_convention: NormConvention | str | None = None, token: str | None = None,
            cache_dir: Path | None = None, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
            progress: ProgressFn | None = None, jobs: int | None = 1, executor: Executor | str = "thread",
            ray_address: str | None = None, labels: Sequence[str] | None = None,
            adapters: dict[int, str | Path] | None = None, include: Sequence[str] = (),
            exclude: Sequence[str] = ()) -> CompareResult:
    """Compare checkpoints: each variant against the first, tensor by tensor, and all by depth.

    Args:
        sources: two or more of what analyze accepts (HF dir, .safetensors, .gguf, hub id, quantized packs).
        labels: one name per source (default base, variant1, …).
        adapters: {source index: PEFT adapter dir}: that variant is the base weights with the LoRA merged.
        arch, norm_convention: overrides for every source (as for `analyze`).
        token, cache_dir: for hub ids, as for `analyze`.
        include, exclude: globs on tensor names.
        chunk_elements: largest block of values read at once per model (bounds memory).
        progress: called as progress(description, bytes done, bytes total).
        jobs, executor, ray_address: workers, executor and Ray cluster for analysing each model (as for
            `analyze`); the tensor-by-tensor differences stream the two models together in this process.

    Returns:
        CompareResult: `pairs` (each variant vs the first), `profiles` (statistics by role against depth),
        `analyses` (one analyze result per variant), `failed` (variants that could not be read: each is left
        out with its one-line error, and the others are still compared).

    Raises:
        ConfigError (fewer than two sources, bad labels); the base's SourceNotFoundError or CheckpointError
        when the base cannot be read; CheckpointError when fewer than two models can be read.

    Example:
        >>> r = compare(["gemma-3-270m-hf", "example:gemma3-270m"], labels=["bf16", "q4_k_m"])  # doctest: +SKIP
        >>> r.pair("q4_k_m").identical   # every norm, once the GGUF's +1 is removed
        109
    """
    if len(sources) < 2:
        raise ConfigError(f"compare needs at least two models, got {len(sources)}")
    names = _labels(len(sources), labels)
    adapters = adapters or {}
    for index in adapters:
        if not 0 <= index < len(sources):
            raise ConfigError(f"--adapter for model {index + 1}: there are only {len(sources)} models")
    models: list[Model] = []
    kept: list[int] = []
    failed: list[FailedVariant] = []
    try:
        for i, source in enumerate(sources):
            kwargs = {"adapter": adapters[i]} if i in adapters else {}
            try:
                models.append(open_model(source, arch=arch, norm_convention=norm_convention, token=token,
                                         cache_dir=cache_dir, **kwargs))
            except READ_ERRORS as e:
                if i == 0:  # the base: nothing to compare against
                    raise
                failed.append(FailedVariant(names[i], str(source), _one_line(e)))
                continue
            kept.append(i)
        if len(models) < 2:
            raise _unreadable(failed)
        return compare_models(models, [names[i] for i in kept], include=include, exclude=exclude,
                              chunk_elements=chunk_elements, progress=progress,
                              adapters={names[i]: str(a) for i, a in adapters.items()}, jobs=jobs,
                              executor=executor, ray_address=ray_address, failed=failed)
    finally:
        for m in models:
            m.close()


def _non_finite(nan: int, inf: int) -> str:
    parts = [f"{nan:,} NaN" if nan else "", f"{inf:,} infinite value{'s' if inf != 1 else ''}" if inf else ""]
    return " and ".join(p for p in parts if p) + (" values" if nan and not inf else "")


def _one_line(e: BaseException) -> str:
    return " ".join(message(e).split()) or type(e).__name__


def _unreadable(failed: Sequence[FailedVariant]) -> NormscopeError:
    what = "; ".join(f"{f.label}: {f.error}" for f in failed)
    return CheckpointError(f"compare needs at least two readable models; not readable: {what}")


def compare_models(models: Sequence[Model], labels: Sequence[str], *, include: Sequence[str] = (),
                   exclude: Sequence[str] = (), chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
                   progress: ProgressFn | None = None, adapters: dict[str, str] | None = None, jobs: int | None = 1,
                   executor: Executor | str = "thread", ray_address: str | None = None,
                   failed: Sequence[FailedVariant] = ()) -> CompareResult:
    """`compare` on open models. A variant (not the base) that fails to read is left out and listed in
    `failed`; the others are still compared."""
    adapters = adapters or {}
    failed = list(failed)
    base = models[0]
    alignments = [align(base, m, include, exclude) for m in models[1:]]
    total = sum(m.checkpoint.bytes_on_disk for m in models) + sum(
        base.entry(a).nbytes + m.entry(b).nbytes for (pairs, _), m in zip(alignments, models[1:]) for a, b, _ in pairs)
    done = [0]

    def step(what: str, nbytes: int) -> None:
        done[0] += nbytes
        if progress:
            progress(what, done[0], total)

    def drop(i: int, e: BaseException) -> None:
        if i == 0:
            raise e
        failed.append(FailedVariant(labels[i], models[i].source.spec or models[i].source.path, _one_line(e)))

    analyses: dict[int, AnalyzeResult] = {}
    for i, (label, m) in enumerate(zip(labels, models)):
        try:
            analyses[i] = analyze_model(m, include=include, exclude=exclude, chunk_elements=chunk_elements,
                                        jobs=jobs, executor=executor, ray_address=ray_address)
        except READ_ERRORS as e:
            drop(i, e)
        step(f"analyzed {label}", m.checkpoint.bytes_on_disk)
    pairs: dict[int, PairResult] = {}
    for i, ((matched, unmatched), m) in enumerate(zip(alignments, models[1:]), start=1):
        if i not in analyses:
            continue
        notes = {(a.name, b.name): note for a, b, note in matched}

        def diff(bm: Model, a: TensorInfo, vm: Model, b: TensorInfo) -> tuple[TensorDiff, ErrorSums]:
            return diff_tensors(bm, a, vm, b, notes[(a.name, b.name)], chunk_elements)

        def finished(k: int, m: Model = m, matched: list = matched) -> None:
            a, b, _ = matched[k]
            step(a.name, base.entry(a).nbytes + m.entry(b).nbytes)

        try:
            diffs = map_pairs(base, m, [(a, b) for a, b, _ in matched], diff, threads=chunk_threads(jobs, executor),
                              progress=finished)
        except READ_ERRORS as e:  # the base's analysis has just read all of it: the variant is what fails
            drop(i, e)
            del analyses[i]
            continue
        pairs[i] = pair_result(labels[0], labels[i], diffs, unmatched, analyses[0], analyses[i])
    if not pairs:
        raise _unreadable(failed)
    kept = [0, *pairs]
    variants = tuple(Variant(labels[i], models[i].source, models[i].detected.spec.name, models[i].n_layers,
                             len(models[i].tensors), sum(t.n_params for t in models[i].tensors),
                             adapters.get(labels[i])) for i in kept)
    warnings = tuple(f"{labels[i]}: {w}" for i in kept for w in models[i].warnings)
    kept_labels = [labels[i] for i in kept]
    kept_analyses = [analyses[i] for i in kept]
    options = {"labels": list(labels), "include": list(include), "exclude": list(exclude)}
    errors = tuple(f"{label}: {t.name}: {_non_finite(st.nan_count, st.inf_count)}: that model is damaged; its "
                   "differences in this tensor mean nothing"
                   for label, a in zip(kept_labels, kept_analyses) for t in a.tensors
                   for st in (t.norm, t.weight) if st is not None and (st.nan_count or st.inf_count))
    return CompareResult(variants=variants, pairs=tuple(pairs.values()), profiles=depth_profiles(kept_labels,
                         kept_analyses), analyses=tuple(kept_analyses), warnings=warnings, options=options,
                         failed=tuple(failed), errors=errors)
