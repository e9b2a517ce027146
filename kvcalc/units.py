"""Sizes, rates and element types: parsing user input and rendering integer bytes.

The only module that knows GiB = 2**30 and GB = 10**9. Everything else works in exact
integer bytes and converts here, at the edge.
"""

# no `from __future__ import annotations`: pydantic takes the fields' annotations as objects rather than
# compiling and evaluating each string (start-up, docs/benchmarks.md)

import re
from decimal import Decimal
from enum import Enum

from kvcalc.base import Frozen
from kvcalc.errors import InvalidInput

KiB, MiB, GiB, TiB = 2**10, 2**20, 2**30, 2**40
KB, MB, GB, TB = 10**3, 10**6, 10**9, 10**12

_SIZE_SUFFIXES = {
    "": 1,
    "b": 1,
    "k": KiB, "kib": KiB, "kb": KB,
    "m": MiB, "mib": MiB, "mb": MB,
    "g": GiB, "gib": GiB, "gb": GB,
    "t": TiB, "tib": TiB, "tb": TB,
}  # fmt: skip
_SIZE_RE = re.compile(r"^\s*(-)?\s*([0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]{1,3})?)\s*([a-z]*)\s*$", re.IGNORECASE)
_BITS = re.compile(r"^[KMGT]i?b$")  # Gb, Mib: a capital prefix and a small b are bits (IEC 80000-13), not bytes

SIZE_HELP = "80GB = 80*10^9 bytes, 80GiB = 80*2^30, a bare G/M/K is binary (24G = 24GiB), a plain number is bytes"
MAX_SIZE = 10**18  # 1 EB: far beyond any accelerator, and it keeps sizes exact integers


def parse_size(text: str, allow_zero: bool = False) -> int:
    """Parse a memory size into integer bytes (at least one byte, or zero when allowed). A minus
    sign is refused unless the size is zero: -0 is 0, as in Python. A size in a unit rounds to the
    nearest byte; a fraction of a byte given in bytes (1.5B) and a size in bits (80Gb) are refused.

    >>> parse_size("80GB"), parse_size("80GiB"), parse_size("24G"), parse_size("1024"), parse_size("-0GiB", allow_zero=True)
    (80000000000, 85899345920, 25769803776, 1024, 0)
    >>> parse_size("1E3GB"), parse_size("1e+3GB"), parse_size("1.5KB")
    (1000000000000, 1000000000000, 1500)
    """
    match = _SIZE_RE.match(text) if text.isascii() else None  # only ASCII digits: "١٢" is not read as 12
    unit = match.group(3).lower() if match else None
    if match is not None and _BITS.match(match.group(3)):
        byte_unit = match.group(3)[:-1] + "B"
        raise InvalidInput(
            f"size {text!r} is in bits ({match.group(3)}: a small b is a bit); kvcalc reads bytes: write {match.group(2)}{byte_unit}"
        )
    if match is None or unit not in _SIZE_SUFFIXES:
        raise InvalidInput(f"cannot read size {text!r}: use e.g. 80GB, 80GiB or 24G ({SIZE_HELP})")
    exact = Decimal(match.group(2)) * _SIZE_SUFFIXES[unit]  # decimal arithmetic: 9007199254740993 stays itself
    if match.group(1) and exact != 0:
        raise InvalidInput(f"size {text!r} must not be negative")
    if exact > MAX_SIZE:
        raise InvalidInput(f"size {text!r} is more than 1 EB (10^18 bytes)")
    if _SIZE_SUFFIXES[unit] == 1 and exact != exact.to_integral_value():  # 79.6GiB rounds to a byte; 1.5 bytes does not
        raise InvalidInput(f"size {text!r} is {exact:,f} bytes, not a whole number of bytes")
    value = round(exact)
    if value < 1 and not (allow_zero and value == 0):
        raise InvalidInput(f"size {text!r} must be at least 1 byte")
    return value


# Token counts are named as context lengths are (Llama-3.1's 128k is 131,072 tokens): k and M are binary.
_TOKEN_SUFFIXES = {"": 1, "k": 2**10, "m": 2**20}
_TOKENS_RE = re.compile(r"^([0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?|[0-9]+(?:_[0-9]+)*(?:\.[0-9]+)?)([a-z]*)$", re.IGNORECASE)
TOKENS_HELP = "8192, 8_192, 8,192, 8k or 128k (k = 1,024 tokens, M = 1,048,576, as context lengths are named: 128k = 131,072)"


def parse_tokens(text: str) -> int:
    """Read a token count: digits (8192, 8_192, 8,192), or a multiple of k = 1,024 or M = 1,048,576
    tokens, as context lengths are named (8k, 32K, 128k, 1M; 1.5k = 1,536 since it is whole).

    >>> parse_tokens("8k"), parse_tokens("128K"), parse_tokens("1M"), parse_tokens("8_192"), parse_tokens("8,192"), parse_tokens("1.5k")
    (8192, 131072, 1048576, 8192, 8192, 1536)
    """
    spelled = text.strip()
    match = _TOKENS_RE.match(spelled) if len(spelled) <= 40 else None
    suffix = match.group(2).lower() if match else None
    if match is None or suffix not in _TOKEN_SUFFIXES:
        problem = "must be positive" if spelled.startswith("-") else "cannot be read"
        raise InvalidInput(f"token count {text!r} {problem}: write e.g. {TOKENS_HELP}")
    exact = Decimal(match.group(1).replace(",", "").replace("_", "")) * _TOKEN_SUFFIXES[suffix]
    if exact != exact.to_integral_value():
        raise InvalidInput(f"token count {text!r} is {exact:,f} tokens, not a whole number: write e.g. {TOKENS_HELP}")
    if exact < 1:
        raise InvalidInput(f"token count {text!r} must be at least 1 token")
    return int(exact)


def format_tokens(n: int) -> str:
    """A token count as context lengths are named, when it is a whole or half multiple of k = 1,024 or
    M = 1,048,576 tokens; with digits otherwise (parse_tokens reads either back).

    >>> format_tokens(8192), format_tokens(131072), format_tokens(2**20), format_tokens(1536), format_tokens(1000)
    ('8k', '128k', '1M', '1.5k', '1,000')
    """
    for suffix, factor in (("M", 2**20), ("k", 2**10)):
        if n >= factor and n % factor == 0:
            return f"{n // factor:,}{suffix}"
        if n >= factor and 2 * n % factor == 0:
            return f"{n // factor:,}.5{suffix}"
    return f"{n:,}"


def format_bytes(n: int | float, decimal: bool = False) -> str:
    """Render bytes in the largest fitting unit, binary (GiB) unless decimal (GB).

    >>> format_bytes(1073741824), format_bytes(1073741824, decimal=True), format_bytes(512), format_bytes(2**30 - 1)
    ('1.00 GiB', '1.07 GB', '512 B', '1.00 GiB')
    """
    base, names = (1000, ["B", "KB", "MB", "GB", "TB"]) if decimal else (1024, ["B", "KiB", "MiB", "GiB", "TiB"])
    value, unit = float(abs(n)), 0
    while unit < len(names) - 1 and (value >= base or (unit > 0 and round(value, 2) >= base)):  # never "1024.00 MiB"
        value /= base
        unit += 1
    sign = "-" if n < 0 else ""
    return f"{sign}{value:.0f} {names[0]}" if unit == 0 else f"{sign}{value:.2f} {names[unit]}"


def format_seconds(seconds: float) -> str:
    """Render a duration in s, ms or µs.

    >>> format_seconds(0.00511), format_seconds(2.5), format_seconds(3e-6)
    ('5.11 ms', '2.50 s', '3.00 µs')
    """
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.2f} µs"


class DType(str, Enum):
    """Element types of weights and KV caches."""

    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"
    fp8 = "fp8"
    fp8_e4m3 = "fp8_e4m3"
    fp8_e5m2 = "fp8_e5m2"
    int8 = "int8"
    int4 = "int4"
    q8_0 = "q8_0"
    q4_0 = "q4_0"
    q4_1 = "q4_1"
    q5_0 = "q5_0"
    q5_1 = "q5_1"
    iq4_nl = "iq4_nl"
    mxfp4 = "mxfp4"
    nvfp4 = "nvfp4"
    int8_per_token_head = "int8_per_token_head"
    fp8_per_token_head = "fp8_per_token_head"
    fp8_block = "fp8_block"
    # GGUF tensor types of 256-value super-blocks (k-quants, i-quants, ternary): exact bytes per block
    q2_k = "q2_k"
    q3_k = "q3_k"
    q4_k = "q4_k"
    q5_k = "q5_k"
    q6_k = "q6_k"
    iq1_s = "iq1_s"
    iq1_m = "iq1_m"
    iq2_xxs = "iq2_xxs"
    iq2_xs = "iq2_xs"
    iq2_s = "iq2_s"
    iq3_xxs = "iq3_xxs"
    iq3_s = "iq3_s"
    iq4_xs = "iq4_xs"
    tq1_0 = "tq1_0"
    tq2_0 = "tq2_0"
    # llama-quantize's file types (a mix of tensor types): a typical file's bytes, see GGUF_MIXES
    q2_k_s = "q2_k_s"
    q3_k_s = "q3_k_s"
    q3_k_m = "q3_k_m"
    q3_k_l = "q3_k_l"
    q4_k_s = "q4_k_s"
    q4_k_m = "q4_k_m"
    q5_k_s = "q5_k_s"
    q5_k_m = "q5_k_m"
    iq2_m = "iq2_m"
    iq3_xs = "iq3_xs"
    iq3_m = "iq3_m"


class Packing(Frozen):
    """`block_bytes` bytes store `block_values` values, `scale_bytes` of them the block's scales;
    `head_scale_bytes` more per head and token when each head's row carries its own scale (vLLM's
    int8_per_token_head)."""

    block_values: int
    block_bytes: int
    scale_bytes: int = 0
    head_scale_bytes: int = 0

    def row_bytes(self, values: int, heads: int) -> int:
        """Bytes of one token's row of `values` elements over `heads` heads: bytes_for, plus each
        head's own scale where the format keeps one per token and head.

        >>> PACKING[DType.int8_per_token_head].row_bytes(8 * 128, 8), PACKING[DType.fp8].row_bytes(8 * 128, 8)
        (1056, 1024)
        """
        return self.bytes_for(values) + heads * self.head_scale_bytes

    def bytes_for(self, values: int) -> int:
        """Exact bytes of one row of `values` elements: whole blocks, and a shorter last block
        with its own scales when the row is not a multiple of the block (a group never spans rows).

        >>> PACKING[DType.int4].bytes_for(256), PACKING[DType.int4].bytes_for(64), PACKING[DType.q4_0].bytes_for(48)
        (136, 36, 28)
        """
        blocks, rest = divmod(values, self.block_values)
        if rest == 0:
            return blocks * self.block_bytes
        data = -(-rest * (self.block_bytes - self.scale_bytes) // self.block_values)
        return blocks * self.block_bytes + data + self.scale_bytes


# Sources: llama.cpp ggml/src/ggml-common.h (block_q8_0 = fp16 scale + 32 int8 = 34 B;
# q4_0 = 2 + 16; q4_1 = 2 + 2 + 16; q5_0 = 2 + 4 + 16; q5_1 = 2 + 2 + 4 + 16; iq4_nl = 2 + 16);
# scale_bytes are each block's fp16 scale (and min), the rest is data.
# int4 (--weight-dtype int4, and KV caches): a generic group-wise int4, an fp16 scale and an fp16 zero point per
# 128 values: 64 + 4 = 68 B per 128, i.e. bits/8 + 4/G bytes per value. It is not AWQ's or GPTQ's layout (4-bit
# packed zero points: 66.5 B per 128): a checkpoint's AWQ/GPTQ/compressed-tensors layers are counted from its
# quantization_config (kvcalc.quantization). mxfp4: 16 B + one e8m0 scale per 32.
# nvfp4: 8 B of E2M1 values + one E4M3 scale per 16 (the per-tensor fp32 scale is left out).
PACKING: dict[DType, Packing] = {
    DType.fp32: Packing(block_values=1, block_bytes=4),
    DType.fp16: Packing(block_values=1, block_bytes=2),
    DType.bf16: Packing(block_values=1, block_bytes=2),
    DType.fp8: Packing(block_values=1, block_bytes=1),
    DType.fp8_e4m3: Packing(block_values=1, block_bytes=1),
    DType.fp8_e5m2: Packing(block_values=1, block_bytes=1),
    DType.int8: Packing(block_values=1, block_bytes=1),
    DType.int4: Packing(block_values=128, block_bytes=68, scale_bytes=4),
    DType.q8_0: Packing(block_values=32, block_bytes=34, scale_bytes=2),
    DType.q4_0: Packing(block_values=32, block_bytes=18, scale_bytes=2),
    DType.q4_1: Packing(block_values=32, block_bytes=20, scale_bytes=4),
    DType.q5_0: Packing(block_values=32, block_bytes=22, scale_bytes=2),
    DType.q5_1: Packing(block_values=32, block_bytes=24, scale_bytes=4),
    DType.iq4_nl: Packing(block_values=32, block_bytes=18, scale_bytes=2),
    DType.mxfp4: Packing(block_values=32, block_bytes=17, scale_bytes=1),
    # NVFP4: 16 e2m1 values (8 B) share one fp8 e4m3 scale: 9 B per 16 = 0.5625 B per value; the one fp32
    # scale per tensor is not per token (vLLM PR #46329, SGLang MHATokenToKVPoolFP4: 1 scale per 16).
    DType.nvfp4: Packing(block_values=16, block_bytes=9, scale_bytes=1),
    # vLLM int8_per_token_head / fp8_per_token_head: one byte per value plus one fp32 scale per token
    # and head, for K and for V (vllm/model_executor/models/gemma4.py 001cabc1: "Per-token-head
    # quantization adds 4 bytes of scale per head ... (256*1)*2 + 8 = 520 bytes").
    DType.int8_per_token_head: Packing(block_values=1, block_bytes=1, head_scale_bytes=4),
    DType.fp8_per_token_head: Packing(block_values=1, block_bytes=1, head_scale_bytes=4),
    # fp8 weights with one fp32 scale per 128x128 block (DeepSeek-V3's weight_block_size [128, 128]).
    DType.fp8_block: Packing(block_values=128 * 128, block_bytes=128 * 128 + 4, scale_bytes=4),
    # ggml/src/ggml-common.h (ggml-org/llama.cpp), bytes per 256-value super-block (QK_K), static_asserts:
    # block_q2_K = 2*2 + 16 + 64 = 84; q3_K = 2 + 32 + 64 + 12 = 110; q4_K = 2*2 + 12 + 128 = 144;
    # q5_K = 2*2 + 12 + 32 + 128 = 176; q6_K = 128 + 64 + 16 + 2 = 210; iq1_s = 2 + 32 + 16 = 50;
    # iq1_m = 32 + 16 + 8 = 56; iq2_xxs = 2 + 64 = 66; iq2_xs = 2 + 64 + 8 = 74; iq2_s = 2 + 64 + 16 = 82;
    # iq3_xxs = 2 + 96 = 98; iq3_s = 2 + 64 + 8 + 32 + 4 = 110; iq4_xs = 2 + 2 + 4 + 128 = 136;
    # tq1_0 = 48 + 4 + 2 = 54; tq2_0 = 64 + 2 = 66. scale_bytes: the scales, mins and sign/high bits'
    # share that a shorter last block keeps whole.
    DType.q2_k: Packing(block_values=256, block_bytes=84, scale_bytes=20),
    DType.q3_k: Packing(block_values=256, block_bytes=110, scale_bytes=14),
    DType.q4_k: Packing(block_values=256, block_bytes=144, scale_bytes=16),
    DType.q5_k: Packing(block_values=256, block_bytes=176, scale_bytes=16),
    DType.q6_k: Packing(block_values=256, block_bytes=210, scale_bytes=18),
    DType.iq1_s: Packing(block_values=256, block_bytes=50, scale_bytes=2),
    DType.iq1_m: Packing(block_values=256, block_bytes=56, scale_bytes=8),
    DType.iq2_xxs: Packing(block_values=256, block_bytes=66, scale_bytes=2),
    DType.iq2_xs: Packing(block_values=256, block_bytes=74, scale_bytes=10),
    DType.iq2_s: Packing(block_values=256, block_bytes=82, scale_bytes=10),
    DType.iq3_xxs: Packing(block_values=256, block_bytes=98, scale_bytes=2),
    DType.iq3_s: Packing(block_values=256, block_bytes=110, scale_bytes=6),
    DType.iq4_xs: Packing(block_values=256, block_bytes=136, scale_bytes=8),
    DType.tq1_0: Packing(block_values=256, block_bytes=54, scale_bytes=2),
    DType.tq2_0: Packing(block_values=256, block_bytes=66, scale_bytes=2),
}

LLAMA3_8B_PARAMS = 8_030_261_248  # the reference model of llama-quantize's size table
# llama-quantize's file types mix tensor types (src/llama-quant.cpp llama_tensor_get_type: Q4_K_M keeps
# attn_v and ffn_down in q6_K in about half the layers, output.weight in q6_K, the rest q4_K), so a file's
# bytes depend on its model's tensor shapes. By name, kvcalc uses the typical file: the size llama.cpp's
# tools/quantize/quantize.cpp QUANT_OPTIONS prints for Llama-3-8B ("4.58G" = GiB, 03161a4e), or the bits
# per weight it prints for the i-quant mixes. A GGUF file itself gives exact bytes (StoredWeights); how a
# mix's bytes split over the tensors and layers follows llama-quantize's rules (kvcalc.gguf_mix).
GGUF_MIXES: dict[DType, tuple[str, Packing]] = {
    dtype: (
        f"{label} at Llama-3-8B" if gib else f"{label} bits per weight",
        Packing(block_values=LLAMA3_8B_PARAMS, block_bytes=round(Decimal(gib) * GiB))
        if gib
        else Packing(block_values=800, block_bytes=round(Decimal(label) * 100)),  # bpw/8 B per value
    )
    for dtype, label, gib in (
        (DType.q2_k_s, "2.96 GiB", "2.96"),
        (DType.q3_k_s, "3.41 GiB", "3.41"),
        (DType.q3_k_m, "3.74 GiB", "3.74"),
        (DType.q3_k_l, "4.03 GiB", "4.03"),
        (DType.q4_k_s, "4.37 GiB", "4.37"),
        (DType.q4_k_m, "4.58 GiB", "4.58"),
        (DType.q5_k_s, "5.21 GiB", "5.21"),
        (DType.q5_k_m, "5.33 GiB", "5.33"),
        (DType.iq2_m, "2.7", None),
        (DType.iq3_xs, "3.3", None),
        (DType.iq3_m, "3.66", None),
    )
}
PACKING.update({dtype: packing for dtype, (_, packing) in GGUF_MIXES.items()})
WEIGHT_ONLY = frozenset({DType.fp8_block, *GGUF_MIXES})  # formats of weights, never of a cache

# Other spellings of each dtype: torch's (torch.float8_e4m3fn; fnuz is AMD's variant of the same byte),
# Hugging Face config.json's torch_dtype/dtype (float32, float16, bfloat16), vLLM's --dtype and
# --kv-cache-dtype (half, float, fp8_e4m3, fp8_e5m2) and llama.cpp's (f32, f16, bf16). One table, so
# every spelling of a dtype is accepted wherever one is read.
_DTYPE_SPELLINGS: dict[DType, tuple[str, ...]] = {
    DType.fp32: ("float32", "float", "f32"),
    DType.fp16: ("float16", "half", "f16"),
    DType.bf16: ("bfloat16",),
    DType.fp8: ("float8",),
    DType.fp8_e4m3: ("float8_e4m3fn", "float8_e4m3fnuz", "fp8_e4m3fn", "fp8_e4m3fnuz", "e4m3", "e4m3fn"),
    DType.fp8_e5m2: ("float8_e5m2", "float8_e5m2fnuz", "fp8_e5m2fnuz", "e5m2"),
    DType.nvfp4: ("fp4_e2m1", "float4_e2m1fn_x2"),  # SGLang's --kv-cache-dtype fp4_e2m1, torch's packed type
}
_DTYPE_ALIASES = {spelling: dtype for dtype, spellings in _DTYPE_SPELLINGS.items() for spelling in spellings}


_VERSION_RE = re.compile(
    r"^v?(\d+)\.(\d+)(?:\.(\d+))?(?:\.(\d+))?((?:a|b|rc)\d+)?(?:\.?(?:dev|post)\d*)?(?:\+[0-9a-z.]+)?$", re.I
)


_VERSION_IN_TEXT = re.compile(r"(?<![\d.])v?(\d+)\.(\d+)(?:\.(\d+))?")  # a release named inside a longer text


def parse_engine_version(text: str) -> tuple[int, int, int]:
    """An engine's release as it prints it, as (major, minor, patch): a leading v, a fourth part, a
    pre-release (rc1), a .devN / .postN and a +local tag (a CUDA build, a git hash) are read past; a
    pre-release counts as its release, since the rules kvcalc keeps change at minor releases. A text
    that names a release among other words (a build's description) is read for its first MAJOR.MINOR.

    >>> parse_engine_version("0.20.2rc1.dev9+g01d4d1ad3"), parse_engine_version("v0.10.1.1"), parse_engine_version("0.11.0+cu128")
    ((0, 20, 2), (0, 10, 1), (0, 11, 0))
    >>> parse_engine_version("0.19")
    (0, 19, 0)
    """
    match = _VERSION_RE.match(text.strip()) or _VERSION_IN_TEXT.search(text)  # "0.10.0 (ROCm fork rocm/vllm-dev)"
    if not match:
        raise InvalidInput(
            f"cannot read version {text!r}: write it as the engine prints it (0.19, 0.20.2rc1, v0.10.1.1, 0.11.0+cu128)"
        )
    major, minor, patch = (int(part or 0) for part in match.groups()[:3])
    return major, minor, patch


def parse_dtype(text: str | DType) -> "DType":
    """Read a dtype name, accepting torch, Hugging Face, vLLM and llama.cpp spellings (bfloat16, half, f16).

    >>> parse_dtype("bfloat16"), parse_dtype("Q8_0"), parse_dtype("float8_e5m2")
    (<DType.bf16: 'bf16'>, <DType.q8_0: 'q8_0'>, <DType.fp8_e5m2: 'fp8_e5m2'>)
    """
    if isinstance(text, DType):
        return text
    key = text.strip().lower()
    if key in _DTYPE_ALIASES:
        return _DTYPE_ALIASES[key]
    try:
        return DType(key)
    except ValueError:
        names = ", ".join(d.value for d in DType)
        raise InvalidInput(f"unknown dtype {text!r}: choose one of {names}") from None


def bytes_per_value(dtype: DType) -> float:
    """Average bytes per value, scales included; for display and rates only."""
    packing = PACKING[dtype]
    return packing.block_bytes / packing.block_values
