"""Predicted vs measured: the measure command's result, built from plans and raw samples. torch-free.

The prediction is the roofline max(bytes / read bandwidth, FLOPs / compute rate), both figures
measured in the same run, interleaved with the timed steps. A run is judged only when every figure
the prediction and the headline time rest on held still (kvcalc.measure.figures), and when no path
beat its own roofline by more than the tolerance: a step cannot run faster than the bandwidth and
compute rate it needs, so beating them proves one of them was measured too low in this run.
"""

from __future__ import annotations

import statistics
from typing import Any, Literal

from kvcalc.base import Frozen
from kvcalc.kvcache import attention_layers, layer_caches
from kvcalc.latency import roofline
from kvcalc.measure.figures import TOLERANCE, Figure, steady, summarise, unsteady
from kvcalc.measure.plan import MeasurePlan
from kvcalc.spec import GpuSpec
from kvcalc.units import format_seconds

Path = Literal["sdpa", "grouped", "repeat_kv"]
PATHS: tuple[Literal["sdpa", "grouped"], ...] = ("sdpa", "grouped")
NOISY_SPREAD = 1.5  # p90 / p10 above this: the timings are not trustworthy
RUN_FIGURES = ("read sdpa", "read grouped", "copy")  # sampled alongside every variant, summarised over the run


class Timing(Frozen):
    """Steady time (lower quartile), median and spread of repeated runs, in seconds."""

    median: float
    p10: float
    p90: float
    runs: int
    steady: float

    @classmethod
    def of(cls, runs: list[float]) -> Timing:
        ordered = sorted(runs)
        pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
        return cls(median=statistics.median(ordered), p10=pick(0.1), p90=pick(0.9), runs=len(ordered), steady=steady(ordered))


class VariantResult(Frozen):
    """One variant: predicted and allocated bytes, predicted and measured decode time (steady times)."""

    variant: str
    kv_heads: int  # per rank
    dtype: str
    seq: int
    batch: int
    layers_measured: int
    layers_total: int
    predicted_bytes: int  # KV cache plus recurrent state
    allocated_bytes: int
    bytes_difference: int
    predicted_kv_bytes: int  # what each timed step reads
    allocated_kv_bytes: int
    predicted_state_bytes: int  # hybrid models' conv and recurrent states: allocated, not timed
    allocated_state_bytes: int
    flops: int
    matmul_flops_per_s: float  # compute rate of decode's kernels at this shape, cache-resident (the faster path's)
    bound: Literal["memory", "compute"]
    predicted_seconds: float  # roofline at the measured read bandwidth and compute rate
    predicted_seconds_at_read_bandwidth: float
    predicted_compute_seconds: float
    predicted_seconds_at_copy_bandwidth: float
    predicted_seconds_at_peak: float | None  # at the GPU preset's peak bandwidth
    measured_seconds: float  # SDPA with enable_gqa
    measured_over_predicted: float | None  # SDPA; None when the run cannot be judged
    fastest_seconds: float
    fastest_over_predicted: float | None  # the fastest path; None when the run cannot be judged
    sdpa: Timing
    grouped: Timing
    repeat_kv: Timing
    repeat_kv_seconds: float
    grouped_seconds: float
    fastest_path: Path
    achieved_bandwidth_bytes_per_s: float
    share_of_copy_bandwidth: float
    share_of_read_bandwidth: float
    sdpa_backend: str
    noisy: bool
    figures: list[Figure]  # this variant's: compute rate per path, each timed step, the read bandwidth in its rounds
    notes: list[str]
    all_reduce: Timing | None = None  # tensor parallel: one step's all-reduces of the attention output
    all_reduce_bytes: int | None = None


class RankResult(Frozen):
    """One tensor-parallel rank: its shard's bytes (predicted as `fit --tp` does per GPU) and times."""

    rank: int
    device: str
    threads: int
    predicted_bytes: int
    allocated_bytes: int
    bytes_difference: int
    predicted_seconds: float
    decode_seconds: float  # the fastest path over this rank's shard, steady
    decode: Timing
    all_reduce_seconds: float
    all_reduce: Timing
    all_reduce_bytes: int
    judged: bool
    why: list[str]


class TpSummary(Frozen):
    """The tensor-parallel group in aggregate."""

    tp: int
    predicted_bytes: int  # over all ranks
    allocated_bytes: int
    every_rank_exact: bool
    slowest_rank: int
    decode_seconds: float  # the slowest rank's
    all_reduce_seconds: float  # the slowest rank's
    step_seconds: float  # decode + all-reduce, the group waiting for its slowest rank


def variant_result(
    name: str, plan: MeasurePlan, raw: dict[str, Any], bandwidth: dict[str, float], flops: int, peak: GpuSpec | None,
    tolerance: float = TOLERANCE,
) -> VariantResult:  # fmt: skip
    """Compare one variant's samples with the roofline of its planned bytes and FLOPs.

    `bandwidth`: the run's read and copy bandwidth (bytes per second), keys "read" and "copy".
    """
    samples: dict[str, list[float]] = raw["samples"]
    hot = [summarise(key, samples[key], tolerance) for key in samples if key.startswith("hot ")]
    rate_figure = min(hot, key=lambda f: f.steady_seconds)
    rate = raw["hot_flops"] / rate_figure.steady_seconds
    steps = {path: summarise(f"step {path}", samples[f"step {path}"], tolerance) for path in PATHS}
    timings = {path: Timing.of(samples[f"step {path}"]) for path in PATHS}
    timings["repeat_kv"] = Timing.of(samples["repeat_kv"])
    steps["repeat_kv"] = summarise("step repeat_kv", samples["repeat_kv"], tolerance)  # it may be the fastest path (MQA)
    extra = [summarise(key, samples[key], tolerance) for key in ("all-reduce",) if key in samples]
    line = roofline(plan.cache_bytes, flops, bandwidth["read"], rate)
    fastest = min(timings, key=lambda p: timings[p].steady)
    measured = timings["sdpa"].steady
    return VariantResult(
        variant=name,
        kv_heads=attention_layers(layer_caches(plan.model, plan.workload.tp))[0].kv_heads,
        dtype=(plan.workload.kv_dtype or plan.model.dtype).value,
        seq=plan.workload.seq,
        batch=plan.workload.batch,
        layers_measured=plan.model.layers,
        layers_total=plan.requested_layers,
        predicted_bytes=plan.cache_bytes + plan.state_bytes,
        allocated_bytes=raw["allocated_bytes"] + raw["allocated_state_bytes"],
        bytes_difference=raw["allocated_bytes"] + raw["allocated_state_bytes"] - plan.cache_bytes - plan.state_bytes,
        predicted_kv_bytes=plan.cache_bytes,
        allocated_kv_bytes=raw["allocated_bytes"],
        predicted_state_bytes=plan.state_bytes,
        allocated_state_bytes=raw["allocated_state_bytes"],
        flops=flops,
        matmul_flops_per_s=rate,
        bound=line.bound,
        predicted_seconds=line.seconds,
        predicted_seconds_at_read_bandwidth=line.memory_seconds,
        predicted_compute_seconds=line.compute_seconds,
        predicted_seconds_at_copy_bandwidth=plan.cache_bytes / bandwidth["copy"],
        predicted_seconds_at_peak=plan.cache_bytes / peak.bandwidth_bytes_per_s if peak else None,
        measured_seconds=measured,
        measured_over_predicted=measured / line.seconds,
        fastest_seconds=timings[fastest].steady,
        fastest_over_predicted=timings[fastest].steady / line.seconds,
        sdpa=timings["sdpa"],
        grouped=timings["grouped"],
        repeat_kv=timings["repeat_kv"],
        repeat_kv_seconds=timings["repeat_kv"].steady,
        grouped_seconds=timings["grouped"].steady,
        fastest_path=fastest,  # type: ignore[arg-type]
        achieved_bandwidth_bytes_per_s=plan.cache_bytes / measured,
        share_of_copy_bandwidth=plan.cache_bytes / measured / bandwidth["copy"],
        share_of_read_bandwidth=plan.cache_bytes / measured / bandwidth["read"],
        sdpa_backend=raw["sdpa_backend"],
        noisy=timings["sdpa"].p90 > NOISY_SPREAD * timings["sdpa"].p10,  # the headline timing
        figures=[*hot, *steps.values(), *extra, *(summarise(key, samples[key], tolerance) for key in RUN_FIGURES[:2])],
        notes=plan.notes,
        all_reduce=Timing.of(samples["all-reduce"]) if "all-reduce" in samples else None,
        all_reduce_bytes=raw.get("all_reduce_bytes"),
    )


def relies_on_bandwidth(result: VariantResult, read: Figure) -> bool:
    """Whether the read bandwidth, at its median instead of its steady time, would set this roofline."""
    return result.predicted_seconds_at_read_bandwidth * read.spread >= result.predicted_compute_seconds


def doubts(result: VariantResult, tolerance: float = TOLERANCE) -> list[str]:
    """Why this variant cannot be judged: the compute rate its roofline rests on, the timed step of its
    fastest path or its all-reduce did not hold still, or that path beat its roofline.

    The roofline rests on the compute rate only where that rate, at its median instead of its
    steady time, would set the bound: a memory-bound step far below the ridge does not care how
    steady the compute rate was (nor a compute-bound one the bandwidth: see judged_report)."""
    rate = min((f for f in result.figures if f.name.startswith("hot ")), key=lambda f: f.steady_seconds)
    relied_on = [next(f for f in result.figures if f.name == f"step {result.fastest_path}")]
    relied_on += [f for f in result.figures if f.name == "all-reduce"]
    if result.predicted_compute_seconds * rate.spread >= result.predicted_seconds_at_read_bandwidth:
        relied_on.insert(0, rate)
    reasons = [f"{result.variant}: {line}" for line in unsteady(relied_on, tolerance)]
    beaten = result.predicted_seconds / result.fastest_seconds
    if beaten > tolerance:
        reasons.append(
            f"{result.variant}: {result.fastest_path} ran {beaten:.2f}x faster than the roofline of this run's own figures"
            f" (tolerance {tolerance:.2f}x): its {result.bound} figure was measured too low"
            + (", or the cache was read from a CPU cache, not memory" if result.bound == "memory" else "")
        )
    return reasons


def run_bandwidth(variant_samples: list[dict[str, list[float]]], read_bytes: int, copy_bytes: int,
                  tolerance: float = TOLERANCE) -> tuple[dict[str, float], list[Figure]]:  # fmt: skip
    """The run's read bandwidth (the faster GEMV path's steady time over the buffer) and copy
    bandwidth, from their samples in every variant's rounds together: drift across variants widens them."""
    figures = [summarise(key, [s for samples in variant_samples for s in samples[key]], tolerance) for key in RUN_FIGURES]
    read = min(figures[:2], key=lambda f: f.steady_seconds)
    return {"read": read_bytes / read.steady_seconds, "copy": copy_bytes / figures[2].steady_seconds}, figures


def read_figure(figures: list[Figure]) -> Figure:
    """The read-bandwidth figure the predictions used: the faster of the two GEMV paths."""
    return min((f for f in figures if f.name.startswith("read ")), key=lambda f: f.steady_seconds)


class MeasureReport(Frozen):
    """The whole run: environment, the bandwidths measured in it, one result per variant, and
    whether its figures held still enough to judge (`why` says what did not)."""

    model: str
    device: str
    device_name: str
    torch_version: str
    threads: int
    load_average: float
    busy: bool
    gpu_preset: str | None
    copy_bandwidth_bytes_per_s: float
    read_bandwidth_bytes_per_s: float
    tolerance: float
    judged: bool
    why: list[str]
    run_figures: list[Figure]  # the read and copy bandwidth, over every variant's rounds
    variants: list[VariantResult]
    tp: int = 1
    ranks: list[RankResult] = []
    tp_summary: TpSummary | None = None


def judged_report(report: MeasureReport, tolerance: float = TOLERANCE) -> MeasureReport:
    """The report with its verdict: judged, or why not, and no ratio where it cannot be judged."""
    read = read_figure(report.run_figures)
    why = []
    if not read.holds and (resting := [v.variant for v in report.variants if relies_on_bandwidth(v, read)]):
        why.append(f"read bandwidth ({', '.join(resting)} rest on it): {unsteady([read], tolerance)[0]}")
    why += [reason for v in report.variants for reason in doubts(v, tolerance)]
    phases = {v.variant: read_figure(v.figures).steady_seconds for v in report.variants}  # each variant's own rounds
    slowest, fastest = max(phases, key=phases.__getitem__), min(phases, key=phases.__getitem__)
    if phases[slowest] > tolerance * phases[fastest]:
        why.insert(
            0,
            f"the read bandwidth moved {phases[slowest] / phases[fastest]:.2f}x between variants (tolerance {tolerance:.2f}x):"
            f" {format_seconds(phases[fastest])} over the buffer in {fastest}'s rounds, {format_seconds(phases[slowest])} in {slowest}'s",
        )
    variants = report.variants
    if why:
        variants = [v.model_copy(update={"measured_over_predicted": None, "fastest_over_predicted": None}) for v in variants]
    return report.model_copy(update={"judged": not why, "why": why, "variants": variants})


def rank_result(rank: int, report: MeasureReport) -> RankResult:
    """One rank's figures from the report its worker made of its shard (one variant, with an all-reduce)."""
    v = report.variants[0]
    assert v.all_reduce is not None and v.all_reduce_bytes is not None  # every rank of a group times one
    decode = v.sdpa if v.fastest_path == "sdpa" else v.grouped
    return RankResult(
        rank=rank,
        device=report.device if report.device == "cpu" else f"{report.device}:{rank}",
        threads=report.threads,
        predicted_bytes=v.predicted_bytes,
        allocated_bytes=v.allocated_bytes,
        bytes_difference=v.bytes_difference,
        predicted_seconds=v.predicted_seconds,
        decode_seconds=decode.steady,
        decode=decode,
        all_reduce_seconds=v.all_reduce.steady,
        all_reduce=v.all_reduce,
        all_reduce_bytes=v.all_reduce_bytes,
        judged=report.judged,
        why=report.why,
    )


def tensor_parallel_report(reports: list[MeasureReport]) -> MeasureReport:
    """Rank 0's report, with every rank's figures under `ranks`, the group's under `tp_summary`, and
    judged only when every rank was."""
    ranks = [rank_result(rank, report) for rank, report in enumerate(reports)]
    slowest = max(ranks, key=lambda r: r.decode_seconds)
    summary = TpSummary(
        tp=len(ranks),
        predicted_bytes=sum(r.predicted_bytes for r in ranks),
        allocated_bytes=sum(r.allocated_bytes for r in ranks),
        every_rank_exact=all(r.bytes_difference == 0 for r in ranks),
        slowest_rank=slowest.rank,
        decode_seconds=slowest.decode_seconds,
        all_reduce_seconds=max(r.all_reduce_seconds for r in ranks),
        step_seconds=slowest.decode_seconds + max(r.all_reduce_seconds for r in ranks),
    )
    why = [f"rank {r.rank}: {line}" for r in ranks for line in r.why]
    first = reports[0]
    variants = first.variants
    if why:
        variants = [v.model_copy(update={"measured_over_predicted": None, "fastest_over_predicted": None}) for v in variants]
    return first.model_copy(
        update={"tp": len(ranks), "ranks": ranks, "tp_summary": summary, "judged": not why, "why": why, "variants": variants}
    )
