"""A lean GGUF header reader (struct only: no numpy, no tensor data), and the ModelSpec it implies.

Layout (GGUF versions 2 and 3, little-endian; spec: ggml-org/ggml docs/gguf.md, gguf-py gguf_reader.py):

    header : b"GGUF" | u32 version | u64 tensor_count | u64 kv_count
    kv     : string key | u32 value_type | value          (string: u64 length + UTF-8 bytes)
    array  : u32 element_type | u64 count | elements
    tensor : string name | u32 n_dims | u64 dims[n_dims] | u32 ggml_type | u64 data offset

Only the header is read, so a partial download that holds it works; large arrays (the tokenizer's
150k tokens) are skipped by seeking and only counted. Weights are summed exactly from each
tensor's shape and ggml type, as llama.cpp's "model size" line does.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from kvcalc.errors import InvalidPreset
from kvcalc.units import PACKING, DType

# ggml type id -> its name, and the kvcalc dtype whose packing (kvcalc.units.PACKING: values and bytes per
# block) it stores, or its own (values per block, bytes per block) for the types no kvcalc dtype names.
# Source: ggml/src/ggml.c type_traits (blck_size, type_size) and gguf-py/gguf/constants.py
# GGML_QUANT_SIZES, commit 0024aa74 of ggml-org/llama.cpp. Ids 4, 5 and 31-33, 36-38 were removed types;
# QK_K = 256. nvfp4 keeps its own: ggml blocks 64 values (4 fp8 scales, 36 B), where kvcalc's nvfp4 dtype
# counts the same 9 B per 16 values in blocks of 16, so a ggml row must be whole blocks of 64.
_GGML_TYPE_TABLE: dict[int, tuple[str, DType | tuple[int, int]]] = {
    0: ("f32", DType.fp32), 1: ("f16", DType.fp16),
    2: ("q4_0", DType.q4_0), 3: ("q4_1", DType.q4_1), 6: ("q5_0", DType.q5_0), 7: ("q5_1", DType.q5_1),
    8: ("q8_0", DType.q8_0), 9: ("q8_1", (32, 40)),
    10: ("q2_K", DType.q2_k), 11: ("q3_K", DType.q3_k), 12: ("q4_K", DType.q4_k), 13: ("q5_K", DType.q5_k),
    14: ("q6_K", DType.q6_k), 15: ("q8_K", (256, 292)),
    16: ("iq2_xxs", DType.iq2_xxs), 17: ("iq2_xs", DType.iq2_xs), 18: ("iq3_xxs", DType.iq3_xxs),
    19: ("iq1_s", DType.iq1_s), 20: ("iq4_nl", DType.iq4_nl), 21: ("iq3_s", DType.iq3_s),
    22: ("iq2_s", DType.iq2_s), 23: ("iq4_xs", DType.iq4_xs),
    24: ("i8", (1, 1)), 25: ("i16", (1, 2)), 26: ("i32", (1, 4)), 27: ("i64", (1, 8)), 28: ("f64", (1, 8)),
    29: ("iq1_m", DType.iq1_m), 30: ("bf16", DType.bf16), 34: ("tq1_0", DType.tq1_0), 35: ("tq2_0", DType.tq2_0),
    39: ("mxfp4", DType.mxfp4), 40: ("nvfp4", (64, 36)), 41: ("q1_0", (128, 18)),
}  # fmt: skip
# ggml type id -> (name, values per block, bytes per block)
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    type_id: (name, *((PACKING[kind].block_values, PACKING[kind].block_bytes) if isinstance(kind, DType) else kind))
    for type_id, (name, kind) in _GGML_TYPE_TABLE.items()
}

# GGUF value types: struct format of the fixed-size ones; 8 is a string, 9 an array.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_U64 = struct.Struct("<Q")
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_ARRAY_READ = 1 << 16  # numeric arrays up to this length are read (per-layer values); longer ones are skipped
MAX_STRING_READ = 1 << 16  # longer strings (chat templates, tokenizer JSON) are skipped
# Bounds on what a header may count, checked before any loop (a lying count in a large sparse file
# would otherwise be walked for minutes). Real files: ~50 keys, a few thousand tensor infos (experts
# are merged into one tensor per layer), tokenizers of up to 262,144 tokens and ~1M merges, arrays
# nested once at most (gguf-py writes array-of-array for nothing llama.cpp reads).
MAX_KEYS = 1 << 16
MAX_TENSORS = 1 << 16
MAX_ARRAY_ITEMS = 1 << 20
MAX_NESTED_ARRAYS = 1 << 12  # arrays in one array: llama.cpp's gguf.cpp reads none, gguf-py writes few
MAX_ARRAY_NESTING = 8
SPLIT_NAME = re.compile(r"^(?P<prefix>.+)-(?P<part>\d{5})-of-(?P<count>\d{5})\.gguf$")


class TensorInfo(NamedTuple):
    """One tensor's name, shape (ggml order: ne[0] first) and ggml type id."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int

    @property
    def values(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count

    @property
    def bytes(self) -> int:
        """ggml_nbytes: whole blocks of the type along each row."""
        _, block, size = GGML_TYPES[self.ggml_type]
        return self.values // block * size


class GgufHeader(NamedTuple):
    """What a GGUF header says: its version, metadata (values too long to read are None and named
    in `unread` with what they are), the length of every array, and the tensor infos."""

    path: Path
    version: int
    metadata: dict[str, Any]
    array_lengths: dict[str, int]
    tensors: list[TensorInfo]
    unread: dict[str, str] = {}


class _Cursor:
    """Reads a file forward in 1 MiB chunks and skips by seeking; running past the end is a
    truncated header."""

    CHUNK = 1 << 20

    def __init__(self, file: BinaryIO, path: Path, size: int) -> None:
        self.file, self.path, self.size = file, path, size
        self.buffer, self.at, self.start = b"", 0, 0  # buffer holds file bytes from `start`; `at` indexes it

    @property
    def offset(self) -> int:
        return self.start + self.at

    def truncated(self, need: int) -> InvalidPreset:
        return InvalidPreset(
            f"{self.path}: the file ends at byte {self.size:,}, inside its GGUF header (which needs {need:,} bytes):"
            " an incomplete download or a corrupt file"
        )

    def read(self, n: int) -> bytes:
        if self.at + n > len(self.buffer):
            if self.offset + n > self.size:
                raise self.truncated(self.offset + n)
            self.buffer = self.buffer[self.at :] + self.file.read(max(self.CHUNK, n))
            self.start, self.at = self.offset, 0
        data = self.buffer[self.at : self.at + n]
        self.at += n
        return data

    def skip(self, n: int) -> None:
        if self.at + n <= len(self.buffer):
            self.at += n
            return
        target = self.offset + n
        if target > self.size:
            raise self.truncated(target)
        self.file.seek(target)
        self.buffer, self.at, self.start = b"", 0, target

    def skip_strings(self, count: int) -> None:
        """Skip `count` strings (u64 length + bytes each), reading lengths straight from the buffer."""
        for _ in range(count):
            if self.at + 8 > len(self.buffer):
                self.skip(self.length())
                continue
            (size,) = _U64.unpack_from(self.buffer, self.at)
            self.at += 8
            self.skip(size)

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def length(self, item_bytes: int = 1) -> int:
        """A u64 count of items of at least `item_bytes` each, refused when the rest of the file cannot hold them."""
        count: int = self.unpack("<Q")
        if self.offset + count * item_bytes > self.size:
            raise self.truncated(self.offset + count * item_bytes)
        return count

    def string(self, what: str) -> str:
        data = self.read(self.length())
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidPreset(f"{self.path}: corrupt GGUF header: {what} is not UTF-8 text") from None


def _value_type(cursor: _Cursor, key: str) -> int:
    kind: int = cursor.unpack("<I")
    if kind not in _SCALARS and kind not in (_STRING, _ARRAY):
        raise InvalidPreset(f"{cursor.path}: corrupt GGUF header: {key!r} has unknown value type {kind}")
    return kind


def _read_value(cursor: _Cursor, key: str, kind: int, lengths: dict[str, int], unread: dict[str, str], depth: int = 0) -> Any:
    """A value, or None for a string or array not kept (its length goes to `lengths`, what it is to `unread`)."""
    if kind in _SCALARS:
        return cursor.unpack(_SCALARS[kind])
    if kind == _STRING:
        size = cursor.length()
        if size > MAX_STRING_READ:
            cursor.skip(size)
            unread[key] = f"a string of {size:,} bytes"
            return None
        return cursor.read(size).decode("utf-8", errors="replace")
    if depth >= MAX_ARRAY_NESTING:
        raise InvalidPreset(f"{cursor.path}: corrupt GGUF header: {key!r} nests arrays more than {MAX_ARRAY_NESTING} deep")
    element = _value_type(cursor, key)
    fixed = struct.calcsize(_SCALARS[element]) if element in _SCALARS else 8  # a string or array holds a u64 at least
    count = cursor.length(fixed)
    lengths[key] = count
    if element in _SCALARS and count <= MAX_ARRAY_READ:
        return list(struct.unpack(f"<{count}{_SCALARS[element][1]}", cursor.read(count * fixed)))
    if element in _SCALARS:
        cursor.skip(count * fixed)
        unread[key] = f"an array of {count:,} numbers"
        return None
    most = MAX_ARRAY_ITEMS if element == _STRING else MAX_NESTED_ARRAYS
    if count > most:  # each item is walked: bound the walk before it starts
        raise InvalidPreset(
            f"{cursor.path}: corrupt GGUF header: {key!r} is an array of {count:,} items (kvcalc reads up to {most:,})"
        )
    if element == _STRING:  # the tokenizer's tokens and merges: counted, each skipped by its length
        cursor.skip_strings(count)
        unread[key] = f"an array of {count:,} strings"
    else:  # nested arrays: walked, not kept
        for _ in range(count):
            _read_value(cursor, key, element, {}, {}, depth + 1)
        unread[key] = "an array of arrays"
    return None


def read_header(path: Path) -> GgufHeader:
    """Parse a GGUF file's header; a corrupt, truncated, big-endian or unsupported one is an InvalidPreset."""
    try:
        with path.open("rb") as file:
            return _parse(file, path, path.stat().st_size)
    except OSError as exc:
        raise InvalidPreset(f"{path}: cannot read ({exc.strerror})") from None


def _parse(file: BinaryIO, path: Path, size: int) -> GgufHeader:
    cursor = _Cursor(file, path, size)
    magic = cursor.read(4) if size >= 4 else b""
    if magic == b"FUGG":
        raise _big_endian(path)
    if magic != b"GGUF":
        raise InvalidPreset(f"{path}: not a GGUF file (it starts with {magic!r}, not b'GGUF')")
    version = cursor.unpack("<I")
    if version & 0xFFFF == 0 and version:  # a version written big-endian reads as N << 24 here
        raise _big_endian(path)
    if version not in (2, 3):
        hint = "re-convert it with a current llama.cpp" if version == 1 else "kvcalc reads versions 2 and 3"
        raise InvalidPreset(f"{path}: GGUF version {version} is not supported ({hint})")
    tensor_count, kv_count = cursor.unpack("<Q"), cursor.unpack("<Q")
    for count, what, most in ((kv_count, "metadata keys", MAX_KEYS), (tensor_count, "tensor infos", MAX_TENSORS)):
        if count > most:
            raise InvalidPreset(f"{path}: corrupt GGUF header: it counts {count:,} {what} (kvcalc reads up to {most:,})")
    if cursor.offset + 8 * (tensor_count + kv_count) > size:  # each takes 8 bytes at least
        raise cursor.truncated(cursor.offset + 8 * (tensor_count + kv_count))
    metadata: dict[str, Any] = {}
    lengths: dict[str, int] = {}
    unread: dict[str, str] = {}
    for _ in range(kv_count):
        key = cursor.string("a metadata key")
        if key in metadata:  # gguf.cpp refuses a duplicate key (gguf_init_from_file_impl)
            raise InvalidPreset(f"{path}: corrupt GGUF header: the metadata key {key!r} is given twice")
        metadata[key] = _read_value(cursor, key, _value_type(cursor, key), lengths, unread)
    tensors: list[TensorInfo] = []
    names: set[str] = set()
    for _ in range(tensor_count):
        info = _tensor_info(cursor)
        if info.name in names:  # gguf.cpp: "duplicate tensor name"
            raise InvalidPreset(f"{path}: corrupt GGUF header: the tensor {info.name!r} is listed twice")
        names.add(info.name)
        tensors.append(info)
    return GgufHeader(path=path, version=version, metadata=metadata, array_lengths=lengths, tensors=tensors, unread=unread)


def _big_endian(path: Path) -> InvalidPreset:
    return InvalidPreset(f"{path}: a big-endian GGUF; kvcalc reads little-endian ones (convert it with gguf-convert-endian)")


def _tensor_info(cursor: _Cursor) -> TensorInfo:
    name = cursor.string("a tensor name")
    dims = cursor.unpack("<I")
    if not 1 <= dims <= MAX_DIMS:
        raise InvalidPreset(f"{cursor.path}: corrupt GGUF header: tensor {name!r} has {dims} dimensions (1 to {MAX_DIMS})")
    shape = tuple(cursor.unpack("<Q") for _ in range(dims))
    ggml_type = cursor.unpack("<I")
    cursor.skip(8)  # the data offset: no tensor data is read
    if ggml_type not in GGML_TYPES:
        raise InvalidPreset(
            f"{cursor.path}: tensor {name!r} has ggml type {ggml_type}, which kvcalc does not know (a newer llama.cpp type?)"
        )
    type_name, block, _ = GGML_TYPES[ggml_type]
    if shape[0] % block:
        raise InvalidPreset(
            f"{cursor.path}: corrupt GGUF header: tensor {name!r} rows of {shape[0]} values are not whole {type_name} blocks of {block}"
        )
    return TensorInfo(name=name, shape=shape, ggml_type=ggml_type)


def split_parts(path: Path, first: GgufHeader) -> list[Path]:
    """Every part of a split GGUF (`-00001-of-0000N.gguf`) in order, or just `path`; missing parts are an error.

    Part 1's `split.count` must agree with its name, as llama.cpp's loader requires (src/llama-model-loader.cpp:
    "invalid split count"); each part's `split.no` is checked by `check_split_part`.
    """
    match = SPLIT_NAME.match(path.name)
    count = first.metadata.get("split.count", first.unread.get("split.count"))
    if count is None:
        return [path]
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise InvalidPreset(f"{path}: split.count is {count!r}; a split GGUF's part count is a positive integer")
    named = int(match.group("count")) if match else 1
    if count != named:
        how = f"-00001-of-{count:05d}.gguf" if count <= 99999 else "a split name"
        raise InvalidPreset(
            f"{path}: its header says it is part 1 of {count:,} files but its name says {named}"
            f" (a renamed part?); give the parts their names as gguf-split wrote them ({how})"
        )
    if count == 1:
        return [path]
    check_split_part(path, first, 0, count)
    prefix = match.group("prefix")  # type: ignore[union-attr]  # count > 1 == named: the name matched
    parts = [path.with_name(f"{prefix}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]
    missing = [part.name for part in parts if not part.is_file()]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3:,} more" if len(missing) > 3 else "")
        raise InvalidPreset(
            f"{path}: {len(missing):,} of the {count:,} parts of this split GGUF are missing beside it ({shown});"
            " the weights' bytes need every part"
        )
    return parts


def check_split_part(path: Path, header: GgufHeader, index: int, count: int) -> None:
    """Refuse a part whose header is not part `index` (0-based `split.no`) of `count`: a part copied
    under another part's name. llama.cpp refuses it too (src/llama-model-loader.cpp: "invalid split file idx")."""
    number = header.metadata.get("split.no", None if index else 0)  # llama.cpp requires it from part 2 on
    parts = header.metadata.get("split.count")
    if number != index or parts != count or isinstance(number, bool):
        raise InvalidPreset(
            f"{path}: its header says split.no {number!r} of split.count {parts!r}, but its name makes it part"
            f" {index + 1} of {count} (split.no {index}); a part copied or renamed?"
        )


def first_part(path: Path) -> Path:
    """Part 1 of a split GGUF, which holds the metadata; `path` itself otherwise."""
    match = SPLIT_NAME.match(path.name)
    if match is None or match.group("part") == "00001":
        return path
    return path.with_name(f"{match.group('prefix')}-00001-of-{match.group('count')}.gguf")


def model_name(path: Path) -> str:
    """The file's name without `.gguf` and without a split suffix."""
    match = SPLIT_NAME.match(path.name)
    return match.group("prefix") if match else path.name.removesuffix(".gguf")
