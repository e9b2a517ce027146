"""fit's fast path against the search it replaced: the same bytes, max batch and max context on
random models, workloads, engines and budgets (hypothesis).

The reference below is the code before the fast path (kvcalc 2026-12, before issue 15): bytes
summed layer by layer at every probe, and a gallop-then-bisect search from 1. The fast path groups
the layers by window once (kvcache.cache_layout) and interpolates (capacity._largest).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from kvcalc import ModelSpec, Workload, engines
from kvcalc.capacity import UNBOUNDED_CONTEXT, _first_stage_layers, _largest, max_batch, max_context
from kvcalc.engines import Pool
from kvcalc.errors import InvalidInput
from kvcalc.kvcache import (
    batch_bytes,
    kv_dtype,
    layer_bytes_per_token,
    layer_caches,
    pipeline_stages,
    settled,
    state_layout,
    tokens_held,
)
from kvcalc.spec import Engine, cache_dtypes
from kvcalc.units import DType, GiB


def reference_batch_bytes(model: ModelSpec, workload: Workload, peak: bool) -> tuple[int, int]:
    """(per GPU, total): every layer's KV, state and fixed bytes, summed per pipeline stage, as before issue 15."""
    workload = settled(model, workload)
    rules = engines.profile(workload.engine)
    dtypes = cache_dtypes(model, workload)
    units = rules.allocation_units(workload)
    fixed = rules.fixed_bytes(model, workload, dtypes[0]) // model.layers
    kv = [
        layer_bytes_per_token(layer, *dtypes) * tokens_held(layer, workload, peak=peak) if layer.kind != "none" else 0
        for layer in layer_caches(model, workload.tp, workload.engine)
    ]
    state = state_layout(model, workload).layer_bytes
    per_layer = [units * k + workload.batch * s + fixed for k, s in zip(kv, state, strict=True)]
    per_stage = [sum(per_layer[i] for i in stage) for stage in pipeline_stages(model.layers, workload.pp)]
    return max(per_stage), sum(per_stage) * workload.tp


def reference_holds(model: ModelSpec, workload: Workload, usable: int, pools: Sequence[Pool]) -> bool:
    if not pools:
        return reference_batch_bytes(model, workload, peak=True)[0] <= usable
    rules = engines.profile(workload.engine)
    units = rules.allocation_units(workload)
    return all(
        units * (pool.per_sequence or rules.peak_tokens_per_unit(workload, pool.window, workload.seq)) <= pool.tokens
        for pool in pools
    )


def reference_largest(fits: Callable[[int], bool], limit: int) -> int:
    """The search before issue 15: gallop up from 1, then bisect."""
    if not fits(1):
        return 0
    low, high = 1, min(2, limit)
    while high < limit and fits(high):
        low, high = high, min(2 * high, limit)
    if fits(high):
        return high
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


MAMBA2 = {"mamba2": {"heads": 8, "head_dim": 16, "state_size": 16, "groups": 2, "conv_kernel": 4}}


@st.composite
def models(draw: st.DrawFn) -> ModelSpec:
    """Full attention, sliding windows, chunked local layers, MLA, layers sharing a cache, and
    Mamba-2 state layers beside attention."""
    kv_heads = draw(st.sampled_from([1, 2, 4, 8]))
    layers = draw(st.integers(1, 64))
    window = draw(st.sampled_from([None, *range(1, 9000, 997)]))
    kind = draw(st.sampled_from(["plain", "mla", "chunked", "hybrid"])) if window is None else "window"
    patterns = {
        "window": [None, ["sliding", "full"], ["sliding"] * 5 + ["full"], ["full", "sliding"]],
        "chunked": [["chunked", "chunked", "chunked", "full"]],
        "hybrid": [["mamba2", "mlp", "mamba2", "full"], ["full+mamba2"], ["mamba2", "sliding", "full"]],
    }
    pattern = draw(st.sampled_from(patterns[kind])) if kind in patterns else None
    fields: dict[str, object] = {
        "name": "m",
        "layers": layers,
        "heads": kv_heads * draw(st.sampled_from([1, 2, 4])),
        "kv_heads": kv_heads,
        "head_dim": draw(st.sampled_from([64, 128, 256])),
        "dtype": draw(st.sampled_from(["bf16", "fp16", "fp32"])),
        "sliding_window": window or (draw(st.integers(1, 9000)) if pattern and "sliding" in pattern else None),
        "layer_pattern": pattern,
        "max_positions": draw(st.sampled_from([None, 4096, 131072])),
    }
    if kind == "mla":
        fields["mla"] = {"kv_lora_rank": 512, "qk_rope_head_dim": 64}
    if kind == "chunked":
        fields["attention_chunk_size"] = draw(st.sampled_from([1, 100, 8192]))
    if kind == "hybrid":
        fields["state"] = MAMBA2
    if kind == "plain" and layers > 1:
        fields["kv_shared_layers"] = draw(st.integers(0, layers - 1))  # Gemma-3n: later layers reuse a cache
    return ModelSpec.model_validate(fields)


@st.composite
def engines_(draw: st.DrawFn) -> tuple[Engine, DType | None, int | None]:
    """An engine with random options, a cache dtype it takes (None: the model's) and a --block-size."""
    name = draw(st.sampled_from(sorted(engines.PROFILES)))
    block = draw(st.sampled_from([None, 1, 16, 256]))
    options: dict[str, object] = {}
    if name == "hf":
        options = draw(st.sampled_from([{}, {"hf_version": 4}, {"max_cache_len": 200_000}]))
        block = None
    elif name == "vllm":
        options = {"max_num_batched_tokens": draw(st.sampled_from([None, 512, 2048, 8192]))}
    elif name == "llamacpp":
        options = {"swa_full": draw(st.sampled_from([None, False])), "kv_unified": draw(st.sampled_from([None, True]))}
        options["ubatch"] = draw(st.sampled_from([None, 64, 512]))
        block = None
    elif name == "sglang":
        options = {
            "page_size": draw(st.sampled_from([None, 16, 64])),
            "swa_full_tokens_ratio": draw(st.sampled_from([None, 0.5])),
        }
        block = None
    elif name == "trtllm":
        options = {
            "tokens_per_block": draw(st.sampled_from([None, 16, 64])),
            "max_seq_len": draw(st.sampled_from([None, 200_000])),
        }
        block = None
    kv = draw(st.sampled_from([None, DType.fp8])) if name in ("textbook", "vllm", "sglang", "trtllm", "hf") else None
    return Engine(name=name, **{k: v for k, v in options.items() if v is not None}), kv, block


@settings(max_examples=300, deadline=None)
@given(
    models(),
    engines_(),
    st.integers(1, 140_000),
    st.integers(1, 256),
    st.sampled_from([(1, 1), (2, 1), (1, 2), (2, 3), (1, 4)]),
    st.integers(0, 300 * GiB),
    st.sampled_from([None, DType.q8_0, DType.fp8]),
)
def test_fast_path_equals_the_search_it_replaced(
    model: ModelSpec,
    engine: tuple[Engine, DType | None, int | None],
    seq: int,
    batch: int,
    split: tuple[int, int],
    usable: int,
    v_dtype: DType | None,
) -> None:
    (options, kv, block), (tp, pp) = engine, split
    work = Workload(
        seq=seq * batch if options.name == "llamacpp" else seq,
        batch=batch,
        tp=tp,
        pp=pp,
        kv_dtype=kv,
        v_dtype=v_dtype if options.name == "textbook" else None,  # a V cache type of its own (textbook takes any)
        block_size=block,
        engine=options,
    )
    rules = engines.profile(options)
    try:
        rules.check_supported(model, work, kv_dtype(model, work))
        pools = rules.pools(model, work, usable, _first_stage_layers(model, work))
    except InvalidInput:  # a split or option the engine refuses: nothing to compare
        assume(False)
    for peak in (False, True):
        fast = batch_bytes(model, work, peak=peak)
        assert (fast.per_gpu, fast.total) == reference_batch_bytes(model, work, peak)
    batches = reference_largest(lambda b: reference_holds(model, rules.reshape(work, batch=b), usable, pools), UNBOUNDED_CONTEXT)
    assert max_batch(model, work, usable, pools) == batches
    limit = rules.context_limit(model, work)[0] or UNBOUNDED_CONTEXT
    contexts = reference_largest(lambda c: reference_holds(model, rules.reshape(work, context=c), usable, pools), limit)
    assert max_context(model, work, usable, limit, pools) == contexts


@settings(max_examples=500)
@given(
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 50)), min_size=1, max_size=4),
    st.integers(1, 10**7),
    st.integers(1, 10**6),
)
def test_the_search_finds_the_last_n_whose_needs_are_met(pieces: list[tuple[int, int]], capacity: int, limit: int) -> None:
    """Needs that are staircases (pages) of any slope, summed: the interpolating search and a plain
    bisection agree."""

    def need(n: int) -> int:
        return sum(slope * -(-n // (step + 1)) * (step + 1) for slope, step in pieces)

    assert _largest(lambda n: [(need(n), capacity)], limit) == reference_largest(lambda n: need(n) <= capacity, limit)
