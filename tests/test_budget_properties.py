"""Invariants of the engines' memory budgets over random models, GPUs and options (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kvcalc import ModelSpec, Workload, engines
from kvcalc.capacity import budget, fit
from kvcalc.kvcache import batch_bytes
from kvcalc.spec import Engine, MoeSpec
from kvcalc.units import DType, GiB

BUDGET_ENGINES = ("textbook", "vllm", "sglang", "trtllm")  # hf and llamacpp budget as textbook does


@st.composite
def served_models(draw: st.DrawFn) -> ModelSpec:
    kv_heads = draw(st.sampled_from([2, 4, 8]))
    hidden = draw(st.sampled_from([1024, 2048, 4096]))
    window = draw(st.booleans())
    moe = draw(st.booleans())
    return ModelSpec(
        name="m",
        layers=draw(st.integers(2, 48)),
        heads=kv_heads * draw(st.sampled_from([1, 2, 4])),
        kv_heads=kv_heads,
        head_dim=draw(st.sampled_from([64, 128])),
        dtype=draw(st.sampled_from([DType.bf16, DType.fp16])),
        hidden=hidden,
        intermediate=draw(st.integers(hidden, 4 * hidden)),
        vocab=draw(st.integers(1000, 260_000)),
        sliding_window=draw(st.integers(64, 8192)) if window else None,
        layer_pattern=draw(st.sampled_from([["sliding", "full"], ["sliding"] * 5 + ["full"]])) if window else None,
        moe=MoeSpec(experts=8, experts_per_token=2, expert_intermediate=hidden, dense_layers=1) if moe else None,
        max_positions=draw(st.sampled_from([8192, 32768, 131072])),
    )


def _engine(name: str, fraction: float | None, **options: object) -> tuple[Engine, float | None]:
    """The engine with its own fraction set, and the --utilization textbook takes instead."""
    if name == "textbook":
        return Engine(), fraction
    option = engines.PROFILES[name].fraction_option
    assert option is not None
    return Engine(name=name, **({option: fraction} if fraction else {}), **options), None


fractions = st.floats(0.05, 0.98)
memories = st.integers(4 * GiB, 200 * GiB)


@settings(max_examples=60)
@given(served_models(), st.sampled_from(BUDGET_ENGINES), fractions, memories, st.sampled_from([1, 2]), st.sampled_from([1, 2]))
def test_a_budget_never_exceeds_memory_times_its_fraction(
    model: ModelSpec, name: str, fraction: float, memory: int, tp: int, pp: int
) -> None:
    engine, utilization = _engine(name, fraction)
    b = budget(model, Workload(seq=4096, tp=tp, pp=pp, engine=engine), memory, utilization=utilization)
    assert b.usable_bytes <= memory * fraction
    assert b.usable_bytes + sum(term.bytes for term in b.terms) == b.memory_bytes == memory  # every byte accounted for
    assert all(term.bytes >= 0 for term in b.terms)


@settings(max_examples=60)
@given(served_models(), st.sampled_from(["vllm", "trtllm"]), st.integers(1, 65_536), st.integers(1, 65_536), memories)
def test_more_profiled_tokens_never_leave_more_kv_memory(model: ModelSpec, name: str, t1: int, t2: int, memory: int) -> None:
    option = {"vllm": "max_num_batched_tokens", "trtllm": "max_num_tokens"}[name]

    def usable(tokens: int) -> int:
        engine, _ = _engine(name, None, **{option: tokens})
        return budget(model, Workload(seq=4096, engine=engine), memory).usable_bytes

    fewer, more = sorted((t1, t2))
    assert usable(more) <= usable(fewer)


@settings(max_examples=40)
@given(
    served_models(),
    st.sampled_from(BUDGET_ENGINES),
    st.integers(1, 40_000),
    memories,
    st.sampled_from([None, 0.5, 0.9]),
)
def test_fit_never_overcommits(model: ModelSpec, name: str, seq: int, memory: int, fraction: float | None) -> None:
    engine, utilization = _engine(name, fraction)
    work = Workload(seq=seq, engine=engine)
    b = budget(model, work, memory, utilization=utilization)
    report = fit(model, work, b)
    assert sum(term.bytes for term in b.terms) + b.usable_bytes == memory
    if not report.max_batch:
        return
    at_max = work.model_copy(update={"batch": report.max_batch, "engine": b.engine})
    rules = engines.profile(b.engine)
    if report.pools:  # every pool holds the batch, and the pools hold no more than the budget
        assert sum(pool.bytes for pool in report.pools) <= b.usable_bytes
        for pool in report.pools:
            assert report.max_batch * rules.peak_tokens_per_unit(at_max, pool.window, seq) <= pool.tokens
    else:
        assert batch_bytes(model, at_max, peak=True).per_gpu <= b.usable_bytes


@settings(max_examples=40)
@given(served_models(), st.sampled_from(BUDGET_ENGINES), st.integers(1, 40_000), st.integers(1, 64), memories)
def test_the_verdict_follows_headroom_and_margin(model: ModelSpec, name: str, seq: int, batch: int, memory: int) -> None:
    engine, _ = _engine(name, None)
    work = Workload(seq=seq, batch=batch, engine=engine)
    report = fit(model, work, budget(model, work, memory))
    percent = engines.PROFILES[name].calibration_error_percent
    assert report.margin_bytes == (round(memory * percent / 100) if percent else 0)
    if not report.fits:
        assert report.verdict == "does not fit" and report.headroom_bytes == -report.shortfall_bytes
    else:
        assert report.headroom_bytes >= 0
        assert report.verdict == ("tight" if report.headroom_bytes < report.margin_bytes else "fits")


@settings(max_examples=40)
@given(served_models(), st.sampled_from([2, 4, 8]), memories, st.sampled_from(["h100-sxm", "a100-80gb", "rtx4090", None]))
def test_nvlink_never_leaves_more_than_pcie(model: ModelSpec, tp: int, memory: int, gpu: str | None) -> None:
    # vLLM's tensor-parallel buffers over NVLink (or unknown links) are never smaller than over PCIe
    def usable(link: str | None) -> int:
        work = Workload(seq=4096, tp=tp, engine=Engine(name="vllm", vllm_version="0.19"))
        return budget(model, work, memory, gpu_name=gpu, interconnect=link).usable_bytes  # type: ignore[arg-type]

    assert usable("nvlink") <= usable("pcie") and usable(None) <= usable("pcie-p2p")
