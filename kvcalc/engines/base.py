"""The engine protocol the core owns: every question the core asks an engine, and the defaults.

An engine is one subclass of `EngineProfile` in its own module, registered in kvcalc.engines. The
defaults are what most engines do (one buffer per sequence, no fixed bytes, nothing refused, --seq
per sequence, today's memory budget, the compiled-CUDA decode profile); an engine overrides only
where it differs. This module imports only spec, units, errors, decode_profiles and kvcalc.base.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from decimal import Decimal
from typing import ClassVar, Literal

from kvcalc.base import Frozen
from kvcalc.decode_profiles import CUDA_GRAPHS, DecodeProfile
from kvcalc.spec import Engine, GpuSpec, ModelSpec, Workload
from kvcalc.units import DType, format_bytes

MlaStorage = Literal["k_only", "k_and_v", "decompressed"]
ContextLimit = Literal["max_positions", "max_cache_len", "unbounded"]


def cdiv(a: int, b: int) -> int:
    """a / b rounded up.

    >>> cdiv(100, 16), cdiv(96, 16)
    (7, 6)
    """
    return -(-a // b)


class Budget(Frozen):
    """Memory of one GPU and what is left for the KV cache."""

    memory_bytes: int
    utilization: float
    reserve_bytes: int
    weights_bytes: int  # on this GPU
    allowed_bytes: int  # memory * utilization
    usable_bytes: int  # for the KV cache; negative when the weights do not fit
    explain: list[str]


class StageLayer(Frozen):
    """One layer of a pipeline stage as an engine's log sees it: its window and its bytes per token."""

    window: int | None
    bytes_per_token: int


class EngineLogLine(Frozen):
    """A figure the engine itself would log, computed its way."""

    engine: str  # as the engine calls itself: "vLLM"
    name: str  # the figure: "max_concurrency"
    value: float
    line: str  # the log line as the engine prints it
    note: str  # how kvcalc reproduces it
    source: str  # the engine's file and function


class EngineProfile(ABC):
    """How one engine allocates the KV cache. Methods take the workload; its `engine` holds the options."""

    name: ClassVar[str]  # the --engine name
    label: ClassVar[str]  # how the engine calls itself in its logs and docs

    def check_supported(self, model: ModelSpec, workload: Workload, dtype: DType) -> None:
        """Refuse, as InvalidInput, what the engine itself refuses (default: nothing)."""
        return None

    def block_size(self, workload: Workload) -> int | None:
        """Page size in tokens; None when the cache is not paged (default: --block-size)."""
        return workload.block_size

    @abstractmethod
    def tokens_per_unit(self, workload: Workload, window: int | None, seq: int) -> int:
        """Tokens (cells, slots) one allocation unit keeps in one layer at context `seq`; `window` is
        the layer's sliding window, None for a full-attention or MLA layer."""

    def peak_tokens_per_unit(self, workload: Workload, window: int | None, seq: int) -> int:
        """The most a layer holds at any moment (default: what it holds)."""
        return self.tokens_per_unit(workload, window, seq)

    def allocation_units(self, workload: Workload) -> int:
        """Separately sized buffers (default: one per sequence)."""
        return workload.batch

    def fixed_bytes(self, model: ModelSpec, workload: Workload, dtype: DType) -> int:
        """Bytes of the whole cache that do not scale with tokens (default: none)."""
        return 0

    def mla_storage(self, engine: Engine) -> MlaStorage:
        """How an MLA layer is cached: the latent and rope key as one K-only row, as K (latent) and
        V (rope), or decompressed into per-head K and V (default: K and V)."""
        return "k_and_v"

    def context_per_sequence(self, workload: Workload) -> int:
        """Tokens of context each sequence gets (default: --seq)."""
        return workload.seq

    def reshape(self, workload: Workload, context: int | None = None, batch: int | None = None) -> Workload:
        """The workload with another per-sequence context or number of sequences, the other kept."""
        context = self.context_per_sequence(workload) if context is None else context
        return workload.model_copy(update={"seq": context, "batch": workload.batch if batch is None else batch})

    def exact_batch(self, workload: Workload) -> int:
        """Sequences of --seq tokens whose textbook bytes are the workload's exact need (default: --batch)."""
        return workload.batch

    def context_limit(self, model: ModelSpec, workload: Workload) -> tuple[int | None, ContextLimit]:
        """The longest context per sequence and what sets it (default: the model's max positions;
        (None, "unbounded") when unknown)."""
        return (model.max_positions, "max_positions") if model.max_positions else (None, "unbounded")

    def budget(
        self, memory_bytes: int, utilization: float, reserve_bytes: int, weights_bytes: int, weights_explain: Sequence[str]
    ) -> Budget:
        """What one GPU leaves for the KV cache, given the weights it holds (default:
        usable = memory * utilization - weights - reserve)."""
        allowed = int(memory_bytes * Decimal(repr(utilization)))  # exact: 3GB * 0.7 = 2,100,000,000, not one byte less
        usable = allowed - weights_bytes - reserve_bytes
        explain = [
            *weights_explain,
            f"usable = memory * utilization - weights - reserve = {memory_bytes:,} * {utilization} - {weights_bytes:,}"
            f" - {reserve_bytes:,} = {usable:,} B ({format_bytes(usable)})",
        ]
        return Budget(
            memory_bytes=memory_bytes,
            utilization=utilization,
            allowed_bytes=allowed,
            reserve_bytes=reserve_bytes,
            weights_bytes=weights_bytes,
            usable_bytes=usable,
            explain=explain,
        )

    @abstractmethod
    def rules(self, model: ModelSpec, workload: Workload) -> list[str]:
        """The rules behind the figures, each with the source file it follows (for --explain)."""

    def tokens_formula(self, workload: Workload, window: int | None, exact_tokens: int) -> str:
        """How --explain writes a layer's tokens held (default: a pointer to the rules)."""
        return f"{self.name} rule above (exact need {exact_tokens:,})"

    def log_lines(
        self, model: ModelSpec, workload: Workload, usable_bytes: int, stage: Sequence[StageLayer]
    ) -> list[EngineLogLine]:
        """What the engine would log about the cache, given the usable bytes per GPU and the layers
        of the busiest pipeline stage (default: nothing)."""
        return []

    def decode_profile(self, gpu: GpuSpec) -> DecodeProfile:
        """The calibrated terms of this engine's expected decode time on `gpu` (default: the
        compiled-CUDA profile that vLLM, SGLang, TensorRT-LLM and other CUDA-graph engines share;
        calibrated on CUDA only, so on other backends a guess)."""
        return CUDA_GRAPHS
