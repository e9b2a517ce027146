"""Weights, the per-GPU memory budget, and what fits in it: pure functions, integer bytes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Literal

from kvcalc import engines
from kvcalc.base import Frozen
from kvcalc.engines import Budget, EngineLogLine, GpuMemory, Pool, StageLayer, StageWeights
from kvcalc.errors import InvalidInput
from kvcalc.kvcache import (
    CacheLayout,
    StateLayout,
    cache_layout,
    exact_workload,
    kv_dtype,
    layer_bytes_per_token,
    layer_caches,
    pipeline_stages,
    state_layout,
)
from kvcalc.spec import GpuSpec, ModelSpec, StoredWeights, Workload, cache_dtypes
from kvcalc.units import PACKING, DType, format_bytes

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


class LayerParams(Frozen):
    """One layer's parameters: its own (attention, norms, dense MLP or shared experts and router),
    its routed experts, and the routed experts one token touches."""

    own: int
    routed: int
    routed_active: int


def _layer_params(model: ModelSpec) -> list[LayerParams] | None:
    """Each layer's parameters from the shapes (DESIGN.md section 4); None without hidden,
    intermediate and vocab. A hybrid model's state mixers count nothing (see _counts_every_layer)."""
    h, inter = model.hidden, model.intermediate
    if h is None or inter is None or model.vocab is None:
        return None
    matrices = 3 if model.mlp == "gated" else 2  # gate, up, down; or up, down
    attention = _attention_params(model, h)
    moe = model.moe
    expert = matrices * h * moe.expert_intermediate if moe else 0

    def params(attends: bool, routed: bool) -> LayerParams:
        common = (attention if attends else 0) + 2 * h  # a state layer's own mixer is not counted: hybrids publish params
        if moe is None or not routed:
            return LayerParams(own=common + matrices * h * inter, routed=0, routed_active=0)
        return LayerParams(
            own=common + moe.shared_experts * expert + h * moe.experts,
            routed=moe.experts * expert,
            routed_active=moe.experts_per_token * expert,
        )

    attends = [kind is not None for kind in model.attention_kinds()]
    routed = [moe.is_moe_layer(i) for i in range(model.layers)] if moe else [False] * model.layers
    keys = list(zip(attends, routed, strict=True))
    made = {key: params(*key) for key in set(keys)}  # one value per kind of layer, shared by its layers (frozen)
    return list(map(made.__getitem__, keys))


def _counts_every_layer(model: ModelSpec) -> bool:
    """Whether the shapes give every layer's parameters: not for hybrid models (their state mixers and
    mlp-only blocks are not counted; their published params set the total, the shapes only the split)."""
    return None not in model.attention_kinds() and not any(model.state_kinds())


def _embedding_table(model: ModelSpec) -> int:
    """Parameters of the input embedding table (as many again in an untied LM head)."""
    return (model.vocab or 0) * (model.hidden or 0)


def count_params(model: ModelSpec) -> ParamCount | None:
    """Parameters from the shapes (DESIGN.md section 4), or the preset's published count when given.

    Returns None when the model has neither `params` nor hidden/intermediate/vocab.
    """
    layers = _layer_params(model)
    if model.params is None and not _counts_every_layer(model):
        return None
    if layers is None or model.hidden is None:
        if model.params is None:
            return None
        return ParamCount(total=model.params, active=model.active_params or model.params, routed_experts=0, from_shapes=False)
    embeddings = _embedding_table(model) * (1 if model.tied_embeddings else 2)  # input table + untied LM head
    base = embeddings + model.hidden + sum(map(attrgetter("own"), layers))  # + final norm
    routed = sum(map(attrgetter("routed"), layers))
    total = base + routed
    active = base + sum(map(attrgetter("routed_active"), layers))
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
    if not _counts_every_layer(model):
        return (
            f"{model.name} is a hybrid model and gives no params: kvcalc counts the parameters of attention layers only,"
            " so its weights are unknown: add its published params (and active_params for a MoE) to its preset"
        )
    source = model.source or ""
    config = source.split("config.json at ", 1)[1] if "config.json at " in source else None  # name the file, not its folder
    fix = (
        f"add hidden_size, intermediate_size and vocab_size to {config}"
        if config
        else "add params (or those three) to its preset"
    )
    return f"{model.name} gives neither params nor hidden, intermediate and vocab, so its weights are unknown: {fix}"


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
    stored: StoredWeights | None = (
        None  # the checkpoint's exact bytes (a GGUF's or safetensors' headers), when no dtype is requested
    )

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
    """(what, parameters, dtype) of each part stored alike, parts of one dtype merged: the layers'
    own parameters, the embedding table and LM head, the routed experts."""
    own = params.total - params.routed_experts - params.embeddings
    parts: dict[DType, tuple[str, int]] = {}
    for what, count, dtype in (("params", own, fmt.dtype), ("embedding params", params.embeddings, fmt.embeddings),
                               ("expert params", params.routed_experts, fmt.experts)):  # fmt: skip
        if count:
            label, merged = parts.get(dtype, (what, 0))
            parts[dtype] = (label, merged + count)
    return [(what, count, dtype) for dtype, (what, count) in parts.items()]


def weight_bytes(params: ParamCount, fmt: WeightFormat) -> int:
    """Bytes of the weights stored as `fmt` (block formats include their scales); a checkpoint's own
    stored bytes when known: exact for all of it, pro rata for a part (a stage, the experts one step reads)."""
    if fmt.stored is not None:
        return -(-fmt.stored.bytes * params.total // fmt.stored.params)
    return sum(PACKING[dtype].bytes_for(count) for _, count, dtype in _weight_parts(params, fmt))


def weights_formula(params: ParamCount, fmt: WeightFormat) -> str:
    """`weight_bytes`'s sum in words, for --explain (in parentheses when it has several terms)."""
    if fmt.stored is not None:
        share = "" if params.total == fmt.stored.params else f" * {params.total:,} / {fmt.stored.params:,} params"
        return f"{fmt.stored.bytes:,} B as stored (each tensor in its own type){share}"
    terms = [f"{count:,} {what} * {dtype.value}" for what, count, dtype in _weight_parts(params, fmt)]
    return terms[0] if len(terms) == 1 else "(" + " + ".join(terms) + ")"


class StageParams(Frozen):
    """Parameters one pipeline stage holds: its layers' own (the last stage's with the final norm),
    their routed experts, and its share of the embeddings (the table on the first stage, the LM head
    on the last)."""

    first_layer: int
    last_layer: int
    own: int
    experts: int
    embeddings: int

    def count(self) -> ParamCount:
        """The stage's parameters as a count that weight_bytes and weights_formula read."""
        total = self.own + self.experts + self.embeddings
        return ParamCount(total=total, active=total, routed_experts=self.experts, from_shapes=True, embeddings=self.embeddings)


def stage_params(model: ModelSpec, params: ParamCount, pp: int) -> list[StageParams]:
    """The parameters each of `pp` pipeline stages holds. Each holds its layers; the first also the
    embedding table, the last the final norm and the LM head, which is a copy of the table when the
    embeddings are tied and the stages differ (vllm/model_executor/models/llama.py LlamaModel: the
    last rank builds embed_tokens for a tied head). The layers' own parameters (the published count
    less the experts and embeddings) are shared in proportion to their shapes, evenly when the
    preset gives none; one stage holds the whole count.

    >>> from kvcalc.spec import ModelSpec
    >>> m = ModelSpec(name="x", layers=3, heads=1, kv_heads=1, head_dim=2, hidden=2, intermediate=1, vocab=10)
    >>> [(s.own, s.embeddings) for s in stage_params(m, count_params(m), 2)]
    [(52, 20), (28, 20)]
    """
    stages = pipeline_stages(model.layers, pp)
    layers = _layer_params(model)
    own_total = params.total - params.routed_experts - params.embeddings
    weight = [layer.own for layer in layers] if layers else [1] * model.layers  # evenly without shapes
    final_norm = (model.hidden or 0) if layers else 0
    table = _embedding_table(model) if params.embeddings else 0
    whole = sum(weight) + final_norm
    result = []
    for i, stage in enumerate(stages):
        first, last = i == 0, i == len(stages) - 1
        share = sum(weight[j] for j in stage) + (final_norm if last else 0)
        head = table if last and (not model.tied_embeddings or not first) else 0
        result.append(
            StageParams(
                first_layer=stage.start,
                last_layer=stage.stop - 1,
                own=-(-own_total * share // whole),
                experts=sum(layers[j].routed for j in stage) if layers else 0,
                embeddings=(table if first else 0) + head,
            )
        )
    return result


def stage_weights(model: ModelSpec, workload: Workload, params: ParamCount, fmt: WeightFormat) -> list[StageWeights]:
    """The weights one GPU of each pipeline stage holds (its stage's, split over tp), with their
    --explain lines."""
    tp, pp = workload.tp, workload.pp
    if pp == 1:
        weights = per_gpu(weight_bytes(params, fmt), tp)
        line = f"weights = {weights_formula(params, fmt)} / (tp {tp} * pp {pp}) = {weights:,} B ({format_bytes(weights)}) per GPU"
        return [StageWeights(stage=0, first_layer=0, last_layer=model.layers - 1, weights_bytes=weights, explain=[line])]
    holds = "its layers; the first also the embedding table, the last the final norm and LM head (a copy of the table when tied)"
    if not params.embeddings:
        holds = "its layers' share of the published count (the preset gives no shapes to place the embeddings)"
    stages = stage_params(model, params, pp)
    split = (
        f"pipeline stages of {'/'.join(str(s.last_layer - s.first_layer + 1) for s in stages)} layers: each holds {holds}"
        " (vllm/model_executor/models/llama.py)"
    )
    result = []
    for i, stage in enumerate(stages):
        weights = per_gpu(weight_bytes(stage.count(), fmt), tp)
        line = (
            f"weights = stage {i + 1} of {pp} (layers {stage.first_layer}-{stage.last_layer}):"
            f" {weights_formula(stage.count(), fmt)} / tp {tp} = {weights:,} B ({format_bytes(weights)}) per GPU"
        )
        result.append(
            StageWeights(
                stage=i, first_layer=stage.first_layer, last_layer=stage.last_layer, weights_bytes=weights, explain=[split, line]
            )
        )
    return result


def activation_dtype(model: ModelSpec, fmt: WeightFormat) -> DType:
    """The dtype a forward pass computes in: the weights' when they are a 16- or 32-bit float, else
    the model's when it is one, else bf16 (quantized checkpoints compute in 16 bits)."""
    floats = (DType.fp32, DType.fp16, DType.bf16)
    return fmt.dtype if fmt.dtype in floats else model.dtype if model.dtype in floats else DType.bf16


def budget(
    model: ModelSpec,
    workload: Workload,
    memory_bytes: int,
    weights: WeightFormat | None = None,
    utilization: float | None = None,
    reserve_bytes: int | None = None,
    gpu_name: str | None = None,
) -> Budget:
    """What one GPU leaves for the KV cache, by the engine's own budget (engines.<name>.budget):
    textbook, hf and llama.cpp memory * utilization - weights - reserve; vLLM, SGLang and
    TensorRT-LLM their fractions and modelled overheads, which --reserve replaces. The weights per
    GPU are each pipeline stage's, in the checkpoint's format unless `weights` says otherwise;
    `gpu_name` picks the engine's defaults for that GPU (vLLM's for an A100)."""
    rules = engines.profile(workload.engine)
    if utilization is not None:
        if rules.fraction_option is not None:
            flag = rules.fraction_option.replace("_", "-")
            raise InvalidInput(f"--utilization does not apply to --engine {rules.name}: it takes --{flag}")
        if not 0 < utilization <= 1:
            raise InvalidInput(f"--utilization {utilization} must be in (0, 1]")
    if reserve_bytes is not None and reserve_bytes < 0:
        raise InvalidInput("--reserve must not be negative")
    params = require_params(model)
    fmt = weights or weight_format(model)
    gpu = GpuMemory(total_bytes=memory_bytes, name=gpu_name)
    on_gpu = workload.model_copy(update={"engine": rules.defaults_on(workload.engine, gpu)})
    stages = stage_weights(model, workload, params, fmt)
    found = rules.budget(model, on_gpu, gpu, stages, activation_dtype(model, fmt), utilization, reserve_bytes)
    return found.model_copy(update={"explain": [*model.origin(), *found.explain]})  # first, where the model comes from


Needs = list[tuple[int, int]]  # (what a workload needs, what holds it): bytes and the usable bytes, or a pool's slots


def _needs(layout: CacheLayout, workload: Workload, usable_bytes: int, pools: Sequence[Pool]) -> Needs:
    """What the workload's cache needs at its peak against what holds it: its bytes per GPU against
    the usable bytes, or, when the engine carves the memory into pools, its slots in every pool."""
    if not pools:
        return [(max(layout.stage_bytes(workload, peak=True)), usable_bytes)]  # the busiest GPU
    return [(_pool_need(workload, pool), pool.tokens) for pool in pools]


def _met(needs: Needs) -> bool:
    return all(need <= capacity for need, capacity in needs)


def _crossing(low: int, at_low: Needs, high: int, at_high: Needs) -> int:
    """The last n in [low, high) before the needs exceed their capacity, each need read as linear
    between low (where all are met) and high (where one is not): exact when they are linear."""
    guess = high - 1
    for (low_need, capacity), (high_need, _) in zip(at_low, at_high, strict=True):
        if high_need > capacity:  # low_need <= capacity: the line crosses it between low and high
            guess = min(guess, low + (capacity - low_need) * (high - low) // (high_need - low_need))
    return guess


def _largest(needs: Callable[[int], Needs], limit: int) -> int:
    """The largest n in [1, limit] whose needs are met, needs growing with n; 0 if none.

    A safeguarded interpolation search: each probe reads the needs as linear between the bracket's
    ends (the answer at once where they are, as bytes are in the batch: then n, n + 1 and the two
    ends are the only probes), and a side that keeps winning moves at least 1, 2, 4, ... so that
    steps and pages cost at most twice a bisection's probes.
    """
    low, at_low = 1, needs(1)
    if not _met(at_low):
        return 0
    if limit == 1:
        return 1
    high, at_high = limit, needs(limit)
    if _met(at_high):
        return limit
    streak, last_met = 0, None  # how many probes in a row landed on the same side
    while high - low > 1:  # met at low, not at high
        guess = _crossing(low, at_low, high, at_high)
        if streak > 1:
            guess = max(guess, low + 2 ** (streak - 1)) if last_met else min(guess, high - 2 ** (streak - 1))
        guess = min(max(guess, low + 1), high - 1)
        at_guess = needs(guess)
        met = _met(at_guess)
        streak = streak + 1 if met == last_met else 1
        last_met = met
        if met:
            low, at_low = guess, at_guess
        else:
            high, at_high = guess, at_guess
    return low


def holds(model: ModelSpec, workload: Workload, usable_bytes: int, pools: Sequence[Pool] = ()) -> bool:
    """Whether the workload's cache fits at its peak: in `usable` bytes per GPU, or, when the
    engine carves the memory into token pools, in every pool (each sequence holds its tokens of
    the pool's window there)."""
    return _met(_needs(cache_layout(model, workload), workload, usable_bytes, pools))


def _pool_need(workload: Workload, pool: Pool) -> int:
    """The slots the workload takes in a pool: each sequence's tokens of the pool's window, or a
    pool's fixed slots per sequence (state)."""
    rules = engines.profile(workload.engine)
    units = rules.allocation_units(workload)
    if pool.per_sequence:
        return units * pool.per_sequence
    return units * rules.peak_tokens_per_unit(workload, pool.window, workload.seq)


def max_batch(
    model: ModelSpec, workload: Workload, usable_bytes: int, pools: Sequence[Pool] = (), layout: CacheLayout | None = None
) -> int:
    """The largest number of sequences, each with the workload's context, whose cache fits in
    `usable` bytes per GPU (or the engine's pools) at its peak (0 when none does); `layout`, the
    workload's cache_layout when the caller has it."""
    layout = layout or cache_layout(model, workload)
    reshape = engines.profile(workload.engine).reshape
    return _largest(lambda batch: _needs(layout, reshape(workload, batch=batch), usable_bytes, pools), UNBOUNDED_CONTEXT)


def max_context(
    model: ModelSpec,
    workload: Workload,
    usable_bytes: int,
    limit: int,
    pools: Sequence[Pool] = (),
    layout: CacheLayout | None = None,
) -> int:
    """The longest context per sequence, up to `limit`, whose cache for the workload's batch fits in
    `usable` bytes per GPU (or the engine's pools) at its peak; solved exactly by search (bytes grow
    monotonically with the context, but not linearly once window layers saturate)."""
    layout = layout or cache_layout(model, workload)
    reshape = engines.profile(workload.engine).reshape
    return _largest(lambda context: _needs(layout, reshape(workload, context=context), usable_bytes, pools), limit)


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
    bytes_per_sequence_per_gpu: int  # KV at its peak and state of one sequence (llama.cpp unified: the shared buffer)
    exact_bytes_per_sequence_per_gpu: int
    state_bytes_per_sequence_per_gpu: int = 0  # hybrid models: the fixed state every sequence adds, whatever its context
    kv_bytes_per_gpu: int  # the workload's batch, KV and state
    fits: bool  # weights and the batch's KV within the budget (and its pools)
    weights_fit: bool  # the budget leaves room for a cache at all
    shortfall_bytes: int  # how much more memory the workload needs (0 when it fits)
    max_batch: int
    max_batch_limit: Literal["memory", "max_seqs"]
    max_context: int
    max_context_limit: Literal["memory", "max_positions", "max_cache_len", "max_seq_len", "unbounded"]
    max_context_by_memory: int | None = None  # when the model's max positions binds: the context memory alone allows
    paging_waste_bytes_at_max_batch: int
    pools: list[Pool]  # the token pools the engine sizes at start-up (SGLang, TensorRT-LLM); empty: one budget
    engine_log: list[EngineLogLine]  # figures the engine itself would log, computed its way
    max_batch_by_context: dict[int, int]


def _shortfall(layout: CacheLayout, workload: Workload, usable: int, pools: Sequence[Pool]) -> int:
    """Bytes the workload's cache needs beyond the budget, or beyond each pool it overflows."""
    needs = _needs(layout, workload, usable, pools)
    if not pools:
        return max(0, needs[0][0] - usable)
    return sum(max(0, need - slots) * pool.bytes_per_token for (need, slots), pool in zip(needs, pools, strict=True))


def fit(model: ModelSpec, workload: Workload, budget_: Budget, max_seqs: int | None = None, details: bool = True) -> FitReport:
    """Max batch at the workload's context, max context at its batch, and which limit binds each,
    under the engine's options as the budget assumed them (its defaults on the GPU filled in);
    with `details`, what `fit` shows besides: max batch at each standard context, and the context
    memory alone allows when the model's max positions binds (check and compare leave both out).
    A batch fits when its peak fits (transformers' sliding layers right after a long prefill)."""
    workload = workload.model_copy(update={"engine": budget_.engine})
    rules = engines.profile(workload.engine)
    rules.check_supported(model, workload, kv_dtype(model, workload))  # as estimate_kv: what the engine refuses
    usable = budget_.usable_bytes
    stage = _first_stage_layers(model, workload)
    pools = rules.pools(model, workload, usable, stage)
    layout = cache_layout(model, workload)  # laid out once for every probe below
    exact_work = exact_workload(workload)
    exact = cache_layout(model, exact_work)  # the textbook twin's, whatever its batch
    states = state_layout(model, workload)
    by_memory = max_batch(model, workload, usable, pools, layout)
    caps = [cap for cap in (max_seqs, rules.max_sequences(workload)) if cap]
    best_batch = min([by_memory, *caps])
    limit, limit_reason = rules.context_limit(model, workload)
    context = max_context(model, workload, usable, limit or UNBOUNDED_CONTEXT, pools, layout)
    limited_by = limit_reason if context == (limit or UNBOUNDED_CONTEXT) else "memory"
    need = layout.batch_bytes(workload, peak=True).per_gpu
    at_best = rules.reshape(workload, batch=max(best_batch, 1))
    waste = _waste_per_gpu(model, at_best, layout, exact, states) if best_batch else 0
    state = max(layout.state)  # one sequence's state on the busiest stage, as the engine settles it
    asked = rules.context_per_sequence(workload)  # the table shows the context asked for, beside the standard ones
    contexts = {s for s in STANDARD_CONTEXTS if s <= (limit or UNBOUNDED_CONTEXT)} | ({limit} if limit else set()) | {asked}
    budget_holds = usable >= 0 and budget_.overcommitted_bytes == 0
    by_memory_alone = limited_by == "max_positions" and budget_holds and details
    return FitReport(
        budget=budget_,
        seq=workload.seq,
        batch=workload.batch,
        context_per_sequence=rules.context_per_sequence(workload),
        bytes_per_sequence_per_gpu=layout.sequence_bytes(workload, peak=True).per_gpu + state,
        exact_bytes_per_sequence_per_gpu=exact.sequence_bytes(exact_work).per_gpu
        + _over_stages_max(model, workload, states.exact_bytes),
        state_bytes_per_sequence_per_gpu=state,
        kv_bytes_per_gpu=need,
        fits=budget_holds and _met(_needs(layout, workload, usable, pools)),
        weights_fit=budget_holds,
        shortfall_bytes=_shortfall(layout, workload, usable, pools) + budget_.overcommitted_bytes,
        max_batch=best_batch if budget_holds else 0,
        max_batch_limit="max_seqs" if caps and min(caps) < by_memory else "memory",
        max_context=context if budget_holds else 0,
        max_context_limit=limited_by,
        max_context_by_memory=max_context(model, workload, usable, UNBOUNDED_CONTEXT, pools, layout) if by_memory_alone else None,
        paging_waste_bytes_at_max_batch=waste,
        pools=pools,
        engine_log=rules.log_lines(model, workload, usable, stage) + (list(states.pages.log) if states.pages else []),
        max_batch_by_context={
            s: max_batch(model, rules.reshape(workload, context=s), usable, pools, layout) for s in sorted(contexts)
        }
        if details
        else {},
    )


def _first_stage_layers(model: ModelSpec, workload: Workload) -> list[StageLayer]:
    """The attention layers of the first pipeline stage, the one with the most layers, on one rank."""
    dtypes = cache_dtypes(model, workload)
    caches = layer_caches(model, workload.tp, workload.engine)
    own = {id(c): c for c in caches if c.kind != "none" and not c.shared}  # the layers of a kind share one LayerCache
    layers = {
        key: StageLayer(window=c.window, bytes_per_token=layer_bytes_per_token(c, *dtypes), chunked=c.kind == "chunked")
        for key, c in own.items()
    }  # and one StageLayer
    return [layers[id(caches[i])] for i in pipeline_stages(model.layers, workload.pp)[0] if id(caches[i]) in layers]


def _over_stages_max(model: ModelSpec, workload: Workload, per_layer: list[int]) -> int:
    """The busiest pipeline stage's share of per-layer bytes."""
    return max(sum(per_layer[i] for i in stage) for stage in pipeline_stages(model.layers, workload.pp))


def _waste_per_gpu(model: ModelSpec, workload: Workload, layout: CacheLayout, exact: CacheLayout, states: StateLayout) -> int:
    """Bytes allocated beyond the exact need on the busiest GPU: KV pages and reservations (the
    textbook twin laid out in `exact`), and the padding of state pages (the exact twin keeps the
    engine's state dtypes)."""
    exact_work = exact_workload(workload)
    kv = layout.batch_bytes(workload, with_state=False).per_gpu - exact.batch_bytes(exact_work, with_state=False).per_gpu
    padding = [allocated - needed for allocated, needed in zip(states.layer_bytes, states.exact_bytes, strict=True)]
    return kv + workload.batch * _over_stages_max(model, workload, padding)
