"""Published start-up logs of deployments with a resident (a speculative draft, LoRA slots) replay
within 2 % of GPU memory, or the case says why it misses, and then it must miss
(tests/fixtures/engine_logs/residents.yaml, each case with its URL; scripts/calibration.py predicts)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
calibration = load_script("scripts/calibration.py")

CASES = yaml.safe_load((ROOT / "tests" / "fixtures" / "engine_logs" / "residents.yaml").read_text(encoding="utf-8"))


def _with_residents(case: dict) -> dict:
    """The case with its resident flags beside the engine's options (calibration.fit_args writes both as flags)."""
    return {**case, "engine": {**case["engine"], **case["residents"]}}


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_resident_log_replays(case: dict) -> None:
    error = calibration.predict(_with_residents(case))["error_percent"]
    if "miss" in case:
        assert abs(error) > calibration.BAR_PERCENT, f"{case['name']} now meets the bar ({error:+.2f} %): drop its miss note"
    else:
        assert abs(error) <= calibration.BAR_PERCENT, f"{case['name']}: {error:+.2f} % of GPU memory"


def test_every_resident_case_names_its_source_and_its_resident() -> None:
    for case in CASES:
        assert case["url"].startswith("https://github.com/"), case["name"]
        assert case["residents"] and isinstance(case["logged"]["available_kv_gib"], int | float), case["name"]
