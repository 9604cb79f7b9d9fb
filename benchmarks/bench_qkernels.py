"""The compiled quantizers (normscope._kernels) against llama.cpp's own, same rows, same run.

    python benchmarks/bench_qkernels.py [--types Q4_K,Q6_K] [--repeat 5] [--rows 256] [--synthetic]

Per type, without and with an importance matrix (for types that take one), millions of weights per
second for `_kernels.quantize` and for ggml's `ggml_quantize_chunk` (tests/quant/ggml_ref.py, llama-cpp-
python's libggml-base), one thread each, and their ratio; whether the bytes are identical; and the same
for dequantizing those bytes: `_kernels.dequantize` against gguf-py's numpy `gguf.quants.dequantize`.
Each figure is the best of --repeat runs of the calling thread's CPU time (time.thread_time: both
quantizers run on the calling thread, and CPU time is what other processes on a shared machine disturb
least); ours and ggml's alternate within each repeat. The imatrix is one seeded vector of
log-normal weights per tensor, a few of them zero (what tests/quant/test_qkernels.py uses).
Rows: real Gemma 3 270M weights dequantized from the published GGUF (the examples extra), or a seeded
Gaussian matrix with --synthetic.
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
        out[name] = np.ascontiguousarray(next(ckpt.iter_rows(e, max_elements=rows * e.row_len))[1], np.float32)
    ckpt.close()
    return out


def importance(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.lognormal(0.0, 1.5, n).astype(np.float32)
    w[rng.integers(0, n, n // 50)] = 0.0
    return w


def best_pair(ours, theirs, repeat: int) -> tuple[float, float]:
    """Best thread CPU time of each, the two alternating."""
    a = b = float("inf")
    for _ in range(repeat):
        t0 = time.thread_time()
        ours()
        t1 = time.thread_time()
        theirs()
        t2 = time.thread_time()
        a, b = min(a, t1 - t0), min(b, t2 - t1)
    return a, b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--types", default="", help="comma-separated; default: every type of the kernel table")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rows", type=int, default=256, help="rows per tensor")
    parser.add_argument("--synthetic", action="store_true")
    args = parser.parse_args()

    import gguf
    from ggml_ref import ggml_quantize

    from normscope import _kernels
    from normscope.upstream import load_grid

    table = {row[0]: row for row in _kernels.qtypes()}
    names = [t for t in args.types.split(",") if t] or list(table)
    data = tensors(args.synthetic, args.rows)
    weights = {k: importance(x.shape[1], i) for i, (k, x) in enumerate(data.items())}
    n = sum(x.size for x in data.values())
    print(f"{n:,} weights from {', '.join(f'{k} {x.shape}' for k, x in data.items())}; best of {args.repeat}, "
          f"thread CPU time, one thread each")
    print(f"{'type':8} {'imatrix':7} {'ours Mw/s':>10} {'ggml Mw/s':>10} {'ratio':>6} {'same':>5} | "
          f"{'deq ours':>9} {'gguf-py':>8} {'ratio':>6} {'same':>5}")
    for name in names:
        _, _, block, size, policy, _, _ = table[name]
        load_grid(name)
        qtype = gguf.GGMLQuantizationType[name]
        variants = ([False] if policy == 0 else [True] if policy == 2 else [False, True])
        for weighted in variants:
            def quantize_ours(keep=None):
                for k, x in data.items():
                    out = np.empty((x.shape[0], x.shape[1] // block * size), np.uint8)
                    _kernels.quantize(name, x, out, x.shape[1], weights[k] if weighted else None)
                    if keep is not None:
                        keep[k] = out

            def quantize_ggml(keep=None):
                for k, x in data.items():
                    out = ggml_quantize(x, name, weights[k] if weighted else None)
                    if keep is not None:
                        keep[k] = out

            a, b = best_pair(quantize_ours, quantize_ggml, args.repeat)
            ours_raw, ggml_raw = {}, {}
            quantize_ours(ours_raw)
            quantize_ggml(ggml_raw)
            same = all(np.array_equal(ours_raw[k], ggml_raw[k]) for k in data)

            def dequantize_ours(keep=None):
                for k, x in data.items():
                    y = np.empty(x.shape, np.float32)
                    _kernels.dequantize(name, ggml_raw[k], y, x.shape[1])
                    if keep is not None:
                        keep[k] = y

            def dequantize_gguf(keep=None):
                for k, x in data.items():
                    y = gguf.quants.dequantize(ggml_raw[k], qtype).reshape(x.shape)
                    if keep is not None:
                        keep[k] = y

            c, d = best_pair(dequantize_ours, dequantize_gguf, args.repeat)
            ours_y, gguf_y = {}, {}
            dequantize_ours(ours_y)
            dequantize_gguf(gguf_y)
            dsame = all(np.array_equal(ours_y[k].view(np.uint32), gguf_y[k].astype(np.float32).view(np.uint32))
                        for k in data)
            print(f"{name:8} {'yes' if weighted else 'no':7} {n / a / 1e6:10.1f} {n / b / 1e6:10.1f} {b / a:6.2f} "
                  f"{str(same):>5} | {n / c / 1e6:9.1f} {n / d / 1e6:8.1f} {d / c:6.2f} {str(dsame):>5}")


if __name__ == "__main__":
    main()
