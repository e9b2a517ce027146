"""Parameters and weight bytes: counted from a model's shapes (or its published count), stored in
its formats, split over pipeline stages and tensor-parallel ranks. Pure functions, integer bytes."""

# no `from __future__ import annotations`: pydantic takes the fields' annotations as objects rather than
# compiling and evaluating each string (start-up, docs/benchmarks.md)

from operator import attrgetter

from kvcalc.base import Frozen
from kvcalc.engines import StageWeights
from kvcalc.errors import InvalidInput
from kvcalc.kvcache import pipeline_stages
from kvcalc.quantization import LinearQuantization, keeps_attention, keeps_shared_experts, skipped_note
from kvcalc.spec import ModelSpec, StoredWeights, Workload
from kvcalc.units import GGUF_MIXES, PACKING, DType, format_bytes


class ParamCount(Frozen):
    """Parameters in total, touched per token (MoE: active experts only), in routed experts, and in
    the embedding table and LM head."""

    total: int
    active: int
    routed_experts: int  # parameters of all routed experts together (0 for dense models)
    from_shapes: bool  # True when counted from the shapes, False when the preset gives it
    embeddings: int = 0  # the input table and an untied LM head (0 when the shapes are not given)


def _attention_params(model: ModelSpec, h: int) -> int:
    if model.mla is not None:
        mla, H = model.mla, model.heads
        qk = mla.qk_nope_head_dim + mla.qk_rope_head_dim
        q = h * mla.q_lora_rank + mla.q_lora_rank + mla.q_lora_rank * H * qk if mla.q_lora_rank else h * H * qk
        kv = h * (mla.kv_lora_rank + mla.qk_rope_head_dim) + mla.kv_lora_rank  # down-projection + latent norm
        kv += mla.kv_lora_rank * H * (mla.qk_nope_head_dim + mla.v_head_dim)  # up-projection to K_nope and V
        return q + kv + H * mla.v_head_dim * h
    # q and o: H heads (q twice as wide with an output gate: query and gate halves); k and v: Hkv heads (GQA)
    return (
        h * model.heads * model.key_dim * (2 if model.attention_output_gate else 1)
        + h * model.kv_heads * (model.key_dim + model.value_dim)
        + model.heads * model.value_dim * h
    )


class LayerParams(Frozen):
    """One layer's parameters: its own (attention, norms, dense MLP or shared experts and router),
    its routed experts, and the routed experts one token touches."""

    own: int
    routed: int
    routed_active: int


def _layer_params(model: ModelSpec) -> list[LayerParams] | None:
    """Each layer's parameters from the shapes (DESIGN.md section 4); None without hidden,
    intermediate and vocab. A hybrid model's state mixers count nothing (see _counts_every_layer)."""
    h, inter = model.hidden, model.intermediate
    if h is None or inter is None or model.vocab is None:
        return None
    matrices = 3 if model.mlp == "gated" else 2  # gate, up, down; or up, down
    attention = _attention_params(model, h)
    moe = model.moe
    expert = matrices * h * moe.expert_intermediate if moe else 0

    def params(attends: bool, routed: bool) -> "LayerParams":
        common = (attention if attends else 0) + 2 * h  # a state layer's own mixer is not counted: hybrids publish params
        if moe is None or not routed:
            return LayerParams(own=common + matrices * h * inter, routed=0, routed_active=0)
        return LayerParams(
            own=common + moe.shared_experts * expert + h * moe.experts,
            routed=moe.experts * expert,
            routed_active=moe.experts_per_token * expert,
        )

    attends = [kind is not None for kind in model.attention_kinds()]
    routed = [moe.is_moe_layer(i) for i in range(model.layers)] if moe else [False] * model.layers
    keys = list(zip(attends, routed, strict=True))
    made = {key: params(*key) for key in set(keys)}  # one value per kind of layer, shared by its layers (frozen)
    return list(map(made.__getitem__, keys))


def _counts_every_layer(model: ModelSpec) -> bool:
    """Whether the shapes give every layer's parameters: not for hybrid models (their state mixers and
    mlp-only blocks are not counted; their published params set the total, the shapes only the split)."""
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
            f"{model.name} is a hybrid model and gives no params: kvcalc counts the parameters of attention layers only,"
            " so its weights are unknown: add its published params (and active_params for a MoE) to its preset, or give"
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


def kept_16_bit(model: ModelSpec, quantization: LinearQuantization) -> tuple[tuple[int, int], str]:
    """((the layers' own parameters a quantized checkpoint keeps 16-bit, all the layers' own parameters),
    what they are): the norms always (no quantizer packs a vector) and MoE routers (vLLM's MoE model files
    mostly build the gate as a ReplicatedLinear with quant_config=None: "Gate always runs at half / full
    precision"), the attention projections and shared experts when the config's skip list names them;
    ((0, 0), '') without the shapes."""
    layers, params = _layer_params(model), count_params(model)
    if layers is None or params is None or model.hidden is None:
        return (0, 0), ""
    h, moe = model.hidden, model.moe
    attends = sum(kind is not None for kind in model.attention_kinds())
    routed = sum(moe.is_moe_layer(i) for i in range(model.layers)) if moe else 0
    kept = h + 2 * h * model.layers + (h * moe.experts * routed if moe else 0)  # final norm, 2 norms a layer, routers
    what = ["norms"] + (["routers"] if moe else [])
    if keeps_attention(quantization):
        kept += attends * _attention_params(model, h)
        what.append("attention")
    if moe and moe.shared_experts and keeps_shared_experts(quantization):
        kept += routed * moe.shared_experts * (3 if model.mlp == "gated" else 2) * h * moe.expert_intermediate
        what.append("shared experts")
    own = params.total - params.routed_experts - params.embeddings
    return (min(kept, own), own), ", ".join(what)


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


def layer_weights(model: ModelSpec, fmt: WeightFormat) -> "LayerWeights":
    """Each layer's weight bytes: exact from a GGUF's tensor infos when known (and no dtype is
    requested); else counted from the shapes in `fmt`, scaled so they sum to `weight_bytes` (a
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
    table = _embedding_table(model)
    own = [PACKING[fmt.dtype].bytes_for(layer.own) for layer in shapes]
    experts = [PACKING[fmt.experts].bytes_for(layer.routed) for layer in shapes]
    embeddings = PACKING[fmt.embeddings].bytes_for(table)
    output = embeddings + PACKING[fmt.dtype].bytes_for(model.hidden)  # the LM head (the table again when tied) + final norm
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
        explain=f"from the shapes in {fmt.label}, scaled to the weights' {total:,} B"
        + (" (the tied table counted again as the output layer, as llama.cpp loads it)" if model.tied_embeddings else ""),
    )
