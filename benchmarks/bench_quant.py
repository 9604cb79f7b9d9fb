"""Quantizer throughput: normscope's compiled kernels against llama.cpp's own, same rows, same run.

    python benchmarks/bench_quant.py [--types Q4_K,IQ4_XS] [--repeat 5] [--rows 256] [--threads N]
                                     [--synthetic] [--json out.json]

Per type of the kernel table (default: all), without and, for types that take one, with an importance
matrix: millions of weights per second for `normscope._kernels.quantize` and for ggml's
`ggml_quantize_chunk` (tests/quant/ggml_ref.py, llama-cpp-python's libggml-base, the test oracle), and
their ratio, first on one thread each, then on --threads threads each (default: the cores available; the
rows cut into as many pieces, both sides calling their quantizer from a thread pool: both release the
GIL). Whether the bytes are identical is checked on every run. One-thread figures are the best of
--repeat runs of the calling thread's CPU time (ours and ggml's alternate within each repeat: CPU time is
what other processes on a shared machine disturb least); all-thread figures are the best wall times.
The imatrix is one seeded vector of log-normal weights, a few of them zero. Rows: real Gemma 3 270M
weights dequantized from the published GGUF (the examples extra), or a seeded Gaussian matrix with
--synthetic.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
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
    for name in ("blk.5.ffn_down.weight", "blk.16.attn_output.weight"):  # rows of 2048 and 1024
        e = ckpt.entries[name]
        out[name] = np.ascontiguousarray(next(ckpt.iter_rows(e, max_elements=rows * e.row_len))[1], np.float32)
    ckpt.close()
    return out


def importance(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.lognormal(0.0, 1.5, n).astype(np.float32)
    w[rng.integers(0, n, n // 50)] = 0.0
    return w


def ours(name: str, x: np.ndarray, w: np.ndarray | None, pieces: int = 1, pool=None) -> np.ndarray:
    from normscope import _kernels

    block, size = _kernels_layout(name)
    out = np.empty((x.shape[0], x.shape[1] // block * size), np.uint8)
    if pool is None:
        _kernels.quantize(name, x, out, x.shape[1], w)
        return out
    cuts = np.linspace(0, x.shape[0], pieces + 1).astype(int)
    list(pool.map(lambda i: _kernels.quantize(name, x[cuts[i]:cuts[i + 1]], out[cuts[i]:cuts[i + 1]], x.shape[1], w),
                  range(pieces)))
    return out


def ggml(name: str, x: np.ndarray, w: np.ndarray | None, pieces: int = 1, pool=None) -> np.ndarray:
    from ggml_ref import ggml_quantize

    if pool is None:
        return ggml_quantize(x, name, w)
    cuts = np.linspace(0, x.shape[0], pieces + 1).astype(int)
    return np.concatenate(list(pool.map(lambda i: ggml_quantize(x[cuts[i]:cuts[i + 1]], name, w), range(pieces))))


def _kernels_layout(name: str) -> tuple[int, int]:
    from normscope.quant import LAYOUTS

    return LAYOUTS[name].block_size, LAYOUTS[name].type_size


def best_cpu(a, b, repeat: int) -> tuple[float, float]:
    ta = tb = float("inf")
    for _ in range(repeat):
        t0 = time.thread_time()
        a()
        t1 = time.thread_time()
        b()
        t2 = time.thread_time()
        ta, tb = min(ta, t1 - t0), min(tb, t2 - t1)
    return ta, tb


def best_wall(a, b, repeat: int) -> tuple[float, float]:
    ta = tb = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        a()
        t1 = time.perf_counter()
        b()
        t2 = time.perf_counter()
        ta, tb = min(ta, t1 - t0), min(tb, t2 - t1)
    return ta, tb


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--types", default="", help="comma-separated ggml types (default: every type of the table)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--rows", type=int, default=256, help="rows of each tensor")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--synthetic", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from normscope import _kernels
    from normscope.upstream import load_grid

    table = {row[0]: row for row in _kernels.qtypes()}
    names = [t for t in args.types.split(",") if t] or [n for n in table if n not in ("F16", "BF16")]
    data = tensors(args.synthetic, args.rows)
    n = sum(x.size for x in data.values())
    print(f"{n:,} weights from {', '.join(data)}; one thread: best of {args.repeat} CPU times; "
          f"{args.threads} threads: best of {args.repeat} wall times")
    print(f"{'type':8} {'imatrix':8} {'1 thread: ours':>15} {'ggml':>7} {'ratio':>6}   "
          f"{args.threads} threads: ours {'ggml':>7} {'ratio':>6}  identical")
    rows = []
    pool = ThreadPoolExecutor(args.threads)
    for name in names:
        load_grid(name)
        policy = table[name][4]  # 0 ignored, 1 used, 2 required
        for with_w in ([False] if policy == 0 else [True] if policy == 2 else [False, True]):
            ws = {k: importance(x.shape[1]) if with_w else None for k, x in data.items()}
            same = all(np.array_equal(ours(name, x, ws[k]), ggml(name, x, ws[k])) for k, x in data.items())
            a1, b1 = best_cpu(lambda: [ours(name, x, ws[k]) for k, x in data.items()],
                              lambda: [ggml(name, x, ws[k]) for k, x in data.items()], args.repeat)
            an, bn = best_wall(lambda: [ours(name, x, ws[k], args.threads, pool) for k, x in data.items()],
                               lambda: [ggml(name, x, ws[k], args.threads, pool) for k, x in data.items()],
                               args.repeat)
            row = {"type": name, "imatrix": with_w, "ours_1": n / a1 / 1e6, "ggml_1": n / b1 / 1e6,
                   "ratio_1": b1 / a1, "ours_n": n / an / 1e6, "ggml_n": n / bn / 1e6, "ratio_n": bn / an,
                   "threads": args.threads, "identical": same}
            rows.append(row)
            print(f"{name:8} {'yes' if with_w else 'no':8} {row['ours_1']:15.1f} {row['ggml_1']:7.1f} "
                  f"{row['ratio_1']:6.2f}   {row['ours_n']:16.1f} {row['ggml_n']:7.1f} {row['ratio_n']:6.2f}  {same}")
    if args.json:
        args.json.write_text(json.dumps({"weights": n, "rows": rows}, indent=2) + "\n")
    return 0 if all(r["identical"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
