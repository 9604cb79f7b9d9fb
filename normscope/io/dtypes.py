"""Storage dtypes: the safetensors spelling, the numpy dtype that views the bytes, the item size.

ml_dtypes gives bfloat16 and the fp8 types as numpy dtypes, so no torch is needed to read them.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from ..errors import CheckpointError

__all__ = ["SAFETENSORS_DTYPES", "TORCH_FLOAT_NAMES", "numpy_dtype", "itemsize"]

# ref: safetensors/src/tensor.rs `Dtype` (names as the header spells them)
SAFETENSORS_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U64": np.dtype(np.uint64),
    "U32": np.dtype(np.uint32),
    "U16": np.dtype(np.uint16),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}

# torch's names of the float dtypes a model computes in (config.json `torch_dtype`, bitsandbytes' quant state),
# as safetensors spells them
TORCH_FLOAT_NAMES: dict[str, str] = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}


def numpy_dtype(name: str, *, where: str = "") -> np.dtype:
    """The numpy dtype for a safetensors dtype name.

    Raises:
        CheckpointError: the name is not a dtype normscope can read; the message lists the valid ones.

    Example:
        >>> numpy_dtype("BF16").name
        'bfloat16'
    """
    try:
        return SAFETENSORS_DTYPES[name]
    except (KeyError, TypeError):
        valid = ", ".join(SAFETENSORS_DTYPES)
        raise CheckpointError(f"{where}unknown dtype {name!r}; normscope reads {valid}") from None


def itemsize(name: str) -> int:
    return numpy_dtype(name).itemsize
