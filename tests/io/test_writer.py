"""The checkpoint writer against its references: torch's dtype casts, np.nextafter, the safetensors library;
byte-identical copies; bounded memory; staged directories that leave nothing behind on failure."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tracemalloc

import ml_dtypes
import numpy as np
import pytest
import torch
from safetensors import safe_open

from helpers import header_bytes, safetensors_bytes, write_safetensors
from normscope.errors import CheckpointError, OutputError
from normscope.io import read_header
from normscope.io.staging import StagedDirectory
from normscope.io.writer import copy_file, encode, hash_file, rewrite_safetensors, step_toward, verify_file


def _float32_cases(n: int = 1 << 20) -> np.ndarray:
    """Random bit patterns (every exponent, subnormals, overflow to inf) plus exact bf16/fp16 ties and specials."""
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)
    ties16 = (rng.integers(0, 1 << 16, 1 << 14).astype(np.uint32) << 16) | 0x8000  # halfway between two bf16
    ties_h = np.float16(rng.normal(size=1 << 14)).astype(np.float32).view(np.uint32) + (1 << 12)  # fp16 ties
    special = np.array([0.0, -0.0, np.inf, -np.inf, 3.4e38, -3.4e38, 65504.0, 65519.99, 65520.0, 5.96e-8, 2.98e-8,
                        1.00390625, 1.01171875], np.float32).view(np.uint32)
    return np.concatenate([bits, ties16, ties_h, special]).view(np.float32)


@pytest.mark.parametrize("dtype, torch_dtype", [("BF16", torch.bfloat16), ("F16", torch.float16)],
                         ids=["BF16", "F16"])
def test_encode_rounds_exactly_like_torch(dtype, torch_dtype):
    x = _float32_cases()
    ours = encode(x, dtype).view(np.uint16)
    theirs = torch.from_numpy(x.copy()).to(torch_dtype).view(torch.int16).numpy().view(np.uint16)
    finite_or_inf = ~np.isnan(x)
    np.testing.assert_array_equal(ours[finite_or_inf], theirs[finite_or_inf])
    assert np.isnan(encode(x[~finite_or_inf], dtype).astype(np.float32)).all()


def test_encode_from_float64_rounds_through_float32_like_torch():
    x = np.random.default_rng(1).normal(0, 100, 1 << 16)
    ours = encode(x, "BF16").view(np.uint16)
    theirs = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(ours, theirs)
    assert encode(x, "F64").tobytes() == x.tobytes()


def test_encode_refuses_what_it_cannot_write():
    with pytest.raises(CheckpointError, match="cannot encode values as 'I8'"):
        encode(np.zeros(2), "I8")


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64], ids=["F16", "F32", "F64"])
def test_step_toward_is_nextafter(dtype):
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(0, 10, 4096), [0.0, -0.0, 1e-45, -1e-45, 1.0, -1.0]]).astype(dtype)
    for up in (True, False):
        want = np.nextafter(x, np.array(np.inf if up else -np.inf, dtype))
        got = step_toward(x, up)
        np.testing.assert_array_equal(got.astype(np.float64), want.astype(np.float64))


def test_step_toward_walks_every_bf16_value_in_order():
    every = np.arange(1 << 16, dtype=np.uint16).view(ml_dtypes.bfloat16)
    finite = every[np.isfinite(every.astype(np.float32))]
    values = np.unique(finite.astype(np.float64))  # -0 and +0 collapse, as they compare equal
    inner = finite[(finite.astype(np.float64) > values[0]) & (finite.astype(np.float64) < values[-1])]
    up = step_toward(inner, True).astype(np.float64)
    down = step_toward(inner, False).astype(np.float64)
    pos = np.searchsorted(values, inner.astype(np.float64))
    zero = inner.astype(np.float64) == 0
    np.testing.assert_array_equal(up[~zero], values[pos + 1][~zero])
    np.testing.assert_array_equal(down[~zero], values[pos - 1][~zero])
    assert (up[zero] > 0).all() and (down[zero] < 0).all()


def _tensors():
    rng = np.random.default_rng(3)
    return {"b.weight": ("BF16", rng.normal(size=(16, 8))), "a.weight": ("F32", rng.normal(size=(4, 4))),
            "c.bias": ("F16", rng.normal(size=8))}


def test_nothing_replaced_is_a_byte_identical_copy_including_gaps(tmp_path):
    # a file whose tensors are separated by 6 unused bytes and followed by 3 more: all must survive
    header = {"__metadata__": {"format": "pt", "note": "kept"},
              "x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
              "y": {"dtype": "BF16", "shape": [3], "data_offsets": [14, 20]}}
    raw = header_bytes(header) + struct.pack("<2f", 1.5, -2.0) + b"GAPGAP" + b"\x80\x3f" * 3 + b"END"
    src = tmp_path / "src.safetensors"
    src.write_bytes(raw)
    entries, _ = read_header(src)
    written = rewrite_safetensors(src, tmp_path / "dst.safetensors", entries, {})
    assert (tmp_path / "dst.safetensors").read_bytes() == raw
    assert written.sha256 == hash_file(src).sha256 and set(written.tensors) == {"x", "y"}


def test_replaced_tensor_reads_back_in_the_safetensors_library(tmp_path):
    src = write_safetensors(tmp_path / "src.safetensors", _tensors(), {"format": "pt"})
    entries, _ = read_header(src)
    new = (np.arange(128, dtype=np.float32).reshape(16, 8) / 7).astype(ml_dtypes.bfloat16)
    dst = tmp_path / "dst.safetensors"
    written = rewrite_safetensors(src, dst, entries, {"b.weight": lambda: [new[:5], new[5:11], new[11:]]},
                                  chunk_bytes=16)
    with safe_open(str(dst), framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
        assert torch.equal(f.get_tensor("b.weight"), torch.from_numpy(new.astype(np.float32)).to(torch.bfloat16))
    with safe_open(str(src), framework="pt") as a, safe_open(str(dst), framework="pt") as b:
        for name in ("a.weight", "c.bias"):
            assert a.get_tensor(name).numpy().tobytes() == b.get_tensor(name).numpy().tobytes()
    assert src.read_bytes()[:8 + struct.unpack("<Q", src.read_bytes()[:8])[0]] == \
        dst.read_bytes()[:8 + struct.unpack("<Q", dst.read_bytes()[:8])[0]]  # the header, verbatim
    verify_file(written, entries)


@pytest.mark.parametrize("chunks, message", [
    (lambda: [np.zeros((16, 8), np.float32)], "gave float32 values for a BF16 tensor"),
    (lambda: [np.zeros((15, 8), ml_dtypes.bfloat16)], "gave 240 of its 256 bytes"),
    (lambda: [np.zeros((16, 8), ml_dtypes.bfloat16)] * 2, "gave more than its 256 bytes"),
], ids=["dtype", "short", "long"])
def test_producers_that_lie_are_refused(tmp_path, chunks, message):
    src = write_safetensors(tmp_path / "src.safetensors", _tensors())
    entries, _ = read_header(src)
    with pytest.raises(CheckpointError, match=message):
        rewrite_safetensors(src, tmp_path / "dst.safetensors", entries, {"b.weight": chunks})


def test_memory_is_bounded_by_a_chunk_not_by_the_tensor(tmp_path):
    rows, cols = 4096, 2048  # 32 MiB of F32 in one tensor
    src = tmp_path / "big.safetensors"
    header = {"w": {"dtype": "F32", "shape": [rows, cols], "data_offsets": [0, rows * cols * 4]},
              "v": {"dtype": "F32", "shape": [rows, cols], "data_offsets": [rows * cols * 4, 2 * rows * cols * 4]}}
    with open(src, "wb") as f:
        f.write(header_bytes(header))
        block = np.ones((128, cols), np.float32).tobytes()
        for _ in range(2 * rows // 128):
            f.write(block)
    entries, _ = read_header(src)

    def produce():
        for _ in range(rows // 128):
            yield np.full((128, cols), 2.0, np.float32)  # 1 MiB per chunk

    tracemalloc.start()
    try:
        rewrite_safetensors(src, tmp_path / "out.safetensors", entries, {"w": produce}, chunk_bytes=1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 6 << 20, f"peak {peak / 2 ** 20:.1f} MiB for a 64 MiB file"


def test_verify_catches_a_flipped_byte(tmp_path):
    src = write_safetensors(tmp_path / "src.safetensors", _tensors())
    entries, _ = read_header(src)
    dst = tmp_path / "dst.safetensors"
    written = rewrite_safetensors(src, dst, entries, {})
    data = bytearray(dst.read_bytes())
    data[-3] ^= 0x01  # one bit of the last tensor
    dst.write_bytes(bytes(data))
    with pytest.raises(OutputError, match="nothing was published"):
        verify_file(written, entries)


# -- staged directories ---------------------------------------------------------------------------

def test_staged_directory_appears_only_on_commit(tmp_path):
    target = tmp_path / "out"
    with StagedDirectory(target) as stage:
        (stage.path / "a.txt").write_text("a")
        assert stage.path.name.startswith(".out.normscope-partial-") and not target.exists()
        stage.commit()
    assert (target / "a.txt").read_text() == "a"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_failure_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with StagedDirectory(tmp_path / "out") as stage:
            (stage.path / "half.bin").write_bytes(b"x" * 10)
            raise RuntimeError("disk on fire")
    assert list(tmp_path.iterdir()) == []


def test_existing_target_is_refused_without_replace_and_swapped_with_it(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "marker.json").write_text("{}")
    (target / "old.txt").write_text("old")
    with pytest.raises(OutputError, match="already exists; pass --force"):
        StagedDirectory(target)
    with StagedDirectory(target, replace=True, marker="marker.json") as stage:
        (stage.path / "new.txt").write_text("new")
        assert (target / "old.txt").exists()  # the old one stays until the new one is complete
        stage.commit()
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_replace_refuses_a_directory_it_did_not_make(tmp_path):
    target = tmp_path / "home"
    target.mkdir()
    (target / "thesis.tex").write_text("years of work")
    with pytest.raises(OutputError, match="is not an earlier normscope output"):
        StagedDirectory(target, replace=True, marker="normscope-clip.json")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="exists and is not a directory"):
        StagedDirectory(tmp_path / "file", replace=True)
    with pytest.raises(OutputError, match="parent directory .* does not exist"):
        StagedDirectory(tmp_path / "no" / "such")


def test_stale_staging_of_a_dead_process_is_cleaned(tmp_path):
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(child.stdout)  # a pid that no longer runs
    stale = tmp_path / f".out.normscope-partial-{pid}-deadbeef"
    stale.mkdir()
    (stale / "half.safetensors").write_bytes(b"\0" * 100)
    mine = tmp_path / f".out.normscope-partial-{os.getpid()}-cafecafe"  # a live process's: kept
    mine.mkdir()
    with StagedDirectory(tmp_path / "out") as stage:
        stage.commit()
    assert not stale.exists() and mine.exists()


def test_rewrite_of_a_real_multi_dtype_file_keeps_metadata(tmp_path):
    raw = safetensors_bytes(_tensors(), {"format": "pt", "total": "3"})
    src = tmp_path / "m.safetensors"
    src.write_bytes(raw)
    entries, meta = read_header(src)
    rewrite_safetensors(src, tmp_path / "o.safetensors", entries, {})
    assert read_header(tmp_path / "o.safetensors")[1] == meta == {"format": "pt", "total": "3"}
    assert json.loads((tmp_path / "o.safetensors").read_bytes()[8:8 + struct.unpack("<Q", raw[:8])[0]]) == \
        json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])


def test_replace_without_an_atomic_exchange_falls_back_to_two_renames(tmp_path, monkeypatch):
    import normscope.io.staging as staging

    monkeypatch.setattr(staging, "_exchange", lambda a, b: False)  # e.g. a filesystem without RENAME_EXCHANGE
    target = tmp_path / "out"
    target.mkdir()
    (target / "marker.json").write_text("{}")
    with StagedDirectory(target, replace=True, marker="marker.json") as stage:
        (stage.path / "new.txt").write_text("new")
        stage.commit()
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_copy_file_refuses_a_fifo_without_waiting_for_a_writer(tmp_path):
    # what is wrong: the source is a named pipe nobody writes to; a plain open() for reading would wait forever
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(OutputError, match=f"^{tmp_path / 'pipe'}: not a regular file; only regular files are copied$"):
        copy_file(tmp_path / "pipe", tmp_path / "copy")
    assert sorted(os.listdir(tmp_path)) == ["pipe"]
