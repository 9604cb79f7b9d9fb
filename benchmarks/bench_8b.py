"""analyze and simulate at the scale people quantize: a synthetic checkpoint with Llama-3-8B's shapes.

    python benchmarks/bench_8b.py [--scheme Q4_K_M] [--jobs 2] [--json out.json] [--layers 32] [--skip-floor]

The checkpoint is built once and cached (in $NORMSCOPE_TEST_CACHE or ~/.cache/normscope-tests, written
under a temporary name and renamed when complete): bf16, 4 shards with an index, config.json of a
LlamaForCausalLM; vocabulary 128256, hidden 4096, 32 layers, FFN 14336, 32 heads, 8 KV heads, untied
lm_head: 8.03 B parameters, ~16 GB. Seeded Gaussian weights (σ 0.02) with planted outlier input channels
(a few columns ×20 in q/k/v/gate/up), a few super weights per layer in mlp.down_proj (±2..8), and RMSNorm
gains with a long tail (log-normal around 1, some beyond 50). --layers builds a smaller one (its own cache
entry) for a quick run; --tiny a model of the same structure in a few MB (the smoke test).

Reported, each in a fresh process, warm page cache after a first read: the read-only floor (every tensor
read to float32 with analyze's reader, one thread, and --jobs threads), `normscope analyze`, and
`normscope simulate --scheme SCHEME`: wall time, M weights/s, peak RSS (benchmarks/bench_memory.py's
measurement: the largest process). Targets (issue 16, 2 cores): simulate Q4_K_M within 5 minutes (~27 M
weights/s), analyze within 2× the floor, peak RSS ≤ 512 MiB for both.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

LLAMA3_8B = {"vocab": 128256, "hidden": 4096, "ffn": 14336, "heads": 32, "kv_heads": 8, "layers": 32}
TINY = {"vocab": 2048, "hidden": 256, "ffn": 1024, "heads": 4, "kv_heads": 2, "layers": 2}  # the smoke test's
VERSION = "v1"
ROWS_PER_WRITE = 1 << 10


def shapes(dims: dict) -> list[tuple[str, tuple[int, ...]]]:
    """(HF name, shape) of every tensor, in Llama's file order."""
    v, h, f, kv = dims["vocab"], dims["hidden"], dims["ffn"], dims["kv_heads"] * dims["hidden"] // dims["heads"]
    out = [("model.embed_tokens.weight", (v, h))]
    for i in range(dims["layers"]):
        p = f"model.layers.{i}."
        out += [(p + "input_layernorm.weight", (h,)), (p + "self_attn.q_proj.weight", (h, h)),
                (p + "self_attn.k_proj.weight", (kv, h)), (p + "self_attn.v_proj.weight", (kv, h)),
                (p + "self_attn.o_proj.weight", (h, h)), (p + "post_attention_layernorm.weight", (h,)),
                (p + "mlp.gate_proj.weight", (f, h)), (p + "mlp.up_proj.weight", (f, h)),
                (p + "mlp.down_proj.weight", (h, f))]
    return out + [("model.norm.weight", (h,)), ("lm_head.weight", (v, h))]


def config(dims: dict) -> dict:
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": dims["vocab"],
            "hidden_size": dims["hidden"], "intermediate_size": dims["ffn"], "num_hidden_layers": dims["layers"],
            "num_attention_heads": dims["heads"], "num_key_value_heads": dims["kv_heads"],
            "head_dim": dims["hidden"] // dims["heads"], "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
            "max_position_embeddings": 8192, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
            "hidden_act": "silu", "bos_token_id": 128000, "eos_token_id": 128001}


def _bf16(values: np.ndarray) -> bytes:
    """float32 -> bfloat16 bytes, round to nearest even (what torch writes)."""
    u = values.astype(np.float32).view(np.uint32)
    return ((u + (np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1)))) >> 16).astype("<u2").tobytes()


def _rows(name: str, shape: tuple[int, ...], seed: int):
    """The tensor's values in blocks of rows (float32), seeded per tensor."""
    rng = np.random.default_rng(seed)
    if len(shape) == 1:  # an RMSNorm gain: log-normal around 1, a long tail
        g = rng.lognormal(0.0, 0.35, shape[0])
        g[rng.choice(shape[0], 8, replace=False)] = rng.uniform(20, 80, 8)
        yield g.astype(np.float32)
        return
    n_rows, n_cols = shape
    hot = rng.choice(n_cols, 6, replace=False) if any(k in name for k in ("q_proj", "k_proj", "v_proj", "gate",
                                                                           "up_proj")) else None
    supers = {}
    if "down_proj" in name:
        for r, c in zip(rng.choice(n_rows, 3, replace=False), rng.choice(n_cols, 3, replace=False)):
            supers[int(r)] = (int(c), float(rng.choice([-1, 1]) * rng.uniform(2, 8)))
    for r0 in range(0, n_rows, ROWS_PER_WRITE):
        block = rng.standard_normal((min(ROWS_PER_WRITE, n_rows - r0), n_cols), dtype=np.float32)
        block *= np.float32(0.02)
        if hot is not None:
            block[:, hot] *= np.float32(20)
        for r, (c, v) in supers.items():
            if r0 <= r < r0 + block.shape[0]:
                block[r - r0, c] = v
        yield block


def build(dims: dict) -> Path:
    """The cached checkpoint, built when missing."""
    import real_models

    tag = "-".join(f"{k}{v}" for k, v in dims.items()) if dims != LLAMA3_8B else "llama3-8b-shapes"
    target = real_models.cache_dir() / f"{tag}-bf16-{VERSION}"
    if (target / "model.safetensors.index.json").is_file():
        return target
    tensors = shapes(dims)
    total = sum(int(np.prod(s)) for _, s in tensors)
    per_shard = -(-total // 4)
    shards, current, size = [], [], 0
    for name, shape in tensors:
        current.append((name, shape))
        size += int(np.prod(shape))
        if size >= per_shard:
            shards.append(current)
            current, size = [], 0
    if current:
        shards.append(current)
    tmp = Path(tempfile.mkdtemp(prefix=".build-8b-", dir=real_models.cache_dir()))
    t0 = time.perf_counter()
    try:
        weight_map = {}
        for k, shard in enumerate(shards):
            fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
            header, offset = {"__metadata__": {"format": "pt"}}, 0
            for name, shape in shard:
                nbytes = 2 * int(np.prod(shape))
                header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
                offset += nbytes
                weight_map[name] = fname
            raw = json.dumps(header, separators=(",", ":")).encode()
            raw += b" " * (-len(raw) % 8)
            with open(tmp / fname, "wb") as f:
                f.write(struct.pack("<Q", len(raw)) + raw)
                for name, shape in shard:
                    for block in _rows(name, shape, seed=zlib.crc32(name.encode())):
                        f.write(_bf16(block))
            print(f"  built {fname} ({time.perf_counter() - t0:.0f} s)", flush=True)
        (tmp / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 2 * total},
                                                                      "weight_map": weight_map}, indent=2))
        (tmp / "config.json").write_text(json.dumps(config(dims), indent=2))
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target


def floor(path: Path, threads: int) -> float:
    """Seconds to read every tensor to float32 with analyze's reader on `threads` threads (bench_analyze's)."""
    from bench_analyze import read_floor, read_floor_threads

    t = time.perf_counter()
    read_floor(path) if threads == 1 else read_floor_threads(path, threads)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scheme", default="Q4_K_M")
    ap.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--tiny", action="store_true", help="a tiny model of the same structure (the smoke test)")
    ap.add_argument("--skip-floor", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from bench_memory import _measure_fresh, cli

    dims = dict(TINY) if args.tiny else {**LLAMA3_8B, "layers": args.layers}
    path = build(dims)
    n = sum(int(np.prod(s)) for _, s in shapes(dims))
    gib = sum(f.stat().st_size for f in path.glob("*.safetensors")) / (1 << 30)
    print(f"{path.name}: {n / 1e9:.2f} B parameters, {gib:.1f} GiB; --jobs {args.jobs}")
    report = {"model": str(path), "parameters": n, "gib": gib, "jobs": args.jobs}
    if not args.skip_floor:
        floor(path, 1)  # warm the page cache (as far as memory allows)
        report["floor_s"] = floor(path, 1)
        report["floor_threads_s"] = floor(path, args.jobs)
        print(f"read floor: {report['floor_s']:.1f} s one thread, {report['floor_threads_s']:.1f} s on {args.jobs}")
    for label, argv in (("analyze", cli("analyze", str(path), "-q", "--json", os.devnull, "--jobs", str(args.jobs))),
                        (f"simulate {args.scheme}", cli("simulate", str(path), "--scheme", args.scheme, "-q", "--json",
                                                        os.devnull, "--jobs", str(args.jobs)))):
        r = _measure_fresh(argv)
        r.update(case=label, mweights_per_s=n / r["seconds"] / 1e6)
        report[label] = r
        extra = f", {r['seconds'] / report['floor_s']:.2f}× the floor" if "floor_s" in report else ""
        print(f"{label:18s} exit {r['returncode']}  {r['seconds']:7.1f} s  {r['mweights_per_s']:7.1f} M weights/s  "
              f"peak RSS {r['max_process_mib']:6.1f} MiB{extra}", flush=True)
        if r["returncode"]:
            print(r["stderr"], file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return max(report[k]["returncode"] for k in report if isinstance(report[k], dict))


if __name__ == "__main__":
    sys.exit(main())
