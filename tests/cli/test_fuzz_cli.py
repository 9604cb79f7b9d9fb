"""Fuzzing every command with mutated checkpoints (issue 23): real safetensors shards, index, config.json and GGUF
headers (written by the same code paths as real files, checked by the safetensors library and gguf-py) get
their lengths, offsets, dtypes, shapes, counts and nesting mutated, and analyze, check, simulate, compare and
clip run on the result in this process. Whatever the bytes: exit 0, 1 or 2, at most one line on stderr when
it fails, never a traceback or "internal error", and clip leaves nothing behind when it fails.

Under NORMSCOPE_NO_SKIP=1 (CI) hypothesis draws the same examples every run (tests/conftest.py) within the
fixed budgets below (4-35 s in all on two cores, as loaded as they are); local runs explore new ones."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from helpers import GEMMA_CONFIG, gemma_tensors, gguf_raw_bytes, gguf_string_value, write_model
from normscope.cli import main

COMMANDS = ("analyze", "check", "simulate", "compare", "clip")
SHARD = "model-00001-of-00002.safetensors"
INDEX = "model.safetensors.index.json"
# examples per test: 60 in CI (1-10 s each); NORMSCOPE_FUZZ_EXAMPLES=2000 for a long local hunt
FUZZ = settings(max_examples=int(os.environ.get("NORMSCOPE_FUZZ_EXAMPLES", "60")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

# values chosen to break arithmetic: zero, one, sign and width limits, past any file
EDGE_INTS = st.sampled_from([0, 1, 2, 3, 7, 31, 32, 255, 256, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32,
                             2 ** 53 + 1, 2 ** 62, 2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1, -1, -(2 ** 63)])
JSON_LEAVES = (st.none() | st.booleans() | EDGE_INTS | st.integers() | st.floats(allow_nan=True)
               | st.text(max_size=8) | st.sampled_from(["F32", "BF16", "Q4_K", "model.safetensors", "../config.json",
                                                        SHARD, "gemma3", "Gemma3ForCausalLM", "gptq", "fp8", "awq"]))
JSON = st.recursive(JSON_LEAVES, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12)


class Nested:
    """`value` inside `depth` arrays; written out by `dumps` (json.dumps itself recurses, and fails, at ~1000)."""

    def __init__(self, value, depth: int):
        self.value, self.depth = value, depth


def nest(value, depth: int) -> Nested:
    return Nested(value, depth)


def dumps(doc) -> str:
    """json.dumps of `doc`, with any `Nested` value written as its arrays."""
    found: list[Nested] = []

    def default(o):
        if isinstance(o, Nested):
            found.append(o)
            return f"@@nested{len(found) - 1}@@"
        raise TypeError(type(o))

    text = json.dumps(doc, default=default)
    for i, n in enumerate(found):
        text = text.replace(f'"@@nested{i}@@"', "[" * n.depth + json.dumps(n.value) + "]" * n.depth)
    return text


NESTING = st.sampled_from([1, 2, 63, 64, 65, 200, 5000])


def run(args) -> tuple[int, str, str]:
    """`normscope ARGS` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


def check_command(command: str, path: Path, base: Path, work: Path) -> None:
    """Run one command on the mutated `path` and hold it to the rules above."""
    out_dir = work / "clipped"
    args = {"compare": ["compare", base, path], "clip": ["clip", path, "--out", out_dir]}.get(command,
                                                                                               [command, path])
    code, _, err = run(args)
    assert code in (0, 1, 2), (command, code, err)
    assert "Traceback" not in err and "internal error" not in err, (command, err)
    if code == 2:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("normscope: error: "), (command, err)
        if command == "clip":
            assert not out_dir.exists(), "clip failed but left an output"


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict[str, Path]:
    """A pristine two-shard Gemma 3 directory and a GGUF, small enough for a command to take well under a second."""
    from safetensors.numpy import load_file

    root = tmp_path_factory.mktemp("originals")
    hf = write_model(root / "hf", gemma_tensors(layers=2, hidden=32, ffn=64, vocab=64, heads=1, head_dim=32),
                     GEMMA_CONFIG, "BF16", shards=2)
    for f in hf.glob("*.safetensors"):
        load_file(str(f))  # the safetensors library reads what the fuzzer starts from
    gguf_path = root / "m.gguf"
    gguf_path.write_bytes(GGUF[0])
    import gguf

    assert len(gguf.GGUFReader(str(gguf_path)).tensors) == len(GGUF_TENSORS)
    return {"hf": hf, "gguf": gguf_path}


rng = np.random.default_rng(0)
_Q8 = np.zeros(2 * 34, np.uint8).tobytes()  # two Q8_0 blocks (zero scale): 64 values
GGUF_TENSORS = [("token_embd.weight", [32, 4], 0, 0, rng.normal(0, 1, 128).astype(np.float32).tobytes()),
                ("blk.0.attn_norm.weight", [32], 0, 512, np.ones(32, np.float32).tobytes()),
                ("blk.0.ffn_down.weight", [32, 2], 8, 640, _Q8),
                ("output_norm.weight", [32], 0, 736, np.full(32, 2.0, np.float32).tobytes())]
GGUF = gguf_raw_bytes(GGUF_TENSORS, [("general.architecture", 8, gguf_string_value("gemma3")),
                                     ("gemma3.block_count", 4, struct.pack("<I", 1)),
                                     ("general.alignment", 4, struct.pack("<I", 32))])


def _copy(originals: dict[str, Path], tmp_path_factory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("fz")
    shutil.copytree(originals["hf"], work / "hf")
    return work, work / "hf"


def _st_parts(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


# -- safetensors shard headers ------------------------------------------------------------------------------

ST_MUTATIONS = st.one_of(
    st.tuples(st.just("length"), EDGE_INTS.filter(lambda v: 0 <= v < 2 ** 64)),
    st.tuples(st.just("field"), st.sampled_from(["dtype", "shape", "data_offsets"]), JSON),
    st.tuples(st.just("shape"), st.lists(EDGE_INTS, max_size=5)),
    st.tuples(st.just("offsets"), st.lists(EDGE_INTS, min_size=2, max_size=2)),
    st.tuples(st.just("dtype"), st.sampled_from(["F64", "F16", "BF16", "F8_E4M3", "I8", "U8", "BOOL", "I64", "Q4",
                                                 "", "f32"])),
    st.tuples(st.just("nest"), NESTING),
    st.tuples(st.just("metadata"), JSON),
    st.tuples(st.just("drop"), st.booleans()),
    st.tuples(st.just("bytes"), st.integers(0, 10 ** 6), st.binary(min_size=1, max_size=6)),
)


def mutate_safetensors(path: Path, mutation: tuple, pick: int) -> None:
    header, data = _st_parts(path)
    names = [k for k in header if k != "__metadata__"]
    name = names[pick % len(names)]
    kind = mutation[0]
    raw_len = None
    if kind == "length":
        raw_len = mutation[1]
    elif kind == "field":
        header[name][mutation[1]] = mutation[2]
    elif kind == "shape":
        header[name]["shape"] = mutation[1]
    elif kind == "offsets":
        header[name]["data_offsets"] = mutation[1]
    elif kind == "dtype":
        header[name]["dtype"] = mutation[1]
    elif kind == "nest":
        header[name] = nest(header[name], mutation[1])
    elif kind == "metadata":
        header["__metadata__"] = mutation[1]
    elif kind == "drop":
        del header[name]
        if mutation[1]:  # and give its name to another tensor: a duplicate across shards
            header[name] = header.pop(names[(pick + 1) % len(names)]) if len(names) > 1 else {}
    raw = dumps(header).encode()
    if kind == "bytes":
        pos = mutation[1] % len(raw)
        raw = raw[:pos] + mutation[2] + raw[pos + len(mutation[2]):]
    path.write_bytes(struct.pack("<Q", len(raw) if raw_len is None else raw_len) + raw + data)


@FUZZ
@example(mutation=("shape", [2 ** 62, 0]), pick=0, command="analyze")
@example(mutation=("nest", 5000), pick=1, command="check")
@given(mutation=ST_MUTATIONS, pick=st.integers(0, 50), command=st.sampled_from(COMMANDS))
def test_fuzz_safetensors_headers(originals, tmp_path_factory, mutation, pick, command):
    work, d = _copy(originals, tmp_path_factory)
    mutate_safetensors(d / SHARD, mutation, pick)
    check_command(command, d, originals["hf"], work)


# -- index and config.json ----------------------------------------------------------------------------------

INDEX_MUTATIONS = st.one_of(
    st.tuples(st.just("weight_map"), JSON),
    st.tuples(st.just("entry"), JSON),
    st.tuples(st.just("shard"), st.sampled_from(["", ".", "..", "../hf/" + SHARD, "/etc/passwd", "config.json",
                                                 SHARD + "\x00", "missing.safetensors", "x" * 300])),
    st.tuples(st.just("nest"), NESTING),
    st.tuples(st.just("document"), JSON),
    st.tuples(st.just("bytes"), st.integers(0, 10 ** 6), st.binary(min_size=1, max_size=6)),
)


def _mutate_json(doc, mutation: tuple, pick: int, key: str | None):
    """The JSON text of `doc` with `mutation` applied at `key` (a config field, or the index's weight_map)."""
    kind = mutation[0]
    if kind == "document":
        doc = mutation[1]
    elif kind == "nest":
        if key is not None and isinstance(doc, dict):
            doc[key] = nest(doc.get(key), mutation[1])
        else:
            doc = nest(doc, mutation[1])
    elif kind in ("weight_map", "value"):
        doc[key] = mutation[-1]
    text = dumps(doc)
    if kind == "bytes":
        raw = text.encode()
        pos = mutation[1] % len(raw)
        return raw[:pos] + mutation[2] + raw[pos + len(mutation[2]):]
    return text.encode()


@FUZZ
@example(mutation=("weight_map", {}), pick=0, command="check")
@given(mutation=INDEX_MUTATIONS, pick=st.integers(0, 50), command=st.sampled_from(COMMANDS))
def test_fuzz_index(originals, tmp_path_factory, mutation, pick, command):
    work, d = _copy(originals, tmp_path_factory)
    doc = json.loads((d / INDEX).read_text())
    wm = doc["weight_map"]
    name = sorted(wm)[pick % len(wm)]
    if mutation[0] == "entry":
        wm[name] = mutation[1]
    elif mutation[0] == "shard":
        wm[name] = mutation[1]
    (d / INDEX).write_bytes(_mutate_json(doc, mutation, pick, "weight_map"))
    check_command(command, d, originals["hf"], work)


CONFIG_KEYS = st.sampled_from(["architectures", "model_type", "num_hidden_layers", "tie_word_embeddings",
                               "text_config", "quantization_config", "num_attention_heads", "num_key_value_heads",
                               "num_local_experts"])
QUANT_CONFIGS = st.fixed_dictionaries(
    {"quant_method": st.sampled_from(["gptq", "awq", "fp8", "compressed-tensors", "quanto", "bitsandbytes", 5])},
    optional={"bits": JSON, "group_size": JSON, "weight_block_size": JSON, "config_groups": JSON, "format": JSON,
              "ignore": JSON, "desc_act": JSON, "sym": JSON})
CONFIG_MUTATIONS = st.one_of(
    st.tuples(st.just("value"), CONFIG_KEYS, JSON),
    st.tuples(st.just("value"), st.just("num_hidden_layers"), EDGE_INTS),
    st.tuples(st.just("value"), st.just("quantization_config"), QUANT_CONFIGS),
    st.tuples(st.just("nest"), NESTING),
    st.tuples(st.just("document"), JSON),
    st.tuples(st.just("bytes"), st.integers(0, 10 ** 6), st.binary(min_size=1, max_size=6)),
)


@FUZZ
@example(mutation=("value", "architectures", 5), pick=0, command="simulate")
@example(mutation=("value", "num_hidden_layers", 2 ** 63 - 1), pick=0, command="simulate")
@given(mutation=CONFIG_MUTATIONS, pick=st.integers(0, 50), command=st.sampled_from(COMMANDS))
def test_fuzz_config(originals, tmp_path_factory, mutation, pick, command):
    work, d = _copy(originals, tmp_path_factory)
    doc = json.loads((d / "config.json").read_text())
    key = mutation[1] if mutation[0] == "value" else None
    (d / "config.json").write_bytes(_mutate_json(doc, mutation, pick, key))
    check_command(command, d, originals["hf"], work)


# -- GGUF headers --------------------------------------------------------------------------------------------

GGUF_MUTATIONS = st.one_of(
    st.tuples(st.just("field"), st.integers(0, 10 ** 6), EDGE_INTS),
    st.tuples(st.just("field"), st.integers(0, 10 ** 6), st.integers(0, 40)),
    st.tuples(st.just("bytes"), st.integers(0, 10 ** 6), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("cut"), st.integers(0, 10 ** 6)),
)


@FUZZ
@example(mutation=("field", 1, 0), pick=0, command="analyze")  # tensor count 0
@given(mutation=GGUF_MUTATIONS, pick=st.integers(0, 50), command=st.sampled_from(COMMANDS[:4]))
def test_fuzz_gguf_headers(originals, tmp_path_factory, mutation, pick, command):
    work = tmp_path_factory.mktemp("fz")
    data, fields = bytearray(GGUF[0]), GGUF[1]
    kind = mutation[0]
    if kind == "field":  # a count, length, n_dims, ne, type or offset gets an edge value
        _, pos, fmt = fields[mutation[1] % len(fields)]
        size = struct.calcsize(fmt)
        data[pos:pos + size] = (mutation[2] % (1 << (8 * size))).to_bytes(size, "little")
    elif kind == "bytes":
        header_end = max(pos + struct.calcsize(fmt) for _, pos, fmt in fields)
        pos = mutation[1] % header_end
        data[pos:pos + len(mutation[2])] = mutation[2]
    else:
        del data[mutation[1] % len(data):]
    path = work / "m.gguf"
    path.write_bytes(bytes(data))
    check_command(command, path, originals["gguf"], work)
