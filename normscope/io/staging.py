"""Output directories staged beside their target: built under a hidden temporary name and renamed into
place only when told the contents are complete, so a failure or a kill leaves no partial output."""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
import shutil
from pathlib import Path

from ..errors import OutputError

__all__ = ["StagedDirectory"]


_PARTIAL = "normscope-partial"
_OLD = "normscope-old"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where that is not available."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


class StagedDirectory:
    """An output directory built under a hidden name beside `target`, renamed into place on `commit()`.

    The staging directory is `.<name>.normscope-partial-<pid>-<random>` in the target's parent; leaving
    the `with` block without `commit()` (an error, an interrupt) removes it, and one left behind by a
    killed process is removed by the next `StagedDirectory` for the same target. With `replace`, an
    existing target is swapped out only once the new directory is complete, and only when it is empty
    or holds `marker` (a previous output of this kind): normscope never deletes a directory it did not make.

    Raises:
        OutputError: the target exists (without `replace`), is not a directory, does not look like an
            earlier output, or its parent does not exist or is not writable.

    Example:
        >>> with StagedDirectory(Path("out"), replace=False) as stage:  # doctest: +SKIP
        ...     (stage.path / "a.txt").write_text("a")
        ...     stage.commit()
    """

    def __init__(self, target: Path, *, replace: bool = False, marker: str | None = None):
        self.target = Path(target)
        self.replace = replace
        self.marker = marker
        self.path: Path | None = None
        self.committed = False
        self.check()

    def check(self) -> None:
        t = self.target
        if not t.parent.is_dir():
            raise OutputError(f"{t}: parent directory {t.parent} does not exist; create it first")
        if t.exists() or t.is_symlink():
            if not self.replace:
                raise OutputError(f"{t}: already exists; pass --force (force=True) to replace it, or choose another "
                                  "output directory")
            if t.is_symlink() or not t.is_dir():
                raise OutputError(f"{t}: exists and is not a directory; refusing to replace it")
            if self.marker and any(t.iterdir()) and not (t / self.marker).is_file():
                raise OutputError(f"{t}: exists and is not an earlier normscope output (no {self.marker}); refusing "
                                  "to replace it even with --force: remove it yourself or choose another directory")

    def _stale(self) -> None:
        """Remove staging directories of this target left by processes that no longer run."""
        for kind in (_PARTIAL, _OLD):
            for p in self.target.parent.glob(f".{self.target.name}.{kind}-*"):
                pid = p.name[len(f".{self.target.name}.{kind}-"):].split("-", 1)[0]
                if pid.isdigit() and not _alive(int(pid)) and p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)

    def _name(self, kind: str) -> Path:
        return self.target.parent / f".{self.target.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"

    def __enter__(self) -> StagedDirectory:
        self._stale()
        self.path = self._name(_PARTIAL)
        try:
            os.mkdir(self.path)
        except OSError as e:
            raise OutputError(f"{self.target}: cannot write in {self.target.parent} ({e.strerror})") from None
        return self

    def commit(self) -> Path:
        """Rename the complete staging directory to the target (swapping out an old one)."""
        assert self.path is not None
        self.check()  # the target may have appeared while we wrote
        _fsync_dir(self.path)
        if self.target.exists():
            if not _exchange(self.path, self.target):
                old = self._name(_OLD)
                os.rename(self.target, old)
                try:
                    os.rename(self.path, self.target)
                except BaseException:
                    os.rename(old, self.target)
                    raise
                os.rename(old, self.path)  # the old directory now sits under the staging name
            shutil.rmtree(self.path, ignore_errors=True)
        else:
            os.rename(self.path, self.target)
        _fsync_dir(self.target.parent)
        self.committed = True
        return self.target

    def __exit__(self, *exc: object) -> None:
        if not self.committed and self.path is not None and self.path.exists():
            shutil.rmtree(self.path, ignore_errors=True)
