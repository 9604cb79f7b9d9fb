"""MXFP4 expert weights as gpt-oss checkpoints store them: `<experts>.<proj>_blocks` + `_scales` -> `<proj>`.

Layout (ref: transformers integrations/mxfp4.py `convert_moe_packed_tensors`, quant_method "mxfp4"; the OCP
microscaling format): `_blocks` uint8 [experts, out, in / 32, 16], two E2M1 codes a byte, the *low* nibble first
(value 2k is byte k's low nibble); `_scales` uint8 [experts, out, in / 32], one E8M0 exponent per 32 values;
value = E2M1[code] · 2^(scale − 127), in the model's dtype (bf16). transformers then transposes each expert to
the module's [experts, in, out] parameter, which is the logical tensor listed here (gpt-oss `GptOssExperts`
computes x @ gate_up_proj). A chunk of logical rows reads only the 32-value blocks of its input columns.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ...errors import CheckpointError
from ..checkpoint import Checkpoint, TensorEntry
from ..dtypes import TORCH_FLOAT_NAMES
from .base import Logical, PackContext, PackFormat, bad_shape, logical_entry, read_block, round_to

__all__ = ["FORMAT", "MXFP4Experts", "E2M1"]

E2M1 = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0],
                dtype=np.float32)
_BLOCKS, _SCALES = "_blocks", "_scales"


class MXFP4Experts(Logical):
    """One [experts, in, out] expert weight dequantized from its MXFP4 blocks and exponents."""

    def __init__(self, name: str, blocks: TensorEntry, scales: TensorEntry, dtype: str):
        self.experts, self.out, self.groups = blocks.shape[:3]
        self.inp = self.groups * 32
        # the blocks seen as one row of bytes per (expert, output), the scales one row of exponents per output
        self.blocks = dataclasses.replace(blocks, shape=(self.experts * self.out, self.groups * 16))
        self.scales = dataclasses.replace(scales, shape=(self.experts * self.out, self.groups))
        self.dtype = dtype
        super().__init__(logical_entry(name, (self.experts, self.inp, self.out), "MXFP4_e8m0_g32",
                                       (blocks, scales)), blocks.name)

    def rows(self, ckpt: Checkpoint, row0: int, n_rows: int) -> np.ndarray:
        out = np.empty((n_rows, self.out), np.float32)
        r = row0
        while r < row0 + n_rows:  # logical rows are (expert, input column): one expert at a time
            e, c0 = divmod(r, self.inp)
            c1 = min(self.inp, c0 + (row0 + n_rows - r))
            g0, g1 = c0 // 32, (c1 - 1) // 32 + 1
            packed = read_block(ckpt, self.blocks, e * self.out, self.out, g0 * 16, (g1 - g0) * 16)
            exps = read_block(ckpt, self.scales, e * self.out, self.out, g0, g1 - g0).astype(np.int32) - 127
            codes = np.empty((self.out, (g1 - g0) * 32), np.uint8)
            codes[:, 0::2], codes[:, 1::2] = packed & 0x0F, packed >> 4
            values = np.ldexp(E2M1[codes], np.repeat(exps, 32, axis=1)).astype(np.float32)
            values = round_to(values, self.dtype)[:, c0 - g0 * 32: c1 - g0 * 32]
            out[r - row0: r - row0 + (c1 - c0)] = values.T
            r += c1 - c0
        return out


def build(ctx: PackContext) -> tuple[list[MXFP4Experts], set[str]]:
    """Every `<proj>_blocks` with its `<proj>_scales` as a logical expert weight.

    Raises:
        CheckpointError: blocks and scales whose shapes or dtypes disagree.
    """
    config = ctx.ckpt.config or {}
    dtype = TORCH_FLOAT_NAMES.get(str(config.get("torch_dtype") or config.get("dtype") or "bfloat16"), "BF16")
    logical, hidden = [], set()
    for prefix in ctx.prefixes(_BLOCKS):
        blocks, scales = ctx.get(prefix + _BLOCKS), ctx.get(prefix + _SCALES)
        if scales is None:
            raise CheckpointError(f"{blocks.file}: tensor {blocks.name!r} has no {prefix}{_SCALES}; an MXFP4 weight "
                                  "needs its blocks and its scales")
        if blocks.dtype != "U8" or len(blocks.shape) != 4 or blocks.shape[3] != 16:
            raise bad_shape(blocks, "U8 [experts, out, in/32, 16]", "MXFP4 blocks of 32 values in 16 bytes",
                            f"{blocks.dtype} {list(blocks.shape)}")
        if scales.dtype != "U8" or tuple(scales.shape) != tuple(blocks.shape[:3]):
            raise bad_shape(scales, f"U8 {list(blocks.shape[:3])}", "one exponent per block of its _blocks",
                            f"{scales.dtype} {list(scales.shape)}")
        logical.append(MXFP4Experts(prefix, blocks, scales, dtype))
        hidden |= {blocks.name, scales.name}
    return logical, hidden


def claims(ctx: PackContext) -> bool:
    return any(n.endswith(_BLOCKS) and ctx.get(n[: -len(_BLOCKS)] + _SCALES) is not None for n in ctx.ckpt.entries)


FORMAT = PackFormat("mxfp4", ("mxfp4",), claims, build)
