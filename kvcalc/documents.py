"""The JSON documents the commands print with --json, one pydantic model each.

The documents' base and `size`'s document are in kvcalc.size_document, imported here.
`kvcalc schema COMMAND` prints the JSON Schema generated from these models; a test checks that
every command's output validates against its model and round-trips to the same JSON.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, RootModel

from kvcalc import weights
from kvcalc.base import Strict
from kvcalc.capacity import FitReport
from kvcalc.compare import Comparison
from kvcalc.errors import KvcalcError
from kvcalc.kvcache import KvEstimate, estimate_kv
from kvcalc.latency import DecodeEstimate, PrefillEstimate
from kvcalc.placement import Placement, SpeedStep, SplitDecode
from kvcalc.presets import DescribedPreset, PresetEntry, PresetListing, PresetProblem
from kvcalc.residents import CpuTier
from kvcalc.size_document import SCHEMA_VERSION, Document, SizeDocument
from kvcalc.spec import GpuSpec, ModelSpec, Workload
from kvcalc.speculative import SpeculativeDecode
from kvcalc.throughput import Cost, ThroughputPlan

MEASURE_SCHEMA_VERSION = 3  # measure's: 3 dropped the copy of the first variant's fields at the top level


class FitDocument(FitReport):
    """`kvcalc fit --json`: the fit report with the model and GPU it is for."""

    model_config = ConfigDict(extra="forbid")
    version: Literal[2] = SCHEMA_VERSION
    model: str
    gpu: str
    # llama.cpp's placement (one GPU and host RAM, or a layer split over several GPUs): fits and verdict are the
    # placement's; the budget and every other figure above (max_batch, shortfall_bytes, ...) are ONE_GPU_SCOPE's
    # (kvcalc.placement), one GPU holding the whole model
    budget_scope: str | None = None
    placement_max_batch: int | None = None  # sequences of --seq tokens the placement holds (planned again at each batch)
    placement: Placement | None = None  # llama.cpp's placement across GPUs and host RAM, when one was planned
    speed_steps: list[SpeedStep] | None = None  # tokens/s at each -ngl or --n-cpu-moe step (with --ram-bandwidth)
    throughput: ThroughputPlan | None = None  # --max-tpot-ms, --max-ttft-ms or --price-per-hour
    cost: Cost | None = None  # --price-per-hour
    cpu_tier: CpuTier | None = None  # --kv-offloading-size or --lmcache-cpu-size


class DecodeDocument(Document):
    """`kvcalc decode --json`: one decode step and the prefill of the prompt (--prompt, else the
    context); the largest batch within --max-tpot-ms / --max-ttft-ms and the cost at --price-per-hour."""

    decode: DecodeEstimate
    prefill: PrefillEstimate
    # llama.cpp's placement (one GPU and host RAM, or several GPUs): decode and prefill are ONE_GPU_SCOPE's
    # (kvcalc.placement); split, throughput and cost are the placement's
    decode_scope: str | None = None
    placement: Placement | None = None  # the llama.cpp placement the split speed is for
    split: SplitDecode | None = None  # the decode speed of that placement
    throughput: ThroughputPlan | None = None
    cost: Cost | None = None
    speculative: SpeculativeDecode | None = None  # --speculative-model with --num-speculative-tokens and --acceptance-rate


class CompareDocument(Comparison):
    """`kvcalc compare --json`: the rows in the order given, and the GPU or memory label."""

    model_config = ConfigDict(extra="forbid")
    version: Literal[2] = SCHEMA_VERSION
    gpu: str | None


class ListedModel(Strict):
    """A model preset at a glance: its shape, limits, parameters and KV bytes per token (all layers, in
    its dtype, on one GPU, textbook), and where it comes from. A figure the preset cannot give is None."""

    name: str
    path: Path
    origin: Literal["shipped", "user"]
    layers: int
    kv_heads: int
    head_dim: int  # of K; V's is v_head_dim when it differs
    v_head_dim: int | None = None
    attention: list[str]  # its attention layers' kinds, in order of appearance: full, sliding, chunked, mla
    sliding_window: int | None
    attention_chunk_size: int | None = None
    state: list[str] = []  # a hybrid's state layers' kinds: mamba1, mamba2, gated_deltanet, lightning, short_conv
    max_positions: int | None
    params: int | None
    kv_bytes_per_token: int | None
    state_bytes_per_sequence: int = 0  # a hybrid's recurrent state, whatever the context

    @classmethod
    def of(cls, entry: PresetEntry) -> ListedModel:
        spec = cast(ModelSpec, entry.spec)  # the listing's models
        try:
            kv: KvEstimate | None = estimate_kv(spec, Workload(seq=1))
        except KvcalcError:
            kv = None
        try:
            params = weights.count_params(spec)
        except KvcalcError:  # a published count below its embeddings: `size` says so
            params = None
        return cls(
            name=entry.name, path=entry.path, origin=entry.origin, layers=spec.layers, kv_heads=spec.kv_heads,
            head_dim=spec.key_dim, v_head_dim=spec.value_dim if spec.value_dim != spec.key_dim else None,
            attention=list(dict.fromkeys(g.kind for g in kv.groups)) if kv else [],
            sliding_window=spec.sliding_window, attention_chunk_size=spec.attention_chunk_size,
            state=[g.kind for g in kv.state_groups] if kv else [], max_positions=spec.max_positions,
            params=params.total if params else None, kv_bytes_per_token=kv.bytes_per_token if kv else None,
            state_bytes_per_sequence=kv.state_bytes_per_sequence if kv else 0,
        )  # fmt: skip


class ListedGpu(Strict):
    """A GPU preset at a glance: memory and peak bandwidth, and where it comes from."""

    name: str
    path: Path
    origin: Literal["shipped", "user"]
    memory_bytes: int
    bandwidth_bytes_per_s: int

    @classmethod
    def of(cls, entry: PresetEntry) -> ListedGpu:
        spec = cast(GpuSpec, entry.spec)  # the listing's GPUs
        return cls(
            name=entry.name, path=entry.path, origin=entry.origin,
            memory_bytes=spec.memory_bytes, bandwidth_bytes_per_s=spec.bandwidth_bytes_per_s,
        )  # fmt: skip


class PresetsDocument(Document):
    """`kvcalc presets list --json`: the usable presets with their figures, and the preset files that
    cannot be used, with why."""

    models: list[ListedModel]
    gpus: list[ListedGpu]
    errors: list[PresetProblem] = []

    @classmethod
    def of(cls, listing: PresetListing) -> PresetsDocument:
        return cls(
            models=[ListedModel.of(e) for e in listing.models],
            gpus=[ListedGpu.of(e) for e in listing.gpus],
            errors=listing.errors,
        )


class PresetDocument(Document):
    """`kvcalc presets show --json`: one validated spec, the file it is read from, and where each
    field's value comes from (file, derived: how, default, not given)."""

    kind: Literal["model", "gpu"]
    spec: ModelSpec | GpuSpec
    path: Path | None = None
    sources: dict[str, str] = {}

    @classmethod
    def of(cls, described: DescribedPreset) -> PresetDocument:
        kind: Literal["model", "gpu"] = "model" if isinstance(described.spec, ModelSpec) else "gpu"
        return cls(kind=kind, spec=described.spec, path=described.path, sources=described.field_sources())


_MEASURE_DOCUMENTS = ("MeasureDocument", "MeasureDoesNotFitDocument", "MeasureOutput")


def __getattr__(name: str) -> Any:
    """The measure documents and SCHEMAS, defined when first asked for: they need the measure
    report's models, whose import would cost every other --json run start-up time."""
    if name == "SCHEMAS":
        return _schemas()
    if name in _MEASURE_DOCUMENTS:
        return _measure_documents()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _measure_documents() -> dict[str, type[BaseModel]]:
    from kvcalc.measure.report import MeasureReport

    class MeasureDocument(MeasureReport):
        """`kvcalc measure --json`: the run's fields and every variant's under `variants` (version 3: the
        first variant's fields are no longer repeated at the top level)."""

        model_config = ConfigDict(extra="forbid")
        version: Literal[3] = MEASURE_SCHEMA_VERSION
        fits: Literal[True] = True  # the cache (shrunk as the notes say) fit and was measured

        @classmethod
        def of(cls, report: MeasureReport) -> MeasureDocument:
            return cls(**report.model_dump())

    class MeasureDoesNotFitDocument(Document):
        """`kvcalc measure --json` when even the smallest cache does not fit or the device runs out
        of memory (exit 1): what was asked and why; nothing stays allocated."""

        fits: Literal[False] = False
        model: str
        device: str
        reason: str

    class MeasureOutput(RootModel):
        """`kvcalc measure --json`: the measurement, or why there is none; `fits` tells which."""

        root: Annotated[MeasureDocument | MeasureDoesNotFitDocument, Field(discriminator="fits")]

    return {cls.__name__: cls for cls in (MeasureDocument, MeasureDoesNotFitDocument, MeasureOutput)}


@functools.cache
def _schemas() -> dict[str, type[BaseModel]]:
    """Each --json command's document model, in the order `kvcalc schema` lists them."""
    from kvcalc.check import CheckReport

    return {
        "size": SizeDocument,
        "fit": FitDocument,
        "decode": DecodeDocument,
        "compare": CompareDocument,
        "measure": _measure_documents()["MeasureOutput"],
        "check": CheckReport,
        "presets-list": PresetsDocument,
        "presets-show": PresetDocument,
    }
