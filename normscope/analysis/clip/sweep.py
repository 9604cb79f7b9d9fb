"""`clip --sweep`: does clipping before quantization lower the error the model ends up with, or only add to it?

For each percentile and each tensor in scope, the tensor is clipped as `clip` would write it (same
thresholds, same rounding, same super-weight protection) and quantized as `simulate` does (the same
plans and kernels, through `measure_tensor`'s transform hook). Three errors are measured against the
original tensor x: clipping ‖c − x‖, quantization after clipping ‖q − c‖, and the total ‖q − x‖ (what
the model ends up with: the two plus their cross term). A tensor no scheme quantizes (every norm) has
no quantization error to save, so its total is its clipping error: pure loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np

from ...arch import effective_gain
from ...errors import ConfigError
from ...io import DEFAULT_CHUNK_ELEMENTS, SafetensorsCheckpoint
from ...io.writer import FLOAT_DTYPES, encode
from ...quant import get_format, is_gguf_scheme
from ...quant import parse_schemes
from ...results import (ClipGranularity, ClipScope, ClipSweepResult, NormConvention, ProgressFn, Role, SweepBest,
                        SweepPoint, SweepTensor, SweepTotal, TensorInfo)
from ..engine.clipping import (SUB_VALUES, check_finite, check_percentile, clip_rows, convention_of, in_scope,
                               keep_mask, protected_cells, row_thresholds, tensor_thresholds)
from ..engine.measure import TensorFormats, measure_tensor
from ..engine.model import Model, open_model
from ..engine.parallel import map_tensors
from ..engine.plans import plan_model
from ..engine.superweight import SUPER_WEIGHT_Z, super_weight_candidates
from ..engine.workers import Executor, ModelOpener
from ..metrics.quant_error import ErrorAccumulator, rel_l2, sqnr_db

__all__ = ["clip_sweep", "clip_sweep_model", "parse_percentiles", "DEFAULT_SWEEP"]

DEFAULT_SWEEP = (90.0, 99.0, 99.9, 99.99, 100.0)


def parse_percentiles(values: str | float | Sequence[str | float]) -> tuple[float, ...]:
    """Sorted distinct percentiles from "90,99,99.9" or a list, with 100 (no clipping, the baseline) added.

    Raises:
        ConfigError: a value that is not a number in [0, 100], or none at all.
    """
    items = [values] if isinstance(values, (str, int, float)) else list(values)
    parts = [s.strip() for item in items for s in str(item).split(",") if s.strip()]
    if not parts:
        raise ConfigError("no percentiles to sweep; e.g. --sweep 90,99,99.9,99.99,100")
    return tuple(sorted({check_percentile(s) for s in parts} | {100.0}))


def clip_sweep(source: str | Path | None = None, percentiles: str | Sequence[float] = DEFAULT_SWEEP, *,
               arch: str | None = None, norm_convention: NormConvention | str | None = None,
               token: str | None = None, cache_dir: Path | None = None, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
               progress: ProgressFn | None = None, jobs: int | None = 1, executor: Executor | str = "thread",
               ray_address: str | None = None, schemes: str | Sequence[str] = ("Q4_K_M",),
               scope: ClipScope | str = ClipScope.ALL, per: ClipGranularity | str = ClipGranularity.TENSOR,
               include: Sequence[str] = (), exclude: Sequence[str] = (), protect: bool = True,
               protect_z: float = SUPER_WEIGHT_Z, include_lm_head: bool = False) -> ClipSweepResult:
    """Clipping error, quantization error after clipping, and their total, per tensor and pooled, for each
    percentile and scheme; the percentile that minimises the total; where clipping only hurts.

    Args:
        source: what analyze accepts (GGUF and quantized packs too: nothing is written).
        percentiles: e.g. "90,99,99.9,99.99,100"; 100 (no clipping) is always measured as the baseline.
        schemes: as simulate's (Q4_K_M, int4, …).
        scope: "all" by default here (norms and Linear weights), "norms" or "linear".
        per, include, exclude, protect, protect_z: as `clip`'s.
        include_lm_head: quantize an untied lm_head under simulated schemes.
        arch, norm_convention, token, cache_dir, chunk_elements, progress: as for `analyze`.
        jobs, executor, ray_address: workers, as for `analyze`; the result does not depend on them.

    Returns:
        ClipSweepResult (schema `normscope.clip_sweep`).

    Raises:
        ConfigError, UnknownNameError (scheme), SourceNotFoundError, CheckpointError.

    Example:
        >>> r = clip_sweep("gemma-3-270m-hf", "99,99.9", schemes="Q4_K_M")  # doctest: +SKIP
        >>> r.scheme_best("Q4_K_M").percentile
        100.0
    """
    ps, names = parse_percentiles(percentiles), parse_schemes(schemes)
    with open_model(source, arch=arch, norm_convention=norm_convention, token=token, cache_dir=cache_dir) as model:
        return clip_sweep_model(model, ps, names, scope=scope, per=per, include=include, exclude=exclude,
                                protect=protect, protect_z=protect_z, include_lm_head=include_lm_head,
                                chunk_elements=chunk_elements, progress=progress, jobs=jobs, executor=executor,
                                ray_address=ray_address)


def clip_sweep_model(model: Model, percentiles: Sequence[float], schemes: Sequence[str], *,
                     scope: ClipScope | str = ClipScope.ALL, per: ClipGranularity | str = ClipGranularity.TENSOR,
                     include: Sequence[str] = (), exclude: Sequence[str] = (), protect: bool = True,
                     protect_z: float = SUPER_WEIGHT_Z, include_lm_head: bool = False,
                     chunk_elements: int = DEFAULT_CHUNK_ELEMENTS, progress: ProgressFn | None = None,
                     jobs: int | None = 1, executor: Executor | str = "thread", ray_address: str | None = None,
                     opener: ModelOpener | None = None) -> ClipSweepResult:
    """`clip_sweep` on an already open model (`opener`: how workers open it; default: as it was opened)."""
    ps, names = parse_percentiles(percentiles), parse_schemes(schemes)
    scope, per = ClipScope(scope), ClipGranularity(per)
    tensors = in_scope(model, scope, include, exclude)
    downs = [t for t in tensors if t.role is Role.MLP_DOWN]
    supers = super_weight_candidates(model, downs, z_threshold=protect_z, chunk_elements=chunk_elements) \
        if downs else ()
    cells = protected_cells(supers) if protect else {}
    warnings = list(model.warnings)
    plans = {s: plan_model(model, s, include_lm_head=include_lm_head) for s in names}
    points: list[SweepPoint] = []
    # (tensor, scheme) -> (len(ps), 4): clip d², quant d², total d², x²
    sums: dict[tuple[str, str], np.ndarray] = {}
    formats_of = {t.name: tuple(_format(plans[s][t.name].type, t, s, warnings) for s in names) for t in tensors}
    measured = map_tensors(opener or ModelOpener.of(model), model, tensors,
                           partial(_sweep_item, ps=ps, per=per, formats=formats_of, cells=cells,
                                   chunk_elements=chunk_elements), jobs=jobs, executor=executor,
                           ray_address=ray_address, progress=progress)
    for t, rows in zip(tensors, measured):
        formats = formats_of[t.name]
        for i, s in enumerate(names):
            table = np.array([[r["clip_d2"], r["quant_d2"][i], r["total_d2"][i], r["x2"]] for r in rows])
            sums[(t.name, s)] = table
            for k, p in enumerate(ps):
                r = rows[k]
                points.append(SweepPoint(
                    tensor=t.name, scheme=s, type=formats[i], percentile=p, threshold=r["threshold"],
                    clipped=r["clipped"], clip_rel_l2=rel_l2(r["x2"], r["clip_d2"]),
                    quant_rel_l2=rel_l2(r["x2"], r["quant_d2"][i]), total_rel_l2=rel_l2(r["x2"], r["total_d2"][i])))
    quantized = {s: [t.name for t in tensors if _format(plans[s][t.name].type, t, s, [])] for s in names}
    totals = tuple(_total(s, k, p, ps, quantized[s], sums, points) for s in names for k, p in enumerate(ps))
    per_tensor = tuple(_tensor_best(t.name, s, ps, sums[(t.name, s)], _format(plans[s][t.name].type, t, s, []))
                       for s in names for t in tensors)
    best = tuple(_best(s, ps, tensors, quantized[s], totals, per_tensor) for s in names)
    options = {"percentiles": list(ps), "schemes": list(names), "scope": scope.value, "per": per.value,
               "include": list(include), "exclude": list(exclude), "protect": protect, "protect_z": protect_z,
               "include_lm_head": include_lm_head, "arch": model.detected.spec.name}
    return ClipSweepResult(
        source=model.source, architecture=model.detected.spec.name, percentiles=ps, schemes=tuple(names),
        scope=scope, per=per, protect=protect, points=tuple(points), totals=totals, tensors=per_tensor, best=best,
        super_weights=supers, notes=_notes(ps, tensors, best, totals, per_tensor, points, supers, protect),
        warnings=tuple(dict.fromkeys(warnings)), options=options)


def _format(fmt: str | None, t: TensorInfo, scheme: str, warnings: list[str]) -> str | None:
    """The scheme's format for this tensor, or None where its rows do not fit it (reported, as simulate does)."""
    if fmt is None:
        return None
    try:
        get_format(fmt).check_shape(t.shape)
    except ConfigError as e:
        warnings.append(f"{scheme}: {t.name}: {e}")
        return None
    return fmt


def _storage(model: Model, t: TensorInfo) -> str:
    """The dtype a clipped value is rounded to: the tensor's own for plain safetensors, float32 otherwise."""
    plain = type(model.checkpoint) is SafetensorsCheckpoint and t.dtype in FLOAT_DTYPES
    return t.dtype if plain else "F32"


def _sweep_item(model: Model, t: TensorInfo, *, ps: Sequence[float], per: ClipGranularity,
                formats: dict[str, tuple[str | None, ...]], cells: dict[str, dict[int, list[int]]],
                chunk_elements: int) -> list[dict]:
    """`_sweep_tensor` with the formats and protected cells looked up by name: the picklable work of map_tensors."""
    return _sweep_tensor(model, t, ps, per, formats[t.name], cells.get(t.name), chunk_elements)


def _sweep_tensor(model: Model, t: TensorInfo, ps: Sequence[float], per: ClipGranularity,
                  formats: tuple[str | None, ...], cells: dict[int, list[int]] | None, chunk_elements: int
                  ) -> list[dict]:
    """Per percentile: threshold, values clipped, and the sums behind the three errors (per scheme)."""
    conv = convention_of(t)
    thresholds = None
    if per is ClipGranularity.TENSOR or conv is not None:
        thresholds, _ = tensor_thresholds(model, t, ps, chunk_elements)
    storage = _storage(model, t)
    n_schemes = len(formats)
    row_len = t.shape[-1] if t.shape else 1
    rows = [{"threshold": thresholds[k] if thresholds else 0.0, "clipped": 0, "clip_d2": 0.0, "x2": 0.0,
             "quant_d2": [0.0] * n_schemes, "total_d2": [0.0] * n_schemes} for k in range(len(ps))]

    def values_of(stored: np.ndarray) -> np.ndarray:
        values = stored.astype(np.float64)
        return effective_gain(values, conv) if conv is not None else values

    def clipper(k: int) -> Callable[[int, np.ndarray], np.ndarray]:
        """Rows -> the rows `clip --percentile ps[k]` would write (a pure function: passes may repeat)."""
        def transform(row0: int, block: np.ndarray) -> np.ndarray:
            out = np.empty(block.shape, np.float32)
            step = max(1, SUB_VALUES // row_len)  # bounded float64 temporaries whatever the chunk
            for r in range(0, block.shape[0], step):
                raw = encode(block[r:r + step], storage)  # exact: the values were decoded from this dtype
                if thresholds:
                    limit = thresholds[k]
                else:
                    values = values_of(raw)
                    check_finite(values, t)
                    limit = row_thresholds(values, [ps[k]])[0]
                    rows[k]["threshold"] = max(rows[k]["threshold"], float(limit.max()) if limit.size else 0.0)
                new, _, _ = clip_rows(raw, storage, limit, conv, keep_mask(cells, row0 + r, raw.shape))
                out[r:r + step] = new
            return out
        return transform

    def tally(k: int, stored: np.ndarray, clipped: np.ndarray) -> None:
        d = clipped.astype(np.float64) - stored.astype(np.float64)  # the same in gain and stored terms
        x = values_of(stored).reshape(-1)
        r = rows[k]
        r["clipped"] += int(np.count_nonzero(d))
        r["clip_d2"] += float(np.dot(d.reshape(-1), d.reshape(-1)))
        r["x2"] += float(np.dot(x, x))

    if not any(formats):  # no scheme quantizes it: one pass measures every percentile's clipping error
        for row0, block in model.iter_rows(t, min(chunk_elements, SUB_VALUES)):
            block = block.reshape(-1, row_len)
            for k in range(len(ps)):
                tally(k, block, clipper(k)(row0, block))
        for r in rows:
            r["total_d2"] = [r["clip_d2"]] * n_schemes
        return rows
    for k in range(len(ps)):
        accs = {i: ErrorAccumulator(t.n_params) for i, f in enumerate(formats) if f}

        def observe(row0: int, stored: np.ndarray, clipped: np.ndarray, ys: list, k=k, accs=accs) -> None:
            tally(k, stored, clipped)
            for i, acc in accs.items():
                acc.update(stored, ys[i], row0)  # q against the original: the total error

        measured = measure_tensor(model, t, TensorFormats(formats), chunk_elements, transform=clipper(k),
                                  observe=observe)
        for i in range(n_schemes):
            m = measured[i]
            rows[k]["quant_d2"][i] = m.sums.d2 if m is not None else 0.0
            rows[k]["total_d2"][i] = accs[i].error_sums().d2 if m is not None else rows[k]["clip_d2"]
    return rows


def _total(scheme: str, k: int, p: float, ps: Sequence[float], names: list[str],
           sums: dict[tuple[str, str], np.ndarray], points: list[SweepPoint]) -> SweepTotal:
    table = sum((sums[(n, scheme)] for n in names), np.zeros((len(ps), 4)))
    clip_d2, quant_d2, total_d2, x2 = table[k]
    no_clip = rel_l2(table[-1][3], table[-1][2])
    here = rel_l2(x2, total_d2)
    clipped = sum(pt.clipped for pt in points if pt.scheme == scheme and pt.percentile == p and pt.tensor in names)
    return SweepTotal(scheme=scheme, percentile=p, tensors=len(names), clipped=clipped,
                      clip_rel_l2=rel_l2(x2, clip_d2), quant_rel_l2=rel_l2(x2, quant_d2), total_rel_l2=here,
                      total_sqnr_db=sqnr_db(x2, total_d2) if names else math.inf,
                      vs_no_clip=here / no_clip - 1.0 if no_clip > 0 else (math.inf if here > 0 else 0.0))


def _argmin(values: Sequence[float]) -> int:
    """Index of the smallest value; ties go to the last (the larger percentile: less clipping)."""
    best = len(values) - 1
    for k in range(len(values) - 2, -1, -1):
        if values[k] < values[best]:
            best = k
    return best


def _tensor_best(name: str, scheme: str, ps: Sequence[float], table: np.ndarray, fmt: str | None) -> SweepTensor:
    totals = [rel_l2(x2, d2) for _, _, d2, x2 in table]
    k = _argmin(totals)
    return SweepTensor(tensor=name, scheme=scheme, type=fmt, best_percentile=ps[k], best_total_rel_l2=totals[k],
                       no_clip_total_rel_l2=totals[-1],
                       change=totals[k] / totals[-1] - 1.0 if totals[-1] > 0 else 0.0)


def _best(scheme: str, ps: Sequence[float], tensors: list[TensorInfo], quantized: list[str],
          totals: tuple[SweepTotal, ...], per_tensor: tuple[SweepTensor, ...]) -> SweepBest:
    mine = [t for t in totals if t.scheme == scheme]
    k = _argmin([t.total_rel_l2 for t in mine])
    q = set(quantized)
    rows = [r for r in per_tensor if r.scheme == scheme and r.tensor in q]
    return SweepBest(scheme=scheme, percentile=ps[k], total_rel_l2=mine[k].total_rel_l2,
                     no_clip_total_rel_l2=mine[-1].total_rel_l2,
                     helped=tuple(r.tensor for r in rows if r.best_percentile < 100.0),
                     hurt=tuple(r.tensor for r in rows if r.best_percentile >= 100.0),
                     unquantized=tuple(t.name for t in tensors if t.name not in q))


def _notes(ps: Sequence[float], tensors: list[TensorInfo], best: tuple[SweepBest, ...],
           totals: tuple[SweepTotal, ...], per_tensor: tuple[SweepTensor, ...], points: list[SweepPoint],
           supers: tuple, protect: bool) -> tuple[str, ...]:
    """The sweep in plain words: the best percentile per scheme, and where clipping is pure error."""
    notes = []
    lowest = ps[0]
    for b in best:
        t_low = next(t for t in totals if t.scheme == b.scheme and t.percentile == lowest)
        n = t_low.tensors
        if n == 0:
            notes.append(f"{b.scheme} quantizes none of the {len(tensors)} tensors in scope: nothing to trade, any "
                         "clipping is pure error")
        elif b.percentile < 100.0:
            change = b.total_rel_l2 / b.no_clip_total_rel_l2 - 1.0 if b.no_clip_total_rel_l2 else 0.0
            notes.append(f"{b.scheme}: clipping at p{b.percentile:g} minimises the total error of the {n} tensors it "
                         f"quantizes (rel L2 {b.total_rel_l2:.4g} against {b.no_clip_total_rel_l2:.4g} unclipped, "
                         f"{100 * change:+.2f}%); {len(b.helped)} of them are better off clipped at their own best "
                         f"percentile, {len(b.hurt)} are worse off with any clipping")
        else:
            least = min((t for t in totals if t.scheme == b.scheme and t.percentile < 100.0),
                        key=lambda t: t.vs_no_clip, default=t_low)
            text = (f"{b.scheme}: no percentile below 100 lowers the total error of the {n} tensors it quantizes: "
                    f"clipping only adds error here (the least at p{least.percentile:g}: "
                    f"{100 * least.vs_no_clip:+.2f}%")
            if least.percentile != lowest:
                text += f"; at p{lowest:g}: {100 * t_low.vs_no_clip:+.2f}%"
            text += f"; rel L2 unclipped {b.no_clip_total_rel_l2:.4g})"
            if b.helped:
                gains = [r for r in per_tensor if r.scheme == b.scheme and r.tensor in set(b.helped)]
                text += (f"; {len(b.helped)} of them are better off clipped on their own, by at most "
                         f"{100 * -min(r.change for r in gains):.2f}%")
            notes.append(text)
        norms = [t for t in tensors if t.role.is_norm and t.name in set(b.unquantized)]
        if norms:
            where = "llama.cpp keeps every 1-D tensor in F32" if is_gguf_scheme(b.scheme) else \
                "quanto, GPTQ and AWQ quantize only Linear layers"
            names_ = {t.name for t in norms}
            worst = max((pt for pt in points if pt.scheme == b.scheme and pt.percentile == lowest
                         and pt.tensor in names_), key=lambda pt: pt.clip_rel_l2)
            notes.append(f"{b.scheme} does not quantize the {len(norms)} norm tensors in scope ({where}): clipping a "
                         "norm is pure error, it changes the gain the model was trained with and saves no "
                         f"quantization error (worst at p{lowest:g}: {worst.tensor}, whose gains move by "
                         f"{100 * worst.clip_rel_l2:.3g}% in relative L2)")
    if supers and protect:
        n = len(supers)
        notes.append(f"{n} super-weight candidate{'s' if n != 1 else ''} {'were' if n != 1 else 'was'} left "
                     "unclipped at every percentile, as `clip` would leave them")
    return tuple(notes)
