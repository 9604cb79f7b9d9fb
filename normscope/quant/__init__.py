"""Quantization formats: every ggml block type bit-exact with llama.cpp (compiled kernels), optimum-quanto's
integer schemes, GPTQ-style RTN, FP8 and bitsandbytes NF4/FP4 (numpy); llama.cpp's per-tensor type plans. No files, no torch.

    >>> import numpy as np
    >>> from normscope.quant import quantize_blocks, dequantize_blocks
    >>> w = np.random.default_rng(0).normal(size=(4, 256)).astype(np.float32)
    >>> quantize_blocks(w, "Q4_K").shape          # 144 bytes per 256 values, as ggml writes them
    (4, 144)
    >>> dequantize_blocks(quantize_blocks(w, "Q4_K"), "Q4_K", w.shape).shape
    (4, 256)
"""

from __future__ import annotations

import numpy as np

from . import bnb, fp8, ggml, integer  # noqa: F401  (registers the formats)
from .base import FORMATS, GGMLFormat, QuantFormat, SimFormat, get_format
from .health import BlockHealth, block_health
from .layouts import LAYOUTS, QK_K, Layout
from .plan import FILE_TYPES, ModelFacts, PlannedTensor, plan_types, tensor_category
from .schemes import (SCHEMES, TensorSpec, canonical_scheme, is_gguf_scheme, parse_schemes, parse_tensor_types,
                      plan_scheme, scheme_names)

__all__ = [
    "BlockHealth", "FILE_TYPES", "FORMATS", "GGMLFormat", "LAYOUTS", "Layout", "ModelFacts", "PlannedTensor", "QK_K",
    "QuantFormat", "SCHEMES", "SimFormat", "TensorSpec", "block_health", "canonical_scheme", "dequantize_blocks",
    "fake_quantize", "get_format", "is_gguf_scheme", "parse_schemes", "parse_tensor_types", "plan_scheme", "plan_types",
    "quantize_blocks", "scheme_names",
    "tensor_category",
]


def _ggml(fmt: str) -> type[GGMLFormat]:
    cls = get_format(fmt)
    if not issubclass(cls, GGMLFormat):
        from ..errors import ConfigError

        raise ConfigError(f"{fmt} is a simulated scheme without a ggml byte layout; use fake_quantize")
    return cls


def quantize_blocks(x: np.ndarray, fmt: str, imatrix: np.ndarray | None = None) -> np.ndarray:
    """ggml blocks of `x` (rows along the last axis): uint8 (rows, bytes per row), exactly llama.cpp's bytes.

    Args:
        x: float values, rows along the last axis.
        fmt: a ggml type (Q4_K, IQ4_XS, …).
        imatrix: importance weights, a float32 array of one weight per column (exactly what
            `ggml_quantize_chunk` takes), for the types whose ggml quantizer uses them; None: the
            reference path llama-quantize takes without `--imatrix`.

    Raises:
        UnknownNameError: unknown format; ConfigError: rows that are not whole blocks, a simulated scheme, an
        imatrix of the wrong length, or a type that requires one without it.
    """
    return _ggml(fmt).quantize_blocks(x, imatrix)


def dequantize_blocks(blocks: np.ndarray, fmt: str, shape: tuple[int, ...]) -> np.ndarray:
    """float32 values of `shape` from ggml blocks of type `fmt`."""
    return _ggml(fmt).dequantize_blocks(blocks, tuple(shape))


def fake_quantize(x: np.ndarray, fmt: str, tensor_absmax: float | None = None,
                  imatrix: np.ndarray | None = None) -> np.ndarray:
    """`x` stored in `fmt` and read back (float32, same shape): the error a format leaves.

    For ggml types this is exactly `dequantize_blocks(quantize_blocks(x, imatrix=imatrix))`. Per-tensor
    formats (fp8, int*_sym_tensor) fed one chunk of a tensor need the whole tensor's max |x| as `tensor_absmax`.
    """
    return get_format(fmt).fake_quantize(x, tensor_absmax, imatrix)
