"""The format registry, as gguf-py's quants.py: the base class reshapes and validates, each format
writes only its block kernels on a (n_blocks, block_size) float32 array.

Two kinds of format share the registry:
- `GGMLFormat`: a ggml block type with a byte layout (`quantize_blocks` gives exactly llama.cpp's bytes);
- `SimFormat`: a simulated scheme (optimum-quanto int8/int4, GPTQ-style RTN, FP8) that works on whole
  rows, since its groups depend on the row length; it reports honest bits per weight.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..errors import ConfigError, UnknownNameError
from .layouts import LAYOUTS

__all__ = ["QuantFormat", "GGMLFormat", "SimFormat", "FORMATS", "get_format"]

FORMATS: dict[str, type[QuantFormat]] = {}
BATCH_VALUES = 1 << 20  # values quantized per kernel call: ~1 MiB float32 arrays keep the searches in cache


class QuantFormat:
    name: ClassVar[str]
    description: ClassVar[str] = ""
    # a chunk of rows handed to fake_quantize must hold a multiple of this many rows (fp8_block: 128)
    row_multiple: ClassVar[int] = 1
    # True: one scale for the whole tensor, so a chunk needs the tensor's max |x| (`tensor_absmax`)
    per_tensor: ClassVar[bool] = False

    def __init_subclass__(cls, name: str | None = None, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if name is not None:
            if name in FORMATS:  # two formats under one name: the second would silently replace the first
                raise TypeError(f"quantization format {name!r} is registered twice ({FORMATS[name].__qualname__} "
                                f"and {cls.__qualname__})")
            cls.name = name
            FORMATS[name] = cls

    @classmethod
    def fake_quantize(cls, x: np.ndarray, tensor_absmax: float | None = None) -> np.ndarray:
        """What the format stores, read back as float32, same shape as `x` (rows along the last axis).

        `tensor_absmax` is the whole tensor's max |x| for per-tensor formats fed a chunk at a time
        (None: taken from `x`); other formats ignore it.
        """
        raise NotImplementedError

    @classmethod
    def group_length(cls, row_len: int) -> int:
        """Values along a row that share one scale (a ggml block, a quanto group, a whole row)."""
        return row_len

    @classmethod
    def bits_per_weight(cls, shape: tuple[int, ...]) -> float:
        raise NotImplementedError

    @classmethod
    def nbytes(cls, shape: tuple[int, ...]) -> int:
        n = int(np.prod(shape))
        return int(round(cls.bits_per_weight(shape) * n / 8))

    @classmethod
    def check_shape(cls, shape: tuple[int, ...]) -> None:
        """Raise ConfigError when rows of this length cannot be stored in this format."""


class GGMLFormat(QuantFormat):
    """A ggml block type. Subclasses implement `_quantize(blocks)` and `_dequantize(raw)`."""

    @classmethod
    def layout(cls):
        return LAYOUTS[cls.name]

    @classmethod
    def check_shape(cls, shape: tuple[int, ...]) -> None:
        block = cls.layout().block_size
        row = shape[-1] if shape else 1
        if row % block:
            raise ConfigError(f"{cls.name} stores rows in blocks of {block} values; a row of {row} is not a "
                              f"multiple (llama.cpp falls back to another type for such tensors)")

    @classmethod
    def quantize_blocks(cls, x: np.ndarray) -> np.ndarray:
        """uint8 (rows, bytes per row): exactly the bytes llama.cpp writes for these rows."""
        x = np.asarray(x, dtype=np.float32)
        shape = x.shape if x.ndim else (1,)
        cls.check_shape(shape)
        layout = cls.layout()
        rows = x.reshape(-1, shape[-1])
        blocks = np.ascontiguousarray(rows).reshape(-1, layout.block_size)  # (n_blocks, block_size)
        raw = np.empty((blocks.shape[0], layout.type_size), dtype=np.uint8)
        step = max(1, BATCH_VALUES // layout.block_size)  # batches small enough to stay in cache
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            for i in range(0, blocks.shape[0], step):
                part = cls._quantize(blocks[i:i + step])
                assert part.dtype == np.uint8 and part.shape == (min(step, blocks.shape[0] - i), layout.type_size)
                raw[i:i + step] = part
        return raw.reshape(rows.shape[0], -1)

    @classmethod
    def dequantize_blocks(cls, raw: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """float32 values of `shape` from the bytes `quantize_blocks` wrote."""
        layout = cls.layout()
        raw = np.ascontiguousarray(np.asarray(raw, dtype=np.uint8)).reshape(-1, layout.type_size)
        n = int(np.prod(shape))
        if raw.shape[0] * layout.block_size != n:
            raise ConfigError(f"{cls.name}: {raw.shape[0]} blocks hold {raw.shape[0] * layout.block_size} values, "
                              f"shape {tuple(shape)} needs {n}")
        return cls._dequantize(raw).reshape(shape)

    @classmethod
    def fake_quantize(cls, x: np.ndarray, tensor_absmax: float | None = None) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        return cls.dequantize_blocks(cls.quantize_blocks(x), x.shape)

    @classmethod
    def group_length(cls, row_len: int) -> int:
        return cls.layout().block_size

    @classmethod
    def bits_per_weight(cls, shape: tuple[int, ...] = ()) -> float:
        return cls.layout().bits_per_weight

    @classmethod
    def nbytes(cls, shape: tuple[int, ...]) -> int:
        layout = cls.layout()
        return int(np.prod(shape)) // layout.block_size * layout.type_size

    @classmethod
    def _quantize(cls, blocks: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @classmethod
    def _dequantize(cls, raw: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class SimFormat(QuantFormat):
    """A simulated scheme: `fake_quantize` on rows; no ggml byte layout."""

    @classmethod
    def quantize_blocks(cls, x: np.ndarray) -> np.ndarray:
        raise ConfigError(f"{cls.name} is a simulated scheme without a ggml byte layout; use fake_quantize")


def get_format(name: str) -> type[QuantFormat]:
    """The registered format `name` (as upstream spells it: Q4_K, BF16, int4, fp8_block …).

    Raises:
        UnknownNameError: listing the registered formats.
    """
    try:
        return FORMATS[name]
    except KeyError:
        raise UnknownNameError("quantization format", name, FORMATS) from None
