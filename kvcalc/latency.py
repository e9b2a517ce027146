"""Decode and prefill rooflines, time = max(bytes / bandwidth, FLOPs / peak), and the expected decode
time engines reach (decode_profiles): the roofline's terms at calibrated shares of the peaks, plus
a fixed cost per layer. Pure functions."""

# no `from __future__ import annotations`: pydantic takes the fields' annotations as objects rather than
# compiling and evaluating each string (start-up, docs/benchmarks.md)

from collections import Counter
from typing import Literal

from kvcalc.base import Frozen
from kvcalc.decode_profiles import (
    ALL_REDUCES_PER_LAYER,
    COMPUTE_EFFICIENCY,
    LINK_BYTES_PER_S,
    MIN_BAND_CASES,
    Band,
    DecodeProfile,
    FormatClass,
    Mode,
    ProfileName,
    at_context,
    band,
    expert_mode,
    format_class,
    kv_repeats,
    mla_decode_kernel,
    stored_format_class,
    streamed_bandwidth,
    terms,
)
from kvcalc.engines import profile as engine_profile
from kvcalc.errors import InvalidInput
from kvcalc.kvcache import attention_layers, batch_bytes, exact_workload, layer_caches, state_layout, window_tokens
from kvcalc.spec import GpuSpec, Interconnect, ModelSpec, Workload
from kvcalc.units import PACKING, format_bytes, format_seconds
from kvcalc.weights import ParamCount, WeightFormat, per_gpu, require_params, weight_bytes, weight_format, weights_formula

Bound = Literal["memory", "compute"]
DecodeJudge = Literal["expected", "roofline"]  # which decode time compare shows and check judges
MIN_EFFICIENCY = 0.01  # below 1% of peak the roofline says nothing (and 1e-320 would make times infinite)
MAX_OVERHEAD_SECONDS_PER_LAYER = 1.0  # a second per layer per token is no engine's fixed cost: a typo
CALIBRATION = "fitted on published batch-1 decode measurements (docs/benchmarks.md, tests/fixtures/decode_calibration.json)"


class Roofline(Frozen):
    """One step's bytes and FLOPs on one GPU of the TP group, and the time each would take."""

    bytes_moved: int
    flops: int
    bandwidth_bytes_per_s: float
    peak_flops: float
    memory_seconds: float
    compute_seconds: float
    seconds: float
    bound: Bound
    arithmetic_intensity: float  # FLOPs per byte
    ridge_point: float  # the GPU's FLOPs per byte where the bound changes


def roofline(bytes_moved: int, flops: int, bandwidth: float, peak_flops: float) -> "Roofline":
    """The larger of the memory time and the compute time, and which it is."""
    memory_s, compute_s = bytes_moved / bandwidth, flops / peak_flops
    return Roofline(
        bytes_moved=bytes_moved,
        flops=flops,
        bandwidth_bytes_per_s=bandwidth,
        peak_flops=peak_flops,
        memory_seconds=memory_s,
        compute_seconds=compute_s,
        seconds=max(memory_s, compute_s),
        bound="memory" if memory_s >= compute_s else "compute",
        arithmetic_intensity=flops / bytes_moved,
        ridge_point=peak_flops / bandwidth,
    )


def attention_widths(model: ModelSpec, absorbed: bool) -> tuple[int, int]:
    """Widths of q.k and p.v per head: MLA decode attends in the latent space (absorbed, r + rope and
    r); MLA prefill runs decompressed (nope + rope and v_head_dim); others d_k and d_v."""
    if model.mla is None:
        return model.key_dim, model.value_dim
    mla = model.mla
    if absorbed:
        return mla.kv_lora_rank + mla.qk_rope_head_dim, mla.kv_lora_rank
    return mla.qk_nope_head_dim + mla.qk_rope_head_dim, mla.v_head_dim


def attention_flops(model: ModelSpec, workload: Workload, context: int) -> int:
    """FLOPs of one query token attending to `context` earlier tokens in every layer, for the batch:
    2 * B * H * (q.k width + p.v width) * tokens held per layer (= 4*B*s*H*d*L for plain MHA/GQA)."""
    qk, pv = attention_widths(model, absorbed=True)
    exact = exact_workload(workload)  # attention reads the tokens in context, not padding
    kinds = Counter((layer.window, layer.kind == "chunked") for layer in attention_layers(layer_caches(model)))
    held = sum(layers * window_tokens(exact, window, context, chunked=chunked) for (window, chunked), layers in kinds.items())
    return 2 * workload.batch * model.heads * (qk + pv) * held


def expected_experts_touched(experts: int, per_token: int, tokens: int) -> float:
    """Experts a batch of `tokens` touches in expectation with uniform routing: E * (1 - (1 - k/E)^B).

    >>> round(expected_experts_touched(8, 2, 1), 3), round(expected_experts_touched(8, 2, 64), 3)
    (2.0, 8.0)
    """
    return experts * (1 - (1 - per_token / experts) ** tokens)


class ExpectedStep(Frozen):
    """One decode step as engines reach it (kvcalc.decode_profiles): the weights and the KV streamed
    at the GPU's and the kernels' shares of peak bandwidth, a fixed cost per step and per layer, and
    the all-reduces of tensor parallelism; never below the roofline."""

    profile: ProfileName  # the engine's decode profile; `overridden` lists the terms replaced
    profile_label: str
    mode: Mode
    engine_key: str  # the engine and release whose own fixed cost per step is added
    source: str
    format_class: FormatClass
    efficiency: float  # share of peak bandwidth the weights stream at: gpu_efficiency * kernel_efficiency
    gpu_efficiency: float  # share of peak bandwidth this GPU streams at (the KV's share too)
    gpu_efficiency_source: str
    gpu_architecture: str  # the architecture family whose streaming rate a GPU with no case of its own takes
    kernel_efficiency: float  # share of the GPU's streaming rate the weights' kernels reach
    kernel_efficiency_source: str
    attention_efficiency: float  # share of the GPU's streaming rate the engine's attention reads the KV at
    attention_efficiency_source: str
    kv_repeats: float  # extra KV copies the engine's attention writes and reads per step (transformers' repeat_kv)
    kv_repeat_inverse: float  # inverse efficiency each copy adds to the attention's
    compute_efficiency: float  # share of peak FLOP/s
    step_seconds: float  # fixed cost per step (scheduling, sampling, Python): the mode's plus the engine's
    step_source: str
    overhead_seconds_per_layer: float
    python_dispatch_seconds_per_layer: float  # its share from Python dispatching each layer (vLLM, SGLang eager)
    rocm_moe_seconds_per_layer: float  # its share from an engine's MoE layers on ROCm (SGLang's FP8 MoE)
    recurrent_layers: int  # layers that keep a recurrent state (Gated DeltaNet, short conv, Mamba)
    recurrent_seconds_per_layer: float  # the extra cost of each, in llama.cpp's kernels (0: none)
    recurrent_seconds: float  # recurrent_layers * recurrent_seconds_per_layer
    recurrent_source: str
    mla_kernel: str | None  # the MLA decode kernel whose cost grows per layer and context token (Triton's), or None
    mla_seconds_per_layer_token: float  # its cost per MLA layer and context token
    mla_layers: int  # the layers that attend through MLA
    mla_context_seconds: float  # mla_layers * context * that cost: the step's share from the Triton MLA loop
    quant_floor_seconds_per_layer: float  # the least time a layer's quantized GEMMs take in fused kernels (0: none)
    quant_floor_seconds: float  # that floor * layers: the weights' time is at least this
    quant_floor_source: str
    prefill_compute_efficiency: float  # share of peak FLOP/s a prompt's prefill reaches under this release (end-to-end timings)
    prefill_source: str
    overridden: list[Literal["efficiency", "overhead"]]  # terms set by --efficiency / --overhead-ms
    layers: int
    weights_read_bytes: int  # per GPU per step: the untied input embedding table read one row per sequence
    bytes_moved: int
    interconnect: Interconnect | None  # the link the TP ranks all-reduce over (None at tp 1)
    all_reduce_latency_seconds: float  # one all-reduce's latency over the link
    all_reduce_bytes: int  # one all-reduce's bytes over each rank's link
    tp_comm_seconds: float  # 2 all-reduces per layer * layers * (latency + bytes / link bandwidth)
    memory_seconds: float  # weights / (bandwidth * efficiency) + KV / (bandwidth * gpu_efficiency * attention_efficiency)
    streamed_bandwidth_bytes_per_s: float  # the peak, or less where llama.cpp's kernels are capped per SM
    sm_bytes_per_clock: float  # the cap's bytes per SM (CU) per clock where it binds (0: none)
    compute_seconds: float  # FLOPs / (peak * compute_efficiency)
    overhead_seconds: float  # overhead per layer * layers
    expert_loop_seconds: float  # layers * routed experts * the mode's cost per expert (an eager MoE's loop)
    seconds: float  # max(roofline, max(memory, compute) + step + overhead + tp_comm)
    bound: Bound
    share_of_roofline: float  # roofline seconds / expected seconds: the expected speed as a share of the roofline's
    band: Band  # measured / expected tokens/s of published cases like this one, 10th to 90th percentile


def expected_seconds(
    weights_bytes: int, kv_bytes: int, flops: int, bandwidth: float, peak_flops: float, efficiency: float,
    kv_efficiency: float, compute_efficiency: float, fixed_seconds: float, weights_floor_seconds: float = 0.0,
) -> tuple[float, float, float]:  # fmt: skip
    """(memory, compute, total) seconds of a step: max(max(weights / (bandwidth * efficiency), the quantized
    GEMMs' floor) + KV / (bandwidth * kv_efficiency), FLOPs / (peak * compute_efficiency)) + the fixed costs.

    >>> expected_seconds(10**9, 0, 2 * 10**9, 1e12, 1e14, 0.5, 0.5, 0.5, 1e-3)
    (0.002, 4e-05, 0.003)
    >>> expected_seconds(10**9, 0, 0, 1e12, 1e14, 0.5, 0.5, 0.5, 0.0, weights_floor_seconds=0.005)[0]
    0.005
    """
    memory_s = max(weights_bytes / (bandwidth * efficiency), weights_floor_seconds) + kv_bytes / (bandwidth * kv_efficiency)
    compute_s = flops / (peak_flops * compute_efficiency)
    return memory_s, compute_s, max(memory_s, compute_s) + fixed_seconds


def all_reduce_bytes(hidden: int, batch: int, tp: int) -> int:
    """Bytes one rank sends in a ring all-reduce of the batch's 16-bit activations: 2 (n - 1) / n * B * hidden * 2.

    >>> all_reduce_bytes(8192, 1, 8)
    28672
    """
    return 2 * (tp - 1) * batch * hidden * 2 // tp if tp > 1 else 0


def tp_comm_seconds(layers: int, latency_seconds: float, reduce_bytes: int, link: Interconnect | None) -> float:
    """Time of a step's all-reduces: two per layer, each its latency plus its bytes over the link."""
    if link is None:
        return 0.0
    return ALL_REDUCES_PER_LAYER * layers * (latency_seconds + reduce_bytes / LINK_BYTES_PER_S[link])


def mla_layers(model: ModelSpec) -> int:
    """The layers of an MLA model that attend through its latent (every attention layer; 0 for another model)."""
    return sum(kind is not None for kind in model.attention_kinds()) if model.mla is not None else 0


def recurrent_layers(model: ModelSpec) -> int:
    """The layers of a model that keep a recurrent state (Gated DeltaNet, short conv, Mamba, lightning)."""
    return sum(kind is not None for kind in model.state_kinds())


def expected_read(model: ModelSpec, read: ParamCount, batch: int) -> ParamCount:
    """The parameters a step really reads: of an untied input embedding table only the `batch` rows
    it looks up (the LM head is read whole, and a tied table is the LM head). The calibration's
    weight bytes count them this way (docs/benchmarks.md); the roofline counts the table whole."""
    if model.tied_embeddings or not read.embeddings or model.vocab is None or model.hidden is None:
        return read
    unread = read.embeddings // 2 - min(batch, model.vocab) * model.hidden  # untied: embeddings = table + head
    return read.model_copy(
        update={"total": read.total - unread, "active": read.active - unread, "embeddings": read.embeddings - unread}
    )


BAND_ENGINES = {"hf": "transformers"}  # kvcalc's engine name -> the calibration's, where they differ


def _expected(
    model: ModelSpec, workload: Workload, gpu: GpuSpec, fmt: WeightFormat, read: ParamCount, kv_read: int, flops: int,
    line: Roofline, profile: DecodeProfile, efficiency: float | None, overhead: float | None, interconnect: Interconnect | None,
) -> tuple[ExpectedStep, list[str]]:  # fmt: skip
    stored = fmt.stored
    klass = format_class(fmt.dtype) if stored is None else stored_format_class(8 * stored.bytes / stored.params)
    link = (interconnect or gpu.interconnect or "pcie") if workload.tp > 1 else None
    repeats = kv_repeats(profile.engine_key, model.heads, model.kv_heads) if model.mla is None else 0.0
    # --attention-backend is vLLM's (spec.ENGINE_OPTIONS refuses it for another engine); SGLang's has no kvcalc option,
    # so an SGLang step runs its default backends
    engine = workload.engine
    mla_kernel = mla_decode_kernel(engine.name, gpu.name, engine.attention_backend, model.mla is not None, engine.vllm_version)
    fitted = terms(profile, klass, model.moe is not None, gpu.name, link, repeats, gpu.backend, mla_kernel)
    # --efficiency replaces both shares; a calibrated GPU file's measured streaming rate replaces the GPU's and the kernels'
    if efficiency is not None:
        gpu_eff, kernel_eff, attention_eff = efficiency, 1.0, 1.0
    elif gpu.decode_efficiency is not None:
        gpu_eff, kernel_eff, attention_eff = gpu.decode_efficiency, 1.0, 1.0
    else:
        gpu_eff, kernel_eff, attention_eff = fitted.gpu_efficiency, fitted.kernel_efficiency, fitted.attention_efficiency
    eff, kv_eff = min(1.0, gpu_eff * kernel_eff), min(1.0, gpu_eff * attention_eff)  # as Terms': no step streams above the peak
    # llama.cpp's kernels stream at most SMs * clock * the fitted bytes per SM per clock; a measured GPU file's rate stands
    measured = efficiency is not None or gpu.decode_efficiency is not None
    cap = 0.0 if measured else fitted.sm_bytes_per_clock
    streamed = streamed_bandwidth(
        gpu.bandwidth_bytes_per_s, gpu.streaming_multiprocessors, gpu.boost_clock_hz, profile.kernels, cap
    )
    compute_eff = COMPUTE_EFFICIENCY if efficiency is None else efficiency
    fitted_layers = overhead is None and gpu.decode_overhead_s_per_layer is None  # the cost per layer is the fit's
    if overhead is not None:
        per_layer = overhead
    elif gpu.decode_overhead_s_per_layer is not None:
        per_layer = gpu.decode_overhead_s_per_layer
    else:
        per_layer = fitted.layer_seconds
    weights = per_gpu(weight_bytes(expected_read(model, read, workload.batch), fmt), workload.tp)
    moved = weights + kv_read
    peak = peak_flops_for(gpu, fmt)
    reduce_bytes = all_reduce_bytes(model.hidden or 0, workload.batch, workload.tp)
    comm = tp_comm_seconds(model.layers, fitted.all_reduce_seconds, reduce_bytes, link)
    expert_loop = model.layers * model.moe.experts * fitted.expert_seconds if model.moe else 0.0
    stateful = recurrent_layers(model)
    recurrent = stateful * fitted.recurrent_layer_seconds if fitted_layers else 0.0
    # Triton's MLA decode walks each sequence's context on its own programs: one sequence's context, fitted at batch 1
    latent_layers = mla_layers(model)
    mla_context = latent_layers * workload.seq * fitted.mla_token_seconds if fitted_layers else 0.0
    fixed = fitted.step_seconds + per_layer * model.layers + recurrent + expert_loop + mla_context + comm
    floor = model.layers * fitted.quant_layer_floor_seconds if efficiency is None and gpu.decode_efficiency is None else 0.0
    memory_s, compute_s, total = expected_seconds(
        weights, kv_read, flops, streamed, peak, eff, kv_eff, compute_eff, fixed, weights_floor_seconds=floor
    )  # fmt: skip
    seconds = max(total, line.seconds)
    overridden: list[Literal["efficiency", "overhead"]] = [
        term for term, value in (("efficiency", efficiency), ("overhead", overhead)) if value is not None
    ]
    spread = band(BAND_ENGINES.get(workload.engine.name, workload.engine.name), klass)
    step = ExpectedStep(
        profile=profile.name,
        profile_label=profile.label,
        mode=profile.mode,
        engine_key=profile.engine_key,
        source=CALIBRATION,
        format_class=klass,
        efficiency=eff,
        gpu_efficiency=gpu_eff,
        gpu_efficiency_source=fitted.gpu_source,
        gpu_architecture=fitted.architecture,
        kernel_efficiency=kernel_eff,
        kernel_efficiency_source=fitted.kernel_source,
        attention_efficiency=attention_eff,
        attention_efficiency_source=fitted.attention_source,
        kv_repeats=fitted.kv_repeats,
        kv_repeat_inverse=fitted.kv_repeat_inverse,
        compute_efficiency=compute_eff,
        step_seconds=fitted.step_seconds,
        step_source=fitted.step_source,
        overhead_seconds_per_layer=per_layer,
        python_dispatch_seconds_per_layer=fitted.python_layer_seconds if fitted_layers else 0.0,
        rocm_moe_seconds_per_layer=fitted.rocm_moe_layer_seconds if fitted_layers else 0.0,
        recurrent_layers=stateful,
        recurrent_seconds_per_layer=fitted.recurrent_layer_seconds if recurrent else 0.0,
        recurrent_seconds=recurrent,
        recurrent_source=fitted.recurrent_layer_source if recurrent else "",
        mla_kernel=fitted.mla_kernel,
        mla_seconds_per_layer_token=fitted.mla_token_seconds if fitted_layers else 0.0,
        mla_layers=latent_layers,
        mla_context_seconds=mla_context,
        quant_floor_seconds_per_layer=fitted.quant_layer_floor_seconds if floor else 0.0,
        quant_floor_seconds=floor,
        quant_floor_source=fitted.quant_floor_source if floor else "",
        prefill_compute_efficiency=fitted.prefill_compute_efficiency,
        prefill_source=fitted.prefill_source,
        overridden=overridden,
        layers=model.layers,
        weights_read_bytes=weights,
        bytes_moved=moved,
        interconnect=link,
        all_reduce_latency_seconds=fitted.all_reduce_seconds if link else 0.0,
        all_reduce_bytes=reduce_bytes,
        tp_comm_seconds=comm,
        memory_seconds=memory_s,
        streamed_bandwidth_bytes_per_s=streamed,
        sm_bytes_per_clock=cap if streamed < gpu.bandwidth_bytes_per_s else 0.0,
        compute_seconds=compute_s,
        overhead_seconds=per_layer * model.layers,
        expert_loop_seconds=expert_loop,
        seconds=seconds,
        bound="memory" if memory_s >= compute_s else "compute",
        share_of_roofline=line.seconds / seconds,
        band=spread,
    )
    set_by = (
        f"--efficiency {eff:g}" if efficiency is not None
        else f"gpu {gpu.name}'s decode_efficiency" if gpu.decode_efficiency is not None
        else f"gpu {gpu_eff:.3g} ({fitted.gpu_source}) * kernels {kernel_eff:.3g} ({fitted.kernel_source})"
    )  # fmt: skip
    per_layer_by = (
        "--overhead-ms" if overhead is not None
        else f"gpu {gpu.name}'s decode_overhead_s_per_layer" if gpu.decode_overhead_s_per_layer is not None
        else f"mode {profile.mode}"
        + (
            f" + Python dispatch {fitted.python_layer_seconds * 1e3:.3g} ms ({profile.engine_key} eager: {fitted.python_layer_source})"
            if fitted.python_layer_seconds
            else ""
        )
        + (
            f" + MoE layer on ROCm {fitted.rocm_moe_layer_seconds * 1e3:.3g} ms ({profile.engine} {klass} MoE runs Triton/aiter"
            f" kernels, not sgl-kernel's CUDA ones: {fitted.rocm_moe_layer_source})"
            if fitted.rocm_moe_layer_seconds
            else ""
        )
    )  # fmt: skip
    weights_term, weights_value = f"weights / (bandwidth * {eff:.3g})", f"{weights:,} / {streamed * eff:.4g}"
    if floor:  # the weights' time is the larger of their bytes' and the quantized GEMMs' floor
        weights_term, weights_value = f"max({weights_term}, floor)", f"max({weights_value}, {format_seconds(floor)})"
    how = "the roofline's" if weights == line.bytes_moved - kv_read else (
        "the roofline's with the untied input embedding table read one row per sequence, not whole"
    )  # fmt: skip
    explain = [
        f"expected: profile {profile.name}, {profile.label}"
        + (f"; {', '.join(overridden)} set on the command line" if overridden else "")
        + f"; {CALIBRATION}",
        f"expected weights read = {how} = {weights:,} B; KV (and state) {kv_read:,} B",
        f"efficiency = {eff:.3g} = {set_by}"
        + (" (capped at 1: no step streams above the peak)" if eff == 1.0 and efficiency is None else ""),
        f"KV efficiency = {kv_eff:.3g} = gpu {gpu_eff:.3g} * attention {attention_eff:.3g} ({fitted.attention_source})"
        + (
            f"; attention = 1 / (attention's inverse + {fitted.kv_repeat_inverse:.3g} * {fitted.kv_repeats:g} KV copies:"
            f" repeat_kv for {model.heads} query heads over {model.kv_heads} KV heads)"
            if fitted.kv_repeats and fitted.kv_repeat_inverse and efficiency is None and gpu.decode_efficiency is None
            else ""
        ),
        *(
            [
                f"streamed bandwidth = min(peak, SMs * clock * {cap:g} B) = min({gpu.bandwidth_bytes_per_s:.4g},"
                f" {gpu.streaming_multiprocessors} * {gpu.boost_clock_hz:.4g} * {cap:g}) = {streamed:.4g} B/s"
                f" ({profile.kernels}'s mat-vec kernels hold only so many bytes in flight per SM: {fitted.sm_cap_source})"
            ]
            if streamed < gpu.bandwidth_bytes_per_s
            else []
        ),
        *(
            [
                f"quantized GEMM floor = layers * {format_seconds(fitted.quant_layer_floor_seconds)} = {format_seconds(floor)}"
                f" ({klass} GEMMs in fused kernels take at least this per layer whatever their bytes: {fitted.quant_floor_source})"
            ]
            if floor
            else []
        ),
        f"expected t_memory = {weights_term} + KV / (bandwidth * {kv_eff:.3g})"
        f" = {weights_value} + {kv_read:,} / {streamed * kv_eff:.4g} = {format_seconds(memory_s)}",
        f"expected t_compute = FLOPs / (peak * {compute_eff:g}) = {flops:,} / {peak * compute_eff:.4g} = {format_seconds(compute_s)}",
        f"fixed cost per step = {format_seconds(fitted.step_seconds)} ({fitted.step_source})",
        f"cost per layer = {per_layer * 1e3:.3g} ms * {model.layers} = {format_seconds(per_layer * model.layers)} ({per_layer_by})",
    ]
    if recurrent:
        explain.append(
            f"recurrent layers = {stateful} * {format_seconds(fitted.recurrent_layer_seconds)} = {format_seconds(recurrent)}"
            f" ({profile.kernels} runs a recurrent-state layer as more small ops than an attention layer:"
            f" {fitted.recurrent_layer_source})"
        )
    if expert_loop:
        explain.append(
            f"expert loop = layers * experts * {format_seconds(fitted.expert_seconds)} = {model.layers} * {model.moe.experts}"  # type: ignore[union-attr]
            f" * ... = {format_seconds(expert_loop)} (a cost per routed expert and MoE layer fitted for mode"
            f" {expert_mode(profile.engine_key, profile.mode)}: a loop over every expert where the engine runs one, a"
            " per-expert share of the fused MoE kernel's setup where it does not)"
        )
    if mla_context:
        explain.append(
            f"MLA context loop = MLA layers * context * {fitted.mla_token_seconds * 1e9:.3g} ns = {latent_layers} *"
            f" {workload.seq:,} * ... = {format_seconds(mla_context)} ({fitted.mla_kernel}: Triton's MLA decode walks the"
            f" context a block at a time on a few SMs, vllm/attention/ops/triton_decode_attention.py; vLLM runs it where"
            f" no FlashMLA/FlashInfer/CUTLASS MLA does, vllm/platforms/cuda.py: {fitted.mla_source})"
        )
    if link is not None:
        explain.append(
            f"tp all-reduces = {ALL_REDUCES_PER_LAYER} per layer * {model.layers} * (latency {format_seconds(fitted.all_reduce_seconds)}"
            f" + {reduce_bytes:,} B / {LINK_BYTES_PER_S[link] / 1e9:g} GB/s over {link}) = {format_seconds(comm)}"
            f" ({fitted.all_reduce_source})"
        )
    explain += [
        f"expected time per token = max(t_memory, t_compute) + fixed + layers{' + recurrent layers' if recurrent else ''}"
        f"{' + MLA context' if mla_context else ''}"
        f"{' + all-reduces' if link else ''}"
        f" = {format_seconds(total)}"
        + (f"; below the roofline, so the roofline's {format_seconds(line.seconds)}" if total < line.seconds else "")
        + f" ({step.share_of_roofline:.0%} of the roofline's speed)",
        f"prefill in end-to-end timings: {step.prefill_compute_efficiency:.3g} of peak FLOP/s ({fitted.prefill_source});"
        " decode's prefill (TTFT) figure is the roofline's",
        f"band: measured / expected tokens/s of published {spread.group} cases, 10th-90th percentile, predicted without"
        f" their own source: {spread.low:.2f}-{spread.high:.2f} ({spread.cases} cases"
        + (f"; fewer than {MIN_BAND_CASES}, so widened to all cases' band" if spread.widened else "")
        + ")",
    ]
    return step, explain


class DecodeEstimate(Frozen):
    """Time per output token for a batch at a context: the roofline and the expected time."""

    model: str
    gpu: str
    batch: int
    seq: int
    tp: int
    efficiency: float
    weights_read_bytes: int  # per GPU per step
    kv_read_bytes: int  # per GPU per step
    state_read_bytes: int = 0  # per GPU per step: hybrid models read every sequence's recurrent state...
    state_written_bytes: int = 0  # ...and write it back updated
    roofline: Roofline
    seconds_per_token: float  # the roofline's
    tokens_per_s_per_sequence: float
    tokens_per_s: float
    expected: ExpectedStep
    expected_seconds_per_token: float
    expected_tokens_per_s_per_sequence: float
    expected_tokens_per_s: float  # all sequences of the batch
    expected_tokens_per_s_low: float  # the band: the 10th percentile of published cases like this one
    expected_tokens_per_s_high: float  # ... and the 90th
    explain: list[str]

    def seconds_by(self, judge: DecodeJudge) -> float:
        """The time per token `judge` names: the expected one or the roofline's."""
        return self.expected_seconds_per_token if judge == "expected" else self.seconds_per_token


def peak_flops_for(gpu: GpuSpec, weights: WeightFormat) -> int:
    """The GPU's dense peak for the weights' dtype: FP8 tensor cores for 8-bit weights when it has them."""
    if PACKING[weights.dtype].block_bytes == 1 and gpu.fp8_flops:
        return gpu.fp8_flops
    return gpu.bf16_flops


def read_per_step(model: ModelSpec, params: ParamCount, batch: int) -> ParamCount:
    """The parameters one decode step of `batch` tokens reads: all of them but the routed experts,
    and of those the expected number the tokens touch. The embedding table counts whole, as the
    golden decode figure requires (tests/test_golden.py); a step really reads the LM head and only
    `batch` rows of an untied input table, 6.5% fewer weight bytes for llama3-8b."""
    if model.moe is None or not params.routed_experts:
        return params
    moe = model.moe
    touched = round(params.routed_experts * expected_experts_touched(moe.experts, moe.experts_per_token, batch) / moe.experts)
    return params.model_copy(update={"total": params.total - params.routed_experts + touched, "routed_experts": touched})


def decode(
    model: ModelSpec,
    workload: Workload,
    gpu: GpuSpec,
    weights: WeightFormat | None = None,
    efficiency: float | None = None,
    overhead_seconds_per_layer: float | None = None,
    *,
    interconnect: Interconnect | None = None,
) -> "DecodeEstimate":
    """One decode step of `batch` sequences at context `seq`: every GPU of the TP group reads its
    share of the weights (MoE: only the experts the batch touches) and of the KV cache. The
    weights are in the checkpoint's format unless `weights` says otherwise. `efficiency` derates
    the roofline and replaces the engine profile's efficiencies; `overhead_seconds_per_layer`
    replaces its cost per layer; `interconnect` the GPU preset's link for the TP all-reduces."""
    if efficiency is not None and not MIN_EFFICIENCY <= efficiency <= 1:
        raise InvalidInput(f"--efficiency {efficiency} must be in [{MIN_EFFICIENCY}, 1]: a share of the peak")
    if overhead_seconds_per_layer is not None and not 0 <= overhead_seconds_per_layer <= MAX_OVERHEAD_SECONDS_PER_LAYER:
        raise InvalidInput(
            f"--overhead-ms {overhead_seconds_per_layer * 1e3:g} must be in [0, {MAX_OVERHEAD_SECONDS_PER_LAYER * 1e3:g}]:"
            " milliseconds per layer per step"
        )
    derate = 1.0 if efficiency is None else efficiency
    params = require_params(model)
    fmt = weights or weight_format(model)
    read = read_per_step(model, params, workload.batch)
    # each step walks every pipeline stage in turn: one rank of the TP group reads its share of all of them
    weights_read = per_gpu(weight_bytes(read, fmt), workload.tp)
    # the tokens in context, not padding; a shared prefix is read by every sequence's attention (paged
    # attention; cascade attention, which reads it once, is not modelled)
    exact = exact_workload(workload).model_copy(update={"shared_prefix": 0})
    kv_read = per_gpu(batch_bytes(model, exact, with_state=False).total, workload.tp)
    # a step reads each sequence's recurrent state and writes it back: one rank's share of every layer's,
    # in the engine's dtypes, without page padding
    state = workload.batch * sum(state_layout(model, workload).exact_bytes)
    flops = (2 * params.active * workload.batch + attention_flops(model, workload, workload.seq)) // workload.tp
    cache_moved = kv_read + 2 * state  # the KV read, and the state read and written back
    line = roofline(weights_read + cache_moved, flops, gpu.bandwidth_bytes_per_s * derate, peak_flops_for(gpu, fmt) * derate)
    state_terms = f" + state read {state:,} + state written {state:,}" if state else ""
    profile = at_context(engine_profile(workload.engine).decode_profile(gpu, workload.engine), workload.seq)
    expected, expected_explain = _expected(
        model, workload, gpu, fmt, read, cache_moved, flops, line, profile, efficiency, overhead_seconds_per_layer,
        interconnect,
    )  # fmt: skip
    explain = [
        *model.origin(),
        *gpu.origin(),
        f"weights read = {weights_formula(read, fmt)}"
        + (f" / tp {workload.tp}" if workload.tp > 1 else "")
        + f" = {weights_read:,} B",
        f"bytes {'moved' if state else 'read'} per step = weights {weights_read:,} + KV {kv_read:,}{state_terms}"
        f" = {line.bytes_moved:,} B ({format_bytes(line.bytes_moved)})"
        + (f", per rank of tp {workload.tp}" if workload.tp > 1 else "")
        + (f", over all {workload.pp} pipeline stages" if workload.pp > 1 else ""),
        f"t_memory = bytes / (bandwidth * efficiency) = {line.bytes_moved:,} / {line.bandwidth_bytes_per_s:.4g} = {format_seconds(line.memory_seconds)}",
        f"FLOPs = (2 * active params * B + attention){' / tp' if workload.tp > 1 else ''}"
        f" = (2 * {params.active:,} * {workload.batch} + {attention_flops(model, workload, workload.seq):,})"
        + (f" / {workload.tp}" if workload.tp > 1 else "")
        + f" = {flops:,}"
        + (" per rank" if workload.tp > 1 else ""),
        f"t_compute = FLOPs / (peak * efficiency) = {flops:,} / {line.peak_flops:.4g} = {format_seconds(line.compute_seconds)}",
        f"time per token = max(t_memory, t_compute) = {format_seconds(line.seconds)} ({line.bound}-bound;"
        f" intensity {line.arithmetic_intensity:.1f} FLOP/B vs ridge {line.ridge_point:.0f})",
        *expected_explain,
    ]
    return DecodeEstimate(
        model=model.name,
        gpu=gpu.name,
        batch=workload.batch,
        seq=workload.seq,
        tp=workload.tp,
        efficiency=derate,
        weights_read_bytes=weights_read,
        kv_read_bytes=kv_read,
        state_read_bytes=state,
        state_written_bytes=state,
        roofline=line,
        seconds_per_token=line.seconds,
        tokens_per_s_per_sequence=1 / line.seconds,
        tokens_per_s=workload.batch / line.seconds,
        expected=expected,
        expected_seconds_per_token=expected.seconds,
        expected_tokens_per_s_per_sequence=1 / expected.seconds,
        expected_tokens_per_s=workload.batch / expected.seconds,
        expected_tokens_per_s_low=workload.batch / expected.seconds * expected.band.low,
        expected_tokens_per_s_high=workload.batch / expected.seconds * expected.band.high,
        explain=explain,
    )


def causal_tokens_attended(seq: int, window: int | None) -> int:
    """Sum over positions i = 1..s of the tokens position i attends to: min(i, W).

    >>> causal_tokens_attended(4, None), causal_tokens_attended(4, 2)
    (10, 7)
    """
    if window is None or seq <= window:
        return seq * (seq + 1) // 2
    return window * (window + 1) // 2 + (seq - window) * window


class PrefillEstimate(Frozen):
    """Time to first token for a prompt of `seq` tokens, and the attention scores' memory."""

    seq: int
    batch: int
    roofline: Roofline
    seconds: float
    naive_scores_bytes_per_layer: int  # B * (H / tp) * s^2 scores one rank materialises with non-Flash attention
    flash_stats_bytes_per_layer: int  # B * H * s * (max + sum in fp32): FlashAttention's O(s)


def prefill(
    model: ModelSpec, workload: Workload, gpu: GpuSpec, weights: WeightFormat | None = None, efficiency: float = 1.0
) -> "PrefillEstimate":
    """Compute-bound prefill: 2 * active params * B * s + causal attention FLOPs."""
    params = require_params(model)
    fmt = weights or weight_format(model)
    qk, pv = attention_widths(model, absorbed=False)
    attended = sum(causal_tokens_attended(workload.seq, layer.window) for layer in attention_layers(layer_caches(model)))
    flops = (
        2 * params.active * workload.batch * workload.seq + 2 * workload.batch * model.heads * (qk + pv) * attended
    ) // workload.tp
    bytes_moved = per_gpu(weight_bytes(params, fmt), workload.tp) + per_gpu(
        batch_bytes(model, exact_workload(workload)).total, workload.tp
    )  # KV written once, state written once at the end
    line = roofline(bytes_moved, flops, gpu.bandwidth_bytes_per_s * efficiency, peak_flops_for(gpu, fmt) * efficiency)
    score_bytes = PACKING[model.dtype].block_bytes  # scores live in the compute dtype, not the cache's
    rows = workload.batch * -(-model.heads // workload.tp) * workload.seq  # one rank's query heads (the table is per rank)
    return PrefillEstimate(
        seq=workload.seq,
        batch=workload.batch,
        roofline=line,
        seconds=line.seconds,
        naive_scores_bytes_per_layer=rows * workload.seq * score_bytes,
        flash_stats_bytes_per_layer=rows * 2 * 4,
    )
