"""A tiny Gemma 3 text model that transformers loads (config, safetensors, a trained byte-level BPE tokenizer),
for forward and recipe tests that need no real model. Weights are helpers.gemma_tensors' (seeded, with
the post-FFN gain of 1657 of the real model in the last block)."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import gemma_tensors, write_model

SAMPLE = Path(__file__).resolve().parent.parent / "normscope" / "data" / "eval_sample.txt"


def tiny_gemma(directory: Path, *, hidden: int = 256, ffn: int = 512, layers: int = 2, vocab: int = 320,
               heads: int = 2, head_dim: int = 64, dtype: str = "BF16", seed: int = 0) -> Path:
    """An HF-layout Gemma3ForCausalLM directory of random weights with a tokenizer trained on the sample text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import Gemma3TextConfig, PreTrainedTokenizerFast

    tensors = gemma_tensors(layers=layers, hidden=hidden, ffn=ffn, vocab=vocab, heads=heads, head_dim=head_dim,
                            seed=seed)
    config = Gemma3TextConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers,
                              num_attention_heads=heads, num_key_value_heads=1, head_dim=head_dim,
                              max_position_embeddings=1024, sliding_window=64, tie_word_embeddings=True,
                              pad_token_id=0, eos_token_id=1, bos_token_id=2).to_dict()
    config["architectures"] = ["Gemma3ForCausalLM"]
    write_model(directory, tensors, None, dtype)
    (directory / "config.json").write_text(json.dumps(config))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([SAMPLE.read_text(encoding="utf-8")], trainer)
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                            unk_token="<unk>").save_pretrained(str(directory))
    return directory
