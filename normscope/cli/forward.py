"""`normscope forward`: KL divergence and top-1 agreement of variants against the base (torch extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..analysis.forward import DEFAULT_TOKENS, Evaluation, Sensitivity
from ..analysis.forward import forward as run_forward
from ..quant import parse_tensor_types
from .options import (Arch, IncludeLmHead, Jobs, NormConventionOpt, Outputs, Schemes, TensorTypes, listify,
                      option_groups)
from .output import emit, progress_bar


@option_groups
def forward(
    base: Annotated[str, typer.Argument(help="HF directory, .safetensors, .gguf, hub id or example:NAME.")],
    variants: Annotated[list[str] | None, typer.Argument(help="Real variants to load and compare (a GGUF, a "
                                                         "clipped directory, a hub id).")] = None,
    scheme: Schemes = None,
    clip: Annotated[list[float] | None, typer.Option("--clip", help="A variant whose norm gains are clipped at this "
                                                     "percentile of their own |gain| (repeatable).")] = None,
    clip_include: Annotated[list[str] | None, typer.Option("--clip-include", help="Only clip norms matching these "
                            "globs, e.g. '*post_feedforward_layernorm*'.")] = None,
    tensor_type: TensorTypes = None,
    recipe: Annotated[list[Path] | None, typer.Option("--recipe", help="A `normscope recipe --json` report: a "
                      "variant quantized with its reference file type and its --tensor-type pairs.")] = None,
    include_lm_head: IncludeLmHead = False,
    text: Annotated[Path | None, typer.Option("--text", help="A UTF-8 text file to evaluate on (default: a "
                                              "public-domain sample shipped with normscope).")] = None,
    tokens: Annotated[int, typer.Option("--tokens", min=1, help="Tokens scored.")] = DEFAULT_TOKENS,
    ctx: Annotated[int | None, typer.Option("--ctx", min=2, help="Tokens per window (default: one window).")] = None,
    tokenizer: Annotated[str | None, typer.Option("--tokenizer", help="Tokenizer directory, hub id or GGUF file "
                                                  "(default: the base's).")] = None,
    sensitivity: Annotated[bool, typer.Option("--sensitivity", help="Also quantize one tensor group at a time and "
                                              "rank the groups by KL (one forward pass per group).")] = False,
    sensitivity_scheme: Annotated[str | None, typer.Option("--sensitivity-scheme", help="Scheme for --sensitivity "
                                  "(default: the first --scheme, else Q4_K_M).")] = None,
    sensitivity_by: Annotated[str, typer.Option("--sensitivity-by", help="Groups: layer-role, layer or role.")
                              ] = "layer-role",
    sensitivity_include: Annotated[list[str] | None, typer.Option("--sensitivity-include", help="Only tensors "
                                   "matching these globs form sensitivity groups.")] = None,
    no_activations: Annotated[bool, typer.Option("--no-activations", help="Skip the activation profile.")] = False,
    arch: Arch = None,
    norm_convention: NormConventionOpt = None,
    jobs: Jobs = None,
    out: Outputs = Outputs(),
) -> None:
    """Run the base and its variants on the same tokens: KL, top-1 agreement, perplexity, activations."""
    evaluation = Evaluation(text=text, tokens=tokens, ctx=ctx, tokenizer=tokenizer)
    sens = Sensitivity(sensitivity_scheme, sensitivity_by, listify(sensitivity_include))
    with progress_bar("forward", not out.quiet) as progress:
        result = run_forward(base, variants or [], schemes=listify(scheme), clip=clip or None,
                             clip_include=listify(clip_include), tensor_types=parse_tensor_types(tensor_type or []),
                             recipes=recipe or [], include_lm_head=include_lm_head, activations=not no_activations,
                             evaluation=evaluation, sensitivity=sens if sensitivity else False, arch=arch,
                             norm_convention=norm_convention, jobs=jobs, progress=progress)
    emit(result, out)
