"""llama-quantize's per-tensor types: which GGUF type each tensor of a file type (Q4_K_M, Q3_K_M,
IQ2_M...) gets, from the tensor's name, shape and layer and a few facts about the model.

A transcription of ggml-org/llama.cpp src/llama-quant.cpp at 007dbbf3 (2026): `llama_ftype_get_default_type`
(each file type's default tensor type), `tensor_get_category` (categories by name), `tensor_allows_quantization`
(what stays as converted: 1-D tensors, norms, the router, conv1d), `llama_tensor_get_type_impl` (the mix:
`use_more_bits`, the n_expert == 8 and n_gqa >= 4 rules, the output and token_embd rules) and
`tensor_type_fallback` (a row that is not a whole number of blocks). Pure: names, shapes and counts in, types out.

Not transcribed, since kvcalc's models do not say: Falcon's own branches (arch LLM_ARCH_FALCON), the
MXFP4_MOE and Q1_0/Q2_0/NVFP4 file types, `--tensor-type`/`--output-tensor-type` overrides and `--pure`.
An importance matrix is assumed exactly where the file type requires one (IQ1, IQ2, IQ3_XXS): its other
effects (Q4_0/Q5_0's and IQ4's first eighth of ffn_down) follow llama-quantize run without one.
"""

# no `from __future__ import annotations`: pydantic takes the fields' annotations as objects rather than
# compiling and evaluating each string (start-up, docs/benchmarks.md)

import math
from typing import NamedTuple

from kvcalc.base import Frozen
from kvcalc.units import PACKING, DType

QUANT_SOURCE = "llama-quantize's rules (ggml-org/llama.cpp src/llama-quant.cpp llama_tensor_get_type, 007dbbf3)"

# llama_ftype_get_default_type: each file type kvcalc names and the tensor type its tensors start from.
DEFAULT_TYPE: dict[DType, DType] = {
    DType.q4_0: DType.q4_0,
    DType.q4_1: DType.q4_1,
    DType.q5_0: DType.q5_0,
    DType.q5_1: DType.q5_1,
    DType.q8_0: DType.q8_0,
    DType.q2_k: DType.q2_k,
    DType.q2_k_s: DType.q2_k,
    DType.q3_k_s: DType.q3_k,
    DType.q3_k_m: DType.q3_k,
    DType.q3_k_l: DType.q3_k,
    DType.q4_k_s: DType.q4_k,
    DType.q4_k_m: DType.q4_k,
    DType.q5_k_s: DType.q5_k,
    DType.q5_k_m: DType.q5_k,
    DType.q6_k: DType.q6_k,
    DType.tq1_0: DType.tq1_0,
    DType.tq2_0: DType.tq2_0,
    DType.iq1_s: DType.iq1_s,
    DType.iq1_m: DType.iq1_m,
    DType.iq2_xxs: DType.iq2_xxs,
    DType.iq2_xs: DType.iq2_xs,
    DType.iq2_m: DType.iq2_s,
    DType.iq3_xxs: DType.iq3_xxs,
    DType.iq3_xs: DType.iq3_s,
    DType.iq3_m: DType.iq3_s,
    DType.iq4_nl: DType.iq4_nl,
    DType.iq4_xs: DType.iq4_xs,
}
FILE_TYPES = frozenset(DEFAULT_TYPE)  # the dtypes that name a llama-quantize file type
_NEEDS_IMATRIX = frozenset({DType.iq1_s, DType.iq1_m, DType.iq2_xxs, DType.iq2_xs, DType.iq2_m, DType.iq3_xxs})
_IQ_LOW = frozenset({DType.iq2_xxs, DType.iq2_xs, DType.iq1_s, DType.iq2_m, DType.iq1_m})  # IQ2_S is no kvcalc dtype
_IQ_OUTPUT_Q5K = _IQ_LOW | {DType.iq3_xxs}
_EIGHT_EXPERT_ATTN_OUTPUT = frozenset(
    {DType.q2_k, DType.iq3_xs, DType.iq3_xxs, DType.q3_k_s, DType.q3_k_m, DType.iq4_nl, DType.q4_k_s, DType.q4_k_m,
     DType.iq3_m, DType.iq4_xs}
)  # fmt: skip
_NOT_QUANTIZED = (
    "_norm.weight", "ffn_gate_inp.weight", "ssm_conv1d", "shortconv.conv.weight", "altup", "laurel", "per_layer_model_proj",
)  # fmt: skip
_FALLBACK = {
    DType.iq1_s: DType.iq4_nl, DType.iq1_m: DType.iq4_nl, DType.iq2_xxs: DType.iq4_nl, DType.iq2_xs: DType.iq4_nl,
    DType.iq2_s: DType.iq4_nl, DType.iq3_xxs: DType.iq4_nl, DType.iq3_s: DType.iq4_nl, DType.iq4_xs: DType.iq4_nl,
    DType.q2_k: DType.q4_0, DType.q3_k: DType.q4_0, DType.tq1_0: DType.q4_0, DType.tq2_0: DType.q4_0,
    DType.q4_k: DType.q5_0, DType.q5_k: DType.q5_1, DType.q6_k: DType.q8_0,
}  # fmt: skip


class GgufTensor(NamedTuple):
    """A tensor as llama.cpp names it (`blk.3.attn_v.weight`, `token_embd.weight`) and its shape in
    ggml's order: ne[0] is a row's length (a matmul's input width), then rows (and experts). A plain
    tuple: a model has thousands of them."""

    name: str
    shape: tuple[int, ...]

    @property
    def elements(self) -> int:
        return math.prod(self.shape)


class MixModel(Frozen):
    """What llama-quantize's rules read from the model's hyperparameters."""

    layers: int  # n_layer: the blocks the ffn_down/gate/up rules count
    experts: int  # n_expert (0 for a dense model)
    gqa: int  # n_gqa(): query heads per KV head
    is_70b: bool  # llama.cpp's model type 70B (LLM_TYPE_70B): attn_v gets Q5_K over Q3_K and Q4_K


def _category(name: str) -> str:
    """tensor_get_category: the rules' category of a tensor by its name."""
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for part, category in (
        ("attn_qkv.weight", "attn_v"), ("attn_kv_b.weight", "attn_v"), ("attn_v.weight", "attn_v"),
        ("attn_k.weight", "attn_k"), ("attn_q.weight", "attn_q"), ("attn_output.weight", "attn_output"),
        ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"), ("ffn_down", "ffn_down"),
    ):  # fmt: skip
        if part in name:  # attn_qkv and attn_kv_b fall in with attn_v (category_is_attn_v)
            return category
    return "other"


def quantized(tensor: GgufTensor) -> bool:
    """tensor_allows_quantization: llama-quantize re-types only 2-D and 3-D `*weight` tensors, never a
    norm, the router (ffn_gate_inp), a conv1d or the other small ones it names; the rest keep the
    converter's type (f32 for these)."""
    name = tensor.name
    return len(tensor.shape) >= 2 and name.endswith("weight") and not any(part in name for part in _NOT_QUANTIZED)


def layer_of(name: str) -> int:
    """The layer index of a `blk.N.` tensor name, -1 for the others."""
    return int(name.split(".")[1]) if name.startswith("blk.") else -1


def file_order(tensors: list[GgufTensor]) -> list[GgufTensor]:
    """The order llama-quantize visits tensors (llama_model_loader's weights_map, weight_name_comparer):
    by layer (the tensors outside a layer first), then by name. Its counters (i_attention_wv...) count in it."""
    return sorted(tensors, key=lambda t: (layer_of(t.name), t.name))


def _more_bits(i_layer: int, n_layers: int) -> bool:
    """use_more_bits: the first and last eighth of the layers, and every third one between."""
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


class _Counters:
    """quantize_state_impl's counters, advanced as llama_tensor_get_type_impl advances them."""

    def __init__(self, n_attention_wv: int) -> None:
        self.n_attention_wv, self.i_attention_wv = n_attention_wv, 0
        self.i_ffn = {"ffn_down": 0, "ffn_gate": 0, "ffn_up": 0}


def _output_type(ftype: DType, default: DType, row: int) -> DType:
    """output.weight (and token_embd when tied): Q8_0 for a row that is not a whole block, Q5_K for the
    low i-quants, else Q6_K (Q8_0 stays Q8_0)."""
    if row % PACKING[default].block_values:
        return DType.q8_0
    if ftype in _IQ_OUTPUT_Q5K:
        return DType.q5_k
    return DType.q6_k if default != DType.q8_0 else DType.q8_0


def _attn_v_type(ftype: DType, new: DType, model: MixModel, c: _Counters) -> DType:
    gqa4 = model.gqa >= 4
    if ftype == DType.q2_k:
        new = DType.q4_k if gqa4 else DType.q3_k
    elif ftype == DType.q2_k_s and gqa4:
        new = DType.q4_k
    elif ftype == DType.iq3_xxs:
        new = DType.q4_k if gqa4 else DType.iq3_xxs  # an imatrix is there (IQ3_XXS requires one)
    elif ftype == DType.iq3_xs and gqa4:
        new = DType.q4_k
    elif ftype == DType.iq3_m:
        new = DType.q4_k
    elif ftype == DType.q3_k_m:
        new = DType.q5_k if c.i_attention_wv < 2 else DType.q4_k
    elif ftype == DType.q3_k_l:
        new = DType.q5_k
    elif ftype in (DType.iq4_nl, DType.iq4_xs) and gqa4:
        new = DType.q5_k
    elif ftype in (DType.q4_k_m, DType.q5_k_m) and _more_bits(c.i_attention_wv, c.n_attention_wv):
        new = DType.q6_k
    elif ftype == DType.q4_k_s and c.i_attention_wv < 4:
        new = DType.q5_k
    if model.is_70b and new in (DType.q3_k, DType.q4_k):
        new = DType.q5_k
    if model.experts == 8:
        new = DType.q8_0
    c.i_attention_wv += 1
    return new


def _ffn_down_type(ftype: DType, new: DType, i_layer: int, n_layer: int, model: MixModel) -> DType:
    eighth = i_layer < n_layer // 8
    if ftype == DType.q2_k:
        return DType.q3_k
    if ftype == DType.q2_k_s:
        return DType.q4_k if eighth else new
    if ftype == DType.q3_k_m:
        return DType.q5_k if i_layer < n_layer // 16 else DType.q4_k  # not Falcon: always Q4_K past the first 16th
    if ftype == DType.iq3_m and (eighth or (model.experts == 8 and _more_bits(i_layer, n_layer))):
        return DType.q4_k
    if ftype == DType.q3_k_l:
        return DType.q5_k
    if ftype == DType.q4_k_m:
        return DType.q6_k if _more_bits(i_layer, n_layer) else new
    if eighth and ftype in (DType.iq4_nl, DType.iq4_xs):
        return DType.q5_k  # without an imatrix
    if ftype == DType.q5_k_m and _more_bits(i_layer, n_layer):
        return DType.q6_k
    if ftype == DType.q4_k_s and eighth:
        return DType.q5_k
    return new


def _low_iquant_type(ftype: DType, new: DType, category: str, model: MixModel, c: _Counters) -> DType:
    """The IQ1/IQ2 file types' own branch."""
    iq2_sm = ftype == DType.iq2_m
    if category == "attn_v":
        c.i_attention_wv += 1
        return DType.q4_k if model.gqa >= 4 or model.experts >= 4 else DType.iq3_s if iq2_sm else DType.q2_k
    if model.experts == 8 and category == "attn_k":
        return DType.q4_k
    if category == "ffn_down":
        low = c.i_ffn["ffn_down"] < model.layers // 8
        c.i_ffn["ffn_down"] += 1
        return (DType.iq3_s if iq2_sm else DType.q2_k) if low else new
    if category == "attn_output":
        if model.experts == 8:
            return DType.q5_k
        return DType.iq2_xxs if ftype in (DType.iq1_s, DType.iq1_m) else DType.iq3_s if iq2_sm else new
    return new


def _mixed_type(ftype: DType, new: DType, tensor: GgufTensor, tied: bool, model: MixModel, c: _Counters) -> DType:
    """llama_tensor_get_type_impl for one tensor, in file order."""
    category = _category(tensor.name)
    if category == "output" or (tied and category == "token_embd"):
        return _output_type(ftype, new, tensor.shape[0])
    if category == "token_embd":
        if ftype in (DType.iq2_xxs, DType.iq2_xs, DType.iq1_s, DType.iq1_m):
            return DType.q2_k
        if ftype in (DType.iq2_m, DType.iq3_xxs):
            return DType.iq3_s
        return DType.q4_k if ftype in (DType.tq1_0, DType.tq2_0) else new
    if ftype in _IQ_LOW:
        return _low_iquant_type(ftype, new, category, model, c)
    if category == "attn_v":
        return _attn_v_type(ftype, new, model, c)
    if category in ("attn_k", "attn_q"):
        if category == "attn_k" and model.experts == 8:
            return DType.q8_0
        return {DType.iq3_xs: DType.iq3_xxs, DType.iq3_xxs: DType.iq2_s}.get(ftype, new)
    if category in c.i_ffn:
        counter = c.i_ffn[category]
        i_layer = layer_of(tensor.name) if model.experts > 1 else counter  # MoE: the layer in the name
        c.i_ffn[category] += 1
        if category == "ffn_down":
            return _ffn_down_type(ftype, new, i_layer, model.layers, model)
        middle = model.layers // 8 <= i_layer < 7 * model.layers // 8
        return DType.iq3_xxs if ftype == DType.iq3_xs and middle else new
    if category == "attn_output":
        if model.experts == 8:
            return DType.q5_k if ftype in _EIGHT_EXPERT_ATTN_OUTPUT else new
        bumped = {DType.q2_k: DType.q3_k, DType.iq3_xxs: DType.iq3_s, DType.q3_k_m: DType.q4_k, DType.q3_k_l: DType.q5_k}
        return {**bumped, DType.iq3_m: DType.q4_k}.get(ftype, new)
    return new


def _fallback(dtype: DType, row: int) -> DType:
    """tensor_type_fallback: a row that is not a whole number of blocks takes a 32-value type, else f16."""
    if row % PACKING[dtype].block_values == 0:
        return dtype
    other = _FALLBACK.get(dtype, DType.fp16)
    return other if row % PACKING[other].block_values == 0 else DType.fp16


def tensor_types(ftype: DType, tensors: list[GgufTensor], model: MixModel) -> dict[str, DType]:
    """Each tensor's GGUF type in a file of type `ftype` (one of FILE_TYPES), by name: what
    llama-quantize gives it, visiting the tensors in file order; tensors it does not quantize keep f32.

    >>> m = MixModel(layers=8, experts=0, gqa=4, is_70b=False)
    >>> ts = [GgufTensor(f"blk.{i}.attn_v.weight", (4096, 1024)) for i in range(8)]
    >>> [t.value for t in tensor_types(DType.q4_k_m, ts, m).values()]
    ['q6_k', 'q4_k', 'q4_k', 'q6_k', 'q4_k', 'q4_k', 'q6_k', 'q6_k']
    """
    if ftype not in DEFAULT_TYPE:
        raise ValueError(f"{ftype.value} is not a llama-quantize file type")
    ordered = file_order(tensors)
    counters = _Counters(sum(_category(t.name) == "attn_v" for t in ordered))
    tied = not any(t.name == "output.weight" for t in ordered)
    default = DEFAULT_TYPE[ftype]
    types = {}
    for tensor in ordered:
        if not quantized(tensor):
            types[tensor.name] = DType.fp32
            continue
        mixed = _mixed_type(ftype, default, tensor, tied, model, counters)
        types[tensor.name] = _fallback(mixed, tensor.shape[0])
    return types


def tensor_bytes(tensor: GgufTensor, dtype: DType) -> int:
    """A tensor's bytes in `dtype`: its rows, each a whole number of blocks (ggml_row_size)."""
    return tensor.elements // tensor.shape[0] * PACKING[dtype].bytes_for(tensor.shape[0])
