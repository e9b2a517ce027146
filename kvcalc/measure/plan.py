"""What to allocate: the workload shrunk (fewer layers, then a smaller batch) to fit free memory.

Pure: the plan is a smaller ModelSpec and Workload, so every predicted figure still comes from
the core formulas, scaled the same way as the allocation. A hybrid model's state layers are
allocated too (their conv and recurrent states, shapes and dtypes from kvcalc.kvcache.state_layout,
as `size` counts them) and mlp-only layers hold nothing; the timed step reads the KV cache only.
"""

from __future__ import annotations

from kvcalc.base import Frozen
from kvcalc.errors import DoesNotFit, InvalidInput
from kvcalc.kvcache import attention_layers, batch_bytes, kv_dtype, layer_bytes_per_token, layer_caches, tokens_held
from kvcalc.spec import GpuSpec, ModelSpec, Workload
from kvcalc.units import PACKING, DType, format_bytes

MEASURABLE_DTYPES = (DType.fp32, DType.fp16, DType.bf16)


class MeasurePlan(Frozen):
    """The model and workload actually allocated, and why they differ from the request."""

    model: ModelSpec  # truncated to the layers measured
    workload: Workload
    requested_layers: int
    requested_batch: int
    cache_bytes: int  # per rank: the KV cache, what each timed step reads
    state_bytes: int = 0  # per rank: the recurrent state of the batch (hybrid models), allocated, not timed
    scratch_bytes: int  # q, outputs and the repeat_kv reference's materialised K/V for one layer
    notes: list[str]


def truncated(model: ModelSpec, layers: int) -> ModelSpec:
    """The same model with only its first `layers` layers (same kinds, same pattern)."""
    return ModelSpec.model_validate({**model.model_dump(), "layers": layers})


def repeat_kv_scratch_bytes(model: ModelSpec, workload: Workload) -> int:
    """Extra memory of the naive path: one layer's K and V expanded to all H query heads."""
    dtype = kv_dtype(model, workload)
    layer = max(attention_layers(layer_caches(model, workload.tp)), key=lambda c: tokens_held(c, workload))
    groups = model.heads // workload.tp // max(layer.kv_heads, 1)  # query heads per KV head on one rank
    return workload.batch * groups * layer_bytes_per_token(layer, dtype) * tokens_held(layer, workload)


def check_measurable(model: ModelSpec, workload: Workload) -> None:
    """Bad input for measure: a dtype torch cannot hold as is, pipeline stages, or a TP split of the heads that does not divide."""
    if model.compressed is not None:
        raise InvalidInput(f"measure allocates K and V per token: it does not allocate {model.name}'s compressed caches")
    dtype = kv_dtype(model, workload)
    if dtype not in MEASURABLE_DTYPES or PACKING[dtype].block_values != 1:
        raise InvalidInput(f"measure times {', '.join(d.value for d in MEASURABLE_DTYPES)} caches, not {dtype.value}")
    if workload.pp != 1:
        raise InvalidInput("measure allocates whole models or TP shards, not pipeline stages: use --pp 1")
    if not any(model.attention_kinds()):
        raise InvalidInput(f"measure times attention decode: {model.name} has no attention layer")
    layer_caches(model, workload.tp)
    if any(model.state_kinds()):
        batch_bytes(model, workload)  # the state's split by --tp and its dtypes, checked as `size` checks them


def first_attention_layers(model: ModelSpec) -> int:
    """The fewest leading layers that hold an attention layer (a hybrid's pattern may start with state layers)."""
    return next(i for i, kind in enumerate(model.attention_kinds()) if kind is not None) + 1


def plan_measurement(
    model: ModelSpec, workload: Workload, allowed_bytes: int, max_layers: int | None = None, layers_reason: str = "--layers"
) -> MeasurePlan:
    """Fit one rank's cache in `allowed_bytes`: keep the batch and drop layers first, then halve the batch.

    With `workload.tp` > 1 the cache is one tensor-parallel rank's shard, the per-GPU bytes of `fit --tp`.
    """
    check_measurable(model, workload)
    notes: list[str] = []
    fewest = first_attention_layers(model)
    if max_layers is not None and max_layers < fewest:
        raise InvalidInput(f"--layers {max_layers} holds no attention layer of {model.name} to time: give at least {fewest}")
    layers = min(model.layers, max_layers or model.layers)
    if max_layers is not None and max_layers > model.layers:
        notes.append(
            f"--layers {max_layers} is more than the {model.layers} layers of {model.name}: measuring all {model.layers}"
        )
    if layers < model.layers:
        notes.append(f"measuring {layers} of {model.layers} layers ({layers_reason})")
    work = workload

    def need(layers_: int, work_: Workload) -> tuple[int, int, int]:
        """KV cache, state and scratch bytes of the first `layers_` layers."""
        sub = truncated(model, layers_)
        kv = batch_bytes(sub, work_, with_state=False).per_gpu
        return kv, batch_bytes(sub, work_).per_gpu - kv, repeat_kv_scratch_bytes(sub, work_)

    while sum(need(layers, work)) > allowed_bytes and layers > fewest:
        layers = max(fewest, layers // 2)
    while sum(need(layers, work)) > allowed_bytes and work.batch > 1:
        work = work.model_copy(update={"batch": work.batch // 2})
    cache, state, scratch = need(layers, work)
    if cache + state + scratch > allowed_bytes:
        raise DoesNotFit(
            f"{'one layer' if layers == 1 else f'{layers} layers'} of one {workload.seq}-token sequence needs"
            f" {format_bytes(cache + state + scratch)} with scratch, more than the {format_bytes(allowed_bytes)} allowed;"
            " nothing was allocated"
        )
    if layers < min(model.layers, max_layers or model.layers):
        notes.append(
            f"measuring {layers} of {model.layers} layers to fit {format_bytes(allowed_bytes)}; predictions scaled alike"
        )
    if state:
        kinds = sorted({kind for kind in truncated(model, layers).state_kinds() if kind is not None})
        notes.append(
            f"the {format_bytes(state)} recurrent state ({', '.join(kinds)}) is allocated and checked with the KV cache;"
            " the timed step reads the KV cache only (attention layers)"
        )
    if work.batch < workload.batch:
        notes.append(f"batch reduced from {workload.batch} to {work.batch} to fit {format_bytes(allowed_bytes)}")
    return MeasurePlan(
        model=truncated(model, layers),
        workload=work,
        requested_layers=model.layers,
        requested_batch=workload.batch,
        cache_bytes=cache,
        state_bytes=state,
        scratch_bytes=scratch,
        notes=notes,
    )


def plan_variants(
    variants: list[tuple[str, ModelSpec]], workload: Workload, allowed_bytes: int, max_layers: int | None
) -> list[tuple[str, MeasurePlan]]:
    """One plan per variant, all at one shape (the tightest variant's layers and batch) so their times compare."""
    plans = [(name, plan_measurement(model, workload, allowed_bytes, max_layers)) for name, model in variants]
    if len(plans) == 1:
        return plans
    layers = min(plan.model.layers for _, plan in plans)
    common = workload.model_copy(update={"batch": min(plan.workload.batch for _, plan in plans)})
    requested = min(max_layers or layers, *(model.layers for _, model in variants))
    reason = "--layers" if layers == requested else f"so that every variant fits {format_bytes(allowed_bytes)} at one shape"
    return [(name, plan_measurement(model, common, allowed_bytes, layers, reason)) for name, model in variants]


class MeasureRequest(Frozen):
    """What a measure worker process is asked to do (sent to it as JSON on stdin)."""

    variants: list[tuple[str, ModelSpec]]
    workload: Workload  # tp: the number of ranks, one worker each
    device: str
    max_layers: int | None
    max_memory: int | None
    peak: GpuSpec | None
    calibrate: bool = False  # measure --calibrate: the device's streaming bandwidth and overhead per layer, no variant
