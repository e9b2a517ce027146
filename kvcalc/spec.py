"""Validated descriptions of models, GPUs and workloads (pydantic, frozen, extra keys forbidden)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from kvcalc.base import Strict
from kvcalc.errors import InvalidInput
from kvcalc.units import DType, parse_dtype, parse_size

LayerKind = Literal["full", "sliding"]


def _not_a_boolean(value: object) -> object:
    if isinstance(value, bool):  # pydantic would read true as 1: `layers: true` is a mistake, not one layer
        raise ValueError(f"expected a number, got {str(value).lower()}")
    return value


Number = BeforeValidator(_not_a_boolean)


def _plain_name(name: str) -> str:
    if not name or len(name) > 200 or any(ch in "[]" or not ch.isprintable() for ch in name):
        raise ValueError("a name is 1 to 200 printable characters, without control characters or square brackets")
    return name


Name = Annotated[str, AfterValidator(_plain_name)]  # printed in tables and messages as it is
MAX_COUNT = 2**31
MAX_LAYERS = 10_000  # every figure walks the layers one by one; the deepest published models have a few hundred
Count = Annotated[int, Number, Field(gt=0, le=MAX_COUNT)]  # a positive count; the bound refuses absurd or overflowing input
Rate = Annotated[int, Number, Field(gt=0, le=10**20)]  # bytes, bytes/s or FLOP/s


def _read_dtype(value: object) -> object:
    try:
        return parse_dtype(value) if isinstance(value, str) else value
    except InvalidInput as exc:  # re-raised as a field error, so the message names the field
        raise ValueError(str(exc)) from None


DTypeName = Annotated[DType, BeforeValidator(_read_dtype)]  # a dtype, torch/HF spellings accepted


class MlaSpec(Strict):
    """Multi-head latent attention (DeepSeek-V2/V3): one compressed latent per token per layer."""

    kv_lora_rank: Count
    qk_rope_head_dim: Count
    qk_nope_head_dim: Count = 128
    v_head_dim: Count = 128
    q_lora_rank: Count | None = None


class MoeSpec(Strict):
    """Mixture of experts: routed experts of `expert_intermediate`, `experts_per_token` active."""

    experts: Count
    experts_per_token: Count
    expert_intermediate: Count
    shared_experts: Annotated[int, Number] = Field(default=0, ge=0)
    dense_layers: Annotated[int, Number] = Field(default=0, ge=0, description="the first N layers use a dense MLP")
    expert_dtype: DTypeName | None = Field(
        default=None, description="the routed experts' checkpoint dtype when it differs from the other weights' (gpt-oss: mxfp4)"
    )

    @model_validator(mode="after")
    def _top_k_within_experts(self) -> MoeSpec:
        if self.experts_per_token > self.experts:
            raise ValueError(f"experts_per_token {self.experts_per_token} exceeds experts {self.experts}")
        return self


class StoredWeights(Strict):
    """A checkpoint's weights as its files store them, each tensor in its own type (a GGUF's tensor
    infos or safetensors headers summed): exact bytes, the parameters they hold, and the values per type."""

    bytes: Rate
    params: Rate
    types: dict[str, Rate] = Field(
        default_factory=dict, description="values per stored type, e.g. q4_K, q6_K, f32 (GGUF) or BF16, I32 (safetensors)"
    )


class ModelSpec(Strict):
    """A model's shape. The KV cache needs only layers, heads, kv_heads, head_dim and dtype;
    the optional fields unlock weights, limits and MoE/MLA/window figures."""

    name: Name
    layers: Annotated[int, Number, Field(gt=0, le=MAX_LAYERS)]
    heads: Count
    kv_heads: Count
    head_dim: Count | None = None
    k_head_dim: Count | None = None
    v_head_dim: Count | None = None
    dtype: DTypeName = DType.bf16
    weight_dtype: DTypeName | None = Field(
        default=None, description="the layers' weights dtype in the checkpoint when it is not `dtype` (DeepSeek-V3: fp8)"
    )
    embeddings_dtype: DTypeName | None = Field(
        default=None,
        description="the embedding table's and LM head's dtype when it is not `dtype` (a GGUF may hold them in q8_0)",
    )
    max_positions: Count | None = None
    hidden: Count | None = None
    intermediate: Count | None = None
    vocab: Count | None = None
    tied_embeddings: bool = False
    mlp: Literal["gated", "plain"] = "gated"
    sliding_window: Count | None = None
    layer_pattern: list[LayerKind] | None = None
    mla: MlaSpec | None = None
    moe: MoeSpec | None = None
    params: Rate | None = None
    active_params: Rate | None = None
    stored_weights: StoredWeights | None = Field(
        default=None,
        description="exact bytes as stored (a GGUF's or a safetensors checkpoint's headers): used instead of params * dtype unless --weight-dtype",
    )
    source: str | None = Field(default=None, description="where the figures come from: a published config, a file, a Hub repo")
    notes: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _derive_head_dim(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("head_dim") is None:
            hidden, heads = data.get("hidden"), data.get("heads")
            if isinstance(hidden, int) and isinstance(heads, int) and heads > 0 and hidden % heads == 0:
                return {**data, "head_dim": hidden // heads}
        return data

    @model_validator(mode="before")
    @classmethod
    def _params_of_stored_weights(cls, data: object) -> object:
        """Stored weights count their parameters: `params` is theirs (given or not), so the bytes stay exact."""
        if isinstance(data, dict) and isinstance(data.get("stored_weights"), dict) and data.get("params") is None:
            return {**data, "params": data["stored_weights"].get("params")}
        return data

    @model_validator(mode="after")
    def _check_shape(self) -> ModelSpec:
        if self.head_dim is None:
            raise ValueError("head_dim is missing (give head_dim, or hidden divisible by heads)")
        if self.heads % self.kv_heads:
            raise ValueError(f"heads ({self.heads}) must be divisible by kv_heads ({self.kv_heads})")
        if self.layer_pattern is not None and not self.layer_pattern:
            raise ValueError("layer_pattern must list at least one layer kind")
        if self.sliding_window is None and "sliding" in (self.layer_pattern or []):
            raise ValueError("layer_pattern has sliding layers but sliding_window is not set")
        if self.stored_weights is not None and self.params != self.stored_weights.params:
            raise ValueError(f"params ({self.params}) must equal stored_weights.params ({self.stored_weights.params})")
        return self

    def origin(self) -> list[str]:
        """--explain's first line: where the model comes from (a preset's published config, a file,
        a GGUF, a Hub repo at its revision), when the spec says."""
        return [f"model {self.name}: {self.source}"] if self.source else []

    @property
    def key_dim(self) -> int:
        """Width of one K head (differs from V's in DeepSeek's decompressed MLA)."""
        return self.k_head_dim or self.head_dim or 0

    @property
    def value_dim(self) -> int:
        """Width of one V head."""
        return self.v_head_dim or self.head_dim or 0

    def layer_kinds(self) -> list[LayerKind]:
        """Each layer's attention kind: the pattern repeated over the layers; all sliding when
        a window is given without a pattern (Mistral-7B-v0.1), all full otherwise."""
        pattern: list[LayerKind] = self.layer_pattern or (["sliding"] if self.sliding_window else ["full"])
        return [pattern[i % len(pattern)] for i in range(self.layers)]


Backend = Literal["cuda", "rocm", "metal", "vulkan"]


class GpuSpec(Strict):
    """An accelerator: memory in bytes, peak bandwidth in bytes/s, dense FLOP/s, and the software
    backend engines run on it (absent: cuda), which sets llama.cpp's fixed cost per layer."""

    name: Name
    memory_bytes: Rate
    bandwidth_bytes_per_s: Rate
    bf16_flops: Rate
    fp8_flops: Rate | None = None
    backend: Backend = "cuda"
    memory_note: str | None = None
    aliases: list[Name] | None = Field(
        default=None, description="the names vendors' tools print (nvidia-smi, amd-smi), matched case-blind by --gpu"
    )
    source: str | None = None
    notes: str | None = None

    def origin(self) -> list[str]:
        """--explain's line saying where the GPU's figures come from (a datasheet, this machine's tool)."""
        return [f"gpu {self.name}: {self.source}"] if self.source else []


EngineName = Literal["textbook", "hf", "vllm", "llamacpp", "sglang", "trtllm"]
ENGINE_OPTIONS: dict[str, EngineName] = {
    "hf_version": "hf",
    "max_cache_len": "hf",
    "swa_full": "llamacpp",
    "ubatch": "llamacpp",
    "kv_unified": "llamacpp",
    "flash_attn": "llamacpp",
    "max_num_batched_tokens": "vllm",
    "max_num_seqs": "vllm",
    "gpu_memory_utilization": "vllm",
    "enforce_eager": "vllm",
    "kv_cache_memory_bytes": "vllm",
    "vllm_version": "vllm",
    "mem_fraction_static": "sglang",
    "max_total_tokens": "sglang",
    "page_size": "sglang",
    "swa_full_tokens_ratio": "sglang",
    "max_running_requests": "sglang",
    "free_gpu_memory_fraction": "trtllm",
    "tokens_per_block": "trtllm",
    "max_tokens": "trtllm",
    "max_num_tokens": "trtllm",
    "max_seq_len": "trtllm",
}


def _read_size(value: object) -> object:
    if isinstance(value, str):
        try:
            return parse_size(value)
        except InvalidInput as exc:  # re-raised as a field error, so the message names the field
            raise ValueError(str(exc)) from None
    return value


def _power_of_two(value: int) -> int:
    if value < 2 or value & (value - 1):
        raise ValueError(f"must be a power of two greater than 1, got {value}")
    return value


def _version(value: str) -> str:
    parts = value.split(".")
    if not 2 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"write a version as MAJOR.MINOR or MAJOR.MINOR.PATCH (0.19, 0.21.1), got {value!r}")
    return value


Fraction = Annotated[float, Number, Field(gt=0, le=1, allow_inf_nan=False)]
SizeBytes = Annotated[int, BeforeValidator(_read_size), Number, Field(gt=0, le=10**20)]  # 20GiB, or bytes


class Engine(Strict):
    """Which engine's allocation rules to follow, and its options (None: the engine's default),
    named as the engine spells them. The rules themselves live in kvcalc.engines, one module each.

    textbook: exact bytes, no padding.
    """

    name: EngineName = "textbook"
    hf_version: Literal[4, 5] | None = None  # transformers major version (5: DeepSeek caches its latent)
    max_cache_len: Count | None = None  # transformers StaticCache length; None: DynamicCache
    swa_full: bool | None = None  # llama.cpp --swa-full (default true)
    ubatch: Count | None = None  # llama.cpp -ub (default 512)
    kv_unified: bool | None = None  # llama.cpp --kv-unified (default false)
    flash_attn: bool | None = None  # llama.cpp -fa (default on where supported)
    max_num_batched_tokens: Count | None = None  # vLLM (default 8192, 2048 below 70 GiB or on an A100)
    max_num_seqs: Count | None = None  # vLLM (default 1024, 256 below 70 GiB or on an A100)
    gpu_memory_utilization: Fraction | None = None  # vLLM: share of total memory (default 0.9)
    enforce_eager: bool | None = None  # vLLM: no CUDA graphs (default false)
    kv_cache_memory_bytes: SizeBytes | None = None  # vLLM: the KV cache's size, overriding the profiled budget
    vllm_version: Annotated[str, AfterValidator(_version)] | None = None  # the vLLM release (default: 0.21 or later)
    mem_fraction_static: Fraction | None = None  # SGLang: share of free memory for weights and KV (default from GPU memory)
    max_total_tokens: Count | None = None  # SGLang: cap on the token pool
    page_size: Count | None = None  # SGLang: tokens per page (default 1)
    swa_full_tokens_ratio: Fraction | None = None  # SGLang: sliding pool / full pool tokens; given: hybrid SWA pools
    max_running_requests: Count | None = None  # SGLang: concurrent requests (sizes the req_to_token table)
    free_gpu_memory_fraction: Annotated[float, Number, Field(gt=0, lt=1, allow_inf_nan=False)] | None = None  # TRT-LLM (0.9)
    tokens_per_block: Annotated[int, Number, AfterValidator(_power_of_two)] | None = None  # TRT-LLM (default 32)
    max_tokens: Count | None = None  # TRT-LLM: cap on the KV cache's tokens
    max_num_tokens: Count | None = None  # TRT-LLM: tokens of one forward, sizes the profiling run (default 8192)
    max_seq_len: Count | None = None  # TRT-LLM: longest request, the full layers' window (default: the model's max positions)

    @model_validator(mode="after")
    def _options_apply(self) -> Engine:
        for option, owner in ENGINE_OPTIONS.items():
            if getattr(self, option) is not None and owner != self.name:
                flag = "--" + option.replace("_", "-")
                raise ValueError(f"{flag} applies to --engine {owner}, not {self.name}")
        return self


class Workload(Strict):
    """What is being served: context, batch, cache dtype, how the model is split, and the engine."""

    seq: Count
    batch: Count = 1
    kv_dtype: DType | None = Field(default=None, description="None: the model's dtype")
    tp: Count = 1
    pp: Count = 1
    block_size: Count | None = Field(default=None, description="paged allocation; None = exact (vLLM: 16)")
    engine: Engine = Engine()
