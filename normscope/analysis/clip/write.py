"""Writing a clip: the refusals (GGUF, packs, an output inside its input), the clipped rows, the new
checkpoint staged beside its target, and its verification before it is published.

The output is a new directory: every safetensors file of the source with the same tensors, dtypes,
shapes, offsets, index and `__metadata__` (unchanged tensors bit for bit), every other regular file of
the input copied (a link out of the input, a linked directory, a FIFO, socket or device is left out with a
warning), and a `normscope-clip.json` manifest (the ClipResult document). It is built under a hidden name
beside the target, re-read and checked (every byte hashed; every clipped tensor compared with the
source value by value), and only then renamed into place.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...arch import effective_gain
from ...errors import ConfigError, OutputError
from ...io import SafetensorsCheckpoint, TensorEntry, write_text_atomic
from ...io.staging import StagedDirectory
from ...io.writer import WrittenFile, copy_file, rewrite_safetensors, verify_file
from ...results import ClipFile, ClippedTensor, ClipResult, NormConvention, ProgressFn, TensorInfo
from ..engine.clipping import SUB_VALUES, Tally, check_finite, clip_rows, keep_mask, raw_rows, row_thresholds
from ..engine.model import Model

__all__ = ["ClipTarget", "MANIFEST", "check_writable", "output_dir", "clipped_rows", "clipped_report", "write_clipped"]

# makes the result of a written clip: (files, changed tensors, warnings) -> ClipResult
ResultFn = Callable[[tuple[ClipFile, ...], tuple[ClippedTensor, ...], list[str]], ClipResult]

MANIFEST = "normscope-clip.json"
# files that hold weights: never copied unchanged next to the clipped ones (a loader could pick them up)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt", ".h5", ".msgpack", ".onnx")
SKIP_DIRS = (".git", ".cache")


@dataclass
class ClipTarget:
    """One tensor to clip: where it is, its convention and threshold, and what clipping it changed."""

    info: TensorInfo
    entry: TensorEntry
    conv: NormConvention | None
    percentile: float
    threshold: float | None  # per tensor; None: each row's own, computed as the rows stream
    keep: dict[int, list[int]] | None
    may_change: bool = True
    tally: Tally = field(default_factory=Tally)


def check_writable(model: Model) -> None:
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


def output_dir(model: Model, out: Path, force: bool) -> Path:
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


def clipped_rows(model: Model, plan: ClipTarget, chunk_elements: int) -> Iterator[np.ndarray]:
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


def _limits(raw: np.ndarray, plan: ClipTarget) -> np.ndarray | float:
    if plan.threshold is not None:
        return plan.threshold
    values = _value_of(raw, plan.conv)
    check_finite(values, plan.info)
    return row_thresholds(values, [plan.percentile])[0]


def write_clipped(model: Model, target: Path, force: bool, plans: list[ClipTarget], chunk_elements: int,
                  progress: ProgressFn | None, result_of: ResultFn) -> ClipResult:
    """Write the clipped checkpoint to `target` (staged, verified, then renamed into place) with its manifest,
    the ClipResult that `result_of(files, changed tensors, warnings)` makes of what was written."""
    ckpt = model.checkpoint
    chunk_bytes = 4 * max(chunk_elements, 1 << 18)  # raw copies and hashes: a float32 chunk's worth of bytes
    by_file: dict[Path, list[ClipTarget]] = {}
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
            replace = {pl.entry.name: (lambda pl=pl: clipped_rows(model, pl, chunk_elements)) for pl in mine}
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
                    changed.append(clipped_report(plan, sha))
        files = tuple(ClipFile(str(w.path.relative_to(stage.path)), w.size, w.sha256, action)
                      for w, _, action in written)
        result = result_of(files, tuple(changed), warnings)
        write_text_atomic(stage.path / MANIFEST,
                          json.dumps(result.to_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n")
        stage.commit()
    return result


def _verify_values(model: Model, plan: ClipTarget, written: Path, chunk_elements: int) -> None:
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


def clipped_report(plan: ClipTarget, sha: str | None) -> ClippedTensor:
    t, tally = plan.info, plan.tally
    threshold = plan.threshold if plan.threshold is not None else tally.t_max
    return ClippedTensor(
        name=t.name, file=Path(plan.entry.file).name, role=t.role, layer=t.layer, shape=t.shape, dtype=t.dtype,
        domain="gain" if plan.conv is not None else "weight", convention=plan.conv, threshold=threshold,
        threshold_min=plan.threshold if plan.threshold is not None else tally.t_min, n_values=t.n_params,
        clipped=tally.clipped, protected=tally.protected, max_before=tally.max_before, max_after=tally.max_after,
        sha256=sha)


def _other_files(model: Model) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(relative path, real source) of every non-weight file of a directory source, and what was left out.

    Only regular files that resolve inside the input are copied: a symbolic link out of it (`up -> ..`,
    `notes.txt -> ~/.ssh/id_rsa`) would put a file the model does not hold into an output that may be published,
    and a FIFO, socket or device can block a read forever or never end. Linked directories are not entered."""
    root = Path(model.source.path)
    if not root.is_dir():
        return [], [f"{root.name}: a single file was clipped; no config or tokenizer files were copied with it"]
    weights = {Path(f).name for f in model.checkpoint.files}
    inside = _input_roots(root)
    out, warnings = [], []
    for dirpath, dirnames, filenames in os.walk(root):  # followlinks=False: a linked directory is listed, not entered
        here = Path(dirpath)
        kept = []
        for name in sorted(dirnames):
            if name in SKIP_DIRS or ".normscope-" in name:
                continue
            if (here / name).is_symlink():
                warnings.append(f"{(here / name).relative_to(root)}: not copied: a symbolic link to a directory "
                                f"({os.path.realpath(here / name)}); clip copies only the input's own files and "
                                "enters no linked directory: copy what the model needs yourself")
                continue
            kept.append(name)
        dirnames[:] = kept
        for name in sorted(filenames):
            rel = (here / name).relative_to(root)
            if here == root and (name in weights or name == MANIFEST):
                continue
            if name.endswith(WEIGHT_SUFFIXES):
                warnings.append(f"{rel}: not copied: it holds weights clip did not read, and a loader could pick "
                                "up its unclipped values")
                continue
            real, why = _side_file(here / name, inside)
            if real is None:
                warnings.append(f"{rel}: not copied: {why}")
                continue
            out.append((rel, real))
    return out, warnings


def _input_roots(root: Path) -> list[Path]:
    """The real directories a side file may resolve into: the input, and for a hub cache snapshot
    (`models--org--name/snapshots/<revision>`, each file a link to `../../blobs/<sha256>`) its repository's blobs."""
    real = Path(os.path.realpath(root))
    roots = [real]
    blobs = real.parent.parent / "blobs"
    if real.parent.name == "snapshots" and blobs.is_dir() and not blobs.is_symlink():
        roots.append(blobs)
    return roots


_KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory"))


def _side_file(path: Path, inside: list[Path]) -> tuple[Path | None, str]:
    """(the real path to copy, "") for a regular file inside the input, else (None, why it is not copied).
    Decided on stat() and realpath() alone: nothing is opened, so a FIFO cannot block."""
    try:
        st = os.stat(path)
    except OSError as e:
        broken = path.is_symlink()
        return None, ("a broken symbolic link" if broken else f"cannot be read ({e.strerror})")
    real = Path(os.path.realpath(path))
    if not any(real == r or r in real.parents for r in inside):
        return None, (f"a symbolic link to {real}, outside the input directory; clip copies only files inside its "
                      "input: copy it yourself if the model needs it")
    if not stat.S_ISREG(st.st_mode):
        kind = next((what for test, what in _KINDS if test(st.st_mode)), "not a regular file")
        return None, f"{kind}, not a regular file; clip copies only regular files (reading this one could block)"
    return real, ""
