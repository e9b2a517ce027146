"""What to allocate: the workload shrunk (fewer layers, then a smaller batch) to fit free memory.

Pure: the plan is a smaller ModelSpec and Workload, so every predicted figure still comes from
the core formulas, scaled the same way as the allocation.
"""

from __future__ import annotations

from kvcalc.base import Frozen
from kvcalc.errors import DoesNotFit, InvalidInput
from kvcalc.kvcache import batch_bytes, kv_dtype, layer_bytes_per_token, layer_caches, tokens_held
from kvcalc.spec import ModelSpec, Workload
from kvcalc.units import PACKING, DType, format_bytes

MEASURABLE_DTYPES = (DType.fp32, DType.fp16, DType.bf16)


class MeasurePlan(Frozen):
    """The model and workload actually allocated, and why they differ from the request."""

    model: ModelSpec  # truncated to the layers measured
    workload: Workload
    requested_layers: int
    requested_batch: int
    cache_bytes: int
    scratch_bytes: int  # q, outputs and the repeat_kv reference's materialised K/V for one layer
    notes: list[str]


def truncated(model: ModelSpec, layers: int) -> ModelSpec:
    """The same model with only its first `layers` layers (same kinds, same pattern)."""
    return ModelSpec.model_validate({**model.model_dump(), "layers": layers})


def repeat_kv_scratch_bytes(model: ModelSpec, workload: Workload) -> int:
    """Extra memory of the naive path: one layer's K and V expanded to all H query heads."""
    dtype = kv_dtype(model, workload)
    layer = max(layer_caches(model, workload.tp), key=lambda c: tokens_held(c, workload))
    groups = model.heads // max(layer.kv_heads, 1)
    return workload.batch * groups * layer_bytes_per_token(layer, dtype) * tokens_held(layer, workload)


def plan_measurement(model: ModelSpec, workload: Workload, allowed_bytes: int, max_layers: int | None = None) -> MeasurePlan:
    """Fit the cache in `allowed_bytes`: keep the batch and drop layers first, then halve the batch."""
    dtype = kv_dtype(model, workload)
    if dtype not in MEASURABLE_DTYPES:
        raise InvalidInput(f"measure times {', '.join(d.value for d in MEASURABLE_DTYPES)} caches, not {dtype.value}")
    if PACKING[dtype].block_values != 1 or workload.tp != 1 or workload.pp != 1:
        raise InvalidInput("measure allocates one GPU's whole cache: use --tp 1")
    if any(model.state_kinds()) or None in model.attention_kinds():
        raise InvalidInput(f"measure allocates KV caches of attention layers only; {model.name} has state or mlp-only layers")
    notes: list[str] = []
    layers = min(model.layers, max_layers or model.layers)
    if layers < model.layers:
        notes.append(f"measuring {layers} of {model.layers} layers (--layers)")
    work = workload

    def need(layers_: int, work_: Workload) -> tuple[int, int]:
        sub = truncated(model, layers_)
        return batch_bytes(sub, work_).total, repeat_kv_scratch_bytes(sub, work_)

    while sum(need(layers, work)) > allowed_bytes and layers > 1:
        layers = max(1, layers // 2)
    while sum(need(layers, work)) > allowed_bytes and work.batch > 1:
        work = work.model_copy(update={"batch": work.batch // 2})
    cache, scratch = need(layers, work)
    if cache + scratch > allowed_bytes:
        raise DoesNotFit(
            f"one layer of one {workload.seq}-token sequence needs {format_bytes(cache + scratch)} with scratch,"
            f" more than the {format_bytes(allowed_bytes)} allowed; nothing was allocated"
        )
    if layers < min(model.layers, max_layers or model.layers):
        notes.append(
            f"measuring {layers} of {model.layers} layers to fit {format_bytes(allowed_bytes)}; predictions scaled alike"
        )
    if work.batch < workload.batch:
        notes.append(f"batch reduced from {workload.batch} to {work.batch} to fit {format_bytes(allowed_bytes)}")
    return MeasurePlan(
        model=truncated(model, layers),
        workload=work,
        requested_layers=model.layers,
        requested_batch=workload.batch,
        cache_bytes=cache,
        scratch_bytes=scratch,
        notes=notes,
    )
