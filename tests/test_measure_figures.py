"""The rate estimator and the verdict, on a synthetic noisy timer: no torch, no real clock."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvcalc.measure.figures import REPEATS, ROUNDS, TOLERANCE, interleaved, steady, summarise
from kvcalc.measure.plan import plan_measurement, truncated
from kvcalc.measure.report import MeasureReport, judged_report, run_bandwidth, variant_result
from kvcalc.presets import load_model
from kvcalc.spec import Workload

# The synthetic machine: what one run of each task takes when nothing disturbs it (seconds).
TRUE_SECONDS = {
    "read sdpa": 0.020, "read grouped": 0.030, "copy": 0.010,
    "hot sdpa": 0.004, "hot grouped": 0.002,
    "step sdpa": 0.050, "step grouped": 0.040, "repeat_kv": 0.400,
}  # fmt: skip
READ_BYTES, COPY_BYTES, HOT_FLOPS = 128 * 2**20, 128 * 2**20, 10**8


class NoisyTimer:
    """Each run takes its true time plus up to `jitter` of it; the runs listed in `slow` take `factor` times longer."""

    def __init__(self, jitter: float = 0.05, slow: set[int] | None = None, factor: float = 100.0, seed: int = 0) -> None:
        self.random, self.jitter, self.slow, self.factor = random.Random(seed), jitter, slow or set(), factor
        self.calls = 0

    def __call__(self, task: Callable[[], object]) -> float:
        seconds = float(task())  # type: ignore[arg-type]  # a synthetic task returns its true time
        self.calls += 1
        seconds *= 1 + self.random.uniform(0, self.jitter)
        return seconds * self.factor if self.calls in self.slow else seconds


def tasks() -> dict[str, Callable[[], object]]:
    return {name: (lambda s=seconds: s) for name, seconds in TRUE_SECONDS.items() if name != "repeat_kv"}


def sampled(timer: NoisyTimer) -> dict[str, list[float]]:
    samples = interleaved(tasks(), ROUNDS, REPEATS, timer)
    return samples | interleaved({"repeat_kv": lambda: TRUE_SECONDS["repeat_kv"]}, 1, 3, timer)


def report_of(*variant_samples: dict[str, list[float]], flops: int = 2 * 10**9) -> MeasureReport:
    """The report the worker would build from these samples (one dict per variant), for llama3-8b on 2 layers at 8192 tokens."""
    plan = plan_measurement(truncated(load_model("llama3-8b"), 2), Workload(seq=8192, kv_dtype="fp32"), 2**32)
    bandwidth, figures = run_bandwidth(list(variant_samples), READ_BYTES, COPY_BYTES)
    results = [
        variant_result(
            f"v{i}", plan, {"allocated_bytes": plan.cache_bytes, "allocated_state_bytes": 0, "samples": samples, "hot_flops": HOT_FLOPS, "sdpa_backend": "math"},
            bandwidth, flops, None,
        )
        for i, samples in enumerate(variant_samples)
    ]  # fmt: skip
    report = MeasureReport(
        model="llama3-8b", device="cpu", device_name="synthetic", torch_version="-", threads=2, load_average=0.0,
        busy=False, gpu_preset=None, copy_bandwidth_bytes_per_s=bandwidth["copy"],
        read_bandwidth_bytes_per_s=bandwidth["read"], tolerance=TOLERANCE, judged=True, why=[], run_figures=figures,
        variants=results,
    )  # fmt: skip
    return judged_report(report)


def test_interleaving_runs_every_task_in_turn_after_one_warm_up() -> None:
    order: list[str] = []
    samples = interleaved({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, 2, 2, lambda t: t() or 1.0)
    assert order == ["a", "b"] + ["a", "a", "b", "b"] * 2
    assert samples == {"a": [1.0] * 4, "b": [1.0] * 4}


def test_one_slow_sample_moves_the_prediction_less_than_the_tolerance() -> None:
    clean = report_of(sampled(NoisyTimer()))
    assert clean.judged and clean.variants[0].fastest_over_predicted == pytest.approx(1.0, rel=0.05)
    for slow_call in range(1, ROUNDS * REPEATS * len(tasks()) + 1):  # each timed run in turn is the slow one
        disturbed = report_of(sampled(NoisyTimer(slow={slow_call})))
        ratio = disturbed.variants[0].predicted_seconds / clean.variants[0].predicted_seconds
        assert 1 / TOLERANCE <= ratio <= TOLERANCE, slow_call
        assert disturbed.read_bandwidth_bytes_per_s == pytest.approx(clean.read_bandwidth_bytes_per_s, rel=0.06)
        assert disturbed.judged, disturbed.why  # one slow sample of ten is no reason to give up


def test_the_estimate_is_the_true_rate_within_the_jitter() -> None:
    report = report_of(sampled(NoisyTimer(jitter=0.05)))
    assert report.read_bandwidth_bytes_per_s == pytest.approx(READ_BYTES / TRUE_SECONDS["read sdpa"], rel=0.05)
    assert report.variants[0].matmul_flops_per_s == pytest.approx(HOT_FLOPS / TRUE_SECONDS["hot grouped"], rel=0.05)


def test_a_drifting_machine_cannot_be_judged() -> None:
    """From round 3 on every run takes 3x longer: the figures spread, and the run says so instead of a ratio."""
    per_round = REPEATS * len(tasks())
    report = report_of(sampled(NoisyTimer(slow=set(range(2 * per_round + 1, 10**6)), factor=3.0)))
    assert not report.judged
    assert any(why.startswith("read bandwidth (v0 rest on it): read sdpa did not hold still") for why in report.why)
    assert report.variants[0].measured_over_predicted is None and report.variants[0].fastest_over_predicted is None


def test_a_bandwidth_that_moved_between_variants_cannot_be_judged() -> None:
    """Each variant's own rounds held still, but the second variant's reads ran 2x slower: the run's
    figures disagree, and pooling them would have hidden it (the lower quartile comes from the first)."""
    first, second = sampled(NoisyTimer()), sampled(NoisyTimer(seed=1))
    for key in ("read sdpa", "read grouped"):
        second[key] = [s * 2 for s in second[key]]
    report = report_of(first, second, first)
    assert not report.judged
    assert report.why[0].startswith("the read bandwidth moved 1.9") and report.why[0].endswith("in v1's")
    assert report_of(first, sampled(NoisyTimer(seed=1)), first).judged


def test_a_step_faster_than_its_roofline_cannot_be_judged() -> None:
    """Compute rates measured 10x and 100x too low (every hot sample slow alike) hold still, but the step beats them."""
    samples = sampled(NoisyTimer(jitter=0.0))
    samples["hot sdpa"] = [s * 10 for s in samples["hot sdpa"]]
    samples["hot grouped"] = [s * 100 for s in samples["hot grouped"]]
    report = report_of(samples)
    assert not report.judged
    # the rate came from hot sdpa, now 10x slow: 2e9 FLOPs at 1e8 / 0.04 s predict 0.8 s for a 0.04 s step
    assert report.why == [
        "v0: grouped ran 20.00x faster than the roofline of this run's own figures (tolerance 1.33x)"
        ": its compute figure was measured too low"
    ]


def test_only_the_figures_that_set_the_bound_must_hold_still() -> None:
    """The compute rate wavers (its later half 3x slower): a compute-bound step cannot be judged, but a
    memory-bound one far below the ridge can, as no rate within that spread would change its roofline."""
    samples = sampled(NoisyTimer())
    for key in ("hot sdpa", "hot grouped"):
        samples[key] = samples[key][:4] + [s * 3 for s in samples[key][4:]]
    compute_bound = report_of(samples)  # 2e9 FLOPs: 40 ms of compute against 20 ms of reading
    assert not compute_bound.judged and compute_bound.why[0].startswith("v0: hot grouped did not hold still")
    memory_bound = report_of(samples, flops=2 * 10**8)  # 4 ms of compute (12 ms at the median) against 20 ms
    assert memory_bound.variants[0].bound == "memory" and memory_bound.judged, memory_bound.why


@given(
    clean=st.lists(st.floats(1.0, TOLERANCE), min_size=4, max_size=40),
    outlier=st.floats(1e-3, 1e6),
)
def test_steady_time_moves_one_rank_at_most(clean: list[float], outlier: float) -> None:
    """Adding any one sample leaves the steady time between two neighbouring clean samples."""
    ordered = sorted(clean)
    before, after = steady(clean), steady([*clean, outlier])
    index = (len(ordered) - 1) // 4  # the lower quartile's rank
    assert before == ordered[index]
    assert ordered[max(0, index - 1)] <= after <= ordered[min(len(ordered) - 1, index + 1)]
    if outlier >= max(clean):  # a slow sample never makes the figure faster
        assert after >= before


def test_summary_holds_only_within_the_tolerance() -> None:
    assert summarise("x", [1.0] * 6 + [50.0] * 4).holds  # median still with the fast half
    assert not summarise("x", [1.0] * 4 + [1.5] * 6).holds  # the median drifted 1.5x


def test_a_run_whose_fastest_path_is_repeat_kv_is_still_judged() -> None:
    """MQA on a CPU can run the naive repeat_kv path fastest (one KV head to copy): the verdict reads its
    steady time as for the other paths (it used to stop with StopIteration, looking for its step figure)."""
    samples = sampled(NoisyTimer(jitter=0.0))
    samples["repeat_kv"] = [s * 0.0975 for s in samples["repeat_kv"]]  # 0.039 s: just faster than grouped (0.040)
    report = report_of(samples)
    assert report.variants[0].fastest_path == "repeat_kv"
    assert "step repeat_kv" in [f.name for f in report.variants[0].figures]
    assert report.judged, report.why
