"""Every ggml type normscope quantizes, one class each, all backed by the compiled kernel table.

The quantizers and dequantizers are C (`normscope/kernels/`, one file per family, written from the
algorithms of ggml/src/ggml-quants.c): `quantize_blocks` gives exactly the bytes `ggml_quantize_chunk` writes,
with or without an importance matrix (tests/quant/test_qkernels.py holds every type against llama.cpp's own).
`imatrix` says what ggml does with importance weights: "ignored", "used", or "required" (IQ2_XXS, IQ2_XS and
IQ1_S refuse to run without them, as llama-quantize does).
"""

from __future__ import annotations

import numpy as np

from .base import GGMLFormat

__all__ = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
           "IQ4_NL", "IQ4_XS", "IQ3_XXS", "IQ3_S", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ1_S", "IQ1_M", "TQ1_0", "TQ2_0",
           "MXFP4", "NVFP4", "Q1_0"]


class F32(GGMLFormat, name="F32"):
    description = "float32, unquantized"
    compiled = False

    @classmethod
    def _quantize_rows(cls, rows: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
        return np.ascontiguousarray(rows, dtype="<f4").view(np.uint8)

    @classmethod
    def _dequantize_rows(cls, raw: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        return raw.view("<f4").astype(np.float32).reshape(shape)


# -- floats ----------------------------------------------------------------------------------------------
class F16(GGMLFormat, name="F16"):
    description = "IEEE half precision"


class BF16(GGMLFormat, name="BF16"):
    description = "bfloat16, round to nearest even"


# -- legacy 32-value blocks (ggml-quants.c quantize_row_q*_ref; with an imatrix quantize_row_q*_impl) ---------
class Q4_0(GGMLFormat, name="Q4_0"):
    description = "4-bit symmetric, fp16 scale per 32 values"


class Q4_1(GGMLFormat, name="Q4_1"):
    description = "4-bit affine, fp16 scale and minimum per 32 values"


class Q5_0(GGMLFormat, name="Q5_0"):
    description = "5-bit symmetric, fp16 scale per 32 values"


class Q5_1(GGMLFormat, name="Q5_1"):
    description = "5-bit affine, fp16 scale and minimum per 32 values"


class Q8_0(GGMLFormat, name="Q8_0"):
    description = "8-bit symmetric, fp16 scale per 32 values"


# -- K-quants: 256-value super-blocks of sub-blocks with quantized scales ---------------------------------
class Q2_K(GGMLFormat, name="Q2_K"):
    description = "2-bit affine in 16-value sub-blocks, 4-bit scales and mins under fp16 (2.625 bpw)"


class Q3_K(GGMLFormat, name="Q3_K"):
    description = "3-bit symmetric in 16-value sub-blocks, 6-bit scales under fp16 (3.4375 bpw)"


class Q4_K(GGMLFormat, name="Q4_K"):
    description = "4-bit affine in 32-value sub-blocks, 6-bit scales and mins under fp16 (4.5 bpw)"


class Q5_K(GGMLFormat, name="Q5_K"):
    description = "5-bit affine in 32-value sub-blocks, 6-bit scales and mins under fp16 (5.5 bpw)"


class Q6_K(GGMLFormat, name="Q6_K"):
    description = "6-bit symmetric in 16-value sub-blocks, 8-bit scales under fp16 (6.5625 bpw)"


# -- IQ types: non-linear levels and lattice codebooks ----------------------------------------------------
class IQ4_NL(GGMLFormat, name="IQ4_NL"):
    description = "4-bit non-linear levels, fp16 scale per 32 values (4.5 bpw)"


class IQ4_XS(GGMLFormat, name="IQ4_XS"):
    description = "4-bit non-linear levels in 32-value sub-blocks, 6-bit scales under fp16 (4.25 bpw)"


class IQ3_XXS(GGMLFormat, name="IQ3_XXS"):
    description = "3-bit lattice (256-point grid of 4-vectors) with signs (3.0625 bpw)"


class IQ3_S(GGMLFormat, name="IQ3_S"):
    description = "3-bit lattice (512-point grid of 4-vectors) with signs and 4-bit scales (3.4375 bpw)"


class IQ2_XXS(GGMLFormat, name="IQ2_XXS"):
    description = "2-bit E8 lattice (256-point grid of 8-vectors) with signs (2.0625 bpw; needs an imatrix)"


class IQ2_XS(GGMLFormat, name="IQ2_XS"):
    description = "2-bit E8 lattice (512-point grid) with signs and 4-bit scales (2.3125 bpw; needs an imatrix)"


class IQ2_S(GGMLFormat, name="IQ2_S"):
    description = "2-bit E8 lattice (1024-point grid) with signs and 4-bit scales (2.5625 bpw)"


class IQ1_S(GGMLFormat, name="IQ1_S"):
    description = "1.5-bit ternary lattice (2048-point grid) with a shift (1.5625 bpw; needs an imatrix)"


class IQ1_M(GGMLFormat, name="IQ1_M"):
    description = "1.75-bit ternary lattice (2048-point grid) with per-group shifts (1.75 bpw)"


# -- ternary, FP4 and 1-bit ------------------------------------------------------------------------------
class TQ1_0(GGMLFormat, name="TQ1_0"):
    description = "ternary {-1, 0, 1} packed five to a byte, fp16 scale per 256 values (1.6875 bpw)"


class TQ2_0(GGMLFormat, name="TQ2_0"):
    description = "ternary {-1, 0, 1} in 2 bits, fp16 scale per 256 values (2.0625 bpw)"


class MXFP4(GGMLFormat, name="MXFP4"):
    description = "FP4 E2M1 values, E8M0 shared exponent per 32 values (OCP microscaling; 4.25 bpw)"


class NVFP4(GGMLFormat, name="NVFP4"):
    description = "FP4 E2M1 values, UE4M3 scale per 16 values (ggml's NVFP4; 4.5 bpw)"


class Q1_0(GGMLFormat, name="Q1_0"):
    description = "1-bit signs, fp16 scale per 128 values (1.125 bpw)"
