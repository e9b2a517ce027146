"""`kvcalc check`: assertions that workloads fit the GPUs a team owns. Pure: specs in, verdicts out.

A plan file (YAML) lists workloads, each a model on a GPU with a context and batch, and the
figures it must keep (`expect`). Every figure comes from the same core as `fit` and `decode`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import Field, PositiveFloat, PositiveInt, StrictBool, ValidationInfo, field_validator, model_validator

from kvcalc import capacity, engines, latency
from kvcalc.base import Strict, first_repeated
from kvcalc.kvcache import batch_bytes
from kvcalc.latency import DecodeJudge
from kvcalc.spec import Count, DTypeName, Engine, GpuSpec, Interconnect, ModelSpec, Name, Number, SizeBytes, Tokens, Workload
from kvcalc.units import parse_size
from kvcalc.weights import weight_format

PLAN_VERSION = 1


class Expect(Strict):
    """What a workload must keep. Every key is optional. A workload must fit unless the plan says
    `fits: false`: an absent `fits` is `fits: true`, so a plan without `expect` never passes a
    workload that does not fit (a false green in CI)."""

    fits: StrictBool = True  # true or false, not 1
    max_batch_at_least: Annotated[PositiveInt, Number] | None = None
    max_context_at_least: Annotated[PositiveInt, Number] | None = None
    kv_bytes_at_most: Annotated[PositiveInt, Number] | None = None
    decode_ms_at_most: Annotated[PositiveFloat, Field(allow_inf_nan=False), Number] | None = None
    margin: SizeBytes | None = None  # 2GiB: the budget must keep this much per GPU beyond the workload's need


class PlannedWorkload(Strict):
    """One serving configuration: a model on a GPU (or an explicit memory size)."""

    name: Name
    model: str = Field(min_length=1)
    gpu: str | None = None
    memory: str | None = None
    seq: Tokens  # 8192, 8_192, 8,192, 8k or 128k
    batch: Count = 1
    tp: Count = 1
    pp: Count = 1
    kv_dtype: DTypeName | None = None
    k_dtype: DTypeName | None = None
    v_dtype: DTypeName | None = None
    state_dtype: DTypeName | None = None
    weight_dtype: DTypeName | None = None
    block_size: Count | None = None
    shared_prefix: Tokens | None = None  # prompt tokens every sequence shares, held once (--shared-prefix)
    interconnect: Interconnect | None = None  # between tensor-parallel GPUs; default: the GPU preset's
    engine: Engine = Engine()  # a name (vllm) or a mapping with options ({name: vllm, max_num_batched_tokens: 8192})
    utilization: Annotated[float, Field(gt=0, le=1), Number] | None = None  # textbook, hf, llamacpp (default 0.9)
    reserve: str | None = None  # default: 1GiB for textbook, hf and llamacpp; the engine's modelled overheads otherwise
    memory_in_use: str | None = None  # held by other processes or the OS when the engine starts (--memory-in-use); default 0
    expect: Expect = Expect()

    @field_validator("engine", mode="before")
    @classmethod
    def _read_engine(cls, value: object) -> object:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("memory", "reserve", "memory_in_use", mode="before")
    @classmethod
    def _size_has_a_unit(cls, value: object) -> object:
        if isinstance(value, bool):
            raise ValueError("write a size with its unit, e.g. 80GiB or 80GB")
        if isinstance(value, int | float):
            raise ValueError(f"write a size with its unit, e.g. {value}GiB or {value}GB")
        return value

    @field_validator("memory", "reserve", "memory_in_use")
    @classmethod
    def _read_size(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            try:
                parse_size(value, allow_zero=info.field_name in ("reserve", "memory_in_use"))
            except Exception as exc:
                raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _needs_hardware(self) -> PlannedWorkload:
        if self.gpu is None and self.memory is None:
            raise ValueError(f"workload {self.name!r} needs gpu or memory")
        if self.expect.decode_ms_at_most is not None and self.gpu is None:
            raise ValueError(f"workload {self.name!r}: decode_ms_at_most needs a gpu (its bandwidth)")
        return self


class Plan(Strict):
    """A plan file: extra preset files or folders (relative to the plan), which decode time
    decode_ms_at_most judges (the expected one by default, or the roofline) and the workloads."""

    presets: list[str] = []
    decode_judge: DecodeJudge = "expected"
    workloads: list[PlannedWorkload] = Field(min_length=1)

    @model_validator(mode="after")
    def _names_are_unique(self) -> Plan:
        twice = first_repeated([w.name for w in self.workloads])
        if twice is not None:
            raise ValueError(f"workload name {twice!r} is used twice; name each workload once")
        return self


class Assertion(Strict):
    """One expectation checked: the figure kvcalc computed against the limit the plan sets."""

    name: str
    figure: Any
    limit: Any
    passed: bool


class WorkloadVerdict(Strict):
    """One workload's figures and assertions."""

    name: str
    model: str
    gpu: str
    passed: bool
    fits: bool
    max_batch: int
    max_context: int
    kv_bytes_per_gpu: int
    usable_bytes: int
    decode_ms: float | None  # the time decode_ms_at_most judges: decode_judge's
    decode_judge: DecodeJudge
    decode_roofline_ms: float | None
    decode_expected_ms: float | None
    assertions: list[Assertion]
    refused: str | None = None  # why the engine would not start (FitReport.refused)
    warnings: list[str] = []


class CheckReport(Strict):
    """Every workload's verdict; `passed` only when all are."""

    version: Literal[1] = PLAN_VERSION
    passed: bool
    workloads: list[WorkloadVerdict]


def check_workload(
    planned: PlannedWorkload, model: ModelSpec, gpu: GpuSpec | None, decode_judge: DecodeJudge = "expected"
) -> WorkloadVerdict:
    """Compute the figures of one workload and test each expectation against them; decode_ms_at_most
    judges the expected time per token, or the roofline's."""
    # a plan row names them all but the draft's KV per token (a speculative draft is not a plan key yet)
    named = {field: getattr(planned, field) for field in Workload.model_fields if field in PlannedWorkload.model_fields}
    work = Workload(**{**named, "shared_prefix": planned.shared_prefix or 0})
    weights = weight_format(model, planned.weight_dtype)
    memory = capacity.gpu_memory(gpu, parse_size(planned.memory) if planned.memory else None)
    reserve = parse_size(planned.reserve, allow_zero=True) if planned.reserve is not None else None
    in_use = parse_size(planned.memory_in_use, allow_zero=True) if planned.memory_in_use else 0
    budget = capacity.budget(
        model, work, memory, weights, planned.utilization, reserve, gpu.name if gpu else None,
        interconnect=planned.interconnect or (gpu.interconnect if gpu else None),
        preset=gpu if not planned.memory else None, in_use_bytes=in_use, in_use_name="memory_in_use",
    )  # fmt: skip
    report = capacity.fit(model, work, budget, details=False)
    kv_bytes = batch_bytes(model, work.model_copy(update={"engine": budget.engine})).per_gpu  # size's bytes_per_gpu
    step = latency.decode(model, work, gpu, weights) if gpu else None
    decode_ms = step.seconds_by(decode_judge) * 1e3 if step else None
    expect = planned.expect
    # (expectation, kvcalc's figure, whether the figure meets the limit)
    rules: list[tuple[str, Any, Callable[[Any, Any], bool]]] = [
        ("fits", report.fits, operator.eq),
        ("max_batch_at_least", report.max_batch, operator.ge),
        ("max_context_at_least", report.max_context, operator.ge),
        ("kv_bytes_at_most", kv_bytes, operator.le),
        ("decode_ms_at_most", decode_ms, operator.le),  # needs a gpu: the plan validator ensures one
        ("margin", report.headroom_bytes, operator.ge),  # bytes to spare per GPU
    ]
    checks = [
        Assertion(name=name, figure=figure, limit=getattr(expect, name), passed=meets(figure, getattr(expect, name)))
        for name, figure, meets in rules
        if getattr(expect, name) is not None
    ]
    return WorkloadVerdict(
        name=planned.name,
        model=model.name,
        gpu=gpu.name if gpu and not planned.memory else str(planned.memory),
        passed=all(c.passed for c in checks),
        fits=report.fits,
        max_batch=report.max_batch,
        max_context=report.max_context,
        kv_bytes_per_gpu=kv_bytes,
        usable_bytes=budget.usable_bytes,
        decode_ms=decode_ms,
        decode_judge=decode_judge,
        decode_roofline_ms=step.seconds_per_token * 1e3 if step else None,
        decode_expected_ms=step.expected_seconds_per_token * 1e3 if step else None,
        assertions=checks,
        refused=report.refused,
        warnings=[w for w in [engines.beyond_max_positions(model, work)] if w],
    )
