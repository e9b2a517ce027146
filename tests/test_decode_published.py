"""The collected batch-1 decode rows (tests/fixtures/decode_published*.json): every row in the collector's
format with its source and speed, and no plain row worded so that the importer drops it as drafted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"
FIELDS = [
    "group", "url", "engine", "engine_version", "backend", "enforce_eager", "gpu_name", "gpu_count", "tp", "model",
    "weight_format", "kv_dtype", "batch", "input_len", "output_len", "metric_as_published", "tokens_per_s", "derived",
    "date", "note",
]  # fmt: skip
COLLECTED = sorted(FIXTURES.glob("decode_published*.json"))


def _rows(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", COLLECTED, ids=lambda p: p.name)
def test_every_row_has_the_collectors_fields_a_source_and_a_speed(path: Path) -> None:
    for row in _rows(path):
        assert list(row)[: len(FIELDS)] == FIELDS and set(row) <= {*FIELDS, "excluded_because"}, row["group"]
        assert row["url"].startswith("https://") and row["group"] and row["derived"], row["group"]
        assert isinstance(row["tokens_per_s"], int | float) and row["tokens_per_s"] > 0, row["group"]
        assert row["batch"] is None or (isinstance(row["batch"], int) and row["batch"] >= 1), row["group"]
        assert row["batch"] is not None or row.get("excluded_because"), f"{row['group']}: no batch and no reason"


def test_a_plain_decode_row_never_spells_the_phrase_the_importer_reads_as_drafting_on() -> None:
    # benchmarks/import_decode_cases.py excludes a row whose note contains "speculative decoding"
    # (its SPECULATIVE marker), so "no speculative decoding" would drop a plain row
    notes = [r["note"].lower() for path in COLLECTED for r in _rows(path)]
    assert not [n for n in notes if "no speculative decoding" in n or "without speculative decoding" in n]
