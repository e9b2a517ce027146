"""Score kvcalc's llama.cpp placements on published cases and write the tables into docs/placement.md.

    python scripts/placement_cases.py            # rewrite the section between the placement:cases markers
    python scripts/placement_cases.py --check    # exit 1 when the section is stale (tests/test_placement.py runs it)

Memory: tests/fixtures/placement/breakdowns.yaml (llama.cpp's memory breakdowns, buffer sizes and --fit
decisions) against placement.plan: each device and the host within 5% or 256 MiB of what llama.cpp
printed, a fit's layers within one layer; a case whose source lets kvcalc check only some parts of the memory
(`checks`, e.g. the KV cache where the log prints no free memory and the build's compute is not modelled) is
a miss on the others and scored on those parts on their own. Split decode speeds: tests/fixtures/placement/speeds.yaml
against placement.split_decode. The one constant the speeds need, the share of the host's bandwidth CPU
matmuls reach (HOST_EFFICIENCY), is the median of what each case implies; its error is reported
leave-one-source-out (a source, one published page, is left out of the fit that predicts it), beside
the in-sample one.
"""

from __future__ import annotations

import functools
import json
import math
import re
import statistics
import sys
from pathlib import Path
from typing import NamedTuple

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


def checked_parts(case: dict) -> list[str]:
    """The parts of each place's memory the case's source lets kvcalc check (`checks`; default every part it quotes);
    a `checks` that is not a non-empty list of PARTS is refused, naming the case."""
    checks = case.get("checks", list(PARTS))
    if not isinstance(checks, list) or not checks or any(part not in PARTS for part in checks):
        raise ValueError(f"{case.get('id', case.get('what'))}: checks: {checks!r} is not a list of {', '.join(PARTS)}")
    return checks


def score(case: dict) -> tuple[bool, list[str]]:
    """Whether kvcalc explains the case, and one cell per place scored: published vs kvcalc, MiB. A case whose
    source lets kvcalc check only some parts (`checks`) is not explained on the others, whatever their error:
    its checked parts are scored on their own in one more cell."""
    checked = checked_parts(case)  # refused before anything is scored
    laid_out = case_plan(case)
    published = case["published"]
    cells, ok = [], True
    partial: list[str] = []  # the checked parts of each place, where the source lets kvcalc check no more
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
        unchecked = [part for part in parts if part not in checked]
        if unchecked:
            ok = False
            scored = [part for part in parts if part not in unchecked]
            if scored:
                mine = sum(getattr(plan_part, PARTS[part]) for part in scored)
                theirs = round(sum(parts[part] for part in scored) * MiB)
                within = "within" if _within(mine, theirs) else "outside"
                partial.append(f"{name} {' + '.join(scored)} {theirs / MiB:,.2f} vs {mine / MiB:,.2f} MiB ({within})")
    if "fit" in published:
        fit = published["fit"]
        split = len(laid_out.cpu_expert_layers) + len(laid_out.partial_layers)
        kinds = ",".join(p.kind for p in laid_out.partial_layers) or "none"
        ok &= laid_out.n_gpu_layers == fit["n_gpu_layers"] and abs(split - fit["layers_with_experts_on_cpu"]) <= 1
        cells.append(
            f"fit: -ngl {fit['n_gpu_layers']}, {fit['layers_with_experts_on_cpu']} layers with experts on the CPU ({fit['partial']})"
            f" vs -ngl {laid_out.n_gpu_layers}, {split} ({kinds})"
        )
    if partial:
        cells.append(f"what the source lets kvcalc check: {'; '.join(partial)}")
    return ok, cells


def breakdown_rows() -> tuple[list[str], int, int, int]:
    """The table's rows, how many cases kvcalc explains on every place, how many cases there are, and how many
    of the misses their sources let kvcalc check on part of the memory only (`checks`)."""
    rows = ["| case | build | published vs kvcalc | within 5% or 256 MiB |", "| --- | --- | --- | --- |"]
    explained = partly_checked = 0
    cases = breakdowns()
    for case in cases:
        ok, cells = score(case)
        explained += ok
        partly_checked += "checks" in case and not ok  # counted among the misses, as the section says
        verdict = ("yes" if ok else "no") + (f" (a miss: {case['miss']})" if "miss" in case else "")
        verdict += f" ({case['note']})" if "note" in case else ""
        rows.append(f"| {case['what']} ([source]({case['url']})) | {case['build']} | {'; '.join(cells)} | {verdict} |")
    return rows, explained, len(cases), partly_checked


def speeds() -> dict:
    return yaml.safe_load((FIXTURES / "speeds.yaml").read_text())


# (efficiency, bytes/s per core or None, seconds per hop): the host constants a fit gives. kvcalc's model is
# (efficiency, None, hop); (efficiency, None, 0.0) the one constant of before; a rate per core the tested variant.
Constants = tuple[float, int | None, float]


def threads(case: dict, setup: dict) -> int:
    """The cores llama.cpp computed on: the -t the source states, else the machine's cores (its default)."""
    return case.get("threads", setup["machines"][case["machine"]]["cpu_cores"])


def _host(case: dict, setup: dict, constants: Constants) -> placement.HostSpeed:
    efficiency, per_core, hop = constants
    return placement.HostSpeed(
        ram_bandwidth_bytes_per_s=setup["machines"][case["machine"]]["ram_bandwidth_bytes_per_s"],
        efficiency=efficiency,
        hop_seconds=hop,
        cpu_cores=threads(case, setup) if per_core is not None else None,
        core_bytes_per_s=per_core,
    )


@functools.cache
def _laid_out(case_key: str) -> tuple:
    """The model, workload, format, placement and devices of a case (json of the case and its machine)."""
    case, machine = json.loads(case_key)
    model = presets.load_model(case["model"])
    fmt = weight_format(model, parse_dtype(case["weight_dtype"]) if "weight_dtype" in case else None)
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
    return model, work, fmt, placement.plan(model, work, fmt, devices, request), devices


def _speed(case: dict, setup: dict, constants: Constants) -> placement.SplitDecode:
    model, work, fmt, laid_out, devices = _laid_out(json.dumps([case, setup["machines"][case["machine"]]], sort_keys=True))
    return placement.split_decode(model, work, fmt, laid_out, devices, _host(case, setup, constants), profile_for("llamacpp"))


def _terms(case: dict, setup: dict) -> tuple[int, float, int]:
    """A case's host bytes, the rest of its step without the hops' fixed cost (devices, the activations'
    bytes over PCIe, fixed costs per layer), and its hops."""
    return _raw_terms(json.dumps([case, setup["machines"][case["machine"]]], sort_keys=True))


@functools.cache
def _raw_terms(case_key: str) -> tuple[int, float, int]:
    case, machine = json.loads(case_key)
    raw = _speed(case, {"machines": {case["machine"]: machine}}, (1.0, None, 0.0))
    return raw.host_bytes, raw.expected_seconds - raw.host_seconds, raw.hops


def implied_rate(case: dict, setup: dict, hop: float) -> float:
    """The host's bytes per second at which the prediction meets the published speed, given the hops'
    fixed cost: host bytes over what is left of the published step (inf: nothing left)."""
    host_bytes, rest, hops = _terms(case, setup)
    left = 1 / case["tokens_per_s"] - rest - hops * hop
    return host_bytes / left if left > 0 else math.inf


def fitted(cases: list[dict], setup: dict, hop: bool = True, per_core: bool = False) -> Constants:
    """HOST_EFFICIENCY and HOP_SECONDS, each the median of what its cases imply given the other. Given the
    hops' cost, each case implies a host rate R (implied_rate): the efficiency is the median of R / RAM
    bandwidth over every case, the hop cost the median over the cases with more than two hops (a layer's
    experts away from its attention) of the time left per hop once the host is paid; from no hop cost, the
    two are refitted in turn (rounded to 0.01 and 10 µs) until a pair repeats. hop=False: the one constant of
    before. per_core=True: the tested variant, where a case is core-bound when threads * bytes per core <
    RAM bandwidth * efficiency, the efficiency comes from the RAM-bound cases only and the bytes per core
    (rounded to 0.1 GB/s) from the median of R / threads over the core-bound ones."""
    ram = {id(c): setup["machines"][c["machine"]]["ram_bandwidth_bytes_per_s"] for c in cases}

    def rates(cost: float) -> list[tuple[dict, float]]:
        return [(c, rate) for c in cases if (rate := implied_rate(c, setup, cost)) < math.inf]

    def rate_of(case: dict, efficiency: float, per_thread: float | None) -> float:
        cap = threads(case, setup) * per_thread if per_thread is not None else math.inf
        return min(ram[id(case)] * efficiency, cap)

    efficiency = round(statistics.median(rate / ram[id(c)] for c, rate in rates(0.0)), 2)
    per_thread = round(statistics.median(rate / threads(c, setup) for c, rate in rates(0.0)), -8) if per_core else None
    cost, seen = 0.0, set()
    while (efficiency, per_thread, cost) not in seen:
        seen.add((efficiency, per_thread, cost))
        implied = rates(cost)
        if per_thread is None:
            efficiency = round(statistics.median(rate / ram[id(c)] for c, rate in implied), 2)
        else:
            bound = {id(c): threads(c, setup) * per_thread < ram[id(c)] * efficiency for c, _ in implied}
            ram_bound = [rate / ram[id(c)] for c, rate in implied if not bound[id(c)]]
            core_bound = [rate / threads(c, setup) for c, rate in implied if bound[id(c)]]
            efficiency = round(statistics.median(ram_bound), 2) if ram_bound else efficiency
            per_thread = round(statistics.median(core_bound), -8) if core_bound else per_thread
        if not hop:
            continue
        per_hop = []
        for case in cases:
            host_bytes, rest, hops = _terms(case, setup)
            if hops > 2:
                left = 1 / case["tokens_per_s"] - rest - host_bytes / rate_of(case, efficiency, per_thread)
                per_hop.append(left / hops)
        cost = max(0.0, round(statistics.median(per_hop), 5)) if per_hop else 0.0
    return efficiency, int(per_thread) if per_thread is not None else None, cost


class SpeedScore(NamedTuple):
    """The speed cases scored by kvcalc's host model (RAM share and hop cost), by the one constant it replaced
    and by the tested variant with a cap per core."""

    case_rows: list[str]
    machine_rows: list[str]
    constants: Constants  # fitted on every case
    one_constant: float
    per_core: Constants
    inside: float  # median absolute error, in-sample
    outside: float  # the same, each source left out of the fit that predicts it
    one_inside: float
    one_outside: float
    per_core_outside: float


def _errors(cases: list[dict], setup: dict, **variant: bool) -> tuple[list[float], list[float], list[Constants]]:
    """Each case's signed error in-sample and with its source left out, and the constants that predicted it."""
    everyone = fitted(cases, setup, **variant)
    inside, outside, folds = [], [], []
    for case in cases:
        others = fitted([c for c in cases if c["url"] != case["url"]], setup, **variant)
        inside.append(_speed(case, setup, everyone).tokens_per_s / case["tokens_per_s"] - 1)
        outside.append(_speed(case, setup, others).tokens_per_s / case["tokens_per_s"] - 1)
        folds.append(others)
    return inside, outside, folds


def _median_abs(errors: list[float]) -> float:
    return statistics.median(abs(e) for e in errors)


@functools.cache
def _score(text: str) -> SpeedScore:
    setup = yaml.safe_load(text)
    cases = setup["cases"]
    inside, outside, folds = _errors(cases, setup)
    one_inside, one_outside, _ = _errors(cases, setup, hop=False)
    _, core_outside, _ = _errors(cases, setup, per_core=True)
    rows = [
        "| machine | model | flags | published tok/s | kvcalc (in-sample) | source left out (its constants) |"
        " one constant, source left out | with a rate per core, source left out |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for case, own, out, fold, one, core in zip(cases, inside, outside, folds, one_outside, core_outside, strict=True):
        flags = f"-ngl {case['n_gpu_layers']}" + (f" --n-cpu-moe {case['n_cpu_moe']}" if "n_cpu_moe" in case else "")
        flags += f" -ts {'/'.join(str(t) for t in case['tensor_split'])}" if "tensor_split" in case else ""
        flags += f" -t {case['threads']}" if "threads" in case else ""
        published = case["tokens_per_s"]
        rows.append(
            f"| {case['machine']} | {case['model']} ([source]({case['url']})) | `{flags}` | {published} |"
            f" {published * (1 + own):.1f} ({own:+.0%}) | {published * (1 + out):.1f} ({out:+.0%}; {fold[0]},"
            f" {fold[2] * 1e3:.2f} ms) | {published * (1 + one):.1f} ({one:+.0%}) | {published * (1 + core):.1f} ({core:+.0%}) |"
        )
    machine_rows = [
        "| machine | cases | cores (-t) | RAM GB/s | kvcalc: in-sample | source left out | one constant, left out |"
        " rate per core, left out |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, machine in setup["machines"].items():
        mine = [i for i, c in enumerate(cases) if c["machine"] == name]
        cores = sorted({threads(cases[i], setup) for i in mine})
        machine_rows.append(
            f"| {name} | {len(mine)} | {machine['cpu_cores']} ({', '.join(map(str, cores))}) |"
            f" {machine['ram_bandwidth_bytes_per_s'] / 1e9:.1f} | {_median_abs([inside[i] for i in mine]):.0%} |"
            f" {_median_abs([outside[i] for i in mine]):.0%} | {_median_abs([one_outside[i] for i in mine]):.0%} |"
            f" {_median_abs([core_outside[i] for i in mine]):.0%} |"
        )
    return SpeedScore(
        case_rows=rows, machine_rows=machine_rows, constants=fitted(cases, setup),
        one_constant=fitted(cases, setup, hop=False)[0], per_core=fitted(cases, setup, per_core=True),
        inside=_median_abs(inside), outside=_median_abs(outside), one_inside=_median_abs(one_inside),
        one_outside=_median_abs(one_outside), per_core_outside=_median_abs(core_outside),
    )  # fmt: skip


def speed_score() -> SpeedScore:
    """speeds.yaml scored (memoized on its text: the fits run once per process)."""
    return _score((FIXTURES / "speeds.yaml").read_text())


def excluded_rows() -> list[str]:
    """The published cases kvcalc cannot score (tests/fixtures/placement/excluded.yaml), each with its reason."""
    rows = ["| kind | case | why it stays out |", "| --- | --- | --- |"]
    for case in yaml.safe_load((FIXTURES / "excluded.yaml").read_text()):
        rows.append(f"| {case['kind']} | {case['what']} ([source]({case['url']})) | {case['reason']} |")
    return rows


def section() -> str:
    memory, explained, total, partly_checked = breakdown_rows()
    score = speed_score()
    setup = speeds()
    efficiency, _, hop = score.constants
    core_efficiency, per_core, core_hop = score.per_core
    machines = [f"- `{name}`: {m['what']}; host {m['ram_source']}; {m['cpu_source']}." for name, m in setup["machines"].items()]
    return "\n".join(
        [
            f"Memory (tests/fixtures/placement/breakdowns.yaml): {explained} of {total} published cases within 5% or 256 MiB"
            f" on every place quoted (a fit's layers within one layer); of the {total - explained} misses, {partly_checked}"
            " can be checked on part of the memory only (`checks`: what its source lets kvcalc check, scored on its own"
            " in its row):",
            "",
            *memory,
            "",
            f"Split decode speeds (tests/fixtures/placement/speeds.yaml), {len(setup['cases'])} cases on"
            f" {len(setup['machines'])} machines:",
            "",
            *machines,
            "",
            f"The host streams RAM bandwidth * {efficiency} and each hop between it and a GPU costs {hop * 1e3:.2f} ms"
            f" (placement.HOST_EFFICIENCY and HOP_SECONDS, fitted on all cases): median absolute error {score.inside:.0%}"
            f" in-sample, {score.outside:.0%} leave-one-source-out. The one constant it replaces (RAM bandwidth *"
            f" {score.one_constant}, no hop cost) scores {score.one_inside:.0%} and {score.one_outside:.0%}; the tested"
            f" cap per core (min(RAM * {core_efficiency}, threads * {per_core / 1e9:.1f} GB/s), {core_hop * 1e3:.2f} ms"
            f" per hop) {score.per_core_outside:.0%} left out, so it is not adopted.",
            "",
            *score.machine_rows,
            "",
            *score.case_rows,
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
