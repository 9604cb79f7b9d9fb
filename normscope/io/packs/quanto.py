"""optimum-quanto serialized checkpoints: `<module>.weight._data/_scale[/_shift]` -> weight.

Layout (ref: optimum-quanto 0.2.7 optimum/quanto/nn/qmodule.py `QModuleMixin._save_to_state_dict`,
tensor/weights/qbytes.py and qbits.py `save_to_state_dict` / `load_from_state_dict`):

* qint8 / qfloat8: `_data` int8 or fp8 in the weight's shape, `_scale` (out, 1);
  weight = _scale · _data in the scale dtype (ref: tensor/qbytes.py `QBytesDequantizer`).
* qint4 / qint2: the weight is grouped along the input dimension into (n_groups, group) rows
  (ref: tensor/grouped.py `group`, axis 0: `base.reshape(-1, group_size)`), codes are uint8 and
  packed along dim 0 of that grouped array (ref: tensor/packed.py `pack_weights`: grouped row
  r = i·R + j is stored in packed row j at bits bits·i, R = ceil(n_groups·bits/8)), `_scale` and
  `_shift` are (n_groups, 1); weight = _scale · data − _shift with a float shift, or
  _scale · (data − _shift) with an integer one (ref: tensor/qbits.py `QBitsDequantizer`).
  The group size is 128 shrinking by 32 until it divides the inputs, none (per channel) when
  there are at most 128 inputs (ref: nn/qmodule.py `QModuleMixin.__init__`).
  The packed codes are stored as `<module>.weight._data._data` (the PackedTensor flattens too).
* `quanto_qmap.json` maps module -> {"weights": qtype, "activations": qtype}
  (ref: models/transformers_models.py `_qmap_name`); every quantized module also stores scalar
  `input_scale` / `output_scale` buffers, which are not weights.

A packed file does not store the (out, in) shape of a qint4/qint2 weight; it comes from the
module's bias, else from config.json (hidden/intermediate size) and the group-size rule.
"""

from __future__ import annotations

import re

import numpy as np

from ...errors import CheckpointError
from ...upstream import quanto_group_size
from ..checkpoint import Checkpoint, TensorEntry
from .base import Logical, PackContext, PackFormat, bad_shape, logical_entry, read_block, round_to

__all__ = ["FORMAT", "QuantoWeight", "QMAP_NAME", "quanto_group_size"]

QMAP_NAME = "quanto_qmap.json"
QTYPES = {"qint2": 2, "qint4": 4, "qint8": 8, "qfloat8": 8, "qfloat8_e4m3fn": 8, "qfloat8_e4m3fnuz": 8,
          "qfloat8_e5m2": 8}
_DATA, _SCALE, _SHIFT = ".weight._data", ".weight._scale", ".weight._shift"
_PACKED = ".weight._data._data"  # a PackedTensor inside the QBitsTensor flattens once more
# which config size feeds a Linear's inputs, by module name (first match wins)
_INPUT_HINTS = ((re.compile(r"(down_proj|fc2|w2|dense_4h_to_h|mlp\.c_proj|output\.dense)$"), "intermediate"),
                (re.compile(r"(o_proj|out_proj|attn\.c_proj|attention\.dense|self_attn\.dense)$"), "attention"),
                (re.compile(r".*"), "hidden"))


class QuantoWeight(Logical):
    """One quanto weight: qint8/qfloat8 rows, or qint4/qint2 groups unpacked from their bit planes."""

    def __init__(self, name: str, parts: dict[str, TensorEntry], qtype: str, shape: tuple[int, ...]):
        self.data, self.scale, self.shift = parts["data"], parts["scale"], parts.get("shift")
        self.bits = QTYPES[qtype]
        self.qtype = qtype
        super().__init__(logical_entry(name, shape, f"quanto_{qtype}", parts.values()), self.data.name)
        self.row_len = self.entry.row_len

    def rows(self, ckpt: Checkpoint, row0: int, n_rows: int) -> np.ndarray:
        if self.bits == 8:
            data = read_block(ckpt, self.data, row0, n_rows)  # (n, in) int8 or fp8
            scale = read_block(ckpt, self.scale, row0, n_rows).astype(np.float32)  # (n, 1)
            codes = round_to(data.astype(np.float32), self.scale.dtype)  # fp8 -> scale dtype first
            return round_to(codes * scale, self.scale.dtype)
        group = self.data.shape[1]
        per_row = self.row_len // group
        g0, g1 = row0 * per_row, (row0 + n_rows) * per_row  # grouped rows of this chunk
        packed_rows = self.data.shape[0]
        codes = np.empty((g1 - g0, group), np.uint8)
        mask = (1 << self.bits) - 1
        for plane in range(8 // self.bits):  # grouped row g is packed row g - plane·R at bits·plane
            a, b = max(g0, plane * packed_rows), min(g1, (plane + 1) * packed_rows)
            if a < b:
                raw = read_block(ckpt, self.data, a - plane * packed_rows, b - a)
                codes[a - g0:b - g0] = (raw >> (self.bits * plane)) & mask
        scale = read_block(ckpt, self.scale, g0, g1 - g0)
        shift = read_block(ckpt, self.shift, g0, g1 - g0)
        sdt = self.scale.dtype
        if self.shift.dtype.startswith(("F", "BF")):  # (bfloat16's numpy kind is "V", not "f")
            w = round_to(round_to(scale.astype(np.float32) * codes, sdt) - shift.astype(np.float32), sdt)
        else:
            w = round_to(scale.astype(np.float32) * (codes.astype(np.float32) - shift.astype(np.float32)), sdt)
        return w.reshape(n_rows, self.row_len)


def _hint_inputs(ctx: PackContext, module: str) -> int | None:
    sizes = {"hidden": ctx.config_int("hidden_size", "d_model", "n_embd"),
             "intermediate": ctx.config_int("intermediate_size", "ffn_dim", "n_inner", "d_ff")}
    heads, head_dim = ctx.config_int("num_attention_heads", "n_head"), ctx.config_int("head_dim")
    sizes["attention"] = heads * head_dim if heads and head_dim else sizes["hidden"]
    for pattern, key in _INPUT_HINTS:
        if pattern.search(module):
            return sizes[key]
    return None


def _grouped_shape(ctx: PackContext, module: str, n_groups: int, group: int, data: TensorEntry) -> tuple[int, int]:
    """(out, in) of a qint4/qint2 weight stored as n_groups rows of `group` codes."""
    total = n_groups * group
    bias = ctx.get(module + ".bias")
    if bias is not None and len(bias.shape) == 1 and bias.shape[0] and total % bias.shape[0] == 0:
        return bias.shape[0], total // bias.shape[0]
    # inputs consistent with quanto's group-size rule: `group` itself (per channel) or a multiple
    cands = [k * group for k in range(1, n_groups + 1) if n_groups % k == 0
             and quanto_group_size(k * group) == (group if k > 1 else None)]
    hint = _hint_inputs(ctx, module)
    if hint in cands:
        return total // hint, hint
    if len(cands) == 1:
        return total // cands[0], cands[0]
    raise CheckpointError(f"{data.file}: cannot tell the shape of quanto tensor {data.name!r}: {total} values in "
                          f"groups of {group} fit {len(cands)} (out, in) shapes; add the model's config.json "
                          "(hidden_size, intermediate_size) next to the weights")


def _qtype(ctx: PackContext, module: str, data: TensorEntry, scale: TensorEntry, shift: TensorEntry | None) -> str:
    qmap = ctx.side_files.get(QMAP_NAME) or {}
    entry = qmap.get(module) if isinstance(qmap, dict) else None
    name = entry.get("weights") if isinstance(entry, dict) else None
    if name in QTYPES:
        return name
    if name not in (None, "none"):
        raise CheckpointError(f"{ctx.directory / QMAP_NAME}: module {module!r} has weights qtype {name!r}; "
                              f"normscope reads {', '.join(QTYPES)}")
    if data.dtype == "I8":
        return "qint8"
    if data.dtype.startswith("F8"):
        return {"F8_E4M3": "qfloat8_e4m3fn", "F8_E5M2": "qfloat8_e5m2"}[data.dtype]
    n_groups = scale.shape[0] if scale.shape else 0
    for q, bits in (("qint4", 4), ("qint2", 2)):
        if shift is not None and data.shape[0] == -(-n_groups * bits // 8):
            return q
    raise bad_shape(data, "int8, fp8, or uint8 packed rows", "quanto weight data", f"{data.dtype} {list(data.shape)}")


def _module(ctx: PackContext, module: str) -> QuantoWeight:
    data = ctx.get(module + _PACKED) or ctx.get(module + _DATA)
    scale, shift = ctx.get(module + _SCALE), ctx.get(module + _SHIFT)
    assert scale is not None
    if data is None:
        raise CheckpointError(f"{scale.file}: tensor {scale.name!r} has no {module}{_DATA}; a quanto weight needs "
                              "_data and _scale")
    qtype = _qtype(ctx, module, data, scale, shift)
    bits = QTYPES[qtype]
    parts = {"data": data, "scale": scale}
    if bits == 8:
        if len(data.shape) != 2:
            raise bad_shape(data, "a 2-D tensor", f"{qtype} Linear weight", list(data.shape))
        if scale.shape != (data.shape[0], 1):
            raise bad_shape(scale, [data.shape[0], 1], f"one {qtype} scale per output")
        return QuantoWeight(module + ".weight", parts, qtype, data.shape)
    if shift is None:
        raise CheckpointError(f"{data.file}: tensor {data.name!r} ({qtype}) has no {module}{_SHIFT}")
    parts["shift"] = shift
    if data.dtype != "U8" or len(data.shape) != 2:
        raise bad_shape(data, "a 2-D U8 tensor", f"{qtype} codes packed {8 // bits} per byte",
                        f"{data.dtype} {list(data.shape)}")
    n_groups, group = (scale.shape[0] if len(scale.shape) == 2 else -1), data.shape[1]
    if scale.shape != (n_groups, 1) or shift.shape != (n_groups, 1):
        raise bad_shape(shift if scale.shape == (n_groups, 1) else scale, "[n_groups, 1]", f"{qtype} scale and shift")
    if data.shape[0] != -(-n_groups * bits // 8):
        raise bad_shape(data, [-(-n_groups * bits // 8), group], f"{n_groups} groups of {group} {bits}-bit codes")
    return QuantoWeight(module + ".weight", parts, qtype, _grouped_shape(ctx, module, n_groups, group, data))


def build(ctx: PackContext) -> tuple[list[QuantoWeight], set[str]]:
    """Every quanto-quantized weight as a logical weight, and the tensor names it hides.

    Raises:
        CheckpointError: a qtype normscope does not read, inconsistent shapes, or a qint4 shape that
            neither a bias nor config.json pins down.
    """
    logical, hidden = [], set()
    for module in ctx.prefixes(_SCALE):
        logical.append(_module(ctx, module))
        hidden |= {module + s for s in (_DATA, _PACKED, _SCALE, _SHIFT)}
    qmap = ctx.side_files.get(QMAP_NAME) or {}
    for module in list(qmap) + [lg.entry.name[: -len(".weight")] for lg in logical]:
        hidden |= {f"{module}.input_scale", f"{module}.output_scale"}
    return logical, hidden


def claims(ctx: PackContext) -> bool:
    return QMAP_NAME in ctx.side_files or any(n.endswith(_SCALE) for n in ctx.ckpt.entries)


FORMAT = PackFormat("quanto", ("quanto",), claims, build)
