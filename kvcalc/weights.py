"""Parameters and weight bytes: counted from a model's shapes (or its published count), stored in
its formats, split over pipeline stages and tensor-parallel ranks. Pure functions, integer bytes."""

# no `from __future__ import annotations`: pydantic takes the fields' annotations as objects rather than
# compiling and evaluating each string (start-up, docs/benchmarks.md)

import math
from collections import Counter
from operator import attrgetter

from kvcalc.base import Frozen
from kvcalc.engines import StageWeights
from kvcalc.errors import InvalidInput
from kvcalc.gguf_mix import FILE_TYPES, QUANT_SOURCE, GgufTensor, MixModel, layer_of, tensor_bytes, tensor_types
from kvcalc.gguf_mix import quantized as gguf_quantized
from kvcalc.kvcache import pipeline_stages
from kvcalc.quantization import (
    LinearQuantization,
    keeps_attention,
    keeps_shared_experts,
    keeps_state_mixers,
    skipped_note,
)
from kvcalc.spec import NO_MIXER, ModelSpec, StoredWeights, Workload
from kvcalc.units import GGUF_MIXES, PACKING, DType, format_bytes


class ParamCount(Frozen):
    """Parameters in total, touched per token (MoE: active experts only), in routed experts, and in
    the embedding table and LM head."""

    total: int
    active: int
    routed_experts: int  # parameters of all routed experts together (0 for dense models)
    from_shapes: bool  # True when counted from the shapes, False when the preset gives it
    embeddings: int = 0  # the input table and an untied LM head (0 when the shapes are not given)


Shape = tuple[str, tuple[int, ...]]  # one tensor of a layer: llama.cpp's name after `blk.N.` and its ggml shape


def _attention_tensors(model: ModelSpec, h: int) -> list[Shape]:
    """An attention layer's projections as llama.cpp names them (ggml shapes: input width first)."""
    if model.mla is not None:
        mla, H = model.mla, model.heads
        qk = mla.qk_nope_head_dim + mla.qk_rope_head_dim
        q: list[Shape] = (
            [("attn_q_a.weight", (h, mla.q_lora_rank)), ("attn_q_a_norm.weight", (mla.q_lora_rank,)),
             ("attn_q_b.weight", (mla.q_lora_rank, H * qk))]
            if mla.q_lora_rank
            else [("attn_q.weight", (h, H * qk))]
        )  # fmt: skip
        return [
            *q,
            ("attn_kv_a_mqa.weight", (h, mla.kv_lora_rank + mla.qk_rope_head_dim)),  # down-projection
            ("attn_kv_a_norm.weight", (mla.kv_lora_rank,)),  # the latent's norm
            ("attn_kv_b.weight", (mla.kv_lora_rank, H * (mla.qk_nope_head_dim + mla.v_head_dim))),  # up to K_nope and V
            ("attn_output.weight", (H * mla.v_head_dim, h)),
        ]
    # q and o: H heads (q twice as wide with an output gate: query and gate halves); k and v: Hkv heads (GQA)
    return [
        ("attn_q.weight", (h, model.heads * model.key_dim * (2 if model.attention_output_gate else 1))),
        ("attn_k.weight", (h, model.kv_heads * model.key_dim)),
        ("attn_v.weight", (h, model.kv_heads * model.value_dim)),
        ("attn_output.weight", (model.heads * model.value_dim, h)),
    ]


def _mixer_tensors(model: ModelSpec, kind: str, h: int) -> list[Shape]:
    """A state layer's own mixer, from the config's shapes, as llama.cpp's tensor lists name it; none for
    the kinds kvcalc does not count (lightning, short_conv, kda: their hybrids publish params).

    Gated DeltaNet (transformers models/qwen3_next/modeling_qwen3_next.py Qwen3NextGatedDeltaNet; Qwen3.5
    splits in_proj_qkvz into in_proj_qkv and in_proj_z, which convert_hf_to_gguf.py maps to attn_qkv and
    attn_gate, gguf-py/gguf/tensor_mapping.py): q, k, v and the output gate z from h, beta and alpha per value
    head, a depthwise conv over q, k and v without bias, dt_bias and A_log per value head, a norm of one value
    head, out_proj. Mamba-2 (modeling_mamba2.py Mamba2Mixer, as NemotronH and GraniteMoeHybrid): in_proj
    to z, x, B, C and dt (2 d_inner + 2 groups N + heads), a conv over x, B and C with bias, dt_bias, A_log
    and D per head, a gated norm of d_inner, out_proj. Mamba-1 (modeling_jamba.py JambaMambaMixer): in_proj to
    x and z, a conv with bias, x_proj to dt, B and C, dt_proj with bias (dt_rank = ceil(h / 16), Jamba's
    mamba_dt_rank), A_log (d_inner x N), D, out_proj, and Jamba's dt, B and C norms.
    """
    spec = model.state
    if kind == "gated_deltanet" and spec and spec.gated_deltanet:
        g = spec.gated_deltanet
        keys, values = g.k_heads * g.k_head_dim, g.v_heads * g.v_head_dim
        conv = 2 * keys + values
        return [
            ("attn_qkv.weight", (h, conv)), ("attn_gate.weight", (h, values)),
            ("ssm_beta.weight", (h, g.v_heads)), ("ssm_alpha.weight", (h, g.v_heads)),
            ("ssm_conv1d.weight", (g.conv_kernel, conv)), ("ssm_dt.bias", (g.v_heads,)), ("ssm_a", (g.v_heads,)),
            ("ssm_norm.weight", (g.v_head_dim,)), ("ssm_out.weight", (values, h)),
        ]  # fmt: skip
    if kind == "mamba2" and spec and spec.mamba2:
        m = spec.mamba2
        inner, bc = m.inner, 2 * m.groups * m.state_size
        return [
            ("ssm_in.weight", (h, 2 * inner + bc + m.heads)),
            ("ssm_conv1d.weight", (m.conv_kernel, inner + bc)), ("ssm_conv1d.bias", (inner + bc,)),
            ("ssm_dt.bias", (m.heads,)), ("ssm_a", (1, m.heads)), ("ssm_d", (1, m.heads)),
            ("ssm_norm.weight", (inner // m.groups, m.groups)), ("ssm_out.weight", (inner, h)),
        ]  # fmt: skip
    if kind == "mamba1" and spec and spec.mamba1:
        m1, rank = spec.mamba1, -(-h // 16)
        inner, n = m1.intermediate, m1.state_size
        return [
            ("ssm_in.weight", (h, 2 * inner)),
            ("ssm_conv1d.weight", (m1.conv_kernel, inner)), ("ssm_conv1d.bias", (inner,)),
            ("ssm_x.weight", (inner, rank + 2 * n)), ("ssm_dt.weight", (rank, inner)), ("ssm_dt.bias", (inner,)),
            ("ssm_a", (n, inner)), ("ssm_d", (inner,)), ("ssm_out.weight", (inner, h)),
            ("ssm_dt_norm.weight", (rank,)), ("ssm_b_norm.weight", (n,)), ("ssm_c_norm.weight", (n,)),
        ]  # fmt: skip
    return []


def _mlp_tensors(model: ModelSpec, h: int, inter: int, routed: bool) -> list[Shape]:
    """A dense MLP (gate, up, down; or up, down), or a MoE layer's router, shared experts and routed
    experts (the `_exps` tensors, each all experts' matrices stacked)."""
    gated = model.mlp == "gated"
    moe = model.moe
    if moe is None or not routed:
        return [
            *([("ffn_gate.weight", (h, inter))] if gated else []),
            ("ffn_up.weight", (h, inter)),
            ("ffn_down.weight", (inter, h)),
        ]
    shared, width, e = moe.shared_experts * moe.expert_intermediate, moe.expert_intermediate, moe.experts
    tensors: list[Shape] = [("ffn_gate_inp.weight", (h, e))]
    if shared:
        tensors += [*([("ffn_gate_shexp.weight", (h, shared))] if gated else []), ("ffn_up_shexp.weight", (h, shared)),
                    ("ffn_down_shexp.weight", (shared, h))]  # fmt: skip
    return tensors + [*([("ffn_gate_exps.weight", (h, width, e))] if gated else []), ("ffn_up_exps.weight", (h, width, e)),
                      ("ffn_down_exps.weight", (width, h, e))]  # fmt: skip


def _is_routed(name: str) -> bool:
    return "_exps." in name


class LayerParams(Frozen):
    """One layer's parameters: its own (attention or state mixer, norms, dense MLP or shared experts and
    router), its routed experts, and the routed experts one token touches; and the tensors they sum."""

    own: int
    routed: int
    routed_active: int
    tensors: tuple[Shape, ...]


def _layer_params(model: ModelSpec) -> list[LayerParams] | None:
    """Each layer's parameters from the shapes (DESIGN.md section 4), summed over its tensors; None
    without hidden, intermediate and vocab. A layer holds its attention and/or state mixer, two norms and
    its MLP; a model whose pattern names mlp blocks (Nemotron-H's `-`) holds one of the three per block,
    with one norm (transformers modeling_nemotron_h.py NemotronHBlock: a norm and one mixer)."""
    h, inter = model.hidden, model.intermediate
    if h is None or inter is None or model.vocab is None:
        return None
    attention = _attention_tensors(model, h)
    blocks = NO_MIXER in (model.layer_pattern or [])
    moe = model.moe

    def params(attends: bool, state: str | None, routed: bool) -> "LayerParams":
        mixer = [*(attention if attends else []), *(_mixer_tensors(model, state, h) if state else [])]
        mlp = _mlp_tensors(model, h, inter, routed) if not (blocks and (attends or state)) else []
        norms: list[Shape] = [("attn_norm.weight", (h,))] + ([] if blocks else [("ffn_norm.weight", (h,))])
        tensors = (*norms, *mixer, *mlp)
        counts = [(_is_routed(name), math.prod(shape)) for name, shape in tensors]
        routed_count = sum(n for is_routed, n in counts if is_routed)
        per_token = routed_count // moe.experts * moe.experts_per_token if moe and routed_count else 0
        return LayerParams(
            own=sum(n for is_routed, n in counts if not is_routed), routed=routed_count, routed_active=per_token, tensors=tensors
        )

    attends = [kind is not None for kind in model.attention_kinds()]
    routed = [moe.is_moe_layer(i) for i in range(model.layers)] if moe else [False] * model.layers
    keys = list(zip(attends, model.state_kinds(), routed, strict=True))
    made = {key: params(*key) for key in set(keys)}  # one value per kind of layer, shared by its layers (frozen)
    return list(map(made.__getitem__, keys))


def _counts_every_layer(model: ModelSpec) -> bool:
    """Whether the shapes set the total: not for hybrid models, whose published params do (the shapes
    only split it; _mixer_tensors counts Gated DeltaNet and Mamba mixers, not every kind, and
    docs/placement.md compares the counts with the published totals)."""
    return None not in model.attention_kinds() and not any(model.state_kinds())


def _embedding_table(model: ModelSpec) -> int:
    """Parameters of the input embedding table (as many again in an untied LM head)."""
    return (model.vocab or 0) * (model.hidden or 0)


def mtp_params(model: ModelSpec) -> ParamCount | None:
    """The parameters of the model's multi-token prediction layers: each a decoder layer like its
    last (attention, MLP or experts), plus eh_proj (2h x h) and its norms enorm, hnorm and the shared
    head's (3h); the embedding table and LM head are the target's, shared (vllm/model_executor/
    models/deepseek_mtp.py, qwen3_next_mtp.py; vllm/v1/spec_decode/eagle.py shares them). None without
    the shapes, or when the last layer is not an attention layer without state (the only kind counted
    in a hybrid: Qwen3.5's MTP layer is a full-attention layer, like its last)."""
    layers = _layer_params(model)
    if layers is None or model.hidden is None or not model.mtp_layers:
        return None
    if model.attention_kinds()[-1] is None or model.state_kinds()[-1] is not None:
        return None
    last, h, n = layers[-1], model.hidden, model.mtp_layers
    own = n * (last.own + 2 * h * h + 3 * h)
    return ParamCount(
        total=own + n * last.routed, active=own + n * last.routed_active, routed_experts=n * last.routed, from_shapes=True
    )


def count_params(model: ModelSpec) -> ParamCount | None:
    """Parameters from the shapes (DESIGN.md section 4), or the preset's published count when given.

    Returns None when the model has neither `params` nor hidden/intermediate/vocab.
    """
    layers = _layer_params(model)
    if model.params is None and not _counts_every_layer(model):
        return None
    if layers is None or model.hidden is None:
        if model.params is None:
            return None
        return ParamCount(total=model.params, active=model.active_params or model.params, routed_experts=0, from_shapes=False)
    embeddings = _embedding_table(model) * (1 if model.tied_embeddings else 2)  # input table + untied LM head
    base = embeddings + model.hidden + sum(map(attrgetter("own"), layers))  # + final norm
    routed = sum(map(attrgetter("routed"), layers))
    total = base + routed
    active = base + sum(map(attrgetter("routed_active"), layers))
    if model.params is not None and model.params < embeddings + routed:
        raise InvalidInput(
            f"{model.name}: params {model.params:,} is less than its embeddings and routed experts"
            f" ({embeddings + routed:,}, from vocab, hidden and moe); fix params or the shapes"
        )
    if model.params is not None:  # a published count wins; scale the split to it
        active = model.active_params or active + (model.params - total)
        total = model.params
    return ParamCount(total=total, active=active, routed_experts=routed, from_shapes=model.params is None, embeddings=embeddings)


def unknown_weights(model: ModelSpec) -> str:
    """Why the model's weights are unknown, and the fix."""
    if not _counts_every_layer(model):
        return (
            f"{model.name} is a hybrid model and gives no params: kvcalc takes a hybrid's total from its published count,"
            " not its shapes, so its weights are unknown: add its published params (and active_params for a MoE) to its preset, or give"
            " --params (and --active-params)"
        )
    if model.compressed is not None:
        return (
            f"{model.name} gives no params: kvcalc does not count DeepSeek-V4's weights from its shapes (grouped low-rank"
            " output, hyper-connections, compressors), so its weights are unknown: give --params (and --active-params)"
        )
    source = model.source or ""
    config = source.split("config.json at ", 1)[1] if "config.json at " in source else None  # name the file, not its folder
    fix = (
        f"add hidden_size, intermediate_size and vocab_size to {config}"
        if config
        else "add params (or those three) to its preset"
    )
    return f"{model.name} gives neither params nor hidden, intermediate and vocab, so its weights are unknown: {fix}"


def require_params(model: ModelSpec) -> "ParamCount":
    """The parameter count, or an error saying the weights are unknown."""
    params = count_params(model)
    if params is None:
        raise InvalidInput(unknown_weights(model))
    return params


def per_gpu(total_bytes: int, gpus: int) -> int:
    """One GPU's share of bytes split over `gpus`, rounded up."""
    return -(-total_bytes // gpus)


class WeightFormat(Frozen):
    """How the weights are stored: `dtype` for the layers' matrices, `embeddings` for the embedding
    table and LM head (quantized checkpoints keep them 16-bit), `experts` for a MoE's routed experts."""

    dtype: DType
    embeddings: DType
    experts: DType
    stored: StoredWeights | None = (
        None  # the checkpoint's exact bytes (a GGUF's or safetensors' headers), when no dtype is requested
    )
    quantization: LinearQuantization | None = None  # the checkpoint's integer-quantized layers, when no dtype is requested
    # with it: (the layers' own parameters it keeps 16-bit, all the layers' own parameters), see kept_16_bit
    kept: tuple[int, int] = (0, 0)
    kept_what: str = ""  # what those are, for --explain

    def other_than_layers(self, dtype: DType) -> DType | None:
        """`dtype` when it differs from the layers', else None (the JSON names only what differs)."""
        return dtype if dtype != self.dtype else None

    @property
    def label(self) -> str:
        if self.stored is not None:
            return ", ".join(self.stored.types) + " (as stored)"
        if self.quantization is not None:
            return f"{self.quantization.label}, embeddings {self.embeddings.value}"
        parts = (("embeddings", self.embeddings), ("experts", self.experts))
        return ", ".join([self.dtype.value, *(f"{part} {dtype.value}" for part, dtype in parts if dtype != self.dtype)])


def weight_format(model: ModelSpec, requested: DType | None = None) -> "WeightFormat":
    """The requested dtype for every weight, else the checkpoint's: `weight_dtype` (or `dtype`) for
    the layers, `embeddings_dtype` (or `dtype`) for the embeddings, and the routed experts' own
    `moe.expert_dtype` if given."""
    if requested is not None:
        return WeightFormat(dtype=requested, embeddings=requested, experts=requested)
    quantization = model.quantization
    layers = model.weight_dtype or (quantization.dtype if quantization else model.dtype)
    experts = (model.moe.expert_dtype if model.moe else None) or layers
    kept, kept_what = kept_16_bit(model, quantization) if quantization else ((0, 0), "")
    return WeightFormat(
        dtype=layers,
        embeddings=model.embeddings_dtype or model.dtype,
        experts=experts,
        stored=model.stored_weights,
        quantization=quantization,
        kept=kept,
        kept_what=kept_what,
    )


_KEPT_ORDER = ("norms and convs", "routers", "attention", "state mixers", "shared experts")


def _kept_part(name: str, shape: tuple[int, ...], layer: int, quantization: LinearQuantization) -> str | None:
    """Which part a checkpoint keeps 16-bit a tensor (llama.cpp's name) of layer `layer` belongs to, None when
    quantized: what llama-quantize keeps too (gguf_mix.quantized: vectors, norms, convs), MoE routers among them
    (vLLM's MoE model files mostly build the gate as a ReplicatedLinear with quant_config=None: "Gate always
    runs at half / full precision"); attention, a hybrid's state mixers and shared experts when the config's
    skip list names them for this layer or every layer."""
    if not gguf_quantized(GgufTensor(f"blk.{layer}.{name}", shape)):
        return "routers" if name.startswith("ffn_gate_inp") else "norms and convs"
    mixer = name.startswith(("ssm_", "attn_qkv.", "attn_gate."))  # Gated DeltaNet / Mamba projections
    if mixer:
        return "state mixers" if keeps_state_mixers(quantization, layer) else None
    if name.startswith("attn_"):
        return "attention" if keeps_attention(quantization, layer) else None
    if "_shexp" in name:
        return "shared experts" if keeps_shared_experts(quantization, layer) else None
    return None


def kept_16_bit(model: ModelSpec, quantization: LinearQuantization) -> tuple[tuple[int, int], str]:
    """((the layers' own parameters a quantized checkpoint keeps 16-bit, the layers' own parameters), what
    they are), counted over the shapes' tensors (_kept_part) and the final norm; ((0, 0), '') without the
    shapes. The share applies to the layers' own count (a hybrid's published count, a stage's share)."""
    layers = _layer_params(model)
    if layers is None or model.hidden is None:
        return (0, 0), ""
    kept = own = model.hidden  # the final norm
    parts: set[str] = {"norms and convs"}
    for index, layer in enumerate(layers):
        for name, shape in layer.tensors:
            if _is_routed(name):
                continue
            count = math.prod(shape)
            own += count
            part = _kept_part(name, shape, index, quantization)
            if part is not None:
                kept += count
                parts.add(part)
    return (kept, own), ", ".join(part for part in _KEPT_ORDER if part in parts)


def _quantized(fmt: WeightFormat, dtype: DType) -> LinearQuantization | None:
    """The checkpoint's quantization when a part stored as `dtype` is in it (its layers and experts)."""
    return fmt.quantization if fmt.quantization is not None and dtype == fmt.quantization.dtype else None


def quantized_params(params: ParamCount, fmt: WeightFormat) -> int:
    """The parameters stored in the checkpoint's integer quantization (its layers' and experts'), 0 without one."""
    return sum(count for _, count, dtype in _weight_parts(params, fmt) if _quantized(fmt, dtype))


def _weight_parts(params: ParamCount, fmt: WeightFormat) -> list[tuple[str, int, DType]]:
    """(what, parameters, dtype) of each part stored alike, parts of one dtype merged: the layers'
    own parameters (less what a quantized checkpoint keeps 16-bit, pro rata for a stage: kept_16_bit),
    the embedding table and LM head, the routed experts."""
    own = params.total - params.routed_experts - params.embeddings
    kept, of = fmt.kept
    kept = own * kept // of if of else 0  # a stage's share of what the checkpoint keeps 16-bit
    parts: dict[DType, tuple[str, int]] = {}
    sixteen = f"16-bit params (embeddings, LM head, {fmt.kept_what})" if kept else "embedding params"
    for what, count, dtype in (("params", own - kept, fmt.dtype), (sixteen, kept, fmt.embeddings),
                               (sixteen, params.embeddings, fmt.embeddings),
                               ("expert params", params.routed_experts, fmt.experts)):  # fmt: skip
        if count:
            label, merged = parts.get(dtype, (what, 0))
            parts[dtype] = (label, merged + count)
    return [(what, count, dtype) for dtype, (what, count) in parts.items()]


def weight_bytes(params: ParamCount, fmt: WeightFormat) -> int:
    """Bytes of the weights stored as `fmt` (block formats include their scales); a checkpoint's own
    stored bytes when known: exact for all of it, pro rata for a part (a stage, the experts one step reads)."""
    if fmt.stored is not None:
        return -(-fmt.stored.bytes * params.total // fmt.stored.params)
    return sum(_part_bytes(count, dtype, fmt) for _, count, dtype in _weight_parts(params, fmt))


def _part_bytes(count: int, dtype: DType, fmt: WeightFormat) -> int:
    """Bytes of `count` parameters stored as `dtype`: the quantization's exact groups, else the dtype's packing."""
    quantization = _quantized(fmt, dtype)
    return quantization.stored_bytes(count) if quantization else PACKING[dtype].bytes_for(count)


def _part_label(dtype: DType, fmt: WeightFormat) -> str:
    quantization = _quantized(fmt, dtype)
    return quantization.label if quantization else dtype.value


def weights_formula(params: ParamCount, fmt: WeightFormat) -> str:
    """`weight_bytes`'s sum in words, for --explain (in parentheses when it has several terms)."""
    if fmt.stored is not None:
        share = "" if params.total == fmt.stored.params else f" * {params.total:,} / {fmt.stored.params:,} params"
        return f"{fmt.stored.bytes:,} B as stored (each tensor in its own type){share}"
    parts = _weight_parts(params, fmt)
    terms = [f"{count:,} {what} * {_part_label(dtype, fmt)}" for what, count, dtype in parts]
    formula = terms[0] if len(terms) == 1 else "(" + " + ".join(terms) + ")"
    if fmt.quantization is not None:
        q = fmt.quantization
        zeros = f" + {q.stored_zero_bits()}-bit zero point" if q.stored_zero_bits() else ""
        group = (
            f"per {q.group_size:,} values: {q.bits}-bit values + {q.scale_bits:,} bits of scales{zeros}"
            if q.group_size
            else f"{q.bits}-bit values, one scale per output channel (not counted)"
        )
        formula += f" [{q.label} as stored: {group}{', ' + skipped_note(q) if q.skipped else ''}]"
    mixes = [
        f"{dtype.value} is llama-quantize's typical mix ({GGUF_MIXES[dtype][0]})" for _, _, dtype in parts if dtype in GGUF_MIXES
    ]
    if mixes:  # a file type names a mix of tensor types whose bytes depend on the model's shapes
        formula += f" [{'; '.join(mixes)}, scaled to these params; a GGUF file gives exact bytes]"
    return formula


MTP_LOADING = (
    "the checkpoint stores them beside the model's layers and engines serve without them unless speculative decoding"
    " drafts with them: vLLM's main model skips them (vllm/model_executor/models/deepseek_v2.py load_weights: 'skip spec"
    " decode layers for main model'; qwen3_next.py and glm4_moe.py alike) and loads them only with --speculative-config"
    " method mtp (kvcalc --speculative-model mtp); SGLang's main model skips every layer at or past"
    " num_hidden_layers (python/sglang/srt/models/deepseek_v2.py load_weights, not is_nextn) and its NextN draft"
    " (deepseek_nextn.py) loads them; llama.cpp creates them as 'NextN/MTP tensors (preserved but unused)'"
    " (src/llama-model.cpp)"
)


class MtpWeights(Frozen):
    """The multi-token prediction layers a checkpoint stores beside the model's: not in the weights an
    engine serves with, unless it drafts with them (MTP_LOADING)."""

    layers: int
    params: ParamCount | None  # None: not counted (a hybrid's shapes, or no shapes)
    bytes: int | None  # None: not counted, or inside a checkpoint's stored bytes
    formula: str
    source: str = MTP_LOADING


def stored_mtp(model: ModelSpec, fmt: WeightFormat) -> "MtpWeights | None":
    """The model's MTP layers as the checkpoint stores them (mtp_params in `fmt`), None when it has none.
    Bytes read from a checkpoint's files (fmt.stored) hold them where its files do (a GGUF conversion may drop them)."""
    if not model.mtp_layers:
        return None
    n = model.mtp_layers
    params = mtp_params(model)
    if fmt.stored is not None:
        return MtpWeights(
            layers=n, params=params, bytes=None, formula="in the stored bytes above where the checkpoint's files hold them"
        )
    if params is None:
        return MtpWeights(layers=n, params=None, bytes=None, formula="not counted: the shapes do not give its layers")
    formula = (
        f"{n} x (a decoder layer like the last + eh_proj 2h*h + 3 norms), embedding table and LM head shared with the"
        f" model's (a DeepSeek checkpoint also stores copies of both for it): {weights_formula(params, fmt)}"
    )
    return MtpWeights(layers=n, params=params, bytes=weight_bytes(params, fmt), formula=formula)


class StageParams(Frozen):
    """Parameters one pipeline stage holds: its layers' own (the last stage's with the final norm),
    their routed experts, and its share of the embeddings (the table on the first stage, the LM head
    on the last)."""

    first_layer: int
    last_layer: int
    own: int
    experts: int
    embeddings: int

    def count(self) -> "ParamCount":
        """The stage's parameters as a count that weight_bytes and weights_formula read."""
        total = self.own + self.experts + self.embeddings
        return ParamCount(total=total, active=total, routed_experts=self.experts, from_shapes=True, embeddings=self.embeddings)


def stage_params(model: ModelSpec, params: ParamCount, pp: int) -> list[StageParams]:
    """The parameters each of `pp` pipeline stages holds. Each holds its layers; the first also the
    embedding table, the last the final norm and the LM head, which is a copy of the table when the
    embeddings are tied and the stages differ (vllm/model_executor/models/llama.py LlamaModel: the
    last rank builds embed_tokens for a tied head). The layers' own parameters (the published count
    less the experts and embeddings) are shared in proportion to their shapes, evenly when the
    preset gives none; one stage holds the whole count.

    >>> from kvcalc.spec import ModelSpec
    >>> m = ModelSpec(name="x", layers=3, heads=1, kv_heads=1, head_dim=2, hidden=2, intermediate=1, vocab=10)
    >>> [(s.own, s.embeddings) for s in stage_params(m, count_params(m), 2)]
    [(52, 20), (28, 20)]
    """
    stages = pipeline_stages(model.layers, pp)
    layers = _layer_params(model)
    own_total = params.total - params.routed_experts - params.embeddings
    weight = [layer.own for layer in layers] if layers else [1] * model.layers  # evenly without shapes
    final_norm = (model.hidden or 0) if layers else 0
    table = _embedding_table(model) if params.embeddings else 0
    whole = sum(weight) + final_norm
    result = []
    for i, stage in enumerate(stages):
        first, last = i == 0, i == len(stages) - 1
        share = sum(weight[j] for j in stage) + (final_norm if last else 0)
        head = table if last and (not model.tied_embeddings or not first) else 0
        result.append(
            StageParams(
                first_layer=stage.start,
                last_layer=stage.stop - 1,
                own=-(-own_total * share // whole),
                experts=sum(layers[j].routed for j in stage) if layers else 0,
                embeddings=(table if first else 0) + head,
            )
        )
    return result


def _quantized_share(params: ParamCount, fmt: WeightFormat, tp: int) -> tuple[int, int]:
    """One GPU's share of the parameters in the checkpoint's quantization: (layers', routed experts')."""
    if fmt.quantization is None or fmt.stored is not None:
        return 0, 0
    experts = params.routed_experts if _quantized(fmt, fmt.experts) else 0
    return per_gpu(quantized_params(params, fmt) - experts, tp), per_gpu(experts, tp)


def stage_weights(model: ModelSpec, workload: Workload, params: ParamCount, fmt: WeightFormat) -> list[StageWeights]:
    """The weights one GPU of each pipeline stage holds (its stage's, split over tp), with their
    --explain lines."""
    tp, pp = workload.tp, workload.pp
    experts = fmt.experts if model.moe and fmt.stored is None else None
    quantization = fmt.quantization if fmt.stored is None else None
    if pp == 1:
        weights = per_gpu(weight_bytes(params, fmt), tp)
        line = f"weights = {weights_formula(params, fmt)} / (tp {tp} * pp {pp}) = {weights:,} B ({format_bytes(weights)}) per GPU"
        return [
            StageWeights(
                stage=0,
                first_layer=0,
                last_layer=model.layers - 1,
                weights_bytes=weights,
                explain=[line],
                experts=experts,
                quantization=quantization,
                quantized_params=_quantized_share(params, fmt, tp),
            )
        ]
    holds = "its layers; the first also the embedding table, the last the final norm and LM head (a copy of the table when tied)"
    if not params.embeddings:
        holds = "its layers' share of the published count (the preset gives no shapes to place the embeddings)"
    stages = stage_params(model, params, pp)
    split = (
        f"pipeline stages of {'/'.join(str(s.last_layer - s.first_layer + 1) for s in stages)} layers: each holds {holds}"
        " (vllm/model_executor/models/llama.py)"
    )
    result = []
    for i, stage in enumerate(stages):
        weights = per_gpu(weight_bytes(stage.count(), fmt), tp)
        line = (
            f"weights = stage {i + 1} of {pp} (layers {stage.first_layer}-{stage.last_layer}):"
            f" {weights_formula(stage.count(), fmt)} / tp {tp} = {weights:,} B ({format_bytes(weights)}) per GPU"
        )
        result.append(
            StageWeights(
                stage=i,
                first_layer=stage.first_layer,
                last_layer=stage.last_layer,
                weights_bytes=weights,
                explain=[split, line],
                experts=experts,
                quantization=quantization,
                quantized_params=_quantized_share(stage.count(), fmt, tp),
            )
        )
    return result


def activation_dtype(model: ModelSpec, fmt: WeightFormat) -> DType:
    """The dtype a forward pass computes in: the weights' when they are a 16- or 32-bit float, else
    the model's when it is one, else bf16 (quantized checkpoints compute in 16 bits)."""
    floats = (DType.fp32, DType.fp16, DType.bf16)
    return fmt.dtype if fmt.dtype in floats else model.dtype if model.dtype in floats else DType.bf16


class LayerWeights(Frozen):
    """Where a model's weight bytes sit layer by layer, as llama.cpp places them: each layer's own
    bytes (attention, norms, dense MLP or shared experts, router), its routed experts apart (what
    --n-cpu-moe moves), the input embedding table (always in host memory) and the output layer
    (output norm and LM head; a copy of the table when tied)."""

    layers: list[int]
    experts: list[int]
    embeddings: int
    output: int
    exact: bool  # True: summed from a GGUF's tensor infos; False: from the shapes and formats
    explain: str


def _mix_bytes(model: ModelSpec, shapes: list[LayerParams], ftype: DType) -> tuple[list[int], list[int], int, int, str]:
    """Each layer's own and routed-expert bytes, the input table's and the output layer's, with every
    tensor in the type llama-quantize's `ftype` gives it (kvcalc.gguf_mix), and the types used."""
    h, vocab = model.hidden or 0, model.vocab or 0
    layers = [GgufTensor(f"blk.{i}.{name}", shape) for i, layer in enumerate(shapes) for name, shape in layer.tensors]
    table, norm = GgufTensor("token_embd.weight", (h, vocab)), GgufTensor("output_norm.weight", (h,))
    head = table if model.tied_embeddings else GgufTensor("output.weight", (h, vocab))  # llama.cpp loads a tied table twice
    facts = MixModel(
        layers=model.layers,
        experts=model.moe.experts if model.moe else 0,
        gqa=model.heads // model.kv_heads,
        is_70b=model.layers == 80 and model.kv_heads < model.heads,  # src/llama-model.cpp: 80 GQA layers are LLM_TYPE_70B
    )
    types = tensor_types(ftype, [*layers, table, norm, *([] if model.tied_embeddings else [head])], facts)
    own, experts = [0] * model.layers, [0] * model.layers
    for tensor in layers:
        (experts if _is_routed(tensor.name) else own)[layer_of(tensor.name)] += tensor_bytes(tensor, types[tensor.name])
    output = tensor_bytes(head, types[head.name]) + tensor_bytes(norm, types[norm.name])
    counts = Counter(types.values())
    used = ", ".join(f"{n} {dtype.value}" for dtype, n in counts.most_common())
    return own, experts, tensor_bytes(table, types[table.name]), output, f"tensors: {used}"


def layer_weights(model: ModelSpec, fmt: WeightFormat) -> "LayerWeights":
    """Each layer's weight bytes: exact from a GGUF's tensor infos when known (and no dtype is
    requested); else counted from the shapes in `fmt` (each tensor in the type llama-quantize gives it
    when `fmt` names a GGUF file type: kvcalc.gguf_mix), scaled so they sum to `weight_bytes` (a
    published count or a checkpoint's stored bytes); evenly over the layers when the model gives no
    shapes (then nothing is counted for the embeddings and output layer).

    >>> m = ModelSpec(name="x", layers=2, heads=1, kv_heads=1, head_dim=2, hidden=2, intermediate=1, vocab=10, dtype="fp16")
    >>> w = layer_weights(m, weight_format(m))
    >>> w.layers, w.embeddings, w.output
    ([52, 52], 40, 44)
    """
    stored = fmt.stored
    if stored is not None and stored.layer_bytes is not None and len(stored.layer_bytes) == model.layers:
        return LayerWeights(
            layers=list(stored.layer_bytes),
            experts=list(stored.expert_bytes or [0] * model.layers),
            embeddings=stored.embedding_bytes or 0,
            output=stored.output_bytes or 0,
            exact=True,
            explain="per tensor from the GGUF's tensor infos (blk.N.*, their ffn_*_exps apart, token_embd, output)",
        )
    params = require_params(model)
    total = weight_bytes(params, fmt)
    shapes = _layer_params(model)
    if shapes is None or model.hidden is None:
        share = total // model.layers
        layers = [share] * model.layers
        layers[-1] += total - share * model.layers
        return LayerWeights(
            layers=layers, experts=[0] * model.layers, embeddings=0, output=0, exact=False,
            explain=f"{total:,} B spread evenly over {model.layers} layers (the model gives no shapes)",
        )  # fmt: skip
    mixed = fmt.dtype in FILE_TYPES and fmt.dtype == fmt.experts == fmt.embeddings
    if mixed:
        own, experts, embeddings, output, kinds = _mix_bytes(model, shapes, fmt.dtype)
        how = f"per tensor in {fmt.dtype.value}'s mix ({kinds}; {QUANT_SOURCE})"
    else:
        own = [PACKING[fmt.dtype].bytes_for(layer.own) for layer in shapes]
        experts = [PACKING[fmt.experts].bytes_for(layer.routed) for layer in shapes]
        embeddings = PACKING[fmt.embeddings].bytes_for(_embedding_table(model))
        output = embeddings + PACKING[fmt.dtype].bytes_for(model.hidden)  # the LM head (the table again when tied) + final norm
        how = f"from the shapes in {fmt.label}"
    counted = sum(own) + sum(experts) + embeddings + (0 if model.tied_embeddings else output)
    scale = [total, counted]  # a published count or stored bytes set the total; the shapes the split

    def scaled(n: int) -> int:
        return n * scale[0] // scale[1]

    return LayerWeights(
        layers=[scaled(n) for n in own],
        experts=[scaled(n) for n in experts],
        embeddings=scaled(embeddings),
        output=scaled(output),
        exact=False,
        explain=f"{how}, scaled to the weights' {total:,} B"
        + (" (the tied table counted again as the output layer, as llama.cpp loads it)" if model.tied_embeddings else ""),
    )
