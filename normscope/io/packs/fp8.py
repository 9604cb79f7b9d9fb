"""FP8 checkpoints with scales: `<module>.weight` F8_E4M3 + `weight_scale_inv` per block -> weight.

DeepSeek-V3 style (transformers `FineGrainedFP8Config`, quant_method "fp8"): one float32
`weight_scale_inv` per 128×128 block (`quantization_config.weight_block_size`), the last block of
a dimension possibly partial; weight = fp8 · scale_inv (ref: transformers
integrations/finegrained_fp8.py `Fp8Quantize._quantize_one` and `Fp8Dequantize._dequantize_one`).
fbgemm FP8 (quant_method "fbgemm_fp8") stores one `weight_scale` per output row
(ref: transformers integrations/fbgemm_fp8.py `FbgemmFp8Linear`). Activation scales
(`input_scale`, `activation_scale`, `input_scale_ub`) are not weights and are hidden.
"""

from __future__ import annotations

import numpy as np

from ..checkpoint import Checkpoint, TensorEntry
from .base import PackContext, PackFormat, bad_shape, read_block
from .scaled import ScaledWeight, block_dims

__all__ = ["FORMAT", "fp8_label"]

_SCALES = ("weight_scale_inv", "weight_scale")
_ACTIVATION = ("input_scale", "activation_scale", "input_scale_ub")
_FP8 = ("F8_E4M3", "F8_E5M2")


def fp8_label(dtype: str, block: tuple[int, int], shape: tuple[int, int]) -> str:
    """FP8_E4M3_b128 (square blocks), _b128x64, _ch (per row) or _t (per tensor).

    Example:
        >>> fp8_label("F8_E4M3", (128, 128), (256, 512)), fp8_label("F8_E4M3", (1, 512), (256, 512))
        ('FP8_E4M3_b128', 'FP8_E4M3_ch')
    """
    name = "FP8_" + dtype.removeprefix("F8_")
    bh, bw = block
    if (bh, bw) == shape or (bh >= shape[0] and bw >= shape[1]):
        return name + "_t"
    if bh == 1 and bw >= shape[1]:
        return name + "_ch"
    return name + (f"_b{bh}" if bh == bw else f"_b{bh}x{bw}")


def _block(block: tuple[int, int] | None, suffix: str, scale: TensorEntry, out: int, inp: int
           ) -> tuple[int, int] | None:
    """The configured block, else DeepSeek-V3's 128×128 when the grid fits it (a grid of 2×3 over
    200×300 also fits 100×100 blocks: the default decides), else None (inferred from the grid)."""
    if suffix != "weight_scale_inv":
        return None
    if block is not None:
        return block
    # ref: transformers FineGrainedFP8Config weight_block_size default (128, 128)
    fits = len(scale.shape) == 2 and scale.shape == (-(-out // 128), -(-inp // 128))
    return (128, 128) if fits else None


def _fp8_codes(weight: TensorEntry):
    def read(ckpt: Checkpoint, row0: int, n_rows: int) -> np.ndarray:
        return read_block(ckpt, weight, row0, n_rows).astype(np.float32)
    return read


def build(ctx: PackContext) -> tuple[list[ScaledWeight], set[str]]:
    """Every FP8 weight with a scale as a logical weight, and the scale tensors it hides.

    Raises:
        CheckpointError: a scale grid that does not tile its weight, or a scale of a non-FP8 weight.
    """
    cfg_block = ctx.qconfig.get("weight_block_size")
    block = tuple(cfg_block) if isinstance(cfg_block, (list, tuple)) and len(cfg_block) == 2 else None
    logical, hidden = [], set()
    for suffix in _SCALES:
        for module in ctx.prefixes("." + suffix):
            weight, scale = ctx.get(module + ".weight"), ctx.get(f"{module}.{suffix}")
            if weight is None or module + ".weight" in {lg.entry.name for lg in logical}:
                continue
            if weight.dtype not in _FP8 or len(weight.shape) != 2:
                raise bad_shape(weight, "a 2-D F8_E4M3 or F8_E5M2 tensor", f"it has a {suffix}",
                                f"{weight.dtype} {list(weight.shape)}")
            out, inp = weight.shape
            bh, bw = block_dims(scale, out, inp, _block(block, suffix, scale, out, inp))
            label = fp8_label(weight.dtype, (bh, bw), (out, inp))
            logical.append(ScaledWeight(weight.name, (out, inp), label, [weight, scale], weight.name,
                                        _fp8_codes(weight), scale, (bh, bw)))
            hidden |= {f"{module}.{s}" for s in _SCALES + _ACTIVATION}
    return logical, hidden


def claims(ctx: PackContext) -> bool:
    return any(n.endswith(".weight_scale_inv") and ctx.get(n[: -len("_scale_inv")]) is not None
               and ctx.get(n[: -len("_scale_inv")]).dtype in _FP8 for n in ctx.ckpt.entries)


FORMAT = PackFormat("fp8", ("fp8", "fbgemm_fp8"), claims, build)
