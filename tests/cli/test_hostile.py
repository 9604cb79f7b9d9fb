"""Hostile and extreme inputs through every command (issue 23): each file is built here, with what is wrong
with it said beside it. Bad input: exit 2 and one line naming the file and what is wrong, in analyze, check,
simulate, compare and clip alike (clip writes nothing). Legal extremes (empty tensors, claims of a billion
blocks): the report, at once."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from helpers import (GEMMA_CONFIG, gemma_tensors, gguf_string_value, raw_gguf, raw_safetensors, run_cli, write_gguf,
                     write_model)

COMMANDS = ("analyze", "check", "simulate", "compare", "clip")


def _args(command: str, path, tmp_path) -> list[str]:
    if command == "compare":
        return ["compare", path, path]
    if command == "clip":
        return ["clip", path, "--out", tmp_path / "clipped"]
    return [command, path]


def run_all(path, tmp_path, capsys, commands=COMMANDS) -> dict[str, tuple[int, str, str]]:
    """{command: (exit code, stdout, stderr)} of every command on `path`."""
    return {c: run_cli(_args(c, path, tmp_path), capsys) for c in commands}


def said(needle: str, *texts: str) -> bool:
    """`needle` is in the output, whatever the terminal's line wrapping."""
    return " ".join(needle.split()) in " ".join(" ".join(texts).split())


def assert_refused(results: dict, *needles: str) -> None:
    """Every command: exit 2, stderr one line naming what is wrong, no traceback, nothing written."""
    for command, (code, _, err) in results.items():
        assert code == 2, (command, err)
        assert err.count("\n") == 1 and err.startswith("normscope: error: "), (command, err)
        assert "internal error" not in err and "Traceback" not in err, (command, err)
        for needle in needles:
            assert needle in err, (command, needle, err)


GEMMA_KV = [("general.architecture", 8, gguf_string_value("gemma3"))]
F32, Q8_0 = 0, 8


def _gguf_reads_with_gguf_py(path) -> None:
    """The crafted GGUF is a file gguf-py's own reader accepts (what we build is real GGUF)."""
    import gguf

    gguf.GGUFReader(str(path))


# -- item 14: a checkpoint with no tensors ------------------------------------------------------------------


def _empty_safetensors(t):
    # a valid safetensors header that lists no tensor, only __metadata__
    return raw_safetensors(t / "empty.safetensors", {"__metadata__": {"format": "pt"}}), "holds no tensors"


def _empty_index(t):
    # a sharded directory whose index maps no tensor (the shards it once named are gone)
    d = write_model(t / "idx", gemma_tensors(layers=1), GEMMA_CONFIG, "F32", shards=2)
    for f in d.glob("*.safetensors"):
        f.unlink()
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": {}}))
    return d, "'weight_map' is empty"


def _empty_index_with_shards(t):
    # the shards are still there, but the index (which decides) maps nothing
    d = write_model(t / "idx2", gemma_tensors(layers=1), GEMMA_CONFIG, "F32", shards=2)
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {}}))
    return d, "'weight_map' is empty"


def _empty_directory(t):
    # config.json and a model.safetensors whose header is {}
    d = t / "dir"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(GEMMA_CONFIG))
    raw_safetensors(d / "model.safetensors", {})
    return d, "holds no tensors"


def _empty_gguf(t):
    # a GGUF with metadata and a tensor count of 0 (a vocabulary-only file)
    path = write_gguf(t / "empty.gguf", {}, kv={"gemma3.block_count": 18})
    _gguf_reads_with_gguf_py(path)
    return path, "holds no tensors (its header lists 0 tensors)"


def _empty_torch(t):
    # a PyTorch state dict with no entry (torch.save({}))
    import torch

    path = t / "pytorch_model.bin"
    torch.save({}, path)
    return path, "holds no tensors"


EMPTY = {"torch": _empty_torch, "safetensors": _empty_safetensors, "index": _empty_index,
         "index-with-shards": _empty_index_with_shards, "directory": _empty_directory, "gguf": _empty_gguf}


@pytest.mark.parametrize("case", list(EMPTY))
def test_a_checkpoint_with_no_tensors_is_bad_input(tmp_path, capsys, case):
    """check must not PASS after checking 0 tensors, clip must not write a checkpoint without weights."""
    path, message = EMPTY[case](tmp_path)
    assert_refused(run_all(path, tmp_path, capsys), message, str(path))
    assert not (tmp_path / "clipped").exists()


# -- item 12: zero-size dimensions are legal ------------------------------------------------------------------


def test_a_zero_size_dimension_is_reported_empty_and_the_run_goes_on(tmp_path, capsys):
    """[4, 0] and [0, 64] tensors (pruned heads, empty adapters): listed as empty, everything else measured."""
    from safetensors.numpy import load_file

    tensors = gemma_tensors()
    tensors["model.layers.0.self_attn.pruned.weight"] = np.zeros((4, 0))
    tensors["model.layers.1.mlp.adapter.weight"] = np.zeros((0, 64))
    d = write_model(tmp_path / "m", tensors, GEMMA_CONFIG, "BF16")
    results = {}
    for command in COMMANDS:
        extra = ["--json", tmp_path / f"{command}.json"] if command != "clip" else []
        results[command] = run_cli([*_args(command, d, tmp_path), *extra], capsys)
    for command, (code, out, err) in results.items():
        assert code == 0, (command, err)
        assert said("2 tensors with a zero-size dimension hold no values", out, err), command
    analyze = json.loads((tmp_path / "analyze.json").read_text())
    empty = {t["name"]: t for t in analyze["tensors"] if t["n_params"] == 0}
    assert set(empty) == {"model.layers.0.self_attn.pruned.weight", "model.layers.1.mlp.adapter.weight"}
    assert all(t["norm"] is None and t["weight"] is None for t in empty.values())
    assert len(analyze["tensors"]) == len(tensors)
    big = next(t for t in analyze["tensors"] if t["name"] == "model.layers.1.post_feedforward_layernorm.weight")
    assert big["norm"]["gain_max"] == 1657.0  # the rest is measured as without the empty tensors
    sim = json.loads((tmp_path / "simulate.json").read_text())["schemes"][0]
    entry = next(t for t in sim["tensors"] if t["name"] == "model.layers.0.self_attn.pruned.weight")
    assert entry["nbytes"] == 0 and entry["error"] is None
    pair = json.loads((tmp_path / "compare.json").read_text())["pairs"][0]
    note = next(t["note"] for t in pair["tensors"] if t["name"] == "model.layers.1.mlp.adapter.weight")
    assert note.startswith("empty")
    check = json.loads((tmp_path / "check.json").read_text())
    assert check["passed"] is True
    # clip copies the empty tensors through; the safetensors library reads the result
    clipped = load_file(str(tmp_path / "clipped" / "model.safetensors"))
    assert clipped["model.layers.0.self_attn.pruned.weight"].shape == (4, 0)
    assert clipped["model.layers.1.mlp.adapter.weight"].shape == (0, 64)


# -- item 7: zero width, huge other dimension --------------------------------------------------------------


def _huge_rows_safetensors(t):
    # [2^62, 0]: no values, but 2^62 (empty) rows; once read row block by row block, forever
    header = {"a": {"dtype": "F32", "shape": [2 ** 62, 0], "data_offsets": [0, 0]},
              "model.norm.weight": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}
    return raw_safetensors(t / "rows.safetensors", header, np.ones(4, np.float32).tobytes())


def _huge_gguf(ne):
    def make(t):
        # a Q8_0 attn_q with ne = `ne` (one of them 0) beside a real norm
        path = raw_gguf(t / "zero.gguf", [("blk.0.attn_q.weight", ne, Q8_0, 0, b""),
                                           ("blk.0.attn_norm.weight", [32], F32, 0, np.ones(32, np.float32).tobytes())],
                         GEMMA_KV)
        _gguf_reads_with_gguf_py(path)
        return path
    return make


HUGE_ZERO = {"safetensors-[2^62,0]": _huge_rows_safetensors, "gguf-ne[0,2^62]": _huge_gguf([0, 2 ** 62]),
             "gguf-ne[2^62,0]": _huge_gguf([2 ** 62, 0])}


@pytest.mark.parametrize("case", list(HUGE_ZERO))
def test_zero_width_with_a_huge_dimension_is_empty_not_a_hang(tmp_path, capsys, case):
    path = HUGE_ZERO[case](tmp_path)
    commands = COMMANDS if path.suffix == ".safetensors" else COMMANDS[:4]  # clip refuses GGUF (tested elsewhere)
    for command in commands:
        code, out, err = run_cli([*_args(command, path, tmp_path), "--json", tmp_path / f"{command}.json"],
                                 capsys)
        assert code == 0, (command, err)
        assert said("with a zero-size dimension holds no values", out, err)
    sim = json.loads((tmp_path / "simulate.json").read_text())["schemes"][0]
    empty = next(t for t in sim["tensors"] if 2 ** 62 in t["shape"])
    assert empty["error"] is None and empty["nbytes"] == 0


# -- item 6: block counts claimed by the header -------------------------------------------------------------


@pytest.mark.parametrize("claim", [10 ** 6, 10 ** 9])
def test_a_config_claiming_a_billion_layers_is_checked_against_the_tensors(tmp_path, capsys, claim):
    # config.json says num_hidden_layers = claim; the tensors hold blocks 0 and 1
    d = write_model(tmp_path / "m", gemma_tensors(layers=2), {**GEMMA_CONFIG, "num_hidden_layers": claim}, "BF16")
    for command in COMMANDS:
        code, out, err = run_cli([*_args(command, d, tmp_path), "--json", tmp_path / f"{command}.json"], capsys)
        assert code == 0, (command, err)
        assert said(f"num_hidden_layers claims {claim:,} blocks but the tensors hold blocks 0..1; counting 2", out, err)
    assert json.loads((tmp_path / "analyze.json").read_text())["summary"]["n_layers"] == 2
    # the GGUF names still map (blk.1.ffn_down is the last block's)
    sim = json.loads((tmp_path / "simulate.json").read_text())["schemes"][0]
    assert {t["gguf_name"] for t in sim["tensors"]} >= {"blk.1.ffn_down.weight", "blk.0.attn_q.weight"}


@pytest.mark.parametrize("claim", [10 ** 6, 2 ** 32 - 1])
def test_a_gguf_claiming_four_billion_blocks_is_checked_against_the_tensors(tmp_path, capsys, claim):
    # gemma3.block_count = claim (a uint32); the tensors hold block 0
    path = write_gguf(tmp_path / "b.gguf", {"blk.0.attn_norm.weight": ("F32", np.ones(64)),
                                            "blk.0.ffn_down.weight": ("Q8_0", np.ones((64, 128))),
                                            "token_embd.weight": ("Q8_0", np.ones((16, 64)))},
                      kv={"gemma3.block_count": claim})
    for command in COMMANDS[:4]:
        code, out, err = run_cli([*_args(command, path, tmp_path), "--json", tmp_path / f"{command}.json"], capsys)
        assert code == 0, (command, err)
        assert said(f"gemma3.block_count claims {claim:,} blocks but the tensors hold block 0; counting 1 block",
                    out, err)
    analyze = json.loads((tmp_path / "analyze.json").read_text())
    assert analyze["summary"]["n_layers"] == 1
    assert analyze["tensors"][0]["name"].startswith("model.")  # GGUF names mapped back to HF ones


def test_a_block_index_far_past_the_others_builds_nothing(tmp_path, capsys):
    # one tensor of block 999,999,999: the index sizes no table; the count is what the names say
    tensors = gemma_tensors(layers=1)
    tensors["model.layers.999999999.input_layernorm.weight"] = np.ones(64)
    d = write_model(tmp_path / "m", tensors, {**GEMMA_CONFIG, "num_hidden_layers": 1}, "F32")
    code, _, err = run_cli(["simulate", d, "--json", tmp_path / "s.json"], capsys)
    assert code == 0, err
    sim = json.loads((tmp_path / "s.json").read_text())["schemes"][0]
    assert "blk.999999999.attn_norm.weight" in {t["gguf_name"] for t in sim["tensors"]}


# -- items 9-11: files the parser must refuse in one line ---------------------------------------------------

DEEP = b"[" * 100_000 + b"]" * 100_000  # nested past Python's recursion limit (json raises RecursionError)
NESTED_100 = b"[" * 100 + b"]" * 100  # parses, but deeper than any real file (later code would recurse on it)


def _model(t, name="m", config=GEMMA_CONFIG, shards=1):
    return write_model(t / name, gemma_tensors(layers=1), config, "F32", shards=shards)


def _deep_header(t):
    # the safetensors header is 100,000 nested arrays
    return raw_safetensors(t / "deep.safetensors", b'{"a":' + DEEP + b"}"), "malformed header: arrays or objects nested"


def _nested_header(t):
    # 100 levels: parses, refused as deeper than any real header
    return raw_safetensors(t / "n.safetensors", b'{"__x":' + NESTED_100 + b"}"), "nested more than 64 levels"


def _deep_index(t):
    d = _model(t, shards=2)
    (d / "model.safetensors.index.json").write_bytes(b'{"weight_map":' + DEEP + b"}")
    return d, "model.safetensors.index.json: malformed model.safetensors.index.json: arrays or objects nested"


def _deep_config(t):
    d = _model(t)
    (d / "config.json").write_bytes(b'{"architectures":["Gemma3ForCausalLM"],"x":' + DEEP + b"}")
    return d, "config.json: malformed config.json: arrays or objects nested"


def _architectures_int(t):
    # "architectures": 5 instead of a list of class names
    return _model(t, config={"architectures": 5}), "config.json: malformed config.json: 'architectures' is 5"


def _architectures_of_ints(t):
    return _model(t, config={"architectures": [5]}), "'architectures' is a JSON array, expected a list of strings"


def _model_type_list(t):
    return _model(t, config={"model_type": ["gemma3"]}), "'model_type' is a JSON array, expected a JSON string"


def _text_config_string(t):
    return _model(t, config={"text_config": "gemma"}), "'text_config' is 'gemma', expected a JSON object"


def _layers_negative(t):
    return _model(t, config={**GEMMA_CONFIG, "num_hidden_layers": -3}), \
        "'num_hidden_layers' is -3, expected a non-negative integer"


def _layers_in_text_config_float(t):
    return _model(t, config={"text_config": {"num_hidden_layers": 2.5}}), \
        "'text_config.num_hidden_layers' is 2.5, expected a non-negative integer"


def _digits_in_shape(t):
    # a 5000-digit dimension: Python refuses to convert integers of more than 4300 digits
    raw = b'{"a":{"dtype":"F32","shape":[' + b"9" * 5000 + b'],"data_offsets":[0,4]}}'
    return raw_safetensors(t / "digits.safetensors", raw, bytes(4)), "malformed header: holds a number too long to read"


def _lone_surrogate_name(t):
    # a tensor name escaping half a UTF-16 surrogate pair: not Unicode (serde_json refuses it too)
    raw = b'{"model.norm\\ud800.weight":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    return raw_safetensors(t / "sur.safetensors", raw, bytes(4)), "holds a lone surrogate"


def _non_utf8_name(t):
    # a tensor name with the byte 0xff, which no UTF-8 text holds
    raw = b'{"model.norm\xff.weight":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    return raw_safetensors(t / "bytes.safetensors", raw, bytes(4)), \
        "malformed header: not valid JSON (not UTF-8 at byte 12 of the header"


def _non_utf8_gguf_name(t):
    # a GGUF tensor name with the byte 0xff
    path = raw_gguf(t / "name.gguf", [(b"blk.0.attn_norm\xff.weight", [32], F32, 0, bytes(128))], GEMMA_KV)
    return path, "tensor name at byte"


def _non_utf8_config(t):
    d = _model(t)
    (d / "config.json").write_bytes(b'{"model_type":"gemma3\xfe"}')
    return d, "config.json: malformed config.json: not valid JSON (not UTF-8"


def _surrogate_in_config(t):
    d = _model(t)
    (d / "config.json").write_bytes(b'{"architectures":["\\udc00Gemma3ForCausalLM"]}')
    return d, "config.json: malformed config.json: the string"


def _too_many_dimensions(t):
    # 65 dimensions of 1: numpy holds at most 64
    header = {"a": {"dtype": "F32", "shape": [1] * 65, "data_offsets": [0, 4]}}
    return raw_safetensors(t / "dims.safetensors", header, bytes(4)), "shape has 65 dimensions, more than 64"


def _gguf_architecture_int(t):
    # general.architecture stored as a uint32
    path = raw_gguf(t / "arch.gguf", [("blk.0.attn_norm.weight", [32], F32, 0, bytes(128))],
                     [("general.architecture", 4, struct.pack("<I", 7))])
    return path, "general.architecture 7 is not a string"


def _torch_surrogate_name(t):
    # a state dict key holding a lone surrogate (pickle stores it; no report can print it)
    import torch

    path = t / "sur.bin"
    torch.save({"model.norm\ud800.weight": torch.ones(4)}, path)
    return path, "holds a lone surrogate"


def _torch_deep_dict(t):
    # a tensor 300 dicts deep (as deep as torch.save's pickler goes): deeper than any state dict
    import torch

    obj: dict = {"w": torch.ones(4)}
    for _ in range(300):
        obj = {"x": obj}
    path = t / "deep.bin"
    torch.save(obj, path)
    return path, "dicts nested more than 64 levels deep"


HOSTILE = {
    "torch-surrogate-name": _torch_surrogate_name, "torch-deep-dict": _torch_deep_dict,
    "deep-header": _deep_header, "nested-header": _nested_header, "deep-index": _deep_index,
    "deep-config": _deep_config, "architectures-int": _architectures_int,
    "architectures-of-ints": _architectures_of_ints, "model-type-list": _model_type_list,
    "text-config-string": _text_config_string, "layers-negative": _layers_negative,
    "text-config-layers-float": _layers_in_text_config_float, "5000-digits": _digits_in_shape,
    "lone-surrogate-name": _lone_surrogate_name, "non-utf8-name": _non_utf8_name,
    "non-utf8-gguf-name": _non_utf8_gguf_name, "non-utf8-config": _non_utf8_config,
    "surrogate-in-config": _surrogate_in_config, "65-dimensions": _too_many_dimensions,
    "gguf-architecture-int": _gguf_architecture_int,
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_files_are_one_line_naming_the_file_in_every_command(tmp_path, capsys, case):
    path, message = HOSTILE[case](tmp_path)
    assert_refused(run_all(path, tmp_path, capsys), str(path), message)
    assert not (tmp_path / "clipped").exists()


def test_side_files_are_capped_before_they_are_read(tmp_path, capsys, monkeypatch):
    """A config.json or index larger than the cap is refused without parsing it (the cap is lowered here so
    the test does not write 100 MB; the real one is safetensors' header cap)."""
    import normscope.io.jsonfile as jsonfile

    assert jsonfile.MAX_SIDE_FILE_BYTES == 100 * 1024 * 1024
    monkeypatch.setattr(jsonfile, "MAX_SIDE_FILE_BYTES", 4096)
    d = _model(tmp_path)
    (d / "config.json").write_text(json.dumps({**GEMMA_CONFIG, "padding": "x" * 5000}))
    assert_refused(run_all(d, tmp_path, capsys), f"{d}/config.json: config.json is larger than 4096 bytes")


def test_a_safetensors_header_over_100_mb_is_refused_unread(tmp_path, capsys):
    # the length prefix claims 100 MB + 1 of header; the file is that long (sparse), the header never parsed
    path = tmp_path / "big.safetensors"
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", 100 * 1024 * 1024 + 1))
        f.truncate(8 + 100 * 1024 * 1024 + 1)
    assert_refused(run_all(path, tmp_path, capsys), str(path), "exceeds 104857600 bytes")
