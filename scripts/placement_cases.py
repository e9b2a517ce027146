"""Score kvcalc's llama.cpp placements on published cases and write the tables into docs/placement.md.

    python scripts/placement_cases.py            # rewrite the section between the placement:cases markers
    python scripts/placement_cases.py --check    # exit 1 when the section is stale (tests/test_placement.py runs it)

Compute buffers: tests/fixtures/placement/compute_buffers.yaml against placement.compute_buffer_bytes.
Split decode speeds: tests/fixtures/placement/speeds.yaml against placement.split_decode. The one
constant the speeds need, the share of the host's bandwidth CPU matmuls reach (HOST_EFFICIENCY), is
the median of what each case implies; its error is reported leave-one-source-out (a source, one
published page, is left out of the fit that predicts it), beside the in-sample one.
"""

from __future__ import annotations

import re
import statistics
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kvcalc import placement, presets  # noqa: E402
from kvcalc.decode_profiles import profile_for  # noqa: E402
from kvcalc.spec import Engine, Workload  # noqa: E402
from kvcalc.units import GiB, MiB, parse_dtype  # noqa: E402
from kvcalc.weights import weight_format  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "placement"
DOC = ROOT / "docs" / "placement.md"
SECTION = re.compile(r"(<!-- placement:cases -->\n).*?(<!-- /placement:cases -->)", re.DOTALL)


def compute_rows() -> list[str]:
    rows = ["| case | published | kvcalc | error |", "| --- | --- | --- | --- |"]
    for case in yaml.safe_load((FIXTURES / "compute_buffers.yaml").read_text()):
        model = presets.load_model(case["model"])
        predicted = placement.compute_buffer_bytes(model, case["ctx"], case["ubatch"], case["flash_attn"], case["holds_output"])
        error = predicted / MiB / case["mib"] - 1
        miss = " (a miss: " + case["miss"] + ")" if "miss" in case else ""
        rows.append(
            f"| {case['what']} ([source]({case['url']})) | {case['mib']:.2f} MiB | {predicted / MiB:.2f} MiB | {error:+.0%}{miss} |"
        )
    return rows


def _speed(case: dict, setup: dict, host_efficiency: float) -> placement.SplitDecode:
    model = presets.load_model(case["model"])
    fmt = weight_format(model, parse_dtype(case["weight_dtype"]) if "weight_dtype" in case else None)
    gpu = setup["gpu"]
    device = placement.PlacementDevice(
        name=gpu["name"], free_bytes=gpu["memory_gib"] * GiB, margin_bytes=0, bandwidth_bytes_per_s=gpu["bandwidth_bytes_per_s"]
    )
    work = Workload(seq=setup["ctx"], engine=Engine(name="llamacpp"))
    request = placement.PlacementRequest(
        ctx_size=setup["ctx"], n_gpu_layers=case["n_gpu_layers"], n_cpu_moe=case.get("n_cpu_moe")
    )
    laid_out = placement.plan(model, work, fmt, [device], request)
    return placement.split_decode(
        model, work, fmt, laid_out, [device], setup["ram_bandwidth_bytes_per_s"], profile_for("llamacpp"), host_efficiency
    )


def implied_efficiency(case: dict, setup: dict) -> float:
    """The host efficiency at which the prediction meets the published speed."""
    raw = _speed(case, setup, 1.0)
    return raw.host_seconds / (1 / case["tokens_per_s"] - (raw.expected_seconds - raw.host_seconds))


def fitted(cases: list[dict], setup: dict) -> float:
    return round(statistics.median(implied_efficiency(c, setup) for c in cases), 2)


def speed_rows() -> tuple[list[str], float, float, float]:
    setup = yaml.safe_load((FIXTURES / "speeds.yaml").read_text())
    cases = setup["cases"]
    everyone = fitted(cases, setup)
    rows = [
        "| model | flags | published | kvcalc (in-sample) | error | kvcalc (source left out) | error |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    inside, outside = [], []
    for case in cases:
        others = fitted([c for c in cases if c["url"] != case["url"]], setup)
        own = _speed(case, setup, everyone).tokens_per_s
        left_out = _speed(case, setup, others).tokens_per_s
        inside.append(abs(own / case["tokens_per_s"] - 1))
        outside.append(abs(left_out / case["tokens_per_s"] - 1))
        flags = f"-ngl {case['n_gpu_layers']}" + (f" --n-cpu-moe {case['n_cpu_moe']}" if "n_cpu_moe" in case else "")
        rows.append(
            f"| {case['model']} ([source]({case['url']})) | `{flags}` | {case['tokens_per_s']} | {own:.1f} |"
            f" {own / case['tokens_per_s'] - 1:+.0%} | {left_out:.1f} (eff {others}) | {left_out / case['tokens_per_s'] - 1:+.0%} |"
        )
    return rows, everyone, statistics.median(inside), statistics.median(outside)


def section() -> str:
    speeds, efficiency, inside, outside = speed_rows()
    return "\n".join(
        [
            "Compute buffers (tests/fixtures/placement/compute_buffers.yaml):",
            "",
            *compute_rows(),
            "",
            "Split decode speeds (tests/fixtures/placement/speeds.yaml): an RTX 2080 8 GB and an i9-10900X (102 GB/s measured),"
            f" Q4_K_M GGUFs stood in by q4_0. Host efficiency fitted on all cases: {efficiency}"
            f" (placement.HOST_EFFICIENCY); median absolute error {inside:.0%} in-sample, {outside:.0%} leave-one-source-out.",
            "",
            *speeds,
            "",
        ]
    )


def main() -> int:
    text = DOC.read_text()
    fresh = SECTION.sub(lambda m: m.group(1) + section() + m.group(2), text)
    if "--check" in sys.argv:
        if fresh != text:
            print("docs/placement.md: the placement cases are stale; run python scripts/placement_cases.py")
            return 1
        return 0
    DOC.write_text(fresh)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
