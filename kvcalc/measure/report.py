"""Predicted vs measured: the measure command's result, built from plans and raw timings. torch-free."""

from __future__ import annotations

import statistics
from typing import Any, Literal

from kvcalc.base import Frozen
from kvcalc.latency import roofline
from kvcalc.measure.plan import MeasurePlan
from kvcalc.spec import GpuSpec

Path = Literal["sdpa", "grouped", "repeat_kv"]
NOISY_SPREAD = 1.5  # p90 / p10 above this: the timings are not trustworthy


class Timing(Frozen):
    """Median and spread of repeated runs, in seconds."""

    median: float
    p10: float
    p90: float
    runs: int

    @classmethod
    def of(cls, runs: list[float]) -> Timing:
        ordered = sorted(runs)
        pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
        return cls(median=statistics.median(ordered), p10=pick(0.1), p90=pick(0.9), runs=len(ordered))


class VariantResult(Frozen):
    """One variant: predicted and allocated bytes, predicted and measured decode time."""

    variant: str
    kv_heads: int
    dtype: str
    seq: int
    batch: int
    layers_measured: int
    layers_total: int
    predicted_bytes: int
    allocated_bytes: int
    bytes_difference: int
    flops: int
    matmul_flops_per_s: float
    bound: Literal["memory", "compute"]
    predicted_seconds: float  # roofline at the measured copy bandwidth and matmul rate
    predicted_seconds_at_copy_bandwidth: float
    predicted_seconds_at_peak: float | None  # at the GPU preset's peak bandwidth
    measured_seconds: float  # SDPA with enable_gqa
    measured_over_predicted: float
    sdpa: Timing
    grouped: Timing
    repeat_kv: Timing
    repeat_kv_seconds: float
    grouped_seconds: float
    fastest_path: Path
    achieved_bandwidth_bytes_per_s: float
    share_of_copy_bandwidth: float
    sdpa_backend: str
    noisy: bool
    notes: list[str]


def variant_result(
    name: str, plan: MeasurePlan, raw: dict[str, Any], copy_bandwidth: float, matmul_flops: float,
    flops: int, peak: GpuSpec | None,
) -> VariantResult:  # fmt: skip
    """Compare one variant's raw timings with the roofline of its planned bytes and FLOPs."""
    timings = {path: Timing.of(raw[path]) for path in ("sdpa", "grouped", "repeat_kv")}
    line = roofline(plan.cache_bytes, flops, copy_bandwidth, matmul_flops)
    measured = timings["sdpa"].median
    return VariantResult(
        variant=name,
        kv_heads=plan.model.kv_heads if plan.model.mla is None else 0,
        dtype=(plan.workload.kv_dtype or plan.model.dtype).value,
        seq=plan.workload.seq,
        batch=plan.workload.batch,
        layers_measured=plan.model.layers,
        layers_total=plan.requested_layers,
        predicted_bytes=plan.cache_bytes,
        allocated_bytes=raw["allocated_bytes"],
        bytes_difference=raw["allocated_bytes"] - plan.cache_bytes,
        flops=flops,
        matmul_flops_per_s=matmul_flops,
        bound=line.bound,
        predicted_seconds=line.seconds,
        predicted_seconds_at_copy_bandwidth=line.memory_seconds,
        predicted_seconds_at_peak=plan.cache_bytes / peak.bandwidth_bytes_per_s if peak else None,
        measured_seconds=measured,
        measured_over_predicted=measured / line.seconds,
        sdpa=timings["sdpa"],
        grouped=timings["grouped"],
        repeat_kv=timings["repeat_kv"],
        repeat_kv_seconds=timings["repeat_kv"].median,
        grouped_seconds=timings["grouped"].median,
        fastest_path=min(timings, key=lambda p: timings[p].median),  # type: ignore[arg-type]
        achieved_bandwidth_bytes_per_s=plan.cache_bytes / measured,
        share_of_copy_bandwidth=plan.cache_bytes / measured / copy_bandwidth,
        sdpa_backend=raw["sdpa_backend"],
        noisy=timings["sdpa"].p90 > NOISY_SPREAD * timings["sdpa"].p10,  # the headline timing
        notes=plan.notes,
    )


class MeasureReport(Frozen):
    """The whole run: environment, the bandwidth measured in it, and one result per variant."""

    model: str
    device: str
    device_name: str
    torch_version: str
    threads: int
    load_average: float
    busy: bool
    gpu_preset: str | None
    copy_bandwidth_bytes_per_s: float
    variants: list[VariantResult]
