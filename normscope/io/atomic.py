"""Atomic output: write beside the target, fsync, rename into place; a failure leaves nothing.

A target that exists and is not a regular file (a character device such as /dev/null, a FIFO) is written
directly, as the shell's `> /dev/null` does: renaming a new file over it would replace the device itself. A
symbolic link is written through: its target is replaced atomically, and the link stays.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ..errors import OutputError

__all__ = ["write_text_atomic", "write_bytes_atomic", "atomic_writer"]


def write_bytes_atomic(path: Path | str, data: bytes) -> Path:
    """Write `data` to `path` so that readers see the old file or the whole new one, never a part.

    A regular file (or a link to one) is replaced by renaming a complete temporary file over it; an existing
    device or FIFO is opened and written in place (a FIFO's write waits for its reader, as `> fifo` does).

    Args:
        path: the file to write; a symbolic link is followed and its target replaced.
        data: the whole content.

    Returns:
        `path`, as given.

    Raises:
        OutputError: the directory does not exist or is not writable, `path` is a directory, or a device or
            FIFO cannot be opened for writing.

    Example:
        >>> write_bytes_atomic(os.devnull, b"{}")  # /dev/null stays a device  # doctest: +SKIP
    """
    with atomic_writer(path) as f:
        f.write(data)
    return Path(path)


@contextlib.contextmanager
def atomic_writer(path: Path | str) -> Iterator[BinaryIO]:
    """A binary file to stream into: on leaving the block it replaces `path` as a whole (the rules of
    `write_bytes_atomic`), so output larger than memory is written a piece at a time; an exception leaves
    `path` as it was.

    Raises:
        OutputError: as write_bytes_atomic.
    """
    path = Path(path)
    target, in_place = _target(path)
    if in_place:
        f = _open_in_place(path, target)
        try:
            with f:
                yield f
        except OSError as e:  # the reader went away (EPIPE), the device is full
            raise OutputError(f"{path}: writing failed ({e.strerror})") from None
        return
    if not target.parent.is_dir():
        raise OutputError(f"{path}: directory {target.parent} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as e:
        raise OutputError(f"{path}: cannot write here ({e.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _target(path: Path) -> tuple[Path, bool]:
    """The file a write to `path` lands in (a symbolic link's target), and whether it is an existing device or
    FIFO, written in place rather than replaced."""
    if path.is_dir():
        raise OutputError(f"{path}: is a directory; give a file name")
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        return target, False
    except OSError as e:
        raise OutputError(f"{path}: cannot write here ({e.strerror})") from None
    return target, not stat.S_ISREG(mode)


def _open_in_place(path: Path, target: Path) -> BinaryIO:
    """An existing device or FIFO opened for writing: never created, truncated or renamed (a buffered file, so a
    write puts all of its data, however a pipe splits it)."""
    try:
        fd = os.open(target, os.O_WRONLY)
    except OSError as e:  # a socket (ENXIO), a read-only device
        raise OutputError(f"{path}: not a regular file and cannot be opened for writing ({e.strerror}); give a "
                          "file name") from None
    return os.fdopen(fd, "wb")


def write_text_atomic(path: Path | str, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))
