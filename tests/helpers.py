"""Factories for tiny seeded checkpoints (Gemma, Llama, BERT layouts) and raw safetensors bytes.

The safetensors writer is our own (struct + json) so that tests can also build broken files;
`write_safetensors` with defaults produces exactly what the safetensors library would.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import ml_dtypes
import numpy as np

ST_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2,
    "I64": np.int64, "I32": np.int32, "I8": np.int8, "U8": np.uint8,
}


def safetensors_bytes(tensors: dict[str, tuple[str, np.ndarray]], metadata: dict[str, str] | None = None) -> bytes:
    """The bytes of a safetensors file holding name -> (dtype name, values)."""
    header: dict = {}
    blobs, offset = [], 0
    for name, (dtype, values) in tensors.items():
        raw = np.ascontiguousarray(values.astype(ST_DTYPES[dtype])).tobytes()
        header[name] = {"dtype": dtype, "shape": list(values.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = metadata
    return header_bytes(header) + b"".join(blobs)


def header_bytes(header: dict) -> bytes:
    """8-byte little-endian length + JSON, padded with spaces to a multiple of 8 like the library."""
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def write_safetensors(path: Path, tensors: dict[str, tuple[str, np.ndarray]],
                      metadata: dict[str, str] | None = None) -> Path:
    path.write_bytes(safetensors_bytes(tensors, metadata))
    return path


def write_model(directory: Path, tensors: dict[str, np.ndarray], config: dict | None, dtype: str = "BF16",
                shards: int = 1) -> Path:
    """An HF-layout directory: config.json plus one file or `shards` files with an index."""
    directory.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (directory / "config.json").write_text(json.dumps(config))
    names = list(tensors)
    if shards == 1:
        write_safetensors(directory / "model.safetensors", {n: (dtype, tensors[n]) for n in names},
                          {"format": "pt"})
        return directory
    groups = [names[i::shards] for i in range(shards)]
    weight_map = {}
    for i, group in enumerate(groups):
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        write_safetensors(directory / fname, {n: (dtype, tensors[n]) for n in group}, {"format": "pt"})
        weight_map.update({n: fname for n in group})
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return directory


def gemma_tensors(layers: int = 2, hidden: int = 64, ffn: int = 128, vocab: int = 256, heads: int = 2,
                  head_dim: int = 32, seed: int = 0) -> dict[str, np.ndarray]:
    """Gemma 3 text names; post-FFN norm of the last block holds a 1656 at channel 5, like the real model."""
    rng = np.random.default_rng(seed)
    t: dict[str, np.ndarray] = {"model.embed_tokens.weight": rng.normal(0, 0.03, (vocab, hidden))}
    for i in range(layers):
        p = f"model.layers.{i}."
        t[p + "self_attn.q_proj.weight"] = rng.normal(0, 0.02, (heads * head_dim, hidden))
        t[p + "self_attn.k_proj.weight"] = rng.normal(0, 0.02, (head_dim, hidden))
        t[p + "self_attn.v_proj.weight"] = rng.normal(0, 0.02, (head_dim, hidden))
        t[p + "self_attn.o_proj.weight"] = rng.normal(0, 0.02, (hidden, heads * head_dim))
        t[p + "self_attn.q_norm.weight"] = rng.normal(0, 0.5, head_dim)
        t[p + "self_attn.k_norm.weight"] = rng.normal(0, 0.5, head_dim)
        t[p + "mlp.gate_proj.weight"] = rng.normal(0, 0.02, (ffn, hidden))
        t[p + "mlp.up_proj.weight"] = rng.normal(0, 0.02, (ffn, hidden))
        t[p + "mlp.down_proj.weight"] = rng.normal(0, 0.02, (hidden, ffn))
        for n in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                  "post_feedforward_layernorm"):
            t[p + n + ".weight"] = rng.normal(2.0, 1.0, hidden)
    t[f"model.layers.{layers - 1}.post_feedforward_layernorm.weight"][5] = 1656.0
    t["model.norm.weight"] = rng.normal(1.0, 0.5, hidden)
    return t


GEMMA_CONFIG = {"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "num_hidden_layers": 2,
                "tie_word_embeddings": True}


def llama_tensors(layers: int = 2, hidden: int = 64, ffn: int = 128, vocab: int = 256, seed: int = 1
                  ) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    t: dict[str, np.ndarray] = {"model.embed_tokens.weight": rng.normal(0, 0.03, (vocab, hidden)),
                                "lm_head.weight": rng.normal(0, 0.03, (vocab, hidden))}
    for i in range(layers):
        p = f"model.layers.{i}."
        for n, shape in (("self_attn.q_proj", (hidden, hidden)), ("self_attn.k_proj", (hidden // 2, hidden)),
                         ("self_attn.v_proj", (hidden // 2, hidden)), ("self_attn.o_proj", (hidden, hidden)),
                         ("mlp.gate_proj", (ffn, hidden)), ("mlp.up_proj", (ffn, hidden)),
                         ("mlp.down_proj", (hidden, ffn))):
            t[p + n + ".weight"] = rng.normal(0, 0.02, shape)
        t[p + "input_layernorm.weight"] = rng.normal(1.0, 0.1, hidden)
        t[p + "post_attention_layernorm.weight"] = rng.normal(1.0, 0.1, hidden)
    t["model.norm.weight"] = rng.normal(1.0, 0.1, hidden)
    return t


LLAMA_CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "num_hidden_layers": 2,
                "tie_word_embeddings": False}


def bert_tensors(layers: int = 2, hidden: int = 32, ffn: int = 64, vocab: int = 100, seed: int = 2
                 ) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    t: dict[str, np.ndarray] = {
        "embeddings.word_embeddings.weight": rng.normal(0, 0.05, (vocab, hidden)),
        "embeddings.position_embeddings.weight": rng.normal(0, 0.05, (64, hidden)),
        "embeddings.LayerNorm.weight": rng.normal(1.0, 0.1, hidden),
        "embeddings.LayerNorm.bias": rng.normal(0.0, 0.1, hidden),
    }
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for n, shape in (("attention.self.query", (hidden, hidden)), ("attention.self.key", (hidden, hidden)),
                         ("attention.self.value", (hidden, hidden)), ("attention.output.dense", (hidden, hidden)),
                         ("intermediate.dense", (ffn, hidden)), ("output.dense", (hidden, ffn))):
            t[p + n + ".weight"] = rng.normal(0, 0.05, shape)
            t[p + n + ".bias"] = rng.normal(0, 0.01, shape[0])
        for n in ("attention.output.LayerNorm", "output.LayerNorm"):
            t[p + n + ".weight"] = rng.normal(1.0, 0.1, hidden)
            t[p + n + ".bias"] = rng.normal(0.0, 0.1, hidden)
    return t


BERT_CONFIG = {"architectures": ["BertModel"], "model_type": "bert", "num_hidden_layers": 2}


def write_gguf(path: Path, tensors: dict[str, tuple[str, np.ndarray]], arch: str = "gemma3",
               kv: dict | None = None) -> Path:
    """A GGUF file written with gguf-py's own writer; values are quantized with gguf.quants."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    for key, value in (kv or {}).items():
        if isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        else:
            writer.add_string(key, str(value))
    for name, (qtype, values) in tensors.items():
        t = gguf.GGMLQuantizationType[qtype]
        data = values.astype(np.float32)
        if t not in (gguf.GGMLQuantizationType.F32,):
            data = gguf.quants.quantize(data, t)
        writer.add_tensor(name, data, raw_dtype=t)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def run_cli(args, capsys, monkeypatch=None, cwd=None) -> tuple[int, str, str]:
    """Run `normscope ARGS` in this process (in `cwd` when given): (exit code, stdout, stderr)."""
    import pytest

    from normscope.cli import main

    if cwd is not None:
        monkeypatch.chdir(cwd)
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def raw_safetensors(path: Path, header: bytes | dict, data: bytes = b"") -> Path:
    """A safetensors file from a header (a dict, or raw JSON bytes to say anything, valid or not) and data."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def _gguf_str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def gguf_raw_bytes(tensors: list[tuple], kv: list[tuple] = (), version: int = 3
                   ) -> tuple[bytes, list[tuple[str, int, str]]]:
    """GGUF bytes written field by field (gguf-py's writer refuses the shapes and values hostile-input
    tests need), and where each header field is: [(what, byte offset, struct format)].

    tensors: (name, ne in ggml order (fastest first), ggml type id, offset from the data start, data bytes).
    kv: (key, GGUF value type id, packed value bytes).
    """
    fields = [("version", 4, "<I"), ("tensor count", 8, "<Q"), ("metadata count", 16, "<Q")]
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kv))
    for key, vtype, payload in kv:
        fields += [(f"{key} length", len(out), "<Q"), (f"{key} type", len(out) + 8 + len(key), "<I")]
        value_at = len(out) + 8 + len(key) + 4
        fields.append((f"{key} value", value_at, {4: "<I", 5: "<i", 10: "<Q", 11: "<q"}.get(vtype, "<Q")))
        out += _gguf_str(key) + struct.pack("<I", vtype) + payload
    for name, ne, qtype, offset, _ in tensors:
        fields.append((f"{name!r} name length", len(out), "<Q"))
        out += _gguf_str(name)
        fields.append((f"{name!r} n_dims", len(out), "<I"))
        out += struct.pack("<I", len(ne))
        for i, n in enumerate(ne):
            fields.append((f"{name!r} ne[{i}]", len(out), "<Q"))
            out += struct.pack("<Q", n)
        fields += [(f"{name!r} type", len(out), "<I"), (f"{name!r} offset", len(out) + 4, "<Q")]
        out += struct.pack("<IQ", qtype, offset)
    out += bytes(-len(out) % 32)
    data = b""
    for *_, offset, blob in tensors:
        data += bytes(offset - len(data)) + blob
    return out + data, fields


def raw_gguf(path: Path, tensors: list[tuple], kv: list[tuple] = (), version: int = 3) -> Path:
    """`gguf_raw_bytes` written to `path`."""
    path.write_bytes(gguf_raw_bytes(tensors, kv, version)[0])
    return path


def gguf_string_value(s: str) -> bytes:
    """A GGUF metadata string value (type id 8): its u64 length and bytes."""
    return _gguf_str(s)


def unmapped_model(directory: Path) -> Path:
    """A checkpoint whose names llama.cpp's converter has no mapping for (an unknown architecture): attention and
    MLP weights recognised by name, so the simulated schemes quantize them, but no GGUF names."""
    rng = np.random.default_rng(0)
    tensors = {name: rng.standard_normal((64, 64)).astype(np.float32)
               for name in ("encoder.blocks.0.attn.q_proj.weight", "encoder.blocks.0.mlp.fc1.weight")}
    tensors["encoder.blocks.0.norm1.weight"] = np.ones(64, np.float32)
    return write_model(directory, tensors, {"architectures": ["OddForCausalLM"], "model_type": "odd"}, "F32")


def doc_console(doc: Path) -> list[tuple[str, str]]:
    """(command, pasted output) of each `$ normscope` line in a doc's ```console blocks."""
    import re

    out = []
    for block in re.findall(r"```console\n(.+?)```", doc.read_text(encoding="utf-8"), re.S):
        for cmd, pasted in re.findall(r"^\$ (normscope .*)\n((?:(?!\$ ).*\n)*)", block, re.M):
            out.append((cmd, pasted))
    return out


def shell_split(line: str) -> list[str]:
    """The arguments a shell passes (program name included): quotes removed, `$(cat FILE)` replaced by the
    words of FILE (relative to the current directory)."""
    import re
    import shlex

    out = []
    for i, part in enumerate(re.split(r"\$\(cat (\S+)\)", line)):
        # a substitution's output is split into words, with no quote or backslash processing
        out += Path(part).read_text().split() if i % 2 else shlex.split(part)
    return out
