"""`forward`: does the model feel it? Variants against the base on the same tokens (torch extra).

The base is loaded once with transformers (float32). Variants are built in place on that one model
and restored after each: a quantization scheme fake-quantizes the weights of its per-tensor plan with
normscope's own kernels (the same values `simulate` measures), a clip clips norm gains in their
convention. Real variants (a GGUF, a clipped directory) are loaded one by one after the base is freed.
Every variant is compared with the base token by token (KL, top-1 agreement, perplexity, Δp; see
forward_metrics), the base pass records the activation profile (see activations), and `sensitivity`
quantizes one tensor group at a time.
"""

from __future__ import annotations

import functools
import gc
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..results import ActivationProfile, ClipScope, EvalText, ForwardResult, ForwardVariant, NormConvention, ProgressFn
from .activations import ActivationRecorder
from .clipping import check_percentile, in_scope
from .forward_load import load_causal_lm, load_tokenizer, require_torch
from .forward_metrics import Scores, kl_stats, score_base, score_variant
from .forward_notes import forward_notes
from .forward_plan import PlannedVariant, plan_quantized, variant_size
from .forward_sensitivity import SENSITIVITY_BY, run_sensitivity
from .forward_text import load_text, windows
from .forward_weights import QuantCache, WeightEditor, clip_norms, quantize_in_place
from .model import open_model
from .simulate import parse_schemes

__all__ = ["forward", "DEFAULT_TOKENS"]

log = logging.getLogger(__name__)

DEFAULT_TOKENS = 256


@dataclass
class _Run:
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


def _clip_values(clip: float | Sequence[float] | None) -> list[float]:
    items = [] if clip is None else [clip] if isinstance(clip, (int, float)) else list(clip)
    return [check_percentile(p) for p in items]


def forward(base: str | Path | None = None, variants: Sequence[str | Path] = (), *,
            schemes: str | Sequence[str] = (), clip: float | Sequence[float] | None = None,
            clip_include: Sequence[str] = (), tensor_types: Sequence[tuple[str, str]] = (),
            recipes: Sequence[Any] = (),
            text: str | Path | None = None, tokens: int = DEFAULT_TOKENS, ctx: int | None = None,
            activations: bool = True, sensitivity: bool = False, sensitivity_scheme: str | None = None,
            sensitivity_by: str = "layer-role", sensitivity_include: Sequence[str] = (),
            include_lm_head: bool = False, tokenizer: str | Path | None = None,
            arch: str | None = None, norm_convention: NormConvention | str | None = None, token: str | None = None,
            cache_dir: Path | None = None, progress: ProgressFn | None = None) -> ForwardResult:
    """Run the base and its variants on the same tokens and compare their next-token distributions.

    Args:
        base: what analyze accepts (HF directory, .safetensors, .gguf, hub id, `example:NAME`).
        variants: real variants to load (a GGUF, a clipped directory, a hub id), one at a time.
        schemes: simulated variants: llama.cpp file types (Q8_0, Q4_K_M, Q2_K, …) follow llama-quantize's
            plan with normscope's ggml kernels; int4, int8, fp8_block, … quantize the decoder Linears.
        clip: percentile(s): a variant whose norm gains are clipped to that percentile of their own |gain|.
        clip_include: globs on norm names to clip (default: every norm).
        tensor_types: llama-quantize `--tensor-type` (regex, type) overrides for the GGUF schemes.
        recipes: `recipe` results (or their JSON documents, or paths to them): each a variant quantized with
            its reference file type and its tensor types.
        text: a UTF-8 text file (default: the public-domain sample shipped with normscope).
        tokens: scored tokens (each predicts the next one).
        ctx: tokens per window (default: all in one window, capped by the model's context).
        activations: record the activation profile on the base pass.
        sensitivity: also quantize one tensor group at a time with `sensitivity_scheme` (default: the first
            scheme, else Q4_K_M) and rank the groups by KL.
        sensitivity_by: "layer-role" (one group per layer and role), "layer" or "role".
        sensitivity_include: globs on tensor names: only these tensors form sensitivity groups.
        tokenizer: a tokenizer directory or hub id (default: the base's own).
        progress: called as progress(step, done, total).

    Returns:
        ForwardResult: the base and each variant (perplexity, KL stats, top-1 agreement, RMS Δp), the
        activation profile, the sensitivity ranking, notes.

    Raises:
        MissingExtraError: torch or transformers is not installed (the message says what to install).
        ConfigError, UnknownNameError, SourceNotFoundError, CheckpointError.

    Example:
        >>> r = forward("gemma-3-270m-hf", schemes="Q8_0,Q4_K_M,Q2_K", clip=99)  # doctest: +SKIP
        >>> r.variant("Q2_K").kl.mean > r.variant("Q8_0").kl.mean
        True
    """
    torch, _ = require_torch()
    scheme_names = parse_schemes(schemes) if (schemes and (not isinstance(schemes, str) or schemes.strip())) else []
    clips = _clip_values(clip)
    if tokens < 1:
        raise ConfigError(f"--tokens {tokens}: need at least 1 token")
    if sensitivity_by not in SENSITIVITY_BY:
        raise ConfigError(f"--sensitivity-by {sensitivity_by!r}; valid: {', '.join(SENSITIVITY_BY)}")
    sens_scheme = sensitivity_scheme or (scheme_names[0] if scheme_names else "Q4_K_M") if sensitivity else None
    if sens_scheme:
        parse_schemes(sens_scheme)
    recipe_plans = _recipes(recipes)
    text_label, text_body = load_text(text)
    warnings: list[str] = []
    step = _progress(progress)
    with open_model(base, arch=arch, norm_convention=norm_convention, token=token, cache_dir=cache_dir) as nmodel:
        warnings += nmodel.warnings
        step("loading the base model")
        tm = load_causal_lm(nmodel.source)
        tok = load_tokenizer(nmodel.source, tokenizer)
        wins, bos = _windows(tok, tm, text_body, tokens, ctx)
        run = _Run(torch, tm, [torch.tensor([w]) for w in wins], [torch.tensor(w[1:]) for w in wins], [])
        step("base")
        profile = _base_pass(run, nmodel, _token_texts(tok, wins) if activations else None)
        base_scores = Scores()
        for lg, t in zip(run.base_logits, run.targets):
            score_base(lg, t, base_scores)
        base_nll, base_p = base_scores.cat("nll"), base_scores.cat("p_target")
        base_variant = ForwardVariant("base", "base", f"{nmodel.source.spec or nmodel.source.path}",
                                      float(np.exp(base_nll.mean())), float(base_nll.mean()), None, None, None, None,
                                      0)
        compare = functools.partial(_compare, run, base_nll=base_nll, base_p=base_p)
        # -- variants built in place on the one model -------------------------------------------------
        editor = WeightEditor(tm)
        planned = [plan_quantized(nmodel, s, editor, tensor_types=tensor_types, include_lm_head=include_lm_head,
                                  warnings=warnings) for s in scheme_names]
        for label, reference, pairs in recipe_plans:
            pv = plan_quantized(nmodel, reference, editor, tensor_types=pairs, warnings=warnings)
            planned.append(PlannedVariant(pv.scheme, label, f"a normscope recipe: {reference} with its {len(pairs)} "
                                          "--tensor-type pairs", pv.tensors, pv.plan))
        sens_plan = None
        if sens_scheme:
            sens_plan = next((p for p in planned if p.scheme == sens_scheme and p.label == sens_scheme
                              and not tensor_types), None) or \
                plan_quantized(nmodel, sens_scheme, editor, include_lm_head=include_lm_head, warnings=warnings)
        cache = QuantCache(_shared_pairs(planned, sens_plan))
        results: list[ForwardVariant] = []
        for pv in planned:
            step(pv.label)
            for info, fmt in pv.tensors:
                quantize_in_place(editor, info, fmt, cache)
            results.append(compare(pv.label, "scheme", pv.description, len(pv.tensors), scheme=pv.scheme,
                                   **variant_size(nmodel, pv)))
            editor.restore()
        results += _clip_variants(compare, editor, nmodel, clips, clip_include, step)
        sens = ()
        if sens_plan is not None:
            sens = run_sensitivity(run, editor, sens_plan, cache, sensitivity_by, step, sensitivity_include)
        del editor, cache
        # -- real variants, one model at a time, after the base is freed --------------------------------
        if variants:
            run.model = None
            del tm
            gc.collect()
            for spec in variants:
                step(str(spec))
                results.append(_loaded_variant(compare, spec, arch=arch, norm_convention=norm_convention, token=token,
                                               cache_dir=cache_dir))
        text_info = EvalText(text_label, int(sum(len(w) - 1 for w in wins)), len(wins), max(len(w) for w in wins),
                             bos, getattr(tok, "name_or_path", "") or type(tok).__name__)
        options = {"schemes": scheme_names, "recipes": len(recipe_plans), "clip": clips,
                   "clip_include": list(clip_include), "tensor_types": [f"{p}={t}" for p, t in tensor_types],
                   "variants": [str(v) for v in variants], "tokens": tokens, "ctx": ctx, "activations": activations,
                   "sensitivity": sensitivity, "sensitivity_by": sensitivity_by if sensitivity else None,
                   "sensitivity_include": list(sensitivity_include), "include_lm_head": include_lm_head}
        result_variants = tuple(results)
        notes = forward_notes(base_variant, result_variants, profile, sens)
        return ForwardResult(nmodel.source, nmodel.detected.spec.name, text_info, base_variant, result_variants,
                             profile, sens_scheme, sens, notes, tuple(warnings), options)


def _base_pass(run: _Run, nmodel: Any, token_texts: list[str] | None) -> ActivationProfile | None:
    """Run the base on every window (keeping its logits), with the activation hooks when `token_texts` is given."""
    recorder = None
    if token_texts is not None:
        from .superweight import super_weight_candidates

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


def _clip_variants(compare: Callable[..., ForwardVariant], editor: WeightEditor, nmodel: Any, clips: Sequence[float],
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


def _loaded_variant(compare: Callable[..., ForwardVariant], spec: str | Path, **open_args: Any) -> ForwardVariant:
    with open_model(spec, **open_args) as vmodel:
        vm = load_causal_lm(vmodel.source)
        fmt = vmodel.source.format
    try:
        return compare(str(spec), "model", f"loaded with transformers ({fmt})", 0, model=vm, source=str(spec))
    finally:
        del vm
        gc.collect()


def _compare(run: _Run, label: str, kind: str, description: str, changed: int, *, base_nll: np.ndarray,
             base_p: np.ndarray, model: Any | None = None, notes: tuple[str, ...] = (), source: str | None = None,
             **size: Any) -> ForwardVariant:
    s = run.score(run.logits(model))
    kl, nll, p = s.cat("kl"), s.cat("nll"), s.cat("p_target")
    dp = p - base_p
    return ForwardVariant(label, kind, description, float(np.exp(nll.mean())), float(nll.mean()), kl_stats(kl),
                          float(s.cat("agree").mean()), float(np.sqrt(np.mean(dp * dp))), float(dp.mean()), changed,
                          source=source, notes=notes, **size)


def _recipes(recipes: Sequence[Any]) -> list[tuple[str, str, tuple[tuple[str, str], ...]]]:
    """(label, reference file type, tensor types) of each recipe given as a result, a document or a path."""
    out = []
    for r in recipes:
        if isinstance(r, (str, Path)):
            try:
                r = json.loads(Path(r).expanduser().read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise ConfigError(f"{r}: not a readable recipe JSON report ({e})") from None
        doc = r if isinstance(r, dict) else r.to_dict()
        if doc.get("schema") != "normscope.recipe":
            raise ConfigError("--recipe needs a `normscope recipe --json` report")
        label = f"recipe {doc['budget_bits_per_weight']:.3g} bpw"
        out.append((label, doc["reference"], tuple((p, t) for p, t in doc["tensor_types"])))
    if len(out) > 1:
        out = [(f"{label} #{i + 1}", ref, pairs) for i, (label, ref, pairs) in enumerate(out)]
    return out


def _shared_pairs(planned: Sequence[PlannedVariant], sens: PlannedVariant | None) -> set[tuple[str, str]]:
    """(tensor, type) pairs used more than once: their ggml blocks are worth keeping."""
    seen: dict[tuple[str, str], int] = {}
    for pv in [*planned, *([sens] if sens is not None and sens not in planned else [])]:
        for info, fmt in pv.tensors:
            seen[(info.name, fmt)] = seen.get((info.name, fmt), 0) + 1
    return {k for k, n in seen.items() if n > 1}


def _windows(tok: Any, tm: Any, text: str, tokens: int, ctx: int | None) -> tuple[list[list[int]], bool]:
    ids = tok(text, add_special_tokens=False)["input_ids"]
    with_special = tok("a", add_special_tokens=True)["input_ids"]
    bos = tok.bos_token_id if tok.bos_token_id is not None and with_special[:1] == [tok.bos_token_id] else None
    limit = getattr(tm.config, "max_position_embeddings", None) or getattr(
        getattr(tm.config, "text_config", None), "max_position_embeddings", None) or 2048
    window = min(ctx or tokens + 1, int(limit))
    return windows(ids, tokens, window, bos), bos is not None


def _token_texts(tok: Any, wins: Sequence[Sequence[int]]) -> list[str]:
    return [tok.decode([i]) for w in wins for i in w]


def _progress(progress: ProgressFn | None) -> Callable[[str], None]:
    def step(what: str) -> None:
        log.info("forward: %s", what)
        if progress:
            progress(what, 0, 0)  # steps, not bytes: the bar shows the step name only
    return step
