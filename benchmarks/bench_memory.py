"""Peak resident memory of every command, per process and summed over its worker processes.

    python benchmarks/bench_memory.py [MODEL] [--gguf FILE] [--big-gib 3] [--big-norm 268435456] [--jobs 1,2]
                                      [--json out.json]
    python benchmarks/bench_memory.py measure -- normscope analyze MODEL -q     # one command, JSON out

MODEL defaults to the HF export of the real Gemma 3 270M and --gguf to the published Gemma GGUF
(tests/real_models.py, built once and cached): analyze at each --jobs (threads and processes), then
simulate Q4_K_M, compare and check of MODEL, simulate and compare of the GGUF (a source whose
requantization errors are mostly exact zeros), and compare of MODEL with the GGUF. A synthetic
safetensors file with one tensor of --big-gib GiB (mostly a sparse hole, so it is written in a moment; a
few MiB of Gaussian values every 256 MiB) is measured too, once with rows of 4096 values and once as rows
of 1 GiB (the rows longer than a chunk path); and a "norm" of --big-norm values (a 1-D tensor, 1 GiB at
2^28) through analyze, check, compare, clip --dry-run and clip writing.

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


def make_big_norm(directory: Path, n: int, seed: int = 0) -> Path:
    """An HF directory whose one tensor is `model.norm.weight` with `n` float32 values (a sparse file)."""
    directory.mkdir(parents=True, exist_ok=True)
    header = {"model.norm.weight": {"dtype": "F32", "shape": [n], "data_offsets": [0, n * 4]}}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    rng = np.random.default_rng(seed)
    with open(directory / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        start = f.tell()
        f.truncate(start + n * 4)
        for at in range(0, n * 4, 256 * MIB):
            f.seek(start + at)
            f.write((1 + rng.normal(0, 0.1, min(MIB // 4, (n * 4 - at) // 4))).astype(np.float32).tobytes())
    (directory / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
                                                       "hidden_size": n, "num_hidden_layers": 1}))
    return directory


def run(model: Path | None, big_gib: float, jobs: list[int], workdir: Path, gguf: Path | None = None,
        big_norm: int = 0) -> list[dict]:
    cases = []
    null = os.devnull
    if model is not None:
        cases += [(f"{model.name} --jobs {j}", cli("analyze", str(model), "-q", "--json", os.devnull, "--jobs", str(j)))
                  for j in jobs]
        cases += [(f"{model.name} --jobs {j} --executor process",
                   cli("analyze", str(model), "-q", "--json", os.devnull, "--jobs", str(j), "--executor", "process"))
                  for j in jobs if j > 1]
    if model is not None:
        m = str(model)
        cases += [(f"{model.name} simulate Q4_K_M", cli("simulate", m, "-q", "--json", null)),
                  (f"{model.name} compare with itself", cli("compare", m, m, "-q", "--json", null)),
                  (f"{model.name} check", cli("check", m, "-q", "--no-pyproject", "--json", null))]
    if gguf is not None:
        g = str(gguf)
        cases += [(f"{gguf.name} simulate Q4_K_M", cli("simulate", g, "-q", "--json", null)),
                  (f"{gguf.name} compare with itself", cli("compare", g, g, "-q", "--json", null))]
        if model is not None:
            cases.append((f"{model.name} compare {gguf.name}", cli("compare", str(model), g, "-q", "--json", null)))
    if big_norm > 0:
        norm = str(make_big_norm(workdir / "big-norm", big_norm))
        label = f"a norm of {big_norm:,} values"
        cases += [(f"{label}: analyze", cli("analyze", norm, "-q", "--json", null)),
                  (f"{label}: check", cli("check", norm, "-q", "--no-pyproject", "--json", null)),
                  (f"{label}: compare", cli("compare", norm, norm, "-q", "--json", null)),
                  (f"{label}: clip --dry-run", cli("clip", norm, "--dry-run", "-q", "--json", null)),
                  (f"{label}: clip --out", cli("clip", norm, "--out", str(workdir / "clipped"), "-q"))]
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
        print(f"{label:52s} exit {r['returncode']}  largest process {r['max_process_mib']:7.1f} MiB  "
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
    p.add_argument("--gguf", type=Path, help="a GGUF for simulate and compare (default: the Gemma 3 270M GGUF)")
    p.add_argument("--no-gguf", action="store_true", help="leave out the GGUF cases")
    p.add_argument("--big-norm", type=int, default=1 << 28, help="values of the synthetic 1-D norm; 0: skip")
    p.add_argument("--jobs", default="1,2", help="comma-separated --jobs values for MODEL")
    p.add_argument("--json", type=Path, help="write the measurements here")
    a = p.parse_args(args)
    model, gguf = a.model, a.gguf
    sys.path.insert(0, str(ROOT / "tests"))
    if model is None:
        import real_models

        model = real_models.gemma_hf()
    if gguf is None and not a.no_gguf:
        import real_models

        gguf = real_models.gemma_gguf()
    with tempfile.TemporaryDirectory(prefix="normscope-bench-") as tmp:
        results = run(model, a.big_gib, [int(j) for j in a.jobs.split(",")], Path(tmp), None if a.no_gguf else gguf,
                      a.big_norm)
    if a.json:
        a.json.write_text(json.dumps(results, indent=2))
    return max((r["returncode"] for r in results), default=0)


if __name__ == "__main__":
    raise SystemExit(main())
