"""Score kvcalc's llama.cpp placements on published cases and write the tables into docs/placement.md.

    python scripts/placement_cases.py            # rewrite the section between the placement:cases markers
    python scripts/placement_cases.py --check    # exit 1 when the section is stale (tests/test_placement.py runs it)

Memory: tests/fixtures/placement/breakdowns.yaml (llama.cpp's memory breakdowns, buffer sizes and --fit
decisions) against placement.plan: each device and the host within 5% or 256 MiB of what llama.cpp
printed, a fit's layers within one layer. Split decode speeds: tests/fixtures/placement/speeds.yaml
against placement.split_decode. The one constant the speeds need, the share of the host's bandwidth CPU
matmuls reach (HOST_EFFICIENCY), is the median of what each case implies; its error is reported
leave-one-source-out (a source, one published page, is left out of the fit that predicts it), beside
the in-sample one.
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
from kvcalc.spec import Engine, ModelSpec, StoredWeights, Workload  # noqa: E402
from kvcalc.units import GiB, MiB, parse_dtype  # noqa: E402
from kvcalc.weights import WeightFormat, require_params, weight_format  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "placement"
DOC = ROOT / "docs" / "placement.md"
SECTION = re.compile(r"(<!-- placement:cases -->\n).*?(<!-- /placement:cases -->)", re.DOTALL)
TOLERANCE, TOLERANCE_BYTES = 0.05, 256 * MiB  # the bar: each device within 5% or 256 MiB
PARTS = {"model": "weights_bytes", "context": "kv_bytes", "compute": "compute_bytes"}


def breakdowns() -> list[dict]:
    return yaml.safe_load((FIXTURES / "breakdowns.yaml").read_text())


def _total_weights(model: ModelSpec, fmt: WeightFormat, mtp: bool) -> int:
    """Every weight byte a plan places (devices and host), MTP layers included."""
    work = Workload(seq=256, engine=Engine(name="llamacpp"))
    device = placement.PlacementDevice(name="all", free_bytes=2**60, margin_bytes=0, bandwidth_bytes_per_s=1)
    laid_out = placement.plan(model, work, fmt, [device], placement.PlacementRequest(ctx_size=256, mtp=mtp))
    return sum(d.weights_bytes for d in laid_out.devices) + laid_out.host.weights_bytes


def case_model(case: dict) -> tuple[ModelSpec, WeightFormat]:
    """The case's preset (with its MTP layers), its weights scaled to the model buffers llama.cpp printed."""
    model = presets.load_model(case["model"])
    if "mtp_layers" in case:
        model = model.model_copy(update={"mtp_layers": case["mtp_layers"]})
    fmt = weight_format(model, parse_dtype(case["weight_dtype"]) if "weight_dtype" in case else None)
    if "file_mib" not in case:
        return model, fmt
    file_bytes, params = round(case["file_mib"] * MiB), require_params(model).total
    mtp = bool(case.get("mtp_layers"))

    def stored(total: int) -> WeightFormat:
        return fmt.model_copy(update={"stored": StoredWeights(bytes=total, params=params)})

    # every part of the plan scales with the stored bytes but MTP's small eh_proj: solve the line for the file
    at_file, at_half = _total_weights(model, stored(file_bytes), mtp), _total_weights(model, stored(file_bytes // 2), mtp)
    slope = (at_file - at_half) / (file_bytes - file_bytes // 2)
    return model, stored(round(file_bytes + (file_bytes - at_file) / slope))


def case_plan(case: dict) -> placement.Placement:
    """kvcalc's placement for a case: its flags, or its fit when the fit chose them."""
    model, fmt = case_model(case)
    engine = Engine(
        name="llamacpp",
        ubatch=case["ubatch"],
        flash_attn=case["flash_attn"],
        swa_full=case.get("swa_full"),
        kv_unified=case.get("kv_unified"),
    )
    work = Workload(
        seq=case["ctx"], batch=case.get("batch", 1), kv_dtype=parse_dtype(case.get("kv_dtype", "fp16")), engine=engine
    )
    devices = [
        placement.PlacementDevice(
            name=g["name"],
            free_bytes=round(g["free_mib"] * MiB),
            margin_bytes=placement.DEFAULT_FIT_TARGET,
            bandwidth_bytes_per_s=1,
        )
        for g in case["gpus"]
    ]
    flags = case.get("flags", {})
    layers = model.layers + case.get("mtp_layers", 0)
    on_cpu = flags.get("expert_layers_on_cpu")
    partial = flags.get("partial")
    request = placement.PlacementRequest(
        ctx_size=case["ctx"],
        n_gpu_layers=flags.get("n_gpu_layers"),
        expert_layers_on_cpu=list(range(layers)) if on_cpu == "all" else on_cpu,
        partial_layer=placement.PartialLayer(**partial) if partial else None,
        mtp=bool(case.get("mtp_layers")),
        output_first=case.get("output_first", True),
        all_logits_reserved=case.get("all_logits_reserved", False),
        f32_mask_reserved=case.get("f32_mask_reserved", False),
        mla_per_head=case.get("mla_per_head", False),
    )
    return placement.plan(model, work, fmt, devices, request)


def _within(predicted: int, published: int) -> bool:
    return abs(predicted - published) <= max(TOLERANCE * published, TOLERANCE_BYTES)


def score(case: dict) -> tuple[bool, list[str]]:
    """Whether kvcalc explains the case, and one cell per place scored: published vs kvcalc, MiB."""
    laid_out = case_plan(case)
    published = case["published"]
    cells, ok = [], True
    quoted = published.get("devices", [])
    places = [
        (g["name"], parts, d)
        for g, parts, d in zip(case["gpus"][: len(quoted)], quoted, laid_out.devices[: len(quoted)], strict=True)
    ]
    if "host" in published:
        places.append(("host", published["host"], laid_out.host))
    for name, parts, plan_part in places:
        mine = sum(getattr(plan_part, PARTS[part]) for part in parts)
        theirs = round(sum(parts.values()) * MiB)
        ok &= _within(mine, theirs)
        cells.append(f"{name} {' + '.join(parts)}: {theirs / MiB:,.0f} vs {mine / MiB:,.0f} MiB ({mine / theirs - 1:+.1%})")
    if "fit" in published:
        fit = published["fit"]
        split = len(laid_out.cpu_expert_layers) + len(laid_out.partial_layers)
        kinds = ",".join(p.kind for p in laid_out.partial_layers) or "none"
        ok &= laid_out.n_gpu_layers == fit["n_gpu_layers"] and abs(split - fit["layers_with_experts_on_cpu"]) <= 1
        cells.append(
            f"fit: -ngl {fit['n_gpu_layers']}, {fit['layers_with_experts_on_cpu']} layers with experts on the CPU ({fit['partial']})"
            f" vs -ngl {laid_out.n_gpu_layers}, {split} ({kinds})"
        )
    return ok, cells


def breakdown_rows() -> tuple[list[str], int, int]:
    rows = ["| case | build | published vs kvcalc | within 5% or 256 MiB |", "| --- | --- | --- | --- |"]
    explained = 0
    cases = breakdowns()
    for case in cases:
        ok, cells = score(case)
        explained += ok
        verdict = ("yes" if ok else "no") + (f" (a miss: {case['miss']})" if "miss" in case else "")
        verdict += f" ({case['note']})" if "note" in case else ""
        rows.append(f"| {case['what']} ([source]({case['url']})) | {case['build']} | {'; '.join(cells)} | {verdict} |")
    return rows, explained, len(cases)


def speeds() -> dict:
    return yaml.safe_load((FIXTURES / "speeds.yaml").read_text())


def _speed(case: dict, setup: dict, host_efficiency: float) -> placement.SplitDecode:
    model = presets.load_model(case["model"])
    fmt = weight_format(model, parse_dtype(case["weight_dtype"]) if "weight_dtype" in case else None)
    machine = setup["machines"][case["machine"]]
    devices = [
        placement.PlacementDevice(
            name=gpu["name"],
            free_bytes=gpu["memory_gib"] * GiB,
            margin_bytes=0,
            bandwidth_bytes_per_s=gpu["bandwidth_bytes_per_s"],
        )
        for gpu in machine["gpus"]
    ]
    ctx = case.get("ctx", 4096)
    engine = Engine(name="llamacpp", flash_attn=case.get("flash_attn", True))
    work = Workload(seq=ctx, kv_dtype=parse_dtype(case.get("kv_dtype", "fp16")), engine=engine)
    request = placement.PlacementRequest(
        ctx_size=ctx,
        n_gpu_layers=case["n_gpu_layers"],
        n_cpu_moe=case.get("n_cpu_moe"),
        tensor_split=case.get("tensor_split"),
        output_first=case.get("output_first", True),
    )
    laid_out = placement.plan(model, work, fmt, devices, request)
    return placement.split_decode(
        model, work, fmt, laid_out, devices, machine["ram_bandwidth_bytes_per_s"], profile_for("llamacpp"), host_efficiency
    )


def implied_efficiency(case: dict, setup: dict) -> float:
    """The host efficiency at which the prediction meets the published speed."""
    raw = _speed(case, setup, 1.0)
    return raw.host_seconds / (1 / case["tokens_per_s"] - (raw.expected_seconds - raw.host_seconds))


def fitted(cases: list[dict], setup: dict) -> float:
    return round(statistics.median(implied_efficiency(c, setup) for c in cases), 2)


def speed_rows() -> tuple[list[str], float, float, float]:
    setup = speeds()
    cases = setup["cases"]
    everyone = fitted(cases, setup)
    rows = [
        "| machine | model | flags | published tok/s | kvcalc (in-sample) | error | kvcalc (source left out) | error |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    inside, outside = [], []
    for case in cases:
        others = fitted([c for c in cases if c["url"] != case["url"]], setup)
        own = _speed(case, setup, everyone).tokens_per_s
        left_out = _speed(case, setup, others).tokens_per_s
        inside.append(abs(own / case["tokens_per_s"] - 1))
        outside.append(abs(left_out / case["tokens_per_s"] - 1))
        flags = f"-ngl {case['n_gpu_layers']}" + (f" --n-cpu-moe {case['n_cpu_moe']}" if "n_cpu_moe" in case else "")
        flags += f" -ts {'/'.join(str(t) for t in case['tensor_split'])}" if "tensor_split" in case else ""
        rows.append(
            f"| {case['machine']} | {case['model']} ([source]({case['url']})) | `{flags}` | {case['tokens_per_s']} | {own:.1f} |"
            f" {own / case['tokens_per_s'] - 1:+.0%} | {left_out:.1f} (eff {others}) | {left_out / case['tokens_per_s'] - 1:+.0%} |"
        )
    return rows, everyone, statistics.median(inside), statistics.median(outside)


def excluded_rows() -> list[str]:
    """The published cases kvcalc cannot score (tests/fixtures/placement/excluded.yaml), each with its reason."""
    rows = ["| kind | case | why it stays out |", "| --- | --- | --- |"]
    for case in yaml.safe_load((FIXTURES / "excluded.yaml").read_text()):
        rows.append(f"| {case['kind']} | {case['what']} ([source]({case['url']})) | {case['reason']} |")
    return rows


def section() -> str:
    memory, explained, total = breakdown_rows()
    speed, efficiency, inside, outside = speed_rows()
    setup = speeds()
    machines = [f"- `{name}`: {m['what']}; host {m['ram_source']}." for name, m in setup["machines"].items()]
    return "\n".join(
        [
            f"Memory (tests/fixtures/placement/breakdowns.yaml): {explained} of {total} published cases within 5% or 256 MiB"
            " on every place quoted (a fit's layers within one layer):",
            "",
            *memory,
            "",
            f"Split decode speeds (tests/fixtures/placement/speeds.yaml), {len(setup['cases'])} cases on"
            f" {len(setup['machines'])} machines:",
            "",
            *machines,
            "",
            f"Host efficiency fitted on all cases: {efficiency} (placement.HOST_EFFICIENCY); median absolute error"
            f" {inside:.0%} in-sample, {outside:.0%} leave-one-source-out.",
            "",
            *speed,
            "",
            "Published cases left out (tests/fixtures/placement/excluded.yaml):",
            "",
            *excluded_rows(),
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
