"""llama.cpp's own quantizer through ctypes: `ggml_quantize_chunk` from llama-cpp-python's libggml-base.

The library is the ggml that llama-cpp-python built from llama.cpp's sources (.ci/run builds it with
GGML_NATIVE=OFF, the portable flags). Without an importance matrix ggml_quantize_chunk calls
quantize_row_*_ref, the reference algorithm llama-quantize uses.
"""

from __future__ import annotations

import ctypes
import importlib.util
from functools import lru_cache
from pathlib import Path

import gguf
import numpy as np


@lru_cache(maxsize=1)
def _lib() -> ctypes.CDLL:
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        raise ImportError("llama-cpp-python is not installed (test extra)")
    path = next((Path(spec.origin).parent / "lib").glob("libggml-base.so*"))
    lib = ctypes.CDLL(str(path))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    lib.ggml_quantize_init.argtypes = [ctypes.c_int]
    return lib


def ggml_quantize(x: np.ndarray, type_name: str, imatrix: np.ndarray | None = None) -> np.ndarray:
    """(rows, n_per_row) float32 -> uint8 (rows, bytes per row), exactly as llama.cpp writes them.

    `imatrix`: n_per_row float32 importance weights (ggml_quantize_chunk's last argument), or None.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    rows, n = x.reshape(-1, x.shape[-1]).shape
    qtype = gguf.GGMLQuantizationType[type_name]
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    out = np.zeros((rows, n // block * size), dtype=np.uint8)
    lib = _lib()
    lib.ggml_quantize_init(int(qtype))
    qw = None
    if imatrix is not None:
        imatrix = np.ascontiguousarray(imatrix, dtype=np.float32)
        assert imatrix.shape == (n,)
        qw = imatrix.ctypes.data
    written = lib.ggml_quantize_chunk(int(qtype), x.ctypes.data, out.ctypes.data, 0, rows, n, qw)
    assert written == out.nbytes
    return out


class _TypeTraits(ctypes.Structure):
    _fields_ = [("type_name", ctypes.c_char_p), ("blck_size", ctypes.c_int64), ("blck_size_interleave", ctypes.c_int64),
                ("type_size", ctypes.c_size_t), ("is_quantized", ctypes.c_bool),
                ("to_float", ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)),
                ("from_float_ref", ctypes.c_void_p)]


def ggml_dequantize(raw: np.ndarray, type_name: str, shape: tuple[int, int]) -> np.ndarray:
    """ggml's bytes `raw` of `shape` float32 values back through the type's to_float (dequantize_row_*): the
    reader for types gguf-py cannot dequantize (Q1_0)."""
    lib = _lib()
    lib.ggml_get_type_traits.restype = ctypes.POINTER(_TypeTraits)
    lib.ggml_get_type_traits.argtypes = [ctypes.c_int]
    traits = lib.ggml_get_type_traits(int(gguf.GGMLQuantizationType[type_name])).contents
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    y = np.zeros(shape, np.float32)
    traits.to_float(raw.ctypes.data, y.ctypes.data, y.size)
    return y


def adversarial(seed: int = 0) -> np.ndarray:
    """Rows of 1024 values, each a case quantizers get wrong."""
    rng = np.random.default_rng(seed)
    rows = [
        rng.normal(0, 0.02, 1024),                       # a typical weight row
        np.zeros(1024),                                  # zeros
        np.full(1024, 1.5),                              # constant blocks
        np.where(np.arange(1024) == 77, 1e4, rng.normal(0, 0.01, 1024)),  # one huge value
        np.full(1024, 1e-40),                            # subnormals
        -np.abs(rng.normal(0, 0.05, 1024)),              # negative only
        np.abs(rng.normal(0, 0.05, 1024)),               # positive only
        rng.normal(0, 3e-6, 1024),                       # near fp16 underflow of the scales
        rng.normal(0, 1, 1024) * 10.0 ** rng.integers(-6, 4, 1024),  # mixed magnitudes
        rng.standard_t(1.5, 1024),                       # heavy tails
        np.tile([0.0, 1.0, -1.0, 0.5], 256),             # exact grid values
        rng.normal(0, 40000, 1024),                      # near fp16 overflow of the scales
    ]
    return np.stack(rows).astype(np.float32)


@lru_cache(maxsize=1)
def _cpu_lib() -> ctypes.CDLL:
    """libggml-cpu: the CPU backend's type traits and the activation quantizers its matmul calls."""
    spec = importlib.util.find_spec("llama_cpp")
    path = next((Path(spec.origin).parent / "lib").glob("libggml-cpu.so*"))
    lib = ctypes.CDLL(str(path))
    lib.ggml_get_type_traits_cpu.restype = ctypes.POINTER(_CpuTraits)
    lib.ggml_get_type_traits_cpu.argtypes = [ctypes.c_int]
    return lib


class _CpuTraits(ctypes.Structure):
    # ggml-cpu.h struct ggml_type_traits_cpu
    _fields_ = [("from_float", ctypes.c_void_p), ("vec_dot", ctypes.c_void_p), ("vec_dot_type", ctypes.c_int),
                ("nrows", ctypes.c_int64)]


def ggml_vec_dot_type(type_name: str) -> str:
    """The type ggml-cpu converts a matmul's input to for weights of `type_name` (type_traits_cpu)."""
    t = _cpu_lib().ggml_get_type_traits_cpu(int(gguf.GGMLQuantizationType[type_name])).contents
    return gguf.GGMLQuantizationType(t.vec_dot_type).name


def ggml_quantize_row(x: np.ndarray, function: str, block: int, size: int, runtime: bool = False) -> np.ndarray:
    """Rows of `x` through one of ggml's row quantizers by name: `quantize_row_q8_K_ref` from libggml-base (the
    reference), or with `runtime` the CPU backend's own (`quantize_row_q8_K`, what ggml's mul_mat calls)."""
    lib = _cpu_lib() if runtime else _lib()
    fn = getattr(lib, function)
    fn.restype = None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.zeros((x.shape[0], x.shape[1] // block * size), np.uint8)
    for r in range(x.shape[0]):  # row by row, as mul_mat converts its input
        row = np.ascontiguousarray(x[r])
        dst = np.zeros(out.shape[1], np.uint8)
        fn(row.ctypes.data, dst.ctypes.data, x.shape[1])
        out[r] = dst
    return out
