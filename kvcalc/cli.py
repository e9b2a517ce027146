"""The kvcalc command line: parse, call the core, render. No formulas here."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from kvcalc import capacity, latency, presets, render
from kvcalc.errors import DoesNotFit, InvalidInput, KvcalcError
from kvcalc.kvcache import estimate_kv
from kvcalc.spec import GpuSpec, ModelSpec, Workload
from kvcalc.units import SIZE_HELP, DType, parse_dtype, parse_size

app = typer.Typer(
    help="KV-cache and GPU-memory calculator for LLM inference. Sizes print in GiB (2^30) unless --units gb (10^9).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
presets_app = typer.Typer(help="List and show the model and GPU presets.", no_args_is_help=True)
app.add_typer(presets_app, name="presets")

F = TypeVar("F", bound=Callable[..., Any])


def reports_errors(command: F) -> F:
    """Turn KvcalcError into a one-line message on stderr and its exit code (2 bad input, 1 does not fit)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except KvcalcError as exc:
            render.error(str(exc))
            raise typer.Exit(exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Preset name, a model YAML file, or a Hugging Face config.json.")]
SeqOpt = Annotated[int, typer.Option("--seq", "-s", help="Context length in tokens (prompt + generated).")]
BatchOpt = Annotated[int, typer.Option("--batch", "-b", help="Concurrent sequences.")]
KvDtypeOpt = Annotated[str | None, typer.Option("--kv-dtype", help=f"KV-cache dtype (default: the model's): {', '.join(d.value for d in DType)}.")]
WeightDtypeOpt = Annotated[str | None, typer.Option("--weight-dtype", help="Weights dtype (default: the model's checkpoint dtype); int4 counts group scales (4.25 bits).")]
TpOpt = Annotated[int, typer.Option("--tp", help="Tensor-parallel GPUs: KV heads split across them (replicated when tp > KV heads).")]
PpOpt = Annotated[int, typer.Option("--pp", help="Pipeline-parallel stages: layers split across them.")]
BlockOpt = Annotated[int | None, typer.Option("--block-size", help="Paged allocation: round each layer's tokens up to pages of N (vLLM: 16). Default: exact.")]
GpuOpt = Annotated[str | None, typer.Option("--gpu", "-g", help="GPU preset name or GPU YAML file.")]
MemoryOpt = Annotated[str | None, typer.Option("--memory", help=f"GPU memory, overriding the preset's: {SIZE_HELP}.")]
UtilOpt = Annotated[float, typer.Option("--utilization", help="Share of GPU memory the engine may use, in (0, 1] (vLLM's default 0.90).")]
ReserveOpt = Annotated[str, typer.Option("--reserve", help="Memory per GPU kept for the CUDA context, workspaces and activations (default 1GiB).")]
PresetsOpt = Annotated[list[Path] | None, typer.Option("--presets", help="Extra presets folder (also $KVCALC_PRESETS); user presets win over shipped ones.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document (integer bytes) instead of tables.")]
ExplainOpt = Annotated[bool, typer.Option("--explain", help="Show each formula with its values filled in.")]
UnitsOpt = Annotated[str, typer.Option("--units", help="Human units: gib (2^30, default) or gb (10^9). Exact bytes are always shown.")]
EfficiencyOpt = Annotated[float, typer.Option("--efficiency", help="Derate peak bandwidth and FLOP/s, in (0, 1]; 1 = ideal roofline.")]


def _positive(**values: int | None) -> None:
    for name, value in values.items():
        if value is not None and value < 1:
            raise InvalidInput(f"--{name.replace('_', '-')} must be a positive integer, got {value}")


def _decimal(units: str) -> bool:
    if units.lower() not in ("gib", "gb"):
        raise InvalidInput(f"--units {units!r}: choose gib or gb")
    return units.lower() == "gb"


def _workload(model: ModelSpec, seq: int, batch: int, kv_dtype: str | None, tp: int, pp: int, block_size: int | None) -> Workload:
    _positive(seq=seq, batch=batch, tp=tp, pp=pp, block_size=block_size)
    if model.max_positions and seq > model.max_positions:
        render.warn(f"--seq {seq:,} exceeds {model.name}'s max positions {model.max_positions:,}; figures computed anyway")
    return Workload(seq=seq, batch=batch, kv_dtype=parse_dtype(kv_dtype) if kv_dtype else None, tp=tp, pp=pp, block_size=block_size)


def _gpu_and_budget(
    model: ModelSpec, workload: Workload, gpu: str | None, memory: str | None, weight_dtype: DType,
    utilization: float, reserve: str, extra: list[Path] | None,
) -> tuple[GpuSpec | None, capacity.Budget]:  # fmt: skip
    gpu_spec = presets.load_gpu(gpu, extra) if gpu else None
    total = capacity.gpu_memory(gpu_spec, parse_size(memory) if memory else None)
    if reserve.strip().startswith("-"):
        raise InvalidInput(f"--reserve {reserve} must not be negative")
    reserve_bytes = 0 if reserve.strip().upper() in ("0", "0B") else parse_size(reserve)
    return gpu_spec, capacity.budget(model, workload, total, weight_dtype, utilization, reserve_bytes)


def _gpu_label(gpu: GpuSpec | None, memory: str | None) -> str:
    return gpu.name if gpu and not memory else f"{memory}" + (f" ({gpu.name})" if gpu else "")


@app.command()
@reports_errors
def size(
    model: ModelOpt,
    seq: SeqOpt,
    batch: BatchOpt = 1,
    kv_dtype: KvDtypeOpt = None,
    weight_dtype: WeightDtypeOpt = None,
    tp: TpOpt = 1,
    pp: PpOpt = 1,
    block_size: BlockOpt = None,
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
    work = _workload(spec, seq, batch, kv_dtype, tp, pp, block_size)
    kv = estimate_kv(spec, work)
    wdtype = capacity.weight_dtype_for(spec, parse_dtype(weight_dtype) if weight_dtype else None)
    params = capacity.count_params(spec)
    weights = capacity.weight_bytes(params.total, wdtype) if params else None
    document: dict[str, Any] = {
        "model": spec.model_dump(mode="json"),
        "kv": kv.model_dump(mode="json"),
        "weights": {"dtype": wdtype.value, "bytes": weights, "params": params.model_dump() if params else None},
    }
    report = step = None
    if gpu or memory:
        gpu_spec, budget = _gpu_and_budget(spec, work, gpu, memory, wdtype, utilization, reserve, presets_dir)
        report = capacity.fit(spec, work, budget)
        document["fit"] = report.model_dump(mode="json")
        if gpu_spec is not None:
            step = latency.decode(spec, work, gpu_spec, wdtype)
            document["decode"] = step.model_dump(mode="json")
    if json_out:
        render.print_json(document)
    else:
        render.kv_table(kv, decimal, explain)
        render.weights_line(params, weights, wdtype.value, decimal)
        if report is not None:
            render.fit_tables(report, spec.name, _gpu_label(gpu_spec, memory), decimal, explain)
        if step is not None:
            render.decode_tables(step, None, decimal, explain)
    if report is not None and not report.fits:
        raise typer.Exit(DoesNotFit.exit_code)


@app.command()
@reports_errors
def fit(
    model: ModelOpt,
    seq: Annotated[int | None, typer.Option("--seq", "-s", help="Context for max batch (default: 8192, or the model's max if smaller).")] = None,
    batch: BatchOpt = 1,
    gpu: GpuOpt = None,
    memory: MemoryOpt = None,
    kv_dtype: KvDtypeOpt = None,
    weight_dtype: WeightDtypeOpt = None,
    tp: TpOpt = 1,
    pp: PpOpt = 1,
    block_size: BlockOpt = None,
    utilization: UtilOpt = capacity.DEFAULT_UTILIZATION,
    reserve: ReserveOpt = "1GiB",
    max_seqs: Annotated[int | None, typer.Option("--max-seqs", help="The engine's cap on concurrent sequences (vLLM max_num_seqs).")] = None,
    presets_dir: PresetsOpt = None,
    json_out: JsonOpt = False,
    explain: ExplainOpt = False,
    units: UnitsOpt = "gib",
) -> None:
    """How many sequences of --seq tokens fit per GPU, and how long a context fits for --batch.

    Exit code 1 when the weights do not fit, or the batch does not fit at --seq (or at any context
    when --seq is not given); the shortfall is printed.
    """
    decimal = _decimal(units)
    spec = presets.load_model(model, presets_dir)
    default_seq = min(8192, spec.max_positions or 8192)
    work = _workload(spec, default_seq if seq is None else seq, batch, kv_dtype, tp, pp, block_size)
    _positive(max_seqs=max_seqs)
    wdtype = capacity.weight_dtype_for(spec, parse_dtype(weight_dtype) if weight_dtype else None)
    gpu_spec, budget = _gpu_and_budget(spec, work, gpu, memory, wdtype, utilization, reserve, presets_dir)
    report = capacity.fit(spec, work, budget, max_seqs)
    if json_out:
        render.print_json({"model": spec.name, "gpu": _gpu_label(gpu_spec, memory), **report.model_dump(mode="json")})
    else:
        render.fit_tables(report, spec.name, _gpu_label(gpu_spec, memory), decimal, explain)
    if not (report.fits if seq is not None else report.max_context > 0):
        raise typer.Exit(DoesNotFit.exit_code)


@app.command()
@reports_errors
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
    wdtype = capacity.weight_dtype_for(spec, parse_dtype(weight_dtype) if weight_dtype else None)
    step = latency.decode(spec, work, gpu_spec, wdtype, efficiency)
    first = latency.prefill(spec, work, gpu_spec, wdtype, efficiency)
    if json_out:
        render.print_json({"decode": step.model_dump(mode="json"), "prefill": first.model_dump(mode="json")})
    else:
        render.decode_tables(step, first, decimal, explain)


@presets_app.command("list")
@reports_errors
def presets_list(presets_dir: PresetsOpt = None, json_out: JsonOpt = False) -> None:
    """Every model and GPU preset, and where it comes from (shipped or a user folder)."""
    document = {
        kind: [{"name": e.name, "origin": e.origin, "path": str(e.path)} for e in presets.list_presets(kind, presets_dir)]
        for kind in ("models", "gpus")
    }
    if json_out:
        render.print_json(document)
    else:
        render.presets_tables(document)


@presets_app.command("show")
@reports_errors
def presets_show(name: Annotated[str, typer.Argument(help="A model or GPU preset name, or a file.")], presets_dir: PresetsOpt = None, json_out: JsonOpt = False) -> None:
    """One preset's fields, validated, with its source."""
    try:
        spec: ModelSpec | GpuSpec = presets.load_model(name, presets_dir)
    except KvcalcError as model_error:
        try:
            spec = presets.load_gpu(name, presets_dir)
        except KvcalcError:
            raise model_error from None
    document = spec.model_dump(mode="json", exclude_none=True)
    if json_out:
        render.print_json(document)
    else:
        render.spec_table(document)
