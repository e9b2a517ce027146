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
    "qwen3_next", "nemotron_h", "granitemoehybrid", "jamba", "falcon_h1", "lfm2", "minimax", "minimax_m1", "minimax_text_01",
    "llama4", "llama4_text", "gemma3n", "gemma3n_text",
)  # fmt: skip
_HYBRID = {
    "qwen3_next",
    "nemotron_h",
    "granitemoehybrid",
    "jamba",
    "falcon_h1",
    "lfm2",
    "minimax",
    "minimax_m1",
    "minimax_text_01",
}
_PLAIN_MLP = {"gpt2", "gpt_bigcode", "falcon"}
_TIED_BY_DEFAULT = {
    "gpt2", "gpt_bigcode", "falcon", "gemma", "gemma2", "gemma3", "gemma3_text", "gemma3n", "gemma3n_text", "lfm2",
    "granitemoehybrid",
}  # fmt: skip
_HF_DTYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
_INTEGER_KEYS = {
    "num_attention_heads", "n_head", "hidden_size", "n_embd", "num_hidden_layers", "n_layer", "num_layers",
    "num_key_value_heads", "num_kv_heads", "head_dim", "max_position_embeddings", "n_positions", "intermediate_size",
    "n_inner", "ffn_hidden_size", "vocab_size", "sliding_window", "sliding_window_pattern", "kv_lora_rank",
    "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "q_lora_rank", "num_local_experts", "num_experts",
    "n_routed_experts", "num_experts_per_tok", "experts_per_token", "moe_intermediate_size", "n_shared_experts",
    "first_k_dense_replace",
    "attention_head_dim", "mamba_num_heads", "mamba_head_dim", "ssm_state_size", "n_groups", "conv_kernel", "mamba_n_heads",
    "mamba_d_head", "mamba_d_state", "mamba_n_groups", "mamba_d_conv", "mamba_d_ssm", "linear_num_key_heads",
    "linear_num_value_heads", "linear_key_head_dim", "linear_value_head_dim", "linear_conv_kernel_dim",
    "full_attention_interval", "attn_layer_period", "attn_layer_offset", "expert_layer_period", "expert_layer_offset",
    "conv_L_cache", "conv_dim", "shared_intermediate_size", "shared_expert_intermediate_size", "block_ff_dim",
    "attention_chunk_size", "intermediate_size_mlp", "interleave_moe_layer_step", "no_rope_layer_interval",
    "num_kv_shared_layers",
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
        elif key in ("layer_types", "layers_block_type") and not (
            isinstance(value, list) and all(isinstance(t, str) for t in value)
        ):
            expected = 'a list of layer types ("full_attention", "sliding_attention")'
        elif key == "mamba_expand" and (isinstance(value, bool) or not isinstance(value, int | float) or value <= 0):
            expected = "a positive number"
        elif key == "hybrid_override_pattern" and not isinstance(value, str):
            expected = 'a string of layer letters ("M-M*-")'
        elif key in ("attn_type_list", "full_attn_idxs") and not (
            isinstance(value, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)
        ):
            expected = "a list of integers"
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
    if arch in _HYBRID:
        return None, None  # their layer kinds come from _hybrid
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
    sizes = cfg.get("intermediate_size")
    if arch in ("gemma3n", "gemma3n_text") and isinstance(sizes, list) and sizes:  # one MLP width per layer
        cfg["intermediate_size"] = sizes[0] if all(size == sizes[0] for size in sizes) else max(sizes)
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
    if arch == "nemotron_h":  # its config names the attention head width attention_head_dim
        fields["head_dim"] = _first(cfg, "head_dim", "attention_head_dim") or hidden // heads
    if arch in ("llama4", "llama4_text"):
        _llama4(cfg, fields)
    if arch in ("gemma3n", "gemma3n_text"):
        fields["kv_shared_layers"] = cfg.get("num_kv_shared_layers") or 0
        # its per-layer embeddings, AltUp and LAuReL blocks are not counted from shapes: weights need params
        fields["intermediate"] = None
    experts = _first(cfg, "num_local_experts", "num_experts", "n_routed_experts")
    if experts:
        fields["moe"] = {
            "experts": experts,
            "experts_per_token": _first(cfg, "num_experts_per_tok", "experts_per_token"),
            "expert_intermediate": _first(cfg, "moe_intermediate_size") or fields["intermediate"],
            "shared_experts": cfg.get("n_shared_experts") or 0,
            "dense_layers": cfg.get("first_k_dense_replace") or 0,
        }
    if arch in _HYBRID:
        _hybrid(arch, cfg, fields)
    _checkpoint_format(cfg.get("quantization_config"), fields)
    return {k: v for k, v in fields.items() if v is not None}


def _llama4(cfg: dict[str, Any], fields: dict[str, Any]) -> None:
    """Llama 4 (transformers configuration_llama4.py): RoPE layers attend within chunks of
    attention_chunk_size, every no_rope_layer_interval-th layer (NoPE) attends globally; every
    interleave_moe_layer_step-th layer is MoE (a shared expert beside the routed ones), the others
    a dense MLP of intermediate_size_mlp."""
    layers = fields["layers"]
    if not isinstance(layers, int) or layers < 1:
        raise ValueError("num_hidden_layers: expected a positive integer")
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
    listed = _first(cfg, "layer_types", "layers_block_type")
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
    layers, hidden = fields["layers"], fields["hidden"]
    if not isinstance(layers, int) or layers < 1:
        raise ValueError("num_hidden_layers: expected a positive integer")
    state: dict[str, Any] = {}
    if arch == "qwen3_next":  # models/qwen3_next.py: linear_* fields; a full layer every full_attention_interval
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
        # vLLM reads mamba_ssm_cache_dtype from the config, float16 when absent
        # (model_executor/models/config.py NemotronHForCausalLMConfig)
        state["ssm_dtype"] = cfg.get("mamba_ssm_cache_dtype") or "float16"
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
