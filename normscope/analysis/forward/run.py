"""One forward run: the windows of tokens, the base's logits, and every variant scored against them on the
one model (KL, top-1 agreement, perplexity, Δp; see metrics), with the activation profile recorded on the
base pass."""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError
from ...results import ActivationProfile, ClipScope, ForwardVariant
from ..engine.clipping import in_scope
from ..engine.model import open_model
from ..engine.superweight import super_weight_candidates
from .activations import ActivationRecorder
from .load import load_causal_lm
from .metrics import Scores, kl_stats, score_variant
from .text import windows
from .weights import WeightEditor, clip_norms

__all__ = ["Run", "base_pass", "clip_variants", "loaded_variant", "score", "token_windows", "token_texts"]


@dataclass
class Run:
    """What every variant is compared against: the windows, the base's logits, and the model."""

    torch: Any
    model: Any
    ids: list[Any]  # one (1, n) LongTensor per window
    targets: list[Any]  # (n - 1,) per window
    base_logits: list[Any]  # (n - 1, vocab) float32 per window

    def logits(self, model: Any | None = None) -> list[Any]:
        m = model if model is not None else self.model
        out = []
        with self.torch.inference_mode():
            for ids in self.ids:
                out.append(m(input_ids=ids, use_cache=False).logits[0, :-1].float())
        return out

    def score(self, logits: list[Any]) -> Scores:
        s = Scores()
        for base, lg, t in zip(self.base_logits, logits, self.targets):
            score_variant(base, lg, t, s)
        return s


def base_pass(run: Run, nmodel: Any, token_texts: list[str] | None) -> ActivationProfile | None:
    """Run the base on every window (keeping its logits), with the activation hooks when `token_texts` is given."""
    recorder = None
    if token_texts is not None:
        recorder = ActivationRecorder(run.model, nmodel.tensors, super_weight_candidates(nmodel))
        recorder.attach()
    try:
        with run.torch.inference_mode():
            offset = 0
            for ids in run.ids:
                if recorder is not None:
                    recorder.window(offset)
                run.base_logits.append(run.model(input_ids=ids, use_cache=False).logits[0, :-1].float())
                offset += ids.shape[1]
    finally:
        if recorder is not None:
            recorder.detach()
    if recorder is None:
        return None
    return recorder.profile(token_texts, {t.name: t.layer for t in nmodel.tensors})


def clip_variants(compare: Callable[..., ForwardVariant], editor: WeightEditor, nmodel: Any, clips: Sequence[float],
                   include: Sequence[str], step: Callable[[str], None]) -> list[ForwardVariant]:
    norms = in_scope(nmodel, ClipScope.NORMS, include)
    if clips and not norms:
        raise ConfigError(f"--clip: no norm weights match {list(include) or 'any norm'}")
    out = []
    scope = f"{len(norms)} norm tensors" + (f" matching {', '.join(include)}" if include else "")
    for p in clips:
        label = f"clip p{p:g}"
        step(label)
        changes = clip_norms(editor, nmodel, norms, p)
        notes = tuple(f"{c.name}: |gain| {c.max_before:.4g} → {c.max_after:.4g} ({c.clipped} values)"
                      for c in sorted(changes, key=lambda c: -c.max_before)[:5])
        out.append(compare(label, "clip", f"effective norm gains clipped at percentile {p:g} of their own |gain| "
                           f"({scope})", len(changes), notes=notes))
        editor.restore()
    return out


def loaded_variant(compare: Callable[..., ForwardVariant], spec: str | Path, **open_args: Any) -> ForwardVariant:
    with open_model(spec, **open_args) as vmodel:
        vm = load_causal_lm(vmodel.source)
        fmt = vmodel.source.format
    try:
        return compare(str(spec), "model", f"loaded with transformers ({fmt})", 0, model=vm, source=str(spec))
    finally:
        del vm
        gc.collect()


def score(run: Run, label: str, kind: str, description: str, changed: int, *, base_nll: np.ndarray,
             base_p: np.ndarray, model: Any | None = None, notes: tuple[str, ...] = (), source: str | None = None,
             **size: Any) -> ForwardVariant:
    s = run.score(run.logits(model))
    kl, nll, p = s.cat("kl"), s.cat("nll"), s.cat("p_target")
    dp = p - base_p
    return ForwardVariant(label, kind, description, float(np.exp(nll.mean())), float(nll.mean()), kl_stats(kl),
                          float(s.cat("agree").mean()), float(np.sqrt(np.mean(dp * dp))), float(dp.mean()), changed,
                          source=source, notes=notes, **size)


def token_windows(tok: Any, tm: Any, text: str, tokens: int, ctx: int | None) -> tuple[list[list[int]], bool]:
    ids = tok(text, add_special_tokens=False)["input_ids"]
    with_special = tok("a", add_special_tokens=True)["input_ids"]
    bos = tok.bos_token_id if tok.bos_token_id is not None and with_special[:1] == [tok.bos_token_id] else None
    limit = getattr(tm.config, "max_position_embeddings", None) or getattr(
        getattr(tm.config, "text_config", None), "max_position_embeddings", None) or 2048
    window = min(ctx or tokens + 1, int(limit))
    return windows(ids, tokens, window, bos), bos is not None


def token_texts(tok: Any, wins: Sequence[Sequence[int]]) -> list[str]:
    return [tok.decode([i]) for w in wins for i in w]
