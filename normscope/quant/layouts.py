"""The ggml block layouts: one table, the single source of truth for block sizes and bytes.

ref: ggml/src/ggml-common.h (block_q4_0 … block_q1_0); checked against gguf.GGML_QUANT_SIZES and the compiled
kernel table (which also knows where each block keeps its fp16 scale) in tests.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Layout", "LAYOUTS", "QK_K"]

QK_K = 256  # values per K-quant super-block


class Layout(NamedTuple):
    block_size: int  # values per block
    type_size: int  # bytes per block

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.type_size / self.block_size


LAYOUTS: dict[str, Layout] = {
    "F32": Layout(1, 4),
    "F16": Layout(1, 2),
    "BF16": Layout(1, 2),
    "Q4_0": Layout(32, 2 + 16),  # d, qs[16]
    "Q4_1": Layout(32, 2 + 2 + 16),  # d, m, qs[16]
    "Q5_0": Layout(32, 2 + 4 + 16),  # d, qh[4], qs[16]
    "Q5_1": Layout(32, 2 + 2 + 4 + 16),  # d, m, qh[4], qs[16]
    "Q8_0": Layout(32, 2 + 32),  # d, qs[32]
    "Q2_K": Layout(QK_K, 16 + 64 + 2 + 2),  # scales[16], qs[64], d, dmin
    "Q3_K": Layout(QK_K, 32 + 64 + 12 + 2),  # hmask[32], qs[64], scales[12], d
    "Q4_K": Layout(QK_K, 2 + 2 + 12 + 128),  # d, dmin, scales[12], qs[128]
    "Q5_K": Layout(QK_K, 2 + 2 + 12 + 32 + 128),  # d, dmin, scales[12], qh[32], qs[128]
    "Q6_K": Layout(QK_K, 128 + 64 + 16 + 2),  # ql[128], qh[64], scales[16], d
    "IQ4_NL": Layout(32, 2 + 16),  # d, qs[16]
    "IQ4_XS": Layout(QK_K, 2 + 2 + 4 + 128),  # d, scales_h, scales_l[4], qs[128]
    "IQ3_XXS": Layout(QK_K, 2 + 96),  # d, qs[3 * QK_K / 8]
    "IQ3_S": Layout(QK_K, 2 + 64 + 8 + 32 + 4),  # d, qs[64], qh[8], signs[32], scales[4]
    "IQ2_XXS": Layout(QK_K, 2 + 64),  # d, qs[32] (uint16)
    "IQ2_XS": Layout(QK_K, 2 + 64 + 8),  # d, qs[32] (uint16), scales[8]
    "IQ2_S": Layout(QK_K, 2 + 64 + 8 + 8),  # d, qs[64], qh[8], scales[8]
    "IQ1_S": Layout(QK_K, 2 + 32 + 16),  # d, qs[32], qh[8] (uint16)
    "IQ1_M": Layout(QK_K, 32 + 16 + 8),  # qs[32], qh[16], scales[8] (the fp16 scale spread over them)
    "TQ1_0": Layout(QK_K, 48 + 4 + 2),  # qs[48], qh[4], d
    "TQ2_0": Layout(QK_K, 64 + 2),  # qs[64], d
    "MXFP4": Layout(32, 1 + 16),  # e (E8M0), qs[16]
    "NVFP4": Layout(64, 4 + 32),  # d[4] (UE4M3, one per 16 values), qs[32]
    "Q1_0": Layout(128, 2 + 16),  # d, qs[16]
}
