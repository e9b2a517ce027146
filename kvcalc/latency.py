"""Decode and prefill rooflines, time = max(bytes / bandwidth, FLOPs / peak), and the expected decode
time engines reach (decode_profiles): the roofline's terms at calibrated shares of the peaks, plus
a fixed cost per layer. Pure functions."""

from __future__ import annotations

from collections import Counter
from typing import Literal

from kvcalc.base import Frozen
from kvcalc.decode_profiles import DecodeProfile, FormatClass, ProfileName, format_class, stored_format_class
from kvcalc.engines import profile as engine_profile
from kvcalc.errors import InvalidInput
from kvcalc.kvcache import attention_layers, batch_bytes, exact_workload, layer_caches, state_layout, window_tokens
from kvcalc.spec import GpuSpec, ModelSpec, Workload
from kvcalc.units import PACKING, format_bytes, format_seconds
from kvcalc.weights import ParamCount, WeightFormat, per_gpu, require_params, weight_bytes, weight_format, weights_formula

Bound = Literal["memory", "compute"]
DecodeJudge = Literal["expected", "roofline"]  # which decode time compare shows and check judges
MIN_EFFICIENCY = 0.01  # below 1% of peak the roofline says nothing (and 1e-320 would make times infinite)
MAX_OVERHEAD_SECONDS_PER_LAYER = 1.0  # a second per layer per token is no engine's fixed cost: a typo


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


def roofline(bytes_moved: int, flops: int, bandwidth: float, peak_flops: float) -> Roofline:
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
    """One decode step as engines reach it: the roofline's bytes and FLOPs at the profile's shares of
    the peaks, plus the profile's fixed cost per layer; never below the roofline."""

    profile: ProfileName  # the engine's decode profile (decode_profiles); `overridden` lists the terms replaced
    profile_label: str
    source: str
    format_class: FormatClass
    efficiency: float  # share of peak bandwidth
    compute_efficiency: float  # share of peak FLOP/s
    overhead_seconds_per_layer: float
    overridden: list[Literal["efficiency", "overhead"]]  # terms set by --efficiency / --overhead-ms
    layers: int
    weights_read_bytes: int  # per GPU per step: the untied input embedding table read one row per sequence
    bytes_moved: int
    memory_seconds: float  # bytes / (bandwidth * efficiency)
    compute_seconds: float  # FLOPs / (peak * compute_efficiency)
    overhead_seconds: float  # overhead per layer * layers
    seconds: float  # max(roofline, max(memory, compute) + overhead)
    bound: Bound
    share_of_roofline: float  # roofline seconds / expected seconds: the expected speed as a share of the roofline's


def expected_seconds(
    bytes_moved: int, flops: int, bandwidth: float, peak_flops: float, efficiency: float, compute_efficiency: float,
    overhead_seconds: float,
) -> tuple[float, float, float]:  # fmt: skip
    """(memory, compute, total) seconds of a step: max(bytes / (bandwidth * efficiency), FLOPs /
    (peak * compute_efficiency)) + the fixed cost.

    >>> expected_seconds(10**9, 2 * 10**9, 1e12, 1e14, 0.5, 0.5, 1e-3)
    (0.002, 4e-05, 0.003)
    """
    memory_s, compute_s = bytes_moved / (bandwidth * efficiency), flops / (peak_flops * compute_efficiency)
    return memory_s, compute_s, max(memory_s, compute_s) + overhead_seconds


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


def _expected(
    model: ModelSpec, workload: Workload, gpu: GpuSpec, fmt: WeightFormat, read: ParamCount, kv_read: int, flops: int,
    line: Roofline, profile: DecodeProfile, efficiency: float | None, overhead: float | None,
) -> tuple[ExpectedStep, list[str]]:  # fmt: skip
    stored = fmt.stored
    klass = format_class(fmt.dtype) if stored is None else stored_format_class(8 * stored.bytes / stored.params)
    # a calibrated GPU file's measured terms replace the profile's; the command line's replace both
    eff = efficiency if efficiency is not None else gpu.decode_efficiency or profile.efficiency[klass]
    compute_eff = profile.compute_efficiency if efficiency is None else efficiency
    if overhead is not None:
        per_layer = overhead
    elif gpu.decode_overhead_s_per_layer is not None:
        per_layer = gpu.decode_overhead_s_per_layer
    else:
        per_layer = profile.overhead_seconds_per_layer
    weights = per_gpu(weight_bytes(expected_read(model, read, workload.batch), fmt), workload.tp)
    moved = weights + kv_read
    peak = peak_flops_for(gpu, fmt)
    memory_s, compute_s, total = expected_seconds(
        moved, flops, gpu.bandwidth_bytes_per_s, peak, eff, compute_eff, per_layer * model.layers
    )
    seconds = max(total, line.seconds)
    overridden: list[Literal["efficiency", "overhead"]] = [
        term for term, value in (("efficiency", efficiency), ("overhead", overhead)) if value is not None
    ]
    step = ExpectedStep(
        profile=profile.name,
        profile_label=profile.label,
        source=profile.source,
        format_class=klass,
        efficiency=eff,
        compute_efficiency=compute_eff,
        overhead_seconds_per_layer=per_layer,
        overridden=overridden,
        layers=model.layers,
        weights_read_bytes=weights,
        bytes_moved=moved,
        memory_seconds=memory_s,
        compute_seconds=compute_s,
        overhead_seconds=per_layer * model.layers,
        seconds=seconds,
        bound="memory" if memory_s >= compute_s else "compute",
        share_of_roofline=line.seconds / seconds,
    )
    set_by = (
        f" (--efficiency {eff:g})" if efficiency is not None
        else f" (gpu {gpu.name}'s decode_efficiency)" if gpu.decode_efficiency is not None
        else f" (efficiency[{klass}])"
    )  # fmt: skip
    per_layer_by = (
        "--overhead-ms" if overhead is not None
        else f"gpu {gpu.name}'s decode_overhead_s_per_layer" if gpu.decode_overhead_s_per_layer is not None
        else f"profile {profile.name}"
    )  # fmt: skip
    how = "the roofline's" if weights == line.bytes_moved - kv_read else (
        "the roofline's with the untied input embedding table read one row per sequence, not whole"
    )  # fmt: skip
    explain = [
        f"expected: profile {profile.name}, {profile.label}"
        + (f"; {', '.join(overridden)} set on the command line" if overridden else "")
        + f"; {profile.source}",
        f"expected weights read = {how} = {weights:,} B; + KV {kv_read:,} = {moved:,} B",
        f"expected t_memory = bytes / (bandwidth * {eff:g}{set_by}) = {moved:,} / {gpu.bandwidth_bytes_per_s * eff:.4g}"
        f" = {format_seconds(memory_s)}",
        f"expected t_compute = FLOPs / (peak * {compute_eff:g}) = {flops:,} / {peak * compute_eff:.4g} = {format_seconds(compute_s)}",
        f"fixed cost = overhead per layer * layers = {per_layer * 1e3:.3g} ms * {model.layers} = {format_seconds(per_layer * model.layers)}"
        f" ({per_layer_by})",
        f"expected time per token = max(t_memory, t_compute) + fixed cost = {format_seconds(total)}"
        + (f"; below the roofline, so the roofline's {format_seconds(line.seconds)}" if total < line.seconds else "")
        + f" ({step.share_of_roofline:.0%} of the roofline's speed)",
    ]
    if workload.tp > 1:
        explain.append("tp: the all-reduces between ranks are not in the expected time (no calibration case has tp > 1)")
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
) -> DecodeEstimate:
    """One decode step of `batch` sequences at context `seq`: every GPU of the TP group reads its
    share of the weights (MoE: only the experts the batch touches) and of the KV cache. The
    weights are in the checkpoint's format unless `weights` says otherwise. `efficiency` derates
    the roofline and replaces the engine profile's efficiencies; `overhead_seconds_per_layer`
    replaces its fixed cost."""
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
    profile = engine_profile(workload.engine).decode_profile(gpu)
    expected, expected_explain = _expected(
        model, workload, gpu, fmt, read, cache_moved, flops, line, profile, efficiency, overhead_seconds_per_layer
    )
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
        f"FLOPs = 2 * active params * B + attention = 2 * {params.active:,} * {workload.batch} + attention = {flops:,}",
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
    naive_scores_bytes_per_layer: int  # B * H * s^2 scores materialised by non-Flash attention
    flash_stats_bytes_per_layer: int  # B * H * s * (max + sum in fp32): FlashAttention's O(s)


def prefill(
    model: ModelSpec, workload: Workload, gpu: GpuSpec, weights: WeightFormat | None = None, efficiency: float = 1.0
) -> PrefillEstimate:
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
    rows = workload.batch * model.heads * workload.seq
    return PrefillEstimate(
        seq=workload.seq,
        batch=workload.batch,
        roofline=line,
        seconds=line.seconds,
        naive_scores_bytes_per_layer=rows * workload.seq * score_bytes,
        flash_stats_bytes_per_layer=rows * 2 * 4,
    )
