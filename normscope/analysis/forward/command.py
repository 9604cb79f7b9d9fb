"""`forward`: does the model feel it? Variants against the base on the same tokens (torch extra).

The base is loaded once with transformers (float32). Variants are built in place on that one model
and restored after each: a quantization scheme fake-quantizes the weights of its per-tensor plan with
normscope's own kernels (the same values `simulate` measures), a clip clips norm gains in their
convention. Real variants (a GGUF, a clipped directory) are loaded one by one after the base is freed.
Every variant is compared with the base token by token (KL, top-1 agreement, perplexity, Δp; see
run.py and metrics.py), the base pass records the activation profile (activations.py), and `sensitivity`
quantizes one tensor group at a time (sensitivity.py).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError
from ...io import DEFAULT_CHUNK_ELEMENTS
from ...quant import is_gguf_scheme, parse_schemes
from ...results import EvalText, ForwardResult, ForwardVariant, NormConvention, ProgressFn
from ..engine.clipping import check_percentile
from ..engine.model import Model, open_model
from ..engine.workers import Executor, resolve_jobs
from .kld import kld_chunks, read_kld_base, score_model_kld, write_model_kld_base
from .load import load_causal_lm, load_tokenizer, require_torch
from .metrics import Scores, score_base
from .notes import forward_notes
from .options import DEFAULT_TOKENS, Evaluation, Sensitivity
from .run import Run, base_pass, clip_variants, loaded_variant, score, token_texts, token_windows
from .runtime import RuntimeHooks, check_runtime, runtime_of
from .sensitivity import SENSITIVITY_BY, run_sensitivity
from .text import load_text
from .variants import PlannedVariant, plan_quantized, variant_size
from .weights import QuantCache, WeightEditor, quantize_in_place

__all__ = ["forward", "forward_model", "Evaluation", "Sensitivity", "DEFAULT_TOKENS"]

log = logging.getLogger(__name__)


def _clip_values(clip: float | Sequence[float] | None) -> list[float]:
    items = [] if clip is None else [clip] if isinstance(clip, (int, float)) else list(clip)
    return [check_percentile(p) for p in items]


def forward(base: str | Path | None = None, variants: Sequence[str | Path] = (), *, arch: str | None = None,
            norm_convention: NormConvention | str | None = None, token: str | None = None,
            cache_dir: Path | None = None, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
            progress: ProgressFn | None = None, jobs: int | None = None, executor: Executor | str = "thread",
            ray_address: str | None = None, schemes: str | Sequence[str] = (),
            clip: float | Sequence[float] | None = None, clip_include: Sequence[str] = (),
            tensor_types: Sequence[tuple[str, str]] = (), recipes: Sequence[Any] = (), include_lm_head: bool = False,
            activations: bool = True, evaluation: Evaluation | None = None, sensitivity: bool | Sensitivity = False,
            runtime: str | None = None, kld_base_out: str | Path | None = None, kld_base: str | Path | None = None,
            text: str | Path | None = None, tokens: int | None = None, ctx: int | None = None,
            tokenizer: str | Path | None = None, sensitivity_scheme: str | None = None,
            sensitivity_by: str | None = None, sensitivity_include: Sequence[str] = ()) -> ForwardResult:
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
        include_lm_head: quantize an untied lm_head under simulated schemes.
        runtime: "llama.cpp" (the default for llama.cpp schemes and recipes): each quantized matmul's input is
            also quantized as ggml-cpu's dot product does (Q8_0, Q8_1 or Q8_K blocks), so a variant's `kl` is
            what llama.cpp shows, and `weights_kl` what the weights alone cost; "weights": quantized weights
            times float32 inputs only. Simulated schemes (int4, fp8, …) always run "weights".
        kld_base_out: write the base's log-probabilities as `llama-perplexity --kl-divergence-base` does
            (the text's tokens in chunks of `ctx`, default 512; the second half of each chunk scored), for
            `llama-perplexity --kl-divergence` to score a real llama.cpp model against normscope's base.
        kld_base: a file llama-perplexity (or `kld_base_out`) wrote: the base and every scheme variant are
            scored against it on its own tokens, with llama.cpp's statistics (`ForwardVariant.kld_file`).
        activations: record the activation profile on the base pass.
        evaluation: the text, token count, window and tokenizer (an `Evaluation`); `text=`, `tokens=`,
            `ctx=` and `tokenizer=` are shorthands for its fields.
        sensitivity: True or a `Sensitivity`: also quantize one tensor group at a time and rank the groups
            by KL; `sensitivity_scheme=`, `sensitivity_by=` and `sensitivity_include=` are shorthands.
        arch, norm_convention, token, cache_dir: as for `analyze`.
        progress: called as progress(step, done, total).
        jobs: torch's CPU threads for the forward passes (None: torch's default). executor must be
            "thread" (the model runs in this process); ray_address is not used.

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
    evaluation, sens = _options(evaluation, sensitivity, text=text, tokens=tokens, ctx=ctx, tokenizer=tokenizer,
                                scheme=sensitivity_scheme, by=sensitivity_by, include=sensitivity_include)
    with open_model(base, arch=arch, norm_convention=norm_convention, token=token, cache_dir=cache_dir) as model:
        return forward_model(model, variants, chunk_elements=chunk_elements, progress=progress, jobs=jobs,
                             executor=executor, schemes=schemes, clip=clip, clip_include=clip_include,
                             tensor_types=tensor_types, recipes=recipes, include_lm_head=include_lm_head,
                             activations=activations, evaluation=evaluation, sensitivity=sens, runtime=runtime,
                             kld_base_out=kld_base_out, kld_base=kld_base,
                             open_args=dict(arch=arch, norm_convention=norm_convention, token=token,
                                            cache_dir=cache_dir))


def forward_model(model: Model, variants: Sequence[str | Path] = (), *,
                  chunk_elements: int = DEFAULT_CHUNK_ELEMENTS, progress: ProgressFn | None = None,
                  jobs: int | None = None, executor: Executor | str = "thread", schemes: str | Sequence[str] = (),
                  clip: float | Sequence[float] | None = None, clip_include: Sequence[str] = (),
                  tensor_types: Sequence[tuple[str, str]] = (), recipes: Sequence[Any] = (),
                  include_lm_head: bool = False, activations: bool = True, evaluation: Evaluation | None = None,
                  sensitivity: Sensitivity | None = None, runtime: str | None = None,
                  kld_base_out: str | Path | None = None, kld_base: str | Path | None = None,
                  open_args: dict[str, Any] | None = None) -> ForwardResult:
    """`forward` on an already open model (the base); `open_args` are open_model's arguments for the loaded
    variants (default: none)."""
    torch, _ = require_torch()
    if Executor(executor) is not Executor.THREAD:
        raise ConfigError(f"forward runs its model in this process: executor {Executor(executor).value!r} is not "
                          "supported; use \"thread\"")
    evaluation = evaluation or Evaluation()
    runtime = check_runtime(runtime)
    kld_file = read_kld_base(kld_base) if kld_base is not None else None
    scheme_names = parse_schemes(schemes) if (schemes and (not isinstance(schemes, str) or schemes.strip())) else []
    clips = _clip_values(clip)
    sens_scheme = (sensitivity.scheme or (scheme_names[0] if scheme_names else "Q4_K_M")) if sensitivity else None
    if sens_scheme:
        parse_schemes(sens_scheme)
    recipe_plans = _recipes(recipes)
    text_label, text_body = load_text(evaluation.text)
    warnings: list[str] = list(model.warnings)
    if runtime == "llama.cpp":
        warnings += [f"{s}: not a llama.cpp type, so no llama.cpp kernel runs it; scored on its weights alone "
                     "(runtime weights)" for s in scheme_names if not is_gguf_scheme(s)]
    step = _progress(progress)
    with _torch_threads(torch, jobs):
        step("loading the base model")
        tm = load_causal_lm(model.source)
        tok = load_tokenizer(model.source, evaluation.tokenizer)
        wins, bos = token_windows(tok, tm, text_body, evaluation.tokens, evaluation.ctx)
        run = Run(torch, tm, [torch.tensor([w]) for w in wins], [torch.tensor(w[1:]) for w in wins], [])
        step("base")
        profile = base_pass(run, model, token_texts(tok, wins) if activations else None)
        base_scores = Scores()
        for lg, t in zip(run.base_logits, run.targets):
            score_base(lg, t, base_scores)
        base_nll, base_p = base_scores.cat("nll"), base_scores.cat("p_target")
        bos_id = tok.bos_token_id if bos else None
        if kld_base_out is not None:
            step("writing the KL-divergence base file")
            n_ctx = evaluation.ctx or 512  # llama-perplexity's default context
            kld_tokens, chunks = kld_chunks(tok(text_body, add_special_tokens=False)["input_ids"], n_ctx, bos_id)
            write_model_kld_base(torch, tm, kld_base_out, kld_tokens, chunks, n_ctx)
        kld_of = functools.partial(score_model_kld, torch, tm, kld_file, bos_id) if kld_file is not None else None
        base_variant = ForwardVariant("base", "base", f"{model.source.spec or model.source.path}",
                                      float(np.exp(base_nll.mean())), float(base_nll.mean()), None, None, None, None,
                                      0, kld_file=kld_of() if kld_of else None)
        compare = functools.partial(score, run, base_nll=base_nll, base_p=base_p)
        # -- variants built in place on the one model -------------------------------------------------
        editor = WeightEditor(tm)
        planned = [plan_quantized(model, s, editor, tensor_types=tensor_types, include_lm_head=include_lm_head,
                                  warnings=warnings) for s in scheme_names]
        for label, reference, pairs in recipe_plans:
            pv = plan_quantized(model, reference, editor, tensor_types=pairs, warnings=warnings)
            planned.append(PlannedVariant(pv.scheme, label, f"a normscope recipe: {reference} with its {len(pairs)} "
                                          "--tensor-type pairs", pv.tensors, pv.plan))
        sens_plan = None
        if sens_scheme:
            sens_plan = next((p for p in planned if p.scheme == sens_scheme and p.label == sens_scheme
                              and not tensor_types), None) or \
                plan_quantized(model, sens_scheme, editor, include_lm_head=include_lm_head, warnings=warnings)
        cache = QuantCache(_shared_pairs(planned, sens_plan))
        hooks = RuntimeHooks(tm, editor)
        results: list[ForwardVariant] = []
        for pv in planned:
            step(pv.label)
            for info, fmt in pv.tensors:
                quantize_in_place(editor, info, fmt, cache, chunk_elements)
            results.append(_scheme_variant(compare, pv, hooks, runtime_of(runtime, is_gguf_scheme(pv.scheme)),
                                           kld_of, **variant_size(model, pv)))
            editor.restore()
        results += clip_variants(compare, editor, model, clips, clip_include, step)
        sens = ()
        if sens_plan is not None:
            sens_hooks = hooks if runtime_of(runtime, is_gguf_scheme(sens_plan.scheme)) == "llama.cpp" else None
            sens = run_sensitivity(run, editor, sens_plan, cache, sensitivity.by, step, sensitivity.include,
                                   sens_hooks)
        del editor, cache, hooks
        # -- real variants, one model at a time, after the base is freed --------------------------------
        if variants:
            run.model = None
            del tm
            gc.collect()
            for spec in variants:
                step(str(spec))
                results.append(loaded_variant(compare, spec, **(open_args or {})))
    text_info = EvalText(text_label, int(sum(len(w) - 1 for w in wins)), len(wins), max(len(w) for w in wins),
                         bos, getattr(tok, "name_or_path", "") or type(tok).__name__)
    options = {"schemes": scheme_names, "recipes": len(recipe_plans), "clip": clips,
               "clip_include": list(clip_include), "tensor_types": [f"{p}={t}" for p, t in tensor_types],
               "variants": [str(v) for v in variants], "tokens": evaluation.tokens, "ctx": evaluation.ctx,
               "activations": activations, "sensitivity": bool(sensitivity),
               "sensitivity_by": sensitivity.by if sensitivity else None,
               "sensitivity_include": list(sensitivity.include) if sensitivity else [],
               "include_lm_head": include_lm_head, "runtime": runtime,
               "kld_base_out": str(kld_base_out) if kld_base_out is not None else None,
               "kld_base": str(kld_base) if kld_base is not None else None}
    result_variants = tuple(results)
    notes = forward_notes(base_variant, result_variants, profile, sens)
    return ForwardResult(model.source, model.detected.spec.name, text_info, base_variant, result_variants,
                         profile, sens_scheme, sens, notes, tuple(warnings), options)


def _scheme_variant(compare: Callable[..., ForwardVariant], pv: PlannedVariant, hooks: RuntimeHooks, runtime: str,
                    kld_of: Callable[[], dict[str, float]] | None, **size: Any) -> ForwardVariant:
    """A quantized variant scored on its weights alone; under the llama.cpp runtime scored again with each
    quantized matmul's input quantized as ggml-cpu does, the weight-only KL kept beside it. With a KL-divergence
    base file, its llama.cpp statistics are those of the variant as run (under its runtime)."""
    weights = compare(pv.label, "scheme", pv.description, len(pv.tensors), scheme=pv.scheme, **size)
    if runtime != "llama.cpp":
        return replace(weights, kld_file=kld_of()) if kld_of else weights
    hooks.attach(pv.tensors)
    try:
        rt = compare(pv.label, "scheme", pv.description, len(pv.tensors), scheme=pv.scheme, **size)
        file_stats = kld_of() if kld_of else None
    finally:
        hooks.detach()
    return replace(rt, runtime="llama.cpp", weights_kl=weights.kl, weights_top1_agreement=weights.top1_agreement,
                   kld_file=file_stats)


def _options(evaluation: Evaluation | None, sensitivity: bool | Sensitivity, *, text: str | Path | None,
             tokens: int | None, ctx: int | None, tokenizer: str | Path | None, scheme: str | None, by: str | None,
             include: Sequence[str]) -> tuple[Evaluation, Sensitivity | None]:
    """The option records, with the shorthand keywords folded in (a shorthand overrides the record's field)."""
    ev = evaluation or Evaluation()
    given = {k: v for k, v in (("text", text), ("tokens", tokens), ("ctx", ctx), ("tokenizer", tokenizer))
             if v is not None}
    if given:
        ev = replace(ev, **given)
    sens = sensitivity if isinstance(sensitivity, Sensitivity) else (Sensitivity() if sensitivity else None)
    if by is not None and by not in SENSITIVITY_BY:  # checked even when sensitivity is off, as before
        raise ConfigError(f"--sensitivity-by {by!r}; valid: {', '.join(SENSITIVITY_BY)}")
    if sens is not None:
        more = {k: v for k, v in (("scheme", scheme), ("by", by), ("include", tuple(include) or None))
                if v is not None}
        if more:
            sens = replace(sens, **more)
    return ev, sens


@contextlib.contextmanager
def _torch_threads(torch: Any, jobs: int | None) -> Iterator[None]:
    """torch's intra-op threads set to `jobs` (0: the cores available) for the run, then put back."""
    if jobs is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(resolve_jobs(jobs))
    try:
        yield
    finally:
        torch.set_num_threads(before)


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


def _progress(progress: ProgressFn | None) -> Callable[[str], None]:
    def step(what: str) -> None:
        log.info("forward: %s", what)
        if progress:
            progress(what, 0, 0)  # steps, not bytes: the bar shows the step name only
    return step
