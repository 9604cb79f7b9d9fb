"""read_imatrix against files laid out as llama.cpp's imatrix tool writes them (tests/imatrix_files.py), the
weights derived as llama-quantize's load_imatrix derives them, and hostile files refused in one line."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from imatrix_files import collector_stats, dat_entry, write_dat_imatrix, write_gguf_imatrix

import normscope
from normscope.errors import CheckpointError, ConfigError, SourceNotFoundError

SHAPES = {"blk.0.attn_q.weight": (1, 64), "blk.0.ffn_down.weight": (1, 128), "blk.1.ffn_up_exps.weight": (4, 32)}


def _quantize_cpp_weights(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """load_imatrix in tools/quantize/quantize.cpp, loop for loop, in float32."""
    ne0 = sums.size // counts.size
    flat = sums.reshape(-1).astype(np.float32)
    out = np.empty(flat.size, np.float32)
    for j in range(counts.size):
        count = np.float32(counts[j])
        for i in range(ne0):
            out[j * ne0 + i] = flat[j * ne0 + i] / count if count > 0 else np.float32(1)
    return out


def test_gguf_weights_are_sums_over_counts_per_expert_and_one_for_idle_experts(tmp_path):
    stats = collector_stats(SHAPES, idle={"blk.1.ffn_up_exps.weight": [2]})
    path = write_gguf_imatrix(tmp_path / "imatrix.gguf", stats, chunk_count=7, chunk_size=256,
                              datasets=("wiki.train.raw", "code.txt"))
    imx = normscope.read_imatrix(path)
    assert imx.format == "gguf" and imx.chunk_count == 7 and imx.chunk_size == 256
    assert imx.datasets == ("wiki.train.raw", "code.txt")
    assert sorted(imx) == sorted(SHAPES)
    for name, (sums, counts) in stats.items():
        np.testing.assert_array_equal(imx[name], _quantize_cpp_weights(sums, counts))
        e = imx.entry(name)
        assert (e.n_expert, e.n_per_row) == SHAPES[name]
        np.testing.assert_array_equal(e.counts, counts)
    moe = imx["blk.1.ffn_up_exps.weight"].reshape(4, 32)
    assert np.all(moe[2] == 1) and not np.all(moe[1] == 1)
    # a 3-D tensor (experts, rows, n_per_row) takes them expert by expert
    w = imx.weights_for("blk.1.ffn_up_exps.weight", (4, 16, 32))
    np.testing.assert_array_equal(w, moe)
    assert imx.weights_for("blk.5.attn_q.weight", (8, 64)) is None
    with pytest.raises(ConfigError, match="collected on another model"):
        imx.weights_for("blk.0.attn_q.weight", (8, 128))


def test_dat_weights_are_values_over_ncall(tmp_path):
    values = np.array([2.0, 3.0, 5.0, 7.0], np.float32)
    body = (struct.pack("<i", 3) + dat_entry(b"blk.0.attn_k.weight", 3, values)
            + dat_entry(b"blk.0.attn_v.weight\0junk", 0, values)  # a C string; ncall 0: kept as stored
            + dat_entry(b"output.weight", -2, values))
    (tmp_path / "a.dat").write_bytes(body)  # no trailer: it is optional
    imx = normscope.read_imatrix(tmp_path / "a.dat")
    assert imx.format == "dat" and imx.chunk_count == 0 and imx.datasets == ()
    assert list(imx) == ["blk.0.attn_k.weight", "blk.0.attn_v.weight", "output.weight"]
    np.testing.assert_array_equal(imx["blk.0.attn_k.weight"], values / np.float32(3))
    np.testing.assert_array_equal(imx["blk.0.attn_v.weight"], values)
    np.testing.assert_array_equal(imx["output.weight"], values)
    trailer = struct.pack("<i", 42) + struct.pack("<i", 9) + b"train.txt"
    (tmp_path / "b.dat").write_bytes(body + trailer)
    imx = normscope.read_imatrix(tmp_path / "b.dat")
    assert imx.chunk_count == 42 and imx.datasets == ("train.txt",)


@pytest.mark.parametrize("chunk_size", [512, 100])
def test_dat_and_gguf_of_the_same_collection_give_the_same_weights(tmp_path, chunk_size):
    """save_imatrix and save_imatrix_legacy of one collection: llama-quantize derives the same weights from
    either (exactly when ncall is a power of two, to float32 rounding otherwise)."""
    stats = collector_stats(SHAPES, seed=3, tokens=512, idle={"blk.1.ffn_up_exps.weight": [0, 3]})
    g = normscope.read_imatrix(write_gguf_imatrix(tmp_path / "m.gguf", stats, chunk_size=chunk_size, chunk_count=5))
    d = normscope.read_imatrix(write_dat_imatrix(tmp_path / "m.dat", stats, chunk_size=chunk_size, chunk_count=5,
                                                 dataset="calibration.txt"))
    assert sorted(g) == sorted(d) and g.chunk_count == d.chunk_count == 5
    assert d.datasets == g.datasets == ("calibration.txt",)
    for name in g:
        ncall = int(d.entry(name).counts[0])
        if ncall & (ncall - 1) == 0:
            np.testing.assert_array_equal(d[name], g[name])
        else:
            np.testing.assert_allclose(d[name], g[name], rtol=3e-7)
        shape = (SHAPES[name][0], 8, SHAPES[name][1]) if SHAPES[name][0] > 1 else (8, SHAPES[name][1])
        np.testing.assert_array_equal(d.weights_for(name, shape).shape, g.weights_for(name, shape).shape)


def _gguf_bytes(tmp_path, **kw):
    stats = collector_stats({"blk.0.attn_q.weight": (1, 64)})
    return write_gguf_imatrix(tmp_path / "ok.gguf", stats, **kw).read_bytes()


@pytest.mark.parametrize("case, match", [
    ("empty", "no data"),
    ("negative count", "no data"),
    ("huge count", "more than"),
    ("huge name", "past the end"),
    ("huge nval", "past the end"),
    ("zero nval", "at least one"),
    ("truncated values", "past the end"),
    ("gguf truncated", "truncated"),
])
def test_hostile_files_are_refused_before_anything_is_allocated(tmp_path, case, match):
    ok = dat_entry(b"blk.0.attn_q.weight", 1, np.ones(8))
    data = {
        "empty": b"",
        "negative count": struct.pack("<i", -5) + ok,
        "huge count": struct.pack("<i", 2 ** 31 - 1) + ok,
        "huge name": struct.pack("<ii", 1, 2 ** 31 - 1) + b"x" * 16,
        "huge nval": struct.pack("<ii", 1, 1) + b"x" + struct.pack("<ii", 1, 2 ** 31 - 1) + b"\0" * 16,
        "zero nval": struct.pack("<ii", 1, 1) + b"x" + struct.pack("<ii", 1, 0) + b"\0" * 16,
        "truncated values": struct.pack("<i", 1) + ok[:-4],
        "gguf truncated": _gguf_bytes(tmp_path)[:-100],
    }[case]
    (tmp_path / "bad").write_bytes(data)
    with pytest.raises(CheckpointError, match=match):
        imx = normscope.read_imatrix(tmp_path / "bad")
        for name in imx:
            imx[name]


def test_a_model_gguf_or_unpaired_tensors_are_not_an_imatrix(tmp_path):
    import gguf

    w = gguf.GGUFWriter(str(tmp_path / "model.gguf"), "llama")
    w.add_tensor("blk.0.attn_q.weight", np.ones((4, 32), np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with pytest.raises(CheckpointError, match="missing imatrix metadata imatrix.datasets"):
        normscope.read_imatrix(tmp_path / "model.gguf")
    w = gguf.GGUFWriter(str(tmp_path / "odd.gguf"), "llama")
    for k, v in (("imatrix.chunk_count", 1), ("imatrix.chunk_size", 512)):
        w.add_uint32(k, v)
    w.add_array("imatrix.datasets", ["x"])
    w.add_tensor("blk.0.attn_q.weight.in_sum2", np.ones((1, 32), np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with pytest.raises(CheckpointError, match="mismatched sums and counts for blk.0.attn_q.weight"):
        normscope.read_imatrix(tmp_path / "odd.gguf")
    with pytest.raises(SourceNotFoundError):
        normscope.read_imatrix(tmp_path / "missing.gguf")


@pytest.mark.parametrize("chunk_size", [512, 100])
def test_write_imatrix_writes_what_the_collector_writes(tmp_path, chunk_size):
    """normscope.write_imatrix against files laid out from imatrix.cpp (gguf-py's writer; struct for .dat): the
    .dat bytes are identical, the GGUF reads back the same sums, counts, metadata and weights."""
    stats = collector_stats(SHAPES, seed=5, idle={"blk.1.ffn_up_exps.weight": [3]})
    stats["blk.2.attn_q.weight"] = (np.zeros((1, 16), np.float32), np.array([0]))  # no token: .dat skips it
    ours = normscope.write_imatrix(tmp_path / "ours.dat", stats, datasets=["a.txt", "b.txt"], chunk_count=9,
                                   chunk_size=chunk_size, legacy=True)
    ref = write_dat_imatrix(tmp_path / "ref.dat", stats, chunk_count=9, chunk_size=chunk_size, dataset="b.txt")
    assert ours.read_bytes() == ref.read_bytes()
    g = normscope.read_imatrix(normscope.write_imatrix(tmp_path / "ours.gguf", stats, datasets=["a.txt"],
                                                       chunk_count=9, chunk_size=chunk_size))
    r = normscope.read_imatrix(write_gguf_imatrix(tmp_path / "ref.gguf", stats, chunk_count=9,
                                                  chunk_size=chunk_size, datasets=("a.txt",)))
    assert (g.datasets, g.chunk_count, g.chunk_size, sorted(g)) == (r.datasets, r.chunk_count, r.chunk_size, sorted(r))
    for name in r:
        a, b = g.entry(name), r.entry(name)
        np.testing.assert_array_equal(a.sums, b.sums)
        np.testing.assert_array_equal(a.counts, b.counts)
        np.testing.assert_array_equal(a.weights, b.weights)
    import gguf

    reader = gguf.GGUFReader(tmp_path / "ours.gguf")  # gguf-py reads it as a valid GGUF
    assert str(bytes(reader.fields["general.type"].parts[-1]), "utf-8") == "imatrix"
    assert {t.name for t in reader.tensors} == {f"{n}{s}" for n in stats for s in (".in_sum2", ".counts")}


def test_gguf_counts_are_rounded_as_std_lround(tmp_path):
    """common_imatrix_load stores lround(count); quantize.cpp divides by it (a count of 2.5 is 3, 0.4 is 0)."""
    sums = np.array([[6.0, 9.0], [1.0, 2.0], [4.0, 4.0]], np.float32)
    imx = normscope.read_imatrix(write_gguf_imatrix(tmp_path / "r.gguf", {"blk.0.ffn_up_exps.weight": (
        sums, np.array([2.5, 0.4, 3.5]))}))
    e = imx.entry("blk.0.ffn_up_exps.weight")
    assert e.counts.tolist() == [3.0, 0.0, 4.0]
    np.testing.assert_array_equal(e.weights, np.array([2.0, 3.0, 1.0, 1.0, 1.0, 1.0], np.float32))
