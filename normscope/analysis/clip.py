"""`clip`: percentile clipping that writes a complete, verified HF checkpoint, or reports in a dry run.

The output is a new directory: every safetensors file of the source with the same tensors, dtypes,
shapes, offsets, index and `__metadata__` (unchanged tensors bit for bit), every other file copied,
and a `normscope-clip.json` manifest (the ClipResult document). It is built under a hidden name
beside the target, re-read and checked (every byte hashed; every clipped tensor compared with the
source value by value), and only then renamed into place. The input is opened read only, and an
output inside the input (or containing it) is refused.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, OutputError
from ..io import DEFAULT_CHUNK_ELEMENTS, SafetensorsCheckpoint, TensorEntry, write_text_atomic
from ..io.writer import FLOAT_DTYPES, StagedDirectory, WrittenFile, copy_file, rewrite_safetensors, verify_file
from ..arch import FORMULA, effective_gain
from ..results import (ClipFile, ClipGranularity, ClippedTensor, ClipResult, ClipScope, NormConvention, ProgressFn,
                       Role, SuperWeightCandidate, TensorInfo)
from .clipping import (SUB_VALUES, Tally, check_finite, check_percentile, clip_rows, convention_of, in_scope,
                       keep_mask, protected_cells, raw_rows, row_thresholds, tensor_thresholds)
from .model import Model, open_model
from .superweight import SUPER_WEIGHT_Z, super_weight_candidates

__all__ = ["clip", "clip_model", "MANIFEST"]

MANIFEST = "normscope-clip.json"
# files that hold weights: never copied unchanged next to the clipped ones (a loader could pick them up)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt", ".h5", ".msgpack", ".onnx")
SKIP_DIRS = (".git", ".cache")


@dataclass
class _Plan:
    info: TensorInfo
    entry: TensorEntry
    conv: NormConvention | None
    percentile: float
    threshold: float | None  # per tensor; None: each row's own, computed as the rows stream
    keep: dict[int, list[int]] | None
    may_change: bool = True
    tally: Tally = field(default_factory=Tally)


def clip(source: str | Path | None, percentile: float = 99.0, *, out: str | Path | None = None,
         scope: ClipScope | str = ClipScope.NORMS, per: ClipGranularity | str = ClipGranularity.TENSOR,
         include: Sequence[str] = (), exclude: Sequence[str] = (), force: bool = False, dry_run: bool = False,
         protect: bool = True, protect_z: float = SUPER_WEIGHT_Z, arch: str | None = None,
         norm_convention: NormConvention | str | None = None, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
         progress: ProgressFn | None = None, token: str | None = None) -> ClipResult:
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
        chunk_elements: largest block of values read at once (bounds memory).
        progress: called as progress(description, bytes done, bytes total).

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
    with open_model(source, arch=arch, norm_convention=norm_convention, token=token) as model:
        return clip_model(model, p, out=out, scope=scope, per=per, include=include, exclude=exclude, force=force,
                          dry_run=dry_run, protect=protect, protect_z=protect_z, chunk_elements=chunk_elements,
                          progress=progress)


def clip_model(model: Model, percentile: float, *, out: str | Path | None = None,
               scope: ClipScope | str = ClipScope.NORMS, per: ClipGranularity | str = ClipGranularity.TENSOR,
               include: Sequence[str] = (), exclude: Sequence[str] = (), force: bool = False,
               dry_run: bool = False, protect: bool = True, protect_z: float = SUPER_WEIGHT_Z,
               chunk_elements: int = DEFAULT_CHUNK_ELEMENTS, progress: ProgressFn | None = None) -> ClipResult:
    """`clip` on an already open model."""
    p = check_percentile(percentile)
    scope, per = ClipScope(scope), ClipGranularity(per)
    _writable(model)
    target = _target(model, Path(out), force) if out is not None else None
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
    plans = []
    total, done = sum(t.nbytes for t in tensors), 0
    for t in tensors:
        conv = convention_of(t)
        threshold, may = None, True
        if per is ClipGranularity.TENSOR or conv is not None:  # a norm is one channel: its own threshold
            (threshold,), top = tensor_thresholds(model, t, [p], chunk_elements)
            may = top > threshold
        plans.append(_Plan(t, model.entry(t), conv, p, threshold, cells.get(t.name), may))
        done += t.nbytes
        if progress:
            progress(f"thresholds: {t.name}", done, total)
    options = {"percentile": p, "scope": scope.value, "per": per.value, "include": list(include),
               "exclude": list(exclude), "protect": protect, "protect_z": protect_z, "force": force,
               "dry_run": dry_run, "arch": model.detected.spec.name}
    if dry_run or target is None:
        for plan in plans:
            for _ in (_clipped(model, plan, chunk_elements) if plan.may_change else ()):
                pass
        changed = tuple(_report(plan, None) for plan in plans if plan.tally.clipped)
        return _result(model, p, scope, per, protect, str(target) if target else None, True, plans, changed,
                       skipped, supers, (), False, [], options)
    return _write(model, target, force, p, scope, per, protect, plans, skipped, supers, options, chunk_elements,
                  progress)


# -- refusals -----------------------------------------------------------------------------------

def _writable(model: Model) -> None:
    src = model.source
    if src.format == "gguf":
        raise ConfigError(f"{src.path}: a GGUF file; clip writes HF safetensors checkpoints only and refuses GGUF "
                          "input: clip the safetensors checkpoint it was converted from, then convert that with "
                          "llama.cpp's convert_hf_to_gguf.py")
    if type(model.checkpoint) is not SafetensorsCheckpoint:
        raise ConfigError(f"{src.path}: read as {type(model.checkpoint).__name__}, not as plain safetensors "
                          "tensors; clip rewrites only safetensors checkpoints of F32/F16/BF16/F64 tensors: convert "
                          "a PyTorch state dict (safetensors.torch.save_file), dequantize a pack or merge an adapter "
                          "first")


def _target(model: Model, out: Path, force: bool) -> Path:
    """The output directory as an absolute path, after refusing every way it could touch the input."""
    out = out.expanduser()
    target = out.resolve() if out.is_symlink() else out.parent.resolve() / out.name
    source = Path(model.source.path)
    files = [Path(f) for f in model.source.files]
    roots = {source.resolve()} | {f.resolve() for f in files}
    if source.is_dir():  # the directory, and where its files really are (a hub snapshot links into blobs/)
        roots |= {f.resolve().parent for f in files}
    for root in sorted(roots):
        if target == root or root in target.parents:
            where = "is the input itself" if target == root else f"is inside the input ({root})"
            raise OutputError(f"{out}: {where}; clip never writes into its input: choose a directory outside it")
        if target in root.parents:
            raise OutputError(f"{out}: contains the input ({root}); replacing it would delete the input: choose "
                              "another directory")
    StagedDirectory(target, replace=force, marker=MANIFEST)  # refuses an existing target now, not after the work
    return target


# -- clipping, writing, verifying ---------------------------------------------------------------

def _clipped(model: Model, plan: _Plan, chunk_elements: int) -> Iterator[np.ndarray]:
    """The tensor's new stored rows, chunk by chunk, counting what changes in `plan.tally`."""
    plan.tally = Tally()
    dtype = plan.entry.dtype
    for row0, raw in raw_rows(model.checkpoint, plan.entry, min(chunk_elements, SUB_VALUES)):
        limit = _limits(raw, plan)
        keep = keep_mask(plan.keep, row0, raw.shape)
        new, mask, after = clip_rows(raw, dtype, limit, plan.conv, keep)
        before = np.abs(_value_of(raw, plan.conv))
        plan.tally.add(before, after, mask, np.broadcast_to(np.asarray(limit).reshape(-1, 1) if np.ndim(limit)
                                                            else limit, raw.shape), keep)
        yield new


def _value_of(raw: np.ndarray, conv: NormConvention | None) -> np.ndarray:
    values = raw.astype(np.float64)
    return effective_gain(values, conv) if conv is not None else values


def _limits(raw: np.ndarray, plan: _Plan) -> np.ndarray | float:
    if plan.threshold is not None:
        return plan.threshold
    values = _value_of(raw, plan.conv)
    check_finite(values, plan.info)
    return row_thresholds(values, [plan.percentile])[0]


def _write(model: Model, target: Path, force: bool, p: float, scope: ClipScope, per: ClipGranularity, protect: bool,
           plans: list[_Plan], skipped: tuple[str, ...], supers: tuple[SuperWeightCandidate, ...], options: dict,
           chunk_elements: int, progress: ProgressFn | None) -> ClipResult:
    ckpt = model.checkpoint
    chunk_bytes = 4 * max(chunk_elements, 1 << 18)  # raw copies and hashes: a float32 chunk's worth of bytes
    by_file: dict[Path, list[_Plan]] = {}
    for plan in plans:
        by_file.setdefault(Path(plan.entry.file), []).append(plan)
    others, warnings = _other_files(model)
    total = sum(f.stat().st_size for f in ckpt.files) + sum(src.stat().st_size for _, src in others)
    with StagedDirectory(target, replace=force, marker=MANIFEST) as stage:
        written: list[tuple[WrittenFile, list[TensorEntry] | None, str]] = []
        done = 0
        for file in ckpt.files:
            entries = [e for e in ckpt.entries.values() if Path(e.file) == Path(file)]
            mine = [pl for pl in by_file.get(Path(file), []) if pl.may_change]
            replace = {pl.entry.name: (lambda pl=pl: _clipped(model, pl, chunk_elements)) for pl in mine}
            w = rewrite_safetensors(Path(file), stage.path / Path(file).name, entries, replace, chunk_bytes)
            written.append((w, entries, "rewritten" if any(pl.tally.clipped for pl in mine) else "copied"))
            done += w.size
            if progress:
                progress(f"writing: {Path(file).name}", done, total)
        for rel, src in others:
            dst = stage.path / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            written.append((copy_file(src, dst, chunk_bytes), None, "copied"))
            done += src.stat().st_size
            if progress:
                progress(f"copying: {rel}", done, total)
        # verification: every byte re-read and hashed, every tensor in scope compared with its source
        for w, entries, _ in written:
            verify_file(w, entries, chunk_bytes)
        changed = []
        for plan in plans:
            if plan.may_change:
                sha = next(w.tensors[plan.entry.name] for w, _, _ in written if plan.entry.name in w.tensors)
                _verify_values(model, plan, stage.path / Path(plan.entry.file).name, chunk_elements)
                if plan.tally.clipped:
                    changed.append(_report(plan, sha))
        files = tuple(ClipFile(str(w.path.relative_to(stage.path)), w.size, w.sha256, action)
                      for w, _, action in written)
        result = _result(model, p, scope, per, protect, str(target), False, plans, tuple(changed), skipped, supers,
                         files, True, warnings, options)
        write_text_atomic(stage.path / MANIFEST,
                          json.dumps(result.to_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n")
        stage.commit()
    return result


def _verify_values(model: Model, plan: _Plan, written: Path, chunk_elements: int) -> None:
    """Re-read a clipped tensor from the new file next to the source: the cells that differ must be
    exactly those above the threshold (protected ones excepted), and none may exceed it. The tally of the
    plan is rebuilt from what was read back, so the manifest reports the file, not the intent."""
    with SafetensorsCheckpoint.open_file(written) as out:
        entry = out.entries[plan.entry.name]
        chunk = min(chunk_elements, SUB_VALUES)
        tally = Tally()
        for (row0, src), (_, new) in zip(raw_rows(model.checkpoint, plan.entry, chunk), raw_rows(out, entry, chunk)):
            limit = _limits(src, plan)
            keep = keep_mask(plan.keep, row0, src.shape)
            before, after = np.abs(_value_of(src, plan.conv)), np.abs(_value_of(new, plan.conv))
            lim = np.broadcast_to(np.asarray(limit).reshape(-1, 1) if np.ndim(limit) else limit, src.shape)
            expected = before > lim
            if keep is not None:
                expected &= ~keep
            differs = src.view(f"u{src.dtype.itemsize}") != new.view(f"u{new.dtype.itemsize}")
            if not np.array_equal(differs, expected) or (after[expected] > lim[expected]).any():
                raise OutputError(f"{written}: tensor {plan.entry.name!r} does not read back as clipped "
                                  f"(rows from {row0}); nothing was published")
            tally.add(before, after, differs, lim, keep)
        plan.tally = tally


def _report(plan: _Plan, sha: str | None) -> ClippedTensor:
    t, tally = plan.info, plan.tally
    threshold = plan.threshold if plan.threshold is not None else tally.t_max
    return ClippedTensor(
        name=t.name, file=Path(plan.entry.file).name, role=t.role, layer=t.layer, shape=t.shape, dtype=t.dtype,
        domain="gain" if plan.conv is not None else "weight", convention=plan.conv, threshold=threshold,
        threshold_min=plan.threshold if plan.threshold is not None else tally.t_min, n_values=t.n_params,
        clipped=tally.clipped, protected=tally.protected, max_before=tally.max_before, max_after=tally.max_after,
        sha256=sha)


def _other_files(model: Model) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(relative path, source) of every non-weight file of a directory source, and what was left out."""
    root = Path(model.source.path)
    if not root.is_dir():
        return [], [f"{root.name}: a single file was clipped; no config or tokenizer files were copied with it"]
    weights = {Path(f).name for f in model.checkpoint.files}
    out, warnings, seen = [], [], set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and ".normscope-" not in d)
        for name in sorted(filenames):
            rel = (here / name).relative_to(root)
            if here == root and (name in weights or name == MANIFEST):
                continue
            if name.endswith(WEIGHT_SUFFIXES):
                warnings.append(f"{rel}: not copied: it holds weights clip did not read, and a loader could pick "
                                "up its unclipped values")
                continue
            out.append((rel, here / name))
    return out, warnings


def _result(model: Model, p: float, scope: ClipScope, per: ClipGranularity, protect: bool, out: str | None,
            dry_run: bool, plans: list[_Plan], changed: tuple[ClippedTensor, ...], skipped: tuple[str, ...],
            supers: tuple[SuperWeightCandidate, ...], files: tuple[ClipFile, ...], verified: bool,
            warnings: list[str], options: dict) -> ClipResult:
    return ClipResult(
        source=model.source, architecture=model.detected.spec.name, out=out, dry_run=dry_run, percentile=p,
        scope=scope, per=per, protect=protect, considered=len(plans), changed=len(changed),
        values_clipped=sum(t.clipped for t in changed), tensors=changed, skipped=skipped, super_weights=supers,
        files=files, verified=verified, notes=_notes(p, protect, plans, changed, supers, dry_run),
        warnings=tuple(model.warnings) + tuple(warnings), options=options)


def _notes(p: float, protect: bool, plans: list[_Plan], changed: tuple[ClippedTensor, ...],
           supers: tuple[SuperWeightCandidate, ...], dry_run: bool) -> tuple[str, ...]:
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
        notes.append(f"{len(weights)} Linear weight tensors {would}: {n:,} of {total:,} values "
                     f"({100 * n / total:.3g}%) clipped to their tensor's p{p:g} of |w|; `normscope clip --sweep` "
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
