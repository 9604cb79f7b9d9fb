"""Turning what the user typed into an open checkpoint.

Accepted: a local HF-layout directory, a `.safetensors` file, a `.gguf` file, a hub id
(`org/name[@rev][:file]`), the embedded example (`example:gemma3-270m`, or nothing at all).
A local path always wins over a hub id of the same spelling. Quantized packs (GPTQ, AWQ, quanto,
compressed-tensors, FP8 blocks) open as their dequantized weights, and a PEFT LoRA adapter
(`adapter=`) is merged into the base (see `normscope.io.packs`).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import CheckpointError, SourceNotFoundError
from ..results import ProgressFn, SourceInfo
from .checkpoint import Checkpoint
from .embedded import DEFAULT_EXAMPLE, example_path
from .gguf_file import GGUF_MAGIC, GGUFCheckpoint
from .hub import parse_hub_id, resolve_hub
from .packs import ADAPTER_WEIGHTS, apply_adapter, is_adapter_dir, wrap_pack
from .safetensors_file import SafetensorsCheckpoint
from .torch_file import TORCH_INDEX_NAME, TORCH_SUFFIXES, TorchCheckpoint

__all__ = ["open_source", "open_path", "EXAMPLE_PREFIX"]

EXAMPLE_PREFIX = "example:"


def open_source(spec: str | Path | None = None, *, token: str | None = None,
                cache_dir: Path | None = None, adapter: str | Path | None = None,
                progress: ProgressFn | None = None) -> tuple[SourceInfo, Checkpoint]:
    """Resolve `spec` and open it.

    Args:
        spec: a path, hub id, or `example:NAME`; None or "" means the embedded example.
        token: hub token (None: the usual places).
        cache_dir: where embedded examples are assembled (None: the user cache).
        adapter: a local PEFT LoRA adapter directory to merge into the model (None: none).
        progress: called as progress(what, bytes_done, bytes_total) while a hub id downloads.

    Returns:
        (SourceInfo, Checkpoint); close the checkpoint when done (it is a context manager).

    Raises:
        SourceNotFoundError, CheckpointError, MissingExtraError.

    Example:
        >>> info, ckpt = open_source("example:gemma3-270m")  # doctest: +SKIP
    """
    text = str(spec) if spec is not None else ""
    if not text or text.startswith(EXAMPLE_PREFIX):
        name = text[len(EXAMPLE_PREFIX):] or DEFAULT_EXAMPLE
        path = example_path(name, cache_dir)
        return _info(text or EXAMPLE_PREFIX + name, "example", path, open_path(path, adapter=adapter))
    path = Path(text).expanduser()
    if path.exists():
        ckpt = open_path(path, adapter=adapter)
        kind = "directory" if path.is_dir() else ckpt.format
        return _info(text, kind, path, ckpt)
    hub = parse_hub_id(text)
    if hub is None:
        raise SourceNotFoundError(f"{text}: no such file or directory (and not a hub id like org/name)")
    local = resolve_hub(hub, token=token, progress=progress)
    return _info(text, "hub", local, open_path(local, adapter=adapter), revision=hub.revision)


def _info(spec: str, kind: str, path: Path, ckpt: Checkpoint, revision: str | None = None
          ) -> tuple[SourceInfo, Checkpoint]:
    files = tuple(str(f) for f in ckpt.files)
    return SourceInfo(spec, kind, str(path), ckpt.format, files, revision), ckpt


def open_path(path: Path, *, adapter: str | Path | None = None) -> Checkpoint:
    """Open a local file or directory by what it contains (not only by its suffix).

    Args:
        path: a directory, .safetensors or .gguf file.
        adapter: a PEFT LoRA adapter directory whose merge with `path` is read instead (None: none).

    Returns:
        The checkpoint; a quantized pack reads as its dequantized weights (dtype names such as
        GPTQ_4bit_g128), an adapter's targets as LoRA(<base dtype>) merges.

    Raises:
        SourceNotFoundError, CheckpointError.

    Example:
        >>> ckpt = open_path(Path("llama"), adapter=Path("llama-lora"))  # doctest: +SKIP
    """
    ckpt = _open_plain(path)
    if not ckpt.entries:  # nothing to read: every command would report on (or write) an empty model
        ckpt.close()
        what = "its header lists 0 tensors" if ckpt.format == "gguf" else "no tensor in its headers"
        raise CheckpointError(f"{path}: holds no tensors ({what}); a checkpoint needs at least one")
    if adapter is None:
        return ckpt
    try:
        return apply_adapter(ckpt, Path(adapter).expanduser())
    except BaseException:
        ckpt.close()
        raise


def _open_plain(path: Path) -> Checkpoint:
    if path.is_dir():
        return _open_dir(path)
    if not path.is_file():
        raise SourceNotFoundError(f"{path}: not a regular file or directory")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: file is empty")
    with open(path, "rb") as f:
        head = f.read(4)
    if head == GGUF_MAGIC or path.suffix == ".gguf":
        return GGUFCheckpoint.open_file(path)
    if path.suffix in TORCH_SUFFIXES:  # torch.load(weights_only=True), with the torch extra only
        return _packed(TorchCheckpoint.open_file(path))
    return _packed(SafetensorsCheckpoint.open_file(path))


def _packed(ckpt: Checkpoint) -> Checkpoint:
    try:
        return wrap_pack(ckpt)
    except BaseException:
        ckpt.close()
        raise


def _open_dir(path: Path) -> Checkpoint:
    if is_adapter_dir(path) and not any(f.name != ADAPTER_WEIGHTS for f in path.glob("*.safetensors")):
        raise SourceNotFoundError(f"{path}: a PEFT adapter, not a model; pass its base model and --adapter {path}")
    if any(path.glob("*.safetensors")) or (path / "model.safetensors.index.json").exists():
        return _packed(SafetensorsCheckpoint.open_dir(path))
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return GGUFCheckpoint.open_file(ggufs[0])
    if ggufs:
        names = ", ".join(g.name for g in ggufs[:4])
        raise SourceNotFoundError(f"{path}: holds {len(ggufs)} GGUF files ({names}…); name one of them")
    if (path / TORCH_INDEX_NAME).is_file() or any(p for s in TORCH_SUFFIXES for p in path.glob("*" + s)):
        return _packed(TorchCheckpoint.open_dir(path))
    raise SourceNotFoundError(f"{path}: no model weights (*.safetensors, *.gguf, *.bin, *.pt) in this directory")
