"""llama.cpp's per-tensor type plan for a file type (llama-quantize's choice), reproduced.

ref: src/llama-quant.cpp — tensor_allows_quantization, tensor_get_category,
llama_tensor_get_type_impl (use_more_bits, the output / tied-embedding rule, per-category bumps),
tensor_type_fallback (rows that are not whole blocks), llama_ftype_get_default_type, and the
weight_name_comparer order (by block, then by name) in which the counters advance.

Tensors are given by GGUF name and numpy-order shape (the last axis is ggml's ne[0], the row).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..errors import UnknownNameError
from .layouts import LAYOUTS

__all__ = ["FILE_TYPES", "PlannedTensor", "ModelFacts", "plan_types", "tensor_category"]

# ref: llama_ftype_get_default_type
FILE_TYPES: dict[str, str] = {
    "F32": "F32", "F16": "F16", "BF16": "BF16",
    "Q4_0": "Q4_0", "Q4_1": "Q4_1", "Q5_0": "Q5_0", "Q5_1": "Q5_1", "Q8_0": "Q8_0",
    "Q2_K": "Q2_K", "Q2_K_S": "Q2_K", "Q3_K_S": "Q3_K", "Q3_K_M": "Q3_K", "Q3_K_L": "Q3_K",
    "Q4_K_S": "Q4_K", "Q4_K_M": "Q4_K", "Q5_K_S": "Q5_K", "Q5_K_M": "Q5_K", "Q6_K": "Q6_K",
}
QUANTIZED = {t for t in LAYOUTS if t not in ("F32", "F16", "BF16")}

# ref: tensor_allows_quantization — substrings of tensors that are never quantized
NEVER_QUANTIZED = ("_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel",
                   "per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight",
                   "indexer.q_proj.weight", "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight",
                   "time_mix_w2.weight", "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight",
                   "time_mix_a0.weight", "time_mix_a1.weight", "time_mix_a2.weight", "time_mix_g1.weight",
                   "time_mix_g2.weight", "time_mix_decay_w1.weight", "time_mix_decay_w2.weight",
                   "time_mix_lerp_fused.weight", "attn_rel_b.weight", ".position_embd", "sam.pos_embd",
                   "sam.neck.", "sam.net_", ".rel_pos", ".patch_embd", ".patch_merger", "a.rvq.codebook",
                   "mm.a.code_embd")
NEVER_QUANTIZED_EXACT = ("position_embd.weight", "token_types.weight")

# ref: tensor_type_fallback
FALLBACK = {"Q2_K": "Q4_0", "Q3_K": "Q4_0", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}


def tensor_category(name: str) -> str:
    """ref: tensor_get_category (substring tests, in this order)."""
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for key, cat in (("attn_qkv.weight", "attn_qkv"), ("attn_kv_b.weight", "attn_kv_b"), ("attn_v.weight", "attn_v"),
                     ("attn_k.weight", "attn_k"), ("attn_q.weight", "attn_q"), ("attn_output.weight", "attn_output"),
                     ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"), ("ffn_down", "ffn_down")):
        if key in name:
            return cat
    return "other"


def _use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


@dataclass(frozen=True)
class ModelFacts:
    """What llama-quantize knows about the model beyond tensor names and shapes."""

    arch: str  # GGUF general.architecture
    n_layer: int
    n_head: int = 1
    n_head_kv: int = 1
    n_expert: int = 0
    is_70b: bool = False  # llama.cpp's LLM_TYPE_70B (80-layer Llama 2/3 70B): attn_v gets Q5_K

    @property
    def n_gqa(self) -> int:
        return self.n_head // self.n_head_kv if self.n_head_kv else 0


@dataclass(frozen=True)
class PlannedTensor:
    name: str  # GGUF name
    type: str | None  # ggml type, or None when the tensor is not quantized (kept as stored)
    reason: str


def _order(name: str) -> tuple[int, str]:
    m = re.match(r"blk\.(\d{1,9})\.", name)
    return (int(m.group(1)) if m else -1, name)


def plan_types(tensors: Iterable[tuple[str, Sequence[int]]], file_type: str, facts: ModelFacts, *,
               overrides: Sequence[tuple[str, str]] = (), quantize_output: bool = True,
               output_type: str | None = None, token_embedding_type: str | None = None) -> dict[str, PlannedTensor]:
    """The ggml type llama-quantize chooses for each tensor.

    Args:
        tensors: (GGUF name, numpy-order shape) of every tensor of the model.
        file_type: a llama.cpp file type (Q4_K_M, Q8_0, …; see FILE_TYPES).
        facts: architecture, layer and head counts.
        overrides: (regex, type) pairs as llama-quantize's `--tensor-type`; the first match wins.
        quantize_output, output_type, token_embedding_type: llama-quantize's options of those names.

    Returns:
        {GGUF name: PlannedTensor} in llama.cpp's processing order.

    Raises:
        UnknownNameError: an unknown file type (the valid ones are listed).

    Example:
        >>> facts = ModelFacts("gemma3", n_layer=18, n_head=4, n_head_kv=1)
        >>> plan_types([("blk.0.attn_v.weight", (256, 640))], "Q4_K_M", facts)["blk.0.attn_v.weight"].type
        'Q8_0'
    """
    if file_type not in FILE_TYPES:
        raise UnknownNameError("file type", file_type, FILE_TYPES)
    default = FILE_TYPES[file_type]
    items = sorted(((n, tuple(s)) for n, s in tensors), key=lambda t: _order(t[0]))
    cats = {n: tensor_category(n) for n, _ in items}
    state = {"n_attention_wv": sum(c in ("attn_v", "attn_qkv", "attn_kv_b") for c in cats.values()),
             "tied": not any(c == "output" for c in cats.values()), "i_attention_wv": 0, "i_ffn_down": 0,
             "i_ffn_gate": 0, "i_ffn_up": 0}
    compiled = [(re.compile(p), t) for p, t in overrides]
    plan: dict[str, PlannedTensor] = {}
    for name, shape in items:
        why = _why_not_quantized(name, shape, quantize_output)
        if why:
            plan[name] = PlannedTensor(name, None, why)
            continue
        cat = cats[name]
        if token_embedding_type and cat == "token_embd":
            plan[name] = PlannedTensor(name, token_embedding_type, "--token-embedding-type")
            continue
        if output_type and cat == "output":
            plan[name] = PlannedTensor(name, output_type, "--output-tensor-type")
            continue
        chosen, reason = default, f"{file_type} default"
        if default in QUANTIZED:
            manual = next((t for p, t in compiled if p.search(name)), None)
            if manual is not None:
                chosen, reason = manual, "--tensor-type override"
            else:
                chosen, why = _impl(state, chosen, name, shape, file_type, facts, cat)
                reason = why or reason
            chosen, why = _fallback(chosen, shape[-1])
            reason = f"{reason}; {why}" if why else reason
        plan[name] = PlannedTensor(name, chosen, reason)
    return plan


def _why_not_quantized(name: str, shape: tuple[int, ...], quantize_output: bool) -> str | None:
    dims = list(shape)
    while len(dims) > 1 and dims[0] == 1:  # ggml_n_dims ignores trailing ne of 1
        dims.pop(0)
    if len(dims) < 2:
        return "1-D: never quantized (kept F32)"
    if not name.endswith("weight"):
        return "not a weight: never quantized"
    if name.endswith("_norm.weight"):
        return "norm: never quantized"
    if name == "output.weight" and not quantize_output:
        return "output kept (--leave-output-tensor)"
    if name in NEVER_QUANTIZED_EXACT or any(s in name for s in NEVER_QUANTIZED):
        return "excluded by llama.cpp (tensor_allows_quantization)"
    return None


def _fallback(chosen: str, row: int) -> tuple[str, str | None]:
    block = LAYOUTS[chosen].block_size
    if row % block == 0:
        return chosen, None
    new = FALLBACK.get(chosen, chosen)
    if row % LAYOUTS[new].block_size:
        return "F16", f"fallback {chosen}->F16: {row} % {LAYOUTS[new].block_size} != 0"
    return new, f"fallback {chosen}->{new}: {row} % {block} != 0"


def _impl(state: dict, new: str, name: str, shape: tuple[int, ...], ft: str, facts: ModelFacts, cat: str
          ) -> tuple[str, str | None]:
    """ref: llama_tensor_get_type_impl, for the file types of FILE_TYPES (no IQ/TQ/MXFP4 types)."""
    falcon = facts.arch == "falcon"
    n_expert = facts.n_expert
    if cat == "output" or (state["tied"] and cat == "token_embd"):
        row, qk = shape[-1], LAYOUTS[new].block_size
        what = "output" if cat == "output" else "tied token embedding (used as output)"
        if falcon or row % qk:
            return "Q8_0", f"{what}: Q8_0 ({row} % {qk} != 0)" if row % qk else f"{what}: Q8_0 (falcon)"
        if new != "Q8_0":
            return "Q6_K", f"{what}: Q6_K"
        return new, f"{what}: kept {new}"
    if cat == "token_embd":
        return new, None
    if cat in ("attn_v", "attn_qkv", "attn_kv_b"):
        i, n = state["i_attention_wv"], state["n_attention_wv"]
        state["i_attention_wv"] += 1
        why = None
        if ft == "Q2_K":
            new, why = ("Q4_K" if facts.n_gqa >= 4 else "Q3_K"), "attn_v for Q2_K"
        elif ft == "Q2_K_S" and facts.n_gqa >= 4:
            new, why = "Q4_K", "attn_v, n_gqa >= 4"
        elif ft == "Q3_K_M":
            new, why = ("Q5_K" if i < 2 else "Q4_K"), "attn_v for Q3_K_M"
        elif ft == "Q3_K_L":
            new, why = "Q5_K", "attn_v for Q3_K_L"
        elif ft in ("Q4_K_M", "Q5_K_M") and _use_more_bits(i, n):
            new, why = "Q6_K", f"use_more_bits (attn_v {i} of {n})"
        elif ft == "Q4_K_S" and i < 4:
            new, why = "Q5_K", "attn_v, first 4"
        if facts.is_70b and new in ("Q3_K", "Q4_K"):
            new, why = "Q5_K", "attn_v of a 70B model"
        if n_expert == 8:
            new, why = "Q8_0", "attn_v, 8 experts"
        return new, why
    if cat == "attn_k":
        return ("Q8_0", "attn_k, 8 experts") if n_expert == 8 else (new, None)
    if cat == "ffn_down":
        i_layer, n_layer = _layer(name, state["i_ffn_down"], facts)
        state["i_ffn_down"] += 1
        more = _use_more_bits(i_layer, n_layer)
        if ft == "Q2_K":
            return "Q3_K", "ffn_down for Q2_K"
        if ft == "Q2_K_S":
            return ("Q4_K", "ffn_down, first 1/8") if i_layer < n_layer // 8 else (new, None)
        if ft == "Q3_K_M":
            if i_layer < n_layer // 16:
                return "Q5_K", "ffn_down, first 1/16"
            return ("Q4_K", "ffn_down for Q3_K_M") if (not falcon or more) else ("Q3_K", None)
        if ft == "Q3_K_L":
            return ("Q4_K" if falcon else "Q5_K"), "ffn_down for Q3_K_L"
        if ft == "Q4_K_M":
            if falcon:
                return ("Q6_K" if i_layer < n_layer // 16 else "Q5_K" if more else "Q4_K"), "ffn_down (falcon)"
            return ("Q6_K", f"use_more_bits (ffn_down layer {i_layer} of {n_layer})") if more else (new, None)
        if ft == "Q5_K_M" and more:
            return "Q6_K", f"use_more_bits (ffn_down layer {i_layer} of {n_layer})"
        if ft == "Q4_K_S" and not falcon and i_layer < n_layer // 8:
            return "Q5_K", "ffn_down, first 1/8"
        return new, None
    if cat == "attn_output":
        if not falcon:
            if n_expert == 8:
                if ft in ("Q2_K", "Q3_K_S", "Q3_K_M", "Q4_K_S", "Q4_K_M"):
                    return "Q5_K", "attn_output, 8 experts"
                return new, None
            bump = {"Q2_K": "Q3_K", "Q3_K_M": "Q4_K", "Q3_K_L": "Q5_K"}.get(ft)
            return (bump, f"attn_output for {ft}") if bump else (new, None)
        return ("Q4_K", "attn_output (falcon)") if ft == "Q3_K_L" else (new, None)
    if cat in ("ffn_gate", "ffn_up"):
        state[f"i_{cat}"] += 1  # only IQ3_XS changes these
    return new, None


def _layer(name: str, counter: int, facts: ModelFacts) -> tuple[int, int]:
    """ref: layer_info — the counter for dense models, the name's block for MoE ones."""
    if facts.n_expert > 1:
        m = re.match(r"blk\.(\d{1,9})\.", name)
        return (int(m.group(1)) if m else counter), facts.n_layer
    return counter, facts.n_layer
