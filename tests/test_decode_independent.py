"""benchmarks/decode_independent.py: issue 25's independent published set, scored with the shipped constants
and never fitted on: its rows' sources, the rows it refuses, and the docs section it writes."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvcalc import Workload
from kvcalc.latency import decode
from kvcalc.presets import load_gpu, load_model
from kvcalc.spec import Engine
from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
independent = load_script("benchmarks/decode_independent.py")
ROWS = independent.load_rows()


def _fixture(name: str) -> list[dict[str, Any]]:
    return json.loads((ROOT / "tests" / "fixtures" / name).read_text(encoding="utf-8"))


def _row(**changes: Any) -> dict[str, Any]:
    """A row as the collector writes it: Qwen2.5-7B fp16 on an L4 under vLLM 0.8.5 (ree2raz/inference-bench)."""
    row = {
        "group": "g", "url": "https://example.org/t", "engine": "vllm", "engine_version": "0.8.5", "backend": "",
        "enforce_eager": None, "gpu_name": "L4", "gpu_count": 1, "tp": 1, "model": "Qwen/Qwen2.5-7B-Instruct",
        "weight_format": "fp16", "kv_dtype": None, "batch": 1, "input_len": None, "output_len": 128,
        "metric_as_published": "", "tokens_per_s": 17.1, "derived": "1 / TPOT", "date": "2026-05", "note": "",
    }  # fmt: skip
    return row | changes


def test_the_docs_section_is_what_the_script_makes_of_the_rows() -> None:
    with patch.object(sys, "argv", ["decode_independent.py", "--check"]):
        assert independent.main() == 0, "python benchmarks/decode_independent.py --write"


def test_every_row_has_its_url_engine_gpu_and_speed() -> None:
    assert len(ROWS) >= 150
    assert [independent.refusal(row) for row in ROWS] == [None] * len(ROWS)


def test_no_row_comes_from_a_source_the_fit_saw() -> None:
    # independent: no URL or group in common with the collected rows or the fit fixture (the first 168 cases too)
    seen = {
        r[key]
        for name in ("decode_published.json", "decode_calibration.json")
        for r in _fixture(name)
        for key in ("url", "group")
    }
    assert {row["url"] for row in ROWS}.isdisjoint(seen) and {row["group"] for row in ROWS}.isdisjoint(seen)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"url": ""}, "refused: no url"),
        ({"url": "example.org/t"}, "is not an https address"),
        ({"engine": None, "gpu_name": " "}, "refused: no engine, gpu_name"),
        ({"group": None}, "refused: no group"),
        ({"tokens_per_s": 0}, "tokens_per_s 0 is not a positive number"),
        ({"tokens_per_s": "fast"}, "tokens_per_s 'fast' is not a positive number"),
        ({"tokens_per_s": True}, "tokens_per_s True is not a positive number"),
        ({"tokens_per_s": float("nan")}, "tokens_per_s nan is not a positive number"),
    ],
)
def test_a_bad_row_is_refused_with_its_reason_and_the_rest_are_still_scored(changes: dict, reason: str) -> None:
    cases, scored = independent.score([_row(**changes), _row()])
    assert reason in cases[0].excluded_because
    assert cases[1].excluded_because is None and [s.case.id for s in scored] == [1]


TEXTS = st.sampled_from(["g", "https://example.org/t", "", "  ", None, 3])
SPEEDS = st.sampled_from([17.1, 1, 1e-9, 0, -2.5, float("nan"), float("inf"), "17", True, False, None])


@given(st.fixed_dictionaries({"url": TEXTS, "group": TEXTS, "engine": TEXTS, "gpu_name": TEXTS, "tokens_per_s": SPEEDS}))
def test_a_row_is_scored_only_with_every_required_field_and_a_positive_speed(fields: dict) -> None:
    row = _row() | fields
    complete = all(isinstance(row[k], str) and row[k].strip() for k in ("url", "group", "engine", "gpu_name"))
    speed = row["tokens_per_s"]
    valid = (
        complete
        and row["url"].startswith("https://")
        and isinstance(speed, int | float)
        and not isinstance(speed, bool)
        and math.isfinite(speed)
        and speed > 0
    )
    assert (independent.refusal(row) is None) == valid


def test_the_prediction_is_kvcalc_decodes_expected_speed_with_the_shipped_constants() -> None:
    # one formula, nothing refitted: the calibration's predict with kvcalc/decode_fit.py = kvcalc.latency's expected time
    cases, scored = independent.score([_row(engine_version="0.20.1", gpu_name="A100-40GB", tokens_per_s=80.65)])
    case = scored[0].case
    step = decode(
        load_model(case.preset),
        Workload(seq=case.avg_context, tp=1, engine=Engine(name="vllm", vllm_version="0.20.1")),
        load_gpu(case.gpu),
    )
    assert case.prefill_seconds_per_token == 0 and step.expected_tokens_per_s == pytest.approx(scored[0].expected, rel=2e-3)
    assert scored[0].low == pytest.approx(step.expected_tokens_per_s * step.expected.band.low, rel=2e-3)
    assert scored[0].high == pytest.approx(step.expected_tokens_per_s * step.expected.band.high, rel=2e-3)


def test_in_band_means_the_printed_band_covers_the_measured_speed() -> None:
    _, [inside] = independent.score([_row()])
    _, [below] = independent.score([_row(tokens_per_s=round(inside.low * 0.9, 3))])
    assert inside.in_band and inside.low <= 17.1 <= inside.high
    assert below.expected == pytest.approx(inside.expected) and not below.in_band and below.error > inside.error > 0
