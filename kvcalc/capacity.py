"""The per-GPU memory budget and what fits in it (weights come from kvcalc.weights): pure functions, integer bytes."""

# no `from __future__ import annotations`: pydantic takes the fields' annotations as objects rather than
# compiling and evaluating each string (start-up, docs/benchmarks.md)

from collections.abc import Callable, Iterable, Sequence
from typing import Literal

from kvcalc import engines
from kvcalc.base import Frozen
from kvcalc.engines import Budget, BudgetTerm, EngineLogLine, GpuMemory, Pool, StageLayer
from kvcalc.errors import InvalidInput
from kvcalc.kvcache import (
    CacheLayout,
    StateLayout,
    cache_layout,
    exact_workload,
    kv_dtype,
    layer_bytes_per_token,
    layer_caches,
    layer_key_bytes_per_token,
    pipeline_stages,
    refuse_compressed,
    settled,
    shared_prefix_tokens,
    state_layout,
)
from kvcalc.residents import with_residents
from kvcalc.spec import GpuSpec, Interconnect, ModelSpec, Workload, cache_dtypes
from kvcalc.units import GiB
from kvcalc.weights import WeightFormat, activation_dtype, require_params, stage_weights, weight_format

UNBOUNDED_CONTEXT = 2**31  # search limit: the largest count a workload accepts


def budget(
    model: ModelSpec,
    workload: Workload,
    memory_bytes: int,
    weights: WeightFormat | None = None,
    utilization: float | None = None,
    reserve_bytes: int | None = None,
    gpu_name: str | None = None,
    residents: Sequence[BudgetTerm] = (),
    interconnect: Interconnect | None = None,
    preset: GpuSpec | None = None,
    in_use_bytes: int = 0,
    in_use_name: str = "--memory-in-use",
) -> Budget:
    """What one GPU leaves for the KV cache, by the engine's own budget (engines.<name>.budget):
    textbook, hf and llama.cpp memory * utilization - weights - reserve; vLLM, SGLang and
    TensorRT-LLM their fractions and modelled overheads, which --reserve replaces. The weights per
    GPU are each pipeline stage's, in the checkpoint's format unless `weights` says otherwise;
    `gpu_name` picks the engine's defaults for that GPU (vLLM's for an A100), `interconnect` its
    tensor-parallel buffers (None: unknown, each engine's safe assumption); `residents`, what else the
    deployment holds (kvcalc.residents: a draft model's weights), each taken from the cache's share;
    `preset`, the GPU preset when `memory_bytes` is its memory_bytes (no --memory): an engine that
    sizes from CUDA's total takes the preset's cuda_memory_bytes (process_total); `in_use_bytes`, what
    other processes or the OS hold when the engine starts (--memory-in-use; `in_use_name`, where it came
    from, names it in the error)."""
    refuse_compressed(model, workload.engine)  # before the engine's budget asks for what it would not use
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
    total, total_why = process_total(memory_bytes, preset, rules)
    if not 0 <= in_use_bytes < total:
        raise InvalidInput(f"{in_use_name} {in_use_bytes:,} B must be at least 0 and below the GPU's total {total:,} B")
    smi = memory_bytes if total != memory_bytes else None
    gpu = GpuMemory(total_bytes=total, name=gpu_name, interconnect=interconnect, smi_bytes=smi, in_use_bytes=in_use_bytes)
    on_gpu = workload.model_copy(update={"engine": rules.defaults_on(model, workload, gpu)})
    stages = stage_weights(model, workload, params, fmt)
    found = with_residents(
        rules.budget(model, on_gpu, gpu, stages, activation_dtype(model, fmt), utilization, reserve_bytes), list(residents)
    )
    origin = [*model.origin(), *([total_why] if total_why else [])]  # first, where the model and the total come from
    return found.model_copy(update={"explain": [*origin, *found.explain]})


# The largest gap between nvidia-smi's total and CUDA's among the GPU presets that record both (a100-80gb: 85,899,345,920
# - 84,975,927,951 B; tests/test_memory_seen.py holds it to the presets).
CUDA_TOTAL_GAP_BYTES = 923_417_969


def process_total(memory_bytes: int, preset: GpuSpec | None, rules: engines.EngineProfile) -> tuple[int, str | None]:
    """The total the engine's process sees, and --explain's line on which total and why: a preset's
    cuda_memory_bytes for an engine that takes its fraction of CUDA's total (vLLM, SGLang,
    TensorRT-LLM: torch.cuda.mem_get_info), else its nvidia-smi memory_bytes; --memory (no preset) as given."""
    if preset is None or not rules.sizes_from_cuda_total or preset.backend != "cuda":
        return memory_bytes, None
    if preset.cuda_memory_bytes is not None:
        cuda = preset.cuda_memory_bytes
        return cuda, (
            f"total = {cuda:,} B ({cuda / GiB:.2f} GiB), what CUDA reports on a {preset.name}, not nvidia-smi's"
            f" {memory_bytes:,} B: {rules.label} takes its fraction of CUDA's total ({preset.cuda_memory_source})"
        )
    return memory_bytes, (
        f"total = {memory_bytes:,} B ({memory_bytes / GiB:.2f} GiB), the {preset.name} preset's nvidia-smi total: it records no"
        f" CUDA total, and CUDA may report up to {CUDA_TOTAL_GAP_BYTES / GiB:.2f} GiB less (the largest gap among the"
        f" presets that record both totals, the h200's), which {rules.label} takes its fraction of"
        " (--memory SIZE with the total its log prints is exact)"
    )


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
    shared = shared_prefix_tokens(workload) if pool.window is None else 0  # held once, in the full-attention pool
    return shared + units * rules.peak_tokens_per_unit(workload, pool.window, workload.seq - shared)


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
    verdict: Literal["fits", "tight", "does not fit"]  # tight: fits, but by less than the engine's calibration error
    headroom_bytes: int  # per GPU: the budget less the batch's need (negative: the shortfall)
    margin_bytes: int  # per GPU: the engine's calibration error (0 for an exact rule)
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
    refused: str | None = None  # why the engine refuses to start with these options (then nothing fits)
    max_batch_by_context: dict[int, int]
    shared_prefix_tokens: int = 0  # of --shared-prefix at --seq: held once for the batch, in the engine's whole blocks
    shared_prefix_bytes_per_gpu: int = 0  # their bytes on the busiest GPU, once


def _headroom(layout: CacheLayout, workload: Workload, usable: int, pools: Sequence[Pool]) -> int:
    """Bytes per GPU the budget keeps beyond the workload's need: in the pool the workload fills most
    when the engine carves the memory into pools."""
    needs = _needs(layout, workload, usable, pools)
    if not pools:
        return usable - needs[0][0]
    return min((slots - need) * pool.bytes_per_token for (need, slots), pool in zip(needs, pools, strict=True))


def _shortfall(layout: CacheLayout, workload: Workload, usable: int, pools: Sequence[Pool]) -> int:
    """Bytes the workload's cache needs beyond the budget, or beyond each pool it overflows."""
    needs = _needs(layout, workload, usable, pools)
    if not pools:
        return max(0, needs[0][0] - usable)
    return sum(max(0, need - slots) * pool.bytes_per_token for (need, slots), pool in zip(needs, pools, strict=True))


def fit(model: ModelSpec, workload: Workload, budget_: Budget, max_seqs: int | None = None, details: bool = True) -> "FitReport":
    """Max batch at the workload's context, max context at its batch, and which limit binds each,
    under the engine's options as the budget assumed them (its defaults on the GPU filled in);
    with `details`, what `fit` shows besides: max batch at each standard context, and the context
    memory alone allows when the model's max positions binds (check and compare leave both out).
    A batch fits when its peak fits (transformers' sliding layers right after a long prefill)."""
    workload, rules, stage, pools, layout = _settled(model, workload, budget_)
    usable = budget_.usable_bytes
    exact_work = exact_workload(workload)
    exact = cache_layout(model, exact_work)  # the textbook twin's, whatever its batch
    states = state_layout(model, workload)
    by_memory = max_batch(model, workload, usable, pools, layout)
    caps = _caps(rules, workload, max_seqs)
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
    hybrid_log, refused = [], None
    if states.pages is not None and workload.pp == 1:
        state_layers = sum(kind is not None for kind in model.state_kinds())
        hybrid_log, refused = rules.hybrid_pool(model, workload, usable, stage, states.pages, state_layers)
    starts = budget_.refused is None  # too little free memory at start-up: no batch, context or engine log
    refused = budget_.refused or refused  # ... and its refusal comes first
    fits = budget_holds and _met(_needs(layout, workload, usable, pools)) and refused is None
    shortfall = _shortfall(layout, workload, usable, pools) + budget_.overcommitted_bytes
    headroom = _headroom(layout, workload, usable, pools) if fits else -shortfall
    margin = round(budget_.memory_bytes * rules.calibration_error_percent / 100) if rules.calibration_error_percent else 0
    by_memory_alone = limited_by == "max_positions" and budget_holds and starts and details
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
        fits=fits,
        verdict="does not fit" if not fits else "tight" if headroom < margin else "fits",
        headroom_bytes=headroom,
        margin_bytes=margin,
        weights_fit=budget_holds,
        shortfall_bytes=shortfall,
        max_batch=best_batch if budget_holds and starts else 0,
        max_batch_limit="max_seqs" if caps and min(caps) < by_memory else "memory",
        max_context=context if budget_holds and starts else 0,
        max_context_limit=limited_by,
        max_context_by_memory=max_context(model, workload, usable, UNBOUNDED_CONTEXT, pools, layout) if by_memory_alone else None,
        paging_waste_bytes_at_max_batch=waste,
        pools=pools,
        engine_log=rules.log_lines(model, workload, usable, stage) + hybrid_log + (list(states.pages.log) if states.pages else [])
        if starts
        else [],
        refused=refused,
        max_batch_by_context=_max_batch_at(model, workload, usable, pools, layout, contexts, caps) if details and starts else {},
        shared_prefix_tokens=shared_prefix_tokens(settled(model, workload)),
        shared_prefix_bytes_per_gpu=layout.shared_bytes(workload).per_gpu,
    )


def _max_batch_at(
    model: ModelSpec,
    workload: Workload,
    usable: int,
    pools: Sequence[Pool],
    layout: CacheLayout,
    contexts: Iterable[int],
    caps: Sequence[int],
) -> dict[int, int]:
    """Max batch at each context, under the engine's reshaping of the workload (its page rounding) and
    its caps on sequences (--max-seqs, the engine's own limit)."""
    reshape = engines.profile(workload.engine).reshape
    return {s: min([max_batch(model, reshape(workload, context=s), usable, pools, layout), *caps]) for s in sorted(contexts)}


def max_batch_curve(
    model: ModelSpec, workload: Workload, report: FitReport, max_seqs: int | None = None, points: int = 48
) -> dict[int, int]:
    """Max batch at `points` contexts spaced evenly on a log scale across fit's table, for its chart: max
    batch goes about as 1 / context, which straight lines between the table's few points do not show.
    The workload is settled and capped as `fit` settled it for `report`."""
    low, high = min(report.max_batch_by_context), max(report.max_batch_by_context)
    contexts = {round(low * (high / low) ** (i / (points - 1))) for i in range(points)} | set(report.max_batch_by_context)
    workload, rules, _, pools, layout = _settled(model, workload, report.budget)
    caps = _caps(rules, workload, max_seqs)
    return _max_batch_at(model, workload, report.budget.usable_bytes, pools, layout, contexts, caps)


def _settled(
    model: ModelSpec, workload: Workload, budget_: Budget
) -> tuple[Workload, engines.EngineProfile, list[StageLayer], list[Pool], CacheLayout]:
    """The workload under the engine's options as the budget assumed them and the block size it forces
    (vLLM's MLA backends), refused where the engine refuses it; its rules, the first stage's layers, the
    engine's pools and the cache layout, laid out once for every probe."""
    workload = workload.model_copy(update={"engine": budget_.engine})
    refuse_compressed(model, workload.engine)
    rules = engines.profile(workload.engine)
    workload = rules.settle(model, workload)
    rules.check_supported(model, workload, kv_dtype(model, workload))  # as estimate_kv: what the engine refuses
    stage = _first_stage_layers(model, workload)
    pools = rules.pools(model, workload, budget_.usable_bytes, stage)
    return workload, rules, stage, pools, cache_layout(model, workload)


def _caps(rules: engines.EngineProfile, workload: Workload, max_seqs: int | None) -> list[int]:
    """The caps on sequences: --max-seqs and the engine's own."""
    return [cap for cap in (max_seqs, rules.max_sequences(workload)) if cap]


def _first_stage_layers(model: ModelSpec, workload: Workload) -> list[StageLayer]:
    """The attention layers of the first pipeline stage, the one with the most layers, on one rank."""
    dtypes = cache_dtypes(model, workload)
    caches = layer_caches(model, workload.tp, workload.engine)
    own = {id(c): c for c in caches if c.kind != "none" and not c.shared}  # the layers of a kind share one LayerCache
    layers = {
        key: StageLayer(
            window=c.window,
            bytes_per_token=layer_bytes_per_token(c, *dtypes),
            chunked=c.kind == "chunked",
            key_bytes_per_token=layer_key_bytes_per_token(c, dtypes[0]),
        )
        for key, c in own.items()
    }  # and one StageLayer
    first = [layers[id(caches[i])] for i in pipeline_stages(model.layers, workload.pp)[0] if id(caches[i]) in layers]
    if workload.draft_bytes_per_token and workload.pp == 1:  # a draft model's layers, as one, beside the target's
        first.append(StageLayer(window=None, bytes_per_token=workload.draft_bytes_per_token))
    return first


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
