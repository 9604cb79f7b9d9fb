"""docs/quantization.md's table of every ggml type stays true: its block sizes, bytes, bits per weight and
importance-matrix column are normscope's tables, and its SQNR figures are what normscope measures on two real
tensors (recomputed here, compared as printed).

Regenerate the table: `python tests/quant/test_doc_types.py` prints it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import real_models  # noqa: E402
from normscope.quant import FORMATS, LAYOUTS, GGMLFormat, dequantize_blocks, fake_quantize, type_imatrix  # noqa: E402

DOC = Path(__file__).resolve().parents[2] / "docs" / "quantization.md"
HEADER = "| type | block | bytes | bpw | importance matrix | SQNR dB, Gemma embedding | SQNR dB, MiniLM FFN |"


def gemma_rows() -> np.ndarray:
    """4096 rows of the real Gemma 3 270M token embedding (stored Q8_0 in the published GGUF, the finest Gemma
    tensor there is), 2.6 M values in rows of 2048."""
    from normscope.io import GGUFCheckpoint

    ckpt = GGUFCheckpoint.open_file(real_models.gemma_gguf())
    try:
        entry = ckpt.entries["token_embd.weight"]
        raw = ckpt.read_raw_rows(entry, 8192, 4096)
        return dequantize_blocks(raw, "Q8_0", (4096, 640)).reshape(-1, 2048)
    finally:
        ckpt.close()


def minilm_rows() -> np.ndarray:
    """all-MiniLM-L6-v2's layer-3 FFN output weight, float32 as published: (384, 1536)."""
    from normscope.io import open_path

    with open_path(real_models.minilm_dir()) as ckpt:
        entry = next(e for k, e in ckpt.entries.items() if k.endswith("encoder.layer.3.output.dense.weight"))
        return ckpt.read(entry).astype(np.float32)


def sqnr(x: np.ndarray, fmt: str) -> str:
    # the three types ggml quantizes only with an imatrix: one of ones (every column weighs the same)
    weights = np.ones(x.shape[-1], np.float32) if type_imatrix(fmt) == "required" else None
    d = x.astype(np.float64) - fake_quantize(x, fmt, imatrix=weights)
    if not np.any(d):
        return "lossless (stored so)"
    return f"{10 * np.log10(np.sum(x.astype(np.float64) ** 2) / np.sum(d * d)):.2f}"


def table() -> list[str]:
    gemma, minilm = gemma_rows(), minilm_rows()
    lines = [HEADER, "|---|---|---|---|---|---|---|"]
    for name, fmt in FORMATS.items():
        if not issubclass(fmt, GGMLFormat) or name == "F32":
            continue
        layout = LAYOUTS[name]
        lines.append(f"| {name} | {layout.block_size} | {layout.type_size} | {layout.bits_per_weight:g} | "
                     f"{type_imatrix(name)} | {sqnr(gemma, name)} | {sqnr(minilm, name)} |")
    return lines


def test_doc_table_is_what_normscope_measures(gemma_gguf, minilm_dir):
    text = DOC.read_text(encoding="utf-8")
    start = text.index(HEADER)
    pasted = text[start:].split("\n\n", 1)[0].strip().splitlines()
    assert pasted == table(), "\n".join(["docs/quantization.md's table should read:", *table()])
    assert len(pasted) == 2 + 26  # every ggml type but F32
    assert all(re.match(r"\| \w+ \|", line) for line in pasted[2:])


if __name__ == "__main__":
    print("\n".join(table()))
