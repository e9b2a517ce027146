"""KV-cache bytes: pure functions, exact integers, no I/O.

Everything that needs KV bytes (size, fit, decode, compare, measure) goes through
`layer_caches` (what each layer stores per token) and `tokens_held` (how many tokens it
keeps). Formulas: DESIGN.md section 4.
"""

from __future__ import annotations

from typing import Literal

from kvcalc.base import Frozen
from kvcalc.errors import InvalidInput
from kvcalc.spec import ModelSpec, Workload
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


def layer_caches(model: ModelSpec, tp: int = 1) -> list[LayerCache]:
    """Per-layer cache layout on one rank, in layer order."""
    if model.mla is not None:
        # MLA: one latent (kv_lora_rank) plus the shared rope key per token; replicated on every rank.
        latent = LayerCache(
            kind="mla", window=None, kv_heads=0, k_values=model.mla.kv_lora_rank, v_values=model.mla.qk_rope_head_dim
        )
        kv_heads_per_rank(model, tp)  # still validates the split of the query heads
        return [latent] * model.layers
    heads = kv_heads_per_rank(model, tp)
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


def tokens_held(layer: LayerCache, seq: int, block_size: int | None = None) -> int:
    """Tokens a layer keeps for a sequence of `seq`: min(seq, W) in a window layer, rounded up to
    whole pages of `block_size` tokens when paged.

    >>> lc = LayerCache(kind="sliding", window=4096, kv_heads=8, k_values=1024, v_values=1024)
    >>> tokens_held(lc, 8192), tokens_held(lc, 1000), tokens_held(lc, 1000, block_size=16)
    (4096, 1000, 1008)
    """
    held = min(seq, layer.window) if layer.window is not None else seq
    if block_size is None:
        return held
    return -(-held // block_size) * block_size


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
    """KV bytes of one sequence: on the busiest GPU, and over all GPUs."""

    per_gpu: int
    total: int


def sequence_bytes(model: ModelSpec, workload: Workload, seq: int | None = None) -> SequenceBytes:
    """KV bytes one sequence of `seq` tokens (default: the workload's) holds."""
    seq = workload.seq if seq is None else seq
    dtype = kv_dtype(model, workload)
    per_layer = [
        layer_bytes_per_token(layer, dtype) * tokens_held(layer, seq, workload.block_size)
        for layer in layer_caches(model, workload.tp)
    ]
    per_stage = [sum(per_layer[i] for i in stage) for stage in pipeline_stages(model.layers, workload.pp)]
    return SequenceBytes(per_gpu=max(per_stage), total=sum(per_stage) * workload.tp)


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
    seq: int
    batch: int
    kv_dtype: DType
    tp: int
    pp: int
    block_size: int | None
    groups: list[LayerGroup]
    bytes_per_token: int  # all layers, all ranks, every layer holding the token
    bytes_per_sequence: int
    bytes_per_batch: int
    bytes_per_gpu: int  # the batch, on the busiest GPU
    exact_bytes_per_batch: int  # without page rounding
    paging_waste_bytes: int
    replicated_kv_heads: bool
    explain: list[str]


def estimate_kv(model: ModelSpec, workload: Workload) -> KvEstimate:
    """KV bytes per token, per sequence and per batch, per GPU and in total, with an explanation."""
    dtype = kv_dtype(model, workload)
    caches = layer_caches(model, workload.tp)
    seq_bytes = sequence_bytes(model, workload)
    exact = sequence_bytes(model, workload.model_copy(update={"block_size": None}))
    groups = _group_layers(caches, dtype, workload)
    per_token = workload.tp * sum(layer_bytes_per_token(layer, dtype) for layer in caches)
    return KvEstimate(
        model=model.name,
        seq=workload.seq,
        batch=workload.batch,
        kv_dtype=dtype,
        tp=workload.tp,
        pp=workload.pp,
        block_size=workload.block_size,
        groups=groups,
        bytes_per_token=per_token,
        bytes_per_sequence=seq_bytes.total,
        bytes_per_batch=seq_bytes.total * workload.batch,
        bytes_per_gpu=seq_bytes.per_gpu * workload.batch,
        exact_bytes_per_batch=exact.total * workload.batch,
        paging_waste_bytes=(seq_bytes.total - exact.total) * workload.batch,
        replicated_kv_heads=model.mla is None and workload.tp > model.kv_heads,
        explain=_explain(model, workload, dtype, groups, seq_bytes),
    )


def _group_layers(caches: list[LayerCache], dtype: DType, workload: Workload) -> list[LayerGroup]:
    groups: dict[tuple[str, int | None], list[LayerCache]] = {}
    for layer in caches:
        groups.setdefault((layer.kind, layer.window), []).append(layer)
    result = []
    for layers in groups.values():
        first = layers[0]
        per_token = layer_bytes_per_token(first, dtype)
        held = tokens_held(first, workload.seq, workload.block_size)
        result.append(
            LayerGroup(
                kind=first.kind,
                window=first.window,
                layers=len(layers),
                kv_heads_per_gpu=first.kv_heads,
                values_per_token=first.k_values + first.v_values,
                bytes_per_token_per_layer=per_token,
                tokens_held=held,
                tokens_exact=tokens_held(first, workload.seq),
                bytes_per_sequence=len(layers) * per_token * held * workload.tp,
            )
        )
    return result


def _explain(model: ModelSpec, workload: Workload, dtype: DType, groups: list[LayerGroup], seq_bytes: SequenceBytes) -> list[str]:
    packing = PACKING[dtype]
    if packing.block_values == 1:
        b = f"{packing.block_bytes} B ({dtype.value})"
    else:
        b = f"{packing.block_bytes} B per {packing.block_values} values ({dtype.value}, scales included)"
    lines = [f"b = bytes per element = {b}"]
    for g in groups:
        label = {"full": "full attention", "sliding": f"sliding window W={g.window}", "mla": "MLA latent"}[g.kind]
        if g.kind == "mla" and model.mla is not None:
            formula = f"(kv_lora_rank + qk_rope_head_dim) * b = ({model.mla.kv_lora_rank} + {model.mla.qk_rope_head_dim}) * b"
        else:
            formula = f"(d_k + d_v) * Hkv * b = ({model.key_dim} + {model.value_dim}) * {g.kv_heads_per_gpu} * b"
        lines.append(f"{label}, {g.layers} layers: per token per layer = {formula} = {g.bytes_per_token_per_layer:,} B")
        held = f"min(s, W) = min({workload.seq}, {g.window})" if g.kind == "sliding" else f"s = {workload.seq}"
        if workload.block_size is not None:
            held = f"ceil({held.split(' = ')[-1]} / {workload.block_size}) * {workload.block_size} (paged)"
        lines.append(f"  tokens held = {held} = {g.tokens_held:,}")
        tp = f" * tp {workload.tp}" if workload.tp > 1 else ""
        lines.append(
            f"  per sequence = {g.layers} * {g.bytes_per_token_per_layer:,} * {g.tokens_held:,}{tp}"
            f" = {g.bytes_per_sequence:,} B ({format_bytes(g.bytes_per_sequence)})"
        )
    lines.append(
        f"per batch = B * per sequence = {workload.batch} * {seq_bytes.total:,}"
        f" = {workload.batch * seq_bytes.total:,} B ({format_bytes(workload.batch * seq_bytes.total)})"
    )
    if workload.tp > 1 or workload.pp > 1:
        lines.append(
            f"per GPU (tp {workload.tp}, pp {workload.pp}, busiest stage) = {workload.batch} * {seq_bytes.per_gpu:,}"
            f" = {workload.batch * seq_bytes.per_gpu:,} B"
        )
    return lines
