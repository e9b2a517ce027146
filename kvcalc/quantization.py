"""A checkpoint's integer-quantized linear layers, from config.json's `quantization_config`: AWQ, GPTQ
(and AutoRound's GPTQ packing), compressed-tensors pack-quantized INT4/INT8 (W4A16, W8A16) and
bitsandbytes (NF4/FP4 blocks of 64, LLM.int8); their bytes as the checkpoint stores them and as vLLM's
Marlin kernels hold them after loading. Pure functions, integer bytes.

A quantized linear layer stores per group of G input values of one output column: G values packed
into int32 words (bits/8 B each), one 16-bit scale, and, for asymmetric schemes, one packed zero point
(bits/8 B). The embedding table, LM head and norms stay 16-bit (the LM head unless GPTQ's lm_head).
"""

import re
from typing import Any, Literal

from pydantic import Field, field_validator

from kvcalc.base import Strict
from kvcalc.units import PACKING, DType

Method = Literal["awq", "gptq", "compressed-tensors", "bitsandbytes"]
SCALE_BITS = 16  # one fp16/bf16 scale per group and output column (params_dtype in vLLM's create_weights)
# vllm/model_executor/layers/quantization/utils/marlin_utils.py (vllm 007d5005) MARLIN_SUPPORTED_GROUP_SIZES: the
# group sizes Marlin repacks; vLLM runs any other with its plain gptq or awq kernel on the stored layout
MARLIN_GROUP_SIZES = (-1, 32, 64, 128)
FP32_BITS = 8 * PACKING[DType.fp32].block_bytes
# AutoRound's packings vLLM reads (quantization/auto_round.py AutoRoundConfig.SUPPORTED_FORMATS, vllm 04aa528e)
AUTO_ROUND_PACKINGS = {"auto_round:auto_gptq": "gptq", "auto_round:auto_awq": "awq"}
# bitsandbytes 4-bit: one absmax per block of 64 values, fp32; double quantization stores it as one byte and
# one fp32 absmax per 256 of those (bitsandbytes functional.quantize_4bit, blocksize 64, nested blocksize 256)
BNB_BLOCK, BNB_NESTED_BLOCKS = 64, 256
# Module names a config may keep unquantized without changing what kvcalc counts: the embeddings and LM
# head (16-bit in every checkpoint kvcalc reads), a vision or audio tower (not counted), MoE routers and
# norms (kvcalc always counts them 16-bit).
_COUNTED_ANYWAY = re.compile(
    r"lm_head|embed|vision|visual|vit\b|audio|mm_projector|multi_modal|\bgate$|mlp\.gate\b|gate\$|router|norm", re.I
)
# ... and the parts kvcalc can keep 16-bit when a config names them: the attention projections (not a
# hybrid's linear attention), a hybrid's state mixers (Gated DeltaNet's linear_attn, Mamba's mixer) and
# the shared experts (not their gate).
_ATTENTION = re.compile(r"(?<!linear_)(self_attn|\battn\b|attention|[qkvo]_proj|qkv_proj)", re.I)
# Nemotron-H names every layer's block `mixer`: Mamba's (in_proj, out_proj), attention's ([qkvo]_proj) or the MLP's
_STATE_MIXERS = re.compile(r"linear_attn|mamba|\bmixer\b(?!\.(?:[qkvo]_proj|qkv_proj|up_proj|down_proj|gate_proj))", re.I)
_SHARED_EXPERTS = re.compile(r"shared_experts?(?!_gate)", re.I)
# A skip-list name for one layer only (model.layers.0.self_attn, backbone.layers.5.mixer, transformer.h.3.attn)
_ONE_LAYER = re.compile(r"(?:^|\.)(?:layers|h|blocks)\.(\d+)(?:\.|$)")


class LinearQuantization(Strict):
    """How a checkpoint quantizes its linear layers (config.json's quantization_config)."""

    method: Method = Field(
        description="quant_method: awq, gptq (AutoRound's GPTQ packing too), compressed-tensors or bitsandbytes"
    )
    bits: Literal[4, 8] = Field(description="bits per weight")
    group_size: int | None = Field(description="input values per scale, a positive integer; None: one scale per output channel")
    scale_bits: int = Field(default=SCALE_BITS, gt=0, description="bits of scales per group (16: one fp16 or bf16 scale)")
    zero_points: bool = Field(description="asymmetric: a packed zero point per group (AWQ's zero_point, GPTQ sym false)")
    act_order: bool = Field(
        default=False, description="GPTQ desc_act / compressed-tensors actorder group: a g_idx per input feature"
    )
    skipped: list[str] = Field(
        default_factory=list, description="modules the config keeps unquantized (modules_to_not_convert, ignore)"
    )
    marlin: bool = Field(
        default=True,
        description="the config has what vLLM's Marlin check reads; false for a GPTQ config without sym or desc_act,"
        " which vLLM runs with its gptq kernel in the stored layout (gptq_marlin.py is_gptq_marlin_compatible);"
        " whether Marlin then repacks it is marlin_repacks",
    )

    @field_validator("group_size")
    @classmethod
    def _positive_group(cls, size: int | None) -> int | None:
        if size is not None and size <= 0:
            raise ValueError(f"group_size: expected a positive integer (absent: one scale per output channel), got {size}")
        return size

    @property
    def marlin_repacks(self) -> bool:
        """Whether vLLM repacks the layers for Marlin on a GPU where Marlin runs (check_marlin_supported,
        marlin_utils.py vllm 007d5005): its group sizes, and a type Marlin takes: with zero points only 4-bit
        (uint4), without them 4- or 8-bit (uint4b8, uint8b128); AWQ's type map is uint4/uint8 with
        has_zp=zero_point (awq_marlin.py is_awq_marlin_compatible), GPTQ's (bits, sym=True) only
        (gptq_marlin.py is_gptq_marlin_compatible); else vLLM's plain kernel runs the stored layout."""
        if not self.marlin or (self.group_size or -1) not in MARLIN_GROUP_SIZES:
            return False
        if self.method == "awq":
            return self.zero_points and self.bits == 4
        if self.method == "gptq":
            return not self.zero_points
        return self.bits == 4 or not self.zero_points

    @property
    def dtype(self) -> DType:
        """kvcalc's name for the layers' format (int4 or int8), for everything but their exact bytes."""
        return DType.int4 if self.bits == 4 else DType.int8

    @property
    def label(self) -> str:
        """e.g. 'awq int4 g128 asym'."""
        if self.method == "bitsandbytes":
            if self.group_size is None:
                return f"bitsandbytes {self.bits}-bit per-channel"
            double = self.group_size == BNB_BLOCK * BNB_NESTED_BLOCKS
            return f"bitsandbytes {self.bits}-bit absmax per {BNB_BLOCK}" + (" double-quant" if double else "")
        group = f"g{self.group_size}" if self.group_size else "per-channel"
        return f"{self.method} int{self.bits} {group} {'asym' if self.zero_points else 'sym'}" + (
            " act-order" if self.act_order else ""
        )

    def _group_bits(self, zero_bits: int) -> tuple[int, int]:
        """(bits per group of one output column, values per group); per-channel scales are not counted
        (one per output row: under 0.01 % of the weights)."""
        if self.group_size is None:
            return self.bits, 1
        return self.group_size * self.bits + self.scale_bits + zero_bits, self.group_size

    def _bytes(self, values: int, zero_bits: int) -> int:
        per_group, group = self._group_bits(zero_bits)
        return -(-values * per_group // (8 * group))

    def stored_zero_bits(self) -> int:
        """Zero-point bits per group in the checkpoint: AWQ's and asymmetric schemes', and GPTQ's always
        (AutoGPTQ and GPTQModel write qzeros for symmetric checkpoints too)."""
        return self.bits if self.zero_points or self.method == "gptq" else 0

    def stored_bytes(self, values: int) -> int:
        """Bytes of `values` quantized weights as the checkpoint stores them: packed values, scales and
        zero points (g_idx, one int32 per input feature of a matrix, not counted: under 0.1 %).

        >>> q = LinearQuantization(method="awq", bits=4, group_size=128, zero_points=True)
        >>> q.stored_bytes(4096 * 4096)  # 4-bit values + fp16 scale + 4-bit zero per 128
        8716288
        """
        return self._bytes(values, self.stored_zero_bits())

    def marlin_zero_bits(self, experts: bool) -> int:
        """Zero-point bits per group vLLM's Marlin kernels keep: asymmetric schemes' (AWQ's repacked,
        awq_to_marlin_zero_points); a symmetric GPTQ linear's qzeros are dropped (MarlinLinearKernel:
        marlin_make_empty_g_idx), its MoE experts keep them in params_dtype, half the int32 words' bytes
        (gptq_marlin.py GPTQMarlinMoEMethod.create_weights w13_qzeros / w2_qzeros)."""
        if self.zero_points:
            return self.bits
        return self.bits // 2 if self.method == "gptq" and experts else 0

    def marlin_bytes(self, values: int, experts: bool) -> int:
        """Bytes of `values` quantized weights as vLLM holds them after its Marlin repack: the packed
        values and scales at their stored sizes (gptq_marlin_repack, marlin_permute_scales), zero points
        as marlin_zero_bits; with act order a g_idx and its sort indices per input feature (not counted).

        >>> q = LinearQuantization(method="gptq", bits=4, group_size=128, zero_points=False)
        >>> q.stored_bytes(4096 * 4096) - q.marlin_bytes(4096 * 4096, experts=False)  # qzeros dropped
        65536
        """
        return self._bytes(values, self.marlin_zero_bits(experts))


def _positive_int(section: dict[str, Any], key: str, where: str) -> int:
    value = section.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value == 0 or value < -1:
        raise ValueError(f"{where}.{key}: expected a positive integer (or -1), got {value!r}")
    return value


def _bool(section: dict[str, Any], key: str, where: str, default: bool) -> bool:
    value = section.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ValueError(f"{where}.{key}: expected true or false, got {value!r}")
    return value


def _group(size: int) -> int | None:
    """A config's group_size: -1 is one scale per output channel."""
    return None if size == -1 else size


def _bits(value: object, where: str) -> Literal[4, 8]:
    if value == 4 or value == 8:
        return 4 if value == 4 else 8
    raise ValueError(f"{where}: {value!r} bits is not supported (kvcalc reads 4- and 8-bit integer weights)")


def _names(value: object, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where}: expected a list of module names")
    return list(value)


def _awq_gptq(config: dict[str, Any], method: Method, auto_round: bool = False) -> LinearQuantization:
    """AWQ or GPTQ, or AutoRound in either packing: its zero points are `not sym`, and vLLM passes desc_act=False
    and asks Marlin whenever (bits, sym) and the group size allow (auto_round.py apply_gptq_quant_layer,
    apply_awq_quant_layer, vllm 04aa528e)."""
    where = "quantization_config"
    bits = _bits(config.get("bits", config.get("w_bit")), f"{where}.bits")  # w_bit, q_group_size: AutoAWQ's own names
    group_key = "q_group_size" if method == "awq" and "group_size" not in config else "group_size"
    group = _group(_positive_int(config, group_key, where))
    marlin = True
    if method == "awq":
        zero_points = not _bool(config, "sym", where, True) if auto_round else _bool(config, "zero_point", where, True)
        act_order = False
        skipped = _names(config.get("modules_to_not_convert"), f"{where}.modules_to_not_convert")
    else:
        zero_points = not _bool(config, "sym", where, True)
        # one group per row has no order; AutoRound's GPTQ layers run with desc_act=False
        act_order = not auto_round and _bool(config, "desc_act", where, False) and group is not None
        # what vLLM needs to convert it (is_gptq_marlin_compatible); AutoRound does not ask for desc_act
        marlin = auto_round or ("sym" in config and "desc_act" in config)
        dynamic = config.get("dynamic")
        if dynamic is None:
            dynamic = {}
        if not isinstance(dynamic, dict):
            raise ValueError(f"{where}.dynamic: expected an object of module patterns, got {dynamic!r}")
        skipped = [key.removeprefix("-:") for key in dynamic if isinstance(key, str) and key.startswith("-:")]
    return LinearQuantization(
        method=method,
        bits=bits,
        group_size=group,
        zero_points=zero_points,
        act_order=act_order,
        skipped=skipped,
        marlin=marlin,
    )


def _compressed_tensors(config: dict[str, Any]) -> LinearQuantization:
    where = "quantization_config.config_groups"
    groups = config.get("config_groups")
    if not isinstance(groups, dict) or not groups:
        raise ValueError(f"{where}: expected at least one group of weights")
    schemes = []
    for name, group in groups.items():
        weights = group.get("weights") if isinstance(group, dict) else None
        if not isinstance(weights, dict):
            raise ValueError(f"{where}.{name}.weights: expected the weights' scheme")
        at = f"{where}.{name}.weights"
        if weights.get("type", "int") != "int":
            raise ValueError(f"{at}.type: {weights.get('type')!r} weights in pack-quantized format are not supported")
        strategy = weights.get("strategy")
        if strategy not in ("group", "channel"):
            raise ValueError(f"{at}.strategy: {strategy!r} is not supported (kvcalc reads group and channel)")
        size = _positive_int(weights, "group_size", at) if strategy == "group" else -1
        schemes.append(
            LinearQuantization(
                method="compressed-tensors",
                bits=_bits(weights.get("num_bits"), f"{at}.num_bits"),
                group_size=_group(size),
                zero_points=not _bool(weights, "symmetric", at, True),
                act_order=weights.get("actorder") == "group",
                skipped=_names(config.get("ignore"), "quantization_config.ignore"),
            )
        )
    if any(scheme != schemes[0] for scheme in schemes):
        raise ValueError(f"{where}: groups with different schemes are not supported (kvcalc counts one format)")
    return schemes[0]


def _bitsandbytes(config: dict[str, Any]) -> LinearQuantization:
    """bitsandbytes as vLLM reads it (quantization/bitsandbytes.py BitsAndBytesConfig.from_config, absent keys
    its defaults): LLM.int8 with load_in_8bit (int8 values and an fp32 scale per output row, not counted), else
    4-bit blocks of 64 with an fp32 absmax, or one byte and an fp32 absmax per 256 blocks when double-quantized.
    vLLM keeps the packed uint8 weights and their quant states as stored (BitsAndBytesLinearMethod.create_weights)."""
    where = "quantization_config"
    skipped = _names(config.get("llm_int8_skip_modules"), f"{where}.llm_int8_skip_modules")
    if _bool(config, "load_in_8bit", where, False):
        return LinearQuantization(
            method="bitsandbytes", bits=8, group_size=None, zero_points=False, skipped=skipped, marlin=False
        )
    if _bool(config, "bnb_4bit_use_double_quant", where, False):
        group, scale_bits = BNB_BLOCK * BNB_NESTED_BLOCKS, 8 * BNB_NESTED_BLOCKS + FP32_BITS
    else:
        group, scale_bits = BNB_BLOCK, FP32_BITS
    return LinearQuantization(
        method="bitsandbytes",
        bits=4,
        group_size=group,
        scale_bits=scale_bits,
        zero_points=False,
        skipped=skipped,
        marlin=False,
    )


def linear_quantization(config: dict[str, Any]) -> LinearQuantization | None:
    """The integer weight quantization a quantization_config describes, None for the methods kvcalc
    reads otherwise (fp8, mxfp4, nvfp4) or not at all. AutoRound reads as the packing it names, GPTQ
    when absent (vllm/model_executor/layers/quantization/auto_round.py, vllm 04aa528e).

    >>> linear_quantization({"quant_method": "gptq", "bits": 4, "group_size": 128, "sym": True, "desc_act": True}).label
    'gptq int4 g128 sym act-order'
    """
    method = str(config.get("quant_method", "")).lower()
    if method == "bitsandbytes":
        return _bitsandbytes(config)
    if method in ("awq", "gptq"):
        return _awq_gptq(config, method)  # type: ignore[arg-type]
    if method in ("auto-round", "intel/auto-round", "auto_round"):
        packing = config.get("packing_format", "auto_round:auto_gptq")
        if not isinstance(packing, str) or packing not in AUTO_ROUND_PACKINGS:
            raise ValueError(
                f"quantization_config.packing_format: {packing!r} is not one vLLM reads ({', '.join(AUTO_ROUND_PACKINGS)})"
            )
        return _awq_gptq(config, AUTO_ROUND_PACKINGS[packing], auto_round=True)  # type: ignore[arg-type]
    if method == "compressed-tensors" and config.get("format") == "pack-quantized":
        return _compressed_tensors(config)
    return None


def _names_layer(name: str, layer: int) -> bool:
    """Whether a skip-list name applies to layer `layer` (0-based): a name without a layer index applies to all."""
    one = _ONE_LAYER.search(name)
    return one is None or int(one.group(1)) == layer


def keeps_attention(quantization: LinearQuantization, layer: int) -> bool:
    """Whether the config keeps layer `layer`'s attention projections unquantized (self_attn in its skip list).

    >>> q = LinearQuantization(method="awq", bits=4, group_size=128, zero_points=True, skipped=["model.layers.0.self_attn"])
    >>> keeps_attention(q, 0), keeps_attention(q, 1)
    (True, False)
    """
    return any(
        _ATTENTION.search(name) and not _COUNTED_ANYWAY.search(name) and _names_layer(name, layer)
        for name in quantization.skipped
    )


def keeps_state_mixers(quantization: LinearQuantization, layer: int) -> bool:
    """Whether the config keeps layer `layer`'s state mixer (linear attention, Mamba) unquantized."""
    return any(_STATE_MIXERS.search(name) and _names_layer(name, layer) for name in quantization.skipped)


def keeps_shared_experts(quantization: LinearQuantization, layer: int) -> bool:
    """Whether the config keeps layer `layer`'s shared experts unquantized."""
    return any(_SHARED_EXPERTS.search(name) and _names_layer(name, layer) for name in quantization.skipped)


def skipped_note(quantization: LinearQuantization) -> str:
    """What the config keeps unquantized, and how kvcalc counts it, for --explain ('' when nothing)."""
    if not quantization.skipped:
        return ""
    other = [
        name
        for name in quantization.skipped
        if not any(pattern.search(name) for pattern in (_COUNTED_ANYWAY, _ATTENTION, _STATE_MIXERS, _SHARED_EXPERTS))
    ]
    note = f"kept unquantized by the config: {', '.join(quantization.skipped)}"
    if other:
        note += f" ({', '.join(other)} counted quantized: kvcalc keeps attention, state mixers and shared experts 16-bit by name)"
    return note
