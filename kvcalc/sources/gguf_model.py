"""A GGUF file's header as ModelSpec fields, read the way llama.cpp reads them.

Keys: gguf-py/gguf/constants.py `Keys` ({arch} = general.architecture); defaults and sliding-window
patterns as src/llama-model.cpp and src/llama-hparams.cpp apply them (ggml-org/llama.cpp). The cache
type is f16 unless asked otherwise (llama.cpp's -ctk/-ctv default), so the spec's dtype is f16.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from kvcalc.errors import InvalidPreset
from kvcalc.sources.gguf import (
    GGML_TYPES,
    GgufHeader,
    TensorInfo,
    check_split_part,
    first_part,
    model_name,
    read_header,
    split_parts,
)
from kvcalc.spec import MAX_LAYERS, ModelSpec

# Recurrent-state (SSM, linear attention, short conv) architectures: their state is not read from GGUF yet.
RECURRENT_ARCHITECTURES = {
    "mamba", "mamba2", "jamba", "falcon-h1", "nemotron_h", "nemotron_h_moe", "granitehybrid", "qwen3next", "lfm2",
    "lfm2moe", "plamo2", "rwkv6", "rwkv6qwen2", "rwkv7", "arwkv7", "kimi-linear", "minimax-01", "bailingmoe-linear",
}  # fmt: skip
_RECURRENT_KEYS = (".ssm.", ".wkv.", ".shortconv.", ".kda.")
# llama.cpp's fixed sliding-window period per architecture when the file gives no pattern: layer i
# slides when i % n < n - 1 (llama_hparams::set_swa_pattern); Gemma 2's window defaults to 4096.
# Other architectures' sliding_window keys are not applied by llama.cpp (Phi-3's is switched off).
_SWA_PERIODS = {"gemma2": 2, "gemma3": 6, "cohere2": 4, "gpt-oss": 2}
_DEFAULT_WINDOWS = {"gemma2": 4096}


def model_from_gguf(path: Path) -> ModelSpec:
    """The model a GGUF file describes: shapes from its metadata, exact weight bytes from its tensor
    infos (every part of a split file), named after the file."""
    from kvcalc.files import validate

    first = first_part(path)
    if first != path and not first.is_file():
        raise InvalidPreset(f"{path}: part 1 of this split GGUF ({first.name}), which holds the metadata, is missing beside it")
    header = read_header(first)
    parts = split_parts(first, header)
    tensors = list(header.tensors)
    for index, part in enumerate(parts[1:], start=1):
        part_header = read_header(part)
        check_split_part(part, part_header, index, len(parts))
        tensors += part_header.tensors
    seen: set[str] = set()
    for tensor in tensors:  # llama.cpp: "invalid model: tensor '%s' is duplicated" (src/llama-model-loader.cpp)
        if tensor.name in seen:
            raise InvalidPreset(f"{path}: the tensor {tensor.name!r} is in two parts of this split GGUF; a part given twice?")
        seen.add(tensor.name)
    fields = _fields(header, tensors, path)
    fields["source"] = _source(header, parts, len(tensors))
    return validate("models", fields, str(path))  # type: ignore[no-any-return]


class _Metadata:
    """The header's `{arch}.` keys, with the checks every one of them needs."""

    def __init__(self, header: GgufHeader) -> None:
        self.header, self.path = header, header.path
        arch = header.metadata.get("general.architecture")
        if not isinstance(arch, str) or not arch:
            raise InvalidPreset(f"{self.path}: the GGUF header has no general.architecture")
        self.arch = arch

    def get(self, key: str) -> Any:
        """The key's value; one the reader did not keep (too long, nested) is refused, not taken as absent."""
        name = f"{self.arch}.{key}"
        if name in self.header.unread:
            raise InvalidPreset(
                f"{self.path}: {name} is {self.header.unread[name]}, which kvcalc does not read as a value it needs"
                " (numbers, or arrays of up to 65,536 numbers)"
            )
        return self.header.metadata.get(name)

    def count(self, key: str, default: int | None = None) -> int | None:
        """A non-negative integer key; an array of equal values reads as one; unequal ones are refused."""
        value = self.get(key)
        if isinstance(value, list):
            value = self._uniform(key, value)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidPreset(f"{self.path}: {self.arch}.{key}: expected a non-negative integer, got {value!r}")
        return value

    def _uniform(self, key: str, values: list[Any]) -> Any:
        if not values:
            raise InvalidPreset(f"{self.path}: {self.arch}.{key} is an empty array; give one value per layer, or one number")
        if all(v == values[0] for v in values):
            return values[0]
        shown = ", ".join(map(str, sorted(set(values), key=str)))
        raise InvalidPreset(
            f"{self.path}: {self.arch}.{key} differs between layers ({shown}); kvcalc cannot model layers of different shapes yet"
        )

    def require(self, key: str) -> int:
        value = self.count(key)
        if not value:
            raise InvalidPreset(f"{self.path}: {self.arch}.{key} is missing or 0; a {self.arch} GGUF needs it")
        return value


def _refuse_recurrent(meta: _Metadata) -> None:
    keys = [k for k in meta.header.metadata if k.startswith(meta.arch + ".") and any(p in k for p in _RECURRENT_KEYS)]
    if meta.arch in RECURRENT_ARCHITECTURES or keys:
        raise InvalidPreset(
            f"{meta.path}: {meta.arch} has recurrent-state (SSM or linear-attention) layers, which kvcalc does not read from GGUF yet;"
            " give its config.json instead"
        )


def _fields(header: GgufHeader, tensors: list[TensorInfo], path: Path) -> dict[str, Any]:
    meta = _Metadata(header)
    _refuse_recurrent(meta)
    if meta.count("attention.shared_kv_layers"):
        raise InvalidPreset(f"{path}: layers that share another layer's KV cache ({meta.arch}) are not modelled yet")
    layers, heads = meta.require("block_count"), meta.require("attention.head_count")
    if layers > MAX_LAYERS:  # before any per-layer list is built
        raise InvalidPreset(f"{path}: {meta.arch}.block_count is {layers:,}; kvcalc models up to {MAX_LAYERS:,} layers")
    hidden = meta.require("embedding_length")
    key_length = meta.count("attention.key_length", hidden // heads)
    value_length = meta.count("attention.value_length", key_length)
    for part, width in (("key", key_length), ("value", value_length)):
        if meta.count(f"attention.{part}_length_swa", width) != width:
            raise InvalidPreset(f"{path}: sliding layers with their own {part} width are not modelled yet ({meta.arch})")
    names = {t.name for t in tensors}
    expert_ff = meta.count("expert_feed_forward_length")
    fields: dict[str, Any] = {
        "name": model_name(path),
        "layers": layers,
        "heads": heads,
        "kv_heads": meta.count("attention.head_count_kv", heads),
        "head_dim": key_length,
        "v_head_dim": value_length if value_length != key_length else None,
        "dtype": "fp16",
        "max_positions": meta.count("context_length") or None,
        "hidden": hidden,
        "intermediate": _uniform_or_none(meta, "feed_forward_length") or expert_ff,
        "vocab": meta.count("vocab_size") or header.array_lengths.get("tokenizer.ggml.tokens") or _rows(tensors, "token_embd"),
        "tied_embeddings": "output.weight" not in names,
        "mlp": "gated" if any(n.endswith(("ffn_gate.weight", "ffn_gate_exps.weight")) for n in names) else "plain",
    }
    fields.update(_mla(meta, heads, key_length, value_length))
    fields.update(_window(meta, layers))
    experts = meta.count("expert_count")
    if experts:
        fields["moe"] = {
            "experts": experts,
            "experts_per_token": meta.require("expert_used_count"),
            "expert_intermediate": expert_ff or fields["intermediate"],
            "shared_experts": meta.count("expert_shared_count", 0),
            "dense_layers": meta.count("leading_dense_block_count", 0),
        }
    stored = _stored(tensors, layers)
    if stored is not None:  # a header without tensor infos leaves the weights to be counted from the shapes
        fields.update(stored_weights=stored, params=stored["params"])
    return {k: v for k, v in fields.items() if v is not None}


def _uniform_or_none(meta: _Metadata, key: str) -> int | None:
    """A width that only splits the parameter count (the weights are exact): None when it varies by layer."""
    value = meta.get(key)
    if isinstance(value, list) and len(set(value)) > 1:
        return None
    return meta.count(key)


def _rows(tensors: list[TensorInfo], prefix: str) -> int | None:
    return next((t.shape[1] for t in tensors if t.name.startswith(prefix + ".") and len(t.shape) > 1), None)


def _mla(meta: _Metadata, heads: int, key_length: int, value_length: int) -> dict[str, Any]:
    """Multi-head latent attention (deepseek2 and kin). GGUFs converted with key_length_mla cache
    one K-only latent of kv_lora_rank + rope per token; older ones cache per-head K and V of
    key_length and value_length, as llama.cpp runs them (src/llama-model.cpp, is_mla)."""
    rank = meta.count("attention.kv_lora_rank")
    mla_k, mla_v = meta.count("attention.key_length_mla"), meta.count("attention.value_length_mla")
    if not rank or not mla_k or not mla_v:
        return {}
    rope = meta.require("rope.dimension_count")
    return {
        "head_dim": mla_v,
        "k_head_dim": mla_k,
        "v_head_dim": mla_v,
        "kv_heads": heads,
        "mla": {
            "kv_lora_rank": rank,
            "qk_rope_head_dim": rope,
            "qk_nope_head_dim": mla_k - rope,
            "v_head_dim": mla_v,
            "q_lora_rank": meta.count("attention.q_lora_rank") or None,
        },
    }


def _window(meta: _Metadata, layers: int) -> dict[str, Any]:
    """The sliding window and which layers use it: the file's sliding_window_pattern (a period, or
    one flag per layer), else llama.cpp's fixed period for the architecture."""
    window = meta.count("attention.sliding_window") or _DEFAULT_WINDOWS.get(meta.arch)
    pattern = meta.get("attention.sliding_window_pattern")
    if not window or (pattern is None and meta.arch not in _SWA_PERIODS):
        return {}
    if isinstance(pattern, list):
        if len(pattern) != layers or not all(isinstance(flag, bool) for flag in pattern):
            raise InvalidPreset(
                f"{meta.path}: {meta.arch}.attention.sliding_window_pattern: expected {layers} true/false flags, one per layer"
            )
        kinds = ["sliding" if flag else "full" for flag in pattern]
    else:
        period = meta.count("attention.sliding_window_pattern", _SWA_PERIODS.get(meta.arch))
        kinds = ["sliding" if period == 0 or i % period < period - 1 else "full" for i in range(layers)]  # type: ignore[operator]
    if "sliding" not in kinds:
        return {}
    return {"sliding_window": window, "layer_pattern": None if "full" not in kinds else _one_period(kinds)}


def _one_period(kinds: list[str]) -> list[str]:
    """The shortest prefix that repeats into every layer's kind (ModelSpec repeats layer_pattern).

    >>> _one_period(["sliding", "full", "sliding", "full"]), _one_period(["full", "sliding", "sliding"])
    (['sliding', 'full'], ['full', 'sliding', 'sliding'])
    """
    return next(kinds[:n] for n in range(1, len(kinds) + 1) if all(k == kinds[i % n] for i, k in enumerate(kinds)))


EXPERT_TENSOR = re.compile(r"blk\.(\d+)\.ffn_(up|down|gate_up|gate)_(ch|)exps")  # llama.cpp's MoE pattern (common/fit.cpp)
LAYER_TENSOR = re.compile(r"blk\.(\d+)\.")


def _stored(tensors: list[TensorInfo], layers: int) -> dict[str, Any] | None:
    """Exact bytes and parameters of every tensor, the parameters per ggml type (largest first), and
    where llama.cpp places them: each layer's bytes, its routed experts' apart, the input table and
    the output layer (the table itself when tied: llama.cpp loads it again as the output)."""
    if not tensors:
        return None
    per_type: dict[str, int] = {}
    layer_bytes, expert_bytes = [0] * layers, [0] * layers
    embedding = output = 0
    for tensor in tensors:
        name = GGML_TYPES[tensor.ggml_type][0]
        per_type[name] = per_type.get(name, 0) + tensor.values
        expert, layer = EXPERT_TENSOR.match(tensor.name), LAYER_TENSOR.match(tensor.name)
        if layer and int(layer.group(1)) < layers:
            (expert_bytes if expert else layer_bytes)[int(layer.group(1))] += tensor.bytes
        elif tensor.name.startswith("token_embd."):
            embedding += tensor.bytes
        elif tensor.name.startswith(("output.", "output_norm.")):
            output += tensor.bytes
    tied = not any(t.name == "output.weight" for t in tensors)
    return {
        "bytes": sum(t.bytes for t in tensors),
        "params": sum(t.values for t in tensors),
        "types": dict(sorted(per_type.items(), key=lambda item: -item[1])),
        "layer_bytes": layer_bytes,
        "expert_bytes": expert_bytes,
        "embedding_bytes": embedding,
        "output_bytes": output + (embedding if tied else 0),
    }


def _source(header: GgufHeader, parts: list[Path], tensors: int) -> str:
    meta = header.metadata
    named = f", general.name {meta['general.name']!r}" if isinstance(meta.get("general.name"), str) else ""
    split = f" and its {len(parts) - 1} other parts" if len(parts) > 1 else ""
    return f"GGUF v{header.version} file {header.path}{split} ({meta['general.architecture']}{named}); weights summed from its {tensors:,} tensor infos"
