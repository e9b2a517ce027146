"""Invariants over random shapes (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kvcalc import ModelSpec, Workload, count_params, estimate_kv, sequence_bytes
from kvcalc.capacity import UNBOUNDED_CONTEXT, budget, max_batch, max_context
from kvcalc.latency import decode, read_per_step
from kvcalc.spec import GpuSpec, MoeSpec
from kvcalc.units import PACKING, DType, GiB
from kvcalc.weights import weight_bytes, weight_format

dtypes = st.sampled_from([DType.fp32, DType.bf16, DType.fp8, DType.q8_0, DType.q4_0, DType.int4])


@st.composite
def models(draw: st.DrawFn, window: bool = False) -> ModelSpec:
    kv_heads = draw(st.sampled_from([1, 2, 4, 8]))
    groups = draw(st.sampled_from([1, 2, 4]))
    return ModelSpec(
        name="m",
        layers=draw(st.integers(1, 48)),
        heads=kv_heads * groups,
        kv_heads=kv_heads,
        head_dim=draw(st.sampled_from([32, 64, 128])),
        dtype=draw(dtypes),
        sliding_window=draw(st.integers(1, 4096)) if window else None,
        layer_pattern=draw(st.sampled_from([["sliding"], ["sliding", "full"], ["full", "sliding"]])) if window else None,
        hidden=1024,
        intermediate=4096,
        vocab=32000,
    )


@given(models(), st.integers(1, 100_000), st.integers(1, 100_000), st.integers(1, 64))
def test_bytes_grow_with_seq_and_batch(model: ModelSpec, s1: int, s2: int, batch: int) -> None:
    small, large = sorted((s1, s2))
    assert sequence_bytes(model, Workload(seq=small)).total <= sequence_bytes(model, Workload(seq=large)).total
    one = estimate_kv(model, Workload(seq=small)).bytes_per_batch
    assert estimate_kv(model, Workload(seq=small, batch=batch)).bytes_per_batch == batch * one


@given(models(), st.integers(1, 50_000))
def test_mqa_le_gqa_le_mha(model: ModelSpec, seq: int) -> None:
    def with_kv(n: int) -> int:
        return estimate_kv(model.model_copy(update={"kv_heads": n}), Workload(seq=seq)).bytes_per_sequence

    assert with_kv(1) <= with_kv(model.kv_heads) <= with_kv(model.heads)


@given(models(window=True), st.integers(1, 50_000))
def test_window_never_exceeds_full_twin(model: ModelSpec, seq: int) -> None:
    twin = model.model_copy(update={"sliding_window": None, "layer_pattern": None})
    assert estimate_kv(model, Workload(seq=seq)).bytes_per_sequence <= estimate_kv(twin, Workload(seq=seq)).bytes_per_sequence


@given(models(window=True), st.integers(1, 50_000), st.sampled_from([1, 16, 32, 256]))
def test_paged_at_least_exact(model: ModelSpec, seq: int, block: int) -> None:
    kv = estimate_kv(model, Workload(seq=seq, block_size=block))
    assert kv.bytes_per_batch >= kv.exact_bytes_per_batch
    assert kv.paging_waste_bytes == kv.bytes_per_batch - kv.exact_bytes_per_batch


@settings(max_examples=50)
@given(models(window=True), st.integers(1, 40_000), st.integers(10**6, 10**11))
def test_fit_never_overcommits(model: ModelSpec, seq: int, usable: int) -> None:
    work = Workload(seq=seq)
    per_seq = sequence_bytes(model, work).per_gpu
    batch = max_batch(model, work, usable)
    assert batch * per_seq <= usable
    assert batch == UNBOUNDED_CONTEXT or usable < (batch + 1) * per_seq  # the search stops at 2^31 sequences


@settings(max_examples=50)
@given(models(window=True), st.integers(1, 64), st.integers(10**6, 10**10))
def test_max_context_is_exact(model: ModelSpec, batch: int, usable: int) -> None:
    work, limit = Workload(seq=1, batch=batch), 1_000_000
    context = max_context(model, work, usable, limit)
    if context:
        assert batch * sequence_bytes(model, work, context).per_gpu <= usable
    if context < limit:
        assert batch * sequence_bytes(model, work, context + 1).per_gpu > usable


@given(models(), st.integers(1, 32_000), st.integers(1, 64))
def test_max_batch_monotone_in_seq_and_kv_heads(model: ModelSpec, seq: int, extra: int) -> None:
    usable = 40 * 2**30
    assert max_batch(model, Workload(seq=seq + extra), usable) <= max_batch(model, Workload(seq=seq), usable)
    mha = model.model_copy(update={"kv_heads": model.heads})
    assert max_batch(mha, Workload(seq=seq), usable) <= max_batch(model, Workload(seq=seq), usable)


GPU = GpuSpec(name="g", memory_bytes=80 * 2**30, bandwidth_bytes_per_s=3_350_000_000_000, bf16_flops=989 * 10**12)


@given(models(), st.integers(1, 32_000), st.integers(1, 256))
def test_decode_time_monotone_in_batch_and_seq(model: ModelSpec, seq: int, batch: int) -> None:
    base = decode(model, Workload(seq=seq, batch=batch), GPU).seconds_per_token
    assert decode(model, Workload(seq=seq + 1, batch=batch), GPU).seconds_per_token >= base
    assert decode(model, Workload(seq=seq, batch=batch + 1), GPU).seconds_per_token >= base


@st.composite
def moe_models(draw: st.DrawFn) -> ModelSpec:
    base = draw(models())
    moe = {"experts": draw(st.sampled_from([8, 32, 128])), "experts_per_token": 2, "expert_intermediate": 1024}
    fields = {"weight_dtype": draw(dtypes), "embeddings_dtype": draw(dtypes), "tied_embeddings": draw(st.booleans())}
    return base.model_copy(update=fields | {"moe": MoeSpec(**moe, expert_dtype=draw(dtypes))})


@given(moe_models(), dtypes)
def test_weights_in_one_dtype_are_that_dtype_of_every_parameter(model: ModelSpec, dtype: DType) -> None:
    """Counting the weights per part (layers, embeddings, experts) loses no parameter and adds no byte."""
    params = count_params(model)
    assert params is not None
    assert weight_bytes(params, weight_format(model, dtype)) == PACKING[dtype].bytes_for(params.total)
    mixed = weight_bytes(params, weight_format(model))
    cheapest, dearest = (
        min(PACKING[d].bytes_for(params.total) for d in DType),
        max(PACKING[d].bytes_for(params.total) for d in DType),
    )
    assert cheapest - 3 * 64 <= mixed <= dearest  # a short last group per part costs at most its scales


@given(moe_models(), st.integers(1, 256))
def test_a_decode_step_reads_no_more_than_every_weight(model: ModelSpec, batch: int) -> None:
    params = count_params(model)
    assert params is not None
    read = read_per_step(model, params, batch)
    assert read.routed_experts <= params.routed_experts and read.total <= params.total
    assert weight_bytes(read, weight_format(model)) <= weight_bytes(params, weight_format(model))


@st.composite
def weighed_models(draw: st.DrawFn) -> ModelSpec:
    """Dense or MoE, tied or not, counted from the shapes, with a published count, or with no shapes."""
    model = draw(st.one_of(models(), moe_models())).model_copy(update={"tied_embeddings": draw(st.booleans())})
    counted = count_params(model)
    assert counted is not None
    source = draw(st.sampled_from(["shapes", "published", "count only"]))
    if source == "published":
        least = max(counted.embeddings + counted.routed_experts, 1)  # a count below these is refused
        return model.model_copy(update={"params": draw(st.integers(least, counted.total + 10**9))})
    if source == "count only":
        return model.model_copy(
            update={"hidden": None, "intermediate": None, "vocab": None, "moe": None, "params": counted.total}
        )
    return model


@given(weighed_models(), st.sampled_from([1, 2, 4, 8]), st.data())
def test_pipeline_weights_per_gpu_cover_the_model(model: ModelSpec, tp: int, data: st.DataObject) -> None:
    """A GPU holds the largest stage / tp: together the GPUs hold at least every weight, one GPU never
    less than an even share, and never more than the whole model's (with a tied table's copy)."""
    pp = data.draw(st.integers(1, model.layers))
    params = count_params(model)
    assert params is not None
    fmt = weight_format(model)
    total = weight_bytes(params, fmt)
    per_gpu = budget(model, Workload(seq=1, tp=tp, pp=pp), GiB).weights_bytes
    assert per_gpu * tp * pp >= total
    assert per_gpu >= total / (tp * pp)
    copy = params.embeddings if model.tied_embeddings and pp > 1 else 0  # the last stage's copy of the table
    with_copy = params.model_copy(update={"total": params.total + copy, "embeddings": params.embeddings + copy})
    assert per_gpu <= -(-weight_bytes(with_copy, fmt) // tp)
    if pp == 1:
        assert per_gpu == -(-total // tp)
