"""The largest batch that meets a latency target (time per output token, time to first token) and
memory, its total tokens/s, and what a million tokens cost at a price per GPU-hour. Pure functions
over latency's decode and prefill estimates."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

from kvcalc.base import Frozen
from kvcalc.errors import InvalidInput
from kvcalc.latency import DecodeEstimate, PrefillEstimate, decode, prefill
from kvcalc.spec import GpuSpec, ModelSpec, Workload
from kvcalc.units import format_seconds
from kvcalc.weights import WeightFormat

BatchLimit = Literal["max_tpot", "max_ttft", "memory"]
SECONDS_PER_HOUR = 3600
PER_MILLION = 1_000_000


class LatencyTarget(Frozen):
    """What a deployment promises each request: --max-tpot-ms, --max-ttft-ms for a --prompt."""

    max_tpot_seconds: float | None = None
    max_ttft_seconds: float | None = None
    prompt: int  # tokens each sequence prefills (TTFT); --prompt, else --seq


def latency_target(max_tpot_ms: float | None, max_ttft_ms: float | None, prompt: int | None, seq: int) -> LatencyTarget:
    """The target of the options, each checked: times positive, the prompt within the context."""
    for flag, value in (("max-tpot-ms", max_tpot_ms), ("max-ttft-ms", max_ttft_ms)):
        if value is not None and not 0 < value < math.inf:
            raise InvalidInput(f"--{flag} {value:g} must be a positive, finite number of milliseconds")
    if prompt is not None and not 1 <= prompt <= seq:
        raise InvalidInput(f"--prompt {prompt:,} must be in [1, --seq {seq:,}]: the prompt is part of the context")
    return LatencyTarget(
        max_tpot_seconds=None if max_tpot_ms is None else max_tpot_ms / 1e3,
        max_ttft_seconds=None if max_ttft_ms is None else max_ttft_ms / 1e3,
        prompt=seq if prompt is None else prompt,
    )


def largest_meeting(meets: Callable[[int], bool], limit: int) -> int:
    """The largest n in [1, limit] with meets(n), for a `meets` true up to some n and false after
    (0 when meets(1) is false): a bisection, about log2(limit) probes.

    >>> largest_meeting(lambda n: n * n <= 50, 100), largest_meeting(lambda n: False, 100)
    (7, 0)
    """
    if limit < 1 or not meets(1):
        return 0
    low, high = 1, limit + 1  # meets(low); high is past the last n that can meet
    while high - low > 1:
        middle = (low + high) // 2
        if meets(middle):
            low = middle
        else:
            high = middle
    return low


class ThroughputPlan(Frozen):
    """The largest batch at the context that meets the target and fits, and what it achieves."""

    max_tpot_seconds: float | None
    max_ttft_seconds: float | None
    prompt: int  # tokens prefilled per sequence for the TTFT
    seq: int  # the context each sequence reaches, where the time per token is taken
    memory_batch: int  # the largest batch memory holds at the context
    batch: int  # 0: not even one sequence meets the target
    limit: BatchLimit  # what stops the batch growing
    seconds_per_token: float | None  # expected, at `batch` (None when batch is 0)
    ttft_seconds: float | None  # the batch's prompts prefilled together (roofline)
    tokens_per_s: float  # output tokens/s of the whole batch: batch / time per token
    explain: list[str]


def _step(model: ModelSpec, workload: Workload, gpu: GpuSpec, weights: WeightFormat | None, eff: float | None,
          overhead: float | None) -> Callable[[int], DecodeEstimate]:  # fmt: skip
    return lambda batch: decode(model, workload.model_copy(update={"batch": batch}), gpu, weights, eff, overhead)


def first_token(
    model: ModelSpec, workload: Workload, gpu: GpuSpec, prompt: int, batch: int, weights: WeightFormat | None = None,
    efficiency: float | None = None,
) -> PrefillEstimate:  # fmt: skip
    """The prefill of `batch` prompts of `prompt` tokens arriving together: the TTFT of the last of them."""
    burst = workload.model_copy(update={"seq": prompt, "batch": batch})
    return prefill(model, burst, gpu, weights, 1.0 if efficiency is None else efficiency)


def plan(
    model: ModelSpec,
    workload: Workload,
    gpu: GpuSpec,
    memory_batch: int,
    target: LatencyTarget,
    weights: WeightFormat | None = None,
    efficiency: float | None = None,
    overhead_seconds_per_layer: float | None = None,
    seconds_per_token: Callable[[int], float] | None = None,
) -> ThroughputPlan:
    """The largest batch B in [1, memory_batch] whose expected time per output token at the
    workload's context is within --max-tpot-ms and whose burst of B prompts prefills within
    --max-ttft-ms; both times grow with B (more KV, experts and FLOPs per step), so a bisection
    finds it exactly. Its tokens/s = B / time per token. `seconds_per_token` replaces one GPU's
    expected time per token at B (llama.cpp's layer split: kvcalc.placement.split_decode's)."""
    step = _step(model, workload, gpu, weights, efficiency, overhead_seconds_per_layer)
    seconds = seconds_per_token or (lambda batch: step(batch).expected_seconds_per_token)
    tpot, ttft = target.max_tpot_seconds, target.max_ttft_seconds

    def meets_tpot(batch: int) -> bool:
        return tpot is None or seconds(batch) <= tpot

    def meets_ttft(batch: int) -> bool:
        return ttft is None or first_token(model, workload, gpu, target.prompt, batch, weights, efficiency).seconds <= ttft

    by_tpot = largest_meeting(meets_tpot, memory_batch)
    batch = largest_meeting(meets_ttft, by_tpot)
    limit: BatchLimit = "memory" if batch == memory_batch else "max_tpot" if batch == by_tpot else "max_ttft"
    at = seconds(batch) if batch else None
    first = first_token(model, workload, gpu, target.prompt, batch, weights, efficiency) if batch else None
    explain = [
        f"batch = the largest B <= {memory_batch:,} (memory's max batch at {workload.seq:,} tokens)"
        + (f" with expected time per token <= {format_seconds(tpot)}" if tpot is not None else "")
        + (f" and the prefill of B prompts of {target.prompt:,} tokens <= {format_seconds(ttft)}" if ttft is not None else "")
        + f" = {batch:,}, limited by {limit.replace('_', ' ')} (kvcalc.throughput, bisection: both times grow with B)",
    ]
    if at is not None:
        explain.append(f"tokens/s = B / time per token = {batch:,} / {format_seconds(at)} = {batch / at:,.1f}")
    if batch < memory_batch:  # what the next batch would take
        over = batch + 1
        beyond = (
            seconds(over)
            if limit == "max_tpot"
            else first_token(model, workload, gpu, target.prompt, over, weights, efficiency).seconds
        )
        what = "time per token" if limit == "max_tpot" else "prefill"
        explain.append(f"  at B = {over:,}: {what} {format_seconds(beyond)}, over the target")
    return ThroughputPlan(
        max_tpot_seconds=tpot,
        max_ttft_seconds=ttft,
        prompt=target.prompt,
        seq=workload.seq,
        memory_batch=memory_batch,
        batch=batch,
        limit=limit,
        seconds_per_token=at,
        ttft_seconds=first.seconds if first else None,
        tokens_per_s=batch / at if at else 0.0,
        explain=explain,
    )


def check_price(price_per_gpu_hour: float) -> None:
    """Refuse a price that is not a positive, finite number."""
    if not 0 < price_per_gpu_hour < math.inf:
        raise InvalidInput(f"--price-per-hour {price_per_gpu_hour:g} must be a positive, finite price per GPU-hour")


def per_million(price_per_hour: float, tokens_per_s: float) -> float:
    """The cost per million tokens at `tokens_per_s` (in the price's currency): price / (tokens/s * 3600) * 1e6.

    >>> round(per_million(3.6, 1000.0), 6)
    1.0
    """
    return price_per_hour / (tokens_per_s * SECONDS_PER_HOUR) * PER_MILLION


def money(currency: str | None) -> str:
    """What a figure in `currency` is printed after: its code and a space ("USD "), nothing for any currency."""
    return f"{currency} " if currency else ""


class Cost(Frozen):
    """What a million output and prompt tokens cost on the deployment's GPUs at a price per GPU-hour."""

    price_per_gpu_hour: float  # the mean over the billed GPUs (a llama.cpp split's may differ)
    price_origin: str  # --price-per-hour, or the GPU preset's price page and date
    currency: str | None  # the preset price's ISO 4217 code; None for --price-per-hour (any currency)
    gpus: int  # tp * pp, or a llama.cpp split's devices
    price_per_hour: float  # all the GPUs
    output_tokens_per_s: float  # the decode batch's expected tokens/s
    input_tokens_per_s: float  # prompt tokens prefilled per second
    cost_per_million_output_tokens: float
    cost_per_million_input_tokens: float
    explain: list[str]

    @property
    def money(self) -> str:
        """What each figure is printed after (money)."""
        return money(self.currency)


def cost(
    prices_per_gpu_hour: list[float],
    output_tokens_per_s: float,
    first: PrefillEstimate,
    price_origin: str = "--price-per-hour",
    currency: str | None = None,
) -> Cost:
    """The cost per million output tokens from the decode speed (positive: a batch that runs), per
    million prompt tokens from the prefill's (its batch * prompt tokens over its time), each billed GPU
    by the hour at its price in `prices_per_gpu_hour` (from `price_origin`: the flag, or the GPU presets'
    pages, which name their `currency`), summed.

    >>> round(cost([4.54, 6.03], 100.0, PrefillEstimate.model_construct(batch=1, seq=1000, seconds=0.1)).price_per_hour, 2)
    10.57
    """
    for price_per_gpu_hour in prices_per_gpu_hour:
        check_price(price_per_gpu_hour)
    gpus = len(prices_per_gpu_hour)
    price = sum(prices_per_gpu_hour)
    prompt_tokens = first.batch * first.seq
    input_rate = prompt_tokens / first.seconds
    output = per_million(price, output_tokens_per_s)
    input_ = per_million(price, input_rate)
    prefix = money(currency)
    if len(set(prices_per_gpu_hour)) == 1:
        summed = f"price per GPU-hour * GPUs = {prefix}{prices_per_gpu_hour[0]:g} * {gpus}"
    else:
        summed = "the GPUs' prices summed = " + " + ".join(f"{prefix}{p:g}" for p in prices_per_gpu_hour)
    return Cost(
        price_per_gpu_hour=price / gpus,
        price_origin=price_origin,
        currency=currency,
        gpus=gpus,
        price_per_hour=price,
        output_tokens_per_s=output_tokens_per_s,
        input_tokens_per_s=input_rate,
        cost_per_million_output_tokens=output,
        cost_per_million_input_tokens=input_,
        explain=[
            f"price per hour = {summed} = {prefix}{price:g} (price per GPU-hour: {price_origin})",
            f"per million output tokens = price / (tokens/s * 3600) * 1e6 = {prefix}{price:g} / ({output_tokens_per_s:,.1f} *"
            f" 3600) * 1e6 = {prefix}{output:.4g}",
            f"prompt tokens/s = B * prompt / prefill time = {prompt_tokens:,} / {format_seconds(first.seconds)} = {input_rate:,.0f}",
            f"per million prompt tokens = price / (prompt tokens/s * 3600) * 1e6 = {prefix}{input_:.4g}",
        ],
    )
