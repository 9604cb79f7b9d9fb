"""PyTorch state dicts: torch.load(weights_only=True) only, streamed from the zip when torch.save laid the
storages out plainly, the same numbers as the safetensors of the same tensors."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from helpers import GEMMA_CONFIG, gemma_tensors, run_cli, write_model
from normscope import analyze
from normscope.errors import CheckpointError, MissingExtraError
from normscope.io import open_path
from normscope.io.torch_file import TorchCheckpoint

torch = pytest.importorskip("torch", reason="the torch extra")


def _doc(result) -> str:
    d = result.to_dict()
    d.pop("source")
    d["summary"].pop("bytes_on_disk")  # zip framing differs from a safetensors header
    return json.dumps(d, sort_keys=True)


def _state(tensors: dict[str, np.ndarray], dtype) -> dict:
    return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)).to(dtype) for k, v in tensors.items()}


@pytest.mark.parametrize("dtype, st", [(torch.bfloat16, "BF16"), (torch.float32, "F32"), (torch.float16, "F16")],
                         ids=["bf16", "f32", "f16"])
def test_state_dict_reads_like_its_safetensors(tmp_path, dtype, st):
    tensors = {k: v.astype(np.float32) for k, v in gemma_tensors().items()}  # one rounding, as torch does
    write_model(tmp_path / "st", tensors, GEMMA_CONFIG, st)
    (tmp_path / "pt").mkdir()
    torch.save(_state(tensors, dtype), tmp_path / "pt" / "pytorch_model.bin")
    (tmp_path / "pt" / "config.json").write_text(json.dumps(GEMMA_CONFIG))
    got = analyze(tmp_path / "pt", chunk_elements=100)
    assert got.source.format == "torch"
    assert _doc(got) == _doc(analyze(tmp_path / "st", chunk_elements=100))


def test_located_tensors_are_streamed_not_loaded(tmp_path):
    torch.save(_state(gemma_tensors(), torch.bfloat16), tmp_path / "w.pt")
    with open_path(tmp_path / "w.pt") as ckpt:
        assert isinstance(ckpt, TorchCheckpoint) and not ckpt._resident  # every tensor read by pread
        e = ckpt.entries["model.embed_tokens.weight"]
        assert e.dtype == "BF16" and e.offset > 0


def test_nested_views_non_contiguous_and_legacy_files(tmp_path):
    base = torch.arange(40, dtype=torch.float32).reshape(8, 5)
    state = {"model_state_dict": {"trf_blocks.0.norm1.scale": torch.zeros(5), "w": base,
                                  "view": base[2:6], "t": base.t()},
             "optimizer": {"state": {}}, "epoch": 3}
    torch.save(state, tmp_path / "new.pt")
    torch.save(state, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    for name, resident in (("new.pt", {"t"}), ("old.pt", {"trf_blocks.0.norm1.scale", "w", "view", "t"})):
        with open_path(tmp_path / name) as ckpt:
            assert set(ckpt._resident) == resident, name
            for key, want in (("w", base), ("view", base[2:6]), ("t", base.t())):
                np.testing.assert_array_equal(ckpt.read(ckpt.entries[key]), want.numpy())


def test_seed_004_names_with_a_convention_override(tmp_path):
    torch.save({"tok_emb.weight": torch.randn(50, 16), "trf_blocks.0.norm1.scale": torch.full((16,), 3.0)},
               tmp_path / "best_model_params.pt")
    r = analyze(tmp_path / "best_model_params.pt", norm_convention="1+w")
    assert r.tensor("trf_blocks.0.norm1.scale").norm.gain_max == 4.0


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_arbitrary_pickles_are_refused_without_advising_weights_only_false(tmp_path, capsys, legacy):
    # what is wrong: beside its tensor the file pickles an object of a class of its own, which unpickling would
    # have to import and construct (torch's refusal then advises weights_only=False, which runs such code)
    torch.save({"w": torch.ones(2), "obj": _Opaque()}, tmp_path / "evil.pt",
               _use_new_zipfile_serialization=not legacy)
    expected = (f"{tmp_path / 'evil.pt'}: not a plain state dict that loads with torch.load(weights_only=True) "
                f"(it pickles {_Opaque.__module__}._Opaque, which weights_only does not allow); normscope never "
                "unpickles other objects, since unpickling can run code. Convert it with a tool you trust: where you "
                "trust the file, load it yourself and save its tensors with safetensors.torch.save_file, then give "
                "normscope the .safetensors file")
    with pytest.raises(CheckpointError) as e:
        open_path(tmp_path / "evil.pt")
    assert str(e.value) == expected
    code, out, err = run_cli(["analyze", tmp_path / "evil.pt"], capsys)
    assert (code, out, err) == (2, "", f"normscope: error: {expected}\n")
    assert "weights_only=False" not in err and "False" not in err


def test_truncated_file_is_a_checkpoint_error(tmp_path):
    torch.save({"w": torch.ones(1000)}, tmp_path / "w.pt")
    data = (tmp_path / "w.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt"):
        open_path(tmp_path / "cut.pt")


def test_sharded_bin_index(tmp_path):
    tensors = gemma_tensors()
    names = list(tensors)
    halves = {"pytorch_model-00001-of-00002.bin": names[:5], "pytorch_model-00002-of-00002.bin": names[5:]}
    for fname, group in halves.items():
        torch.save(_state({k: tensors[k] for k in group}, torch.float32), tmp_path / fname)
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps(
        {"weight_map": {k: f for f, g in halves.items() for k in g}}))
    (tmp_path / "config.json").write_text(json.dumps(GEMMA_CONFIG))
    with open_path(tmp_path) as ckpt:
        assert len(ckpt.files) == 2 and set(ckpt.entries) == set(names)


def test_without_torch_the_error_names_the_extra(tmp_path, monkeypatch):
    torch.save({"w": torch.ones(2)}, tmp_path / "w.pt")
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(MissingExtraError, match=r"needs torch: pip install 'normscope\[torch\]'"):
        open_path(tmp_path / "w.pt")


class _Opaque:
    pass
