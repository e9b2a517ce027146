"""The largest batch within --max-tpot-ms / --max-ttft-ms and the cost per million tokens: the search
against brute force, the cost against its formula, and the CLI's answers, exit codes and messages."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvcalc import presets
from kvcalc.errors import InvalidInput
from kvcalc.latency import decode, prefill
from kvcalc.spec import Engine, Workload
from kvcalc.throughput import LatencyTarget, cost, largest_meeting, per_million, plan

MODELS = {name: presets.load_model(name) for name in ("llama3-8b", "mixtral-8x7b", "gemma2-9b", "deepseek-v2-lite")}
GPUS = {name: presets.load_gpu(name) for name in ("h100-sxm", "a100-80gb", "l40s")}


@settings(max_examples=300)
@given(st.integers(0, 400), st.integers(-5, 500))
def test_largest_meeting_is_the_last_n_that_meets(limit: int, last: int) -> None:
    """For any threshold predicate, the bisection lands on the brute-force answer."""
    brute = max((n for n in range(1, limit + 1) if n <= last), default=0)
    assert largest_meeting(lambda n: n <= last, limit) == brute


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(sorted(MODELS)),
    st.sampled_from(sorted(GPUS)),
    st.sampled_from(["textbook", "vllm"]),
    st.integers(1, 32_768),
    st.integers(1, 48),
    st.one_of(st.none(), st.floats(2.0, 80.0)),
    st.one_of(st.none(), st.floats(10.0, 20_000.0)),
    st.floats(0.01, 1.0),
)
def test_plan_is_exact_against_brute_force(
    model: str, gpu: str, engine: str, seq: int, memory_batch: int, tpot_ms: float | None, ttft_ms: float | None,
    prompt_share: float,
) -> None:  # fmt: skip
    """The planned batch is the largest B <= memory's whose decode and burst prefill meet the targets."""
    spec, device = MODELS[model], GPUS[gpu]
    work = Workload(seq=seq, batch=1, engine=Engine(name=engine))
    prompt = max(1, int(seq * prompt_share))
    target = LatencyTarget(
        max_tpot_seconds=None if tpot_ms is None else tpot_ms / 1e3,
        max_ttft_seconds=None if ttft_ms is None else ttft_ms / 1e3,
        prompt=prompt,
    )
    found = plan(spec, work, device, memory_batch, target)

    def meets(batch: int) -> bool:
        step = decode(spec, work.model_copy(update={"batch": batch}), device)
        first = prefill(spec, work.model_copy(update={"batch": batch, "seq": prompt}), device)
        return (tpot_ms is None or step.expected_seconds_per_token <= tpot_ms / 1e3) and (
            ttft_ms is None or first.seconds <= ttft_ms / 1e3
        )

    brute = max((b for b in range(1, memory_batch + 1) if meets(b)), default=0)
    assert found.batch == brute
    if brute:
        assert found.tokens_per_s == pytest.approx(brute / found.seconds_per_token)
    assert (found.limit == "memory") == (brute == memory_batch)


@given(st.floats(0.01, 100.0), st.integers(1, 16), st.floats(1.0, 1e6))
def test_cost_equals_the_formula(price: float, gpus: int, tokens_per_s: float) -> None:
    """price / (tokens/s * 3600) * 1e6 with the price of every GPU, for output and prompt tokens."""
    first = prefill(MODELS["llama3-8b"], Workload(seq=2048, batch=4), GPUS["h100-sxm"])
    bill = cost([price] * gpus, tokens_per_s, first)
    assert bill.cost_per_million_output_tokens == pytest.approx(price * gpus / (tokens_per_s * 3600) * 1e6)
    prompt_rate = 4 * 2048 / first.seconds
    assert bill.cost_per_million_input_tokens == pytest.approx(price * gpus / (prompt_rate * 3600) * 1e6)


def test_per_million_worked_example() -> None:
    """$3.60 an hour at 1,000 tokens/s: 3.6 million tokens an hour, so $1 per million."""
    assert per_million(3.6, 1000.0) == pytest.approx(1.0)


def test_cost_refuses_a_price_that_is_not_positive() -> None:
    first = prefill(MODELS["llama3-8b"], Workload(seq=128, batch=1), GPUS["h100-sxm"])
    with pytest.raises(InvalidInput, match="must be a positive, finite price per GPU-hour"):
        cost([0.0], 100.0, first)


def test_decode_max_tpot_batch_is_the_last_within_the_target(cli) -> None:
    doc = cli.json("decode", "--model", "llama3-8b", "--gpu", "h100-sxm", "--seq", "8k", "--max-tpot-ms", "20")
    found = doc["throughput"]
    assert found["limit"] == "max_tpot"
    assert found["seconds_per_token"] <= 0.020
    batch = found["batch"]
    over = cli.json("decode", "--model", "llama3-8b", "--gpu", "h100-sxm", "--seq", "8k", "--batch", str(batch + 1))
    assert over["decode"]["expected_seconds_per_token"] > 0.020
    assert found["tokens_per_s"] == pytest.approx(batch / found["seconds_per_token"])
    assert found["memory_batch"] > batch  # memory would hold more


def test_decode_max_ttft_binds_with_a_prompt(cli) -> None:
    doc = cli.json(
        "decode", "--model", "llama3-8b", "--gpu", "h100-sxm", "--seq", "8k", "--max-tpot-ms", "50",
        "--max-ttft-ms", "300", "--prompt", "1k",
    )  # fmt: skip
    found = doc["throughput"]
    assert found["limit"] == "max_ttft"
    assert found["prompt"] == 1024
    assert found["ttft_seconds"] <= 0.300
    assert doc["prefill"]["seq"] == 1024  # the prefill shown is the prompt's


def test_fit_and_decode_price_gives_cost_per_million(cli) -> None:
    doc = cli.json("fit", "--model", "llama3-8b", "--gpu", "h100-sxm", "--seq", "8k", "--price-per-hour", "2.5", "--tp", "2")
    bill, found = doc["cost"], doc["throughput"]
    assert found["batch"] == doc["max_batch"] and found["limit"] == "memory"  # no target: memory's max batch
    assert bill["gpus"] == 2 and bill["price_per_hour"] == 5.0
    assert bill["cost_per_million_output_tokens"] == pytest.approx(5.0 / (found["tokens_per_s"] * 3600) * 1e6)
    decoded = cli.json("decode", "--model", "llama3-8b", "--gpu", "h100-sxm", "--price-per-hour", "2.5", "--batch", "8")
    rate = decoded["decode"]["expected_tokens_per_s"]
    assert decoded["throughput"] is None
    assert decoded["cost"]["cost_per_million_output_tokens"] == pytest.approx(2.5 / (rate * 3600) * 1e6)


def test_fit_cost_table_and_explain(cli) -> None:
    result = cli("fit", "--model", "llama3-8b", "--gpu", "h100-sxm", "--max-tpot-ms", "20", "--price-per-hour", "2", "--explain")
    assert result.exit_code == 0, result.output
    assert "largest batch within time per token 20.00 ms at 8,192 tokens" in result.stdout
    assert "per million output tokens" in result.stdout
    assert "per million output tokens = price / (tokens/s * 3600) * 1e6" in result.stdout
    assert "kvcalc.throughput, bisection" in result.stdout


def test_no_batch_meets_the_target_exit_1(cli) -> None:
    result = cli("decode", "--model", "llama3-8b", "--gpu", "h100-sxm", "--max-tpot-ms", "1")
    assert result.exit_code == 1
    assert "no batch meets time per token 1.00 ms" in result.stdout
    doc = cli("decode", "--model", "llama3-8b", "--gpu", "h100-sxm", "--max-tpot-ms", "1", "--json")
    assert doc.exit_code == 1


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["decode", "--max-tpot-ms", "0"], "--max-tpot-ms 0 must be a positive, finite number of milliseconds"),
        (["decode", "--max-ttft-ms", "-5"], "--max-ttft-ms -5 must be a positive, finite number of milliseconds"),
        (["decode", "--prompt", "10k", "--seq", "8k"], "--prompt 10,240 must be in [1, --seq 8,192]"),
        (["decode", "--price-per-hour", "0"], "--price-per-hour 0 must be a positive, finite price per GPU-hour"),
        (["fit", "--price-per-hour", "-1"], "--price-per-hour -1 must be a positive, finite price per GPU-hour"),
    ],
)
def test_bad_throughput_input_exit_2(cli, args: list[str], expected: str) -> None:
    result = cli(args[0], "--model", "llama3-8b", "--gpu", "h100-sxm", *args[1:])
    assert result.exit_code == 2
    assert expected in result.stderr


def test_fit_targets_need_a_gpu_preset(cli) -> None:
    result = cli("fit", "--model", "llama3-8b", "--memory", "80GiB", "--max-tpot-ms", "20")
    assert result.exit_code == 2
    assert "--max-tpot-ms, --max-ttft-ms and --price-per-hour need --gpu" in result.stderr


@pytest.mark.parametrize(
    "flag, value", [("--price-per-hour", "inf"), ("--price-per-hour", "nan"), ("--max-tpot-ms", "inf"), ("--max-ttft-ms", "inf")]
)
def test_targets_and_prices_must_be_finite(cli, flag: str, value: str) -> None:
    # an infinite price gave an infinite cost, exit 0; an infinite target is no target
    result = cli("fit", "--model", "llama3-8b", "--gpu", "h100-sxm", flag, value)
    assert result.exit_code == 2 and "finite" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_the_batch_search_follows_decodes_interconnect(cli) -> None:
    # --interconnect overrides the GPU preset's link for every figure decode prints, the searched batch's too
    args = ("decode", "--model", "llama3.1-70b", "--gpu", "a100-80gb", "--tp", "4", "--seq", "4096", "--engine", "vllm",
            "--max-tpot-ms", "40")  # fmt: skip
    pcie, nvlink = (cli.json(*args, "--interconnect", link) for link in ("pcie", "nvlink"))
    assert pcie["decode"]["expected"]["interconnect"] == "pcie" and nvlink["decode"]["expected"]["interconnect"] == "nvlink"
    assert pcie["throughput"]["batch"] < nvlink["throughput"]["batch"]  # PCIe all-reduces cost more per step
