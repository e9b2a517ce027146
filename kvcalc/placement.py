"""Where llama.cpp puts a model that does not fit its GPUs whole: layers across GPUs (`-ngl`, `-ts`),
routed experts in host RAM (`--n-cpu-moe`), a Mac's GPU working set; and how fast the split decodes.
Pure functions over integer bytes.

The steps follow llama.cpp's fit (`common/fit.cpp` `common_params_fit_impl`, ggml-org/llama.cpp
08033df0): (1) keep the user's settings when every device keeps its margin (`--fit-target`, 1024 MiB);
(2) only when `-c` is unset, interpolate the context between `--fit-ctx` and the trained one on the
summed memory, rounded down to 256 * streams; (3) fill layers back to front, the last device holding
the output layer, which is offloaded first; MoE: first with every routed expert on the CPU, then
bring experts back while every device still fits, then part of one more layer (its up, then gate,
experts). llama.cpp measures each candidate with a dry-run load; kvcalc computes the same three
figures per device (model, context, compute) from the weights per layer (kvcalc.weights.layer_weights), the cache per layer (kvcalc.kvcache.layer_cache_bytes) and
`compute_buffer_bytes`. Unlike llama.cpp it also checks host RAM. Not modelled: a dense model's partial
layer (LAYER_FRACTION_ATTN), fit.cpp's front-to-back move of MoE layers between GPUs, row split.
"""

from __future__ import annotations

from typing import Literal

from kvcalc.base import Frozen
from kvcalc.decode_profiles import DecodeProfile, format_class, stored_format_class, terms
from kvcalc.engines import profile as engine_profile
from kvcalc.engines.llamacpp import LLAMACPP_PAD, LLAMACPP_UBATCH
from kvcalc.errors import InvalidInput
from kvcalc.kvcache import layer_cache_bytes
from kvcalc.latency import expected_experts_touched
from kvcalc.spec import GpuSpec, ModelSpec, Workload
from kvcalc.units import GiB, MiB, format_bytes
from kvcalc.weights import LayerWeights, WeightFormat, layer_weights

FIT_SOURCE = "common/fit.cpp common_params_fit_impl, ggml-org/llama.cpp 08033df0"
DEFAULT_FIT_TARGET = 1024 * MiB  # --fit-target: MiB left free on every device (common/arg.cpp)
DEFAULT_FIT_CTX = 4096  # --fit-ctx: the smallest context fit reduces to
F32 = 4  # llama.cpp computes activations and logits in f32
EXPERT_PATTERN = r"ffn_(up|down|gate_up|gate)_(ch|)exps"  # the MoE tensors fit.cpp moves to the CPU
Partial = Literal["up", "gate"]  # fit.cpp's LAYER_FRACTION_UP / _GATE: attention + up (+ gate) on the GPU
PARTIAL_OVERRIDE = {"up": "ffn_(gate|gate_up|down).*", "gate": "ffn_down.*"}  # what each moves to the CPU (get_overflow_pattern)


class PlacementDevice(Frozen):
    """One GPU as the plan sees it: the bytes it offers (a Mac: its GPU working set), the margin to
    keep free, and its bandwidth for the speed of the split."""

    name: str
    free_bytes: int
    margin_bytes: int
    bandwidth_bytes_per_s: int
    backend: str = "cuda"
    unified: bool = False  # Apple silicon: the GPU's bytes come out of the same RAM as the host's


class PlacementRequest(Frozen):
    """What the user fixed (None: left to the plan), as llama-server spells it."""

    ctx_size: int | None = None  # -c; None: unset, the trained context, reducible down to fit_ctx
    fit_ctx: int = DEFAULT_FIT_CTX
    n_gpu_layers: int | None = None  # -ngl, counting the output layer
    n_cpu_moe: int | None = None  # --n-cpu-moe: the first N layers' routed experts stay on the CPU
    tensor_split: list[float] | None = None  # -ts: a share of the layers per device
    ram_bytes: int | None = None  # host memory free for the model (llama.cpp never checks it)
    ram_bandwidth_bytes_per_s: int | None = None
    mmap: bool = True  # --no-mmap: False
    resident_bytes: int = 0  # what else the first GPU holds: a projector (--mmproj), a draft model (--model-draft)
    resident_explain: list[str] = []


class DevicePlan(Frozen):
    """One GPU's share of the plan (llama.cpp's memory breakdown: model + context + compute)."""

    name: str
    first_layer: int  # the first layer it holds (the model's layer count = the output layer)
    layers: int  # layers it holds, counting the output layer
    weights_bytes: int
    kv_bytes: int
    compute_bytes: int
    resident_bytes: int  # a projector or draft model beside the layers (the first GPU)
    total_bytes: int
    free_bytes: int
    target_bytes: int  # free less the margin: what the plan may use
    fits: bool


class HostPlan(Frozen):
    """What stays in host memory: the input table, the layers and experts left on the CPU (mmap'd
    unless --no-mmap), their cache, the host compute and output buffers; checked against --ram."""

    weights_bytes: int
    kv_bytes: int
    compute_bytes: int
    output_bytes: int
    total_bytes: int
    ram_bytes: int | None
    mapped: bool
    fits: bool


class Placement(Frozen):
    """A llama.cpp placement: the flags, what each device and the host hold, and how it was decided."""

    n_gpu_layers: int
    n_cpu_moe: int
    partial_layer: Partial | None = None  # layer n_cpu_moe - 1 keeps its up (and gate) experts on the GPU
    tensor_split: list[int]  # layers per device
    ctx_size: int
    devices: list[DevicePlan]
    host: HostPlan
    overrides: list[str]  # -ot patterns
    command: str  # llama-server arguments that realise the plan
    fits: bool
    steps: list[str]  # what each step of the fit decided
    log_lines: list[str]  # what llama.cpp would print
    explain: list[str]


def working_set_bytes(ram_bytes: int, wired_limit_bytes: int | None = None) -> int:
    """The GPU working set Metal reports on a Mac (`recommendedMaxWorkingSetSize`): `iogpu.wired_limit_mb`
    when set, else two thirds of RAM up to 32 GiB and three quarters above, as llama.cpp logs show on
    macOS before 15 (shared/reference/llamacpp-placement.md; recent macOS gives 74-84%: set --wired-limit).

    >>> working_set_bytes(16 * GiB) // MiB, working_set_bytes(64 * GiB) // MiB, working_set_bytes(128 * GiB, 112 * GiB) // GiB
    (10922, 49152, 112)
    """
    if wired_limit_bytes is not None:
        return wired_limit_bytes
    return ram_bytes * 2 // 3 if ram_bytes <= 32 * GiB else ram_bytes * 3 // 4


def compute_buffer_bytes(model: ModelSpec, ctx: int, ubatch: int, flash_attn: bool, holds_output: bool) -> int:
    """One device's compute buffer: the largest set of f32 activations one ubatch keeps alive at once
    (ggml's graph allocator reuses memory between ops, so only the peak counts, and the layers run
    one after another). Candidates, each * 4 B * n_ubatch: the logits and the final hidden state
    (n_vocab + n_embd) on the device that computes the output; attention scores without flash
    attention (n_ctx * n_head, plus the layer input and output 2 * n_embd); the MLP's gate and up
    outputs beside the layer's input (2 * n_ff + n_embd; MoE: of the k active experts).

    >>> from kvcalc.spec import ModelSpec
    >>> m = ModelSpec(name="x", layers=32, heads=32, kv_heads=8, hidden=4096, intermediate=14336, vocab=128256)
    >>> compute_buffer_bytes(m, 8192, 512, True, True) / MiB, compute_buffer_bytes(m, 8192, 512, False, False) / MiB
    (258.5, 528.0)
    """
    hidden, vocab = model.hidden or 0, model.vocab or 0
    ffn = model.intermediate or 0
    if model.moe is not None:
        ffn = max(ffn, model.moe.experts_per_token * model.moe.expert_intermediate)
    candidates = [2 * ffn + hidden]
    if holds_output:
        candidates.append(vocab + hidden)
    if not flash_attn:
        candidates.append(ctx * model.heads + 2 * hidden)
    return F32 * ubatch * max(candidates)


class _Layout(Frozen):
    """The bytes a device or the host needs per unit of the plan: unit i < L is layer i, unit L the output layer."""

    weights: LayerWeights
    kv: list[int]
    ctx: int
    ubatch: int
    flash_attn: bool


def _layout(model: ModelSpec, workload: Workload, fmt: WeightFormat, ctx: int) -> _Layout:
    engine = workload.engine
    return _Layout(
        weights=layer_weights(model, fmt),
        kv=layer_cache_bytes(model, workload.model_copy(update={"seq": ctx})),
        ctx=ctx,
        ubatch=min(engine.ubatch or LLAMACPP_UBATCH, ctx),
        flash_attn=engine.flash_attn is not False,  # -fa auto turns it on where the backend supports it
    )


def _gpu_experts(model: ModelSpec, w: LayerWeights, unit: int, n_cpu_moe: int, partial: Partial | None) -> int:
    """Bytes of layer `unit`'s routed experts on its GPU: all of them past the first `n_cpu_moe`
    layers; of layer n_cpu_moe - 1, with a partial layer, its up matrices (and gate's), each a third
    of a gated MLP's experts (a half of a plain one's); none otherwise."""
    if unit >= n_cpu_moe:
        return w.experts[unit]
    if partial is None or unit != n_cpu_moe - 1:
        return 0
    matrices = 3 if model.mlp == "gated" else 2
    return w.experts[unit] * (1 if partial == "up" or matrices == 2 else 2) // matrices


def _unit_bytes(model: ModelSpec, layout: _Layout, unit: int, n_cpu_moe: int, partial: Partial | None) -> int:
    """Device bytes of unit `unit`: the layer's weights (of its experts those on the GPU) and its
    cache; the output layer's weights."""
    w = layout.weights
    if unit == len(w.layers):
        return w.output
    return w.layers[unit] + _gpu_experts(model, w, unit, n_cpu_moe, partial) + layout.kv[unit]


def _pack(
    model: ModelSpec,
    layout: _Layout,
    devices: list[PlacementDevice],
    n_cpu_moe: int,
    resident: int,
    partial: Partial | None = None,
) -> list[int]:
    """Layers per device, filled back to front (fit.cpp step 3): the last device takes the output
    layer and as many layers before it as stay within its target, then the device before it, and so
    on; what is left runs on the CPU."""
    units = model.layers + 1
    counts = [0] * len(devices)
    unit = units - 1
    for d in reversed(range(len(devices))):
        device = devices[d]
        used = compute_buffer_bytes(model, layout.ctx, layout.ubatch, layout.flash_attn, unit == units - 1)
        used += resident if d == 0 else 0
        target = device.free_bytes - device.margin_bytes
        while unit >= 0 and used + _unit_bytes(model, layout, unit, n_cpu_moe, partial) <= target:
            used += _unit_bytes(model, layout, unit, n_cpu_moe, partial)
            counts[d] += 1
            unit -= 1
    return counts


def _default_split(model: ModelSpec, devices: list[PlacementDevice], ngl: int, shares: list[float] | None) -> list[int]:
    """Layers per device for -ngl `ngl` and a split (default: each device's free memory), as
    llama_model::load_tensors assigns them: unit il goes to the first device whose cumulative share
    exceeds (il - i_gpu_start) / ngl (src/llama-model.cpp)."""
    weights = shares or [float(d.free_bytes) for d in devices]
    if len(weights) != len(devices) or any(w < 0 for w in weights) or not sum(weights):
        raise InvalidInput(
            f"--tensor-split gives {len(weights)} non-negative shares: give one per --gpu ({len(devices)}), not all 0"
        )
    total, cumulative, running = sum(weights), [], 0.0
    for w in weights:
        running += w / total
        cumulative.append(running)
    counts = [0] * len(devices)
    for i in range(ngl):
        counts[next((d for d, c in enumerate(cumulative) if i / ngl < c), len(devices) - 1)] += 1
    return counts


def _evaluate(
    model: ModelSpec, workload: Workload, layout: _Layout, devices: list[PlacementDevice], request: PlacementRequest,
    counts: list[int], n_cpu_moe: int, partial: Partial | None = None,
) -> tuple[list[DevicePlan], HostPlan]:  # fmt: skip
    """Each device's and the host's bytes for `counts` layers per device (the last units) and the
    first `n_cpu_moe` layers' experts on the CPU."""
    units = model.layers + 1
    ngl = sum(counts)
    start = units - ngl
    w = layout.weights
    plans, first = [], start
    for d, (device, count) in enumerate(zip(devices, counts, strict=True)):
        held = range(first, first + count)
        holds_output = units - 1 in held
        weights_ = sum(w.output if u == units - 1 else w.layers[u] + _gpu_experts(model, w, u, n_cpu_moe, partial) for u in held)
        kv = sum(layout.kv[u] for u in held if u < units - 1)
        compute = compute_buffer_bytes(model, layout.ctx, layout.ubatch, layout.flash_attn, holds_output) if count else 0
        resident = request.resident_bytes if d == 0 else 0
        total = weights_ + kv + compute + resident
        target = device.free_bytes - device.margin_bytes
        plans.append(
            DevicePlan(
                name=device.name, first_layer=first, layers=count, weights_bytes=weights_, kv_bytes=kv, compute_bytes=compute,
                resident_bytes=resident, total_bytes=total, free_bytes=device.free_bytes, target_bytes=target, fits=total <= target,
            )
        )  # fmt: skip
        first += count
    host_layers = range(start)
    on_host = [u for u in host_layers if u < units - 1]
    weights_host = w.embeddings + sum(w.layers[u] + w.experts[u] for u in on_host)
    weights_host += sum(w.experts[u] - _gpu_experts(model, w, u, n_cpu_moe, partial) for u in range(start, units - 1))
    weights_host += w.output if ngl == 0 else 0
    kv_host = sum(layout.kv[u] for u in on_host)
    busy = bool(on_host) or n_cpu_moe > start or not devices
    compute_host = (
        compute_buffer_bytes(model, layout.ctx, layout.ubatch, layout.flash_attn, ngl == 0)
        if busy
        else F32 * layout.ubatch * 3 * (model.hidden or 0)  # the input embeddings gathered on the host and copied over
    )
    output_host = F32 * (model.vocab or 0) * workload.batch  # logits of one token per sequence (llama_context output buffer)
    total_host = weights_host + kv_host + compute_host + output_host
    unified = sum(p.total_bytes for p, d in zip(plans, devices, strict=True) if d.unified)
    ram = request.ram_bytes
    host = HostPlan(
        weights_bytes=weights_host, kv_bytes=kv_host, compute_bytes=compute_host, output_bytes=output_host,
        total_bytes=total_host, ram_bytes=ram, mapped=request.mmap, fits=ram is None or total_host + unified <= ram,
    )  # fmt: skip
    return plans, host


def _interpolated_ctx(
    model: ModelSpec, workload: Workload, fmt: WeightFormat, devices: list[PlacementDevice], request: PlacementRequest,
    n_ctx_max: int, streams: int, steps: list[str],
) -> int:  # fmt: skip
    """fit.cpp step 2: n_ctx = n_min + (n_max - n_min) * (sum free - sum margin - used_min) /
    (used_max - used_min), rounded down to a multiple of 256 * streams and never below --fit-ctx *
    streams; on several devices the target first loses (n_devices + 1) * model_per_layer / (2
    dense | 6 MoE) for whole-layer rounding."""
    n_min = request.fit_ctx * streams
    if n_ctx_max <= n_min:
        steps.append(f"context {n_ctx_max:,}: the trained context is not above --fit-ctx {n_min:,}, kept")
        return n_ctx_max

    def used(ctx: int) -> tuple[int, int]:
        layout = _layout(model, workload, fmt, ctx)
        counts = _default_split(model, devices, model.layers + 1, request.tensor_split)
        plans, _ = _evaluate(model, workload, layout, devices, request, counts, 0)
        return sum(p.total_bytes for p in plans), sum(p.weights_bytes for p in plans)

    used_max, model_bytes = used(n_ctx_max)
    used_min, _ = used(n_min)
    target = sum(d.free_bytes - d.margin_bytes for d in devices)
    if len(devices) > 1:
        target -= (len(devices) + 1) * (model_bytes // (model.layers + 1)) // (6 if model.moe else 2)
    if target > used_min and used_max > used_min:
        ctx = n_min + (n_ctx_max - n_min) * (target - used_min) // (used_max - used_min)
        align = LLAMACPP_PAD * streams
        ctx = max(ctx - ctx % align, n_min)
    else:
        ctx = n_min
    steps.append(
        f"context reduced from {n_ctx_max:,} to {ctx:,}: {n_min:,} + ({n_ctx_max:,} - {n_min:,}) * (target {target:,} B"
        f" - used at min {used_min:,} B) / (used at max {used_max:,} B - {used_min:,} B), down to a multiple of"
        f" {LLAMACPP_PAD * streams} ({FIT_SOURCE} step 2)"
    )
    return min(ctx, n_ctx_max)


def plan(
    model: ModelSpec, workload: Workload, fmt: WeightFormat, devices: list[PlacementDevice], request: PlacementRequest
) -> Placement:
    """llama.cpp's placement of `model` on `devices` and the host (see the module's docstring)."""
    if not engine_profile(workload.engine).places_layers:
        raise InvalidInput("a placement across GPUs and host RAM follows llama.cpp: add --engine llamacpp")
    if workload.tp != 1 or workload.pp != 1:
        raise InvalidInput("llama.cpp splits layers (--tensor-split), not --tp/--pp: drop them")
    units = model.layers + 1
    for flag, value in (("--n-gpu-layers", request.n_gpu_layers), ("--n-cpu-moe", request.n_cpu_moe)):
        if value is not None and value < 0:
            raise InvalidInput(f"{flag} must be 0 or more, got {value}")
    if request.n_cpu_moe and model.moe is None:
        raise InvalidInput(f"--n-cpu-moe moves routed experts, and {model.name} has none")
    streams = 1 if workload.engine.kv_unified else workload.batch
    steps: list[str] = []
    user_fixed = request.n_gpu_layers is not None or request.n_cpu_moe is not None or request.tensor_split is not None
    if request.ctx_size is not None:
        ctx = request.ctx_size
    else:
        ctx = (model.max_positions or workload.seq) * streams
        steps.append(f"-c unset: the trained context {ctx:,} (n_ctx_train * {streams} streams)")
    ngl = min(request.n_gpu_layers if request.n_gpu_layers is not None else units, units)
    n_cpu_moe = min(request.n_cpu_moe or 0, model.layers)
    partial: Partial | None = None
    layout = _layout(model, workload, fmt, ctx)
    counts = _default_split(model, devices, ngl, request.tensor_split) if devices else []
    plans, host = _evaluate(model, workload, layout, devices, request, counts, n_cpu_moe)
    if user_fixed:
        steps.append(
            "placement flags given (-ngl, --n-cpu-moe or -ts): kept as given (llama.cpp's fit aborts then; kvcalc reports them)"
        )
    elif all(p.fits for p in plans):
        steps.append(f"every device keeps its margin with all {units} layers offloaded: no change ({FIT_SOURCE} step 1)")
    else:
        if request.ctx_size is None:
            ctx = _interpolated_ctx(model, workload, fmt, devices, request, ctx, streams, steps)
            layout = _layout(model, workload, fmt, ctx)
            counts = _default_split(model, devices, units, request.tensor_split)
            plans, host = _evaluate(model, workload, layout, devices, request, counts, 0)
        if not all(p.fits for p in plans):
            counts, n_cpu_moe, partial = _fill(model, layout, devices, request.resident_bytes, steps)
            plans, host = _evaluate(model, workload, layout, devices, request, counts, n_cpu_moe, partial)
    return _placement(model, workload, layout, devices, request, counts, n_cpu_moe, partial, plans, host, steps)


def _fill(
    model: ModelSpec, layout: _Layout, devices: list[PlacementDevice], resident: int, steps: list[str]
) -> tuple[list[int], int, Partial | None]:
    """fit.cpp steps 3-4: dense layers back to front; a MoE first with every routed expert on the
    CPU, then the fewest layers' experts left there (--n-cpu-moe) that still fit every device, then
    part of one more layer's experts: its up matrices, then its gate's too (LAYER_FRACTION_UP, _GATE)."""
    units = model.layers + 1
    if model.moe is None:
        counts = _pack(model, layout, devices, 0, resident)
        steps.append(
            f"layers filled back to front, the output layer first: {sum(counts)}/{units} offloaded ({FIT_SOURCE} step 3)"
        )
        return counts, 0, None
    counts = _pack(model, layout, devices, model.layers, resident)
    steps.append(
        f"every routed expert on the CPU, layers filled back to front: {sum(counts)}/{units} offloaded ({FIT_SOURCE} step 3)"
    )
    if sum(counts) < units:
        return counts, model.layers, None
    low, high = 0, model.layers  # high always fits: the fewest layers whose experts stay on the CPU
    while low < high:
        middle = (low + high) // 2
        if sum(_pack(model, layout, devices, middle, resident)) == units:
            high = middle
        else:
            low = middle + 1
    steps.append(
        f"experts brought back while every device fits: those of the first {high} layers stay on the CPU (--n-cpu-moe {high}; {FIT_SOURCE} step 4)"
    )
    partial: Partial | None = None
    for part in ("up", "gate") if high else ():
        if sum(_pack(model, layout, devices, high, resident, part)) < units:
            break
        partial = part
    if partial:
        steps.append(
            f"one more partial layer: layer {high - 1} keeps attention and its {'up' if partial == 'up' else 'up and gate'}"
            f" experts on the GPU ({FIT_SOURCE} step 4, LAYER_FRACTION_{partial.upper()})"
        )
    return _pack(model, layout, devices, high, resident, partial), high, partial


def _placement(
    model: ModelSpec, workload: Workload, layout: _Layout, devices: list[PlacementDevice], request: PlacementRequest,
    counts: list[int], n_cpu_moe: int, partial: Partial | None, plans: list[DevicePlan], host: HostPlan, steps: list[str],
) -> Placement:  # fmt: skip
    units = model.layers + 1
    ngl = sum(counts)
    start = units - ngl
    moe_on_host = max(0, min(n_cpu_moe, model.layers))
    whole = moe_on_host - (1 if partial else 0)  # layers whose experts all stay on the CPU
    overrides = [rf"blk\.({'|'.join(str(i) for i in range(start, whole))})\.{EXPERT_PATTERN}=CPU"] if whole > start else []
    if partial:
        overrides.append(rf"blk\.{moe_on_host - 1}\.{PARTIAL_OVERRIDE[partial]}=CPU")
    args = ["-c", str(layout.ctx), "-ngl", str(ngl)]
    if len(devices) > 1:
        args += ["-ts", ",".join(map(str, counts))]
    if whole > start:
        args += ["--n-cpu-moe", str(whole)]
    if partial:
        args += ["-ot", f'"{overrides[-1]}"']
    if workload.batch > 1:
        args += ["-np", str(workload.batch)]
    if not request.mmap:
        args.append("--no-mmap")
    names = [
        f"CUDA{i}" if d.backend == "cuda" else ("MTL0" if d.backend == "metal" else f"{d.backend.upper()}{i}")
        for i, d in enumerate(devices)
    ]
    logs = [f"load_tensors: offloaded {ngl}/{units} layers to GPU"]
    logs += [
        f"load_tensors: {n + ('_Mapped' if request.mmap and d.unified else ''):>10} model buffer size = {p.weights_bytes / MiB:10.2f} MiB"
        for n, p, d in zip(names, plans, devices, strict=True)
        if p.layers
    ]  # Metal maps the file's pages (MTL0_Mapped)
    host_name = "CPU_Mapped" if request.mmap else ("CUDA_Host" if devices and devices[0].backend == "cuda" else "CPU")
    logs.append(f"load_tensors: {host_name:>10} model buffer size = {host.weights_bytes / MiB:10.2f} MiB")
    logs += [
        f"llama_kv_cache: {n:>10} KV buffer size = {p.kv_bytes / MiB:10.2f} MiB"
        for n, p in zip(names, plans, strict=True)
        if p.kv_bytes
    ]
    if host.kv_bytes:
        logs.append(f"llama_kv_cache: {'CPU':>10} KV buffer size = {host.kv_bytes / MiB:10.2f} MiB")
    logs += [
        f"sched_reserve: {n:>10} compute buffer size = {p.compute_bytes / MiB:10.2f} MiB"
        for n, p in zip(names, plans, strict=True)
        if p.layers
    ]
    logs.append(
        f"sched_reserve: {'CUDA_Host' if devices and devices[0].backend == 'cuda' else 'CPU':>10} compute buffer size = {host.compute_bytes / MiB:10.2f} MiB"
    )
    w = layout.weights
    explain = [
        f"placement: llama.cpp's fit ({FIT_SOURCE}); units 0..{model.layers - 1} are the layers, unit {model.layers} the output layer",
        f"weights per layer {w.explain}; token_embd {w.embeddings:,} B stays in host memory; output layer {w.output:,} B",
        f"cache per layer at n_ctx {layout.ctx:,}: {layout.kv[0]:,} B (layer 0), {sum(layout.kv):,} B in all; it sits with its layer",
        f"compute buffer per device = 4 B * n_ubatch {layout.ubatch} * max(n_vocab + n_embd on the output's device,"
        f" 2 * n_ff + n_embd{'' if layout.flash_attn else ', n_ctx * n_head + 2 * n_embd (no flash attention)'})",
        f"host compute buffer: as a device's when layers or experts run on the CPU, else 4 B * n_ubatch * 3 * n_embd;"
        f" output buffer 4 B * n_vocab * {workload.batch} sequences",
        *request.resident_explain,
        *steps,
    ]
    for p in plans:
        explain.append(
            f"{p.name}: {p.layers} layers from {p.first_layer}: weights {p.weights_bytes:,} + KV {p.kv_bytes:,} + compute"
            f" {p.compute_bytes:,}{f' + residents {p.resident_bytes:,}' if p.resident_bytes else ''} = {p.total_bytes:,} B ({format_bytes(p.total_bytes)}) vs free {p.free_bytes:,} - margin"
            f" {p.free_bytes - p.target_bytes:,} = {p.target_bytes:,} B: {'fits' if p.fits else 'does NOT fit'}"
        )
    ram = (
        f" vs --ram {host.ram_bytes:,} B: {'fits' if host.fits else 'does NOT fit'}"
        if host.ram_bytes is not None
        else " (no --ram: not checked)"
    )
    explain.append(
        f"host: weights {host.weights_bytes:,} ({'mmap' if host.mapped else 'loaded, --no-mmap'}) + KV {host.kv_bytes:,} + compute"
        f" {host.compute_bytes:,} + output {host.output_bytes:,} = {host.total_bytes:,} B ({format_bytes(host.total_bytes)}){ram}"
    )
    return Placement(
        n_gpu_layers=ngl, n_cpu_moe=moe_on_host, partial_layer=partial, tensor_split=counts, ctx_size=layout.ctx, devices=plans, host=host,
        overrides=overrides, command="llama-server " + " ".join(args), fits=all(p.fits for p in plans) and host.fits,
        steps=steps, log_lines=logs, explain=explain,
    )  # fmt: skip


def placement_device(gpu: GpuSpec, margin_bytes: int, wired_limit_bytes: int | None = None) -> PlacementDevice:
    """A GPU preset as the plan sees it: a Mac offers its working set, not its whole RAM."""
    unified = gpu.backend == "metal"
    free = working_set_bytes(gpu.memory_bytes, wired_limit_bytes) if unified else gpu.memory_bytes
    return PlacementDevice(
        name=gpu.name, free_bytes=free, margin_bytes=margin_bytes, bandwidth_bytes_per_s=gpu.bandwidth_bytes_per_s,
        backend=gpu.backend, unified=unified,
    )  # fmt: skip


# Share of the host's measured memory bandwidth llama.cpp's CPU matmuls reach at decode: the median of
# what published partial-offload speeds imply (tests/fixtures/placement/speeds.yaml, 9 cases from 4
# sources, all one machine: an i9-10900X with 102 GB/s measured); scripts/placement_cases.py fits it
# and reports its leave-one-source-out error in docs/placement.md.
HOST_EFFICIENCY = 0.46
PCIE_BYTES_PER_S = 32 * 10**9  # PCIe 4.0 x16, one direction (PCI-SIG: 16 GT/s * 16 lanes, 128b/130b)


class SplitDecode(Frozen):
    """The decode speed of a placement: each device's bytes per token over its bandwidth, the host's
    over the RAM bandwidth (MoE: only the experts a step touches), plus the hops between them."""

    device_seconds: list[float]
    host_seconds: float
    hop_seconds: float
    overhead_seconds: float
    roofline_seconds: float
    expected_seconds: float
    tokens_per_s: float  # expected, all sequences
    roofline_tokens_per_s: float
    explain: list[str]


def split_decode(
    model: ModelSpec, workload: Workload, fmt: WeightFormat, placement: Placement, devices: list[PlacementDevice],
    ram_bandwidth_bytes_per_s: int, profile: DecodeProfile, host_efficiency: float = HOST_EFFICIENCY,
) -> SplitDecode:  # fmt: skip
    """t = sum over devices of bytes_d / (bandwidth_d * efficiency) + host bytes / (RAM bandwidth * host_efficiency) + hops *
    activation bytes / PCIe + fixed cost per layer (the engine's decode profile). A step reads each
    layer's weights once on the device that holds it: routed experts only in the share the batch
    touches, E * (1 - (1 - k/E)^B) / E (kvcalc.latency), and the cache at --seq."""
    layout = _layout(model, workload, fmt, workload.seq)
    w = layout.weights
    units = model.layers + 1
    start = units - placement.n_gpu_layers
    touched = 1.0
    if model.moe is not None:
        touched = expected_experts_touched(model.moe.experts, model.moe.experts_per_token, workload.batch) / model.moe.experts
    stored = fmt.stored
    fclass = stored_format_class(stored.bytes * 8 / stored.params) if stored else format_class(fmt.dtype)
    # each device streams at its fitted share of peak (kvcalc.decode_profiles), the fixed costs are the step's and the layers'
    fitted = [terms(profile, fclass, model.moe is not None, d.name, None) for d in devices]
    efficiencies = [t.weights_efficiency for t in fitted]
    fixed = fitted[0] if fitted else terms(profile, fclass, model.moe is not None, "", None)

    def on_gpu(u: int) -> int:
        return _gpu_experts(model, w, u, placement.n_cpu_moe, placement.partial_layer)

    def read(u: int, on_device: bool) -> int:
        if u == units - 1:
            return w.output
        experts = on_gpu(u) if on_device else w.experts[u]
        return w.layers[u] + round(experts * touched) + layout.kv[u]

    device_bytes, first = [], start
    for count in placement.tensor_split:
        device_bytes.append(sum(read(u, True) for u in range(first, first + count)))
        first += count
    host_bytes = sum(read(u, False) for u in range(start)) + sum(
        round((w.experts[u] - on_gpu(u)) * touched) for u in range(start, units - 1)
    )
    device_s = [b / (d.bandwidth_bytes_per_s * e) for b, d, e in zip(device_bytes, devices, efficiencies, strict=True)]
    roof_device = [b / d.bandwidth_bytes_per_s for b, d in zip(device_bytes, devices, strict=True)]
    host_roof = host_bytes / ram_bandwidth_bytes_per_s
    host_s = host_roof / host_efficiency
    # a hop where the token's activations change device: between devices, GPU <-> CPU at the first
    # GPU layer, and twice (there and back) per layer whose experts run on the CPU
    boundaries = sum(1 for c in placement.tensor_split if c) - 1 + (1 if start > 0 and placement.n_gpu_layers else 0)
    hops = max(boundaries, 0) + 2 * max(0, min(placement.n_cpu_moe, units - 1) - start)
    hop_s = hops * F32 * (model.hidden or 0) * workload.batch / PCIE_BYTES_PER_S
    overhead = fixed.step_seconds + fixed.layer_seconds * model.layers
    roofline_s = sum(roof_device) + host_roof + hop_s
    expected = max(roofline_s, sum(device_s) + host_s + hop_s + overhead)
    explain = [
        f"split decode: each device reads its layers' weights and cache once per token (routed experts at the {touched:.3f}"
        f" share {workload.batch} token(s) touch); format class {fclass} ({profile.name}: {profile.label})",
        *(
            f"{d.name}: {b:,} B / ({d.bandwidth_bytes_per_s:,} B/s * {e:.3g}) = {s * 1e3:.3f} ms"
            for d, b, s, e in zip(devices, device_bytes, device_s, efficiencies, strict=True)
        ),  # fmt: skip
        f"host: {host_bytes:,} B / (RAM {ram_bandwidth_bytes_per_s:,} B/s * {host_efficiency}) = {host_s * 1e3:.3f} ms"
        " (the share CPU matmuls reach, fitted on published partial-offload speeds: docs/placement.md)",
        f"hops: {hops} * {F32 * (model.hidden or 0) * workload.batch:,} B / PCIe {PCIE_BYTES_PER_S:,} B/s = {hop_s * 1e3:.4f} ms;"
        f" fixed cost {fixed.step_seconds * 1e3:.3f} ms per step + {fixed.layer_seconds * 1e3:.3f} ms * {model.layers} layers",
        f"expected {expected * 1e3:.3f} ms per token = {workload.batch / expected:.2f} tok/s (roofline {roofline_s * 1e3:.3f} ms)",
    ]
    return SplitDecode(
        device_seconds=device_s, host_seconds=host_s, hop_seconds=hop_s, overhead_seconds=overhead, roofline_seconds=roofline_s,
        expected_seconds=expected, tokens_per_s=workload.batch / expected, roofline_tokens_per_s=workload.batch / roofline_s,
        explain=explain,
    )  # fmt: skip


class SpeedStep(Frozen):
    """One step of the trade between what sits on the GPUs and speed: the flags, whether every device and
    the host fit, and the expected decode speed."""

    n_gpu_layers: int
    n_cpu_moe: int
    fits: bool
    tokens_per_s: float


def speed_steps(
    model: ModelSpec, workload: Workload, fmt: WeightFormat, devices: list[PlacementDevice], request: PlacementRequest,
    ram_bandwidth_bytes_per_s: int, profile: DecodeProfile, step: int = 4,
) -> list[SpeedStep]:  # fmt: skip
    """Tokens/s at each `step` of --n-cpu-moe (a MoE: all layers on the GPUs, the first N layers' experts
    on the CPU) or of -ngl (dense), at the request's context, so the cost of each layer left on the CPU shows."""
    units = model.layers + 1
    moe = model.moe is not None
    counts = sorted({*range(0, model.layers + 1, step), model.layers} if moe else {*range(units, -1, -step), 0})
    steps = []
    for n in counts:
        fixed = request.model_copy(update={"n_gpu_layers": units if moe else n, "n_cpu_moe": n if moe else None})
        laid_out = plan(model, workload, fmt, devices, fixed)
        speed = split_decode(model, workload, fmt, laid_out, devices, ram_bandwidth_bytes_per_s, profile)
        steps.append(
            SpeedStep(
                n_gpu_layers=laid_out.n_gpu_layers,
                n_cpu_moe=laid_out.n_cpu_moe,
                fits=laid_out.fits,
                tokens_per_s=speed.tokens_per_s,
            )
        )
    return steps
