"""What the commands share: error reporting, warnings, JSON output, the option types (each defined
once), preset-name completion, and turning options into a Workload, an Engine and a GPU budget."""

from __future__ import annotations

import functools
import inspect
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError

from kvcalc import capacity, engines, presets
from kvcalc.cli import KvcalcCommand
from kvcalc.errors import InvalidInput, KvcalcError
from kvcalc.sources import tensor_parallel
from kvcalc.spec import Engine, GpuSpec, ModelSpec, Workload
from kvcalc.units import SIZE_HELP, TOKENS_HELP, DType, parse_dtype, parse_size, parse_tokens

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
    str | None, typer.Option("--kv-dtype", help=f"KV-cache dtype (default: the model's): {', '.join(d.value for d in DType)}.")
]
KDtypeOpt = Annotated[
    str | None, typer.Option("--k-dtype", help="The K cache's dtype, when it differs from --kv-dtype (llama.cpp -ctk).")
]
VDtypeOpt = Annotated[
    str | None, typer.Option("--v-dtype", help="The V cache's dtype, when it differs from --kv-dtype (llama.cpp -ctv).")
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
TpOpt = Annotated[
    str,
    typer.Option(
        "--tp",
        metavar="N|auto",
        help="Tensor-parallel GPUs: KV heads split across them (replicated when tp > KV heads); auto: the GPUs in this machine.",
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


EngineOpt = Annotated[
    str,
    typer.Option(
        "--engine",
        help="Allocation rules, memory budget and decode profile: textbook (exact, default), hf (transformers), vllm, llamacpp,"
        " sglang, trtllm. See docs/engines.md.",
    ),
]
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
HfVersionOpt = Annotated[
    int | None, typer.Option("--hf-version", help="hf: transformers major version, 4 or 5 (default 5; DeepSeek MLA).")
]
MaxCacheLenOpt = Annotated[
    int | None, tokens_option("--max-cache-len", help="hf: StaticCache length in tokens (default: DynamicCache).")
]
SwaFullOpt = Annotated[
    str | None, typer.Option("--swa-full", help="llamacpp: true (default) or false: full-size cache for SWA layers.")
]
UbatchOpt = Annotated[
    int | None,
    tokens_option("--ubatch", help="llamacpp: n_ubatch in tokens (default 512), sizes the SWA cache with --swa-full false."),
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
    tokens_option(
        "--max-num-batched-tokens",
        help="vllm: tokens per scheduler step, sizes the profiling run and sliding-window reservations (default 8192; 2048 below 70 GiB or on an A100).",
    ),
]
MaxNumSeqsOpt = Annotated[
    int | None,
    typer.Option(
        "--max-num-seqs",
        help="vllm: requests at once, caps max batch and sizes the sampler's profile (default 1024; 256 below 70 GiB or on an A100).",
    ),
]
GpuMemoryUtilizationOpt = Annotated[
    float | None,
    typer.Option("--gpu-memory-utilization", help="vllm: share of total GPU memory it may use, in (0, 1] (default 0.9)."),
]
EnforceEagerOpt = Annotated[
    str | None, typer.Option("--enforce-eager", help="vllm: true or false (default): no CUDA graphs, so no CUDA-graph memory.")
]
KvCacheMemoryOpt = Annotated[
    str | None,
    typer.Option(
        "--kv-cache-memory-bytes",
        help="vllm: the KV cache's size per GPU (20GiB), overriding the profiled budget; units as --memory.",
    ),
]
VllmVersionOpt = Annotated[
    str | None,
    typer.Option(
        "--vllm-version",
        help="vllm: its release, e.g. 0.19: before 0.21 the CUDA-graph estimate is not subtracted (default: 0.21 or later).",
    ),
]
MemFractionStaticOpt = Annotated[
    float | None,
    typer.Option(
        "--mem-fraction-static",
        help="sglang: share of the memory free before loading kept for weights and KV (default from GPU memory).",
    ),
]
MaxTotalTokensOpt = Annotated[int | None, tokens_option("--max-total-tokens", help="sglang: cap on the token pool.")]
PageSizeOpt = Annotated[int | None, typer.Option("--page-size", help="sglang: tokens per page (default 1).")]
SwaFullTokensRatioOpt = Annotated[
    float | None,
    typer.Option(
        "--swa-full-tokens-ratio",
        help="sglang: sliding pool / full pool tokens, in (0, 1] (0.8 where SGLang uses hybrid SWA); given: the hybrid SWA pools.",
    ),
]
MaxRunningRequestsOpt = Annotated[
    int | None,
    typer.Option("--max-running-requests", help="sglang: requests at once, caps max batch and sizes the req_to_token table."),
]
FreeGpuMemoryFractionOpt = Annotated[
    float | None,
    typer.Option(
        "--free-gpu-memory-fraction",
        help="trtllm: share of the memory free after the profiling peak for the KV cache, in (0, 1) (default 0.9).",
    ),
]
TokensPerBlockOpt = Annotated[
    int | None, typer.Option("--tokens-per-block", help="trtllm: tokens per KV block, a power of two (default 32).")
]
MaxTokensOpt = Annotated[int | None, tokens_option("--max-tokens", help="trtllm: cap on the KV cache's tokens.")]
MaxSeqLenOpt = Annotated[
    int | None,
    tokens_option(
        "--max-seq-len",
        help="trtllm: longest request, which sizes the full layers' pool against the window pools (default: the model's max positions).",
    ),
]
MaxNumTokensOpt = Annotated[
    int | None, tokens_option("--max-num-tokens", help="trtllm: tokens of one forward, sizes the profiling run (default 8192).")
]


MambaCacheDtypeOpt = Annotated[
    str | None,
    typer.Option(
        "--mamba-cache-dtype",
        help="vllm: hybrid models' conv state dtype, and the SSM state's unless --mamba-ssm-cache-dtype: auto (the model's), fp32, fp16, bf16.",
    ),
]
MambaSsmCacheDtypeOpt = Annotated[
    str | None,
    typer.Option(
        "--mamba-ssm-cache-dtype",
        help="vllm: hybrid models' SSM (recurrent) state dtype: auto (the config's, else the conv state's), fp32, fp16, bf16.",
    ),
]

MambaSsmDtypeOpt = Annotated[
    str | None,
    typer.Option("--mamba-ssm-dtype", help="sglang: hybrid models' SSM (recurrent) state dtype: fp32 (its default), fp16, bf16."),
]
MambaFullMemoryRatioOpt = Annotated[
    float | None,
    typer.Option(
        "--mamba-full-memory-ratio",
        help="sglang: hybrid models' Mamba pool / token pool bytes (default 0.9): the pool takes ratio/(1+ratio) of the KV budget.",
    ),
]

_BOOL_OPTIONS = ("swa_full", "kv_unified", "flash_attn", "enforce_eager")
_DTYPE_OPTIONS = ("mamba_cache_dtype", "mamba_ssm_cache_dtype")  # "auto": the engine's own choice


def _bool_flag(name: str, text: str | None) -> bool | None:
    if text is None:
        return None
    if text.lower() not in ("true", "false", "yes", "no", "1", "0", "on", "off"):
        raise InvalidInput(f"--{name} {text!r}: use true or false")
    return text.lower() in ("true", "yes", "1", "on")


def build_engine(name: str, **options: Any) -> Engine:
    """The --engine profile with its options (Engine's field names; true/false text for the boolean
    ones); an option of another engine is an error."""
    counts = {
        k: v
        for k, v in options.items()
        if isinstance(v, int) and k not in (*_BOOL_OPTIONS, *_DTYPE_OPTIONS) and k != "hf_version"
    }
    positive(**counts)
    options = {k: _bool_flag(k.replace("_", "-"), v) if k in _BOOL_OPTIONS else v for k, v in options.items()}
    options = {k: v for k, v in options.items() if not (k in _DTYPE_OPTIONS and str(v).lower() == "auto")}
    try:
        return Engine(name=name.lower(), **options)
    except ValidationError as exc:
        error = exc.errors()[0]
        if error["loc"] == ("name",):
            names = list(engines.PROFILES)
            raise InvalidInput(f"unknown --engine {name!r}: choose {', '.join(names[:-1])} or {names[-1]}") from None
        field = "--" + str(error["loc"][0]).replace("_", "-") + ": " if error["loc"] else ""
        raise InvalidInput(field + str(error["msg"]).removeprefix("Value error, ")) from None


ENGINE_OPTION_TYPES: dict[str, Any] = {  # every engine option (spec.ENGINE_OPTIONS) as --help lists them
    "hf_version": HfVersionOpt,
    "max_cache_len": MaxCacheLenOpt,
    "swa_full": SwaFullOpt,
    "ubatch": UbatchOpt,
    "kv_unified": KvUnifiedOpt,
    "flash_attn": FlashAttnOpt,
    "max_num_batched_tokens": MaxBatchedOpt,
    "max_num_seqs": MaxNumSeqsOpt,
    "gpu_memory_utilization": GpuMemoryUtilizationOpt,
    "enforce_eager": EnforceEagerOpt,
    "kv_cache_memory_bytes": KvCacheMemoryOpt,
    "vllm_version": VllmVersionOpt,
    "mamba_cache_dtype": MambaCacheDtypeOpt,
    "mamba_ssm_cache_dtype": MambaSsmCacheDtypeOpt,
    "mem_fraction_static": MemFractionStaticOpt,
    "max_total_tokens": MaxTotalTokensOpt,
    "page_size": PageSizeOpt,
    "swa_full_tokens_ratio": SwaFullTokensRatioOpt,
    "max_running_requests": MaxRunningRequestsOpt,
    "mamba_ssm_dtype": MambaSsmDtypeOpt,
    "mamba_full_memory_ratio": MambaFullMemoryRatioOpt,
    "free_gpu_memory_fraction": FreeGpuMemoryFractionOpt,
    "tokens_per_block": TokensPerBlockOpt,
    "max_tokens": MaxTokensOpt,
    "max_num_tokens": MaxNumTokensOpt,
    "max_seq_len": MaxSeqLenOpt,
}
EngineOptions = dict[str, Any]  # the engine options given on the command line, by Engine's field names


def with_engine_options(*names: str) -> Callable[[F], F]:
    """Give a command the engine options `names` (default: all of ENGINE_OPTION_TYPES), each defined once.

    The command declares a keyword-only placeholder `engine_options: EngineOptions` where the options
    belong in its --help; Typer reads the wrapper's signature, in which the placeholder is replaced by
    the options (each defaulting to None), and the command receives the ones given as that one dict."""
    options = names or tuple(ENGINE_OPTION_TYPES)

    def decorate(command: F) -> F:
        signature = inspect.signature(command, eval_str=True)
        expanded: list[inspect.Parameter] = []
        for param in signature.parameters.values():
            if param.name == "engine_options":
                expanded += [
                    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ENGINE_OPTION_TYPES[name])
                    for name in options
                ]
            else:
                expanded.append(param)

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            given = {name: kwargs.pop(name) for name in options}
            return command(**kwargs, engine_options={k: v for k, v in given.items() if v is not None})

        wrapper.__signature__ = signature.replace(parameters=expanded)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in expanded} | {"return": signature.return_annotation}
        return wrapper  # type: ignore[return-value]

    return decorate


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
) -> Workload:
    """The Workload of the options, each flag checked; a warning when --seq exceeds the model's max positions."""
    tp = tensor_parallel(tp)  # a count, or auto: the GPUs in this machine
    positive(seq=seq, batch=batch, tp=tp, pp=pp, block_size=block_size)
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
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        raise InvalidInput(f"--{str(error['loc'][0]).replace('_', '-')}: {error['msg']}") from None
    warning = engines.beyond_max_positions(model, work)
    if warning:
        warn(warning)
    return work


def weights_format(spec: ModelSpec, weight_dtype: str | None) -> capacity.WeightFormat:
    """--weight-dtype for every weight, else the checkpoint's format."""
    return capacity.weight_format(spec, parse_dtype(weight_dtype) if weight_dtype is not None else None)


def size_option(flag: str, text: str, allow_zero: bool = False) -> int:
    """A size option in bytes; its error names the flag."""
    try:
        return parse_size(text, allow_zero)
    except InvalidInput as exc:
        raise InvalidInput(f"--{flag}: {exc}") from None


def gpu_and_budget(
    model: ModelSpec, workload: Workload, gpu: str | None, memory: str | None, weights: capacity.WeightFormat,
    utilization: float | None, reserve: str | None, extra: list[str] | None,
) -> tuple[GpuSpec | None, capacity.Budget]:  # fmt: skip
    """The --gpu preset (if given) and the engine's memory budget per GPU from --gpu/--memory, its
    fraction and --reserve (None: the engine's defaults)."""
    gpu_spec = presets.load_gpu(gpu, extra) if gpu else None
    total = capacity.gpu_memory(gpu_spec, size_option("memory", memory) if memory else None)
    reserve_bytes = size_option("reserve", reserve, allow_zero=True) if reserve is not None else None
    name = gpu_spec.name if gpu_spec else None
    return gpu_spec, capacity.budget(model, workload, total, weights, utilization, reserve_bytes, name)


def gpu_label(gpu: GpuSpec | None, memory: str | None) -> str:
    """The GPU as the tables and JSON name it: the preset, or --memory (and the preset it overrides)."""
    return gpu.name if gpu and not memory else f"{memory}" + (f" ({gpu.name})" if gpu else "")
