"""The options every command shares, defined once: `Annotated` types (typer reads the help from them), and
the groups most commands take together (`Outputs`, `Workers`, `Selection`), which `option_groups` expands
into a command's options and gathers back into one record each."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, get_type_hints

import typer

from ..analysis.engine import Executor
from ..results import NormConvention

__all__ = ["ModelArg", "Arch", "NormConventionOpt", "Include", "Exclude", "Top", "JsonPath", "MdPath", "HtmlPath",
           "Quiet", "Jobs", "ExecutorOpt", "RayAddress", "Schemes", "TensorTypes", "ImatrixOpt", "ImatrixFiles", "ImatrixModel", "IncludeLmHead", "listify",
           "Outputs", "Workers", "Selection", "option_groups"]

ModelArg = Annotated[str | None, typer.Argument(
    help="HF directory, .safetensors, .gguf, hub id (org/name[@rev]), or example:gemma3-270m. "
         "Default: the embedded Gemma 3 270M (examples extra).", show_default=False)]
Arch = Annotated[str | None, typer.Option("--arch", help="Architecture to assume instead of detecting it (e.g. "
                                          "gemma3, llama).")]
NormConventionOpt = Annotated[NormConvention | None, typer.Option(
    "--norm-convention", help="Norm convention for every norm the architecture does not pin.")]
Include = Annotated[list[str] | None, typer.Option("--include", help="Only tensors matching these globs (HF, file "
                                                   "or GGUF names).")]
Exclude = Annotated[list[str] | None, typer.Option("--exclude", help="Skip tensors matching these globs.")]
Top = Annotated[int, typer.Option("--top", min=1, help="Rows per table in the terminal and Markdown summaries.")]
JsonPath = Annotated[Path | None, typer.Option("--json", metavar="PATH",
                                               help="Write the JSON report here ('-' for stdout).")]
MdPath = Annotated[Path | None, typer.Option("--md", metavar="PATH",
                                             help="Write the Markdown report here ('-' for stdout).")]
HtmlPath = Annotated[Path | None, typer.Option("--html", metavar="PATH",
                                               help="Write a self-contained HTML report here ('-' for stdout).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No terminal summary; only the files asked for.")]
Jobs = Annotated[int | None, typer.Option("--jobs", "-j", min=0, help="Workers (1: none; default and 0: the cores "
                                          "available). Results are the same whatever the number.")]
ExecutorOpt = Annotated[Executor, typer.Option(
    "--executor", help="Run the per-tensor work in threads of this process, in worker processes, or as tasks on Ray "
                       "(extra `ray`; the cluster at --ray-address or RAY_ADDRESS, else a local one).")]
RayAddress = Annotated[str | None, typer.Option(
    "--ray-address", metavar="ADDR", help="Ray cluster to connect to with --executor ray (e.g. ray://head:10001); "
                                          "default: RAY_ADDRESS, else a local Ray.")]
Schemes = Annotated[list[str] | None, typer.Option(
    "--scheme", "-s", help="llama.cpp file types (Q4_K_M, IQ4_XS, Q8_0, TQ2_0, …), MXFP4 and simulated schemes (int4, int8, "
                           "int4_sym_g128, fp8_block, …), comma-separated or repeated. `normscope schemes` lists them.")]
TensorTypes = Annotated[list[str] | None, typer.Option(
    "--tensor-type", help="llama-quantize override REGEX=TYPE for the GGUF schemes (repeatable), e.g. attn_v=Q8_0; "
                          "any ggml type.")]
ImatrixOpt = Annotated[Path | None, typer.Option(
    "--imatrix", metavar="FILE", help="Importance matrix (llama-imatrix's .gguf or legacy .dat), as llama-quantize "
                                      "--imatrix: the GGUF schemes' types that take importance weights use it.")]
ImatrixFiles = Annotated[list[Path], typer.Argument(
    help="One importance matrix (llama-imatrix's .gguf or legacy .dat) to summarise, or two to compare.",
    show_default=False)]
ImatrixModel = Annotated[str | None, typer.Option(
    "--model", "-m", help="The model it is for (what analyze accepts): which tensors llama-quantize quantizes have "
                          "an entry, which have none, which entries name no tensor.")]
IncludeLmHead = Annotated[bool, typer.Option("--include-lm-head", help="Quantize an untied lm_head under simulated "
                                             "schemes (GPTQ/AWQ leave it by default).")]


def listify(values: Any) -> list[str]:
    """Repeated and comma-separated option values as one list: ["a,b", "c"] -> ["a", "b", "c"]."""
    return [v for item in values or [] for v in str(item).split(",") if v]


# -- option groups: declared once, expanded into every command that takes them -----------------------

@dataclass(frozen=True)
class Outputs:
    """Where the reports go: --json, --md, --html (each '-' for stdout), --top, --quiet."""

    json_path: Path | None = None
    md_path: Path | None = None
    html_path: Path | None = None
    top: int = 10
    quiet: bool = False


@dataclass(frozen=True)
class Workers:
    """--jobs, --executor, --ray-address: who runs the per-tensor work."""

    jobs: int | None = None
    executor: Executor = Executor.THREAD
    ray_address: str | None = None

    def api(self) -> dict[str, Any]:
        """The library's keyword arguments."""
        return {"jobs": self.jobs, "executor": self.executor, "ray_address": self.ray_address}


@dataclass(frozen=True)
class Selection:
    """--include, --exclude: globs on HF, file or GGUF tensor names."""

    include: list[str] | None = None
    exclude: list[str] | None = None

    def api(self) -> dict[str, Any]:
        """The library's keyword arguments."""
        return {"include": listify(self.include), "exclude": listify(self.exclude)}


# each group's command-line parameters: name -> (annotated type, default)
_GROUPS: dict[type, dict[str, tuple[Any, Any]]] = {
    Selection: {"include": (Include, None), "exclude": (Exclude, None)},
    Workers: {"jobs": (Jobs, None), "executor": (ExecutorOpt, Executor.THREAD), "ray_address": (RayAddress, None)},
    Outputs: {"json_path": (JsonPath, None), "md_path": (MdPath, None), "html_path": (HtmlPath, None),
              "top": (Top, 10), "quiet": (Quiet, False)},
}


def option_groups(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Expand a command's `Outputs`, `Workers` and `Selection` parameters into their typer options, and
    hand the function one record per group: the options are declared once, here, for every command.

    Example:
        >>> @option_groups
        ... def simulate(model: ModelArg = None, select: Selection = Selection(), out: Outputs = Outputs()):
        ...     ...
    """
    hints = get_type_hints(fn, include_extras=True)
    params: list[inspect.Parameter] = []
    groups: dict[str, type] = {}
    for p in inspect.signature(fn).parameters.values():
        hint = hints.get(p.name, p.annotation)
        if hint in _GROUPS:
            groups[p.name] = hint
            params += [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default,
                                         annotation=annotation)
                       for name, (annotation, default) in _GROUPS[hint].items()]
        else:
            params.append(p.replace(annotation=hint))

    @functools.wraps(fn)
    def command(**kwargs: Any) -> Any:
        for name, group in groups.items():
            kwargs[name] = group(**{field: kwargs.pop(field) for field in _GROUPS[group]})
        return fn(**kwargs)

    command.__signature__ = inspect.Signature(params)  # typer reads the expanded signature
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command
