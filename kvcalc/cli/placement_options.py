"""The llama.cpp placement options `fit` and `decode` share (--ram, --fit-target, -ngl, --n-cpu-moe,
-ts, --wired-limit, --ram-bandwidth), each defined once, and the call that turns them into a plan."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Annotated

import typer

from kvcalc import placement, presets, throughput
from kvcalc.cli.common import TP_HELP, positive, preset_names, size_option
from kvcalc.cli.throughput_options import Economics
from kvcalc.engines.llamacpp import LLAMA_MAX_DEVICES
from kvcalc.errors import InvalidInput
from kvcalc.sources import tensor_parallel
from kvcalc.spec import GpuSpec, ModelSpec, Workload
from kvcalc.units import SIZE_HELP, MiB
from kvcalc.weights import WeightFormat

GPUS_HELP = (
    "GPU preset, a name as nvidia-smi prints it, a GPU YAML file, or auto (this machine's; with --engine llamacpp each of"
    " its GPUs). Repeat it for a llama.cpp split over several GPUs, in device order (--gpu rtx3090 --gpu rtx3060)."
)
LayerSplitTpOpt = Annotated[
    str,
    typer.Option(
        "--tp",
        metavar="N|auto",
        help=f"{TP_HELP} llamacpp: N GPUs of --gpu holding whole layers each (-sm layer), at most {LLAMA_MAX_DEVICES}.",
    ),
]
GpusOpt = Annotated[
    list[str] | None,
    typer.Option("--gpu", "-g", help=GPUS_HELP, autocompletion=preset_names("gpus")),
]
RamOpt = Annotated[
    str | None,
    typer.Option(
        "--ram", help=f"llamacpp: host memory free for the model, checked by the plan (llama.cpp does not): {SIZE_HELP}."
    ),
]
FitTargetOpt = Annotated[
    str | None,
    typer.Option("--fit-target", help="llamacpp: MiB to leave free on each GPU, one value or one per --gpu (default 1024)."),
]
FitCtxOpt = Annotated[
    int | None,
    typer.Option("--fit-ctx", help="llamacpp: the smallest context the plan reduces to when --seq is unset (default 4096)."),
]
NglOpt = Annotated[
    int | None,
    typer.Option(
        "--n-gpu-layers", "-ngl", help="llamacpp: layers on the GPUs, the output layer counted first (default: planned)."
    ),
]
NCpuMoeOpt = Annotated[
    int | None, typer.Option("--n-cpu-moe", help="llamacpp: keep the routed experts of the first N layers on the CPU.")
]
TensorSplitOpt = Annotated[
    str | None,
    typer.Option("--tensor-split", "-ts", help="llamacpp: share of the layers per --gpu, e.g. 3,1 (default: planned)."),
]
WiredLimitOpt = Annotated[
    str | None,
    typer.Option(
        "--wired-limit",
        help="Apple: the GPU working set (sysctl iogpu.wired_limit_mb, in MiB); default 2/3 of RAM up to 32 GiB, 3/4 above.",
    ),
]
MmprojOpt = Annotated[
    str | None,
    typer.Option(
        "--mmproj",
        help="llamacpp: a multimodal projector GGUF, held on the first GPU beside the layers (llama.cpp's fit leaves it out).",
    ),
]
DraftOpt = Annotated[
    str | None,
    typer.Option(
        "--model-draft",
        help="llamacpp: a draft model for speculative decoding (preset, YAML, config.json or GGUF): its weights and cache at the same context, on the first GPU.",
    ),
]
NoMmapOpt = Annotated[bool, typer.Option("--no-mmap", help="llamacpp: weights left on the CPU are loaded, not mapped.")]
MtpOpt = Annotated[
    bool,
    typer.Option(
        "--mtp",
        help="llamacpp: the GGUF carries the model's MTP layers and llama-server loads them (--spec-type draft-mtp):"
        " each is one more -ngl layer, placed before the output layer (the preset's mtp_layers).",
    ),
]
RamBandwidthOpt = Annotated[
    str | None,
    typer.Option(
        "--ram-bandwidth",
        help="Host memory bandwidth for layers and experts on the CPU: 80GB/s, or DDR channels as ddr5-6000x2"
        " (MT/s * 8 B * channels); default: a Mac's own bandwidth, else required when the plan leaves weights on the CPU.",
    ),
]
DDR = re.compile(r"^(?:l?p?ddr\d[x]?)-(\d+)x(\d+)$", re.IGNORECASE)


def ram_bandwidth(text: str) -> int:
    """--ram-bandwidth: bytes/s from `80GB/s` or a DDR setup `ddr5-6000x2` (6000 MT/s * 8 B per 64-bit
    channel * 2 channels = 96 GB/s, the JEDEC peak).

    >>> ram_bandwidth("ddr5-6000x2"), ram_bandwidth("80GB/s")
    (96000000000, 80000000000)
    """
    ddr = DDR.match(text.strip())
    if ddr:
        return int(ddr.group(1)) * 10**6 * 8 * int(ddr.group(2))
    rate = text.strip().removesuffix("/s")
    if rate == text.strip():
        raise InvalidInput(f"--ram-bandwidth {text!r}: give a rate such as 80GB/s, or DDR channels such as ddr5-6000x2")
    return size_option("ram-bandwidth", rate)


def _split(text: str) -> list[float]:
    try:
        shares = [float(part) for part in text.split(",")]
    except ValueError:
        raise InvalidInput(f"--tensor-split {text!r}: give numbers separated by commas, e.g. 3,1") from None
    if any(s < 0 or s != s for s in shares) or not sum(shares):
        raise InvalidInput(f"--tensor-split {text!r}: shares are 0 or more, not all 0")
    return shares


def _margins(text: str | None, devices: int) -> list[int]:
    if text is None:
        return [placement.DEFAULT_FIT_TARGET] * devices
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise InvalidInput(f"--fit-target {text!r}: MiB as whole numbers, one or one per --gpu") from None
    if len(values) not in (1, devices) or any(v < 0 for v in values):
        raise InvalidInput(f"--fit-target {text!r}: one value of 0 or more MiB, or one per --gpu ({devices})")
    return [v * MiB for v in (values * devices if len(values) == 1 else values)]


def wants_plan(gpus: list[object], *given: object) -> bool:
    """Whether the user asked for a placement: several GPUs or any placement option."""
    return len(gpus) > 1 or any(value not in (None, False) for value in given)


def layer_split_tp(engine: str, tp: int | str) -> tuple[int | str, int]:
    """--tp as (the workload's tp, the GPUs llama.cpp splits layers over; 0: no such split). llama.cpp's default
    split mode (-sm layer) gives each GPU whole layers and their cache, never a share of a layer's heads
    (kvcalc.placement.LAYER_SPLIT_SOURCE): its --tp N is N devices at tp 1, whatever the head count. Other engines
    keep --tp as a head split."""
    if engine != "llamacpp":
        return tp, 0
    devices = tensor_parallel(tp)
    positive(tp=devices)
    return 1, devices if devices > 1 else 0


def tp_devices(gpus: list[GpuSpec], devices: int) -> list[GpuSpec]:
    """The GPUs llama.cpp splits layers over under --tp N (layer_split_tp): one --gpu N times, or the N --gpu given;
    checked against llama.cpp's device cap and a Mac's single GPU (check_devices)."""
    if not devices:
        return check_devices(gpus, "--gpu")
    if not gpus:
        raise InvalidInput(
            f"--tp {devices} with --engine llamacpp puts whole layers on each of {devices} GPUs (-sm layer): give --gpu"
        )
    if len(gpus) == 1:
        return check_devices(gpus * devices, f"--tp {devices}")
    if len(gpus) != devices:
        raise InvalidInput(
            f"--tp {devices} with --engine llamacpp splits layers over {devices} GPUs, and {len(gpus)} --gpu are given:"
            f" give one --gpu (used {devices} times) or {devices}"
        )
    return check_devices(gpus, f"--tp {devices}")


def check_devices(gpus: list[GpuSpec], flag: str) -> list[GpuSpec]:
    """`gpus`, refused when llama.cpp could not split layers over them: more than LLAMA_MAX_DEVICES, or a
    unified-memory (Metal) GPU among several, since a Mac has one GPU and its RAM already holds the whole plan."""
    if len(gpus) > LLAMA_MAX_DEVICES:
        raise InvalidInput(
            f"{flag}: {len(gpus)} GPUs, and llama.cpp uses at most {LLAMA_MAX_DEVICES} (llama_max_devices(), src/llama.cpp)"
        )
    metal = [g.name for g in gpus if g.backend == "metal"]
    if metal and len(gpus) > 1:
        raise InvalidInput(
            f"{flag}: {metal[0]} is a Mac's one GPU sharing unified memory (Metal): llama.cpp has no second one to split"
            " layers over; give it once"
        )
    return gpus


def load_gpus(gpus: list[str] | None, extra: list[str] | None, engine: str = "llamacpp") -> list[GpuSpec]:
    """The --gpu presets, in device order; for llama.cpp, a lone `--gpu auto` is each of this machine's GPUs."""
    if engine == "llamacpp" and [g.strip().lower() for g in gpus or []] == ["auto"]:
        return presets.load_local_gpus(extra)
    return [presets.load_gpu(name, extra) for name in gpus or []]


def plan(
    model: ModelSpec, workload: Workload, fmt: WeightFormat, gpus: list[GpuSpec], seq: int | None, ram: str | None,
    fit_target: str | None, fit_ctx: int | None, ngl: int | None, n_cpu_moe: int | None, tensor_split: str | None,
    wired_limit: str | None, no_mmap: bool, mmproj: str | None = None, draft: str | None = None,
    extra: list[str] | None = None, mtp: bool = False, memory_in_use: str | None = None,
) -> tuple[list[placement.PlacementDevice], placement.PlacementRequest, placement.Placement]:  # fmt: skip
    """The devices, the request and the placement the options ask for (kvcalc.placement.plan);
    --memory-in-use is held on each GPU, not free."""
    from kvcalc.engines import profile

    if not profile(workload.engine).places_layers:
        raise InvalidInput(
            "several --gpu, --ram, -ngl, --n-cpu-moe, -ts and --fit-* plan a llama.cpp placement: add --engine llamacpp"
        )
    if not gpus:
        raise InvalidInput("a placement needs at least one --gpu")
    if fit_ctx is not None and fit_ctx < 1:
        raise InvalidInput(f"--fit-ctx must be a positive number of tokens, got {fit_ctx}")
    wired = size_option("wired-limit", f"{wired_limit}MiB") if wired_limit is not None and wired_limit.isdigit() else None
    if wired_limit is not None and wired is None:
        raise InvalidInput(f"--wired-limit {wired_limit!r}: MiB as a whole number, as sysctl iogpu.wired_limit_mb takes it")
    margins = _margins(fit_target, len(gpus))
    in_use = size_option("memory-in-use", memory_in_use, allow_zero=True) if memory_in_use is not None else 0
    devices = [placement.placement_device(g, m, wired, in_use) for g, m in zip(gpus, margins, strict=True)]
    ram_bytes = (available_ram() if ram == "auto" else size_option("ram", ram)) if ram is not None else None
    if ram_bytes is None and any(d.unified for d in devices):
        ram_bytes = gpus[0].memory_bytes  # a Mac's RAM holds the host's share and the GPU's
    resident, resident_explain = residents(workload, seq, mmproj, draft, extra)
    request = placement.PlacementRequest(
        resident_bytes=resident, resident_explain=resident_explain, ctx_size=seq, fit_ctx=fit_ctx or placement.DEFAULT_FIT_CTX, n_gpu_layers=ngl, n_cpu_moe=n_cpu_moe,
        tensor_split=_split(tensor_split) if tensor_split is not None else None, ram_bytes=ram_bytes, mmap=not no_mmap, mtp=mtp,
    )  # fmt: skip
    if request.tensor_split is not None and len(request.tensor_split) != len(devices):
        raise InvalidInput(f"--tensor-split gives {len(request.tensor_split)} shares for {len(devices)} --gpu: give one per GPU")
    return devices, request, placement.plan(model, workload, fmt, devices, request)


def split_speed(
    model: ModelSpec, workload: Workload, fmt: WeightFormat, laid_out: placement.Placement,
    devices: list[placement.PlacementDevice], gpus: list[GpuSpec], bandwidth: str | None,
) -> placement.SplitDecode:  # fmt: skip
    """The decode speed of `laid_out` (kvcalc.placement.split_decode), the host's bandwidth from
    --ram-bandwidth (a Mac: its own memory's)."""
    from kvcalc.engines import profile

    if bandwidth is not None:
        ram = ram_bandwidth(bandwidth)
    elif devices[0].unified:
        ram = gpus[0].bandwidth_bytes_per_s
    elif laid_out.host.weights_bytes > laid_out.host.output_bytes and (
        laid_out.n_gpu_layers <= model.layers or laid_out.n_cpu_moe
    ):
        raise InvalidInput("the placement leaves weights on the CPU: give --ram-bandwidth (80GB/s, or ddr5-6000x2)")
    else:
        ram = 1  # nothing but the input table's rows is read on the host
    host = placement.HostSpeed(ram_bandwidth_bytes_per_s=ram)
    return placement.split_decode(model, workload, fmt, laid_out, devices, host, profile(workload.engine).decode_profile(gpus[0]))


def _replanner(
    model: ModelSpec, workload: Workload, fmt: WeightFormat, laid_out: placement.Placement,
    devices: list[placement.PlacementDevice], request: placement.PlacementRequest,
) -> tuple[int, Callable[[int], tuple[Workload, placement.Placement]]]:  # fmt: skip
    """The tokens each sequence keeps (--seq, else the plan's context) and the placement planned again at a batch
    B of them: -np B shares n_ctx = B * seq cells (as kvcalc.capacity counts llama.cpp's cache)."""
    per_sequence = request.ctx_size if request.ctx_size is not None else laid_out.ctx_size

    @functools.cache
    def replanned(batch: int) -> tuple[Workload, placement.Placement]:
        at_batch = workload.model_copy(update={"batch": batch, "seq": per_sequence})
        at_ctx = request.model_copy(update={"ctx_size": batch * per_sequence})
        return at_batch, placement.plan(model, at_batch, fmt, devices, at_ctx)

    return per_sequence, replanned


def split_memory_batch(
    model: ModelSpec, workload: Workload, fmt: WeightFormat, laid_out: placement.Placement,
    devices: list[placement.PlacementDevice], request: placement.PlacementRequest,
) -> int:  # fmt: skip
    """The largest batch of sequences of --seq tokens the placement holds (at most llama.cpp's LLAMA_MAX_SEQ):
    planned again at each batch B with n_ctx = B * seq, it fits and leaves no more weights on the CPU than the
    plan laid out (a replan that moves layers to the host is another, slower deployment, not this one)."""
    from kvcalc.engines.llamacpp import LLAMA_MAX_SEQ

    _, replanned = _replanner(model, workload, fmt, laid_out, devices, request)

    def holds(batch: int) -> bool:
        at = replanned(batch)[1]
        return at.fits and at.host.weights_bytes <= laid_out.host.weights_bytes

    return throughput.largest_meeting(holds, LLAMA_MAX_SEQ)


def split_throughput(
    economics: Economics, model: ModelSpec, workload: Workload, fmt: WeightFormat, laid_out: placement.Placement,
    devices: list[placement.PlacementDevice], request: placement.PlacementRequest, gpus: list[GpuSpec],
    bandwidth: str | None, memory_batch: int,
) -> throughput.ThroughputPlan:  # fmt: skip
    """--max-tpot-ms / --max-ttft-ms over llama.cpp's placement: the largest batch B up to `memory_batch`
    (split_memory_batch) whose placement, planned again at B, has a speed (split_speed) that meets the targets;
    the prefill is prefill_gpu's."""
    per_sequence, replanned = _replanner(model, workload, fmt, laid_out, devices, request)

    def seconds_per_token(batch: int) -> float:
        at_batch, plan_at = replanned(batch)
        cells = at_batch.model_copy(update={"seq": plan_at.ctx_size})  # split_decode reads the cache of all n_ctx cells
        return split_speed(model, cells, fmt, plan_at, devices, gpus, bandwidth).expected_seconds

    at_seq = workload.model_copy(update={"seq": per_sequence})
    prefill = prefill_gpu(model, at_seq, fmt, gpus)
    return economics.plan(model, at_seq, prefill, memory_batch, fmt, seconds_per_token=seconds_per_token)


def prefill_gpu(model: ModelSpec, workload: Workload, fmt: WeightFormat, gpus: list[GpuSpec]) -> GpuSpec:
    """The GPU whose prefill of the whole model is slowest among `gpus`: -sm layer runs the layers one device after
    another, so the split's prefill is no slower than it, whatever the --gpu order (an upper bound)."""
    return max(gpus, key=lambda g: throughput.first_token(model, workload, g, workload.seq, 1, fmt).seconds)


def residents(
    workload: Workload, seq: int | None, mmproj: str | None, draft: str | None, extra: list[str] | None
) -> tuple[int, list[str]]:
    """Bytes the first GPU holds beside the model's layers, with their --explain lines: a projector
    GGUF's tensors (--mmproj) and a draft model's weights and cache at the same context (--model-draft)."""
    from pathlib import Path

    from kvcalc import kvcache, weights
    from kvcalc.sources.gguf import read_header

    total, lines = 0, []
    if mmproj is not None:
        path = Path(mmproj)
        if not path.is_file():
            raise InvalidInput(f"--mmproj {mmproj}: no such file")
        projector = sum(t.bytes for t in read_header(path).tensors)
        total += projector
        lines.append(f"--mmproj {path.name}: {projector:,} B summed from its tensor infos, on the first GPU")
    if draft is not None:
        spec = presets.load_model(draft, extra)
        fmt = weights.weight_format(spec)
        draft_weights = weights.weight_bytes(weights.require_params(spec), fmt)
        context = seq or spec.max_positions or workload.seq
        cache = sum(kvcache.layer_cache_bytes(spec, workload.model_copy(update={"seq": context})))
        total += draft_weights + cache
        lines.append(
            f"--model-draft {spec.name}: weights {draft_weights:,} B + cache at n_ctx {context:,} {cache:,} B, on the first GPU"
        )
    return total, lines


def speeds(
    model: ModelSpec, workload: Workload, fmt: WeightFormat, laid_out: placement.Placement,
    devices: list[placement.PlacementDevice], request: placement.PlacementRequest, gpus: list[GpuSpec], bandwidth: str,
) -> list[placement.SpeedStep]:  # fmt: skip
    """Tokens/s at each -ngl or --n-cpu-moe step at the plan's context (kvcalc.placement.speed_steps)."""
    from kvcalc.engines import profile

    at_ctx = workload.model_copy(update={"seq": laid_out.ctx_size})
    request = request.model_copy(update={"ctx_size": laid_out.ctx_size})
    host = placement.HostSpeed(ram_bandwidth_bytes_per_s=ram_bandwidth(bandwidth))
    return placement.speed_steps(model, at_ctx, fmt, devices, request, host, profile(workload.engine).decode_profile(gpus[0]))


MEMINFO = "/proc/meminfo"


def available_ram() -> int:
    """--ram auto: this machine's MemAvailable (Linux /proc/meminfo, in kB, which are KiB)."""
    from pathlib import Path

    meminfo = MEMINFO

    try:
        text = Path(meminfo).read_text()
    except OSError:
        raise InvalidInput(
            f"--ram auto: cannot read this machine's available memory ({meminfo}); give --ram, e.g. 64GiB"
        ) from None
    found = re.search(r"^MemAvailable:\s+(\d+) kB$", text, re.MULTILINE)
    if found is None:
        raise InvalidInput(f"--ram auto: {meminfo} has no MemAvailable line; give --ram, e.g. 64GiB")
    return int(found.group(1)) * 1024
