"""compressed-tensors checkpoints (llm-compressor, vLLM): pack-, naive-, int- and float-quantized.

Layout (ref: compressed-tensors 0.20 compressors/pack_quantized/base.py
`PackedQuantizationCompressor.compress` / `decompress`, pack_quantized/helpers.py `pack_to_int32`):

* pack-quantized: `weight_packed` int32 (out, ceil(in·bits/32)), code i of a row at bit i·bits of
  the row's word stream, stored as q + 2^(bits−1); `weight_shape` holds [out, in]; asymmetric
  group/channel zero points are packed the same way along the *output* dimension
  (`packed_dim=0`). Releases before the dense layout put 32 // bits codes in each word without
  straddling (identical for 2, 4 and 8 bits); the word count tells the two apart.
* naive-/int-quantized: `weight` int8 codes; float-quantized: `weight` FP8 codes.
* `weight_scale` per tensor, channel, group or block, optional `weight_zero_point`, optional
  `weight_g_idx` (activation order, older releases); weight = (q − zero) · scale in the scale dtype
  (ref: quantization/lifecycle/forward_helpers.py `_dequantize`).

The scheme of a module comes from `quantization_config.config_groups` (targets "Linear",
"re:<regex>" or module names; `ignore` leaves a module alone), else from the tensors' shapes.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from ...errors import CheckpointError
from ..checkpoint import Checkpoint, TensorEntry
from .base import PackContext, PackFormat, bad_shape, read_block, read_small
from .bits import stream_words, unpack_per_word, unpack_stream
from .fp8 import fp8_label
from .scaled import ScaledWeight, block_dims

__all__ = ["FORMAT", "FORMATS"]

FORMATS = ("pack-quantized", "naive-quantized", "int-quantized", "float-quantized", "mixed-precision")
_AUX = ("weight_packed", "weight_scale", "weight_zero_point", "weight_shape", "weight_g_idx", "weight_global_scale",
        "input_scale", "input_zero_point", "input_global_scale", "output_scale", "output_zero_point")
_FP8 = ("F8_E4M3", "F8_E5M2")


def _scheme(ctx: PackContext, module: str) -> dict[str, Any]:
    """The `weights` quantization args of the config group that targets `module` ({} if none)."""
    groups = ctx.qconfig.get("config_groups") or {}
    generic = None
    for group in groups.values() if isinstance(groups, dict) else []:
        if not isinstance(group, dict):
            continue
        for target in group.get("targets") or []:
            t = str(target)
            if t == module or (t.startswith("re:") and re.match(t[3:], module)):
                return group.get("weights") or {}
            if generic is None and "." not in t and not t.startswith("re:"):
                generic = group.get("weights") or {}
    return generic or {}


def _block(args: dict[str, Any]) -> tuple[int, int] | None:
    b = args.get("block_structure")
    if isinstance(b, str) and "x" in b:  # older releases: "128x128"
        b = [int(v) for v in b.split("x")]
    return (int(b[0]), int(b[1])) if isinstance(b, (list, tuple)) and len(b) == 2 else None


def _label(kind: str, bits: int, block: tuple[int, int], shape: tuple[int, int]) -> str:
    if kind in _FP8:
        return "CT_" + fp8_label(kind, block, shape)
    bh, bw = block
    if bh >= shape[0] and bw >= shape[1]:
        tail = "t"
    elif bh == 1 and bw >= shape[1]:
        tail = "ch"
    elif bh == 1:
        tail = f"g{bw}"
    else:
        tail = f"b{bh}x{bw}"
    return f"CT_int{bits}_{tail}"


def _packed_reader(entry: TensorEntry, bits: int, count: int, dense: bool, axis: int):
    """Signed codes out of int32 words packed along `axis` (1: a row's inputs, 0: a column's outputs)."""
    offset = np.float32(1 << (bits - 1))
    per = 32 // bits

    def read(ckpt: Checkpoint, first: int, n: int) -> np.ndarray:
        if axis == 1:  # whole rows: all `count` codes of each
            words = read_block(ckpt, entry, first, n)
            if dense:
                codes = unpack_stream(words, bits, count, axis=1)
            else:
                codes = unpack_per_word(words, bits, axis=1)[:, :count]
        elif dense:  # rows [first, first + n) of codes packed down the columns
            w0, w1 = first * bits // 32, stream_words(first + n, bits)
            codes = unpack_stream(read_block(ckpt, entry, w0, w1 - w0), bits, n, axis=0, bit0=first * bits - 32 * w0)
        else:
            w0, w1 = first // per, -(-(first + n) // per)
            codes = unpack_per_word(read_block(ckpt, entry, w0, w1 - w0), bits, axis=0)[first - w0 * per:][:n]
        return codes.astype(np.float32) - offset
    return read


def _plain_reader(entry: TensorEntry):
    """float32 rows of an unpacked code or zero-point tensor (a scalar reads as 1×1)."""
    def read(ckpt: Checkpoint, first: int, n: int) -> np.ndarray:
        if len(entry.shape) == 0 or entry.shape == (1,):
            return read_small(ckpt, entry).reshape(1, 1).astype(np.float32)
        if len(entry.shape) == 1:
            return read_block(ckpt, entry, 0, 1, first, n).reshape(-1, 1).astype(np.float32)
        return read_block(ckpt, entry, first, n).astype(np.float32)
    return read


def _layout(words: int, count: int, bits: int, entry: TensorEntry, what: str) -> bool:
    """True for the dense stream, False for the older per-word layout; else the pack is malformed."""
    if words == stream_words(count, bits):
        return True
    if words == -(-count // (32 // bits)):
        return False
    raise bad_shape(entry, f"{stream_words(count, bits)} int32 words", f"{count} {bits}-bit {what}", words)


def _module(ctx: PackContext, module: str) -> tuple[ScaledWeight, set[str]]:
    get = lambda s: ctx.get(f"{module}.{s}")  # noqa: E731
    packed, weight, scale = get("weight_packed"), get("weight"), get("weight_scale")
    args = _scheme(ctx, module)
    anchor = packed or weight
    assert anchor is not None and scale is not None
    zp_entry, g_idx = get("weight_zero_point"), get("weight_g_idx")
    if packed is not None:
        shape_e = get("weight_shape")
        if shape_e is None:
            raise CheckpointError(f"{packed.file}: tensor {packed.name!r} has no {module}.weight_shape; "
                                  "a pack-quantized weight needs it")
        dims = [int(v) for v in read_small(ctx.ckpt, shape_e, 8).reshape(-1)]
        if len(dims) != 2 or packed.dtype != "I32" or len(packed.shape) != 2 or packed.shape[0] != dims[0]:
            raise bad_shape(packed, f"I32 [{dims[0] if dims else '?'}, words]", f"weight_shape {dims}",
                            f"{packed.dtype} {list(packed.shape)}")
        out, inp = dims
        bits = args.get("num_bits")
        if bits is None:  # no config: the word count tells (the dense layout first)
            cands = [b for b in range(1, 9) if stream_words(inp, b) == packed.shape[1]]
            if len(cands) != 1:
                raise CheckpointError(f"{packed.file}: cannot tell the bit width of {packed.name!r} (bits "
                                      f"{cands or 'none'} fit); add config.json with quantization_config")
            bits = cands[0]
        bits = int(bits)
        dense = _layout(packed.shape[1], inp, bits, packed, "codes per row")
        codes, kind = _packed_reader(packed, bits, inp, dense, axis=1), "int"
        parts = [packed, scale, shape_e]
    else:
        assert weight is not None
        if len(weight.shape) != 2 or weight.dtype not in ("I8",) + _FP8:
            raise bad_shape(weight, "a 2-D I8 or FP8 tensor", "it has a weight_scale",
                            f"{weight.dtype} {list(weight.shape)}")
        out, inp = weight.shape
        bits, kind = 8, (weight.dtype if weight.dtype in _FP8 else "int")
        codes, parts = _plain_reader(weight), [weight, scale]
    strategy = str(args.get("strategy") or "")
    group = args.get("group_size") if strategy in ("group", "tensor_group", "") else None
    block = _block(args) if strategy == "block" else (1, inp) if strategy == "channel" else \
        (out, inp) if strategy == "tensor" else None
    if g_idx is None:
        bh, bw = block_dims(scale, out, inp, block, group)
    else:  # the scale's columns are groups picked by g_idx, one scale row per output
        if len(scale.shape) != 2 or scale.shape[0] != out:
            raise bad_shape(scale, f"[{out}, n_groups]", "a per-group scale indexed by weight_g_idx")
        bh, bw = 1, int(group or -(-inp // scale.shape[1]))
        parts.append(g_idx)
    zeros = None
    if zp_entry is not None:
        parts.append(zp_entry)
        if zp_entry.dtype == "I32" and scale.shape and zp_entry.shape != scale.shape:
            grid_rows, grid_cols = (scale.shape + (1,))[:2] if len(scale.shape) < 2 else scale.shape
            if len(zp_entry.shape) != 2 or zp_entry.shape[1] != grid_cols:
                raise bad_shape(zp_entry, f"[words, {grid_cols}]", "zero points packed along the outputs")
            zdense = _layout(zp_entry.shape[0], grid_rows, bits, zp_entry, "zero points per column")
            zeros = _packed_reader(zp_entry, bits, grid_rows, zdense, axis=0)
        else:
            if zp_entry.n_elements != scale.n_elements:
                raise bad_shape(zp_entry, list(scale.shape), "one zero point per scale")
            zeros = _plain_reader(zp_entry)
    label = _label(kind, bits, (bh, bw), (out, inp))
    lg = ScaledWeight(module + ".weight", (out, inp), label, parts, anchor.name, codes, scale, (bh, bw),
                      zeros=zeros, g_idx=g_idx)
    return lg, {f"{module}.{s}" for s in _AUX}


def build(ctx: PackContext) -> tuple[list[ScaledWeight], set[str]]:
    """Every compressed weight as a logical weight, and the tensor names it hides.

    Raises:
        CheckpointError: a format normscope does not read (nvfp4, mxfp4, …) or inconsistent tensors.
    """
    fmt = str(ctx.qconfig.get("format") or "")
    if fmt and fmt not in FORMATS + ("dense",):
        raise CheckpointError(f"{ctx.directory}: compressed-tensors format {fmt!r} is not read; normscope reads "
                              f"{', '.join(FORMATS)}")
    ignore = [str(i) for i in ctx.qconfig.get("ignore") or []]
    logical, hidden = [], set()
    for module in dict.fromkeys(ctx.prefixes(".weight_scale")):
        if any(i == module or (i.startswith("re:") and re.match(i[3:], module)) for i in ignore):
            continue
        if ctx.get(module + ".weight_packed") is None and ctx.get(module + ".weight") is None:
            continue
        lg, aux = _module(ctx, module)
        logical.append(lg)
        hidden |= aux
    return logical, hidden


def claims(ctx: PackContext) -> bool:
    return any(n.endswith(".weight_packed") and ctx.get(n[: -len("_packed")] + "_shape") is not None
               for n in ctx.ckpt.entries)


FORMAT = PackFormat("compressed-tensors", ("compressed-tensors",), claims, build)
