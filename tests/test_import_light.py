"""`import kvcalc` and every command but measure must not import torch; --json output needs no rich."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

from kvcalc.cli import COMMANDS, command_app, command_help

INVOKE = "import sys; from typer.testing import CliRunner; from kvcalc.cli import COMMANDS, app; "
SIZE_ARGS = "['size', '--model', 'llama3-8b', '--seq', '8192'"


def _python(code: str) -> str:
    """What a fresh interpreter prints running `code`."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.parametrize("statement", ["import kvcalc", "import kvcalc.cli"])
def test_import_does_not_load_torch(statement: str) -> None:
    assert _python(f"{statement}; import sys; print('torch' in sys.modules)") == "False"


def test_size_command_does_not_load_torch() -> None:
    code = INVOKE + (
        f"r = CliRunner().invoke(app, {SIZE_ARGS}, '--gpu', 'h100-sxm']); "
        "assert r.exit_code == 0, r.output; print('torch' in sys.modules)"
    )
    assert _python(code) == "False"


def test_json_output_loads_no_rich_and_builds_one_command() -> None:
    """The start-up path of `kvcalc size --json`: no Rich console (tables only), no measure models
    (its documents are defined when asked for), no figures (--plot only), and no other command's
    module imported or options built."""
    code = INVOKE + (
        "import typer.main; built = []; build = typer.main.get_command; "
        "typer.main.get_command = lambda typer_app: built.append(typer_app) or build(typer_app); "
        f"r = CliRunner().invoke(app, {SIZE_ARGS}, '--json']); "
        "assert r.exit_code == 0, r.output; "
        "print([name for name, module in COMMANDS.items() if module in sys.modules], "
        "[name for name, module in COMMANDS.items() if module in sys.modules and sys.modules[module].app in built], "
        "sorted(m for m in ('torch', 'numpy', 'rich.console', 'kvcalc.render', 'kvcalc.measure', 'kvcalc.plots', 'matplotlib')"
        " if m in sys.modules))"
    )
    assert _python(code) == "['size'] ['size'] []"


def test_matplotlib_loads_only_to_draw(tmp_path) -> None:
    """Every command runs without matplotlib; --plot imports it when the figure is drawn."""
    for args in (
        f"{SIZE_ARGS}, '--gpu', 'h100-sxm']",
        "['fit', '-m', 'llama3-8b', '--memory', '80GB']",
        "['compare', 'mha', 'gqa']",
    ):
        code = (
            INVOKE + f"r = CliRunner().invoke(app, {args}); assert r.exit_code == 0, r.output; print('matplotlib' in sys.modules)"
        )
        assert _python(code) == "False"
    plot = tmp_path / "size.png"
    code = INVOKE + (
        f"r = CliRunner().invoke(app, {SIZE_ARGS}, '--plot', {str(plot)!r}]); assert r.exit_code == 0, r.output; "
        "print('matplotlib' in sys.modules, 'matplotlib.pyplot' in sys.modules)"
    )
    assert _python(code) == "True False" and plot.exists()  # Agg canvas, no pyplot state machine


def test_help_lists_every_command_and_imports_none() -> None:
    """--help lists every command in the order COMMANDS gives, from its help text read from its
    source: no command module is imported, so none of the core's models are defined."""
    code = INVOKE + (
        "r = CliRunner().invoke(app, ['--help'], prog_name='kvcalc'); assert r.exit_code == 0, r.output; "
        "words = [line[2:].split(' ', 1)[0] for line in r.stdout.splitlines() if line.startswith('│ ')]; "
        "print([w for w in words if w and not w.startswith('-')] == list(COMMANDS), "
        "sorted(m for m in (*COMMANDS.values(), 'kvcalc.spec', 'kvcalc.capacity') if m in sys.modules))"
    )
    assert _python(code) == "True []"


@pytest.mark.parametrize("name", list(COMMANDS))
def test_help_text_read_from_source_is_the_commands_own(name: str) -> None:
    """What --help lists for a command is the help its module gives it, as importing it shows."""
    typer_app = command_app(name)
    if len(typer_app.registered_commands) == 1:
        expected = inspect.getdoc(typer_app.registered_commands[0].callback)
    else:
        expected = inspect.cleandoc(typer_app.info.help)
    assert command_help(name) == expected and expected


@pytest.mark.parametrize("json_switch", ["", ", '--json'"])
def test_size_without_a_gpu_imports_neither_capacity_nor_latency(json_switch: str) -> None:
    """`kvcalc size` without --gpu or --memory, tables or --json: no fit, no decode, so neither module loads."""
    code = INVOKE + (
        f"r = CliRunner().invoke(app, {SIZE_ARGS}{json_switch}]); assert r.exit_code == 0, r.output; "
        "print(sorted(m for m in ('kvcalc.capacity', 'kvcalc.latency') if m in sys.modules))"
    )
    assert _python(code) == "[]"
