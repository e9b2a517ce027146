"""The options for what else a deployment holds in GPU memory (kvcalc.residents: a speculative draft,
LoRA slots, a CPU KV tier, a vision tower and its profiling), each defined once, and turning them into the workload and the budget terms they add."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from kvcalc import engines, presets, residents
from kvcalc.cli.common import positive, size_option
from kvcalc.engines import Budget, BudgetTerm
from kvcalc.errors import InvalidInput
from kvcalc.spec import ModelSpec, Workload
from kvcalc.units import parse_dtype

if TYPE_CHECKING:  # an annotation only: `size` without a GPU never imports capacity
    from kvcalc.capacity import FitReport

SpeculativeModelOpt = Annotated[
    str | None,
    typer.Option(
        "--speculative-model",
        help="A draft model for speculative decoding (a preset, YAML or config.json, or a Hub repo id; mtp: the model's own"
        " MTP layers; ngram: prompt lookup, no model): its weights in the budget, its KV per token beside the target's in"
        " one pool (vllm, textbook).",
    ),
]


NumSpeculativeTokensOpt = Annotated[
    int | None,
    typer.Option(
        "--num-speculative-tokens",
        help="With --speculative-model: the tokens it proposes per step (vLLM's num_speculative_tokens): vllm reserves"
        " that many lookahead slots per sequence for a draft model, EAGLE or MTP (none for ngram); decode times the rounds.",
    ),
]
AcceptanceRateOpt = Annotated[
    float | None,
    typer.Option(
        "--acceptance-rate",
        help="decode, with --speculative-model: the share of proposals the target accepts, each given the ones before it"
        " (0-1; vLLM logs it as the draft acceptance rate).",
    ),
]


def with_draft(
    target: ModelSpec, work: Workload, draft_ref: str | None, presets_dir: list[str] | None, tokens: int | None = None
) -> tuple[Workload, list[BudgetTerm], residents.Draft | None]:
    """The workload with the draft and its K proposals per step (--num-speculative-tokens), the
    budget terms it takes from the cache's share, and the draft itself."""
    if draft_ref is None:
        if tokens is not None:
            raise InvalidInput("--num-speculative-tokens needs --speculative-model")
        return work, [], None
    positive(num_speculative_tokens=tokens)
    if tokens is not None:
        residents.require_speculative_tokens(tokens, work.seq)
    if draft_ref == residents.MTP:
        found = residents.mtp_draft(target, work)
    elif draft_ref == residents.NGRAM:
        if tokens is None:
            raise InvalidInput(
                "--speculative-model ngram: give --num-speculative-tokens, the tokens it proposes a step (vLLM requires it)"
            )
        found = residents.ngram_draft(work)
    else:
        found = residents.draft(
            target, residents.as_eagle_head(target, presets.load_model(draft_ref, presets_dir), draft_ref, work), work
        )
    drafted, terms = residents.with_draft(work, found, tokens or 0)
    return drafted, terms, found


def with_draft_pool(report: FitReport, work: Workload, found: residents.Draft | None) -> FitReport:
    """The fit report with the draft's second pool in its budget, where the engine keeps one (SGLang)."""
    if found is None or not engines.profile(work.engine).draft_second_pool or not report.pools:
        return report
    return report.model_copy(update={"budget": residents.with_second_pool(report.budget, found, report.pools[0].tokens)})


def draft_for_decode(
    target: ModelSpec,
    work: Workload,
    draft_ref: str | None,
    tokens: int | None,
    acceptance: float | None,
    presets_dir: list[str] | None,
) -> tuple[ModelSpec | None, int, float, str] | None:
    """The draft model as a step reads it (None for n-gram lookup, which has none; an EAGLE-1 head
    with the target's LM head, residents.eagle_step_reads), K, the acceptance rate decode times
    speculative rounds with, and what the draft step reads beyond the draft's own weights ("" if
    nothing); all three options given, or none. n-gram lookup on an engine fit and size
    refuse it for is refused here too (residents.ngram_draft)."""
    given = {"--speculative-model": draft_ref, "--num-speculative-tokens": tokens, "--acceptance-rate": acceptance}
    if all(value is None for value in given.values()):
        return None
    missing = [flag for flag, value in given.items() if value is None]
    if missing:
        raise InvalidInput(f"decode times speculative decoding with all of {', '.join(given)}: give {', '.join(missing)}")
    assert draft_ref is not None and tokens is not None and acceptance is not None
    residents.require_speculative_tokens(tokens, work.seq)
    if draft_ref == residents.MTP:
        raise InvalidInput("decode --speculative-model mtp is not modelled: give the draft as a model (a preset or config.json)")
    if draft_ref == residents.NGRAM:
        residents.ngram_draft(work)
        return None, tokens, acceptance, ""
    draft = residents.as_eagle_head(target, presets.load_model(draft_ref, presets_dir), draft_ref, work)
    residents.require_same_vocabulary(target, draft)
    step_reads, note = residents.eagle_step_reads(target, draft, work)
    return step_reads, tokens, acceptance, note


MaxLorasOpt = Annotated[
    int | None,
    typer.Option(
        "--max-loras",
        help="vllm --enable-lora: LoRA slots preallocated for every wrapped linear of every layer (vLLM's default 1).",
    ),
]
MaxLoraRankOpt = Annotated[
    int | None,
    typer.Option(
        "--max-lora-rank", help=f"With --max-loras: the rank each slot holds (vLLM's default {residents.VLLM_MAX_LORA_RANK})."
    ),
]
LoraDtypeOpt = Annotated[
    str | None, typer.Option("--lora-dtype", help="With --max-loras: the slots' dtype (default: the model's).")
]


def lora_terms(model: ModelSpec, work: Workload, max_loras: int | None, rank: int | None, dtype: str | None) -> list[BudgetTerm]:
    """The LoRA slots as a budget term when --max-loras is given."""
    if max_loras is None:
        if rank is not None or dtype is not None:
            raise InvalidInput("--max-lora-rank and --lora-dtype need --max-loras (vllm --enable-lora)")
        return []
    positive(max_loras=max_loras, max_lora_rank=rank)
    lora_dtype = parse_dtype(dtype) if dtype is not None else None
    return [residents.lora_term(model, work, max_loras, rank, lora_dtype)]


KvOffloadingSizeOpt = Annotated[
    str | None,
    typer.Option(
        "--kv-offloading-size",
        help="vllm: a CPU tier for KV blocks, over all ranks (vLLM's --kv-offloading-size 64 is 64GiB): the tokens it holds"
        " and the host RAM it pins.",
    ),
]
PcieOpt = Annotated[
    float | None,
    typer.Option(
        "--pcie-gb-per-s",
        help="With --kv-offloading-size: each GPU's host link in GB/s (10^9 B/s, one direction), to time bringing a"
        " re-used prefix back.",
    ),
]


LmcacheCpuSizeOpt = Annotated[
    str | None,
    typer.Option(
        "--lmcache-cpu-size",
        help="vllm with LMCache: its local CPU backend on every rank (max_local_cpu_size; LMCache's 5.0 is 5GiB): the"
        " tokens it holds and the host RAM it pins.",
    ),
]


def cpu_tier(
    model: ModelSpec, work: Workload, size: str | None, pcie: float | None, reload_tokens: int, lmcache: str | None = None
) -> residents.CpuTier | None:
    """The CPU tier when --kv-offloading-size or --lmcache-cpu-size is given (one of them)."""
    if size is not None and lmcache is not None:
        raise InvalidInput("give --kv-offloading-size or --lmcache-cpu-size, not both: one connector offloads the KV")
    if size is None and lmcache is None:
        if pcie is not None:
            raise InvalidInput("--pcie-gb-per-s needs --kv-offloading-size or --lmcache-cpu-size")
        return None
    link = pcie and pcie * 1e9
    if lmcache is not None:
        return residents.cpu_tier(model, work, size_option("lmcache-cpu-size", lmcache), reload_tokens, link, "lmcache")
    assert size is not None
    return residents.cpu_tier(model, work, size_option("kv-offloading-size", size), reload_tokens, link)


LimitMmOpt = Annotated[
    str | None,
    typer.Option(
        "--limit-mm-per-prompt",
        help="vllm: items of each modality per prompt, as JSON ('{\"image\": 2}'); a key the model does not serve is"
        " refused. Every modality it serves at 0 (Qwen-VL: image and video) is text only: no vision tower and no"
        " multimodal profiling.",
    ),
]
LanguageOnlyOpt = Annotated[
    bool, typer.Option("--language-model-only", help="vllm: serve a multimodal model as text only (no vision tower).")
]
MmProcessorKwargsOpt = Annotated[
    str | None,
    typer.Option(
        "--mm-processor-kwargs",
        help="vllm: the processor's options as JSON; kvcalc reads max_pixels (Qwen-VL), which sizes the profiling run's image.",
    ),
]
SkipMmProfilingOpt = Annotated[
    bool,
    typer.Option("--skip-mm-profiling", help="vllm: leave the encoder out of the profiling run (its tower still loads)."),
]


def multimodal(
    model: ModelSpec, work: Workload, budget: Budget, limit: str | None, language_only: bool, skip_profiling: bool,
    processor_kwargs: str | None = None,
) -> Budget:  # fmt: skip
    """The budget less a multimodal model's vision tower and vLLM's profiling of it (kvcalc.residents)."""
    given = limit is not None or language_only or skip_profiling or processor_kwargs is not None
    flags = "--limit-mm-per-prompt, --language-model-only, --skip-mm-profiling and --mm-processor-kwargs"
    if given and engines.profile(work.engine).mm_profile_rule is None:
        raise InvalidInput(f"{flags} are vllm options: add --engine vllm")
    if given and model.vision is None:
        raise InvalidInput(f"{flags}: {model.name} has no vision tower")
    settings = residents.Multimodal(
        limits=_limits(limit), language_only=language_only, skip_profiling=skip_profiling,
        max_pixels=_max_pixels(processor_kwargs),
    )  # fmt: skip
    return residents.with_residents(budget, residents.multimodal_terms(model, work, budget, settings))


def _json_object(option: str, text: str, example: str) -> dict[str, object]:
    """An option's JSON object, or one clear line naming the option and an example."""
    import json

    try:
        found = json.loads(text)
    except ValueError:
        found = None
    if not isinstance(found, dict):
        raise InvalidInput(f"{option} {text!r}: give a JSON object, e.g. '{example}'")
    return found


def _limits(text: str | None) -> dict[str, int] | None:
    """--limit-mm-per-prompt's JSON object of modality -> items (0 or more)."""
    if text is None:
        return None
    found = _json_object("--limit-mm-per-prompt", text, '{"image": 2}')
    if not found or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in found.values()):
        raise InvalidInput(f"--limit-mm-per-prompt {text!r}: give a JSON object of items per modality, e.g. '{{\"image\": 2}}'")
    return found  # type: ignore[return-value]


def _max_pixels(text: str | None) -> int | None:
    """--mm-processor-kwargs' max_pixels (a positive integer); other keys are refused, not ignored."""
    if text is None:
        return None
    found = _json_object("--mm-processor-kwargs", text, '{"max_pixels": 1003520}')
    unread = sorted(set(found) - {"max_pixels"})
    if unread:
        raise InvalidInput(f"--mm-processor-kwargs: kvcalc reads max_pixels only, not {', '.join(unread)}")
    pixels = found.get("max_pixels")
    if isinstance(pixels, bool) or not isinstance(pixels, int) or pixels < 1:
        raise InvalidInput(f"--mm-processor-kwargs max_pixels: expected a positive integer, got {pixels!r}")
    return pixels
