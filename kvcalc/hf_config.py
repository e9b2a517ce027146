"""Turn a Hugging Face config.json mapping into ModelSpec fields. Pure: no I/O.

Field names and defaults per architecture as in transformers' configuration_<arch>.py files. A key
the config leaves out takes that class's default; a null takes the class's meaning of None (no
window, one KV head per attention head, head_dim = hidden_size / num_attention_heads); a value that
is present but invalid (zero heads, a zero window, a layer_types list of the wrong length) is refused,
and so is any layer kind kvcalc cannot size (the recurrent state of an architecture it does not know),
rather than counted as attention. A vision-language wrapper's text model is read from its text_config.
"""

from __future__ import annotations

import json
from typing import Any

from kvcalc import vision
from kvcalc.errors import InvalidInput, InvalidPreset
from kvcalc.quantization import linear_quantization
from kvcalc.spec import MAX_COUNT, MAX_LAYERS
from kvcalc.units import parse_dtype

SUPPORTED = (
    "llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen3_moe", "gemma", "gemma2", "gemma3", "gemma3_text",
    "deepseek_v2", "deepseek_v3", "gpt_oss", "falcon", "gpt2", "gpt_bigcode", "phi3",
    "qwen3_next", "nemotron_h", "granitemoehybrid", "jamba", "falcon_h1", "lfm2", "minimax", "minimax_m1", "minimax_text_01",
    "llama4", "llama4_text", "gemma3n", "gemma3n_text",
    "qwen3_5", "qwen3_5_text", "qwen3_5_moe", "qwen3_5_moe_text", "gemma4", "gemma4_text", "minimax_m2",
    "deepseek_v32", "glm_moe_dsa", "deepseek_v4", "kimi_linear", "glm4_moe", "glm4_moe_lite",
)  # fmt: skip
# Hybrid architectures whose state layers kvcalc sizes; their layer kinds come from _hybrid.
_QWEN3_5 = {"qwen3_5", "qwen3_5_text", "qwen3_5_moe", "qwen3_5_moe_text"}  # Qwen3.5/3.6: Qwen3-Next's layers
_HYBRID = _QWEN3_5 | {
    "kimi_linear", "qwen3_next", "nemotron_h", "granitemoehybrid", "jamba", "falcon_h1", "lfm2", "minimax", "minimax_m1", "minimax_text_01",
}  # fmt: skip
_GEMMA4 = {"gemma4", "gemma4_text"}
_OWN_PATTERN = _HYBRID | _GEMMA4 | {"llama4", "llama4_text"}  # layer kinds read by their own code, not _layer_pattern
# Architectures whose layers keep recurrent state kvcalc does not size (pure Mamba, Zamba's shared blocks,
# Bamba, RecurrentGemma, RWKV, PLaMo-2): refused rather than counted as attention.
RECURRENT = ("mamba", "mamba2", "falcon_mamba", "zamba", "zamba2", "bamba", "recurrent_gemma", "rwkv", "plamo2")
# Keys only hybrid attention/recurrent configs carry, whatever their model_type says: Zamba and Nemotron-H
# (layers_block_type, hybrid_override_pattern), MiniMax (attn_type_list), RecurrentGemma (block_types),
# Bamba (attn_layer_indices), Jamba (attn_layer_period), LFM2 (full_attn_idxs), Kimi-Linear
# (linear_attn_config), Qwen3-Next (full_attention_interval), Jamba (mamba_d_state).
_HYBRID_KEYS = (
    "layers_block_type", "hybrid_override_pattern", "attn_type_list", "block_types", "attn_layer_indices",
    "attn_layer_period", "full_attn_idxs", "linear_attn_config", "full_attention_interval", "mamba_d_state",
)  # fmt: skip
_PLAIN_MLP = {"gpt2", "gpt_bigcode", "falcon"}
_MAX_LENGTH_KEYS = {"kimi_linear": ("model_max_length",)}  # vLLM's max-length keys (config/model.py) Kimi-Linear gives
# Vision-language wrappers whose text model is an architecture kvcalc reads (vLLM KimiK25ForConditionalGeneration
# wraps DeepSeek-V3); other wrappers name their text model in text_config.model_type.
_WRAPPERS = {"kimi_k25": "deepseek_v3"}
# Wrappers whose text model reads the image through cross-attention layers (Llama 3.2 Vision): refused, their
# cross-attention KV (the image's encoder tokens, per sequence) not being modelled
_CROSS_ATTENTION = {"mllama"}
# Qwen's vision-language wrappers: their text models are Qwen2 / Qwen3 / Qwen3-MoE decoders (transformers
# modeling_qwen2_vl.py, _qwen2_5_vl.py, _qwen3_vl.py, _qwen3_vl_moe.py: Qwen2 / Qwen3 attention and MLPs, M-RoPE,
# which leaves the cache's shape alone), whether the config nests them in text_config (qwen3_vl_text, ...) or not.
_WRAPPERS.update({"qwen2_vl": "qwen2", "qwen2_5_vl": "qwen2", "qwen3_vl": "qwen3", "qwen3_vl_moe": "qwen3_moe"})
_TIED_BY_DEFAULT = {
    "gpt2", "gpt_bigcode", "falcon", "gemma", "gemma2", "gemma3", "gemma3_text", "gemma3n", "gemma3n_text", "lfm2",
    "granitemoehybrid", "gemma4", "gemma4_text",
}  # fmt: skip
_QWEN = {"qwen2", "qwen3", "qwen3_moe"}
# GLM-4.7-Flash (glm4_moe_lite) is MLA too: vLLM's ModelConfig.is_deepseek_mla holds for it, head size 576, one KV
# head (vLLM test_glm4_moe_lite_config_registry_and_mla, which runs ModelConfig.is_deepseek_mla on its config)
_MLA = {"deepseek_v2", "deepseek_v3", "deepseek_v32", "glm_moe_dsa", "glm4_moe_lite"}
_SPARSE_MLA = {"deepseek_v32", "glm_moe_dsa"}  # DeepSeek sparse attention: MLA plus a lightning indexer per layer

# transformers' class defaults for keys a config.json leaves out, where they differ from the None
# meaning (configuration_mistral.py, _mixtral, _qwen2, _qwen3, _qwen3_moe, _gemma, _gemma2, _gemma3
# (Gemma3TextConfig), _gpt_oss). Llama, Phi-3 and Falcon default num_key_value_heads to None (one per
# attention head); Mixtral and Phi-3 default sliding_window to None.
_ABSENT_DEFAULTS: dict[str, dict[str, int]] = {
    "mistral": {"num_key_value_heads": 8, "sliding_window": 4096},
    "mixtral": {"num_key_value_heads": 8},
    "qwen2": {"num_key_value_heads": 32},
    "qwen3": {"num_key_value_heads": 32, "head_dim": 128},
    "qwen3_moe": {"num_key_value_heads": 4},
    "gemma": {"num_key_value_heads": 16, "head_dim": 256},
    "gemma2": {"num_key_value_heads": 4, "head_dim": 256, "sliding_window": 4096},
    "gemma3_text": {"num_key_value_heads": 4, "head_dim": 256, "sliding_window": 4096, "sliding_window_pattern": 6},
    "gpt_oss": {"num_key_value_heads": 8, "head_dim": 64, "sliding_window": 128},
}
_ABSENT_DEFAULTS["gemma3"] = _ABSENT_DEFAULTS["gemma3_text"]  # its text_config is a Gemma3TextConfig
# GlmMoeDsaConfig (configuration_glm_moe_dsa.py, 008e5743): the MLA and indexer widths GLM-5 ships with
_ABSENT_DEFAULTS["glm_moe_dsa"] = {
    "kv_lora_rank": 512, "qk_rope_head_dim": 64, "qk_nope_head_dim": 192, "v_head_dim": 256, "index_head_dim": 128,
}  # fmt: skip

_INTEGER_KEYS = {
    "num_attention_heads", "n_head", "hidden_size", "n_embd", "num_hidden_layers", "n_layer", "num_layers",
    "num_key_value_heads", "num_kv_heads", "head_dim", "max_position_embeddings", "n_positions", "intermediate_size",
    "n_inner", "ffn_hidden_size", "vocab_size", "sliding_window", "sliding_window_pattern", "kv_lora_rank",
    "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "q_lora_rank", "num_local_experts", "num_experts",
    "n_routed_experts", "num_experts_per_tok", "experts_per_token", "num_experts_per_token", "num_shared_experts", "moe_intermediate_size", "n_shared_experts",
    "first_k_dense_replace",
    "attention_head_dim", "mamba_num_heads", "mamba_head_dim", "ssm_state_size", "n_groups", "conv_kernel", "mamba_n_heads",
    "mamba_d_head", "mamba_d_state", "mamba_n_groups", "mamba_d_conv", "mamba_d_ssm", "linear_num_key_heads",
    "linear_num_value_heads", "linear_key_head_dim", "linear_value_head_dim", "linear_conv_kernel_dim",
    "full_attention_interval", "attn_layer_period", "attn_layer_offset", "expert_layer_period", "expert_layer_offset",
    "conv_L_cache", "conv_dim", "shared_intermediate_size", "shared_expert_intermediate_size", "block_ff_dim",
    "attention_chunk_size", "intermediate_size_mlp", "interleave_moe_layer_step", "no_rope_layer_interval",
    "num_kv_shared_layers", "global_head_dim", "num_global_key_value_heads", "index_head_dim", "top_k_experts",
    "num_nextn_predict_layers", "mtp_num_hidden_layers", "rotary_dim", "original_max_position_embeddings",
}  # fmt: skip
_ZERO_ALLOWED = {  # counts of layers or experts, offsets and widths that may be none
    "n_shared_experts", "num_shared_experts", "first_k_dense_replace", "attn_layer_offset", "expert_layer_offset", "num_kv_shared_layers",
    "shared_intermediate_size", "shared_expert_intermediate_size", "num_nextn_predict_layers", "mtp_num_hidden_layers",
}  # fmt: skip
_AT_MOST = {"num_hidden_layers": MAX_LAYERS, "n_layer": MAX_LAYERS, "num_layers": MAX_LAYERS}  # others: MAX_COUNT
_NULL_MEANS = {
    "num_key_value_heads": "one KV head per attention head",
    "num_kv_heads": "one KV head per attention head",
    "head_dim": "hidden_size / num_attention_heads",
    "sliding_window": "no window",
}
_FLAG_KEYS = {
    "new_decoder_architecture", "multi_query", "use_sliding_window", "tie_word_embeddings", "attention_k_eq_v",
    "enable_moe_block", "attn_output_gate", "mla_use_nope", "alibi",
}  # fmt: skip
_STRING_KEYS = {"torch_dtype", "dtype", "_name_or_path", "mamba_ssm_dtype"}
_LAYER_KINDS = {"full_attention": "full", "sliding_attention": "sliding"}
# RoPE (the cos/sin tables vLLM and SGLang hold: kvcalc.engines.base.rotary_table_term). model_types whose attention
# has no rotary embedding (learned or ALiBi positions, or none): their vLLM modeling files call no get_rope
_NO_ROPE = {"gpt2", "gpt_neo", "gpt_bigcode", "opt", "bloom", "mpt", "jamba", "nemotron_h", "mamba", "mamba2", "falcon_mamba"}
_ROTARY_FRACTION_KEYS = ("partial_rotary_factor", "rotary_pct")
# Gemma 3 (and 3n)'s sliding layers rotate with rope_local_base_freq, unscaled: a second table (vLLM gemma3.py)
_LOCAL_ROPE_TABLE = {"gemma3", "gemma3_text", "gemma3n", "gemma3n_text"}
_MINIMAX_LIGHTNING = {"minimax", "minimax_m1", "minimax_text_01"}  # minimax_text_01.py: get_rope(dtype=torch.float32)


def _shown(value: object) -> str:
    shown = json.dumps(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def _check_values(cfg: dict[str, Any], origin: str) -> None:
    """Refuse a value of the wrong JSON type or out of range under a key kvcalc reads: 2.7, true or "8"
    for an integer, 0 heads, a negative window. A null is left to mean what transformers makes of None."""
    for key, value in cfg.items():
        if value is None:
            continue
        if key in _INTEGER_KEYS and (isinstance(value, bool) or not isinstance(value, int)):
            expected = "an integer"
        elif key in _INTEGER_KEYS and value < (0 if key in _ZERO_ALLOWED else 1):
            kind = "an integer, 0 or more" if key in _ZERO_ALLOWED else "a positive integer"
            null = f" (null means {_NULL_MEANS[key]})" if key in _NULL_MEANS else ""
            raise InvalidPreset(f"{origin}: {key}: expected {kind}, got {value}{null}")
        elif key in _INTEGER_KEYS and value > _AT_MOST.get(key, MAX_COUNT):
            expected = f"at most {_AT_MOST.get(key, MAX_COUNT)}"
        elif key in _FLAG_KEYS and not isinstance(value, bool):
            expected = "true or false"
        elif key in _STRING_KEYS and not isinstance(value, str):
            expected = "a string"
        elif key in ("layer_types", "layers_block_type") and not (
            isinstance(value, list) and all(isinstance(t, str) for t in value)
        ):
            expected = 'a list of layer types ("full_attention", "sliding_attention")'
        elif key == "mamba_expand" and not (_number(value) and 0 < value < MAX_COUNT):  # NaN: not in range
            expected = "a positive number"
        elif key in _ROTARY_FRACTION_KEYS and not (_number(value) and 0 < value <= 1):
            expected = "a number above 0 and at most 1"
        elif key in ("rope_scaling", "rope_parameters") and (problem := _rope_setting_problem(value)):
            expected = problem
        elif key == "hybrid_override_pattern" and not isinstance(value, str):
            expected = 'a string of layer letters ("M-M*-")'
        elif key in ("attn_type_list", "full_attn_idxs", "no_rope_layers", "compress_ratios") and not (
            isinstance(value, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)
        ):
            expected = "a list of integers"
        else:
            continue
        raise InvalidPreset(f"{origin}: {key}: expected {expected}, got {_shown(value)}")


def _number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float)


def _rope_setting_problem(value: object) -> str | None:
    """What is wrong with a rope_scaling (or transformers 5's rope_parameters, flat or per layer type), None if
    kvcalc can read it: a factor of at least 1, an original_max_position_embeddings that is a positive integer,
    a partial_rotary_factor above 0 and at most 1."""
    if not isinstance(value, dict):
        return "an object (rope_type, factor, ...)"
    for setting in [v for v in value.values() if isinstance(v, dict)] or [value]:
        factor, original, fraction = (
            setting.get(k) for k in ("factor", "original_max_position_embeddings", "partial_rotary_factor")
        )
        if factor is not None and not (_number(factor) and 1 <= factor < MAX_COUNT):
            return f"a factor of at least 1, not {_shown(factor)}"
        if original is not None and not (
            isinstance(original, int) and not isinstance(original, bool) and 0 < original <= MAX_COUNT
        ):
            return f"an original_max_position_embeddings that is a positive integer, not {_shown(original)}"
        if fraction is not None and not (_number(fraction) and 0 < fraction <= 1):
            return f"a partial_rotary_factor above 0 and at most 1, not {_shown(fraction)}"
    return None


def _refuse_recurrent(arch: str, cfg: dict[str, Any], origin: str) -> None:
    """Refuse a recurrent model kvcalc does not size (the hybrids of _HYBRID it does): its Mamba or
    linear-attention layers keep a state it would otherwise count as attention."""
    why = "kvcalc does not size their state, so it refuses the config rather than count those layers as attention"
    if arch in _HYBRID:
        return
    if arch == "minimax_m2" and set(cfg.get("attn_type_list") or [1]) == {1}:
        return  # MiniMax-M2 lists attn_type_list, all softmax attention (1)
    if arch in RECURRENT:
        raise InvalidPreset(f"{origin}: model_type {arch!r} has recurrent layers (Mamba, linear attention or convolution); {why}")
    marker = next((key for key in _HYBRID_KEYS if cfg.get(key) is not None), None)
    if marker is not None:
        raise InvalidPreset(f"{origin}: {marker}: marks a model with recurrent layers beside attention; {why}")


def _first(cfg: dict[str, Any], *keys: str) -> tuple[str, Any]:
    """The first of `keys` the config sets (not null), and its value; the first key and None when none is."""
    return next(((k, cfg[k]) for k in keys if cfg.get(k) is not None), (keys[0], None))


def _required(cfg: dict[str, Any], *keys: str) -> tuple[str, Any]:
    """Like _first, but a KeyError naming the first key when none is set."""
    key, value = _first(cfg, *keys)
    if value is None:
        raise KeyError(key)
    return key, value


def _flag(cfg: dict[str, Any], key: str, default: bool) -> bool:
    value = cfg.get(key)
    return default if value is None else bool(value)


def model_fields_from_hf(config: dict[str, Any], default_name: str, origin: str) -> dict[str, Any]:
    """ModelSpec fields from a config.json mapping; unsupported or recurrent architectures and configs
    missing, mistyping or misvaluing a field kvcalc needs are refused (InvalidPreset naming the field)."""
    arch = str(config.get("model_type", ""))
    text = config.get("text_config")  # vision-language wrappers keep the text model under text_config
    if text is not None and not isinstance(text, dict):
        raise InvalidPreset(f"{origin}: text_config: expected a mapping")
    inner = str((text or {}).get("model_type", ""))
    if arch not in SUPPORTED and arch not in RECURRENT:
        arch = _WRAPPERS.get(arch) or (inner if inner in SUPPORTED else arch)
    cfg = {**config, **(text or {})}
    sizes = cfg.get("intermediate_size")
    if arch in ("gemma3n", "gemma3n_text") and isinstance(sizes, list) and sizes:  # one MLP width per layer
        cfg["intermediate_size"] = sizes[0] if all(size == sizes[0] for size in sizes) else max(sizes)
    _refuse_recurrent(arch, cfg, origin)
    if arch in _CROSS_ATTENTION:
        raise InvalidPreset(
            f"{origin}: model_type {arch!r}: its text model's cross-attention layers, whose KV holds the image's encoder"
            " tokens, are not modelled; describe it in a model YAML with vision.encoder_decoder (docs/residents.md)"
        )
    if arch not in SUPPORTED and inner:
        raise InvalidPreset(
            f"{origin}: model_type {arch!r} wraps a text model of model_type {inner!r} (text_config), which is not"
            f" supported; supported: {', '.join(SUPPORTED)}"
        )
    if arch not in SUPPORTED:
        raise InvalidPreset(f"{origin}: model_type {arch!r} is not supported; supported: {', '.join(SUPPORTED)}")
    defaults = {key: value for key, value in _ABSENT_DEFAULTS.get(arch, {}).items() if key not in cfg}
    cfg = {**cfg, **defaults}
    _check_values(cfg, origin)
    try:
        return {**_fields(arch, cfg, default_name, origin, set(defaults)), **_vision_fields(config, origin)}
    except KeyError as exc:
        raise InvalidPreset(f"{origin}: {exc.args[0]}: missing, and {arch} configs need it") from None
    except (ValueError, InvalidInput) as exc:
        raise InvalidPreset(f"{origin}: {exc}") from None


def _vision_fields(config: dict[str, Any], origin: str) -> dict[str, Any]:
    """A multimodal wrapper's vision tower (kvcalc.vision) as the spec's `vision`, or a note that its
    tower is not counted; nothing for a text-only config."""
    found, why = vision.tower(config, origin)
    if config.get("audio_config") is not None:  # Gemma 3n / 4, Qwen-Omni: an audio tower beside the text model
        why = "; ".join(filter(None, [why, "its audio tower (audio_config) is not counted"]))
    fields: dict[str, Any] = {"vision": found} if found is not None else {}
    return {**fields, "notes": why} if why else fields


def _kv_heads(arch: str, cfg: dict[str, Any], heads: tuple[str, int]) -> tuple[str, int]:
    """The KV heads and the key they come from; a null means one per attention head (LlamaConfig and the
    others: `if num_key_value_heads is None: num_key_value_heads = num_attention_heads`)."""
    if arch in ("falcon", "gpt_bigcode") and not (arch == "falcon" and _flag(cfg, "new_decoder_architecture", False)):
        return ("multi_query", 1) if _flag(cfg, "multi_query", True) else heads  # FalconConfig, GPTBigCodeConfig
    key = "num_kv_heads" if arch == "falcon" else "num_key_value_heads"
    return (key, cfg[key]) if cfg.get(key) is not None else heads


def _head_dim(cfg: dict[str, Any], heads: tuple[str, int]) -> int:
    """head_dim, or hidden_size // num_attention_heads when it is null or left out (LlamaConfig)."""
    if cfg.get("head_dim") is not None:
        return int(cfg["head_dim"])
    hidden_key, hidden = _required(cfg, "hidden_size", "n_embd")
    if hidden < heads[1]:
        raise ValueError(f"{hidden_key} ({hidden}) / {heads[0]} ({heads[1]}) leaves a head_dim of 0; give head_dim")
    return int(hidden // heads[1])


def _layer_pattern(arch: str, cfg: dict[str, Any], layers: int) -> tuple[int | None, list[str] | None]:
    """The sliding window and the layer pattern (None: every layer alike). A null sliding_window means
    no window (MistralConfig: "If None, no sliding window")."""
    if arch in _OWN_PATTERN:
        return None, None  # _hybrid and _llama4 read these layer kinds
    window = cfg.get("sliding_window")
    if (layer_types := cfg.get("layer_types")) is not None:  # newer configs spell each layer out
        unknown = next((kind for kind in layer_types if kind not in _LAYER_KINDS), None)
        if unknown is not None:
            raise ValueError(
                f"layer_types: {unknown!r} layers are not supported: kvcalc sizes full_attention and sliding_attention"
                " layers only, and refuses other kinds (recurrent state, chunked attention) rather than miscount them"
            )
        if len(layer_types) != layers:  # transformers' layer_type_validation refuses this too
            raise ValueError(f"layer_types: lists {len(layer_types)} layers but num_hidden_layers is {layers}")
        pattern = [_LAYER_KINDS[kind] for kind in layer_types]
        if "sliding" not in pattern:
            return None, None
        if window is None:
            raise ValueError("layer_types: has sliding_attention layers but sliding_window is null")
        return window, pattern
    if window is None:
        return None, None
    if arch in _QWEN:  # Qwen2/3 set sliding_window but keep it off unless use_sliding_window
        if _flag(cfg, "use_sliding_window", False):
            raise ValueError(
                "use_sliding_window: true without layer_types is not supported (which layers slide depends on"
                " max_window_layers and the transformers version); give layer_types"
            )
        return None, None
    if arch in {"gemma2", "gpt_oss"}:  # Gemma2Config, GptOssConfig: layer i slides when (i + 1) % 2
        return window, ["sliding", "full"]
    if arch in {"gemma3", "gemma3_text"}:
        every = cfg.get("sliding_window_pattern") or _ABSENT_DEFAULTS[arch]["sliding_window_pattern"]  # null: the default
        # layer i is global when (i + 1) % every == 0
        period = min(every, layers + 1)  # a period past the last layer: every layer slides
        return window, ["sliding"] * (period - 1) + ["full"]
    if arch in {"mistral", "mixtral", "phi3"}:
        return window, None  # every layer slides
    return None, None


def _fields(arch: str, cfg: dict[str, Any], default_name: str, origin: str, defaulted: set[str]) -> dict[str, Any]:
    heads = _required(cfg, "num_attention_heads", "n_head")
    layers = _required(cfg, "num_hidden_layers", "n_layer", "num_layers")[1]
    kv_key, kv_heads = _kv_heads(arch, cfg, heads)
    if heads[1] % kv_heads:
        default = f", transformers' default for {arch} when the config leaves it out" if kv_key in defaulted else ""
        raise ValueError(f"{heads[0]} ({heads[1]}) must be divisible by {kv_key} ({kv_heads}{default})")
    window, pattern = _layer_pattern(arch, cfg, layers)
    hidden = _first(cfg, "hidden_size", "n_embd")[1]
    dtype_key, dtype = _first(cfg, "dtype", "torch_dtype")  # PreTrainedConfig: "If both are provided, keep `dtype`"
    fields: dict[str, Any] = {
        "name": cfg.get("_name_or_path") or default_name,  # PreTrainedConfig's default is ""
        "source": f"config.json at {origin}",
        "layers": layers,
        "heads": heads[1],
        "kv_heads": kv_heads,
        "head_dim": _head_dim(cfg, heads),
        "dtype": _dtype(dtype_key, dtype),
        "max_positions": _first(cfg, "max_position_embeddings", "n_positions", *_MAX_LENGTH_KEYS.get(arch, ()))[1],
        "hidden": hidden,
        "intermediate": _first(cfg, "intermediate_size", "n_inner", "ffn_hidden_size")[1]
        or (4 * hidden if hidden else None),  # GPT2Config: n_inner None means 4 * n_embd
        "vocab": cfg.get("vocab_size"),
        "tied_embeddings": _flag(cfg, "tie_word_embeddings", arch in _TIED_BY_DEFAULT),
        "mlp": "plain" if arch in _PLAIN_MLP else "gated",
        "sliding_window": window,
        "architecture": arch or None,  # the model_type: llama.cpp gives only some architectures their window
        "layer_pattern": pattern,
        # multi-token prediction layers beside the model's (DeepSeek-V3, GLM-4.5, MiMo; Qwen3-Next's name)
        "mtp_layers": _first(cfg, "num_nextn_predict_layers", "mtp_num_hidden_layers")[1],
        # Qwen3-Next and Qwen3.5 gate each head's output with a second half of q_proj (transformers
        # modeling_qwen3_5.py Qwen3_5Attention: q_proj = hidden x heads * head_dim * 2); attn_output_gate false turns it off
        "attention_output_gate": _flag(cfg, "attn_output_gate", True) if arch in _QWEN3_5 | {"qwen3_next"} else None,
    }
    if arch in _MLA or cfg.get("kv_lora_rank") is not None:
        rank = _required(cfg, "kv_lora_rank")[1]
        nope, rope, v = (_required(cfg, key)[1] for key in ("qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"))
        fields.update(head_dim=v, k_head_dim=nope + rope, v_head_dim=v, kv_heads=heads[1])
        fields["mla"] = {
            "kv_lora_rank": rank,
            "qk_rope_head_dim": rope,
            "qk_nope_head_dim": nope,
            "v_head_dim": v,
            "q_lora_rank": cfg.get("q_lora_rank"),
        }
    experts_key, experts = _first(cfg, "num_local_experts", "num_experts", "n_routed_experts")
    if experts is not None:
        top_key, top_k = _required(cfg, "num_experts_per_tok", "experts_per_token", "num_experts_per_token", "top_k_experts")
        if top_k > experts:
            raise ValueError(f"{top_key} ({top_k}) exceeds {experts_key} ({experts})")
        fields["moe"] = {
            "experts": experts,
            "experts_per_token": top_k,
            "expert_intermediate": _first(cfg, "moe_intermediate_size")[1] or fields["intermediate"],
            "shared_experts": _first(cfg, "n_shared_experts", "num_shared_experts")[1] or 0,
            "dense_layers": cfg.get("first_k_dense_replace") or 0,
        }
    if arch == "nemotron_h":  # its config names the attention head width attention_head_dim
        fields["head_dim"] = _first(cfg, "head_dim", "attention_head_dim")[1] or fields["head_dim"]
    if arch in ("llama4", "llama4_text"):
        _llama4(cfg, fields)
    if arch in _GEMMA4:
        _gemma4(cfg, fields)
    if arch in _SPARSE_MLA:  # modeling_deepseek_v32 / vLLM deepseek_v2.py Indexer: one key of index_head_dim per token
        fields["mla"]["indexer_head_dim"] = _required(cfg, "index_head_dim")[1]
    if arch in ("gemma3n", "gemma3n_text"):
        fields["kv_shared_layers"] = cfg.get("num_kv_shared_layers") or 0
        # its per-layer embeddings, AltUp and LAuReL blocks are not counted from shapes: weights need params
        fields["intermediate"] = None
    if arch in _HYBRID:
        _hybrid(arch, cfg, fields)
    if arch == "deepseek_v4":
        _deepseek_v4(cfg, fields)
    if any("eagle3" in str(name).lower() for name in cfg.get("architectures") or ()):
        _eagle3(cfg, fields)
    _rotary(arch, cfg, fields)
    _checkpoint_format(cfg.get("quantization_config"), fields)
    return {k: v for k, v in fields.items() if v is not None}


def _rotary(arch: str, cfg: dict[str, Any], fields: dict[str, Any]) -> None:
    """The rotated dims and the cos/sin tables as vLLM's get_rope builds them
    (vllm/model_executor/layers/rotary_embedding/__init__.py, vllm 04458da0): rotary_dim, or the head
    times partial_rotary_factor (rotary_pct); rows max_position_embeddings, times the factor for linear and
    dynamic scaling (dynamic with alpha: unscaled), original_max_position_embeddings times it for YaRN, both
    lengths for Phi-3's longrope; Gemma 3's sliding layers a second, unscaled table (gemma3.py), Gemma 4's full
    layers a table of their global head (gemma4.py); gpt-oss builds its table in fp32 (gpt_oss.py), MiniMax-M1
    for max_model_len rows in fp32 (minimax_text_01.py)."""
    if (
        arch in _NO_ROPE
        or cfg.get("alibi")
        or cfg.get("mla_use_nope")
        or cfg.get("position_embedding_type") in ("nope", "absolute", "alibi")
    ):
        fields["rotary_dims"] = 0
        return
    rows = fields.get("max_positions")
    if arch in _GEMMA4:
        if rows:  # its sliding layers rotate their 256-wide heads, its full layers their global heads
            full = fields["attention_shapes"]["full"]["head_dim"]
            fields["rotary_tables"] = [{"rows": rows, "dims": fields["head_dim"]}, {"rows": rows, "dims": full}]
        return
    if arch in _MINIMAX_LIGHTNING:
        fields["rotary_tables"] = [{"rows": "context", "dtype": "fp32"}]
    parameters = cfg.get("rope_parameters") or {}
    full = parameters.get("full_attention") if isinstance(parameters.get("full_attention"), dict) else parameters
    scaling = cfg.get("rope_scaling") or full
    _, fraction = _first({**full, **cfg}, *_ROTARY_FRACTION_KEYS)
    if cfg.get("rotary_dim") is not None:
        fields["rotary_dims"] = cfg["rotary_dim"]
    elif fraction is not None and "mla" not in fields:
        fields["rotary_dims"] = max(2, int((fields.get("k_head_dim") or fields["head_dim"]) * fraction) // 2 * 2)
    kind, factor = scaling.get("rope_type") or scaling.get("type"), scaling.get("factor")
    original = scaling.get("original_max_position_embeddings") or cfg.get("original_max_position_embeddings")
    if not rows or arch in _MINIMAX_LIGHTNING:
        return
    if kind in ("linear", "dynamic") and factor and not (kind == "dynamic" and scaling.get("alpha")):
        scaled = int(rows * factor)
    elif kind in ("yarn", "deepseek_yarn") and factor and original:
        scaled = int(original * factor)
    elif kind in ("longrope", "su") and original:
        scaled = original + rows  # Phi3LongRoPEScaledRotaryEmbedding: the short table, then the long one
    else:
        scaled = rows
    if scaled > MAX_COUNT:
        raise ValueError(f"rope_scaling: {scaled:,} positions, more than kvcalc takes ({MAX_COUNT:,})")
    local = [{"rows": rows}] if arch in _LOCAL_ROPE_TABLE else []
    table = {"rows": scaled, **({"dtype": "fp32"} if arch == "gpt_oss" else {})}
    if local or table != {"rows": rows}:
        fields["rotary_tables"] = [*local, table]


def _deepseek_v4(cfg: dict[str, Any], fields: dict[str, Any]) -> None:
    """DeepSeek-V4: one KV head of head_dim (512) per layer, as a sliding window of sliding_window rows
    beside the compressed caches of compress_ratios, one ratio per layer and then one per MTP layer
    (vLLM DeepseekV4 reads config.compress_ratios[layer]; its MTP layers, a speculative draft, are not
    counted here). Its weights (grouped low-rank output, hyper-connections, compressors) are not counted
    from shapes: the fields only weights use are left out, so weights need params."""
    layers = fields["layers"]
    ratios = _required(cfg, "compress_ratios")[1]
    if len(ratios) < layers:
        raise ValueError(f"compress_ratios lists {len(ratios)} ratios, fewer than num_hidden_layers ({layers})")
    fields["sliding_window"] = _required(cfg, "sliding_window")[1]
    fields["compressed"] = {
        "ratios": ratios[:layers],
        "qk_rope_head_dim": _required(cfg, "qk_rope_head_dim")[1],
        "index_head_dim": _required(cfg, "index_head_dim")[1],
    }
    for key in ("hidden", "intermediate", "vocab", "moe", "mtp_layers"):
        fields.pop(key, None)


def eagle3_params(fields: dict[str, Any], draft_vocab: int, target_hidden: int) -> int:
    """The parameters vLLM builds for an EAGLE-3 head (vllm/model_executor/models/llama_eagle3.py,
    vllm 00bd1493): each decoder layer's q, k, v from 2h inputs in the first layer (the token's
    embedding beside the target's hidden state) and h after, o, a gated MLP and three norms
    (input, hidden, post-attention); fc from 3 target hidden states (3 * target_hidden x h); the
    final norm; an LM head over the draft vocabulary (draft_vocab x h). The embedding table is the
    target's, shared (vllm/v1/spec_decode/eagle.py load_model), so not counted; so is the
    draft-to-target id map (draft_vocab int64, 0.26 MB for 32k).

    >>> eagle3_params({"layers": 1, "hidden": 4096, "heads": 32, "kv_heads": 8, "head_dim": 128, "intermediate": 14336}, 32000, 4096)
    424689664
    """
    h, layers, inter = fields["hidden"], fields["layers"], fields["intermediate"]
    qkv_out = (fields["heads"] + 2 * fields["kv_heads"]) * fields["head_dim"]
    per_layer = fields["heads"] * fields["head_dim"] * h + 3 * h * inter + 3 * h  # o, gate_up + down, norms
    qkv = (2 * h + (layers - 1) * h) * qkv_out
    return layers * per_layer + qkv + 3 * target_hidden * h + h + draft_vocab * h


def _eagle3(cfg: dict[str, Any], fields: dict[str, Any]) -> None:
    """An EAGLE-3 draft head (architectures LlamaForCausalLMEagle3, Eagle3LlamaForCausalLM): its
    parameters as vLLM builds them (eagle3_params); its KV one full-attention layer per decoder layer."""
    draft_vocab = cfg.get("draft_vocab_size") or fields["vocab"]  # vLLM: the base vocab size when absent
    target_hidden = cfg.get("target_hidden_size") or fields["hidden"]
    if not isinstance(draft_vocab, int) or not isinstance(target_hidden, int) or draft_vocab < 1 or target_hidden < 1:
        raise ValueError("draft_vocab_size and target_hidden_size must be positive integers")
    if fields["intermediate"] is None or fields["hidden"] is None:
        raise KeyError("intermediate_size")
    fields["params"] = eagle3_params(fields, draft_vocab, target_hidden)
    fields["speculative_head"] = "eagle3"
    # the count stands for the shapes: counted from them again, a model of these fields would hold its own
    # embedding table and a full-vocabulary LM head
    fields["hidden"] = fields["intermediate"] = None
    fields["source"] += (
        f"; an EAGLE-3 head: params as vLLM builds it (llama_eagle3.py: first layer's qkv from 2h, fc 3 * {target_hidden:,} x h,"
        f" LM head over draft_vocab_size {draft_vocab:,}; the embedding table shared with the target)"
    )


def _llama4(cfg: dict[str, Any], fields: dict[str, Any]) -> None:
    """Llama 4 (transformers configuration_llama4.py): RoPE layers attend within chunks of
    attention_chunk_size, every no_rope_layer_interval-th layer (NoPE) attends globally; every
    interleave_moe_layer_step-th layer is MoE (a shared expert beside the routed ones), the others
    a dense MLP of intermediate_size_mlp."""
    layers = fields["layers"]
    pattern = _layer_list(cfg, layers, {"chunked_attention": "chunked", "full_attention": "full"})
    if pattern is None:
        rope = cfg.get("no_rope_layers")  # 1: RoPE and chunked, 0: NoPE and global
        if rope:
            if len(rope) != layers or set(rope) - {0, 1}:
                raise ValueError(f"no_rope_layers: expected {layers} entries of 0 and 1")
            pattern = ["chunked" if r else "full" for r in rope]
        else:
            every = cfg.get("no_rope_layer_interval") or 4
            pattern = ["full" if (i + 1) % every == 0 else "chunked" for i in range(layers)]
    if cfg.get("attention_chunk_size") is None:
        pattern = ["full"] * layers  # no chunk size: every layer attends globally
    fields["layer_pattern"] = pattern
    fields["attention_chunk_size"] = cfg.get("attention_chunk_size")
    if "moe" in fields:
        step = cfg.get("interleave_moe_layer_step") or 1
        fields["moe"].update(
            shared_experts=1, expert_intermediate=cfg.get("intermediate_size"), layer_period=step, layer_offset=step - 1
        )
        fields["intermediate"] = cfg.get("intermediate_size_mlp") or fields["intermediate"]


def _layer_list(cfg: dict[str, Any], layers: int, kinds: dict[str, str]) -> list[str] | None:
    """`layer_types` (or `layers_block_type`) mapped to kvcalc's kinds; None when the config gives neither."""
    listed = _first(cfg, "layer_types", "layers_block_type")[1]
    if listed is None:
        return None
    if len(listed) != layers:
        raise ValueError(f"layer_types lists {len(listed)} layers, num_hidden_layers says {layers}")
    unknown = sorted({t for t in listed if t not in kinds})
    if unknown:
        raise ValueError(f"layer_types: unknown layer type {unknown[0]!r}; kvcalc reads {', '.join(sorted(kinds))}")
    return [kinds[t] for t in listed]


def _hybrid(arch: str, cfg: dict[str, Any], fields: dict[str, Any]) -> None:
    """Layer kinds and state shapes of hybrid architectures, with the config fields vLLM reads for
    each (get_mamba_state_shape_from_config in vllm/model_executor/models/<arch>.py)."""
    layers, hidden = fields["layers"], fields.get("hidden") or _required(cfg, "hidden_size")[1]
    state: dict[str, Any] = {}
    if arch == "qwen3_next" or arch in _QWEN3_5:  # models/qwen3_next.py, qwen3_5.py: a full layer every full_attention_interval
        pattern = _layer_list(cfg, layers, {"linear_attention": "gated_deltanet", "full_attention": "full"})
        if pattern is None:
            every = cfg.get("full_attention_interval") or 4
            pattern = ["full" if (i + 1) % every == 0 else "gated_deltanet" for i in range(layers)]
        state["gated_deltanet"] = {
            "k_heads": cfg["linear_num_key_heads"],
            "v_heads": cfg["linear_num_value_heads"],
            "k_head_dim": cfg["linear_key_head_dim"],
            "v_head_dim": cfg["linear_value_head_dim"],
            "conv_kernel": cfg["linear_conv_kernel_dim"],
        }
        if cfg.get("shared_expert_intermediate_size") and "moe" in fields:
            fields["moe"]["shared_experts"] = _shared_experts(cfg["shared_expert_intermediate_size"], fields["moe"])
        if cfg.get("mamba_ssm_dtype") is not None:  # Qwen3.5: "float32", the recurrent state's dtype
            state["ssm_dtype"] = _dtype("mamba_ssm_dtype", cfg["mamba_ssm_dtype"])
    elif arch == "kimi_linear":  # models/kimi_linear.py: KDA layers beside MLA, 1-based indices in linear_attn_config
        pattern = _kimi_linear_pattern(cfg, layers)
        linear = cfg["linear_attn_config"]
        state["kda"] = {
            "heads": _positive(linear, "num_heads"),
            "head_dim": _positive(linear, "head_dim"),
            "conv_kernel": _positive(linear, "short_conv_kernel_size"),
        }
    elif arch == "nemotron_h":  # models/nemotron_h.py: M mamba, * attention, - MLP, E MoE (hybrid_override_pattern)
        letters = {"M": "mamba2", "*": "full", "-": "mlp", "E": "mlp"}
        pattern = _layer_list(cfg, layers, {"mamba": "mamba2", "attention": "full", "mlp": "mlp", "moe": "mlp"})
        if pattern is None:
            code = cfg["hybrid_override_pattern"]
            if len(code) != layers or set(code) - set(letters):
                raise ValueError(f"hybrid_override_pattern: expected {layers} letters of M, *, - and E, got {code!r}")
            pattern = [letters[c] for c in code]
        heads, head_dim = cfg["mamba_num_heads"], cfg["mamba_head_dim"]
        state["mamba2"] = {
            "heads": heads,
            "head_dim": head_dim,
            "state_size": cfg["ssm_state_size"],
            "groups": cfg["n_groups"],
            "conv_kernel": cfg["conv_kernel"],
        }
        # vLLM reads mamba_ssm_cache_dtype from the config, float32 when absent (model_executor/models/config.py
        # NemotronHForCausalLMConfig.DEFAULT_MAMBA_SSM_CACHE_DTYPE, vllm-project/vllm 1936cf38; float16 before)
        state["ssm_dtype"] = cfg.get("mamba_ssm_cache_dtype") or "float32"
        fields["mlp"] = "plain"  # relu2 up and down projections
    elif arch == "granitemoehybrid":  # models/granitemoehybrid.py: mamba_* fields, d_inner = mamba_expand * hidden
        pattern = _layer_list(cfg, layers, {"mamba": "mamba2", "attention": "full"}) or ["mamba2"] * layers
        state["mamba2"] = _mamba2(cfg, int(cfg.get("mamba_expand", 2) * hidden))
        shared = cfg.get("shared_intermediate_size")
        if "moe" in fields:
            fields["moe"]["shared_experts"] = _shared_experts(shared, fields["moe"]) if shared else 0
        elif shared:
            fields["intermediate"] = shared  # no routed experts: the shared MLP is the dense MLP
    elif arch == "falcon_h1":  # models/falcon_h1.py: attention and Mamba-2 side by side in every layer
        pattern = ["full+mamba2"] * layers
        state["mamba2"] = _mamba2(cfg, cfg.get("mamba_d_ssm") or int(cfg.get("mamba_expand", 2) * hidden))
    elif arch == "jamba":  # models/jamba.py: Mamba-1 of mamba_expand * hidden; attention and experts by period
        period, offset = cfg.get("attn_layer_period") or 8, cfg.get("attn_layer_offset") or 4
        pattern = _layer_list(cfg, layers, {"mamba": "mamba1", "attention": "full"}) or [
            "full" if i % period == offset else "mamba1" for i in range(layers)
        ]
        state["mamba1"] = {
            "intermediate": int(cfg.get("mamba_expand", 2) * hidden),
            "state_size": cfg.get("mamba_d_state") or 16,
            "conv_kernel": cfg.get("mamba_d_conv") or 4,
        }
        if "moe" in fields:
            fields["moe"]["layer_period"] = cfg.get("expert_layer_period") or 2
            fields["moe"]["layer_offset"] = cfg.get("expert_layer_offset") or 0
    elif arch == "lfm2":  # models/lfm2.py: gated short convs of conv_L_cache over hidden_size channels
        pattern = _layer_list(cfg, layers, {"conv": "short_conv", "full_attention": "full"})
        if pattern is None:
            full = set(cfg["full_attn_idxs"])
            pattern = ["full" if i in full else "short_conv" for i in range(layers)]
        state["short_conv"] = {"channels": cfg.get("conv_dim") or hidden, "conv_kernel": cfg["conv_L_cache"]}
        fields["intermediate"] = cfg.get("block_ff_dim") or fields["intermediate"]
    else:  # minimax: models/minimax_text_01.py, attn_type_list 1 = softmax attention, 0 = lightning attention
        types = cfg.get("attn_type_list")
        if types is not None:
            if len(types) != layers or set(types) - {0, 1}:
                raise ValueError(f"attn_type_list: expected {layers} entries of 0 (lightning) and 1 (softmax attention)")
            pattern = ["full" if t == 1 else "lightning" for t in types]
        else:
            pattern = _layer_list(cfg, layers, {"linear_attention": "lightning", "full_attention": "full"})
            if pattern is None:
                raise KeyError("attn_type_list")
        state["lightning"] = {"heads": fields["heads"], "head_dim": fields["head_dim"]}
    used = {kind.split("+")[-1] for kind in pattern}
    fields["layer_pattern"] = pattern
    fields["state"] = {k: v for k, v in state.items() if k in used or k == "ssm_dtype"} if used - {"full", "mlp"} else None


def _positive(section: dict[str, Any], key: str) -> int:
    """A positive integer of a nested config section (linear_attn_config), its key named when missing or wrong."""
    value = section.get(key)
    if value is None:
        raise KeyError(f"linear_attn_config.{key}")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"linear_attn_config.{key}: expected a positive integer, got {_shown(value)}")
    return value


def _kimi_linear_pattern(cfg: dict[str, Any], layers: int) -> list[str]:
    """Kimi-Linear's layer kinds: linear_attn_config.kda_layers and full_attn_layers list 1-based layer
    numbers (vLLM KimiLinearConfig.is_kda_layer: `(layer_idx + 1) in kda_layers`); every layer in one."""
    linear = cfg.get("linear_attn_config")
    if not isinstance(linear, dict):
        raise KeyError("linear_attn_config")
    kda, full = linear.get("kda_layers"), linear.get("full_attn_layers")
    for key, listed in (("kda_layers", kda), ("full_attn_layers", full)):
        if not isinstance(listed, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in listed):
            raise ValueError(f"linear_attn_config.{key}: expected a list of layer numbers")
    assert isinstance(kda, list) and isinstance(full, list)
    if sorted(kda + full) != list(range(1, layers + 1)):
        raise ValueError(f"linear_attn_config: kda_layers and full_attn_layers must number the {layers} layers from 1 once each")
    kinds = set(kda)
    return ["kda" if i + 1 in kinds else "full" for i in range(layers)]


def _gemma4(cfg: dict[str, Any], fields: dict[str, Any]) -> None:
    """Gemma 4 (transformers configuration_gemma4.py Gemma4TextConfig, 008e5743; vLLM gemma4.py 001cabc1):
    layer_types (default five sliding to one full, the last layer always full) with a sliding_window
    (default 512); full layers have head_dim global_head_dim (default 512) and, where attention_k_eq_v,
    num_global_key_value_heads KV heads (their V is their K, still cached as its own tensor: vLLM loads K's
    weights into both slots); per_layer_config overrides both; the last num_kv_shared_layers layers keep
    no cache. enable_moe_block adds routed experts beside each layer's dense MLP."""
    layers = fields["layers"]
    pattern = _layer_list(cfg, layers, {"sliding_attention": "sliding", "full_attention": "full"})
    if pattern is None:
        pattern = ["full" if (i + 1) % 6 == 0 else "sliding" for i in range(layers)]
    pattern[-1] = "full"  # Gemma4TextConfig: "Last layer must use `full_attention`"
    window = cfg.get("sliding_window") or 512
    full: dict[str, int] = {"head_dim": cfg.get("global_head_dim") or 512}
    if _flag(cfg, "attention_k_eq_v", False) and cfg.get("num_global_key_value_heads") is not None:
        full["kv_heads"] = cfg["num_global_key_value_heads"]
    overrides = cfg.get("per_layer_config")
    if isinstance(overrides, dict):
        for index, override in overrides.items():
            if str(index).isdigit() and int(index) < layers and pattern[int(index)] == "full" and isinstance(override, dict):
                full["head_dim"] = override.get("head_dim") or full["head_dim"]
                full["kv_heads"] = override.get("num_key_value_heads") or full.get("kv_heads") or fields["kv_heads"]
    fields["layer_pattern"] = pattern if "sliding" in pattern else None
    fields["sliding_window"] = window if "sliding" in pattern else None
    fields["attention_shapes"] = {"full": full}
    fields["kv_shared_layers"] = cfg.get("num_kv_shared_layers") or 0
    if cfg.get("hidden_size_per_layer_input"):  # per-layer embeddings (E2B, E4B): weights need params
        fields["intermediate"] = None
    if _flag(cfg, "enable_moe_block", False):
        experts = _required(cfg, "num_experts")[1]
        fields["moe"] = {
            "experts": experts,
            "experts_per_token": _required(cfg, "top_k_experts")[1],
            "expert_intermediate": _required(cfg, "moe_intermediate_size")[1],
        }
        fields["moe"]["shared_experts"] = _shared_experts(fields["intermediate"], fields["moe"]) if fields["intermediate"] else 0


def _shared_experts(width: int, moe: dict[str, Any]) -> int:
    """A shared MLP of `width` counted in routed experts' widths (Granite-4.0-H-Small: 1536 = 2 * 768)."""
    return max(1, round(width / moe["expert_intermediate"]))


def _mamba2(cfg: dict[str, Any], inner: int) -> dict[str, Any]:
    """A Mamba-2 section from the mamba_* fields of Bamba, Granite-4.0-H and Falcon-H1."""
    heads, head_dim = cfg["mamba_n_heads"], cfg["mamba_d_head"]
    section = {
        "heads": heads,
        "head_dim": head_dim,
        "state_size": cfg["mamba_d_state"],
        "groups": cfg.get("mamba_n_groups") or 1,
        "conv_kernel": cfg.get("mamba_d_conv") or 4,
    }
    if inner != heads * head_dim:
        section["intermediate"] = inner
    return section


def _dtype(key: str, value: str | None) -> str:
    """The checkpoint's dtype in kvcalc's spelling; bf16 when the config gives none."""
    if value is None:
        return "bf16"
    try:
        return parse_dtype(value).value
    except InvalidInput as exc:
        raise ValueError(f"{key}: {exc}") from None


def _checkpoint_format(quantization: object, fields: dict[str, Any]) -> None:
    """The weights' format from `quantization_config`: gpt-oss's MXFP4 experts, FP8 (with 128x128 block
    scales when weight_block_size says so: DeepSeek-V3), integer layers with their exact groups (AWQ, GPTQ,
    AutoRound, compressed-tensors pack-quantized, bitsandbytes: kvcalc.quantization), compressed-tensors int-quantized
    and float-quantized 8-bit (W8A8: one byte per weight), NVFP4 (ModelOpt quant_algo NVFP4,
    compressed-tensors nvfp4-pack-quantized). The embedding table and LM head stay in `torch_dtype`,
    as these checkpoints keep them. Other methods: everything in `torch_dtype`."""
    if quantization is None:
        return
    if not isinstance(quantization, dict):
        raise ValueError(f"quantization_config: expected an object, got {_shown(quantization)}")
    method = quantization.get("quant_method")
    linear = linear_quantization(quantization)
    if linear is not None:
        fields["weight_dtype"] = linear.dtype.value
        fields["quantization"] = linear.model_dump()
    elif method == "mxfp4" and "moe" in fields:
        fields["moe"]["expert_dtype"] = "mxfp4"
    elif method == "fp8":
        fields["weight_dtype"] = "fp8_block" if quantization.get("weight_block_size") == [128, 128] else "fp8"
    elif method == "compressed-tensors" and quantization.get("format") in ("int-quantized", "float-quantized"):
        fields["weight_dtype"] = "int8" if quantization["format"] == "int-quantized" else "fp8"
    elif (method == "modelopt" and str(quantization.get("quant_algo", "")).upper() == "NVFP4") or (
        method == "compressed-tensors" and quantization.get("format") == "nvfp4-pack-quantized"
    ):  # TensorRT Model Optimizer's and llm-compressor's NVFP4 checkpoints: 16 fp4 values per fp8 scale
        fields["weight_dtype"] = "nvfp4"
