"""GGUF reading: agreement with gguf-py's reader on the real Gemma file, and damaged headers refused."""

from __future__ import annotations

import struct
import time

import gguf
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import write_gguf
from normscope.errors import CheckpointError
from normscope.io import GGUFCheckpoint, open_path
from normscope.io.gguf_file import read_gguf_header


def test_header_agrees_with_gguf_py_on_the_real_gemma(gemma_gguf):
    metadata, entries = read_gguf_header(gemma_gguf)
    reader = gguf.GGUFReader(gemma_gguf)
    assert len(entries) == len(reader.tensors) == 236
    for e, t in zip(entries, reader.tensors):
        assert (e.name, e.dtype, e.shape, e.offset, e.nbytes) == (
            t.name, t.tensor_type.name, tuple(reversed(t.shape.tolist())), t.data_offset, t.n_bytes)
    assert metadata["general.architecture"] == "gemma3"
    assert metadata["gemma3.block_count"] == 18
    assert metadata["tokenizer.ggml.tokens"] == {"array_length": 262144}


def test_dequantized_rows_equal_gguf_py(gemma_gguf):
    ckpt = GGUFCheckpoint.open_file(gemma_gguf)
    reader = gguf.GGUFReader(gemma_gguf)
    by_name = {t.name: t for t in reader.tensors}
    for name in ("blk.0.attn_q.weight", "blk.0.attn_output.weight", "blk.0.ffn_down.weight",
                 "blk.0.attn_v.weight", "blk.16.post_ffw_norm.weight"):
        entry = ckpt.entries[name]
        ref = gguf.quants.dequantize(by_name[name].data, by_name[name].tensor_type).reshape(entry.shape)
        got = np.concatenate([b for _, b in ckpt.iter_rows(entry, max_elements=4096)]).reshape(entry.shape)
        np.testing.assert_array_equal(got, ref)


def test_small_gguf_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    q = rng.normal(size=(4, 64)).astype(np.float32)
    path = write_gguf(tmp_path / "t.gguf", {"a.weight": ("Q8_0", q), "n.weight": ("F32", np.arange(8.0))})
    ckpt = open_path(path)
    np.testing.assert_array_equal(ckpt.read(ckpt.entries["n.weight"]), np.arange(8, dtype=np.float32))
    ref = gguf.quants.dequantize(gguf.quants.quantize(q, gguf.GGMLQuantizationType.Q8_0),
                                 gguf.GGMLQuantizationType.Q8_0)
    np.testing.assert_array_equal(ckpt.read(ckpt.entries["a.weight"]), ref)


def _gguf(tmp_path, data: bytes):
    p = tmp_path / "bad.gguf"
    p.write_bytes(data)
    return p


def _head(n_tensors: int, n_kv: int, version: int = 3) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


def _str(s: str) -> bytes:
    return struct.pack("<Q", len(s)) + s.encode()


@pytest.mark.parametrize("make, message", [
    # wrong magic: a safetensors-looking file renamed .gguf
    (lambda: b"GGUX" + bytes(20), "not a GGUF file"),
    # version 1 (or a big-endian file) is not supported
    (lambda: _head(0, 0, version=1), "version 1"),
    # counts the file cannot possibly hold: must fail at once, not loop
    (lambda: _head(1 << 60, 1 << 60), "more than"),
    # a key string whose length runs past the end
    (lambda: _head(0, 1) + struct.pack("<Q", 1 << 40), "past the end"),
    # an unknown metadata value type (99)
    (lambda: _head(0, 1) + _str("k") + struct.pack("<I", 99), "unknown value type"),
    # an array claiming 2^40 uint32 elements
    (lambda: _head(0, 1) + _str("k") + struct.pack("<IIQ", 9, 4, 1 << 40), "past the end"),
    # a tensor with 7 dimensions
    (lambda: _head(1, 0) + _str("t") + struct.pack("<I", 7) + bytes(64), "dimensions"),
    # a tensor of ggml type 250, which does not exist
    (lambda: _head(1, 0) + _str("t") + struct.pack("<IQIQ", 1, 32, 250, 0), "unknown ggml type"),
    # a tensor whose data would lie past the end of the file (header only, no data)
    (lambda: _head(1, 0) + _str("t") + struct.pack("<IQIQ", 1, 32, 0, 0), "truncated"),
    # Q8_0 rows of 20 values are not whole 32-value blocks
    (lambda: _head(1, 0) + _str("t") + struct.pack("<IQIQ", 1, 20, 8, 0) + bytes(64), "not whole"),
    # alignment 3 is not a power of two
    (lambda: _head(0, 1) + _str("general.alignment") + struct.pack("<II", 4, 3), "power of two"),
], ids=["magic", "version", "absurd-counts", "key-past-eof", "value-type", "huge-array", "dims", "ggml-type",
        "data-past-eof", "partial-block", "alignment"])
def test_damaged_headers_are_refused(tmp_path, make, message):
    start = time.monotonic()
    with pytest.raises(CheckpointError, match=message):
        read_gguf_header(_gguf(tmp_path, make()))
    assert time.monotonic() - start < 5  # refused, not looped over


def test_truncated_real_file(tmp_path, gemma_gguf):
    data = gemma_gguf.read_bytes()
    with pytest.raises(CheckpointError, match="truncated"):
        read_gguf_header(_gguf(tmp_path, data[: len(data) // 2]))
    with pytest.raises(CheckpointError):
        read_gguf_header(_gguf(tmp_path, data[:5000]))  # cut inside the vocabulary


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_fuzz_mutated_small_gguf(tmp_path_factory, data):
    d = tmp_path_factory.mktemp("fz")
    base = write_gguf(d / "ok.gguf", {"w": ("Q8_0", np.ones((2, 32))), "n": ("F32", np.ones(4))},
                      kv={"gemma3.block_count": 1}).read_bytes()
    pos = data.draw(st.integers(0, len(base) - 1))
    new = data.draw(st.binary(min_size=1, max_size=8))
    cut = data.draw(st.booleans())
    mutated = base[:pos] + new + (b"" if cut else base[pos + len(new):])
    try:
        ckpt = open_path(_gguf(d, mutated))
        for e in ckpt.entries.values():
            ckpt.read(e)
    except CheckpointError:
        pass
