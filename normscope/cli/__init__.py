"""The `normscope` command: thin typer commands over the analysis API, one module per command.

Exit codes: 0 success (every rule holds), 1 a rule failed, 2 bad input or usage. Errors are one
line on stderr, with control characters made visible (a message quotes names and paths from the input);
`normscope --debug …` shows the traceback.
"""

from __future__ import annotations

import sys

import typer

from ..errors import NormscopeError, message
from ..report.fmt import visible
from .analyze import analyze
from .check import check
from .clip import clip
from .compare import compare
from .forward import forward
from .recipe import recipe
from .simulate import schemes, simulate

__all__ = ["app", "main"]


def _flag_without_type(option_class: type) -> None:
    """typer (0.29) prints a type after every option, `<bool>` after on/off flags such as --quiet and --help,
    where there is no value to type: show none for flags."""
    shown = getattr(option_class, "display_type_rich", None)
    if shown is None or getattr(shown, "_normscope", False):
        return

    def display_type_rich(self, ctx):  # noqa: ANN001, ANN202 - typer's signature
        return None if getattr(self, "is_flag", False) else shown(self, ctx)

    display_type_rich._normscope = True
    option_class.display_type_rich = display_type_rich


_flag_without_type(getattr(typer.core, "TyperOption", object))

app = typer.Typer(name="normscope", add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Tell the truth about an LLM checkpoint: norm gains in their real convention, outliers, "
                       "and what int4/int8/GGUF quantization will do, tensor by tensor.")


def _version(value: bool) -> None:
    """--version: print and exit before a command is looked for (an eager option)."""
    if value:
        from importlib.metadata import version as dist_version

        typer.echo(f"normscope {dist_version('normscope')}")
        raise typer.Exit(0)


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
          version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    pass


app.command(no_args_is_help=False)(analyze)
app.command(no_args_is_help=False)(check)
app.command(no_args_is_help=False)(simulate)
app.command(no_args_is_help=False)(clip)
app.command()(compare)
app.command()(forward)
app.command(no_args_is_help=False)(recipe)
app.command()(schemes)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script: run the app, turn errors into one line and exit code 2."""
    args = sys.argv[1:] if argv is None else list(argv)
    command = next((i for i, a in enumerate(args) if not a.startswith("-")), len(args))
    debug = "--debug" in args[:command]  # a root option: before the command name
    try:
        code = app(args=args, prog_name="normscope", standalone_mode=False)
    except typer.Abort:
        sys.stderr.write("normscope: interrupted\n")
        sys.exit(130)
    except typer.TyperException as e:  # usage errors, exit code 2: one line, with where to look
        ctx = getattr(e, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        sys.stderr.write(f"normscope: error: {visible(e.format_message())}{visible(hint)}\n")
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("normscope: interrupted\n")
        sys.exit(130)
    except (NormscopeError, OSError, ValueError) as e:  # bad input; a bare KeyError is a bug, reported as one
        if debug:
            raise
        sys.stderr.write(f"normscope: error: {visible(message(e))}\n")
        sys.exit(2)
    except Exception as e:  # a bug, not bad input: still one line unless --debug
        if debug:
            raise
        sys.stderr.write(f"normscope: internal error: {type(e).__name__}: {visible(str(e))} "
                         "(run `normscope --debug …` for the traceback and report it)\n")
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)
