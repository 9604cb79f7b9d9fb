"""What llama.cpp's CPU runtime does to a matmul's input: the weight type's dot-product partner.

ggml-cpu does not multiply a quantized weight by float activations. `ggml_compute_forward_mul_mat` first
converts each input row to the weight type's `vec_dot_type` (the `type_traits_cpu` table of
ggml/src/ggml-cpu/ggml-cpu.c) in blocks along the reduction dimension, then takes integer dot products:
Q8_0 (blocks of 32) for Q4_0, Q5_0, Q8_0, IQ4_NL, MXFP4, NVFP4 and Q1_0; Q8_1 (32, with the block sum
for the affine types' minimum) for Q4_1 and Q5_1; Q8_K (blocks of 256) for the K-quants, the IQ types
but IQ4_NL, and TQ1_0/TQ2_0. F16 and BF16 weights take F16 and BF16 inputs; F32 weights take the input
as it is. The product of the stored weight and the quantized input is, up to float summation order, the
product of the weight with `runtime_activations(x, type)`: the input quantized then read back.

The activation quantizers are normscope's compiled kernels (Q8_0 is also a weight type; Q8_1 and Q8_K
are activation-only rows of the kernel table, `_kernels.act_qtypes()`), byte for byte ggml's
quantize_row_q8_0_ref / q8_1_ref / q8_K_ref. On x86 ggml-cpu quantizes Q8_K with the reference code;
its AVX2 Q8_0/Q8_1 paths multiply by 127 / amax and round half to even, which differ from the reference
only on values that fall exactly between two levels.
"""

from __future__ import annotations

import numpy as np

from .._kernels import act_qtypes, dequantize, qtypes, quantize
from ..errors import ConfigError

__all__ = ["RUNTIMES", "VEC_DOT_TYPE", "activation_type", "runtime_activations"]

RUNTIMES = ("weights", "llama.cpp")

# type_traits_cpu[weight].vec_dot_type of ggml-cpu.c, for every weight type of normscope's kernel table
VEC_DOT_TYPE: dict[str, str | None] = {
    "F32": None, "F16": "F16", "BF16": "BF16",
    "Q4_0": "Q8_0", "Q4_1": "Q8_1", "Q5_0": "Q8_0", "Q5_1": "Q8_1", "Q8_0": "Q8_0",
    "Q2_K": "Q8_K", "Q3_K": "Q8_K", "Q4_K": "Q8_K", "Q5_K": "Q8_K", "Q6_K": "Q8_K",
    "IQ4_NL": "Q8_0", "IQ4_XS": "Q8_K",
    "IQ3_XXS": "Q8_K", "IQ3_S": "Q8_K",
    "IQ2_XXS": "Q8_K", "IQ2_XS": "Q8_K", "IQ2_S": "Q8_K",
    "IQ1_S": "Q8_K", "IQ1_M": "Q8_K",
    "TQ1_0": "Q8_K", "TQ2_0": "Q8_K",
    "MXFP4": "Q8_0", "NVFP4": "Q8_0", "Q1_0": "Q8_0",
}

# activation type -> (values per block, bytes per block), from the compiled kernel table
_BLOCKS: dict[str, tuple[int, int]] = {row[0]: (row[2], row[3]) for row in (*qtypes(), *act_qtypes())
                                       if row[0] in set(VEC_DOT_TYPE.values())}


def activation_type(weight_type: str) -> str | None:
    """The type ggml-cpu converts a matmul's input to for a weight stored as `weight_type` (None: F32, as is).

    Raises:
        ConfigError: a type that is not a ggml weight type normscope knows.
    """
    try:
        return VEC_DOT_TYPE[weight_type]
    except KeyError:
        raise ConfigError(f"{weight_type}: not a ggml weight type with a llama.cpp CPU dot product") from None


def runtime_activations(x: np.ndarray, act_type: str | None) -> np.ndarray:
    """Rows of `x` (along the last axis) quantized to `act_type` in ggml's blocks and read back as float32.

    Raises:
        ConfigError: rows that are not whole blocks of the activation type (ggml asserts the same).
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    if act_type is None:
        return x
    block, size = _BLOCKS[act_type]
    n = x.shape[-1] if x.ndim else 1
    if n % block:
        raise ConfigError(f"{act_type}: a matmul input row of {n} values is not a whole number of blocks of {block}")
    rows = x.reshape(-1, n)
    raw = np.empty((rows.shape[0], n // block * size), np.uint8)
    quantize(act_type, rows, raw, n)
    out = np.empty_like(rows)
    dequantize(act_type, raw, out, n)
    return out.reshape(x.shape)
