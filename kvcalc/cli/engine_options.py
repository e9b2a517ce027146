"""The engine options: --engine and each engine's own flags (spec.ENGINE_OPTIONS), each defined once,
given to a command by `with_engine_options` and turned into an Engine by `build_engine`."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from kvcalc import engines
from kvcalc.cli.common import F, positive, tokens_option
from kvcalc.errors import InvalidInput
from kvcalc.spec import Engine

EngineOpt = Annotated[
    str,
    typer.Option(
        "--engine",
        help="Allocation rules, memory budget and decode profile: textbook (exact, default), hf (transformers), vllm, llamacpp,"
        " sglang, trtllm. See docs/engines.md.",
    ),
]
MemoryInUseOpt = Annotated[
    str | None,
    typer.Option(
        "--memory-in-use",
        help="Memory per GPU other processes or the OS hold when the engine starts (a shared GPU, a desktop, unified memory),"
        " e.g. 7GiB (default 0: an empty device). sglang and trtllm take their fractions of the memory left free; vllm (V1, 0.9.1 on)"
        " refuses to start when less than total * --gpu-memory-utilization is free; textbook, hf and llamacpp budget"
        " their utilization of what is free (llamacpp places its layers in it). Units as --memory.",
    ),
]
HfVersionOpt = Annotated[
    int | None, typer.Option("--hf-version", help="hf: transformers major version, 4 or 5 (default 5; DeepSeek MLA).")
]
MaxCacheLenOpt = Annotated[
    int | None, tokens_option("--max-cache-len", help="hf: StaticCache length in tokens (default: DynamicCache).")
]
SwaFullOpt = Annotated[
    bool | None,
    typer.Option(
        "--swa-full/--no-swa-full",
        help="llamacpp: full-size cache for SWA layers (the library's default) or a window-sized one (llama-server's default).",
    ),
]
UbatchOpt = Annotated[
    int | None,
    tokens_option("--ubatch", help="llamacpp: n_ubatch in tokens (default 512), sizes the SWA cache with --no-swa-full."),
]
KvUnifiedOpt = Annotated[
    bool | None,
    typer.Option(
        "--kv-unified/--no-kv-unified", "-kvu", help="llamacpp: one buffer shared by all sequences (default: one per sequence)."
    ),
]
FlashAttnOpt = Annotated[
    str | None,
    typer.Option(
        "--flash-attn",
        "-fa",
        help="llamacpp: on, off or auto (default: auto turns it on for a quantized V cache; off refuses one).",
    ),
]
NRsSeqOpt = Annotated[
    int | None,
    typer.Option(
        "--n-rs-seq",
        help="llamacpp: recurrent-state snapshots each sequence keeps for speculative rollback (newer builds, with a draft"
        " model or MTP; default 0): hybrid models' state takes 1 + N rows per sequence. Only the architectures llama.cpp's"
        " llm_arch_supports_rs_rollback lists keep them (Qwen3.5/3.6 qwen35, qwen35moe); for other hybrids llama.cpp clamps N"
        " to 0 and checkpoints to host: leave it at 0. Refused for a model without state layers.",
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
    typer.Option(
        "--gpu-memory-utilization",
        help="vllm: share of total GPU memory it may use, in (0, 1] (default 0.92 from vLLM 0.20, 0.9 before; see --vllm-version).",
    ),
]
EnforceEagerOpt = Annotated[
    bool | None,
    typer.Option("--enforce-eager/--no-enforce-eager", help="vllm: no CUDA graphs, so no CUDA-graph memory (default: graphs)."),
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
        help="vllm: its release as vLLM prints it (0.19, 0.20.2rc1, v0.10.1.1, 0.11.0+cu128): picks the memory rules"
        " of that release: before 0.20 no CUDA-graph estimate is subtracted and --gpu-memory-utilization defaults"
        " to 0.9, from 0.8 to 0.16 the sampler sorts its logits (unless FlashInfer ran, --vllm-flashinfer-sampler), from 0.25"
        " dense models run the V2 model runner (see --vllm-use-v2-model-runner) (default: the newest rules).",
    ),
]
VllmUseV2ModelRunnerOpt = Annotated[
    str | None,
    typer.Option(
        "--vllm-use-v2-model-runner",
        help="vllm: VLLM_USE_V2_MODEL_RUNNER as vLLM reads it, 1 or 0: the V2 model runner profiles its sampler's logits"
        " only (no sort) and, before 0.29, no CUDA-graph estimate (default: the release's choice, V2 for dense models"
        " from 0.25 and for all from 0.29; V1 without --vllm-version).",
    ),
]
VllmEntrypointOpt = Annotated[
    str | None,
    typer.Option(
        "--vllm-entrypoint",
        help="vllm: how vLLM was started, serve (`vllm serve`, the API server) or llm (Python's offline LLM class):"
        " the LLM class batches twice the server's tokens by default (16384 on a GPU of 70 GiB or more that is not"
        " an A100, else 8192), which sizes the profiling run (default: serve).",
    ),
]
VllmFlashinferSamplerOpt = Annotated[
    bool | None,
    typer.Option(
        "--vllm-flashinfer-sampler/--no-vllm-flashinfer-sampler",
        help="vllm: whether the V1 sampler ran FlashInfer, as its log says ('Using FlashInfer for top-p & top-k"
        " sampling.'; up to 0.11.0 'Falling back to the PyTorch-native implementation' when not): before 0.17 the"
        " native path sorts the profile's logits, 38 B each against 15 (default: FlashInfer only where it ran by"
        " default, none before 0.11.1 in a pip install, opt-in from 0.11.1; from 0.17 either path profiles 15 B).",
    ),
]
EnablePrefixCachingOpt = Annotated[
    bool | None,
    typer.Option(
        "--enable-prefix-caching/--no-enable-prefix-caching",
        help="vllm: prefix caching; on a hybrid model it keeps each request's Mamba state in mamba_cache_mode"
        " 'align', two state blocks a request instead of one (default: off for hybrid models); a Mamba-mixer model"
        " under 0.19-0.27 (mode 'all') is refused, not modelled.",
    ),
]
AttentionBackendOpt = Annotated[
    str | None,
    typer.Option(
        "--attention-backend",
        help="vllm: the MLA backend, which sets an MLA model's block size: flashmla (64, the default), cutlass_mla"
        " (128, the default on B200/B300), flashinfer_mla (64 or 32), triton_mla or flash_attn_mla (--block-size, 16);"
        " decode charges triton_mla a cost per layer and context token (its default off Hopper and SM 10.x).",
    ),
]
SglangVersionOpt = Annotated[
    str | None,
    typer.Option(
        "--sglang-version",
        help="sglang: its release as SGLang prints it (0.5.4, 0.5.4.post2): recorded in the JSON and --explain;"
        " kvcalc keeps no SGLang memory rule that differs by release.",
    ),
]
TrtllmVersionOpt = Annotated[
    str | None,
    typer.Option(
        "--trtllm-version",
        help="trtllm: its release as TensorRT-LLM prints it (1.0.0, 1.2.0rc4): recorded in the JSON and --explain;"
        " kvcalc keeps no TensorRT-LLM memory rule that differs by release.",
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
    int | None,
    tokens_option(
        "--max-num-tokens",
        help="trtllm: tokens of one forward, sizes the profiling run (default 8192); for a TensorRT engine"
        " build, the build's max_num_tokens (older builds: max_batch_size * max_input_len), which sized its activations.",
    ),
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

DisableCudaGraphOpt = Annotated[
    bool | None,
    typer.Option("--disable-cuda-graph", help="sglang: no CUDA graphs: decode launches every kernel from Python (slower steps)."),
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

_FLASH_ATTN = {"on": True, "off": False, "auto": None, "true": True, "false": False}  # llama.cpp's -fa, and the old spellings
_DTYPE_OPTIONS = ("mamba_cache_dtype", "mamba_ssm_cache_dtype")  # "auto": the engine's own choice


def _flash_attn(text: str) -> bool | None:
    """-fa as llama.cpp spells it: on, off or auto (None: the engine's default)."""
    if text.lower() not in _FLASH_ATTN:
        raise InvalidInput(f"--flash-attn {text!r}: use on, off or auto")
    return _FLASH_ATTN[text.lower()]


_SWITCH_01 = {"1": True, "0": False, "true": True, "false": False}  # an environment switch as vLLM reads it


def _switch_01(flag: str, text: str) -> bool:
    """An environment switch given as a flag: 1 or 0 (true or false)."""
    if text.lower() not in _SWITCH_01:
        raise InvalidInput(f"{flag} {text!r}: use 1 or 0")
    return _SWITCH_01[text.lower()]


def _entrypoint(text: str) -> str:
    """--vllm-entrypoint: serve or llm, as the user spells it (`vllm serve`, `LLM`)."""
    if text.lower() not in ("serve", "llm"):
        raise InvalidInput(f"--vllm-entrypoint {text!r}: use serve (vllm serve) or llm (the offline LLM class)")
    return text.lower()


def build_engine(name: str, **options: Any) -> Engine:
    """The --engine profile with its options (Engine's field names; -fa as on/off/auto text); an
    option of another engine is an error."""
    counts = {
        k: v
        for k, v in options.items()
        if isinstance(v, int) and not isinstance(v, bool) and k not in (*_DTYPE_OPTIONS, "hf_version", "n_rs_seq")
    }
    positive(**counts)
    if isinstance(options.get("vllm_use_v2_model_runner"), str):
        options["vllm_use_v2_model_runner"] = _switch_01("--vllm-use-v2-model-runner", options["vllm_use_v2_model_runner"])
    if isinstance(options.get("vllm_entrypoint"), str):
        options["vllm_entrypoint"] = _entrypoint(options["vllm_entrypoint"])
    if isinstance(options.get("flash_attn"), str):
        options["flash_attn"] = _flash_attn(options["flash_attn"])
        if options["flash_attn"] is None:  # auto: as if not given
            del options["flash_attn"]
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
    "n_rs_seq": NRsSeqOpt,
    "max_num_batched_tokens": MaxBatchedOpt,
    "max_num_seqs": MaxNumSeqsOpt,
    "gpu_memory_utilization": GpuMemoryUtilizationOpt,
    "enforce_eager": EnforceEagerOpt,
    "kv_cache_memory_bytes": KvCacheMemoryOpt,
    "vllm_version": VllmVersionOpt,
    "vllm_use_v2_model_runner": VllmUseV2ModelRunnerOpt,
    "vllm_entrypoint": VllmEntrypointOpt,
    "vllm_flashinfer_sampler": VllmFlashinferSamplerOpt,
    "enable_prefix_caching": EnablePrefixCachingOpt,
    "attention_backend": AttentionBackendOpt,
    "mamba_cache_dtype": MambaCacheDtypeOpt,
    "mamba_ssm_cache_dtype": MambaSsmCacheDtypeOpt,
    "mem_fraction_static": MemFractionStaticOpt,
    "max_total_tokens": MaxTotalTokensOpt,
    "page_size": PageSizeOpt,
    "swa_full_tokens_ratio": SwaFullTokensRatioOpt,
    "max_running_requests": MaxRunningRequestsOpt,
    "mamba_ssm_dtype": MambaSsmDtypeOpt,
    "disable_cuda_graph": DisableCudaGraphOpt,
    "mamba_full_memory_ratio": MambaFullMemoryRatioOpt,
    "sglang_version": SglangVersionOpt,
    "trtllm_version": TrtllmVersionOpt,
    "free_gpu_memory_fraction": FreeGpuMemoryFractionOpt,
    "tokens_per_block": TokensPerBlockOpt,
    "max_tokens": MaxTokensOpt,
    "max_num_tokens": MaxNumTokensOpt,
    "max_seq_len": MaxSeqLenOpt,
}
ONE_WAY_SWITCHES = {"disable_cuda_graph"}  # switches without a --no- form (as SGLang spells it): off is not given
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
            given = {k: v for k, v in given.items() if v is not None and not (v is False and k in ONE_WAY_SWITCHES)}
            return command(**kwargs, engine_options=given)

        wrapper.__signature__ = signature.replace(parameters=expanded)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in expanded} | {"return": signature.return_annotation}
        return wrapper  # type: ignore[return-value]

    return decorate
