"""`normscope forward`: KL divergence and top-1 agreement of variants against the base (torch extra)."""

from __future__ import annotations

from pathlib import Path

import typer

from ..analysis.forward import DEFAULT_TOKENS, forward as run_forward
from ..analysis.simulate import parse_tensor_types
from ..report import report_html, to_json
from ..report.forward import forward_markdown, forward_terminal
from .common import (ArchOpt, HtmlOpt, JsonOpt, MdOpt, QuietOpt, TopOpt, listify, print_report, progress_bar,
                     write_outputs)


def forward(
    base: str = typer.Argument(..., help="HF directory, .safetensors, .gguf, hub id or example:NAME."),
    variants: list[str] = typer.Argument(None, help="Real variants to load and compare (a GGUF, a clipped "
                                         "directory, a hub id)."),
    scheme: list[str] = typer.Option(None, "--scheme", "-s", help="Variants fake-quantized in memory: llama.cpp "
                                     "file types (Q8_0, Q4_K_M, Q2_K, …) and simulated schemes (int4, int8, …), "
                                     "comma-separated or repeated."),
    clip: list[float] = typer.Option(None, "--clip", help="A variant whose norm gains are clipped at this "
                                     "percentile of their own |gain| (repeatable)."),
    clip_include: list[str] = typer.Option(None, "--clip-include", help="Only clip norms matching these globs, "
                                           "e.g. '*post_feedforward_layernorm*'."),
    tensor_type: list[str] = typer.Option(None, "--tensor-type", help="llama-quantize override REGEX=TYPE for the "
                                          "GGUF schemes (repeatable), e.g. a recipe's lines."),
    recipe: list[Path] = typer.Option(None, "--recipe", help="A `normscope recipe --json` report: a variant "
                                      "quantized with its reference file type and its --tensor-type pairs."),
    text: Path = typer.Option(None, "--text", help="A UTF-8 text file to evaluate on (default: a public-domain "
                              "sample shipped with normscope)."),
    tokens: int = typer.Option(DEFAULT_TOKENS, "--tokens", min=1, help="Tokens scored."),
    ctx: int = typer.Option(None, "--ctx", min=2, help="Tokens per window (default: one window)."),
    sensitivity: bool = typer.Option(False, "--sensitivity", help="Also quantize one tensor group at a time and "
                                     "rank the groups by KL (one forward pass per group)."),
    sensitivity_scheme: str = typer.Option(None, "--sensitivity-scheme", help="Scheme for --sensitivity (default: "
                                           "the first --scheme, else Q4_K_M)."),
    sensitivity_by: str = typer.Option("layer-role", "--sensitivity-by", help="Groups: layer-role, layer or role."),
    sensitivity_include: list[str] = typer.Option(None, "--sensitivity-include", help="Only tensors matching these "
                                                  "globs form sensitivity groups."),
    no_activations: bool = typer.Option(False, "--no-activations", help="Skip the activation profile."),
    tokenizer: str = typer.Option(None, "--tokenizer", help="Tokenizer directory or hub id (default: the base's)."),
    arch: str = ArchOpt,
    top: int = TopOpt,
    json_path: Path = JsonOpt,
    md_path: Path = MdOpt,
    html_path: Path = HtmlOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Run the base and its variants on the same tokens: KL, top-1 agreement, perplexity, activations."""
    overrides = parse_tensor_types(tensor_type or [])
    with progress_bar("forward", not quiet) as progress:
        result = run_forward(base, variants or [], schemes=listify(scheme), clip=clip or None,
                             clip_include=listify(clip_include), tensor_types=overrides, recipes=recipe or [],
                             text=text, tokens=tokens,
                             ctx=ctx, activations=not no_activations, sensitivity=sensitivity,
                             sensitivity_scheme=sensitivity_scheme, sensitivity_by=sensitivity_by,
                             sensitivity_include=listify(sensitivity_include),
                             tokenizer=tokenizer, arch=arch, progress=progress)
    to_stdout = write_outputs({json_path: lambda: to_json(result), md_path: lambda: forward_markdown(result, top),
                               html_path: lambda: report_html(result)})
    print_report(lambda width, color: forward_terminal(result, top, width, color), quiet or to_stdout)
