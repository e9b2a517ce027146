"""`import kvcalc` and every command but measure must not import torch; --json output needs no rich."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("statement", ["import kvcalc", "import kvcalc.cli"])
def test_import_does_not_load_torch(statement: str) -> None:
    code = f"{statement}; import sys; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_size_command_does_not_load_torch() -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from kvcalc.cli import app; "
        "r = CliRunner().invoke(app, ['size', '--model', 'llama3-8b', '--seq', '8192', '--gpu', 'h100-sxm']); "
        "assert r.exit_code == 0, r.output; print('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_json_output_loads_no_rich_and_builds_one_command() -> None:
    """The start-up path of `kvcalc size --json`: no Rich console (tables only) and no other command's options."""
    code = (
        "import sys, typer.main; from typer.testing import CliRunner; from kvcalc.cli import COMMANDS, app; "
        "built = []; build = typer.main.get_command; "
        "typer.main.get_command = lambda typer_app: built.append(typer_app) or build(typer_app); "
        "r = CliRunner().invoke(app, ['size', '--model', 'llama3-8b', '--seq', '8192', '--json']); "
        "assert r.exit_code == 0, r.output; "
        "print([name for name, typer_app in COMMANDS.items() if typer_app in built], "
        "sorted(m for m in ('torch', 'numpy', 'rich.console', 'kvcalc.render') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "['size'] []"
