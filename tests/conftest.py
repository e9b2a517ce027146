"""Shared fixtures: an isolated presets environment and a CLI runner; hypothesis profiles."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import settings
from typer.testing import CliRunner

from kvcalc.cli import app

# before anything imports numpy (nothing above does): the decode calibration's small least-squares solves
# run single-threaded, fast on a shared machine and the same to the last digit as its --write
for _threads in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_threads, "1")

FIXTURES = Path(__file__).parent / "fixtures"
TEST_PRESETS = FIXTURES / "presets"
HF_CONFIGS = FIXTURES / "hf"

# CI (HYPOTHESIS_PROFILE=ci in .ci/run) replays the same examples every run, so a landing never
# hangs on a rare draw; a developer's run explores new ones.
settings.register_profile("ci", derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(autouse=True)
def _no_user_presets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KVCALC_PRESETS", raising=False)


class Cli:
    """Runs kvcalc through Typer's CliRunner; `json` parses stdout."""

    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str):  # noqa: ANN204
        return self.runner.invoke(app, [str(a) for a in args], prog_name="kvcalc")

    def help(self, *args: str) -> str:
        """`args --help` as one line of words: a wide terminal, the boxes' borders dropped, spaces collapsed."""
        result = self.runner.invoke(app, [*args, "--help"], prog_name="kvcalc", env={"COLUMNS": "250"})
        assert result.exit_code == 0, result.output
        return " ".join(result.stdout.translate({ord(c): " " for c in "│╭╮╰╯─"}).split())

    def json(self, *args: str) -> dict:
        result = self(*args, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)


@pytest.fixture
def cli() -> Cli:
    return Cli()
