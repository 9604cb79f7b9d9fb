"""llama.cpp's own type plan for a file type: `llama_model_quantize` (llama-cpp-python) run on a GGUF.

Run as a script, in a process of its own (llama.cpp aborts the process on some errors, and its log callback is
global): `python llama_oracle.py INPUT.gguf OUT.json FTYPE [--imatrix] [--pure] [--dry-run]`. OUT.json gets
{"status": 0 or llama_model_quantize's error code, "log": the error lines, "tensors": {name: [type, bytes]}}.

- a real run writes the quantized GGUF to a temporary file and reads back each tensor's type and size;
- `--dry-run` quantizes nothing (llama-quantize --dry-run): the types come from llama.cpp's log lines, and the
  sizes from ggml's row sizes; it also plans the file types llama.cpp refuses to write without an imatrix;
- `--imatrix` passes an importance matrix of ones for every tensor through the C API (llama_model_imatrix_data),
  which turns on llama.cpp's `has_imatrix` rules.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

LINE = re.compile(r"\[\s*\d+/\s*\d+\]\s+(\S+)\s+- \[[^\]]*\], type =\s*(\S+), (?:size =\s*[\d.]+ MiB -> \s*[\d.]+ MiB "
                  r"\((\S+)\)|size =\s*[\d.]+ MiB\n)")


def run(source: Path, ftype: str, *, imatrix: bool = False, pure: bool = False, dry_run: bool = False) -> dict:
    import gguf
    import llama_cpp

    from normscope.io.gguf_file import read_gguf_header

    log: list[str] = []

    @llama_cpp.llama_log_callback
    def collect(level, text, user_data):
        log.append(text.decode("utf-8", "replace"))

    llama_cpp.llama_log_set(collect, ctypes.c_void_p(0))
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype}")
    params.nthread = os.cpu_count() or 1
    params.pure = pure
    params.dry_run = dry_run
    # normscope's header reader for the input's shapes (gguf-py's reader parses the 262k-token vocabulary in ~9 s)
    shapes = {e.name: e.shape for e in read_gguf_header(Path(source))[1]}  # numpy order
    keep = []
    if imatrix:
        entries = []
        for name, shape in shapes.items():
            if len(shape) >= 2:
                ones = np.ones(shape[-1] * (shape[-3] if len(shape) > 2 else 1), dtype=np.float32)
                keep.append(ones)
                entries.append((name.encode(), ones.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), ones.size))
        array = (llama_cpp.llama_model_imatrix_data * (len(entries) + 1))()
        for i, (name, ptr, size) in enumerate(entries):
            array[i].name, array[i].data, array[i].size = name, ptr, size
        array[len(entries)].name = None
        keep.append(array)
        params.imatrix = ctypes.cast(array, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.gguf"
        status = llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), ctypes.byref(params))
        text = "".join(log)
        tensors: dict[str, list] = {}
        if status == 0 and dry_run:
            for name, old, new in LINE.findall(text):
                kind = gguf.GGMLQuantizationType[(new or old).upper()]
                block, size = gguf.GGML_QUANT_SIZES[kind]
                tensors[name] = [kind.name, int(np.prod(shapes[name])) // block * size]
        elif status == 0:  # the file llama.cpp wrote, read by gguf-py
            written = gguf.GGUFReader(str(out))
            tensors = {t.name: [t.tensor_type.name, int(t.n_bytes)] for t in written.tensors}
            del written
    errors = [line for line in text.splitlines() if any(w in line.lower() for w in ("error", "fail", "imatrix"))]
    return {"status": int(status), "log": errors[-20:], "tensors": tensors}


def main(argv: list[str]) -> int:
    source, target, ftype, *flags = argv
    result = run(Path(source), ftype, imatrix="--imatrix" in flags, pure="--pure" in flags,
                 dry_run="--dry-run" in flags)
    Path(target).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
