"""AWQ GEMM packs (AutoAWQ, transformers, llm-compressor's AWQ export): qweight/qzeros/scales -> weight.

Layout (ref: AutoAWQ awq/modules/linear/gemm.py `WQLinear_GEMM.__init__` and `from_linear`):

* `qweight` int32 (in, out/8): eight 4-bit codes per word along the *output* dimension, in the
  order [0, 2, 4, 6, 1, 3, 5, 7] (field k holds output 8·c + order_map[k]);
* `qzeros` int32 (in/group, out/8), packed the same way, zero points stored as they are;
* `scales` fp16 (in/group, out);
* weight[o, i] = scales[i // group, o] · (q[i, o] − zero[i // group, o]), in the scale dtype
  (ref: AutoAWQ awq/utils/packing_utils.py `dequantize_gemm`).

Only the GEMM layout is read; GEMV, Marlin and ExLlama layouts are kernel-specific repackings.
"""

from __future__ import annotations

import numpy as np

from ...errors import CheckpointError
from ..checkpoint import Checkpoint, TensorEntry
from .base import Logical, PackContext, PackFormat, bad_shape, logical_entry, read_block, round_to
from .bits import unpack_per_word

__all__ = ["FORMAT", "AWQWeight", "AWQ_ORDER"]

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # ref: AutoAWQ awq/utils/packing_utils.py AWQ_ORDER
VERSIONS = ("gemm",)
_SCALE_DTYPES = ("F16", "BF16", "F32")


class AWQWeight(Logical):
    """The dequantized (out, in) weight of one AWQ GEMM-packed Linear."""

    def __init__(self, name: str, parts: dict[str, TensorEntry], group_size: int, label: str):
        self.q, self.z, self.s = parts["qweight"], parts["qzeros"], parts["scales"]
        self.in_features, self.out_features = self.q.shape[0], self.q.shape[1] * 8
        self.group_size, self.n_groups = group_size, self.s.shape[0]
        super().__init__(logical_entry(name, (self.out_features, self.in_features), label, parts.values()),
                         self.q.name)

    def rows(self, ckpt: Checkpoint, row0: int, n_rows: int) -> np.ndarray:
        c0, c1 = row0 // 8, -(-(row0 + n_rows) // 8)  # word columns covering the outputs
        lo = row0 - 8 * c0
        codes = unpack_per_word(read_block(ckpt, self.q, 0, self.in_features, c0, c1 - c0), 4,
                                axis=1, order=AWQ_ORDER)[:, lo:lo + n_rows]  # (in, n)
        zeros = unpack_per_word(read_block(ckpt, self.z, 0, self.n_groups, c0, c1 - c0), 4,
                                axis=1, order=AWQ_ORDER)[:, lo:lo + n_rows].astype(np.float32)
        scales = read_block(ckpt, self.s, 0, self.n_groups, row0, n_rows).astype(np.float32)
        w = codes.astype(np.float32)
        runs = w.reshape(self.n_groups, self.group_size, n_rows)
        runs -= zeros[:, None]
        runs *= scales[:, None]
        return np.ascontiguousarray(round_to(w, self.s.dtype).T)


def _settings(ctx: PackContext) -> tuple[int | None, str]:
    q = ctx.qconfig
    bits = q.get("bits", q.get("w_bit", 4))
    version = str(q.get("version") or "gemm").lower()
    if version not in VERSIONS:
        raise CheckpointError(f"{ctx.directory}: AWQ version {version!r} is a kernel layout normscope does not read "
                              f"(it reads {', '.join(VERSIONS)}); re-save the model with version GEMM")
    if bits != 4:
        raise CheckpointError(f"{ctx.directory}: AWQ bits={bits!r}; the GEMM layout holds 4-bit codes only")
    gs = q.get("group_size", q.get("q_group_size"))
    return (None if gs is None else int(gs)), version


def _module(ctx: PackContext, prefix: str, gs: int | None) -> AWQWeight:
    parts = ctx.module_parts(prefix, ("qweight", "qzeros", "scales"), pack="an AWQ pack")
    q, z, s = parts["qweight"], parts["qzeros"], parts["scales"]
    if q.dtype != "I32" or len(q.shape) != 2:
        raise bad_shape(q, "a 2-D I32 tensor", "AWQ qweight", f"{q.dtype} {list(q.shape)}")
    if s.dtype not in _SCALE_DTYPES or len(s.shape) != 2:
        raise bad_shape(s, f"a 2-D {'/'.join(_SCALE_DTYPES)} tensor", "AWQ scales", f"{s.dtype} {list(s.shape)}")
    in_features, out = q.shape[0], q.shape[1] * 8
    if gs is None or gs <= 0:
        group = in_features if gs is not None else (in_features // s.shape[0] if s.shape[0] else 0)
    else:
        group = gs
    if not group or in_features % group:  # ref: WQLinear_GEMM asserts in_features % group_size == 0
        raise bad_shape(s, f"a row count dividing {in_features}", "AWQ groups split the inputs evenly")
    n_groups = in_features // group
    if s.shape != (n_groups, out):
        raise bad_shape(s, [n_groups, out], f"AWQ, {in_features} inputs in groups of {group}, {out} outputs")
    if z.dtype != "I32" or z.shape != (n_groups, out // 8):
        raise bad_shape(z, f"I32 {[n_groups, out // 8]}", "AWQ zeros, 8 per word", f"{z.dtype} {list(z.shape)}")
    label = "AWQ_4bit_" + (f"g{group}" if group < in_features else "ch")
    return AWQWeight(f"{prefix}.weight", parts, group, label)  # type: ignore[arg-type]


def build(ctx: PackContext) -> tuple[list[AWQWeight], set[str]]:
    """Every AWQ-packed Linear as a logical weight, and the tensor names it hides.

    Raises:
        CheckpointError: a version other than GEMM, or tensors whose shapes disagree.
    """
    gs, _ = _settings(ctx)
    logical, hidden = [], set()
    for prefix in ctx.prefixes(".qweight"):
        logical.append(_module(ctx, prefix, gs))
        hidden |= {f"{prefix}.{k}" for k in ("qweight", "qzeros", "scales")}
    return logical, hidden


def claims(ctx: PackContext) -> bool:
    """A qweight whose scales have 8× its columns (one scale per output, eight outputs per word)."""
    for prefix in ctx.prefixes(".qweight"):
        q, s = ctx.get(prefix + ".qweight"), ctx.get(prefix + ".scales")
        if q is not None and s is not None and len(q.shape) == 2 and len(s.shape) == 2:
            return s.shape[1] == 8 * q.shape[1] and ctx.get(prefix + ".g_idx") is None
    return False


FORMAT = PackFormat("awq", ("awq",), claims, build)
