"""Decode and prefill rooflines: time = max(bytes / bandwidth, FLOPs / peak). Pure functions."""

from __future__ import annotations

from typing import Literal

from kvcalc.base import Frozen
from kvcalc.capacity import ParamCount, WeightFormat, per_gpu, require_params, weight_bytes, weight_format, weights_formula
from kvcalc.errors import InvalidInput
from kvcalc.kvcache import attention_layers, batch_bytes, exact_workload, layer_caches, state_layout, tokens_held
from kvcalc.spec import GpuSpec, ModelSpec, Workload
from kvcalc.units import PACKING, format_bytes, format_seconds

Bound = Literal["memory", "compute"]
MIN_EFFICIENCY = 0.01  # below 1% of peak the roofline says nothing (and 1e-320 would make times infinite)


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
    held = sum(tokens_held(layer, exact, context) for layer in attention_layers(layer_caches(model)))
    return 2 * workload.batch * model.heads * (qk + pv) * held


def expected_experts_touched(experts: int, per_token: int, tokens: int) -> float:
    """Experts a batch of `tokens` touches in expectation with uniform routing: E * (1 - (1 - k/E)^B).

    >>> round(expected_experts_touched(8, 2, 1), 3), round(expected_experts_touched(8, 2, 64), 3)
    (2.0, 8.0)
    """
    return experts * (1 - (1 - per_token / experts) ** tokens)


class DecodeEstimate(Frozen):
    """Time per output token for a batch at a context, with its roofline."""

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
    seconds_per_token: float
    tokens_per_s_per_sequence: float
    tokens_per_s: float
    explain: list[str]


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
    model: ModelSpec, workload: Workload, gpu: GpuSpec, weights: WeightFormat | None = None, efficiency: float = 1.0
) -> DecodeEstimate:
    """One decode step of `batch` sequences at context `seq`: every GPU of the TP group reads its
    share of the weights (MoE: only the experts the batch touches) and of the KV cache. The
    weights are in the checkpoint's format unless `weights` says otherwise."""
    if not MIN_EFFICIENCY <= efficiency <= 1:
        raise InvalidInput(f"--efficiency {efficiency} must be in [{MIN_EFFICIENCY}, 1]: a share of the peak")
    params = require_params(model)
    fmt = weights or weight_format(model)
    read = read_per_step(model, params, workload.batch)
    # each step walks every pipeline stage in turn: one rank of the TP group reads its share of all of them
    weights_read = per_gpu(weight_bytes(read, fmt), workload.tp)
    exact = exact_workload(workload)
    kv_read = per_gpu(batch_bytes(model, exact, with_state=False).total, workload.tp)  # the tokens in context, not padding
    # a step reads each sequence's recurrent state and writes it back: one rank's share of every layer's,
    # in the engine's dtypes, without page padding
    state = workload.batch * sum(state_layout(model, workload).exact_bytes)
    flops = (2 * params.active * workload.batch + attention_flops(model, workload, workload.seq)) // workload.tp
    moved = weights_read + kv_read + 2 * state
    line = roofline(moved, flops, gpu.bandwidth_bytes_per_s * efficiency, peak_flops_for(gpu, fmt) * efficiency)
    state_terms = f" + state read {state:,} + state written {state:,}" if state else ""
    explain = [
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
    ]
    return DecodeEstimate(
        model=model.name,
        gpu=gpu.name,
        batch=workload.batch,
        seq=workload.seq,
        tp=workload.tp,
        efficiency=efficiency,
        weights_read_bytes=weights_read,
        kv_read_bytes=kv_read,
        state_read_bytes=state,
        state_written_bytes=state,
        roofline=line,
        seconds_per_token=line.seconds,
        tokens_per_s_per_sequence=1 / line.seconds,
        tokens_per_s=workload.batch / line.seconds,
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
