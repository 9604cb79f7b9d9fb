"""What llama-quantize knows about a model beyond its tensor names: layer, head and expert counts."""

from __future__ import annotations

from ...arch import config_value
from ...quant import ModelFacts
from .model import Model

__all__ = ["model_facts"]

# (GGUF metadata suffix, config.json keys) per fact
_KEYS = {
    "n_head": ("attention.head_count", ("num_attention_heads", "n_head")),
    "n_head_kv": ("attention.head_count_kv", ("num_key_value_heads",)),
    "n_expert": ("expert_count", ("num_local_experts", "num_experts", "n_routed_experts")),
}


def model_facts(model: Model) -> ModelFacts:
    """ModelFacts from GGUF metadata or config.json (text config for multimodal models).

    Example:
        >>> with open_model("example:gemma3-270m") as m:  # doctest: +SKIP
        ...     model_facts(m)
        ModelFacts(arch='gemma3', n_layer=18, n_head=4, n_head_kv=1, n_expert=0, is_70b=False)
    """
    spec = model.detected.spec
    arch = spec.gguf_arch or spec.name
    meta = model.checkpoint.metadata if model.source.format == "gguf" else {}
    values: dict[str, int] = {}
    for fact, (suffix, keys) in _KEYS.items():
        value = meta.get(f"{arch}.{suffix}")
        if value is None:
            value = next((v for k in keys if (v := config_value(model.checkpoint.config, k)) is not None), None)
        if isinstance(value, list):  # per-layer head counts (some GGUFs): llama.cpp uses layer 0's
            value = value[0] if value else None
        if isinstance(value, int):
            values[fact] = value
    n_head = values.get("n_head", 1)
    n_layer = model.n_layers or 1
    # ref: llama.cpp llm_load_hparams: LLM_TYPE_70B is an 80-layer Llama
    is_70b = arch == "llama" and n_layer == 80
    return ModelFacts(arch, n_layer, n_head, values.get("n_head_kv", n_head), values.get("n_expert", 0), is_70b)
