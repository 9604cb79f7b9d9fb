"""Every command's JSON and Markdown on the real Gemma files, written to a directory, for before/after diffs.

    python benchmarks/json_snapshot.py OUT_DIR [--only NAME,…] [--skip-forward]
    diff -r before/ after/          # a refactoring must leave every file byte-identical

The models are the test cache's (tests/real_models.py: the Gemma 3 270M GGUF from PyPI and its HF
export). Each command runs through the console script, as a user runs it, with `--json` and `--md`;
paths that a run creates (clip's --out) are fixed (under the temporary directory, whatever OUT_DIR) so they
do not differ between runs. Float sums that numpy hands to BLAS depend on its thread count: compare runs
made with the same OPENBLAS_NUM_THREADS.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def commands(hf: Path, gguf: Path, work: Path) -> dict[str, list[str]]:
    """{name: normscope arguments}: every command, on both real files where it reads both."""
    hf_s, gguf_s = str(hf), str(gguf)
    return {
        "analyze-gguf": ["analyze", gguf_s],
        "analyze-hf": ["analyze", hf_s, "--top", "5"],
        "analyze-hf-mlp": ["analyze", hf_s, "--include", "*.mlp.*", "--exclude", "*layers.1*"],
        "simulate-hf": ["simulate", hf_s, "--scheme", "Q4_K_M,Q8_0,Q2_K,Q6_K,Q3_K_M,Q5_K_M,Q4_0,Q5_1,int4,int8,"
                        "int4_sym_g128,fp8_block", "--jobs", "2"],
        "simulate-hf-tt": ["simulate", hf_s, "--scheme", "Q4_K_M", "--tensor-type", "attn_v=Q8_0", "--include",
                           "*layers.3*"],
        "simulate-gguf": ["simulate", gguf_s, "--scheme", "Q4_K_M", "--include", "*layers.1[0-2]*"],
        "compare": ["compare", hf_s, gguf_s, "--labels", "bf16,q4_k_m"],
        "compare-self": ["compare", hf_s, hf_s, "--include", "*layers.2*"],
        "check": ["check", hf_s, "--max-effective-gamma", "100", "--min-sqnr", "Q4_K_M=20", "--max-kurtosis", "30",
                  "--no-pyproject"],
        "clip-dry": ["clip", hf_s, "--percentile", "99", "--dry-run"],
        "clip-linear": ["clip", hf_s, "--percentile", "99.9", "--scope", "linear", "--per", "channel", "--dry-run",
                        "--include", "*layers.0*"],
        "clip-write": ["clip", hf_s, "--percentile", "99", "--out", str(work / "clipped")],
        "clip-sweep": ["clip", hf_s, "--sweep", "99,99.9,100", "--scheme", "Q4_K_M,int4", "--include",
                       "*layers.4*"],
        "recipe": ["recipe", hf_s, "--budget-bpw", "7.46"],
        "forward": ["forward", hf_s, "--scheme", "Q8_0,Q2_K", "--clip", "99", "--tokens", "48"],
        "forward-sens": ["forward", hf_s, "--scheme", "Q4_K_M", "--tokens", "32", "--no-activations",
                         "--sensitivity", "--sensitivity-by", "role"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--only", default="", help="comma-separated command names")
    ap.add_argument("--skip-forward", action="store_true", help="leave out the torch commands")
    args = ap.parse_args()
    import real_models

    hf, gguf = real_models.gemma_hf(), real_models.gemma_gguf()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.gettempdir()) / "normscope-snapshot-work"
    only = {n for n in args.only.split(",") if n}
    failed = 0
    for name, argv in commands(hf, gguf, work).items():
        if (only and name not in only) or (args.skip_forward and name.startswith("forward")):
            continue
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "normscope", *argv, "-q", "--json", str(args.out / f"{name}.json"),
               "--md", str(args.out / f"{name}.md")]
        run = subprocess.run(cmd, capture_output=True, text=True)
        (args.out / f"{name}.exit").write_text(f"{run.returncode}\n{run.stderr}")
        print(f"{name}: exit {run.returncode} in {time.perf_counter() - t0:.1f} s", flush=True)
        failed += run.returncode not in (0, 1)
    shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
