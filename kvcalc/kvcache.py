"""KV-cache bytes: pure functions, exact integers, no I/O.

Everything that needs KV bytes (size, fit, decode, compare, measure) goes through
`layer_caches` (what each layer stores per token) and `tokens_held` (how many tokens it
keeps), both asking the workload's engine profile (kvcalc.engines) and never naming an engine.
Formulas: DESIGN.md section 4.
"""

from __future__ import annotations

from typing import Literal

from kvcalc import engines
from kvcalc.base import Frozen
from kvcalc.errors import InvalidInput
from kvcalc.spec import Engine, ModelSpec, Workload
from kvcalc.units import PACKING, DType, format_bytes

CacheKind = Literal["full", "sliding", "mla"]


class LayerCache(Frozen):
    """What one layer caches per token on one tensor-parallel rank."""

    kind: CacheKind
    window: int | None
    kv_heads: int  # per rank; 0 for an MLA latent
    k_values: int  # K elements per token (the latent for MLA)
    v_values: int  # V elements per token (the rope key part for MLA)


def kv_heads_per_rank(model: ModelSpec, tp: int) -> int:
    """KV heads each of `tp` ranks holds: Hkv/tp, or one replicated head when tp > Hkv (as vLLM).

    >>> from kvcalc.spec import ModelSpec
    >>> m = ModelSpec(name="x", layers=1, heads=32, kv_heads=8, head_dim=128)
    >>> kv_heads_per_rank(m, 4), kv_heads_per_rank(m, 16)
    (2, 1)
    """
    if model.heads % tp:
        raise InvalidInput(f"--tp {tp} does not divide the {model.heads} attention heads of {model.name}")
    if tp <= model.kv_heads:
        if model.kv_heads % tp:
            raise InvalidInput(f"--tp {tp} does not divide the {model.kv_heads} KV heads of {model.name}")
        return model.kv_heads // tp
    if tp % model.kv_heads:
        raise InvalidInput(f"--tp {tp} is not a multiple of the {model.kv_heads} KV heads of {model.name}")
    return 1  # replicated: each rank keeps one whole KV head


def layer_caches(model: ModelSpec, tp: int = 1, engine: Engine | None = None) -> list[LayerCache]:
    """Per-layer cache layout on one rank, in layer order."""
    engine = engine or Engine()
    storage = engines.profile(engine).mla_storage(engine)
    if model.mla is not None and storage != "decompressed":
        # MLA: one latent (kv_lora_rank) plus the shared rope key per token; replicated on every rank,
        # stored as one K-only row of r + rope, or as K (r) and V (rope).
        rope, rank = model.mla.qk_rope_head_dim, model.mla.kv_lora_rank
        k_only = storage == "k_only"
        latent = LayerCache(
            kind="mla", window=None, kv_heads=0, k_values=rank + rope if k_only else rank, v_values=0 if k_only else rope
        )
        kv_heads_per_rank(model, tp)  # still validates the split of the query heads
        return [latent] * model.layers
    heads = kv_heads_per_rank(model, tp)  # decompressed MLA (transformers 4.x): per-head K and V
    return [
        LayerCache(
            kind=kind,
            window=model.sliding_window if kind == "sliding" else None,
            kv_heads=heads,
            k_values=heads * model.key_dim,  # GQA: Hkv heads, not H
            v_values=heads * model.value_dim,
        )
        for kind in model.layer_kinds()
    ]


def layer_bytes_per_token(layer: LayerCache, dtype: DType) -> int:
    """Bytes one token takes in one layer: a K row plus a V row, each in whole quantization blocks."""
    packing = PACKING[dtype]
    return packing.bytes_for(layer.k_values) + packing.bytes_for(layer.v_values)


def tokens_held(layer: LayerCache, workload: Workload, seq: int | None = None, peak: bool = False) -> int:
    """Tokens a layer keeps per allocation unit (a sequence) at context `seq` (default: the
    workload's), by the workload's engine: textbook min(s, W) in a window layer, rounded up to whole
    pages when paged.

    >>> lc = LayerCache(kind="sliding", window=4096, kv_heads=8, k_values=1024, v_values=1024)
    >>> tokens_held(lc, Workload(seq=8192)), tokens_held(lc, Workload(seq=1000)), tokens_held(lc, Workload(seq=1000, block_size=16))
    (4096, 1000, 1008)
    """
    seq = workload.seq if seq is None else seq
    rules = engines.profile(workload.engine)
    return (rules.peak_tokens_per_unit if peak else rules.tokens_per_unit)(workload, layer.window, seq)


def pipeline_stages(layers: int, pp: int) -> list[range]:
    """Split layer indices into `pp` contiguous stages, the first ones one layer longer."""
    if pp > layers:
        raise InvalidInput(f"--pp {pp} exceeds the model's {layers} layers")
    base, extra = divmod(layers, pp)
    stages, start = [], 0
    for i in range(pp):
        end = start + base + (1 if i < extra else 0)
        stages.append(range(start, end))
        start = end
    return stages


class SequenceBytes(Frozen):
    """KV bytes on the busiest GPU and over all GPUs."""

    per_gpu: int
    total: int


def _over_stages(model: ModelSpec, workload: Workload, per_layer: list[int]) -> SequenceBytes:
    per_stage = [sum(per_layer[i] for i in stage) for stage in pipeline_stages(model.layers, workload.pp)]
    return SequenceBytes(per_gpu=max(per_stage), total=sum(per_stage) * workload.tp)


def sequence_bytes(model: ModelSpec, workload: Workload, seq: int | None = None, peak: bool = False) -> SequenceBytes:
    """KV bytes one allocation unit (a sequence) holds at context `seq` (default: the workload's);
    with `peak`, the most it holds at any moment (transformers right after a long prefill)."""
    dtype = kv_dtype(model, workload)
    per_layer = [
        layer_bytes_per_token(layer, dtype) * tokens_held(layer, workload, seq, peak)
        for layer in layer_caches(model, workload.tp, workload.engine)
    ]
    return _over_stages(model, workload, per_layer)


def batch_bytes(model: ModelSpec, workload: Workload, seq: int | None = None, peak: bool = False) -> SequenceBytes:
    """KV bytes of the whole batch: every allocation unit, plus what does not scale with tokens."""
    rules = engines.profile(workload.engine)
    unit = sequence_bytes(model, workload, seq, peak)
    fixed = _over_stages(
        model, workload, [rules.fixed_bytes(model, workload, kv_dtype(model, workload)) // model.layers] * model.layers
    )
    units = rules.allocation_units(workload)
    return SequenceBytes(per_gpu=units * unit.per_gpu + fixed.per_gpu, total=units * unit.total + fixed.total)


def kv_dtype(model: ModelSpec, workload: Workload) -> DType:
    """The cache dtype: the workload's, else the model's own dtype."""
    return workload.kv_dtype or model.dtype


class LayerGroup(Frozen):
    """Layers that cache alike (same kind and window), with their share of the figures."""

    kind: CacheKind
    window: int | None
    layers: int
    kv_heads_per_gpu: int
    values_per_token: int  # K + V elements per token per layer on one rank
    bytes_per_token_per_layer: int
    tokens_held: int
    tokens_exact: int
    bytes_per_sequence: int  # all layers of the group, all ranks


class KvEstimate(Frozen):
    """KV-cache figures for one model and workload, with the breakdown behind them."""

    model: str
    engine: str
    seq: int
    batch: int
    kv_dtype: DType
    tp: int
    pp: int
    block_size: int | None
    groups: list[LayerGroup]
    bytes_per_token: int  # all layers, all ranks, every layer holding the token
    bytes_per_sequence: int  # one allocation unit: a sequence (llama.cpp unified: the shared buffer)
    allocation_units: int
    bytes_per_batch: int
    bytes_per_gpu: int  # the batch, on the busiest GPU
    exact_bytes_per_batch: int  # the textbook need: no pages, no padding
    paging_waste_bytes: int  # allocated beyond the exact need (pages, padding, engine reservations)
    peak_bytes_per_batch: int  # the most held at any moment (transformers right after a long prefill)
    replicated_kv_heads: bool
    explain: list[str]


def exact_workload(workload: Workload) -> Workload:
    """The textbook twin of a workload: exact bytes, no pages, the same tokens (llama.cpp's n_ctx
    is the tokens of all its sequences together: its twin is one sequence of n_ctx tokens)."""
    batch = engines.profile(workload.engine).exact_batch(workload)
    return workload.model_copy(update={"block_size": None, "engine": Engine(), "batch": batch})


def estimate_kv(model: ModelSpec, workload: Workload) -> KvEstimate:
    """KV bytes per token, per sequence and per batch, per GPU and in total, with an explanation."""
    dtype = kv_dtype(model, workload)
    rules = engines.profile(workload.engine)
    rules.check_supported(model, workload, dtype)
    caches = layer_caches(model, workload.tp, workload.engine)
    unit = sequence_bytes(model, workload)
    batch = batch_bytes(model, workload)
    exact = batch_bytes(model, exact_workload(workload))
    peak = batch_bytes(model, workload, peak=True)
    groups = _group_layers(caches, dtype, workload)
    per_token = workload.tp * sum(layer_bytes_per_token(layer, dtype) for layer in caches)
    return KvEstimate(
        model=model.name,
        engine=workload.engine.name,
        seq=workload.seq,
        batch=workload.batch,
        kv_dtype=dtype,
        tp=workload.tp,
        pp=workload.pp,
        block_size=rules.block_size(workload),
        groups=groups,
        bytes_per_token=per_token,
        bytes_per_sequence=unit.total,
        allocation_units=rules.allocation_units(workload),
        bytes_per_batch=batch.total,
        bytes_per_gpu=batch.per_gpu,
        exact_bytes_per_batch=exact.total,
        paging_waste_bytes=batch.total - exact.total,
        peak_bytes_per_batch=peak.total,
        replicated_kv_heads=model.mla is None and workload.tp > model.kv_heads,
        explain=_explain(model, workload, dtype, groups, unit, batch),
    )


def _group_layers(caches: list[LayerCache], dtype: DType, workload: Workload) -> list[LayerGroup]:
    groups: dict[tuple[str, int | None], list[LayerCache]] = {}
    for layer in caches:
        groups.setdefault((layer.kind, layer.window), []).append(layer)
    result = []
    for layers in groups.values():
        first = layers[0]
        per_token = layer_bytes_per_token(first, dtype)
        held = tokens_held(first, workload)
        result.append(
            LayerGroup(
                kind=first.kind,
                window=first.window,
                layers=len(layers),
                kv_heads_per_gpu=first.kv_heads,
                values_per_token=first.k_values + first.v_values,
                bytes_per_token_per_layer=per_token,
                tokens_held=held,
                tokens_exact=tokens_held(first, exact_workload(workload)),
                bytes_per_sequence=len(layers) * per_token * held * workload.tp,
            )
        )
    return result


def _explain(
    model: ModelSpec, workload: Workload, dtype: DType, groups: list[LayerGroup], unit: SequenceBytes, batch: SequenceBytes
) -> list[str]:
    packing = PACKING[dtype]
    if packing.block_values == 1:
        b = f"{packing.block_bytes} B ({dtype.value})"
    else:
        b = f"{packing.block_bytes} B per {packing.block_values} values ({dtype.value}, scales included)"
    rules = engines.profile(workload.engine)
    lines = model.origin()
    lines += [f"rule: {rule}" for rule in rules.rules(model, workload)]
    lines.append(f"b = bytes per element = {b}")
    for g in groups:
        label = {"full": "full attention", "sliding": f"sliding window W={g.window}", "mla": "MLA latent"}[g.kind]
        if g.kind == "mla" and model.mla is not None:
            formula = f"(kv_lora_rank + qk_rope_head_dim) * b = ({model.mla.kv_lora_rank} + {model.mla.qk_rope_head_dim}) * b"
        else:
            formula = f"(d_k + d_v) * Hkv * b = ({model.key_dim} + {model.value_dim}) * {g.kv_heads_per_gpu} * b"
        lines.append(f"{label}, {g.layers} layers: per token per layer = {formula} = {g.bytes_per_token_per_layer:,} B")
        held = rules.tokens_formula(workload, g.window, g.tokens_exact)
        lines.append(f"  tokens held = {held} = {g.tokens_held:,}")
        tp = f" * tp {workload.tp}" if workload.tp > 1 else ""
        lines.append(
            f"  per sequence = {g.layers} * {g.bytes_per_token_per_layer:,} * {g.tokens_held:,}{tp}"
            f" = {g.bytes_per_sequence:,} B ({format_bytes(g.bytes_per_sequence)})"
        )
    units = rules.allocation_units(workload)
    fixed = batch.total - units * unit.total
    extra = f" + {fixed:,} B of scales" if fixed else ""
    count = "B" if units == workload.batch else "1 shared buffer"
    lines.append(
        f"per batch = {count} * per sequence{extra} = {units} * {unit.total:,}{extra} = {batch.total:,} B ({format_bytes(batch.total)})"
    )
    if workload.tp > 1 or workload.pp > 1:
        lines.append(f"per GPU (tp {workload.tp}, pp {workload.pp}, busiest stage) = {batch.per_gpu:,} B")
    return lines
