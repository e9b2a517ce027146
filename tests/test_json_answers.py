"""Exit 1 ("does not fit") is an answer: with --json it prints a document of the command's schema,
as exit 0 does. size, fit, check and measure can answer no; decode, compare, presets and schema never do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvcalc.documents import SCHEMAS

FAILING_PLAN = "workloads:\n  - {name: big, model: llama3-8b, gpu: l4, seq: 8192, batch: 8, expect: {max_batch_at_least: 8}}\n"


@pytest.mark.parametrize(
    "command, args",
    [
        ("size", ["size", "--model", "llama3-70b", "--seq", "8192", "--gpu", "l4"]),
        ("fit", ["fit", "--model", "llama3-70b", "--gpu", "l4"]),
        ("check", ["check", "{failing}"]),
        ("measure", ["measure", "--device", "cpu", "--seq", "8192", "--max-memory", "1MiB"]),  # plan refused
    ],
)
def test_does_not_fit_prints_its_document(cli, tmp_path: Path, command: str, args: list[str]) -> None:
    if command == "measure":
        pytest.importorskip("torch")
    (tmp_path / "plan.yaml").write_text(FAILING_PLAN)
    result = cli(*[str(tmp_path / "plan.yaml") if a == "{failing}" else a for a in args], "--json")
    assert result.exit_code == 1, result.output
    printed = json.loads(result.stdout)
    assert SCHEMAS[command].model_validate(printed).model_dump(mode="json") == printed
