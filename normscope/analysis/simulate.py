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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..arch import effective_gain, norm_feeds
from ..errors import ConfigError, UnknownNameError
from ..io import DEFAULT_CHUNK_ELEMENTS
from ..quant import (FORMATS, SCHEMES, GGMLFormat, PlannedTensor, QuantFormat, TensorSpec, block_health,
                     block_scales, get_format, is_gguf_scheme, plan_scheme)
from ..quant.health import BlockHealth
from ..results import (BlockHealthStats, ErrorStats, NormAwareError, NormConvention, ProgressFn, SchemeResult, SimTensor, SimulateResult,
                       TensorInfo)
from .errors import ErrorAccumulator, ErrorSums, sqnr_db, rel_l2
from .facts import model_facts
from .model import Model, open_model
from .select import select_tensors

__all__ = ["simulate", "simulate_model", "plan_model", "TensorPlan", "Measured", "measure_tensor",
           "parse_schemes", "parse_tensor_types"]

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
             progress: ProgressFn | None = None, token: str | None = None, cache_dir: Path | None = None
             ) -> SimulateResult:
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
                              tensor_types=tensor_types, chunk_elements=chunk_elements, progress=progress)


def plan_model(model: Model, scheme: str, tensors: Sequence[TensorInfo] | None = None, *,
               include_lm_head: bool = False, tensor_types: Sequence[tuple[str, str]] = ()
               ) -> dict[str, PlannedTensor]:
    """{HF tensor name: PlannedTensor} for one scheme over the model's (or the given) tensors."""
    tensors = model.tensors if tensors is None else tensors
    specs = [TensorSpec(t.name, t.gguf_name, t.shape, t.role) for t in tensors]
    return plan_scheme(scheme, specs, model_facts(model), include_lm_head=include_lm_head, overrides=tensor_types)


def simulate_model(model: Model, schemes: Sequence[str], *, include: Sequence[str] = (),
                   exclude: Sequence[str] = (), include_lm_head: bool = False,
                   tensor_types: Sequence[tuple[str, str]] = (), chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
                   progress: ProgressFn | None = None) -> SimulateResult:
    """`simulate` on an already open model."""
    schemes = parse_schemes(schemes)
    tensors = select_tensors(model.tensors, include, exclude)
    # plans are made over the whole model: llama.cpp's counters (use_more_bits) see every tensor
    plans = {s: plan_model(model, s, include_lm_head=include_lm_head, tensor_types=tensor_types) for s in schemes}
    warnings = list(model.warnings)
    tensor_plans = _tensor_plans(model, tensors, schemes, plans, warnings)
    work = [t for t in tensors if any(tensor_plans[t.name].formats)]
    total, done = sum(t.nbytes for t in work), 0
    measured: dict[str, list[Measured | None]] = {}
    for info in work:
        measured[info.name] = measure_tensor(model, info, tensor_plans[info.name], chunk_elements)
        done += info.nbytes
        if progress:
            progress(info.name, done, total)
    results = tuple(_scheme_result(model, s, i, tensors, plans[s], tensor_plans, measured)
                    for i, s in enumerate(schemes))
    options = {"schemes": list(schemes), "arch": model.detected.spec.name, "include": list(include),
               "exclude": list(exclude), "include_lm_head": include_lm_head,
               "tensor_types": [f"{p}={t}" for p, t in tensor_types]}
    return SimulateResult(source=model.source, architecture=model.detected.spec.name, schemes=results,
                          warnings=tuple(warnings), options=options)


def _tensor_plans(model: Model, tensors: Sequence[TensorInfo], schemes: Sequence[str],
                  plans: dict[str, dict[str, PlannedTensor]], warnings: list[str]) -> dict[str, TensorPlan]:
    feeds = norm_feeds(model.detected.spec, model.tensors, model.tied_embeddings)
    gains: dict[str, np.ndarray] = {}

    def gain(name: str) -> np.ndarray:
        if name not in gains:
            info = model.get(name)
            gains[name] = np.asarray(effective_gain(model.read(info), info.convention), np.float32)
        return gains[name]

    out = {}
    for t in tensors:
        formats = []
        for s in schemes:
            planned = plans[s][t.name]
            fmt = planned.type
            if fmt is not None:
                try:
                    get_format(fmt).check_shape(t.shape)
                except ConfigError as e:  # a row length the format cannot store: reported, not crashed
                    plans[s][t.name] = PlannedTensor(planned.name, None, f"not quantized: {e}")
                    warnings.append(f"{s}: {t.name}: {e}")
                    fmt = None
            formats.append(fmt)
        col = row = None
        norm_names, axes = [], []
        for feed in feeds.get(t.name, []):
            if feed.axis == "in" and col is None:
                col = gain(feed.norm)
            elif feed.axis == "out" and row is None:
                row = gain(feed.norm)
            else:
                continue
            norm_names.append(feed.norm)
            axes.append(feed.axis)
        out[t.name] = TensorPlan(tuple(formats), col, row, ",".join(norm_names), "+".join(axes))
    return out


def _chunk_elements(info: TensorInfo, formats: Sequence[str], chunk_elements: int) -> int:
    """A chunk size holding a whole multiple of every format's row multiple (fp8_block: 128 rows)."""
    row_len = info.shape[-1] if info.shape else 1
    multiple = math.lcm(*(get_format(f).row_multiple for f in formats))
    rows = max(1, chunk_elements // row_len)
    rows = max(multiple, rows // multiple * multiple)
    return rows * row_len


def measure_tensor(model: Model, info: TensorInfo, plan: TensorPlan,
                   chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> list[Measured | None]:
    """Stream one tensor once and measure every format of `plan` on the same chunks.

    Returns:
        One Measured per scheme (None where the scheme leaves the tensor unquantized).
    """
    active = [(i, get_format(f)) for i, f in enumerate(plan.formats) if f is not None]
    if not active:
        return [None] * len(plan.formats)
    chunk = _chunk_elements(info, [f.name for _, f in active], chunk_elements)
    absmax = None
    if any(f.per_tensor for _, f in active):  # one scale for the whole tensor: find it first
        absmax = 0.0
        for _, rows in model.iter_rows(info, chunk):
            absmax = max(absmax, float(np.abs(rows).max()) if rows.size else 0.0)
    n = info.n_params
    accs = {i: ErrorAccumulator(n, plan.col_gains, plan.row_gains) for i, _ in active}
    health = {i: BlockHealth() for i, _ in active}
    row_len = info.shape[-1] if info.shape else 1
    for row0, rows in model.iter_rows(info, chunk):
        rows = rows.reshape(-1, row_len)
        for i, fmt in active:
            y, scales = _quantize(fmt, rows, absmax)
            accs[i].update(rows, y, row0)
            health[i].add(block_health(rows, y, fmt.group_length(row_len), scales))
    again = [(i, fmt) for i, fmt in active if accs[i].second_pass_needed()]
    if again:
        for i, _ in again:
            accs[i].start_second_pass()
        for _, rows in model.iter_rows(info, chunk):
            rows = rows.reshape(-1, row_len)
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


def _unquantized(model: Model, info: TensorInfo, scheme: str, planned: PlannedTensor) -> tuple[str, int]:
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
            stored, size = _unquantized(model, t, scheme, planned)
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
