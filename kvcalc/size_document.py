"""The base of every --json document and `kvcalc size --json`'s document, apart from kvcalc.documents
(which imports them from here): `size --json` then imports none of the other documents' models
(compare, placement, throughput) and prints its document part by part (`size_json`)."""

# no `from __future__ import annotations`: pydantic takes the fields' annotations as objects rather than
# compiling and evaluating each string (start-up, docs/benchmarks.md)

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from kvcalc.base import Strict
from kvcalc.kvcache import KvEstimate
from kvcalc.spec import ModelSpec
from kvcalc.units import DType
from kvcalc.weights import MtpWeights, ParamCount

if TYPE_CHECKING:  # resolved when SizeDocument's validator is built (model_rebuild): `size` without a GPU never imports them
    from kvcalc.capacity import FitReport
    from kvcalc.latency import DecodeEstimate

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
    mtp: MtpWeights | None = Field(
        default=None, description="the MTP layers the checkpoint stores beside these weights, loaded only to draft with them"
    )


class SizeDocument(Document):
    """`kvcalc size --json`: the model, its KV figures and weights; fit and decode with a GPU."""

    model: ModelSpec
    kv: KvEstimate
    weights: Weights
    fit: "FitReport | None" = None
    decode: "DecodeEstimate | None" = None

    @classmethod
    def model_rebuild(cls, **kwargs: Any) -> bool | None:
        """Pydantic completes the model here before its first validation or schema: `fit` and `decode`
        name the models of the modules a GPU adds, imported only now (start-up, docs/benchmarks.md)."""
        from kvcalc import capacity, latency

        # the module's own names, where pydantic resolves a forward reference (no private keyword needed)
        globals().update(FitReport=capacity.FitReport, DecodeEstimate=latency.DecodeEstimate)
        return super().model_rebuild(**kwargs)


def size_json(
    model: ModelSpec, kv: KvEstimate, weights: Weights, fit: "FitReport | None", decode: "DecodeEstimate | None"
) -> dict[str, Any]:
    """SizeDocument's JSON, each part dumped by its own model: equal to `SizeDocument(...).model_dump(mode="json")`
    (tested) without building SizeDocument's validator, which would build the fit's and decode's too."""
    parts = {"version": SCHEMA_VERSION, "model": model, "kv": kv, "weights": weights, "fit": fit, "decode": decode}
    return {  # in SizeDocument's field order (its fields are known before its validator is built: defer_build)
        key: part.model_dump(mode="json") if hasattr(part, "model_dump") else part
        for key, part in ((name, parts[name]) for name in SizeDocument.model_fields)
    }
