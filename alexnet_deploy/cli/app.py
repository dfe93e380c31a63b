"""The Typer application: its help, ``--version``, and usage errors (an unknown option,
a value Typer cannot parse, a choice outside an Enum) as one ``error:`` line."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
import typer.core

from .. import __version__
from .console import console

try:  # typer >= 0.24 carries its own copy of click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
except ImportError:  # older typer: click itself
    # mypy sees the other branch's classes as redefined (typer < 0.24) or as different
    # types (typer >= 0.24, where click is installed too); either way one name, one role.
    from click.exceptions import ClickException, NoArgsIsHelpError  # type: ignore[no-redef,assignment,unused-ignore]


class _OneLineUsageErrors(typer.core.TyperGroup):
    """Usage errors (unknown option, a value Typer cannot parse) as one ``error:`` line
    and exit code 2, like every other error, instead of rich's multi-line box."""

    def main(  # type: ignore[override]  # same parameters; typer's stubs spell one more keyword
        self, args=None, prog_name=None, complete_var=None, standalone_mode: bool = True, **extra: Any
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NoArgsIsHelpError as error:
            error.show()  # bare `alexnet-deploy`: the help text, as before
            sys.exit(error.exit_code)
        except ClickException as error:
            message = " ".join(error.format_message().split())
            context = getattr(error, "ctx", None)  # usage errors carry the command's context
            command = context.command_path if context is not None else "alexnet-deploy"
            print(f"error: {message} (see `{command} --help`)", file=sys.stderr)
            sys.exit(error.exit_code)
        except typer.Abort:
            print("interrupted", file=sys.stderr)
            sys.exit(130)
        sys.exit(result if isinstance(result, int) else 0)


app = typer.Typer(
    cls=_OneLineUsageErrors,
    help="AlexNet from training to verified FP16/INT8 TensorRT inference.\n\n"
    "Pipeline: train -> export -> build (quantize + engine) -> bench.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        console.print(f"alexnet-deploy {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Typer calls this before any command; it exists to carry the --version option."""
