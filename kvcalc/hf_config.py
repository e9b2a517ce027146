"""Turn a Hugging Face config.json mapping into ModelSpec fields. Pure: no I/O.

Field names per architecture as in transformers' configuration_<arch>.py files.
"""

from __future__ import annotations

import json
from typing import Any

from kvcalc.errors import InvalidPreset

SUPPORTED = (
    "llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen3_moe", "gemma", "gemma2", "gemma3", "gemma3_text",
    "deepseek_v2", "deepseek_v3", "gpt_oss", "falcon", "gpt2", "gpt_bigcode", "phi3",
)  # fmt: skip
_PLAIN_MLP = {"gpt2", "gpt_bigcode", "falcon"}
_TIED_BY_DEFAULT = {"gpt2", "gpt_bigcode", "falcon", "gemma", "gemma2", "gemma3", "gemma3_text"}
_HF_DTYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
_INTEGER_KEYS = {
    "num_attention_heads", "n_head", "hidden_size", "n_embd", "num_hidden_layers", "n_layer", "num_layers",
    "num_key_value_heads", "num_kv_heads", "head_dim", "max_position_embeddings", "n_positions", "intermediate_size",
    "n_inner", "ffn_hidden_size", "vocab_size", "sliding_window", "sliding_window_pattern", "kv_lora_rank",
    "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "q_lora_rank", "num_local_experts", "num_experts",
    "n_routed_experts", "num_experts_per_tok", "experts_per_token", "moe_intermediate_size", "n_shared_experts",
    "first_k_dense_replace",
}  # fmt: skip
_FLAG_KEYS = {"new_decoder_architecture", "multi_query", "use_sliding_window", "tie_word_embeddings"}


def _check_types(cfg: dict[str, Any], origin: str) -> None:
    """Refuse a value of the wrong JSON type under a key kvcalc reads: 2.7, true or "8" for an integer, and so on."""
    for key, value in cfg.items():
        if value is None:
            continue
        if key in _INTEGER_KEYS and (isinstance(value, bool) or not isinstance(value, int)):
            expected = "an integer"
        elif key in _FLAG_KEYS and not isinstance(value, bool):
            expected = "true or false"
        elif key == "layer_types" and not (isinstance(value, list) and all(isinstance(t, str) for t in value)):
            expected = 'a list of layer types ("full_attention", "sliding_attention")'
        else:
            continue
        shown = json.dumps(value)
        raise InvalidPreset(f"{origin}: {key}: expected {expected}, got {shown if len(shown) <= 40 else shown[:37] + '...'}")


def _first(cfg: dict[str, Any], *keys: str) -> Any:
    return next((cfg[k] for k in keys if cfg.get(k) is not None), None)


def _kv_heads(arch: str, cfg: dict[str, Any], heads: int) -> int:
    if arch == "falcon":  # multi_query: one KV head whatever num_kv_heads says, unless the new decoder
        if cfg.get("new_decoder_architecture"):
            return cfg.get("num_kv_heads") or heads
        return 1 if cfg.get("multi_query", True) else heads
    if arch == "gpt_bigcode":
        return 1 if cfg.get("multi_query", True) else heads
    return cfg.get("num_key_value_heads") or heads


def _layer_pattern(arch: str, cfg: dict[str, Any]) -> tuple[int | None, list[str] | None]:
    window = cfg.get("sliding_window")
    if layer_types := cfg.get("layer_types"):  # newer configs spell each layer out
        pattern = ["sliding" if "sliding" in t else "full" for t in layer_types]
        return (window, pattern) if "sliding" in pattern else (None, None)
    if not window or (arch in {"qwen2", "qwen3", "qwen3_moe"} and not cfg.get("use_sliding_window")):
        return None, None  # Qwen2/3 set sliding_window but keep it off
    if arch in {"gemma2", "gpt_oss"}:
        return window, ["sliding", "full"]
    if arch in {"gemma3", "gemma3_text"}:
        every = cfg.get("sliding_window_pattern") or 6  # layer i is global when (i + 1) % every == 0
        if every < 0:
            raise ValueError(f"sliding_window_pattern: expected a positive integer, got {every}")
        period = min(every, (cfg.get("num_hidden_layers") or 0) + 1)  # a period past the last layer: every layer slides
        return window, ["sliding"] * (period - 1) + ["full"]
    if arch in {"mistral", "mixtral", "phi3"}:
        return window, None  # every layer slides
    return None, None


def model_fields_from_hf(config: dict[str, Any], default_name: str, origin: str) -> dict[str, Any]:
    """ModelSpec fields from a config.json mapping; unsupported architectures and configs missing or
    mistyping a field kvcalc needs are refused (InvalidPreset naming the field)."""
    arch = str(config.get("model_type", ""))
    if arch not in SUPPORTED:
        raise InvalidPreset(f"{origin}: model_type {arch!r} is not supported; supported: {', '.join(SUPPORTED)}")
    text = config.get("text_config") or {}  # gemma3 keeps the text model under text_config
    if not isinstance(text, dict):
        raise InvalidPreset(f"{origin}: text_config: expected a mapping")
    cfg = {**config, **text}
    _check_types(cfg, origin)
    try:
        return _fields(arch, cfg, default_name, origin)
    except KeyError as exc:
        raise InvalidPreset(f"{origin}: {exc.args[0]}: missing, and {arch} configs need it") from None
    except ValueError as exc:
        raise InvalidPreset(f"{origin}: {exc}") from None


def _fields(arch: str, cfg: dict[str, Any], default_name: str, origin: str) -> dict[str, Any]:
    heads = _first(cfg, "num_attention_heads", "n_head")
    hidden = _first(cfg, "hidden_size", "n_embd")
    if not isinstance(heads, int) or not isinstance(hidden, int) or heads < 1 or hidden < 1:
        raise InvalidPreset(f"{origin}: num_attention_heads and hidden_size must be positive integers")
    window, pattern = _layer_pattern(arch, cfg)
    fields: dict[str, Any] = {
        "name": cfg.get("_name_or_path") or default_name,
        "source": f"config.json at {origin}",
        "layers": _first(cfg, "num_hidden_layers", "n_layer", "num_layers"),
        "heads": heads,
        "kv_heads": _kv_heads(arch, cfg, heads),
        "head_dim": cfg.get("head_dim") or hidden // heads,
        "dtype": _HF_DTYPES.get(str(_first(cfg, "torch_dtype", "dtype")), "bf16"),
        "max_positions": _first(cfg, "max_position_embeddings", "n_positions"),
        "hidden": hidden,
        "intermediate": _first(cfg, "intermediate_size", "n_inner", "ffn_hidden_size") or 4 * hidden,
        "vocab": cfg.get("vocab_size"),
        "tied_embeddings": cfg.get("tie_word_embeddings", arch in _TIED_BY_DEFAULT),
        "mlp": "plain" if arch in _PLAIN_MLP else "gated",
        "sliding_window": window,
        "layer_pattern": pattern,
    }
    if cfg.get("kv_lora_rank"):
        nope, rope, v = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
        fields.update(head_dim=v, k_head_dim=nope + rope, v_head_dim=v, kv_heads=heads)
        fields["mla"] = {
            "kv_lora_rank": cfg["kv_lora_rank"],
            "qk_rope_head_dim": rope,
            "qk_nope_head_dim": nope,
            "v_head_dim": v,
            "q_lora_rank": cfg.get("q_lora_rank"),
        }
    experts = _first(cfg, "num_local_experts", "num_experts", "n_routed_experts")
    if experts:
        fields["moe"] = {
            "experts": experts,
            "experts_per_token": _first(cfg, "num_experts_per_tok", "experts_per_token"),
            "expert_intermediate": _first(cfg, "moe_intermediate_size") or fields["intermediate"],
            "shared_experts": cfg.get("n_shared_experts") or 0,
            "dense_layers": cfg.get("first_k_dense_replace") or 0,
        }
    _checkpoint_format(cfg.get("quantization_config"), fields)
    return {k: v for k, v in fields.items() if v is not None}


def _checkpoint_format(quantization: object, fields: dict[str, Any]) -> None:
    """The weights' format from `quantization_config`: gpt-oss's MXFP4 experts, FP8 blocks
    (DeepSeek-V3), GPTQ/AWQ 4-bit groups (int4: groups of 128 with a scale and zero point). The
    embedding table and LM head stay in `torch_dtype`, as these checkpoints keep them. Other
    methods: everything in `torch_dtype`."""
    if not isinstance(quantization, dict):
        return
    method = quantization.get("quant_method")
    if method == "mxfp4" and "moe" in fields:
        fields["moe"]["expert_dtype"] = "mxfp4"
    elif method == "fp8":
        fields["weight_dtype"] = "fp8"
    elif method in ("gptq", "awq") and quantization.get("bits") == 4:
        fields["weight_dtype"] = "int4"
