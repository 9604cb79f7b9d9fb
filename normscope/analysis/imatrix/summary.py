"""`normscope imatrix`: what an importance matrix holds, tensor by tensor, how much of a model it covers, and how
much two of them (two calibration texts) agree.

Every figure is of the weights llama-quantize derives from the file (io.imatrix: sums / tokens per expert),
the ones its weighted quantizers take. An entry is read, summarised and dropped before the next: memory holds
one entry at a time.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ...errors import ConfigError
from ...io.imatrix import Imatrix, read_imatrix
from ...results import (ImatrixCompareResult, ImatrixCoverage, ImatrixFileInfo, ImatrixPair, ImatrixResult,
                       ImatrixTensor)
from ..engine.model import Model, open_model
from ..engine.plans import plan_model
from ..metrics.ranks import cosine, spearman

__all__ = ["summarize_imatrix", "compare_imatrices", "imatrix_coverage"]

DOMINANT = 5  # columns listed per tensor


def _open(source: str | Path | Imatrix) -> Imatrix:
    return source if isinstance(source, Imatrix) else read_imatrix(source)


def file_info(imx: Imatrix) -> ImatrixFileInfo:
    return ImatrixFileInfo(path=str(imx.path), format=imx.format, datasets=tuple(imx.datasets),
                           chunk_count=imx.chunk_count, chunk_size=imx.chunk_size, entries=len(imx))


def _top_k(n: int) -> int:
    return max(1, math.ceil(n / 100))


def _profile(weights: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The per-column weights of a dense entry; the mean over the reached experts of a MoE one (all of them when
    none was reached)."""
    reached = counts > 0
    rows = weights[reached] if reached.any() else weights
    return rows.astype(np.float64).mean(axis=0)


def tensor_summary(imx: Imatrix, name: str) -> ImatrixTensor:
    e = imx.entry(name)
    w = e.weights.reshape(e.n_expert, e.n_per_row)
    profile = _profile(w, e.counts)
    finite = np.where(np.isfinite(profile) & (profile > 0), profile, 0.0)
    total = float(finite.sum())
    k = _top_k(finite.size)
    order = np.argsort(-finite, kind="stable")
    if total > 0:
        p = finite[finite > 0] / total
        entropy = float(-(p * np.log2(p)).sum() / math.log2(finite.size)) if finite.size > 1 else 1.0
        top1 = float(finite[order[:k]].sum() / total)
        dominant = order[:DOMINANT]
        share = tuple(float(finite[i] / total) for i in dominant)
    else:
        entropy, top1, dominant, share = math.nan, math.nan, order[:0], ()
    idle = int(np.sum(e.counts <= 0)) if imx.format == "gguf" and e.n_expert > 1 else 0
    return ImatrixTensor(name=name, n_per_row=e.n_per_row, n_expert=e.n_expert, tokens=int(e.counts.max()),
                         idle_experts=idle, non_finite=int(np.count_nonzero(~np.isfinite(e.sums))),
                         mean=float(profile.mean()) if profile.size else math.nan, top1_share=top1, entropy=entropy,
                         dominant=tuple(int(i) for i in dominant), dominant_share=share)


def imatrix_coverage(imx: Imatrix, model: Model) -> ImatrixCoverage:
    """Which tensors llama-quantize quantizes (its Q8_0 plan: every 2-D weight it does not keep) have weights."""
    plan = plan_model(model, "Q8_0")
    quantized = [t for t in model.tensors if plan[t.name].type is not None and t.gguf_name]
    covered, missing, mismatched, params, covered_params = [], [], [], 0, 0
    for t in quantized:
        params += t.n_params
        try:
            w = imx.weights_for(t.gguf_name, t.shape)
        except ConfigError:
            mismatched.append(t.gguf_name)
            continue
        if w is None:
            missing.append(t.gguf_name)
        else:
            covered.append(t.gguf_name)
            covered_params += t.n_params
    names = {t.gguf_name for t in model.tensors if t.gguf_name}
    return ImatrixCoverage(model=model.source.spec or str(model.source.path), quantized=len(quantized),
                           covered=len(covered), covered_params=covered_params / params if params else math.nan,
                           missing=tuple(sorted(missing)), mismatched=tuple(sorted(mismatched)),
                           extra=tuple(sorted(n for n in imx if n not in names)))


def summarize_imatrix(path: str | Path | Imatrix, model: str | Path | Model | None = None, *,
                      arch: str | None = None, token: str | None = None, cache_dir: Path | None = None
                      ) -> ImatrixResult:
    """Summarise an importance matrix tensor by tensor, and its coverage of `model` when given.

    Args:
        path: llama-imatrix's GGUF or legacy .dat file (or a `read_imatrix` result).
        model: what analyze accepts (or an open Model): reports which of the tensors llama-quantize quantizes
            have an entry, which do not, and entries for no tensor of it.
        arch, token, cache_dir: as for `analyze`, to open the model.

    Returns:
        ImatrixResult: per tensor the tokens seen, idle experts, non-finite sums, mean weight, the share of
        the sum in the top 1% of columns, the normalised entropy and the dominant columns, most concentrated
        first; the entries no token reached; the coverage.

    Raises:
        SourceNotFoundError, CheckpointError: a missing or malformed file (or model).

    Example:
        >>> r = summarize_imatrix("imatrix.gguf")  # doctest: +SKIP
        >>> r.tensors[0].top1_share
        0.41
    """
    imx = _open(path)
    tensors = [tensor_summary(imx, n) for n in imx]
    tensors.sort(key=lambda t: (-t.top1_share if math.isfinite(t.top1_share) else math.inf, t.name))
    unreached = tuple(sorted(t.name for t in tensors if t.tokens <= 0))
    coverage = None
    if model is not None:
        if isinstance(model, Model):
            coverage = imatrix_coverage(imx, model)
        else:
            with open_model(model, arch=arch, token=token, cache_dir=cache_dir) as m:
                coverage = imatrix_coverage(imx, m)
    return ImatrixResult(file=file_info(imx), tensors=tuple(tensors), unreached=unreached, coverage=coverage,
                         notes=_notes(imx, tensors, unreached, coverage))


def _notes(imx: Imatrix, tensors: list[ImatrixTensor], unreached: tuple[str, ...],
           coverage: ImatrixCoverage | None) -> tuple[str, ...]:
    notes = []
    bad = [t for t in tensors if t.non_finite]
    if bad:
        notes.append(f"{len(bad)} entries hold NaN or infinite sums ({', '.join(t.name for t in bad[:3])}"
                     f"{' …' if len(bad) > 3 else ''}): llama-quantize refuses this file")
    if unreached:
        notes.append(f"{len(unreached)} entries saw no token: llama-quantize weighs them all 1 (as without an "
                     "importance matrix)")
    idle = [t for t in tensors if t.idle_experts]
    if idle:
        n = sum(t.idle_experts for t in idle)
        notes.append(f"{n} experts in {len(idle)} MoE tensors saw no token: each weighs 1; a type that requires an "
                     "importance matrix still runs, on weights that say nothing")
    if imx.format == "dat":
        notes.append("legacy .dat file: it stores (sum / count) x ncall, so token counts per expert are lost")
    if coverage is not None:
        if coverage.missing:
            notes.append(f"{len(coverage.missing)} of the {coverage.quantized} tensors llama-quantize quantizes have "
                         "no entry: they are quantized without weights (IQ2_XXS, IQ2_XS, IQ1_S, Q2_K_S … refuse)")
        if coverage.mismatched:
            notes.append(f"{len(coverage.mismatched)} entries do not fit their tensor's size: the file was collected "
                         "on another model, and llama-quantize stops on them")
        if coverage.extra:
            notes.append(f"{len(coverage.extra)} entries name no tensor of the model")
    return tuple(notes)


def compare_imatrices(a: str | Path | Imatrix, b: str | Path | Imatrix) -> ImatrixCompareResult:
    """How much two importance matrices of one model agree, tensor by tensor: cosine similarity and Spearman
    rank correlation of the weights llama-quantize derives, and the overlap of their top 1% of columns
    (how much the calibration text matters).

    Raises:
        SourceNotFoundError, CheckpointError: a missing or malformed file.
    """
    ia, ib = _open(a), _open(b)
    pairs, mismatched = [], []
    for name in sorted(set(ia) & set(ib)):
        wa, wb = ia[name].astype(np.float64), ib[name].astype(np.float64)
        if wa.size != wb.size:
            mismatched.append(name)
            continue
        k = _top_k(wa.size)
        ta = set(np.argsort(-np.nan_to_num(wa, nan=-np.inf), kind="stable")[:k].tolist())
        tb = set(np.argsort(-np.nan_to_num(wb, nan=-np.inf), kind="stable")[:k].tolist())
        pairs.append(ImatrixPair(name=name, values=int(wa.size), cosine=cosine(wa, wb), spearman=spearman(wa, wb),
                                 top1_overlap=len(ta & tb) / k))
    pairs.sort(key=lambda p: (p.spearman if math.isfinite(p.spearman) else -math.inf, p.name))
    only_a = tuple(sorted(set(ia) - set(ib)))
    only_b = tuple(sorted(set(ib) - set(ia)))
    finite = [p for p in pairs if math.isfinite(p.cosine) and math.isfinite(p.spearman)]
    med_c = float(np.median([p.cosine for p in finite])) if finite else math.nan
    med_s = float(np.median([p.spearman for p in finite])) if finite else math.nan
    notes = []
    if not pairs:
        notes.append("the two files share no tensor of the same size: they were collected on different models")
    if only_a or only_b:
        notes.append(f"{len(only_a)} entries only in A, {len(only_b)} only in B")
    if mismatched:
        notes.append(f"{len(mismatched)} entries differ in size: not the same model")
    return ImatrixCompareResult(a=file_info(ia), b=file_info(ib), pairs=tuple(pairs), only_a=only_a, only_b=only_b,
                                mismatched=tuple(mismatched), median_cosine=med_c, median_spearman=med_s,
                                notes=tuple(notes))
