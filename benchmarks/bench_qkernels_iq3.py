"""IQ3_XXS and IQ3_S throughput: normscope's C kernels against llama.cpp's ggml_quantize_chunk, same run.

    python benchmarks/bench_qkernels_iq3.py [--rows N] [--repeat 3] [--synthetic]

Prints, per type, without and with an importance matrix, millions of weights per second for both and
the ratio normscope / ggml. One thread each: _kernels.quantize and ggml_quantize_chunk both run on the
calling thread, timed by that thread's CPU time (time.thread_time: on a shared machine, time the thread
waits for a core is not counted), the two alternating, best of --repeat. Tensors: real Gemma 3 270M rows dequantized from the published GGUF (the examples
extra), or a seeded Gaussian matrix with --synthetic. The importance matrix is per column: the mean of
x^2 over the tensor's rows, as llama-imatrix collects it from activations of that shape.
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

TYPES = {"IQ3_XXS": 98, "IQ3_S": 110}  # bytes per 256 values


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


def best_of(fns, repeat: int) -> list[float]:
    """Each function's smallest CPU time over `repeat` rounds, the functions alternating within a round."""
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            start = time.thread_time()
            fn()
            best[i] = min(best[i], time.thread_time() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--synthetic", action="store_true")
    args = parser.parse_args()

    from ggml_ref import ggml_quantize

    from normscope import _kernels
    from normscope.upstream import load_grid

    data = tensors(args.synthetic, args.rows)
    imatrix = {k: np.ascontiguousarray((x.astype(np.float64) ** 2).mean(axis=0), np.float32) for k, x in data.items()}
    n = sum(x.size for x in data.values())

    def ours(name: str, weighted: bool) -> list[np.ndarray]:
        outs = []
        for k, x in data.items():
            out = np.empty((x.shape[0], x.shape[1] // 256 * TYPES[name]), np.uint8)
            _kernels.quantize(name, x, out, x.shape[1], imatrix[k] if weighted else None)
            outs.append(out)
        return outs

    def ref(name: str, weighted: bool) -> list[np.ndarray]:
        return [ggml_quantize(x, name, imatrix[k] if weighted else None) for k, x in data.items()]

    print(f"{n:,} weights from {', '.join(data)}; CPU time, best of {args.repeat}; one thread each")
    print(f"{'type':8} {'imatrix':7} {'normscope Mw/s':>15} {'ggml Mw/s':>10} {'ratio':>6}  identical")
    for name in TYPES:
        load_grid(name)  # both set up their tables before timing: ours here, ggml's on its first call
        ggml_quantize(next(iter(data.values()))[:1], name)
        for weighted in (False, True):
            t_ours, t_ref = best_of([lambda: ours(name, weighted), lambda: ref(name, weighted)], args.repeat)
            same = all(np.array_equal(a, b) for a, b in zip(ours(name, weighted), ref(name, weighted)))
            print(f"{name:8} {'yes' if weighted else 'no':7} {n / t_ours / 1e6:15.2f} {n / t_ref / 1e6:10.2f} "
                  f"{t_ref / t_ours:6.2f}  {same}")


if __name__ == "__main__":
    main()
