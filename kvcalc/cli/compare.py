"""`kvcalc compare`: attention variants of one model, engines, or several models side by side."""

from __future__ import annotations

from typing import Annotated, Any, NoReturn

import typer

from kvcalc import engines, presets
from kvcalc.base import first_repeated
from kvcalc.cli.common import (
    BatchOpt,
    GpuOpt,
    JsonOpt,
    MemoryOpt,
    ModelOpt,
    PresetsOpt,
    ReserveOpt,
    RooflineOpt,
    SeqOpt,
    TpOpt,
    UnitsOpt,
    UtilOpt,
    WeightDtypeOpt,
    build_workload,
    decimal_units,
    gpu_and_budget,
    gpu_label,
    hardware_given,
    plot_option,
    plot_target,
    positive,
    print_json,
    single_command,
    write_plot,
)
from kvcalc.cli.engine_options import EngineOptions, build_engine, with_engine_options
from kvcalc.compare import DEFAULT_KV_LORA_RANK, DEFAULT_ROPE_DIM, VARIANT_HELP, Subject, derive, parse_variant
from kvcalc.compare import compare as compare_rows
from kvcalc.errors import InvalidInput, PresetNotFound
from kvcalc.spec import ENGINE_OPTIONS, Engine, ModelSpec, Workload
from kvcalc.units import DType, parse_dtype
from kvcalc.weights import weight_format

ENGINE_NAMES = tuple(engines.PROFILES)  # what compare accepts as engines to compare
COMPARE_MODEL = "llama3-8b"  # the variants' model when --model is not given: a Llama-3-8B shape
NamesArg = Annotated[
    list[str],
    typer.Argument(
        help=f"What to compare: variants of --model ({VARIANT_HELP}), engines allocating for --model"
        f" ({', '.join(ENGINE_NAMES)}), or models.",
        show_default=False,
    ),
]
KvDtypesOpt = Annotated[
    str | None,
    typer.Option("--kv-dtype", help="KV-cache dtypes, comma-separated (fp16,fp8,q4_0), each compared (default: the model's)."),
]
KvLoraRankOpt = Annotated[int, typer.Option("--kv-lora-rank", help="mla: latent values per token per layer (DeepSeek: 512).")]
RopeDimOpt = Annotated[int, typer.Option("--rope-dim", help="mla: RoPE key values cached beside the latent (DeepSeek: 64).")]


def _kv_dtypes(text: str | None) -> list[DType | None]:
    """--kv-dtype as a comma list; [None] (each model's own dtype) when not given."""
    return [parse_dtype(part) for part in text.split(",")] if text is not None else [None]


def _reject_mixing(variants: list[str], others: list[str], extra: list[str] | None) -> NoReturn:
    """Names that are neither variants nor models are unknown variants; else the two kinds are mixed."""
    for name in others:
        try:
            presets.load_model(name, extra)
        except PresetNotFound:
            raise InvalidInput(f"unknown variant {name!r}: choose {VARIANT_HELP}, or give only model names") from None
    raise InvalidInput(
        f"cannot mix variants ({', '.join(variants)}) with models ({', '.join(others)}):"
        " compare the variants of one --model, or models only"
    )


def _compared_models(
    names: list[str], model: str, kv_lora_rank: int, rope_dim: int, extra: list[str] | None
) -> tuple[ModelSpec | None, list[tuple[str, ModelSpec]]]:
    """The base model and its variants, or (None and) the models named."""
    twice = first_repeated(names)
    if twice is not None:
        raise InvalidInput(f"{twice!r} is named twice: compare each variant, model or engine once")
    engines_named = [name for name in names if name in ENGINE_NAMES]
    if engines_named:
        if len(engines_named) != len(names):
            raise InvalidInput(
                f"cannot mix engines ({', '.join(engines_named)}) with other names: compare engines for one --model"
            )
        return presets.load_model(model, extra), []
    parsed = [(name, parse_variant(name)) for name in names]
    variants = [variant for _, variant in parsed if variant is not None]
    others = [name for name, variant in parsed if variant is None]
    if not others:
        base = presets.load_model(model, extra)
        return base, [(v.name, derive(base, v, kv_lora_rank, rope_dim)) for v in variants]
    if variants:
        _reject_mixing([v.name for v in variants], others, extra)
    if model != COMPARE_MODEL:
        raise InvalidInput("--model names the model whose variants are compared: leave it out when comparing models")
    specs = [presets.load_model(name, extra) for name in others]
    return None, [(spec.name, spec) for spec in specs]


def _shared_workload(models: list[ModelSpec], seq: int, batch: int, tp: int | str) -> Workload:
    """One workload for every compared model; each warns when --seq exceeds its max positions."""
    return [build_workload(model, seq, batch, None, tp, 1, None) for model in models][0]


def _subject(name: str, spec: ModelSpec, work: Workload, wanted: DType | None, hardware: dict[str, Any] | None) -> Subject:
    """One compared model with its weights' dtype and, given --gpu or --memory, its budget per GPU."""
    weights = weight_format(spec, wanted)
    budget = gpu_and_budget(spec, work, weights=weights, **hardware)[1] if hardware else None
    return Subject(name=name, spec=spec, weights=weights, budget=budget)


@with_engine_options()
def compare(
    names: NamesArg,
    model: ModelOpt = COMPARE_MODEL,
    seq: SeqOpt = 8192,
    batch: BatchOpt = 1,
    kv_dtype: KvDtypesOpt = None,
    weight_dtype: WeightDtypeOpt = None,
    tp: TpOpt = 1,
    gpu: GpuOpt = None,
    memory: MemoryOpt = None,
    utilization: UtilOpt = None,
    reserve: ReserveOpt = None,
    *,
    engine_options: EngineOptions,
    kv_lora_rank: KvLoraRankOpt = DEFAULT_KV_LORA_RANK,
    rope_dim: RopeDimOpt = DEFAULT_ROPE_DIM,
    roofline: RooflineOpt = False,
    presets_dir: PresetsOpt = None,
    json_out: JsonOpt = False,
    units: UnitsOpt = "gib",
    plot: Annotated[str | None, plot_option("a bar per variant, engine or model (with --gpu, max batch and decode time)")] = None,
) -> None:
    """Attention variants of one model, engines allocating for one model, or several models, side by side: KV bytes and savings; with --gpu what fits and the expected decode time (the roofline's with --roofline).

    Examples: kvcalc compare mha gqa:4 gqa:8 mqa mla --model llama3-8b; kvcalc compare textbook hf vllm llamacpp --model gemma2-9b; kvcalc compare llama3-8b mistral-7b --gpu l40s
    """
    decimal = decimal_units(units)
    plot_path = plot_target(plot)
    positive(kv_lora_rank=kv_lora_rank, rope_dim=rope_dim)
    # engine and variant names are case-blind (VLLM as --engine reads it, GQA:4); model names and paths are not
    names = [name.lower() if name.lower() in ENGINE_NAMES or parse_variant(name) else name for name in names]
    base, named = _compared_models(names, model, kv_lora_rank, rope_dim, presets_dir)
    work = _shared_workload([base] if base else [spec for _, spec in named], seq, batch, tp)
    hardware = {"gpu": gpu, "memory": memory, "utilization": utilization, "reserve": reserve, "extra": presets_dir}
    given = hardware_given(gpu, memory)
    wanted = parse_dtype(weight_dtype) if weight_dtype is not None else None
    if base is not None and not named:  # engines side by side: each takes the options that apply to it
        named = [(name, base) for name in names]
        engines_ = [
            build_engine(name, **{k: v for k, v in engine_options.items() if ENGINE_OPTIONS[k] == name}) for name in names
        ]
        unused = [k for k in engine_options if ENGINE_OPTIONS[k] not in names]
        if unused:
            raise InvalidInput(
                f"--{unused[0].replace('_', '-')} applies to --engine {ENGINE_OPTIONS[unused[0]]}, which is not compared"
            )
    else:  # variants or models: the engine options have nothing to apply to
        build_engine("textbook", **engine_options)
        engines_ = [None] * len(named)
    takes_utilization = [eng is None or engines.profile(eng).fraction_option is None for eng in engines_]
    if utilization is not None and not any(takes_utilization):
        raise InvalidInput("--utilization applies to textbook, hf and llamacpp, none of which is compared")
    subjects = [
        _subject(
            name,
            spec,
            work.model_copy(update={"engine": eng or Engine()}),
            wanted,
            {**hardware, "utilization": utilization if takes else None} if given else None,
        ).model_copy(update={"engine": eng})
        for (name, spec), eng, takes in zip(named, engines_, takes_utilization, strict=True)
    ]
    gpu_spec = presets.load_gpu(gpu, presets_dir) if gpu else None
    result = compare_rows(subjects, work, _kv_dtypes(kv_dtype), gpu_spec, base, "roofline" if roofline else "expected")
    label = gpu_label(gpu_spec, memory) if given else None
    if json_out:
        from kvcalc import documents

        print_json(documents.CompareDocument(**result.model_dump(), gpu=label))
    else:
        from kvcalc import render

        render.compare_tables(result, label, decimal)
    if plot_path is not None:
        from kvcalc import plots

        write_plot(plots.compare_chart(result, label, decimal), plot_path, json_out)


app = single_command(compare)
