"""`normscope imatrix collect` (torch extra): an importance matrix collected as llama-imatrix collects it,
written in its GGUF file.

ref: tools/imatrix/imatrix.cpp. The text is tokenized once and cut into whole chunks of `chunk_size` tokens
(compute_imatrix: a shorter tail is not run), each opened by BOS when the tokenizer adds one, and each chunk
runs through the model on its own. For every weight of a block (`blk.*`: collect_imatrix skips the output
and embedding unless --process-output) that multiplies activations, the collector adds, per input column,
the sum of x^2 over the chunk's tokens, and counts the tokens (batches of fewer than 16 tokens are
skipped). Here forward hooks on the Linear modules whose weight has a GGUF name read the same inputs from
transformers' forward pass (float32; llama.cpp's own forward differs from it in rounding, not in kind) and
accumulate in float64. Memory holds the model, one chunk's activations and the sums.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ...errors import ConfigError
from ...io.imatrix import write_imatrix
from ...results import ImatrixCollected, ProgressFn
from ..engine.model import Model, open_model
from ..forward import load_causal_lm, load_text, load_tokenizer, require_torch

__all__ = ["collect_imatrix", "collect_imatrix_model", "CHUNK_SIZE", "MIN_BATCH"]

CHUNK_SIZE = 512  # llama-imatrix's default context (-c)
MIN_BATCH = 16  # collect_imatrix ignores matrix multiplications of fewer tokens


def collect_imatrix(source: str | Path | None, out: str | Path, *, text: str | Path | None = None,
                    tokens: int | None = None, chunk_size: int = CHUNK_SIZE, tokenizer: str | Path | None = None,
                    arch: str | None = None, token: str | None = None, cache_dir: Path | None = None,
                    progress: ProgressFn | None = None) -> ImatrixCollected:
    """Collect an importance matrix of the model at `source` on a text, as llama-imatrix does.

    Args:
        source: what forward accepts (HF directory, GGUF, hub id, `example:NAME`, None for the embedded model).
        out: the GGUF imatrix file to write (atomically).
        text: a UTF-8 text file; None: the built-in public-domain sample.
        tokens: at most this many tokens (whole chunks); None: every whole chunk of the text.
        chunk_size: tokens per chunk (llama-imatrix's -c).
        tokenizer: a tokenizer directory when the model has none beside it.
        progress: called as progress("chunk i", chunks done, chunks total).

    Raises:
        MissingExtraError: no torch; ConfigError: a text shorter than one chunk, or non-finite activations.
    """
    with open_model(source, arch=arch, token=token, cache_dir=cache_dir) as model:
        return collect_imatrix_model(model, out, text=text, tokens=tokens, chunk_size=chunk_size,
                                     tokenizer=tokenizer, progress=progress)


def collect_imatrix_model(model: Model, out: str | Path, *, text: str | Path | None = None,
                          tokens: int | None = None, chunk_size: int = CHUNK_SIZE,
                          tokenizer: str | Path | None = None, progress: ProgressFn | None = None
                          ) -> ImatrixCollected:
    """`collect_imatrix` on an open model."""
    torch, _ = require_torch("normscope imatrix collect")
    if chunk_size < MIN_BATCH:
        raise ConfigError(f"--chunk-size {chunk_size}: llama-imatrix skips batches of fewer than {MIN_BATCH} tokens")
    label, body = load_text(text)
    tok = load_tokenizer(model.source, tokenizer)
    ids = tok(body, add_special_tokens=False)["input_ids"]
    bos = tok.bos_token_id if tok("a", add_special_tokens=True)["input_ids"][:1] == [tok.bos_token_id] else None
    n_chunks = len(ids) // chunk_size
    if tokens is not None:
        n_chunks = min(n_chunks, tokens // chunk_size)
    if n_chunks < 1:
        raise ConfigError(f"{label}: {len(ids)} tokens{f' (of at most {tokens})' if tokens is not None else ''} "
                          f"make no whole chunk of {chunk_size}; give a longer --text or a smaller --chunk-size")
    gguf_of = {t.name: t.gguf_name for t in model.tensors if t.gguf_name}
    lm = load_causal_lm(model.source)
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    skipped, hooks = [], []

    def hook(name: str) -> Callable:
        def record(module, inputs, output):
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1])
            if x.shape[0] < MIN_BATCH:
                return
            s = (x.double() ** 2).sum(dim=0).numpy()
            if not np.all(np.isfinite(s)):
                raise ConfigError(f"non-finite activations into {name}: the model overflows on this text "
                                  "(llama-imatrix stops the same way)")
            sums[name] = sums[name] + s if name in sums else s
            counts[name] = counts.get(name, 0) + x.shape[0]
        return record

    for mod_name, module in lm.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        name = gguf_of.get(f"{mod_name}.weight") or gguf_of.get(f"{mod_name}.weight".removeprefix("model."))
        if name is None or not name.startswith("blk."):
            skipped.append(f"{mod_name}.weight")
            continue
        hooks.append(module.register_forward_hook(hook(name)))
    if not hooks:
        raise ConfigError(f"{model.source.spec or model.source.path}: no Linear weight of the model maps to a GGUF "
                          "block tensor; nothing to collect")
    try:
        with torch.inference_mode():
            for i in range(n_chunks):
                chunk = list(ids[i * chunk_size:(i + 1) * chunk_size])
                if bos is not None:
                    chunk[0] = bos  # compute_imatrix: the chunk's first token becomes BOS
                lm(torch.tensor([chunk]))
                if progress:
                    progress(f"chunk {i + 1}", i + 1, n_chunks)
    finally:
        for h in hooks:
            h.remove()
    entries = {n: (sums[n].astype(np.float32), np.array([counts[n]])) for n in sums}
    path = write_imatrix(out, entries, datasets=[label], chunk_count=n_chunks, chunk_size=chunk_size)
    return ImatrixCollected(path=str(path), dataset=label, chunk_count=n_chunks, chunk_size=chunk_size,
                            tokens=n_chunks * chunk_size, entries=len(entries), skipped=tuple(sorted(skipped)))
