"""The format registry, as gguf-py's quants.py: one class per format, registered by name; the base classes
reshape and validate.

Two kinds of format share the registry:
- `GGMLFormat`: a ggml block type with a byte layout, quantized by the compiled kernels (`quantize_blocks`
  gives exactly llama.cpp's bytes);
- `SimFormat`: a simulated scheme (optimum-quanto int8/int4, GPTQ-style RTN, FP8) that works on whole
  rows, since its groups depend on the row length; it reports honest bits per weight.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from .._kernels import dequantize, qtypes, quantize
from ..errors import ConfigError, UnknownNameError
from ..upstream import load_grid
from .layouts import LAYOUTS

__all__ = ["QuantFormat", "GGMLFormat", "SimFormat", "FORMATS", "get_format"]

FORMATS: dict[str, type[QuantFormat]] = {}
# the compiled kernel table: name -> (ggml type, block size, bytes per block, imatrix policy, scale offset, grid)
KERNEL_TABLE: dict[str, tuple[int, ...]] = {row[0]: row[1:] for row in qtypes()}


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
    def fake_quantize(cls, x: np.ndarray, tensor_absmax: float | None = None,
                      imatrix: np.ndarray | None = None) -> np.ndarray:
        """What the format stores, read back as float32, same shape as `x` (rows along the last axis).

        `tensor_absmax` is the whole tensor's max |x| for per-tensor formats fed a chunk at a time
        (None: taken from `x`); other formats ignore it. `imatrix`: per-column importance weights for the
        ggml types that use them (ignored by the others).
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
    """A ggml block type, quantized and dequantized by the compiled kernel table (`normscope/kernels/`), so
    `quantize_blocks` writes exactly llama.cpp's bytes. `imatrix`: what ggml does with importance weights
    ("ignored", "used" or "required")."""

    imatrix: ClassVar[str] = "ignored"
    compiled: ClassVar[bool] = True  # F32 alone is a plain copy

    def __init_subclass__(cls, name: str | None = None, **kwargs) -> None:
        super().__init_subclass__(name=name, **kwargs)
        if name is not None and cls.compiled:
            row = KERNEL_TABLE.get(name)
            if row is None:
                raise TypeError(f"ggml type {name} has no quantizer in the kernel table (normscope/kernels/qtable.c)")
            cls.imatrix = ("ignored", "used", "required")[row[3]]

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
    def quantize_blocks(cls, x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
        """uint8 (rows, bytes per row): exactly the bytes llama.cpp writes for these rows.

        Args:
            x: values, rows along the last axis.
            imatrix: importance weights, one float per column (what `ggml_quantize_chunk` takes), or None.

        Raises:
            ConfigError: rows that are not whole blocks, an imatrix of the wrong length, or a type that
                requires one (IQ2_XXS, IQ2_XS, IQ1_S) without it.
        """
        x = np.asarray(x, dtype=np.float32)
        shape = x.shape if x.ndim else (1,)
        cls.check_shape(shape)
        rows = np.ascontiguousarray(x.reshape(-1, shape[-1]))
        weights = cls.importance(imatrix, shape[-1])
        return cls._quantize_rows(rows, weights)

    @classmethod
    def dequantize_blocks(cls, raw: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """float32 values of `shape` from the bytes `quantize_blocks` wrote."""
        layout = cls.layout()
        raw = np.ascontiguousarray(np.asarray(raw, dtype=np.uint8)).reshape(-1, layout.type_size)
        n = int(np.prod(shape))
        if raw.shape[0] * layout.block_size != n:
            raise ConfigError(f"{cls.name}: {raw.shape[0]} blocks hold {raw.shape[0] * layout.block_size} values, "
                              f"shape {tuple(shape)} needs {n}")
        row = shape[-1] if len(shape) else 1
        if row % layout.block_size:  # a flat run of blocks: read it as one row
            row = n
        return cls._dequantize_rows(raw, (n // row if row else 0, row)).reshape(shape)

    @classmethod
    def fake_quantize(cls, x: np.ndarray, tensor_absmax: float | None = None,
                      imatrix: np.ndarray | None = None) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        return cls.dequantize_blocks(cls.quantize_blocks(x, imatrix), x.shape)

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
    def importance(cls, imatrix: np.ndarray | None, n_per_row: int) -> np.ndarray | None:
        """The float32 weights the kernel takes for rows of `n_per_row` (None where this type ignores them).

        Raises:
            ConfigError: a type that requires an imatrix without one, or one of the wrong length.
        """
        if imatrix is None:
            if cls.imatrix == "required":
                raise ConfigError(f"{cls.name} needs an importance matrix (llama.cpp refuses to make it without "
                                  "one): pass imatrix=, or collect one with `normscope imatrix collect`")
            return None
        w = np.ascontiguousarray(imatrix, dtype=np.float32).reshape(-1)
        if w.size != n_per_row:
            raise ConfigError(f"{cls.name}: the importance matrix has {w.size} weights, rows have {n_per_row} "
                              "values; it needs one weight per column")
        return w if cls.imatrix != "ignored" else None

    @classmethod
    def _quantize_rows(cls, rows: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
        """(rows, n) float32 C-contiguous -> (rows, bytes per row), in the compiled kernel (GIL released)."""
        load_grid(cls.name)
        layout = cls.layout()
        out = np.empty((rows.shape[0], rows.shape[1] // layout.block_size * layout.type_size), dtype=np.uint8)
        if rows.size:
            quantize(cls.name, rows, out, rows.shape[1], imatrix)
        return out

    @classmethod
    def _dequantize_rows(cls, raw: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        load_grid(cls.name)
        out = np.empty(shape, dtype=np.float32)
        if out.size:
            dequantize(cls.name, raw, out, shape[1])
        return out


class SimFormat(QuantFormat):
    """A simulated scheme: `fake_quantize` on rows; no ggml byte layout."""

    @classmethod
    def quantize_blocks(cls, x: np.ndarray) -> np.ndarray:
        raise ConfigError(f"{cls.name} is a simulated scheme without a ggml byte layout; use fake_quantize")


def get_format(name: str) -> type[QuantFormat]:
    """The registered format `name`, in any case (upstream spells them Q4_K, BF16, int4, fp8_block …).

    Raises:
        UnknownNameError: listing the registered formats.
    """
    fmt = FORMATS.get(name) or {k.lower(): f for k, f in FORMATS.items()}.get(str(name).lower())
    if fmt is None:
        raise UnknownNameError("quantization format", name, FORMATS)
    return fmt
