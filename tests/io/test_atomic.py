"""Atomic output: a regular file is replaced whole; a device or FIFO is written in place (never replaced by a
file); a symbolic link is written through (its target replaced, the link kept); a directory is refused."""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from pathlib import Path

import pytest

from helpers import GEMMA_CONFIG, gemma_tensors, run_cli, write_model
from normscope.errors import OutputError
from normscope.io import write_bytes_atomic


@pytest.fixture
def tiny(tmp_path):
    return write_model(tmp_path / "tiny", gemma_tensors(), GEMMA_CONFIG, "BF16")


class FifoReader:
    """A thread that reads a FIFO to its end, as `normscope … --json fifo & cat fifo` would."""

    def __init__(self, path: Path):
        self.data = b""
        self.thread = threading.Thread(target=self._read, args=(path,), daemon=True)
        self.thread.start()

    def _read(self, path: Path) -> None:
        with open(path, "rb") as f:
            self.data = f.read()

    def join(self) -> bytes:
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "the writer never closed the FIFO"
        return self.data


@contextlib.contextmanager
def device_kept(path: str):
    """Fail if `path` stops being the character device it is, and put the device back if it did (a regression
    as root would replace it for every process on the machine; as another user it cannot write /dev at all)."""
    before = os.stat(path)
    # another process (an older normscope writing --json /dev/null as root) may have replaced it already
    assert stat.S_ISCHR(before.st_mode), f"{path} was not a character device before this test: recreate it " \
        "(for /dev/null as root: rm -f /dev/null; mknod -m 666 /dev/null c 1 3)"
    try:
        yield
        assert stat.S_ISCHR(os.stat(path).st_mode), f"{path} was replaced by a file"
    finally:
        if not stat.S_ISCHR(os.stat(path).st_mode) and os.geteuid() == 0:
            os.unlink(path)
            os.mknod(path, stat.S_IMODE(before.st_mode) | stat.S_IFCHR, before.st_rdev)
            os.chmod(path, stat.S_IMODE(before.st_mode))


def _kind(path: Path) -> int:
    return stat.S_IFMT(os.lstat(path).st_mode)


def test_a_regular_file_is_replaced_whole(tmp_path):
    (tmp_path / "r.json").write_bytes(b"old and longer")
    write_bytes_atomic(tmp_path / "r.json", b"new")
    assert (tmp_path / "r.json").read_bytes() == b"new" and os.listdir(tmp_path) == ["r.json"]


def test_a_fifo_is_written_in_place_not_replaced(tmp_path):
    # what is wrong with the old way: mkstemp + os.replace put a regular file where the FIFO was, and its reader
    # waited forever
    fifo = tmp_path / "report.fifo"
    os.mkfifo(fifo)
    reader = FifoReader(fifo)
    write_bytes_atomic(fifo, b"x" * 200_000)  # more than a pipe's buffer: written in several pieces
    assert reader.join() == b"x" * 200_000
    assert _kind(fifo) == stat.S_IFIFO and os.listdir(tmp_path) == ["report.fifo"]


def test_a_symlink_is_written_through_and_stays_a_link(tmp_path):
    # what is wrong with the old way: os.replace over the link replaced the link with a file; the file it pointed
    # to (the one the user means, e.g. reports/latest.json -> run-42.json) kept its old content
    (tmp_path / "runs").mkdir()
    target = tmp_path / "runs" / "run-42.json"
    target.write_bytes(b"old")
    link = tmp_path / "latest.json"
    link.symlink_to(Path("runs") / "run-42.json")
    write_bytes_atomic(link, b"new")
    assert _kind(link) == stat.S_IFLNK and os.readlink(link) == str(Path("runs") / "run-42.json")
    assert target.read_bytes() == b"new" and sorted(os.listdir(tmp_path / "runs")) == ["run-42.json"]
    dangling = tmp_path / "next.json"  # a link to a file not written yet: `> next.json` creates its target
    dangling.symlink_to(Path("runs") / "run-43.json")
    write_bytes_atomic(dangling, b"43")
    assert _kind(dangling) == stat.S_IFLNK and (tmp_path / "runs" / "run-43.json").read_bytes() == b"43"


def test_a_directory_is_refused(tmp_path):
    with pytest.raises(OutputError, match=f"^{tmp_path}: is a directory; give a file name$"):
        write_bytes_atomic(tmp_path, b"{}")


def test_a_full_device_is_one_error():
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")  # Linux has it; NORMSCOPE_NO_SKIP makes CI notice otherwise
    with device_kept("/dev/full"):
        with pytest.raises(OutputError, match="^/dev/full: writing failed \\(No space left on device\\)$"):
            write_bytes_atomic("/dev/full", b"x" * 10_000)


def test_cli_json_to_dev_null_leaves_the_device(tiny, capsys):
    # what is wrong with the old way: `normscope analyze -q --json /dev/null` renamed a regular file over the
    # character device, breaking /dev/null for every process on the machine
    with device_kept(os.devnull):
        code, out, err = run_cli(["analyze", tiny, "-q", "--json", os.devnull], capsys)
        assert (code, out, err) == (0, "", "")


def test_cli_json_to_a_fifo_and_through_a_symlink(tiny, tmp_path, capsys):
    fifo = tmp_path / "r.fifo"
    os.mkfifo(fifo)
    reader = FifoReader(fifo)
    code, out, err = run_cli(["analyze", tiny, "-q", "--json", fifo], capsys)
    assert (code, err) == (0, "") and reader.join().startswith(b'{\n  "source"')
    assert _kind(fifo) == stat.S_IFIFO
    (tmp_path / "r.md").write_text("old")
    (tmp_path / "latest.md").symlink_to("r.md")
    code, out, err = run_cli(["analyze", tiny, "-q", "--md", tmp_path / "latest.md"], capsys)
    assert (code, err) == (0, "") and _kind(tmp_path / "latest.md") == stat.S_IFLNK
    assert (tmp_path / "r.md").read_text().startswith("## normscope analyze")


def test_atomic_writer_streams_and_leaves_the_old_file_on_error(tmp_path):
    from normscope.io import atomic_writer

    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_writer(target) as f:
            f.write(b"new part")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["out.bin"]
    with atomic_writer(target) as f:
        for piece in (b"a" * 10, b"b" * 5):
            f.write(piece)
    assert target.read_bytes() == b"a" * 10 + b"b" * 5
    with pytest.raises(OutputError, match="does not exist"):
        with atomic_writer(tmp_path / "missing" / "x.bin"):
            pass
