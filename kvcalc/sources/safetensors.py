"""safetensors headers: each tensor's dtype, shape and bytes, read without the tensor data.

A .safetensors file starts with 8 bytes, a little-endian u64 N, then N bytes of JSON mapping each
tensor's name to {"dtype", "shape", "data_offsets": [begin, end]} ("__metadata__" holds strings); the
data follow (huggingface/safetensors docs, "Format"). A sharded checkpoint's
model.safetensors.index.json maps each tensor to the shard holding it ("weight_map"). So the header
alone, a partial download or an HTTP range request, gives the exact stored bytes.
"""

from __future__ import annotations

import json
import struct
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

from kvcalc.errors import InvalidPreset

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit (MAX_HEADER_SIZE in safetensors/src/tensor.rs)
# Types whose every element is one weight value. Integer and E8M0 tensors hold packed values (GPTQ,
# AWQ, MXFP4 blocks) or scales, so their element count is not a parameter count.
VALUE_TYPES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "F6_E2M3", "F6_E3M2", "F4"}
# Bits per element of every dtype safetensors knows (Dtype::bitsize in safetensors/src/tensor.rs, 0.6):
# a tensor's data_offsets must span exactly shape x bits / 8 bytes, which safetensors itself checks
# (TensorInvalidInfo); kvcalc does the same rather than trusting the offsets.
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32, "I64": 64, "U64": 64, "F64": 64, "C64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}  # fmt: skip


class Tensor(NamedTuple):
    """One tensor as its header describes it."""

    dtype: str
    elements: int
    bytes: int
    name: str = ""  # as the header names it


def tensor(name: str, dtype: object, shape: object, offsets: object, origin: str) -> Tensor:
    """A header entry checked: a dtype name, a list of non-negative sizes, [begin, end] byte offsets."""
    sizes = list(shape) if isinstance(shape, (list, tuple)) else None
    bounds = list(offsets) if isinstance(offsets, (list, tuple)) else None
    if (
        not isinstance(dtype, str)
        or sizes is None
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in sizes)
        or bounds is None
        or len(bounds) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in bounds)
        or bounds[1] < bounds[0]
    ):
        raise InvalidPreset(f"{origin}: tensor {name!r} is not a safetensors entry (dtype, shape and data_offsets)")
    if dtype not in DTYPE_BITS:
        raise InvalidPreset(f"{origin}: tensor {name!r} has dtype {dtype!r}, which safetensors does not define")
    elements = 1
    for n in sizes:
        elements *= n
    need = elements * DTYPE_BITS[dtype]
    if need % 8 or need // 8 != bounds[1] - bounds[0]:
        raise InvalidPreset(
            f"{origin}: tensor {name!r} ({dtype}, shape {sizes}) needs {need / 8:,g} bytes but its data_offsets"
            f" span {bounds[1] - bounds[0]:,}; a corrupt header"
        )
    return Tensor(dtype=dtype, elements=elements, bytes=bounds[1] - bounds[0], name=name)


def header_tensors(header: object, origin: str) -> list[Tensor]:
    """The tensors a parsed JSON header lists."""
    if not isinstance(header, dict):
        raise InvalidPreset(f"{origin}: the safetensors header is not a JSON mapping")
    return [
        tensor(name, entry.get("dtype"), entry.get("shape"), entry.get("data_offsets"), origin)
        if isinstance(entry, dict)
        else tensor(name, None, None, None, origin)
        for name, entry in header.items()
        if name != "__metadata__"
    ]


def read_tensors(path: Path) -> list[Tensor]:
    """The tensors of a local .safetensors file, from its header alone (the data may be absent)."""
    try:
        with path.open("rb") as file:
            prefix = file.read(8)
            length = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else None
            if length is None or length > MAX_HEADER_BYTES:
                raise InvalidPreset(f"{path}: not a safetensors file (its first 8 bytes give no header length up to 100 MB)")
            text = file.read(length)
    except OSError as exc:
        raise InvalidPreset(f"{path}: cannot read ({exc.strerror})") from None
    if len(text) < length:
        raise InvalidPreset(f"{path}: the safetensors header is cut short ({len(text):,} of {length:,} bytes)")
    return header_tensors(parse_json(text, f"{path}: the safetensors header"), str(path))


def parse_json(data: bytes, what: str) -> Any:
    """JSON text that a lying file may have made unparseable: not UTF-8, not JSON, a number longer than
    Python converts (sys.get_int_max_str_digits) or nesting deeper than its recursion limit."""
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidPreset(f"{what} is not JSON") from None
    except RecursionError:
        raise InvalidPreset(f"{what} nests too deeply (a header nests three levels)") from None
    except ValueError:  # json raises it for an integer longer than the conversion limit
        limit = sys.get_int_max_str_digits()
        raise InvalidPreset(f"{what} holds a number of more than {limit:,} digits") from None


def shard_names(index: object, origin: str) -> list[str]:
    """The shard files an index's weight_map names, each once, in order; paths within the repo only."""
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise InvalidPreset(f"{origin}: no weight_map mapping tensors to shard files")
    shards = list(dict.fromkeys(weight_map.values()))
    for shard in shards:
        if not isinstance(shard, str) or not shard.endswith(".safetensors") or _leaves_the_repo(shard):
            raise InvalidPreset(f"{origin}: weight_map names {shard!r}, not a .safetensors file in the repo")
    return shards


def _leaves_the_repo(name: str) -> bool:
    path = PurePosixPath(name)
    return path.is_absolute() or ".." in path.parts or "\\" in name


def read_index(path: Path) -> list[str]:
    """The shard files a local model.safetensors.index.json names."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidPreset(f"{path}: cannot read ({exc.strerror})") from None
    return shard_names(parse_json(data, f"{path}: the safetensors index"), str(path))


def stored_weights(tensors: Iterable[Tensor], params: int | None = None) -> dict[str, Any]:
    """StoredWeights' fields: the exact bytes, the parameters (the elements when every tensor holds
    one value each, else `params` counted elsewhere), and the elements per stored type, largest first."""
    tensors = list(tensors)
    per_type: dict[str, int] = {}
    for t in tensors:
        if t.elements:
            per_type[t.dtype] = per_type.get(t.dtype, 0) + t.elements
    elements = sum(per_type.values())
    return {
        "bytes": sum(t.bytes for t in tensors),
        "params": params if params is not None and packed_types(per_type) else elements,
        "types": dict(sorted(per_type.items(), key=lambda item: -item[1])),
    }


# Where multimodal checkpoints keep their vision or audio tower and its projector, as vLLM's and
# transformers' weight names spell them: Qwen2/2.5/3-VL and Qwen3.5 (visual.), Gemma 3, LLaVA,
# Mistral 3, InternVL and Llama 4 (vision_tower., vision_model., multi_modal_projector.), InternVL's
# remote code (mlp1.), Gemma 3n / 4 and Qwen-Omni (audio_tower., audio_model., embed_vision.,
# embed_audio.); each also under a model. prefix.
TOWER_PREFIXES = (
    "visual.", "vision_tower.", "vision_model.", "multi_modal_projector.", "mm_projector.", "mlp1.", "audio_tower.",
    "audio_model.", "embed_vision.", "embed_audio.", "vision_encoder.",
)  # fmt: skip


def is_tower(name: str) -> bool:
    """Whether a tensor belongs to a multimodal tower or its projector rather than the language model.

    >>> is_tower("model.visual.blocks.0.attn.qkv.weight"), is_tower("model.language_model.layers.0.mlp.up_proj.weight")
    (True, False)
    """
    return name.removeprefix("model.").startswith(TOWER_PREFIXES)


def split_tower(tensors: Iterable[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    """The language model's tensors and the tower's (kvcalc.vision budgets the tower on its own)."""
    text: list[Tensor] = []
    tower: list[Tensor] = []
    for t in tensors:
        (tower if is_tower(t.name) else text).append(t)
    return text, tower


def packed_types(types: Sequence[str] | dict[str, int]) -> list[str]:
    """The stored types whose elements are not one weight value each (integers, scales).

    >>> packed_types(["BF16", "F8_E4M3", "F32"]), packed_types(["I32", "F16", "U8"])
    ([], ['I32', 'U8'])
    """
    return [t for t in types if t not in VALUE_TYPES]
