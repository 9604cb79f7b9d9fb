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

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ..errors import CheckpointError, ConfigError, NormscopeError, message
from ..io import DEFAULT_CHUNK_ELEMENTS
from ..results import (AnalyzeResult, CompareResult, DepthProfile, FailedVariant, NormChange, PairResult,
                       ProgressFn, Role, TensorDiff, TensorInfo, Unmatched, Variant)
from .analyze import analyze_model
from .errors import ErrorAccumulator, ErrorSums, rel_l2, sqnr_db
from .model import Model, open_model
from .select import select_tensors

__all__ = ["compare", "compare_models", "align", "paired_rows", "depth_profiles"]

MOVED_MOST = 20
# what a variant that cannot be read raises (as the CLI sees bad input): it is left out, the others compared
READ_ERRORS = (NormscopeError, OSError, ValueError)
NORM_CHANGE = 0.10  # a norm "grew" when its max |gain| rose by more than this fraction


def _labels(n: int, labels: Sequence[str] | None) -> list[str]:
    if not labels:
        return ["base"] + [f"variant{i}" for i in range(1, n)] if n > 2 else ["base", "variant"][:n]
    labels = [str(x).strip() for x in labels]
    if len(labels) != n:
        raise ConfigError(f"--labels gives {len(labels)} labels for {n} models; give one per model")
    if len(set(labels)) != n or not all(labels):
        raise ConfigError(f"--labels must be distinct and non-empty, got {', '.join(labels)}")
    return labels


def compare(sources: Sequence[str | Path], *, labels: Sequence[str] | None = None,
            adapters: dict[int, str | Path] | None = None, arch: str | None = None,
            include: Sequence[str] = (), exclude: Sequence[str] = (), chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
            progress: ProgressFn | None = None, token: str | None = None, jobs: int | None = 1,
            executor: str = "thread") -> CompareResult:
    """Compare checkpoints: each variant against the first, tensor by tensor, and all by depth.

    Args:
        sources: two or more of what analyze accepts (HF dir, .safetensors, .gguf, hub id, quantized packs).
        labels: one name per source (default base, variant1, …).
        adapters: {source index: PEFT adapter dir}: that variant is the base weights with the LoRA merged.
        arch: architecture override for every source.
        include, exclude: globs on tensor names.
        chunk_elements: largest block of values read at once per model (bounds memory).
        progress: called as progress(description, bytes done, bytes total).
        jobs, executor: workers and executor for analysing each model (as for `analyze`); the
            tensor-by-tensor differences stream the two models together in this process.

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
                models.append(open_model(source, arch=arch, token=token, **kwargs))
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
                              executor=executor, failed=failed)
    finally:
        for m in models:
            m.close()


def _one_line(e: BaseException) -> str:
    return " ".join(message(e).split()) or type(e).__name__


def _unreadable(failed: Sequence[FailedVariant]) -> NormscopeError:
    what = "; ".join(f"{f.label}: {f.error}" for f in failed)
    return CheckpointError(f"compare needs at least two readable models; not readable: {what}")


def compare_models(models: Sequence[Model], labels: Sequence[str], *, include: Sequence[str] = (),
                   exclude: Sequence[str] = (), chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
                   progress: ProgressFn | None = None, adapters: dict[str, str] | None = None, jobs: int | None = 1,
                   executor: str = "thread", failed: Sequence[FailedVariant] = ()) -> CompareResult:
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
                                        jobs=jobs, executor=executor)
        except READ_ERRORS as e:
            drop(i, e)
        step(f"analyzed {label}", m.checkpoint.bytes_on_disk)
    pairs: dict[int, PairResult] = {}
    for i, ((matched, unmatched), m) in enumerate(zip(alignments, models[1:]), start=1):
        if i not in analyses:
            continue
        diffs = []
        try:
            for a, b, note in matched:
                diffs.append(_diff(base, a, m, b, note, chunk_elements))
                step(a.name, base.entry(a).nbytes + m.entry(b).nbytes)
        except READ_ERRORS as e:  # the base's analysis has just read all of it: the variant is what fails
            drop(i, e)
            del analyses[i]
            continue
        pairs[i] = _pair(labels[0], labels[i], diffs, unmatched, analyses[0], analyses[i])
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
    return CompareResult(variants=variants, pairs=tuple(pairs.values()), profiles=depth_profiles(kept_labels,
                         kept_analyses), analyses=tuple(kept_analyses), warnings=warnings, options=options,
                         failed=tuple(failed))


# -- alignment ---------------------------------------------------------------------------------------

def _keys(model: Model, info: TensorInfo) -> list[str]:
    keys = [model.detected.spec.canonical(info.name)]
    if info.gguf_name:
        keys.append("gguf:" + info.gguf_name)
    return keys


def align(base: Model, variant: Model, include: Sequence[str] = (), exclude: Sequence[str] = ()
          ) -> tuple[list[tuple[TensorInfo, TensorInfo, str]], list[Unmatched]]:
    """Pair the tensors of two models: ([(base tensor, variant tensor, note)], unmatched tensors).

    Pairs are by canonical HF name, then by GGUF name; shapes must agree (else both sides are listed as
    unmatched with the two shapes). An untied lm_head on one side pairs with the embedding of a tied
    model on the other (that embedding is its output head).
    """
    b_tensors = select_tensors(base.tensors, include, exclude)
    v_tensors = select_tensors(variant.tensors, include, exclude)
    index: dict[str, TensorInfo] = {}
    for t in v_tensors:
        for k in _keys(variant, t):
            index.setdefault(k, t)
    used: set[str] = set()
    pairs, unmatched = [], []
    for t in b_tensors:
        other = next((index[k] for k in _keys(base, t) if k in index and index[k].name not in used), None)
        note = ""
        if other is None and t.role is Role.LM_HEAD and variant.tied_embeddings:
            # the variant's embedding is its head too: it may pair twice
            other = next((v for v in v_tensors if v.role is Role.EMBEDDING), None)
            note = "the variant ties its head to the embedding: compared with its token embedding"
        if other is None:
            unmatched.append(Unmatched(t.name, "base", t.shape, "not in the variant"))
            continue
        if tuple(other.shape) != tuple(t.shape):
            unmatched.append(Unmatched(t.name, "base", t.shape, f"shape {_shape(t.shape)} vs {_shape(other.shape)}"))
            unmatched.append(Unmatched(other.name, "variant", other.shape,
                                       f"shape {_shape(other.shape)} vs {_shape(t.shape)}"))
            used.add(other.name)
            continue
        used.add(other.name)
        pairs.append((t, other, note))
    if base.tied_embeddings and not any(a.role is Role.LM_HEAD for a, _, _ in pairs):
        emb = next((a for a, _, _ in pairs if a.role is Role.EMBEDDING), None)
        head = next((v for v in v_tensors if v.role is Role.LM_HEAD and v.name not in used), None)
        if emb is not None and head is not None and head.shape == emb.shape:
            pairs.append((emb, head, "the base ties its head to the embedding: its embedding is compared"))
            used.add(head.name)
    for t in v_tensors:
        if t.name not in used:
            unmatched.append(Unmatched(t.name, "variant", t.shape, "not in the base"))
    return pairs, unmatched


def _shape(shape: Sequence[int]) -> str:
    return "×".join(map(str, shape)) or "scalar"


def paired_rows(a: Model, ia: TensorInfo, b: Model, ib: TensorInfo, max_elements: int = DEFAULT_CHUNK_ELEMENTS
                ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(first row, rows of a, the same rows of b), whatever row chunks each model reads in."""
    ita, itb = a.iter_rows(ia, max_elements), b.iter_rows(ib, max_elements)
    row_len = ia.shape[-1] if ia.shape else 1
    bufa = bufb = np.zeros((0, row_len), np.float32)
    row = 0
    while True:
        if not len(bufa):
            nxt = next(ita, None)
            bufa = nxt[1].reshape(-1, row_len) if nxt is not None else bufa
        if not len(bufb):
            nxt = next(itb, None)
            bufb = nxt[1].reshape(-1, row_len) if nxt is not None else bufb
        n = min(len(bufa), len(bufb))
        if n == 0:
            return
        yield row, bufa[:n], bufb[:n]
        bufa, bufb, row = bufa[n:], bufb[n:], row + n


def _diff(base: Model, a: TensorInfo, variant: Model, b: TensorInfo, note: str, chunk_elements: int
          ) -> tuple[TensorDiff, ErrorSums]:
    acc = ErrorAccumulator(a.n_params)
    identical = True
    for _, x, y in paired_rows(base, a, variant, b, chunk_elements):
        identical = identical and bool(np.array_equal(x, y, equal_nan=True))
        acc.update(x, y)
    if acc.second_pass_needed():
        acc.start_second_pass()
        for _, x, y in paired_rows(base, a, variant, b, chunk_elements):
            acc.second_pass(x, y)
    diff = TensorDiff(a.name, b.source_name, a.role, a.layer, a.shape, a.dtype, b.dtype, identical, acc.finish(),
                      note)
    return diff, acc.error_sums()


# -- summaries -----------------------------------------------------------------------------------------

def _pair(base_label: str, label: str, measured: list[tuple[TensorDiff, ErrorSums]], unmatched: list[Unmatched],
          base_analysis: AnalyzeResult, analysis: AnalyzeResult) -> PairResult:
    diffs = [t for t, _ in measured]
    d2 = np.array([s.d2 for _, s in measured], dtype=np.float64)
    total_d2, total_x2 = float(d2.sum()), float(sum(s.x2 for _, s in measured))
    order = np.argsort(-d2, kind="stable")
    share = float(d2[order[:5]].sum() / total_d2) if total_d2 > 0 else 0.0
    half = int(np.searchsorted(np.cumsum(d2[order]), total_d2 / 2) + 1) if total_d2 > 0 else 0
    moved = sorted((t for t in diffs if not t.identical), key=lambda t: -_finite(t.error.rel_l2))
    changes = _norm_changes(base_analysis, analysis)
    identical = sum(t.identical for t in diffs)
    summary = _summary(base_label, label, diffs, unmatched, identical, moved, share, half, changes)
    return PairResult(base=base_label, variant=label, matched=len(diffs), identical=identical, tensors=tuple(diffs),
                      unmatched=tuple(unmatched), rel_l2=rel_l2(total_x2, total_d2),
                      sqnr_db=sqnr_db(total_x2, total_d2),
                      moved_most=tuple(t.name for t in moved[:MOVED_MOST]), top5_error_share=share,
                      tensors_for_half=half, norm_changes=changes, summary=summary)


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 1e300


def _norm_changes(base: AnalyzeResult, variant: AnalyzeResult) -> tuple[NormChange, ...]:
    other = {}
    for t in variant.tensors:
        if t.norm is not None:
            other[t.name] = t
    out = []
    for t in base.tensors:
        v = other.get(t.name)
        if t.norm is None or v is None:
            continue
        b, n = t.norm.max_abs_gain, v.norm.max_abs_gain
        ratio = n / b if b else (1.0 if n == b else math.inf)
        out.append(NormChange(t.name, b, n, ratio))
    out.sort(key=lambda c: -abs(math.log(c.ratio)) if 0 < c.ratio < math.inf else -math.inf)
    return tuple(out)


def _summary(base: str, label: str, diffs: list[TensorDiff], unmatched: list[Unmatched], identical: int,
             moved: list[TensorDiff], share: float, half: int, changes: tuple[NormChange, ...]) -> tuple[str, ...]:
    lines = [f"{label} vs {base}: {len(diffs)} tensors aligned, {identical} identical, "
             f"{sum(u.side == 'base' for u in unmatched)} only in {base}, "
             f"{sum(u.side == 'variant' for u in unmatched)} only in {label}"]
    shapes = [u for u in unmatched if u.side == "base" and u.reason.startswith("shape")]
    if shapes:
        lines.append(f"{len(shapes)} tensors differ in shape (e.g. {shapes[0].name}: {shapes[0].reason}); "
                     "compare them by role and depth (the depth profiles), not element by element")
    norms = [t for t in diffs if t.role.is_norm]
    if norms and all(t.identical for t in norms):
        lines.append(f"all {len(norms)} norm tensors are identical in their HF convention (a GGUF's +1 removed): "
                     "whatever changed, the norms did not")
    if moved:
        top = moved[0]
        lines.append(f"largest relative change: {top.name} (relative L2 {top.error.rel_l2:.3g}, "
                     f"SQNR {top.error.sqnr_db:.1f} dB)")
        n = len([t for t in diffs if not t.identical])
        if n >= 10:
            spread = "concentrated" if share >= 0.5 else "spread"
            lines.append(f"the difference is {spread}: the 5 largest tensors hold {share:.0%} of it, half of it "
                         f"lies in {half} of {n} changed tensors")
    grew = [c for c in changes if c.ratio > 1 + NORM_CHANGE]
    shrank = [c for c in changes if c.ratio < 1 - NORM_CHANGE]
    if grew or shrank:
        text = f"norm gains: {len(grew)} grew by more than {NORM_CHANGE:.0%}, {len(shrank)} shrank"
        if grew:
            g = max(grew, key=lambda c: c.ratio)
            text += f"; most: {g.name} {g.base_max_abs_gain:.4g} → {g.variant_max_abs_gain:.4g}"
        lines.append(text)
    return tuple(lines)


# -- depth profiles -------------------------------------------------------------------------------------

_NORM_METRICS = ("gain_max", "gain_mean", "gain_p99")
_WEIGHT_METRICS = ("outlier_ratio", "kurtosis")


def depth_profiles(labels: Sequence[str], analyses: Sequence[AnalyzeResult]) -> tuple[DepthProfile, ...]:
    """Per variant and role, each statistic against relative depth layer / (layers − 1)."""
    out = []
    for label, a in zip(labels, analyses):
        n = a.summary.n_layers or 1 + max((t.layer for t in a.tensors if t.layer is not None), default=0)
        series: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for t in a.tensors:
            if t.layer is None or t.component.value != "text":
                continue
            depth = t.layer / (n - 1) if n > 1 else 0.0
            if t.norm is not None:
                values = (t.norm.max_abs_gain, abs(t.norm.gain_mean), t.norm.gain_p99)
                for metric, v in zip(_NORM_METRICS, values):
                    series.setdefault((t.role.value, metric), []).append((depth, v))
            elif t.weight is not None and t.role.is_linear and len(t.shape) == 2:
                for metric, v in zip(_WEIGHT_METRICS, (t.weight.absmax_over_std, t.weight.excess_kurtosis)):
                    series.setdefault((t.role.value, metric), []).append((depth, v))
        for (role, metric), points in sorted(series.items()):
            out.append(DepthProfile(label, role, metric, tuple(sorted(points))))
    return tuple(out)
