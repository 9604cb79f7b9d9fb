"""`clip`: percentile clipping that writes a complete, verified HF checkpoint, or reports in a dry run.

The thresholds are found per tensor (on workers when `jobs` asks for them), then the output is written
and verified by `write.py`: a new directory beside the target, renamed into place only when complete.
The input is opened read only, and an output inside the input (or containing it) is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path

from ...arch import FORMULA
from ...errors import ConfigError
from ...io import DEFAULT_CHUNK_ELEMENTS
from ...io.writer import FLOAT_DTYPES
from ...results import (ClipFile, ClipGranularity, ClippedTensor, ClipResult, ClipScope, NormConvention, ProgressFn,
                        Role, SuperWeightCandidate, TensorInfo)
from ..engine.clipping import check_percentile, convention_of, in_scope, protected_cells, tensor_thresholds
from ..engine.model import Model, open_model
from ..engine.parallel import map_tensors
from ..engine.superweight import SUPER_WEIGHT_Z, super_weight_candidates
from ..engine.workers import Executor, ModelOpener
from .write import MANIFEST, ClipTarget, check_writable, clipped_report, clipped_rows, output_dir, write_clipped

__all__ = ["clip", "clip_model", "MANIFEST"]


def clip(source: str | Path | None = None, percentile: float = 99.0, *, arch: str | None = None,
         norm_convention: NormConvention | str | None = None, token: str | None = None,
         cache_dir: Path | None = None, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
         progress: ProgressFn | None = None, jobs: int | None = 1, executor: Executor | str = "thread",
         ray_address: str | None = None, out: str | Path | None = None, scope: ClipScope | str = ClipScope.NORMS,
         per: ClipGranularity | str = ClipGranularity.TENSOR, include: Sequence[str] = (),
         exclude: Sequence[str] = (), force: bool = False, dry_run: bool = False, protect: bool = True,
         protect_z: float = SUPER_WEIGHT_Z) -> ClipResult:
    """Clip every tensor in scope at its own percentile of |value| and write the result as a new checkpoint.

    Args:
        source: an HF safetensors directory or file, or a hub id (GGUF and quantized packs are refused).
        percentile: in [0, 100]; 99 clips each tensor at its 99th percentile of |value|, 100 changes nothing.
        out: the new directory (must not exist, or pass force; never inside the input). Not needed for a dry run.
        scope: "norms" (effective gains in their convention), "linear" (|w|), or "all".
        per: "tensor" (one threshold per tensor) or "channel" (one per output row; a norm is one row).
        include, exclude: globs on tensor names.
        force: replace an existing `out` that is empty or an earlier clip output, once the new one is complete.
        dry_run: report what would change; write nothing.
        protect: never clip data-free super-weight candidates (mlp down_proj outliers); False clips them too.
        protect_z: the leave-one-out z-score a candidate must reach in its row and its column.
        arch, norm_convention, token, cache_dir, chunk_elements: as for `analyze`.
        progress: called as progress(description, bytes done, bytes total).
        jobs, executor, ray_address: workers for the thresholds, as for `analyze` (the result does not
            depend on them); the output is written in this process.

    Returns:
        ClipResult: per changed tensor the threshold, values clipped and max |value| before and after,
        every output file with its sha256; the same document is written as `out/normscope-clip.json`.

    Raises:
        ConfigError (bad option, GGUF or pack input), OutputError (refused output), CheckpointError,
        SourceNotFoundError.

    Example:
        >>> r = clip("gemma-3-270m-hf", 99, out="gemma-clipped")  # doctest: +SKIP
        >>> r.tensor("model.layers.16.post_feedforward_layernorm.weight").max_after <= 634.8
        True
    """
    p = check_percentile(percentile)
    if out is None and not dry_run:
        raise ConfigError("no output directory: pass out= (--out DIR), or dry_run=True (--dry-run) to only report")
    with open_model(source, arch=arch, norm_convention=norm_convention, token=token, cache_dir=cache_dir) as model:
        return clip_model(model, p, out=out, scope=scope, per=per, include=include, exclude=exclude, force=force,
                          dry_run=dry_run, protect=protect, protect_z=protect_z, chunk_elements=chunk_elements,
                          jobs=jobs, executor=executor, ray_address=ray_address,
                          progress=progress)


def clip_model(model: Model, percentile: float, *, out: str | Path | None = None,
               scope: ClipScope | str = ClipScope.NORMS, per: ClipGranularity | str = ClipGranularity.TENSOR,
               include: Sequence[str] = (), exclude: Sequence[str] = (), force: bool = False,
               dry_run: bool = False, protect: bool = True, protect_z: float = SUPER_WEIGHT_Z,
               chunk_elements: int = DEFAULT_CHUNK_ELEMENTS, progress: ProgressFn | None = None,
               jobs: int | None = 1, executor: Executor | str = "thread", ray_address: str | None = None,
               opener: ModelOpener | None = None) -> ClipResult:
    """`clip` on an already open model (`opener`: how workers open it; default: as it was opened)."""
    p = check_percentile(percentile)
    scope, per = ClipScope(scope), ClipGranularity(per)
    check_writable(model)
    target = output_dir(model, Path(out), force) if out is not None else None
    if target is None and not dry_run:
        raise ConfigError("no output directory: pass out= (--out DIR), or dry_run=True (--dry-run) to only report")
    tensors = in_scope(model, scope, include, exclude)
    skipped = tuple(f"{t.name}: {t.dtype} is not a float type clip rewrites" for t in tensors
                    if t.dtype not in FLOAT_DTYPES)
    tensors = [t for t in tensors if t.dtype in FLOAT_DTYPES]
    downs = [t for t in tensors if t.role is Role.MLP_DOWN]
    supers = super_weight_candidates(model, downs, z_threshold=protect_z, chunk_elements=chunk_elements) \
        if downs else ()
    cells = protected_cells(supers) if protect else {}
    found = map_tensors(opener or ModelOpener.of(model), model, tensors,
                        partial(_threshold, p=p, per=per, chunk_elements=chunk_elements), jobs=jobs,
                        executor=executor, ray_address=ray_address,
                        progress=(lambda name, d, n: progress(f"thresholds: {name}", d, n)) if progress else None)
    plans = [ClipTarget(t, model.entry(t), convention_of(t), p, threshold, cells.get(t.name), may)
             for t, (threshold, may) in zip(tensors, found)]
    options = {"percentile": p, "scope": scope.value, "per": per.value, "include": list(include),
               "exclude": list(exclude), "protect": protect, "protect_z": protect_z, "force": force,
               "dry_run": dry_run, "arch": model.detected.spec.name}
    if dry_run or target is None:
        for plan in plans:
            for _ in (clipped_rows(model, plan, chunk_elements) if plan.may_change else ()):
                pass
        changed = tuple(clipped_report(plan, None) for plan in plans if plan.tally.clipped)
        return _result(model, p, scope, per, protect, str(target) if target else None, True, plans, changed,
                       skipped, supers, (), False, [], options)
    return write_clipped(model, target, force, plans, chunk_elements, progress,
                         lambda files, changed, warnings: _result(model, p, scope, per, protect, str(target), False,
                                                                  plans, changed, skipped, supers, files, True,
                                                                  warnings, options))


def _threshold(model: Model, info: TensorInfo, *, p: float, per: ClipGranularity, chunk_elements: int
               ) -> tuple[float | None, bool]:
    """(the tensor's threshold, whether clipping can change it); (None, True) when each row takes its own."""
    if per is ClipGranularity.TENSOR or convention_of(info) is not None:  # a norm is one channel: its own
        (threshold,), top = tensor_thresholds(model, info, [p], chunk_elements)
        return threshold, top > threshold
    return None, True


def _result(model: Model, p: float, scope: ClipScope, per: ClipGranularity, protect: bool, out: str | None,
            dry_run: bool, plans: list[ClipTarget], changed: tuple[ClippedTensor, ...], skipped: tuple[str, ...],
            supers: tuple[SuperWeightCandidate, ...], files: tuple[ClipFile, ...], verified: bool,
            warnings: list[str], options: dict) -> ClipResult:
    return ClipResult(
        source=model.source, architecture=model.detected.spec.name, out=out, dry_run=dry_run, percentile=p,
        scope=scope, per=per, protect=protect, considered=len(plans), changed=len(changed),
        values_clipped=sum(t.clipped for t in changed), tensors=changed, skipped=skipped, super_weights=supers,
        files=files, verified=verified, notes=_notes(p, per, protect, plans, changed, supers, dry_run),
        warnings=tuple(model.warnings) + tuple(warnings), options=options)


def _notes(p: float, per: ClipGranularity, protect: bool, plans: list[ClipTarget],
           changed: tuple[ClippedTensor, ...], supers: tuple[SuperWeightCandidate, ...],
           dry_run: bool) -> tuple[str, ...]:
    """What the user should read about this clip, in plain words."""
    would = "would change" if dry_run else "changed"
    notes = []
    if not changed:
        why = "percentile 100 is the largest |value| of every tensor" if p >= 100 else \
            "no value exceeds its threshold"
        notes.append(f"nothing {'would change' if dry_run else 'changed'}: {why}"
                     + ("" if dry_run else "; the output's tensors are byte-identical to the input's"))
    norms = [t for t in changed if t.domain == "gain"]
    if norms:
        worst = max(norms, key=lambda t: t.max_before - t.max_after)
        convs = sorted({t.convention for t in norms}, key=lambda c: c.value)
        how = "; ".join(f"the module computes {FORMULA[c]}" for c in convs)
        notes.append(
            f"{len(norms)} norm tensors {would}, clipped on their effective gain ({how}) and stored back in that "
            f"convention. No mainstream quantizer touches norm weights (llama.cpp keeps every 1-D tensor in F32; "
            f"GPTQ, AWQ and quanto quantize only Linear layers), so clipping them helps no quantizer: it only "
            f"changes the gains the model was trained with (largest: {worst.name} {worst.max_before:.6g} → "
            f"{worst.max_after:.6g}). Large gains such as Gemma's post-FFN norms are how the model works, not damage.")
    weights = [t for t in changed if t.domain == "weight"]
    if weights:
        n = sum(t.clipped for t in weights)
        total = sum(t.n_values for t in weights)
        where = "their tensor's" if per is ClipGranularity.TENSOR else "their output channel's (row's)"
        notes.append(f"{len(weights)} Linear weight tensors {would}: {n:,} of {total:,} values "
                     f"({100 * n / total:.3g}%) clipped to {where} p{p:g} of |w|; `normscope clip --sweep` "
                     "shows whether that lowers the error of a quantized model or only adds to it")
    if supers:
        kept = sum(t.protected for t in changed)
        if protect:
            notes.append(f"{len(supers)} data-free super-weight candidate(s) (mlp down_proj weights extreme in both "
                         f"their row and their column) left unclipped, {kept} of them above their threshold; "
                         "--no-protect clips them too")
        else:
            notes.append(f"{len(supers)} data-free super-weight candidate(s) not protected (--no-protect): a "
                         "single super weight can carry a model's quality (Yu et al. 2024)")
    return tuple(notes)
