"""`import kvcalc` and every command but measure must not import torch."""

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
