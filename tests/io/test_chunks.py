"""`Checkpoint.iter_chunks`: the values of `iter_rows`, in the same chunks when a row fits, and rows longer
than a chunk split at element (or quantization-block) boundaries so no piece exceeds the bound."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import ST_DTYPES, write_gguf, write_safetensors
from normscope.io import GGUFCheckpoint, open_path


def _chunks(ckpt, entry, max_elements):
    return [(start, values.copy()) for start, values in ckpt.iter_chunks(entry, max_elements)]


@pytest.mark.parametrize("dtype", ["F32", "BF16", "F16", "F8_E4M3", "F64", "I8"])
def test_safetensors_chunks_equal_rows(tmp_path, dtype):
    rng = np.random.default_rng(0)
    values = (rng.normal(0, 3, (37, 50)) * (1 if dtype != "I8" else 20)).astype(np.float32)
    path = write_safetensors(tmp_path / "m.safetensors", {"w": (dtype, values)})
    want = values.astype(ST_DTYPES[dtype]).astype(np.float32)
    with open_path(path) as ckpt:
        entry = ckpt.entries["w"]
        for max_elements in (1, 49, 50, 120, 10_000):
            got = _chunks(ckpt, entry, max_elements)
            rows = list(ckpt.iter_rows(entry, max_elements))
            if max_elements >= 50:  # a row fits: the chunks of iter_rows, flattened
                assert [s for s, _ in got] == [r0 * 50 for r0, _ in rows]
            else:  # pieces of rows, none above the bound
                assert all(v.size <= max_elements for _, v in got)
            flat = np.concatenate([v for _, v in got])
            assert [s for s, _ in got] == list(np.cumsum([0] + [v.size for _, v in got])[:-1])
            np.testing.assert_array_equal(flat, want.ravel())


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0", "F16"])
def test_gguf_long_rows_split_on_block_boundaries(tmp_path, qtype):
    rng = np.random.default_rng(1)
    values = rng.normal(0, 0.02, (3, 4096)).astype(np.float32)
    path = write_gguf(tmp_path / "m.gguf", {"blk.0.ffn_down.weight": (qtype, values)})
    with GGUFCheckpoint.open_file(path) as ckpt:
        entry = ckpt.entries["blk.0.ffn_down.weight"]
        want = np.concatenate([r for _, r in ckpt.iter_rows(entry, 1 << 20)]).ravel()
        got = _chunks(ckpt, entry, 1000)  # rows of 4096 > 1000: pieces of whole blocks (31 of 32 values)
        block = 32 if qtype != "F16" else 1
        assert all(v.size <= 1000 and start % block == 0 for start, v in got)
        assert all(v.size == 1000 // block * block for _, v in got[:-1])
        np.testing.assert_array_equal(np.concatenate([v for _, v in got]), want)


def test_a_one_dimensional_tensor_is_bounded_too(tmp_path):
    values = np.arange(100_000, dtype=np.float32)
    path = write_safetensors(tmp_path / "m.safetensors", {"v": ("F32", values)})
    with open_path(path) as ckpt:
        got = _chunks(ckpt, ckpt.entries["v"], 4096)
    assert max(v.size for _, v in got) == 4096
    np.testing.assert_array_equal(np.concatenate([v for _, v in got]), values)
