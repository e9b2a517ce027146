"""How well `kvcalc fit` reproduces the published start-up logs of vLLM, SGLang and TensorRT-LLM.

    python scripts/calibration.py            # print each engine's table of cases and errors

The cases live in tests/fixtures/engine_logs/<engine>.yaml, each with its URL, the flags that
reproduce the run and what it logged; tests/test_calibration.py holds each case to the bar, and
scripts/update_docs.py writes these tables into docs/engines.md.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # this checkout's kvcalc, not an installed one
    sys.path.insert(0, str(ROOT))
LOGS = ROOT / "tests" / "fixtures" / "engine_logs"
ENGINES = ("vllm", "sglang", "trtllm")
BAR_PERCENT = 2.0  # of GPU memory, for text-only models
GIB = 2**30


def load_cases(engine: str) -> list[dict[str, Any]]:
    """The engine's cases, in the file's order."""
    return yaml.safe_load((LOGS / f"{engine}.yaml").read_text(encoding="utf-8"))


def fit_args(case: dict[str, Any]) -> list[str]:
    """`kvcalc fit` arguments that reproduce the case's run."""
    model = case["model"]
    args = ["fit", "--model", str(LOGS / model) if model.startswith("models/") else model]
    args += ["--seq", str(case["seq"])] if "seq" in case else []
    args += ["--gpu", case["gpu"]] if "gpu" in case else []
    args += ["--memory", case["memory"]] if "memory" in case else []
    for key in ("tp", "pp", "kv_dtype", "weight_dtype", "reserve", "block_size", "interconnect"):
        if key in case:
            args += [f"--{key.replace('_', '-')}", str(case[key])]
    options = dict(case["engine"])
    args += ["--engine", options.pop("name")]
    for key, value in options.items():
        flag = key.replace("_", "-")
        args += ([f"--{flag}"] if value else [f"--no-{flag}"]) if isinstance(value, bool) else [f"--{flag}", str(value)]
    return [*args, "--json"]


def predict(case: dict[str, Any]) -> dict[str, Any]:
    """kvcalc's budget for the case: the fit document's budget, with the error against the log."""
    from typer.testing import CliRunner

    from kvcalc.cli import app

    result = CliRunner().invoke(app, fit_args(case), prog_name="kvcalc")
    if result.exit_code not in (0, 1):
        raise RuntimeError(f"{case['name']}: kvcalc {' '.join(fit_args(case))}: {result.output}")
    budget = json.loads(result.stdout)["budget"]
    logged = round(case["logged"]["available_kv_gib"] * GIB)
    error = budget["usable_bytes"] - logged
    return {
        "usable_bytes": budget["usable_bytes"],
        "logged_bytes": logged,
        "error_gib": error / GIB,
        "error_percent": 100 * error / budget["memory_bytes"],
    }


def table(engine: str) -> str:
    """A Markdown table of the engine's cases (logged and predicted KV memory, the error in GiB and
    in % of GPU memory, why a case misses) and a line of median and worst errors."""
    rows = ["| case | logged KV | kvcalc | error | % of GPU | note |", "| --- | ---: | ---: | ---: | ---: | --- |"]
    errors, text_only = [], []
    for case in load_cases(engine):
        p = predict(case)
        errors.append(abs(p["error_percent"]))
        if case.get("text_only"):
            text_only.append(abs(p["error_percent"]))
        note = case.get("miss", "") or ("" if case.get("text_only") else "multimodal: the vision tower is not counted")
        rows.append(
            f"| [{case['name']}]({case['url']}) | {case['logged']['available_kv_gib']:.2f} GiB | {p['usable_bytes'] / GIB:.2f} GiB"
            f" | {p['error_gib']:+.2f} GiB | {p['error_percent']:+.2f} | {note} |"
        )
    within = sum(e <= BAR_PERCENT for e in text_only)
    summary = (
        f"{len(errors)} cases: median |error| {statistics.median(errors):.2f} % of GPU memory, worst {max(errors):.2f} %."
        f" Text-only models: median {statistics.median(text_only):.2f} %, worst {max(text_only):.2f} %,"
        f" {within} of {len(text_only)} within {BAR_PERCENT:g} %."
    )
    return "\n".join([*rows, "", summary])


def main() -> int:
    for engine in ENGINES:
        print(f"## {engine}\n\n{table(engine)}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
