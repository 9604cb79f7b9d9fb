"""Lattice quantizer throughput: normscope's C kernels (IQ2_XXS, IQ2_XS, IQ2_S, IQ1_S, IQ1_M) against
llama.cpp's ggml_quantize_chunk, same rows, same run.

    python benchmarks/bench_qkernels_iq2.py [--types IQ2_XXS,IQ1_S] [--repeat 5] [--rows N] [--no-imatrix]

Prints, per type, millions of weights per CPU second of the calling thread for both (ggml_quantize_chunk
and _kernels.quantize both run on it: one thread each; CPU time rather than wall time, as the machine may
be shared), the ratio normscope / ggml, and whether the bytes are identical. Rows: real Gemma 3 270M weights dequantized from the published GGUF (the examples extra).
Importance matrix: one per tensor, positive, heavy-tailed (seeded lognormal, as the kernel tests draw
them); --no-imatrix drops it for the types that allow that (IQ2_S, IQ1_M). Grid set-up (init_type,
ggml_quantize_init) happens before the timing.
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

TYPES = "IQ2_XXS,IQ2_XS,IQ2_S,IQ1_S,IQ1_M"
NEEDS_IMATRIX = {"IQ2_XXS", "IQ2_XS", "IQ1_S"}


def tensors(rows: int) -> dict[str, np.ndarray]:
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
    return rng.lognormal(0.0, 1.5, n).astype(np.float32)


def cpu_seconds(fn) -> float:
    start = time.thread_time()
    fn()
    return time.thread_time() - start


def best_of_both(ours, ref, repeat: int) -> tuple[float, float]:
    """The least CPU time of the calling thread for each, their runs alternating (in the order ours, ref,
    ref, ours, ...) so that a change of machine load hits both."""
    t_ours = t_ref = float("inf")
    for r in range(repeat):
        for fn in ((ours, ref) if r % 2 == 0 else (ref, ours)):
            t = cpu_seconds(fn)
            if fn is ours:
                t_ours = min(t_ours, t)
            else:
                t_ref = min(t_ref, t)
    return t_ours, t_ref


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--types", default=TYPES)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rows", type=int, default=128, help="rows per tensor")
    parser.add_argument("--no-imatrix", action="store_true")
    args = parser.parse_args()

    from ggml_ref import ggml_quantize

    from normscope import _kernels
    from normscope.upstream import load_grid

    table = {row[0]: row for row in _kernels.qtypes()}
    data = tensors(args.rows)
    weights = {name: importance(x.shape[1], i) for i, (name, x) in enumerate(data.items())}
    n = sum(x.size for x in data.values())
    print(f"{n:,} weights from {', '.join(data)}; least CPU time of {args.repeat} alternating runs; one thread each")
    print(f"{'type':8} {'imatrix':>7} {'normscope Mw/s':>15} {'ggml Mw/s':>10} {'ratio':>6}  identical")
    for fmt in args.types.split(","):
        _, _, block, size, *_ = table[fmt]
        load_grid(fmt)
        use_w = not args.no_imatrix or fmt in NEEDS_IMATRIX
        outs = {name: np.zeros((x.shape[0], x.shape[1] // block * size), np.uint8) for name, x in data.items()}

        def ours():
            for name, x in data.items():
                _kernels.quantize(fmt, x, outs[name], x.shape[1], weights[name] if use_w else None)

        def ref():
            return {name: ggml_quantize(x, fmt, weights[name] if use_w else None) for name, x in data.items()}

        expected = ref()  # also runs ggml_quantize_init before the timing
        ours()
        same = all(np.array_equal(outs[name], expected[name]) for name in data)
        t_ours, t_ref = best_of_both(ours, ref, args.repeat)
        print(f"{fmt:8} {'yes' if use_w else 'no':>7} {n / t_ours / 1e6:15.2f} {n / t_ref / 1e6:10.2f} "
              f"{t_ref / t_ours:6.2f}  {same}")


if __name__ == "__main__":
    main()
