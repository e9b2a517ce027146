"""Weights, the per-GPU memory budget, and what fits in it: pure functions, integer bytes."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Literal

from kvcalc import engines
from kvcalc.base import Frozen
from kvcalc.errors import InvalidInput
from kvcalc.kvcache import (
    batch_bytes,
    exact_workload,
    kv_dtype,
    layer_bytes_per_token,
    layer_caches,
    pipeline_stages,
    sequence_bytes,
)
from kvcalc.spec import GpuSpec, ModelSpec, StoredWeights, Workload
from kvcalc.units import PACKING, DType, GiB, format_bytes

DEFAULT_UTILIZATION = 0.90  # vLLM's gpu_memory_utilization default
DEFAULT_RESERVE_BYTES = 1 * GiB  # CUDA context + cuBLAS workspace + a chunked prefill's activations
UNBOUNDED_CONTEXT = 2**31  # search limit: the largest count a workload accepts


class ParamCount(Frozen):
    """Parameters in total, touched per token (MoE: active experts only), in routed experts, and in
    the embedding table and LM head."""

    total: int
    active: int
    routed_experts: int  # parameters of all routed experts together (0 for dense models)
    from_shapes: bool  # True when counted from the shapes, False when the preset gives it
    embeddings: int = 0  # the input table and an untied LM head (0 when the shapes are not given)


def _attention_params(model: ModelSpec, h: int) -> int:
    if model.mla is not None:
        mla, H = model.mla, model.heads
        qk = mla.qk_nope_head_dim + mla.qk_rope_head_dim
        q = h * mla.q_lora_rank + mla.q_lora_rank + mla.q_lora_rank * H * qk if mla.q_lora_rank else h * H * qk
        kv = h * (mla.kv_lora_rank + mla.qk_rope_head_dim) + mla.kv_lora_rank  # down-projection + latent norm
        kv += mla.kv_lora_rank * H * (mla.qk_nope_head_dim + mla.v_head_dim)  # up-projection to K_nope and V
        return q + kv + H * mla.v_head_dim * h
    # q and o: H heads; k and v: Hkv heads (GQA)
    return (
        h * model.heads * model.key_dim
        + h * model.kv_heads * (model.key_dim + model.value_dim)
        + model.heads * model.value_dim * h
    )


def count_params(model: ModelSpec) -> ParamCount | None:
    """Parameters from the shapes (DESIGN.md section 4), or the preset's published count when given.

    Returns None when the model has neither `params` nor hidden/intermediate/vocab.
    """
    h, inter, vocab = model.hidden, model.intermediate, model.vocab
    if h is None or inter is None or vocab is None:
        if model.params is None:
            return None
        return ParamCount(total=model.params, active=model.active_params or model.params, routed_experts=0, from_shapes=False)
    matrices = 3 if model.mlp == "gated" else 2  # gate, up, down; or up, down
    dense_mlp = matrices * h * inter
    embeddings = vocab * h * (1 if model.tied_embeddings else 2)  # input table + untied LM head
    per_layer = _attention_params(model, h) + 2 * h  # two norms
    total = embeddings + h + model.layers * per_layer  # + final norm
    active, routed = total, 0
    moe = model.moe
    if moe is None:
        total += model.layers * dense_mlp
        active = total
    else:
        expert = matrices * h * moe.expert_intermediate
        moe_layers = model.layers - moe.dense_layers
        routed = moe_layers * moe.experts * expert
        shared_and_router = moe_layers * (moe.shared_experts * expert + h * moe.experts)
        base = total + moe.dense_layers * dense_mlp + shared_and_router
        total = base + routed
        active = base + moe_layers * moe.experts_per_token * expert
    if model.params is not None and model.params < embeddings + routed:
        raise InvalidInput(
            f"{model.name}: params {model.params:,} is less than its embeddings and routed experts"
            f" ({embeddings + routed:,}, from vocab, hidden and moe); fix params or the shapes"
        )
    if model.params is not None:  # a published count wins; scale the split to it
        active = model.active_params or active + (model.params - total)
        total = model.params
    return ParamCount(total=total, active=active, routed_experts=routed, from_shapes=model.params is None, embeddings=embeddings)


def unknown_weights(model: ModelSpec) -> str:
    """Why the model's weights are unknown, and the fix."""
    return (
        f"{model.name} gives neither params nor hidden, intermediate and vocab, so its weights are unknown:"
        " add params (or those three) to its preset"
    )


def require_params(model: ModelSpec) -> ParamCount:
    """The parameter count, or an error saying the weights are unknown."""
    params = count_params(model)
    if params is None:
        raise InvalidInput(unknown_weights(model))
    return params


def per_gpu(total_bytes: int, gpus: int) -> int:
    """One GPU's share of bytes split over `gpus`, rounded up."""
    return -(-total_bytes // gpus)


class WeightFormat(Frozen):
    """How the weights are stored: `dtype` for the layers' matrices, `embeddings` for the embedding
    table and LM head (quantized checkpoints keep them 16-bit), `experts` for a MoE's routed experts."""

    dtype: DType
    embeddings: DType
    experts: DType
    stored: StoredWeights | None = None  # the checkpoint's exact bytes (a GGUF's tensors), when no dtype is requested

    def other_than_layers(self, dtype: DType) -> DType | None:
        """`dtype` when it differs from the layers', else None (the JSON names only what differs)."""
        return dtype if dtype != self.dtype else None

    @property
    def label(self) -> str:
        if self.stored is not None:
            return ", ".join(self.stored.types) + " (as stored)"
        parts = (("embeddings", self.embeddings), ("experts", self.experts))
        return ", ".join([self.dtype.value, *(f"{part} {dtype.value}" for part, dtype in parts if dtype != self.dtype)])


def weight_format(model: ModelSpec, requested: DType | None = None) -> WeightFormat:
    """The requested dtype for every weight, else the checkpoint's: `weight_dtype` (or `dtype`) for
    the layers, `embeddings_dtype` (or `dtype`) for the embeddings, and the routed experts' own
    `moe.expert_dtype` if given."""
    if requested is not None:
        return WeightFormat(dtype=requested, embeddings=requested, experts=requested)
    layers = model.weight_dtype or model.dtype
    experts = (model.moe.expert_dtype if model.moe else None) or layers
    return WeightFormat(
        dtype=layers, embeddings=model.embeddings_dtype or model.dtype, experts=experts, stored=model.stored_weights
    )


def _weight_parts(params: ParamCount, fmt: WeightFormat) -> list[tuple[str, int, DType]]:
    """(what, parameters, dtype) of each part stored alike, parts of one dtype merged."""
    experts = params.routed_experts
    layers = params.total - params.routed_experts - params.embeddings
    parts: dict[DType, tuple[str, int]] = {}
    for what, count, dtype in (("params", layers, fmt.dtype), ("embedding params", params.embeddings, fmt.embeddings),
                               ("expert params", experts, fmt.experts)):  # fmt: skip
        if count:
            label, merged = parts.get(dtype, (what, 0))
            parts[dtype] = (label, merged + count)
    return [(what, count, dtype) for dtype, (what, count) in parts.items()]


def weight_bytes(params: ParamCount, fmt: WeightFormat) -> int:
    """Bytes of the weights stored as `fmt` (block formats include their scales)."""
    if fmt.stored is not None:  # the checkpoint's own bytes: exact for all of it, pro rata for a part (experts one step reads)
        return -(-fmt.stored.bytes * params.total // fmt.stored.params)
    return sum(PACKING[dtype].bytes_for(count) for _, count, dtype in _weight_parts(params, fmt))


def weights_formula(params: ParamCount, fmt: WeightFormat) -> str:
    """`weight_bytes`'s sum in words, for --explain (in parentheses when it has several terms)."""
    if fmt.stored is not None:
        share = "" if params.total == fmt.stored.params else f" * {params.total:,} / {fmt.stored.params:,} params"
        return f"{fmt.stored.bytes:,} B as stored (each tensor in its own type){share}"
    terms = [f"{count:,} {what} * {dtype.value}" for what, count, dtype in _weight_parts(params, fmt)]
    return terms[0] if len(terms) == 1 else "(" + " + ".join(terms) + ")"


class Budget(Frozen):
    """Memory of one GPU and what is left for the KV cache."""

    memory_bytes: int
    utilization: float
    reserve_bytes: int
    weights_bytes: int  # on this GPU
    allowed_bytes: int  # memory * utilization
    usable_bytes: int  # for the KV cache; negative when the weights do not fit
    explain: list[str]


def budget(
    model: ModelSpec,
    workload: Workload,
    memory_bytes: int,
    weights: WeightFormat | None = None,
    utilization: float = DEFAULT_UTILIZATION,
    reserve_bytes: int = DEFAULT_RESERVE_BYTES,
) -> Budget:
    """usable = memory * utilization - weights per GPU - reserve; the weights in the checkpoint's
    format unless `weights` says otherwise."""
    if not 0 < utilization <= 1:
        raise InvalidInput(f"--utilization {utilization} must be in (0, 1]")
    if reserve_bytes < 0:
        raise InvalidInput("--reserve must not be negative")
    params = require_params(model)
    gpus = workload.tp * workload.pp
    fmt = weights or weight_format(model)
    weights_per_gpu = per_gpu(weight_bytes(params, fmt), gpus)
    allowed = int(memory_bytes * Decimal(repr(utilization)))  # exact: 3GB * 0.7 = 2,100,000,000, not one byte less
    usable = allowed - weights_per_gpu - reserve_bytes
    explain = [
        f"weights = {weights_formula(params, fmt)} / (tp {workload.tp} * pp {workload.pp})"
        f" = {weights_per_gpu:,} B ({format_bytes(weights_per_gpu)}) per GPU",
        f"usable = memory * utilization - weights - reserve = {memory_bytes:,} * {utilization} - {weights_per_gpu:,}"
        f" - {reserve_bytes:,} = {usable:,} B ({format_bytes(usable)})",
    ]
    return Budget(
        memory_bytes=memory_bytes,
        utilization=utilization,
        allowed_bytes=allowed,
        reserve_bytes=reserve_bytes,
        weights_bytes=weights_per_gpu,
        usable_bytes=usable,
        explain=explain,
    )


def _largest(fits: Callable[[int], bool], limit: int) -> int:
    """The largest n in [1, limit] with fits(n), for fits monotone (true, then false); 0 if none."""
    if not fits(1):
        return 0
    low, high = 1, min(2, limit)
    while high < limit and fits(high):  # gallop up, then bisect; invariant: fits(low)
        low, high = high, min(2 * high, limit)
    if fits(high):
        return high
    while high - low > 1:  # fits(low), not fits(high)
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


def max_batch(model: ModelSpec, workload: Workload, usable_bytes: int) -> int:
    """The largest number of sequences, each with the workload's context, whose cache fits in
    `usable` bytes per GPU at its peak (0 when none does)."""

    def fits(batch: int) -> bool:
        return batch_bytes(model, engines.reshape(workload, batch=batch), peak=True).per_gpu <= usable_bytes

    return _largest(fits, UNBOUNDED_CONTEXT)


def max_context(model: ModelSpec, workload: Workload, usable_bytes: int, limit: int) -> int:
    """The longest context per sequence, up to `limit`, whose cache for the workload's batch fits in
    `usable` bytes per GPU at its peak; solved exactly by bisection (bytes grow monotonically with
    the context, but not linearly once window layers saturate)."""

    def fits(context: int) -> bool:
        return batch_bytes(model, engines.reshape(workload, context=context), peak=True).per_gpu <= usable_bytes

    return _largest(fits, limit)


def gpu_memory(gpu: GpuSpec | None, memory_bytes: int | None) -> int:
    """The memory to budget: an explicit --memory wins over the GPU preset's."""
    if memory_bytes is not None:
        return memory_bytes
    if gpu is None:
        raise InvalidInput("give --gpu NAME or --memory SIZE")
    return gpu.memory_bytes


STANDARD_CONTEXTS = (2048, 8192, 32768, 131072)


class FitReport(Frozen):
    """What fits on one GPU of the deployment: the budget, max batch and max context, and why."""

    budget: Budget
    seq: int
    batch: int
    context_per_sequence: int  # --seq, or llama.cpp's n_ctx / sequences
    bytes_per_sequence_per_gpu: int
    exact_bytes_per_sequence_per_gpu: int
    kv_bytes_per_gpu: int  # the workload's batch
    fits: bool  # weights and the batch's KV within the budget
    weights_fit: bool
    shortfall_bytes: int  # how much more memory the workload needs (0 when it fits)
    max_batch: int
    max_batch_limit: Literal["memory", "max_seqs"]
    max_context: int
    max_context_limit: Literal["memory", "max_positions", "max_cache_len", "unbounded"]
    paging_waste_bytes_at_max_batch: int
    vllm_max_concurrency: float | None  # "Maximum concurrency" as vLLM computes and logs it
    max_batch_by_context: dict[int, int]


def fit(model: ModelSpec, workload: Workload, budget_: Budget, max_seqs: int | None = None) -> FitReport:
    """Max batch at the workload's context, max context at its batch, and which limit binds each.
    A batch fits when its peak fits (transformers' sliding layers right after a long prefill)."""
    engines.check_supported(model, workload, kv_dtype(model, workload))  # as estimate_kv: what the engine refuses
    usable = budget_.usable_bytes
    by_memory = max_batch(model, workload, usable)
    best_batch = min(by_memory, max_seqs) if max_seqs else by_memory
    limit, limit_reason = engines.context_limit(model, workload)
    context = max_context(model, workload, usable, limit or UNBOUNDED_CONTEXT)
    need = batch_bytes(model, workload, peak=True).per_gpu
    at_best = engines.reshape(workload, batch=max(best_batch, 1))
    waste = batch_bytes(model, at_best).per_gpu - batch_bytes(model, exact_workload(at_best)).per_gpu if best_batch else 0
    contexts = sorted({s for s in STANDARD_CONTEXTS if s <= (limit or UNBOUNDED_CONTEXT)} | ({limit} if limit else set()))
    return FitReport(
        budget=budget_,
        seq=workload.seq,
        batch=workload.batch,
        context_per_sequence=engines.context_per_sequence(workload),
        bytes_per_sequence_per_gpu=sequence_bytes(model, workload, peak=True).per_gpu,
        exact_bytes_per_sequence_per_gpu=sequence_bytes(model, exact_workload(workload)).per_gpu,
        kv_bytes_per_gpu=need,
        fits=need <= usable,
        weights_fit=usable >= 0,
        shortfall_bytes=max(0, need - usable),
        max_batch=best_batch,
        max_batch_limit="max_seqs" if max_seqs and max_seqs < by_memory else "memory",
        max_context=context,
        max_context_limit=limit_reason if context == (limit or UNBOUNDED_CONTEXT) else "memory",  # type: ignore[arg-type]
        paging_waste_bytes_at_max_batch=waste,
        vllm_max_concurrency=vllm_max_concurrency(model, workload, usable) if workload.engine.name == "vllm" else None,
        max_batch_by_context={s: max_batch(model, engines.reshape(workload, context=s), usable) for s in contexts},
    )


def vllm_max_concurrency(model: ModelSpec, workload: Workload, usable_bytes: int) -> float:
    """vLLM's "Maximum concurrency for N tokens per request", computed its way
    (vllm/v1/core/kv_cache_utils.py get_max_concurrency_for_kv_cache_config): layers form groups
    of the smallest kind's size that share one pool of blocks; num_blocks = usable // (page * group
    size); a request needs cdiv(s, block) blocks per full group and its sliding reservation per
    sliding group; concurrency = num_blocks / blocks per request (a fraction, not floored)."""
    all_layers = layer_caches(model, workload.tp, workload.engine)
    caches = [all_layers[i] for i in pipeline_stages(model.layers, workload.pp)[0]]  # the busiest GPU's layers
    block = engines.block_size(workload) or engines.VLLM_BLOCK_SIZE
    page = block * layer_bytes_per_token(caches[0], kv_dtype(model, workload))
    counts: dict[int | None, int] = {}
    for layer in caches:
        counts[layer.window] = counts.get(layer.window, 0) + 1
    group = min(counts.values())
    per_request = sum(
        -(-count // group) * engines.tokens_per_unit(workload.engine, window, workload.seq, 1, block) // block
        for window, count in counts.items()
    )
    return (max(usable_bytes, 0) // (page * group)) / per_request
