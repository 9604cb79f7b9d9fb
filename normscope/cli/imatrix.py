"""`normscope imatrix FILE` (what an importance matrix holds), `normscope imatrix A B` (two compared) and
`normscope imatrix collect MODEL` (one collected with torch, as llama-imatrix collects it)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from ..analysis import collect_imatrix, compare_imatrices, summarize_imatrix
from ..analysis.imatrix.collect import CHUNK_SIZE
from .options import Arch, ImatrixFiles, ImatrixModel, ModelArg, Outputs, option_groups
from .output import emit, progress_bar

__all__ = ["imatrix_app"]


class _ShowByDefault(TyperGroup):
    """`normscope imatrix FILE …` runs `show`; `normscope imatrix collect …` its own command."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["show", *args]
        return super().parse_args(ctx, args)


imatrix_app = typer.Typer(cls=_ShowByDefault, no_args_is_help=True, add_completion=False,
                          help="Importance matrices: summarise one (FILE), compare two (A B), or collect one.")


@imatrix_app.command("show")
@option_groups
def show(
    files: ImatrixFiles,
    model: ImatrixModel = None,
    arch: Arch = None,
    out: Outputs = Outputs(),
) -> None:
    """Summarise an importance matrix tensor by tensor (coverage of --model, concentration), or compare two."""
    if len(files) > 2:
        raise typer.BadParameter(f"one file to summarise or two to compare, not {len(files)}", param_hint="FILES")
    if len(files) == 2:
        if model is not None:
            raise typer.BadParameter("--model goes with one file (its coverage), not with two", param_hint="--model")
        result = compare_imatrices(files[0], files[1])
    else:
        result = summarize_imatrix(files[0], model, arch=arch)
    emit(result, out)


@imatrix_app.command("collect")
def collect(
    model: ModelArg = None,
    out_path: Annotated[Path, typer.Option("--out", "-o", metavar="PATH",
                                           help="The GGUF importance matrix to write.")] = Path("imatrix.gguf"),
    text: Annotated[Path | None, typer.Option("--text", metavar="FILE", help="Calibration text (UTF-8); default: "
                                              "the built-in public-domain sample.")] = None,
    tokens: Annotated[int | None, typer.Option("--tokens", min=1, help="At most this many tokens (whole "
                                               "chunks); default: every whole chunk of the text.")] = None,
    chunk_size: Annotated[int, typer.Option("--chunk-size", "-c", min=16, help="Tokens per chunk (llama-imatrix's "
                                            "-c).")] = CHUNK_SIZE,
    tokenizer: Annotated[Path | None, typer.Option("--tokenizer", metavar="DIR", help="Tokenizer directory, when "
                                                   "the model has none beside it.")] = None,
    arch: Arch = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary line.")] = False,
) -> None:
    """Collect an importance matrix with torch (the torch extra), written in llama-imatrix's GGUF format."""
    with progress_bar("collecting", not quiet) as progress:
        r = collect_imatrix(model, out_path, text=text, tokens=tokens, chunk_size=chunk_size, tokenizer=tokenizer,
                            arch=arch, progress=progress)
    if not quiet:
        typer.echo(f"{r.path}: {r.entries} entries from {r.chunk_count} chunks of {r.chunk_size} tokens of "
                   f"{r.dataset}" + (f"; not collected: {', '.join(r.skipped)}" if r.skipped else ""))
