"""What engines really reach when they decode: the terms of the expected-time model and which
engine, version, options and weight format select them. Pure data and lookups.

    t_token = (max(W_read / (BW * gpu_efficiency * kernel_efficiency), layers * quant_floor[format])
               + KV_read / (BW * gpu_efficiency * attention_efficiency))
              + step_cost[mode] + step_cost[engine and version]
              + layers * (layer_cost[mode] + python_dispatch[eager vLLM/SGLang] + rocm_moe_layer[SGLang FP8 MoE on ROCm])
              + recurrent_layers * recurrent_layer_cost[llama.cpp]
              + (tp > 1) * 2 * layers * (all_reduce_latency[link] + all_reduce_bytes / link_bandwidth)
              + mla_layers * context * mla_token[Triton's MLA decode, where it runs]

BW is the GPU's peak, or for llama.cpp's kernels min(peak, SMs * clock * SM_BYTES_PER_CLOCK) where the preset gives both;
gpu_efficiency = 1 / (architecture's inverse + the GPU's offset); attention_efficiency = 1 / (the engine's inverse
+ its inverse per KV copy * the copies its attention makes: transformers' repeat_kv, heads / kv_heads - 1).

The constants are fitted on published batch-1 decode measurements (tests/fixtures/decode_calibration.json,
each with its URL) by benchmarks/decode_calibration.py, which writes them to kvcalc/decode_fit.py and
reports its leave-one-source-out errors in docs/benchmarks.md. An engine picks its profile in
`EngineProfile.decode_profile(gpu, engine)`; this module imports only kvcalc.base, units and decode_fit.
"""

# no `from __future__ import annotations`: pydantic takes the fields' annotations as objects rather than
# compiling and evaluating each string (start-up, docs/benchmarks.md)

from typing import Literal

from kvcalc import decode_fit
from kvcalc.base import Frozen
from kvcalc.gpu_families import SM_CAPABILITY, generation, gpu_architecture, marlin_runs, same_generation, sm_family
from kvcalc.units import DType, bytes_per_value, parse_engine_version

FormatClass = Literal["16-bit", "fp8", "int8", "int4", "fp4", "ggml-4to6bit", "ggml-8bit", "ggml-2to3bit"]
Mode = Literal[
    "graphs", "eager", "transformers", "llamacpp-cuda", "llamacpp-cuda-legacy", "llamacpp-metal", "llamacpp-rocm-vulkan", "mlx"
]  # fmt: skip
Kernels = Literal["fused", "torch", "transformers", "llamacpp", "mlx"]
ProfileName = str  # "<engine key> <mode>", e.g. "vllm-v1 graphs", or the mode alone when it names the engine ("llamacpp-metal")

# Share of the dense peak FLOP/s a compute-bound step reaches. Not calibrated: every case is batch 1
# and memory-bound. An assumption: large bf16 GEMMs reach 70-80% of the dense peak in cuBLAS/CUTLASS,
# and decode's GEMMs are thinner than those.
COMPUTE_EFFICIENCY = 0.7

# One all-reduce moves 2 * (n - 1) / n * hidden * 2 bytes (bf16 activations) per token over each
# rank's link. Link bandwidth per direction, from the vendors' specifications: NVLink 3 on the
# A100 (600 GB/s bidirectional, the slowest NVLink of the fitted GPUs), Infinity Fabric between two
# MI300X (64 GB/s per direction per peer link), PCIe 4.0 x16 (32 GB/s per direction).
LINK_BYTES_PER_S: dict[str, float] = {"nvlink": 300e9, "xgmi": 64e9, "pcie-p2p": 32e9, "pcie": 32e9}
ALL_REDUCES_PER_LAYER = 2  # after attention and after the MLP (Megatron-style tensor parallelism)


class DecodeProfile(Frozen):
    """The engine side of a step's expected time: its launch mode, its engine key (for the fixed cost
    per step that a release adds), and the kernels its weights run through."""

    name: ProfileName
    mode: Mode
    engine: str  # the engine whose own kernels may differ from its family's (kernel efficiency by engine x format)
    engine_key: str
    kernels: Kernels
    label: str


MODE_LABELS: dict[Mode, str] = {
    "graphs": "CUDA/HIP graphs, torch.compile or a C++ runtime: one launch per step",
    "eager": "fused kernels launched from Python one by one (vLLM --enforce-eager, SGLang --disable-cuda-graph, ExLlama,"
    " AutoAWQ, TinyChat)",
    "transformers": "transformers generate() in eager PyTorch: a Python call per op",
    "llamacpp-cuda": "llama.cpp CUDA builds with CUDA graphs (mid-2024 and later, Ampere and newer; Volta/Turing from 2026-07)",
    "llamacpp-cuda-legacy": "llama.cpp CUDA launching kernel by kernel: builds before CUDA graphs, or a GPU they skip"
    " (Pascal; Volta/Turing before 2026-07: ggml-cuda.cu disable_due_to_gpu_arch)",
    "llamacpp-metal": "llama.cpp on Apple silicon (Metal)",
    "llamacpp-rocm-vulkan": "llama.cpp on ROCm/HIP or Vulkan",
    "mlx": "Apple MLX",
}

# a mode charged its base mode's costs plus its own (each >= 0): eager launches cost what graphs do and more
MODE_BASE: dict[Mode, Mode] = {"eager": "graphs"}

# engine as kvcalc or a source names it -> (its kernels, whether it captures graphs by default)
ENGINE_KERNELS: dict[str, tuple[Kernels, bool]] = {
    "textbook": ("fused", True),
    "vllm": ("fused", True),
    "sglang": ("fused", True),
    "trtllm": ("fused", True),
    "mlc": ("fused", True),
    "lmdeploy-turbomind": ("fused", True),
    "deepspeed-mii": ("fused", True),
    "optimum-nvidia": ("fused", True),
    "gpt-fast": ("torch", True),
    "torchao": ("torch", True),
    "exllama": ("fused", False),
    "autoawq": ("fused", False),
    "tinychat": ("fused", False),
    "ctranslate2": ("fused", False),
    "hf": ("transformers", False),
    "transformers": ("transformers", False),
    "autogptq": ("transformers", False),
    "onnxruntime": ("transformers", False),
    "llamacpp": ("llamacpp", True),
    "ollama": ("llamacpp", True),
    "mlx": ("mlx", False),
}


# vLLM captured no CUDA graphs before v0.2.6 (PR #1926, vllm/worker/model_runner.py capture_model)
VLLM_GRAPHS_SINCE = (0, 2, 6)
# vLLM before 0.6 (the key vllm-0.4) replays a step's graph only while the context is at most
# max_context_len_to_capture (vllm/entrypoints/llm.py v0.4.2: 8192 by default; max_seq_len_to_capture
# from 0.5); past it the step runs eager (Qwen2's speed table, vLLM 0.4.2: 0.5B at 256 tok/s up to 8k
# tokens, 109 past it). Not applied from 0.6: Qwen2.5's table on vLLM 0.6.3 shows no such step at 16k and 32k.
VLLM_04_GRAPH_CONTEXT = 8192


# A GPU streams at its architecture's share of peak bandwidth plus its own offset, so a GPU with no case of its
# own takes its architecture's (issue 25: the sources that are a GPU's only measurements were predicted at a
# typical GPU's rate when held out); the architecture by name: kvcalc.gpu_families.gpu_architecture


# llama.cpp decodes a batch-1 step with its own mat-vec kernels (ggml/src/ggml-cuda/mmvq.cu and mmv.cu: a few warps per
# block of rows), which keep fewer bytes in flight per SM than the serving engines' GEMMs: on a GPU with much bandwidth
# per SM (CU) they stream at most SMs * clock * SM_BYTES_PER_CLOCK, fitted on the llama.cpp cases (issue 25; a cap for
# every engine's kernels was tested and not kept: docs/benchmarks.md)
SM_CAP_KERNELS = ("llamacpp",)


def streamed_bandwidth(
    peak: float, sms: int | None, clock_hz: int | None, kernels: str, bytes_per_sm_clock: float
) -> float:  # fmt: skip
    """What `kernels` stream on a GPU of `peak` bytes/s with `sms` SMs at `clock_hz`: min(peak, sms * clock *
    bytes_per_sm_clock) for llama.cpp's kernels where the GPU preset gives both figures, else the peak
    (a bytes_per_sm_clock of 0: no cap fitted).

    >>> streamed_bandwidth(112e9, 6, 1_392_000_000, "llamacpp", 10.0), streamed_bandwidth(112e9, 6, 1_392_000_000, "fused", 10.0)
    (83520000000.0, 112000000000.0)
    """
    if kernels not in SM_CAP_KERNELS or not sms or not clock_hz or bytes_per_sm_clock <= 0:
        return peak
    return min(peak, sms * clock_hz * bytes_per_sm_clock)


# llama.cpp's CUDA backend captures a step's kernels in a CUDA graph only on the GPUs it allows: none older than Ampere
# (compute capability 8.0) from CUDA graphs' first build (PR #6766, 2024-05) until PR #25749 (merged 2026-07-16) let
# Volta and Turing (7.x) in; Pascal and older never. Without the graph every node of a step is launched on its own, as
# in the builds before CUDA graphs (the llamacpp-cuda-legacy mode). ggml/src/ggml-cuda/ggml-cuda.cu
# `disable_due_to_gpu_arch` (`cc < GGML_CUDA_CC_AMPERE`, then `cc < GGML_CUDA_CC_VOLTA`), ggml-org/llama.cpp.
LLAMACPP_GRAPH_GPUS_SOURCE = (
    "ggml/src/ggml-cuda/ggml-cuda.cu disable_due_to_gpu_arch: no CUDA graph below compute capability 8.0 until"
    " ggml-org/llama.cpp PR #25749 (2026-07-16), below 7.0 since"
)
LLAMACPP_VOLTA_GRAPHS_SINCE = "2026-07-16"  # PR #25749's merge: a build (or a source) dated before it has none on 7.x


def llamacpp_launches_per_kernel(gpu: str | None, date: str | None = None) -> bool:
    """Whether llama.cpp's CUDA backend launches a step kernel by kernel on `gpu` (no CUDA graph: LLAMACPP_GRAPH_GPUS_SOURCE):
    always below Volta (Pascal: compute capability 6.x), on Volta and Turing before PR #25749 (a build or source dated
    before LLAMACPP_VOLTA_GRAPHS_SINCE; None: a current build).

    >>> [llamacpp_launches_per_kernel(g) for g in ("gtx1050ti", "p40", "rtx2080", "rtx3090", "mi300x")]
    [True, True, False, False, False]
    >>> llamacpp_launches_per_kernel("rtx2080", "2026-05-01"), llamacpp_launches_per_kernel("t4", "2026-07-16")
    (True, False)
    """
    found = generation(gpu)
    if found is None or found.capability >= SM_CAPABILITY["ampere"]:
        return False
    if found.capability >= SM_CAPABILITY["volta"]:
        return date is not None and date < LLAMACPP_VOLTA_GRAPHS_SINCE
    return True


# Engines whose model code is torch modules called layer by layer from Python (vllm/model_executor/models/*.py,
# sglang/srt/models/*.py): without graphs each layer's kernels are dispatched by Python, a cost per layer on
# top of the eager mode's (vLLM 0.4.2 past 8k tokens, vLLM --enforce-eager; SGLang --disable-cuda-graph shares it)
PYTHON_EAGER_KEY = "torch-modules"


def python_eager(engine_key: str, mode: str) -> bool:
    """Whether a step dispatches its layers' kernels from Python one by one: vLLM or SGLang without graphs."""
    return mode == "eager" and (engine_key.startswith("vllm") or engine_key == "sglang")


# SGLang runs an FP8 MoE layer on ROCm through Triton kernels (aiter's under SGLANG_USE_AITER=1), not sgl-kernel's CUDA ones,
# which python/sglang/srt/layers/quantization/fp8_kernel.py imports only on CUDA (`if _is_cuda: from sgl_kernel import
# sgl_per_token_group_quant_fp8, ...`); the MI300X's FP8 is e4m3fnuz there (`is_fp8_fnuz`: gfx94x). Its cost is per layer,
# not per byte: SGLang 0.5.7 on MI300X takes 0.40 ms a layer for DeepSeek-V3.1 FP8 (TP 8) and 0.36 ms for MiniMax-M2 FP8
# (TP 4), whose weights per rank differ 2x (sgl-cookbook, issue 25). A cost per layer keyed engine x format class x MoE.
ROCM_MOE_LAYER_ENGINES = ("sglang",)
ROCM_MOE_LAYER_CLASSES = ("fp8",)


def rocm_moe_layer_key(engine: str, backend: str, klass: str, moe: bool) -> str | None:
    """The key of the cost per layer `engine`'s MoE layers of `klass` pay on `backend` where one is kept (SGLang's FP8 MoE
    on ROCm), else None.

    >>> rocm_moe_layer_key("sglang", "rocm", "fp8", True), rocm_moe_layer_key("sglang", "cuda", "fp8", True)
    ('sglang fp8 moe', None)
    >>> rocm_moe_layer_key("vllm", "rocm", "fp8", True), rocm_moe_layer_key("sglang", "rocm", "16-bit", True)
    (None, None)
    """
    if engine in ROCM_MOE_LAYER_ENGINES and backend == "rocm" and klass in ROCM_MOE_LAYER_CLASSES and moe:
        return f"{engine} {klass} moe"
    return None


# llama.cpp builds a recurrent-state layer (Gated DeltaNet: Qwen3.5/3.6, Qwen3-Next, Kimi-Linear; LFM2's short conv;
# Mamba2: Granite 4.0-H) from more small ggml ops than an attention layer: the causal conv (ggml_ssm_conv), the gates and
# norms around the recurrence, and the recurrence itself, which before ggml_gated_delta_net (PR #19504, 2026-02) was a
# dozen element-wise ops several of which pass over the whole S_v x S_v x H_v state (src/models/delta-net-base.cpp
# build_delta_net_autoregressive against build_delta_net_fused, ggml-org/llama.cpp 156ce1c1). At batch 1 each op is a
# small kernel, so a recurrent layer costs a fixed time on top of a layer's, fitted on llama.cpp's hybrid cases (issue 25).
RECURRENT_LAYER_KERNELS = ("llamacpp",)
RECURRENT_LAYER_SOURCE = (
    "src/models/delta-net-base.cpp build_delta_net_autoregressive / build_delta_net_fused, src/models/lfm2.cpp,"
    " src/models/granite-hybrid.cpp (ggml-org/llama.cpp 156ce1c1)"
)


def recurrent_layer_key(kernels: str) -> str | None:
    """The key of the extra cost per recurrent-state layer `kernels` pay (llama.cpp's), or None.

    >>> recurrent_layer_key("llamacpp"), recurrent_layer_key("fused")
    ('llamacpp', None)
    """
    return kernels if kernels in RECURRENT_LAYER_KERNELS else None


# Triton's MLA decode: SGLang's python/sglang/srt/layers/attention/triton_ops/decode_attention.py, which vLLM's
# vllm/attention/ops/triton_decode_attention.py is "Adapted from", launches (batch, ceil(heads / 16), kv splits) programs
# for the 576-wide latent, each walking its share of the context a block of tokens at a time: at batch 1 a few SMs run a
# loop whose length grows with the context, a cost per MLA layer and context token that the bandwidth-bound MLA kernels
# (FlashMLA, FlashAttention MLA, FlashInfer and CUTLASS MLA) do not have. vLLM runs it where none of those runs
# (vllm/platforms/cuda.py `_get_backend_priorities`, V1 releases: FLASH_ATTN_MLA and FLASHMLA on Hopper, FlashInfer and
# CUTLASS MLA on compute capability 10.x, else TRITON_MLA: Ampere, Ada and the SM 12.x parts, DGX Spark and RTX 50);
# SGLang when its server is told `--attention-backend triton` (its defaults on Hopper and SM 10.x are FA3 and TRT-LLM MLA).
TRITON_MLA = "triton-mla"
VLLM_BANDWIDTH_MLA_BACKENDS = {"hopper": "flashmla", "blackwell": "cutlass_mla"}  # by compute capability: 9.0, 10.x
# The MLA backend assumed where neither the GPU nor --attention-backend says which runs (an unknown GPU, a release before
# 0.7.1): FlashMLA, vLLM's choice on the Hopper parts most MLA deployments run on
VLLM_FALLBACK_MLA_BACKEND = "flashmla"
TRITON_ATTENTION_BACKENDS = ("triton", "triton_mla")  # SGLang's --attention-backend and vLLM's backend name


# vLLM's MLA decode by release: none before 0.7.1 (DeepSeek ran its attention as expanded MHA), Triton's MLA decode on
# every GPU in 0.7.1 and 0.7.2 (vllm-project/vllm#12601), FlashMLA on Hopper from 0.7.3 (#13747); on ROCm Triton's MLA
# unless AITER's is switched on (vllm/platforms/rocm.py get_attn_backend_cls: TRITON_MLA by default)
VLLM_MLA_SINCE = (0, 7, 1)
VLLM_BANDWIDTH_MLA_SINCE = (0, 7, 3)


def mla_decode_kernel(
    engine: str, gpu: str | None, attention_backend: str | None, mla: bool, version: str | None = None
) -> str | None:
    """The MLA decode kernel class whose cost grows per MLA layer and context token (TRITON_MLA), or None: the
    attention backend the server was given, else vLLM's choice by release and GPU (`version` None: the latest);
    SGLang's defaults are bandwidth-bound kernels.

    >>> mla_decode_kernel("vllm", "dgx-spark", None, True), mla_decode_kernel("vllm", "h100-sxm", None, True)
    ('triton-mla', None)
    >>> mla_decode_kernel("sglang", "b200", "triton", True), mla_decode_kernel("sglang", "b200", None, True)
    ('triton-mla', None)
    >>> mla_decode_kernel("vllm", "b200", "triton_mla", True), mla_decode_kernel("vllm", "rtx5090", None, False)
    ('triton-mla', None)
    >>> [mla_decode_kernel("vllm", gpu, None, True, v) for gpu, v in (("h100-sxm", "0.7.2"), ("rtx3090", "0.6.6"), ("mi300x", None))]
    ['triton-mla', None, 'triton-mla']
    """
    if not mla:
        return None
    if attention_backend is not None:
        return TRITON_MLA if attention_backend.lower() in TRITON_ATTENTION_BACKENDS else None
    if engine != "vllm":
        return None
    return TRITON_MLA if vllm_mla_backend(gpu, version) == "triton_mla" else None


def vllm_mla_backend(gpu: str | None, version: str | None) -> str | None:
    """The MLA attention backend vLLM picks by release and GPU when --attention-backend is not given (None: the
    release has no MLA kernel): Triton's in 0.7.1 and 0.7.2 and on ROCm, FlashMLA on Hopper, CUTLASS MLA on SM 10.x,
    Triton's MLA elsewhere (Ampere, Ada, SM 12.x: vllm/platforms/cuda.py `_get_backend_priorities`); FlashMLA for a
    GPU kvcalc cannot place. The budget's block size (engines.vllm.mla_block_size) and decode's Triton MLA term
    both read this one rule.

    >>> [vllm_mla_backend(gpu, None) for gpu in ("h100-sxm", "b200", "rtx3090", "dgx-spark", "mi300x", None)]
    ['flashmla', 'cutlass_mla', 'triton_mla', 'triton_mla', 'triton_mla', 'flashmla']
    >>> vllm_mla_backend("h100-sxm", "0.7.2"), vllm_mla_backend("h100-sxm", "0.6.6")
    ('triton_mla', None)
    """
    release = parse_engine_version(version) if version else None
    if release is not None and release < VLLM_MLA_SINCE:
        return None
    if release is not None and release < VLLM_BANDWIDTH_MLA_SINCE:
        return "triton_mla"
    if gpu_architecture(gpu or "").startswith("AMD"):
        return "triton_mla"
    family = sm_family(gpu)
    if family is None:
        return VLLM_FALLBACK_MLA_BACKEND
    return VLLM_BANDWIDTH_MLA_BACKENDS.get(family, "triton_mla")


# transformers' attention repeats each KV head for its group of query heads before it attends
# (models/llama/modeling_llama.py and models/qwen2/modeling_qwen2.py repeat_kv, expand then reshape, a copy,
# in 4.38.2, 4.46.0 and 4.51.3, the releases of the fitted tables): a step writes and reads the KV (heads / kv_heads - 1) more times
KV_REPEAT_ENGINES = ("transformers",)


def kv_repeats(engine_key: str, heads: int, kv_heads: int) -> float:
    """The extra copies of the KV an engine's attention writes and reads per step: heads / kv_heads - 1
    for transformers' repeat_kv, 0 for engines whose attention kernels read each KV head once.

    >>> kv_repeats("transformers", 28, 4), kv_repeats("vllm-v1", 28, 4)
    (6.0, 0.0)
    """
    return heads / kv_heads - 1 if engine_key in KV_REPEAT_ENGINES and kv_heads else 0.0


def engine_key(engine: str, version: tuple[int, ...] | None) -> str:
    """The key of an engine's own fixed cost per step: vLLM by era (0.4-0.5; V0 0.6-0.7; V1 from 0.8,
    vllm/engine/arg_utils.py VLLM_USE_V1 default), any other engine by its name.

    >>> engine_key("vllm", (0, 6, 3)), engine_key("vllm", (0, 11, 0)), engine_key("vllm", None), engine_key("sglang", None)
    ('vllm-v0', 'vllm-v1', 'vllm', 'sglang')
    """
    if engine != "vllm" or version is None:
        return engine
    return "vllm-0.4" if version < (0, 6) else "vllm-v0" if version < (0, 8) else "vllm-v1"


# vLLM's V0 engine runs one loop per step in one process from 0.2 to 0.7 (vllm/engine/llm_engine.py LLMEngine.step:
# schedule, prepare the inputs, run the model, sample, detokenize, one after another); V1 (0.8, vllm/v1/engine/core.py)
# runs the scheduler in an engine-core process of its own. The V0 releases share that loop's fixed cost per step.
V0_ENGINE_KEYS = ("vllm-0.4", "vllm-v0")


def step_key(engine_key: str) -> str:
    """The key of an engine release's own fixed cost per step: vLLM's V0 releases share V0's loop.

    >>> step_key("vllm-0.4"), step_key("vllm-v0"), step_key("vllm-v1"), step_key("sglang")
    ('vllm-v0', 'vllm-v0', 'vllm-v1', 'sglang')
    """
    return "vllm-v0" if engine_key in V0_ENGINE_KEYS else engine_key


def attention_key(engine_key: str) -> str:
    """The key of an engine release's attention efficiency: vLLM's V0 releases share one. Every V0 release reads the
    paged KV once per KV head through a CUDA kernel (0.4.2: csrc/attention/attention_kernels.cu paged_attention v1/v2;
    from 0.4.3 vllm_flash_attn's flash_attn_with_kvcache, vllm/attention/backends/flash_attn.py), so a release with no
    source of its own (vLLM 0.4: Qwen2's table alone) takes V0's figure rather than the prior.

    >>> attention_key("vllm-0.4"), attention_key("vllm-v0"), attention_key("vllm-v1"), attention_key("sglang")
    ('vllm-v0', 'vllm-v0', 'vllm-v1', 'sglang')
    """
    return step_key(engine_key)


# vLLM's and SGLang's MoE layers run one fused kernel for all the experts with or without graphs (vLLM 0.4.2's
# vllm/model_executor/layers/fused_moe/fused_moe.py `fused_moe`, a Triton kernel over the routed experts; SGLang's
# python/sglang/srt/layers/moe/fused_moe_triton): their eager mode never loops over experts from Python, so it pays the
# graphs mode's cost per expert, not the eager engines' loop (MODE_EXPERT_S["eager"]).


def expert_mode(engine_key: str, mode: str) -> str:
    """The mode whose cost per routed expert a step pays: vLLM's and SGLang's eager steps run the fused MoE kernel
    as their graphs do.

    >>> expert_mode("vllm-0.4", "eager"), expert_mode("sglang", "eager"), expert_mode("exllama", "eager")
    ('graphs', 'graphs', 'eager')
    """
    return "graphs" if python_eager(engine_key, mode) else mode


# vLLM's V0 releases (0.2-0.7) prefill a long prompt slower than COMPUTE_EFFICIENCY of the peak: 0.4.2 prefills
# through xformers unless the separate flash_attn package is installed (vllm/attention/selector.py; 0.4.2's wheel
# requires xformers, not flash-attn); 0.6.3 chunks a prompt into 512-token steps when
# max_model_len > 32K (vllm/engine/arg_utils.py `use_long_context`: chunked prefill on by default), each step
# reading the weights and every earlier token's KV again. The share of a published end-to-end timing that is
# the prefill is charged at COMPUTE_EFFICIENCY / PREFILL_INVERSE[key], fitted on V0's end-to-end timings (issue 25).
PREFILL_ENGINE_KEYS = V0_ENGINE_KEYS


def prefill_key(engine_key: str) -> str | None:
    """The key of an engine release's fitted prefill speed (V0's releases share one), or None: the prefill runs
    at COMPUTE_EFFICIENCY.

    >>> prefill_key("vllm-0.4"), prefill_key("vllm-v0"), prefill_key("vllm-v1"), prefill_key("sglang")
    ('vllm-v0', 'vllm-v0', None, None)
    """
    return step_key(engine_key) if engine_key in PREFILL_ENGINE_KEYS else None


# A fused engine's GPTQ/AWQ/int8 GEMM at batch 1 takes at least a fixed time per layer whatever its bytes
# (vllm/model_executor/layers/quantization/gptq_marlin.py, awq_marlin.py, csrc/quantization/gptq_marlin/: a Marlin
# kernel's grid is tiled over the output columns, so a layer of a small model fills few SMs): Qwen2.5-0.5B-GPTQ-Int4
# decodes at 3.8 ms a token under vLLM 0.6.3 where its bf16 checkpoint, 2x the bytes, takes 3.2 ms. The weights' time
# is max(bytes / streamed bandwidth, layers * QUANT_LAYER_FLOOR_S[class]): the floor binds on small models only.
# It is Marlin's, so it holds only where Marlin runs (gpu_families.marlin_runs: CUDA from SM 7.5, not ROCm, Metal or
# SM 7.0 and older). Every fused engine takes the same rule: the cases that fit the floor (vLLM, SGLang on H20,
# ExLlama, AutoAWQ, MLC, TinyChat) ran on CUDA GPUs of SM 8.0 and newer, so none says more about T4's 7.5.
QUANT_FLOOR_KERNELS = ("fused",)
QUANT_FLOOR_CLASSES = ("int4", "int8")


def quant_floor_key(kernels: str, klass: str, moe: bool, gpu: str | None) -> str | None:
    """The key of the floor per layer a dense model's quantized GEMMs take in fused kernels on `gpu`, or None:
    not fused kernels, not an integer class, a MoE, or a GPU where Marlin does not run.

    >>> [quant_floor_key("fused", "int4", False, gpu) for gpu in ("h100-sxm", "t4", "v100-32gb", "mi300x", "apple-m4-max")]
    ['int4', 'int4', None, None, None]
    >>> quant_floor_key("fused", "int4", True, "h100-sxm"), quant_floor_key("llamacpp", "int4", False, "h100-sxm")
    (None, None)
    """
    fused_integer = kernels in QUANT_FLOOR_KERNELS and klass in QUANT_FLOOR_CLASSES and not moe
    return klass if fused_integer and marlin_runs(gpu)[0] else None


def profile_for(
    engine: str, version: tuple[int, ...] | None = None, eager: bool | None = None, backend: str = "cuda",
    legacy_llamacpp: bool = False,
) -> "DecodeProfile":  # fmt: skip
    """The profile of `engine` (kvcalc's name or a source's) at `version`, with its graphs off when
    `eager`, on a GPU of `backend`; llama.cpp's mode follows the backend (and the build's age)."""
    kernels, graphs = ENGINE_KERNELS.get(engine, ("fused", True))
    mode: Mode
    if kernels == "llamacpp":
        mode = {"metal": "llamacpp-metal", "rocm": "llamacpp-rocm-vulkan", "vulkan": "llamacpp-rocm-vulkan"}.get(
            backend, "llamacpp-cuda-legacy" if legacy_llamacpp else "llamacpp-cuda"
        )  # type: ignore[assignment]
        key = "llamacpp"
    else:
        graphs = graphs and not (engine == "vllm" and version is not None and version < VLLM_GRAPHS_SINCE)
        mode = (
            "mlx"
            if kernels == "mlx"
            else "transformers"
            if kernels == "transformers"
            else "graphs"
            if graphs and not eager
            else "eager"
        )
        key = engine_key("transformers" if engine == "hf" else engine, version)
    return DecodeProfile(
        name=mode if mode.startswith(key) else f"{key} {mode}", mode=mode, engine="transformers" if engine == "hf" else engine, engine_key=key,
        kernels=kernels, label=MODE_LABELS[mode],
    )  # fmt: skip


def at_context(profile: "DecodeProfile", context: int) -> "DecodeProfile":
    """`profile` for a step at `context` tokens: vLLM before 0.6 runs eager past max_context_len_to_capture.

    >>> at_context(profile_for("vllm", (0, 4, 2)), 16384).mode, at_context(profile_for("vllm", (0, 4, 2)), 8192).mode
    ('eager', 'graphs')
    """
    if profile.engine_key != "vllm-0.4" or profile.mode != "graphs" or context <= VLLM_04_GRAPH_CONTEXT:
        return profile
    return profile.model_copy(
        update={
            "name": f"{profile.engine_key} eager",
            "mode": "eager",
            "label": f"{MODE_LABELS['eager']}; vLLM before 0.6 past max_context_len_to_capture ({VLLM_04_GRAPH_CONTEXT:,} tokens)",
        }
    )


_FORMAT_CLASSES: dict[DType, FormatClass] = {
    DType.fp32: "16-bit",  # streams like 16-bit at twice the bytes
    DType.fp16: "16-bit",
    DType.bf16: "16-bit",
    DType.fp8: "fp8",
    DType.fp8_e4m3: "fp8",
    DType.fp8_e5m2: "fp8",
    DType.int8: "int8",
    DType.q8_0: "ggml-8bit",
    DType.int4: "int4",
    DType.mxfp4: "fp4",
    DType.nvfp4: "fp4",
    DType.fp8_block: "fp8",
    DType.fp8_per_token_head: "fp8",
    DType.int8_per_token_head: "int8",
    DType.q4_0: "ggml-4to6bit",
    DType.q4_1: "ggml-4to6bit",
    DType.q5_0: "ggml-4to6bit",
    DType.q5_1: "ggml-4to6bit",
    DType.iq4_nl: "ggml-4to6bit",
}


def format_class(dtype: DType) -> FormatClass:
    """How weights of `dtype` are decoded, as the calibration groups them.

    >>> format_class(DType.bf16), format_class(DType.q4_0), format_class(DType.int4)
    ('16-bit', 'ggml-4to6bit', 'int4')
    """
    if dtype in _FORMAT_CLASSES:
        return _FORMAT_CLASSES[dtype]
    return stored_format_class(8 * bytes_per_value(dtype))  # the GGUF k- and i-quants by their bits per weight


def stored_format_class(bits_per_weight: float) -> FormatClass:
    """How a GGUF's weights stored at `bits_per_weight` on average are decoded: 16-bit from 12 bits,
    8-bit from 7, the 4- to 6-bit k-quants from 4 (Q4_0 is 4.5, Q6_K 6.56), below that Q2_K/Q3_K.

    >>> stored_format_class(4.85), stored_format_class(3.4), stored_format_class(16.0)
    ('ggml-4to6bit', 'ggml-2to3bit', '16-bit')
    """
    for floor, klass in ((12, "16-bit"), (7, "ggml-8bit"), (4, "ggml-4to6bit")):
        if bits_per_weight >= floor:
            return klass  # type: ignore[return-value]
    return "ggml-2to3bit"


def kernel_key(kernels: str, klass: FormatClass, moe: bool) -> str:
    """The key of a kernel efficiency: kernels (a family, or one engine's) x format class x dense/MoE,
    e.g. 'fused int4 moe', 'sglang int4 moe'."""
    return f"{kernels} {klass}{' moe' if moe else ''}"


class Terms(Frozen):
    """The fitted terms one step is charged with, and the cases each came from."""

    gpu_efficiency: float  # share of peak bandwidth the GPU streams at (relative to a typical GPU's kernels)
    gpu_source: str
    architecture: str  # the GPU's architecture family, whose rate a GPU with no case of its own takes
    kernel_efficiency: float  # share of the GPU's streaming rate the weights' kernels reach
    kernel_source: str
    attention_efficiency: float  # share of the GPU's streaming rate the engine's attention reads the KV at
    attention_source: str
    kv_repeats: float  # extra copies of the KV the attention writes and reads (transformers' repeat_kv)
    kv_repeat_inverse: float  # inverse efficiency each copy adds
    step_seconds: float  # fixed cost per step: the mode's plus the engine and version's own
    step_source: str
    layer_seconds: float  # cost per layer of the mode, and of Python dispatch where vLLM or SGLang run eager
    python_layer_seconds: float  # the Python dispatch's share of layer_seconds
    python_layer_source: str
    rocm_moe_layer_seconds: float  # the share of layer_seconds an engine's MoE layers pay on ROCm (SGLang's FP8 MoE)
    rocm_moe_layer_source: str
    recurrent_layer_seconds: float  # the extra cost of each recurrent-state layer (llama.cpp's small ops), not in layer_seconds
    recurrent_layer_source: str
    mla_kernel: str | None  # the MLA decode kernel whose cost grows per layer and context token (TRITON_MLA), or None
    mla_token_seconds: float  # its cost per MLA layer and context token
    mla_source: str
    expert_seconds: float  # cost per routed expert per MoE layer: an eager MoE that loops over every expert
    all_reduce_seconds: float  # latency of one all-reduce over the link
    all_reduce_source: str
    sm_bytes_per_clock: float  # what the kernels stream per SM per clock at most (0: no cap)
    sm_cap_source: str
    quant_layer_floor_seconds: float  # the least time a layer's quantized GEMMs take (0: no floor)
    quant_floor_source: str
    prefill_compute_efficiency: float  # share of peak FLOP/s a prompt's prefill reaches under this engine release
    prefill_source: str

    @property
    def weights_efficiency(self) -> float:
        """Share of peak bandwidth the weights stream at: the GPU's times the kernels', capped at the peak."""
        return min(1.0, self.gpu_efficiency * self.kernel_efficiency)

    @property
    def kv_efficiency(self) -> float:
        """Share of peak bandwidth the KV is read at: the GPU's times the attention's, capped at the peak."""
        return min(1.0, self.gpu_efficiency * self.attention_efficiency)


def _source(name: str) -> str:
    cases = decode_fit.SOURCES.get(name)
    return f"fitted on {cases}" if cases else "no case: the prior (docs/benchmarks.md)"


V0_LOOP = " (V0's engine loop, vllm/engine/llm_engine.py, shared by releases 0.2-0.7)"
V0_ATTENTION = " (V0's paged attention, shared by releases 0.2-0.7)"

# A fitted sum of inverse efficiencies may fall below the GPU's own, even below 0 (a fit without some source:
# issue 25's DGX Spark int4 MoE rows held out); no kernel streams faster than the peak, so it is taken at the peak
AT_PEAK = "; the fitted inverses sum below the GPU's, so this streams at the GPU's peak"


def capped_efficiency(inverse: float, gpu_efficiency: float) -> float:
    """A kernel's share of the GPU's streaming rate from its fitted inverse efficiency, taken at the GPU's
    peak where the inverse falls below the GPU's efficiency (AT_PEAK): gpu_efficiency times it is at most 1.

    >>> capped_efficiency(2.0, 0.8), capped_efficiency(-0.4, 0.8)
    (0.5, 1.25)
    """
    return 1 / max(inverse, gpu_efficiency)


def terms(
    profile: DecodeProfile, klass: FormatClass, moe: bool, gpu: str, link: str | None, kv_repeats: float = 0.0,
    backend: str = "cuda", mla_kernel: str | None = None,
) -> "Terms":  # fmt: skip
    """The fitted terms for a step of `profile` on `gpu` (of `backend`) with weights of class `klass`: a kernel with no
    case of its own takes its format class's efficiency; a GPU with no case streams at its architecture's
    rate (its generation's other die line's, else the prior, when no case has it). `kv_repeats`: the KV copies the engine's attention makes;
    `mla_kernel`: the MLA decode kernel class (mla_decode_kernel) whose cost grows with the context."""
    key, own = kernel_key(profile.kernels, klass, moe), kernel_key(profile.engine, klass, moe)
    inverse = (
        decode_fit.FORMAT_INVERSE.get(klass, decode_fit.PRIOR_FORMAT_INVERSE)
        + decode_fit.KERNEL_INVERSE.get(key, 0.0)
        + decode_fit.ENGINE_KERNEL_INVERSE.get(own, 0.0)
    )
    step = step_key(profile.engine_key)
    engine_step = f"engine {step}"
    architecture = gpu_architecture(gpu)
    repeat_inverse = decode_fit.KV_REPEAT_INVERSE.get(profile.engine_key, 0.0)
    python_layer = (
        decode_fit.PYTHON_EAGER_LAYER_S.get(PYTHON_EAGER_KEY, 0.0) if python_eager(profile.engine_key, profile.mode) else 0.0
    )
    floor_key = quant_floor_key(profile.kernels, klass, moe, gpu)
    prefill = prefill_key(profile.engine_key)
    prefill_inverse = decode_fit.PREFILL_INVERSE.get(prefill, 1.0) if prefill else 1.0
    rocm_key = rocm_moe_layer_key(profile.engine, backend, klass, moe)
    recurrent_key = recurrent_layer_key(profile.kernels)
    rocm_layer = decode_fit.ROCM_MOE_LAYER_S.get(rocm_key, 0.0) if rocm_key else 0.0
    fitted = next((a for a in (architecture, *same_generation(architecture)) if a in decode_fit.ARCHITECTURE_INVERSE), None)
    arch_source = (
        f"{architecture}: {_source(f'architecture {architecture}')}"
        if fitted == architecture
        else f"{architecture}: no case on this die line, its generation's {fitted}: {_source(f'architecture {fitted}')}"
        if fitted
        else f"{architecture}: no case on this architecture or its generation, the prior 1.0 (its kernels' own rate)"
    )
    modes = [mode for mode in (MODE_BASE.get(profile.mode), profile.mode) if mode is not None]
    arch_inverse = decode_fit.ARCHITECTURE_INVERSE[fitted] if fitted else 1.0
    gpu_efficiency = 1 / (arch_inverse + decode_fit.GPU_INVERSE.get(gpu, 0.0))
    attention = attention_key(profile.engine_key)
    attention_inverse = decode_fit.ATTENTION_INVERSE.get(attention, 1.0) + repeat_inverse * kv_repeats
    return Terms(
        gpu_efficiency=gpu_efficiency,
        gpu_source=arch_source
        + (f"; {gpu}: {_source(f'gpu {gpu}')}" if gpu in decode_fit.GPU_INVERSE else f"; no case on {gpu or 'this GPU'}"),
        architecture=architecture,
        kernel_efficiency=capped_efficiency(inverse, gpu_efficiency),
        kernel_source=f"format {klass}: {_source(f'format {klass}')}"
        + (f"; {key}: {_source(f'kernel {key}')}" if key in decode_fit.KERNEL_INVERSE else "")
        + (f"; {own}: {_source(f'own {own}')}" if own in decode_fit.ENGINE_KERNEL_INVERSE else "")
        + (AT_PEAK if inverse < gpu_efficiency else ""),
        attention_efficiency=capped_efficiency(attention_inverse, gpu_efficiency),
        attention_source=f"{attention}{V0_ATTENTION if attention != profile.engine_key else ''}: {_source(f'attention {attention}')}"
        + (f"; repeat_kv: {_source(f'repeat {profile.engine_key}')}" if repeat_inverse and kv_repeats else "")
        + (AT_PEAK if attention_inverse < gpu_efficiency else ""),
        kv_repeats=kv_repeats,
        kv_repeat_inverse=repeat_inverse,
        step_seconds=max(  # an engine release's offset may be negative; the step's cost is not
            0.0,
            sum(decode_fit.MODE_STEP_S.get(mode, 0.0) for mode in modes) + decode_fit.ENGINE_STEP_S.get(step, 0.0),
        ),
        step_source="; ".join(f"{mode}: {_source(f'step {mode}')}" for mode in modes)
        + f"; {step}{V0_LOOP if step != profile.engine_key else ''}: {_source(engine_step)}",
        layer_seconds=sum(decode_fit.MODE_LAYER_S.get(mode, 0.0) for mode in modes) + python_layer + rocm_layer,
        python_layer_seconds=python_layer,
        python_layer_source=_source(f"python {PYTHON_EAGER_KEY}") if python_layer else "",
        rocm_moe_layer_seconds=rocm_layer,
        rocm_moe_layer_source=_source(f"rocm {rocm_key}") if rocm_key else "",
        recurrent_layer_seconds=decode_fit.RECURRENT_LAYER_S.get(recurrent_key, 0.0) if recurrent_key else 0.0,
        recurrent_layer_source=f"{RECURRENT_LAYER_SOURCE}; {_source(f'recurrent {recurrent_key}')}" if recurrent_key else "",
        mla_kernel=mla_kernel,
        mla_token_seconds=decode_fit.MLA_TOKEN_S.get(mla_kernel, 0.0) if mla_kernel else 0.0,
        mla_source=_source(f"mla {mla_kernel}") if mla_kernel else "",
        expert_seconds=decode_fit.MODE_EXPERT_S.get(expert_mode(profile.engine_key, profile.mode), 0.0),
        all_reduce_seconds=decode_fit.ALL_REDUCE_S.get(link or "", 0.0),
        all_reduce_source=_source(f"link {link}") if link else "",
        sm_bytes_per_clock=decode_fit.SM_BYTES_PER_CLOCK.get(profile.kernels, 0.0),
        sm_cap_source=_source(f"cap {profile.kernels}") if profile.kernels in SM_CAP_KERNELS else "",
        quant_layer_floor_seconds=decode_fit.QUANT_LAYER_FLOOR_S.get(floor_key, 0.0) if floor_key else 0.0,
        quant_floor_source=_source(f"floor {floor_key}") if floor_key else "",
        prefill_compute_efficiency=COMPUTE_EFFICIENCY / max(prefill_inverse, COMPUTE_EFFICIENCY),
        prefill_source=f"{prefill} (V0's prefill): {_source(f'prefill {prefill}')}" if prefill else "not fitted: an assumption",
    )


class Band(Frozen):
    """Where the measured speed falls around the expected one: the 10th and 90th percentiles of
    measured / expected tokens/s over the leave-one-source-out predictions of a group of cases."""

    low: float
    high: float
    cases: int
    group: str
    widened: bool  # fewer than MIN_BAND_CASES in the group: the wider of its band and all cases'


MIN_BAND_CASES = 10


def band(engine: str, klass: FormatClass) -> "Band":
    """The band of `engine` x `klass`; under ten cases it widens to cover all cases' band too."""
    group = f"{engine} {klass}"
    low, high, n = decode_fit.BANDS.get(group, (1.0, 1.0, 0))
    all_low, all_high, _ = decode_fit.BANDS["all"]
    if n >= MIN_BAND_CASES:
        return Band(low=low, high=high, cases=n, group=group, widened=False)
    return Band(
        low=min(low, all_low) if n else all_low, high=max(high, all_high) if n else all_high, cases=n, group=group, widened=True
    )
