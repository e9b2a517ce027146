"""The kvcalc command line: parse, call the core, render. No formulas here."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from typer.core import TyperGroup

try:  # Typer 0.29 vendors click; should it move these, usage errors keep Typer's own boxes
    from typer._click.exceptions import NoArgsIsHelpError, UsageError

    _HELP_ONLY: tuple[type[Exception], ...] = (NoArgsIsHelpError,)
    _USAGE_ERRORS: tuple[type[Exception], ...] = (UsageError,)
except ImportError:  # pragma: no cover
    _HELP_ONLY = _USAGE_ERRORS = ()

from kvcalc import capacity, engines, latency, presets
from kvcalc.base import first_repeated
from kvcalc.compare import DEFAULT_KV_LORA_RANK, DEFAULT_ROPE_DIM, VARIANT_HELP, Subject, derive, parse_variant
from kvcalc.compare import compare as compare_rows
from kvcalc.errors import DoesNotFit, InvalidInput, KvcalcError, PresetNotFound
from kvcalc.kvcache import estimate_kv
from kvcalc.spec import ENGINE_OPTIONS, Engine, GpuSpec, ModelSpec, Workload
from kvcalc.units import SIZE_HELP, DType, parse_dtype, parse_size

F = TypeVar("F", bound=Callable[..., Any])
COMMANDS: dict[str, typer.Typer] = {}  # each command in its own Typer app, in the order --help lists them


class _BuiltOnDemand(Mapping[str, Any]):
    """The commands by name, each built from its Typer app when first looked up: Typer builds a
    command's options from its annotations, which costs start-up time, and a run needs one command."""

    def __init__(self) -> None:
        self._built: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._built:
            self._built[name] = typer.main.get_command(COMMANDS[name])
        return self._built[name]

    def __iter__(self) -> Iterator[str]:
        return iter(COMMANDS)

    def __len__(self) -> int:
        return len(COMMANDS)


class _KvcalcGroup(TyperGroup):
    """Commands built on demand; a usage error (missing option, bad value) is one line on stderr, exit 2."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = _BuiltOnDemand()

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        with _one_line_usage_errors():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: Any) -> Any:
        with _one_line_usage_errors():
            return super().invoke(ctx)


@contextmanager
def _one_line_usage_errors() -> Iterator[None]:
    try:
        yield
    except _HELP_ONLY:
        raise  # `kvcalc` or `kvcalc presets` alone prints its help
    except _USAGE_ERRORS as exc:
        from kvcalc import render

        where = exc.ctx.command_path if exc.ctx else "kvcalc"
        render.error(f"{exc.format_message().rstrip('.')} (see {where} --help)")
        raise typer.Exit(exc.exit_code) from None


app = typer.Typer(
    cls=_KvcalcGroup,
    help="KV-cache and GPU-memory calculator for LLM inference. Sizes print in GiB (2^30) unless --units gb (10^9).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _print_version(asked: bool) -> None:
    if asked:
        import kvcalc

        print(f"kvcalc {kvcalc.__version__}")
        raise typer.Exit()


@app.callback()
def _kvcalc(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print kvcalc's version and exit.")
    ] = False,
) -> None:
    """The commands are registered in COMMANDS and built on demand; Typer needs a callback to make `app` a group."""


_warnings: list[str] = []  # the running command's warnings, printed when it ends unless a KvcalcError replaces them


def warn(message: str) -> None:
    """A warning on stderr when the command ends; an error (any KvcalcError, "does not fit" included) replaces it."""
    _warnings.append(message)


def reports_errors(command: F) -> F:
    """Turn KvcalcError into a one-line message on stderr and its exit code (2 bad input, 1 does not
    fit); print the command's warnings when it ends otherwise."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except KvcalcError as exc:
            from kvcalc import render

            _warnings.clear()
            render.error(str(exc))
            raise typer.Exit(exc.exit_code) from None
        finally:
            if _warnings:
                from kvcalc import render

                for message in _warnings:
                    render.warn(message)
                _warnings.clear()

    return wrapper  # type: ignore[return-value]


def command(function: F) -> F:
    """Register `function` as the kvcalc command of its name (underscores become dashes)."""
    single = typer.Typer(add_completion=False)
    single.command()(reports_errors(function))
    COMMANDS[function.__name__.replace("_", "-")] = single
    return function


presets_app = typer.Typer(
    name="presets", help="List and show the model and GPU presets.", no_args_is_help=True, add_completion=False
)


def print_json(document: BaseModel | dict[str, Any]) -> None:
    """One JSON document on stdout; bytes stay integers."""
    data = document.model_dump(mode="json") if isinstance(document, BaseModel) else document
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def _preset_names(*kinds: presets.Kind) -> Callable[[typer.Context, str], list[str]]:
    """Shell completion of preset names, user folders (--presets, $KVCALC_PRESETS) included; none
    when a folder cannot be read (completion must not print an error)."""

    def complete(ctx: typer.Context, incomplete: str) -> list[str]:
        try:
            entries = [e for kind in kinds for e in presets.list_presets(kind, ctx.params.get("presets_dir"))]
        except KvcalcError:
            return []
        return [e.name for e in entries if e.name.startswith(incomplete)]

    return complete


ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="Preset name, a model YAML file, or a Hugging Face config.json.",
        autocompletion=_preset_names("models"),
    ),
]
SeqOpt = Annotated[int, typer.Option("--seq", "-s", help="Context length in tokens (prompt + generated).")]
BatchOpt = Annotated[int, typer.Option("--batch", "-b", help="Concurrent sequences.")]
KvDtypeOpt = Annotated[
    str | None, typer.Option("--kv-dtype", help=f"KV-cache dtype (default: the model's): {', '.join(d.value for d in DType)}.")
]
KvDtypesOpt = Annotated[
    str | None,
    typer.Option("--kv-dtype", help="KV-cache dtypes, comma-separated (fp16,fp8,q4_0), each compared (default: the model's)."),
]
WeightDtypeOpt = Annotated[
    str | None,
    typer.Option(
        "--weight-dtype",
        help="One dtype for every weight (default: the checkpoint's format, e.g. gpt-oss's MXFP4 experts); int4 counts group scales (4.25 bits).",
    ),
]
TpOpt = Annotated[
    int, typer.Option("--tp", help="Tensor-parallel GPUs: KV heads split across them (replicated when tp > KV heads).")
]
PpOpt = Annotated[int, typer.Option("--pp", help="Pipeline-parallel stages: layers split across them.")]
BlockOpt = Annotated[
    int | None,
    typer.Option("--block-size", help="Paged allocation: round each layer's tokens up to pages of N (vLLM: 16). Default: exact."),
]
GpuOpt = Annotated[
    str | None, typer.Option("--gpu", "-g", help="GPU preset name or GPU YAML file.", autocompletion=_preset_names("gpus"))
]
MemoryOpt = Annotated[str | None, typer.Option("--memory", help=f"GPU memory, overriding the preset's: {SIZE_HELP}.")]
UtilOpt = Annotated[
    float, typer.Option("--utilization", help="Share of GPU memory the engine may use, in (0, 1] (vLLM's default 0.90).")
]
ReserveOpt = Annotated[
    str,
    typer.Option(
        "--reserve",
        help="Memory per GPU kept for the CUDA context, workspaces and activations, e.g. 1GiB (the default) or 0; units as --memory.",
    ),
]
PresetsOpt = Annotated[
    list[str] | None,
    typer.Option("--presets", help="Extra presets folder (also $KVCALC_PRESETS); user presets win over shipped ones."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document (integer bytes) instead of tables.")]
ExplainOpt = Annotated[bool, typer.Option("--explain", help="Show each formula with its values filled in.")]
UnitsOpt = Annotated[
    str, typer.Option("--units", help="Human units: gib (2^30, default) or gb (10^9). Exact bytes are always shown.")
]
EfficiencyOpt = Annotated[
    float, typer.Option("--efficiency", help="Derate peak bandwidth and FLOP/s, in [0.01, 1]; 1 = ideal roofline.")
]


EngineOpt = Annotated[
    str,
    typer.Option(
        "--engine", help="Allocation rules: textbook (exact, default), hf (transformers), vllm, llamacpp. See docs/engines.md."
    ),
]
HfVersionOpt = Annotated[
    int | None, typer.Option("--hf-version", help="hf: transformers major version, 4 or 5 (default 5; DeepSeek MLA).")
]
MaxCacheLenOpt = Annotated[
    int | None, typer.Option("--max-cache-len", help="hf: StaticCache length in tokens (default: DynamicCache).")
]
SwaFullOpt = Annotated[
    str | None, typer.Option("--swa-full", help="llamacpp: true (default) or false: full-size cache for SWA layers.")
]
UbatchOpt = Annotated[
    int | None, typer.Option("--ubatch", help="llamacpp: n_ubatch (default 512), sizes the SWA cache with --swa-full false.")
]
KvUnifiedOpt = Annotated[
    str | None, typer.Option("--kv-unified", help="llamacpp: true or false (default): one buffer shared by all sequences.")
]
FlashAttnOpt = Annotated[
    str | None,
    typer.Option(
        "--flash-attn",
        help="llamacpp: true or false (default auto, which turns it on for a quantized V cache; false refuses one).",
    ),
]
MaxBatchedOpt = Annotated[
    int | None,
    typer.Option(
        "--max-num-batched-tokens", help="vllm: tokens per scheduler step (default 8192), sizes sliding-window reservations."
    ),
]


ENGINE_NAMES = ("textbook", "hf", "vllm", "llamacpp")
_BOOL_OPTIONS = ("swa_full", "kv_unified", "flash_attn")


def _bool_flag(name: str, text: str | None) -> bool | None:
    if text is None:
        return None
    if text.lower() not in ("true", "false", "yes", "no", "1", "0", "on", "off"):
        raise InvalidInput(f"--{name} {text!r}: use true or false")
    return text.lower() in ("true", "yes", "1", "on")


def _engine(name: str, **options: Any) -> Engine:
    """The --engine profile with its options (Engine's field names; true/false text for the boolean
    ones); an option of another engine is an error."""
    _positive(**{k: v for k, v in options.items() if k not in _BOOL_OPTIONS and k != "hf_version"})
    options = {k: _bool_flag(k.replace("_", "-"), v) if k in _BOOL_OPTIONS else v for k, v in options.items()}
    try:
        return Engine(name=name.lower(), **options)
    except ValidationError as exc:
        error = exc.errors()[0]
        if error["loc"] == ("name",):
            raise InvalidInput(f"unknown --engine {name!r}: choose textbook, hf, vllm or llamacpp") from None
        field = "--" + str(error["loc"][0]).replace("_", "-") + ": " if error["loc"] else ""
        raise InvalidInput(field + str(error["msg"]).removeprefix("Value error, ")) from None


def _engine_options(arguments: dict[str, Any]) -> dict[str, Any]:
    """The engine options given on the command line, picked from a command's arguments (`locals()`):
    the option parameters are named as Engine's fields."""
    return {k: v for k, v in arguments.items() if k in ENGINE_OPTIONS and v is not None}


def _positive(**values: int | None) -> None:
    for name, value in values.items():
        if value is not None and value < 1:
            raise InvalidInput(f"--{name.replace('_', '-')} must be a positive integer, got {value}")


def _decimal(units: str) -> bool:
    if units.lower() not in ("gib", "gb"):
        raise InvalidInput(f"--units {units!r}: choose gib or gb")
    return units.lower() == "gb"


def _workload(
    model: ModelSpec,
    seq: int,
    batch: int,
    kv_dtype: str | None,
    tp: int,
    pp: int,
    block_size: int | None,
    engine: Engine | None = None,
) -> Workload:
    _positive(seq=seq, batch=batch, tp=tp, pp=pp, block_size=block_size)
    try:
        work = Workload(
            seq=seq,
            batch=batch,
            kv_dtype=parse_dtype(kv_dtype) if kv_dtype is not None else None,
            tp=tp,
            pp=pp,
            block_size=block_size,
            engine=engine or Engine(),
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        raise InvalidInput(f"--{str(error['loc'][0]).replace('_', '-')}: {error['msg']}") from None
    warning = engines.beyond_max_positions(model, work)
    if warning:
        warn(warning)
    return work


def _weights(spec: ModelSpec, weight_dtype: str | None) -> capacity.WeightFormat:
    """--weight-dtype for every weight, else the checkpoint's format."""
    return capacity.weight_format(spec, parse_dtype(weight_dtype) if weight_dtype is not None else None)


def _size(flag: str, text: str, allow_zero: bool = False) -> int:
    """A size option in bytes; its error names the flag."""
    try:
        return parse_size(text, allow_zero)
    except InvalidInput as exc:
        raise InvalidInput(f"--{flag}: {exc}") from None


def _gpu_and_budget(
    model: ModelSpec, workload: Workload, gpu: str | None, memory: str | None, weights: capacity.WeightFormat,
    utilization: float, reserve: str, extra: list[str] | None,
) -> tuple[GpuSpec | None, capacity.Budget]:  # fmt: skip
    gpu_spec = presets.load_gpu(gpu, extra) if gpu else None
    total = capacity.gpu_memory(gpu_spec, _size("memory", memory) if memory else None)
    reserve_bytes = _size("reserve", reserve, allow_zero=True)
    return gpu_spec, capacity.budget(model, workload, total, weights, utilization, reserve_bytes)


def _gpu_label(gpu: GpuSpec | None, memory: str | None) -> str:
    return gpu.name if gpu and not memory else f"{memory}" + (f" ({gpu.name})" if gpu else "")


@command
def size(
    model: ModelOpt,
    seq: SeqOpt,
    batch: BatchOpt = 1,
    kv_dtype: KvDtypeOpt = None,
    weight_dtype: WeightDtypeOpt = None,
    tp: TpOpt = 1,
    pp: PpOpt = 1,
    block_size: BlockOpt = None,
    engine: EngineOpt = "textbook",
    hf_version: HfVersionOpt = None,
    max_cache_len: MaxCacheLenOpt = None,
    swa_full: SwaFullOpt = None,
    ubatch: UbatchOpt = None,
    kv_unified: KvUnifiedOpt = None,
    flash_attn: FlashAttnOpt = None,
    max_num_batched_tokens: MaxBatchedOpt = None,
    gpu: GpuOpt = None,
    memory: MemoryOpt = None,
    utilization: UtilOpt = capacity.DEFAULT_UTILIZATION,
    reserve: ReserveOpt = "1GiB",
    presets_dir: PresetsOpt = None,
    json_out: JsonOpt = False,
    explain: ExplainOpt = False,
    units: UnitsOpt = "gib",
) -> None:
    """KV-cache bytes per token, per sequence and for the batch; the weights; with --gpu or --memory, what fits and the decode bound.

    Example: kvcalc size --model llama3-8b --seq 8192 --batch 16 --kv-dtype fp8
    """
    decimal = _decimal(units)
    spec = presets.load_model(model, presets_dir)
    work = _workload(spec, seq, batch, kv_dtype, tp, pp, block_size, _engine(engine, **_engine_options(locals())))
    kv = estimate_kv(spec, work)
    weights_fmt = _weights(spec, weight_dtype)
    params = capacity.count_params(spec)
    weights = capacity.weight_bytes(params, weights_fmt) if params else None
    report = step = None
    if gpu or memory:
        gpu_spec, budget = _gpu_and_budget(spec, work, gpu, memory, weights_fmt, utilization, reserve, presets_dir)
        report = capacity.fit(spec, work, budget)
        if gpu_spec is not None:
            step = latency.decode(spec, work, gpu_spec, weights_fmt)
    if json_out:
        from kvcalc import documents

        weights_doc = documents.Weights(
            dtype=weights_fmt.dtype,
            embeddings_dtype=weights_fmt.other_than_layers(weights_fmt.embeddings),
            experts_dtype=weights_fmt.other_than_layers(weights_fmt.experts),
            bytes=weights,
            params=params,
        )
        print_json(documents.SizeDocument(model=spec, kv=kv, weights=weights_doc, fit=report, decode=step))
    else:
        from kvcalc import render

        render.kv_table(kv, decimal, explain)
        render.weights_line(params, weights, weights_fmt.label, decimal, capacity.unknown_weights(spec))
        if report is not None:
            render.fit_tables(report, spec.name, _gpu_label(gpu_spec, memory), decimal, explain)
        if step is not None:
            render.decode_tables(step, None, decimal, explain)
    if report is not None and not report.fits:
        raise typer.Exit(DoesNotFit.exit_code)


@command
def fit(
    model: ModelOpt,
    seq: Annotated[
        int | None, typer.Option("--seq", "-s", help="Context for max batch (default: 8192, or the model's max if smaller).")
    ] = None,
    batch: BatchOpt = 1,
    gpu: GpuOpt = None,
    memory: MemoryOpt = None,
    kv_dtype: KvDtypeOpt = None,
    weight_dtype: WeightDtypeOpt = None,
    tp: TpOpt = 1,
    pp: PpOpt = 1,
    block_size: BlockOpt = None,
    engine: EngineOpt = "textbook",
    hf_version: HfVersionOpt = None,
    max_cache_len: MaxCacheLenOpt = None,
    swa_full: SwaFullOpt = None,
    ubatch: UbatchOpt = None,
    kv_unified: KvUnifiedOpt = None,
    flash_attn: FlashAttnOpt = None,
    max_num_batched_tokens: MaxBatchedOpt = None,
    utilization: UtilOpt = capacity.DEFAULT_UTILIZATION,
    reserve: ReserveOpt = "1GiB",
    max_seqs: Annotated[
        int | None, typer.Option("--max-seqs", help="The engine's cap on concurrent sequences (vLLM max_num_seqs).")
    ] = None,
    presets_dir: PresetsOpt = None,
    json_out: JsonOpt = False,
    explain: ExplainOpt = False,
    units: UnitsOpt = "gib",
) -> None:
    """How many sequences of --seq tokens fit per GPU, and how long a context fits for --batch.

    Exit code 1 when the weights do not fit, or the batch does not fit at --seq (or at any context when --seq is not given); the shortfall is printed.
    """
    decimal = _decimal(units)
    spec = presets.load_model(model, presets_dir)
    default_seq = min(8192, spec.max_positions or 8192)
    engine_spec = _engine(engine, **_engine_options(locals()))
    work = _workload(spec, default_seq if seq is None else seq, batch, kv_dtype, tp, pp, block_size, engine_spec)
    _positive(max_seqs=max_seqs)
    weights_fmt = _weights(spec, weight_dtype)
    gpu_spec, budget = _gpu_and_budget(spec, work, gpu, memory, weights_fmt, utilization, reserve, presets_dir)
    report = capacity.fit(spec, work, budget, max_seqs)
    if json_out:
        from kvcalc import documents

        print_json(documents.FitDocument(**report.model_dump(), model=spec.name, gpu=_gpu_label(gpu_spec, memory)))
    else:
        from kvcalc import render

        render.fit_tables(report, spec.name, _gpu_label(gpu_spec, memory), decimal, explain)
    if not (report.fits if seq is not None else report.max_context > 0):
        raise typer.Exit(DoesNotFit.exit_code)


@command
def decode(
    model: ModelOpt,
    gpu: Annotated[str, typer.Option("--gpu", "-g", help="GPU preset name or GPU YAML file.")],
    seq: SeqOpt = 8192,
    batch: BatchOpt = 1,
    kv_dtype: KvDtypeOpt = None,
    weight_dtype: WeightDtypeOpt = None,
    tp: TpOpt = 1,
    block_size: BlockOpt = None,
    efficiency: EfficiencyOpt = 1.0,
    presets_dir: PresetsOpt = None,
    json_out: JsonOpt = False,
    explain: ExplainOpt = False,
    units: UnitsOpt = "gib",
) -> None:
    """Time per output token at --batch and --seq (roofline: bandwidth vs compute), tokens/s, and prefill time."""
    decimal = _decimal(units)
    spec = presets.load_model(model, presets_dir)
    work = _workload(spec, seq, batch, kv_dtype, tp, 1, block_size)
    gpu_spec = presets.load_gpu(gpu, presets_dir)
    weights_fmt = _weights(spec, weight_dtype)
    step = latency.decode(spec, work, gpu_spec, weights_fmt, efficiency)
    first = latency.prefill(spec, work, gpu_spec, weights_fmt, efficiency)
    if json_out:
        from kvcalc import documents

        print_json(documents.DecodeDocument(decode=step, prefill=first))
    else:
        from kvcalc import render

        render.decode_tables(step, first, decimal, explain)


COMPARE_MODEL = "llama3-8b"  # the variants' model when --model is not given: a Llama-3-8B shape
NamesArg = Annotated[list[str], typer.Argument(help=f"Variants of --model ({VARIANT_HELP}), or models.", show_default=False)]
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


def _shared_workload(models: list[ModelSpec], seq: int, batch: int, tp: int) -> Workload:
    """One workload for every compared model; each warns when --seq exceeds its max positions."""
    return [_workload(model, seq, batch, None, tp, 1, None) for model in models][0]


def _subject(name: str, spec: ModelSpec, work: Workload, wanted: DType | None, hardware: dict[str, Any] | None) -> Subject:
    """One compared model with its weights' dtype and, given --gpu or --memory, its budget per GPU."""
    weights = capacity.weight_format(spec, wanted)
    budget = _gpu_and_budget(spec, work, weights=weights, **hardware)[1] if hardware else None
    return Subject(name=name, spec=spec, weights=weights, budget=budget)


@command
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
    utilization: UtilOpt = capacity.DEFAULT_UTILIZATION,
    reserve: ReserveOpt = "1GiB",
    hf_version: HfVersionOpt = None,
    max_cache_len: MaxCacheLenOpt = None,
    swa_full: SwaFullOpt = None,
    ubatch: UbatchOpt = None,
    kv_unified: KvUnifiedOpt = None,
    flash_attn: FlashAttnOpt = None,
    max_num_batched_tokens: MaxBatchedOpt = None,
    kv_lora_rank: KvLoraRankOpt = DEFAULT_KV_LORA_RANK,
    rope_dim: RopeDimOpt = DEFAULT_ROPE_DIM,
    presets_dir: PresetsOpt = None,
    json_out: JsonOpt = False,
    units: UnitsOpt = "gib",
) -> None:
    """Attention variants of one model side by side (KV bytes, savings; with --gpu what fits and decode), or several models.

    Examples: kvcalc compare mha gqa:4 gqa:8 mqa mla --model llama3-8b; kvcalc compare llama3-8b mistral-7b --gpu l40s
    """
    decimal = _decimal(units)
    _positive(kv_lora_rank=kv_lora_rank, rope_dim=rope_dim)
    # engine and variant names are case-blind (VLLM as --engine reads it, GQA:4); model names and paths are not
    names = [name.lower() if name.lower() in ENGINE_NAMES or parse_variant(name) else name for name in names]
    base, named = _compared_models(names, model, kv_lora_rank, rope_dim, presets_dir)
    work = _shared_workload([base] if base else [spec for _, spec in named], seq, batch, tp)
    hardware = {"gpu": gpu, "memory": memory, "utilization": utilization, "reserve": reserve, "extra": presets_dir}
    wanted = parse_dtype(weight_dtype) if weight_dtype is not None else None
    given = _engine_options(locals())
    if base is not None and not named:  # engines side by side: each takes the options that apply to it
        named = [(name, base) for name in names]
        engines_ = [_engine(name, **{k: v for k, v in given.items() if ENGINE_OPTIONS[k] == name}) for name in names]
        unused = [k for k in given if ENGINE_OPTIONS[k] not in names]
        if unused:
            raise InvalidInput(
                f"--{unused[0].replace('_', '-')} applies to --engine {ENGINE_OPTIONS[unused[0]]}, which is not compared"
            )
    else:  # variants or models: the engine options have nothing to apply to
        _engine("textbook", **given)
        engines_ = [None] * len(named)
    subjects = [
        _subject(
            name, spec, work.model_copy(update={"engine": eng or Engine()}), wanted, hardware if gpu or memory else None
        ).model_copy(update={"engine": eng})
        for (name, spec), eng in zip(named, engines_, strict=True)
    ]
    gpu_spec = presets.load_gpu(gpu, presets_dir) if gpu else None
    result = compare_rows(subjects, work, _kv_dtypes(kv_dtype), gpu_spec, base)
    label = _gpu_label(gpu_spec, memory) if gpu or memory else None
    if json_out:
        from kvcalc import documents

        print_json(documents.CompareDocument(**result.model_dump(), gpu=label))
    else:
        from kvcalc import render

        render.compare_tables(result, label, decimal)


@presets_app.command("list")
@reports_errors
def presets_list(presets_dir: PresetsOpt = None, json_out: JsonOpt = False) -> None:
    """Every model and GPU preset, and where it comes from (shipped or a user folder)."""
    from kvcalc import documents

    document = documents.PresetsDocument(
        models=presets.list_presets("models", presets_dir), gpus=presets.list_presets("gpus", presets_dir)
    )
    if json_out:
        print_json(document)
    else:
        from kvcalc import render

        render.presets_tables(document.model_dump(mode="json", exclude={"version"}))


@presets_app.command("show")
@reports_errors
def presets_show(
    name: Annotated[
        str, typer.Argument(help="A model or GPU preset name, or a file.", autocompletion=_preset_names("models", "gpus"))
    ],
    presets_dir: PresetsOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """One preset's fields, validated, with its source."""
    spec = presets.load_any(name, presets_dir)
    if json_out:
        from kvcalc import documents

        print_json(documents.PresetDocument(kind="model" if isinstance(spec, ModelSpec) else "gpu", spec=spec))
    else:
        from kvcalc import render

        render.spec_table(spec.model_dump(mode="json", exclude_none=True))


@command
def measure(
    gpu_flag: Annotated[bool, typer.Option("--gpu", help="Measure on the CUDA GPU (same as --device cuda).")] = False,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda\\[:N].")] = "cpu",
    model: Annotated[
        str,
        typer.Option(
            "--model", "-m", help="Preset name or model file (default: llama3-8b).", autocompletion=_preset_names("models")
        ),
    ] = "llama3-8b",
    seq: Annotated[int | None, typer.Option("--seq", "-s", help="Context in tokens (default: 8192 on GPU, 2048 on CPU).")] = None,
    batch: Annotated[int | None, typer.Option("--batch", "-b", help="Sequences (default: 8 on GPU, 1 on CPU).")] = None,
    layers: Annotated[
        int | None, typer.Option("--layers", help="Measure only the first N layers (predictions scale alike).")
    ] = None,
    kv_dtype: Annotated[
        str | None, typer.Option("--kv-dtype", help="fp32, fp16 or bf16 (default: bf16 on GPU, fp32 on CPU).")
    ] = None,
    variants: Annotated[
        str | None, typer.Option("--variants", help="Comma list of attention variants to measure: mha, gqa, gqa:G, mqa, mla.")
    ] = None,
    gpu_preset: Annotated[
        str | None,
        typer.Option(
            "--gpu-preset",
            help="GPU preset for the peak-bandwidth prediction (default: recognised from the device name).",
            autocompletion=_preset_names("gpus"),
        ),
    ] = None,
    max_memory: Annotated[
        str | None,
        typer.Option(
            "--max-memory", help=f"Take at most this much memory, per rank (CPU default: 4 GiB over all ranks): {SIZE_HELP}."
        ),
    ] = None,
    tp: Annotated[
        int,
        typer.Option(
            "--tp",
            help="Tensor-parallel ranks, one process each (gloo on cpu, NCCL on cuda): each allocates and times its shard."
            " CPU: at most 4 per core and 64.",
        ),
    ] = 1,
    presets_dir: PresetsOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Allocate the predicted KV cache on a real device, check its bytes, and time SDPA GQA decode against the roofline (needs torch: pip install "kvcalc\\[measure]").

    When the cache does not fit in free memory it measures fewer layers, then a smaller batch, and says so. Out of memory is reported (exit 1) after freeing every tensor.
    """
    from kvcalc import documents, render
    from kvcalc.measure.runner import measure as run_measure

    device = "cuda" if gpu_flag else device
    on_gpu = device.startswith("cuda")
    _positive(seq=seq, batch=batch, layers=layers, tp=tp)
    spec = presets.load_model(model, presets_dir)
    default_dtype = "bf16" if on_gpu else "fp32"
    work = _workload(
        spec, seq or (8192 if on_gpu else 2048), batch or (8 if on_gpu else 1), kv_dtype or default_dtype, 1, 1, None
    )
    subjects = [(spec.name, spec)]
    if variants:
        parsed = [(name, parse_variant(name)) for name in variants.split(",")]
        unknown = [name for name, v in parsed if v is None]
        if unknown:
            raise InvalidInput(f"unknown variant {unknown[0]!r}: choose mha, gqa, gqa:G, mqa or mla")
        subjects = [(v.name, derive(spec, v)) for _, v in parsed if v is not None]
    peak = presets.load_gpu(gpu_preset, presets_dir) if gpu_preset else None
    limit = _size("max-memory", max_memory) if max_memory else None
    with render.progress(enabled=not json_out) as step:
        report = run_measure(subjects, work, device, layers, limit, peak, step, tp)
    if json_out:
        print_json(documents.MeasureDocument.of(report))
    else:
        render.measure_tables(report, decimal=False)


@command
def check(
    plan: Annotated[Path, typer.Argument(help="Plan YAML: presets to add and workloads with their expectations (see README).")],
    json_out: JsonOpt = False,
) -> None:
    """CI budget check: exit 0 when every workload meets its expectations, 1 when one does not, 2 on a bad file."""
    from kvcalc.check import CheckReport, Plan, check_workload

    plan_spec, sources = presets.load_plan(plan, Plan)
    verdicts = []
    for planned in plan_spec.workloads:
        where = f"{plan}: workload {planned.name!r}"
        try:
            model_spec = sources.resolve("models", planned.model)
            gpu_spec = sources.resolve("gpus", planned.gpu) if planned.gpu else None
            verdicts.append(check_workload(planned, model_spec, gpu_spec))
        except KvcalcError as exc:
            raise type(exc)(f"{where}: {exc}") from None
    report = CheckReport(passed=all(v.passed for v in verdicts), workloads=verdicts)
    for verdict in verdicts:
        for warning in verdict.warnings:
            warn(f"{plan}: workload {verdict.name!r}: {warning}")
    if json_out:
        print_json(report)
    else:
        from kvcalc import render

        render.check_table(report)
    if not report.passed:
        raise typer.Exit(DoesNotFit.exit_code)


JSON_COMMANDS = ("size", "fit", "decode", "compare", "measure", "check", "presets-list", "presets-show")  # = documents.SCHEMAS


@command
def schema(
    command: Annotated[str, typer.Argument(help=f"One of: {', '.join(JSON_COMMANDS)}.")],
) -> None:
    """The JSON Schema of a command's --json document (generated from its result model; `version` marks breaking changes)."""
    from kvcalc import documents

    if command not in documents.SCHEMAS:
        raise InvalidInput(f"no command {command!r} prints JSON; choose one of {', '.join(documents.SCHEMAS)}")
    print_json(documents.SCHEMAS[command].model_json_schema())


COMMANDS["presets"] = presets_app
