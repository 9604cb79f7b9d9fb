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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from ..arch import effective_gain, norm_feeds
from ..errors import ConfigError, UnknownNameError
from ..io import DEFAULT_CHUNK_ELEMENTS
from ..quant import (FORMATS, SCHEMES, GGMLFormat, PlannedTensor, QuantFormat, TensorSpec, block_health,
                     block_scales, get_format, is_gguf_scheme, plan_scheme)
from ..quant.health import BlockHealth
from ..results import (BlockHealthStats, ErrorStats, NormAwareError, NormConvention, ProgressFn, SchemeResult,
                       SimTensor, SimulateResult, TensorInfo)
from .errors import ErrorAccumulator, ErrorSums, sqnr_db, rel_l2
from .facts import model_facts
from .model import Model, open_model
from .parallel import ModelOpener, map_tensors
from .select import select_tensors

__all__ = ["simulate", "simulate_model", "plan_model", "TensorPlan", "Measured", "measure_tensor", "measure_planned",
           "NormGains", "norm_gains", "tensor_plan", "unquantized_storage", "parse_schemes", "parse_tensor_types"]

RANKING_SIZE = 20


@dataclass(frozen=True)
class TensorPlan:
    """The formats one tensor gets, one entry per scheme (None: not quantized by that scheme)."""

    formats: tuple[str | None, ...]
    col_gains: np.ndarray | None = None
    row_gains: np.ndarray | None = None
    norm: str = ""
    axis: str = ""


@dataclass(frozen=True)
class Measured:
    """What streaming one tensor through one format measured."""

    error: ErrorStats
    norm_aware: NormAwareError | None
    health: BlockHealthStats
    sums: ErrorSums
    counts: BlockHealth  # the raw block counts behind `health`, summed for scheme totals


def parse_schemes(schemes: str | Sequence[str]) -> list[str]:
    """Scheme names from "Q4_K_M,int4" or a list; each checked against the registry.

    Raises:
        UnknownNameError: listing the valid scheme names.
        ConfigError: no scheme given.
    """
    items = [schemes] if isinstance(schemes, str) else list(schemes)
    names = [s.strip() for item in items for s in str(item).split(",") if s.strip()]
    if not names:
        raise ConfigError(f"no quantization scheme given; valid: {', '.join(SCHEMES)}")
    for name in names:
        if name not in SCHEMES:
            raise UnknownNameError("scheme", name, SCHEMES)
    return list(dict.fromkeys(names))


def parse_tensor_types(pairs: Sequence[str]) -> list[tuple[str, str]]:
    """llama-quantize `--tensor-type REGEX=TYPE` pairs.

    Raises:
        ConfigError: a pair without "=", or an invalid regex; UnknownNameError: a type that is not a ggml type.
    """
    import re

    out = []
    for pair in pairs:
        pattern, sep, type_name = pair.rpartition("=")
        if not sep or not pattern:
            raise ConfigError(f"--tensor-type {pair!r}: expected REGEX=TYPE, e.g. attn_v=Q8_0")
        try:
            re.compile(pattern)
        except re.error as e:
            raise ConfigError(f"--tensor-type {pair!r}: invalid regex ({e})") from None
        fmt = get_format(type_name.strip())
        if not issubclass(fmt, GGMLFormat):
            raise UnknownNameError("ggml type", type_name,
                                   [n for n, f in FORMATS.items() if issubclass(f, GGMLFormat)])
        out.append((pattern, fmt.name))
    return out


def simulate(source: str | Path | None = None, *, schemes: str | Sequence[str] = ("Q4_K_M",),
             arch: str | None = None, norm_convention: NormConvention | str | None = None,
             include: Sequence[str] = (), exclude: Sequence[str] = (), include_lm_head: bool = False,
             tensor_types: Sequence[tuple[str, str]] = (), chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
             progress: ProgressFn | None = None, token: str | None = None, cache_dir: Path | None = None,
             jobs: int | None = 1, executor: str = "thread") -> SimulateResult:
    """Simulate quantization schemes on every tensor of a checkpoint.

    Args:
        source: what analyze accepts (directory, file, hub id, `example:NAME`, None for the embedded model).
        schemes: llama.cpp file types (Q4_K_M, Q8_0, Q2_K, …) and simulated schemes (int4, int8,
            int4_sym_g128, fp8_block, …), as a list or "Q4_K_M,int4".
        include, exclude: globs on tensor names; excluded tensors are left out of every total.
        include_lm_head: quantize an untied lm_head under simulated schemes (GPTQ/AWQ leave it by default).
        tensor_types: (regex, ggml type) pairs for GGUF schemes, as llama-quantize's `--tensor-type`.
        chunk_elements: largest block of values read at once (bounds memory).
        progress: called as progress(tensor name, bytes done, bytes total).
        jobs, executor: workers (1: none; None or 0: the cores available) and "thread", "process" or
            "ray", as for `analyze`; the result does not depend on them.

    Returns:
        SimulateResult: one SchemeResult per scheme, each with every tensor's type, size and error.

    Raises:
        UnknownNameError (scheme, ggml type), ConfigError, SourceNotFoundError, CheckpointError.

    Example:
        >>> r = simulate("example:gemma3-270m", schemes="Q4_K_M")  # doctest: +SKIP
        >>> r.scheme("Q4_K_M").type_counts
        {'F32': 109, 'Q5_0': 81, 'Q4_K': 27, 'Q8_0': 10, 'Q6_K': 9}
    """
    names = parse_schemes(schemes)
    with open_model(source, arch=arch, norm_convention=norm_convention, token=token, cache_dir=cache_dir) as model:
        return simulate_model(model, names, include=include, exclude=exclude, include_lm_head=include_lm_head,
                              tensor_types=tensor_types, chunk_elements=chunk_elements, progress=progress, jobs=jobs,
                              executor=executor)


def plan_model(model: Model, scheme: str, tensors: Sequence[TensorInfo] | None = None, *,
               include_lm_head: bool = False, tensor_types: Sequence[tuple[str, str]] = (),
               warnings: list[str] | None = None) -> dict[str, PlannedTensor]:
    """{HF tensor name: PlannedTensor} for one scheme over the model's (or the given) tensors.

    A format whose blocks or groups the tensor's rows cannot hold (int4_sym_g128 on rows of 100) leaves
    the tensor unquantized, with the reason; each such case is appended to `warnings` when given.
    """
    tensors = model.tensors if tensors is None else tensors
    specs = [TensorSpec(t.name, t.gguf_name, t.shape, t.role) for t in tensors]
    plan = plan_scheme(scheme, specs, model_facts(model), include_lm_head=include_lm_head, overrides=tensor_types)
    for t in tensors:
        planned = plan[t.name]
        if planned.type is None:
            continue
        try:
            get_format(planned.type).check_shape(t.shape)
        except ConfigError as e:  # a row length the format cannot store: reported, not crashed
            plan[t.name] = PlannedTensor(planned.name, None, f"not quantized: {e}")
            if warnings is not None:
                warnings.append(f"{scheme}: {t.name}: {e}")
    return plan


def simulate_model(model: Model, schemes: Sequence[str], *, include: Sequence[str] = (),
                   exclude: Sequence[str] = (), include_lm_head: bool = False,
                   tensor_types: Sequence[tuple[str, str]] = (), chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
                   progress: ProgressFn | None = None, jobs: int | None = 1, executor: str = "thread",
                   opener: ModelOpener | None = None) -> SimulateResult:
    """`simulate` on an already open model (`opener`: how workers open it; default: as it was opened)."""
    schemes = parse_schemes(schemes)
    tensors = select_tensors(model.tensors, include, exclude)
    # plans are made over the whole model: llama.cpp's counters (use_more_bits) see every tensor
    warnings = list(model.warnings)
    plans = {s: plan_model(model, s, include_lm_head=include_lm_head, tensor_types=tensor_types, warnings=warnings)
             for s in schemes}
    gains = norm_gains(model)
    tensor_plans = {t.name: tensor_plan([plans[s][t.name].type for s in schemes], gains.get(t.name))
                    for t in tensors}
    work = [t for t in tensors if any(tensor_plans[t.name].formats)]
    task = partial(measure_planned, plans={t.name: tensor_plans[t.name] for t in work},
                   chunk_elements=chunk_elements)
    results = map_tensors(opener or ModelOpener.of(model), model, work, task, jobs=jobs, executor=executor,
                          progress=progress)
    measured = {info.name: m for info, m in zip(work, results)}
    results = tuple(_scheme_result(model, s, i, tensors, plans[s], tensor_plans, measured)
                    for i, s in enumerate(schemes))
    options = {"schemes": list(schemes), "arch": model.detected.spec.name, "include": list(include),
               "exclude": list(exclude), "include_lm_head": include_lm_head,
               "tensor_types": [f"{p}={t}" for p, t in tensor_types]}
    return SimulateResult(source=model.source, architecture=model.detected.spec.name, schemes=results,
                          warnings=tuple(warnings), options=options)


@dataclass(frozen=True)
class NormGains:
    """The effective gains of the norms around one linear, as the norm-aware error weighs it."""

    col: np.ndarray | None  # per input column (a pre-norm)
    row: np.ndarray | None  # per output row (a Gemma sandwich post-norm)
    norm: str  # the norm tensors, comma-separated
    axis: str  # "in", "out" or "in+out"


def norm_gains(model: Model) -> dict[str, NormGains]:
    """{linear tensor name: NormGains} for every 2-D weight a norm feeds (arch.norm_feeds), gains in their
    convention (Gemma: 1 + w)."""
    feeds = norm_feeds(model.detected.spec, model.tensors, model.tied_embeddings)
    cache: dict[str, np.ndarray] = {}

    def gain(name: str) -> np.ndarray:
        if name not in cache:
            info = model.get(name)
            cache[name] = np.asarray(effective_gain(model.read(info), info.convention), np.float32)
        return cache[name]

    out = {}
    for linear, fs in feeds.items():
        col = row = None
        names, axes = [], []
        for feed in fs:
            if feed.axis == "in" and col is None:
                col = gain(feed.norm)
            elif feed.axis == "out" and row is None:
                row = gain(feed.norm)
            else:
                continue
            names.append(feed.norm)
            axes.append(feed.axis)
        out[linear] = NormGains(col, row, ",".join(names), "+".join(axes))
    return out


def tensor_plan(formats: Sequence[str | None], gains: NormGains | None) -> TensorPlan:
    """A TensorPlan of these formats, weighed by these gains (None: no norm around the tensor)."""
    if gains is None:
        return TensorPlan(tuple(formats))
    return TensorPlan(tuple(formats), gains.col, gains.row, gains.norm, gains.axis)


def measure_planned(model: Model, info: TensorInfo, *, plans: dict[str, TensorPlan], chunk_elements: int
                     ) -> list[Measured | None]:
    """`measure_tensor` with the plan looked up by name: the picklable work of map_tensors."""
    return measure_tensor(model, info, plans[info.name], chunk_elements)


def _chunk_elements(info: TensorInfo, formats: Sequence[str], chunk_elements: int) -> int:
    """A chunk size holding a whole multiple of every format's row multiple (fp8_block: 128 rows)."""
    row_len = info.shape[-1] if info.shape else 1
    multiple = math.lcm(*(get_format(f).row_multiple for f in formats))
    rows = max(1, chunk_elements // row_len)
    rows = max(multiple, rows // multiple * multiple)
    return rows * row_len


def measure_tensor(model: Model, info: TensorInfo, plan: TensorPlan,
                   chunk_elements: int = DEFAULT_CHUNK_ELEMENTS, *,
                   transform: Callable[[int, np.ndarray], np.ndarray] | None = None,
                   observe: Callable[[int, np.ndarray, np.ndarray, list[np.ndarray | None]], None] | None = None
                   ) -> list[Measured | None]:
    """Stream one tensor once and measure every format of `plan` on the same chunks.

    Args:
        transform: (first row, float32 rows) -> the rows the formats quantize instead (e.g. clipped ones,
            a new array); the errors are then those of the transformed tensor. None: the rows as stored.
        observe: called on every chunk of the first pass as observe(first row, rows, transformed rows,
            read-backs), read-backs[i] being scheme i's (None where it leaves the tensor alone).

    Returns:
        One Measured per scheme (None where the scheme leaves the tensor unquantized).
    """
    active = [(i, get_format(f)) for i, f in enumerate(plan.formats) if f is not None]
    if not active:
        return [None] * len(plan.formats)
    chunk = _chunk_elements(info, [f.name for _, f in active], chunk_elements)
    row_len = info.shape[-1] if info.shape else 1

    def chunks():  # (first row, rows as stored, rows to quantize)
        for row0, rows in model.iter_rows(info, chunk):
            rows = rows.reshape(-1, row_len)
            yield row0, rows, (transform(row0, rows) if transform else rows)

    absmax = None
    if any(f.per_tensor for _, f in active):  # one scale for the whole tensor: find it first
        absmax = 0.0
        for _, _, rows in chunks():
            absmax = max(absmax, float(np.abs(rows).max()) if rows.size else 0.0)
    n = info.n_params
    accs = {i: ErrorAccumulator(n, plan.col_gains, plan.row_gains) for i, _ in active}
    health = {i: BlockHealth() for i, _ in active}
    for row0, stored, rows in chunks():
        ys: list[np.ndarray | None] = [None] * len(plan.formats)
        for i, fmt in active:
            y, scales = _quantize(fmt, rows, absmax)
            accs[i].update(rows, y, row0)
            health[i].add(block_health(rows, y, fmt.group_length(row_len), scales))
            if observe:
                ys[i] = y
        if observe:
            observe(row0, stored, rows, ys)
    again = [(i, fmt) for i, fmt in active if accs[i].second_pass_needed()]
    if again:
        for i, _ in again:
            accs[i].start_second_pass()
        for _, _, rows in chunks():
            for i, fmt in again:
                accs[i].second_pass(rows, _quantize(fmt, rows, absmax)[0])
    out: list[Measured | None] = [None] * len(plan.formats)
    for i, _ in active:
        err = accs[i].finish()
        out[i] = Measured(error=err, norm_aware=accs[i].finish_norm_aware(plan.norm, plan.axis, err.sqnr_db),
                          health=_health_stats(health[i]), sums=accs[i].error_sums(), counts=health[i])
    return out


def _health_stats(h: BlockHealth) -> BlockHealthStats:
    return BlockHealthStats(blocks=h.blocks, dominated_share=h.dominated / h.blocks if h.blocks else 0.0,
                            scale_underflow=h.scale_underflow, scale_subnormal=h.scale_subnormal,
                            scale_overflow=h.scale_overflow,
                            zeroed_share=h.rounded_to_zero / h.nonzero if h.nonzero else 0.0)


def _quantize(fmt: type[QuantFormat], rows: np.ndarray, absmax: float | None) -> tuple[np.ndarray, np.ndarray | None]:
    """(rows as stored and read back, the fp16 block scales for ggml types)."""
    if issubclass(fmt, GGMLFormat):
        raw = fmt.quantize_blocks(rows)  # the bytes llama.cpp would write; y is exactly what it reads back
        return fmt.dequantize_blocks(raw, rows.shape), block_scales(raw, fmt.name)
    return fmt.fake_quantize(rows, absmax).reshape(rows.shape), None


def unquantized_storage(model: Model, info: TensorInfo, scheme: str) -> tuple[str, int]:
    """(stored_as, bytes) of a tensor the scheme leaves alone."""
    n = info.n_params
    if is_gguf_scheme(scheme):
        if info.gguf_name is None:
            return "absent", 0  # not written to the GGUF (e.g. a vision tower goes to the mmproj file)
        # ref: convert_hf_to_gguf.py writes 1-D tensors as F32; llama-quantize copies unquantized ones
        return ("F32", 4 * n) if sum(d > 1 for d in info.shape) <= 1 else ("F16", 2 * n)
    if model.source.format == "safetensors":
        return info.dtype, info.nbytes
    return "BF16", 2 * n  # a GGUF source: the HF model it loads into holds 16-bit weights


def _scheme_result(model: Model, scheme: str, index: int, tensors: Sequence[TensorInfo],
                   plan: dict[str, PlannedTensor], tensor_plans: dict[str, TensorPlan],
                   measured: dict[str, list[Measured | None]]) -> SchemeResult:
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
                                  planned.reason, bpw, size, m.error, m.norm_aware, m.health))
        else:
            stored, size = unquantized_storage(model, t, scheme)
            bpw = 8.0 * size / t.n_params if t.n_params else 0.0
            sims.append(SimTensor(t.name, t.gguf_name, t.role, t.layer, t.shape, t.dtype, None, stored,
                                  planned.reason, bpw, size))
        counts[stored] += 1
        n_params += t.n_params
        nbytes += size
    health = _health_stats(pooled) if quantized else None
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
        notes=_notes(scheme, sims))


def _notes(scheme: str, sims: Sequence[SimTensor]) -> tuple[str, ...]:
    """What a user should read about this plan, in plain words."""
    notes = []
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
