"""The architecture registry: one spec per family, as data, each fact with its reference.

Adding a family is adding an `ArchSpec` to `SPECS`; nothing else changes. Names are matched
after the spec's multimodal prefixes, so `model.language_model.layers.3…` and
`language_model.model.layers.3…` classify like `model.layers.3…`.
"""

from __future__ import annotations

from ..results import Component, NormConvention, Role
from .spec import ArchSpec, Feed, rule

__all__ = ["SPECS", "HEURISTIC", "GGUF_RULES"]

C, R, N = Component, Role, NormConvention

# -- rules shared by decoder families with HF's Llama naming ---------------------------------
DECODER_LINEARS = (
    rule(r"(?:^|\.)embed_tokens\.weight$", R.EMBEDDING),
    rule(r"(?:^|\.)lm_head\.weight$", R.LM_HEAD),
    rule(r"\.self_attn\.q_proj\.", R.ATTN_Q),
    rule(r"\.self_attn\.k_proj\.", R.ATTN_K),
    rule(r"\.self_attn\.v_proj\.", R.ATTN_V),
    rule(r"\.self_attn\.(?:qkv_proj|query_key_value)\.", R.ATTN_QKV),
    rule(r"\.self_attn\.o_proj\.", R.ATTN_O),
    rule(r"\.mlp\.gate_proj\.", R.MLP_GATE),
    rule(r"\.mlp\.up_proj\.", R.MLP_UP),
    rule(r"\.mlp\.gate_up_proj\.", R.MLP_GATE_UP),
    rule(r"\.mlp\.down_proj\.", R.MLP_DOWN),
    rule(r"\.self_attn\.q_norm\.", R.NORM_Q),
    rule(r"\.self_attn\.k_norm\.", R.NORM_K),
    rule(r"(?:^|\.)(?:model|language_model)\.norm\.(?:weight|bias)$|^norm\.weight$", R.NORM_FINAL),
)

# Llama-style pre-norm block: post_attention_layernorm is the norm *before* the MLP.
# ref: transformers LlamaDecoderLayer.forward (residual + attn, then post_attention_layernorm -> mlp)
LLAMA_NORMS = (
    rule(r"\.input_layernorm\.", R.NORM_PRE_ATTN),
    rule(r"\.post_attention_layernorm\.", R.NORM_PRE_FFN),
)

# Gemma 2/3 sandwich block: four norms around attention and MLP.
# ref: transformers Gemma3DecoderLayer.forward (input_, post_attention_, pre_feedforward_, post_feedforward_layernorm)
GEMMA_NORMS = (
    rule(r"\.input_layernorm\.", R.NORM_PRE_ATTN),
    rule(r"\.post_attention_layernorm\.", R.NORM_POST_ATTN),
    rule(r"\.pre_feedforward_layernorm\.", R.NORM_PRE_FFN),
    rule(r"\.post_feedforward_layernorm\.", R.NORM_POST_FFN),
)

# Gemma 3 multimodal: SigLIP vision tower (LayerNorm w, b) and the projector, whose soft-embedding
# norm is a Gemma RMSNorm.  ref: transformers SiglipEncoderLayer (layer_norm1/2, nn.LayerNorm);
# Gemma3MultiModalProjector.mm_soft_emb_norm = Gemma3RMSNorm
GEMMA3_VISION = (
    rule(r"vision_tower\..*\.layer_norm1\.", R.NORM_PRE_ATTN, C.VISION, N.LAYERNORM),
    rule(r"vision_tower\..*\.layer_norm2\.", R.NORM_PRE_FFN, C.VISION, N.LAYERNORM),
    rule(r"vision_tower\..*post_layernorm\.", R.NORM_FINAL, C.VISION, N.LAYERNORM),
    rule(r"vision_tower\.", R.VISION, C.VISION),
    rule(r"multi_modal_projector\.mm_soft_emb_norm\.", R.NORM_OTHER, C.PROJECTOR),
    rule(r"multi_modal_projector\.", R.PROJECTOR, C.PROJECTOR),
)

DECODER_FEEDS = (
    Feed(R.NORM_PRE_ATTN, (R.ATTN_Q, R.ATTN_K, R.ATTN_V, R.ATTN_QKV)),
    Feed(R.NORM_PRE_FFN, (R.MLP_GATE, R.MLP_UP, R.MLP_GATE_UP)),
    Feed(R.NORM_FINAL, (R.LM_HEAD,), None),
)

# Gemma 2/3 sandwich: post_attention_layernorm normalises o_proj's output, post_feedforward_layernorm
# down_proj's, before the residual add; each gain then weighs that linear's output rows.
# ref: transformers Gemma3DecoderLayer.forward (hidden = self.post_attention_layernorm(self_attn(...)))
SANDWICH_FEEDS = DECODER_FEEDS + (
    Feed(R.NORM_POST_ATTN, (R.ATTN_O,), 0, "out"),
    Feed(R.NORM_POST_FFN, (R.MLP_DOWN,), 0, "out"),
)

_BLOCK = "model.layers.{bid}."
LLAMA_TEMPLATES = (
    "model.embed_tokens", "model.norm", "lm_head",
    *(_BLOCK + s for s in ("input_layernorm", "post_attention_layernorm", "self_attn.q_proj", "self_attn.k_proj",
                           "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")),
)
QK_NORM_TEMPLATES = (_BLOCK + "self_attn.q_norm", _BLOCK + "self_attn.k_norm")
GEMMA_TEMPLATES = (
    "model.embed_tokens", "model.norm", "lm_head",
    *(_BLOCK + s for s in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                           "post_feedforward_layernorm", "self_attn.q_proj", "self_attn.k_proj",
                           "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")),
)
# ref: gguf-py tensor_mapping.py (MODEL_ARCH.BERT), as convert_hf_to_gguf.py's BertModel maps them; the pooler
# has no GGUF name (the converter does not write it)
_LAYER = "encoder.layer.{bid}."
BERT_TEMPLATES = (
    "embeddings.word_embeddings", "embeddings.position_embeddings", "embeddings.token_type_embeddings",
    "embeddings.LayerNorm",
    *(_LAYER + s for s in ("attention.self.query", "attention.self.key", "attention.self.value",
                           "attention.output.dense", "attention.output.LayerNorm", "intermediate.dense",
                           "output.dense", "output.LayerNorm")),
)
MULTIMODAL_PREFIXES = (
    ("model.language_model.", "model."),  # transformers >= 4.52 layout
    ("language_model.model.", "model."),  # older Gemma3ForConditionalGeneration checkpoints
    ("language_model.lm_head.", "lm_head."),
)


def _decoder(name: str, description: str, convention: NormConvention, norms: tuple, **kw) -> ArchSpec:
    feeds = SANDWICH_FEEDS if any(r.role is R.NORM_POST_FFN for r in norms) else DECODER_FEEDS
    return ArchSpec(name=name, description=description, norm_convention=convention,
                    rules=norms + DECODER_LINEARS, feeds=feeds, **kw)


SPECS: dict[str, ArchSpec] = {s.name: s for s in (
    _decoder("gemma", "Gemma 1: RMSNorm x̂·(1+w)", N.ONE_PLUS_W, LLAMA_NORMS,
             hf_architectures=("GemmaForCausalLM",), model_types=("gemma",), gguf_arch="gemma",
             hf_templates=LLAMA_TEMPLATES, gguf_norm_offset=1.0, tied_embeddings=True,
             refs=("transformers GemmaRMSNorm: output * (1.0 + self.weight)",
                   "llama.cpp convert_hf_to_gguf.py GemmaModel.modify_tensors: norm weights += 1")),
    _decoder("gemma2", "Gemma 2: sandwich RMSNorms x̂·(1+w)", N.ONE_PLUS_W, GEMMA_NORMS,
             hf_architectures=("Gemma2ForCausalLM",), model_types=("gemma2",), gguf_arch="gemma2",
             signature=(r"\.pre_feedforward_layernorm\.", r"\.post_feedforward_layernorm\."),
             hf_templates=GEMMA_TEMPLATES, gguf_norm_offset=1.0, tied_embeddings=True,
             refs=("transformers Gemma2RMSNorm", "convert_hf_to_gguf.py Gemma2Model: norm weights += 1")),
    _decoder("gemma3", "Gemma 3 (text, and the text side of Gemma3ForConditionalGeneration): x̂·(1+w); "
             "SigLIP vision tower LayerNorm x̂·w+b", N.ONE_PLUS_W, GEMMA3_VISION + GEMMA_NORMS,
             hf_architectures=("Gemma3ForCausalLM", "Gemma3ForConditionalGeneration", "Gemma3TextModel"),
             model_types=("gemma3", "gemma3_text"), gguf_arch="gemma3",
             signature=(r"\.pre_feedforward_layernorm\.", r"\.post_feedforward_layernorm\.",
                        r"\.self_attn\.q_norm\."),
             hf_templates=GEMMA_TEMPLATES + QK_NORM_TEMPLATES, prefix_rewrites=MULTIMODAL_PREFIXES,
             gguf_norm_offset=1.0, tied_embeddings=True,
             refs=("transformers Gemma3RMSNorm: output * (1.0 + self.weight.float())",
                   "convert_hf_to_gguf.py Gemma3Model.modify_tensors: norm weights += 1",
                   "transformers integrations/ggml.py: Gemma3 norms -= 1 on GGUF load")),
    _decoder("gemma3n", "Gemma 3n: RMSNorm x̂·w (unlike Gemma 3)", N.W, GEMMA_NORMS,
             hf_architectures=("Gemma3nForCausalLM", "Gemma3nForConditionalGeneration"),
             model_types=("gemma3n", "gemma3n_text"), gguf_arch="gemma3n",
             signature=(r"\.pre_feedforward_layernorm\.", r"\.post_feedforward_layernorm\.",
                        r"\.self_attn\.q_norm\.", r"\.altup\.", r"\.laurel\."),
             hf_templates=GEMMA_TEMPLATES + QK_NORM_TEMPLATES,
             prefix_rewrites=MULTIMODAL_PREFIXES, tied_embeddings=True,
             refs=("transformers Gemma3nRMSNorm: self.weight initialised to ones, x * weight",)),
    _decoder("llama", "Llama: RMSNorm x̂·w", N.W, LLAMA_NORMS,
             hf_architectures=("LlamaForCausalLM",), model_types=("llama",), gguf_arch="llama",
             hf_templates=LLAMA_TEMPLATES, gguf_qk_permuted=True,
             refs=("transformers LlamaRMSNorm: self.weight * hidden_states",
                   "convert_hf_to_gguf.py LlamaModel.permute (q/k rows); transformers LlamaTensorProcessor "
                   "reverses it on GGUF load")),
    _decoder("mistral", "Mistral: RMSNorm x̂·w", N.W, LLAMA_NORMS,
             hf_architectures=("MistralForCausalLM",), model_types=("mistral",), gguf_arch="llama",
             hf_templates=LLAMA_TEMPLATES, gguf_qk_permuted=True,
             refs=("transformers MistralRMSNorm", "Mistral GGUFs use general.architecture 'llama': q/k permuted")),
    _decoder("qwen2", "Qwen2: RMSNorm x̂·w", N.W, LLAMA_NORMS,
             hf_architectures=("Qwen2ForCausalLM",), model_types=("qwen2",), gguf_arch="qwen2",
             hf_templates=LLAMA_TEMPLATES, refs=("transformers Qwen2RMSNorm",)),
    _decoder("qwen3", "Qwen3: RMSNorm x̂·w, with q/k norms", N.W, LLAMA_NORMS,
             hf_architectures=("Qwen3ForCausalLM",), model_types=("qwen3",), gguf_arch="qwen3",
             hf_templates=LLAMA_TEMPLATES + QK_NORM_TEMPLATES, refs=("transformers Qwen3RMSNorm",)),
    _decoder("nemotron", "Nemotron: LayerNorm1P (x̂·(1+w))+b", N.LAYERNORM1P, LLAMA_NORMS,
             hf_architectures=("NemotronForCausalLM",), model_types=("nemotron",), gguf_arch="nemotron",
             hf_templates=LLAMA_TEMPLATES, gguf_norm_offset=1.0,
             refs=("transformers NemotronLayerNorm1P: weight + 1",
                   "convert_hf_to_gguf.py NemotronModel: norm weights += 1")),
    ArchSpec(
        name="bert", description="BERT and its kin: post-LN LayerNorm x̂·w+b", norm_convention=N.LAYERNORM,
        hf_architectures=("BertModel", "BertForMaskedLM", "BertForSequenceClassification"),
        model_types=("bert",), gguf_arch="bert", hf_templates=BERT_TEMPLATES,
        prefix_rewrites=(("bert.", ""),),  # BertForMaskedLM / ForSequenceClassification wrap the encoder
        signature=(r"encoder\.layer\.\d+\.attention\.self\.query\.",),
        rules=(
            rule(r"embeddings\.LayerNorm\.", R.NORM_EMBED),
            rule(r"attention\.output\.LayerNorm\.", R.NORM_POST_ATTN),
            rule(r"\.output\.LayerNorm\.", R.NORM_POST_FFN),
            rule(r"embeddings\.word_embeddings\.", R.EMBEDDING),
            rule(r"embeddings\.(?:position|token_type)_embeddings\.", R.POSITION_EMBEDDING),
            rule(r"attention\.self\.query\.", R.ATTN_Q),
            rule(r"attention\.self\.key\.", R.ATTN_K),
            rule(r"attention\.self\.value\.", R.ATTN_V),
            rule(r"attention\.output\.dense\.", R.ATTN_O),
            rule(r"intermediate\.dense\.", R.MLP_UP),
            rule(r"\.output\.dense\.", R.MLP_DOWN),
        ),
        # post-LN: each LayerNorm feeds the linears that come after it
        feeds=(Feed(R.NORM_EMBED, (R.ATTN_Q, R.ATTN_K, R.ATTN_V), None),
               Feed(R.NORM_POST_ATTN, (R.MLP_UP,)),
               Feed(R.NORM_POST_FFN, (R.ATTN_Q, R.ATTN_K, R.ATTN_V), 1)),
        refs=("transformers BertLayer (post-LN: LayerNorm(x + sublayer(x)))",)),
)}

# Unknown architectures: names alone. Norm convention assumed x̂·w unless the user overrides it.
HEURISTIC = ArchSpec(
    name="unknown", description="unknown architecture: roles from name heuristics", norm_convention=N.W,
    rules=(
        rule(r"(?:^|\.)(?:embed_tokens|wte|tok_emb|tok_embeddings|word_embeddings|embedding|token_embd)\.",
             R.EMBEDDING),
        rule(r"(?:^|\.)(?:wpe|pos_emb|position_embeddings)\.", R.POSITION_EMBEDDING),
        rule(r"(?:^|\.)(?:lm_head|out_head|output)\.weight$", R.LM_HEAD),
        rule(r"(?:q_proj|W_query|\.wq|\.query)\.", R.ATTN_Q),
        rule(r"(?:k_proj|W_key|\.wk|\.key)\.", R.ATTN_K),
        rule(r"(?:v_proj|W_value|\.wv|\.value)\.", R.ATTN_V),
        rule(r"(?:o_proj|out_proj|\.wo|c_proj)\.", R.ATTN_O),
        rule(r"(?:gate_proj|\.w1)\.", R.MLP_GATE),
        rule(r"(?:up_proj|\.w3|\.fc1|c_fc)\.", R.MLP_UP),
        rule(r"(?:down_proj|\.w2|\.fc2)\.", R.MLP_DOWN),
        rule(r"(?:^|\.)(?:final_norm|norm_f|ln_f|norm)\.(?:weight|scale|bias|shift)$", R.NORM_FINAL),
        rule(r"(?:norm|ln_?\d*|layernorm|LayerNorm)[\w]*\.(?:weight|scale|bias|shift|gamma|beta)$", R.NORM_OTHER),
    ),
)

# GGUF tensor names (llama.cpp's own), for tensors of a GGUF whose HF name is not known.
# ref: gguf-py constants.py TENSOR_NAMES
GGUF_RULES = (
    rule(r"^token_embd\.", R.EMBEDDING),
    rule(r"^output\.weight$", R.LM_HEAD),
    rule(r"^output_norm\.", R.NORM_FINAL),
    rule(r"\.attn_q\.", R.ATTN_Q),
    rule(r"\.attn_k\.", R.ATTN_K),
    rule(r"\.attn_v\.", R.ATTN_V),
    rule(r"\.attn_qkv\.", R.ATTN_QKV),
    rule(r"\.attn_output\.", R.ATTN_O),
    rule(r"\.ffn_gate\.", R.MLP_GATE),
    rule(r"\.ffn_up\.", R.MLP_UP),
    rule(r"\.ffn_down\.", R.MLP_DOWN),
    rule(r"\.attn_q_norm\.", R.NORM_Q),
    rule(r"\.attn_k_norm\.", R.NORM_K),
    rule(r"\.attn_norm\.", R.NORM_PRE_ATTN),
    rule(r"\.ffn_norm\.", R.NORM_PRE_FFN),
    rule(r"\.post_attention_norm\.", R.NORM_POST_ATTN),
    rule(r"\.post_ffw_norm\.", R.NORM_POST_FFN),
)
