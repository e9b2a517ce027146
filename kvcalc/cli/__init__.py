"""The kvcalc command line: parse, call the core, render. No formulas here.

Each command is a module of this package with its own Typer app (`app`), imported and built only
when it is run or completed: Typer builds a command's options from its annotations, which costs
start-up time, and a run needs one command. --help reads each command's help text from its source.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from kvcalc.cli import streams

try:  # Typer 0.29 vendors click; should it move these, usage errors keep Typer's own boxes
    from typer._click.exceptions import NoArgsIsHelpError, UsageError

    _HELP_ONLY: tuple[type[Exception], ...] = (NoArgsIsHelpError,)
    _USAGE_ERRORS: tuple[type[Exception], ...] = (UsageError,)
except ImportError:  # pragma: no cover
    _HELP_ONLY = _USAGE_ERRORS = ()

COMMANDS = {  # name -> the module whose `app` it is, in the order --help lists them
    "size": "kvcalc.cli.size",
    "fit": "kvcalc.cli.fit",
    "decode": "kvcalc.cli.decode",
    "compare": "kvcalc.cli.compare",
    "measure": "kvcalc.cli.measure",
    "check": "kvcalc.cli.check",
    "schema": "kvcalc.cli.schema",
    "presets": "kvcalc.cli.presets",
}


def command_app(name: str) -> typer.Typer:
    """The Typer app of command `name`, its module imported now."""
    return importlib.import_module(COMMANDS[name]).app


def built_command(name: str) -> Any:
    """Command `name` as Typer builds it from its app: every option, ready to run."""
    return typer.main.get_command(command_app(name))


def listed_command(name: str) -> Any:
    """Command `name` with its help text alone, as the group's --help lists it: building every
    command's options would cost more than the rest of --help."""
    return TyperCommand(name=name, help=command_help(name))


def command_help(name: str) -> str:
    """The help text of command `name`, read from its module's source without running it (running it
    would import the core's models, more than the rest of --help costs): the docstring of the function
    that `app = single_command(function)` names, or the help of `app = typer.Typer(..., help=...)`."""
    import ast

    source = Path(__file__).with_name(COMMANDS[name].rsplit(".", 1)[1] + ".py")  # the command modules sit here
    module = ast.parse(source.read_text(encoding="utf-8"))
    app_: Any = next(node.value for node in module.body if isinstance(node, ast.Assign) and ast.unparse(node.targets) == "app")
    if ast.unparse(app_.func) == "single_command":  # a Typer app of one command is that command
        function = ast.unparse(app_.args[0])
        return next(
            ast.get_docstring(node) or "" for node in module.body if isinstance(node, ast.FunctionDef) and node.name == function
        )
    help_ = next(keyword.value for keyword in app_.keywords if keyword.arg == "help")  # a group of commands: its app's help
    return inspect.cleandoc(ast.literal_eval(help_))


def _blank_switch_placeholders(command: Any, ctx: Any) -> None:
    """A switch takes no value, but Typer 0.29 prints a <bool> placeholder beside it: print none."""
    for param in command.get_params(ctx):
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""


class _PlainSwitches:
    """Help that shows no placeholder beside the switches (--json, --explain, --help)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _blank_switch_placeholders(self, ctx)
        super().format_help(ctx, formatter)  # type: ignore[misc]


class KvcalcCommand(_PlainSwitches, TyperCommand):
    """A kvcalc command: its options in panels, every name whole (kvcalc.cli.help)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        from kvcalc.cli import help as command_help

        command_help.render(self, ctx)


class KvcalcGroup(_PlainSwitches, TyperGroup):
    """A group of kvcalc commands (presets): its switches print without a placeholder."""


class _OnDemand(Mapping[str, Any]):
    """The commands by name, each imported and made by `make` when first looked up."""

    def __init__(self, make: Callable[[str], Any]) -> None:
        self._make = make
        self._made: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._made:
            self._made[name] = self._make(name)
        return self._made[name]

    def __iter__(self) -> Iterator[str]:
        return iter(COMMANDS)

    def __len__(self) -> int:
        return len(COMMANDS)


class _KvcalcGroup(KvcalcGroup):
    """Commands built on demand (--help lists their help text only), run with guarded output
    (kvcalc.cli.streams); a usage error (missing option, bad value) is one line on stderr, exit 2."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = _OnDemand(built_command)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        built, self.commands = self.commands, _OnDemand(listed_command)
        try:
            super().format_help(ctx, formatter)
        finally:
            self.commands = built

    def main(self, *args: Any, **kwargs: Any) -> Any:
        with streams.guarded():
            try:
                return super().main(*args, **kwargs)
            except streams.OutputError as exc:  # --help, --version or completion that cannot be written
                from kvcalc import render

                render.error(str(exc))
                sys.exit(exc.exit_code)

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        with _one_line_usage_errors():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: Any) -> Any:
        with _one_line_usage_errors():
            return super().invoke(ctx)


@contextmanager
def _one_line_usage_errors() -> Iterator[None]:
    try:
        yield
    except _HELP_ONLY:
        raise  # `kvcalc` or `kvcalc presets` alone prints its help
    except _USAGE_ERRORS as exc:
        from kvcalc import render

        where = exc.ctx.command_path if exc.ctx else "kvcalc"
        render.error(f"{exc.format_message().rstrip('.')} (see {where} --help)")
        raise typer.Exit(exc.exit_code) from None


app = typer.Typer(
    cls=_KvcalcGroup,
    help="KV-cache and GPU-memory calculator for LLM inference. Sizes print in GiB (2^30) unless --units gb (10^9).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _print_version(asked: bool) -> None:
    if asked:
        import kvcalc

        print(f"kvcalc {kvcalc.__version__}")
        raise typer.Exit()


@app.callback()
def _kvcalc(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print kvcalc's version and exit.")
    ] = False,
) -> None:
    """The commands are registered in COMMANDS and built on demand; Typer needs a callback to make `app` a group."""
