"""`analyze` against the read floor, in the same run: throughput per storage format and scaling with --jobs.

    python benchmarks/bench_analyze.py [MODEL] [--repeat 5] [--jobs 1,2] [--values 32M] [--json out.json]
    python benchmarks/bench_analyze.py --tiny          # seconds: a tiny model (the smoke test runs this)

MODEL defaults to the HF export of the real Gemma 3 270M (tests/real_models.py, built once and cached).
The floor is reading every tensor to float32 with the same reader analyze uses (`Checkpoint.iter_chunks`),
in this process, one thread, at each of several chunk sizes: the fastest of them is the floor (analyze
itself uses the reader's default). For each --jobs N > 1 the same reading spread over N threads is
printed too, with analyze --jobs N's ratio to it. analyze is `normscope.analyze(MODEL, jobs=N)` with the default
executor (threads), and with worker processes for N > 1. Each figure is the best of --repeat runs with
the page cache warm (the first run warms it), so the floor is memory speed, not disk speed; `--cold`
also evicts the files from the page cache (posix_fadvise DONTNEED) before every run.
Formats: one synthetic Gaussian tensor set of --values values written as BF16, F16, F32 and F8_E4M3
safetensors and as Q8_0 and Q4_0 GGUF, plus the real Gemma Q4_K_M GGUF when the examples extra has it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import normscope  # noqa: E402
from normscope.io import DEFAULT_CHUNK_ELEMENTS, open_path  # noqa: E402


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
    return {"cpu": cpu, "cores_available": len(os.sched_getaffinity(0)), "ram_gib": round(mem / (1 << 30), 1),
            "python": platform.python_version(), "numpy": np.__version__, "normscope": normscope.__version__,
            "load_average": os.getloadavg()}


def evict(path: Path) -> None:
    """Drop a model's files from the page cache (clean pages only; no root needed)."""
    files = [p for p in ([path] if path.is_file() else path.iterdir()) if p.is_file()]
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


FLOOR_CHUNKS = (1 << 18, 1 << 20, 1 << 22, 1 << 24)  # values per read; the fastest gives the floor


def read_floor(path: Path, chunk: int = DEFAULT_CHUNK_ELEMENTS) -> int:
    """Read every tensor to float32 with analyze's reader; returns the number of values."""
    n = 0
    with open_path(path) as ckpt:
        for entry in ckpt.entries.values():
            for _, values in ckpt.iter_chunks(entry, chunk):
                n += values.size
    return n


def read_floor_threads(path: Path, threads: int, chunk: int = DEFAULT_CHUNK_ELEMENTS) -> None:
    """The floor's reading spread over `threads` threads (chunks dealt round-robin, each thread with its
    own reader): what the reading alone costs with as many cores as analyze's default uses."""
    with open_path(path) as ckpt:
        work = [(name, i) for name, e in ckpt.entries.items() for i in range(ckpt.n_chunks(e, chunk))]

    def read(items: list) -> None:
        with open_path(path) as ckpt:
            for name, i in items:
                for _ in ckpt.iter_chunks(ckpt.entries[name], chunk, i, i + 1):
                    pass

    pool = [threading.Thread(target=read, args=(work[k::threads],)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()


def best(fn, repeat: int, path: Path, cold: bool) -> float:
    fn()  # warm-up: imports, page cache, forkserver
    times = []
    for _ in range(repeat):
        if cold:
            evict(path)
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def floor_vs_analyze(path: Path, jobs: list[int], repeat: int, cold: bool) -> dict:
    n = read_floor(path)
    floors = {c: best(lambda c=c: read_floor(path, c), repeat, path, cold) for c in FLOOR_CHUNKS}
    floor = min(floors.values())
    parallel = {j: best(lambda j=j: read_floor_threads(path, j), repeat, path, cold) for j in jobs if j > 1}
    out = {"model": str(path), "values": n, "bytes": sum(f.stat().st_size for f in _files(path)),
           "floor_s": floor, "floor_by_chunk_s": floors, "floor_threads_s": parallel, "analyze": {}}
    runs = [(j, "thread") for j in jobs] + [(j, "process") for j in jobs if j > 1]
    for j, executor in runs:
        t = best(lambda j=j, e=executor: normscope.analyze(path, jobs=j, executor=e), repeat, path, cold)
        out["analyze"][f"{j}" if executor == "thread" else f"{j} --executor {executor}"] = {
            "seconds": t, "ratio_to_floor": t / floor}
    return out


def _files(path: Path) -> list[Path]:
    return [path] if path.is_file() else [p for p in path.iterdir() if p.is_file()]


def format_models(workdir: Path, n_values: int, real: bool = True) -> dict[str, Path]:
    """The same Gaussian weights in each storage format (a Gemma-like config, 2048-value rows)."""
    from helpers import GEMMA_CONFIG, write_gguf, write_model

    rng = np.random.default_rng(0)
    rows = max(1, n_values // 2048 // 4)
    tensors = {f"model.layers.{i}.mlp.down_proj.weight": rng.normal(0, 0.02, (rows, 2048)).astype(np.float32)
               for i in range(4)}
    config = dict(GEMMA_CONFIG, num_hidden_layers=4)
    out = {}
    for dtype in ("BF16", "F16", "F32", "F8_E4M3"):
        out[dtype] = write_model(workdir / dtype, tensors, config, dtype)
    for qtype in ("Q8_0", "Q4_0"):
        gg = {name.replace("model.layers.", "blk.").replace(".mlp.down_proj", ".ffn_down"): (qtype, v)
              for name, v in tensors.items()}
        out[qtype + " GGUF"] = write_gguf(workdir / f"{qtype}.gguf", gg, kv={"gemma3.block_count": 4})
    if real:
        try:
            import real_models

            out["Gemma Q4_K_M GGUF"] = real_models.gemma_gguf()
        except Exception:  # noqa: BLE001 - the examples extra is optional here
            pass
    return out


def per_format(models: dict[str, Path], repeat: int) -> dict:
    out = {}
    for label, path in models.items():
        r = floor_vs_analyze(path, [1], repeat, cold=False)
        n = r["values"]
        out[label] = {"values": n, "floor_mvalues_s": n / r["floor_s"] / 1e6,
                      "analyze_mvalues_s": n / r["analyze"]["1"]["seconds"] / 1e6,
                      "ratio_to_floor": r["analyze"]["1"]["ratio_to_floor"]}
    return out


def _values(text: str) -> int:
    text = text.strip().upper()
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    return int(float(text.rstrip("KMG")) * scale)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", nargs="?", type=Path)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--jobs", default="1,2")
    p.add_argument("--values", default="32M", help="values per format model (e.g. 32M)")
    p.add_argument("--cold", action="store_true", help="evict the model from the page cache before each run")
    p.add_argument("--no-formats", action="store_true")
    p.add_argument("--tiny", action="store_true", help="a tiny model and tiny format models (smoke test)")
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    jobs = [int(j) for j in a.jobs.split(",")]
    report: dict = {"machine": machine()}
    with tempfile.TemporaryDirectory(prefix="normscope-bench-") as tmp:
        work = Path(tmp)
        if a.tiny:
            from helpers import GEMMA_CONFIG, gemma_tensors, write_model

            model = write_model(work / "tiny", gemma_tensors(), GEMMA_CONFIG, "BF16", shards=2)
            n_values, repeat = 1 << 16, 1
        else:
            import real_models

            model = a.model or real_models.gemma_hf()
            n_values, repeat = _values(a.values), a.repeat
        r = floor_vs_analyze(model, jobs, repeat, a.cold)
        report["floor_vs_analyze"] = r
        print(f"machine: {report['machine']}")
        print(f"model: {r['model']} ({r['values'] / 1e6:.1f} M values, {r['bytes'] / (1 << 20):.0f} MiB)")
        by_chunk = ", ".join(f"{c >> 10} Ki: {s:.3f}" for c, s in r["floor_by_chunk_s"].items())
        print(f"read floor: {r['floor_s']:.3f} s ({r['values'] / r['floor_s'] / 1e6:.0f} M values/s; "
              f"by chunk, values: seconds: {by_chunk})")
        for j, v in r["analyze"].items():
            print(f"analyze --jobs {j}: {v['seconds']:.3f} s, ratio to floor {v['ratio_to_floor']:.2f}")
        for j, s in r["floor_threads_s"].items():
            t = r["analyze"][str(j)]["seconds"]
            print(f"read floor on {j} threads: {s:.3f} s; analyze --jobs {j} is {t / s:.2f}x that")
        if not a.no_formats:
            report["formats"] = per_format(format_models(work, n_values, real=not a.tiny), repeat)
            print(f"{'format':20s} {'values':>10s} {'floor Mv/s':>11s} {'analyze Mv/s':>13s} {'ratio':>6s}")
            for label, v in report["formats"].items():
                print(f"{label:20s} {v['values']:10d} {v['floor_mvalues_s']:11.0f} {v['analyze_mvalues_s']:13.0f} "
                      f"{v['ratio_to_floor']:6.2f}")
    if a.json:
        a.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":  # the guard worker processes need (forkserver re-imports __main__)
    raise SystemExit(main())
