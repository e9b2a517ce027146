"""The JSON documents the commands print with --json, one pydantic model each.

`kvcalc schema COMMAND` prints the JSON Schema generated from these models; a test checks that
every command's output validates against its model and round-trips to the same JSON.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from kvcalc.base import Strict
from kvcalc.capacity import FitReport, ParamCount
from kvcalc.compare import Comparison
from kvcalc.kvcache import KvEstimate
from kvcalc.latency import DecodeEstimate, PrefillEstimate
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


class PresetsDocument(Document):
    """`kvcalc presets list --json`: the usable presets, and the preset files that cannot be used, with why."""

    models: list[PresetEntry]
    gpus: list[PresetEntry]
    errors: list[PresetProblem] = []


class PresetDocument(Document):
    """`kvcalc presets show --json`: one validated spec."""

    kind: Literal["model", "gpu"]
    spec: ModelSpec | GpuSpec


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
    from kvcalc.measure.report import MeasureReport, VariantResult

    class MeasureDocument(MeasureReport, VariantResult):
        """`kvcalc measure --json`: the run's fields, the first variant's at top level, and every variant."""

        model_config = ConfigDict(extra="forbid")
        version: Literal[2] = SCHEMA_VERSION
        fits: Literal[True] = True  # the cache (shrunk as the notes say) fit and was measured

        @classmethod
        def of(cls, report: MeasureReport) -> MeasureDocument:
            """Flatten a report: its first variant's fields beside the run's."""
            return cls(**report.variants[0].model_dump(), **report.model_dump(exclude={"variants"}), variants=report.variants)

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
