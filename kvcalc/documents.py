"""The JSON documents the commands print with --json, one pydantic model each.

`kvcalc schema COMMAND` prints the JSON Schema generated from these models; a test checks that
every command's output validates against its model and round-trips to the same JSON.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from kvcalc.base import Strict
from kvcalc.capacity import FitReport, ParamCount
from kvcalc.check import CheckReport
from kvcalc.compare import Comparison
from kvcalc.kvcache import KvEstimate
from kvcalc.latency import DecodeEstimate, PrefillEstimate
from kvcalc.measure.report import MeasureReport, VariantResult
from kvcalc.presets import PresetEntry, PresetProblem
from kvcalc.spec import GpuSpec, ModelSpec
from kvcalc.units import DType

SCHEMA_VERSION = 2  # bump when a key is renamed or removed; adding keys keeps it


class Document(Strict):
    """Base of every --json document: frozen, no unknown keys, a schema version."""

    version: Literal[2] = SCHEMA_VERSION


class Weights(Strict):
    """The weights' dtype (the embeddings' and routed experts' when they differ), bytes and
    parameter count (None when the model gives no shapes)."""

    dtype: DType
    embeddings_dtype: DType | None = None
    experts_dtype: DType | None = None
    bytes: int | None
    params: ParamCount | None


class SizeDocument(Document):
    """`kvcalc size --json`: the model, its KV figures and weights; fit and decode with a GPU."""

    model: ModelSpec
    kv: KvEstimate
    weights: Weights
    fit: FitReport | None = None
    decode: DecodeEstimate | None = None


class FitDocument(FitReport):
    """`kvcalc fit --json`: the fit report with the model and GPU it is for."""

    model_config = ConfigDict(extra="forbid")
    version: Literal[2] = SCHEMA_VERSION
    model: str
    gpu: str


class DecodeDocument(Document):
    """`kvcalc decode --json`: one decode step and the prefill of the same context."""

    decode: DecodeEstimate
    prefill: PrefillEstimate


class CompareDocument(Comparison):
    """`kvcalc compare --json`: the rows in the order given, and the GPU or memory label."""

    model_config = ConfigDict(extra="forbid")
    version: Literal[2] = SCHEMA_VERSION
    gpu: str | None


class MeasureDocument(MeasureReport, VariantResult):
    """`kvcalc measure --json`: the run's fields, the first variant's at top level, and every variant."""

    model_config = ConfigDict(extra="forbid")
    version: Literal[2] = SCHEMA_VERSION

    @classmethod
    def of(cls, report: MeasureReport) -> MeasureDocument:
        """Flatten a report: its first variant's fields beside the run's."""
        return cls(**report.variants[0].model_dump(), **report.model_dump(exclude={"variants"}), variants=report.variants)


class PresetsDocument(Document):
    """`kvcalc presets list --json`: the usable presets, and the preset files that cannot be used, with why."""

    models: list[PresetEntry]
    gpus: list[PresetEntry]
    errors: list[PresetProblem] = []


class PresetDocument(Document):
    """`kvcalc presets show --json`: one validated spec."""

    kind: Literal["model", "gpu"]
    spec: ModelSpec | GpuSpec


SCHEMAS: dict[str, type[BaseModel]] = {
    "size": SizeDocument,
    "fit": FitDocument,
    "decode": DecodeDocument,
    "compare": CompareDocument,
    "measure": MeasureDocument,
    "check": CheckReport,
    "presets-list": PresetsDocument,
    "presets-show": PresetDocument,
}
