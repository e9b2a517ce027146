"""Validated descriptions of models, GPUs and workloads (pydantic, frozen, extra keys forbidden)."""

# no `from __future__ import annotations`: pydantic takes the fields' annotations as objects rather than
# compiling and evaluating each string (start-up, docs/benchmarks.md)

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from kvcalc.base import Strict
from kvcalc.errors import InvalidInput
from kvcalc.quantization import LinearQuantization
from kvcalc.units import WEIGHT_ONLY, DType, parse_dtype, parse_engine_version, parse_size, parse_tokens

AttentionKind = Literal["full", "sliding", "chunked"]
StateKind = Literal["mamba1", "mamba2", "gated_deltanet", "lightning", "short_conv", "kda"]
ATTENTION_KINDS: tuple[AttentionKind, ...] = ("full", "sliding", "chunked")
STATE_KINDS: tuple[StateKind, ...] = ("mamba1", "mamba2", "gated_deltanet", "lightning", "short_conv", "kda")
NO_MIXER = "mlp"  # a layer without a sequence mixer (Nemotron-H's '-' and 'E' blocks): no cache, no state


def _layer_kind(kind: str) -> str:
    """A layer's kind: an attention kind, a state kind, both joined by '+' (Falcon-H1 runs attention
    and Mamba-2 side by side in every layer: full+mamba2), or mlp (no sequence mixer)."""
    parts = kind.split("+")
    attention = [p for p in parts if p in ATTENTION_KINDS]
    state = [p for p in parts if p in STATE_KINDS]
    if kind == NO_MIXER or (
        len(parts) <= 2 and len(attention) <= 1 and len(state) <= 1 and len(attention) + len(state) == len(parts)
    ):
        return kind
    choices = ", ".join((*ATTENTION_KINDS, *STATE_KINDS, NO_MIXER))
    raise ValueError(f"unknown layer kind {kind!r}: choose {choices}, or an attention and a state kind joined by + (full+mamba2)")


LayerKind = Annotated[str, AfterValidator(_layer_kind)]


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

# The config.json model_types kvcalc knows, the one list `architecture` is checked against: every model_type
# hf_config reads (hf_config.SUPPORTED), the architectures llama.cpp gives a window (engines.llamacpp.
# LLAMACPP_WINDOWED_ARCHITECTURES: cohere2, exaone4, olmo3, afmoe, smallthinker beyond those read) and the
# windowed ones llama.cpp runs as full layers (starcoder2); tests/test_llamacpp_swa_logs.py keeps both inside it.
MODEL_TYPES = frozenset({
    "llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen3_moe", "gemma", "gemma2", "gemma3", "gemma3_text",
    "deepseek_v2", "deepseek_v3", "gpt_oss", "falcon", "gpt2", "gpt_bigcode", "phi3", "qwen3_next", "nemotron_h",
    "granitemoehybrid", "jamba", "falcon_h1", "lfm2", "minimax", "minimax_m1", "minimax_text_01", "llama4",
    "llama4_text", "gemma3n", "gemma3n_text", "qwen3_5", "qwen3_5_text", "qwen3_5_moe", "qwen3_5_moe_text", "gemma4",
    "gemma4_text", "minimax_m2", "deepseek_v32", "glm_moe_dsa", "deepseek_v4", "kimi_linear", "glm4_moe",
    "glm4_moe_lite", "cohere2", "exaone4", "olmo3", "afmoe", "smallthinker", "starcoder2",
})  # fmt: skip


def _known_model_type(name: str) -> str:
    if name not in MODEL_TYPES:
        plain = name == name.lower() and not any(ch.isspace() for ch in name)
        shape = "" if plain else " (model_types are lower case, without spaces, as config.json writes them)"
        raise ValueError(f"{name!r} is not a config.json model_type kvcalc knows{shape}: one of {', '.join(sorted(MODEL_TYPES))}")
    return name


ModelType = Annotated[str, AfterValidator(_known_model_type)]
MAX_COUNT = 2**31
MAX_LAYERS = 10_000  # every figure walks the layers one by one; the deepest published models have a few hundred
Count = Annotated[int, Field(gt=0, le=MAX_COUNT), Number]  # a positive count; the bound refuses absurd or overflowing input
Rate = Annotated[int, Field(gt=0, le=10**20), Number]  # bytes, bytes/s or FLOP/s


def _read_tokens(value: object) -> object:
    try:
        return parse_tokens(value) if isinstance(value, str) else value
    except InvalidInput as exc:  # re-raised as a field error, so the message names the field
        raise ValueError(str(exc)) from None


Tokens = Annotated[Count, BeforeValidator(_read_tokens)]  # a count of tokens, also spelled 8_192, 8,192, 8k or 128k


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
    indexer_head_dim: Count | None = Field(
        default=None,
        description="DeepSeek sparse attention (DeepSeek-V3.2, GLM-5): the lightning indexer's key width"
        " (index_head_dim); each layer also caches one indexer key per token",
    )


COMPRESS_RATIOS = (0, 1, 4, 128)  # vLLM DeepseekV4: 0 or 1 window only, 4 (C4A) or 128 (C128A) (sparse_swa.py _layer_type_for)


class CompressedSpec(Strict):
    """DeepSeek-V4's compressed attention (config.json compress_ratios): every layer keeps a sliding
    window of fp8 rows (the model's sliding_window); a layer of compress ratio r > 1 also keeps one row
    per r tokens and its compressor's fp32 state, and at r = 4 a lightning-indexer key per row."""

    ratios: list[Annotated[int, Number]] = Field(
        description="each layer's compress ratio (config compress_ratios, the model's layers): 0 or 1 (window only), 4 or 128"
    )
    qk_rope_head_dim: Count = Field(description="the rope part of each row, kept in bf16 (qk_rope_head_dim)")
    index_head_dim: Count = Field(description="the lightning indexer's key width (index_head_dim)")

    @model_validator(mode="after")
    def _known_ratios(self) -> "CompressedSpec":
        unknown = sorted(set(self.ratios) - set(COMPRESS_RATIOS))
        if unknown:
            raise ValueError(f"compress ratio {unknown[0]} is not one vLLM's DeepSeek-V4 layers take (0, 1, 4 or 128)")
        return self


class MoeSpec(Strict):
    """Mixture of experts: routed experts of `expert_intermediate`, `experts_per_token` active."""

    experts: Count
    experts_per_token: Count
    expert_intermediate: Count
    shared_experts: Annotated[int, Number] = Field(default=0, ge=0)
    dense_layers: Annotated[int, Number] = Field(default=0, ge=0, description="the first N layers use a dense MLP")
    layer_period: Count = Field(default=1, description="every Nth layer after the dense ones is MoE (Jamba: 2)")
    layer_offset: Annotated[int, Number] = Field(default=0, ge=0, description="the first MoE layer's index mod layer_period")
    expert_dtype: DTypeName | None = Field(
        default=None, description="the routed experts' checkpoint dtype when it differs from the other weights' (gpt-oss: mxfp4)"
    )

    @model_validator(mode="after")
    def _top_k_within_experts(self) -> "MoeSpec":
        if self.experts_per_token > self.experts:
            raise ValueError(f"experts_per_token {self.experts_per_token} exceeds experts {self.experts}")
        if self.layer_offset >= self.layer_period:
            raise ValueError(f"layer_offset {self.layer_offset} must be below layer_period {self.layer_period}")
        return self

    def is_moe_layer(self, layer: int) -> bool:
        """Whether layer `layer` (0-based) routes its tokens to experts."""
        return layer >= self.dense_layers and layer % self.layer_period == self.layer_offset


PLACEMENT_FIELDS = ("layer_bytes", "expert_bytes", "embedding_bytes", "output_bytes")  # StoredWeights' per-layer split


class StoredWeights(Strict):
    """A checkpoint's weights as its files store them, each tensor in its own type (a GGUF's tensor
    infos or safetensors headers summed): exact bytes, the parameters they hold, and the values per type."""

    bytes: Rate
    params: Rate
    types: dict[str, Rate] = Field(
        default_factory=dict, description="values per stored type, e.g. q4_K, q6_K, f32 (GGUF) or BF16, I32 (safetensors)"
    )
    layer_bytes: list[Annotated[int, Field(ge=0), Number]] | None = Field(
        default=None,
        description="each layer's bytes (a GGUF's blk.N tensors) but its routed experts': where llama.cpp places them",
    )
    expert_bytes: list[Annotated[int, Field(ge=0), Number]] | None = Field(
        default=None, description="each layer's routed-expert bytes (blk.N.ffn_*_exps), what --n-cpu-moe moves to the CPU"
    )
    embedding_bytes: Annotated[int, Field(ge=0), Number] | None = Field(
        default=None, description="the input embedding table's bytes (token_embd), which llama.cpp keeps in host memory"
    )
    output_bytes: Annotated[int, Field(ge=0), Number] | None = Field(
        default=None, description="the output layer's bytes (output_norm and output, or the tied table it reuses)"
    )

    @model_serializer(mode="wrap")
    def _without_unknown_placement(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """The per-layer fields only when a GGUF gave them: a safetensors checkpoint's stays {bytes, params, types}."""
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if v is not None or k not in PLACEMENT_FIELDS}


class VisionSpec(Strict):
    """A multimodal model's encoder tower (vision or audio) and its projector, beside the language
    model: weights the engine loads as well (not in the model's `params`), and the shapes of the
    largest item its processor accepts, which size vLLM's multimodal profiling run (kvcalc.vision)."""

    params: Rate = Field(description="the tower's and its projector's parameters, not counted in the model's params")
    dtype: DTypeName | None = Field(default=None, description="as stored; None: the model's dtype")
    stored_bytes: Rate | None = Field(
        default=None, description="exact bytes as stored (a checkpoint's safetensors headers): used instead of params * dtype"
    )
    hidden: Count | None = Field(default=None, description="the tower's width")
    intermediate: Count | None = Field(default=None, description="its MLP's width")
    gated: bool = Field(default=False, description="a gated MLP (gate and up projections) rather than fc1 / fc2")
    patches_per_item: Count | None = Field(
        default=None, description="patches the tower runs on for the largest image its processor accepts"
    )
    tokens_per_item: Count | None = Field(default=None, description="language-model tokens that image becomes")
    pixels_per_patch: Count | None = Field(
        default=None, description="pixels one patch covers, where the processor takes max_pixels (Qwen-VL: patch_size^2)"
    )
    patches_per_token: Count | None = Field(
        default=None, description="patches merged into one language-model token (Qwen-VL: spatial_merge_size^2)"
    )
    encoder_decoder: bool = Field(
        default=False,
        description="the language model reads the tower's output through cross-attention (Llama 3.2 Vision): vLLM's V0"
        " runs it as an encoder-decoder model",
    )
    output_width: Count | None = Field(
        default=None,
        description="the width of the embeddings the tower hands the language model, which vLLM caches (Qwen3-VL:"
        " out_hidden_size x (1 + DeepStack levels)); None: the language model's hidden size",
    )
    video_patches_per_item: Count | None = Field(
        default=None, description="patches the tower runs on for the largest video its processor accepts (None: no video)"
    )
    video_tokens_per_item: Count | None = Field(default=None, description="language-model tokens that video becomes")
    video_token_factor: Annotated[float, Field(gt=0)] | None = Field(
        default=None,
        description="vLLM 0.11-0.12 counts a Qwen3-VL video's tokens this many times over for the timestamps' text"
        " (qwen3_vl.py get_max_video_tokens: 12.5), which can make video the modality it profiles",
    )
    source: str = Field(description="where the count comes from: the config and the modeling file it follows")


class AttentionShape(Strict):
    """One attention kind's own KV shape, where it differs from the model's (Gemma-4-style global
    layers with other KV heads or head widths than the sliding ones)."""

    kv_heads: Count | None = None
    head_dim: Count | None = None
    k_head_dim: Count | None = None
    v_head_dim: Count | None = None


class Mamba1Spec(Strict):
    """Mamba-1 mixer (Jamba, FalconMamba): d_inner channels, each with an N-wide state."""

    intermediate: Count = Field(description="d_inner (Jamba: mamba_expand * hidden_size)")
    state_size: Count = Field(description="N (mamba_d_state)")
    conv_kernel: Count = Field(description="the causal conv's width (mamba_d_conv)")


class Mamba2Spec(Strict):
    """Mamba-2 mixer (Nemotron-H, Granite-4.0-H, Bamba, Falcon-H1): heads of head_dim, groups of B/C."""

    heads: Count = Field(description="SSM heads (mamba_num_heads / mamba_n_heads)")
    head_dim: Count = Field(description="P per head (mamba_head_dim / mamba_d_head)")
    state_size: Count = Field(description="N (ssm_state_size / mamba_d_state)")
    groups: Count = Field(default=1, description="B/C groups (n_groups / mamba_n_groups)")
    conv_kernel: Count = Field(description="the causal conv's width (conv_kernel / mamba_d_conv)")
    intermediate: Count | None = Field(
        default=None, description="d_inner when it is not heads * head_dim (Falcon-H1: mamba_d_ssm)"
    )

    @model_validator(mode="after")
    def _groups_divide_heads(self) -> "Mamba2Spec":
        # Each group's B and C serve heads / groups heads (transformers modeling_mamba2.py repeats them
        # num_heads // n_groups times): a model whose groups do not divide its heads cannot run, at any --tp.
        if self.heads % self.groups:
            raise ValueError(f"groups ({self.groups}) must divide heads ({self.heads})")
        return self

    @property
    def inner(self) -> int:
        return self.intermediate or self.heads * self.head_dim


class GatedDeltaNetSpec(Strict):
    """Gated DeltaNet (Qwen3-Next's linear_attention layers): a (v_head_dim x k_head_dim) state per value head."""

    k_heads: Count = Field(description="linear_num_key_heads")
    v_heads: Count = Field(description="linear_num_value_heads")
    k_head_dim: Count = Field(description="linear_key_head_dim")
    v_head_dim: Count = Field(description="linear_value_head_dim")
    conv_kernel: Count = Field(description="linear_conv_kernel_dim")

    @model_validator(mode="after")
    def _value_heads_repeat_key_heads(self) -> "GatedDeltaNetSpec":
        # Each key head serves v_heads / k_heads value heads; transformers' Qwen3NextGatedDeltaNet raises
        # "num_v_heads must be divisible by num_k_heads" (models/qwen3_next/modeling_qwen3_next.py).
        if self.v_heads % self.k_heads:
            raise ValueError(f"v_heads ({self.v_heads}) must be a multiple of k_heads ({self.k_heads})")
        return self


class LightningSpec(Strict):
    """Lightning (linear) attention (MiniMax-M1, MiniMax-Text-01): a (head_dim x head_dim) state per head."""

    heads: Count | None = Field(default=None, description="default: the model's attention heads")
    head_dim: Count | None = Field(default=None, description="default: the model's head_dim")


class ShortConvSpec(Strict):
    """Gated short convolution (LFM2's conv layers): the last L_cache - 1 inputs of each channel."""

    channels: Count | None = Field(default=None, description="conv_dim (default: the model's hidden size)")
    conv_kernel: Count = Field(description="L_cache (conv_L_cache)")


class KdaSpec(Strict):
    """Kimi Delta Attention (Kimi-Linear's kda_layers): q, k and v short convs and a (head_dim x
    head_dim) state per head, as vLLM's kda_state_shape."""

    heads: Count = Field(description="linear_attn_config.num_heads")
    head_dim: Count = Field(description="linear_attn_config.head_dim")
    conv_kernel: Count = Field(description="linear_attn_config.short_conv_kernel_size")


class StateSpec(Strict):
    """The shapes of the state layers named in `layer_pattern`, one section per kind used."""

    mamba1: Mamba1Spec | None = None
    mamba2: Mamba2Spec | None = None
    gated_deltanet: GatedDeltaNetSpec | None = None
    lightning: LightningSpec | None = None
    short_conv: ShortConvSpec | None = None
    kda: KdaSpec | None = None
    ssm_dtype: DTypeName | None = Field(
        default=None,
        description="the recurrent state's dtype vLLM keeps for this model under --mamba-ssm-cache-dtype auto: the"
        " config's mamba_ssm_cache_dtype / mamba_ssm_dtype (NemotronH: float32 when absent); the textbook state uses the"
        " model dtype, SGLang fp32 unless --mamba-ssm-dtype",
    )


DERIVED_FIELDS = {"head_dim": "hidden / heads", "params": "stored_weights.params"}  # what a validator fills in when absent


class RotaryTable(Strict):
    """One RoPE cos/sin table as vLLM's get_rope builds it: rows of positions by rotated dims (cos and sin halves)."""

    rows: Count | Literal["context"] = Field(
        description="the positions it covers: max_position_embeddings, times the factor under linear or dynamic-NTK"
        " scaling (original_max_position_embeddings times it under YaRN; both lengths for Phi-3's longrope); 'context':"
        " the served context (vLLM's minimax_text_01.py builds max_model_len rows)"
    )
    dims: Count | None = Field(default=None, description="the dims it rotates; absent: the model's rotary_width")
    dtype: DTypeName | None = Field(default=None, description="as built (gpt-oss, MiniMax: fp32); absent: the model dtype")

    @model_validator(mode="after")
    def _even(self) -> "RotaryTable":
        if self.dims is not None and self.dims % 2:
            raise ValueError(f"dims ({self.dims}) must be even: cos and sin halves")
        return self


class ModelSpec(Strict):
    """A model's shape. The KV cache needs only layers, heads, kv_heads, head_dim and dtype;
    the optional fields unlock weights, limits and MoE/MLA/window figures."""

    name: Name
    layers: Annotated[int, Field(gt=0, le=MAX_LAYERS), Number]
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
    quantization: LinearQuantization | None = Field(
        default=None,
        description="the checkpoint's integer-quantized linear layers (config.json's quantization_config: AWQ, GPTQ,"
        " compressed-tensors W4A16/W8A16): their exact bytes as stored and as vLLM loads them; weight_dtype is its int4/int8",
    )
    max_positions: Count | None = None
    rotary_dims: Annotated[int, Field(ge=0), Number] | None = Field(
        default=None,
        description="the dims of each key head that RoPE rotates (config.json's partial_rotary_factor * head_dim,"
        " rotary_dim); absent: the whole key head (MLA and DeepSeek-V4: qk_rope_head_dim); 0: no rotary embedding"
        " (learned, ALiBi or no positions)",
    )
    rotary_tables: Annotated[list[RotaryTable], Field(min_length=1)] | None = Field(
        default=None,
        description="each RoPE cos/sin table an engine builds, one per distinct rope setting (Gemma 3: its sliding"
        " layers' and its full layers'); absent: one table of max_positions rows by rotary_width dims in the model dtype",
    )
    hidden: Count | None = None
    intermediate: Count | None = None
    vocab: Count | None = None
    tied_embeddings: bool = False
    mlp: Literal["gated", "plain"] = "gated"
    attention_output_gate: bool = Field(
        default=False,
        description="the query projection also yields a sigmoid gate per head on the attention output, so q_proj is"
        " 2 * heads * head_dim wide (Qwen3-Next, Qwen3.5: config attn_output_gate)",
    )
    sliding_window: Count | None = None
    architecture: ModelType | None = Field(
        default=None,
        description="the checkpoint's architecture as config.json's model_type names it (phi3, mistral, gemma3): an engine"
        " that implements a window only for some architectures reads it (llama.cpp); absent, every engine keeps the"
        " windows the layers declare; a value must be a model_type kvcalc knows (spec.MODEL_TYPES)",
    )
    layer_pattern: list[LayerKind] | None = Field(
        default=None,
        description="each layer's kind, repeated over the layers: full, sliding, a state kind (mamba1, mamba2,"
        " gated_deltanet, lightning, short_conv, kda), attention+state (full+mamba2) or mlp (no sequence mixer)",
    )
    state: StateSpec | None = None
    attention_chunk_size: Count | None = Field(
        default=None, description="chunked layers attend within chunks of this many tokens (Llama 4's local layers)"
    )
    attention_shapes: dict[AttentionKind, AttentionShape] | None = Field(
        default=None, description="per attention kind, the KV heads and head widths where they differ from the model's"
    )
    mtp_layers: Annotated[int, Number] = Field(
        default=0,
        ge=0,
        le=MAX_LAYERS,
        description="multi-token prediction layers beside the model's (num_nextn_predict_layers, mtp_num_hidden_layers);"
        " not in its weights: a speculative draft (--speculative-model mtp)",
    )
    speculative_head: Literal["eagle", "eagle3"] | None = Field(
        default=None,
        description="a speculative head that reads the target's hidden states, not a model of its own (an EAGLE-3"
        " config's architectures; EAGLE-1: 'eagle-' in the draft's name, kvcalc.residents.as_eagle_head); its params are the head's",
    )
    kv_shared_layers: Annotated[int, Number] = Field(
        default=0, ge=0, description="the last N layers reuse earlier layers' caches and keep none of their own (Gemma-3n)"
    )
    mla: MlaSpec | None = None
    compressed: CompressedSpec | None = Field(
        default=None, description="DeepSeek-V4's compressed caches: each layer's compress ratio beside its sliding window"
    )
    moe: MoeSpec | None = None
    vision: VisionSpec | None = Field(
        default=None, description="a vision or audio tower beside the language model (its weights are not in params)"
    )
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
    def _check_shape(self) -> "ModelSpec":
        if self.head_dim is None:
            raise ValueError("head_dim is missing (give head_dim, or hidden divisible by heads)")
        if self.heads % self.kv_heads:
            raise ValueError(f"heads ({self.heads}) must be divisible by kv_heads ({self.kv_heads})")
        if self.layer_pattern is not None and not self.layer_pattern:
            raise ValueError("layer_pattern must list at least one layer kind")
        if self.sliding_window is None and "sliding" in self.attention_kinds():
            raise ValueError("layer_pattern has sliding layers but sliding_window is not set")
        if self.attention_chunk_size is None and "chunked" in self.attention_kinds():
            raise ValueError("layer_pattern has chunked layers but attention_chunk_size is not set")
        if self.kv_shared_layers >= self.layers:
            raise ValueError(f"kv_shared_layers ({self.kv_shared_layers}) must leave a layer with its own cache")
        for kind, shape in (self.attention_shapes or {}).items():
            if kind not in self.attention_kinds():
                raise ValueError(f"attention_shapes.{kind} is given but no layer is {kind}")
            if self.heads % self.kv_heads_of(kind):
                raise ValueError(f"heads ({self.heads}) must be divisible by attention_shapes.{kind}.kv_heads ({shape.kv_heads})")
        if self.mla is not None and (self.attention_shapes or self.kv_shared_layers):
            raise ValueError("MLA with attention_shapes or kv_shared_layers is not supported")
        if self.compressed is not None:
            self._check_compressed(self.compressed)
        widest = self._whole_rotary_width()
        if self.rotary_dims is not None and (self.rotary_dims > widest or self.rotary_dims % 2):
            what = "the rope part's" if self.mla or self.compressed else "the key head's"
            raise ValueError(f"rotary_dims ({self.rotary_dims}) must be even and at most {what} {widest} dims")
        if self.stored_weights is not None and self.params != self.stored_weights.params:
            raise ValueError(f"params ({self.params}) must equal stored_weights.params ({self.stored_weights.params})")
        quantized = self.quantization.dtype if self.quantization is not None else None
        if quantized is not None and self.weight_dtype not in (None, quantized):
            raise ValueError(f"weight_dtype ({self.weight_dtype.value}) must be {quantized.value}, the quantization's, or absent")
        used = {kind for kind in self.state_kinds() if kind is not None}
        for kind in STATE_KINDS:
            given = self.state is not None and getattr(self.state, kind) is not None
            if kind in used and not given:
                raise ValueError(f"layer_pattern has {kind} layers but state.{kind} does not give their shape")
            if given and kind not in used:
                raise ValueError(f"state.{kind} is given but no layer in layer_pattern is {kind}")
        return self

    def _check_compressed(self, compressed: CompressedSpec) -> None:
        if len(compressed.ratios) != self.layers:
            raise ValueError(f"compressed.ratios lists {len(compressed.ratios)} layers, the model has {self.layers}")
        if self.sliding_window is None:
            raise ValueError("compressed caches keep a sliding window beside them: sliding_window is not set")
        if self.mla is not None or self.layer_pattern is not None or self.attention_shapes or self.kv_shared_layers:
            raise ValueError("compressed caches go with neither mla, layer_pattern, attention_shapes nor kv_shared_layers")
        rope, width = compressed.qk_rope_head_dim, self.head_dim or 0
        if rope >= width or (width - rope) % 64:
            raise ValueError(
                f"head_dim ({width}) less qk_rope_head_dim ({rope}) must be a positive multiple of 64 (one fp8 scale per 64)"
            )
        if compressed.index_head_dim % 128:
            raise ValueError(f"index_head_dim ({compressed.index_head_dim}) must be a multiple of 128 (one fp32 scale per 128)")

    def origin(self) -> list[str]:
        """--explain's first line: where the model comes from (a preset's published config, a file,
        a GGUF, a Hub repo at its revision), when the spec says."""
        return [f"model {self.name}: {self.source}"] if self.source else []

    @property
    def key_dim(self) -> int:
        """Width of one K head (differs from V's in DeepSeek's decompressed MLA)."""
        return self.k_head_dim or self.head_dim or 0

    @property
    def rotary_width(self) -> int:
        """Dims of each key head RoPE rotates: rotary_dims, else the rope part (MLA, DeepSeek-V4) or the whole head."""
        return self._whole_rotary_width() if self.rotary_dims is None else self.rotary_dims

    def _whole_rotary_width(self) -> int:
        """The most a key head can rotate: its rope part (MLA, DeepSeek-V4), else the whole head."""
        rope = self.mla or self.compressed
        return rope.qk_rope_head_dim if rope else self.key_dim

    @property
    def value_dim(self) -> int:
        """Width of one V head."""
        return self.v_head_dim or self.head_dim or 0

    def _shape(self, kind: AttentionKind | None) -> AttentionShape | None:
        return (self.attention_shapes or {}).get(kind) if kind else None

    def kv_heads_of(self, kind: AttentionKind | None) -> int:
        """KV heads of one attention kind's layers (attention_shapes, else the model's)."""
        shape = self._shape(kind)
        return (shape.kv_heads if shape else None) or self.kv_heads

    def key_dim_of(self, kind: AttentionKind | None) -> int:
        """Width of one K head in one attention kind's layers."""
        shape = self._shape(kind)
        return (shape.k_head_dim or shape.head_dim if shape else None) or self.key_dim

    def value_dim_of(self, kind: AttentionKind | None) -> int:
        """Width of one V head in one attention kind's layers."""
        shape = self._shape(kind)
        return (shape.v_head_dim or shape.head_dim if shape else None) or self.value_dim

    def layer_kinds(self) -> list[str]:
        """Each layer's kind: the pattern repeated over the layers; all sliding when a window is
        given without a pattern (Mistral-7B-v0.1), all full otherwise."""
        return self._repeated(self._pattern())

    def _pattern(self) -> list[str]:
        return self.layer_pattern or (["sliding"] if self.sliding_window else ["full"])

    def _repeated(self, pattern: list[Any]) -> list[Any]:
        """`pattern` repeated over the layers."""
        return (pattern * -(-self.layers // len(pattern)))[: self.layers]

    def attention_kinds(self) -> list[AttentionKind | None]:
        """Each layer's attention kind, None for a layer without attention (a state or mlp layer)."""
        return self._part_of_kinds(ATTENTION_KINDS)

    def state_kinds(self) -> list[StateKind | None]:
        """Each layer's state kind, None for a layer without recurrent state."""
        return self._part_of_kinds(STATE_KINDS)

    def _part_of_kinds(self, parts: tuple[Any, ...]) -> list[Any]:
        """Each layer's part of its kind among `parts` (full of full+mamba2), None when it has none:
        read from the pattern, then repeated over the layers."""
        return self._repeated([next((p for p in parts if p in kind.split("+")), None) for kind in self._pattern()])


Backend = Literal["cuda", "rocm", "metal", "vulkan"]


Interconnect = Literal["nvlink", "xgmi", "pcie-p2p", "pcie"]


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
    cuda_memory_bytes: Rate | None = Field(
        default=None,
        description="the total CUDA reports to a process (torch.cuda.mem_get_info), below nvidia-smi's memory_bytes: what"
        " vLLM, SGLang and TensorRT-LLM take their fractions of; quoted from a published log line (cuda_memory_source)",
    )
    cuda_memory_source: str | None = Field(
        default=None, description="the published log line cuda_memory_bytes is read from, with its URL"
    )
    aliases: list[Name] | None = Field(
        default=None, description="the names vendors' tools print (nvidia-smi, amd-smi), matched case-blind by --gpu"
    )
    interconnect: Interconnect | None = Field(
        default=None,
        description="how GPUs of this kind talk to each other in one server: nvlink (NVLink or NVSwitch), xgmi (AMD"
        " Infinity Fabric), pcie-p2p (PCIe with peer-to-peer), pcie (PCIe through the host, no peer-to-peer);"
        " tensor-parallel communication buffers and all-reduce costs follow it (--interconnect overrides)",
    )
    streaming_multiprocessors: Count | None = Field(
        default=None,
        description="NVIDIA SMs or AMD compute units; with boost_clock_hz it caps what llama.cpp's decode kernels stream"
        " (SMs * clock * the fitted bytes per SM per clock, docs/decode.md); absent: no such cap",
    )
    boost_clock_hz: Rate | None = Field(default=None, description="the maximum boost clock in Hz, with streaming_multiprocessors")
    source: str | None = None
    notes: str | None = None
    price_per_hour: Annotated[float, Field(gt=0, lt=10**6, allow_inf_nan=False), Number] | None = Field(
        default=None,
        description="a public on-demand price of one GPU-hour, the default of --price-per-hour; with price_source and"
        " price_date, since prices differ by provider and change",
    )
    price_source: str | None = Field(default=None, description="the public price page price_per_hour was read from (URL)")
    price_date: str | None = Field(default=None, description="the date the price page states for price_per_hour (YYYY-MM-DD)")
    price_currency: Annotated[str, Field(pattern="^[A-Z]{3}$")] | None = Field(
        default=None, description="the ISO 4217 code of the currency price_per_hour is in (USD), as the price page states it"
    )
    decode_efficiency: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False), Number] | None = Field(
        default=None,
        description="share of bandwidth_bytes_per_s a decode step streams at, in place of the engine's decode profile"
        " efficiency; 1.0 when bandwidth_bytes_per_s is itself a measured streaming bandwidth (kvcalc measure --calibrate)",
    )
    decode_overhead_s_per_layer: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False), Number] | None = Field(
        default=None,
        description="measured fixed cost of a decode step per layer, in seconds (kvcalc measure --calibrate): the"
        " expected decode time uses it in place of the engine's decode profile overhead",
    )

    @model_validator(mode="after")
    def _cuda_total_says_where(self) -> "GpuSpec":
        if (self.cuda_memory_bytes is None) != (self.cuda_memory_source is None):
            raise ValueError("cuda_memory_bytes and cuda_memory_source go together: a CUDA total names the log it is read from")
        if self.cuda_memory_bytes is not None and self.cuda_memory_bytes > self.memory_bytes:
            raise ValueError(
                f"cuda_memory_bytes {self.cuda_memory_bytes:,} is above memory_bytes {self.memory_bytes:,}: CUDA reports at most"
                " the device's total"
            )
        return self

    @model_validator(mode="after")
    def _sm_cap_fields_together(self) -> "GpuSpec":
        if (self.streaming_multiprocessors is None) != (self.boost_clock_hz is None):
            raise ValueError(
                "streaming_multiprocessors and boost_clock_hz go together: llama.cpp's SM-rate cap needs both (give both or"
                " neither)"
            )
        return self

    @model_validator(mode="after")
    def _price_says_where_and_when(self) -> "GpuSpec":
        fields = (self.price_per_hour, self.price_source, self.price_date, self.price_currency)
        given = [field is not None for field in fields]
        if any(given) and not all(given):
            raise ValueError(
                "price_per_hour, price_source, price_date and price_currency go together: a price names its page, date"
                " and currency"
            )
        return self

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
    "n_rs_seq": "llamacpp",
    "max_num_batched_tokens": "vllm",
    "mamba_cache_dtype": "vllm",
    "mamba_ssm_cache_dtype": "vllm",
    "max_num_seqs": "vllm",
    "gpu_memory_utilization": "vllm",
    "enforce_eager": "vllm",
    "disable_cuda_graph": "sglang",
    "kv_cache_memory_bytes": "vllm",
    "vllm_version": "vllm",
    "vllm_use_v2_model_runner": "vllm",
    "vllm_entrypoint": "vllm",
    "vllm_flashinfer_sampler": "vllm",
    "enable_prefix_caching": "vllm",
    "attention_backend": "vllm",
    "mem_fraction_static": "sglang",
    "max_total_tokens": "sglang",
    "page_size": "sglang",
    "swa_full_tokens_ratio": "sglang",
    "max_running_requests": "sglang",
    "mamba_ssm_dtype": "sglang",
    "mamba_full_memory_ratio": "sglang",
    "sglang_version": "sglang",
    "trtllm_version": "trtllm",
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
    try:
        parse_engine_version(value)
    except InvalidInput as exc:  # re-raised as a field error, so the message names the field
        raise ValueError(str(exc)) from None
    return value


def _lowercase(value: object) -> object:
    """A name in any case, as the CLI takes it (--vllm-entrypoint LLM)."""
    return value.lower() if isinstance(value, str) else value


# how vLLM was started: `vllm serve` or Python's LLM(...) (UsageContext); LLM or llm, as the CLI takes it
VllmEntrypoint = Annotated[Literal["serve", "llm"], BeforeValidator(_lowercase)]
MlaBackend = Literal["flashmla", "cutlass_mla", "flashinfer_mla", "triton_mla", "flash_attn_mla"]
Fraction = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False), Number]
SizeBytes = Annotated[int, Field(gt=0, le=10**20), BeforeValidator(_read_size), Number]  # 20GiB, or bytes


class Engine(Strict):
    """Which engine's allocation rules to follow, and its options (None: the engine's default),
    named as the engine spells them. The rules themselves live in kvcalc.engines, one module each.

    textbook: exact bytes, no padding.
    """

    name: EngineName = "textbook"
    hf_version: Literal[4, 5] | None = None  # transformers major version (5: DeepSeek caches its latent)
    max_cache_len: Tokens | None = None  # transformers StaticCache length; None: DynamicCache
    swa_full: bool | None = None  # llama.cpp --swa-full (default true)
    ubatch: Tokens | None = None  # llama.cpp -ub (default 512)
    kv_unified: bool | None = None  # llama.cpp --kv-unified (default false)
    flash_attn: bool | None = None  # llama.cpp -fa (default on where supported)
    n_rs_seq: Annotated[int, Field(ge=0, le=4096), Number] | None = None  # llama.cpp: recurrent-state snapshots per sequence (0)
    max_num_batched_tokens: Tokens | None = None  # vLLM (default 8192, 2048 below 70 GiB or on an A100)
    max_num_seqs: Count | None = None  # vLLM (default 1024, 256 below 70 GiB or on an A100)
    gpu_memory_utilization: Fraction | None = None  # vLLM: share of total memory (default 0.92; 0.9 before 0.20)
    enforce_eager: bool | None = None  # vLLM: no CUDA graphs (default false)
    kv_cache_memory_bytes: SizeBytes | None = None  # vLLM: the KV cache's size, overriding the profiled budget
    vllm_version: Annotated[str, AfterValidator(_version)] | None = None  # the vLLM release (default: 0.20 or later)
    vllm_use_v2_model_runner: bool | None = None  # vLLM: VLLM_USE_V2_MODEL_RUNNER=1/0 (default: the release's choice)
    vllm_entrypoint: VllmEntrypoint | None = None  # vLLM: vllm serve or the offline LLM class (default: serve)
    vllm_flashinfer_sampler: bool | None = None  # vLLM V1: FlashInfer's top-k/top-p sampler ran (default: the release's)
    enable_prefix_caching: bool | None = None  # vLLM: a hybrid model's state then runs mamba_cache_mode "align"
    attention_backend: MlaBackend | None = (
        None  # vLLM's MLA backend, sets MLA block sizes (default: flashmla; cutlass_mla on B200/B300)
    )
    mamba_cache_dtype: DTypeName | None = None  # vLLM --mamba-cache-dtype: conv state (and SSM state) dtype; None: auto
    mamba_ssm_cache_dtype: DTypeName | None = None  # vLLM --mamba-ssm-cache-dtype: SSM state dtype; None: auto
    mem_fraction_static: Fraction | None = None  # SGLang: share of free memory for weights and KV (default from GPU memory)
    max_total_tokens: Tokens | None = None  # SGLang: cap on the token pool
    page_size: Count | None = None  # SGLang: tokens per page (default 1)
    swa_full_tokens_ratio: Fraction | None = None  # SGLang: sliding pool / full pool tokens; given: hybrid SWA pools
    max_running_requests: Count | None = None  # SGLang: concurrent requests (sizes the req_to_token table)
    disable_cuda_graph: bool | None = None  # SGLang --disable-cuda-graph: every kernel launched from Python (default false)
    mamba_ssm_dtype: DTypeName | None = None  # SGLang --mamba-ssm-dtype: hybrid models' SSM state dtype (default float32)
    mamba_full_memory_ratio: Annotated[float, Field(gt=0, allow_inf_nan=False), Number] | None = None  # SGLang (0.9)
    sglang_version: Annotated[str, AfterValidator(_version)] | None = None  # the SGLang release, recorded
    trtllm_version: Annotated[str, AfterValidator(_version)] | None = None  # the TensorRT-LLM release, recorded
    free_gpu_memory_fraction: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False), Number] | None = None  # TRT-LLM (0.9)
    tokens_per_block: Annotated[int, Number, AfterValidator(_power_of_two)] | None = None  # TRT-LLM (default 32)
    max_tokens: Tokens | None = None  # TRT-LLM: cap on the KV cache's tokens
    max_num_tokens: Tokens | None = None  # TRT-LLM: tokens of one forward, sizes the profiling run (default 8192)
    max_seq_len: Tokens | None = None  # TRT-LLM: longest request, the full layers' window (default: the model's max positions)

    @model_validator(mode="after")
    def _options_apply(self) -> "Engine":
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
    k_dtype: DType | None = Field(default=None, description="the K cache's dtype when it differs from kv_dtype")
    v_dtype: DType | None = Field(default=None, description="the V cache's dtype when it differs from kv_dtype")
    state_dtype: DType | None = Field(default=None, description="recurrent state dtype (textbook); None: the model's dtype")
    tp: Count = 1
    pp: Count = 1
    block_size: Count | None = Field(default=None, description="paged allocation; None = exact (vLLM: 16)")
    engine: Engine = Engine()
    draft_bytes_per_token: int = Field(
        default=0, ge=0, description="KV bytes per token of a draft model's layers on one GPU, in the target's pool"
    )
    shared_prefix: int = Field(
        default=0, ge=0, le=MAX_COUNT, description="tokens of a prefix all sequences share (--shared-prefix)"
    )
    draft_kind: Literal["model", "head", "ngram"] | None = Field(
        default=None,
        description="a speculative draft: a model of its own, heads on the target's hidden states (EAGLE, MTP), or n-gram lookup",
    )
    speculative_tokens: int = Field(
        default=0, ge=0, le=MAX_COUNT, description="draft tokens proposed per step (--num-speculative-tokens)"
    )


# The cache type an engine keeps when no --kv-dtype is given, where it is not the model's dtype: llama.cpp's -ctk and
# -ctv default to f16 whatever the GGUF's or the checkpoint's type (common/common.h: cache_type_k = cache_type_v =
# GGML_TYPE_F16), so an fp32 checkpoint's cache is f16 there too.
ENGINE_CACHE_DEFAULTS: dict[EngineName, DType] = {"llamacpp": DType.fp16}


def cache_dtypes(model: ModelSpec, workload: Workload) -> tuple[DType, DType]:
    """The K and V cache dtypes: --k-dtype and --v-dtype, else --kv-dtype, else the engine's default cache
    type (ENGINE_CACHE_DEFAULTS), else the model's dtype.

    >>> m = ModelSpec(name="x", layers=1, heads=1, kv_heads=1, head_dim=32, dtype="bf16")
    >>> [d.value for d in cache_dtypes(m, Workload(seq=1, kv_dtype="fp8", v_dtype="q4_0"))]
    ['fp8', 'q4_0']
    >>> fp32 = m.model_copy(update={"dtype": DType.fp32})
    >>> [d.value for d in cache_dtypes(fp32, Workload(seq=1, engine=Engine(name="llamacpp")))]
    ['fp16', 'fp16']
    """
    default = ENGINE_CACHE_DEFAULTS.get(workload.engine.name, model.dtype)
    shared = workload.kv_dtype or (DType.fp8 if model.compressed else default)
    dtypes = workload.k_dtype or shared, workload.v_dtype or shared
    if model.compressed is not None and (dtypes[0] != dtypes[1] or dtypes[0] not in (DType.fp8, DType.fp8_e4m3)):
        raise InvalidInput(
            f"{model.name} keeps its caches as fp8 rows (fp8_ds_mla: vLLM's DeepSeek-V4 attention asserts an fp8 cache):"
            f" --kv-dtype fp8 or none, not {' and '.join(dict.fromkeys(d.value for d in dtypes))}"
        )
    for dtype in dtypes:
        if dtype in WEIGHT_ONLY:
            raise InvalidInput(f"{dtype.value} is a format of weights, not of a KV cache: give it as --weight-dtype")
    return dtypes
