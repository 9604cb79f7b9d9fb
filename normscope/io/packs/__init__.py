"""Quantized packs and LoRA adapters read as ordinary checkpoints of dequantized logical weights.

`wrap_pack(ckpt)` looks at a safetensors checkpoint's quantization config (config.json
`quantization_config`, or quantize_config.json / quant_config.json / quanto_qmap.json next to the
weights) and, failing that, at its tensor names, and returns a `PackedCheckpoint` whose tensors are
the weights the quantized model computes with, under the unquantized model's HF names.
`apply_adapter(ckpt, dir)` merges a PEFT LoRA adapter the same way. One module per format; the
registry below is data.
"""

from __future__ import annotations

import logging

from ...errors import CheckpointError, NormscopeError, message

from ..checkpoint import Checkpoint
from . import awq, bnb4, compressed, fp8, gptq, mxfp4, quanto
from .base import Logical, PackContext, PackedCheckpoint, PackFormat, load_side_json, read_block, read_rows
from .lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS, apply_adapter, is_adapter_dir, lora_scale

__all__ = ["PACKS", "PackFormat", "PackedCheckpoint", "Logical", "wrap_pack", "apply_adapter", "is_adapter_dir",
           "lora_scale", "read_block", "read_rows", "ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "SIDE_FILES", "UNREAD"]

log = logging.getLogger(__name__)

# Order matters only without a config: the first format whose tensor signature matches wins.
PACKS: tuple[PackFormat, ...] = (gptq.FORMAT, awq.FORMAT, quanto.FORMAT, compressed.FORMAT, fp8.FORMAT,
                                 bnb4.FORMAT, mxfp4.FORMAT)

# quant_method values of packs normscope does not read: their stored tensors are not weights
UNREAD = ("hqq", "aqlm", "vptq", "exl2", "eetq", "higgs", "spqr")

# Side files some tools write instead of (or besides) config.json's quantization_config.
SIDE_FILES = ("quantize_config.json",  # ref: auto-gptq / GPTQModel `QuantizeConfig.save_pretrained`
              "quant_config.json",  # ref: AutoAWQ `AwqConfig`, older AutoAWQ exports
              quanto.QMAP_NAME)


def _context(ckpt: Checkpoint) -> PackContext:
    directory = ckpt.path if ckpt.path.is_dir() else ckpt.path.parent
    side = {name: data for name in SIDE_FILES if (data := load_side_json(directory, name)) is not None}
    qconfig = (ckpt.config or {}).get("quantization_config")
    if not isinstance(qconfig, dict):
        qconfig = next((side[n] for n in SIDE_FILES[:2] if isinstance(side.get(n), dict)), {})
        if qconfig and "quant_method" not in qconfig:  # AutoAWQ's quant_config.json names its version, not a method
            qconfig = {**qconfig, "quant_method": "awq" if "w_bit" in qconfig or "version" in qconfig else "gptq"}
    return PackContext(ckpt, directory, qconfig, side)


def wrap_pack(ckpt: Checkpoint) -> Checkpoint:
    """`ckpt` itself, or a `PackedCheckpoint` when it holds a quantized pack normscope reads.

    Args:
        ckpt: an open safetensors checkpoint (a GGUF file is returned unchanged).

    Returns:
        A checkpoint whose packed weights read as float32 dequantized weights under their HF names;
        the pack's bookkeeping tensors (qzeros, scales, g_idx, weight_scale_inv, …) are not listed.

    Raises:
        CheckpointError: a pack whose tensors disagree with each other or with its config, or a layout
            normscope does not read (GPTQ marlin, AWQ GEMV, nvfp4, …).

    Example:
        >>> ckpt = wrap_pack(SafetensorsCheckpoint.open_dir(Path("llama-gptq")))  # doctest: +SKIP
        >>> ckpt.entries["model.layers.0.self_attn.q_proj.weight"].dtype
        'GPTQ_4bit_g128'
    """
    if ckpt.format != "safetensors":
        return ckpt
    try:
        return _wrap(ckpt)
    except NormscopeError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, ZeroDivisionError, OverflowError) as e:
        # a pack setting of the wrong type or range (group_size: [], bits: "x", weight_block_size: [0, 0], …)
        # or tensors that disagree with it: whatever the pack reader tripped on came from the files
        directory = ckpt.path if ckpt.path.is_dir() else ckpt.path.parent
        raise CheckpointError(f"{directory}: the quantized pack cannot be read: its settings (config.json "
                              f"quantization_config or a quantization side file) or its tensors disagree with what "
                              f"the format allows ({type(e).__name__}: {message(e)})") from None


def _wrap(ckpt: Checkpoint) -> Checkpoint:
    ctx = _context(ckpt)
    fmt = next((f for f in PACKS if ctx.method in f.methods), None) if ctx.method else None
    if ctx.method in UNREAD:
        valid = ", ".join(m for f in PACKS for m in f.methods)
        raise CheckpointError(f"{ctx.directory}: quant_method {ctx.method!r} stores weights in a layout normscope "
                              f"does not read (it reads {valid}); analyze the unquantized model instead")
    if fmt is None:
        if ctx.method:
            log.info("%s: quant_method %r is not a pack normscope reads; tensors are read as stored",
                     ctx.directory, ctx.method)
        fmt = next((f for f in PACKS if f.claims(ctx)), None)
        if fmt is None:
            return ckpt
        if ctx.qconfig.get("quant_method") and ctx.method not in fmt.methods:
            ctx = PackContext(ckpt, ctx.directory, {}, ctx.side_files)  # another method's settings do not apply
    logical, hidden = fmt.build(ctx)
    if not logical:
        return ckpt
    log.debug("%s: %d %s weights", ctx.directory, len(logical), fmt.name)
    return PackedCheckpoint(ckpt, logical, hidden, fmt.name)

