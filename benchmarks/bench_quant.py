"""Quantizer throughput: normscope's numpy kernels against llama.cpp's C reference, same tensors, same run.

    python benchmarks/bench_quant.py [--types Q4_K,Q6_K] [--repeat 3] [--rows N]

Prints, per type, millions of weights per second for both and the ratio normscope / ggml (one thread
each: ggml_quantize_chunk runs on the calling thread). Tensors: real Gemma 3 270M weights dequantized
from the published GGUF (the examples extra), or a seeded Gaussian matrix with --synthetic.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "quant"))
sys.path.insert(0, str(ROOT / "tests"))


def tensors(synthetic: bool, rows: int) -> dict[str, np.ndarray]:
    if synthetic:
        return {"gaussian": np.random.default_rng(0).normal(0, 0.02, (rows, 2048)).astype(np.float32)}
    import real_models

    from normscope.io import GGUFCheckpoint

    ckpt = GGUFCheckpoint.open_file(real_models.gemma_gguf())
    out = {}
    for name in ("blk.5.ffn_down.weight", "blk.16.attn_output.weight"):
        e = ckpt.entries[name]
        out[name] = next(ckpt.iter_rows(e, max_elements=rows * e.row_len))[1]
    return out


def best_of(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--types", default="Q4_K")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rows", type=int, default=640)
    parser.add_argument("--synthetic", action="store_true")
    args = parser.parse_args()

    from ggml_ref import ggml_quantize

    from normscope.quant import quantize_blocks

    data = tensors(args.synthetic, args.rows)
    n = sum(x.size for x in data.values())
    print(f"{n:,} weights from {', '.join(data)}; best of {args.repeat}")
    print(f"{'type':6} {'normscope Mw/s':>15} {'ggml Mw/s':>10} {'ratio':>6}  identical")
    for fmt in args.types.split(","):
        ours = best_of(lambda: [quantize_blocks(x, fmt) for x in data.values()], args.repeat)
        ref = best_of(lambda: [ggml_quantize(x, fmt) for x in data.values()], args.repeat)
        same = all(np.array_equal(quantize_blocks(x, fmt), ggml_quantize(x, fmt)) for x in data.values())
        print(f"{fmt:6} {n / ours / 1e6:15.1f} {n / ref / 1e6:10.1f} {ref / ours:6.2f}  {same}")


if __name__ == "__main__":
    main()
