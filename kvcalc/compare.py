"""Side by side: attention variants of one model (MHA, GQA, MQA, MLA), or several models. Pure.

Every KV, capacity and decode figure comes from `kvcache`, `capacity` and `latency`; this module
only derives the variant specs, picks the baseline and subtracts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import ValidationError

from kvcalc import capacity, latency, weights
from kvcalc.base import Frozen, first_repeated
from kvcalc.engines import Budget
from kvcalc.errors import InvalidInput
from kvcalc.kvcache import LayerCache, attention_layers, estimate_kv, layer_bytes_per_token, layer_caches
from kvcalc.latency import Bound, DecodeJudge
from kvcalc.spec import Engine, GpuSpec, ModelSpec, Workload
from kvcalc.units import DType
from kvcalc.weights import WeightFormat

VariantKind = Literal["mha", "gqa", "mqa", "mla"]
VARIANT_KINDS: tuple[VariantKind, ...] = ("mha", "gqa", "mqa", "mla")
VARIANT_HELP = "mha, gqa (the model's own KV heads), gqa:G (G KV heads), mqa or mla"
DEFAULT_KV_LORA_RANK = 512  # DeepSeek-V2/V3 config.json kv_lora_rank
DEFAULT_ROPE_DIM = 64  # DeepSeek-V2/V3 config.json qk_rope_head_dim


class Variant(Frozen):
    """An attention layout to give a model; `gqa:G` carries its G KV heads."""

    name: str
    kind: VariantKind
    kv_heads: int | None = None


def parse_variant(name: str) -> Variant | None:
    """Read a variant name (case-insensitive); None when `name` is no variant, so may be a model.

    >>> parse_variant("GQA:4"), parse_variant("mqa").kv_heads, parse_variant("llama3-8b")
    (Variant(name='gqa:4', kind='gqa', kv_heads=4), None, None)
    """
    key = name.strip().lower()
    kind, colon, count = key.partition(":")
    if kind not in VARIANT_KINDS:
        return None
    if not colon:
        return Variant(name=key, kind=kind)
    if kind != "gqa":
        raise InvalidInput(f"variant {name!r}: only gqa takes a KV-head count (gqa:G); choose {VARIANT_HELP}")
    if not count.isdigit() or int(count) < 1:
        raise InvalidInput(f"variant {name!r}: G in gqa:G must be a whole number of KV heads, at least 1")
    return Variant(name=key, kind=kind, kv_heads=int(count))


def parse_variants(names: Sequence[str]) -> list[Variant]:
    """A list of variant names (measure's --variants), each a known variant and named once.

    >>> [v.name for v in parse_variants(["MHA", "gqa:4"])]
    ['mha', 'gqa:4']
    """
    variants = []
    for name in names:
        variant = parse_variant(name)
        if variant is None:
            raise InvalidInput(f"unknown variant {name!r}: choose {VARIANT_HELP}")
        variants.append(variant)
    twice = first_repeated([v.name for v in variants])
    if twice is not None:
        raise InvalidInput(f"variant {twice!r} is named twice: name each variant once")
    return variants


def derive(
    model: ModelSpec, variant: Variant, kv_lora_rank: int = DEFAULT_KV_LORA_RANK, rope_dim: int = DEFAULT_ROPE_DIM
) -> ModelSpec:
    """`model` with only its KV layout changed: mha caches `heads` KV heads, mqa one, gqa its own
    kv_heads or G, mla one latent of kv_lora_rank + rope_dim per token per layer (DeepSeek-V2).

    The parameter count is pinned to the model's, so the weights and the memory left for the cache
    stay the same: the comparison isolates the KV cache.

    >>> m = ModelSpec(name="7b", layers=32, heads=32, kv_heads=32, head_dim=128, dtype="fp16")
    >>> derive(m, parse_variant("gqa:8")).kv_heads, derive(m, parse_variant("mla")).mla.kv_lora_rank
    (8, 512)
    """
    kv_heads = {"mha": model.heads, "gqa": variant.kv_heads or model.kv_heads, "mqa": 1, "mla": model.heads}[variant.kind]
    if model.heads % kv_heads:
        raise InvalidInput(f"{variant.name}: {kv_heads} KV heads do not divide the {model.heads} query heads of {model.name}")
    mla = None
    if variant.kind == "mla":  # keep an MLA model's other widths; set the cached ones
        mla = {**(model.mla.model_dump() if model.mla else {}), "kv_lora_rank": kv_lora_rank, "qk_rope_head_dim": rope_dim}
    params = weights.count_params(model)
    pinned = {"params": params.total, "active_params": params.active} if params else {}
    fields = {**model.model_dump(), "name": f"{model.name} ({variant.name})", "kv_heads": kv_heads, "mla": mla, **pinned}
    try:
        return ModelSpec.model_validate(fields)
    except ValidationError as exc:
        raise InvalidInput(f"{variant.name} of {model.name}: {exc.errors()[0]['msg']}") from None


class Subject(Frozen):
    """One model or variant to compare: its spec, weights' format and, given a GPU or memory, its budget."""

    name: str
    spec: ModelSpec
    weights: WeightFormat
    budget: Budget | None = None
    engine: Engine | None = None  # compared engines: each subject allocates by its own engine


class RowFit(Frozen):
    """What fits on one GPU (capacity.fit): max batch at the context, max context at the batch."""

    weights_bytes: int  # per GPU
    usable_bytes: int  # left for the KV cache; negative when the weights do not fit
    weights_fit: bool
    fits: bool  # the batch at the context
    max_batch: int
    max_context: int
    max_context_limit: Literal["memory", "max_positions", "max_cache_len", "max_seq_len", "unbounded"]


class RowDecode(Frozen):
    """One decode step of the batch at the context (latency.decode): the roofline's figures, and the
    expected time by the engine's decode profile."""

    seconds_per_token: float  # the roofline's
    bound: Bound
    tokens_per_s: float
    expected_seconds_per_token: float
    expected_tokens_per_s: float
    profile: str  # the decode profile of the expected time


class CompareRow(Frozen):
    """One model or variant in one cache dtype. Savings are per batch against the baseline row."""

    name: str
    kv_dtype: DType
    kv_heads: int | None  # None for an MLA latent or compressed rows
    compressed_cache: bool = False  # DeepSeek-V4: bytes_per_token is a token within the window; compare per sequence
    latent_width: int | None  # MLA: kv_lora_rank + rope dim values per token per layer
    bytes_per_token_per_layer: int
    bytes_per_token: int  # all layers
    bytes_per_sequence: int
    bytes_per_batch: int  # KV and, for hybrid models, state: the cache the batch takes
    state_bytes_per_sequence: int = 0  # hybrid models: the fixed state of one sequence (in bytes_per_batch)
    replicated_kv_heads: bool  # tp exceeds the KV heads: every GPU keeps a copy of one
    saved_bytes: int = 0  # negative when larger than the baseline
    saved_percent: float = 0.0
    fit: RowFit | None = None
    decode: RowDecode | None = None


class Baseline(Frozen):
    """The row savings are measured against: the mha variant when present, else the first row."""

    name: str
    kv_dtype: DType


class Comparison(Frozen):
    """Rows in the order given (each name, then each cache dtype), with the baseline and a footnote."""

    kind: Literal["variants", "models", "engines"]
    model: str | None  # the model the variants or engines are of; None when models are compared
    seq: int
    batch: int
    tp: int
    decode_judge: DecodeJudge  # which decode time the table shows: the expected one or the roofline
    baseline: Baseline
    note: str | None
    variants: list[CompareRow]


def _row(subject: Subject, workload: Workload, gpu: GpuSpec | None) -> CompareRow:
    spec = subject.spec
    if subject.budget is not None:  # the engine's defaults on the GPU, as the budget assumed them
        workload = workload.model_copy(update={"engine": subject.budget.engine})
    kv = estimate_kv(spec, workload)
    attention = attention_layers(layer_caches(spec, workload.tp, workload.engine))
    layer = attention[0] if attention else LayerCache(kind="none", window=None, kv_heads=0, k_values=0, v_values=0)
    mla = layer.kind == "mla"  # attention layers differ only in tokens held, not per token
    compressed = layer.kind == "compressed"
    return CompareRow(  # every figure over all GPUs (replicas included), like estimate_kv's
        name=subject.name,
        kv_dtype=kv.kv_dtype,
        kv_heads=None if mla or compressed else layer.kv_heads * workload.tp,
        compressed_cache=compressed,
        latent_width=layer.k_values + layer.v_values if mla else None,
        bytes_per_token_per_layer=layer_bytes_per_token(layer, kv.kv_dtype, kv.v_dtype) * workload.tp,
        bytes_per_token=kv.bytes_per_token,
        bytes_per_sequence=kv.bytes_per_sequence,
        bytes_per_batch=kv.total_bytes_per_batch,
        state_bytes_per_sequence=kv.state_bytes_per_sequence,
        replicated_kv_heads=kv.replicated_kv_heads,
        fit=_fit(spec, workload, subject.budget) if subject.budget else None,
        decode=_decode(spec, workload, gpu, subject.weights) if gpu else None,
    )


def _fit(spec: ModelSpec, workload: Workload, budget: Budget) -> RowFit:
    report = capacity.fit(spec, workload, budget, details=False)
    return RowFit(
        weights_bytes=budget.weights_bytes,
        usable_bytes=budget.usable_bytes,
        weights_fit=report.weights_fit,
        fits=report.fits,
        max_batch=report.max_batch,
        max_context=report.max_context,
        max_context_limit=report.max_context_limit,
    )


def _decode(spec: ModelSpec, workload: Workload, gpu: GpuSpec, weights: WeightFormat) -> RowDecode:
    step = latency.decode(spec, workload, gpu, weights)
    return RowDecode(
        seconds_per_token=step.seconds_per_token,
        bound=step.roofline.bound,
        tokens_per_s=step.tokens_per_s,
        expected_seconds_per_token=step.expected_seconds_per_token,
        expected_tokens_per_s=step.expected_tokens_per_s,
        profile=step.expected.profile,
    )


def _with_savings(row: CompareRow, baseline: CompareRow) -> CompareRow:
    saved = baseline.bytes_per_batch - row.bytes_per_batch
    return row.model_copy(update={"saved_bytes": saved, "saved_percent": 100 * saved / baseline.bytes_per_batch})


def _kept_note(base: ModelSpec, subjects: list[Subject]) -> str:
    """The footnote of a variant comparison: what the variants keep, and the MLA widths."""
    windows = f", the window of {base.sliding_window:,}" if base.sliding_window else ""
    note = (
        f"Variants of {base.name} keep everything but the KV layout: {base.layers} layers,"
        f" {base.heads} query heads of {base.key_dim}{windows} and the weights."
    )
    mla = next((s.spec.mla for s in subjects if s.spec.mla), None)
    if mla is not None:
        note += f" mla caches one latent of kv_lora_rank {mla.kv_lora_rank} + rope {mla.qk_rope_head_dim} per token per layer"
        note += ", in every layer for the whole sequence (no window)." if windows else "."
    return note


def _engines_note(base: ModelSpec) -> str:
    return (
        f"Each engine allocates the cache of {base.name} by its own rules (see --explain on size, and docs/engines.md);"
        " for llamacpp --seq is n_ctx, shared by --batch sequences."
    )


def compare(
    subjects: list[Subject], workload: Workload, kv_dtypes: list[DType | None], gpu: GpuSpec | None = None,
    base: ModelSpec | None = None, decode_judge: DecodeJudge = "expected",
) -> Comparison:  # fmt: skip
    """Each subject in each cache dtype (None: the model's own), in the order given, with savings per
    batch against the baseline. `base` is the model variants derive from (None when comparing models);
    a subject's budget adds what fits, `gpu` the decode time (both; `decode_judge` says which the
    table shows). A cache dtype given twice (fp8 and float8 are one) is an error."""
    twice = first_repeated([d.value for d in kv_dtypes if d is not None])
    if twice is not None:
        raise InvalidInput(f"cache dtype {twice!r} is named twice (its aliases name it too): compare each dtype once")
    rows = [
        _row(s, workload.model_copy(update={"kv_dtype": d, "engine": s.engine or workload.engine}), gpu)
        for s in subjects
        for d in kv_dtypes
    ]
    kind = "engines" if subjects[0].engine else "variants" if base else "models"
    baseline_name = {"engines": Engine().name, "variants": "mha"}.get(kind)  # the default engine; full attention
    baseline = next((r for r in rows if r.name == baseline_name), rows[0])
    return Comparison(
        kind=kind,
        model=base.name if base else None,
        seq=workload.seq,
        batch=workload.batch,
        tp=workload.tp,
        decode_judge=decode_judge,
        baseline=Baseline(name=baseline.name, kv_dtype=baseline.kv_dtype),
        note=(_engines_note(base) if subjects[0].engine else _kept_note(base, subjects)) if base else None,
        variants=[_with_savings(r, baseline) for r in rows],
    )
