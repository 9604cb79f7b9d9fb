"""`simulate`: what a quantization scheme does to each tensor of *this* checkpoint, without running it.

A llama.cpp file type (Q4_K_M, Q8_0, …) follows llama-quantize's per-tensor plan and quantizes with
normscope's bit-exact ggml kernels; a simulated scheme (int4, int8, fp8_block, …) quantizes the decoder
Linear weights as optimum-quanto / GPTQ / FP8 would. Each tensor is streamed once in row chunks and
every scheme is applied to the same chunk; errors, norm-aware errors and block health accumulate per
scheme, and exact error percentiles take a second pass only when the first could not pin them.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np

from ..io import DEFAULT_CHUNK_ELEMENTS
from ..io.imatrix import Imatrix, read_imatrix
from ..quant import SCHEMES, PlannedTensor, get_format, is_gguf_scheme, parse_schemes
from ..quant.health import BlockHealth
from ..results import NormConvention, ProgressFn, SchemeResult, SimTensor, SimulateResult, TensorInfo
from .engine.importance import plan_importance
from .engine.measure import Measured, TensorFormats, health_stats, measure_planned
from .engine.model import Model, open_model
from .engine.parallel import map_tensors
from .engine.plans import norm_gains, plan_model, tensor_formats, unquantized_storage
from .engine.select import select_tensors
from .engine.workers import Executor, ModelOpener, chunk_threads
from .metrics.quant_error import rel_l2, sqnr_db

__all__ = ["simulate", "simulate_model"]

RANKING_SIZE = 20


def simulate(source: str | Path | None = None, *, arch: str | None = None,
             norm_convention: NormConvention | str | None = None, token: str | None = None,
             cache_dir: Path | None = None, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
             progress: ProgressFn | None = None, jobs: int | None = 1, executor: Executor | str = "thread",
             ray_address: str | None = None, schemes: str | Sequence[str] = ("Q4_K_M",), include: Sequence[str] = (),
             exclude: Sequence[str] = (), include_lm_head: bool = False,
             tensor_types: Sequence[tuple[str, str]] = (), imatrix: str | Path | Imatrix | None = None
             ) -> SimulateResult:
    """Simulate quantization schemes on every tensor of a checkpoint.

    Args:
        source: what analyze accepts (directory, file, hub id, `example:NAME`, None for the embedded model).
        schemes: llama.cpp file types (Q4_K_M, Q8_0, Q2_K, …) and simulated schemes (int4, int8,
            int4_sym_g128, fp8_block, …), as a list or "Q4_K_M,int4".
        include, exclude: globs on tensor names; excluded tensors are left out of every total.
        include_lm_head: quantize an untied lm_head under simulated schemes (GPTQ/AWQ leave it by default).
        tensor_types: (regex, ggml type) pairs for GGUF schemes, as llama-quantize's `--tensor-type`.
        imatrix: an importance matrix (llama-imatrix's .gguf or .dat, or a `read_imatrix` result), as
            llama-quantize's `--imatrix`: every type of a GGUF scheme whose quantizer takes importance weights
            gets its tensor's (byte for byte what ggml_quantize_chunk writes with them).
        chunk_elements: largest block of values read at once (bounds memory).
        progress: called as progress(tensor name, bytes done, bytes total).
        arch, norm_convention, token, cache_dir: as for `analyze`.
        jobs, executor, ray_address: workers (1: none; None or 0: the cores available), "thread",
            "process" or "ray", and the Ray cluster, as for `analyze`; the result does not depend on them.

    Returns:
        SimulateResult: one SchemeResult per scheme, each with every tensor's type, size and error.

    Raises:
        UnknownNameError (scheme, ggml type), ConfigError (also: an importance matrix llama-quantize refuses, or
            a scheme it refuses without one, as Q2_K_S), SourceNotFoundError, CheckpointError.

    Example:
        >>> r = simulate("example:gemma3-270m", schemes="Q4_K_M")  # doctest: +SKIP
        >>> r.scheme("Q4_K_M").type_counts
        {'F32': 109, 'Q5_0': 81, 'Q4_K': 27, 'Q8_0': 10, 'Q6_K': 9}
    """
    names = parse_schemes(schemes)
    imx = read_imatrix(imatrix) if imatrix is not None and not isinstance(imatrix, Imatrix) else imatrix
    with open_model(source, arch=arch, norm_convention=norm_convention, token=token, cache_dir=cache_dir) as model:
        return simulate_model(model, names, include=include, exclude=exclude, include_lm_head=include_lm_head,
                              tensor_types=tensor_types, chunk_elements=chunk_elements, progress=progress, jobs=jobs,
                              executor=executor, ray_address=ray_address, imatrix=imx)


def simulate_model(model: Model, schemes: Sequence[str], *, include: Sequence[str] = (),
                   exclude: Sequence[str] = (), include_lm_head: bool = False,
                   tensor_types: Sequence[tuple[str, str]] = (), chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
                   progress: ProgressFn | None = None, jobs: int | None = 1, executor: Executor | str = "thread",
                   ray_address: str | None = None, opener: ModelOpener | None = None,
                   imatrix: Imatrix | None = None) -> SimulateResult:
    """`simulate` on an already open model (`opener`: how workers open it; default: as it was opened)."""
    schemes = parse_schemes(schemes)
    tensors = select_tensors(model.tensors, include, exclude)
    # plans are made over the whole model: llama.cpp's counters (use_more_bits) see every tensor
    warnings = list(model.warnings)
    plans = {s: plan_model(model, s, include_lm_head=include_lm_head, tensor_types=tensor_types, warnings=warnings,
                           has_imatrix=imatrix is not None)
             for s in schemes}
    importance = plan_importance(imatrix, tensors, schemes, plans, warnings)
    damaged: dict[str, int] = {}
    gains = norm_gains(model, damaged)
    tensor_plans = {t.name: tensor_formats([plans[s][t.name].type for s in schemes], gains.get(t.name),
                                           importance.weights.get(t.name))
                    for t in tensors}
    work = [t for t in tensors if t.n_params and any(tensor_plans[t.name].formats)]  # empty: nothing to measure
    task = partial(measure_planned, formats={t.name: tensor_plans[t.name] for t in work},
                   chunk_elements=chunk_elements, threads=chunk_threads(jobs, executor))
    results = map_tensors(opener or ModelOpener.of(model), model, work, task, jobs=jobs, executor=executor,
                          progress=progress, ray_address=ray_address)
    measured = {info.name: m for info, m in zip(work, results)}
    results = tuple(_scheme_result(model, s, i, tensors, plans[s], tensor_plans, measured, importance.status)
                    for i, s in enumerate(schemes))
    options = {"schemes": list(schemes), "arch": model.detected.spec.name, "include": list(include),
               "exclude": list(exclude), "include_lm_head": include_lm_head,
               "tensor_types": [f"{p}={t}" for p, t in tensor_types],
               "imatrix": str(imatrix.path) if imatrix is not None else None}
    for name, ms in measured.items():
        bad = max((m.damaged for m in ms if m is not None), default=0)
        if bad:
            damaged[name] = bad
    return SimulateResult(source=model.source, architecture=model.detected.spec.name, schemes=results,
                          warnings=tuple(warnings), options=options, errors=damage_findings(damaged),
                          imatrix=importance.use)


def damage_findings(damaged: dict[str, int]) -> tuple[str, ...]:
    """One line per tensor holding NaN or Inf values: the checkpoint is damaged, and the numbers of these
    tensors (and, for a norm, of the tensors it weighs) mean nothing."""
    return tuple(f"{name}: {n:,} NaN or infinite value{'s' if n != 1 else ''}: the checkpoint is damaged; its errors "
                 "(and, for a norm, the norm-aware errors of the tensors it feeds) mean nothing"
                 for name, n in sorted(damaged.items()))


def _scheme_result(model: Model, scheme: str, index: int, tensors: Sequence[TensorInfo],
                   plan: dict[str, PlannedTensor], tensor_plans: dict[str, TensorFormats],
                   measured: dict[str, list[Measured | None]], imatrix: dict[tuple[str, str], str]) -> SchemeResult:
    sims, counts, pooled = [], Counter(), BlockHealth()
    totals = np.zeros(4)  # Σd², Σx², Σ weighted d², Σ weighted x²
    n_params = quantized = nbytes = qbytes = 0
    for t in tensors:
        planned = plan[t.name]
        m = measured.get(t.name, [None] * (index + 1))[index]
        fmt_name = tensor_plans[t.name].formats[index]
        if fmt_name is not None and m is not None:
            fmt = get_format(fmt_name)
            size, bpw, stored = fmt.nbytes(t.shape), fmt.bits_per_weight(t.shape), fmt_name
            quantized += t.n_params
            qbytes += size
            totals[:2] += (m.sums.d2, m.sums.x2)
            pooled.add(m.counts)
            if m.norm_aware is not None:
                totals[2:] += (m.sums.wd2, m.sums.wx2)
            sims.append(SimTensor(t.name, t.gguf_name, t.role, t.layer, t.shape, t.dtype, fmt_name, stored,
                                  planned.reason, bpw, size, m.error, m.norm_aware, m.health,
                                  imatrix.get((scheme, t.name))))
        else:
            stored, size = unquantized_storage(model, t, scheme)
            bpw = 8.0 * size / t.n_params if t.n_params else 0.0
            sims.append(SimTensor(t.name, t.gguf_name, t.role, t.layer, t.shape, t.dtype, None, stored,
                                  planned.reason, bpw, size))
        counts[stored] += 1
        n_params += t.n_params
        nbytes += size
    health = health_stats(pooled) if quantized else None
    aware = [s for s in sims if s.norm_aware is not None and math.isfinite(s.norm_aware.delta_db)]
    ranking = tuple(s.name for s in sorted(aware, key=lambda s: -abs(s.norm_aware.delta_db))[:RANKING_SIZE])
    d2, x2, wd2, wx2 = totals.tolist()
    kind = "gguf" if is_gguf_scheme(scheme) else "simulated"
    return SchemeResult(
        scheme=scheme, kind=kind, description=SCHEMES[scheme], n_params=n_params, quantized_params=quantized,
        nbytes=nbytes, bits_per_weight=8.0 * nbytes / n_params if n_params else 0.0,
        quantized_bits_per_weight=8.0 * qbytes / quantized if quantized else 0.0,
        rel_l2=rel_l2(x2, d2) if quantized else 0.0, sqnr_db=sqnr_db(x2, d2) if quantized else math.inf,
        norm_aware_sqnr_db=sqnr_db(wx2, wd2) if aware else None,
        type_counts=dict(counts.most_common()), tensors=tuple(sims), norm_aware_ranking=ranking, health=health,
        notes=_notes(scheme, sims) + _imatrix_notes(scheme, sims))


def _imatrix_notes(scheme: str, sims: Sequence[SimTensor]) -> tuple[str, ...]:
    """Which types of this plan took the importance weights, and which quantize the same without them."""
    used = Counter(s.type for s in sims if s.imatrix == "used")
    ignored = Counter(s.type for s in sims if s.imatrix == "ignored")
    missing = [s for s in sims if s.imatrix == "no entry"]
    notes = []
    if used:
        notes.append(f"{scheme}: importance weights used by {sum(used.values())} tensors ("
                     + ", ".join(f"{t} {n}" for t, n in used.most_common()) + ")")
    if ignored:
        notes.append(f"{scheme}: {', '.join(sorted(ignored))} ignore importance weights (ggml quantizes them the "
                     f"same with or without): {sum(ignored.values())} tensors")
    if missing:
        names = ", ".join(s.gguf_name or s.name for s in missing[:4]) + (" …" if len(missing) > 4 else "")
        notes.append(f"{scheme}: {len(missing)} quantized tensors have no entry in the importance matrix and are "
                     f"quantized without weights, as llama-quantize does: {names}")
    return tuple(notes)


def _notes(scheme: str, sims: Sequence[SimTensor]) -> tuple[str, ...]:
    """What a user should read about this plan, in plain words."""
    notes = []
    if is_gguf_scheme(scheme) and all(s.type is None for s in sims) and all(s.gguf_name is None for s in sims):
        notes.append(f"{scheme}: no tensor has a GGUF name, so this plan quantizes nothing: llama.cpp's converter "
                     "(convert_hf_to_gguf.py) has no name mapping normscope knows for this architecture; the "
                     "non-GGUF schemes (int4, int8, int4_sym_g128, …) still apply")
    norms = [s for s in sims if s.role.is_norm]
    if norms and all(s.type is None for s in norms):
        where = "llama.cpp keeps every 1-D tensor in F32" if is_gguf_scheme(scheme) else \
            "quanto, GPTQ and AWQ quantize only Linear layers"
        notes.append(f"{scheme}: all {len(norms)} norm tensors stay unquantized ({where}); their gains, however "
                     "large, are not what this scheme changes")
    fallbacks = Counter(r.split("fallback ", 1)[1].split(":", 1)[0] for r in (s.reason for s in sims)
                        if "fallback " in r)
    for move, n in fallbacks.most_common():
        rows = sorted({s.shape[-1] for s in sims if f"fallback {move}" in s.reason})
        notes.append(f"{scheme}: {n} tensors fall back {move.replace('->', ' → ')} because their rows "
                     f"({', '.join(map(str, rows))} values) are not whole {move.split('->')[0]} blocks")
    sub = sum(s.health.scale_subnormal for s in sims if s.health)
    if sub:
        blocks = sum(s.health.blocks for s in sims if s.health and s.health.scale_subnormal)
        notes.append(f"{scheme}: {sub:,} of {blocks:,} blocks in the affected tensors store a subnormal fp16 scale "
                     "(small weights); llama.cpp rounds against the stored scale, so this costs little precision")
    under = sum(s.health.scale_underflow for s in sims if s.health)
    if under:
        notes.append(f"{scheme}: {under:,} blocks with nonzero weights store a zero fp16 scale and read back flat")
    over = sum(s.health.scale_overflow for s in sims if s.health)
    if over:
        notes.append(f"{scheme}: {over:,} blocks store an infinite or NaN fp16 scale: those weights are lost")
    return tuple(notes)
