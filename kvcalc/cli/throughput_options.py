"""The throughput and cost options fit and decode share (--max-tpot-ms, --max-ttft-ms, --prompt,
--price-per-hour), each defined once, and turning them into kvcalc.throughput's plan and cost."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer

from kvcalc import throughput
from kvcalc.cli.common import tokens_option
from kvcalc.errors import InvalidInput
from kvcalc.latency import PrefillEstimate
from kvcalc.spec import GpuSpec, ModelSpec, Workload
from kvcalc.units import TOKENS_HELP
from kvcalc.weights import WeightFormat

MaxTpotOpt = Annotated[
    float | None,
    typer.Option(
        "--max-tpot-ms",
        help="Find the largest batch whose expected time per output token at --seq is within this many milliseconds.",
    ),
]
MaxTtftOpt = Annotated[
    float | None,
    typer.Option(
        "--max-ttft-ms",
        help="Find the largest batch whose prompts (--prompt tokens each, arriving together) prefill within this many milliseconds.",
    ),
]
PromptOpt = Annotated[
    int | None,
    tokens_option(
        "--prompt", help=f"Prompt tokens per sequence, for the prefill time and its cost (default: --seq): {TOKENS_HELP}."
    ),
]
PriceOpt = Annotated[
    float | None,
    typer.Option(
        "--price-per-hour",
        help="Price of one GPU-hour (any currency): the cost per million output and prompt tokens in it, all tp * pp GPUs billed"
        " (default: the GPU presets' price_per_hour, where they give a public price page, summed over a llama.cpp split's GPUs).",
    ),
]


class Economics:
    """The throughput and cost options of one command, checked, and what they answer."""

    def __init__(
        self, max_tpot_ms: float | None, max_ttft_ms: float | None, prompt: int | None, price: float | None, seq: int
    ) -> None:
        self.target = throughput.latency_target(max_tpot_ms, max_ttft_ms, prompt, seq)
        self.searching = max_tpot_ms is not None or max_ttft_ms is not None
        self.price = price
        if price is not None:
            throughput.check_price(price)

    @property
    def asked(self) -> bool:
        """Whether any of the options was given."""
        return self.searching or self.price is not None

    def need_gpu(self, gpu: GpuSpec | None) -> GpuSpec:
        """The GPU preset the speeds need (--memory alone gives no bandwidth)."""
        if gpu is None:
            raise InvalidInput("--max-tpot-ms, --max-ttft-ms and --price-per-hour need --gpu: its bandwidth and FLOP/s")
        return gpu

    def prefill(
        self, model: ModelSpec, work: Workload, gpu: GpuSpec, batch: int, weights: WeightFormat, efficiency: float | None
    ) -> PrefillEstimate:
        """The prefill of `batch` prompts of --prompt tokens (default --seq)."""
        return throughput.first_token(model, work, gpu, self.target.prompt, batch, weights, efficiency)

    def plan(
        self, model: ModelSpec, work: Workload, gpu: GpuSpec, memory_batch: int, weights: WeightFormat,
        efficiency: float | None = None, overhead: float | None = None, seconds_per_token: Callable[[int], float] | None = None,
    ) -> throughput.ThroughputPlan:  # fmt: skip
        """The largest batch within the targets and memory (`seconds_per_token`: a split's time per token at a batch)."""
        return throughput.plan(model, work, gpu, memory_batch, self.target, weights, efficiency, overhead, seconds_per_token)

    def cost(
        self, model: ModelSpec, work: Workload, gpu: GpuSpec, batch: int, output_tokens_per_s: float, weights: WeightFormat,
        efficiency: float | None = None, billed: list[GpuSpec] | None = None,
    ) -> throughput.Cost | None:  # fmt: skip
        """The cost per million tokens at `batch` when a batch runs and a price is known: --price-per-hour for each
        GPU, else the GPU presets' public prices (price_per_hour, with its page and date) summed over the `billed`
        GPUs (a llama.cpp split's, which may differ; default `gpu` tp * pp times). `gpu` prefills the prompts."""
        if batch < 1:
            return None
        gpus = billed or [gpu] * (work.tp * work.pp)
        if self.price is not None:
            prices, origin, currency = [self.price] * len(gpus), "--price-per-hour", None
        elif all(g.price_per_hour is not None for g in gpus) and len({g.price_currency for g in gpus}) == 1:
            prices = [g.price_per_hour for g in gpus if g.price_per_hour is not None]
            named = {g.name: g for g in gpus}.values()
            origin = "; ".join(f"{g.name} preset: {g.price_source}, {g.price_date}" for g in named)
            currency = gpus[0].price_currency
        else:
            return None
        first = self.prefill(model, work, gpu, batch, weights, efficiency)
        return throughput.cost(prices, output_tokens_per_s, first, origin, currency)
