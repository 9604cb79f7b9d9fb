"""Turning what the user typed into an open checkpoint.

Accepted: a local HF-layout directory, a `.safetensors` file, a `.gguf` file, a hub id
(`org/name[@rev][:file]`), the embedded example (`example:gemma3-270m`, or nothing at all).
A local path always wins over a hub id of the same spelling.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import CheckpointError, SourceNotFoundError
from ..results import SourceInfo
from .checkpoint import Checkpoint
from .examples import DEFAULT_EXAMPLE, example_path
from .gguf_file import GGUF_MAGIC, GGUFCheckpoint
from .hub import parse_hub_id, resolve_hub
from .safetensors_file import SafetensorsCheckpoint

__all__ = ["open_source", "open_path", "EXAMPLE_PREFIX"]

EXAMPLE_PREFIX = "example:"


def open_source(spec: str | Path | None = None, *, token: str | None = None,
                cache_dir: Path | None = None) -> tuple[SourceInfo, Checkpoint]:
    """Resolve `spec` and open it.

    Args:
        spec: a path, hub id, or `example:NAME`; None or "" means the embedded example.
        token: hub token (None: the usual places).
        cache_dir: where embedded examples are assembled (None: the user cache).

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
        return _info(text or EXAMPLE_PREFIX + name, "example", path, open_path(path))
    path = Path(text).expanduser()
    if path.exists():
        ckpt = open_path(path)
        kind = "directory" if path.is_dir() else ckpt.format
        return _info(text, kind, path, ckpt)
    hub = parse_hub_id(text)
    if hub is None:
        raise SourceNotFoundError(f"{text}: no such file or directory (and not a hub id like org/name)")
    local = resolve_hub(hub, token=token)
    return _info(text, "hub", local, open_path(local), revision=hub.revision)


def _info(spec: str, kind: str, path: Path, ckpt: Checkpoint, revision: str | None = None
          ) -> tuple[SourceInfo, Checkpoint]:
    files = tuple(str(f) for f in ckpt.files)
    return SourceInfo(spec, kind, str(path), ckpt.format, files, revision), ckpt


def open_path(path: Path) -> Checkpoint:
    """Open a local file or directory by what it contains (not only by its suffix)."""
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
    if path.suffix in (".bin", ".pt", ".pth"):
        raise CheckpointError(f"{path}: PyTorch pickles are not read; convert to safetensors "
                              "(safetensors.torch.save_file) and point normscope at the result")
    return SafetensorsCheckpoint.open_file(path)


def _open_dir(path: Path) -> Checkpoint:
    if any(path.glob("*.safetensors")) or (path / "model.safetensors.index.json").exists():
        return SafetensorsCheckpoint.open_dir(path)
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return GGUFCheckpoint.open_file(ggufs[0])
    if ggufs:
        names = ", ".join(g.name for g in ggufs[:4])
        raise SourceNotFoundError(f"{path}: holds {len(ggufs)} GGUF files ({names}…); name one of them")
    if any(path.glob("*.bin")) or any(path.glob("*.pt")):
        raise SourceNotFoundError(f"{path}: holds only PyTorch .bin/.pt weights; convert them to safetensors")
    raise SourceNotFoundError(f"{path}: no model weights (*.safetensors or *.gguf) in this directory")
