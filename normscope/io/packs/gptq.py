"""GPTQ packs (auto-gptq, GPTQModel, optimum, transformers): qweight/qzeros/scales[/g_idx] -> weight.

Layout (ref: GPTQModel gptqmodel/nn_modules/qlinear/__init__.py `PackableQuantLinear.pack_original`
and `_register_gptq_buffers`; auto-gptq auto_gptq/nn_modules/qlinear/qlinear_cuda_old.py `pack`):

* `qweight` int32 (ceil(in·bits/32), out): codes packed along the *input* dimension, value i of a
  column at bit i·bits of the column's word stream (for 3 bits a value straddles words);
* `qzeros` int32 (n_groups, ceil(out·bits/32)): zero points packed the same way along the *output*
  dimension; checkpoint_format "gptq" (v1) stores zero − 1, "gptq_v2" stores zero;
* `scales` (n_groups, out) fp16, `g_idx` int32 (in,) the group of each input column (act-order);
* weight[o, i] = scales[g_idx[i], o] · (q[i, o] − zero[g_idx[i], o]), computed in the scale dtype
  (ref: GPTQModel `PackableQuantLinear._dequantize_from_codes`).

A logical row is a column of qweight, so a chunk of rows reads a column slab (`read_block`).
"""

from __future__ import annotations

import logging

import numpy as np

from ...errors import CheckpointError
from ..checkpoint import Checkpoint, TensorEntry
from .base import Logical, PackContext, PackFormat, bad_shape, logical_entry, read_block, read_small, round_to
from .bits import stream_words, unpack_stream

__all__ = ["FORMAT", "GPTQWeight", "V1_FORMATS", "V2_FORMATS"]

log = logging.getLogger(__name__)

BITS = (2, 3, 4, 8)
V1_FORMATS = ("gptq",)  # ref: GPTQModel utils/model_dequant.py `_uses_gptq_v1_qzeros`
V2_FORMATS = ("gptq_v2",)
_SCALE_DTYPES = ("F16", "BF16", "F32")


def _v1_to_v2_words(words: np.ndarray, bits: int) -> np.ndarray:
    """v1 qzeros words (zero − 1 per field) as v2 words.

    ref: GPTQModel utils/model.py `convert_gptq_v1_to_v2_format_module`: for 2/4/8 bits a whole-word
    add of 0x55555555 / 0x11111111 / 0x01010101 (carries included, the exact inverse of its v2->v1
    export); 3-bit fields straddle words, so each field gets +1 modulo 8 after unpacking instead.
    """
    const = sum(1 << (k * bits) for k in range(32 // bits))
    return (words.view(np.uint32).astype(np.uint64) + const).astype(np.uint32)


class GPTQWeight(Logical):
    """The dequantized (out, in) weight of one GPTQ-packed Linear."""

    def __init__(self, name: str, parts: dict[str, TensorEntry], bits: int, group_size: int, in_features: int,
                 v1: bool, label: str):
        self.q, self.z, self.s, self.g = parts["qweight"], parts["qzeros"], parts["scales"], parts.get("g_idx")
        self.bits, self.in_features, self.v1 = bits, in_features, v1
        self.group_size = group_size
        self.out_features = self.q.shape[1]
        self.n_groups = self.s.shape[0]
        self._g_idx: np.ndarray | None = None
        super().__init__(logical_entry(name, (self.out_features, in_features), label, parts.values()), self.q.name)

    def _groups(self, ckpt: Checkpoint) -> np.ndarray | None:
        """g_idx when it is not the plain i // group_size (act-order), else None."""
        if self.g is None:
            return None
        if self._g_idx is None:
            g = read_small(ckpt, self.g).astype(np.int64)
            if g.size and (g.min() < 0 or g.max() >= self.n_groups):
                raise CheckpointError(f"{self.g.file}: tensor {self.g.name!r}: expected group indices in "
                                      f"[0, {self.n_groups}), found {int(g.min())}..{int(g.max())}; "
                                      "the pack is corrupt")
            plain = np.arange(self.in_features) // self.group_size
            self._g_idx = np.empty(0, np.int64) if np.array_equal(g, plain) else g
        return self._g_idx if self._g_idx.size else None

    def rows(self, ckpt: Checkpoint, row0: int, n_rows: int) -> np.ndarray:
        bits = self.bits
        codes = unpack_stream(read_block(ckpt, self.q, 0, self.q.shape[0], row0, n_rows), bits,
                              self.in_features, axis=0)  # (in, n)
        w0, w1 = row0 * bits // 32, stream_words(row0 + n_rows, bits)
        zwords = read_block(ckpt, self.z, 0, self.n_groups, w0, w1 - w0)  # (n_groups, words)
        if self.v1 and bits != 3:
            zwords = _v1_to_v2_words(zwords, bits)
        zeros = unpack_stream(zwords, bits, n_rows, axis=1, bit0=row0 * bits - 32 * w0)  # (n_groups, n)
        if self.v1 and bits == 3:
            zeros = (zeros + 1) & 7
        scales = read_block(ckpt, self.s, 0, self.n_groups, row0, n_rows)  # (n_groups, n)
        g = self._groups(ckpt)
        zf, sf = zeros.astype(np.float32), scales.astype(np.float32)
        w = codes.astype(np.float32)  # (in, n)
        if g is None and self.in_features % self.group_size == 0:  # consecutive runs of group_size inputs
            runs = w.reshape(self.n_groups, self.group_size, n_rows)
            runs -= zf[:, None]
            runs *= sf[:, None]
        else:
            idx = np.arange(self.in_features) // self.group_size if g is None else g
            w -= zf[idx]
            w *= sf[idx]
        return np.ascontiguousarray(round_to(w, self.s.dtype).T)


def _settings(ctx: PackContext) -> tuple[int | None, int | None, bool, bool]:
    """(bits, group_size, v1, desc_act) from the quantization config; None when it does not say."""
    q = ctx.qconfig
    bits = q.get("bits")
    gs = q.get("group_size")
    fmt = str(q.get("checkpoint_format") or q.get("format") or "gptq").lower()
    if fmt not in V1_FORMATS + V2_FORMATS:
        raise CheckpointError(f"{ctx.directory}: GPTQ checkpoint_format {fmt!r} is a kernel layout normscope does not "
                              f"read (it reads {', '.join(V1_FORMATS + V2_FORMATS)}); re-save the model in gptq format")
    if bits is not None and bits not in BITS:
        raise CheckpointError(f"{ctx.directory}: GPTQ bits={bits!r} in the quantization config; normscope reads "
                              f"{', '.join(map(str, BITS))}")
    return bits, gs, fmt in V1_FORMATS, bool(q.get("desc_act"))


def _module(ctx: PackContext, prefix: str, bits: int | None, gs: int | None, v1: bool, desc_act: bool) -> GPTQWeight:
    parts = ctx.module_parts(prefix, ("qweight", "qzeros", "scales"), ("g_idx",), pack="a GPTQ pack")
    q, z, s, g = parts["qweight"], parts["qzeros"], parts["scales"], parts["g_idx"]
    if q.dtype != "I32" or len(q.shape) != 2:
        raise bad_shape(q, "a 2-D I32 tensor", "GPTQ qweight", f"{q.dtype} {list(q.shape)}")
    if s.dtype not in _SCALE_DTYPES or len(s.shape) != 2:
        raise bad_shape(s, f"a 2-D {'/'.join(_SCALE_DTYPES)} tensor", "GPTQ scales", f"{s.dtype} {list(s.shape)}")
    words, out = q.shape
    if bits is None:  # no config: the g_idx length, else the qzeros width, tells
        if g is not None and len(g.shape) == 1:
            cands = [b for b in BITS if _inputs(words, b) == g.shape[0]]
        else:
            cands = [b for b in BITS if len(z.shape) == 2 and z.shape[1] == stream_words(out, b)]
        if len(cands) != 1:
            raise CheckpointError(f"{q.file}: cannot tell the bit width of GPTQ tensor {q.name!r} (bits "
                                  f"{cands or 'none'} fit its shapes); add config.json with quantization_config.bits")
        bits = cands[0]
    in_features = _inputs(words, bits)
    if in_features is None:
        raise bad_shape(q, "a row count divisible by 3", "3-bit GPTQ packs 32 inputs in 3 words")
    if g is not None and (g.dtype not in ("I32", "I64") or g.shape != (in_features,)):
        raise bad_shape(g, f"I32 [{in_features}]", f"one group index per input of a {bits}-bit pack",
                        f"{g.dtype} {list(g.shape)}")
    if gs is None:  # no config: the scales' rows tell the group size
        n = s.shape[0]
        if not n or in_features % n:
            raise bad_shape(s, f"a row count dividing {in_features}", f"{bits}-bit GPTQ groups of {in_features} inputs")
        group = in_features // n
    else:
        group = in_features if int(gs) <= 0 else int(gs)
    n_groups = -(-in_features // group)
    if s.shape != (n_groups, out):
        raise bad_shape(s, list((n_groups, out)), f"{bits}-bit GPTQ, {in_features} inputs in groups of {group}")
    if z.dtype != "I32" or z.shape != (n_groups, stream_words(out, bits)):
        raise bad_shape(z, f"I32 {[n_groups, stream_words(out, bits)]}", f"{bits}-bit zeros of {out} outputs",
                        f"{z.dtype} {list(z.shape)}")
    label = f"GPTQ_{bits}bit_" + (f"g{group}" if group < in_features else "ch") + ("_act" if desc_act else "")
    found = {k: v for k, v in parts.items() if v is not None}
    return GPTQWeight(f"{prefix}.weight", found, bits, group, in_features, v1, label)


def _inputs(words: int, bits: int) -> int | None:
    """Input features of a qweight with `words` rows (3 bits: 32 inputs per 3 words)."""
    if bits == 3:
        return words // 3 * 32 if words % 3 == 0 else None
    return words * (32 // bits)


def build(ctx: PackContext) -> tuple[list[GPTQWeight], set[str]]:
    """Every GPTQ-packed Linear of the checkpoint as a logical weight, and the tensor names it hides.

    Raises:
        CheckpointError: a pack whose tensors disagree with each other or with the config.
    """
    bits, gs, v1, desc_act = _settings(ctx)
    if not ctx.qconfig:
        log.info("%s: GPTQ pack without a quantization config: reading qzeros as v1 (zero - 1)", ctx.directory)
    logical, hidden = [], set()
    for prefix in ctx.prefixes(".qweight"):
        logical.append(_module(ctx, prefix, bits, gs, v1, desc_act))
        hidden |= {f"{prefix}.{k}" for k in ("qweight", "qzeros", "scales", "g_idx")}
    return logical, hidden


def claims(ctx: PackContext) -> bool:
    """A qweight whose scales have as many columns as qweight (AWQ's have 8× as many)."""
    for prefix in ctx.prefixes(".qweight"):
        q, s = ctx.get(prefix + ".qweight"), ctx.get(prefix + ".scales")
        if q is not None and s is not None and len(q.shape) == 2 and len(s.shape) == 2:
            return s.shape[1] == q.shape[1]
    return False


FORMAT = PackFormat("gptq", ("gptq",), claims, build)
