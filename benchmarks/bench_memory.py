"""Peak resident memory of `normscope analyze`, per process and summed over its worker processes.

    python benchmarks/bench_memory.py [MODEL] [--big-gib 3] [--jobs 1,2] [--json out.json]
    python benchmarks/bench_memory.py measure -- normscope analyze MODEL -q     # one command, JSON out

MODEL defaults to the HF export of the real Gemma 3 270M (tests/real_models.py, built once and cached).
A synthetic safetensors file with one tensor of --big-gib GiB (mostly a sparse hole, so it is written in
a moment; a few MiB of Gaussian values every 256 MiB) is measured too, once with rows of 4096 values
and once as rows of 1 GiB (the rows longer than a chunk path).

The measured command runs under a fresh Python that reports getrusage(RUSAGE_CHILDREN).ru_maxrss (the
largest process it waited for) and, for the worker processes it cannot wait for, polls every
descendant's VmHWM in /proc; the page cache that pread goes through is not counted by either.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MIB = 1 << 20


def _descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            parents[int(entry)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    out, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == pid]
        out += kids
        frontier += kids
    return out


def _status_kib(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def measure(argv: list[str], env: dict[str, str] | None = None, interval: float = 0.02) -> dict:
    """Run argv; peak RSS of its largest process and of all its processes together, in MiB."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    hwm: dict[int, int] = {}
    total = 0
    while proc.poll() is None:
        pids = [proc.pid, *_descendants(proc.pid)]
        for pid in pids:
            hwm[pid] = max(hwm.get(pid, 0), _status_kib(pid, "VmHWM"))
        total = max(total, sum(_status_kib(pid, "VmRSS") for pid in pids))
        time.sleep(interval)
    out, err = proc.communicate()
    waited = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    largest = max([waited, *hwm.values()])
    return {"argv": argv, "returncode": proc.returncode, "stderr": err[-2000:], "seconds": time.perf_counter() - start,
            "max_process_mib": largest / 1024, "max_total_mib": max(total, largest) / 1024}


def make_big_checkpoint(path: Path, gib: float = 3.0, row_len: int = 4096, seed: int = 0) -> Path:
    """One F32 tensor of `gib` GiB in a sparse safetensors file (written in well under a second)."""
    n = int(gib * (1 << 30)) // 4
    row_len = min(row_len, n)
    n -= n % row_len
    shape = [n // row_len, row_len]
    header = {"big.weight": {"dtype": "F32", "shape": shape, "data_offsets": [0, n * 4]}}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        start = f.tell()
        f.truncate(start + n * 4)  # a hole: reads back as zeros, costs no disk
        for at in range(0, n * 4, 256 * MIB):  # some real values so the statistics are not all zero
            f.seek(start + at)
            f.write(rng.normal(0, 0.02, min(MIB, (n * 4 - at) // 4)).astype(np.float32).tobytes())
    return path


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "normscope", *args]


def _measure_fresh(argv: list[str]) -> dict:
    """`measure` in a fresh interpreter, so RUSAGE_CHILDREN sees only this command."""
    r = subprocess.run([sys.executable, __file__, "measure", "--", *argv], capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


def run(model: Path | None, big_gib: float, jobs: list[int], workdir: Path) -> list[dict]:
    cases = []
    if model is not None:
        cases += [(f"{model.name} --jobs {j}", cli("analyze", str(model), "-q", "--json", os.devnull, "--jobs", str(j)))
                  for j in jobs]
        cases += [(f"{model.name} --jobs {j} --executor process",
                   cli("analyze", str(model), "-q", "--json", os.devnull, "--jobs", str(j), "--executor", "process"))
                  for j in jobs if j > 1]
    if big_gib > 0:
        for row_len, label in ((4096, "rows of 4096"), (1 << 28, "rows of 1 GiB")):
            path = make_big_checkpoint(workdir / f"big-{row_len}.safetensors", big_gib, row_len)
            cases.append((f"one {big_gib:g} GiB tensor, {label}",
                          cli("analyze", str(path), "-q", "--json", os.devnull, "--jobs", "1")))
    out = []
    for label, argv in cases:
        r = _measure_fresh(argv)
        r["case"] = label
        out.append(r)
        print(f"{label:44s} exit {r['returncode']}  largest process {r['max_process_mib']:7.1f} MiB  "
              f"all processes {r['max_total_mib']:7.1f} MiB  {r['seconds']:6.2f} s", flush=True)
        if r["returncode"]:
            print(r["stderr"], file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["measure"]:
        cmd = args[args.index("--") + 1:] if "--" in args else args[1:]
        print(json.dumps(measure(cmd)))
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", nargs="?", type=Path, help="default: the Gemma 3 270M HF export (test cache)")
    p.add_argument("--big-gib", type=float, default=3.0, help="size of the synthetic one-tensor file; 0: skip")
    p.add_argument("--jobs", default="1,2", help="comma-separated --jobs values for MODEL")
    p.add_argument("--json", type=Path, help="write the measurements here")
    a = p.parse_args(args)
    model = a.model
    if model is None:
        sys.path.insert(0, str(ROOT / "tests"))
        import real_models

        model = real_models.gemma_hf()
    with tempfile.TemporaryDirectory(prefix="normscope-bench-") as tmp:
        results = run(model, a.big_gib, [int(j) for j in a.jobs.split(",")], Path(tmp))
    if a.json:
        a.json.write_text(json.dumps(results, indent=2))
    return max((r["returncode"] for r in results), default=0)


if __name__ == "__main__":
    raise SystemExit(main())
