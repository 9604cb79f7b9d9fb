"""Shared fixtures of the quantizer tests: real Gemma rows (the published GGUF, dequantized)."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from normscope.io import GGUFCheckpoint  # noqa: E402


@pytest.fixture(scope="module")
def gemma_rows(gemma_gguf):
    """Real Gemma 3 270M tensors (dequantized from the published GGUF), several kinds, 1024-wide rows."""
    ckpt = GGUFCheckpoint.open_file(gemma_gguf)
    out = {}
    for name in ("blk.0.attn_q.weight", "blk.5.ffn_down.weight", "blk.16.attn_output.weight", "token_embd.weight",
                 "blk.3.attn_v.weight"):
        e = ckpt.entries[name]
        rows = next(ckpt.iter_rows(e, max_elements=64 * e.row_len))[1]
        out[name] = rows.reshape(-1, 1024) if rows.size % 1024 == 0 else rows[:, :512].reshape(-1, 1024)
    norms = np.concatenate([ckpt.read(ckpt.entries[f"blk.{i}.post_ffw_norm.weight"]) for i in range(16)])
    out["post_ffw_norms"] = norms.reshape(-1, 1024)  # gains up to 1657
    ckpt.close()
    return out


@pytest.fixture(scope="module")
def minilm_rows(minilm_dir):
    """Real all-MiniLM-L6-v2 tensors (a BERT: rows of 384 and 1536, LayerNorm weights near 1), in 1024-wide rows."""
    from normscope.io import open_path

    out = {}
    with open_path(minilm_dir) as ckpt:
        for name in ("encoder.layer.0.attention.self.query.weight", "encoder.layer.3.intermediate.dense.weight",
                     "embeddings.word_embeddings.weight"):
            e = next(v for k, v in ckpt.entries.items() if k.endswith(name))
            values = ckpt.read(e).reshape(-1)
            out["minilm " + name] = values[:values.size // 1024 * 1024][:64 * 1024].reshape(-1, 1024)
        norms = np.concatenate([ckpt.read(v).reshape(-1) for k, v in ckpt.entries.items() if "LayerNorm.weight" in k])
        out["minilm LayerNorm weights"] = norms[:norms.size // 1024 * 1024].reshape(-1, 1024)
    return out
