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

__all__ = ["FILE_TYPES", "PlannedTensor", "ModelFacts", "plan_types", "tensor_category", "tensor_order",
           "requires_imatrix"]

# ref: llama_ftype_get_default_type — every file type gguf.LlamaFileType lists (but GUESSED), in its order
FILE_TYPES: dict[str, str] = {
    "F32": "F32", "F16": "F16", "Q4_0": "Q4_0", "Q4_1": "Q4_1", "Q8_0": "Q8_0", "Q5_0": "Q5_0", "Q5_1": "Q5_1",
    "Q2_K": "Q2_K", "Q3_K_S": "Q3_K", "Q3_K_M": "Q3_K", "Q3_K_L": "Q3_K", "Q4_K_S": "Q4_K", "Q4_K_M": "Q4_K",
    "Q5_K_S": "Q5_K", "Q5_K_M": "Q5_K", "Q6_K": "Q6_K", "IQ2_XXS": "IQ2_XXS", "IQ2_XS": "IQ2_XS", "Q2_K_S": "Q2_K",
    "IQ3_XS": "IQ3_S", "IQ3_XXS": "IQ3_XXS", "IQ1_S": "IQ1_S", "IQ4_NL": "IQ4_NL", "IQ3_S": "IQ3_S", "IQ3_M": "IQ3_S",
    "IQ2_S": "IQ2_XS", "IQ2_M": "IQ2_S", "IQ4_XS": "IQ4_XS", "IQ1_M": "IQ1_M", "BF16": "BF16", "TQ1_0": "TQ1_0",
    "TQ2_0": "TQ2_0", "MXFP4_MOE": "MXFP4", "NVFP4": "NVFP4", "Q1_0": "Q1_0",
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

# ref: tensor_type_fallback — a type without an entry has no fallback: llama-quantize stops with an error
FALLBACK = {**dict.fromkeys(("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ4_XS"), "IQ4_NL"),
            **dict.fromkeys(("Q2_K", "Q3_K", "TQ1_0", "TQ2_0"), "Q4_0"), "Q4_K": "Q5_0", "Q5_K": "Q5_1",
            "Q6_K": "Q8_0"}

# ref: tensor_requires_imatrix — types llama-quantize makes only with an importance matrix (but for the token
# embedding and the output); Q2_K needs one only in a Q2_K_S file
IMATRIX_TYPES = ("IQ3_XXS", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ1_M", "IQ1_S")


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
    # llama-quantize refuses to write this tensor's type without an importance matrix (tensor_requires_imatrix)
    requires_imatrix: bool = False
    # llama-quantize stops on this tensor (rows no type of its fallback chain can hold); the reason says why
    fails: bool = False


def requires_imatrix(name: str, type_name: str | None, file_type: str) -> bool:
    """ref: tensor_requires_imatrix — whether llama-quantize refuses this tensor's type without an imatrix."""
    if type_name is None or name in ("token_embd.weight", "per_layer_token_embd.weight", "output.weight"):
        return False
    return type_name in IMATRIX_TYPES or (type_name == "Q2_K" and file_type == "Q2_K_S")


def tensor_order(name: str) -> tuple[int, str]:
    """ref: weight_name_comparer — llama-quantize's processing order: by block, then by name."""
    m = re.match(r"blk\.(\d{1,9})\.", name)
    return (int(m.group(1)) if m else -1, name)


def plan_types(tensors: Iterable[tuple[str, Sequence[int]]], file_type: str, facts: ModelFacts, *,
               overrides: Sequence[tuple[str, str]] = (), quantize_output: bool = True,
               output_type: str | None = None, token_embedding_type: str | None = None,
               has_imatrix: bool = False, pure: bool = False) -> dict[str, PlannedTensor]:
    """The ggml type llama-quantize chooses for each tensor.

    Args:
        tensors: (GGUF name, numpy-order shape) of every tensor of the model.
        file_type: a llama.cpp file type (Q4_K_M, Q8_0, IQ4_XS, …; see FILE_TYPES).
        facts: architecture, layer, head and expert counts.
        overrides: (regex, type) pairs as llama-quantize's `--tensor-type`; the first match wins.
        quantize_output, output_type, token_embedding_type: llama-quantize's options of those names.
        has_imatrix: whether an importance matrix is given (`--imatrix`): some rules of IQ3_XXS, IQ4_NL,
            IQ4_XS, Q4_0 and Q5_0 depend on it.
        pure: llama-quantize `--pure`: every quantized tensor gets the file type's default type.

    Returns:
        {GGUF name: PlannedTensor} in llama.cpp's processing order. A tensor whose type llama-quantize
        makes only with an imatrix has `requires_imatrix` set; one it cannot make at all (rows that are
        not whole blocks of a type without a fallback) has `fails` set and no type.

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
    items = sorted(((n, tuple(s)) for n, s in tensors), key=lambda t: tensor_order(t[0]))
    cats = {n: tensor_category(n) for n, _ in items}
    state = {"n_attention_wv": sum(c in ("attn_v", "attn_qkv", "attn_kv_b") for c in cats.values()),
             "tied": not any(c == "output" for c in cats.values()), "i_attention_wv": 0, "i_ffn_down": 0,
             "i_ffn_gate": 0, "i_ffn_up": 0, "has_imatrix": has_imatrix, "output_type": output_type}
    compiled = [(re.compile(p), t) for p, t in overrides]
    plan: dict[str, PlannedTensor] = {}
    for name, shape in items:
        why = _why_not_quantized(name, shape, quantize_output)
        if why:
            plan[name] = PlannedTensor(name, None, why)
            continue
        cat = cats[name]
        if token_embedding_type and cat == "token_embd":
            plan[name] = PlannedTensor(name, token_embedding_type, "--token-embedding-type",
                                       requires_imatrix(name, token_embedding_type, file_type))
            continue
        if output_type and cat == "output":
            plan[name] = PlannedTensor(name, output_type, "--output-tensor-type")
            continue
        chosen, reason = default, f"{file_type} default"
        if default in QUANTIZED:
            manual = next((t for p, t in compiled if p.search(name)), None)
            if manual is not None:
                chosen, reason = manual, "--tensor-type override"
            elif pure:
                reason = f"{file_type} default (--pure)"
            else:
                chosen, why = _impl(state, chosen, name, shape, file_type, facts, cat)
                reason = why or reason
            new, why = _fallback(chosen, shape[-1])
            if new is None:
                plan[name] = PlannedTensor(name, None, f"{reason}; {why}", fails=True)
                continue
            chosen, reason = new, (f"{reason}; {why}" if why else reason)
        plan[name] = PlannedTensor(name, chosen, reason, requires_imatrix(name, chosen, file_type))
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


def _fallback(chosen: str, row: int) -> tuple[str | None, str | None]:
    """ref: tensor_type_fallback. (type, why): the type unchanged and None when rows are whole blocks; None and
    why when llama.cpp has no fallback for the type (it stops)."""
    block = LAYOUTS[chosen].block_size
    if row % block == 0:
        return chosen, None
    new = FALLBACK.get(chosen)
    if new is None:
        return None, (f"llama-quantize fails: rows of {row} are not whole {chosen} blocks of {block} and llama.cpp "
                      f"defines no fallback for {chosen}")
    if row % LAYOUTS[new].block_size:
        return "F16", f"fallback {chosen}->F16: {row} % {LAYOUTS[new].block_size} != 0"
    return new, f"fallback {chosen}->{new}: {row} % {block} != 0"


# file types whose output (or tied token embedding) gets Q5_K, and the low-bit IQ mixes that share rules
_IQ_OUTPUT_Q5K = ("IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M")
_IQ_LOW = ("IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M")
# attn_output of a model with 8 experts gets Q5_K in these file types
_ATTN_OUTPUT_8X = ("Q2_K", "IQ3_XS", "IQ3_XXS", "Q3_K_S", "Q3_K_M", "IQ4_NL", "Q4_K_S", "Q4_K_M", "IQ3_S", "IQ3_M",
                   "IQ4_XS")


def _impl(state: dict, new: str, name: str, shape: tuple[int, ...], ft: str, facts: ModelFacts, cat: str
          ) -> tuple[str, str | None]:
    """ref: llama_tensor_get_type_impl, branch for branch, with the counters advancing where llama.cpp's do."""
    falcon = facts.arch == "falcon"
    n_expert = facts.n_expert
    gqa4 = facts.n_gqa >= 4
    imatrix = state["has_imatrix"]
    if cat == "output" or (state["tied"] and cat == "token_embd"):
        what = "output" if cat == "output" else "tied token embedding (used as output)"
        if state["output_type"]:
            return state["output_type"], f"{what}: --output-tensor-type"
        row, qk = shape[-1], LAYOUTS[new].block_size
        if ft == "MXFP4_MOE":
            return "Q8_0", f"{what}: Q8_0 (MXFP4_MOE)"
        if falcon or row % qk:
            return "Q8_0", f"{what}: Q8_0 ({row} % {qk} != 0)" if row % qk else f"{what}: Q8_0 (falcon)"
        if ft in _IQ_OUTPUT_Q5K:
            return "Q5_K", f"{what}: Q5_K ({ft})"
        if new != "Q8_0":
            return "Q6_K", f"{what}: Q6_K"
        return new, f"{what}: kept {new}"
    if ft == "MXFP4_MOE":
        experts = len(shape) >= 3 and shape[-3] > 1
        if experts and (facts.arch != "bailingmoe3" or cat in ("ffn_up", "ffn_gate", "ffn_down")):
            return "MXFP4", "MXFP4_MOE: expert tensor"
        return "Q8_0", "MXFP4_MOE: not an expert tensor"
    if cat == "token_embd":
        if ft in ("IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ1_M"):
            return "Q2_K", f"token embedding for {ft}"
        if ft in ("IQ2_S", "IQ2_M", "IQ3_XXS"):
            return "IQ3_S", f"token embedding for {ft}"
        if ft in ("TQ1_0", "TQ2_0"):
            return "Q4_K", f"token embedding for {ft}"
        return new, None
    attn_v = cat in ("attn_v", "attn_qkv", "attn_kv_b")
    if ft in _IQ_LOW:
        two = ft in ("IQ2_S", "IQ2_M")
        if attn_v:
            state["i_attention_wv"] += 1
            if gqa4 or n_expert >= 4:
                return "Q4_K", "attn_v, n_gqa >= 4" if gqa4 else "attn_v, 4 or more experts"
            return ("IQ3_S" if two else "Q2_K"), f"attn_v for {ft}"
        if n_expert == 8 and cat == "attn_k":
            return "Q4_K", "attn_k, 8 experts"
        if cat == "ffn_down":
            i, n = state["i_ffn_down"], facts.n_layer
            state["i_ffn_down"] += 1
            if i < n // 8:
                return ("IQ3_S" if two else "Q2_K"), f"ffn_down, first 1/8 ({ft})"
            return new, None
        if cat == "attn_output":
            if n_expert == 8:
                return "Q5_K", "attn_output, 8 experts"
            if ft in ("IQ1_S", "IQ1_M"):
                return "IQ2_XXS", f"attn_output for {ft}"
            if two:
                return "IQ3_S", f"attn_output for {ft}"
        return new, None
    if attn_v:
        i, n = state["i_attention_wv"], state["n_attention_wv"]
        state["i_attention_wv"] += 1
        why = None
        if ft == "Q2_K":
            new, why = ("Q4_K" if gqa4 else "Q3_K"), "attn_v for Q2_K"
        elif ft == "Q2_K_S":
            if gqa4:
                new, why = "Q4_K", "attn_v, n_gqa >= 4"
        elif ft == "IQ3_XXS":
            if gqa4:
                new, why = "Q4_K", "attn_v, n_gqa >= 4"
            elif not imatrix:
                new, why = "IQ3_S", "attn_v for IQ3_XXS without an imatrix"
            else:
                new, why = "IQ3_XXS", "attn_v for IQ3_XXS with an imatrix"
        elif ft in ("IQ3_XS", "IQ3_S") and gqa4:
            new, why = "Q4_K", "attn_v, n_gqa >= 4"
        elif ft == "IQ3_M":
            new, why = "Q4_K", "attn_v for IQ3_M"
        elif ft == "Q3_K_M":
            new, why = ("Q5_K" if i < 2 else "Q4_K"), "attn_v for Q3_K_M"
        elif ft == "Q3_K_L":
            new, why = "Q5_K", "attn_v for Q3_K_L"
        elif ft in ("IQ4_NL", "IQ4_XS") and gqa4:
            new, why = "Q5_K", "attn_v, n_gqa >= 4"
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
        if n_expert == 8:
            return "Q8_0", "attn_k, 8 experts"
        if ft == "IQ3_XS":
            return "IQ3_XXS", "attn_k for IQ3_XS"
        if ft == "IQ3_XXS":
            return "IQ2_S", "attn_k for IQ3_XXS"
        return new, None
    if cat == "attn_q":
        if ft == "IQ3_XS":
            return "IQ3_XXS", "attn_q for IQ3_XS"
        if ft == "IQ3_XXS":
            return "IQ2_S", "attn_q for IQ3_XXS"
        return new, None
    if cat == "ffn_down":
        i_layer, n_layer = _layer(name, state["i_ffn_down"], facts)
        state["i_ffn_down"] += 1
        more = _use_more_bits(i_layer, n_layer)
        first8 = i_layer < n_layer // 8
        if ft == "Q2_K":
            return "Q3_K", "ffn_down for Q2_K"
        if ft == "Q2_K_S":
            return ("Q4_K", "ffn_down, first 1/8") if first8 else (new, None)
        if ft == "IQ3_XXS" and not imatrix:
            return ("Q4_K", "ffn_down, first 1/8 (IQ3_XXS without an imatrix)") if first8 else \
                ("Q3_K", "ffn_down for IQ3_XXS without an imatrix")
        if ft == "Q3_K_M":
            if i_layer < n_layer // 16:
                return "Q5_K", "ffn_down, first 1/16"
            return ("Q4_K", "ffn_down for Q3_K_M") if (not falcon or more) else ("Q3_K", None)
        if ft == "IQ3_M" and (first8 or (n_expert == 8 and more)):
            return "Q4_K", "ffn_down, first 1/8" if first8 else f"use_more_bits (ffn_down layer {i_layer}, 8 experts)"
        if ft == "Q3_K_L":
            return ("Q4_K" if falcon else "Q5_K"), "ffn_down for Q3_K_L"
        if ft == "Q4_K_M":
            if falcon:
                return ("Q6_K" if i_layer < n_layer // 16 else "Q5_K" if more else "Q4_K"), "ffn_down (falcon)"
            return ("Q6_K", f"use_more_bits (ffn_down layer {i_layer} of {n_layer})") if more else (new, None)
        if first8 and ft in ("IQ4_NL", "IQ4_XS") and not imatrix:
            return "Q5_K", f"ffn_down, first 1/8 ({ft} without an imatrix)"
        if ft == "Q5_K_M" and more:
            return "Q6_K", f"use_more_bits (ffn_down layer {i_layer} of {n_layer})"
        if ft == "Q4_K_S" and not falcon and first8:
            return "Q5_K", "ffn_down, first 1/8"
        if ft in ("Q4_0", "Q5_0") and imatrix and first8:
            return ("Q4_1" if ft == "Q4_0" else "Q5_1"), f"ffn_down, first 1/8 ({ft} with an imatrix)"
        return new, None
    if cat == "attn_output":
        if not falcon:
            if n_expert == 8:
                return ("Q5_K", "attn_output, 8 experts") if ft in _ATTN_OUTPUT_8X else (new, None)
            bump = {"Q2_K": "Q3_K", "IQ3_XXS": "IQ3_S", "Q3_K_M": "Q4_K", "Q3_K_L": "Q5_K", "IQ3_M": "Q4_K"}.get(ft)
            return (bump, f"attn_output for {ft}") if bump else (new, None)
        return ("Q4_K", "attn_output (falcon)") if ft == "Q3_K_L" else (new, None)
    if cat in ("ffn_gate", "ffn_up"):
        i_layer, n_layer = _layer(name, state[f"i_{cat}"], facts)
        state[f"i_{cat}"] += 1
        if ft == "IQ3_XS" and n_layer // 8 <= i_layer < 7 * n_layer // 8:
            return "IQ3_XXS", f"{cat} for IQ3_XS (middle layers)"
    return new, None


def _layer(name: str, counter: int, facts: ModelFacts) -> tuple[int, int]:
    """ref: layer_info — the counter for dense models, the name's block for MoE ones."""
    if facts.n_expert > 1:
        m = re.match(r"blk\.(\d{1,9})\.", name)
        return (int(m.group(1)) if m else counter), facts.n_layer
    return counter, facts.n_layer
