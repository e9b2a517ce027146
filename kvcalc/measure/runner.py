"""Plan, allocate, time and compare: the measure command's work, device-agnostic."""

from __future__ import annotations

from collections.abc import Callable

from kvcalc.kvcache import layer_caches
from kvcalc.measure import require_torch
from kvcalc.measure.plan import plan_measurement
from kvcalc.measure.report import MeasureReport, variant_result
from kvcalc.presets import load_gpu, recognise_gpu
from kvcalc.spec import GpuSpec, ModelSpec, Workload
from kvcalc.units import GiB, MiB

SAFETY = 0.8  # share of free memory a plan may take
CPU_LIMIT_BYTES = 4 * GiB  # never take more RAM than this on the CPU unless --max-memory says so


def measure(
    variants: list[tuple[str, ModelSpec]],
    workload: Workload,
    device_name: str,
    max_layers: int | None,
    max_memory: int | None,
    peak: GpuSpec | None,
    progress: Callable[[str], None],
) -> MeasureReport:
    """Measure each variant on one device in one run, with the copy bandwidth measured in the same run."""
    require_torch()
    from kvcalc.measure import bench

    device = bench.pick_device(device_name)
    env = bench.environment(device)
    if peak is None and device.type == "cuda" and (preset := recognise_gpu(env["device_name"])):
        peak = load_gpu(preset)
    free = bench.free_bytes(device)
    allowed = int(free * SAFETY)
    if device.type == "cpu":
        allowed = min(allowed, CPU_LIMIT_BYTES)
    if max_memory is not None:
        allowed = min(allowed, max_memory)
    plans = [(name, plan_measurement(model, workload, allowed, max_layers)) for name, model in variants]
    if len(plans) > 1:  # one shape for all variants, so their times compare: the tightest plan's
        layers = min(plan.model.layers for _, plan in plans)
        batch = min(plan.workload.batch for _, plan in plans)
        common = workload.model_copy(update={"batch": batch})
        plans = [(name, plan_measurement(model, common, allowed, layers)) for name, model in variants]
    progress("measuring copy bandwidth")
    copy_size = max(64 * MiB, min(1 * GiB, allowed // 4)) if device.type == "cuda" else 256 * MiB
    copy_bw = bench.copy_bandwidth(device, min(copy_size, max(allowed // 4, MiB)))
    results = []
    for name, plan in plans:
        dtype = bench.TORCH_DTYPES[plan.workload.kv_dtype or plan.model.dtype]
        first = layer_caches(plan.model)[0]
        heads = max(first.kv_heads, 1)  # an MLA latent is one shared "head"
        progress(f"{name}: measuring matmul rate")
        rate = bench.compute_rate(device, dtype, plan.model.heads // heads, first.k_values // heads, first.v_values // heads)
        raw = bench.run_variant(plan, device, progress)
        results.append(variant_result(name, plan, raw, copy_bw, rate, bench.attention_step_flops(plan), peak))
    return MeasureReport(
        model=variants[0][1].name,
        device=env["device"],
        device_name=env["device_name"],
        torch_version=env["torch_version"],
        threads=env["threads"],
        load_average=env["load_average"],
        busy=env["load_average"] > (env["cpu_count"] or 1) + 0.5,
        gpu_preset=peak.name if peak else None,
        copy_bandwidth_bytes_per_s=copy_bw,
        variants=results,
    )
