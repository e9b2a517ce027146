"""One measure worker process: `python -m kvcalc.measure.worker`, started by kvcalc.measure.runner.

Reads a MeasureRequest (JSON) on stdin; writes JSON lines on its own copy of stdout: {"stage": ...}
as it goes, then {"report": ...} or {"error": {"exit_code": ..., "message": ...}}. Anything torch
or a native library prints goes to stderr, which the parent keeps to explain a crash. Under tensor
parallelism each rank is one worker (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT in its
environment, as torchrun sets them) and measures its own shard.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import IO, Any

from kvcalc.errors import DoesNotFit, KvcalcError, MeasureUnavailable
from kvcalc.kvcache import attention_layers, layer_caches
from kvcalc.measure import STOP_SIGNALS, out_of_memory, require_torch, short
from kvcalc.measure.figures import TOLERANCE
from kvcalc.measure.launched import Launch
from kvcalc.measure.plan import MeasurePlan, MeasureRequest, plan_variants
from kvcalc.units import GiB, MiB, format_bytes

SAFETY = 0.8  # share of free memory a plan may take
CPU_LIMIT_BYTES = 4 * GiB  # RAM all CPU ranks together take at most, unless --max-memory (per rank) says otherwise
PROBE_BYTES = {"cpu": 128 * MiB, "cuda": 1 * GiB}  # the bandwidth buffer: 4x a 32 MiB L3, 20x an H200's L2
GROUP_TIMEOUT = timedelta(minutes=10)
CACHE_MULTIPLE = 4  # a cache under this many last-level caches is partly read from there


class Channel:
    """The JSON-lines channel to the parent, on a private copy of stdout."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.stage = "starting"

    def send(self, **message: Any) -> None:
        self.stream.write(json.dumps(message) + "\n")
        self.stream.flush()

    def progress(self, stage: str) -> None:
        self.stage = stage
        self.send(stage=stage)


def measure_rank(request: MeasureRequest, rank: int, channel: Channel, launch: Launch | None = None) -> Any:
    """Plan, allocate and time this rank's share; return its MeasureReport as JSON data. Under a launcher
    (`launch`: torchrun's ranks, on one or more machines) the node's own ranks share its devices and cores,
    and rank 0 returns every rank's report, gathered before the group is torn down (the others, none)."""
    import torch

    from kvcalc.measure import bench
    from kvcalc.measure.report import MeasureReport, judged_report, run_bandwidth, variant_result
    from kvcalc.presets import load_gpu, recognise_gpu

    tp = request.workload.tp
    here = launch.local_world_size if launch else tp  # the ranks on this machine
    device = bench.pick_device(request.device, launch.local_rank if launch else rank)
    if device.type == "cuda":
        if tp > 1 and here > bench.cuda_devices():
            raise MeasureUnavailable(f"--tp {tp} needs {here} CUDA devices here; {bench.cuda_devices()} are visible")
        torch.cuda.set_device(device)
    elif tp > 1:  # ranks share the cores: one thread each at least, never more threads than cores in all
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // here))
    channel.progress("starting torch's threads")
    bench.start_threads()
    settle: Any = lambda: None  # noqa: E731
    if tp > 1:
        import torch.distributed as dist

        channel.progress("joining the process group")
        if device.type == "cuda":  # device_id binds NCCL's communicator (and barrier) to this rank's GPU
            dist.init_process_group("nccl", rank=rank, world_size=tp, timeout=GROUP_TIMEOUT, device_id=device)
        else:
            dist.init_process_group("gloo", rank=rank, world_size=tp, timeout=GROUP_TIMEOUT)

        def settle() -> None:  # every rank starts each timed sample together, as in a real TP step
            bench.synchronize(device)
            dist.barrier()

    env = bench.environment(device)
    peak = request.peak
    if peak is None and device.type == "cuda" and (preset := recognise_gpu(env["device_name"])):
        peak = load_gpu(preset)
    allowed = int(bench.free_bytes(device) * SAFETY)
    if device.type == "cpu":
        allowed //= here  # the ranks share one machine's memory
    if request.max_memory is not None:  # per rank
        allowed = min(allowed, request.max_memory)
    elif device.type == "cpu":
        allowed = min(allowed, CPU_LIMIT_BYTES // here)
    if tp > 1:  # every rank plans the same shapes, or their collectives would not match
        agreed = torch.tensor([allowed], dtype=torch.int64, device=device)
        dist.all_reduce(agreed, op=dist.ReduceOp.MIN)
        allowed = int(agreed.item())
    probe_bytes = min(PROBE_BYTES[device.type], allowed // 4)
    plans = plan_variants(request.variants, request.workload, allowed - probe_bytes, request.max_layers)
    if (llc := bench.last_level_cache_bytes(device)) is not None:
        plans = [(name, with_cache_note(plan, llc)) for name, plan in plans]
    cache = bench.Cache()
    with bench.oom_guard(cache, device, " while allocating the bandwidth buffer"):
        first = attention_layers(layer_caches(plans[0][1].model, tp))[0]  # the probe reads at the model's head width
        probe = bench.Probe(device, probe_bytes, request.workload.seq, first.k_values // max(first.kv_heads, 1))
    raws = []
    for _, plan in plans:
        if tp == 1:
            raws.append(bench.run_variant(plan, device, probe, channel.progress))
            continue
        outputs = bench.attention_outputs(plan, device)  # what the rank's row-parallel o_proj all-reduces

        def all_reduce(_cache: Any, out: list[Any] = outputs) -> dict[str, Any]:
            return {"all-reduce": lambda: [dist.all_reduce(t) for t in out]}

        raw = bench.run_variant(plan, device, probe, channel.progress, all_reduce, settle)
        raws.append({**raw, "all_reduce_bytes": sum(t.nbytes for t in outputs)})
    bandwidth, run_figures = run_bandwidth([raw["samples"] for raw in raws], probe.read_bytes, probe.copy_bytes)
    probe.release()
    results = [
        variant_result(name, plan, raw, bandwidth, bench.attention_step_flops(plan), peak)
        for (name, plan), raw in zip(plans, raws, strict=True)
    ]
    report = MeasureReport(
        model=request.variants[0][1].name,
        device=env["device"],
        device_name=env["device_name"],
        torch_version=env["torch_version"],
        threads=env["threads"],
        load_average=env["load_average"],
        busy=env["load_average"] > (env["cpu_count"] or 1) + 0.5,
        gpu_preset=peak.name if peak else None,
        copy_bandwidth_bytes_per_s=bandwidth["copy"],
        read_bandwidth_bytes_per_s=bandwidth["read"],
        tolerance=TOLERANCE,
        judged=True,
        why=[],
        run_figures=run_figures,
        variants=results,
    )
    data = judged_report(report).model_dump(mode="json")
    if tp == 1:
        return data
    gathered: list[Any] | None = [None] * tp if rank == 0 else None
    if launch:
        dist.gather_object(data, gathered, dst=0)
    dist.destroy_process_group()
    return (gathered or []) if launch else data


def calibrate_device(request: MeasureRequest, channel: Channel) -> dict[str, Any]:
    """Fit this device's streaming bandwidth and overhead per layer (kvcalc.measure.calibrate)."""
    from kvcalc.measure import bench
    from kvcalc.measure.calibrate import LAYER_COUNTS, SIZE_SHARES, calibration
    from kvcalc.measure.figures import summarise

    device = bench.pick_device(request.device)
    channel.progress("starting torch's threads")
    bench.start_threads()
    env = bench.environment(device)
    allowed = int(bench.free_bytes(device) * SAFETY)
    if request.max_memory is not None:
        allowed = min(allowed, request.max_memory)
    nbytes = min(PROBE_BYTES[device.type], allowed)
    channel.progress("timing decode-shaped reads")
    runs = bench.calibration_samples(device, nbytes, LAYER_COUNTS, SIZE_SHARES, channel.progress)
    channel.progress("timing a matmul")
    dtype, flops, seconds = bench.matmul_samples(device)
    points = [(read, layers, summarise(f"{layers} layers, {format_bytes(read)}", samples)) for read, layers, samples in runs]
    rate = flops / summarise("matmul", seconds).steady_seconds
    return calibration(points, env, bench.total_memory_bytes(device), (dtype, rate)).model_dump(mode="json")


class _Progress(io.TextIOBase):
    """The worker's JSON-lines channel, read in this process: each stage goes to `progress`."""

    def __init__(self, progress: Callable[[str], None]) -> None:
        self.progress = progress

    def write(self, text: str) -> int:
        for line in filter(None, text.splitlines()):
            stage = json.loads(line).get("stage")
            if stage:
                self.progress(stage)
        return len(text)


def measure_launched(request: MeasureRequest, launch: Launch, progress: Callable[[str], None]) -> list[dict[str, Any]]:
    """This rank's measurement; on rank 0, every rank's report in rank order (gathered over the launcher's
    group before it is torn down), elsewhere none."""
    require_torch()
    channel = Channel(_Progress(progress if launch.primary else lambda _stage: None))  # type: ignore[arg-type]
    return measure_rank(request, launch.rank, channel, launch)  # type: ignore[no-any-return]


def with_cache_note(plan: MeasurePlan, last_level_cache: int) -> MeasurePlan:
    """The plan, noting when its cache is too small for every step to read it from memory."""
    if plan.cache_bytes >= CACHE_MULTIPLE * last_level_cache:
        return plan
    note = (
        f"the {format_bytes(plan.cache_bytes)} cache is under {CACHE_MULTIPLE}x the {format_bytes(last_level_cache)} last-level"
        " cache: part of each step reads it from there, not from memory"
    )
    return plan.model_copy(update={"notes": [*plan.notes, note]})


def main() -> int:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # held by the parent while it started this rank
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # whatever else writes to stdout (torch, gloo, a native library) lands in stderr
    channel = Channel(protocol)
    rank = int(os.environ.get("RANK", "0"))
    try:
        request = MeasureRequest.model_validate_json(sys.stdin.read())
        channel.progress("importing torch")
        require_torch()
        channel.send(report=calibrate_device(request, channel) if request.calibrate else measure_rank(request, rank, channel))
        return 0
    except KvcalcError as exc:
        channel.send(error={"exit_code": exc.exit_code, "message": str(exc)})
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - anything else is reported as one line, with its stage
        if out_of_memory(exc):
            channel.send(
                error={"exit_code": DoesNotFit.exit_code, "message": f"out of memory while {channel.stage} ({short(exc)})"}
            )
            return DoesNotFit.exit_code
        import traceback

        traceback.print_exc()  # to stderr, which the parent keeps
        channel.send(
            error={"exit_code": 2, "message": f"measure failed while {channel.stage}: {type(exc).__name__}: {short(exc)}"}
        )
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
