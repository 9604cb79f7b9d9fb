"""Throughput of the compiled IQ4 / ternary / FP4 / Q1_0 quantizers against llama.cpp's, same rows, same run.

    python benchmarks/bench_qkernels_simple.py [--types IQ4_NL,MXFP4] [--repeat 5] [--rows 256]

Prints, per type, without and with an importance matrix, millions of weights per second of
`normscope._kernels.quantize` and of `ggml_quantize_chunk` (llama-cpp-python's libggml-base, called
through ctypes into a preallocated buffer), both on one thread, the ratio ours / ggml, and whether the
bytes are identical. Rows: real Gemma 3 270M weights dequantized from the published GGUF (the test cache);
the importance matrix: positive lognormal weights, one per column (types that ignore it run the same
code either way; ggml's quantize_q1_0 takes its row-by-row loop then).
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

TYPES = "IQ4_NL,IQ4_XS,TQ1_0,TQ2_0,MXFP4,NVFP4,Q1_0"


def gemma_rows(rows: int) -> np.ndarray:
    """(n, 1024) float32: rows of several Gemma tensors, as the kernel tests take them."""
    import real_models

    from normscope.io import GGUFCheckpoint

    ckpt = GGUFCheckpoint.open_file(real_models.gemma_gguf())
    parts = []
    for name in ("blk.5.ffn_down.weight", "blk.16.attn_output.weight", "blk.0.attn_q.weight"):
        e = ckpt.entries[name]
        x = next(ckpt.iter_rows(e, max_elements=rows * e.row_len))[1]
        parts.append(np.ascontiguousarray(x, np.float32).reshape(-1, 1024))
    ckpt.close()
    return np.concatenate(parts)


def best_of(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--types", default=TYPES)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rows", type=int, default=256, help="rows taken from each tensor")
    args = parser.parse_args()

    import gguf
    from ggml_ref import _lib

    from normscope import _kernels

    table = {row[0]: row for row in _kernels.qtypes()}
    x = gemma_rows(args.rows)
    nrows, n = x.shape
    imatrix = np.random.default_rng(0).lognormal(0.0, 1.5, n).astype(np.float32)
    lib = _lib()
    print(f"{x.size:,} weights ({nrows} Gemma rows of {n}); best of {args.repeat}; one thread each")
    print(f"{'type':7} {'imatrix':7} {'ours Mw/s':>10} {'ggml Mw/s':>10} {'ratio':>6}  identical")
    for name in args.types.split(","):
        _, _, block, size, policy, _, _ = table[name]
        qtype = int(gguf.GGMLQuantizationType[name])
        lib.ggml_quantize_init(qtype)
        for qw in (None, imatrix):
            mine = np.zeros((nrows, n // block * size), np.uint8)
            ref = np.zeros_like(mine)
            qw_ptr = None if qw is None else qw.ctypes.data
            t_ours = best_of(lambda: _kernels.quantize(name, x, mine, n, qw), args.repeat)
            t_ref = best_of(lambda: lib.ggml_quantize_chunk(qtype, x.ctypes.data, ref.ctypes.data, 0, nrows, n,
                                                            qw_ptr), args.repeat)
            label = "no" if qw is None else ("yes" if policy else "(unused)")
            print(f"{name:7} {label:7} {x.size / t_ours / 1e6:10.1f} {x.size / t_ref / 1e6:10.1f} "
                  f"{t_ref / t_ours:6.2f}  {np.array_equal(mine, ref)}")


if __name__ == "__main__":
    main()
