"""A minimal GGUF writer for tests: a version-3 little-endian header (metadata, tensor infos) and,
if asked, zeroed tensor data. Layout: ggml-org/ggml docs/gguf.md; value and ggml type ids:
gguf-py/gguf/constants.py (GGUFValueType, GGMLQuantizationType)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from kvcalc.sources.gguf import GGML_TYPES

U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
_FORMATS = {
    U8: "<B",
    I8: "<b",
    U16: "<H",
    I16: "<h",
    U32: "<I",
    I32: "<i",
    F32: "<f",
    BOOL: "<?",
    U64: "<Q",
    I64: "<q",
    F64: "<d",
}
TYPE_IDS = {name: type_id for type_id, (name, _, _) in GGML_TYPES.items()}
ALIGNMENT = 32


class Typed:
    """A metadata value written with an explicit GGUF value type (an array: `element` type)."""

    def __init__(self, kind: int, value: Any, element: int | None = None) -> None:
        self.kind, self.value, self.element = kind, value, element


def _guess(value: Any) -> Typed:
    if isinstance(value, Typed):
        return value
    if isinstance(value, bool):
        return Typed(BOOL, value)
    if isinstance(value, int):
        return Typed(U32 if 0 <= value < 2**32 else I64, value)
    if isinstance(value, float):
        return Typed(F32, value)
    if isinstance(value, str):
        return Typed(STRING, value)
    if isinstance(value, list):
        return Typed(ARRAY, value, _guess(value[0]).kind if value else U32)
    raise TypeError(f"cannot write {value!r}")


def _string(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack("<Q", len(data)) + data


def _value(typed: Typed) -> bytes:
    if typed.kind == STRING:
        return _string(typed.value)
    if typed.kind == ARRAY:
        assert typed.element is not None
        items = b"".join(_value(_guess(item) if typed.element == ARRAY else Typed(typed.element, item)) for item in typed.value)
        return struct.pack("<IQ", typed.element, len(typed.value)) + items
    return struct.pack(_FORMATS[typed.kind], typed.value)


def tensor_bytes(shape: tuple[int, ...], type_name: str) -> int:
    _, block, size = GGML_TYPES[TYPE_IDS[type_name]]
    values = 1
    for dim in shape:
        values *= dim
    return values // block * size


def gguf_bytes(
    metadata: dict[str, Any], tensors: list[tuple[str, tuple[int, ...], str]], version: int = 3, data: bool = False
) -> bytes:
    """A GGUF file: header, metadata, tensor infos (name, shape in ggml order, ggml type name) and,
    with `data`, the aligned zeroed tensor data."""
    out = bytearray(b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(metadata)))
    for key, value in metadata.items():
        typed = _guess(value)
        out += _string(key) + struct.pack("<I", typed.kind) + _value(typed)
    offset = 0
    for name, shape, type_name in tensors:
        out += _string(name) + struct.pack("<I", len(shape)) + struct.pack(f"<{len(shape)}Q", *shape)
        out += struct.pack("<IQ", TYPE_IDS[type_name], offset)
        offset += -(-tensor_bytes(shape, type_name) // ALIGNMENT) * ALIGNMENT
    if data:
        out += bytes(-len(out) % ALIGNMENT) + bytes(offset)
    return bytes(out)


def write_gguf(path: Path, metadata: dict[str, Any], tensors: list[tuple[str, tuple[int, ...], str]], **options: Any) -> Path:
    path.write_bytes(gguf_bytes(metadata, tensors, **options))
    return path


def _more_bits(layer: int, layers: int) -> bool:
    """llama.cpp's use_more_bits (src/llama-quant.cpp): the layers Q4_K_M keeps in q6_K."""
    return layer < layers // 8 or layer >= 7 * layers // 8 or (layer - layers // 8) % 3 == 2


def llama_tensors(
    layers: int = 32, hidden: int = 4096, kv: int = 1024, ff: int = 14336, vocab: int = 128256, rope_freqs: bool = False
) -> list[tuple[str, tuple[int, ...], str]]:
    """A Llama's tensor infos (llama.cpp names, ggml shape order) in llama.cpp's Q4_K_M mix:
    q4_K, with attn_v and ffn_down in q6_K on use_more_bits layers, output q6_K, norms f32."""
    tensors = [("token_embd.weight", (hidden, vocab), "q4_K"), ("output_norm.weight", (hidden,), "f32")]
    tensors.append(("output.weight", (hidden, vocab), "q6_K"))
    if rope_freqs:
        tensors.append(("rope_freqs.weight", (64,), "f32"))
    for i in range(layers):
        more = "q6_K" if _more_bits(i, layers) else "q4_K"
        tensors += [
            (f"blk.{i}.attn_norm.weight", (hidden,), "f32"),
            (f"blk.{i}.attn_q.weight", (hidden, hidden), "q4_K"),
            (f"blk.{i}.attn_k.weight", (hidden, kv), "q4_K"),
            (f"blk.{i}.attn_v.weight", (hidden, kv), more),
            (f"blk.{i}.attn_output.weight", (hidden, hidden), "q4_K"),
            (f"blk.{i}.ffn_norm.weight", (hidden,), "f32"),
            (f"blk.{i}.ffn_gate.weight", (hidden, ff), "q4_K"),
            (f"blk.{i}.ffn_up.weight", (hidden, ff), "q4_K"),
            (f"blk.{i}.ffn_down.weight", (ff, hidden), more),
        ]
    return tensors


def llama_metadata(name: str, context: int, **extra: Any) -> dict[str, Any]:
    """Llama-3-8B's hyperparameters as convert_hf_to_gguf.py writes them (meta-llama config.json values)."""
    return {
        "general.architecture": "llama",
        "general.name": name,
        "general.file_type": 15,  # llama_ftype MOSTLY_Q4_K_M
        "llama.block_count": 32,
        "llama.context_length": context,
        "llama.embedding_length": 4096,
        "llama.feed_forward_length": 14336,
        "llama.attention.head_count": 32,
        "llama.attention.head_count_kv": 8,
        "llama.rope.dimension_count": 128,
        "llama.vocab_size": 128256,
        "general.quantization_version": 2,
        **extra,
    }
