"""What the commands share: error reporting, warnings, JSON output, the option types (each defined
once; the engine options in kvcalc.cli.engine_options), preset-name completion, and turning options
into a Workload and a GPU budget."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_args

import typer
from pydantic import BaseModel, ValidationError

from kvcalc import engines, kvcache, presets, weights
from kvcalc.cli import KvcalcCommand
from kvcalc.engines import BudgetTerm
from kvcalc.errors import InvalidInput, KvcalcError
from kvcalc.sources import tensor_parallel
from kvcalc.spec import Engine, GpuSpec, Interconnect, ModelSpec, Workload
from kvcalc.units import SIZE_HELP, TOKENS_HELP, WEIGHT_ONLY, DType, parse_dtype, parse_size, parse_tokens

F = TypeVar("F", bound=Callable[..., Any])

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


def single_command(function: Callable[..., Any]) -> typer.Typer:
    """A Typer app of the one command `function`, its errors reported as `reports_errors` says."""
    single = typer.Typer(add_completion=False)
    single.command(cls=KvcalcCommand)(reports_errors(function))
    return single


def print_json(document: BaseModel | dict[str, Any]) -> None:
    """One JSON document on stdout; bytes stay integers."""
    data = document.model_dump(mode="json") if isinstance(document, BaseModel) else document
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def preset_names(*kinds: presets.Kind) -> Callable[[typer.Context, str], list[str]]:
    """Shell completion of preset names, user folders (--presets, $KVCALC_PRESETS) included; none
    when a folder cannot be read (completion must not print an error)."""

    def complete(ctx: typer.Context, incomplete: str) -> list[str]:
        try:
            entries = [e for kind in kinds for e in presets.list_presets(kind, ctx.params.get("presets_dir"))]
        except KvcalcError:
            return []
        return [e.name for e in entries if e.name.startswith(incomplete)]

    return complete


def choices(values: Callable[[], Iterable[str]]) -> Callable[[str], list[str]]:
    """Shell completion of a fixed set of words (dtypes, engines, commands), read when completing."""

    def complete(incomplete: str) -> list[str]:
        return [value for value in values() if value.startswith(incomplete)]

    return complete


def dtype_names() -> list[str]:
    """The dtypes a cache may take (a weight-only format such as fp8_block or q4_k_m is not one)."""
    return [d.value for d in DType if d not in WEIGHT_ONLY]


ParamsOpt = Annotated[
    str | None,
    typer.Option(
        "--params",
        metavar="N",
        help="The model's parameter count (80000000000, 80_000_000_000 or 80e9), where its file gives none (a hybrid's"
        " config.json) or to override it.",
    ),
]
ActiveParamsOpt = Annotated[
    str | None,
    typer.Option("--active-params", metavar="N", help="A MoE's parameters one token touches (3e9), with --params."),
]


def parse_count(flag: str, text: str) -> int:
    """A positive whole count, written with digits, _ or , separators, or in e-notation (80e9)."""
    from decimal import Decimal, InvalidOperation

    spelled = text.strip().replace("_", "").replace(",", "")
    try:
        value = Decimal(spelled) if spelled.isascii() else None
    except InvalidOperation:
        value = None
    if value is None or not value.is_finite() or value != value.to_integral_value() or value < 1:
        raise InvalidInput(f"--{flag} {text!r}: give a positive whole count such as 8030261248 or 8.03e9")
    return int(value)


def with_params(spec: ModelSpec, params: str | None, active_params: str | None) -> ModelSpec:
    """The model with --params and --active-params in place of its own counts (validated as a preset's)."""
    if params is None and active_params is None:
        return spec
    if active_params is not None and params is None and spec.params is None:
        raise InvalidInput("--active-params needs --params too: the model gives no parameter count")
    given = {"params": params, "active_params": active_params}
    counts = {field: parse_count(field.replace("_", "-"), text) for field, text in given.items() if text is not None}
    try:
        return ModelSpec.model_validate({**spec.model_dump(), **counts})
    except ValidationError as exc:
        raise InvalidInput(f"--params: {exc.errors()[0]['msg']}") from None


ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="Preset name, model YAML, config.json, GGUF file, or Hugging Face repo id org/name\\[@revision] (local HF cache first). A name without a slash is a preset; org/name is a repo id unless that file exists.",
        autocompletion=preset_names("models"),
    ),
]


def _tokens(value: str | int) -> int:
    """A token-count option read by parse_tokens (a default is already a count); a bad spelling is a usage error."""
    if isinstance(value, int):
        return value
    try:
        return parse_tokens(value)
    except InvalidInput as exc:
        raise typer.BadParameter(str(exc)) from None


def tokens_option(*names: str, help: str) -> Any:
    """A typer.Option taking a token count spelled 8192, 8_192, 8,192, 8k or 128k."""
    return typer.Option(*names, parser=_tokens, metavar="TOKENS", help=help)


SeqOpt = Annotated[int, tokens_option("--seq", "-s", help=f"Context length in tokens (prompt + generated): {TOKENS_HELP}.")]
BatchOpt = Annotated[int, typer.Option("--batch", "-b", help="Concurrent sequences.")]
KvDtypeOpt = Annotated[
    str | None,
    typer.Option(
        "--kv-dtype",
        help=f"KV-cache dtype (default: the model's): {', '.join(dtype_names())}.",
        autocompletion=choices(dtype_names),
    ),
]
KDtypeOpt = Annotated[
    str | None,
    typer.Option(
        "--k-dtype",
        help="The K cache's dtype, when it differs from --kv-dtype (llama.cpp -ctk).",
        autocompletion=choices(dtype_names),
    ),
]
VDtypeOpt = Annotated[
    str | None,
    typer.Option(
        "--v-dtype",
        help="The V cache's dtype, when it differs from --kv-dtype (llama.cpp -ctv).",
        autocompletion=choices(dtype_names),
    ),
]
StateDtypeOpt = Annotated[
    str | None,
    typer.Option(
        "--state-dtype",
        help="Recurrent state of hybrid models' state layers (textbook; default: the model's dtype): fp32, fp16 or bf16.",
    ),
]
WeightDtypeOpt = Annotated[
    str | None,
    typer.Option(
        "--weight-dtype",
        help="One dtype for every weight (default: the checkpoint's format, e.g. gpt-oss's MXFP4 experts); int4 counts group scales (4.25 bits).",
    ),
]
TP_HELP = "Tensor-parallel GPUs: KV heads split across them (replicated when tp > KV heads); auto: the GPUs in this machine."
TpOpt = Annotated[str, typer.Option("--tp", metavar="N|auto", help=TP_HELP)]
SharedPrefixOpt = Annotated[
    int,
    tokens_option(
        "--shared-prefix",
        help="Prompt tokens every sequence shares (a system prompt), held once for the batch in the engine's whole blocks"
        f" (vllm, sglang, trtllm, textbook): {TOKENS_HELP}.",
    ),
]
InterconnectOpt = Annotated[
    str | None,
    typer.Option(
        "--interconnect",
        help="How the tensor-parallel GPUs talk: nvlink (NVLink or NVSwitch), xgmi, pcie-p2p (PCIe with peer-to-peer), pcie"
        " (through the host); sets the engines' communication buffers. Default: the GPU preset's, else pcie.",
    ),
]
PpOpt = Annotated[int, typer.Option("--pp", help="Pipeline-parallel stages: layers split across them.")]
BlockOpt = Annotated[
    int | None,
    typer.Option("--block-size", help="Paged allocation: round each layer's tokens up to pages of N (vLLM: 16). Default: exact."),
]
GPU_HELP = "GPU preset, a name as nvidia-smi prints it, a GPU YAML file, or auto (this machine's)."
GpuOpt = Annotated[str | None, typer.Option("--gpu", "-g", help=GPU_HELP, autocompletion=preset_names("gpus"))]
MemoryOpt = Annotated[str | None, typer.Option("--memory", help=f"GPU memory, overriding the preset's: {SIZE_HELP}.")]
UtilOpt = Annotated[
    float | None,
    typer.Option(
        "--utilization",
        help="textbook, hf, llamacpp: share of GPU memory used, in (0, 1] (default 0.9); vllm, sglang and trtllm take their own fraction flag.",
    ),
]
ReserveOpt = Annotated[
    str | None,
    typer.Option(
        "--reserve",
        help="Memory per GPU for the CUDA context, workspaces and activations, e.g. 1GiB or 0: textbook, hf and llamacpp default 1GiB;"
        " for vllm, sglang and trtllm it replaces their modelled overheads. Units as --memory.",
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


def plot_option(what: str) -> Any:
    """--plot FILE.png|svg: also draw `what` (needs the [plot] extra)."""
    return typer.Option(
        "--plot",
        metavar="FILE.png|svg",
        help=f'Also draw {what} to a PNG or SVG file (needs matplotlib: pip install "kvcalc\\[plot]").',
    )


def plot_target(plot: str | None) -> Path | None:
    """The --plot file, checked before any work (.png or .svg, its folder, matplotlib); None without --plot."""
    if plot is None:
        return None
    from kvcalc import plots  # only with --plot: matplotlib itself is imported when the figure is drawn

    return plots.target(plot)


def write_plot(chart: Any, path: Path, quiet: bool) -> None:
    """Draw the chart to the --plot file; say where, unless `quiet` (--json: stdout is the document)."""
    from kvcalc import plots

    plots.save(chart, path)
    if not quiet:
        from kvcalc import render

        render.plot_written(path)


EfficiencyOpt = Annotated[
    float | None,
    typer.Option(
        "--efficiency",
        help="Share of peak bandwidth and FLOP/s, in [0.01, 1]: derates the roofline and replaces the engine profile's"
        " efficiencies in the expected time (default: roofline at peak, the profile's shares).",
    ),
]
OverheadOpt = Annotated[
    float | None,
    typer.Option(
        "--overhead-ms",
        help="Fixed cost per layer per decode step in ms, replacing the engine profile's (0.047 with CUDA graphs;"
        " 0.098 for llama.cpp CUDA builds before mid-2024).",
    ),
]
RooflineOpt = Annotated[
    bool,
    typer.Option(
        "--roofline", help="Judge decode by the roofline (every step at peak, no fixed cost) instead of the expected time."
    ),
]


def seconds_per_layer(overhead_ms: float | None) -> float | None:
    """--overhead-ms in seconds (None: the engine profile's)."""
    return None if overhead_ms is None else overhead_ms / 1e3


def positive(**values: int | None) -> None:
    """Refuse a given integer option below 1, naming its flag."""
    for name, value in values.items():
        if value is not None and value < 1:
            raise InvalidInput(f"--{name.replace('_', '-')} must be a positive integer, got {value}")


def decimal_units(units: str) -> bool:
    """--units: True for gb (10^9), False for gib (2^30)."""
    if units.lower() not in ("gib", "gb"):
        raise InvalidInput(f"--units {units!r}: choose gib or gb")
    return units.lower() == "gb"


def build_workload(
    model: ModelSpec,
    seq: int,
    batch: int,
    kv_dtype: str | None,
    tp: int | str,
    pp: int,
    block_size: int | None,
    engine: Engine | None = None,
    state_dtype: str | None = None,
    k_dtype: str | None = None,
    v_dtype: str | None = None,
    shared_prefix: int = 0,
) -> Workload:
    """The Workload of the options, each flag checked; a warning when --seq exceeds the model's max
    positions, and when a --shared-prefix is too short for the engine to hold any of it once."""
    tp = tensor_parallel(tp)  # a count, or auto: the GPUs in this machine
    positive(seq=seq, batch=batch, tp=tp, pp=pp, block_size=block_size)
    if not 0 <= shared_prefix <= seq:
        raise InvalidInput(f"--shared-prefix {shared_prefix:,} must be in [0, --seq {seq:,}]: the prefix is part of the context")
    try:
        work = Workload(
            seq=seq,
            batch=batch,
            kv_dtype=parse_dtype(kv_dtype) if kv_dtype is not None else None,
            state_dtype=parse_dtype(state_dtype) if state_dtype is not None else None,
            k_dtype=parse_dtype(k_dtype) if k_dtype is not None else None,
            v_dtype=parse_dtype(v_dtype) if v_dtype is not None else None,
            tp=tp,
            pp=pp,
            block_size=block_size,
            engine=engine or Engine(),
            shared_prefix=shared_prefix,
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        raise InvalidInput(f"--{str(error['loc'][0]).replace('_', '-')}: {error['msg']}") from None
    warning = engines.beyond_max_positions(model, work)
    if warning:
        warn(warning)
    if shared_prefix and not kvcache.shared_prefix_tokens(kvcache.settled(model, work)):
        block = engines.profile(work.engine).prefix_block(kvcache.settled(model, work))
        warn(
            f"--shared-prefix {shared_prefix:,} is shorter than one block of {block:,} tokens: {work.engine.name} caches none of it"
        )
    return work


def weights_format(spec: ModelSpec, weight_dtype: str | None) -> weights.WeightFormat:
    """--weight-dtype for every weight, else the checkpoint's format."""
    return weights.weight_format(spec, parse_dtype(weight_dtype) if weight_dtype is not None else None)


def size_option(flag: str, text: str, allow_zero: bool = False) -> int:
    """A size option in bytes; its error names the flag."""
    try:
        return parse_size(text, allow_zero)
    except InvalidInput as exc:
        raise InvalidInput(f"--{flag}: {exc}") from None


def hardware_given(gpu: str | None, memory: str | None) -> bool:
    """Whether --gpu or --memory was given; an empty one is refused, not read as absent."""
    for flag, value, what in (("gpu", gpu, "a GPU preset, GPU YAML or auto"), ("memory", memory, "a size such as 80GiB")):
        if value is not None and not value.strip():
            raise InvalidInput(f"--{flag} is empty: give {what}, or leave the option out")
    return gpu is not None or memory is not None


def gpu_and_budget(
    model: ModelSpec, workload: Workload, gpu: str | None, memory: str | None, weights: weights.WeightFormat,
    utilization: float | None, reserve: str | None, extra: list[str] | None, residents: Sequence[BudgetTerm] = (),
    interconnect: str | None = None, memory_in_use: str | None = None,
) -> tuple[GpuSpec | None, engines.Budget]:  # fmt: skip
    """The --gpu preset (if given) and the engine's memory budget per GPU from --gpu/--memory, its
    fraction, --reserve (None: the engine's defaults), --interconnect (None: the preset's) and
    --memory-in-use (None: an empty device), less what else the deployment holds."""
    from kvcalc import capacity  # with a GPU only: `size` without one never imports it

    hardware_given(gpu, memory)
    gpu_spec = presets.load_gpu(gpu, extra) if gpu else None
    total = capacity.gpu_memory(gpu_spec, size_option("memory", memory) if memory else None)
    reserve_bytes = size_option("reserve", reserve, allow_zero=True) if reserve is not None else None
    name = gpu_spec.name if gpu_spec else None
    link = interconnect_option(interconnect) or (gpu_spec.interconnect if gpu_spec else None)
    in_use = size_option("memory-in-use", memory_in_use, allow_zero=True) if memory_in_use is not None else 0
    preset = gpu_spec if not memory else None  # --memory is the total the process sees, as given
    return gpu_spec, capacity.budget(
        model, workload, total, weights, utilization, reserve_bytes, name, residents, link, preset, in_use
    )


def interconnect_option(text: str | None) -> Interconnect | None:
    """--interconnect, checked against the kinds GpuSpec knows."""
    if text is None:
        return None
    kinds = get_args(Interconnect)
    if text.lower() not in kinds:
        raise InvalidInput(f"--interconnect {text!r}: choose {', '.join(kinds[:-1])} or {kinds[-1]}")
    return text.lower()  # type: ignore[return-value]


def gpu_label(gpu: GpuSpec | None, memory: str | None) -> str:
    """The GPU as the tables and JSON name it: the preset, or --memory (and the preset it overrides)."""
    return gpu.name if gpu and not memory else f"{memory}" + (f" ({gpu.name})" if gpu else "")
