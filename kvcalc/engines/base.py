"""The engine protocol the core owns: every question the core asks an engine, and the defaults.

An engine is one subclass of `EngineProfile` in its own module, registered in kvcalc.engines. The
defaults are what most engines do (one buffer per sequence, no fixed bytes, nothing refused, --seq
per sequence, the textbook memory budget, no token pools, the compiled-CUDA decode profile); an engine overrides only
where it differs. This module imports only spec, units, errors, decode_profiles and kvcalc.base.
"""

# no `from __future__ import annotations`: pydantic takes the fields' annotations as objects rather than
# compiling and evaluating each string (start-up, docs/benchmarks.md)

from abc import ABC, abstractmethod
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, ClassVar, Literal

from kvcalc.base import Frozen
from kvcalc.decode_profiles import DecodeProfile, profile_for
from kvcalc.errors import InvalidInput
from kvcalc.quantization import LinearQuantization
from kvcalc.spec import Engine, GpuSpec, Interconnect, ModelSpec, RotaryTable, Workload
from kvcalc.units import PACKING, DType, GiB, format_bytes

MlaStorage = Literal["k_only", "k_and_v", "decompressed"]
ContextLimit = Literal["max_positions", "max_cache_len", "max_seq_len", "unbounded"]


def cdiv(a: int, b: int) -> int:
    """a / b rounded up.

    >>> cdiv(100, 16), cdiv(96, 16)
    (7, 6)
    """
    return -(-a // b)


DEFAULT_UTILIZATION = 0.90  # --utilization: the share of memory a textbook budget uses (vLLM's default too)
DEFAULT_RESERVE_BYTES = 1 * GiB  # --reserve: CUDA context + cuBLAS workspace + a chunked prefill's activations


class GpuMemory(Frozen):
    """One GPU as an engine's budget sees it."""

    total_bytes: int  # what the process sees (--memory, or the preset's: its CUDA total where the engine sizes from CUDA's)
    name: str | None = None  # the preset's name; vLLM's defaults depend on it (an A100 gets the small ones)
    interconnect: Interconnect | None = None  # between tensor-parallel GPUs (None: unknown)
    smi_bytes: int | None = None  # nvidia-smi's total where it differs from total_bytes (SGLang's default fraction reads it)
    in_use_bytes: int = 0  # held by other processes or the OS when the engine starts (--memory-in-use)


class StageWeights(Frozen):
    """The weights one GPU of a pipeline stage holds, with their --explain lines."""

    stage: int  # 0-based
    first_layer: int
    last_layer: int
    weights_bytes: int
    explain: list[str]
    experts: DType | None = None  # the routed experts' dtype as stored (None: no routed experts)
    quantization: LinearQuantization | None = None  # the checkpoint's integer-quantized layers (config.json)
    quantized_params: tuple[int, int] = (0, 0)  # (layers', routed experts') parameters in it, one GPU's share


class BudgetTerm(Frozen):
    """One use of a GPU's memory besides the KV cache; the terms and the cache add up to the memory."""

    name: str  # "weights", "activation peak", "not used (1 - gpu_memory_utilization)"
    bytes: int  # negative only for an over-committed "not used" (an explicit --kv-cache-memory-bytes)
    formula: str  # with its values
    source: str  # the engine's file it follows, or how kvcalc modelled it


class Budget(Frozen):
    """Memory of one GPU and what the engine leaves for the KV cache, term by term: memory =
    usable + the terms. With pipeline stages, the stage that leaves the least binds."""

    memory_bytes: int
    utilization: float  # the engine's fraction, in its own meaning (see `fraction`)
    fraction: str  # which option and of what: "gpu_memory_utilization of total memory"
    reserve_bytes: int  # overheads besides the weights: modelled, or --reserve
    weights_bytes: int  # on this GPU
    allowed_bytes: int  # memory less the share the fraction leaves unused
    usable_bytes: int  # for the KV cache; negative when the weights do not fit
    terms: list[BudgetTerm]
    explain: list[str]
    lora_bytes: int = 0  # LoRA slots preallocated on this GPU (kvcalc.residents), one of the terms
    vision_bytes: int = 0  # a multimodal model's vision tower on this GPU (kvcalc.residents), one of the terms
    stage: int = 0  # the binding pipeline stage (0-based)
    engine: Engine = Engine()  # the engine options the budget assumed, its defaults on this GPU filled in
    refused: str | None = None  # why the engine refuses to start on this memory (vLLM: too little free), with the figures

    @property
    def overcommitted_bytes(self) -> int:
        """How far the terms and the cache exceed the memory (only an explicit cache size can)."""
        return max(0, -sum(term.bytes for term in self.terms if term.bytes < 0))


def weights_term(stage: StageWeights) -> "BudgetTerm":
    """The weights one GPU of the stage holds, as a budget term."""
    return BudgetTerm(
        name="weights", bytes=stage.weights_bytes, formula=stage.explain[-1].removeprefix("weights = "), source="kvcalc.capacity"
    )


def rotary_table_term(
    model: ModelSpec, context: int, model_dtype: DType, forced: tuple[DType, str] | None, source: str
) -> "BudgetTerm | None":
    """RoPE's cos/sin tables as vLLM and SGLang hold them on every GPU, built while the model loads and not
    sharded: one per distinct rope setting (get_rope keeps one per setting), rows of positions by rotated dims
    (cos and sin, half each), in the table's dtype (the model's unless the model file builds it otherwise, or the
    engine forces one: `forced`). None where the model has no rotary attention or states no max_position_embeddings."""
    tables = model.rotary_tables or ([RotaryTable(rows=model.max_positions)] if model.max_positions else [])
    if not tables or not model.rotary_width or not any(model.attention_kinds()):
        return None
    parts = []
    for table in tables:
        rows = min(model.max_positions or context, context) if table.rows == "context" else table.rows
        dtype = forced[0] if forced else table.dtype or model_dtype
        parts.append((rows, table.dims or model.rotary_width, PACKING[dtype].bytes_for(1), dtype))
    total = sum(rows * dims * size for rows, dims, size, _ in parts)
    dtypes = sorted({dtype.value for *_, dtype in parts})
    why = forced[1] if forced else f"{', '.join(dtypes)}{', the model dtype' if dtypes == [model_dtype.value] else ''}"
    return BudgetTerm(
        name="rotary cos/sin table" + ("s" if len(parts) > 1 else ""),
        bytes=total,
        formula=f"positions * rotary dims * bytes ({why}) = {' + '.join(f'{r:,} * {d} * {b}' for r, d, b, _ in parts)}"
        f" = {total:,} B ({format_bytes(total)}), on every GPU",
        source=source,
    )


def in_use_terms(gpu: GpuMemory, source: str = "--memory-in-use") -> list[BudgetTerm]:
    """The memory other processes or the OS hold when the engine starts, as a budget term (none when 0)."""
    if not gpu.in_use_bytes:
        return []
    formula = f"{gpu.in_use_bytes:,} B ({format_bytes(gpu.in_use_bytes)}) held by other processes or the OS at start-up"
    return [BudgetTerm(name="in use before start (--memory-in-use)", bytes=gpu.in_use_bytes, formula=formula, source=source)]


def term_lines(term: BudgetTerm) -> list[str]:
    """A term for --explain: its formula, each "; " part on a line of its own, and its source."""
    first, *rest = term.formula.split("; ")
    return [f"{term.name} = {first} ({term.source})", *(f"  {part}" for part in rest)]


def byte_fraction(value: int, fraction: float) -> int:
    """`value * fraction` in whole bytes, exact for the decimal the user wrote (3GB * 0.7 is
    2,100,000,000, not one byte less).

    >>> byte_fraction(3 * 10**9, 0.7)
    2100000000
    """
    return int(value * Decimal(repr(fraction)))


def gib(n: int) -> str:
    """Bytes as an engine's log prints GiB, two decimals.

    >>> gib(3 * 2**29)
    '1.50'
    """
    return f"{n / GiB:.2f}"


class StateDtypes(Frozen):
    """The dtypes an engine keeps a recurrent state in: its conv part and its recurrent (SSM) part."""

    conv: DType
    recurrent: DType
    why: str  # where the choice comes from, for --explain


class StageLayer(Frozen):
    """One layer of a pipeline stage as an engine's log sees it: its window and its bytes per token."""

    window: int | None
    bytes_per_token: int
    chunked: bool = False  # `window` is a chunk (Llama 4's local layers)
    key_bytes_per_token: int = 0  # the K rows' share of bytes_per_token (llama.cpp logs K and V apart)


class Pool(Frozen):
    """A fixed pool of token slots for the layers of one window (None: full attention), sized at
    start-up: a sequence holds its tokens of that window in it, whatever the other pools hold."""

    name: str  # as the engine calls it: "full", "swa", "window 4096"
    window: int | None
    layers: int
    bytes_per_token: int  # all of the pool's layers on one GPU (per slot for a per-sequence pool)
    tokens: int  # token slots; for a per-sequence pool, its slots
    bytes: int  # allocated
    per_sequence: int = 0  # slots each sequence takes whatever its context (SGLang's Mamba pool); 0: a token pool


class EngineLogLine(Frozen):
    """A figure the engine itself would log, computed its way."""

    engine: str  # as the engine calls itself: "vLLM"
    name: str  # the figure: "max_concurrency"
    value: float
    line: str  # the log line as the engine prints it
    note: str  # how kvcalc reproduces it
    source: str  # the engine's file and function


class StatePages(Frozen):
    """How an engine lays out state beside the attention pages: the attention block size it settles
    on, and the bytes every state layer then takes per sequence (None: each its own state bytes)."""

    block_size: int | None
    page_bytes: int | None
    explain: list[str] = []
    log: list[EngineLogLine] = []


_ENGINES: "list[type[EngineProfile]]" = []  # every engine's profile, in the order its module defines it


class EngineProfile(ABC):
    """How one engine allocates the KV cache. Methods take the workload; its `engine` holds the options."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _ENGINES.append(cls)  # kvcalc.engines imports every engine module, so each one is here when asked

    def unmodelled_layers(self, model: ModelSpec) -> str | None:
        """Why kvcalc does not model this engine's cache for the model's kinds of layer (default: it does)."""
        return None

    def ignored_window(self, model: ModelSpec) -> str | None:
        """Why the engine runs the model's sliding and chunked layers as full ones, caching and attending every
        token there, with the source it follows (default None: it keeps the windows the layers declare)."""
        return None

    def refuse_unmodelled_layers(self, model: ModelSpec) -> None:
        """Refuse a model whose layers kvcalc does not model for this engine, naming the engines that it does."""
        why = self.unmodelled_layers(model)
        if why is not None:
            others = [cls.name for cls in _ENGINES if cls.name != self.name and cls().unmodelled_layers(model) is None]
            raise InvalidInput(f"--engine {self.name}: {why}; use {', '.join(others[:-1])} or {others[-1]}")

    name: ClassVar[str]  # the --engine name
    label: ClassVar[str]  # how the engine calls itself in its logs and docs
    fraction_option: ClassVar[str | None] = None  # the Engine field of its own memory fraction; None: --utilization
    sizes_from_cuda_total: ClassVar[bool] = False  # takes its fraction of CUDA's total (a preset's cuda_memory_bytes)
    sparse_mla_fp8_layout: ClassVar[bool] = False  # an fp8 cache of a DeepSeek-sparse model keeps rope in bf16, scales per 128
    compressed_caches: ClassVar[bool] = False  # models DeepSeek-V4's compressed caches (ModelSpec.compressed)
    places_layers: ClassVar[bool] = False  # splits layers over GPUs and host RAM itself (llama.cpp): kvcalc.placement plans it

    def settle(self, model: ModelSpec, workload: Workload) -> Workload:
        """The workload with the block size the engine forces for this model (default: unchanged)."""
        return workload

    # how a prefix all sequences share is held once (--shared-prefix), with the source it follows; None: it is not
    prefix_rule: ClassVar[str | None] = "a shared prefix is held once, in whole pages when paged (textbook)"
    # how a speculative draft model is held beside the target, with its source; None: not modelled for this engine
    draft_rule: ClassVar[str | None] = "a draft model's weights and its KV per token beside the target's (textbook)"
    # True: the draft's KV is a second pool of the target's tokens, its weights and that pool outside the
    # engine's static fraction (SGLang); False: its layers join the target's pool and its weights the budget
    draft_second_pool: ClassVar[bool] = False
    # True: a draft's weights and LoRA caches are live in the profiling run, so the engine's fraction
    # applies after them (TensorRT-LLM); False: they are taken from what the fraction left for the KV
    residents_before_fraction: ClassVar[bool] = False
    max_seqs_option: ClassVar[str | None] = None  # the Engine field of its own cap on sequences; None: fit's --max-seqs
    # how a multimodal model's vision tower is held, with its source; None: not on the GPU as weights (llama.cpp keeps
    # its projector in a GGUF of its own, --mmproj)
    vision_rule: ClassVar[str | None] = "the vision tower's weights load beside the language model's, split over tp (textbook)"
    # the engine's start-up profiling of the tower, with its source; None: the engine does not profile an encoder
    mm_profile_rule: ClassVar[str | None] = None
    # How far the budget may be off, in % of GPU memory: the 90th percentile of its held-out errors on published
    # start-up logs, leave-one-source-out (scripts/calibration.py, docs/engines.md); None: an exact rule, no logs.
    calibration_error_percent: ClassVar[float | None] = None

    def check_supported(self, model: ModelSpec, workload: Workload, dtype: DType) -> None:
        """Refuse, as InvalidInput, what the engine itself refuses (default: nothing)."""
        return None

    def block_size(self, workload: Workload) -> int | None:
        """Page size in tokens; None when the cache is not paged (default: --block-size)."""
        return workload.block_size

    def prefix_block(self, workload: Workload) -> int:
        """The tokens a shared prefix is held once in multiples of: only whole pages are shared, the
        rest of the prefix sits in each sequence's own pages (default: the page size, 1 when not paged)."""
        return self.block_size(workload) or 1

    @abstractmethod
    def tokens_per_unit(self, workload: Workload, window: int | None, seq: int, chunked: bool = False) -> int:
        """Tokens (cells, slots) one allocation unit keeps in one layer at context `seq`; `window` is
        the layer's sliding window (its chunk when `chunked`: Llama 4's local layers), None for a
        full-attention or MLA layer."""

    def peak_tokens_per_unit(self, workload: Workload, window: int | None, seq: int, chunked: bool = False) -> int:
        """The most a layer holds at any moment (default: what it holds)."""
        return self.tokens_per_unit(workload, window, seq, chunked)

    def allocation_units(self, workload: Workload) -> int:
        """Separately sized buffers (default: one per sequence)."""
        return workload.batch

    def fixed_bytes(self, model: ModelSpec, workload: Workload, dtype: DType) -> int:
        """Bytes of the whole cache that do not scale with tokens (default: none)."""
        return 0

    def state_dtypes(self, model: ModelSpec, workload: Workload) -> "StateDtypes":
        """The dtypes of a recurrent state (default, textbook: --state-dtype, else the model's dtype)."""
        if workload.state_dtype is not None:
            return StateDtypes(conv=workload.state_dtype, recurrent=workload.state_dtype, why="--state-dtype")
        return StateDtypes(conv=model.dtype, recurrent=model.dtype, why="the model's dtype")

    def state_pages(
        self, workload: Workload, attention_bytes_per_token: int | None, state_bytes: int, mla: bool = False
    ) -> "StatePages":
        """How the state sits beside the attention pages, given one attention layer's bytes per token
        on one rank (None without attention layers), the largest layer state's bytes and whether the
        attention layers are MLA (Kimi-Linear) (default:
        every state layer keeps its own bytes; the block size is the workload's)."""
        return StatePages(block_size=self.block_size(workload), page_bytes=None)

    def state_rules(self, model: ModelSpec, workload: Workload) -> list[str]:
        """The state rules behind the figures, with their sources (default: the textbook's)."""
        return [
            "state layers keep a fixed state per sequence, whatever the context: conv (channels, k-1) + recurrent,"
            " shapes as vLLM's MambaStateShapeCalculator (vllm/model_executor/layers/mamba/mamba_utils.py)"
        ]

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

    def defaults_on(self, model: ModelSpec, workload: Workload, gpu: GpuMemory) -> Engine:
        """The engine's options with the defaults that depend on the GPU (and, for vLLM, on the engine
        the deployment runs) filled in (default: as given)."""
        return workload.engine

    def budget(
        self,
        model: ModelSpec,
        workload: Workload,
        gpu: GpuMemory,
        stages: Sequence[StageWeights],
        activation_dtype: DType,
        utilization: float | None,
        reserve_bytes: int | None,
    ) -> "Budget":
        """What one GPU leaves for the KV cache, given the weights each pipeline stage holds per GPU
        (default, the textbook budget: usable = memory * utilization - weights - reserve, the
        largest stage binding; utilization 0.9 and reserve 1 GiB unless given)."""
        utilization = DEFAULT_UTILIZATION if utilization is None else utilization
        reserve = DEFAULT_RESERVE_BYTES if reserve_bytes is None else reserve_bytes
        stage = max(stages, key=lambda s: s.weights_bytes)
        memory, weights, in_use = gpu.total_bytes, stage.weights_bytes, gpu.in_use_bytes
        allowed = byte_fraction(memory - in_use, utilization)
        usable = allowed - weights - reserve
        less_in_use = f" - in use {in_use:,}" if in_use else ""
        explain = [
            *stage.explain,
            f"usable = (memory{' - in use' if in_use else ''}) * utilization - weights - reserve = ({memory:,}{less_in_use})"
            f" * {utilization} - {weights:,} - {reserve:,} = {usable:,} B ({format_bytes(usable)})",
        ]
        reserve_formula = "--reserve" if reserve_bytes is not None else f"kvcalc's default {format_bytes(DEFAULT_RESERVE_BYTES)}"
        terms = [
            *in_use_terms(gpu),
            BudgetTerm(
                name=f"not used (utilization {utilization:g})",
                bytes=memory - in_use - allowed,
                formula=f"(memory - in use) * (1 - utilization) = {memory - in_use:,} * (1 - {utilization})",
                source="--utilization",
            ),
            BudgetTerm(
                name="reserve (runtime, activations)",
                bytes=reserve,
                formula=f"{reserve_formula}: CUDA context, workspaces and activations",
                source="--reserve",
            ),
            weights_term(stage),
        ]
        return Budget(
            memory_bytes=memory,
            utilization=utilization,
            fraction="--utilization of total memory",
            allowed_bytes=allowed,
            reserve_bytes=reserve,
            weights_bytes=weights,
            usable_bytes=usable,
            terms=terms,
            explain=explain,
            stage=stage.stage,
            engine=workload.engine,
        )

    def pools(self, model: ModelSpec, workload: Workload, usable_bytes: int, stage: Sequence[StageLayer]) -> list[Pool]:
        """The token pools the engine carves out of the usable bytes, each for the layers of one
        window; a sequence must fit in every pool (default: none, one budget of bytes shared by all
        layers)."""
        return []

    def max_sequences(self, workload: Workload) -> int | None:
        """The engine's own cap on concurrent sequences when the user set one (default: none)."""
        return None

    @abstractmethod
    def rules(self, model: ModelSpec, workload: Workload) -> list[str]:
        """The rules behind the figures, each with the source file it follows (for --explain)."""

    def tokens_formula(self, workload: Workload, window: int | None, exact_tokens: int, chunked: bool = False) -> str:
        """How --explain writes a layer's tokens held (default: a pointer to the rules)."""
        return f"{self.name} rule above (exact need {exact_tokens:,})"

    def log_lines(
        self, model: ModelSpec, workload: Workload, usable_bytes: int, stage: Sequence[StageLayer]
    ) -> list[EngineLogLine]:
        """What the engine would log about the cache, given the usable bytes per GPU and the layers
        of the busiest pipeline stage (default: nothing)."""
        return []

    def hybrid_pool(
        self,
        model: ModelSpec,
        workload: Workload,
        usable_bytes: int,
        stage: Sequence[StageLayer],
        pages: StatePages,
        state_layers: int,
    ) -> tuple[list[EngineLogLine], str | None]:
        """For a hybrid model whose state shares the cache's pages: what the engine logs about the shared
        pool, given the stage's attention layers, its `state_layers` and the pages settled for them, and
        why it refuses to start (None: it starts) (default: nothing, it starts)."""
        return [], None

    def decode_profile(self, gpu: GpuSpec, engine: Engine | None = None) -> DecodeProfile:
        """How this engine decodes on `gpu` with the options in `engine`: its launch mode, its key for
        the fixed cost per step, its kernels (default: graph-captured fused kernels, as TensorRT-LLM)."""
        return profile_for(self.name, backend=gpu.backend)
