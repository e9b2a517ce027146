"""safetensors headers for tests: the 8-byte little-endian length and the JSON header, without tensor
data (kvcalc reads the header only). Layout: huggingface/safetensors docs, "Format"; the header is
padded with spaces to a multiple of 8 bytes, as safetensors writes it."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

ELEMENT_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "F8_E4M3": 1}
Tensors = dict[str, tuple[str, list[int]]]  # name -> (dtype, shape)


def header(tensors: Tensors) -> dict[str, Any]:
    """The JSON header of `tensors` stored one after another."""
    entries: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        size = math.prod(shape) * ELEMENT_BYTES[dtype]
        entries[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    return entries


def header_bytes(tensors: Tensors) -> bytes:
    text = json.dumps(header(tensors), separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def write_checkpoint(folder: Path, shards: dict[str, Tensors]) -> None:
    """Header-only shard files in `folder`, and model.safetensors.index.json when there are several."""
    folder.mkdir(parents=True, exist_ok=True)
    for shard, tensors in shards.items():
        (folder / shard).write_bytes(header_bytes(tensors))
    if len(shards) > 1:
        weight_map = {name: shard for shard, tensors in shards.items() for name in tensors}
        (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def llama_tensors(
    layers: int = 32, hidden: int = 4096, kv: int = 1024, intermediate: int = 14336, vocab: int = 128256, dtype: str = "BF16"
) -> list[Tensors]:
    """Meta-Llama-3-8B's tensors as transformers names them: the embeddings, then one dict per layer,
    then the final norm and the LM head (the last dict)."""
    first: Tensors = {"model.embed_tokens.weight": (dtype, [vocab, hidden])}
    per_layer = []
    for i in range(layers):
        p = f"model.layers.{i}."
        per_layer.append({
            p + "self_attn.q_proj.weight": (dtype, [hidden, hidden]),
            p + "self_attn.k_proj.weight": (dtype, [kv, hidden]),
            p + "self_attn.v_proj.weight": (dtype, [kv, hidden]),
            p + "self_attn.o_proj.weight": (dtype, [hidden, hidden]),
            p + "mlp.gate_proj.weight": (dtype, [intermediate, hidden]),
            p + "mlp.up_proj.weight": (dtype, [intermediate, hidden]),
            p + "mlp.down_proj.weight": (dtype, [hidden, intermediate]),
            p + "input_layernorm.weight": (dtype, [hidden]),
            p + "post_attention_layernorm.weight": (dtype, [hidden]),
        })  # fmt: skip
    last: Tensors = {"model.norm.weight": (dtype, [hidden]), "lm_head.weight": (dtype, [vocab, hidden])}
    return [first, *per_layer, last]


def in_shards(parts: list[Tensors], count: int) -> dict[str, Tensors]:
    """`parts` spread in order over `count` shards named as transformers names them (one: model.safetensors)."""
    shards: dict[str, Tensors] = {}
    for i, part in enumerate(parts):
        name = f"model-{i * count // len(parts) + 1:05d}-of-{count:05d}.safetensors" if count > 1 else "model.safetensors"
        shards.setdefault(name, {}).update(part)
    return shards
