"""bitsandbytes 4-bit checkpoints (transformers `load_in_4bit`, QLoRA): NF4/FP4 codes + absmax -> weight.

Layout (ref: bitsandbytes 0.50 functional.py `QuantState.as_dict(packed=True)` / `from_dict`, nn/modules.py
`Params4bit`; transformers integrations/bitsandbytes.py saves the module's state dict):

* `<module>.weight`: uint8 `[ceil(n / 2), 1]`, two 4-bit codes a byte, the first in the high nibble, over the
  flattened (out, in) weight;
* `<module>.weight.quant_state.bitsandbytes__nf4` (or `__fp4`): a uint8 tensor holding JSON: quant_type,
  blocksize, dtype (the compute dtype the weight dequantizes to), shape, and with double quantization
  nested_blocksize, nested_dtype, nested_offset;
* `<module>.weight.quant_map`: the 16 code values; `<module>.weight.absmax`: float32, one per block of
  `blocksize` values of the flattened weight, or with double quantization uint8 codes of the absmax - offset,
  in blocks of `nested_blocksize` with `nested_absmax` (float32 per nested block) and `nested_quant_map` (256
  values): absmax = nested_quant_map[code] · nested_absmax + offset.

weight = quant_map[code] · absmax (float32), rounded to `dtype` (ref: functional.py `dequantize_4bit`: the
nested absmax is dequantized with `dequantize_blockwise`, the offset added, the product cast to the state's
dtype). Blocks follow the flattened weight, as bitsandbytes' quantizer lays them out.
"""

from __future__ import annotations

import json

import numpy as np

from ...errors import CheckpointError
from ..checkpoint import Checkpoint, TensorEntry
from ..dtypes import TORCH_FLOAT_NAMES
from .base import Logical, PackContext, PackFormat, bad_shape, logical_entry, read_block, read_small, round_to

__all__ = ["FORMAT", "BnB4Weight"]

_STATE = ".weight.quant_state.bitsandbytes__"
_BLOCKS = (32, 64, 128, 256, 512, 1024, 2048, 4096)


def _flat(ckpt: Checkpoint, entry: TensorEntry, start: int, stop: int) -> np.ndarray:
    """Values [start, stop) of a stored tensor read as one flat run (its rows are contiguous)."""
    cols = entry.row_len
    r0, r1 = start // cols, -(-stop // cols)
    block = read_block(ckpt, entry, r0, r1 - r0).reshape(-1)
    return block[start - r0 * cols: stop - r0 * cols]


class BnB4Weight(Logical):
    """One NF4/FP4 weight, dequantized a row block at a time (only the codes and absmax that block covers)."""

    def __init__(self, name: str, parts: dict[str, TensorEntry], state: dict, shape: tuple[int, int],
                 code: np.ndarray, nested: tuple[np.ndarray, float] | None):
        self.parts, self.state, self.code, self.nested = parts, state, code, nested
        self.blocksize = int(state["blocksize"])
        self.dtype = TORCH_FLOAT_NAMES[state["dtype"]]
        label = f"{state['quant_type'].upper()}_b{self.blocksize}" + ("_dq" if nested else "")
        super().__init__(logical_entry(name, shape, label, parts.values()), parts["weight"].name)

    def rows(self, ckpt: Checkpoint, row0: int, n_rows: int) -> np.ndarray:
        cols = self.entry.row_len
        start, stop = row0 * cols, (row0 + n_rows) * cols
        if stop == start:
            return np.zeros((n_rows, cols), np.float32)
        packed = _flat(ckpt, self.parts["weight"], start // 2, -(-stop // 2))
        codes = np.empty(packed.size * 2, np.uint8)
        codes[0::2], codes[1::2] = packed >> 4, packed & 0xF
        codes = codes[start % 2: start % 2 + (stop - start)]
        b0, b1 = start // self.blocksize, (stop - 1) // self.blocksize + 1
        absmax = self._absmax(ckpt, b0, b1)
        scale = np.repeat(absmax, self.blocksize)[start - b0 * self.blocksize: stop - b0 * self.blocksize]
        return round_to((self.code[codes] * scale).astype(np.float32), self.dtype).reshape(n_rows, cols)

    def _absmax(self, ckpt: Checkpoint, b0: int, b1: int) -> np.ndarray:
        stored = _flat(ckpt, self.parts["absmax"], b0, b1)
        if self.nested is None:
            return stored.astype(np.float32)
        nested_code, offset = self.nested
        nb = int(self.state["nested_blocksize"])
        outer = _flat(ckpt, self.parts["nested_absmax"], b0 // nb, (b1 - 1) // nb + 1)
        scale = np.repeat(outer, nb)[b0 - b0 // nb * nb: b1 - b0 // nb * nb]
        return ((nested_code[stored] * scale).astype(np.float32) + np.float32(offset)).astype(np.float32)


def _state(ckpt: Checkpoint, entry: TensorEntry) -> dict:
    raw = read_small(ckpt, entry, limit=1 << 16)
    try:
        state = json.loads(raw.astype(np.uint8).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as e:
        raise CheckpointError(f"{entry.file}: tensor {entry.name!r}: not the JSON quant state bitsandbytes writes "
                              f"({e})") from None
    shape = state.get("shape") if isinstance(state, dict) else None
    ok = (isinstance(state, dict) and state.get("quant_type") in ("nf4", "fp4") and state.get("blocksize") in _BLOCKS
          and state.get("dtype") in TORCH_FLOAT_NAMES and isinstance(shape, list) and len(shape) == 2
          and all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 1 << 40 for d in shape))
    if ok and "nested_blocksize" in state:
        ok = state["nested_blocksize"] in _BLOCKS and isinstance(state.get("nested_offset"), (int, float))
    if not ok:
        raise CheckpointError(f"{entry.file}: tensor {entry.name!r}: a bitsandbytes quant state needs quant_type "
                              f"nf4/fp4, a blocksize of {_BLOCKS}, a dtype and a 2-D shape; found {state!r:.200}")
    return state


def _expect(entry: TensorEntry | None, module: str, part: str, dtype: str, n: int, ctx: PackContext
            ) -> TensorEntry:
    if entry is None:
        raise CheckpointError(f"{ctx.directory}: bitsandbytes weight {module}.weight has no {module}.weight.{part}")
    if entry.dtype != dtype or entry.n_elements != n:
        raise bad_shape(entry, f"{dtype} with {n} values", f"{module}.weight's quant state says so",
                        f"{entry.dtype} with {entry.n_elements}")
    return entry


def build(ctx: PackContext) -> tuple[list[BnB4Weight], set[str]]:
    """Every 4-bit weight with a quant state as a logical weight, and the bookkeeping tensors it hides.

    Raises:
        CheckpointError: a malformed quant state, or codes/absmax/maps whose sizes disagree with it.
    """
    if ctx.qconfig.get("load_in_8bit") or any(n.endswith(".SCB") for n in ctx.ckpt.entries):
        raise CheckpointError(f"{ctx.directory}: a bitsandbytes 8-bit (LLM.int8) checkpoint: normscope reads the "
                              "4-bit NF4/FP4 ones; analyze the unquantized model instead")
    logical, hidden = [], set()
    for state_name in [n for n in ctx.ckpt.entries if _STATE in n]:
        module = state_name.split(_STATE)[0]
        state = _state(ctx.ckpt, ctx.ckpt.entries[state_name])
        out, inp = state["shape"]
        n = out * inp
        blocks = -(-n // state["blocksize"])
        w = "weight"
        parts = {"weight": _expect(ctx.get(f"{module}.weight"), module, "", "U8", -(-n // 2), ctx)}
        parts["quant_map"] = _expect(ctx.get(f"{module}.{w}.quant_map"), module, "quant_map", "F32", 16, ctx)
        code = read_small(ctx.ckpt, parts["quant_map"]).reshape(-1).astype(np.float32)
        nested = None
        if "nested_blocksize" in state:
            parts["absmax"] = _expect(ctx.get(f"{module}.{w}.absmax"), module, "absmax", "U8", blocks, ctx)
            outer = -(-blocks // state["nested_blocksize"])
            parts["nested_absmax"] = _expect(ctx.get(f"{module}.{w}.nested_absmax"), module, "nested_absmax", "F32",
                                             outer, ctx)
            parts["nested_quant_map"] = _expect(ctx.get(f"{module}.{w}.nested_quant_map"), module,
                                                "nested_quant_map", "F32", 256, ctx)
            nested = (read_small(ctx.ckpt, parts["nested_quant_map"]).reshape(-1).astype(np.float32),
                      float(state["nested_offset"]))
        else:
            parts["absmax"] = _expect(ctx.get(f"{module}.{w}.absmax"), module, "absmax", "F32", blocks, ctx)
        logical.append(BnB4Weight(f"{module}.weight", parts, state, (out, inp), code, nested))
        hidden |= {p.name for p in parts.values()} | {state_name}
    if not logical and ctx.method == "bitsandbytes":
        raise CheckpointError(f"{ctx.directory}: quant_method 'bitsandbytes' but no tensor holds a 4-bit quant state "
                              f"(*{_STATE}nf4 or fp4): normscope reads 4-bit NF4/FP4 checkpoints as transformers "
                              "saves them")
    return logical, hidden


def claims(ctx: PackContext) -> bool:
    return any(_STATE in n for n in ctx.ckpt.entries)


FORMAT = PackFormat("bitsandbytes", ("bitsandbytes",), claims, build)
